/**
 * Unit tests for lib/protocol/frame.ts: the length-prefixed framing, fed in every way a socket
 * can deliver bytes (whole, one byte at a time, split anywhere, many frames at once).
 */
import assert from "node:assert/strict";
import {
  encodeFrame,
  FrameDecoder,
  HEADER_SIZE,
  MAX_CONTROL_FRAME,
} from "../../lib/protocol/frame.ts";
import { FrameError } from "../../lib/protocol/errors.ts";

const enc = new TextEncoder();

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Bodies of assorted sizes, including empty and ones larger than a header. */
const BODIES: readonly Uint8Array[] = [
  enc.encode('{"type":"ping","id":1}'),
  new Uint8Array(0),
  Uint8Array.of(0, 0, 0, 0, 0xff),
  enc.encode("x"),
  new Uint8Array(300).map((_, i) => (i * 7) & 0xff),
  new Uint8Array(0),
];

/** A wire stream holding every body in {@link BODIES}, in order. */
const STREAM = concat(BODIES.map((b) => encodeFrame(b)));

/** Small deterministic PRNG (mulberry32), so a failing fuzz case can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("encodeFrame() writes a 4-byte big-endian length, then the body", () => {
  const body = new Uint8Array(0x010203).fill(0xab);
  const frame = encodeFrame(body);
  assert.equal(HEADER_SIZE, 4);
  assert.equal(frame.length, 4 + 0x010203);
  assert.deepEqual([...frame.subarray(0, 4)], [0x00, 0x01, 0x02, 0x03]);
  assert.deepEqual(frame.subarray(4), body);
});

Deno.test("encodeFrame() of an empty body is a header of zeros", () => {
  assert.deepEqual(encodeFrame(new Uint8Array(0)), new Uint8Array(4));
});

Deno.test("encodeFrame() copies a body that is a view into a larger buffer", () => {
  const backing = Uint8Array.of(9, 9, 1, 2, 3, 9);
  const frame = encodeFrame(backing.subarray(2, 5));
  assert.deepEqual([...frame], [0, 0, 0, 3, 1, 2, 3]);
  backing[2] = 42;
  assert.equal(frame[4], 1, "the frame must not alias the caller's buffer");
});

Deno.test("encodeFrame() accepts a body of exactly the maximum and rejects one byte more", () => {
  assert.equal(encodeFrame(new Uint8Array(10), 10).length, 14);
  assert.throws(() => encodeFrame(new Uint8Array(11), 10), RangeError);
  assert.equal(encodeFrame(new Uint8Array(MAX_CONTROL_FRAME)).length, MAX_CONTROL_FRAME + 4);
  assert.throws(
    () => encodeFrame(new Uint8Array(MAX_CONTROL_FRAME + 1)),
    (e: unknown) => e instanceof RangeError && /1048577/.test(e.message),
  );
});

Deno.test("FrameDecoder round-trips every body when the stream arrives in one chunk", () => {
  const decoder = new FrameDecoder();
  const frames = decoder.push(STREAM);
  assert.deepEqual(frames, BODIES);
  assert.equal(decoder.buffered, 0);
  decoder.finish();
});

Deno.test("FrameDecoder.push() decodes a stream fed one byte at a time", () => {
  const decoder = new FrameDecoder();
  // The byte offsets at which each frame ends: a frame must appear exactly there, not before.
  const ends = new Set<number>();
  let end = 0;
  for (const body of BODIES) {
    end += HEADER_SIZE + body.length;
    ends.add(end);
  }
  const got: Uint8Array[] = [];
  for (let i = 0; i < STREAM.length; i++) {
    const frames = decoder.push(STREAM.subarray(i, i + 1));
    if (ends.has(i + 1)) {
      assert.ok(frames.length >= 1, `expected a frame to complete at byte ${i + 1}`);
    } else {
      assert.equal(frames.length, 0, `no frame may complete at byte ${i + 1}`);
    }
    got.push(...frames);
  }
  assert.deepEqual(got, BODIES);
  assert.equal(decoder.buffered, 0);
  decoder.finish();
});

Deno.test("FrameDecoder.push() returns every frame of a chunk holding many", () => {
  const bodies = Array.from({ length: 1000 }, (_, i) => enc.encode(`message ${i}`));
  const decoder = new FrameDecoder();
  const frames = decoder.push(concat(bodies.map((b) => encodeFrame(b))));
  assert.equal(frames.length, 1000);
  assert.deepEqual(frames, bodies);
});

Deno.test("FrameDecoder.push() reassembles frames split at every possible point", () => {
  for (let i = 0; i <= STREAM.length; i++) {
    const decoder = new FrameDecoder();
    const got = [...decoder.push(STREAM.subarray(0, i)), ...decoder.push(STREAM.subarray(i))];
    assert.deepEqual(got, BODIES, `split at ${i}`);
    decoder.finish();
  }
});

Deno.test("FrameDecoder.push() reassembles a frame spread over three chunks", () => {
  const body = enc.encode("hello, world");
  const frame = encodeFrame(body);
  const decoder = new FrameDecoder();
  assert.deepEqual(decoder.push(frame.subarray(0, 2)), []); // half a header
  assert.equal(decoder.buffered, 2);
  assert.deepEqual(decoder.push(frame.subarray(2, 9)), []); // rest of header, part of body
  assert.equal(decoder.buffered, 5);
  assert.deepEqual(decoder.push(frame.subarray(9)), [body]);
  assert.equal(decoder.buffered, 0);
});

Deno.test("FrameDecoder.push() survives random chunking of random frames (seeded fuzz)", () => {
  const random = prng(0xc0ffee);
  for (let round = 0; round < 50; round++) {
    const bodies = Array.from(
      { length: 1 + Math.floor(random() * 20) },
      () => new Uint8Array(Math.floor(random() * 200)).map(() => Math.floor(random() * 256)),
    );
    const stream = concat(bodies.map((b) => encodeFrame(b)));
    const decoder = new FrameDecoder();
    const got: Uint8Array[] = [];
    for (let at = 0; at < stream.length;) {
      const size = 1 + Math.floor(random() * 40);
      got.push(...decoder.push(stream.subarray(at, at + size)));
      at += size;
    }
    assert.deepEqual(got, bodies, `round ${round}`);
    decoder.finish();
  }
});

Deno.test("FrameDecoder.push() reads a header that starts at a non-zero byteOffset", () => {
  const frame = encodeFrame(enc.encode("abc"));
  const backing = new Uint8Array(3 + frame.length);
  backing.set([0xff, 0xff, 0xff]); // would decode as a huge length if the offset were ignored
  backing.set(frame, 3);
  assert.deepEqual(new FrameDecoder().push(backing.subarray(3)), [enc.encode("abc")]);
});

Deno.test("FrameDecoder.push() returns a zero-length body for a zero-length frame", () => {
  const decoder = new FrameDecoder();
  const frames = decoder.push(new Uint8Array(4));
  assert.equal(frames.length, 1);
  assert.equal(frames[0]!.length, 0);
  assert.deepEqual(decoder.push(new Uint8Array(12)), [
    new Uint8Array(0),
    new Uint8Array(0),
    new Uint8Array(0),
  ]);
  decoder.finish();
});

Deno.test("FrameDecoder.push() of an empty chunk changes nothing", () => {
  const decoder = new FrameDecoder();
  assert.deepEqual(decoder.push(new Uint8Array(0)), []);
  assert.equal(decoder.buffered, 0);
  decoder.finish();
  decoder.push(Uint8Array.of(0, 0));
  assert.deepEqual(decoder.push(new Uint8Array(0)), []);
  assert.equal(decoder.buffered, 2);
});

/** Runs `fn` while recording the length of every `new Uint8Array(n)` made through the global. */
function recordAllocations(fn: () => void): number[] {
  const sizes: number[] = [];
  const original = globalThis.Uint8Array;
  globalThis.Uint8Array = new Proxy(original, {
    construct(target, args, newTarget) {
      if (typeof args[0] === "number") sizes.push(args[0]);
      return Reflect.construct(target, args, newTarget);
    },
  });
  try {
    fn();
  } finally {
    globalThis.Uint8Array = original;
  }
  return sizes;
}

