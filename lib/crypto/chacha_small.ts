/**
 * ChaCha20-Poly1305 (RFC 8439) for short messages, in plain TypeScript on module-level state.
 *
 * node:crypto seals and opens a message through a cipher object made for it (one key and nonce
 * per object, and Noise moves the nonce on every message): ≈ 5-10 µs and ≈ 2.2-2.7 KB of garbage
 * per message, whatever its length. A server holding 15,000 connections pays that for every
 * heartbeat and lookup, and the garbage comes back as collector pauses. Here a message of up to
 * 300 bytes costs ≈ 1.3-5 µs and allocates only its output; node:crypto stays the faster one for
 * long messages (file chunks), and {@link SMALL_MAX} is where the two cross. `@noble/ciphers`
 * (audited) was measured for the same bodies and is no way out: 15-26 µs and ≈ 6.3 KB of garbage
 * per message (it builds its state per call).
 *
 * Constant time as far as JavaScript allows: ChaCha20 is additions, rotations and xors; Poly1305
 * keeps ten 13-bit limbs in doubles (every sum of products stays below 2^33, exact), carries by a
 * multiplication and a floor, does a fixed number of carries and picks the reduced value with a
 * mask, so no branch and no index depends on a key, a message or a tag. The tag is compared in
 * constant time, and nothing is decrypted before it verified. Tests: RFC 8439's AEAD and
 * Poly1305 examples, node:crypto's bytes at every length up to {@link SMALL_MAX} (with and without
 * associated data), a BigInt Poly1305 where the final reduction matters, every changed byte refused.
 */
import { CryptoError } from "./errors.ts";

/**
 * Plaintexts up to this many bytes are sealed and opened here; longer ones by node:crypto once a
 * process has loaded it (node_crypto.ts), here too before that (these functions take any length).
 */
export const SMALL_MAX = 512;

/** Whether this code may run: the keystream is read as bytes from 32-bit words (little-endian). */
export const SMALL_AEAD = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

const TAG = 16;
/** The ChaCha20 input block: constants, key, counter, nonce. */
const input = new Uint32Array(16);
/** One block of keystream, and the same bytes. */
const stream = new Uint32Array(16);
const streamBytes = new Uint8Array(stream.buffer);
/** Poly1305: the clamped key r, and the accumulator h, as ten 13-bit limbs each. */
const r = new Float64Array(10);
const h = new Float64Array(10);
/** The tag computed by the last {@link mac}. */
const tag = new Uint8Array(TAG);
/** A block of Poly1305 input: the lengths block, or the zero-padded end of a segment. */
const block = new Uint8Array(16);

/** Sets the key and nonce into the ChaCha20 input block (counter left to {@link chacha}). */
function setKey(key: Uint8Array, nonce: Uint8Array): void {
  input[0] = 0x61707865;
  input[1] = 0x3320646e;
  input[2] = 0x79622d32;
  input[3] = 0x6b206574;
  for (let i = 0; i < 8; i++) input[4 + i] = word(key, i * 4);
  for (let i = 0; i < 3; i++) input[13 + i] = word(nonce, i * 4);
}

function word(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | bytes[at + 1]! << 8 | bytes[at + 2]! << 16 | bytes[at + 3]! << 24) >>> 0;
}

