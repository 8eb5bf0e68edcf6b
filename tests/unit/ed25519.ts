/**
 * Unit tests for lib/crypto/ed25519.ts: signatures are only ever checked against strong keys.
 * A small-order public key (the all-zero key, the identity point, the points of order 2, 4 and
 * 8) "verifies" a fixed signature for a large share of all messages, so whoever publishes one
 * could pass any proof; non-canonical encodings give one key two spellings.
 */
import assert from "node:assert/strict";
import { isStrongEd25519Key, verifySignature } from "../../lib/crypto/ed25519.ts";
import { Identity } from "../../lib/peer/identity.ts";
import { fromBase64Url, toBase64Url } from "../../lib/util/base64.ts";

function hex(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g)!.map((b) => parseInt(b, 16)));
}

/** The encodings of the eight small-order points, and non-canonical spellings of some. */
const WEAK_KEYS: Record<string, Uint8Array> = {
  "all zero (order 4)": new Uint8Array(32),
  "0 with the sign bit (order 4, non-canonical x=0)": hex("00".repeat(31) + "80"),
  "identity (order 1)": hex("01" + "00".repeat(31)),
  "identity with the sign bit (non-canonical)": hex("01" + "00".repeat(30) + "80"),
  "y = -1 (order 2)": hex("ec" + "ff".repeat(30) + "7f"),
  "order 8, a": hex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
  "order 8, b": hex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
  "order 8, c": hex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
  "order 8, d": hex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
  "y = p (non-canonical 0)": hex("ed" + "ff".repeat(30) + "7f"),
  "y = p + 1 (non-canonical identity)": hex("ee" + "ff".repeat(30) + "7f"),
  "y = 2^255 - 1 (non-canonical)": hex("ff".repeat(31) + "7f"),
  "too short": new Uint8Array(31),
};

Deno.test("verifySignature() refuses the all-zero key with the all-zero signature (a small-order key that verifies a quarter of all messages)", async () => {
  const zeroKey = toBase64Url(new Uint8Array(32));
  const zeroSig = toBase64Url(new Uint8Array(64));
  let verified = 0;
  for (let i = 0; i < 200; i++) {
    const message = crypto.getRandomValues(new Uint8Array(32));
    if (await verifySignature(zeroKey, zeroSig, message)) verified++;
  }
  assert.equal(verified, 0, `the all-zero key verified ${verified} of 200 random messages`);
});

Deno.test("isStrongEd25519Key() refuses every small-order and non-canonical key", () => {
  for (const [name, key] of Object.entries(WEAK_KEYS)) {
    assert.equal(isStrongEd25519Key(key), false, name);
  }
});

Deno.test("isStrongEd25519Key() accepts real keys, and refuses bytes that are not a point", async () => {
  for (let i = 0; i < 20; i++) {
    const { identity } = await Identity.generate();
    assert.equal(isStrongEd25519Key(fromBase64Url(identity.publicKey)), true);
  }
  // y = 2 is not on the curve (no x satisfies the equation).
  assert.equal(isStrongEd25519Key(hex("02" + "00".repeat(31))), false);
});
