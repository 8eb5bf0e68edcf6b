/**
 * Integration tests for lib/net/framed_connection.ts and lib/net/hello.ts over real loopback
 * TCP: request/reply matching, timeouts, closing, the inbox before a handler is set, the
 * answers to malformed input, large messages, and the hello exchange. One side is sometimes a
 * raw socket, so the test can send bytes a well-behaved peer never would.
 */
import assert from "node:assert/strict";
import * as s from "../../lib/protocol/schema.ts";
import {
  type AnyMessage,
  FramedConnection,
  type FramedConnectionOptions,
  SlowReaderError,
  writeAll,
} from "../../lib/net/framed_connection.ts";
import { exchangeHello, SOFTWARE } from "../../lib/net/hello.ts";
import { memoryPipe, type Transport } from "../../lib/net/transport.ts";
import { sealedSize } from "../../lib/net/sealed_frames.ts";
import { CipherState, TransportCipher } from "../../lib/crypto/noise_cipher.ts";
import {
  ConnectionClosedError,
  FrameError,
  ProtocolError,
  RemoteError,
  TimeoutError,
} from "../../lib/protocol/errors.ts";
import { encodeFrame, FrameDecoder, MAX_CONTROL_FRAME } from "../../lib/protocol/frame.ts";
import { within } from "../support/peer_fixtures.ts";
import {
  encodeMessage,
  ErrorMsg,
  type PeerMessage,
  PeerToPeer,
  PROTOCOL_VERSION,
} from "../../lib/protocol/messages.ts";

const LOOPBACK = "127.0.0.1";
const enc = new TextEncoder();
const dec = new TextDecoder();

// ---- fixtures ------------------------------------------------------------------------------

/** Two ends of one real loopback TCP connection: [dialer, accepted]. */
async function tcpPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  using listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  return await Promise.all([
    Deno.connect({ hostname: LOOPBACK, port: listener.addr.port }),
    listener.accept(),
  ]);
}

type Options<In extends AnyMessage> = Partial<FramedConnectionOptions<In>>;

function framed<In extends AnyMessage = PeerMessage>(
  conn: Deno.TcpConn,
  options: Options<In> = {},
): FramedConnection<In> {
  return new FramedConnection<In>(conn, {
    schema: PeerToPeer,
    replyTypes: ["pong"],
    ...options,
  });
}

/** Two FramedConnections talking to each other over loopback; both closed on dispose. */
async function framedPair<In extends AnyMessage = PeerMessage>(
  aOptions: Options<In> = {},
  bOptions: Options<In> = {},
): Promise<AsyncDisposable & { a: FramedConnection<In>; b: FramedConnection<In> }> {
  const [ca, cb] = await tcpPair();
  const a = framed(ca, aOptions);
  const b = framed(cb, bOptions);
  return {
    a,
    b,
    async [Symbol.asyncDispose]() {
      await Promise.all([a.close(), b.close()]);
    },
  };
}

/** A raw socket that writes arbitrary bytes and reads frames as parsed JSON. */
class RawPeer implements Disposable {
  readonly conn: Deno.TcpConn;
  readonly #decoder = new FrameDecoder(MAX_CONTROL_FRAME);
  readonly #frames: Uint8Array[] = [];
  readonly #buffer = new Uint8Array(64 * 1024);

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Sends one frame; a string is sent as the body verbatim (it need not be JSON). */
  async send(body: string | Record<string, unknown>): Promise<void> {
    const bytes = enc.encode(typeof body === "string" ? body : JSON.stringify(body));
    await writeAll(this.conn, encodeFrame(bytes));
  }

