/**
 * In-process tests over memory pipes (lib/net/transport.ts): the pipe behaves like a TCP
 * connection (order, short reads, end of stream, broken pipe, backpressure), and the code
 * above it — FramedConnection, the Noise channel, a whole authenticated peer link carrying
 * chat lines and file chunks — runs over it unchanged, without a socket.
 */
import assert from "node:assert/strict";
import { BINARY_TAG, FramedConnection } from "../../lib/net/framed_connection.ts";
import { memoryPipe, TcpTransport, type Transport, writeAll } from "../../lib/net/transport.ts";
import { openSecureChannel } from "../../lib/net/secure_channel.ts";
import { generateKeyPair } from "../../lib/crypto/noise.ts";
import { Identity } from "../../lib/peer/identity.ts";
import { acceptPeer, connectPeer, type PeerLink } from "../../lib/peer/peer_link.ts";
import { ConnectionClosedError, ProtocolError } from "../../lib/protocol/errors.ts";
import { type PeerMessage, PeerToPeer } from "../../lib/protocol/messages.ts";
import { testDirectory, within } from "../support/peer_fixtures.ts";

const TIMEOUT_MS = 15_000;

/** Reads exactly `n` bytes (or fewer if the stream ends first). */
async function readN(t: Transport, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const k = await t.read(out.subarray(got));
    if (k === null) break;
    got += k;
  }
  return out.subarray(0, got);
}

function framed(t: Transport): FramedConnection<PeerMessage> {
  return new FramedConnection<PeerMessage>(t, {
    schema: PeerToPeer,
    replyTypes: ["pong"],
    acceptBinary: true,
  });
}

// ---- the pipe ------------------------------------------------------------------------------

