/**
 * server-conns: N logged-in clients held by one `server.ts` process, attached by load
 * generator processes over the real protocol (`hello`, `resume` with a session token); the
 * memory each costs the server, and `lookup` latency while they are all attached.
 *
 * Baseline, in the same run: a bare Deno server (`raw_server.ts`) holding N idle sockets
 * opened by the same generators. Memory per client is the growth of the process's RSS from a
 * warm-up point (a few clients already attached, so one-off costs such as compiling the
 * protocol code are not charged to clients) to all N, divided by the clients added.
 */
import { LoadGenerators, LOOKUP_TIMEOUT_MS } from "./load_generators.ts";
import { prepareServerData } from "./server_data.ts";
import { describeSteps, describeTop } from "./cpu_profile.ts";
import {
  clientsFor,
  CLOCK_TICKS,
  cpuSeconds,
  profiled,
  rssSettling,
  runQueueWait,
  settledRssKiB,
  startHelper,
  startServer,
} from "./support.ts";
import type { BenchContext, BenchItem, ItemOutcome } from "./types.ts";

/** One collection as V8's --trace-gc reports it. */
interface GcEvent {
  /** ms since the isolate started. */
  at: number;
  kind: string;
  /** The pause, in ms. */
  ms: number;
  /** The collection the loop monitor forces at start-up (its time sets the clock). */
  forced: boolean;
}

/** Parses a --trace-gc line: `[pid:0x…]  12345 ms: Scavenge 3.4 (4.4) -> … , 1.86 / 0.00 ms …`. */
function parseGcLine(line: string): GcEvent | undefined {
  // (A scavenge while the old generation is swept says so: "Scavenge (during sweeping)".)
  const m =
    /\s(\d+) ms: ([A-Za-z -]+?)(?: \([a-z ]+\))? [\d.]+ \([\d.]+\) -> .*?, ([\d.]+) \/ [\d.]+ ms/
      .exec(line);
  return m
    ? { at: Number(m[1]), kind: m[2]!.trim(), ms: Number(m[3]), forced: line.includes("testing") }
    : undefined;
}

/** A span of wall-clock time (ms): a collector pause, an event-loop stall, a lookup. */
interface Span {
  from: number;
  to: number;
}

/** Follows the `#stall` lines of a process started with the loop monitor (on its stderr). */
function stallsOf(proc: { err: { listen(listener: (line: string) => void): void } }): {
  stalls: Span[];
  gcClock: { at?: number };
} {
  const stalls: Span[] = [];
  const gcClock: { at?: number } = {};
  proc.err.listen((line) => {
    const [tag, at, late] = line.split(" ");
    if (tag === "#stall") stalls.push({ from: Number(at) - Number(late), to: Number(at) });
    else if (tag === "#gc-clock") gcClock.at = Number(at);
  });
  return { stalls, gcClock };
}

/** Milliseconds of `spans` inside `window`. */
function overlap(spans: Span[], window: Span): number {
  let ms = 0;
  for (const s of spans) {
    ms += Math.max(0, Math.min(s.to, window.to) - Math.max(s.from, window.from));
  }
  return ms;
}

/**
 * Where the slow lookups' time went: for the lookups above `overMs`, how many had a collector
 * pause of the server, a stall of the server's event loop (pause, busy streak or wait for a
 * core) or one of the probe's inside them, and what share of their time those make.
 */
function tailBreakdown(
  timed: { sent: number; ms: number }[],
  overMs: number,
  spans: { gc: Span[]; server: Span[]; probe: Span[] },
): string {
  const slow = timed.filter((t) => t.ms > overMs).map((t) => ({ from: t.sent, to: t.sent + t.ms }));
  if (slow.length === 0) return `no lookup took over ${overMs} ms`;
  const total = slow.reduce((a, w) => a + w.to - w.from, 0);
  const part = (list: Span[]) => {
    const each = slow.map((w) => overlap(list, w));
    const hit = each.filter((ms) => ms > 0).length;
    const share = each.reduce((a, b) => a + b, 0) / total;
    return `${hit} (${(100 * share).toFixed(0)} % of their time)`;
  };
  return `${slow.length} took over ${overMs.toFixed(1)} ms (${total.toFixed(0)} ms in all); ` +
    `a collector pause of the server fell inside ${part(spans.gc)}, a stall of the server's ` +
    `event loop (≥ 4 ms late, whatever the cause, pauses included) inside ${part(spans.server)}` +
    `, a stall of the probe's inside ${part(spans.probe)}`;
}

