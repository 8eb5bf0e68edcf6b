/**
 * `deno task bench`: runs the benchmark items (scripts/bench/items.ts) with real processes
 * speaking the real protocol, prints a table, and writes `results.json` and the generated parts
 * of `REPORT.md` (scripts/bench/report_blocks.ts: the hand-written analysis around them stays).
 *
 *   deno task bench [item ...] [--quick] [--out DIR] [--list]
 *
 * Exits 0 when every item ran (whether or not its goals were met: they are benchmarks, not
 * tests), 1 when an item failed to run, 2 on bad arguments, 130 when interrupted.
 */
import { Command } from "commander";
import { join, resolve } from "node:path";
import { ITEMS } from "./bench/items.ts";
import {
  formatTable,
  type ItemSummary,
  loadAverage,
  machineFacts,
  type RunSummary,
  toRow,
  updateReport,
} from "./bench/report.ts";
import {
  abortable,
  BenchProcess,
  deadline,
  reapDir,
  ROOT,
  setProfileDir,
  type SpawnOptions,
  stopReaper,
} from "./bench/support.ts";
import type { BenchContext, BenchItem } from "./bench/types.ts";

const names = ITEMS.map((i) => i.name);
const program = new Command()
  .name("bench")
  .description(`Confab benchmarks. Items: ${names.join(", ")} (all when none is named).`)
  .argument("[items...]", "items to run")
  .option("--quick", "a short version of every item (under a minute in all)")
  .option("--out <dir>", "where results.json and REPORT.md go", join(ROOT, "bench"))
  .option("--list", "list the items and exit")
  .option("--profiles <dir>", "keep the CPU profiles (.cpuprofile) of the profiled phases here")
  .showHelpAfterError()
  // `deno task bench -- --quick` passes the `--` through: drop it.
  .parse(["deno", "bench.ts", ...Deno.args.filter((a) => a !== "--")]);

const opts = program.opts<
  { quick?: boolean; out: string; list?: boolean; profiles?: string }
>();
const wanted = program.processedArgs[0] as string[];

if (opts.list) {
  for (const item of ITEMS) console.log(`${item.name.padEnd(14)} ${item.title}`);
  Deno.exit(0);
}
const unknown = wanted.filter((n) => !names.includes(n));
if (unknown.length > 0) {
  console.error(`bench: no item named ${unknown.join(", ")}; the items are ${names.join(", ")}`);
  Deno.exit(2);
}
const selected = wanted.length === 0 ? ITEMS : ITEMS.filter((i) => wanted.includes(i.name));
const quick = opts.quick === true;
const outDir = resolve(opts.out);

const runStarted = performance.now();
const profileDir = opts.profiles
  ? resolve(opts.profiles)
  : await Deno.makeTempDir({ prefix: "confab-bench-profiles-" });
await Deno.mkdir(profileDir, { recursive: true });
setProfileDir(profileDir);

const interrupt = new AbortController();
const onSignal = () => interrupt.abort(new Error("interrupted"));
for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, onSignal);

function log(text: string): void {
  console.error(text);
}

/** Runs one item with its deadline; whatever it started is stopped and removed afterwards. */
async function runItem(item: BenchItem): Promise<ItemSummary> {
  const started = performance.now();
  // Each item has its own limit: what an earlier item took never shortens a later one, so a
  // slow machine makes the run longer, not red.
  const timeoutMs = item.timeoutMs(quick);
  const signal = AbortSignal.any([
    interrupt.signal,
    AbortSignal.timeout(timeoutMs),
  ]);
  const cleanups: (() => unknown)[] = [];
  const procs: BenchProcess[] = [];
  const dirs: string[] = [];
  const ctx: BenchContext = {
    quick,
    signal,
    log: (text) => log(`[${item.name}] ${text.trimStart()}`),
    tempDir: async (prefix) => {
      const dir = await Deno.makeTempDir({ prefix });
      dirs.push(dir);
      reapDir(dir);
      return dir;
    },
    spawn: (name: string, args: string[], options?: SpawnOptions) => {
      const proc = new BenchProcess(name, args, options);
      procs.push(proc);
      return proc;
    },
    defer: (cleanup) => void cleanups.push(cleanup),
    earlier: (name, metric) =>
      items.find((i) => i.name === name)?.outcome?.measurements.find((m) => m.metric === metric),
  };
  log(`[${item.name}] ${item.title}${quick ? " (quick)" : ""}`);
  const summary: ItemSummary = {
    name: item.name,
    title: item.title,
    seconds: 0,
    loadAtStart: await loadAverage(),
  };
  try {
    summary.outcome = await abortable(item.run(ctx), signal);
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    summary.error = signal.aborted && !interrupt.signal.aborted
      ? `did not finish within ${timeoutMs / 1000} s: ${e.message}`
      : e.message;
    log(`[${item.name}] FAILED: ${summary.error}`);
  } finally {
    // What the item deferred first (in-process clients log out while the server still runs),
    // then its processes, then its temporary directories.
    for (const cleanup of cleanups.reverse()) {
      await deadline(Promise.resolve().then(cleanup), 30_000, "cleanup").catch((error) =>
        log(`[${item.name}] cleanup: ${error instanceof Error ? error.message : error}`)
      );
    }
    await Promise.all(procs.map((p) => p.stop()));
    for (const dir of dirs) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      reapDir(dir, true);
    }
  }
  summary.seconds = (performance.now() - started) / 1000;
  summary.loadAtEnd = await loadAverage();
  log(`[${item.name}] done in ${summary.seconds.toFixed(1)} s`);
  return summary;
}

const date = new Date().toISOString();
const machine = await machineFacts(ROOT);
const items: ItemSummary[] = [];
for (const item of selected) {
  if (interrupt.signal.aborted) break;
  items.push(await runItem(item));
}
await stopReaper();
if (!opts.profiles) await Deno.remove(profileDir, { recursive: true }).catch(() => {});
machine.loadAverageEnd = await loadAverage();

const results = items.flatMap((s) => s.outcome?.measurements.map((m) => toRow(s.name, m)) ?? []);
const command = ["deno task bench", ...wanted, ...(quick ? ["--quick"] : [])].join(" ");
const run: RunSummary = {
  date,
  mode: quick ? "quick" : "full",
  command,
  seconds: (performance.now() - runStarted) / 1000,
  machine,
  items,
  results,
};

console.log(formatTable(results));
for (const item of items.filter((i) => i.error)) console.log(`${item.name}: FAILED: ${item.error}`);
await Deno.mkdir(outDir, { recursive: true });
await Deno.writeTextFile(join(outDir, "results.json"), JSON.stringify(run, null, 2) + "\n");
// Only the generated blocks of REPORT.md are rewritten: the analysis around them is kept.
const reportPath = join(outDir, "REPORT.md");
const existing = await Deno.readTextFile(reportPath).catch(() => "");
await Deno.writeTextFile(reportPath, updateReport(existing, run, wanted.length === 0));
console.log(`\nwrote ${join(outDir, "results.json")} and ${join(outDir, "REPORT.md")}`);

for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(signal, onSignal);
Deno.exit(interrupt.signal.aborted ? 130 : items.some((i) => i.error) ? 1 : 0);
