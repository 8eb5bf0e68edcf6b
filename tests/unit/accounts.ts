/**
 * Unit tests for lib/server/accounts.ts: scrypt password hashing and the login throttle.
 * The hashing tests run scrypt at a low cost (N=2^12): the parameters are what they check, not
 * the cost, and on a busy machine each hash at the default cost takes seconds.
 */
import assert from "node:assert/strict";
import {
  CURRENT_KDF,
  hashPassword,
  kdfOf,
  LoginThrottle,
  needsRehash,
  RateLimit,
  verifyPassword,
} from "../../lib/server/accounts.ts";

/** True when `needle` occurs as a contiguous run of bytes inside `haystack`. */
function containsBytes(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}

Deno.test("containsBytes() (test helper) finds a run of bytes and only that", () => {
  assert.equal(containsBytes(Uint8Array.of(1, 2, 3, 4), Uint8Array.of(2, 3)), true);
  assert.equal(containsBytes(Uint8Array.of(1, 2, 3, 4), Uint8Array.of(2, 4)), false);
  assert.equal(containsBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 2, 3)), false);
});

// ---- hashing -------------------------------------------------------------------------------

const PASSWORD = "correct horse battery";
const KDF = kdfOf(12);

Deno.test("kdfOf() names scrypt's parameters and refuses a cost outside 10-20", () => {
  assert.equal(kdfOf(17), "scrypt:17:8:1");
  assert.equal(CURRENT_KDF, "scrypt:17:8:1");
  for (const bad of [9, 21, 12.5, NaN]) assert.throws(() => kdfOf(bad), RangeError);
});

Deno.test("needsRehash() moves weaker hashes up and never a stronger one down", () => {
  assert.equal(needsRehash({}, CURRENT_KDF), true, "no parameters stored: the legacy N=2^15");
  assert.equal(needsRehash({ kdf: "scrypt:15:8:1" }, CURRENT_KDF), true);
  assert.equal(needsRehash({ kdf: "scrypt:17:8:1" }, CURRENT_KDF), false);
  assert.equal(needsRehash({ kdf: "scrypt:17:8:1" }, kdfOf(12)), false, "a cheaper server");
  assert.equal(needsRehash({ kdf: "scrypt:12:8:1" }, kdfOf(13)), true);
});

Deno.test("hashPassword() stores the parameters it hashed with", async () => {
  assert.equal((await hashPassword(PASSWORD, KDF)).kdf, "scrypt:12:8:1");
});

Deno.test("hashPassword() makes a 16-byte salt and a 32-byte hash that verifyPassword() accepts", async () => {
  const stored = await hashPassword(PASSWORD, KDF);
  assert.ok(stored.salt instanceof Uint8Array);
  assert.ok(stored.hash instanceof Uint8Array);
  assert.equal(stored.salt.length, 16);
  assert.equal(stored.hash.length, 32);
  const [right, wrong, nearlyRight] = await Promise.all([
    verifyPassword(PASSWORD, stored),
    verifyPassword("wrong password", stored),
    verifyPassword(PASSWORD + " ", stored),
  ]);
  assert.equal(right, true);
  assert.equal(wrong, false);
  assert.equal(nearlyRight, false);
});

Deno.test("hashPassword() salts each hash, so one password hashes differently twice", async () => {
  const [a, b] = await Promise.all([hashPassword(PASSWORD, KDF), hashPassword(PASSWORD, KDF)]);
  assert.notDeepEqual(a.salt, b.salt);
  assert.notDeepEqual(a.hash, b.hash);
  // Each verifies against its own record, and the hash of one is not valid with the other's salt.
  assert.equal(await verifyPassword(PASSWORD, { salt: a.salt, hash: b.hash, kdf: KDF }), false);
});

Deno.test("hashPassword() output does not contain the password bytes", async () => {
  // A short password, so a stored plain copy or prefix would fit inside the 32-byte hash.
  const password = "abcdef";
  const { salt, hash } = await hashPassword(password, KDF);
  const bytes = new TextEncoder().encode(password);
  assert.equal(containsBytes(hash, bytes), false);
  assert.equal(containsBytes(salt, bytes), false);
  assert.equal(containsBytes(hash, bytes.subarray(0, 4)), false);
});

Deno.test("verifyPassword() returns false for an unknown user or a malformed record", async () => {
  const [unknown, shortHash] = await Promise.all([
    verifyPassword(PASSWORD, undefined, KDF),
    verifyPassword(PASSWORD, { salt: new Uint8Array(16), hash: new Uint8Array(31), kdf: KDF }),
  ]);
  assert.equal(unknown, false);
  assert.equal(shortHash, false);
});

Deno.test("verifyPassword() treats NFC and NFD spellings of a password as the same", async () => {
  const nfc = "caf\u00e9-pass"; // é as one code point
  const nfd = "cafe\u0301-pass"; // e + combining acute accent
  assert.notEqual(nfc, nfd);
  const stored = await hashPassword(nfc, KDF);
  assert.equal(await verifyPassword(nfd, stored), true);
});

