/**
 * Cleaning file names that arrive from the network, and picking a name in the downloads
 * folder that overwrites nothing. A name from the wire is hostile: it may hold path
 * separators, `..`, control characters, names Windows reserves, or be huge or empty.
 */

const MAX_NAME_BYTES = 200;
/** Characters not allowed in a file name on any common system, and control characters. */
// deno-lint-ignore no-control-regex
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f<>:"/\\|?*\u202a-\u202e\u2066-\u2069]/g;
const WINDOWS_RESERVED = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i;

function utf8Length(text: string): number {
  return new TextEncoder().encode(text).length;
}

/** Cuts `text` to at most `bytes` UTF-8 bytes without splitting a character. */
function cutToBytes(text: string, bytes: number): string {
  let out = "";
  for (const ch of text) {
    if (utf8Length(out + ch) > bytes) break;
    out += ch;
  }
  return out;
}

/**
 * A safe base name for `raw`: the last path segment only, forbidden and control characters
 * replaced by `_`, no leading dots (no hidden files, no `..`), no trailing dots or spaces,
 * not a reserved device name, at most 200 bytes (keeping the extension), never empty.
 */
export function sanitizeFileName(raw: string): string {
  const lastSegment = raw.split(/[/\\]/).filter((p) => p.length > 0).at(-1) ?? "";
  let name = lastSegment.normalize("NFC").replace(FORBIDDEN, "_");
  name = name.replace(/^[.\s]+/, "").replace(/[.\s]+$/, "");
  if (WINDOWS_RESERVED.test(name)) name = `_${name}`;
  if (utf8Length(name) > MAX_NAME_BYTES) {
    const dot = name.lastIndexOf(".");
    const ext = dot > 0 && name.length - dot <= 16 ? name.slice(dot) : "";
    name = cutToBytes(name.slice(0, name.length - ext.length), MAX_NAME_BYTES - utf8Length(ext)) +
      ext;
  }
  return name.length > 0 ? name : "file";
}

/** `name (n).ext` for the n-th alternative of a taken name. */
export function numberedName(name: string, n: number): string {
  const dot = name.lastIndexOf(".");
  if (dot <= 0) return `${name} (${n})`;
  return `${name.slice(0, dot)} (${n})${name.slice(dot)}`;
}
