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

/**
 * The code points a terminal shows two columns wide: East Asian Wide and Fullwidth in Unicode 14
 * (CJK, Hangul, kana, and the emoji shown as emoji by default: 🚀, ✅, ⚡, ☕ as well as 🙂),
 * as first and last of each range, in order. Unassigned code points inside a range count as
 * wide, as in the planes of CJK ideographs.
 */
// deno-fmt-ignore
const WIDE: readonly number[] = [
  0x1100, 0x115f, 0x231a, 0x231b, 0x2329, 0x232a, 0x23e9, 0x23ec, 0x23f0, 0x23f0, 0x23f3, 0x23f3,
  0x25fd, 0x25fe, 0x2614, 0x2615, 0x2648, 0x2653, 0x267f, 0x267f, 0x2693, 0x2693, 0x26a1, 0x26a1,
  0x26aa, 0x26ab, 0x26bd, 0x26be, 0x26c4, 0x26c5, 0x26ce, 0x26ce, 0x26d4, 0x26d4, 0x26ea, 0x26ea,
  0x26f2, 0x26f3, 0x26f5, 0x26f5, 0x26fa, 0x26fa, 0x26fd, 0x26fd, 0x2705, 0x2705, 0x270a, 0x270b,
  0x2728, 0x2728, 0x274c, 0x274c, 0x274e, 0x274e, 0x2753, 0x2755, 0x2757, 0x2757, 0x2795, 0x2797,
  0x27b0, 0x27b0, 0x27bf, 0x27bf, 0x2b1b, 0x2b1c, 0x2b50, 0x2b50, 0x2b55, 0x2b55, 0x2e80, 0x303e,
  0x3041, 0x3247, 0x3250, 0x4dbf, 0x4e00, 0xa4c6, 0xa960, 0xa97c, 0xac00, 0xd7a3, 0xf900, 0xfad9,
  0xfe10, 0xfe19, 0xfe30, 0xfe6b, 0xff01, 0xff60, 0xffe0, 0xffe6, 0x16fe0, 0x1b2fb,
  0x1f004, 0x1f004, 0x1f0cf, 0x1f0cf, 0x1f18e, 0x1f18e, 0x1f191, 0x1f19a, 0x1f200, 0x1f320,
  0x1f32d, 0x1f335, 0x1f337, 0x1f37c, 0x1f37e, 0x1f393, 0x1f3a0, 0x1f3ca, 0x1f3cf, 0x1f3d3,
  0x1f3e0, 0x1f3f0, 0x1f3f4, 0x1f3f4, 0x1f3f8, 0x1f43e, 0x1f440, 0x1f440, 0x1f442, 0x1f4fc,
  0x1f4ff, 0x1f53d, 0x1f54b, 0x1f54e, 0x1f550, 0x1f567, 0x1f57a, 0x1f57a, 0x1f595, 0x1f596,
  0x1f5a4, 0x1f5a4, 0x1f5fb, 0x1f64f, 0x1f680, 0x1f6c5, 0x1f6cc, 0x1f6cc, 0x1f6d0, 0x1f6d2,
  0x1f6d5, 0x1f6df, 0x1f6eb, 0x1f6ec, 0x1f6f4, 0x1f6fc, 0x1f7e0, 0x1f7f0, 0x1f90c, 0x1f93a,
  0x1f93c, 0x1f945, 0x1f947, 0x1f9ff, 0x1fa70, 0x1faf6, 0x20000, 0x2fffd, 0x30000, 0x3fffd,
];

/**
 * Code points drawn on the character before them, or not at all: combining and enclosing marks
 * of every script (accents, Thai tone marks, Devanagari vowel signs and virama, Arabic and
 * Hebrew points, variation selectors), Hangul vowel and final jamo after an initial, and the
 * invisible format characters (zero-width space and joiners, word joiner, BOM, tags).
 */
const ZERO_WIDTH =
  /^[\p{Mn}\p{Me}\u1160-\u11ff\ud7b0-\ud7ff\u200b-\u200f\u2060-\u2064\ufeff\u{e0001}\u{e0020}-\u{e007f}]$/u;

/** Columns a code point takes on a terminal: 0 (combining), 1, or 2 (wide: CJK, emoji). */
export function charWidth(code: number): number {
  if (code < 0x300) return code < 0x20 || (code >= 0x7f && code < 0xa0) ? 0 : 1;
  if (ZERO_WIDTH.test(String.fromCodePoint(code))) return 0;
  if (code < WIDE[0]! || code > WIDE[WIDE.length - 1]!) return 1;
  // The last range that starts at or before the code point.
  let low = 0;
  let high = WIDE.length / 2 - 1;
  while (low < high) {
    const mid = (low + high + 1) >> 1;
    if (WIDE[2 * mid]! <= code) low = mid;
    else high = mid - 1;
  }
  return code <= WIDE[2 * low + 1]! ? 2 : 1;
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
