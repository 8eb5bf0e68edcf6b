/**
 * Tests for lib/crypto/noise.ts: every ChaChaPoly and AESGCM cacophony vector of the implemented
 * patterns,
 * byte for byte, then the failure modes a network can produce (tampering, replay, reordering,
 * wrong keys) and the guarantee that a failed call leaves the state untouched.
 */
import assert from "node:assert/strict";
import { createCipheriv } from "node:crypto";
import {
  type CipherName,
  CipherState,
  CryptoError,
  type CryptoErrorCode,
  DH_LEN,
  exportPrivateKey,
  generateKeyPair,
  HANDSHAKE_PATTERNS,
  type HandshakePatternName,
  HandshakeState,
  hkdf,
  type KeyPair,
  keyPairFromPrivateKey,
  MAX_MESSAGE_LEN,
  MAX_PLAINTEXT_LEN,
  type NoiseSession,
  protocolName,
  SymmetricState,
} from "../../lib/crypto/noise.ts";
import { openWithNonce, sealWithNonce } from "../../lib/crypto/noise_cipher.ts";
import { loadNodeCrypto } from "../../lib/crypto/node_crypto.ts";
import { dh } from "../../lib/crypto/x25519.ts";

// AESGCM and the bulk cipher are node:crypto's: what uses them loads it first (node_crypto.ts).
await loadNodeCrypto();

const enc = new TextEncoder();

function hex(text: string): Uint8Array<ArrayBuffer> {
  assert.match(text, /^(?:[0-9a-f]{2})*$/i, "fixture hex");
  return Uint8Array.from(text.match(/../g) ?? [], (byte) => parseInt(byte, 16));
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Asserts that a promise rejects with a {@link CryptoError} of the given code. */
async function rejectsWith(promise: Promise<unknown>, code: CryptoErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof CryptoError, `expected a CryptoError, got ${error}`);
    assert.equal(error.name, "CryptoError");
    assert.equal(error.code, code);
    return true;
  });
}

function flipBit(bytes: Uint8Array, bit: number): Uint8Array {
  const copy = bytes.slice();
  copy[bit >> 3]! ^= 1 << (bit & 7);
  return copy;
}

// ---------------------------------------------------------------------------------------------
// Test vectors

interface Vector {
  readonly protocolName: string;
  readonly initPrologue: string;
  readonly respPrologue: string;
  readonly initStatic?: string;
  readonly initEphemeral: string;
  readonly initRemoteStatic?: string;
  readonly respStatic?: string;
  readonly respEphemeral: string;
  readonly respRemoteStatic?: string;
  readonly handshakeHash: string;
  readonly messages: readonly { readonly payload: string; readonly ciphertext: string }[];
}

/** Reads the cacophony fixture, checking the shape of every field this test uses. */
async function loadVectors(): Promise<Vector[]> {
  const path = new URL("../fixtures/noise-vectors.json", import.meta.url);
  const data: unknown = JSON.parse(await Deno.readTextFile(path));
  assert.ok(typeof data === "object" && data !== null && "vectors" in data);
  assert.ok(Array.isArray(data.vectors));
  return data.vectors.map((raw: unknown): Vector => {
    assert.ok(typeof raw === "object" && raw !== null);
    const field = (name: string): string | undefined => {
      const value: unknown = (raw as Record<string, unknown>)[name];
      if (value === undefined) return undefined;
      assert.equal(typeof value, "string", name);
      return value as string;
    };
    const required = (name: string): string => {
      const value = field(name);
      assert.ok(value !== undefined, `vector lacks ${name}`);
      return value;
    };
    const messages: unknown = (raw as Record<string, unknown>).messages;
    assert.ok(Array.isArray(messages));
    return {
      protocolName: required("protocol_name"),
      initPrologue: required("init_prologue"),
      respPrologue: required("resp_prologue"),
      initStatic: field("init_static"),
      initEphemeral: required("init_ephemeral"),
      initRemoteStatic: field("init_remote_static"),
      respStatic: field("resp_static"),
      respEphemeral: required("resp_ephemeral"),
      respRemoteStatic: field("resp_remote_static"),
      handshakeHash: required("handshake_hash"),
      messages: messages.map((m: unknown) => {
        assert.ok(typeof m === "object" && m !== null && "payload" in m && "ciphertext" in m);
        assert.ok(typeof m.payload === "string" && typeof m.ciphertext === "string");
        return { payload: m.payload, ciphertext: m.ciphertext };
      }),
    };
  });
}

const REQUIRED_PATTERNS: readonly HandshakePatternName[] = [
  "XX",
  "IK",
  "NN",
  "NK",
  "XK",
  "KK",
  "IX",
];

