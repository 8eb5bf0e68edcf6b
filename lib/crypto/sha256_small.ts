/**
 * SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104) and Noise's HKDF for short inputs, in plain
 * TypeScript on module-level state.
 *
 * A Noise handshake hashes a dozen short inputs (h || 32 bytes, a payload of a few hundred) and
 * derives keys four or five times. Through node:crypto each `createHash` or `hkdfSync` is an op
 * of ≈ 12-17 µs (an object, a trip into Rust, a Buffer back), most of it not hashing: the
 * re-attach bench counted ≈ 70 µs of SHA-256 and ≈ 30-50 µs of HKDF per client back on each side.
 * Here a 64-byte input is two compressions (≈ 1 µs) and Noise's HKDF with two outputs ten (the
 * temp key's padded blocks are compressed once and reused for every output). Inputs longer than
 * {@link SMALL_HASH_MAX} go to node:crypto, which is faster for bulk data, once something has
 * loaded it (node_crypto.ts); until then they are hashed here too.
 *
 * Nothing here branches or indexes on secret data (additions, rotations and xors on 32-bit
 * words). Tests: FIPS 180-4's examples, node:crypto's digests at every length up to the limit
 * and across it, RFC 4231's HMAC cases, node:crypto's hkdfSync, and the Noise vectors through
 * tests/unit/noise.ts.
 */
import { nodeCrypto } from "./node_crypto.ts";

/** Inputs (all parts together) up to this many bytes are hashed here; longer by node:crypto. */
export const SMALL_HASH_MAX = 2048;

const K = new Int32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);
const IV = new Int32Array([
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
]);

/** The message schedule. */
const W = new Int32Array(64);
/** The running hash state. */
const state = new Int32Array(8);
/** The block being filled, and how many of its bytes are. */
const block = new Uint8Array(64);
let filled = 0;
/** Bytes hashed so far (fits a double: inputs here are short). */
let total = 0;
/** HMAC: the states after the key's inner and outer padded blocks, for the key in use. */
const innerState = new Int32Array(8);
const outerState = new Int32Array(8);
const pad = new Uint8Array(64);
/** One digest, and an HMAC output with its counter byte. */
const digest32 = new Uint8Array(32);
const chained = new Uint8Array(33);

function compress(b: Uint8Array): void {
  for (let i = 0; i < 16; i++) {
    const j = i * 4;
    W[i] = (b[j]! << 24) | (b[j + 1]! << 16) | (b[j + 2]! << 8) | b[j + 3]!;
  }
  for (let i = 16; i < 64; i++) {
    const w15 = W[i - 15]!;
    const w2 = W[i - 2]!;
    const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
    const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
    W[i] = (W[i - 16]! + s0 + W[i - 7]! + s1) | 0;
  }
  let a = state[0]!, b1 = state[1]!, c = state[2]!, d = state[3]!;
  let e = state[4]!, f = state[5]!, g = state[6]!, h = state[7]!;
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const ch = (e & f) ^ (~e & g);
    const t1 = (h + S1 + ch + K[i]! + W[i]!) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const maj = (a & b1) ^ (a & c) ^ (b1 & c);
    const t2 = (S0 + maj) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b1;
    b1 = a;
    a = (t1 + t2) | 0;
  }
  state[0] = (state[0]! + a) | 0;
  state[1] = (state[1]! + b1) | 0;
  state[2] = (state[2]! + c) | 0;
  state[3] = (state[3]! + d) | 0;
  state[4] = (state[4]! + e) | 0;
  state[5] = (state[5]! + f) | 0;
  state[6] = (state[6]! + g) | 0;
  state[7] = (state[7]! + h) | 0;
}

function begin(from: Int32Array, already: number): void {
  state.set(from);
  filled = 0;
  total = already;
}

function update(data: Uint8Array): void {
  let i = 0;
  const n = data.length;
  total += n;
  if (filled > 0) {
    const take = Math.min(64 - filled, n);
    block.set(data.subarray(0, take), filled);
    filled += take;
    i = take;
    if (filled < 64) return;
    compress(block);
    filled = 0;
  }
  for (; i + 64 <= n; i += 64) compress(data.subarray(i, i + 64));
  if (i < n) {
    block.set(data.subarray(i), 0);
    filled = n - i;
  }
}

/** Pads, compresses the last block(s) and writes the digest into `out`. */
function finish(out: Uint8Array): void {
  const bits = total * 8;
  block[filled++] = 0x80;
  if (filled > 56) {
    block.fill(0, filled);
    compress(block);
    filled = 0;
  }
  block.fill(0, filled, 56);
  const hi = Math.floor(bits / 0x100000000);
  const lo = bits >>> 0;
  block[56] = hi >>> 24;
  block[57] = hi >>> 16;
  block[58] = hi >>> 8;
  block[59] = hi;
  block[60] = lo >>> 24;
  block[61] = lo >>> 16;
  block[62] = lo >>> 8;
  block[63] = lo;
  compress(block);
  for (let i = 0; i < 8; i++) {
    const w = state[i]!;
    out[i * 4] = w >>> 24;
    out[i * 4 + 1] = w >>> 16;
    out[i * 4 + 2] = w >>> 8;
    out[i * 4 + 3] = w;
  }
  filled = 0;
}