Deno.test("FrameDecoder.push() allocates nothing for an oversize frame before rejecting it", () => {
  const decoder = new FrameDecoder(1000);
  const header = Uint8Array.of(0, 0, 0x10, 0); // 4096 bytes declared
  let error: unknown;
  const sizes = recordAllocations(() => {
    try {
      decoder.push(header);
    } catch (e) {
      error = e;
    }
  });
  assert.ok(error instanceof FrameError, `expected a FrameError, got ${error}`);
  assert.deepEqual(sizes.filter((n) => n >= 1000), []);
});

Deno.test("FrameDecoder.push() does not allocate a body before its bytes arrive", () => {
  const decoder = new FrameDecoder(1 << 30);
  const header = Uint8Array.of(0x20, 0, 0, 0); // 512 MiB declared, allowed by this maximum
  const sizes = recordAllocations(() => assert.deepEqual(decoder.push(header), []));
  assert.deepEqual(sizes.filter((n) => n > 64 * 1024), []);
});

Deno.test("FrameDecoder.push() rejects a length above the maximum before allocating", () => {
  // Only the four header bytes: a decoder that waited for (or allocated) the 4 GiB body would
  // not throw here.
  assert.throws(
    () => new FrameDecoder().push(Uint8Array.of(0xff, 0xff, 0xff, 0xff)),
    (e: unknown) =>
      e instanceof FrameError && e.name === "FrameError" && /4294967295/.test(e.message),
  );
  assert.throws(
    () => new FrameDecoder().push(encodeFrame(new Uint8Array(0)).fill(0x7f)),
    FrameError,
  );
});

