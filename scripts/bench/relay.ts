/**
 * relay: what a link costs on each of its three paths, in the same run — direct, relayed
 * through the server, and hole-punched — and what relaying costs the server.
 *
 * In the NAT lab (tests/support/nat_lab.ts; needs root, iproute2, nftables): the server on
 * the public segment, two homes behind port-preserving NATs, two public hosts. The direct pair
 * is the two public hosts; the relayed pair sits in the homes with hole punching off; the
 * punched pair sits in the homes with it on, measured once its link moved to the direct path.
 * Each sender is a `ConfabClient` in a bench peer process (scripts/bench/relay_peer.ts) that
 * times its own round trips. Then `trials` fresh pairs in the homes open a chat each: how many
 * got a direct path, and how long after `chat` it took.
 *
 * Without the lab (not root), the direct and relayed pairs run on loopback (a peer announcing
 * a port nobody listens on is relayed), and the punched figures and trials are 0 with a note.
 * The server's relay rate limit is raised out of the way: this measures the relay, not a limit.
 */
import { join } from "node:path";
import { canBuildLab, type NatLab, startNatLab } from "../../tests/support/nat_lab.ts";
import { type BenchProcess, cpuSeconds, freePort, percentile } from "./support.ts";
import type { BenchContext, BenchItem, ItemOutcome, Measurement } from "./types.ts";

const STEP_MS = 60_000;

type Answer = Record<string, unknown>;

/** A bench peer process and its one-question-one-answer protocol. */
class Peer {
  constructor(readonly proc: BenchProcess, readonly user: string) {}

  async ask(command: Answer, signal: AbortSignal, ms = STEP_MS): Promise<Answer> {
    await this.proc.write(JSON.stringify(command));
    const answer = await this.proc.nextEvent<Answer>(
      (e) => !("ready" in e),
      `an answer to ${String(command.do)}`,
      ms,
      signal,
    );
    if (typeof answer.error === "string") {
      throw new Error(`${this.user}: ${command.do} failed: ${answer.error}`);
    }
    return answer;
  }
}

interface Place {
  netns?: string;
  args?: string[];
}

async function startPeer(
  ctx: BenchContext,
  user: string,
  server: { host: string; port: number },
  place: Place,
  dir: string,
): Promise<Peer> {
  const proc = ctx.spawn(user, [
    "run",
    "--allow-all",
    "scripts/bench/relay_peer.ts",
    "--server",
    `${server.host}:${server.port}`,
    "--home",
    join(dir, user),
    ...(place.args ?? []),
  ], { netns: place.netns });
  await proc.nextEvent((e) => e.ready === true, "ready", STEP_MS, ctx.signal);
  return new Peer(proc, user);
}

/** Two peers who signed up and added each other; the first opened the chat. */
async function pairUp(
  ctx: BenchContext,
  names: [string, string],
  server: { host: string; port: number },
  places: [Place, Place],
  dir: string,
): Promise<{ a: Peer; b: Peer; path: string; openedMs: number }> {
  const [a, b] = await Promise.all([
    startPeer(ctx, names[0], server, places[0], dir),
    startPeer(ctx, names[1], server, places[1], dir),
  ]);
  await a.ask({ do: "signup", user: names[0] }, ctx.signal);
  await b.ask({ do: "signup", user: names[1] }, ctx.signal);
  await a.ask({ do: "add", user: names[1] }, ctx.signal);
  await b.ask({ do: "add", user: names[0] }, ctx.signal);
  const t0 = performance.now();
  const opened = await a.ask({ do: "open", user: names[1] }, ctx.signal);
  return { a, b, path: String(opened.path), openedMs: performance.now() - t0 };
}

async function rttP50(peer: Peer, n: number, signal: AbortSignal): Promise<number> {
  const { times } = await peer.ask({ do: "rtt", n }, signal, STEP_MS * 5) as { times: number[] };
  return percentile([...times].sort((x, y) => x - y), 0.5);
}

