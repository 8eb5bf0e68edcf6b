/**
 * ANSI styles for a terminal, as node:util's `styleText` writes them (without importing
 * node:util, which costs a process ≈ 10-20 ms of CPU at start-up). Whether to style at all is
 * the caller's decision (a terminal, and no `NO_COLOR`).
 */

const CODES = {
  bold: [1, 22],
  dim: [2, 22],
  inverse: [7, 27],
  red: [31, 39],
  green: [32, 39],
  yellow: [33, 39],
  blue: [34, 39],
  magenta: [35, 39],
  cyan: [36, 39],
  redBright: [91, 39],
  cyanBright: [96, 39],
} as const;

export type Style = keyof typeof CODES;

/** `text` in the style (or styles, the first outermost). */
export function styled(style: Style | readonly Style[], text: string): string {
  let open = "";
  let close = "";
  for (const name of typeof style === "string" ? [style] : style) {
    const [on, off] = CODES[name];
    open += `\x1b[${on}m`;
    close = `\x1b[${off}m` + close;
  }
  return open + text + close;
}
