/**
 * cluster: two server instances over one PostgreSQL database against one instance over SQLite,
 * in the same run, with the same prepared users (the SQLite data is copied into PostgreSQL by
 * `migrate`). Measured: the memory each held client costs its instance, lookup latency, mail
 * stored per second, and the time until every client of an instance killed with kill -9 is
 * back on the survivor.
 *
 * PostgreSQL is a throwaway cluster in a temporary directory with its default durability
 * (fsync on, synchronous_commit on: a stored mail is on disk when acknowledged); SQLite runs as
 * the server always does (WAL, synchronous=NORMAL: it survives kill -9, not a power cut).
 *
 * For working on the failover: `CONFAB_BENCH_FAILOVER_ONLY=1` skips the SQLite baseline, the
 * lookups and the mail (their figures are then blank), `CONFAB_BENCH_LOOKUPS_ONLY=1` measures
 * memory and lookups only (no mail, no kill), and `CONFAB_BENCH_LOGS=DIR` keeps every
 * process's output there (the servers then log logins and errors) and what PostgreSQL's sessions
 * were doing, every second, while the clients came back (`pg_activity.log`).
 */
import { join } from "node:path";
import { migrateToPostgres } from "../../lib/server/migrate.ts";
import { connectSql, PostgresStore } from "../../lib/server/postgres_store.ts";
import { SqliteStore } from "../../lib/server/sqlite_store.ts";
import type { ServerStore } from "../../lib/server/store.ts";
import { startLocalPostgres } from "../local_postgres.ts";
import { LoadGenerators, type LookupStats } from "./load_generators.ts";
import { benchUser } from "./loadgen_protocol.ts";
import { prepareServerData } from "./server_data.ts";
import { describeSteps, describeTop, mergeBreakdowns } from "./cpu_profile.ts";
import {
  clientsFor,
  cpuSeconds,
  profiled,
  rssSettling,
  type RunningServer,
  settledRssKiB,
  startServer,
} from "./support.ts";
import type { BenchContext, BenchItem, ItemOutcome, Measurement } from "./types.ts";

const PROBE_USERS = 10;

/** Mail stored per second through `store.storeMail`, `inFlight` at a time. */
async function storeRate(store: ServerStore, total: number, inFlight: number, tag: string) {
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < total) {
      const i = next++;
      const result = await store.storeMail({
        recipient: benchUser(i % 50),
        sender: benchUser(50 + (i % 50)),
        msgId: `${tag}-${i}`,
        ts: Date.now(),
        body: "x".repeat(300),
      }, 1_000_000);
      if (result !== "stored") throw new Error(`mail ${i} not stored: ${result}`);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return total / ((performance.now() - t0) / 1000);
}

/** Attaches users [first, first + count) to `port`; resolves to RSS KiB per client added. */
async function attachAndWeigh(
  ctx: BenchContext,
  server: RunningServer,
  gens: LoadGenerators,
  count: number,
  warm: number,
): Promise<number> {
  const settle = rssSettling(ctx.quick);
  await gens.attach(warm);
  const before = await settledRssKiB(server.proc.pid, settle, ctx.signal);
  await gens.attach(count);
  const after = await settledRssKiB(server.proc.pid, settle, ctx.signal);
  return (after - before) / (count - warm);
}

