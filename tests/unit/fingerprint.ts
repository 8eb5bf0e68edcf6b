/**
 * Unit tests for lib/crypto/fingerprint.ts: the server key fingerprint and the safety numbers
 * two users compare.
 */
import assert from "node:assert/strict";
import {
  keyFingerprint,
  ownNumber,
  parseFingerprint,
  safetyNumber,
} from "../../lib/crypto/fingerprint.ts";
import { Identity } from "../../lib/peer/identity.ts";

const SIXTY_DIGITS = /^\d{5}( \d{5}){11}$/;
const THIRTY_DIGITS = /^\d{5}( \d{5}){5}$/;

async function user(name: string): Promise<{ user: string; publicKey: string }> {
  return { user: name, publicKey: (await Identity.generate()).identity.publicKey };
}

Deno.test("keyFingerprint() is the first 16 bytes of SHA-256 in 8 groups of 4 hex digits", async () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const fingerprint = await keyFingerprint(key);
  assert.match(fingerprint, /^[0-9a-f]{4}( [0-9a-f]{4}){7}$/);
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", key));
  const hex = [...hash.subarray(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(fingerprint.replaceAll(" ", ""), hex);
  assert.equal(await keyFingerprint(key.slice()), fingerprint, "deterministic");
  key[0] = key[0]! ^ 1;
  assert.notEqual(await keyFingerprint(key), fingerprint);
});

Deno.test("safetyNumber() is 60 digits and the same from both sides", async () => {
  const alice = await user("alice");
  const bob = await user("bob");
  const number = await safetyNumber(alice, bob);
  assert.match(number, SIXTY_DIGITS);
  assert.equal(await safetyNumber(bob, alice), number);
  assert.equal(await safetyNumber(alice, bob), number, "deterministic");
  // Names are unique case-insensitively, so their case does not change the number.
  assert.equal(await safetyNumber({ ...alice, user: "Alice" }, bob), number);
});

Deno.test("safetyNumber() changes when either key changes", async () => {
  const alice = await user("alice");
  const bob = await user("bob");
  const number = await safetyNumber(alice, bob);
  const aliceAgain = { ...alice, publicKey: (await user("alice")).publicKey };
  const bobAgain = { ...bob, publicKey: (await user("bob")).publicKey };
  const changed = [
    await safetyNumber(aliceAgain, bob),
    await safetyNumber(alice, bobAgain),
    await safetyNumber(aliceAgain, bobAgain),
  ];
  for (const other of changed) {
    assert.match(other, SIXTY_DIGITS);
    assert.notEqual(other, number);
  }
  assert.equal(new Set(changed).size, 3);
  // The same key under another name is another number too.
  assert.notEqual(await safetyNumber({ ...alice, user: "carol" }, bob), number);
});

Deno.test("ownNumber() is 30 digits, and one half of every safety number with that user", async () => {
  const alice = await user("alice");
  const bob = await user("bob");
  const own = await ownNumber(alice.user, alice.publicKey);
  assert.match(own, THIRTY_DIGITS);
  assert.equal(await ownNumber("ALICE", alice.publicKey), own);
  const digits = (s: string) => s.replaceAll(" ", "");
  const pair = digits(await safetyNumber(alice, bob));
  const halves = [pair.slice(0, 30), pair.slice(30)];
  assert.ok(halves.includes(digits(own)));
  assert.ok(halves.includes(digits(await ownNumber(bob.user, bob.publicKey))));
});

Deno.test("parseFingerprint() takes the banner's form with or without spaces and refuses anything else", async () => {
  const printed = await keyFingerprint(new Uint8Array(32).fill(7));
  assert.equal(parseFingerprint(printed), printed);
  assert.equal(parseFingerprint(printed.replaceAll(" ", "").toUpperCase()), printed);
  assert.equal(parseFingerprint(printed.replaceAll(" ", ":")), printed);
  for (const bad of ["", "yes", printed.slice(0, -1), printed + "0", printed.replace(/.$/, "g")]) {
    assert.throws(() => parseFingerprint(bad), RangeError, bad);
  }
});