function isPatternName(name: string): name is HandshakePatternName {
  return Object.hasOwn(HANDSHAKE_PATTERNS, name);
}

async function optionalKeyPair(privateKey: string | undefined): Promise<KeyPair | undefined> {
  return privateKey === undefined ? undefined : await keyPairFromPrivateKey(hex(privateKey));
}

async function runVector(
  pattern: HandshakePatternName,
  cipher: CipherName,
  vector: Vector,
): Promise<void> {
  const initiator = await HandshakeState.initialize({
    pattern,
    cipher,
    initiator: true,
    prologue: hex(vector.initPrologue),
    staticKeyPair: await optionalKeyPair(vector.initStatic),
    remoteStaticKey: vector.initRemoteStatic === undefined
      ? undefined
      : hex(vector.initRemoteStatic),
    ephemeralKeyPair: await optionalKeyPair(vector.initEphemeral),
  });
  const responder = await HandshakeState.initialize({
    pattern,
    cipher,
    initiator: false,
    prologue: hex(vector.respPrologue),
    staticKeyPair: await optionalKeyPair(vector.respStatic),
    remoteStaticKey: vector.respRemoteStatic === undefined
      ? undefined
      : hex(vector.respRemoteStatic),
    ephemeralKeyPair: await optionalKeyPair(vector.respEphemeral),
  });

  const handshakeLength = HANDSHAKE_PATTERNS[pattern].messages.length;
  assert.ok(vector.messages.length > handshakeLength, "vector has transport messages");
  let sessions: { initiator: NoiseSession; responder: NoiseSession } | undefined;
  for (const [i, message] of vector.messages.entries()) {
    const fromInitiator = i % 2 === 0;
    const payload = hex(message.payload);
    let ciphertext: Uint8Array;
    let received: Uint8Array;
    if (i < handshakeLength) {
      const [writer, reader] = fromInitiator ? [initiator, responder] : [responder, initiator];
      ciphertext = await writer.writeMessage(payload);
      assert.equal(toHex(ciphertext), message.ciphertext, `handshake message ${i} ciphertext`);
      received = await reader.readMessage(ciphertext);
    } else {
      sessions ??= { initiator: initiator.session(), responder: responder.session() };
      const [writer, reader] = fromInitiator
        ? [sessions.initiator, sessions.responder]
        : [sessions.responder, sessions.initiator];
      ciphertext = await writer.send.encrypt(payload);
      assert.equal(toHex(ciphertext), message.ciphertext, `transport message ${i} ciphertext`);
      received = await reader.receive.decrypt(ciphertext);
    }
    assert.equal(toHex(received), message.payload, `message ${i} payload`);
  }
  assert.ok(sessions !== undefined);
  assert.equal(toHex(sessions.initiator.handshakeHash), vector.handshakeHash);
  assert.equal(toHex(sessions.responder.handshakeHash), vector.handshakeHash);
  assert.equal(toHex(initiator.handshakeHash), vector.handshakeHash);
}

for (const cipher of ["ChaChaPoly", "AESGCM"] as const) {
  Deno.test(`HandshakeState reproduces every ${cipher} cacophony vector of the supported patterns`, async (t) => {
    const runs = new Map<HandshakePatternName, number>();
    for (const vector of await loadVectors()) {
      // PSK patterns (e.g. "XXpsk3") and other suites fail this match and are skipped.
      const match = /^Noise_([A-Z]+)_25519_([A-Za-z]+)_SHA256$/.exec(vector.protocolName);
      const pattern = match?.[1];
      if (match?.[2] !== cipher || pattern === undefined || !isPatternName(pattern)) continue;
      assert.equal(protocolName(pattern, cipher), vector.protocolName);
      await t.step(vector.protocolName, () => runVector(pattern, cipher, vector));
      runs.set(pattern, (runs.get(pattern) ?? 0) + 1);
    }
    for (const pattern of REQUIRED_PATTERNS) {
      assert.ok((runs.get(pattern) ?? 0) > 0, `no ${cipher} vector ran for ${pattern}`);
    }
  });
}

/** Both sides of an XX handshake with fresh static keys, not yet started. */
async function xxSides(responderCipher?: CipherName) {
  const [a, b] = [await generateKeyPair(), await generateKeyPair()];
  const initiator = await HandshakeState.initialize({
    pattern: "XX",
    initiator: true,
    staticKeyPair: a,
  });
  const responder = await HandshakeState.initialize({
    pattern: "XX",
    initiator: false,
    staticKeyPair: b,
    cipher: responderCipher,
  });
  return { initiator, responder };
}