/** Every second for `ms`, pg_stat_activity and waiting locks into CONFAB_BENCH_LOGS. */
async function sampleActivity(url: string, ms: number): Promise<void> {
  const file = join(Deno.env.get("CONFAB_BENCH_LOGS")!, "pg_activity.log");
  const sql = connectSql(url, { maxConnections: 1 });
  const until = Date.now() + ms;
  try {
    while (Date.now() < until) {
      const rows = await sql`
        SELECT application_name, state, wait_event_type, wait_event,
               (now() - query_start)::text AS running, left(query, 120) AS query
        FROM pg_stat_activity WHERE datname IS NOT NULL AND pid <> pg_backend_pid()`;
      const locks = await sql`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted`;
      const lines = rows.map((r) =>
        `  ${r.application_name} ${r.state} ${r.wait_event_type ?? ""}/${r.wait_event ?? ""} ` +
        `${r.running} ${String(r.query).replace(/\s+/g, " ")}`
      );
      await Deno.writeTextFile(
        file,
        `${new Date().toISOString()} waiting locks ${locks[0]!.n}\n${lines.join("\n")}\n`,
        { append: true },
      );
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function run(ctx: BenchContext): Promise<ItemOutcome> {
  const n = await clientsFor(ctx.quick ? 150 : 10_000);
  const warm = ctx.quick ? 20 : 300;
  const mails = ctx.quick ? 200 : 5_000;
  const lookupRate = ctx.quick ? 100 : 250;
  const seconds = ctx.quick ? 0.5 : 10;
  const dir = await ctx.tempDir("confab-bench-cluster-");
  ctx.log(`  preparing ${n} users with session tokens`);
  const data = await prepareServerData(dir, n);
  // PostgreSQL gets the users as prepared (the SQLite instance below rotates their tokens): a
  // copy of the prepared store, migrated while the cluster comes up. Quick runs do that beside
  // the SQLite baseline (initdb is seconds of the suite's serial step); full runs first, so that
  // the baseline has the machine to itself.
  const pgSource = join(dir, "server-for-postgres");
  await Deno.mkdir(pgSource);
  for await (const entry of Deno.readDir(data.dataDir)) {
    if (entry.isFile) {
      await Deno.copyFile(join(data.dataDir, entry.name), join(pgSource, entry.name));
    }
  }
  ctx.log("  starting PostgreSQL and copying the users into it (migrate)");
  const pgReady = (async () => {
    const pg = await startLocalPostgres();
    ctx.defer(() => pg[Symbol.asyncDispose]());
    const url = await pg.createDatabase("bench");
    await migrateToPostgres(pgSource, url);
    return url;
  })();
  pgReady.catch(() => {}); // awaited below, whatever happens before
  if (!ctx.quick) await pgReady;
  const keyFile = join(dir, "service-key.json");
  const measurements: Measurement[] = [];
  const notes: string[] = [];
  const failoverOnly = Deno.env.get("CONFAB_BENCH_FAILOVER_ONLY") === "1";
  const lookupsOnly = !failoverOnly && Deno.env.get("CONFAB_BENCH_LOOKUPS_ONLY") === "1";

  // ---- one instance over SQLite: the baseline -------------------------------------------------
  let lonePerClient = NaN;
  let loneLookups = { p50: NaN, p99: NaN } as LookupStats;
  try {
    if (!failoverOnly) {
      ctx.log(`  SQLite: one instance, ${n - PROBE_USERS} clients + a probe`);
      const lone = await startServer(ctx.spawn, { dataDir: data.dataDir, signal: ctx.signal });
      const loneGens = await LoadGenerators.start(ctx, {
        port: lone.port,
        data,
        range: { first: 0, count: n - PROBE_USERS },
      });
      const loneProbe = await LoadGenerators.start(ctx, {
        port: lone.port,
        data,
        range: { first: n - PROBE_USERS, count: PROBE_USERS },
        name: "probe",
      });
      lonePerClient = await attachAndWeigh(ctx, lone, loneGens, n - PROBE_USERS, warm);
      await loneProbe.attach(PROBE_USERS);
      loneLookups = await loneProbe.lookups(lookupRate, seconds);
      await Promise.all([loneGens.close(), loneProbe.close()]);
      await lone.proc.stop();
    }
  } finally {
    await pgReady.catch(() => {}); // (its own failure is thrown just below)
  }
  const url = await pgReady;

  // ---- two instances over PostgreSQL ----------------------------------------------------------
  // Ports from the OS at listen time (port 0, read from the banner): a port picked beforehand can
  // be taken by any outgoing connection on the machine before the instance listens on it.
  const instances: RunningServer[] = [];
  for (const i of [0, 1]) {
    instances.push(
      await startServer(ctx.spawn, {
        dataDir: join(dir, `instance-${i}`),
        name: `instance-${i + 1}`,
        signal: ctx.signal,
        args: ["--store", url, "--key", keyFile],
      }),
    );
  }
  const [a, b] = instances as [RunningServer, RunningServer];
  // Every client on instance 1 (knowing both addresses), so that all of them move when it is
  // killed; the probe clients on instance 2.
  ctx.log(`  PostgreSQL: two instances, ${n - PROBE_USERS} clients on instance 1`);
  const onA = await LoadGenerators.start(ctx, {
    port: [a.port, b.port],
    data,
    range: { first: 0, count: n - PROBE_USERS },
    profile: true,
  });
  const probe = await LoadGenerators.start(ctx, {
    port: [b.port, a.port],
    data,
    range: { first: n - PROBE_USERS, count: PROBE_USERS },
    name: "probe",
  });
  const perClientA = await attachAndWeigh(ctx, a, onA, n - PROBE_USERS, warm);
  await probe.attach(PROBE_USERS);
  // Instance 2 sampled every millisecond while it answers: where a lookup's time goes.
  let lookups = { p50: NaN, p99: NaN, count: 0, errors: 0, max: NaN } as LookupStats;
  if (!failoverOnly) {
    const cpu0 = await cpuSeconds(b.proc.pid);
    const run = await profiled([b.proc], () => probe.lookups(lookupRate, seconds), ctx.signal, {
      samplingUs: 1000,
    });
    lookups = run.result;
    const cpu = await cpuSeconds(b.proc.pid) - cpu0;
    const units = Math.max(1, lookups.count);
    const breakdown = run.profiles.find((p) => p.name === b.proc.name)!.breakdown;
    notes.push(
      `Instance 2 while it answered the lookups: CPU ${cpu.toFixed(2)} s, ` +
        `${(cpu * 1e6 / units).toFixed(0)} µs per lookup; by step: ${
          describeSteps(breakdown, units, "lookup")
        }. Top functions by self time (µs per lookup): ${describeTop(breakdown, units, 10)}.`,
    );
  }
  if (lookupsOnly) {
    await Promise.all([onA.close(), probe.close()]);
    await Promise.all(instances.map((i) => i.proc.stop()));
    return {
      measurements: lookupMeasurements(perClientA, lonePerClient, lookups, loneLookups),
      params: { clients: n, lookupRate, seconds, only: "memory and lookups" },
      notes: [
        ...notes,
        `Lookups: ${lookups.count} answered (${lookups.errors} failed), max ` +
        `${lookups.max.toFixed(1)} ms. Only memory and lookups were measured ` +
        `(CONFAB_BENCH_LOOKUPS_ONLY).`,
      ],
    };
  }

  // ---- mail stored per second, through each store ---------------------------------------------
  ctx.log(`  storing ${mails} messages through each store, 16 at a time`);
  const inFlight = 16;
  let sqliteRate = NaN;
  if (!failoverOnly) {
    await using sqlite = new SqliteStore(join(dir, "mail-sqlite"));
    for (let i = 0; i < 100; i++) {
      await sqlite.createUser({
        name: benchUser(i),
        salt: new Uint8Array(16),
        hash: new Uint8Array(32),
        publicKey: "A".repeat(43),
      });
    }
    sqliteRate = await storeRate(sqlite, mails, inFlight, "s");
  }
  let pgRate = NaN;
  if (!failoverOnly) {
    await using shared = await PostgresStore.open(url);
    pgRate = await storeRate(shared, mails, inFlight, "p");
  }

  // ---- kill -9 of instance a: its clients come back on b --------------------------------------
  ctx.log(`  kill -9 of instance 1 with ${n - PROBE_USERS} clients on it`);
  await onA.watch();
  const t0 = Date.now();
  a.proc.kill("SIGKILL");
  await a.proc.exited(10_000);
  const backMs = ctx.quick ? 30_000 : 60_000;
  // CONFAB_BENCH_LOGS: what the database's sessions do meanwhile, every second.
  const activity = Deno.env.get("CONFAB_BENCH_LOGS") ? sampleActivity(url, backMs) : undefined;
  const survivorCpu0 = await cpuSeconds(b.proc.pid);
  const gensCpu = async () =>
    (await Promise.all(onA.pids.map((pid) => cpuSeconds(pid)))).reduce((x, y) => x + y, 0);
  const gensCpu0 = await gensCpu();
  const profiledRun = await profiled(
    [b.proc, ...onA.procs],
    () => onA.watchReattach(backMs),
    ctx.signal,
    { samplingUs: 1000 },
  );
  const back = profiledRun.result;
  const survivorCpu = await cpuSeconds(b.proc.pid) - survivorCpu0;
  const clientsCpu = await gensCpu() - gensCpu0;
  const survivorProfile = profiledRun.profiles.find((p) => p.name === b.proc.name)!;
  const clientsProfile = mergeBreakdowns(
    profiledRun.profiles.filter((p) => onA.procs.some((g) => g.name === p.name))
      .map((p) => p.breakdown),
  );
  await activity;
  const all = back.all === undefined ? backMs / 1000 : (back.all - t0) / 1000;
  await Promise.all([onA.close(), probe.close()]);
  await b.proc.stop();

  measurements.push(
    ...lookupMeasurements(perClientA, lonePerClient, lookups, loneLookups),
    {
      metric: "mail stored",
      value: pgRate,
      unit: "/s",
      baseline: sqliteRate,
      baselineName: "the SQLite store, same calls",
    },
    {
      metric: "all back after kill -9",
      value: all,
      unit: "s",
      goal: { type: "max", value: 10 },
      ...(back.all === undefined ? { atLeast: true } : {}),
    },
  );
  notes.push(
    `${n} prepared users: ${n - PROBE_USERS} clients on instance 1 (each knowing both ` +
      `addresses), ${PROBE_USERS} probe clients on instance 2, attached with resume by load ` +
      `generator processes. RSS per client held by instance 1: ${perClientA.toFixed(2)} KiB; ` +
      `one SQLite instance holding ${n - PROBE_USERS}: ${lonePerClient.toFixed(2)} KiB.`,
    `Lookups: ${lookupRate}/s for ${seconds} s from the probe clients on instance 2, each for ` +
      `a contact who is online (the reply carries the address): instance 2 answers from the ` +
      `shared directory table, the same query whichever instance holds the target. Answered ${lookups.count} (${lookups.errors} failed); ` +
      `max ${lookups.max.toFixed(1)} ms; SQLite: p50 ${loneLookups.p50.toFixed(2)}, p99 ` +
      `${loneLookups.p99.toFixed(2)} ms.`,
    `Mail: ${mails} storeMail calls, ${inFlight} in flight, 300-byte bodies, 50 recipients, ` +
      `in this process: each one committed (PostgreSQL: one transaction with a row lock on ` +
      `the mailbox count, fsync on) before the next of its worker.`,
    `kill -9 of instance 1 with ${n - PROBE_USERS} clients: ` +
      (back.all === undefined
        ? `only ${back.back} of ${n - PROBE_USERS} back on instance 2 after ${backMs / 1000} s`
        : `all back on instance 2 after ${all.toFixed(2)} s`) +
      `; half after ${back.half === undefined ? "—" : ((back.half - t0) / 1000).toFixed(2)} s; ` +
      `${back.attempts} attempts. Clients try the next address within 250 ms (ConfabClient's ` +
      `first wait), with the resumption ticket instance 1 gave them (same key file: instance 2 ` +
      `opens it).`,
    `Profile of the survivor (sampled every 1 ms) while they came back (CPU ` +
      `${survivorCpu.toFixed(2)} s, ${
        (survivorCpu * 1e6 / Math.max(1, back.back)).toFixed(0)
      } µs ` +
      `per client back), by step: ${
        describeSteps(survivorProfile.breakdown, Math.max(1, back.back), "client back")
      }. Top functions by self time (µs per client back): ${
        describeTop(survivorProfile.breakdown, Math.max(1, back.back), 12)
      }. The load generators (the clients' side) used ${clientsCpu.toFixed(2)} s of CPU, ` +
      `${(clientsCpu * 1e6 / Math.max(1, back.back)).toFixed(0)} µs per client back, by step ` +
      `(their profiles together): ${
        describeSteps(clientsProfile, Math.max(1, back.back), "client back")
      }. Their top functions: ${describeTop(clientsProfile, Math.max(1, back.back), 12)}.`,
  );
  return {
    measurements,
    params: { clients: n, mails, lookupRate, seconds },
    notes,
  };
}

const SQLITE_NAME = "one instance over SQLite";

/** Memory per client and lookup latency, each beside one instance over SQLite. */
function lookupMeasurements(
  perClient: number,
  lonePerClient: number,
  lookups: LookupStats,
  lone: LookupStats,
): Measurement[] {
  return [
    {
      metric: "rss per client",
      value: perClient,
      unit: "KiB",
      baseline: lonePerClient,
      baselineName: SQLITE_NAME,
    },
    {
      metric: "lookup p50",
      value: lookups.p50,
      unit: "ms",
      baseline: lone.p50,
      baselineName: SQLITE_NAME,
    },
    {
      metric: "lookup p99",
      value: lookups.p99,
      unit: "ms",
      baseline: lone.p99,
      baselineName: SQLITE_NAME,
      goal: { type: "max", value: 10 },
    },
  ];
}

export const cluster: BenchItem = {
  name: "cluster",
  title: "two instances over PostgreSQL vs one over SQLite: memory, lookups, mail, failover",
  metrics: ["rss per client", "lookup p50", "lookup p99", "mail stored", "all back after kill -9"],
  timeoutMs: (quick) => quick ? 90_000 : 600_000,
  run,
};
