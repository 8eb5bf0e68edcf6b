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
import { mkdir, stat } from "node:fs/promises";
import { isAbsolute, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { CLIENT_PERMISSIONS, SERVER_PERMISSIONS } from "./permissions.ts";

const ROOT = resolve(fileURLToPath(new URL("..", import.meta.url)));
const USAGE = "deno task compile [-- --target TRIPLE] [--out-dir DIR]  (DIR defaults to dist/)";

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

function fail(message: string): never {
  console.error(`confab compile: ${message}`);
  Deno.exit(1);
}

/** Human-readable size, e.g. `85.3 MiB`. */
function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

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

/**
 * The first line of the error that says what went wrong (the first type error, else the
 * `error:` line without its prefix), with its source location; when that line only says which
 * step failed, the root cause from `Caused by:` is added.
 */
function firstErrorLine(output: string): string {
  const lines = output.split(/\r?\n/).map((l) => l.trim());
  // A type error prints `TS2322 [ERROR]: ...` before the summary `error: Type checking failed.`
  let index = lines.findIndex((l) => /^TS\d+ \[ERROR\]/.test(l));
  if (index === -1) index = lines.findIndex((l) => /^error\b/i.test(l));
  if (index === -1) return lines.find((l) => l !== "" && !l.startsWith("⚠")) ?? "no error output";
  const message = lines[index]!.replace(/^error:\s*/i, "");
  const rest = lines.slice(index + 1);
  const end = rest.findIndex((l) => l.startsWith("Stack backtrace"));
  const causes = (end === -1 ? rest : rest.slice(0, end)).filter((l) => /^\d+:/.test(l));
  const location = rest.find((l) => l.startsWith("at "));
  if (causes.length > 0) return `${message}: ${causes.at(-1)!.replace(/^\d+:\s*/, "")}`;
  return location ? `${message} (${location})` : message;
}

function parseOptions(args: string[]): { target?: string; outDir: string } {
  // `deno task compile -- --target x` passes the `--` through; it separates nothing here.
  const rest = args[0] === "--" ? args.slice(1) : args;
  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      options: {
        target: { type: "string" },
        "out-dir": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    fail(`${error instanceof Error ? error.message : String(error)}; usage: ${USAGE}`);
  }
  if (values.help) {
    console.log(`Usage: ${USAGE}\nTargets: ${TARGETS.join(", ")}`);
    Deno.exit(0);
  }
  const target = values.target;
  if (target !== undefined && !(TARGETS as readonly string[]).includes(target)) {
    fail(`unknown target "${target}"; use one of ${TARGETS.join(", ")}`);
  }
  return { target, outDir: resolve(values["out-dir"] ?? join(ROOT, "dist")) };
}

/** `confab` → `confab-aarch64-apple-darwin`, `confab-x86_64-pc-windows-msvc.exe`, `confab`. */
function executableName(base: string, target: string | undefined): string {
  const windows = target ? target.includes("windows") : Deno.build.os === "windows";
  return `${base}${target ? `-${target}` : ""}${windows ? ".exe" : ""}`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Compiles every entry point; exits 1 with one line on the first failure. */
async function main(): Promise<void> {
  const { target, outDir } = parseOptions(Deno.args);

  // Check every entry first so a missing one does not leave half a dist/ behind.
  for (const { entry } of BINARIES) {
    if (!(await exists(join(ROOT, entry)))) {
      fail(`cannot compile ${entry}: file not found in ${ROOT}`);
    }
  }
  await mkdir(outDir, { recursive: true });

  for (const { entry, output, permissions } of BINARIES) {
    const outPath = join(outDir, executableName(output, target));
    const result = await new Deno.Command(Deno.execPath(), {
      args: [
        "compile",
        ...permissions,
        ...(target ? ["--target", target] : []),
        "-o",
        outPath,
        entry,
      ],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!result.success) {
      const text = stripAnsi(
        new TextDecoder().decode(result.stderr) + new TextDecoder().decode(result.stdout),
      );
      fail(
        isRuntimeDownloadFailure(text)
          ? DENORT_UNREACHABLE
          : `cannot compile ${entry}: ${firstErrorLine(text)}`,
      );
    }

    const near = relative(Deno.cwd(), outPath);
    const shown = near.startsWith("..") || isAbsolute(near) ? outPath : near;
    console.log(`wrote ${shown} (${formatSize((await stat(outPath)).size)}) from ${entry}`);
  }
}

if (import.meta.main) await main();
