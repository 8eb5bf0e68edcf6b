/**
 * failover: how soon the others notice that a peer is gone. An observer (a ConfabClient in
 * this process) is in a group with victim `client.ts --json` processes (a full mesh of direct
 * links, made with chat + /a); one victim at a time is
 *
 * - killed with SIGKILL: its sockets close at once, so the notice should come at once;
 * - stopped with SIGSTOP (a frozen process: its sockets stay open, nothing answers): only the
 *   heartbeat notices, after the peer timeout (`--peer-timeout`; the observer's
 *   `peerTimeoutMs`, the same setting), and is then killed.
 *
 * The observer's notice is its `link_down` for the victim and its `group_presence` event with
 * the victim away (the later of the two, which follow each other at once); both are taken in
 * this process, as is the signal, on one clock. Every other member's notice (the same
 * `group_presence` event, read from its stdout) is waited for too, and the slowest is reported. Trials are spaced by a random pause so they fall at every phase of the heartbeat.
 */
import { join } from "node:path";
import type { ClientEvent } from "../../lib/client/events.ts";
import {
  BenchGroup,
  type ClientProcess,
  linkAll,
  LocalClient,
  relateAll,
  SETUP_MS,
  startClients,
} from "./clients.ts";
import { percentile, SETUP_PASSWORD_COST, sleep, startServer } from "./support.ts";
import type { BenchContext, BenchItem, ItemOutcome, Measurement } from "./types.ts";

interface Trial {
  victim: string;
  /** Signal → the observer's link_down, ms. */
  linkDown: number;
  /** Signal → the observer's group_presence (the victim away), ms. */
  group: number;
  /** Signal → the last member (the observer too) to emit its group_presence, ms. */
  everyone: number;
}

async function trial(
  ctx: BenchContext,
  group: BenchGroup,
  victim: ClientProcess,
  how: "SIGKILL" | "SIGSTOP",
  waitMs: number,
): Promise<Trial> {
  const observer = group.creator;
  const name = victim.name.toLowerCase();
  const leftMe = (e: { type?: string; user?: unknown; here?: unknown }) =>
    e.type === "group_presence" && e.here === false && String(e.user).toLowerCase() === name;
  let linkDownAt: number | undefined;
  observer.onEvent = (e: ClientEvent, at: number) => {
    if (e.type === "link_down" && e.user.toLowerCase() === name) linkDownAt ??= at;
  };
  const others = group.members.filter((m) => m !== victim);
  const waits = [observer, ...others].map((c) =>
    c.waitFor((e) => leftMe(e), `notice that ${victim.name} is gone`, waitMs, ctx.signal)
  );
  for (const w of waits) w.catch(() => {});
  const t0 = performance.now();
  victim.proc.kill(how);
  try {
    const [mine, ...theirs] = await Promise.all(waits);
    if (linkDownAt === undefined) throw new Error(`the observer saw no link_down for ${name}`);
    return {
      victim: victim.name,
      linkDown: linkDownAt - t0,
      group: mine!.at - t0,
      everyone: Math.max(mine!.at, ...theirs.map((t) => t.at)) - t0,
    };
  } finally {
    observer.onEvent = undefined;
    victim.proc.kill("SIGKILL"); // a stopped one must not wake up later
    group.drop(victim);
  }
}

function summary(trials: Trial[], key: keyof Omit<Trial, "victim">): string {
  return trials.map((t) => t[key].toFixed(key === "linkDown" ? 1 : 0)).join(", ");
}