  /** The next frame as JSON, or null once the other side has closed. */
  async next(): Promise<Record<string, unknown> | null> {
    while (this.#frames.length === 0) {
      let n: number | null;
      try {
        n = await this.conn.read(this.#buffer);
      } catch (error) {
        // Closing with unread bytes in its buffer makes the kernel reset instead of FIN.
        if (error instanceof Deno.errors.ConnectionReset) return null;
        throw error;
      }
      if (n === null) return null;
      this.#frames.push(...this.#decoder.push(this.#buffer.slice(0, n)));
    }
    return JSON.parse(dec.decode(this.#frames.shift()!));
  }

  [Symbol.dispose](): void {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** A FramedConnection facing a raw socket; both closed on dispose. */
async function framedVersusRaw<In extends AnyMessage = PeerMessage>(
  options: Options<In> = {},
): Promise<AsyncDisposable & { fc: FramedConnection<In>; raw: RawPeer }> {
  const [ca, cb] = await tcpPair();
  const fc = framed(ca, options);
  const raw = new RawPeer(cb);
  return {
    fc,
    raw,
    async [Symbol.asyncDispose]() {
      await fc.close();
      raw[Symbol.dispose]();
    },
  };
}

function chat(n: number): PeerMessage {
  return { type: "msg", id: `m${n}`, seq: n, ts: Date.now(), text: `text ${n}` };
}

/** Collects items and resolves `done` once `count` of them have arrived. */
function latch<T>(count: number): { items: T[]; push: (item: T) => void; done: Promise<T[]> } {
  const items: T[] = [];
  const done = Promise.withResolvers<T[]>();
  return {
    items,
    push(item) {
      items.push(item);
      if (items.length === count) done.resolve(items);
    },
    done: done.promise,
  };
}

// ---- request / reply -----------------------------------------------------------------------
// The answering side takes the requests with next(), not with a handler: once a handler is
// set, the connection answers a `ping` with `pong` by itself (liveness), and the handler never
// sees it.

Deno.test("FramedConnection.request() matches replies by id when answered out of order", async () => {
  await using pair = await framedPair();
  const answering = (async () => {
    const pings: PeerMessage[] = [];
    for (let i = 0; i < 3; i++) pings.push(await pair.b.next(2000));
    for (const p of [...pings].reverse()) {
      await pair.b.send({ type: "pong", id: (p as { id: number }).id });
    }
    return pings;
  })();
  const resolvedOrder: unknown[] = [];
  const [pings, replies] = await within(Promise.all([
    answering,
    Promise.all(
      [0, 1, 2].map(() =>
        pair.a.request<Extract<PeerMessage, { type: "pong" }>>({ type: "ping" }).then((r) => {
          resolvedOrder.push(r.id);
          return r;
        })
      ),
    ),
  ]));
  const ids = pings.map((p) => (p as { id: number }).id);
  assert.equal(new Set(ids).size, 3, "each request has its own id");
  assert.deepEqual(pings.map((p) => p.type), ["ping", "ping", "ping"]);
  // Each caller got the reply to its own request...
  assert.deepEqual(replies, ids.map((id) => ({ type: "pong", id })));
  // ...although the replies came back in reverse order.
  assert.deepEqual(resolvedOrder, [...ids].reverse());
});

Deno.test("FramedConnection.request() throws RemoteError for an error reply", async () => {
  await using pair = await framedPair({ replyTypes: ["pong", "error"] });
  const outcome = pair.a.request({ type: "ping" }).catch((e) => e);
  const ping = await within(pair.b.next(2000));
  await pair.b.send({
    type: "error",
    id: (ping as { id: number }).id,
    code: "USER_OFFLINE",
    message: "bob is offline",
  });
  const error = await within(outcome);
  assert.ok(error instanceof RemoteError, String(error));
  assert.equal(error.code, "USER_OFFLINE");
  assert.equal(error.message, "bob is offline");
  assert.equal(pair.a.isClosed, false);
});

Deno.test("FramedConnection.request() times out with TimeoutError and drops the late reply", async () => {
  await using pair = await framedPair();
  const ping = pair.b.next(2000);
  await assert.rejects(
    pair.a.request({ type: "ping" }, { timeoutMs: 50 }),
    (e) => e instanceof TimeoutError && /ping/.test(e.message),
  );
  const id = ((await within(ping)) as { id: number }).id;
  // The answer comes too late: nobody waits for it, so it must not surface as a message.
  await pair.b.send({ type: "pong", id });
  await pair.b.send({ type: "bye" });
  assert.deepEqual(await within(pair.a.next(2000)), { type: "bye" });
  assert.equal(pair.a.isClosed, false);
});

Deno.test("FramedConnection answers a ping itself once a handler is set; the handler never sees it", async () => {
  await using pair = await framedPair();
  const seen = latch<PeerMessage>(1);
  pair.b.setHandler((m) => seen.push(m));
  const pong = await within(pair.a.request({ type: "ping" }));
  assert.equal(pong.type, "pong");
  // Frames arrive in order: once the bye is handled, the ping would have been too.
  await pair.a.send({ type: "bye" });
  assert.deepEqual(await within(seen.done), [{ type: "bye" }]);
});

Deno.test("FramedConnection.request() rejects with the reason when its signal aborts", async () => {
  await using pair = await framedPair();
  pair.b.setHandler(() => {});
  const controller = new AbortController();
  const request = pair.a.request({ type: "ping" }, { signal: controller.signal });
  controller.abort(new Error("user gave up"));
  await assert.rejects(request, { message: "user gave up" });
});

// ---- closing -------------------------------------------------------------------------------

Deno.test("FramedConnection.close() is idempotent and fails pending requests", async () => {
  await using pair = await framedPair();
  const received = pair.b.next(2000);
  const pending = pair.a.request({ type: "ping" });
  const outcome = pending.then(() => "resolved", (e) => e);
  assert.equal((await within(received)).type, "ping");

  const first = pair.a.close();
  const second = pair.a.close();
  assert.equal(second, first, "a second close returns the first close's promise");
  assert.equal(pair.a[Symbol.asyncDispose](), first);
  await within(first);

  const error = await outcome;
  assert.ok(error instanceof ConnectionClosedError, String(error));
  assert.equal(pair.a.isClosed, true);
  assert.equal(await pair.a.closed, undefined);
  await assert.rejects(pair.a.send({ type: "bye" }), ConnectionClosedError);
  await assert.rejects(pair.a.next(1000), ConnectionClosedError);
  await assert.rejects(pair.a.request({ type: "ping" }), ConnectionClosedError);
  // The other side sees a clean close.
  assert.equal(await within(pair.b.closed), undefined);
  assert.equal(pair.b.isClosed, true);
});

Deno.test("FramedConnection.request() queued behind unwritten frames fails with ConnectionClosedError when the peer resets it, never as an unhandled rejection", async () => {
  const [dialer, accepted] = await tcpPair();
  const a = framed(dialer, { onMessage: () => {} });
  try {
    // The other side reads nothing: the socket fills and these wait in the write queue.
    const text = "x".repeat(4000);
    for (let i = 0; i < 2000; i++) {
      a.send({ type: "msg", id: `m${i}`, seq: i, ts: Date.now(), text }).catch(() => {});
    }
    const requests = Array.from({ length: 10 }, () => a.request({ type: "ping" }));
    const outcomes = Promise.allSettled(requests);
    // Closed with everything unread: the kernel answers with a reset.
    accepted.close();
    for (const outcome of await within(outcomes)) {
      assert.equal(outcome.status, "rejected");
      // The lost link, whatever the socket said (reset, broken pipe): never a raw OS error,
      // which the client would show as an internal error instead of "server unreachable".
      assert.ok(outcome.reason instanceof ConnectionClosedError, String(outcome.reason));
    }
    assert.ok((await within(a.closed)) instanceof Error, "closed with the write's error");
  } finally {
    await a.close();
  }
});

/** Everything `conn` reads until the end of the stream, as frames; throws on a reset. */
async function readToEnd(conn: Deno.TcpConn): Promise<Record<string, unknown>[]> {
  const decoder = new FrameDecoder(MAX_CONTROL_FRAME);
  const buffer = new Uint8Array(64 * 1024);
  const frames: Record<string, unknown>[] = [];
  for (let n; (n = await conn.read(buffer)) !== null;) {
    for (const frame of decoder.push(buffer.slice(0, n))) {
      frames.push(JSON.parse(dec.decode(frame)));
    }
  }
  return frames;
}

Deno.test("FramedConnection.fail() with the other side's bytes unread: the error frame arrives, then the end of the stream, never a reset", async () => {
  const [dialer, accepted] = await tcpPair();
  let handled = 0;
  const first = Promise.withResolvers<void>();
  // A handler that never finishes: the inbox fills and the reader stops reading, so what the
  // other side sends next stays unread in the socket (closing then would send a reset).
  const fc = framed(dialer, {
    onMessage: () => {
      handled++;
      first.resolve();
      return new Promise<void>(() => {});
    },
  });
  try {
    const text = "x".repeat(4000);
    const frames = Array.from(
      { length: 1200 },
      (_, i) => encodeFrame(encodeMessage({ ...chat(i), text })),
    );
    // Written while the other side stops reading: not all of it may fit, so not awaited.
    const writing = (async () => {
      for (const frame of frames) await writeAll(accepted, frame);
    })();
    await within(first.promise);
    // And more than the other side's socket takes (≈ 4 MiB here) waits in ours, and in the
    // queue: a reset would discard it, and the error behind it.
    for (let i = 0; i < 1200; i++) fc.send({ ...chat(i), text }).catch(() => {});
    const failing = fc.fail("TIMEOUT", "not logged in within 60s");
    assert.equal(fc.isClosed, true, "closed to its users at once");
    const received = await within(readToEnd(accepted), 15_000, "the error, then the end");
    assert.equal(received.length, 1201, `${received.length} frames`);
    assert.deepEqual(received.slice(0, 1200).map((m) => m.seq), frames.map((_, i) => i));
    assert.deepEqual(received[1200], {
      type: "error",
      code: "TIMEOUT",
      message: "not logged in within 60s",
    });
    // What it sent meanwhile was read (and dropped) to the end.
    await within(writing);
    accepted.closeWrite();
    await within(failing);
    const reason = await within(fc.closed);
    assert.ok(reason instanceof ProtocolError && reason.code === "TIMEOUT", String(reason));
    assert.equal(handled, 1, "nothing more was handed over after fail()");
  } finally {
    await fc.close();
    accepted.close();
  }
});

/** Lets the event loop turn (sockets take what they can) without waiting for anything. */
const turn = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("FramedConnection closes with SlowReaderError once maxWriteQueue bytes wait for a peer that never reads, and tells it if it reads after all", async () => {
  const [dialer, accepted] = await tcpPair();
  const limit = 1024 * 1024;
  const fc = framed(dialer, { onMessage: () => {}, maxWriteQueue: limit });
  try {
    // Asked before the queue fills; the other side never answers.
    const pending = fc.request({ type: "ping" }, { timeoutMs: 30_000 });
    pending.catch(() => {});
    // Pushes, as a server sends them: not awaited, with the event loop turning between them.
    // The other side reads nothing: the kernel's buffers fill (a few MiB on loopback), then the
    // queue. Without a bound it would take all 64 MiB.
    const text = "x".repeat(16 * 1024);
    let queued = 0;
    let refused: unknown;
    let most = 0;
    for (let i = 0; i < 4096 && refused === undefined; i++) {
      fc.send({ ...chat(i), text }).catch((error) => refused ??= error);
      if (refused === undefined) queued++;
      most = Math.max(most, fc.queuedBytes);
      if (i % 8 === 7) await turn();
    }
    assert.ok(refused !== undefined, `all ${queued} frames were queued (${most} bytes)`);
    assert.ok(most <= limit, `${most} bytes queued, above the bound of ${limit}`);
    assert.ok(refused instanceof ConnectionClosedError, String(refused));
    assert.ok(refused.cause instanceof SlowReaderError, String(refused.cause));
    assert.equal(fc.isClosed, true, "closed to its users at once");
    await assert.rejects(fc.send(chat(0)), ConnectionClosedError);
    await assert.rejects(within(pending), ConnectionClosedError, "the pending request fails");
    // The other side reads after all (within the grace): everything queued, then why it ends.
    const received = await within(readToEnd(accepted), 15_000, "the frames, the error, the end");
    const last = received.pop();
    assert.equal(last?.type, "error", JSON.stringify(last)?.slice(0, 200));
    assert.equal(last?.code, "SLOW_READER");
    assert.match(String(last?.message), /does not read .* 1 MiB/);
    const seqs = received.filter((m) => m.type === "msg").map((m) => m.seq);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i), "in order");
    assert.ok(seqs.length >= queued - 8, `${seqs.length} of ${queued} frames arrived`);
    await accepted.closeWrite();
    const reason = await within(fc.closed);
    assert.ok(reason instanceof SlowReaderError && reason.limit === limit, String(reason));
  } finally {
    await fc.close();
    accepted.close();
  }
});

Deno.test("FramedConnection never reaches maxWriteQueue when the writer waits for its writes and the reader reads", async () => {
  const limit = 1024 * 1024;
  await using pair = await framedPair({ maxWriteQueue: limit }, {});
  const N = 512; // 32 MiB in frames of 64 KiB, four in flight (as a file transfer keeps them)
  const all = latch<PeerMessage>(N);
  pair.b.setHandler((m) => all.push(m));
  const text = "x".repeat(64 * 1024 - 200);
  const inFlight: Promise<void>[] = [];
  let most = 0;
  for (let i = 0; i < N; i++) {
    if (inFlight.length === 4) await inFlight.shift();
    inFlight.push(pair.a.send({ ...chat(i), text }));
    most = Math.max(most, pair.a.queuedBytes);
  }
  await within(Promise.all(inFlight));
  assert.equal((await within(all.done)).length, N);
  assert.ok(most <= 4 * 64 * 1024 + 1024, `${most} bytes queued`);
  assert.equal(pair.a.isClosed, false);
});

Deno.test("FramedConnection.end() closes after the grace when the other side never ends its direction", async () => {
  await using t = await framedVersusRaw({ onMessage: () => {} });
  await t.fc.send({ type: "bye" });
  const t0 = performance.now();
  const ending = t.fc.end(undefined, 300);
  await assert.rejects(t.fc.send({ type: "bye" }), ConnectionClosedError);
  await assert.rejects(t.fc.request({ type: "ping" }), ConnectionClosedError);
  // The raw side reads both frames and the end of our direction, but keeps its own open.
  assert.equal((await within(t.raw.next()))?.type, "bye");
  assert.equal(await within(t.raw.next()), null);
  await within(ending);
  assert.ok(performance.now() - t0 >= 250, "waited for the other side's end");
  assert.equal(await within(t.fc.closed), undefined, "a clean close");
  assert.equal(t.fc.end(), t.fc.close(), "idempotent");
});

Deno.test("FramedConnection.close() fails a pending next() with ConnectionClosedError", async () => {
  await using pair = await framedPair();
  const waiting = pair.a.next(5000);
  const outcome = waiting.then(() => "resolved", (e) => e);
  await pair.a.close();
  assert.ok((await outcome) instanceof ConnectionClosedError);
});

Deno.test("FramedConnection closes with the error its handler throws", async () => {
  await using pair = await framedPair();
  pair.a.setHandler(() => {
    throw new Error("handler broke");
  });
  await pair.b.send(chat(1));
  const reason = await within(pair.a.closed);
  assert.equal(reason?.message, "handler broke");
  assert.equal(await within(pair.b.closed), undefined);
});

// ---- the inbox before a handler ------------------------------------------------------------

Deno.test("FramedConnection.next() takes messages in order before a handler is set", async () => {
  await using pair = await framedPair();
  const waiting = pair.a.next(2000); // waits before anything is sent
  await pair.b.send(chat(1));
  await pair.b.send(chat(2));
  assert.equal((await within(waiting) as { id: string }).id, "m1");
  assert.equal((await within(pair.a.next(2000)) as { id: string }).id, "m2");
});

Deno.test("FramedConnection.next() throws TimeoutError when nothing arrives", async () => {
  await using pair = await framedPair();
  await assert.rejects(pair.a.next(30), TimeoutError);
  // The connection is still usable afterwards.
  await pair.b.send(chat(1));
  assert.equal((await within(pair.a.next(2000))).type, "msg");
});

Deno.test("FramedConnection.setHandler() first delivers, in order, what arrived before it", async () => {
  await using pair = await framedPair({}, {});
  pair.b.setHandler(async (m) => {
    if (m.type === "ping") await pair.b.send({ type: "pong", id: m.id });
  });
  for (const n of [1, 2, 3]) await pair.b.send(chat(n));
  // The pong is written after the three messages, so once it is back they are all queued.
  await within(pair.a.request({ type: "ping" }));

  const queued = latch<string>(3);
  pair.a.setHandler((m) => queued.push((m as { id: string }).id));
  // Delivered without anything new arriving to wake the connection up.
  assert.deepEqual(await within(queued.done), ["m1", "m2", "m3"]);

  const later = latch<string>(1);
  pair.a.setHandler((m) => later.push((m as { id: string }).id));
  await pair.b.send(chat(4));
  assert.deepEqual(await within(later.done), ["m4"]);
  assert.deepEqual(queued.items, ["m1", "m2", "m3"]);
});

Deno.test("FramedConnection stops reading once 2 MiB of messages wait for a busy handler, and goes on once they are handled", async () => {
  await using t = await framedVersusRaw();
  const handled: string[] = [];
  const go = Promise.withResolvers<void>();
  t.fc.setHandler(async (m) => {
    await go.promise; // busy: nothing is handled until told
    handled.push((m as { id: string }).id);
  });
  // 64 messages of ≈ 64 KiB (4 MiB in all; the kernel's buffers on loopback hold all of it).
  // Counted by number only, all 64 were read into memory: 256 messages of up to 1 MiB each were
  // let wait per connection.
  const text = "x".repeat(64 * 1024 - 200);
  const N = 64;
  for (let n = 0; n < N; n++) await t.raw.send({ ...chat(n), text });
  const deadline = Date.now() + 15_000;
  while (t.fc.pendingMessages < 32 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  // What it would have read by now, had it not paused.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const waiting = t.fc.pendingMessages;
  assert.ok(waiting >= 31 && waiting <= 48, `${waiting} messages read ahead of the handler`);
  go.resolve();
  while (handled.length < N && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.deepEqual(handled, Array.from({ length: N }, (_, n) => `m${n}`), "all, in order");
});

Deno.test("FramedConnection answers a ping that arrived before the handler was set, not the handler", async () => {
  await using pair = await framedPair({}, {});
  const pong = pair.a.request({ type: "ping" });
  // The ping waits in b's inbox (no handler yet), behind a message sent after it from a.
  await pair.a.send(chat(1));
  await within(
    new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (pair.b.pendingMessages < 2) return;
        clearInterval(poll);
        resolve();
      }, 5);
    }),
  );
  const seen = latch<string>(1);
  pair.b.setHandler((m) => seen.push(m.type));
  assert.equal((await within(pong)).type, "pong");
  assert.deepEqual(await within(seen.done), ["msg"]);
});

// ---- malformed input -----------------------------------------------------------------------

Deno.test("FramedConnection answers malformed messages with error frames and stays open", async () => {
  await using t = await framedVersusRaw();
  t.fc.setHandler(async (m) => {
    if (m.type === "ping") await t.fc.send({ type: "pong", id: m.id });
  });

  await t.raw.send("this is not json");
  assert.deepEqual(
    await within(t.raw.next()),
    { type: "error", code: "BAD_MESSAGE", message: "frame is not valid UTF-8 JSON" },
  );

  await t.raw.send({ type: "launch_missiles", id: 7 });
  const unknown = await within(t.raw.next());
  assert.equal(unknown?.code, "UNKNOWN_TYPE");
  assert.equal(unknown?.id, 7, "the error echoes the request id");
  assert.match(String(unknown?.message), /launch_missiles/);

  await t.raw.send({ type: "msg", id: "m1", seq: 1 }); // fields missing
  const bad = await within(t.raw.next());
  assert.equal(bad?.code, "BAD_MESSAGE");
  assert.equal(bad?.id, undefined, "a string message id is not a request id");

  await t.raw.send([1, 2, 3] as unknown as Record<string, unknown>);
  assert.equal((await within(t.raw.next()))?.code, "BAD_MESSAGE");

  // Still open and answering.
  await t.raw.send({ type: "ping", id: 9 });
  assert.deepEqual(await within(t.raw.next()), { type: "pong", id: 9 });
  assert.equal(t.fc.isClosed, false);
});

Deno.test("FramedConnection closes after more than maxBadMessages malformed messages", async () => {
  await using t = await framedVersusRaw({ maxBadMessages: 2 });
  // Up to the limit, each bad message is answered and the link stays open.
  for (let i = 1; i <= 2; i++) {
    await t.raw.send(`garbage ${i}`);
    const reply = await within(t.raw.next());
    assert.equal(reply?.code, "BAD_MESSAGE");
    assert.doesNotMatch(String(reply?.message), /too many/);
    assert.equal(t.fc.isClosed, false, `closed after only ${i} bad messages`);
  }
  await t.raw.send("garbage 3");
  const last = await within(t.raw.next());
  assert.equal(last?.code, "BAD_MESSAGE");
  assert.match(String(last?.message), /too many bad messages/);
  assert.equal(await within(t.raw.next()), null, "then the connection is closed");
  const reason = await within(t.fc.closed);
  assert.ok(reason instanceof ProtocolError, String(reason));
  assert.equal(reason.code, "BAD_MESSAGE");
  assert.equal(t.fc.isClosed, true);
});

Deno.test("FramedConnection answers an oversize frame header with BAD_FRAME, then closes", async () => {
  await using t = await framedVersusRaw({ maxFrame: 1024 });
  // On the wire a frame may hold a 1024-byte body once sealed (with its tag), and no more.
  const limit = sealedSize(1024);
  assert.ok(limit > 1024 && limit < 1100, String(limit));
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, limit + 1);
  await writeAll(t.raw.conn, header);
  const error = await within(t.raw.next());
  assert.equal(error?.type, "error");
  assert.equal(error?.code, "BAD_FRAME");
  assert.match(String(error?.message), new RegExp(`\\b${limit + 1}\\b`));
  assert.equal(await within(t.raw.next()), null, "then the connection is closed");
  assert.ok((await within(t.fc.closed)) instanceof FrameError);
});