/** "n stalls, max X ms, Y ms in all (Z ms of them in collector pauses)". */
function describeStalls(stalls: Span[], gc?: Span[]): string {
  if (stalls.length === 0) return "none";
  const lengths = stalls.map((s) => s.to - s.from);
  const inGc = gc && stalls.reduce((a, s) => a + overlap(gc, s), 0);
  return `${stalls.length} (max ${Math.max(...lengths).toFixed(1)} ms, ` +
    `${lengths.reduce((a, b) => a + b, 0).toFixed(0)} ms in all` +
    (inGc === undefined ? ")" : `, ${inGc.toFixed(0)} ms of it in collector pauses)`);
}

/** "Scavenge 120× (max 3.1 ms, 95.0 ms in all), Mark-Compact 2× (…)". */
function describeGcs(gcs: GcEvent[]): string {
  const kinds = new Map<string, GcEvent[]>();
  for (const g of gcs) kinds.set(g.kind, [...(kinds.get(g.kind) ?? []), g]);
  return [...kinds].map(([kind, list]) =>
    `${kind} ${list.length}× (max ${Math.max(...list.map((g) => g.ms)).toFixed(1)} ms, ` +
    `${list.reduce((a, g) => a + g.ms, 0).toFixed(1)} ms in all)`
  ).join(", ") || "none";
}

/** CPU seconds the hypervisor took from this machine's cores, all of them together. */
async function stolenSeconds(): Promise<number> {
  const cpu = (await Deno.readTextFile("/proc/stat")).split("\n")[0]!.trim().split(/\s+/);
  return Number(cpu[8] ?? 0) / CLOCK_TICKS;
}

/**
 * The load generators' nice value: they stand for 14,980 machines of their own and must not take
 * the server's CPU (at 0 they used more of the 2 cores than the server). The probe stays at 0: it
 * measures. `CONFAB_BENCH_GENERATORS_NICE=0` measures as before.
 */
const GENERATORS_NICE = Number(Deno.env.get("CONFAB_BENCH_GENERATORS_NICE") ?? 10);