Deno.test("a handshake between a ChaChaPoly side and an AESGCM side fails at the first encrypted message", async () => {
  const { initiator, responder } = await xxSides("AESGCM");
  await responder.readMessage(await initiator.writeMessage());
  await rejectsWith(initiator.readMessage(await responder.writeMessage()), "DECRYPT_FAILED");
  await assert.rejects(
    HandshakeState.initialize({
      pattern: "NN",
      initiator: true,
      cipher: "AES128" as CipherName,
    }),
    /unknown Noise cipher "AES128"/,
  );
});

// ---------------------------------------------------------------------------------------------
// Building blocks

Deno.test("keyPairFromPrivateKey() derives the RFC 7748 public key and exports the private key", async () => {
  // RFC 7748 §6.1, Alice.
  const privateKey = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const pair = await keyPairFromPrivateKey(privateKey);
  assert.equal(
    toHex(pair.publicKey),
    "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
  );
  assert.deepEqual(await exportPrivateKey(pair), privateKey);
  await assert.rejects(keyPairFromPrivateKey(new Uint8Array(31)), RangeError);
});

Deno.test("generateKeyPair() makes distinct 32-byte keys that survive an export round trip", async () => {
  const [a, b] = [await generateKeyPair(), await generateKeyPair()];
  assert.equal(a.publicKey.length, DH_LEN);
  assert.notDeepEqual(a.publicKey, b.publicKey);
  const reloaded = await keyPairFromPrivateKey(await exportPrivateKey(a));
  assert.deepEqual(reloaded.publicKey, a.publicKey);
});

Deno.test("dh() gives RFC 7748's shared secret with a WebCrypto key and a node:crypto key alike, and both refuse a low-order point", async () => {
  // RFC 7748 §6.1: Alice's private key, Bob's public key, their shared secret.
  const alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const bob = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  const shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
  // node:crypto is loaded in this module, so keyPairFromPrivateKey() makes a node:crypto key; a
  // client that has not loaded it makes a WebCrypto key, as this one is made.
  const nodeKey = (await keyPairFromPrivateKey(alice)).privateKey;
  assert.ok(!(nodeKey instanceof CryptoKey));
  const pkcs8 = new Uint8Array([...hex("302e020100300506032b656e04220420"), ...alice]);
  const webKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "X25519" }, true, [
    "deriveBits",
  ]);
  for (const key of [nodeKey, webKey]) {
    assert.equal(toHex(await dh(key, bob)), shared);
    for (const bad of [new Uint8Array(32), Uint8Array.of(1, ...new Uint8Array(31))]) {
      await assert.rejects(
        dh(key, bad),
        (e: unknown) => e instanceof CryptoError && e.code === "INVALID_KEY",
      );
    }
    await assert.rejects(dh(key, new Uint8Array(31)), CryptoError);
  }
});

/** HMAC-SHA256, for the literal HKDF definition below. */
async function hmacSha256(key: Uint8Array<ArrayBuffer>, data: Uint8Array<ArrayBuffer>) {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, data));
}

Deno.test("hkdf() equals the Noise spec's HMAC chain (§4.3), for empty and 32-byte input", async () => {
  // hkdf() uses WebCrypto's HKDF; this is the spec's definition written out, as an oracle.
  const ck = crypto.getRandomValues(new Uint8Array(32));
  for (const ikm of [new Uint8Array(0), crypto.getRandomValues(new Uint8Array(32))]) {
    const tempKey = await hmacSha256(ck, ikm);
    const output1 = await hmacSha256(tempKey, Uint8Array.of(1));
    const output2 = await hmacSha256(tempKey, Uint8Array.of(...output1, 2));
    const output3 = await hmacSha256(tempKey, Uint8Array.of(...output2, 3));
    assert.deepEqual((await hkdf(ck, ikm, 2)).map(toHex), [output1, output2].map(toHex));
    assert.deepEqual(
      (await hkdf(ck, ikm, 3)).map(toHex),
      [output1, output2, output3].map(toHex),
    );
  }
});

Deno.test("SymmetricState starts from the zero-padded protocol name, or its hash when longer", async () => {
  const short = await SymmetricState.initialize(protocolName("XX"));
  const padded = new Uint8Array(32);
  padded.set(enc.encode("Noise_XX_25519_ChaChaPoly_SHA256"));
  assert.deepEqual(short.handshakeHash, padded);
  const longName = "Noise_XXfallback+psk0_25519_AESGCM_SHA256";
  const long = await SymmetricState.initialize(longName);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode(longName)));
  assert.deepEqual(long.handshakeHash, digest);
  assert.equal(long.hasKey(), false);
  // Without a key, EncryptAndHash passes the plaintext through.
  assert.deepEqual(await long.encryptAndHash(enc.encode("hi")), enc.encode("hi"));
});

