/**
 * Turning measurements into output: result rows with ratios and pass/fail, the table printed
 * on stdout, `results.json`, `REPORT.md`, and the facts about the machine they were taken on.
 */
import type { Goal, ItemOutcome, Measurement, ResultRow, Unit } from "./types.ts";
import { blocksOf, generatedBlock, replaceBlocks } from "./report_blocks.ts";

export interface MachineFacts {
  nproc: number;
  cpuModel: string;
  memTotalGiB: number;
  openFilesLimit: string;
  os: string;
  kernel: string;
  deno: string;
  v8: string;
  typescript: string;
  /** /proc/loadavg when the run began: other work on the machine skews the figures. */
  loadAverage: string;
  /** /proc/loadavg when the run ended (1, 5, 15 minutes). */
  loadAverageEnd?: string;
  commit: string;
}

export interface ItemSummary {
  name: string;
  title: string;
  seconds: number;
  /** /proc/loadavg when the item began and when it ended: other work on the machine. */
  loadAtStart?: string;
  loadAtEnd?: string;
  outcome?: ItemOutcome;
  error?: string;
}

export interface RunSummary {
  date: string;
  mode: "full" | "quick";
  command: string;
  seconds: number;
  machine: MachineFacts;
  items: ItemSummary[];
  results: ResultRow[];
}

async function readText(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return "";
  }
}

async function commandOutput(cmd: string, args: string[]): Promise<string> {
  try {
    const { success, stdout } = await new Deno.Command(cmd, {
      args,
      stdout: "piped",
      stderr: "null",
    }).output();
    return success ? new TextDecoder().decode(stdout).trim() : "";
  } catch {
    return "";
  }
}