Deno.test("FrameDecoder.push() enforces its own maximum at the exact boundary", () => {
  const ok = new FrameDecoder(16);
  assert.deepEqual(ok.push(Uint8Array.of(0, 0, 0, 16)), []); // 16 is allowed: waits for the body
  assert.equal(ok.buffered, 0);
  assert.deepEqual(ok.push(new Uint8Array(16)), [new Uint8Array(16)]);

  assert.throws(() => new FrameDecoder(16).push(Uint8Array.of(0, 0, 0, 17)), FrameError);

  const atDefault = new FrameDecoder();
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, MAX_CONTROL_FRAME);
  assert.deepEqual(atDefault.push(header), []);
  new DataView(header.buffer).setUint32(0, MAX_CONTROL_FRAME + 1);
  assert.throws(() => new FrameDecoder().push(header), FrameError);
});

Deno.test("FrameDecoder.push() rejects an oversize header fed one byte at a time", () => {
  const decoder = new FrameDecoder(100);
  assert.deepEqual(decoder.push(Uint8Array.of(0)), []);
  assert.deepEqual(decoder.push(Uint8Array.of(0)), []);
  assert.deepEqual(decoder.push(Uint8Array.of(1)), []);
  assert.throws(() => decoder.push(Uint8Array.of(0)), FrameError); // 256 > 100
});

Deno.test("FrameDecoder.push() rejects an oversize frame that follows valid ones", () => {
  const decoder = new FrameDecoder(8);
  assert.deepEqual(decoder.push(encodeFrame(enc.encode("ok"))), [enc.encode("ok")]);
  assert.throws(
    () => decoder.push(concat([encodeFrame(enc.encode("ok")), encodeFrame(new Uint8Array(9), 9)])),
    FrameError,
  );
});

Deno.test("FrameDecoder.push() rejects garbage such as an HTTP request", () => {
  // "GET " read as a length is 0x47455420, far above 1 MiB.
  assert.throws(
    () => new FrameDecoder().push(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
    FrameError,
  );
  // A TLS ClientHello starts 16 03 01 ...: also far too long.
  assert.throws(
    () => new FrameDecoder().push(Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00)),
    FrameError,
  );
});

Deno.test("FrameDecoder.finish() accepts a stream that ended between frames", () => {
  new FrameDecoder().finish();
  const decoder = new FrameDecoder();
  decoder.push(STREAM);
  decoder.finish();
});

Deno.test("FrameDecoder.finish() throws when the stream ended inside a header", () => {
  const decoder = new FrameDecoder();
  decoder.push(Uint8Array.of(0, 0));
  assert.throws(() => decoder.finish(), FrameError);
});

Deno.test("FrameDecoder.finish() throws when the stream ended right after a header", () => {
  const decoder = new FrameDecoder();
  assert.deepEqual(decoder.push(Uint8Array.of(0, 0, 0, 5)), []);
  assert.equal(decoder.buffered, 0); // the header is consumed, but a body is still owed
  assert.throws(() => decoder.finish(), FrameError);
});

Deno.test("FrameDecoder.finish() throws when the stream ended inside a body", () => {
  const decoder = new FrameDecoder();
  const frame = encodeFrame(enc.encode("truncated"));
  assert.deepEqual(decoder.push(concat([encodeFrame(enc.encode("a")), frame.subarray(0, 8)])), [
    enc.encode("a"),
  ]);
  assert.throws(
    () => decoder.finish(),
    (e: unknown) => e instanceof FrameError && /middle/.test(e.message),
  );
});

Deno.test("FrameDecoder.buffered counts bytes not yet returned as a frame", () => {
  const decoder = new FrameDecoder();
  const frame = encodeFrame(enc.encode("abcdef"));
  decoder.push(frame.subarray(0, 3));
  assert.equal(decoder.buffered, 3);
  decoder.push(frame.subarray(3, 7));
  assert.equal(decoder.buffered, 3); // header consumed; 3 body bytes held
  decoder.push(concat([frame.subarray(7), Uint8Array.of(0)]));
  assert.equal(decoder.buffered, 1); // one byte of the next header
});
