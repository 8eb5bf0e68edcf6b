/**
 * Builds the single-file JavaScript distribution with `deno bundle`: `dist/confab-server.js`
 * from server.ts and `dist/confab.js` from client.ts, npm packages inlined. Each file runs
 * anywhere Deno runs (`deno run -A dist/confab.js`) and works offline, unlike `deno compile`.
 *
 *   deno task bundle [--out-dir DIR]
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { BuildTool, firstErrorLine, reportWritten, runDeno } from "./build_tool.ts";
import { CLIENT_PERMISSIONS, SERVER_PERMISSIONS } from "./permissions.ts";

const tool: BuildTool = new BuildTool(
  "confab bundle",
  "deno task bundle [--out-dir DIR]  (DIR defaults to dist/)",
);

/**
 * What gets bundled: entry point (relative to the repository root), output file name, and the
 * permissions its first line asks for.
 */
const BUNDLES = [
  { entry: "server.ts", output: "confab-server.js", permissions: SERVER_PERMISSIONS },
  { entry: "client.ts", output: "confab.js", permissions: CLIENT_PERMISSIONS },
] as const;

/** Lets `./dist/confab.js` run directly on Unix-like systems; Deno skips the line. */
export function shebang(permissions: readonly string[]): string {
  return `#!/usr/bin/env -S deno run ${permissions.join(" ")}\n`;
}

/** Bundles every entry point into `--out-dir`; exits 1 with one line on the first failure. */
async function main(): Promise<void> {
  const { outDir } = tool.parseOptions(Deno.args);
  await tool.prepare(BUNDLES.map((b) => b.entry), outDir, "bundle");

  for (const { entry, output, permissions } of BUNDLES) {
    const outPath = join(outDir, output);
    const result = await runDeno(["bundle", "--quiet", "--platform", "deno", "-o", outPath, entry]);
    if (!result.success) tool.fail(`cannot bundle ${entry}: ${firstErrorLine(result.output)}`);

    const code = await Deno.readTextFile(outPath);
    if (!code.startsWith("#!")) await writeFile(outPath, shebang(permissions) + code);
    if (Deno.build.os !== "windows") await Deno.chmod(outPath, 0o755);
    await reportWritten(outPath, entry);
  }
}

if (import.meta.main) await main();