Deno.test("FramedConnection rejects a header above MAX_CONTROL_FRAME by default", async () => {
  await using t = await framedVersusRaw();
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, 0xffffffff);
  await writeAll(t.raw.conn, header);
  assert.equal((await within(t.raw.next()))?.code, "BAD_FRAME");
  assert.equal(await within(t.raw.next()), null);
});

Deno.test("FramedConnection reports a frame cut off by the peer's close as a FrameError", async () => {
  await using t = await framedVersusRaw();
  const frame = encodeFrame(encodeMessage({ type: "bye" }));
  await writeAll(t.raw.conn, frame.subarray(0, frame.length - 2));
  t.raw.conn.closeWrite();
  const reason = await within(t.fc.closed);
  assert.ok(reason instanceof FrameError, String(reason));
});

// ---- large messages ------------------------------------------------------------------------

/** A protocol with one message of any size, to go past chat's 64 Ki-character text limit. */
const Blob = s.object({ type: s.literal("blob"), data: s.string() });
const BlobProtocol = s.union("type", [ErrorMsg, Blob]);
type BlobMessage = s.Infer<typeof BlobProtocol>;

/** About `bytes` of UTF-8 with multi-byte characters, so reads split them anywhere. */
function bigText(bytes: number): string {
  const unit = "confab € ✓ 😀 ";
  return unit.repeat(Math.ceil(bytes / enc.encode(unit).length));
}