async function run(ctx: BenchContext): Promise<ItemOutcome> {
  // CONFAB_BENCH_CLIENTS: another number of clients, for trying a change without 15,000.
  const n = await clientsFor(
    Number(Deno.env.get("CONFAB_BENCH_CLIENTS") ?? (ctx.quick ? 150 : 15_000)),
  );
  const warm = ctx.quick ? 30 : 500;
  const probeUsers = ctx.quick ? 10 : 20;
  const loadRate = ctx.quick ? 400 : 750;
  const probeRate = ctx.quick ? 100 : 250;
  const seconds = ctx.quick ? 0.5 : 10;
  /** Quiet time before RSS is read, so the process has finished what the attaching began. */
  const settle = rssSettling(ctx.quick);
  const dir = await ctx.tempDir("confab-bench-conns-");

  ctx.log(`  preparing ${n} users with session tokens`);
  const data = await prepareServerData(dir, n);

  // Baseline: a raw server holding N idle sockets.
  const raw = await startHelper(ctx.spawn, "raw-server", "scripts/bench/raw_server.ts", ctx.signal);
  const rawGens = await LoadGenerators.start(ctx, { port: raw.port, data, raw: true });
  await rawGens.attach(warm);
  const rawWarm = await settledRssKiB(raw.proc.pid, settle, ctx.signal);
  ctx.log(`  raw server: opening ${n} idle sockets`);
  await rawGens.attach(n);
  const rawFull = await settledRssKiB(raw.proc.pid, settle, ctx.signal);
  const rawPerSocket = (rawFull - rawWarm) / (n - warm);
  await rawGens.close();
  await raw.proc.stop();

  // The Confab server: the generators hold most clients and make the lookup load; a probe
  // process with a few clients measures lookups as a lone client sees them (its figures are
  // not bent by the pauses of a process holding thousands of connections).
  // --trace-gc: every collection's pause, to see what the slowest lookups waited for.
  const server = await startServer(ctx.spawn, {
    dataDir: data.dataDir,
    signal: ctx.signal,
    // --expose-gc: the loop monitor forces one collection, to put V8's times on the clock.
    v8Flags: [
      "--trace-gc",
      "--expose-gc",
      ...(Deno.env.get("CONFAB_BENCH_V8_FLAGS")?.split(" ") ?? []),
    ],
    monitor: true,
  });
  const gcs: GcEvent[] = [];
  server.proc.out.listen((line) => {
    const gc = parseGcLine(line);
    if (gc) gcs.push(gc);
  });
  const serverLoop = stallsOf(server.proc);
  const idle = await settledRssKiB(server.proc.pid, settle, ctx.signal);
  const gens = await LoadGenerators.start(ctx, {
    port: server.port,
    data,
    range: { first: 0, count: n - probeUsers },
    nice: GENERATORS_NICE,
  });
  const probe = await LoadGenerators.start(ctx, {
    port: server.port,
    data,
    range: { first: n - probeUsers, count: probeUsers },
    name: "probe",
    monitor: true,
  });
  const probeLoop = stallsOf(probe.procs[0]!);
  await gens.attach(warm);
  const serverWarm = await settledRssKiB(server.proc.pid, settle, ctx.signal);
  ctx.log(`  confab server: attaching ${n} clients (resume) with ${gens.processes + 1} processes`);
  const [attach] = await Promise.all([gens.attach(n - probeUsers), probe.attach(probeUsers)]);
  // The CPU of n idle clients (their heartbeats), while the RSS settles.
  const idleFrom = [performance.now(), await cpuSeconds(server.proc.pid)] as const;
  const serverFull = await settledRssKiB(server.proc.pid, settle, ctx.signal);
  const idleCpu = (await cpuSeconds(server.proc.pid) - idleFrom[1]) /
    ((performance.now() - idleFrom[0]) / 1000);
  const perClient = (serverFull - serverWarm) / (n - warm);

  ctx.log(`  ${loadRate + probeRate} lookups/s for ${seconds} s with ${n} clients attached`);
  const lookupsFrom = performance.now() - server.proc.spawnedAt;
  const loadAtLookups = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  const cpu0 = await cpuSeconds(server.proc.pid);
  const gensCpu0 = await Promise.all(gens.pids.map(cpuSeconds));
  const steal0 = await stolenSeconds();
  // The span of the lookups (on the wall clock), from when they start: after the profiler's.
  const lookupWindow = { from: 0, to: 0 };
  const waited0 = await Promise.all([server.proc.pid, ...probe.pids].map(runQueueWait));
  // Sampled every millisecond: where the server's time goes while it answers the lookups.
  const { result: [load, probed], profiles } = await profiled(
    [server.proc],
    () => {
      lookupWindow.from = performance.timeOrigin + performance.now();
      return Promise.all([gens.lookups(loadRate, seconds), probe.lookups(probeRate, seconds)]);
    },
    ctx.signal,
    { samplingUs: 1000 },
  );
  const lookupCpu = await cpuSeconds(server.proc.pid) - cpu0;
  lookupWindow.to = performance.timeOrigin + performance.now();
  const stolen = await stolenSeconds() - steal0;
  const gensCpu = (await Promise.all(gens.pids.map(cpuSeconds)))
    .reduce((a, c, i) => a + c - gensCpu0[i]!, 0);
  const [serverWaited, probeWaited] = (await Promise.all(
    [server.proc.pid, ...probe.pids].map(runQueueWait),
  )).map((w, i) => w - waited0[i]!);
  const lookupsTo = performance.now() - server.proc.spawnedAt;
  const serverProfile = profiles.find((p) => p.name !== "bench")!.breakdown;
  const answered = load.count + probed.count;
  const failed = load.errors + probed.errors;
  const asked = load.count + probed.count + failed;
  const afterLookups = await settledRssKiB(server.proc.pid, { ...settle, settleMs: 0 }, ctx.signal);
  await Promise.all([gens.close(), probe.close()]);
  await server.proc.stop(); // (V8 writes its trace lines buffered: all are in by the exit)
  const during = gcs.filter((g) => g.at >= lookupsFrom && g.at <= lookupsTo);
  // V8's times (ms since the isolate started) on the wall clock, by the forced collection.
  const forced = gcs.find((g) => g.forced);
  const clock = serverLoop.gcClock.at !== undefined && forced
    ? serverLoop.gcClock.at - forced.at
    : undefined;
  const gcSpans = clock === undefined
    ? []
    : gcs.map((g) => ({ from: clock + g.at - g.ms, to: clock + g.at }));
  const inWindow = (spans: Span[]) =>
    spans.filter((s) => s.to >= lookupWindow.from && s.from <= lookupWindow.to);
  const spans = {
    gc: inWindow(gcSpans),
    server: inWindow(serverLoop.stalls),
    probe: inWindow(probeLoop.stalls),
  };
  // CONFAB_BENCH_SPANS=FILE: every span and lookup of the window, for a closer look.
  const spansFile = Deno.env.get("CONFAB_BENCH_SPANS");
  if (spansFile) {
    await Deno.writeTextFile(
      spansFile,
      JSON.stringify({ window: lookupWindow, ...spans, timed: probed.timed }),
    );
  }

  const rawName = "raw Deno server, idle sockets";
  return {
    measurements: [
      {
        metric: "rss per client",
        value: perClient,
        unit: "KiB",
        baseline: rawPerSocket,
        baselineName: rawName,
        goal: { type: "max", value: 25 },
      },
      { metric: "lookup p99", value: probed.p99, unit: "ms", goal: { type: "max", value: 5 } },
      { metric: "lookup p50", value: probed.p50, unit: "ms" },
      { metric: "lookup rate", value: load.rate + probed.rate, unit: "/s" },
      {
        metric: "server rss",
        value: serverFull / 1024,
        unit: "MiB",
        baseline: rawFull / 1024,
        baselineName: rawName,
      },
      { metric: "attach rate", value: (n - probeUsers - warm) / (attach.ms / 1000), unit: "/s" },
      { metric: "lookups failed", value: 100 * failed / asked, unit: "%" },
    ],
    params: { clients: n, warmup: warm, loadRate, probeRate, seconds },
    notes: [
      `${n} clients, each logged in with hello + Noise handshake + resume, and pinging as ` +
      `ConfabClient does, after 30 s without sending anything (before this run's version: every ` +
      `5 s) (${processes(gens.processes)}, at nice ${GENERATORS_NICE} (before this run's ` +
      `version: 0), and a probe process with ${probeUsers}, at 0). RSS per client = (RSS at ${n} − RSS at ${warm}) / ${
        n - warm
      }: server ` +
      `${mib(serverWarm)} → ${mib(serverFull)} MiB (${mib(idle)} MiB idle, ` +
      `${mib(afterLookups)} MiB after the lookups); raw server ${mib(rawWarm)} → ` +
      `${mib(rawFull)} MiB.`,
      `Lookups for ${seconds} s, open loop: ${loadRate}/s from the generators (load) and ` +
      `${probeRate}/s from the probe (measured), about one per client every ` +
      `${Math.round(n / (loadRate + probeRate))} s; each asks for the asker's contact, who is ` +
      `online, so the reply carries an address. Latency from send to reply in the asking ` +
      `process; a lookup that failed counts as ${LOOKUP_TIMEOUT_MS / 1000} s (the request ` +
      `timeout). Probe: ${probed.count} answered, p50 ${fmt(probed.p50)}, p99 ` +
      `${fmt(probed.p99)}, max ${fmt(probed.max)} ms; as the generators saw theirs: ` +
      `${load.count} answered, p50 ${fmt(load.p50)}, p99 ${fmt(load.p99)}, max ` +
      `${fmt(load.max)} ms.` +
      (failed > 0
        ? ` ${failed} of ${asked} failed: ${describe({ ...load.failures, ...probed.failures })}` +
          `; connections lost meanwhile: ${describe({ ...load.lost, ...probed.lost })}.`
        : ""),
      `Server CPU during the lookups: ${lookupCpu.toFixed(2)} s, ` +
      `${(lookupCpu * 1e6 / Math.max(1, answered)).toFixed(0)} µs per lookup answered ` +
      `(heartbeats and all). Profile of the server then (sampled every 1 ms), by step: ${
        describeSteps(serverProfile, Math.max(1, answered), "lookup")
      }. Top functions by self time (µs per lookup): ${
        describeTop(serverProfile, Math.max(1, answered), 12)
      }.`,
      `Waiting for a core during the lookups (the main thread's time runnable but not running, ` +
      `/proc/PID/task/PID/schedstat): the server ${serverWaited!.toFixed(2)} s, the probe ` +
      `${probeWaited!.toFixed(2)} s, in ${seconds} s; the load average was ` +
      `${loadAtLookups} as they began; the machine's cores were stolen by its host for ` +
      `${stolen.toFixed(2)} s of them (/proc/stat). The load generators used ${
        gensCpu.toFixed(2)
      } s of CPU ` +
      `meanwhile (at nice ${GENERATORS_NICE}); with the ${n} clients idle before the lookups ` +
      `(heartbeats only), the server used ${(100 * idleCpu).toFixed(1)} % of a core.`,
      `Garbage collection in the server during the lookups (V8's --trace-gc, pauses of the ` +
      `main thread): ${describeGcs(during)}; over its whole run: ${describeGcs(gcs)}.`,
      `Event-loop stalls during the lookups (a timer every 5 ms in the process, preloaded; a ` +
      `stall is a tick ≥ 4 ms late): server ${describeStalls(spans.server, spans.gc)}; probe ` +
      `${describeStalls(spans.probe)}. The tail, lookup by lookup (on the wall clock; ` +
      `V8's times put on it by a collection forced at start-up${
        clock === undefined ? ", which was not seen: no pauses placed" : ""
      }): ${tailBreakdown(probed.timed, 5, spans)}; of the slowest 1 % (the p99 and above): ${
        tailBreakdown(probed.timed, probed.p99 - 0.05, spans)
      }.`,
      `Attach: ${n - probeUsers - warm} clients in ${(attach.ms / 1000).toFixed(1)} s, ` +
      `${attach.retries} retries.`,
    ],
  };
}

function processes(n: number): string {
  return `${n} load generator process${n === 1 ? "" : "es"}`;
}

function describe(counts: Record<string, number>): string {
  return Object.entries(counts).map(([why, n]) => `${n}× "${why}"`).join(", ") || "none";
}

function mib(kib: number): number {
  return Math.round(kib / 1024);
}

function fmt(ms: number): string {
  return ms.toFixed(ms < 10 ? 2 : 1);
}

export const serverConns: BenchItem = {
  name: "server-conns",
  title: "N logged-in clients held by one server: memory per client, lookup latency",
  metrics: [
    "rss per client",
    "lookup p99",
    "lookup p50",
    "lookup rate",
    "server rss",
    "attach rate",
    "lookups failed",
  ],
  timeoutMs: (quick) => quick ? 45_000 : 300_000,
  run,
};
