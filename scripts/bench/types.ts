/**
 * The shape of a bench item and of what it reports. An item is one module under
 * `scripts/bench/` exporting a {@link BenchItem}; `items.ts` lists them.
 */
import type { BenchProcess, SpawnOptions } from "./support.ts";

export type Unit = "ms" | "s" | "KiB" | "MiB" | "MiB/s" | "/s" | "%";

/**
 * A speed goal: an absolute bound, or a bound on the ratio to the same run's baseline; an upper
 * bound for times and sizes, a lower one for rates.
 */
export type Goal =
  /** `value ≤ goal.value` (in the measurement's unit). */
  | { type: "max"; value: number }
  /** `value / baseline ≤ goal.value`. */
  | { type: "ratio_max"; value: number }
  /** `value ≥ goal.value` (in the measurement's unit). */
  | { type: "min"; value: number }
  /** `value / baseline ≥ goal.value`. */
  | { type: "ratio_min"; value: number };

/** One figure an item measured. */
export interface Measurement {
  metric: string;
  value: number;
  unit: Unit;
  /** The same figure for the baseline, measured in the same run (same unit). */
  baseline?: number;
  /** What the baseline is, in a few words ("raw TCP ping-pong"). */
  baselineName?: string;
  goal?: Goal;
  /** The value is a lower bound: the thing measured had not happened when time ran out. */
  atLeast?: boolean;
}

/** What an item hands back: its figures, the parameters it ran with, and notes for the report. */
export interface ItemOutcome {
  measurements: Measurement[];
  params: Record<string, string | number>;
  notes: string[];
}

/** What the runner gives an item: mode, a deadline, progress output, and tracked resources. */
export interface BenchContext {
  readonly quick: boolean;
  /** Aborts when the item's deadline passes or the bench is interrupted. */
  readonly signal: AbortSignal;
  /** A progress line on stderr. */
  log(text: string): void;
  /** A temporary directory, removed when the item ends. */
  tempDir(prefix: string): Promise<string>;
  /** Starts a Deno process in the project root; it is stopped when the item ends. */
  spawn(name: string, args: string[], options?: SpawnOptions): BenchProcess;
  /** Runs `cleanup` when the item ends (last registered, first run). */
  defer(cleanup: () => unknown): void;
  /** A figure an item that ran earlier in this run measured (undefined: it did not run). */
  earlier(item: string, metric: string): Measurement | undefined;
}

export interface BenchItem {
  /** The name on the command line: `deno task bench <name>`. */
  name: string;
  /** One line: what is measured. */
  title: string;
  /** The metric names the item reports (the quick test checks each one is there). */
  metrics: readonly string[];
  /** The longest the item may take before it is stopped. */
  timeoutMs(quick: boolean): number;
  run(ctx: BenchContext): Promise<ItemOutcome>;
}

/** One row of `bench/results.json`. */
export interface ResultRow {
  item: string;
  metric: string;
  value: number;
  unit: Unit;
  /** True when `value` is a lower bound (not reached before the deadline). */
  atLeast: boolean;
  baseline: number | null;
  baselineName: string | null;
  /** value / baseline. */
  ratio: number | null;
  /** The goal in words (`≤ 2× baseline`, `≤ 1 ms`, `≥ 0.5× baseline`). */
  goal: string | null;
  /** Whether the goal is met; null when the metric has no goal. */
  pass: boolean | null;
}
