/**
 * Builds the single-file JavaScript distribution with `deno bundle`: `dist/confab-server.js`
 * from server.ts and `dist/confab.js` from client.ts, npm packages inlined. Each file runs
 * anywhere Deno runs (`deno run -A dist/confab.js`) and works offline, unlike `deno compile`.
 *
 *   deno task bundle [--out-dir DIR]
 */
import { mkdir, stat, writeFile } from "node:fs/promises";
import { isAbsolute, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { CLIENT_PERMISSIONS, SERVER_PERMISSIONS } from "./permissions.ts";

const ROOT = resolve(fileURLToPath(new URL("..", import.meta.url)));
const USAGE = "deno task bundle [--out-dir DIR]  (DIR defaults to dist/)";

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

function fail(message: string): never {
  console.error(`confab bundle: ${message}`);
  Deno.exit(1);
}

/** Human-readable size, e.g. `916.0 KiB`. */
function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * Picks what a failed Deno command's output says went wrong: the first `error:` line (esbuild's
 * `[ERROR]` lines count too) without its prefix, plus where, when the output says so.
 */
function firstErrorLine(output: string): string {
  // deno-lint-ignore no-control-regex
  const lines = output.replace(/\x1b\[[0-9;]*m/g, "").split(/\r?\n/).map((l) => l.trim());
  const index = lines.findIndex((l) => /^error\b|\[ERROR\]/i.test(l));
  if (index === -1) return lines.find((l) => l !== "" && !l.startsWith("⚠")) ?? "no error output";
  const message = lines[index]!.replace(/^error:\s*/i, "");
  const where = lines.slice(index + 1).find((l) => l.startsWith("at ") || l === "");
  return where?.startsWith("at ") ? `${message} (${where})` : message;
}

function parseOptions(args: string[]): { outDir: string } {
  // `deno task bundle -- --out-dir x` passes the `--` through; it separates nothing here.
  const rest = args[0] === "--" ? args.slice(1) : args;
  try {
    const { values } = parseArgs({
      args: rest,
      options: {
        "out-dir": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      console.log(`Usage: ${USAGE}`);
      Deno.exit(0);
    }
    return { outDir: resolve(values["out-dir"] ?? join(ROOT, "dist")) };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    fail(`${message}; usage: ${USAGE}`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Bundles every entry point into `--out-dir`; exits 1 with one line on the first failure. */
async function main(): Promise<void> {
  const { outDir } = parseOptions(Deno.args);

  // Check every entry first so a missing one does not leave half a dist/ behind.
  for (const { entry } of BUNDLES) {
    if (!(await exists(join(ROOT, entry)))) {
      fail(`cannot bundle ${entry}: file not found in ${ROOT}`);
    }
  }
  await mkdir(outDir, { recursive: true });

  for (const { entry, output, permissions } of BUNDLES) {
    const outPath = join(outDir, output);
    const result = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", "--platform", "deno", "-o", outPath, entry],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!result.success) {
      const text = new TextDecoder().decode(result.stderr) +
        new TextDecoder().decode(result.stdout);
      fail(`cannot bundle ${entry}: ${firstErrorLine(text)}`);
    }

    const code = await Deno.readTextFile(outPath);
    if (!code.startsWith("#!")) await writeFile(outPath, shebang(permissions) + code);
    if (Deno.build.os !== "windows") await Deno.chmod(outPath, 0o755);

    const near = relative(Deno.cwd(), outPath);
    const shown = near.startsWith("..") || isAbsolute(near) ? outPath : near;
    console.log(`wrote ${shown} (${formatSize((await stat(outPath)).size)}) from ${entry}`);
  }
}

if (import.meta.main) await main();
