/**
 * Tests for lib/crypto/sha256_small.ts: SHA-256, HMAC-SHA256 and Noise's HKDF in plain
 * TypeScript must give FIPS 180-4's and RFC 4231's examples and exactly node:crypto's bytes, at
 * every input length up to the limit and past it (where node:crypto takes over), however the
 * input is split into parts. The Noise vectors (tests/unit/noise.ts) run through them as well.
 */
import assert from "node:assert/strict";
import { createHash, createHmac, hkdfSync, randomBytes } from "node:crypto";
import {
  hkdfSha256,
  hmacSha256,
  noiseHkdf,
  sha256,
  sha256Here,
  SMALL_HASH_MAX,
} from "../../lib/crypto/sha256_small.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const text = (s: string) => new TextEncoder().encode(s);

Deno.test("sha256() gives FIPS 180-4's examples", () => {
  assert.equal(
    hex(sha256(text("abc"))),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(
    hex(sha256(text("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
  assert.equal(
    hex(sha256()),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
});

Deno.test("sha256() gives node:crypto's digest at every length, split anywhere", () => {
  for (let n = 0; n <= SMALL_HASH_MAX + 130; n++) {
    const data = new Uint8Array(randomBytes(n));
    const expected = createHash("sha256").update(data).digest("hex");
    const cut = (n * 7) % (n + 1);
    assert.equal(hex(sha256(data)), expected, `length ${n}`);
    assert.equal(hex(sha256(data.subarray(0, cut), data.subarray(cut))), expected, `length ${n}`);
  }
});

Deno.test("sha256Here() gives node:crypto's digest for long inputs too (before node:crypto is loaded)", () => {
  for (const n of [SMALL_HASH_MAX + 1, 4095, 65_535, 65_536, 1_000_003]) {
    const data = new Uint8Array(n);
    for (let at = 0; at < n; at += 65_536) {
      crypto.getRandomValues(data.subarray(at, Math.min(n, at + 65_536)));
    }
    const expected = createHash("sha256").update(data).digest("hex");
    assert.equal(hex(sha256Here(data)), expected, `length ${n}`);
    assert.equal(hex(sha256Here(data.subarray(0, 77), data.subarray(77))), expected, `length ${n}`);
  }
});

Deno.test("hkdfSha256() gives node:crypto's HKDF-SHA256 without a salt", () => {
  for (const [ikm, info] of [[32, 0], [32, 1], [32, 150], [0, 10], [64, 1024], [17, 300]]) {
    const key = new Uint8Array(randomBytes(ikm!));
    const statement = new Uint8Array(randomBytes(info!));
    const expected = new Uint8Array(hkdfSync("sha256", key, new Uint8Array(0), statement, 32));
    assert.deepEqual(hkdfSha256(key, statement), expected, `${ikm} bytes, info ${info}`);
  }
});

Deno.test("hmacSha256() gives RFC 4231's examples and node:crypto's tags", () => {
  // RFC 4231 test cases 1 and 2.
  assert.equal(
    hex(hmacSha256(new Uint8Array(20).fill(0x0b), text("Hi There"))),
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  );
  assert.equal(
    hex(hmacSha256(text("Jefe"), text("what do ya want for nothing?"))),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  );
  for (let n = 0; n <= 300; n++) {
    const key = new Uint8Array(randomBytes(n % 65));
    const message = new Uint8Array(randomBytes(n));
    assert.equal(
      hex(hmacSha256(key, message)),
      createHmac("sha256", key).update(message).digest("hex"),
      `key ${key.length}, message ${n}`,
    );
  }
  assert.throws(() => hmacSha256(new Uint8Array(65), new Uint8Array(1)), RangeError);
});

Deno.test("noiseHkdf() gives node:crypto's HKDF and the literal HMAC chain", () => {
  for (const ikmLength of [0, 32]) {
    for (const outputs of [2, 3] as const) {
      for (let i = 0; i < 50; i++) {
        const ck = new Uint8Array(randomBytes(32));
        const ikm = new Uint8Array(randomBytes(ikmLength));
        const got = noiseHkdf(ck, ikm, outputs);
        assert.equal(got.length, outputs);
        const bits = hkdfSync("sha256", ikm, ck, new Uint8Array(0), 32 * outputs);
        assert.equal(got.map(hex).join(""), hex(new Uint8Array(bits)));
        // Noise §4.3, by hand.
        const temp = createHmac("sha256", ck).update(ikm).digest();
        let previous = new Uint8Array(0);
        for (let j = 0; j < outputs; j++) {
          const out = createHmac("sha256", temp).update(previous).update(new Uint8Array([j + 1]))
            .digest();
          assert.equal(hex(got[j]!), hex(out));
          previous = new Uint8Array(out);
        }
      }
    }
  }
});