Deno.test("FramedConnection round-trips a 200 KiB message both ways", async () => {
  const options = { schema: BlobProtocol, replyTypes: [] };
  await using pair = await framedPair<BlobMessage>(options, options);
  pair.b.setHandler(async (m) => {
    await pair.b.send({ ...m, data: `echo:${(m as { data: string }).data}` });
  });
  const data = bigText(200 * 1024);
  assert.ok(enc.encode(data).length >= 200 * 1024);
  await pair.a.send({ type: "blob", data });
  const echo = await within(pair.a.next(5000)) as { type: string; data: string };
  assert.equal(echo.type, "blob");
  assert.equal(echo.data.length, data.length + 5);
  assert.ok(echo.data === `echo:${data}`, "the echoed text differs");
});

Deno.test("writeAll() loops over short writes until a 200 KiB frame is out", async () => {
  const [ca, cb] = await tcpPair();
  await using fc = framed<BlobMessage>(cb, { schema: BlobProtocol, replyTypes: [] });
  using raw = new RawPeer(ca);
  let writes = 0;
  // A real socket, but one that accepts at most 1000 bytes per write, as a busy one does.
  const stingy = {
    write: (p: Uint8Array) => {
      writes++;
      return raw.conn.write(p.subarray(0, 1000));
    },
  } as unknown as Deno.Conn;
  const data = bigText(200 * 1024);
  const frame = encodeFrame(encodeMessage({ type: "blob", data }));
  await writeAll(stingy, frame);
  assert.equal(writes, Math.ceil(frame.length / 1000));
  const got = await within(fc.next(5000)) as { data: string };
  assert.ok(got.data === data, "the received text differs");
});