/** Block `counter` of the keystream into {@link stream} (RFC 8439 §2.3). */
function chacha(counter: number): void {
  input[12] = counter;
  let x0 = input[0]!, x1 = input[1]!, x2 = input[2]!, x3 = input[3]!;
  let x4 = input[4]!, x5 = input[5]!, x6 = input[6]!, x7 = input[7]!;
  let x8 = input[8]!, x9 = input[9]!, x10 = input[10]!, x11 = input[11]!;
  let x12 = input[12]!, x13 = input[13]!, x14 = input[14]!, x15 = input[15]!;
  for (let i = 0; i < 10; i++) {
    // Columns.
    x0 = x0 + x4 | 0, x12 ^= x0, x12 = x12 << 16 | x12 >>> 16;
    x8 = x8 + x12 | 0, x4 ^= x8, x4 = x4 << 12 | x4 >>> 20;
    x0 = x0 + x4 | 0, x12 ^= x0, x12 = x12 << 8 | x12 >>> 24;
    x8 = x8 + x12 | 0, x4 ^= x8, x4 = x4 << 7 | x4 >>> 25;
    x1 = x1 + x5 | 0, x13 ^= x1, x13 = x13 << 16 | x13 >>> 16;
    x9 = x9 + x13 | 0, x5 ^= x9, x5 = x5 << 12 | x5 >>> 20;
    x1 = x1 + x5 | 0, x13 ^= x1, x13 = x13 << 8 | x13 >>> 24;
    x9 = x9 + x13 | 0, x5 ^= x9, x5 = x5 << 7 | x5 >>> 25;
    x2 = x2 + x6 | 0, x14 ^= x2, x14 = x14 << 16 | x14 >>> 16;
    x10 = x10 + x14 | 0, x6 ^= x10, x6 = x6 << 12 | x6 >>> 20;
    x2 = x2 + x6 | 0, x14 ^= x2, x14 = x14 << 8 | x14 >>> 24;
    x10 = x10 + x14 | 0, x6 ^= x10, x6 = x6 << 7 | x6 >>> 25;
    x3 = x3 + x7 | 0, x15 ^= x3, x15 = x15 << 16 | x15 >>> 16;
    x11 = x11 + x15 | 0, x7 ^= x11, x7 = x7 << 12 | x7 >>> 20;
    x3 = x3 + x7 | 0, x15 ^= x3, x15 = x15 << 8 | x15 >>> 24;
    x11 = x11 + x15 | 0, x7 ^= x11, x7 = x7 << 7 | x7 >>> 25;
    // Diagonals.
    x0 = x0 + x5 | 0, x15 ^= x0, x15 = x15 << 16 | x15 >>> 16;
    x10 = x10 + x15 | 0, x5 ^= x10, x5 = x5 << 12 | x5 >>> 20;
    x0 = x0 + x5 | 0, x15 ^= x0, x15 = x15 << 8 | x15 >>> 24;
    x10 = x10 + x15 | 0, x5 ^= x10, x5 = x5 << 7 | x5 >>> 25;
    x1 = x1 + x6 | 0, x12 ^= x1, x12 = x12 << 16 | x12 >>> 16;
    x11 = x11 + x12 | 0, x6 ^= x11, x6 = x6 << 12 | x6 >>> 20;
    x1 = x1 + x6 | 0, x12 ^= x1, x12 = x12 << 8 | x12 >>> 24;
    x11 = x11 + x12 | 0, x6 ^= x11, x6 = x6 << 7 | x6 >>> 25;
    x2 = x2 + x7 | 0, x13 ^= x2, x13 = x13 << 16 | x13 >>> 16;
    x8 = x8 + x13 | 0, x7 ^= x8, x7 = x7 << 12 | x7 >>> 20;
    x2 = x2 + x7 | 0, x13 ^= x2, x13 = x13 << 8 | x13 >>> 24;
    x8 = x8 + x13 | 0, x7 ^= x8, x7 = x7 << 7 | x7 >>> 25;
    x3 = x3 + x4 | 0, x14 ^= x3, x14 = x14 << 16 | x14 >>> 16;
    x9 = x9 + x14 | 0, x4 ^= x9, x4 = x4 << 12 | x4 >>> 20;
    x3 = x3 + x4 | 0, x14 ^= x3, x14 = x14 << 8 | x14 >>> 24;
    x9 = x9 + x14 | 0, x4 ^= x9, x4 = x4 << 7 | x4 >>> 25;
  }
  stream[0] = x0 + input[0]!, stream[1] = x1 + input[1]!, stream[2] = x2 + input[2]!;
  stream[3] = x3 + input[3]!, stream[4] = x4 + input[4]!, stream[5] = x5 + input[5]!;
  stream[6] = x6 + input[6]!, stream[7] = x7 + input[7]!, stream[8] = x8 + input[8]!;
  stream[9] = x9 + input[9]!, stream[10] = x10 + input[10]!, stream[11] = x11 + input[11]!;
  stream[12] = x12 + input[12]!, stream[13] = x13 + input[13]!;
  stream[14] = x14 + input[14]!, stream[15] = x15 + input[15]!;
}

