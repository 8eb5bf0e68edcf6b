/**
 * Builds self-contained executables with `deno compile`: `dist/confab-server` from server.ts
 * and `dist/confab` from client.ts. With `--target TRIPLE` (the release workflow cross-builds
 * this way) the names carry the triple, and `.exe` on Windows: `dist/confab-x86_64-pc-windows-msvc.exe`.
 *
 *   deno task compile [-- --target TRIPLE] [--out-dir DIR]
 *
 * `deno compile` downloads Deno's runtime (`denort`) from dl.deno.land the first time per
 * target; where that host is unreachable there is no offline route, and `deno task bundle`
 * is the single-file build that works.
 */
import { join } from "node:path";
import { BuildTool, firstErrorLine, reportWritten, runDeno } from "./build_tool.ts";
import { CLIENT_PERMISSIONS, SERVER_PERMISSIONS } from "./permissions.ts";

const tool: BuildTool = new BuildTool(
  "confab compile",
  "deno task compile [-- --target TRIPLE] [--out-dir DIR]  (DIR defaults to dist/)",
);

/** Targets `deno compile --target` accepts. */
const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

/**
 * What gets compiled: entry point (relative to the repository root), executable name, and
 * the permissions baked in (what `deno task server`/`client` grant).
 */
const BINARIES = [
  { entry: "server.ts", output: "confab-server", permissions: SERVER_PERMISSIONS },
  { entry: "client.ts", output: "confab", permissions: CLIENT_PERMISSIONS },
] as const;

const DENORT_UNREACHABLE = `cannot download Deno's runtime (denort) for deno compile — ` +
  `this machine has no access to dl.deno.land; use "deno task bundle" for single-file builds, ` +
  `or run compile where that host is reachable`;

/**
 * True when `deno compile` failed fetching its base binary rather than compiling our code:
 * the error block (from the first `error:` line on) names denort, its host, or the step
 * "Setting up base binary". Progress lines before it (npm `Download ...`) do not count.
 */
function isRuntimeDownloadFailure(output: string): boolean {
  const start = output.search(/^error\b/im);
  const errorBlock = start === -1 ? output : output.slice(start);
  return /denort|dl\.deno\.land|base binary/i.test(errorBlock);
}

function parseOptions(args: string[]): { target?: string; outDir: string } {
  const { outDir, named } = tool.parseOptions(args, ["target"], `Targets: ${TARGETS.join(", ")}`);
  const target = named.target;
  if (target !== undefined && !(TARGETS as readonly string[]).includes(target)) {
    tool.fail(`unknown target "${target}"; use one of ${TARGETS.join(", ")}`);
  }
  return { target, outDir };
}

/** `confab` → `confab-aarch64-apple-darwin`, `confab-x86_64-pc-windows-msvc.exe`, `confab`. */
function executableName(base: string, target: string | undefined): string {
  const windows = target ? target.includes("windows") : Deno.build.os === "windows";
  return `${base}${target ? `-${target}` : ""}${windows ? ".exe" : ""}`;
}

/** Compiles every entry point; exits 1 with one line on the first failure. */
async function main(): Promise<void> {
  const { target, outDir } = parseOptions(Deno.args);

  await tool.prepare(BINARIES.map((b) => b.entry), outDir, "compile");

  for (const { entry, output, permissions } of BINARIES) {
    const outPath = join(outDir, executableName(output, target));
    const result = await runDeno([
      "compile",
      ...permissions,
      ...(target ? ["--target", target] : []),
      "-o",
      outPath,
      entry,
    ]);
    if (!result.success) {
      tool.fail(
        isRuntimeDownloadFailure(result.output)
          ? DENORT_UNREACHABLE
          : `cannot compile ${entry}: ${firstErrorLine(result.output)}`,
      );
    }
    await reportWritten(outPath, entry);
  }
}

if (import.meta.main) await main();
