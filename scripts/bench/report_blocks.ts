/**
 * bench/REPORT.md is written by hand and by programs. What a program writes sits between two
 * markers, `<!-- begin generated: NAME -->` and `<!-- end generated: NAME -->`, and a rerun
 * replaces only that; everything outside the markers (the analysis, the breakdowns, notes on
 * earlier runs) is kept as it is.
 */

const BLOCK = /<!-- begin generated: ([^>]+?) -->\n?([\s\S]*?)<!-- end generated: \1 -->/g;

/** `content` between the markers of the block `name`. */
export function generatedBlock(name: string, content: string): string {
  const body = content.trim();
  return [
    `<!-- begin generated: ${name} -->`,
    ...(body ? [body] : []),
    `<!-- end generated: ${name} -->`,
  ].join("\n");
}

/** The content of each generated block of `text`, by name. */
export function blocksOf(text: string): Map<string, string> {
  return new Map([...text.matchAll(BLOCK)].map((m) => [m[1]!, m[2]!.trim()]));
}

/**
 * `text` with the content of each block named in `blocks` replaced; blocks `text` does not have
 * are handed back in `missing` (in the order of `blocks`) for the caller to place.
 */
export function replaceBlocks(
  text: string,
  blocks: ReadonlyMap<string, string>,
): { text: string; missing: string[] } {
  const found = new Set<string>();
  const replaced = text.replace(BLOCK, (whole, name: string) => {
    const content = blocks.get(name);
    if (content === undefined) return whole;
    found.add(name);
    return generatedBlock(name, content);
  });
  return { text: replaced, missing: [...blocks.keys()].filter((name) => !found.has(name)) };
}

/**
 * `text` with the block `name` set to `content`: replaced where it is, or else added at the end
 * under `heading` (the soak's section, for one).
 */
export function setBlock(text: string, name: string, content: string, heading = ""): string {
  const { text: replaced, missing } = replaceBlocks(text, new Map([[name, content]]));
  if (missing.length === 0) return replaced;
  const section = (heading ? `${heading}\n\n` : "") + generatedBlock(name, content);
  return `${replaced.trimEnd()}\n\n${section}\n`;
}