Deno.test("FramedConnection.send() refuses a message above maxFrame without writing it", async () => {
  await using pair = await framedPair({ maxFrame: 100 });
  await assert.rejects(
    async () => await pair.a.send({ type: "bye", pad: "x".repeat(200) }),
    RangeError,
  );
  // Nothing half-written: the link still works.
  await pair.a.send({ type: "bye" });
  assert.deepEqual(await within(pair.b.next(2000)), { type: "bye" });
});

Deno.test("FramedConnection writes small frames queued behind a write together, in order", async () => {
  const [a, b] = memoryPipe();
  let writes = 0;
  const counting: Transport = {
    path: a.path,
    localAddr: a.localAddr,
    remoteAddr: a.remoteAddr,
    read: (buffer) => a.read(buffer),
    write: (data) => {
      writes++;
      return a.write(data);
    },
    closeWrite: () => a.closeWrite(),
    close: () => a.close(),
  };
  await using sender = new FramedConnection<PeerMessage>(counting, {
    schema: PeerToPeer,
    replyTypes: ["pong"],
  });
  await using receiver = new FramedConnection<PeerMessage>(b, {
    schema: PeerToPeer,
    replyTypes: ["pong"],
  });
  const got = latch<PeerMessage>(199);
  receiver.setHandler((m) => got.push(m));
  // A large frame first, so the small ones queue behind it; one of them also large.
  const big = (n: number) => ({ ...chat(n), text: "x".repeat(40_000) });
  const sends = [sender.send(big(1000))];
  for (let i = 0; i < 198; i++) sends.push(sender.send(i === 100 ? big(i) : chat(i)));
  await Promise.all(sends);
  const items = await within(got.done);
  const seqs = items.map((m) => (m as { seq: number }).seq);
  assert.deepEqual(seqs, [1000, ...Array(198).keys()]);
  assert.equal((items[101] as { text: string }).text.length, 40_000);
  assert.ok(writes < 20, `${writes} writes for 199 frames`);
});