/** The 1, 5 and 15 minute load averages. */
export async function loadAverage(): Promise<string> {
  return (await readText("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
}

export async function machineFacts(root: string): Promise<MachineFacts> {
  const cpuinfo = await readText("/proc/cpuinfo");
  const meminfo = await readText("/proc/meminfo");
  const limits = await readText("/proc/self/limits");
  const memKiB = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? NaN);
  const nproc = Number(await commandOutput("nproc", [])) || navigator.hardwareConcurrency;
  const commit = await commandOutput("git", ["-C", root, "rev-parse", "--short", "HEAD"]);
  const dirty = await commandOutput("git", ["-C", root, "status", "--porcelain"]);
  return {
    nproc,
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    memTotalGiB: Math.round(memKiB / 1024 / 1024 * 10) / 10,
    openFilesLimit: /^Max open files\s+(\d+)/m.exec(limits)?.[1] ?? "unknown",
    os: `${Deno.build.os} ${Deno.build.arch}`,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    loadAverage: await loadAverage(),
    commit: commit ? `${commit}${dirty ? " (with uncommitted changes)" : ""}` : "unknown",
  };
}

export function describeGoal(goal: Goal, unit: Unit): string {
  const value = goal.value.toLocaleString("en-US");
  switch (goal.type) {
    case "max":
      return `≤ ${value} ${unit}`;
    case "ratio_max":
      return `≤ ${value}× baseline`;
    case "min":
      return `≥ ${value} ${unit}`;
    case "ratio_min":
      return `≥ ${value}× baseline`;
  }
}

export function toRow(item: string, m: Measurement): ResultRow {
  const ratio = m.baseline !== undefined && m.baseline > 0 ? m.value / m.baseline : null;
  let pass: boolean | null = null;
  if (m.goal?.type === "max") {
    pass = m.atLeast ? (m.value < m.goal.value ? null : false) : m.value <= m.goal.value;
  }
  if (m.goal?.type === "ratio_max") pass = ratio !== null && ratio <= m.goal.value;
  // (`atLeast` on a rate would be odd, but a lower bound at or above a minimum meets it.)
  if (m.goal?.type === "min") {
    pass = m.value >= m.goal.value ? true : m.atLeast ? null : false;
  }
  if (m.goal?.type === "ratio_min") pass = ratio !== null && ratio >= m.goal.value;
  return {
    item,
    metric: m.metric,
    value: m.value,
    unit: m.unit,
    atLeast: m.atLeast === true,
    baseline: m.baseline ?? null,
    baselineName: m.baselineName ?? null,
    ratio,
    goal: m.goal ? describeGoal(m.goal, m.unit) : null,
    pass,
  };
}

/** A figure with as many decimals as its size deserves. */
export function formatValue(value: number | null, unit: Unit): string {
  if (value === null || !Number.isFinite(value)) return "—";
  // Rates in the thousands need no decimals; a few logins a second do.
  const digits = unit === "/s"
    ? (Math.abs(value) < 10 ? 2 : Math.abs(value) < 100 ? 1 : 0)
    : unit === "%"
    ? 2
    : Math.abs(value) < 1
    ? 3
    : Math.abs(value) < 100
    ? 2
    : 1;
  const text = value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
  return `${text} ${unit}`;
}

function formatRatio(ratio: number | null): string {
  return ratio === null ? "—" : `${ratio.toFixed(2)}×`;
}

function verdict(pass: boolean | null): string {
  return pass === null ? "" : pass ? "met" : "MISSED";
}

/** The rows as an aligned text table. */
export function formatTable(rows: ResultRow[]): string {
  const header = ["item", "metric", "value", "baseline", "ratio", "goal", ""];
  const lines = rows.map((r) => [
    r.item,
    r.metric,
    (r.atLeast ? "> " : "") + formatValue(r.value, r.unit),
    formatValue(r.baseline, r.unit),
    formatRatio(r.ratio),
    r.goal ?? "",
    verdict(r.pass),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const right = new Set([2, 3, 4]);
  const format = (cells: string[]) =>
    cells.map((c, i) => right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))
      .join("  ").trimEnd();
  return [format(header), widths.map((w) => "-".repeat(w)).join("  "), ...lines.map(format)]
    .join("\n");
}

/** A Markdown table: a header row and the rows, `|` in cells escaped. */
export function markdownTable(header: string[], rows: string[][]): string {
  const escape = (s: string) => s.replaceAll("|", "\\|");
  return [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${r.map(escape).join(" | ")} |`),
  ].join("\n");
}

/** The result rows of `run` as Markdown table rows, and one row for each item that failed. */
function resultRows(run: RunSummary): Map<string, string[]> {
  const rows = new Map<string, string[]>(run.items.map((i) => [i.name, []]));
  for (const r of run.results) {
    rows.get(r.item)?.push(markdownRow([
      r.item,
      r.metric,
      (r.atLeast ? "more than " : "") + formatValue(r.value, r.unit),
      r.baseline === null ? "—" : `${formatValue(r.baseline, r.unit)} (${r.baselineName})`,
      formatRatio(r.ratio),
      r.goal ?? "—",
      verdict(r.pass) || "—",
    ]));
  }
  for (const item of run.items.filter((i) => i.error)) {
    rows.get(item.name)!.push(
      markdownRow([item.name, "(did not finish)", "—", "—", "—", "—", "failed: see its section"]),
    );
  }
  return rows;
}

const RESULTS_HEADER = ["item", "metric", "value", "baseline", "ratio", "goal", "verdict"];

function resultsTable(rows: string[]): string {
  return [markdownTable(RESULTS_HEADER, []), ...rows].join("\n");
}

function markdownRow(cells: string[]): string {
  return markdownTable(RESULTS_HEADER, [cells]).split("\n")[2]!;
}

/** The item a Markdown row of the results table is about (its first cell). */
function rowItem(line: string): string {
  return line.split(/(?<!\\)\|/)[1]?.trim() ?? "";
}

/**
 * The results table of an earlier report with the rows of the items of `run` replaced (where
 * the item's first row was; items it did not have go at the end); other rows are kept.
 */
function mergeResults(earlier: string, fresh: Map<string, string[]>): string {
  const lines = earlier.split("\n");
  const firstRow = lines.findIndex((l) => l.startsWith("|")) + 2;
  if (firstRow < 2) return resultsTable([...fresh.values()].flat());
  const out = lines.slice(0, firstRow);
  const placed = new Set<string>();
  let i = firstRow;
  for (; i < lines.length && lines[i]!.startsWith("|"); i++) {
    const item = rowItem(lines[i]!);
    const rows = fresh.get(item);
    if (rows === undefined) out.push(lines[i]!);
    else if (!placed.has(item)) {
      out.push(...rows);
      placed.add(item);
    }
  }
  for (const [item, rows] of fresh) if (!placed.has(item)) out.push(...rows);
  return [...out, ...lines.slice(i)].join("\n");
}

function machineTable(m: MachineFacts): string {
  return markdownTable(["fact", "value"], [
    ["nproc", String(m.nproc)],
    ["CPU", m.cpuModel],
    ["memory", `${m.memTotalGiB} GiB`],
    ["open files limit", m.openFilesLimit],
    ["OS", `${m.os}, kernel ${m.kernel}`],
    ["Deno", `${m.deno} (V8 ${m.v8}, TypeScript ${m.typescript})`],
    ["load average (1, 5, 15 min) at start", m.loadAverage],
    ["load average at end", m.loadAverageEnd ?? "—"],
    ["commit", m.commit],
  ]);
}

/** An item's generated part: what it is, when and how long it ran, its parameters and notes. */
function itemText(item: ItemSummary, run: RunSummary, alone: boolean): string {
  const load = item.loadAtStart
    ? ` Load average (1, 5, 15 min) ${item.loadAtStart} at its start, ${item.loadAtEnd} at its end.`
    : "";
  const when = alone
    ? ` Run on its own by \`${run.command}\` on ${run.date} (${run.mode}), commit ${run.machine.commit}.`
    : "";
  const out = [`${item.title}. Took ${item.seconds.toFixed(1)} s.${load}${when}`, ""];
  if (item.error) out.push(`**Failed:** ${item.error}`, "");
  if (item.outcome) {
    const params = Object.entries(item.outcome.params).map(([k, v]) => `${k}=${v}`);
    out.push(`Parameters: ${params.join(", ")}.`, "");
    for (const note of item.outcome.notes) out.push(`- ${note}`);
  }
  return out.join("\n");
}

const RUNNING = [
  "- `deno task bench`: every item, full size (about 15 minutes on 2 cores shared with other work).",
  "- `deno task bench --quick`: every item, small (about half a minute on an idle machine; each item has its own limit); `deno task test` runs it after the parallel tests, alone, with `--out` a temporary directory.",
  "- `deno task bench chat-rtt`: one item (also `server-conns`, `reattach`, `file`, " +
  "`offline`, `group`, `failover`, `login`, `relay`, `cluster`; `--list` lists them).",
  "- `--out DIR` writes `results.json` and `REPORT.md` there instead of `bench/`; " +
  "`--profiles DIR` keeps the CPU profiles (`.cpuprofile`, for Chrome's DevTools) of the " +
  "profiled phases.",
  "- What a run writes into `REPORT.md` sits between `<!-- begin generated: NAME -->` and " +
  "`<!-- end generated: NAME -->` (the summary, the results table, the machine, each item's " +
  "section, this list; the soak writes its own block); a rerun replaces only those, and " +
  "everything outside the markers (the analysis, breakdowns, notes on earlier runs) is kept. " +
  "Write by hand outside them. A run of some items (`deno task bench file`) replaces only " +
  "their rows and sections and adds a line under the summary; an item that is not in the " +
  'file yet gets a section before "Running". An item that fails says why in its section ' +
  "and in the results, and the run goes on with the next.",
].join("\n");

/** The generated blocks of a report of `run`, in the order of a new report. */
function reportBlocks(run: RunSummary, alone: boolean): Map<string, string> {
  const m = run.machine;
  const goals = run.results.filter((r) => r.pass !== null);
  const met = goals.filter((r) => r.pass).length;
  const failed = run.items.filter((i) => i.error).map((i) => i.name);
  const blocks = new Map<string, string>([
    [
      "summary",
      `Generated by \`${run.command}\` on ${run.date} (${run.mode} run, ` +
      `${run.seconds.toFixed(0)} s). Speed goals are ratios to a baseline measured in the ` +
      `same run on the same machine, or absolute bounds. Goals met: ${met} of ${goals.length}.` +
      (failed.length ? ` Did not finish: ${failed.join(", ")} (see their sections).` : ""),
    ],
    [
      "results",
      resultsTable([...resultRows(run).values()].flat()),
    ],
    ["machine", machineTable(m)],
  ]);
  for (const item of run.items) blocks.set(`item ${item.name}`, itemText(item, run, alone));
  blocks.set("running", RUNNING);
  return blocks;
}

/** A new report of `run`: headings around its generated blocks. */
export function renderReport(run: RunSummary): string {
  const blocks = reportBlocks(run, false);
  const out = ["# Confab benchmarks", "", generatedBlock("summary", blocks.get("summary")!), ""];
  out.push("## Results", "", generatedBlock("results", blocks.get("results")!), "");
  out.push("## Machine", "", generatedBlock("machine", blocks.get("machine")!), "", "## Items", "");
  for (const item of run.items) {
    const name = `item ${item.name}`;
    out.push(`### ${item.name}`, "", generatedBlock(name, blocks.get(name)!), "");
  }
  out.push("## Running", "", generatedBlock("running", RUNNING), "");
  return out.join("\n");
}

/**
 * `existing` (a REPORT.md) brought up to date with `run`: its generated blocks replaced, the
 * rest kept. A run of every item replaces them all; a run of some (`all` false) only their
 * rows and sections, and adds a line about it under the summary. A file without blocks is
 * replaced by a new report.
 */
export function updateReport(existing: string, run: RunSummary, all: boolean): string {
  const earlier = blocksOf(existing);
  if (earlier.size === 0) return renderReport(run);
  const blocks = reportBlocks(run, !all);
  if (!all) {
    const names = run.items.map((i) => i.name).join(", ");
    blocks.set(
      "summary",
      `${earlier.get("summary") ?? ""}\n\nRerun on their own since: ${names} by ` +
        `\`${run.command}\` on ${run.date} (commit ${run.machine.commit}): their rows and sections.`,
    );
    blocks.set("results", mergeResults(earlier.get("results") ?? "", resultRows(run)));
    blocks.delete("machine");
  }
  const { text, missing } = replaceBlocks(existing, blocks);
  if (missing.length === 0) return text;
  // Items the file has no section for go before "Running" (or at the end).
  const sections = missing.filter((name) => name.startsWith("item ")).map((name) =>
    `### ${name.slice("item ".length)}\n\n${generatedBlock(name, blocks.get(name)!)}\n\n`
  ).join("");
  const at = text.search(/^## Running$/m);
  return at < 0
    ? `${text.trimEnd()}\n\n${sections}`
    : text.slice(0, at) + sections + text.slice(at);
}
