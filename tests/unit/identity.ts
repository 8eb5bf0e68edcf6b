/**
 * Unit tests for lib/peer/identity.ts: Ed25519 identity keys (generate, save, load), signing
 * and checking signatures, base64url, and the handshake transcript both peers sign.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  fromBase64Url,
  handshakeTranscript,
  Identity,
  randomToken,
  toBase64Url,
  verifySignature,
} from "../../lib/peer/identity.ts";
import { Nonce, PublicKey, Signature } from "../../lib/protocol/messages.ts";

/** A temporary directory, removed with everything in it on dispose. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "confab-identity-test-" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}

const DATA = new TextEncoder().encode("confab test data");

const TRANSCRIPT = {
  signer: "initiator",
  initiator: "alice",
  responder: "bob",
  initiatorNonce: "n".repeat(43),
  responderNonce: "m".repeat(43),
  /** The Noise handshake hash of the link (32 bytes), base64url. */
  channel: "c".repeat(43),
} as const;

// ---- base64url -----------------------------------------------------------------------------

Deno.test("toBase64Url() uses - and _ and drops padding", () => {
  assert.equal(toBase64Url(Uint8Array.of(0xfb, 0xff, 0xbf)), "-_-_");
  assert.equal(toBase64Url(Uint8Array.of(0x66)), "Zg");
  assert.equal(toBase64Url(new Uint8Array(0)), "");
});

Deno.test("fromBase64Url() inverts toBase64Url() for every length and byte value", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  for (let n = 0; n <= 66; n++) {
    const bytes = all.subarray(256 - n);
    const text = toBase64Url(bytes);
    assert.match(text, /^[A-Za-z0-9_-]*$/);
    assert.deepEqual(fromBase64Url(text), new Uint8Array(bytes));
  }
  assert.deepEqual(fromBase64Url(toBase64Url(all)), all);
});

Deno.test("randomToken() is 32 random bytes in base64url, a valid nonce", () => {
  const a = randomToken();
  const b = randomToken();
  assert.notEqual(a, b);
  assert.equal(fromBase64Url(a).length, 32);
  assert.ok(Nonce.safeParse(a).success, a);
});

// ---- keys ----------------------------------------------------------------------------------

Deno.test("Identity.generate() makes a distinct 32-byte public key each time", async () => {
  const one = await Identity.generate();
  const two = await Identity.generate();
  assert.ok(PublicKey.safeParse(one.identity.publicKey).success, one.identity.publicKey);
  assert.equal(fromBase64Url(one.identity.publicKey).length, 32);
  assert.notEqual(one.identity.publicKey, two.identity.publicKey);
  assert.ok(one.pkcs8.length > 32);
});

Deno.test("Identity.sign() makes a signature verifySignature() accepts", async () => {
  const { identity } = await Identity.generate();
  const signature = await identity.sign(DATA);
  assert.ok(Signature.safeParse(signature).success, signature);
  assert.equal(await verifySignature(identity.publicKey, signature, DATA), true);
});

Deno.test("Identity.save() writes an owner-only file that load() reads back", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "keys", "alice", "identity.json");
  const { identity, pkcs8 } = await Identity.generate();
  await Identity.save(path, identity.publicKey, pkcs8);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(join(dir.path, "keys"))).mode! & 0o777, 0o700);
  // No temporary file left behind.
  assert.deepEqual(
    [...Deno.readDirSync(join(dir.path, "keys", "alice"))].map((e) => e.name),
    ["identity.json"],
  );

  const loaded = await Identity.load(path);
  assert.ok(loaded);
  assert.equal(loaded.publicKey, identity.publicKey);
  // The loaded private key signs for the same public key.
  assert.equal(await verifySignature(identity.publicKey, await loaded.sign(DATA), DATA), true);
});

Deno.test("Identity.save() over an existing key replaces it", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "identity.json");
  const first = await Identity.generate();
  const second = await Identity.generate();
  await Identity.save(path, first.identity.publicKey, first.pkcs8);
  await Identity.save(path, second.identity.publicKey, second.pkcs8);
  assert.equal((await Identity.load(path))?.publicKey, second.identity.publicKey);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
});

Deno.test("Identity.load() returns undefined when there is no key file", async () => {
  await using dir = await tempDir();
  assert.equal(await Identity.load(join(dir.path, "missing.json")), undefined);
});

Deno.test("Identity.load() throws on a corrupt key file", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "identity.json");
  await Deno.writeTextFile(path, "{not json");
  await assert.rejects(Identity.load(path));
});

// ---- verifying -----------------------------------------------------------------------------

