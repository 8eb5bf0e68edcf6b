/**
 * group: the time from sending a group message to the last member's receipt, in a small and
 * a large group (full: 10 and 32 members; quick: 3 and 5). The sender is a ConfabClient in
 * this process; every other member is a real `client.ts --json` process; a real `server.ts`
 * brokers them. The group is made as a user makes one (`chat` with the first member, `/a` for
 * each other one), and measured only once every member counts everyone in and holds a direct
 * link to each (the full mesh). The large group is the small one grown by more `/a`.
 *
 * Method: a member acknowledges a group message only after storing it in its history, and
 * the sender reports each acknowledgement as a `delivered` event for that member. So the time
 * from the call to `send` to the last member's `delivered` event, both taken in this process
 * on one clock, is the time until every member had the message stored (plus the way back of
 * the last ack). One message in flight at a time; a warm-up first at each size.
 *
 * Baseline, in the same run: chat-rtt's p50 and p99 (a 1:1 message and its ack) when chat-rtt
 * ran before; otherwise the 1:1 round trip measured here, between the sender and the first
 * member before the chat becomes a group (measured in any case; both are in the notes).
 */
import { join } from "node:path";
import type { ClientEvent } from "../../lib/client/events.ts";
import {
  BenchGroup,
  type ClientProcess,
  linkAll,
  LocalClient,
  relateAll,
  startClients,
} from "./clients.ts";
import { type Breakdown, describeSteps, describeTop } from "./cpu_profile.ts";
import {
  cpuSeconds,
  mean,
  percentile,
  profiled,
  SETUP_PASSWORD_COST,
  sleep,
  startServer,
} from "./support.ts";
import type { BenchContext, BenchItem, ItemOutcome, Measurement } from "./types.ts";

const MESSAGE_BYTES = 100;
/**
 * How long the processes' idle use is taken, before the messages and again after them (quick
 * runs, which only keep the item from rotting: a quarter of a second).
 */
const IDLE_WINDOW_MS = { full: 3_000, quick: 250 };
/**
 * The members' and the sender's `--peer-timeout` (the client's default is 3 s). On 2 cores
 * shared by 32 Confab processes and, often, other work at load 15-35, a process can go
 * unscheduled or busy for 3 s; a live link is then declared dead and a warm-up message waits
 * for its member (seen at 15:45 and 17:44). What is measured here is the fan-out, not how fast
 * a frozen member is noticed (the failover item measures that, at 3 s); the heartbeat still
 * goes every second, so the idle cost subtracted is the same.
 */
const PEER_TIMEOUT_S = 10;

function messageText(i: number, kind = "group"): string {
  return `${kind} message ${i} `.padEnd(MESSAGE_BYTES, "abcdefghijklmnopqrstuvwxyz");
}

interface Result {
  size: number;
  fanout: Fanout;
  /** How long the /a steps and the settling of this size took. */
  meshMs: number;
  /** The measured messages: wall time, and the CPU the bench and the members used. */
  seconds: number;
  benchCpu: number;
  membersCpu: number;
  /**
   * CPU seconds per second the members (all processes) and the bench used while idle: the mean
   * of a window before the messages and one after ({@link idleBefore}, {@link idleAfter}: the
   * members' part of each).
   */
  idleMembers: number;
  idleBench: number;
  idleBefore: number;
  idleAfter: number;
}

interface Fanout {
  /** send → last member's ack, ms, ascending. */
  samples: number[];
  /** send → first member's ack, ms, ascending. */
  first: number[];
}

