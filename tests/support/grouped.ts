/**
 * Test files loaded together into one test module (tests/unit_test.ts, tests/quick_test.ts):
 * Deno gives each test module a runtime of its own, which costs ≈ 0.34 CPU-s here even for an
 * empty one (docs/architecture.md, "The test suite's time"). A failure still names the file and
 * line it comes from. The files of such a folder are not named `*_test.ts`, so that `deno test`
 * does not also run each on its own; `deno test -A tests/unit/noise.ts` runs one alone.
 */
import assert from "node:assert/strict";

/**
 * A test that fails unless the grouping module at `moduleUrl` imports every `.ts` file of its
 * folder `dir` (`"unit"`): a file added there and not imported would never run.
 */
export function everyFileImported(moduleUrl: string, dir: string): void {
  Deno.test(`tests/${dir}_test.ts imports every file of tests/${dir}/`, async () => {
    const source = await Deno.readTextFile(new URL(moduleUrl));
    const pattern = new RegExp(`^import "\\./${dir}/([^"]+)";$`, "gm");
    const imported = new Set([...source.matchAll(pattern)].map((m) => m[1]));
    const files: string[] = [];
    for await (const entry of Deno.readDir(new URL(`./${dir}/`, moduleUrl))) {
      if (entry.isFile && entry.name.endsWith(".ts")) files.push(entry.name);
    }
    assert.deepEqual(
      files.filter((f) => !imported.has(f)).sort(),
      [],
      `add these to tests/${dir}_test.ts`,
    );
  });
}