async function fileRate(peer: Peer, bytes: number, signal: AbortSignal): Promise<number> {
  const { seconds } = await peer.ask({ do: "file", bytes }, signal, STEP_MS * 5) as {
    seconds: number;
  };
  return bytes / 1024 / 1024 / seconds;
}

async function run(ctx: BenchContext): Promise<ItemOutcome> {
  const messages = ctx.quick ? 100 : 2_000;
  const fileBytes = (ctx.quick ? 4 : 128) * 1024 * 1024;
  const trials = ctx.quick ? 1 : 10;
  const dir = await ctx.tempDir("confab-bench-relay-");
  const notes: string[] = [];
  let lab: NatLab | undefined;
  if (canBuildLab()) {
    lab = await startNatLab({ homes: ["cone", "cone"], publicClients: 2 });
    ctx.defer(() => lab?.[Symbol.asyncDispose]());
  } else {
    notes.push(
      "No NAT lab here (it needs root, iproute2 and nftables): direct and relayed ran on " +
        "loopback; the punched figures and the punch trials were not measured (shown as 0).",
    );
  }
  const host = lab?.serverHost ?? "127.0.0.1";
  const serverProc = ctx.spawn("server", [
    "run",
    "--allow-all",
    "server.ts",
    "--port",
    "0",
    "--host",
    host,
    "--data",
    join(dir, "server"),
    "--quiet",
    "--max-per-address",
    "0",
    "--max-signups-per-hour",
    "0",
    "--relay-rate",
    "1G",
    "--relay-daily",
    "1000G",
  ], { netns: lab?.serverNs, stopSignal: "SIGTERM", graceMs: 20_000 });
  const banner = await serverProc.nextLine(
    (l) => l.startsWith("confab server listening"),
    "the listening banner",
    STEP_MS,
    ctx.signal,
  );
  const server = { host, port: Number(/:(\d+) /.exec(banner)![1]) };

  const homes: [Place, Place] | undefined = lab
    ? [{ netns: lab.homes[0] }, { netns: lab.homes[1] }]
    : undefined;
  const noPunch = ["--punch", "off"];

  // Both pairs are up before either is measured, so they are set up at once.
  ctx.log("  direct pair and relayed pair");
  const [direct, relayed] = await Promise.all([
    pairUp(
      ctx,
      ["dira", "dirb"],
      server,
      lab ? [{ netns: lab.publicClients[0] }, { netns: lab.publicClients[1] }] : [{}, {}],
      dir,
    ),
    pairUp(
      ctx,
      ["rela", "relb"],
      server,
      homes
        ? [{ ...homes[0], args: noPunch }, { ...homes[1], args: noPunch }]
        : [{ args: noPunch }, { args: [...noPunch, "--announce-port", String(freePort())] }],
      dir,
    ),
  ]);
  if (direct.path !== "direct") throw new Error(`the direct pair is ${direct.path}`);
  if (relayed.path !== "relayed") throw new Error(`the relayed pair is ${relayed.path}`);

  ctx.log(`  chat round trips: ${messages} per path`);
  const rtt = { direct: await rttP50(direct.a, messages, ctx.signal), relayed: 0, punched: 0 };
  const serverPid = serverProc.pid;
  let cpu0 = await cpuSeconds(serverPid);
  rtt.relayed = await rttP50(relayed.a, messages, ctx.signal);
  const cpuPerMessageMs = (await cpuSeconds(serverPid) - cpu0) * 1000 / messages;

  ctx.log(`  files: ${fileBytes / 1024 / 1024} MiB per path`);
  const rate = { direct: await fileRate(direct.a, fileBytes, ctx.signal), relayed: 0, punched: 0 };
  cpu0 = await cpuSeconds(serverPid);
  rate.relayed = await fileRate(relayed.a, fileBytes, ctx.signal);
  const cpuPerMiBMs = (await cpuSeconds(serverPid) - cpu0) * 1000 / (fileBytes / 1024 / 1024);

  let successes = 0;
  const toDirect: number[] = [];
  if (homes) {
    ctx.log("  punched pair");
    const punched = await pairUp(ctx, ["puna", "punb"], server, homes, dir);
    await punched.a.ask({ do: "path", user: "punb", path: "direct", ms: 30_000 }, ctx.signal);
    rtt.punched = await rttP50(punched.a, messages, ctx.signal);
    rate.punched = await fileRate(punched.a, fileBytes, ctx.signal);
    ctx.log(`  ${trials} punch trials`);
    for (let i = 0; i < trials; i++) {
      const trial = await pairUp(ctx, [`tra${i}`, `trb${i}`], server, homes, dir);
      try {
        const moved = await trial.a.ask(
          { do: "path", user: `trb${i}`, path: "direct", ms: 20_000 },
          ctx.signal,
          30_000,
        );
        successes++;
        toDirect.push(trial.openedMs + Number(moved.ms));
      } catch {
        // Not punched within 20 s: a failure.
      }
      await Promise.all([trial.a.proc.stop(), trial.b.proc.stop()]);
    }
  }
  const punchedRan = homes !== undefined;
  const p50 = toDirect.length > 0 ? percentile([...toDirect].sort((x, y) => x - y), 0.5) : 0;
  const measurements: Measurement[] = [
    { metric: "chat RTT p50, direct", value: rtt.direct, unit: "ms" },
    {
      metric: "chat RTT p50, relayed",
      value: rtt.relayed,
      unit: "ms",
      baseline: rtt.direct,
      baselineName: "direct",
    },
    {
      metric: "chat RTT p50, punched",
      value: rtt.punched,
      unit: "ms",
      ...(punchedRan ? { baseline: rtt.direct, baselineName: "direct" } : {}),
    },
    { metric: "file, direct", value: rate.direct, unit: "MiB/s" },
    {
      metric: "file, relayed",
      value: rate.relayed,
      unit: "MiB/s",
      baseline: rate.direct,
      baselineName: "direct",
    },
    {
      metric: "file, punched",
      value: rate.punched,
      unit: "MiB/s",
      ...(punchedRan ? { baseline: rate.direct, baselineName: "direct" } : {}),
    },
    { metric: "server CPU per relayed MiB", value: cpuPerMiBMs, unit: "ms" },
    { metric: "server CPU per relayed message", value: cpuPerMessageMs, unit: "ms" },
    {
      metric: "punch success",
      value: punchedRan ? (successes / trials) * 100 : 0,
      unit: "%",
    },
    { metric: "time to direct p50", value: p50, unit: "ms" },
  ];
  notes.push(
    `Server CPU per relayed message: the server's CPU time over ${messages} relayed round ` +
      `trips (message and ack both cross the relay), divided by the messages.`,
    `Time to direct: from \`chat\` (lookup, a direct dial that the NAT drops for 750 ms, ` +
      `the relay) to the link's move to the punched path, over ${toDirect.length} of ` +
      `${punchedRan ? trials : 0} trials.`,
  );
  return {
    measurements,
    params: {
      messages,
      "file MiB": fileBytes / 1024 / 1024,
      trials: punchedRan ? trials : 0,
      where: lab ? "NAT lab" : "loopback",
    },
    notes,
  };
}

export const relay: BenchItem = {
  name: "relay",
  title: "chat and files over direct, relayed and punched links; relay CPU; punch success",
  metrics: [
    "chat RTT p50, direct",
    "chat RTT p50, relayed",
    "chat RTT p50, punched",
    "file, direct",
    "file, relayed",
    "file, punched",
    "server CPU per relayed MiB",
    "server CPU per relayed message",
    "punch success",
    "time to direct p50",
  ],
  timeoutMs: (quick) => quick ? 180_000 : 900_000,
  run,
};