/** XORs `length` bytes of `from` (at `src`) with the keystream from block 1 into `to` at `dst`. */
function xorStream(from: Uint8Array, src: number, length: number, to: Uint8Array, dst: number) {
  for (let done = 0, counter = 1; done < length; done += 64, counter++) {
    chacha(counter);
    const n = Math.min(64, length - done);
    for (let i = 0; i < n; i++) to[dst + done + i] = from[src + done + i]! ^ streamBytes[i]!;
  }
}

/** Splits 16 bytes (`hibit`: with 2^128 added) into ten 13-bit limbs, into `limbs`. */
function limbsOf(bytes: Uint8Array, at: number, limbs: Float64Array, hibit: number): void {
  const t0 = bytes[at]! | bytes[at + 1]! << 8, t1 = bytes[at + 2]! | bytes[at + 3]! << 8;
  const t2 = bytes[at + 4]! | bytes[at + 5]! << 8, t3 = bytes[at + 6]! | bytes[at + 7]! << 8;
  const t4 = bytes[at + 8]! | bytes[at + 9]! << 8, t5 = bytes[at + 10]! | bytes[at + 11]! << 8;
  const t6 = bytes[at + 12]! | bytes[at + 13]! << 8, t7 = bytes[at + 14]! | bytes[at + 15]! << 8;
  limbs[0] = t0 & 0x1fff;
  limbs[1] = (t0 >>> 13 | t1 << 3) & 0x1fff;
  limbs[2] = (t1 >>> 10 | t2 << 6) & 0x1fff;
  limbs[3] = (t2 >>> 7 | t3 << 9) & 0x1fff;
  limbs[4] = (t3 >>> 4 | t4 << 12) & 0x1fff;
  limbs[5] = t4 >>> 1 & 0x1fff;
  limbs[6] = (t4 >>> 14 | t5 << 2) & 0x1fff;
  limbs[7] = (t5 >>> 11 | t6 << 5) & 0x1fff;
  limbs[8] = (t6 >>> 8 | t7 << 8) & 0x1fff;
  limbs[9] = t7 >>> 5 | hibit;
}

const m = new Float64Array(10);
/** A limb's range (13 bits), and its inverse: a carry is a multiplication, exact for these. */
const LIMB = 8192;
const INVERSE_LIMB = 1 / LIMB;
/** The candidate h − p of the final reduction. */
const d = new Float64Array(10);

/**
 * h = (h + block) · r mod 2^130 − 5, for each 16-byte block of `bytes[from, to)`, the last one
 * padded with zeros (the AEAD pads each segment to 16 bytes). Limbs hold 13 bits (14 after the
 * block is added), so every product sum stays below 2^33: exact in a double.
 */
