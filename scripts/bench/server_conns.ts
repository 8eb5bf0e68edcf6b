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
}

/** Parses a --trace-gc line: `[pid:0x…]  12345 ms: Scavenge 3.4 (4.4) -> … , 1.86 / 0.00 ms …`. */
function parseGcLine(line: string): GcEvent | undefined {
  const m = /\s(\d+) ms: ([A-Za-z -]+?) [\d.]+ \([\d.]+\) -> .*?, ([\d.]+) \/ [\d.]+ ms/.exec(line);
  return m ? { at: Number(m[1]), kind: m[2]!.trim(), ms: Number(m[3]) } : undefined;
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
    v8Flags: ["--trace-gc", ...(Deno.env.get("CONFAB_BENCH_V8_FLAGS")?.split(" ") ?? [])],
  });
  const gcs: GcEvent[] = [];
  server.proc.out.listen((line) => {
    const gc = parseGcLine(line);
    if (gc) gcs.push(gc);
  });
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
  });
  await gens.attach(warm);
  const serverWarm = await settledRssKiB(server.proc.pid, settle, ctx.signal);
  ctx.log(`  confab server: attaching ${n} clients (resume) with ${gens.processes + 1} processes`);
  const [attach] = await Promise.all([gens.attach(n - probeUsers), probe.attach(probeUsers)]);
  const serverFull = await settledRssKiB(server.proc.pid, settle, ctx.signal);
  const perClient = (serverFull - serverWarm) / (n - warm);

  ctx.log(`  ${loadRate + probeRate} lookups/s for ${seconds} s with ${n} clients attached`);
  const lookupsFrom = performance.now() - server.proc.spawnedAt;
  const loadAtLookups = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  const cpu0 = await cpuSeconds(server.proc.pid);
  const waited0 = await Promise.all([server.proc.pid, ...probe.pids].map(runQueueWait));
  // Sampled every millisecond: where the server's time goes while it answers the lookups.
  const { result: [load, probed], profiles } = await profiled(
    [server.proc],
    () => Promise.all([gens.lookups(loadRate, seconds), probe.lookups(probeRate, seconds)]),
    ctx.signal,
    { samplingUs: 1000 },
  );
  const lookupCpu = await cpuSeconds(server.proc.pid) - cpu0;
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
      `${loadAtLookups} as they began.`,
      `Garbage collection in the server during the lookups (V8's --trace-gc, pauses of the ` +
      `main thread): ${describeGcs(during)}; over its whole run: ${describeGcs(gcs)}.`,
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