/**
 * SHA-256 of the concatenated parts.
 * @returns a fresh 32-byte digest.
 */
export function sha256(...parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let length = 0;
  for (const part of parts) length += part.length;
  const node = length > SMALL_HASH_MAX ? nodeCrypto() : undefined;
  if (node !== undefined) {
    const hash = node.createHash("sha256");
    for (const part of parts) hash.update(part);
    return new Uint8Array(hash.digest());
  }
  return hashHere(parts);
}

/**
 * SHA-256 of the concatenated parts, here whatever their length: what {@link sha256} does for
 * long inputs while node:crypto is not loaded.
 */
export function sha256Here(...parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  return hashHere(parts);
}

function hashHere(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  begin(IV, 0);
  for (const part of parts) update(part);
  const out = new Uint8Array(32);
  finish(out);
  return out;
}

/** Sets the HMAC key: the states after its inner and outer padded blocks (key ≤ 64 bytes). */
function hmacKey(key: Uint8Array): void {
  if (key.length > 64) throw new RangeError(`an HMAC key here is at most 64 bytes`);
  pad.fill(0x36);
  for (let i = 0; i < key.length; i++) pad[i] = key[i]! ^ 0x36;
  state.set(IV);
  compress(pad);
  innerState.set(state);
  pad.fill(0x5c);
  for (let i = 0; i < key.length; i++) pad[i] = key[i]! ^ 0x5c;
  state.set(IV);
  compress(pad);
  outerState.set(state);
  pad.fill(0);
}

/** HMAC with the key set by {@link hmacKey}, of the message, into `out` (32 bytes). */
function hmacInto(message: Uint8Array, out: Uint8Array): void {
  begin(innerState, 64);
  update(message);
  finish(digest32);
  begin(outerState, 64);
  update(digest32);
  finish(out);
}

/**
 * Zeroes the module's working state after a keyed computation: the padded key's states, the
 * last block and schedule, the inner digest. None of it is read before it is set again, but a
 * key (or a value derived from it) should not outlive its use in memory a dump or a later bug
 * could reach.
 */
function wipeKeyed(): void {
  innerState.fill(0);
  outerState.fill(0);
  state.fill(0);
  W.fill(0);
  block.fill(0);
  digest32.fill(0);
  chained.fill(0);
}

/**
 * HMAC-SHA256 (RFC 2104) with a key of at most 64 bytes.
 * @returns a fresh 32-byte tag.
 */
export function hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array<ArrayBuffer> {
  if (message.length > SMALL_HASH_MAX) {
    throw new RangeError(`hmacSha256() hashes at most ${SMALL_HASH_MAX} bytes`);
  }
  const out = new Uint8Array(32);
  try {
    hmacKey(key);
    hmacInto(message, out);
  } finally {
    wipeKeyed();
  }
  return out;
}

/**
 * HKDF-SHA256 (RFC 5869) without a salt (32 zero bytes), 32 bytes of output: one block, T(1) =
 * HMAC(HMAC(zeros, ikm), info || 0x01). `info` is at most {@link SMALL_HASH_MAX} - 1 bytes.
 * @returns a fresh 32-byte key.
 */
export function hkdfSha256(
  inputKeyMaterial: Uint8Array,
  info: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const pseudoRandomKey = hmacSha256(new Uint8Array(32), inputKeyMaterial);
  const block = new Uint8Array(info.length + 1);
  block.set(info);
  block[info.length] = 1;
  try {
    return hmacSha256(pseudoRandomKey, block);
  } finally {
    pseudoRandomKey.fill(0);
  }
}

/**
 * Noise's HKDF (§4.3): temp_key = HMAC(chaining_key, ikm), output1 = HMAC(temp_key, 0x01),
 * output(i) = HMAC(temp_key, output(i-1) || byte(i)); 2 or 3 outputs of 32 bytes, as
 * subarrays of one fresh buffer. `inputKeyMaterial` is empty, 32 bytes (a DH result or a PSK).
 */
export function noiseHkdf(
  chainingKey: Uint8Array,
  inputKeyMaterial: Uint8Array,
  outputs: 2 | 3,
): Uint8Array<ArrayBuffer>[] {
  if (inputKeyMaterial.length > SMALL_HASH_MAX) {
    throw new RangeError(`noiseHkdf() takes at most ${SMALL_HASH_MAX} bytes of key material`);
  }
  const tempKey = new Uint8Array(32);
  const all = new Uint8Array(32 * outputs);
  try {
    hmacKey(chainingKey);
    hmacInto(inputKeyMaterial, tempKey);
    hmacKey(tempKey);
    let input = chained.subarray(32);
    for (let i = 0; i < outputs; i++) {
      input[input.length - 1] = i + 1;
      const out = all.subarray(i * 32, i * 32 + 32);
      hmacInto(input, out);
      chained.set(out);
      input = chained;
    }
  } finally {
    wipeKeyed();
    tempKey.fill(0);
  }
  return Array.from({ length: outputs }, (_, i) => all.subarray(i * 32, i * 32 + 32));
}