Deno.test("FramedConnection.sendEncoded() sends one encoded body on links with different keys, sealed for each", async () => {
  const keyed = (fill: number) => ({
    send: new TransportCipher(new CipherState(new Uint8Array(32).fill(fill)), "send"),
    receive: new TransportCipher(new CipherState(new Uint8Array(32).fill(fill)), "receive"),
  });
  const links = [1, 2].map((fill) => {
    const [a, b] = memoryPipe();
    const sender = new FramedConnection<PeerMessage>(a, { schema: PeerToPeer, replyTypes: [] });
    const receiver = new FramedConnection<PeerMessage>(b, { schema: PeerToPeer, replyTypes: [] });
    sender.secure(keyed(fill));
    receiver.secure(keyed(fill));
    return { sender, receiver };
  });
  try {
    const message = chat(7);
    const body = encodeMessage(message);
    await Promise.all(links.map((l) => l.sender.sendEncoded(body)));
    for (const l of links) assert.deepEqual(await within(l.receiver.next(2000)), message);
    // The body is not consumed: the same bytes go again, under each link's next nonce.
    await Promise.all(links.map((l) => l.sender.sendEncoded(body)));
    for (const l of links) assert.deepEqual(await within(l.receiver.next(2000)), message);
  } finally {
    await Promise.all(links.flatMap((l) => [l.sender.close(), l.receiver.close()]));
  }
});

