/**
 * chat-rtt: the round trip of a 100-byte chat message between two clients over their direct
 * link. The sender is a `ConfabClient` in this process; the receiver is a real `client.ts
 * --json` process; a real `server.ts` brokers them. Each `await client.send(text)` is one
 * round trip: the sender sends the message and commits its row while it travels, the receiver
 * stores it and acks, and the sender takes the ack (its delivered mark is committed after it,
 * with the next message's row). One message in flight at a time.
 *
 * Baseline, in the same run: raw Deno TCP ping-pong of 100-byte length-prefixed frames (Nagle
 * off) between this process and a bare echo server process. The two are measured in
 * alternating blocks, so a change of load on the machine touches both alike.
 */
import { join } from "node:path";
import { ConfabClient } from "../../lib/client/client.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { describeSteps, describeTop } from "./cpu_profile.ts";
import {
  type BenchProcess,
  clientArgs,
  cpuSeconds,
  mean,
  percentile,
  profiled,
  runQueueWait,
  startHelper,
  startServer,
} from "./support.ts";
import type { BenchContext, BenchItem, ItemOutcome } from "./types.ts";

const PASSWORD = "bench-password";
const MESSAGE_BYTES = 100;
const BLOCKS = 10;
const SETUP_MS = 30_000;

/** A 100-byte ASCII message with its number in it. */
function messageText(i: number): string {
  return `message ${i} `.padEnd(MESSAGE_BYTES, "abcdefghijklmnopqrstuvwxyz");
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await conn.write(data.subarray(offset));
}

/** A raw ping-pong link: one 100-byte frame out, the same frame back. */
class PingPong {
  readonly #conn: Deno.TcpConn;
  readonly #frame = new Uint8Array(4 + MESSAGE_BYTES);
  readonly #buffer = new Uint8Array(4096);

  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    conn.setNoDelay(true);
    new DataView(this.#frame.buffer).setUint32(0, MESSAGE_BYTES);
    this.#frame.set(new TextEncoder().encode(messageText(0)), 4);
  }