/** Sends `count` group messages one at a time; the time until every member acked each. */
async function measureGroup(
  sender: LocalClient,
  members: number,
  count: number,
  offset: number,
  signal: AbortSignal,
  crowd?: ClientProcess[],
  log?: (text: string) => void,
): Promise<Fanout> {
  const samples: number[] = [];
  const first: number[] = [];
  let id: string | undefined;
  let acks = 0;
  let firstAck = 0;
  let lastAck = 0;
  let trouble: string | undefined;
  let lastStatus: Extract<ClientEvent, { type: "group_status" }> | undefined;
  sender.onEvent = (e: ClientEvent, at: number) => {
    if (e.type === "sent") {
      id = e.id;
    } else if (e.type === "delivered" && e.id === id) {
      if (acks++ === 0) firstAck = at;
      lastAck = at;
    } else if (e.type === "group_status" && e.id === id) {
      lastStatus = e;
    } else if ((e.type === "stored" || e.type === "not_delivered") && e.id === id) {
      trouble ??= JSON.stringify(e);
    }
  };
  try {
    for (let i = 0; i < count; i++) {
      signal.throwIfAborted();
      acks = 0;
      const t0 = performance.now();
      await sender.client.send(messageText(offset + i));
      if (trouble !== undefined) throw new Error(`a group message did not arrive: ${trouble}`);
      if (acks !== members) {
        // Who it waits for, and what the sender knows of them: the first clue to a failure.
        const pending = lastStatus?.pending ?? [];
        throw new Error(
          `${acks} of ${members} members acked message ${i}; waiting for ${
            pending.join(", ") || "?"
          } (links from the sender: ${
            pending.map((u) => `${u} ${sender.links.has(u.toLowerCase()) ? "up" : "down"}`)
              .join(", ")
          }); the sender's last errors: ${sender.errors.slice(-3).join(" | ") || "none"}\n${
            (crowd ?? []).filter((m) => pending.some((u) => u.toLowerCase() === m.name))
              .slice(0, 3).map((m) => m.proc.describe()).join("\n")
          }`,
        );
      }
      samples.push(lastAck - t0);
      first.push(firstAck - t0);
      if (log && (i + 1) % 100 === 0) {
        const recent = samples.slice(-100).sort((a, b) => a - b);
        log(`    ${i + 1} of ${count}: p50 of the last 100 ${fmt(percentile(recent, 0.5))} ms`);
      }
    }
  } finally {
    sender.onEvent = undefined;
  }
  return { samples: samples.sort((a, b) => a - b), first: first.sort((a, b) => a - b) };
}

/** 1:1 round trips (send → delivered), one at a time, ms ascending. */
async function measureDirect(sender: LocalClient, count: number): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const outcome = await sender.client.send(messageText(i, "direct"));
    samples.push(performance.now() - t0);
    if (outcome !== "delivered") throw new Error(`a 1:1 message was ${outcome}`);
  }
  return samples.sort((a, b) => a - b);
}