// ---- hello ---------------------------------------------------------------------------------

Deno.test("exchangeHello() succeeds when versions match and roles are as expected", async () => {
  await using pair = await framedPair();
  const [fromB, fromA] = await within(Promise.all([
    exchangeHello(pair.a, { role: "client", expectRole: "server", timeoutMs: 2000 }),
    exchangeHello(pair.b, { role: "server", expectRole: "client", timeoutMs: 2000 }),
  ]));
  assert.deepEqual(fromB, {
    type: "hello",
    version: PROTOCOL_VERSION,
    role: "server",
    software: SOFTWARE,
  });
  assert.equal(fromA.role, "client");
  // Both links stay usable.
  await pair.a.send({ type: "bye" });
  assert.deepEqual(await within(pair.b.next(2000)), { type: "bye" });
});

Deno.test("exchangeHello() refuses another protocol version, telling the other side why", async () => {
  await using t = await framedVersusRaw();
  const version = PROTOCOL_VERSION + 1;
  await t.raw.send({ type: "hello", version, role: "peer", software: "confab/9.0.0" });
  const error = await within(
    exchangeHello(t.fc, { role: "peer", expectRole: "peer", timeoutMs: 2000 }).catch((e) => e),
  );
  assert.ok(error instanceof ProtocolError, String(error));
  assert.equal(error.code, "VERSION_MISMATCH");
  assert.match(error.message, new RegExp(`speaks ${version}`));
  assert.match(error.message, /confab\/9\.0\.0/);

  // The other side got our hello, then the same refusal, then the close.
  const hello = await within(t.raw.next());
  assert.equal(hello?.type, "hello");
  assert.equal(hello?.version, PROTOCOL_VERSION);
  const refusal = await within(t.raw.next());
  assert.equal(refusal?.type, "error");
  assert.equal(refusal?.code, "VERSION_MISMATCH");
  assert.equal(refusal?.message, error.message);
  assert.equal(await within(t.raw.next()), null);
  assert.equal(t.fc.isClosed, true);
});