  /** One round trip, in ms. */
  async once(): Promise<number> {
    const t0 = performance.now();
    await writeAll(this.#conn, this.#frame);
    let got = 0;
    while (got < this.#frame.length) {
      const n = await this.#conn.read(this.#buffer.subarray(got));
      if (n === null) throw new Error("the echo server closed the connection");
      got += n;
    }
    return performance.now() - t0;
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

/** Waits for a `--json` client event of `type` (fields matching `match`). */
function clientEvent(
  proc: BenchProcess,
  type: string,
  match: Record<string, unknown>,
  signal: AbortSignal,
): Promise<unknown> {
  return proc.nextEvent(
    (e) => e.type === type && Object.entries(match).every(([k, v]) => e[k] === v),
    `${type} ${JSON.stringify(match)}`,
    SETUP_MS,
    signal,
  );
}

async function run(ctx: BenchContext): Promise<ItemOutcome> {
  const count = ctx.quick ? 300 : 10_000;
  const warmup = ctx.quick ? 50 : 500;
  const dir = await ctx.tempDir("confab-bench-chat-");

  // The raw baseline: an echo server process.
  const echo = await startHelper(ctx.spawn, "echo", "scripts/bench/echo_server.ts", ctx.signal);
  const ping = new PingPong(await Deno.connect({ hostname: "127.0.0.1", port: echo.port }));
  ctx.defer(() => ping.close());

  // Confab: a server, bob as a client.ts --json process, alice here.
  const server = await startServer(ctx.spawn, { dataDir: join(dir, "server"), signal: ctx.signal });
  const bob = ctx.spawn("bob", clientArgs(server.port, join(dir, "bob"), ["--history", "0"]), {
    profile: true,
  });
  await clientEvent(bob, "ready", {}, ctx.signal);
  const errors: string[] = [];
  const alice = new ConfabClient(
    { home: join(dir, "alice"), server: { host: "127.0.0.1", port: server.port } },
    (e: ClientEvent) => {
      if (e.type === "error" || e.type === "not_delivered") errors.push(JSON.stringify(e));
    },
  );
  ctx.defer(() => alice.close());
  alice.start();

  ctx.log("  signing up alice and bob, opening the chat");
  await bob.write(`signup bob ${PASSWORD}`);
  await clientEvent(bob, "logged_in", { user: "bob" }, ctx.signal);
  await alice.signup("alice", PASSWORD);
  await bob.write("contacts add alice");
  await clientEvent(bob, "contact_added", { user: "alice" }, ctx.signal);
  await alice.addContact("bob");
  await bob.write("chat alice");
  await clientEvent(bob, "chat_opened", { with: "alice" }, ctx.signal);
  await alice.openChat("bob");

  const chat: number[] = [];
  const raw: number[] = [];
  let undelivered = 0;
  const sendOne = async (i: number): Promise<number> => {
    const t0 = performance.now();
    const ok = await alice.send(messageText(i));
    const ms = performance.now() - t0;
    if (!ok) undelivered++;
    return ms;
  };

  ctx.log(`  warm-up: ${warmup} messages and ${warmup} raw round trips`);
  for (let i = 0; i < warmup; i++) {
    await sendOne(i);
    await ping.once();
  }
  undelivered = 0;
  ctx.log(`  measuring ${count} of each, in ${BLOCKS} alternating blocks`);
  const perBlock = Math.ceil(count / BLOCKS);
  // CPU time of the chat blocks only (sender = this process, receiver, server).
  const pids = [Deno.pid, bob.pid, server.proc.pid];
  const cpu = [0, 0, 0];
  // And how long the sender's and the receiver's main threads waited for a core meanwhile.
  const waited = [0, 0];
  for (let b = 0; b < BLOCKS; b++) {
    ctx.signal.throwIfAborted();
    for (let i = 0; i < perBlock && raw.length < count; i++) raw.push(await ping.once());
    const before = await Promise.all(pids.map(cpuSeconds));
    const queued = await Promise.all(pids.slice(0, 2).map(runQueueWait));
    for (let i = 0; i < perBlock && chat.length < count; i++) {
      chat.push(await sendOne(warmup + chat.length));
    }
    const after = await Promise.all(pids.map(cpuSeconds));
    const queuedAfter = await Promise.all(pids.slice(0, 2).map(runQueueWait));
    for (let k = 0; k < pids.length; k++) cpu[k]! += after[k]! - before[k]!;
    for (let k = 0; k < 2; k++) waited[k]! += queuedAfter[k]! - queued[k]!;
  }
  if (undelivered > 0) {
    throw new Error(`${undelivered} of ${count} messages were not delivered: ${errors.at(-1)}`);
  }
  const chatSeconds = chat.reduce((a, b) => a + b, 0) / 1000;

  // Where the time goes: the same loop once more with the CPU profiler on in both clients.
  const profiledCount = ctx.quick ? 200 : 3_000;
  ctx.log(`  profiling ${profiledCount} more messages`);
  const { result: profiledMs, profiles } = await profiled([bob], async () => {
    const t0 = performance.now();
    for (let i = 0; i < profiledCount; i++) await sendOne(warmup + count + i);
    return performance.now() - t0;
  }, ctx.signal);
  if (undelivered > 0) throw new Error(`not delivered while profiling: ${errors.at(-1)}`);
  const us = (seconds: number) => (seconds * 1e6 / count).toFixed(1);

  const over = (ms: number) => chat.filter((x) => x > ms).length;
  const slow = `${over(1)} round trips over 1 ms, ${over(5)} over 5 ms, ${over(20)} over 20 ms`;
  chat.sort((a, b) => a - b);
  raw.sort((a, b) => a - b);
  const baselineName = "raw TCP ping-pong, 100-byte frames";
  return {
    measurements: [
      {
        metric: "rtt p50",
        value: percentile(chat, 0.5),
        unit: "ms",
        baseline: percentile(raw, 0.5),
        baselineName,
        goal: { type: "ratio_max", value: 2 },
      },
      {
        metric: "rtt p99",
        value: percentile(chat, 0.99),
        unit: "ms",
        baseline: percentile(raw, 0.99),
        baselineName,
        goal: { type: "max", value: 1 },
      },
      {
        metric: "rtt mean",
        value: mean(chat),
        unit: "ms",
        baseline: mean(raw),
        baselineName,
      },
      {
        metric: "rtt max",
        value: chat.at(-1)!,
        unit: "ms",
        baseline: raw.at(-1)!,
        baselineName,
        goal: { type: "max", value: 20 },
      },
    ],
    params: { messages: count, warmup, messageBytes: MESSAGE_BYTES, inFlight: 1 },
    notes: [
      `${count} messages of ${MESSAGE_BYTES} bytes, one in flight, after ${warmup} to warm up, ` +
      `over the peer link as the client library makes it; sender: ConfabClient in the bench ` +
      `process, receiver: client.ts --json (its stdout read by the bench); both write history ` +
      `to SQLite (sender: its row committed while the frame travels, before the ack is taken; ` +
      `the delivered mark after the ack, with the next row; receiver: insert before the ack). ` +
      `Measured in ${BLOCKS} blocks alternating with the raw ping-pong (one connection between ` +
      `the bench process and an echo server process).`,
      `CPU time per message during the chat blocks (from /proc): sender ${us(cpu[0]!)} µs ` +
      `(the bench process, which also reads bob's stdout), receiver ${us(cpu[1]!)} µs, server ` +
      `${us(cpu[2]!)} µs, against ${us(chatSeconds)} µs of round trip per message. Waiting ` +
      `for a core meanwhile (run-queue delay of the main threads, /proc/PID/task/PID/schedstat): ` +
      `sender ${us(waited[0]!)} µs, receiver ${us(waited[1]!)} µs per message; ${slow}.`,
      ...profiles.map((p) =>
        `Profile of ${
          p.name === "bench" ? "the sender (bench process)" : `the receiver (${p.name})`
        }` +
        ` over ${profiledCount} more messages (${
          (profiledMs * 1000 / profiledCount).toFixed(0)
        } µs each with the profiler on), by step: ${
          describeSteps(p.breakdown, profiledCount, "message")
        }. Top functions by self time (µs per message): ${describeTop(p.breakdown, profiledCount)}.`
      ),
    ],
  };
}

export const chatRtt: BenchItem = {
  name: "chat-rtt",
  title: "round trip of a 100-byte chat message over a direct link (history write + ack)",
  metrics: ["rtt p50", "rtt p99", "rtt mean", "rtt max"],
  timeoutMs: (quick) => quick ? 45_000 : 180_000,
  run,
};
