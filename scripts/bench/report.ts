/**
 * Turning measurements into output: result rows with ratios and pass/fail, the table printed
 * on stdout, `results.json`, `REPORT.md`, and the facts about the machine they were taken on.
 */
import type { Goal, ItemOutcome, Measurement, ResultRow, Unit } from "./types.ts";

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
  const digits = unit === "/s"
    ? 0
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

/** The human summary: what ran, on what, the figures against their goals, and how. */
export function renderReport(run: RunSummary): string {
  const m = run.machine;
  const goals = run.results.filter((r) => r.pass !== null);
  const met = goals.filter((r) => r.pass).length;
  const out: string[] = [
    "# Confab benchmarks",
    "",
    `Generated by \`${run.command}\` on ${run.date} (${run.mode} run, ` +
    `${run.seconds.toFixed(0)} s). Speed goals are ratios to a baseline measured in the ` +
    `same run on the same machine, or absolute bounds. Goals met: ${met} of ${goals.length}.`,
    "",
    "## Results",
    "",
    markdownTable(
      ["item", "metric", "value", "baseline", "ratio", "goal", "verdict"],
      run.results.map((r) => [
        r.item,
        r.metric,
        (r.atLeast ? "more than " : "") + formatValue(r.value, r.unit),
        r.baseline === null ? "—" : `${formatValue(r.baseline, r.unit)} (${r.baselineName})`,
        formatRatio(r.ratio),
        r.goal ?? "—",
        verdict(r.pass) || "—",
      ]),
    ),
    "",
    "## Machine",
    "",
    markdownTable(["fact", "value"], [
      ["nproc", String(m.nproc)],
      ["CPU", m.cpuModel],
      ["memory", `${m.memTotalGiB} GiB`],
      ["open files limit", m.openFilesLimit],
      ["OS", `${m.os}, kernel ${m.kernel}`],
      ["Deno", `${m.deno} (V8 ${m.v8}, TypeScript ${m.typescript})`],
      ["load average (1, 5, 15 min) at start", m.loadAverage],
      ["load average at end", m.loadAverageEnd ?? "—"],
      ["commit", m.commit],
    ]),
    "",
    "## Items",
    "",
  ];
  for (const item of run.items) {
    const load = item.loadAtStart
      ? ` Load average (1, 5, 15 min) ${item.loadAtStart} at its start, ${item.loadAtEnd} at its end.`
      : "";
    out.push(
      `### ${item.name}`,
      "",
      `${item.title}. Took ${item.seconds.toFixed(1)} s.${load}`,
      "",
    );
    if (item.error) out.push(`**Failed:** ${item.error}`, "");
    if (item.outcome) {
      const params = Object.entries(item.outcome.params).map(([k, v]) => `${k}=${v}`);
      out.push(`Parameters: ${params.join(", ")}.`, "");
      for (const note of item.outcome.notes) out.push(`- ${note}`);
      out.push("");
    }
  }
  out.push(
    "## Running",
    "",
    "- `deno task bench`: every item, full size (under 10 minutes on 2 cores).",
    "- `deno task bench --quick`: every item, small (about half a minute on an idle machine; each item has its own limit); `deno task test` runs it after the parallel tests, alone.",
    "- `deno task bench chat-rtt`: one item (also `server-conns`, `reattach`, `file`, " +
      "`offline`, `group`, `failover`, `login`, `relay`; `--list` lists them).",
    "- `--out DIR` writes `results.json` and `REPORT.md` there instead of `bench/`; " +
      "`--profiles DIR` keeps the CPU profiles (`.cpuprofile`, for Chrome's DevTools) of the " +
      "profiled phases.",
    "",
  );
  return out.join("\n");
}
