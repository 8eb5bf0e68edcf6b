/**
 * Tests for lib/crypto/chacha_small.ts: the short-message ChaCha20-Poly1305 must give RFC 8439's
 * example and exactly the bytes node:crypto gives (seal and open, with and without associated data, every length it
 * takes), refuse any changed byte, and its Poly1305 must match RFC 8439's vector and a BigInt
 * reference where the accumulator's final reduction matters (h ≥ 2^130 − 5).
 */
import assert from "node:assert/strict";
import { createCipheriv } from "node:crypto";
import { openSmall, poly1305, sealSmall, SMALL_MAX } from "../../lib/crypto/chacha_small.ts";
import { CryptoError } from "../../lib/crypto/errors.ts";

const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));

/** node:crypto's ChaCha20-Poly1305: ciphertext, then the tag. */
function reference(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, plain: Uint8Array) {
  const cipher = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
  if (ad.length > 0) cipher.setAAD(ad, { plaintextLength: plain.length });
  const body = cipher.update(plain);
  const last = cipher.final();
  const out = new Uint8Array(body.length + last.length + 16);
  out.set(body);
  out.set(last, body.length);
  out.set(cipher.getAuthTag(), body.length + last.length);
  return out;
}

/** Poly1305 by its definition (RFC 8439 §2.5.1), in BigInt. */
function referencePoly(key: Uint8Array, message: Uint8Array): Uint8Array {
  const le = (bytes: Uint8Array) => bytes.reduceRight((n, b) => n * 256n + BigInt(b), 0n);
  const p = (1n << 130n) - 5n;
  const r = le(key.subarray(0, 16)) & 0x0ffffffc0ffffffc0ffffffc0fffffffn;
  const s = le(key.subarray(16, 32));
  let acc = 0n;
  for (let at = 0; at < message.length; at += 16) {
    const chunk = message.subarray(at, at + 16);
    acc = (acc + le(chunk) + (1n << BigInt(8 * chunk.length))) * r % p;
  }
  let out = (acc + s) % (1n << 128n);
  const tag = new Uint8Array(16);
  for (let i = 0; i < 16; i++, out >>= 8n) tag[i] = Number(out & 0xffn);
  return tag;
}

function random(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

Deno.test("sealSmall() and openSmall() give RFC 8439's AEAD example (§2.8.2) byte for byte", () => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i);
  const nonce = hex("070000004041424344454647");
  const ad = hex("50515253c0c1c2c3c4c5c6c7");
  const plain = new TextEncoder().encode(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the " +
      "future, sunscreen would be it.",
  );
  const sealed = hex(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69" +
      "da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675" +
      "945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116" + "1ae10b594f09e26a7e902ecbd0600691",
  );
  const out = new Uint8Array(plain.length + 16);
  sealSmall(key, nonce, ad, plain, out, 0);
  assert.deepEqual(out, sealed);
  assert.deepEqual(openSmall(key, nonce, ad, sealed), plain);
});

Deno.test("poly1305() gives RFC 8439's tag for its §2.5.2 example", () => {
  const key = hex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b");
  const message = new TextEncoder().encode("Cryptographic Forum Research Group");
  assert.deepEqual(poly1305(key, message), hex("a8061dc1305136c6c22b8baf0c0127a9"));
});

Deno.test("poly1305() reduces an accumulator at or above 2^130 - 5 as the definition does", () => {
  // r = 1 and blocks of all ones: h = 2 · (2^129 − 1) = 2^130 − 2 ≥ p after two blocks.
  const rOne = new Uint8Array(32);
  rOne[0] = 1;
  const cases: [Uint8Array, Uint8Array][] = [
    [rOne, new Uint8Array(32).fill(0xff)],
    [rOne, new Uint8Array(48).fill(0xff)],
    [rOne.map((b, i) => i >= 16 ? 0xff : b), new Uint8Array(32).fill(0xff)],
    [new Uint8Array(32).fill(0xff), new Uint8Array(64).fill(0xff)],
    [new Uint8Array(32).fill(0xff), new Uint8Array(17).fill(0xff)],
    [new Uint8Array(32), new Uint8Array(16)],
  ];
  for (let i = 0; i < 300; i++) cases.push([random(32), random(i % 70)]);
  for (const [key, message] of cases) {
    assert.deepEqual(poly1305(key, message), referencePoly(key, message));
  }
});

Deno.test("sealSmall() and openSmall() give node:crypto's bytes at every length they take", () => {
  for (let length = 0; length <= SMALL_MAX; length++) {
    const key = random(32);
    const nonce = random(12);
    const ad = length % 3 === 0 ? random(length % 41) : new Uint8Array(0);
    const plain = length % 5 === 0 ? new Uint8Array(length).fill(0xff) : random(length);
    const want = reference(key, nonce, ad, plain);
    const out = new Uint8Array(length + 16 + 5);
    sealSmall(key, nonce, ad, plain, out, 5);
    assert.deepEqual(out.subarray(5), want, `seal of ${length} bytes`);
    assert.deepEqual(openSmall(key, nonce, ad, want), plain, `open of ${length} bytes`);
  }
});

Deno.test("sealSmall() and openSmall() give node:crypto's bytes for long messages too (before node:crypto is loaded)", () => {
  for (const length of [SMALL_MAX + 1, 1000, 4096, 16_383, 65_519]) {
    const key = random(32);
    const nonce = random(12);
    const ad = length % 2 === 0 ? random(29) : new Uint8Array(0);
    const plain = random(length);
    const want = reference(key, nonce, ad, plain);
    const out = new Uint8Array(length + 16);
    sealSmall(key, nonce, ad, plain, out, 0);
    assert.deepEqual(out, want, `seal of ${length} bytes`);
    assert.deepEqual(openSmall(key, nonce, ad, want), plain, `open of ${length} bytes`);
  }
});

Deno.test("openSmall() refuses a changed byte anywhere, another nonce or other data", () => {
  const key = random(32);
  const nonce = random(12);
  const ad = random(7);
  const sealed = reference(key, nonce, ad, random(100));
  const refused = (k: Uint8Array, n: Uint8Array, a: Uint8Array, s: Uint8Array) =>
    assert.throws(() => openSmall(k, n, a, s), (e) => e instanceof CryptoError);
  for (let at = 0; at < sealed.length; at++) {
    const changed = sealed.slice();
    changed[at]! ^= 1 << (at % 8);
    refused(key, nonce, ad, changed);
  }
  refused(key, nonce.map((b, i) => i === 11 ? b ^ 1 : b), ad, sealed);
  refused(key, nonce, ad.subarray(1), sealed);
  refused(key.map((b, i) => i === 0 ? b ^ 0x80 : b), nonce, ad, sealed);
  refused(key, nonce, ad, sealed.subarray(0, sealed.length - 1));
});
