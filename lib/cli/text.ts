/**
 * Text for a terminal: hostile text made visible (so a peer cannot move the cursor, send
 * terminal commands or reorder what is shown), and the width text takes on screen.
 */

/**
 * Characters that change how a terminal shows what follows rather than showing themselves:
 * C0 controls (ESC starts every terminal command), DEL, C1 controls (0x9b is a one-byte CSI
 * on some terminals), bidi embeddings, overrides and isolates (which can reorder a line: the
 * "Trojan Source" trick), the Arabic letter mark, and the line and paragraph separators.
 * (As a RegExp character class body.)
 */
export const UNSAFE_RANGES =
  "\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069";
const UNSAFE = new RegExp(`[${UNSAFE_RANGES}]`, "g");

const NAMED: Record<string, string> = {
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
  "\x1b": "\\e",
};

function escapeOne(ch: string): string {
  const named = NAMED[ch];
  if (named) return named;
  const code = ch.charCodeAt(0);
  return code <= 0xff
    ? `\\x${code.toString(16).padStart(2, "0")}`
    : `\\u{${code.toString(16).padStart(4, "0")}}`;
}

/**
 * The text with every control character, ESC and bidi control replaced by a visible escape
 * (`\e`, `\n`, `\x07`, `\u{202e}`); everything else is kept as it is.
 */
export function visible(text: string): string {
  return text.replace(UNSAFE, escapeOne);
}

/** True when {@link visible} would change the text. */
export function hasUnsafe(text: string): boolean {
  UNSAFE.lastIndex = 0;
  const found = UNSAFE.test(text);
  UNSAFE.lastIndex = 0;
  return found;
}

/** Columns a code point takes on a terminal: 0 (combining), 1, or 2 (wide: CJK, emoji). */
export function charWidth(code: number): number {
  if (code < 0x300) return code < 0x20 || (code >= 0x7f && code < 0xa0) ? 0 : 1;
  if (
    (code >= 0x300 && code <= 0x36f) || (code >= 0x200b && code <= 0x200f) ||
    (code >= 0xfe00 && code <= 0xfe0f) || (code >= 0x1ab0 && code <= 0x1aff) ||
    (code >= 0x20d0 && code <= 0x20ff) || code === 0xfeff
  ) return 0;
  if (
    (code >= 0x1100 && code <= 0x115f) || (code >= 0x2e80 && code <= 0x303e) ||
    (code >= 0x3041 && code <= 0x33ff) || (code >= 0x3400 && code <= 0x4dbf) ||
    (code >= 0x4e00 && code <= 0x9fff) || (code >= 0xa000 && code <= 0xa4cf) ||
    (code >= 0xac00 && code <= 0xd7a3) || (code >= 0xf900 && code <= 0xfaff) ||
    (code >= 0xfe30 && code <= 0xfe4f) || (code >= 0xff00 && code <= 0xff60) ||
    (code >= 0xffe0 && code <= 0xffe6) || (code >= 0x1f300 && code <= 0x1f64f) ||
    (code >= 0x1f900 && code <= 0x1f9ff) || (code >= 0x1fa70 && code <= 0x1faff) ||
    (code >= 0x20000 && code <= 0x3fffd)
  ) return 2;
  return 1;
}

// deno-lint-ignore no-control-regex
const ANSI_SGR = /\x1b\[[0-9;]*m/g;

/** Columns `text` takes (colour escapes take none). */
export function displayWidth(text: string): number {
  let width = 0;
  for (const ch of text.replace(ANSI_SGR, "")) width += charWidth(ch.codePointAt(0)!);
  return width;
}

/**
 * The start of `text` that fits in `columns`, with `…` when cut. Colour escapes are kept and
 * a reset is added after a cut so no colour leaks.
 */
export function fitWidth(text: string, columns: number): string {
  if (displayWidth(text) <= columns) return text;
  let out = "";
  let width = 0;
  let styled = false;
  for (let i = 0; i < text.length;) {
    ANSI_SGR.lastIndex = i;
    const m = ANSI_SGR.exec(text);
    if (m && m.index === i) {
      out += m[0];
      styled = true;
      i += m[0].length;
      continue;
    }
    const code = text.codePointAt(i)!;
    const ch = String.fromCodePoint(code);
    const w = charWidth(code);
    if (width + w > columns - 1) break;
    out += ch;
    width += w;
    i += ch.length;
  }
  ANSI_SGR.lastIndex = 0;
  return out + "…" + (styled ? "\x1b[0m" : "");
}
