/**
 * Drives a set of load generator processes (`loadgen.ts`) as one: splits the prepared users
 * between them (each holds under 7,500 sockets, far below the 20,000 file limit, and two
 * share the work on two cores), sends each the same command and gathers their reports.
 */
import type { LoadgenCommand, LoadgenEvent } from "./loadgen_protocol.ts";
import type { PreparedData } from "./server_data.ts";
import { type BenchProcess, type JsonEvent, LOOP_MONITOR, percentile } from "./support.ts";
import type { BenchContext } from "./types.ts";

/** Connections one generator process holds at most. */
const PER_PROCESS = 7500;
/** A lookup's request timeout (FramedConnection's default): a failed one counts as this long. */
export const LOOKUP_TIMEOUT_MS = 10_000;
/** Deadline for attaching every client (the server may be slow; the bench says so). */
const ATTACH_MS = 240_000;

type Event<T extends LoadgenEvent["type"]> = Extract<LoadgenEvent, { type: T }>;

interface Generator {
  proc: BenchProcess;
  first: number;
  count: number;
}

export interface LookupStats {
  count: number;
  errors: number;
  p50: number;
  p99: number;
  max: number;
  /** Lookups answered per second, all generators together. */
  rate: number;
  /** Connections lost during the lookups, by reason. */
  lost: Record<string, number>;
  /** Why lookups failed, by reason. */
  failures: Record<string, number>;
  /** Every answered lookup: when it was sent (wall-clock ms) and how long it took (ms). */
  timed: { sent: number; ms: number }[];
}

function mergeCounts(all: Record<string, number>[]): Record<string, number> {
  const merged: Record<string, number> = {};
  for (const counts of all) {
    for (const [key, n] of Object.entries(counts)) merged[key] = (merged[key] ?? 0) + n;
  }
  return merged;
}

export interface ReattachResult {
  /** Date.now() when half of the clients were back. */
  half?: number;
  /** Date.now() when 90 % of the clients were back. */
  most?: number;
  /** Date.now() when the last client was back (all attached at once). */
  all?: number;
  /** Clients back when the watch ended. */
  back: number;
  total: number;
  attempts: number;
  lost: number;
  /** Why connections were lost (reason → count). */
  reasons: Record<string, number>;
  /** Why attempts failed (reason → count). */
  errors: Record<string, number>;
}