/** The node:crypto name of each cipher, for the oracles below. */
const NODE_NAME = { ChaChaPoly: "chacha20-poly1305", AESGCM: "aes-256-gcm" } as const;

/** An independent seal (node:crypto, written out here): ciphertext || tag. */
function oracleSeal(
  cipher: CipherName,
  key: Uint8Array,
  iv: Uint8Array,
  ad: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array {
  const c = createCipheriv(NODE_NAME[cipher] as "aes-256-gcm", key, iv, { authTagLength: 16 });
  c.setAAD(ad);
  return Uint8Array.from([...c.update(plaintext), ...c.final(), ...c.getAuthTag()]);
}

Deno.test("CipherState's nonce is 4 zero bytes || the 64-bit counter, little-endian for ChaChaPoly, big-endian for AESGCM", async () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const ad = enc.encode("ad");
  const plaintext = enc.encode("nonce layout");
  const ivs = { ChaChaPoly: "000000000807060504030201", AESGCM: "000000000102030405060708" };
  for (const name of ["ChaChaPoly", "AESGCM"] as const) {
    const cipher = new CipherState(key, name);
    assert.equal(cipher.cipher, name);
    cipher.setNonce(0x0102030405060708n);
    const ciphertext = await cipher.encryptWithAd(ad, plaintext);
    assert.equal(cipher.nonce, 0x0102030405060709n);
    assert.deepEqual(ciphertext, oracleSeal(name, key, hex(ivs[name]), ad, plaintext), name);
  }
  // AESGCM also against WebCrypto, a second implementation.
  const cipher = new CipherState(key, "AESGCM");
  cipher.setNonce(0x0102030405060708n);
  const aes = await crypto.subtle.importKey("raw", key, "AES-GCM", false, ["encrypt"]);
  const expected = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: hex("000000000102030405060708"), additionalData: ad },
    aes,
    plaintext,
  );
  assert.deepEqual(await cipher.encryptWithAd(ad, plaintext), new Uint8Array(expected));
});

Deno.test("ChaChaPoly seals the RFC 8439 §2.8.2 AEAD test vector", () => {
  // The 96-bit nonce of the RFC (07000000 || 4041424344454647) is Noise's layout for the
  // counter 0x4746454443424140 after the constant 0x00000007, which Noise always sets to zero;
  // so this checks the cipher itself, through the same node:crypto call CipherState makes.
  const key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
  const iv = hex("070000004041424344454647");
  const ad = hex("50515253c0c1c2c3c4c5c6c7");
  const plaintext = enc.encode(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the " +
      "future, sunscreen would be it.",
  );
  const sealed = oracleSeal("ChaChaPoly", key, iv, ad, plaintext);
  assert.equal(toHex(sealed.subarray(sealed.length - 16)), "1ae10b594f09e26a7e902ecbd0600691");
  assert.equal(toHex(sealed.subarray(0, 16)), "d31a8d34648e60db7b86afbc53ef7ec2");
});

Deno.test("CipherState refuses the nonce 2^64-1 in both directions", async () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const [sender, receiver] = [new CipherState(key), new CipherState(key)];
  const ad = new Uint8Array(0);
  sender.setNonce(2n ** 64n - 2n);
  receiver.setNonce(2n ** 64n - 2n);
  const last = await sender.encryptWithAd(ad, enc.encode("last"));
  assert.deepEqual(await receiver.decryptWithAd(ad, last), enc.encode("last"));
  await rejectsWith(sender.encryptWithAd(ad, enc.encode("one too many")), "NONCE_EXHAUSTED");
  await rejectsWith(receiver.decryptWithAd(ad, last), "NONCE_EXHAUSTED");
  assert.equal(sender.nonce, 2n ** 64n - 1n);
  assert.throws(() => sender.setNonce(2n ** 64n), RangeError);
});

Deno.test("CipherState.rekey() switches to the first 32 bytes of ENCRYPT(k, 2^64-1, '', zeros)", async () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const ivs = { ChaChaPoly: "00000000ffffffffffffffff", AESGCM: "00000000ffffffffffffffff" };
  for (const name of ["ChaChaPoly", "AESGCM"] as const) {
    const cipher = new CipherState(key, name);
    cipher.rekey();
    const ciphertext = await cipher.encryptWithAd(new Uint8Array(0), enc.encode("after rekey"));
    const derived = oracleSeal(name, key, hex(ivs[name]), new Uint8Array(0), new Uint8Array(32))
      .slice(0, 32);
    const expected = await new CipherState(derived, name).encryptWithAd(
      new Uint8Array(0),
      enc.encode("after rekey"),
    );
    assert.deepEqual(ciphertext, expected, name);
  }
});

