/** Tab completion of file paths for `/s <path>`, as a shell does it. */
import { parsePath } from "./commands.ts";

const MAX_ENTRIES = 500;

/**
 * Paths that complete `word` (as typed: `~/no`, `docs/`, `my\ fi`): folder entries whose name
 * starts with the last part, folders ending in `/`, written back the way the word was typed
 * (spaces escaped with `\`). Unreadable folders complete to nothing.
 */
export function completePath(word: string): string[] {
  const typed = parsePath(word);
  const slash = typed.lastIndexOf("/");
  const dir = slash >= 0 ? typed.slice(0, slash + 1) : "";
  const prefix = slash >= 0 ? typed.slice(slash + 1) : typed;
  // The folder part as the user typed it (with `~` and escapes), found by its end.
  const wordSlash = word.lastIndexOf("/");
  const typedDir = wordSlash >= 0 ? word.slice(0, wordSlash + 1) : "";
  const out: string[] = [];
  try {
    for (const entry of Deno.readDirSync(dir || ".")) {
      if (!entry.name.startsWith(prefix)) continue;
      if (entry.name.startsWith(".") && !prefix.startsWith(".")) continue;
      const name = entry.name.replace(/([\s\\'"])/g, "\\$1");
      out.push(typedDir + name + (entry.isDirectory ? "/" : ""));
      if (out.length >= MAX_ENTRIES) break;
    }
  } catch {
    return [];
  }
  return out.sort();
}