/** Sets the nice value of every thread of `pid` (setpriority applies to one thread at a time). */
async function renice(pid: number, nice: number): Promise<void> {
  const tids: string[] = [];
  for await (const entry of Deno.readDir(`/proc/${pid}/task`)) tids.push(entry.name);
  const { success, stderr } = await new Deno.Command("renice", {
    args: ["-n", String(nice), "-p", ...tids],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`renice ${pid}: ${new TextDecoder().decode(stderr).trim()}`);
}

export class LoadGenerators {
  readonly #ctx: BenchContext;
  readonly #gens: Generator[];

  private constructor(ctx: BenchContext, gens: Generator[]) {
    this.#ctx = ctx;
    this.#gens = gens;
  }

  /**
   * Starts enough generators for the prepared users `range` (default: all) as clients of the
   * server on `port` (`raw`: plain sockets to a raw server instead).
   */
  static async start(
    ctx: BenchContext,
    options: {
      /** The server's port, or the ports of several instances (first used first). */
      port: number | number[];
      data: PreparedData;
      raw?: boolean;
      range?: { first: number; count: number };
      name?: string;
      /** Started so that `profiled()` can profile them (the clients' side of the work). */
      profile?: boolean;
      /** Preload the event-loop monitor (scripts/bench/loop_monitor.ts): stalls on stderr. */
      monitor?: boolean;
      /**
       * A lower scheduling priority (nice value) for every thread of the generators: they stand
       * for thousands of machines of their own, so their CPU should not be taken from the server.
       */
      nice?: number;
    },
  ): Promise<LoadGenerators> {
    const { users, tokensFile } = options.data;
    const range = options.range ?? { first: 0, count: users };
    const processes = Math.max(1, Math.ceil(range.count / PER_PROCESS));
    const name = options.name ?? (options.raw ? "loadgen-raw" : "loadgen");
    const gens: Generator[] = [];
    for (let p = 0; p < processes; p++) {
      const first = range.first + Math.floor(range.count * p / processes);
      const count = range.first + Math.floor(range.count * (p + 1) / processes) - first;
      const args = [
        "run",
        "--allow-net",
        "--allow-read",
        // The profiler, when asked for, writes its profile where the bench says.
        ...(options.profile ? ["--allow-env", "--allow-write"] : []),
        ...(options.monitor ? ["--preload", LOOP_MONITOR] : []),
        "scripts/bench/loadgen.ts",
        "--port",
        [options.port].flat().join(","),
        "--tokens",
        tokensFile,
        "--first",
        String(first),
        "--count",
        String(count),
        "--users",
        String(users),
        ...(options.raw ? ["--raw"] : []),
      ];
      const proc = ctx.spawn(processes > 1 ? `${name}${p}` : name, args, {
        graceMs: 10_000,
        profile: options.profile,
      });
      gens.push({ proc, first, count });
    }
    await Promise.all(
      gens.map((g) => g.proc.nextEvent((e) => e.type === "ready", "ready", 30_000, ctx.signal)),
    );
    if (options.nice !== undefined) {
      for (const g of gens) await renice(g.proc.pid, options.nice);
    }
    return new LoadGenerators(ctx, gens);
  }

  get processes(): number {
    return this.#gens.length;
  }

  /** The generator processes (to profile them). */
  get procs(): BenchProcess[] {
    return this.#gens.map((g) => g.proc);
  }

  /** The generator processes' ids (for their CPU time). */
  get pids(): number[] {
    return this.#gens.map((g) => g.proc.pid);
  }

  #send(gen: Generator, command: LoadgenCommand): Promise<void> {
    return gen.proc.write(JSON.stringify(command));
  }

  /**
   * Attaches clients until `total` are logged in, split between the generators in proportion.
   * @returns the time the slowest generator took, and the retries on the way.
   */
  async attach(total: number): Promise<{ ms: number; retries: number }> {
    const first = this.#gens[0]!.first;
    const users = this.#gens.reduce((n, g) => n + g.count, 0);
    const results = await Promise.all(this.#gens.map(async (gen) => {
      const before = gen.first - first;
      const upTo = Math.min(
        gen.count,
        Math.round(total * (before + gen.count) / users) - Math.round(total * before / users),
      );
      await this.#send(gen, { cmd: "attach", upTo });
      return await gen.proc.nextEvent<Event<"attached">>(
        (e) => {
          if (e.type === "progress" && gen === this.#gens[0]) {
            const lost = Object.entries(e.lost as Record<string, number>)
              .map(([why, n]) => `; ${n} lost: ${why}`).join("");
            this.#ctx.log(`  ${gen.proc.name}: ${e.attached}/${e.target} attached${lost}`);
          }
          return e.type === "attached";
        },
        `attached (${upTo} clients)`,
        ATTACH_MS,
        this.#ctx.signal,
      );
    }));
    return {
      ms: Math.max(...results.map((r) => r.ms)),
      retries: results.reduce((n, r) => n + r.retries, 0),
    };
  }

  /** Issues `rate` lookups per second in all for `seconds`, and merges the latencies. */
  async lookups(rate: number, seconds: number): Promise<LookupStats> {
    const share = rate / this.#gens.length;
    const results = await Promise.all(this.#gens.map(async (gen) => {
      await this.#send(gen, { cmd: "lookups", rate: share, seconds });
      return await gen.proc.nextEvent<Event<"lookups">>(
        (e) => e.type === "lookups",
        "lookups",
        seconds * 1000 + 30_000,
        this.#ctx.signal,
      );
    }));
    const errors = results.reduce((n, r) => n + r.errors, 0);
    // A failed lookup is one that never came back in time: it counts as the timeout.
    const samples = results.flatMap((r) => r.samples)
      .concat(Array.from({ length: errors }, () => LOOKUP_TIMEOUT_MS))
      .sort((a, b) => a - b);
    const took = Math.max(...results.map((r) => r.seconds));
    return {
      count: samples.length - errors,
      errors,
      p50: percentile(samples, 0.5),
      p99: percentile(samples, 0.99),
      max: samples.at(-1) ?? NaN,
      rate: (samples.length - errors) / took,
      lost: mergeCounts(results.map((r) => r.lost)),
      failures: mergeCounts(results.map((r) => r.failures)),
      timed: results.flatMap((r) => r.samples.map((ms, i) => ({ sent: r.sent[i]!, ms }))),
    };
  }

  /** Starts watching for a restart (call it just before the server goes away). */
  async watch(): Promise<void> {
    await Promise.all(this.#gens.map(async (gen) => {
      await this.#send(gen, { cmd: "watch" });
      await gen.proc.nextEvent((e) => e.type === "watching", "watching", 30_000, this.#ctx.signal);
    }));
  }

  /**
   * After {@link watch}, follows the clients coming back until all are attached again or `ms`
   * have passed.
   * @returns when half, 90 % and all of them were back (Date.now() values; undefined when
   * not reached in time), how many were back at the end, attempts, losses and their reasons.
   */
  async watchReattach(ms: number): Promise<ReattachResult> {
    const until = Date.now() + ms;
    const total = this.#gens.reduce((n, g) => n + g.count, 0);
    /** Clients back (re-attached since they were lost), by generator. */
    const back = new Map<Generator, number>(this.#gens.map((g) => [g, 0]));
    const result: ReattachResult = {
      back: 0,
      total,
      attempts: 0,
      lost: 0,
      reasons: {},
      errors: {},
    };
    const reasons: Record<string, number>[] = [];
    const errors: Record<string, number>[] = [];
    const update = (gen: Generator, count: number, t: number) => {
      back.set(gen, count);
      result.back = [...back.values()].reduce((a, b) => a + b, 0);
      if (result.half === undefined && result.back >= total / 2) result.half = t;
      if (result.most === undefined && result.back >= total * 0.9) result.most = t;
    };
    let logged = 0;
    let lastWelcome = 0;
    const latest = new Map<Generator, Event<"status">>();
    const finished = new Set<Generator>();
    await Promise.all(this.#gens.map(async (gen) => {
      while (Date.now() < until) {
        let e: JsonEvent;
        try {
          e = await gen.proc.nextEvent(
            (e) => e.type === "status" || e.type === "all_attached",
            "all_attached",
            until - Date.now(),
            this.#ctx.signal,
          );
        } catch (error) {
          if (Date.now() >= until - 50 && !this.#ctx.signal.aborted) return; // out of time
          throw error;
        }
        if (e.type === "status") {
          const status = e as Event<"status">;
          update(gen, status.back, status.t);
          latest.set(gen, status);
          if (gen === this.#gens[0] && Date.now() - logged > 2000) {
            logged = Date.now();
            const errors = Object.entries(status.errors)
              .map(([why, n]) => `; ${n} failed: ${why}`).join("");
            this.#ctx.log(
              `  ${gen.proc.name}: ${status.back}/${status.target} back, ${status.attached} ` +
                `attached${errors}`,
            );
          }
          continue;
        }
        const done = e as Event<"all_attached">;
        update(gen, gen.count, done.t);
        finished.add(gen);
        lastWelcome = Math.max(lastWelcome, done.t);
        result.attempts += done.attempts;
        result.lost += done.lost;
        reasons.push(done.reasons);
        errors.push(done.errors);
        return;
      }
    }));
    // A generator still waiting for clients tells how far it got from its last status.
    for (const gen of this.#gens.filter((g) => !finished.has(g))) {
      const status = latest.get(gen);
      if (!status) continue;
      result.attempts += status.attempts;
      reasons.push(status.lost);
      errors.push(status.errors);
    }
    result.reasons = mergeCounts(reasons);
    result.errors = mergeCounts(errors);
    // The last generator's last welcome: the moment all clients were attached at once.
    if (finished.size === this.#gens.length) result.all = lastWelcome;
    return result;
  }

  /** Closes every connection and ends the generators. */
  async close(): Promise<void> {
    await Promise.all(this.#gens.map(async (gen) => {
      if (!gen.proc.hasExited) await this.#send(gen, { cmd: "close" }).catch(() => {});
      await gen.proc.stop();
    }));
  }
}