async function run(ctx: BenchContext): Promise<ItemOutcome> {
  const [small, large] = ctx.quick ? [3, 5] : [10, 32];
  const count = ctx.quick ? 20 : 500;
  const warmup = ctx.quick ? 10 : 50;
  const direct = ctx.quick ? 20 : 200;
  const idleWindowMs = ctx.quick ? IDLE_WINDOW_MS.quick : IDLE_WINDOW_MS.full;
  const dir = await ctx.tempDir("confab-bench-group-");
  const server = await startServer(ctx.spawn, {
    dataDir: join(dir, "server"),
    signal: ctx.signal,
    // Only the sign-ups and logins of the setup hash passwords, none of what is measured: at
    // the default cost (N=2^17, ≈ 0.5-2 s a hash) a loaded machine timed them out.
    args: ["--password-cost", String(SETUP_PASSWORD_COST)],
  });

  ctx.log(`  starting ${large - 1} member processes`);
  const names = Array.from({ length: large - 1 }, (_, i) => `m${String(i + 1).padStart(2, "0")}`);
  const members = await startClients(ctx, names, {
    serverPort: server.port,
    dir,
    args: ["--peer-timeout", String(PEER_TIMEOUT_S)],
  });
  const alice = await LocalClient.signup(ctx, "alice", {
    dir,
    server: { host: "127.0.0.1", port: server.port },
    peerTimeoutMs: PEER_TIMEOUT_S * 1000,
  });
  await relateAll(alice, members, ctx.signal);
  ctx.log(`  linking every two members (chat + /q)`);
  await linkAll(members, ctx.signal);

  const group = new BenchGroup(alice);
  await group.add(members.slice(0, 1), ctx.signal);
  ctx.log(`  1:1 round trips with ${members[0]!.name}: ${direct}`);
  const directWarmup = 20;
  await measureDirect(alice, directWarmup);
  const own = await measureDirect(alice, direct);

  const results: Result[] = [];
  let sent = 0;
  /** CPU seconds used so far by the bench process and by all member processes. */
  const cpu = async () => [
    await cpuSeconds(Deno.pid),
    (await Promise.all(members.map((m) => cpuSeconds(m.proc.pid)))).reduce((a, b) => a + b, 0),
  ];
  for (const size of [small, large]) {
    const m0 = performance.now();
    try {
      await group.add(members.slice(group.members.length, size - 1), ctx.signal);
    } catch (error) {
      // What the server said meanwhile is the first clue to a setup that timed out.
      const troubled = members.filter((m) =>
        m.proc.out.tail.some((l) => l.includes('"type":"error"') || l.includes("link_down"))
      ).slice(0, 3);
      throw new Error(
        [
          (error as Error).message,
          server.proc.describe(),
          ...troubled.map((m) => m.proc.describe()),
        ]
          .join("\n"),
        { cause: error },
      );
    }
    const meshMs = performance.now() - m0;
    ctx.log(`  ${size} members (settled in ${(meshMs / 1000).toFixed(1)} s): ${count} messages`);
    await measureGroup(alice, size - 1, warmup, sent, ctx.signal, members);
    sent += warmup;
    // What the processes use with no message going (heartbeats on every link, timers), over
    // the same group: subtracted below, so the CPU per message is what the messages cost. Taken
    // before the messages and again after them (a window right after the warm-up alone caught
    // leftovers of the growth at times, and took too much away).
    const idleWindow = async () => {
      const [bench0, members0] = await cpu();
      const i0 = performance.now();
      await sleep(idleWindowMs, ctx.signal);
      const [bench1, members1] = await cpu();
      const seconds = (performance.now() - i0) / 1000;
      return { bench: (bench1! - bench0!) / seconds, members: (members1! - members0!) / seconds };
    };
    const before = await idleWindow();
    const [bench0, members0] = await cpu();
    const t0 = performance.now();
    const fanout = await measureGroup(
      alice,
      size - 1,
      count,
      sent,
      ctx.signal,
      members,
      ctx.log,
    );
    const seconds = (performance.now() - t0) / 1000;
    const [bench1, members1] = await cpu();
    sent += count;
    const after = await idleWindow();
    results.push({
      size,
      fanout,
      meshMs,
      seconds,
      benchCpu: bench1! - bench0!,
      membersCpu: members1! - members0!,
      idleMembers: (before.members + after.members) / 2,
      idleBench: (before.bench + after.bench) / 2,
      idleBefore: before.members,
      idleAfter: after.members,
    });
  }
  // Where the sender's time goes: more messages to the large group with the profiler on; then
  // as long with no message, also profiled, so what the messages cost is known step by step.
  const profiledCount = ctx.quick ? 20 : 200;
  const p0 = performance.now();
  const { profiles } = await profiled(
    [members[1]!.proc],
    () => measureGroup(alice, large - 1, profiledCount, sent, ctx.signal),
    ctx.signal,
  );
  const profiledMs = performance.now() - p0;
  sent += profiledCount;
  const { profiles: idleProfiles } = await profiled(
    [members[1]!.proc],
    () => sleep(profiledMs, ctx.signal),
    ctx.signal,
  );
  // Every member printed every message it was sent (the acks said so; this checks the output).
  await Promise.all(group.members.map((m, i) => {
    const expected = (i === 0 ? directWarmup + direct : 0) + profiledCount +
      results.reduce((n, r) => n + (i < r.size - 1 ? warmup + count : 0), 0);
    return m.until(() => m.messages >= expected, `${expected} message events`, ctx.signal);
  }));

  const chatP50 = ctx.earlier("chat-rtt", "rtt p50");
  const chatP99 = ctx.earlier("chat-rtt", "rtt p99");
  const fromChat = chatP50 !== undefined && chatP99 !== undefined;
  const baseP50 = fromChat ? chatP50.value : percentile(own, 0.5);
  const baseP99 = fromChat ? chatP99.value : percentile(own, 0.99);
  const baselineName = fromChat
    ? "chat-rtt, 1:1 round trip, this run"
    : "1:1 round trip, measured in this item";
  /** CPU ms per member per message, the members' idle use over the same time taken out. */
  const netPerMember = (r: Result) =>
    (r.membersCpu - r.idleMembers * r.seconds) * 1000 / count / (r.size - 1);
  const measurements: Measurement[] = [];
  const label = ["small", "large"];
  results.forEach((r, i) => {
    const { fanout } = r;
    measurements.push(
      {
        metric: `${label[i]} group CPU per member per message`,
        value: netPerMember(r),
        unit: "ms",
        ...(i === 1 ? { goal: { type: "max", value: 0.25 } as const } : {}),
      },
      {
        metric: `${label[i]} group p50`,
        value: percentile(fanout.samples, 0.5),
        unit: "ms",
        baseline: baseP50,
        baselineName,
      },
      {
        metric: `${label[i]} group p99`,
        value: percentile(fanout.samples, 0.99),
        unit: "ms",
        baseline: baseP99,
        baselineName,
        ...(i === 1 ? { goal: { type: "max", value: 5 } as const } : {}),
      },
    );
  });
  const describe = (r: Result) =>
    `${r.size} members (${r.size - 1} client processes; the /a steps and the settling took ` +
    `${(r.meshMs / 1000).toFixed(1)} s): send → last ack p50 ${
      fmt(percentile(r.fanout.samples, 0.5))
    }, p90 ${fmt(percentile(r.fanout.samples, 0.9))}, p99 ${
      fmt(percentile(r.fanout.samples, 0.99))
    }, max ${fmt(r.fanout.samples.at(-1)!)}, mean ${fmt(mean(r.fanout.samples))} ms; send → ` +
    `first ack p50 ${fmt(percentile(r.fanout.first, 0.5))}, p99 ${
      fmt(percentile(r.fanout.first, 0.99))
    } ms. CPU per message: ${perMessage(r.membersCpu)} ms in all member processes together ` +
    `(${perMessage(r.membersCpu / (r.size - 1))} ms per member: the figure of earlier ` +
    `reports), ${perMessage(r.benchCpu)} ms in ` +
    `the bench process (the sender, and the reading of every member's stdout); the machine ` +
    `was ${(100 * (r.membersCpu + r.benchCpu) / (2 * r.seconds)).toFixed(0)} % busy ` +
    `(of 2 cores) with these processes while the ${count} messages went. Idle, the same ` +
    `${large - 1} member processes used ${(r.idleMembers * 1000).toFixed(0)} ms of CPU per ` +
    `second (${(r.idleMembers * r.seconds * 1000 / count).toFixed(2)} ms per message's ` +
    `time; ${(r.idleBefore * 1000).toFixed(0)} ms per second in ${
      idleWindowMs / 1000
    } s before the ` +
    `messages, ${(r.idleAfter * 1000).toFixed(0)} after) and the bench process ` +
    `${(r.idleBench * 1000).toFixed(0)} ms per second; ` +
    `without it the messages cost ${perMessage(r.membersCpu - r.idleMembers * r.seconds)} ms ` +
    `in the members, ${netPerMember(r).toFixed(2)} ms per member per message (the CPU of the ` +
    `${r.size - 1} member processes, from /proc, over the ${count} messages, less their idle ` +
    `use over as long, divided by ${count} and by ${r.size - 1}; the sender is not in it). ` +
    `With one idle window alone: ${netPerMember({ ...r, idleMembers: r.idleBefore }).toFixed(2)} ` +
    `ms (before), ${netPerMember({ ...r, idleMembers: r.idleAfter }).toFixed(2)} ms (after).`;
  const perMessage = (seconds: number) => (seconds * 1000 / count).toFixed(2);
  return {
    measurements,
    params: { small, large, messages: count, warmup, messageBytes: MESSAGE_BYTES },
    notes: [
      `Sender: alice, a ConfabClient in the bench process; members: client.ts --json processes ` +
      `(one each), on a 2-core machine. Groups made with chat + /a and measured once every ` +
      `member counted everyone in and held a link to each of the others (link_up events). ` +
      `Latency of one message: from the call to send to the "delivered" event of the last ` +
      `member (members ack after storing the message), both in this process; one message in ` +
      `flight, ${count} measured after ${warmup} to warm up, ${MESSAGE_BYTES}-character ` +
      `messages. The members' stdout (a message event per message each) is read by this ` +
      `process too, as for chat-rtt. All ${large - 1} member processes run from the start ` +
      `(the small group is measured while the others idle, with their heartbeats).`,
      ...results.map(describe),
      `Before the group: every two members opened a chat with each other and left it (chat ` +
      `<user>, /q), so the links of the mesh existed before anyone was added, and the time a ` +
      `group takes to settle is its state spreading, not ${(large - 1) * (large - 2) / 2} ` +
      `links being made.`,
      ...profiles.map((p) => {
        const idle = idleProfiles.find((q) => q.name === p.name);
        return idle === undefined
          ? ""
          : `${
            p.name === "bench" ? "The sender" : `The member (${p.name})`
          }, what the messages cost on top of the idle work (the same profile, minus one of as ` +
            `long with no message going, step by step): ${
              describeNet(p.breakdown, idle.breakdown, profiledCount)
            } (µs per message).`;
      }).filter((line) => line !== ""),
      ...profiles.map((p) =>
        p.name === "bench"
          ? `Profile of the sender (the bench process, which also reads every member's stdout) ` +
            `over ${profiledCount} more messages to the ${large}-member group, by step: ${
              describeSteps(p.breakdown, profiledCount * (large - 1), "member per message")
            }. Top functions by self time (µs per member per message): ${
              describeTop(p.breakdown, profiledCount * (large - 1))
            }.`
          : `Profile of one member (${p.name}, a client.ts --json process) over the same ` +
            `${profiledCount} messages, by step: ${
              describeSteps(p.breakdown, profiledCount, "message")
            }. Top functions by self time (µs per message): ${
              describeTop(p.breakdown, profiledCount, 12)
            }. Its idle work (heartbeats and checksums on its ${large - 2} other links) is in ` +
            `these figures.`
      ),
      ...(group.setupRetries > 0
        ? [
          `Setup: ${group.setupRetries} request(s) of the /a steps timed out (the machine ` +
          `saturated) and were asked again; nobody had been added by them.`,
        ]
        : []),
      `Baseline: ${
        fromChat
          ? `chat-rtt's rtt p50 (${fmt(baseP50)} ms) and p99 (${fmt(baseP99)} ms) from this run`
          : `the 1:1 round trip measured here (no chat-rtt in this run)`
      }. Measured here too: alice to ${members[0]!.name} before the chat became a group ` +
      `(${direct} messages, with all ${large - 1} member processes running): p50 ${
        fmt(percentile(own, 0.5))
      }, p99 ${fmt(percentile(own, 0.99))} ms. The goal (p99 ≤ 5 ms) is for the large group ` +
      `(${large} members).`,
    ],
  };
}

/**
 * Per step, the busy time of `busy` minus that of `idle` (a profile of the same process as long
 * with no message going), in µs per message: what the messages themselves cost.
 */
function describeNet(busy: Breakdown, idle: Breakdown, count: number): string {
  const scale = busy.totalMs / idle.totalMs;
  const idleOf = new Map(idle.steps.map((s) => [s.step, s.ms * scale]));
  const skip = new Set(["idle", "profiler"]);
  const net = busy.steps.filter((s) => !skip.has(s.step))
    .map((s) => ({ step: s.step, ms: s.ms - (idleOf.get(s.step) ?? 0) }))
    .sort((a, b) => b.ms - a.ms);
  const total = net.reduce((n, s) => n + s.ms, 0);
  return `all ${(total * 1000 / count).toFixed(0)}: ` +
    net.map((s) => `${s.step} ${(s.ms * 1000 / count).toFixed(0)}`).join(", ");
}

function fmt(ms: number): string {
  return ms.toFixed(ms < 10 ? 2 : 1);
}

export const group: BenchItem = {
  name: "group",
  title: "group message to the last member's receipt, 10 and 32 members (quick: 3 and 5)",
  metrics: [
    "small group CPU per member per message",
    "small group p50",
    "small group p99",
    "large group CPU per member per message",
    "large group p50",
    "large group p99",
  ],
  timeoutMs: (quick) => quick ? 40_000 : 420_000,
  run,
};
