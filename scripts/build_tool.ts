/**
 * What the two build scripts share (scripts/bundle.ts, scripts/compile.ts): the repository's
 * root, the check that every entry point is there before anything is written, running a Deno
 * subcommand, the one line a failure is reported in, and the line that says what was written.
 */
import { mkdir, stat } from "node:fs/promises";
import { isAbsolute, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

export const ROOT = resolve(fileURLToPath(new URL("..", import.meta.url)));

/**
 * A build script: its name in messages (`confab bundle`) and its usage line. Give a variable
 * holding one its type (`const tool: BuildTool = ...`): only then does TypeScript know that
 * `tool.fail()` does not return.
 */
export class BuildTool {
  constructor(readonly name: string, readonly usage: string) {}

  /** One line on stderr and exit 1. */
  fail(message: string): never {
    console.error(`${this.name}: ${message}`);
    Deno.exit(1);
  }

  /**
   * Reads the command line: `--out-dir DIR` (resolved; `dist/` in the repository by default),
   * `--help` (prints the usage, then `helpMore`, and exits 0) and the string options `named`.
   * A bad command line is one line with the usage, and exit 1. `deno task x -- --flag` passes
   * the `--` through; it separates nothing here.
   */
  parseOptions(
    args: string[],
    named: readonly string[] = [],
    helpMore?: string,
  ): { outDir: string; named: Record<string, string | undefined> } {
    const rest = args[0] === "--" ? args.slice(1) : args;
    let values: Record<string, string | boolean | undefined>;
    try {
      ({ values } = parseArgs({
        args: rest,
        options: {
          ...Object.fromEntries(named.map((name) => [name, { type: "string" as const }])),
          "out-dir": { type: "string" },
          help: { type: "boolean", short: "h" },
        },
      }));
    } catch (error) {
      this.fail(`${error instanceof Error ? error.message : String(error)}; usage: ${this.usage}`);
    }
    if (values.help) {
      console.log(`Usage: ${this.usage}${helpMore ? `\n${helpMore}` : ""}`);
      Deno.exit(0);
    }
    const text = (name: string) => values[name] as string | undefined;
    return {
      outDir: resolve(text("out-dir") ?? join(ROOT, "dist")),
      named: Object.fromEntries(named.map((name) => [name, text(name)])),
    };
  }

  /**
   * Fails unless every entry point exists, then makes the output folder: a missing entry does
   * not leave half a `dist/` behind. `verb` says what was to be done (`bundle`, `compile`).
   */
  async prepare(entries: readonly string[], outDir: string, verb: string): Promise<void> {
    for (const entry of entries) {
      if (!(await exists(join(ROOT, entry)))) {
        this.fail(`cannot ${verb} ${entry}: file not found in ${ROOT}`);
      }
    }
    await mkdir(outDir, { recursive: true });
  }
}

/** Runs `deno ARGS` in the repository; whether it worked, and its output without colours. */
export async function runDeno(args: string[]): Promise<{ success: boolean; output: string }> {
  const result = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    success: result.success,
    output: stripAnsi(decoder.decode(result.stderr) + decoder.decode(result.stdout)),
  };
}

/** Says what was written: `wrote dist/confab (85.3 MiB) from client.ts`. */
export async function reportWritten(outPath: string, entry: string): Promise<void> {
  const near = relative(Deno.cwd(), outPath);
  const shown = near.startsWith("..") || isAbsolute(near) ? outPath : near;
  console.log(`wrote ${shown} (${formatSize((await stat(outPath)).size)}) from ${entry}`);
}

/** Human-readable size, e.g. `916.0 KiB`, `85.3 MiB`. */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

/**
 * The line of a failed Deno command's output that says what went wrong: the first type error
 * (`TS2322 [ERROR]: ...`, printed before the summary `error: Type checking failed.`), else the
 * first `error:` line (esbuild's `[ERROR]` lines count too) without its prefix. When that line
 * only names the step that failed, the root cause from `Caused by:` is added; otherwise where,
 * when the output says so.
 */
export function firstErrorLine(output: string): string {
  const lines = output.split(/\r?\n/).map((l) => l.trim());
  let index = lines.findIndex((l) => /^TS\d+ \[ERROR\]/.test(l));
  if (index === -1) index = lines.findIndex((l) => /^error\b|\[ERROR\]/i.test(l));
  if (index === -1) return lines.find((l) => l !== "" && !l.startsWith("⚠")) ?? "no error output";
  const message = lines[index]!.replace(/^error:\s*/i, "");
  const rest = lines.slice(index + 1);
  // `Caused by:` lists the causes, outermost first, numbered when there are several.
  const causedBy = rest.indexOf("Caused by:");
  if (causedBy !== -1) {
    const after = rest.slice(causedBy + 1);
    const end = after.findIndex((l) => l === "" || l.startsWith("Stack backtrace"));
    const root = (end === -1 ? after : after.slice(0, end)).at(-1);
    if (root) return `${message}: ${root.replace(/^\d+:\s*/, "")}`;
  }
  const location = rest.find((l) => l.startsWith("at "));
  return location ? `${message} (${location})` : message;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
