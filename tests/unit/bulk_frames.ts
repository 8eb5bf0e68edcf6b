/**
 * Unit tests for the bulk-data path of the framing: `FrameReader` lending bodies from a read-ahead
 * that grows for large frames (fed by a source that returns bytes in pieces of any size), sealing
 * into a caller's buffer and opening into a kept one (`sealed_frames.ts`), and `freeNow`.
 */
import assert from "node:assert/strict";
import { FrameReader } from "../../lib/net/frame_reader.ts";
import { closeFrame, closeFrameInto, openFrame, sealedSize } from "../../lib/net/sealed_frames.ts";
import { CipherState, MAX_PLAINTEXT_LEN, TransportCipher } from "../../lib/crypto/noise.ts";
import { FrameError } from "../../lib/protocol/errors.ts";
import { encodeFrame, HEADER_SIZE } from "../../lib/protocol/frame.ts";
import { freeNow } from "../../lib/util/free.ts";
import { concatBytes } from "../../lib/crypto/bytes.ts";

/**
 * A byte source that hands out `stream` in pieces whose lengths cycle through `pieces` (a socket
 * returns whatever has arrived), counting its reads.
 */
function source(stream: Uint8Array, pieces: readonly number[]) {
  let at = 0;
  return {
    reads: 0,
    read(buffer: Uint8Array): Promise<number | null> {
      if (at === stream.length) return Promise.resolve(null);
      const n = Math.min(buffer.length, stream.length - at, pieces[this.reads++ % pieces.length]!);
      buffer.set(stream.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
}

/** `length` random bytes (in pieces: getRandomValues fills at most 64 KiB at a time). */
function bytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let at = 0; at < length; at += 65_536) crypto.getRandomValues(out.subarray(at, at + 65_536));
  return out;
}

function stream(bodies: Uint8Array[]): Uint8Array {
  return concatBytes(...bodies.map((b) => encodeFrame(b, 2 ** 24)));
}

/** Ways the bytes may come: tiny pieces, odd ones, a read-ahead's worth, whatever is there. */
const PIECES = [[5, 3, 1, 7], [4096, 13, 65_536, 999], [1 << 20], [1, 1 << 22]];

/** Small, large (past the read-ahead), bulk-sized and oversized bodies, mixed. */
const BODIES = [
  bytes(10),
  bytes(300_000),
  new Uint8Array(0),
  bytes(262_076),
  bytes(262_076),
  bytes(3_000),
  bytes(700_000), // larger than the bulk read-ahead below: a buffer of its own
  bytes(262_076),
  bytes(1),
];

Deno.test("FrameReader.nextView() lends every body intact, the read-ahead growing for large frames", async () => {
  for (const pieces of PIECES) {
    const src = source(stream(BODIES), pieces);
    const reader = new FrameReader(src, 2 ** 24, { readAhead: 4096, bulkReadAhead: 600_000 });
    for (const [i, expected] of BODIES.entries()) {
      const body = await reader.nextView();
      assert.ok(body !== null, `frame ${i} (reads of ${pieces})`);
      // Checked before the next call, which may overwrite a lent view.
      assert.deepEqual(body, expected, `frame ${i} (reads of ${pieces})`);
    }
    assert.equal(await reader.nextView(), null);
  }
});

Deno.test("FrameReader.next() hands out bodies of their own: a later read leaves them intact", async () => {
  const src = source(stream(BODIES), [1 << 20]);
  const reader = new FrameReader(src, 2 ** 24, { readAhead: 4096, bulkReadAhead: 600_000 });
  const got: Uint8Array[] = [];
  for (let i = 0; i < BODIES.length; i++) got.push((await reader.next())!);
  assert.equal(await reader.next(), null);
  assert.deepEqual(got, BODIES);
});

Deno.test("FrameReader with a bulk read-ahead takes several large frames per read", async () => {
  const bodies = Array.from({ length: 32 }, () => bytes(262_076));
  const src = source(stream(bodies), [1 << 22]);
  const reader = new FrameReader(src, 2 ** 24, { bulkReadAhead: 1 << 20 });
  for (const expected of bodies) assert.deepEqual(await reader.nextView(), expected);
  assert.ok(src.reads < 16, `${src.reads} reads for 32 frames of 256 KiB`);
});

Deno.test("FrameReader refuses a length above the maximum before reading the body, lent or not", async () => {
  for (const lend of [true, false]) {
    const header = new Uint8Array(HEADER_SIZE);
    new DataView(header.buffer).setUint32(0, 1001);
    const reader = new FrameReader(source(header, [4]), 1000, { bulkReadAhead: 1 << 20 });
    await assert.rejects(lend ? reader.nextView() : reader.next(), FrameError);
  }
});

Deno.test("FrameReader says a stream that ends inside a large frame ended mid-frame", async () => {
  const cut = stream([bytes(300_000)]).subarray(0, 200_000);
  for (const bulk of [0, 1 << 20]) {
    const reader = new FrameReader(source(cut, [65_536]), 2 ** 24, { bulkReadAhead: bulk });
    await assert.rejects(reader.nextView(), /middle of a frame/);
  }
});

function pair(): { send: TransportCipher; receive: TransportCipher } {
  const key = crypto.getRandomValues(new Uint8Array(32));
  return {
    send: new TransportCipher(new CipherState(key), "send"),
    receive: new TransportCipher(new CipherState(key), "receive"),
  };
}

Deno.test("closeFrameInto() writes what closeFrame() returns, for bodies of one and of several Noise messages", () => {
  for (const length of [0, 1, MAX_PLAINTEXT_LEN, MAX_PLAINTEXT_LEN + 1, 262_076, 1 << 20]) {
    const body = bytes(length);
    const a = pair();
    // Same key, same nonces: the two ways must give the same bytes.
    const key = crypto.getRandomValues(new Uint8Array(32));
    const one = new TransportCipher(new CipherState(key), "send");
    const two = new TransportCipher(new CipherState(key), "send");
    const out = new Uint8Array(7 + sealedSize(length) + 5).fill(0xee);
    const n = closeFrameInto(two, body, out, 7);
    assert.equal(n, sealedSize(length));
    assert.deepEqual(out.subarray(7, 7 + n), closeFrame(one, body));
    assert.ok(out.subarray(0, 7).every((x) => x === 0xee), "nothing written before `at`");
    assert.ok(out.subarray(7 + n).every((x) => x === 0xee), "nothing written past the frame");
    assert.deepEqual(openFrame(a.receive, closeFrame(a.send, body)), body);
  }
});

Deno.test("openFrame() opens a body of several Noise messages into the buffer given, when it has room", () => {
  const { send, receive } = pair();
  const kept = new Uint8Array(300_000);
  for (const length of [262_076, 200_000, 262_076]) {
    const body = bytes(length);
    const opened = openFrame(receive, closeFrame(send, body), kept);
    assert.equal(opened.buffer, kept.buffer, "opened into the kept buffer");
    assert.deepEqual(opened, body);
  }
  const large = bytes(400_000);
  const opened = openFrame(receive, closeFrame(send, large), kept);
  assert.notEqual(opened.buffer, kept.buffer, "too small: a buffer of its own");
  assert.deepEqual(opened, large);
});

Deno.test("openFrame() into a kept buffer still refuses a body with a damaged part", () => {
  const { send, receive } = pair();
  const sealed = closeFrame(send, bytes(262_076));
  sealed[70_000] = sealed[70_000]! ^ 1; // the second Noise message
  assert.throws(() => openFrame(receive, sealed, new Uint8Array(300_000)), /authentication/);
});

Deno.test("freeNow() frees a buffer of its own and leaves views of shared buffers alone", () => {
  const own = new Uint8Array(65_536).fill(1);
  freeNow(own);
  assert.equal(own.length, 0, "detached: its memory is gone");
  const shared = new Uint8Array(65_536).fill(2);
  const view = shared.subarray(16, 1024);
  freeNow(view);
  assert.equal(view.length, 1008);
  assert.equal(shared.length, 65_536);
  const offset = shared.subarray(1);
  freeNow(offset);
  assert.equal(shared[0], 2);
  freeNow(own); // twice: nothing happens
  freeNow(new Uint8Array(0));
});