// ---------------------------------------------------------------------------------------------
// Handshakes

interface Pair {
  readonly initiator: NoiseSession;
  readonly responder: NoiseSession;
  readonly initiatorStatic: KeyPair;
  readonly responderStatic: KeyPair;
}

/** Runs a full handshake of a pattern between two fresh parties, with a payload in each message. */
async function handshake(pattern: HandshakePatternName): Promise<Pair> {
  const shape = HANDSHAKE_PATTERNS[pattern];
  const initiatorStatic = await generateKeyPair();
  const responderStatic = await generateKeyPair();
  const prologue = enc.encode("confab/1");
  const psk = shape.messages.some((tokens) => (tokens as readonly string[]).includes("psk"))
    ? crypto.getRandomValues(new Uint8Array(32))
    : undefined;
  const initiator = await HandshakeState.initialize({
    pattern,
    initiator: true,
    prologue,
    psk,
    staticKeyPair: needsStatic(pattern, true) ? initiatorStatic : undefined,
    remoteStaticKey: shape.responderPreMessage.length > 0 ? responderStatic.publicKey : undefined,
  });
  const responder = await HandshakeState.initialize({
    pattern,
    initiator: false,
    prologue,
    psk,
    staticKeyPair: needsStatic(pattern, false) ? responderStatic : undefined,
    remoteStaticKey: shape.initiatorPreMessage.length > 0 ? initiatorStatic.publicKey : undefined,
  });
  for (let i = 0; i < shape.messages.length; i++) {
    const [writer, reader] = i % 2 === 0 ? [initiator, responder] : [responder, initiator];
    assert.equal(writer.nextStep, "write");
    assert.equal(reader.nextStep, "read");
    const payload = enc.encode(`payload ${i} of ${pattern}`);
    assert.deepEqual(await reader.readMessage(await writer.writeMessage(payload)), payload);
  }
  assert.equal(initiator.nextStep, "done");
  assert.equal(responder.nextStep, "done");
  return {
    initiator: initiator.session(),
    responder: responder.session(),
    initiatorStatic,
    responderStatic,
  };
}

/**
 * Whether a side's static key appears in the pattern (the test's own reading of §7). A one-way
 * pattern (§7.4: N, K, X) names only the sender's key; its recipient's key is always known in
 * advance.
 */
function needsStatic(pattern: HandshakePatternName, initiator: boolean): boolean {
  if (pattern.length === 1 && !initiator) return true;
  const first = pattern[initiator ? 0 : 1];
  return first === "K" || first === "X" || first === "I";
}

async function assertConnected(pair: Pair): Promise<void> {
  assert.deepEqual(pair.initiator.handshakeHash, pair.responder.handshakeHash);
  assert.equal(pair.initiator.handshakeHash.length, 32);
  for (let i = 0; i < 3; i++) {
    const ping = enc.encode(`ping ${i}`);
    const pong = enc.encode(`pong ${i}`);
    assert.deepEqual(
      await pair.responder.receive.decrypt(await pair.initiator.send.encrypt(ping)),
      ping,
    );
    assert.deepEqual(
      await pair.initiator.receive.decrypt(await pair.responder.send.encrypt(pong)),
      pong,
    );
  }
}

Deno.test("a random XX handshake agrees on keys and h, and each side learns the other's static key", async () => {
  const pair = await handshake("XX");
  await assertConnected(pair);
  assert.deepEqual(pair.initiator.remoteStaticKey, pair.responderStatic.publicKey);
  assert.deepEqual(pair.responder.remoteStaticKey, pair.initiatorStatic.publicKey);
  // Two handshakes never share a hash, even between the same keys (fresh ephemerals).
  const again = await handshake("XX");
  assert.notDeepEqual(again.initiator.handshakeHash, pair.initiator.handshakeHash);
});

for (const pattern of Object.keys(HANDSHAKE_PATTERNS).filter(isPatternName)) {
  Deno.test(`a random ${pattern} handshake connects both directions`, async () => {
    const pair = await handshake(pattern);
    await assertConnected(pair);
    if (needsStatic(pattern, false)) {
      assert.deepEqual(pair.initiator.remoteStaticKey, pair.responderStatic.publicKey);
    } else {
      assert.equal(pair.initiator.remoteStaticKey, undefined);
    }
  });
}