// ---- throttle ------------------------------------------------------------------------------

const T0 = 1_700_000_000_000;

Deno.test("LoginThrottle.waitFor() is 0 for a key it has never seen", () => {
  const throttle = new LoginThrottle();
  assert.equal(throttle.waitFor("alice", T0), 0);
});

Deno.test("LoginThrottle lets the first freeFailures attempts through without waiting", () => {
  const throttle = new LoginThrottle(); // defaults: 5 free, 1 s base
  for (let i = 1; i <= 4; i++) {
    throttle.fail("alice", T0);
    assert.equal(throttle.waitFor("alice", T0), 0, `after failure ${i}`);
  }
  throttle.fail("alice", T0);
  assert.equal(throttle.waitFor("alice", T0), 1000, "after failure 5");
});

Deno.test("LoginThrottle doubles the wait with each further failure", () => {
  const throttle = new LoginThrottle({ freeFailures: 3, baseDelayMs: 100, maxDelayMs: 1e9 });
  const waits: number[] = [];
  for (let i = 0; i < 8; i++) {
    throttle.fail("k", T0);
    waits.push(throttle.waitFor("k", T0));
  }
  assert.deepEqual(waits, [0, 0, 100, 200, 400, 800, 1600, 3200]);
});

Deno.test("LoginThrottle measures each wait from the time of the latest failure", () => {
  const throttle = new LoginThrottle({ freeFailures: 1, baseDelayMs: 1000 });
  throttle.fail("k", T0); // wait 1000 from T0
  assert.equal(throttle.waitFor("k", T0 + 400), 600);
  assert.equal(throttle.waitFor("k", T0 + 1000), 0);
  assert.equal(throttle.waitFor("k", T0 + 5000), 0, "never negative");
  throttle.fail("k", T0 + 5000); // wait 2000 from T0+5000
  assert.equal(throttle.waitFor("k", T0 + 5000), 2000);
  assert.equal(throttle.waitFor("k", T0 + 6500), 500);
});

Deno.test("LoginThrottle caps the wait at maxDelayMs", () => {
  const throttle = new LoginThrottle({ freeFailures: 1, baseDelayMs: 1000, maxDelayMs: 5000 });
  const waits: number[] = [];
  for (let i = 0; i < 6; i++) {
    throttle.fail("k", T0);
    waits.push(throttle.waitFor("k", T0));
  }
  assert.deepEqual(waits, [1000, 2000, 4000, 5000, 5000, 5000]);
});

Deno.test("LoginThrottle keeps the default cap of 5 minutes after thousands of failures", () => {
  const throttle = new LoginThrottle();
  for (let i = 0; i < 5000; i++) throttle.fail("k", T0);
  assert.equal(throttle.waitFor("k", T0), 5 * 60_000);
});

Deno.test("LoginThrottle.succeed() resets the count of a key", () => {
  const throttle = new LoginThrottle({ freeFailures: 2, baseDelayMs: 100 });
  throttle.fail("k", T0);
  throttle.fail("k", T0);
  throttle.fail("k", T0);
  assert.equal(throttle.waitFor("k", T0), 200);
  throttle.succeed("k");
  assert.equal(throttle.waitFor("k", T0), 0);
  throttle.fail("k", T0);
  assert.equal(throttle.waitFor("k", T0), 0, "the free failures start over");
  throttle.fail("k", T0);
  assert.equal(throttle.waitFor("k", T0), 100, "and so does the doubling");
});

Deno.test("LoginThrottle.succeed() of an unknown key is harmless", () => {
  const throttle = new LoginThrottle({ freeFailures: 1 });
  throttle.succeed("nobody");
  throttle.fail("k", T0);
  throttle.succeed("other");
  assert.equal(throttle.waitFor("k", T0), 1000);
});

Deno.test("LoginThrottle counts each key separately", () => {
  const throttle = new LoginThrottle({ freeFailures: 1, baseDelayMs: 100 });
  throttle.fail("alice", T0);
  throttle.fail("alice", T0);
  throttle.fail("10.0.0.1", T0);
  assert.equal(throttle.waitFor("alice", T0), 200);
  assert.equal(throttle.waitFor("10.0.0.1", T0), 100);
  assert.equal(throttle.waitFor("bob", T0), 0);
  throttle.succeed("alice");
  assert.equal(throttle.waitFor("10.0.0.1", T0), 100);
});

Deno.test("LoginThrottle keeps at most maxEntries keys, dropping the oldest first", () => {
  const throttle = new LoginThrottle({ freeFailures: 1, baseDelayMs: 100, maxEntries: 3 });
  for (const key of ["a", "b", "c", "d"]) throttle.fail(key, T0);
  assert.equal(throttle.waitFor("a", T0), 0, "a was the oldest and is forgotten");
  for (const key of ["b", "c", "d"]) assert.equal(throttle.waitFor(key, T0), 100, key);
});