Deno.test("exchangeHello() reports a VERSION_MISMATCH refusal from the other side", async () => {
  await using t = await framedVersusRaw();
  await t.raw.send({ type: "error", code: "VERSION_MISMATCH", message: "speaks 7" });
  const error = await within(
    exchangeHello(t.fc, { role: "peer", expectRole: "peer", timeoutMs: 2000 }).catch((e) => e),
  );
  assert.ok(error instanceof ProtocolError, String(error));
  assert.equal(error.code, "VERSION_MISMATCH");
  assert.match(error.message, /refused the connection: speaks 7/);
});

Deno.test("exchangeHello() on both sides refuses the wrong role", async () => {
  await using pair = await framedPair();
  const options = { role: "client", expectRole: "server", timeoutMs: 2000 } as const;
  const [a, b] = await within(Promise.all([
    exchangeHello(pair.a, options).catch((e) => e),
    exchangeHello(pair.b, options).catch((e) => e),
  ]));
  for (const error of [a, b]) {
    assert.ok(error instanceof ProtocolError, String(error));
    assert.equal(error.code, "BAD_MESSAGE");
    assert.match(error.message, /expected a server, but the other side is a client/);
  }
  assert.equal(pair.a.isClosed, true);
  assert.equal(pair.b.isClosed, true);
});

Deno.test("exchangeHello() refuses a first message that is not hello", async () => {
  await using t = await framedVersusRaw();
  await t.raw.send({ type: "ping", id: 1 });
  await assert.rejects(
    exchangeHello(t.fc, { role: "peer", expectRole: "peer", timeoutMs: 2000 }),
    (e) => e instanceof ProtocolError && e.code === "BAD_MESSAGE" && /ping/.test(e.message),
  );
  assert.equal((await within(t.raw.next()))?.type, "hello");
  const refusal = await within(t.raw.next());
  assert.equal(refusal?.code, "BAD_MESSAGE");
  assert.match(String(refusal?.message), /expected hello/);
  assert.equal(await within(t.raw.next()), null);
});

Deno.test("exchangeHello() times out when the other side says nothing", async () => {
  await using t = await framedVersusRaw();
  await assert.rejects(
    exchangeHello(t.fc, { role: "peer", expectRole: "peer", timeoutMs: 50 }),
    TimeoutError,
  );
});