Deno.test("IK with the wrong responder static key fails at the responder", async () => {
  const responderStatic = await generateKeyPair();
  const impostor = await generateKeyPair();
  const initiator = await HandshakeState.initialize({
    pattern: "IK",
    initiator: true,
    staticKeyPair: await generateKeyPair(),
    remoteStaticKey: impostor.publicKey,
  });
  const responder = await HandshakeState.initialize({
    pattern: "IK",
    initiator: false,
    staticKeyPair: responderStatic,
  });
  const first = await initiator.writeMessage(enc.encode("secret"));
  await rejectsWith(responder.readMessage(first), "DECRYPT_FAILED");
  assert.equal(responder.nextStep, "read");
  assert.equal(responder.remoteStaticKey, undefined);
});

Deno.test("a prologue mismatch fails the first authenticated message", async () => {
  const responderStatic = await generateKeyPair();
  const initiator = await HandshakeState.initialize({
    pattern: "NK",
    initiator: true,
    prologue: enc.encode("v1"),
    remoteStaticKey: responderStatic.publicKey,
  });
  const responder = await HandshakeState.initialize({
    pattern: "NK",
    initiator: false,
    prologue: enc.encode("v2"),
    staticKeyPair: responderStatic,
  });
  await rejectsWith(responder.readMessage(await initiator.writeMessage()), "DECRYPT_FAILED");
});

Deno.test("a tampered handshake message fails and leaves the reader ready for the genuine one", async () => {
  const { initiator, responder } = await xxSides();
  await responder.readMessage(await initiator.writeMessage());
  const second = await responder.writeMessage(enc.encode("hello"));
  const hashBefore = initiator.handshakeHash;
  // Bit 32*8+3 lies in the encrypted static key; the last bit lies in the payload's tag.
  for (const bit of [32 * 8 + 3, second.length * 8 - 1]) {
    await rejectsWith(initiator.readMessage(flipBit(second, bit)), "DECRYPT_FAILED");
    assert.deepEqual(initiator.handshakeHash, hashBefore);
    assert.equal(initiator.remoteStaticKey, undefined);
  }
  await rejectsWith(initiator.readMessage(second.subarray(0, 40)), "BAD_MESSAGE");
  assert.deepEqual(await initiator.readMessage(second), enc.encode("hello"));
  await responder.readMessage(await initiator.writeMessage());
  assert.deepEqual(initiator.session().handshakeHash, responder.session().handshakeHash);
});

Deno.test("a low-order ephemeral key from the peer is refused as INVALID_KEY", async () => {
  const initiator = await HandshakeState.initialize({ pattern: "NN", initiator: true });
  await initiator.writeMessage();
  // The all-zero point has low order: its DH result would be zero, known to anyone.
  await rejectsWith(initiator.readMessage(new Uint8Array(32 + 16)), "INVALID_KEY");
  assert.equal(initiator.nextStep, "read");
});

Deno.test("HandshakeState refuses calls out of turn and missing or surplus keys", async () => {
  const initiator = await HandshakeState.initialize({ pattern: "NN", initiator: true });
  await rejectsWith(initiator.readMessage(new Uint8Array(32)), "WRONG_STATE");
  assert.throws(() => initiator.session(), CryptoError);
  await assert.rejects(HandshakeState.initialize({ pattern: "XX", initiator: true }), TypeError);
  await assert.rejects(HandshakeState.initialize({ pattern: "NK", initiator: true }), TypeError);
  const pair = await generateKeyPair();
  await assert.rejects(
    HandshakeState.initialize({
      pattern: "XX",
      initiator: true,
      staticKeyPair: pair,
      remoteStaticKey: pair.publicKey,
    }),
    /compare session\(\)\.remoteStaticKey/,
  );
  await assert.rejects(
    HandshakeState.initialize({ pattern: "NN", initiator: true, staticKeyPair: pair }),
    TypeError,
  );
  await assert.rejects(
    HandshakeState.initialize({ pattern: "ZZ" as HandshakePatternName, initiator: true }),
    /unknown Noise pattern "ZZ"/,
  );
  await assert.rejects(initiator.writeMessage(new Uint8Array(MAX_MESSAGE_LEN)), RangeError);
  assert.equal(initiator.nextStep, "write");
});

Deno.test("after the handshake, further handshake messages are refused", async () => {
  const initiator = await HandshakeState.initialize({ pattern: "NN", initiator: true });
  const responder = await HandshakeState.initialize({ pattern: "NN", initiator: false });
  await responder.readMessage(await initiator.writeMessage());
  await initiator.readMessage(await responder.writeMessage());
  await rejectsWith(initiator.writeMessage(), "WRONG_STATE");
  await rejectsWith(responder.readMessage(new Uint8Array(48)), "WRONG_STATE");
});