async function run(ctx: BenchContext): Promise<ItemOutcome> {
  const kills = ctx.quick ? 2 : 6;
  const stops = ctx.quick ? 1 : 5;
  /** The --peer-timeout of every member, in seconds (the client's default is 3). */
  const peerTimeout = ctx.quick ? 1 : 3;
  const timeoutMs = peerTimeout * 1000;
  /** The heartbeat interval the client derives from it. */
  const intervalMs = Math.round(Math.min(1_000, timeoutMs / 3));
  const dir = await ctx.tempDir("confab-bench-failover-");
  const server = await startServer(ctx.spawn, {
    dataDir: join(dir, "server"),
    signal: ctx.signal,
    // Only the sign-ups and logins of the setup hash passwords, none of what is measured: at
    // the default cost (N=2^17, ≈ 0.5-2 s a hash) a loaded machine timed them out.
    args: ["--password-cost", String(SETUP_PASSWORD_COST)],
  });
  const names = [
    ...Array.from({ length: kills }, (_, i) => `k${i + 1}`),
    ...Array.from({ length: stops }, (_, i) => `s${i + 1}`),
  ];
  ctx.log(`  ${names.length} victims and an observer in one group, --peer-timeout ${peerTimeout}`);
  const victims = await startClients(ctx, names, {
    serverPort: server.port,
    dir,
    args: ["--peer-timeout", String(peerTimeout)],
  });
  const observer = await LocalClient.signup(ctx, "observer", {
    dir,
    server: { host: "127.0.0.1", port: server.port },
    peerTimeoutMs: timeoutMs,
  });
  await relateAll(observer, victims, ctx.signal);
  await linkAll(victims, ctx.signal);
  const group = new BenchGroup(observer);
  await group.add(victims, ctx.signal);

  const killed: Trial[] = [];
  const stopped: Trial[] = [];
  for (const victim of victims) {
    const how = victim.name.startsWith("k") ? "SIGKILL" : "SIGSTOP";
    // A random pause: trials fall at random points of the heartbeat cycle.
    await sleep(100 + Math.random() * intervalMs, ctx.signal);
    ctx.log(`  ${how === "SIGKILL" ? "kill -9" : "SIGSTOP"} ${victim.name}`);
    const waitMs = how === "SIGKILL" ? 10_000 : timeoutMs * 3 + 5_000;
    const result = await trial(ctx, group, victim, how, Math.min(waitMs, SETUP_MS));
    (how === "SIGKILL" ? killed : stopped).push(result);
  }

  const notice = (t: Trial) => Math.max(t.linkDown, t.group);
  const kill = killed.map(notice).sort((a, b) => a - b);
  const stop = stopped.map(notice).sort((a, b) => a - b);
  const killAll = killed.map((t) => t.everyone).sort((a, b) => a - b);
  const stopAll = stopped.map((t) => t.everyone).sort((a, b) => a - b);
  const measurements: Measurement[] = [
    { metric: "kill notice p50", value: percentile(kill, 0.5), unit: "ms" },
    {
      metric: "kill notice max",
      value: kill.at(-1)!,
      unit: "ms",
      goal: { type: "max", value: 1_000 },
    },
    { metric: "kill, all members max", value: killAll.at(-1)!, unit: "ms" },
    { metric: "stop notice p50", value: percentile(stop, 0.5), unit: "ms" },
    {
      metric: "stop notice max",
      value: stop.at(-1)!,
      unit: "ms",
      goal: { type: "max", value: timeoutMs },
    },
    { metric: "stop, all members max", value: stopAll.at(-1)!, unit: "ms" },
  ];
  return {
    measurements,
    params: { kills, stops, peerTimeoutSeconds: peerTimeout, heartbeatMs: intervalMs },
    notes: [
      `An observer (ConfabClient in the bench process, peerTimeoutMs ${timeoutMs}) in one group ` +
      `with ${names.length} client.ts --json processes (--peer-timeout ${peerTimeout}), all ` +
      `linked to each other; the victims go one at a time, after a random pause of 0.1 s to ` +
      `0.1 s + one heartbeat interval (${intervalMs} ms). Notice: signal → the observer's ` +
      `group_presence event with the victim away (it follows link_down at ` +
      `once); all members: signal → the slowest of the group's members (observer included) ` +
      `to say so, the client processes' events read from their stdout.`,
      `kill -9, ${kills} trials (ms): link_down ${summary(killed, "linkDown")}; group notice ` +
      `${summary(killed, "group")}; all members ${summary(killed, "everyone")}.`,
      `SIGSTOP, ${stops} trials (ms): link_down ${summary(stopped, "linkDown")}; group notice ` +
      `${summary(stopped, "group")}; all members ${summary(stopped, "everyone")}. The goal is ` +
      `the configured timeout; a frozen peer is declared gone by a check that runs once per ` +
      `heartbeat interval when nothing has arrived for more than the timeout, and the last ` +
      `bytes from it came at most about one interval before it froze, so the notice falls ` +
      `between the timeout − 1 interval and the timeout + 1 interval after the SIGSTOP.`,
    ],
  };
}

export const failover: BenchItem = {
  name: "failover",
  title: "a peer killed (kill -9) or frozen (SIGSTOP): time until the others notice",
  metrics: [
    "kill notice p50",
    "kill notice max",
    "kill, all members max",
    "stop notice p50",
    "stop notice max",
    "stop, all members max",
  ],
  timeoutMs: (quick) => quick ? 30_000 : 180_000,
  run,
};
