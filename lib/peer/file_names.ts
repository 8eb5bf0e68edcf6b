/**
 * Cleaning file names that arrive from the network, and picking a name in the downloads
 * folder that overwrites nothing. A name from the wire is hostile: it may hold path
 * separators, `..`, control characters, names Windows reserves, or be huge or empty.
 */

const MAX_NAME_BYTES = 200;
/** An extension longer than this is not kept when a long name is cut. */
const MAX_EXTENSION_CHARS = 16;
/**
 * Characters not allowed in a file name on any common system, control characters (C0, DEL,
 * C1), line and paragraph separators, and the bidirectional controls that make a name read
 * differently from what it is (`invoice\u202Efdp.exe` shows as `invoiceexe.pdf`).
 */
const FORBIDDEN =
  // deno-lint-ignore no-control-regex
  /[\u0000-\u001f\u007f-\u009f<>:"/\\|?*\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
/** Device names Windows reserves, also with an extension or trailing spaces before it. */
const WINDOWS_RESERVED = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)\s*(\..*)?$/i;
const encoder = new TextEncoder();

function utf8Length(text: string): number {
  return encoder.encode(text).length;
}

/** Cuts `text` to at most `bytes` UTF-8 bytes without splitting a character. */
function cutToBytes(text: string, bytes: number): string {
  let out = "";
  let used = 0;
  for (const ch of text) {
    const size = utf8Length(ch);
    if (used + size > bytes) break;
    out += ch;
    used += size;
  }
  return out;
}

function trimEnds(name: string): string {
  return name.replace(/^[.\s]+/, "").replace(/[.\s]+$/, "");
}

/** Splits off a short extension (`.txt`), if the name has one after a non-empty base. */
function splitExtension(name: string): [base: string, ext: string] {
  const dot = name.lastIndexOf(".");
  if (dot <= 0 || name.length - dot > MAX_EXTENSION_CHARS) return [name, ""];
  return [name.slice(0, dot), name.slice(dot)];
}

/**
 * A safe base name for `raw`: the last path segment only, forbidden and control characters
 * replaced by `_`, no leading dots (no hidden files, no `..`), no trailing dots or spaces,
 * not a reserved device name, at most 200 bytes (keeping the extension), never empty.
 */
export function sanitizeFileName(raw: string): string {
  const lastSegment = raw.split(/[/\\]/).filter((p) => p.length > 0).at(-1) ?? "";
  // A lone surrogate would be written to disk as U+FFFD: make the name say so too.
  let name = trimEnds(lastSegment.toWellFormed().normalize("NFC").replace(FORBIDDEN, "_"));
  if (WINDOWS_RESERVED.test(name)) name = `_${name}`;
  if (utf8Length(name) > MAX_NAME_BYTES) {
    const [base, ext] = splitExtension(name);
    // Trim again: the cut may end the base in a space or a dot.
    name = trimEnds(cutToBytes(base, MAX_NAME_BYTES - utf8Length(ext))) + ext;
  }
  return name.length > 0 ? name : "file";
}

/**
 * `name (n).ext` for the n-th alternative of a taken name, still at most 200 bytes (the base
 * is cut to make room for the number).
 */
export function numberedName(name: string, n: number): string {
  const suffix = ` (${n})`;
  let [base, ext] = splitExtension(name);
  if (utf8Length(suffix + ext) >= MAX_NAME_BYTES) [base, ext] = [name, ""];
  return cutToBytes(base, MAX_NAME_BYTES - utf8Length(suffix + ext)) + suffix + ext;
}