// ---------------------------------------------------------------------------------------------
// Transport

Deno.test("a tampered transport message fails and the next genuine message still decrypts", async () => {
  const { initiator, responder } = await handshake("XX");
  const first = await initiator.send.encrypt(enc.encode("first"));
  const second = await initiator.send.encrypt(enc.encode("second"));
  for (const bit of [0, 40, first.length * 8 - 1]) {
    await rejectsWith(responder.receive.decrypt(flipBit(first, bit)), "DECRYPT_FAILED");
    assert.equal(responder.receive.nonce, 0n);
  }
  assert.deepEqual(await responder.receive.decrypt(first), enc.encode("first"));
  assert.deepEqual(await responder.receive.decrypt(second), enc.encode("second"));
});

Deno.test("a replayed transport message fails", async () => {
  const { initiator, responder } = await handshake("XX");
  const first = await initiator.send.encrypt(enc.encode("pay 10"));
  const second = await initiator.send.encrypt(enc.encode("pay 20"));
  assert.deepEqual(await responder.receive.decrypt(first), enc.encode("pay 10"));
  await rejectsWith(responder.receive.decrypt(first), "DECRYPT_FAILED");
  assert.deepEqual(await responder.receive.decrypt(second), enc.encode("pay 20"));
  await rejectsWith(responder.receive.decrypt(second), "DECRYPT_FAILED");
});

Deno.test("reordered transport messages fail until they arrive in order", async () => {
  const { initiator, responder } = await handshake("IK");
  const first = await initiator.send.encrypt(enc.encode("1"));
  const second = await initiator.send.encrypt(enc.encode("2"));
  await rejectsWith(responder.receive.decrypt(second), "DECRYPT_FAILED");
  assert.deepEqual(await responder.receive.decrypt(first), enc.encode("1"));
  assert.deepEqual(await responder.receive.decrypt(second), enc.encode("2"));
  // A message from the other direction is no substitute either.
  const reply = await responder.send.encrypt(enc.encode("1"));
  await rejectsWith(responder.receive.decrypt(reply), "DECRYPT_FAILED");
});

Deno.test("many concurrent encrypts and decrypts keep order, and a failure in the middle stops the rest", async () => {
  const { initiator, responder } = await handshake("NN");
  const plaintexts = Array.from({ length: 16 }, (_, i) => enc.encode(`frame ${i}`));
  const ciphertexts = await Promise.all(plaintexts.map((p) => initiator.send.encrypt(p)));
  const decrypted = await Promise.all(
    ciphertexts.slice(0, 8).map((c) => responder.receive.decrypt(c)),
  );
  assert.deepEqual(decrypted, plaintexts.slice(0, 8));

  // Frame 10 is forged: frames 8 and 9 pass; 10 and everything after it fail, as they would one
  // at a time (the receiver still expects frame 10).
  const rest = ciphertexts.slice(8).map((c, i) => i === 2 ? flipBit(c, 7) : c);
  const outcomes = await Promise.allSettled(rest.map((c) => responder.receive.decrypt(c)));
  assert.deepEqual(outcomes.map((o) => o.status), [
    "fulfilled",
    "fulfilled",
    ...Array<string>(6).fill("rejected"),
  ]);
  assert.equal(responder.receive.nonce, 10n);
  const resent = await Promise.all(ciphertexts.slice(10).map((c) => responder.receive.decrypt(c)));
  assert.deepEqual(resent, plaintexts.slice(10));
});

Deno.test("TransportCipher enforces the direction and the Noise message size", async () => {
  const { initiator, responder } = await handshake("NN");
  await assert.rejects(initiator.receive.encrypt(enc.encode("x")), TypeError);
  await assert.rejects(initiator.send.decrypt(enc.encode("x")), TypeError);
  await assert.rejects(initiator.send.encrypt(new Uint8Array(MAX_PLAINTEXT_LEN + 1)), RangeError);
  await rejectsWith(responder.receive.decrypt(new Uint8Array(MAX_MESSAGE_LEN + 1)), "BAD_MESSAGE");
  await rejectsWith(responder.receive.decrypt(new Uint8Array(3)), "DECRYPT_FAILED");
  const largest = crypto.getRandomValues(new Uint8Array(MAX_PLAINTEXT_LEN));
  const sealed = await initiator.send.encrypt(largest);
  assert.equal(sealed.length, MAX_MESSAGE_LEN);
  assert.deepEqual(await responder.receive.decrypt(sealed), largest);
});