function polyBlocks(bytes: Uint8Array, from: number, to: number, padded = true): void {
  const r0 = r[0]!, r1 = r[1]!, r2 = r[2]!, r3 = r[3]!, r4 = r[4]!;
  const r5 = r[5]!, r6 = r[6]!, r7 = r[7]!, r8 = r[8]!, r9 = r[9]!;
  const s1 = 5 * r1, s2 = 5 * r2, s3 = 5 * r3, s4 = 5 * r4, s5 = 5 * r5;
  const s6 = 5 * r6, s7 = 5 * r7, s8 = 5 * r8, s9 = 5 * r9;
  for (let at = from; at < to; at += 16) {
    if (to - at >= 16) {
      limbsOf(bytes, at, m, 1 << 11);
    } else {
      block.fill(0);
      block.set(bytes.subarray(at, to));
      if (padded) {
        limbsOf(block, 0, m, 1 << 11);
      } else {
        // Plain Poly1305 (§2.5): a short last block ends with a 1 byte instead.
        block[to - at] = 1;
        limbsOf(block, 0, m, 0);
      }
    }
    const h0 = h[0]! + m[0]!, h1 = h[1]! + m[1]!, h2 = h[2]! + m[2]!, h3 = h[3]! + m[3]!;
    const h4 = h[4]! + m[4]!, h5 = h[5]! + m[5]!, h6 = h[6]! + m[6]!, h7 = h[7]! + m[7]!;
    const h8 = h[8]! + m[8]!, h9 = h[9]! + m[9]!;
    // The product, limb by limb; a limb past the 10th wraps round times 5 (2^130 ≡ 5).
    d[0] = h0 * r0 + h1 * s9 + h2 * s8 + h3 * s7 + h4 * s6 + h5 * s5 + h6 * s4 + h7 * s3 + h8 * s2 +
      h9 * s1;
    d[1] = h0 * r1 + h1 * r0 + h2 * s9 + h3 * s8 + h4 * s7 + h5 * s6 + h6 * s5 + h7 * s4 + h8 * s3 +
      h9 * s2;
    d[2] = h0 * r2 + h1 * r1 + h2 * r0 + h3 * s9 + h4 * s8 + h5 * s7 + h6 * s6 + h7 * s5 + h8 * s4 +
      h9 * s3;
    d[3] = h0 * r3 + h1 * r2 + h2 * r1 + h3 * r0 + h4 * s9 + h5 * s8 + h6 * s7 + h7 * s6 + h8 * s5 +
      h9 * s4;
    d[4] = h0 * r4 + h1 * r3 + h2 * r2 + h3 * r1 + h4 * r0 + h5 * s9 + h6 * s8 + h7 * s7 + h8 * s6 +
      h9 * s5;
    d[5] = h0 * r5 + h1 * r4 + h2 * r3 + h3 * r2 + h4 * r1 + h5 * r0 + h6 * s9 + h7 * s8 + h8 * s7 +
      h9 * s6;
    d[6] = h0 * r6 + h1 * r5 + h2 * r4 + h3 * r3 + h4 * r2 + h5 * r1 + h6 * r0 + h7 * s9 + h8 * s8 +
      h9 * s7;
    d[7] = h0 * r7 + h1 * r6 + h2 * r5 + h3 * r4 + h4 * r3 + h5 * r2 + h6 * r1 + h7 * r0 + h8 * s9 +
      h9 * s8;
    d[8] = h0 * r8 + h1 * r7 + h2 * r6 + h3 * r5 + h4 * r4 + h5 * r3 + h6 * r2 + h7 * r1 + h8 * r0 +
      h9 * s9;
    d[9] = h0 * r9 + h1 * r8 + h2 * r7 + h3 * r6 + h4 * r5 + h5 * r4 + h6 * r3 + h7 * r2 + h8 * r1 +
      h9 * r0;
    carry(d);
  }
}

/**
 * Carries `from` (ten limbs, each below 2^53) into {@link h}: every limb to 13 bits, what
 * leaves the top one brought round times 5. The same operations whatever the values.
 */
function carry(from: Float64Array): void {
  let c = 0;
  for (let k = 0; k < 10; k++) {
    const v = from[k]! + c;
    c = Math.floor(v * INVERSE_LIMB);
    h[k] = v - c * LIMB;
  }
  const v = h[0]! + c * 5;
  c = Math.floor(v * INVERSE_LIMB);
  h[0] = v - c * LIMB;
  h[1] = h[1]! + c;
}

/**
 * The Poly1305 tag of the AEAD construction (§2.8) over `ad` and the ciphertext
 * `data[from, from + length)`, with the one-time key from keystream block 0, into {@link tag}.
 */
function mac(ad: Uint8Array, data: Uint8Array, from: number, length: number): void {
  chacha(0);
  // The one-time key: r from the first 16 bytes of the block, s from the next 16.
  start(streamBytes);
  polyBlocks(ad, 0, ad.length);
  polyBlocks(data, from, from + length);
  block.fill(0);
  lengthInto(block, 0, ad.length);
  lengthInto(block, 8, length);
  polyBlocks(block, 0, 16);
  finish(streamBytes, 16);
}