Deno.test("verifySignature() is false for another signer's key", async () => {
  const alice = (await Identity.generate()).identity;
  const mallory = (await Identity.generate()).identity;
  const signature = await mallory.sign(DATA);
  assert.equal(await verifySignature(alice.publicKey, signature, DATA), false);
  assert.equal(await verifySignature(mallory.publicKey, signature, DATA), true);
});

Deno.test("verifySignature() is false for tampered data or a tampered signature", async () => {
  const { identity } = await Identity.generate();
  const signature = await identity.sign(DATA);
  const tampered = DATA.slice();
  tampered[0]! ^= 1;
  assert.equal(await verifySignature(identity.publicKey, signature, tampered), false);
  const sigBytes = fromBase64Url(signature);
  sigBytes[10]! ^= 0x80;
  assert.equal(await verifySignature(identity.publicKey, toBase64Url(sigBytes), DATA), false);
});

Deno.test("verifySignature() is false, not a throw, for garbage keys and signatures", async () => {
  const { identity } = await Identity.generate();
  const signature = await identity.sign(DATA);
  const cases: [string, string][] = [
    ["!!!not base64!!!", signature],
    [identity.publicKey, "%%%"],
    ["", signature],
    [identity.publicKey, ""],
    ["AAAA", signature], // decodes, but is not 32 bytes
    [identity.publicKey, "AAAA"], // decodes, but is not 64 bytes
  ];
  for (const [key, sig] of cases) {
    assert.equal(await verifySignature(key, sig, DATA), false, `${key} / ${sig}`);
  }
});

// ---- the handshake transcript ----------------------------------------------------------------

Deno.test("handshakeTranscript() holds the version tag, channel, role, names and nonces", () => {
  const text = new TextDecoder().decode(handshakeTranscript(TRANSCRIPT));
  assert.equal(
    text,
    [
      "confab-peer-auth-v2",
      "c".repeat(43),
      "initiator",
      "alice",
      "bob",
      "n".repeat(43),
      "m".repeat(43),
    ].join("\n"),
  );
});

Deno.test("handshakeTranscript() differs by channel, by signer, by either name and by either nonce", () => {
  const base = handshakeTranscript(TRANSCRIPT);
  const variants = [
    { ...TRANSCRIPT, signer: "responder" as const },
    { ...TRANSCRIPT, initiator: "carol" },
    { ...TRANSCRIPT, responder: "carol" },
    { ...TRANSCRIPT, initiator: "bob", responder: "alice" },
    { ...TRANSCRIPT, initiatorNonce: "x".repeat(43) },
    { ...TRANSCRIPT, responderNonce: "x".repeat(43) },
    { ...TRANSCRIPT, initiatorNonce: TRANSCRIPT.responderNonce, responderNonce: "n".repeat(43) },
    { ...TRANSCRIPT, channel: "d".repeat(43) },
    { ...TRANSCRIPT, channel: toBase64Url(crypto.getRandomValues(new Uint8Array(32))) },
  ];
  const seen = new Set([new TextDecoder().decode(base)]);
  for (const v of variants) {
    const text = new TextDecoder().decode(handshakeTranscript(v));
    assert.ok(!seen.has(text), JSON.stringify(v));
    seen.add(text);
  }
});

Deno.test("handshakeTranscript() ignores the case of names but not of nonces or the channel", () => {
  const base = handshakeTranscript(TRANSCRIPT);
  assert.deepEqual(
    handshakeTranscript({ ...TRANSCRIPT, initiator: "ALICE", responder: "Bob" }),
    base,
  );
  assert.notDeepEqual(
    handshakeTranscript({ ...TRANSCRIPT, initiatorNonce: "N".repeat(43) }),
    base,
  );
  assert.notDeepEqual(handshakeTranscript({ ...TRANSCRIPT, channel: "C".repeat(43) }), base);
});

Deno.test("a transcript signature does not verify for the other role", async () => {
  const { identity } = await Identity.generate();
  const signature = await identity.sign(handshakeTranscript(TRANSCRIPT));
  assert.equal(
    await verifySignature(identity.publicKey, signature, handshakeTranscript(TRANSCRIPT)),
    true,
  );
  assert.equal(
    await verifySignature(
      identity.publicKey,
      signature,
      handshakeTranscript({ ...TRANSCRIPT, signer: "responder" }),
    ),
    false,
  );
});

Deno.test("a transcript signature does not verify for another channel", async () => {
  const { identity } = await Identity.generate();
  const signature = await identity.sign(handshakeTranscript(TRANSCRIPT));
  assert.equal(
    await verifySignature(
      identity.publicKey,
      signature,
      handshakeTranscript({ ...TRANSCRIPT, channel: "d".repeat(43) }),
    ),
    false,
  );
});