Deno.test("LoginThrottle eviction drops the least recently failed key, not the first inserted", () => {
  const throttle = new LoginThrottle({ freeFailures: 1, baseDelayMs: 100, maxEntries: 3 });
  throttle.fail("a", T0);
  throttle.fail("b", T0);
  throttle.fail("c", T0);
  throttle.fail("a", T0); // a is now the most recent
  throttle.fail("d", T0); // evicts b
  assert.equal(throttle.waitFor("a", T0), 200);
  assert.equal(throttle.waitFor("b", T0), 0);
  assert.equal(throttle.waitFor("c", T0), 100);
  assert.equal(throttle.waitFor("d", T0), 100);
});

Deno.test("LoginThrottle stays bounded under a flood of distinct keys", () => {
  const throttle = new LoginThrottle({ freeFailures: 1, baseDelayMs: 100, maxEntries: 100 });
  for (let i = 0; i < 10_000; i++) throttle.fail(`addr-${i}`, T0);
  let remembered = 0;
  for (let i = 0; i < 10_000; i++) if (throttle.waitFor(`addr-${i}`, T0) > 0) remembered++;
  assert.equal(remembered, 100);
  assert.equal(throttle.waitFor("addr-9999", T0), 100);
  assert.equal(throttle.waitFor("addr-9899", T0), 0);
});

Deno.test("LoginThrottle forgets a key's failures forgetAfterMs after the last one", () => {
  const throttle = new LoginThrottle({ freeFailures: 2, baseDelayMs: 100, forgetAfterMs: 1000 });
  throttle.fail("k", T0);
  throttle.fail("k", T0);
  assert.equal(throttle.waitFor("k", T0), 100);
  // Still within forgetAfterMs of the last failure: the count goes on.
  throttle.fail("k", T0 + 1000);
  assert.equal(throttle.waitFor("k", T0 + 1000), 200);
  // Measured from the latest failure, not the first: the next one after a quiet spell starts over.
  throttle.fail("k", T0 + 1000 + 1001);
  assert.equal(throttle.waitFor("k", T0 + 2001), 0, "a first failure again");
  throttle.fail("k", T0 + 2001);
  assert.equal(throttle.waitFor("k", T0 + 2001), 100, "a second failure again");
});

Deno.test("LoginThrottle forgets failures 15 minutes after the last one by default", () => {
  const throttle = new LoginThrottle(); // defaults: 5 free, 1 s base
  for (let i = 0; i < 5; i++) throttle.fail("alice", T0);
  assert.equal(throttle.waitFor("alice", T0), 1000);
  throttle.fail("alice", T0 + 15 * 60_000);
  assert.equal(throttle.waitFor("alice", T0 + 15 * 60_000), 2000, "not yet forgotten");
  const later = T0 + 2 * 15 * 60_000 + 1;
  throttle.fail("alice", later);
  assert.equal(throttle.waitFor("alice", later), 0, "forgotten: the free failures are back");
});

Deno.test("LoginThrottle counts attempts still being checked: a burst of guesses gets only the free ones", () => {
  const throttle = new LoginThrottle(); // 5 free
  let checked = 0;
  for (let i = 0; i < 12; i++) {
    if (throttle.waitFor("alice", T0) > 0) continue;
    throttle.begin("alice", T0);
    checked++;
  }
  assert.equal(checked, 5, "12 concurrent guesses, 5 free failures");
  for (let i = 0; i < 5; i++) throttle.end("alice", "failed", T0);
  assert.equal(throttle.waitFor("alice", T0), 1000, "then the usual wait");
});

Deno.test("LoginThrottle.end() with success or cancel frees the slot without counting a failure", () => {
  const throttle = new LoginThrottle({ freeFailures: 2 });
  throttle.begin("k", T0);
  throttle.begin("k", T0);
  assert.ok(throttle.waitFor("k", T0) > 0, "two in flight use up both free failures");
  throttle.end("k", "cancelled", T0);
  assert.equal(throttle.waitFor("k", T0), 0);
  throttle.fail("k", T0);
  throttle.end("k", "ok", T0);
  assert.equal(throttle.waitFor("k", T0), 0, "a success forgets the failures");
  throttle.end("k", "ok", T0); // one end too many is harmless
  assert.equal(throttle.waitFor("k", T0), 0);
});

Deno.test("RateLimit allows a burst of capacity, then one per interval", () => {
  const limit = new RateLimit({ capacity: 3, intervalMs: 1000 });
  assert.deepEqual([0, 1, 2, 3].map(() => limit.take("a", T0)), [0, 0, 0, 1000]);
  assert.equal(limit.take("b", T0), 0, "each key has its own bucket");
  assert.equal(limit.take("a", T0 + 400), 600);
  assert.equal(limit.take("a", T0 + 1000), 0, "one token back after an interval");
  assert.equal(limit.take("a", T0 + 1000), 1000);
  assert.deepEqual([0, 1, 2, 3].map(() => limit.take("a", T0 + 60_000)), [0, 0, 0, 1000]);
});