Deno.test("TransportCipher.rekey() on both ends keeps the session working", async () => {
  const { initiator, responder } = await handshake("XX");
  const before = await initiator.send.encrypt(enc.encode("before"));
  initiator.send.rekey();
  const after = await initiator.send.encrypt(enc.encode("after"));
  assert.deepEqual(await responder.receive.decrypt(before), enc.encode("before"));
  await rejectsWith(responder.receive.decrypt(after), "DECRYPT_FAILED");
  responder.receive.rekey();
  assert.deepEqual(await responder.receive.decrypt(after), enc.encode("after"));
});

Deno.test("NNpsk0 reproduces the cacophony vector (psk mixed first, e keys the cipher)", async () => {
  const psk = hex("54686973206973206d7920417573747269616e20706572737065637469766521");
  const prologue = hex("4a6f686e2047616c74");
  const initiator = await HandshakeState.initialize({
    pattern: "NNpsk0",
    initiator: true,
    prologue,
    psk,
    ephemeralKeyPair: await keyPairFromPrivateKey(
      hex("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a"),
    ),
  });
  const responder = await HandshakeState.initialize({
    pattern: "NNpsk0",
    initiator: false,
    prologue,
    psk,
    ephemeralKeyPair: await keyPairFromPrivateKey(
      hex("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b"),
    ),
  });
  const m0 = await initiator.writeMessage(hex("4c756477696720766f6e204d69736573"));
  assert.equal(
    toHex(m0),
    "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944" +
      "79b962b8aff8485742ac32f905ba45369e2465fb59e138a93d67a0d1266b6a54",
  );
  assert.equal(toHex(await responder.readMessage(m0)), "4c756477696720766f6e204d69736573");
  const m1 = await responder.writeMessage(hex("4d757272617920526f746862617264"));
  assert.equal(
    toHex(m1),
    "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843" +
      "d6062704d5a9c422a8e834423f8c1feada7e8d0d910a1a2cd030fb584221e3",
  );
  await initiator.readMessage(m1);
  const [i, r] = [initiator.session(), responder.session()];
  assert.equal(
    toHex(await i.send.encrypt(hex("462e20412e20486179656b"))),
    "e632c3763d7669067383433197a3baddf146e9e70ad4b4e9e59e0f",
  );
  assert.equal(
    toHex(await r.send.encrypt(hex("4361726c204d656e676572"))),
    "64c6bee32ea91c8474bb4c21d7a700109ad45af77b29764ba5eb1e",
  );
});

Deno.test("NNpsk0: a responder with another psk refuses the first message", async () => {
  const [a, b] = [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)];
  const initiator = await HandshakeState.initialize({ pattern: "NNpsk0", initiator: true, psk: a });
  const responder = await HandshakeState.initialize({
    pattern: "NNpsk0",
    initiator: false,
    psk: b,
  });
  await assert.rejects(
    async () => await responder.readMessage(await initiator.writeMessage()),
    CryptoError,
  );
  await assert.rejects(
    () => HandshakeState.initialize({ pattern: "NNpsk0", initiator: true }),
    TypeError,
  );
});

Deno.test("sealWithNonce() seals with the nonce given; openWithNonce() opens that and nothing altered", () => {
  const key = new Uint8Array(32).map((_, i) => i);
  const iv = new Uint8Array(12).map((_, i) => 100 + i);
  const ad = enc.encode("header");
  const sealed = sealWithNonce("ChaChaPoly", key, iv, ad, enc.encode("a ticket"));
  // The same bytes as node:crypto's cipher with that nonce: ciphertext, then the tag.
  const reference = createCipheriv("chacha20-poly1305", key, iv, { authTagLength: 16 });
  reference.setAAD(ad, { plaintextLength: 8 });
  const body = reference.update(enc.encode("a ticket"));
  reference.final();
  assert.deepEqual(sealed, new Uint8Array([...body, ...reference.getAuthTag()]));
  assert.equal(
    new TextDecoder().decode(openWithNonce("ChaChaPoly", key, iv, ad, sealed)),
    "a ticket",
  );
  const flipped = sealed.slice();
  flipped[0]! ^= 1;
  for (
    const [what, open] of [
      ["a flipped bit", () => openWithNonce("ChaChaPoly", key, iv, ad, flipped)],
      ["other data", () => openWithNonce("ChaChaPoly", key, iv, enc.encode("other"), sealed)],
      ["another nonce", () => openWithNonce("ChaChaPoly", key, new Uint8Array(12), ad, sealed)],
      ["a stub", () => openWithNonce("ChaChaPoly", key, iv, ad, sealed.subarray(0, 15))],
    ] as const
  ) {
    assert.throws(open, `${what} must not open`);
  }
});
