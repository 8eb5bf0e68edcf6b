/**
 * Test files loaded together into one test module (tests/unit_test.ts, tests/quick_test.ts):
 * Deno gives each test module a runtime of its own, which costs ≈ 0.34 CPU-s here even for an
 * empty one (docs/architecture.md, "The test suite's time"). A failure still names the file and
 * line it comes from. The files of such a folder are not named `*_test.ts`, so that `deno test`
 * does not also run each on its own; `deno test -A tests/unit/noise.ts` runs one alone.
 */

/**
 * Imports every `.ts` file of the folder `dir` beside the grouping module at `moduleUrl`, in
 * name order, so that their tests register in that module. The folder is the list: a file added
 * there runs without being named anywhere else.
 */
export async function importFolder(moduleUrl: string, dir: string): Promise<void> {
  const folder = new URL(`./${dir}/`, moduleUrl);
  const names: string[] = [];
  for await (const entry of Deno.readDir(folder)) {
    if (entry.isFile && entry.name.endsWith(".ts")) names.push(entry.name);
  }
  for (const name of names.sort()) await import(new URL(name, folder).href);
}