Deno.test("memoryPipe() carries bytes in order both ways, with short reads", async () => {
  const [a, b] = memoryPipe();
  try {
    await writeAll(a, new Uint8Array([1, 2, 3]));
    await writeAll(a, new Uint8Array([4, 5]));
    const small = new Uint8Array(2);
    assert.equal(await b.read(small), 2);
    assert.deepEqual([...small], [1, 2]);
    assert.deepEqual([...await readN(b, 3)], [3, 4, 5]);
    await writeAll(b, new Uint8Array([9]));
    assert.deepEqual([...await readN(a, 1)], [9]);
    assert.equal(a.path, "memory");
    assert.equal(a.remoteAddr.port, b.localAddr.port);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("memoryPipe() copies what is written: the writer may reuse its buffer", async () => {
  const [a, b] = memoryPipe();
  try {
    const buffer = new Uint8Array([7, 7, 7]);
    await writeAll(a, buffer);
    buffer.fill(0);
    assert.deepEqual([...await readN(b, 3)], [7, 7, 7]);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("memoryPipe() close: the other side reads what was sent, then the end; writes to it fail", async () => {
  const [a, b] = memoryPipe();
  await writeAll(a, new Uint8Array([1, 2]));
  a.close();
  a.close(); // closing twice is not an error
  assert.deepEqual([...await readN(b, 10)], [1, 2]);
  assert.equal(await b.read(new Uint8Array(4)), null);
  await assert.rejects(b.write(new Uint8Array([1])), Deno.errors.BrokenPipe);
  await assert.rejects(a.read(new Uint8Array(1)), Deno.errors.BadResource);
  b.close();
});

Deno.test("memoryPipe() closeWrite: the other side reads the end, and can still answer", async () => {
  const [a, b] = memoryPipe();
  try {
    await writeAll(a, new Uint8Array([5]));
    await a.closeWrite();
    assert.deepEqual([...await readN(b, 10)], [5]);
    await writeAll(b, new Uint8Array([6]));
    assert.deepEqual([...await readN(a, 1)], [6]);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("memoryPipe() holds a writer back while the reader is behind (bounded buffer)", async () => {
  const [a, b] = memoryPipe();
  try {
    const chunk = new Uint8Array(64 * 1024);
    let written = 0;
    const writer = (async () => {
      for (let i = 0; i < 16; i++) written += await a.write(chunk);
    })();
    // Let the writer run as far as it can without a reader.
    for (let i = 0; i < 50; i++) await new Promise((r) => setTimeout(r, 0));
    assert.ok(written < 16 * chunk.length, `the writer ran ahead: ${written} bytes`);
    const all = await readN(b, 16 * chunk.length);
    await writer;
    assert.equal(all.length, 16 * chunk.length);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("memoryPipe() close ends a pending read on the closing side", async () => {
  const [a, b] = memoryPipe();
  const pendingRead = a.read(new Uint8Array(4));
  a.close();
  assert.equal(await pendingRead, null);
  b.close();
});

Deno.test("memoryPipe() close by the reader fails a writer waiting for room", async () => {
  const [a, b] = memoryPipe();
  const chunk = new Uint8Array(64 * 1024);
  // More than the pipe buffers: the writer ends up waiting for a reader that never comes.
  const writer = (async () => {
    for (let i = 0; i < 16; i++) await writeAll(b, chunk);
  })().then(() => "done", (e) => e);
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 0));
  a.close();
  assert.ok(await writer instanceof Deno.errors.BrokenPipe);
  b.close();
});

Deno.test("TcpTransport wraps a TCP connection as a direct path with its addresses", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [client, server] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    listener.accept(),
  ]);
  const a = new TcpTransport(client);
  const b = new TcpTransport(server);
  try {
    assert.equal(a.path, "direct");
    assert.equal(a.remoteAddr.port, listener.addr.port);
    assert.equal(b.remoteAddr.port, a.localAddr.port);
    await writeAll(a, new Uint8Array([1, 2, 3]));
    assert.deepEqual([...await readN(b, 3)], [1, 2, 3]);
  } finally {
    a.close();
    b.close();
    a.close();
  }
});

// ---- FramedConnection over a pipe ----------------------------------------------------------

Deno.test("FramedConnection over a memory pipe: request and reply, messages in order, binary frames", async () => {
  const [ta, tb] = memoryPipe();
  await using a = framed(ta);
  await using b = framed(tb);
  const got: (PeerMessage | { type: "binary"; data: Uint8Array })[] = [];
  const three = Promise.withResolvers<void>();
  b.setHandler((m) => {
    got.push(m);
    if (got.length === 3) three.resolve();
  });
  // A ping is answered by b's connection itself, as on TCP.
  await within(a.request({ type: "ping" }));
  await a.send({ type: "chat_state", open: true });
  await a.sendBinary(new Uint8Array([BINARY_TAG, 1, 2, 3]));
  await a.send({ type: "bye" });
  await within(three.promise);
  assert.deepEqual(got.map((m) => m.type), ["chat_state", "binary", "bye"]);
  assert.deepEqual([...(got[1] as { data: Uint8Array }).data], [BINARY_TAG, 1, 2, 3]);
});

Deno.test("FramedConnection over a memory pipe: a close on one side ends the other", async () => {
  const [ta, tb] = memoryPipe();
  const a = framed(ta);
  const b = framed(tb);
  await a.close();
  assert.equal(await within(b.closed), undefined, "a clean end of stream");
  await assert.rejects(b.send({ type: "bye" }), ConnectionClosedError);
});

Deno.test("FramedConnection over a memory pipe: garbage from the other side is answered and ends the link", async () => {
  const [ta, raw] = memoryPipe();
  const fc = framed(ta);
  try {
    // A length far above the maximum: refused before anything is allocated.
    await writeAll(raw, new Uint8Array([0x7f, 0xff, 0xff, 0xff]));
    const reason = await within(fc.closed);
    assert.match(String(reason?.message), /exceeds the maximum/);
    const answer = new TextDecoder().decode(await readN(raw, 4096));
    assert.match(answer, /BAD_FRAME/);
  } finally {
    raw.close();
    await fc.close();
  }
});

Deno.test("hello and the Noise handshake run over a memory pipe; frames after it are encrypted", async () => {
  const [ta, tb] = memoryPipe();
  await using a = framed(ta);
  await using b = framed(tb);
  const options = { role: "peer", expectRole: "peer", timeoutMs: TIMEOUT_MS } as const;
  const [sa, sb] = await within(Promise.all([
    openSecureChannel(a, { ...options, initiator: true, staticKeyPair: await generateKeyPair() }),
    openSecureChannel(b, { ...options, initiator: false, staticKeyPair: await generateKeyPair() }),
  ]));
  assert.deepEqual(sa.handshakeHash, sb.handshakeHash);
  assert.ok(a.isSecure && b.isSecure);
  await a.send({ type: "chat_state", open: false });
  assert.deepEqual(await within(b.next(TIMEOUT_MS)), { type: "chat_state", open: false });
});

// ---- a peer link over a pipe ---------------------------------------------------------------

const { identities: { alice, bob }, resolveKey } = await testDirectory("alice", "bob");

/** alice dials bob over a memory pipe; both ends of the link, closed on dispose. */
async function linkedPair(
  options: { bobKeyAsAliceSees?: string } = {},
): Promise<AsyncDisposable & { a: PeerLink; b: PeerLink }> {
  const [ta, tb] = memoryPipe();
  const [a, b] = await within(Promise.all([
    connectPeer(ta, {
      me: "alice",
      identity: alice,
      noiseKey: await generateKeyPair(),
      user: "bob",
      publicKey: options.bobKeyAsAliceSees ?? bob.publicKey,
    }),
    acceptPeer(tb, { me: "bob", identity: bob, noiseKey: await generateKeyPair(), resolveKey }),
  ]));
  return {
    a,
    b,
    async [Symbol.asyncDispose]() {
      await Promise.all([a.fc.close(), b.fc.close()]);
    },
  };
}

Deno.test("a peer link comes up over a memory pipe and carries a chat line and its ack", async () => {
  await using pair = await linkedPair();
  assert.equal(pair.a.user, "bob");
  assert.equal(pair.b.user, "alice");
  assert.ok(pair.a.outbound && !pair.b.outbound);
  assert.equal(pair.a.fc.transport.path, "memory");
  const acked = Promise.withResolvers<PeerMessage>();
  pair.a.fc.setHandler((m) => {
    if (m.type === "ack") acked.resolve(m);
  });
  pair.b.fc.setHandler(async (m) => {
    if (m.type === "msg") await pair.b.fc.send({ type: "ack", id: m.id });
  });
  await pair.a.fc.send({ type: "msg", id: "m1", seq: 0, ts: Date.now(), text: "hello bob" });
  assert.deepEqual(await within(acked.promise), { type: "ack", id: "m1" });
});

Deno.test("a peer link over a memory pipe carries 4 MiB of file chunks intact and in order", async () => {
  await using pair = await linkedPair();
  const chunks = 64;
  const size = 64 * 1024;
  let received = 0;
  let inOrder = true;
  const all = Promise.withResolvers<void>();
  pair.b.fc.setHandler((m) => {
    if (m.type !== "binary") return;
    if (m.data.length !== size + 1 || m.data[1] !== received % 251) inOrder = false;
    if (++received === chunks) all.resolve();
  });
  for (let i = 0; i < chunks; i++) {
    const body = new Uint8Array(size + 1).fill(i % 251);
    body[0] = BINARY_TAG;
    await pair.a.fc.sendBinary(body);
  }
  await within(all.promise);
  assert.ok(inOrder, "a chunk arrived damaged or out of order");
});

Deno.test("a peer link over a memory pipe is refused when the other side holds the wrong key", async () => {
  const stranger = (await Identity.generate()).identity;
  await assert.rejects(
    linkedPair({ bobKeyAsAliceSees: stranger.publicKey }),
    (error: unknown) => error instanceof ProtocolError && error.code === "AUTH_FAILED",
  );
});

// ---- moving a link to another path ---------------------------------------------------------

const PEER_CHANNEL = { role: "peer", expectRole: "peer", timeoutMs: TIMEOUT_MS } as const;

Deno.test("migrate() moves a secured link to a new path mid-stream: no frame lost, duplicated or reordered", async () => {
  const [ta, tb] = memoryPipe();
  await using a = framed(ta);
  await using b = framed(tb);
  await within(Promise.all([
    openSecureChannel(a, {
      ...PEER_CHANNEL,
      initiator: true,
      staticKeyPair: await generateKeyPair(),
    }),
    openSecureChannel(b, {
      ...PEER_CHANNEL,
      initiator: false,
      staticKeyPair: await generateKeyPair(),
    }),
  ]));
  const total = 400;
  const seen = { a: [] as number[], b: [] as number[] };
  const allIn = { a: Promise.withResolvers<void>(), b: Promise.withResolvers<void>() };
  for (const [fc, side] of [[a, "a"], [b, "b"]] as const) {
    fc.setHandler((m) => {
      if (m.type !== "msg") return;
      seen[side].push(m.seq);
      if (seen[side].length === total) allIn[side].resolve();
    });
  }
  const pump = (fc: FramedConnection<PeerMessage>) =>
    (async () => {
      for (let seq = 0; seq < total; seq++) {
        await fc.send({ type: "msg", id: `m${seq}`, seq, ts: Date.now(), text: "x".repeat(100) });
        if (seq % 50 === 0) await new Promise((r) => setTimeout(r, 0));
      }
    })();
  const sending = [pump(a), pump(b)];
  // Mid-stream, both move to a new pipe, each at its own moment.
  await new Promise((r) => setTimeout(r, 1));
  const [na, nb] = memoryPipe();
  const moved = Promise.all([
    a.migrate(na),
    (async () => {
      await new Promise((r) => setTimeout(r, 3));
      await b.migrate(nb);
    })(),
  ]);
  await within(moved);
  await within(Promise.all(sending));
  await within(Promise.all([allIn.a.promise, allIn.b.promise]));
  const expected = Array.from({ length: total }, (_, i) => i);
  assert.deepEqual(seen.a, expected);
  assert.deepEqual(seen.b, expected);
  assert.equal(a.transport, na);
  assert.equal(b.transport, nb);
  // The old path is released: each side ends its writing on it at once and closes its end
  // after a grace for the last bytes (a loaded machine may already be past that grace here).
  await within(Promise.all([closedByItsOwner(ta), closedByItsOwner(tb)]));
  // And the link goes on over the new path.
  await within(a.request({ type: "ping" }));
});

/** Resolves once `end` was closed by the connection that owns it; until then it reads only the
 * end of the stream (never data: nothing follows the `path_switch` on the old path). */
async function closedByItsOwner(end: Transport): Promise<void> {
  for (;;) {
    try {
      assert.equal(await end.read(new Uint8Array(16)), null);
    } catch (error) {
      if (error instanceof Deno.errors.BadResource) return;
      throw error;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("migrate() on one side only: the link closes after the deadline instead of hanging", async () => {
  const [ta, tb] = memoryPipe();
  await using a = framed(ta);
  await using _b = framed(tb);
  const [na, nb] = memoryPipe();
  await assert.rejects(a.migrate(na, { timeoutMs: 200 }), ConnectionClosedError);
  assert.ok(a.isClosed);
  // Both paths are closed with it.
  assert.equal(await within(nb.read(new Uint8Array(4))), null);
  nb.close();
});

Deno.test("detach() hands the stream over right after a stop-after message, with the bytes read past it", async () => {
  const [ta, raw] = memoryPipe();
  const fc = new FramedConnection<PeerMessage>(ta, {
    schema: PeerToPeer,
    replyTypes: [],
    stopReadingAfter: ["bye"],
  });
  // One write: the frame, then bytes that are not frames at all (someone else's stream).
  const bye = new TextEncoder().encode(JSON.stringify({ type: "bye" }));
  const wire = new Uint8Array(4 + bye.length + 5);
  new DataView(wire.buffer).setUint32(0, bye.length);
  wire.set(bye, 4);
  wire.set([1, 2, 3, 4, 5], 4 + bye.length);
  await writeAll(raw, wire);
  assert.deepEqual(await within(fc.next(TIMEOUT_MS)), { type: "bye" });
  const { transport, rest } = await within(fc.detach());
  assert.ok(fc.isClosed, "the framed connection is done with the stream");
  const after = [...rest];
  await writeAll(raw, new Uint8Array([6]));
  while (after.length < 6) {
    const buffer = new Uint8Array(8);
    const n = await within(transport.read(buffer));
    if (n === null) break;
    after.push(...buffer.subarray(0, n));
  }
  assert.deepEqual(after, [1, 2, 3, 4, 5, 6]);
  transport.close();
  raw.close();
});