/** Starts a Poly1305 computation: r from `key`'s first 16 bytes, clamped (§2.5.1); h = 0. */
function start(key: Uint8Array): void {
  block.set(key.subarray(0, 16));
  block[3] = block[3]! & 15, block[7] = block[7]! & 15, block[11] = block[11]! & 15;
  block[15] = block[15]! & 15;
  block[4] = block[4]! & 252, block[8] = block[8]! & 252, block[12] = block[12]! & 252;
  limbsOf(block, 0, r, 0);
  h.fill(0);
}

/** Poly1305 of `message` under a 32-byte one-time key (RFC 8439 §2.5), for tests. */
export function poly1305(oneTimeKey: Uint8Array, message: Uint8Array): Uint8Array {
  start(oneTimeKey);
  polyBlocks(message, 0, message.length, false);
  finish(oneTimeKey, 16);
  return tag.slice();
}

/** Reduces h mod 2^130 − 5 and adds s (`key[at, at + 16)`) into {@link tag}. */
function finish(key: Uint8Array, at: number): void {
  // Three carries bring every limb to 13 bits and h below 2^130, whatever the values (a fixed
  // count, not "until nothing is left": no branch on secret data).
  carry(h);
  carry(h);
  carry(h);
  // g = h + 5 − 2^130; take it when it did not borrow (bit 130 of h + 5 set).
  let over = 5;
  for (let i = 0; i < 10; i++) {
    const g = h[i]! + over;
    over = g >>> 13;
    d[i] = g & 0x1fff;
  }
  const select = -over | 0; // all ones when h + 5 reached 2^130, else 0
  for (let i = 0; i < 10; i++) h[i] = (h[i]! & ~select) | (d[i]! & select);
  // The low 128 bits of h, plus s, mod 2^128, little-endian. (Added, not or-ed: the carries
  // may leave the second limb at exactly 2^13.)
  let acc = 0, bits = 0, out = 0;
  for (let i = 0; i < 10 && out < TAG; i++) {
    acc += h[i]! << bits;
    bits += 13;
    while (bits >= 8 && out < TAG) {
      tag[out++] = acc & 0xff;
      acc >>>= 8;
      bits -= 8;
    }
  }
  let sum = 0;
  for (let i = 0; i < TAG; i++) {
    sum = tag[i]! + key[at + i]! + (sum >>> 8);
    tag[i] = sum & 0xff;
  }
}

/** A 64-bit little-endian length (below 2^32 here). */
function lengthInto(out: Uint8Array, at: number, n: number): void {
  out[at] = n & 0xff, out[at + 1] = n >>> 8 & 0xff, out[at + 2] = n >>> 16 & 0xff;
  out[at + 3] = n >>> 24 & 0xff;
}

/**
 * Seals `plaintext` into `out` from `at`: ciphertext, then the 16-byte tag (room checked by
 * the caller).
 */
export function sealSmall(
  key: Uint8Array,
  nonce: Uint8Array,
  ad: Uint8Array,
  plaintext: Uint8Array,
  out: Uint8Array,
  at: number,
): void {
  setKey(key, nonce);
  xorStream(plaintext, 0, plaintext.length, out, at);
  mac(ad, out, at, plaintext.length);
  out.set(tag, at + plaintext.length);
}

/**
 * Opens what {@link sealSmall} sealed (ciphertext, then the tag).
 * @throws {CryptoError} `DECRYPT_FAILED` when the tag does not verify; nothing is decrypted then.
 */
export function openSmall(
  key: Uint8Array,
  nonce: Uint8Array,
  ad: Uint8Array,
  sealed: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const length = sealed.length - TAG;
  if (length < 0) {
    throw new CryptoError("BAD_MESSAGE", `${sealed.length} bytes: shorter than a tag`);
  }
  setKey(key, nonce);
  mac(ad, sealed, 0, length);
  let diff = 0;
  for (let i = 0; i < TAG; i++) diff |= tag[i]! ^ sealed[length + i]!;
  if (diff !== 0) throw new CryptoError("DECRYPT_FAILED", "the tag does not verify");
  const plain = new Uint8Array(length);
  xorStream(sealed, 0, length, plain, 0);
  return plain;
}
