/**
 * Conformance tests of the server store (`lib/server/store.ts`): every test runs against every
 * backend (`tests/support/store_backends.ts`), each on a fresh database. A behaviour one
 * backend lacks fails here by name. Backend-specific checks live in `<backend>_store_test.ts`.
 */
import assert from "node:assert/strict";
import { SCHEMA_VERSION } from "../lib/server/migrations.ts";
import {
  LEGACY_KDF,
  type LookupRecord,
  nameKey,
  type ServerStore,
  type StoreEvent,
} from "../lib/server/store.ts";
import { type StoreFixture, storeTest } from "./support/store_backends.ts";

const KEY = "A".repeat(43);
const MAIL_KEY = "M".repeat(43);
const MAIL_KEY_SIG = "S".repeat(86);

function user(name: string, seed = 1) {
  return {
    name,
    salt: new Uint8Array(16).fill(seed),
    hash: new Uint8Array(32).fill(seed + 100),
    publicKey: KEY,
  };
}

/** Signs up `names` in `store` (created at 1000, 1001, ...). */
async function signUp(store: ServerStore, names: readonly string[]): Promise<void> {
  for (const [i, n] of names.entries()) {
    assert.equal(await store.createUser(user(n, i), 1000 + i), true, n);
  }
}

/** Opens the fixture's store with `names` signed up. */
async function openWith(
  fixture: { open(): Promise<ServerStore> },
  names: readonly string[],
): Promise<ServerStore> {
  const store = await fixture.open();
  await signUp(store, names);
  return store;
}

const token = (n: number) => new Uint8Array(32).fill(n);

function mail(recipient: string, sender: string, msgId: string, ts = 1, body = `body ${msgId}`) {
  return { recipient, sender, msgId, ts, body };
}

// ---- opening and migrations ----------------------------------------------------------------

storeTest("migrations set schemaVersion and a new store is empty", async (fx) => {
  await using store = await fx.open();
  assert.equal(await store.schemaVersion(), SCHEMA_VERSION);
  assert.equal(await store.userCount(), 0);
  assert.deepEqual(await store.registry(), []);
});

storeTest("reopening runs no migration twice", async (fx) => {
  await (await fx.open()).close();
  // A second run of the first migration would fail with "table users already exists".
  await using again = await fx.open();
  assert.equal(await again.schemaVersion(), SCHEMA_VERSION);
});

storeTest("close() is idempotent and later calls fail", async (fx) => {
  const store = await fx.open();
  await store.close();
  await store.close();
  await store[Symbol.asyncDispose]();
  await assert.rejects(store.userCount());
});

// ---- users ---------------------------------------------------------------------------------

Deno.test("nameKey() lower-cases a name", () => {
  assert.equal(nameKey("Alice.B_9-X"), "alice.b_9-x");
});

storeTest("createUser() stores a user that getUser() returns intact", async (fx) => {
  await using store = await fx.open();
  const alice = user("Alice", 7);
  assert.equal(await store.createUser(alice), true);
  const got = await store.getUser("Alice");
  assert.ok(got);
  assert.equal(got.nameKey, "alice");
  assert.equal(got.name, "Alice");
  assert.deepEqual(new Uint8Array(got.salt), alice.salt);
  assert.deepEqual(new Uint8Array(got.hash), alice.hash);
  assert.equal(got.publicKey, KEY);
  assert.equal(got.mailKey, "", "no mail key was given");
  assert.equal(got.mailKeySig, "");
  assert.equal(await store.userCount(), 1);
});

storeTest("createUser() stores the mail key and its signature", async (fx) => {
  await using store = await fx.open();
  assert.equal(
    await store.createUser({ ...user("Alice", 7), mailKey: MAIL_KEY, mailKeySig: MAIL_KEY_SIG }),
    true,
  );
  const got = await store.getUser("alice");
  assert.ok(got);
  assert.equal(got.publicKey, KEY);
  assert.equal(got.mailKey, MAIL_KEY);
  assert.equal(got.mailKeySig, MAIL_KEY_SIG);
});

storeTest("usernames are unique case-insensitively", async (fx) => {
  await using store = await fx.open();
  assert.equal(await store.createUser(user("Alice", 1)), true);
  assert.equal(await store.createUser(user("alice", 2)), false);
  assert.equal(await store.createUser(user("ALICE", 3)), false);
  assert.equal(await store.userCount(), 1);
  const got = await store.getUser("aLiCe");
  assert.ok(got);
  assert.equal(got.name, "Alice", "the first signup's spelling is kept");
  assert.deepEqual(new Uint8Array(got.salt), new Uint8Array(16).fill(1), "and its credentials");
});

storeTest("concurrent signups of one name create one account", async (fx) => {
  await using store = await fx.open();
  const results = await Promise.all(
    ["Zoe", "zoe", "ZOE", "zOe"].map((n, i) => store.createUser(user(n, i))),
  );
  assert.equal(results.filter((r) => r).length, 1);
  assert.equal(await store.userCount(), 1);
});

storeTest(
  "createUser() keeps the password hash's parameters; none given means the legacy ones",
  async (fx) => {
    await using store = await fx.open();
    assert.equal(await store.createUser({ ...user("old", 1) }), true);
    assert.equal(await store.createUser({ ...user("new", 2), kdf: "scrypt:17:8:1" }), true);
    assert.equal((await store.getUser("old"))?.kdf, LEGACY_KDF);
    assert.equal((await store.getUser("new"))?.kdf, "scrypt:17:8:1");
  },
);

storeTest("updatePassword() replaces salt, hash and parameters of that user only", async (fx) => {
  await using store = await openWith(fx, ["alice", "bob"]);
  const fresh = { salt: new Uint8Array(16).fill(9), hash: new Uint8Array(32).fill(8) };
  assert.equal(await store.updatePassword("ALICE", { ...fresh, kdf: "scrypt:17:8:1" }), true);
  const alice = await store.getUser("alice");
  assert.deepEqual(new Uint8Array(alice!.salt), fresh.salt);
  assert.deepEqual(new Uint8Array(alice!.hash), fresh.hash);
  assert.equal(alice!.kdf, "scrypt:17:8:1");
  assert.equal((await store.getUser("bob"))?.kdf, LEGACY_KDF);
  assert.equal(await store.updatePassword("nobody", { ...fresh, kdf: "scrypt:17:8:1" }), false);
});

storeTest("getUser() returns undefined for an unknown name", async (fx) => {
  await using store = await openWith(fx, ["alice"]);
  assert.equal(await store.getUser("bob"), undefined);
  assert.equal(await store.getUser("alice2"), undefined);
  assert.equal(await store.getUser(""), undefined);
});

// ---- contacts ------------------------------------------------------------------------------

storeTest("addContact() adds once, case-insensitively", async (fx) => {
  await using store = await openWith(fx, ["Alice", "Bob"]);
  assert.equal(await store.addContact("alice", "bob"), true);
  assert.equal(await store.addContact("ALICE", "BOB"), false);
  assert.equal(await store.countContacts("Alice"), 1);
  assert.equal(await store.isContact("alice", "BOB"), true);
  assert.equal(await store.isContact("bob", "alice"), false, "contacts are one-way");
  assert.equal(await store.countContacts("bob"), 0);
});

storeTest("listContacts() gives display names in the order they were added", async (fx) => {
  await using store = await openWith(fx, ["alice", "Zed", "Bob", "Carol"]);
  await store.addContact("alice", "carol", 3000);
  await store.addContact("alice", "bob", 2000);
  await store.addContact("alice", "zed", 1000);
  assert.deepEqual(await store.listContacts("ALICE"), ["Zed", "Bob", "Carol"]);
  assert.deepEqual(await store.listContacts("bob"), []);
});

storeTest("listContacts() orders contacts added at the same time by name", async (fx) => {
  await using store = await openWith(fx, ["alice", "Zed", "Bob"]);
  await store.addContact("alice", "zed", 5000);
  await store.addContact("alice", "bob", 5000);
  assert.deepEqual(await store.listContacts("alice"), ["Bob", "Zed"]);
});

storeTest("removeContact() removes once and only that contact", async (fx) => {
  await using store = await openWith(fx, ["alice", "bob", "carol"]);
  await store.addContact("alice", "bob");
  await store.addContact("alice", "carol");
  await store.addContact("bob", "carol");
  assert.equal(await store.removeContact("Alice", "Bob"), true);
  assert.equal(await store.removeContact("alice", "bob"), false);
  assert.equal(await store.removeContact("alice", "nobody"), false);
  assert.deepEqual(await store.listContacts("alice"), ["carol"]);
  assert.deepEqual(await store.listContacts("bob"), ["carol"]);
  assert.equal(await store.isContact("alice", "bob"), false);
});

storeTest(
  "listWatchers() gives only mutual contacts: a one-way entry learns no presence",
  async (fx) => {
    await using store = await openWith(fx, ["Alice", "Bob", "Carol", "Dave"]);
    await store.addContact("Alice", "Carol");
    await store.addContact("Carol", "Alice");
    await store.addContact("Bob", "Carol"); // a request carol has not answered
    await store.addContact("Carol", "Dave");
    await store.addContact("Dave", "Carol");
    assert.deepEqual((await store.listWatchers("CAROL")).sort(), ["alice", "dave"]);
    assert.deepEqual(await store.listWatchers("dave"), ["carol"]);
    assert.deepEqual(await store.listWatchers("bob"), []);
    await store.removeContact("dave", "carol");
    assert.deepEqual(await store.listWatchers("carol"), ["alice"]);
  },
);

storeTest("listContactRequests() gives unanswered requests to a user, oldest first", async (fx) => {
  await using store = await openWith(fx, ["Alice", "Bob", "Carol", "Dave"]);
  await store.addContact("carol", "alice", 3000);
  await store.addContact("bob", "alice", 2000);
  await store.addContact("dave", "alice", 1000);
  await store.addContact("alice", "dave", 4000); // answered: mutual now
  assert.deepEqual(await store.listContactRequests("ALICE", 10), ["Bob", "Carol"]);
  assert.deepEqual(await store.listContactRequests("alice", 1), ["Bob"]);
  assert.deepEqual(await store.listContactRequests("bob", 10), [], "a request made is not one had");
});

storeTest("isMutual() holds only when each has the other", async (fx) => {
  await using store = await openWith(fx, ["alice", "bob", "carol"]);
  await store.addContact("alice", "bob");
  assert.equal(await store.isMutual("alice", "bob"), false);
  await store.addContact("bob", "alice");
  assert.equal(await store.isMutual("ALICE", "bob"), true);
  assert.equal(await store.isMutual("bob", "alice"), true);
  assert.equal(await store.isMutual("alice", "carol"), false);
  assert.equal(await store.isMutual("alice", "alice"), false);
});

storeTest("addContact() refuses a user that does not exist", async (fx) => {
  await using store = await openWith(fx, ["alice"]);
  await assert.rejects(store.addContact("alice", "ghost"));
  await assert.rejects(store.addContact("ghost", "alice"));
  assert.equal(await store.countContacts("alice"), 0);
});

// ---- registry ------------------------------------------------------------------------------

storeTest("recordLogin() opens a registry row that recordLogout() closes", async (fx) => {
  await using store = await openWith(fx, ["Alice"]);
  const seq = await store.recordLogin("alice", "10.0.0.5", 40000, 5000);
  assert.deepEqual(await store.registry(), [
    { user: "Alice", host: "10.0.0.5", port: 40000, loginAt: 5000, logoutAt: null },
  ]);
  await store.recordLogout(seq, 9000);
  assert.deepEqual(await store.registry(), [
    { user: "Alice", host: "10.0.0.5", port: 40000, loginAt: 5000, logoutAt: 9000 },
  ]);
});

storeTest("registry() lists the latest login of each user, or every login of one", async (fx) => {
  await using store = await openWith(fx, ["alice", "bob", "carol"]);
  const a1 = await store.recordLogin("alice", "h1", 1, 1000);
  const b1 = await store.recordLogin("bob", "h2", 2, 2000);
  assert.ok(b1 > a1, "sequence numbers increase");
  await store.recordLogout(a1, 3000);
  await store.recordLogin("alice", "h3", 3, 4000);
  assert.deepEqual(await store.registry(), [
    { user: "alice", host: "h3", port: 3, loginAt: 4000, logoutAt: null },
    { user: "bob", host: "h2", port: 2, loginAt: 2000, logoutAt: null },
  ]);
  assert.deepEqual(await store.registry("ALICE"), [
    { user: "alice", host: "h3", port: 3, loginAt: 4000, logoutAt: null },
    { user: "alice", host: "h1", port: 1, loginAt: 1000, logoutAt: 3000 },
  ]);
  assert.equal((await store.registry("alice", 1)).length, 1);
  assert.deepEqual(await store.registry("carol"), []);
});

storeTest("reopenLogin() clears the logout and updates the address", async (fx) => {
  await using store = await openWith(fx, ["alice"]);
  const seq = await store.recordLogin("alice", "old-host", 1111, 1000);
  await store.recordLogout(seq, 2000);
  await store.reopenLogin(seq, "new-host", 2222);
  assert.deepEqual(await store.registry("alice"), [
    { user: "alice", host: "new-host", port: 2222, loginAt: 1000, logoutAt: null },
  ]);
});

storeTest("correctLastLogout() rewrites only the latest finished session", async (fx) => {
  await using store = await openWith(fx, ["alice", "bob"]);
  const s1 = await store.recordLogin("alice", "h", 1, 1000);
  await store.recordLogout(s1, 2000);
  const s2 = await store.recordLogin("alice", "h", 1, 3000);
  await store.recordLogout(s2, 9000); // the server's guess when the connection dropped
  const b = await store.recordLogin("bob", "h", 1, 3500);
  await store.recordLogout(b, 9500);

  await store.correctLastLogout("ALICE", 4000); // the client's saved, true logout time
  assert.deepEqual((await store.registry("alice")).map((r) => r.logoutAt), [4000, 2000]);
  assert.deepEqual((await store.registry("bob")).map((r) => r.logoutAt), [9500]);
});

storeTest("correctLastLogout() ignores a time before that session's login", async (fx) => {
  await using store = await openWith(fx, ["alice"]);
  const seq = await store.recordLogin("alice", "h", 1, 5000);
  await store.recordLogout(seq, 9000);
  await store.correctLastLogout("alice", 4999);
  assert.equal((await store.registry("alice"))[0]!.logoutAt, 9000);
  await store.correctLastLogout("alice", 5000);
  assert.equal((await store.registry("alice"))[0]!.logoutAt, 5000);
});

storeTest("correctLastLogout() leaves an open session alone", async (fx) => {
  await using store = await openWith(fx, ["alice"]);
  await store.recordLogin("alice", "h", 1, 5000);
  await store.correctLastLogout("alice", 6000);
  assert.equal((await store.registry("alice"))[0]!.logoutAt, null);
  await store.correctLastLogout("nobody", 6000); // an unknown user is not an error
});

storeTest("closeDanglingLogins() closes every open row and counts them", async (fx) => {
  await using store = await openWith(fx, ["alice", "bob", "carol"]);
  await store.recordLogin("alice", "h", 1, 1000);
  await store.recordLogin("bob", "h", 1, 2000);
  const c = await store.recordLogin("carol", "h", 1, 3000);
  await store.recordLogout(c, 3500);
  assert.equal(await store.closeDanglingLogins(7000), 2);
  const byUser = Object.fromEntries((await store.registry()).map((r) => [r.user, r.logoutAt]));
  assert.deepEqual(byUser, { alice: 7000, bob: 7000, carol: 3500 });
  assert.equal(await store.closeDanglingLogins(8000), 0);
});

storeTest("recordLogin() refuses a user that does not exist", async (fx) => {
  await using store = await fx.open();
  await assert.rejects(store.recordLogin("ghost", "h", 1));
});

// ---- mail ----------------------------------------------------------------------------------

storeTest("storeMail() stores once per recipient and message id", async (fx) => {
  await using store = await openWith(fx, ["alice", "Bob", "carol"]);
  assert.equal(await store.storeMail(mail("bob", "alice", "m1", 10), 100), "stored");
  assert.equal(await store.storeMail(mail("BOB", "alice", "m1", 10), 100), "duplicate");
  // The same id to someone else is another message.
  assert.equal(await store.storeMail(mail("carol", "alice", "m1", 10), 100), "stored");
  assert.equal(await store.countMail("bob"), 1);
  assert.equal(await store.countMail("bob", "alice"), 1);
  assert.equal(await store.countMail("bob", "carol"), 0);
  assert.deepEqual(await store.pendingMail("bob", "alice", 10), [
    { msgId: "m1", ts: 10, body: "body m1" },
  ]);
});

storeTest("storeMail() calls made together keep their order, duplicates and limit", async (fx) => {
  await using store = await openWith(fx, ["alice", "bob"]);
  // Not awaited one by one: as a server does for a burst of mail_send on one connection.
  const calls = [
    ...Array.from({ length: 50 }, (_, i) => store.storeMail(mail("bob", "alice", `m${i}`, i), 52)),
    store.storeMail(mail("bob", "alice", "m3", 3), 52),
    store.storeMail(mail("bob", "alice", "m50", 50), 52),
    store.storeMail(mail("bob", "alice", "m51", 51), 52),
    store.storeMail(mail("bob", "alice", "m52", 52), 52),
  ];
  // A read made meanwhile sees what was handed over before it.
  assert.equal(await store.countMail("bob"), 50 + 2);
  const results = await Promise.all(calls);
  assert.deepEqual(results.slice(50), ["duplicate", "stored", "stored", "full"]);
  assert.ok(results.slice(0, 50).every((r) => r === "stored"));
  const pending = await store.pendingMail("bob", "alice", 100);
  assert.deepEqual(pending.map((p) => p.msgId), Array.from({ length: 52 }, (_, i) => `m${i}`));
});

storeTest("storeMail() answers full at the limit, per recipient", async (fx) => {
  await using store = await openWith(fx, ["alice", "bob", "carol"]);
  for (let i = 0; i < 3; i++) {
    assert.equal(await store.storeMail(mail("bob", "alice", `m${i}`), 3), "stored");
  }
  assert.equal(await store.storeMail(mail("bob", "carol", "m9"), 3), "full");
  assert.equal(await store.storeMail(mail("bob", "alice", "m0"), 3), "duplicate");
  assert.equal(await store.storeMail(mail("carol", "alice", "m9"), 3), "stored");
  assert.equal(await store.countMail("bob"), 3);
  // Confirming one makes room for one more.
  assert.deepEqual(await store.confirmMail("bob", "alice", ["m0"]), ["m0"]);
  assert.equal(await store.countMail("bob"), 2);
  assert.equal(await store.storeMail(mail("bob", "carol", "m9"), 3), "stored");
  assert.equal(await store.storeMail(mail("bob", "carol", "m10"), 3), "full");
});

storeTest(
  "one sender cannot fill a mailbox: storeMail() answers quota at the sender's share",
  async (fx) => {
    await using store = await openWith(fx, ["alice", "bob", "carol"]);
    const limits = { messages: 100, senderMessages: 2 };
    assert.equal(await store.storeMail(mail("bob", "alice", "a1"), limits), "stored");
    assert.equal(await store.storeMail(mail("bob", "alice", "a2"), limits), "stored");
    assert.equal(await store.storeMail(mail("bob", "alice", "a3"), limits), "quota");
    assert.equal(await store.storeMail(mail("bob", "alice", "a1"), limits), "duplicate");
    // Another sender, and the same sender to someone else, still have room.
    assert.equal(await store.storeMail(mail("bob", "carol", "c1"), limits), "stored");
    assert.equal(await store.storeMail(mail("carol", "alice", "a3"), limits), "stored");
    // Read mail makes room again.
    await store.confirmMail("bob", "alice", ["a1"]);
    assert.equal(await store.storeMail(mail("bob", "alice", "a3"), limits), "stored");
    assert.equal(await store.countMail("bob", "alice"), 2);
  },
);

storeTest(
  "storeMail() counts bytes too: the sender's share and the mailbox's total",
  async (fx) => {
    await using store = await openWith(fx, ["alice", "bob", "carol"]);
    const body = "x".repeat(1000);
    const limits = { messages: 100, bytes: 3500, senderMessages: 100, senderBytes: 2500 };
    const big = (from: string, id: string) => mail("bob", from, id, 1, body);
    assert.equal(await store.storeMail(big("alice", "a1"), limits), "stored");
    assert.equal(await store.storeMail(big("alice", "a2"), limits), "stored");
    assert.equal(await store.storeMail(big("alice", "a3"), limits), "quota", "3000 > 2500");
    assert.equal(await store.storeMail(big("carol", "c1"), limits), "stored");
    assert.equal(await store.storeMail(big("carol", "c2"), limits), "full", "4000 > 3500");
    await store.confirmMail("bob", "alice", ["a1", "a2"]);
    assert.equal(await store.storeMail(big("carol", "c2"), limits), "stored");
  },
);

storeTest("concurrent storeMail() calls never pass the limit", async (fx) => {
  await using store = await openWith(fx, ["alice", "bob"]);
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, i) => store.storeMail(mail("bob", "alice", `m${i}`), 5)),
  );
  assert.equal(results.filter((r) => r === "stored").length, 5);
  assert.equal(results.filter((r) => r === "full").length, 15);
  assert.equal(await store.countMail("bob"), 5);
});

storeTest("storeMail() refuses an unknown sender or recipient", async (fx) => {
  await using store = await openWith(fx, ["alice"]);
  await assert.rejects(store.storeMail(mail("ghost", "alice", "m1"), 10));
  await assert.rejects(store.storeMail(mail("alice", "ghost", "m1"), 10));
  assert.equal(await store.countMail("alice"), 0);
});

storeTest(
  "pendingMail() gives one sender's mail in the order stored, up to a limit",
  async (fx) => {
    await using store = await openWith(fx, ["alice", "bob", "carol"]);
    // Stored order, not send time, is the order: a late-arriving earlier message comes last.
    await store.storeMail(mail("bob", "alice", "a1", 300), 100);
    await store.storeMail(mail("bob", "carol", "c1", 50), 100);
    await store.storeMail(mail("bob", "alice", "a2", 100), 100);
    await store.storeMail(mail("bob", "alice", "a3", 200, "x".repeat(5000)), 100);
    const all = await store.pendingMail("BOB", "Alice", 10);
    assert.deepEqual(all.map((m) => m.msgId), ["a1", "a2", "a3"]);
    assert.equal(all[2]!.body, "x".repeat(5000));
    assert.deepEqual((await store.pendingMail("bob", "alice", 2)).map((m) => m.msgId), [
      "a1",
      "a2",
    ]);
    assert.deepEqual(await store.pendingMail("alice", "bob", 10), []);
  },
);

storeTest(
  "pendingMail() after a pending message gives the mail stored after it, and none once it is confirmed",
  async (fx) => {
    await using store = await openWith(fx, ["alice", "bob", "carol"]);
    for (const id of ["a1", "a2", "a3", "a4"]) await store.storeMail(mail("bob", "alice", id), 100);
    await store.storeMail(mail("bob", "carol", "c1"), 100);
    const ids = async (limit: number, after: string) =>
      (await store.pendingMail("bob", "alice", limit, after)).map((m) => m.msgId);
    assert.deepEqual(await ids(10, "a2"), ["a3", "a4"]);
    assert.deepEqual(await ids(1, "a1"), ["a2"]);
    assert.deepEqual(await ids(10, "a4"), []);
    // Another sender's message is no cursor into this one's mail.
    assert.deepEqual(await ids(10, "c1"), []);
    await store.confirmMail("bob", "alice", ["a1", "a2"]);
    assert.deepEqual(await ids(10, "a2"), [], "a2 is gone: nothing after it is told apart");
    assert.deepEqual(await ids(10, "a3"), ["a4"]);
  },
);

storeTest("mailbox() gives count and newest time per sender, oldest first", async (fx) => {
  await using store = await openWith(fx, ["alice", "Bob", "Carol"]);
  await store.storeMail(mail("alice", "carol", "c1", 500), 100);
  await store.storeMail(mail("alice", "bob", "b1", 100), 100);
  await store.storeMail(mail("alice", "carol", "c2", 900), 100);
  await store.storeMail(mail("alice", "bob", "b2", 300), 100);
  assert.deepEqual(await store.mailbox("ALICE"), [
    { from: "Carol", count: 2, newest: 900 },
    { from: "Bob", count: 2, newest: 300 },
  ]);
  assert.deepEqual(await store.mailbox("bob"), []);
});

/** The receipts waiting for `sender`, by message id (ties of time come in no set order). */
async function receiptsById(store: ServerStore, sender: string) {
  return (await store.pendingReceipts(sender, 10)).sort((a, b) => a.msgId < b.msgId ? -1 : 1);
}

storeTest(
  "confirmMail() deletes the mail and leaves a receipt for each read one, a notice for each rejected one",
  async (fx) => {
    await using store = await openWith(fx, ["Alice", "Bob"]);
    for (const id of ["m1", "m2", "m3"]) await store.storeMail(mail("bob", "alice", id), 100);
    const done = await store.confirmMail(
      "bob",
      "alice",
      ["m1", "m3", "nope"],
      7000,
      new Set(["m3"]),
    );
    assert.deepEqual(done, ["m1", "m3"]);
    assert.deepEqual((await store.pendingMail("bob", "alice", 10)).map((m) => m.msgId), ["m2"]);
    assert.equal(await store.countMail("bob"), 1);
    // m3 was refused by the reader's client: deleted, not "read", and its sender is told.
    assert.deepEqual(await receiptsById(store, "alice"), [
      { msgId: "m1", reader: "Bob", readAt: 7000 },
      { msgId: "m3", reader: "Bob", readAt: 7000, rejected: true },
    ]);
    // Confirming again changes nothing.
    assert.deepEqual(await store.confirmMail("bob", "alice", ["m1", "m3"], 8000), []);
    assert.equal((await store.pendingReceipts("alice", 10)).length, 2);
  },
);

storeTest(
  "a rejected message's notice is unsigned, waits like a receipt (lookup, reader filter, reopen) and deleteReceipts() forgets it",
  async (fx) => {
    {
      await using store = await openWith(fx, ["alice", "bob", "carol"]);
      await store.storeMail(mail("bob", "alice", "b1"), 100);
      await store.storeMail(mail("carol", "alice", "c1"), 100);
      // A signature given for a refused message (a confused client) is not kept: it was not read.
      const signed = new Map([["b1", { readAt: 5000, sig: "sig-a.path-1" }]]);
      await store.confirmMail("bob", "alice", ["b1"], 6000, new Set(["b1"]), signed);
      await store.confirmMail("carol", "alice", ["c1"], 7000);
      assert.equal((await store.lookup("alice", "bob"))?.receipts, true, "a notice waits");
      assert.deepEqual(await store.pendingReceipts("alice", 10, "bob"), [
        { msgId: "b1", reader: "bob", readAt: 6000, rejected: true },
      ]);
      // Remembered as read all the same: a resend of what was refused is not stored again.
      assert.equal(await store.storeMail(mail("bob", "alice", "b1"), 100), "duplicate");
    }
    await using store = await fx.open();
    assert.deepEqual(await store.pendingReceipts("alice", 10), [
      { msgId: "b1", reader: "bob", readAt: 6000, rejected: true },
      { msgId: "c1", reader: "carol", readAt: 7000 },
    ]);
    await store.deleteReceipts("alice", ["b1"]);
    assert.deepEqual((await store.pendingReceipts("alice", 10)).map((r) => r.msgId), ["c1"]);
    assert.equal((await store.lookup("alice", "bob"))?.receipts, false);
  },
);

storeTest(
  "confirmMail() keeps each message's signed read, answers in the order confirmed, and takes an id given twice once",
  async (fx) => {
    await using store = await openWith(fx, ["alice", "bob"]);
    for (const id of ["m1", "m2", "m3", "m4"]) await store.storeMail(mail("bob", "alice", id), 100);
    const signed = new Map([
      ["m3", { readAt: 5000, sig: "sig-a.path-3" }],
      ["m1", { readAt: 6000, sig: "sig-b.path-1" }],
    ]);
    const ids = ["m3", "m1", "m3", "gone", "m2", "m4"];
    const done = await store.confirmMail("bob", "alice", ids, 7000, new Set(["m4"]), signed);
    assert.deepEqual(done, ["m3", "m1", "m2", "m4"]);
    assert.deepEqual(await receiptsById(store, "alice"), [
      { msgId: "m1", reader: "bob", readAt: 6000, sig: "sig-b.path-1" },
      { msgId: "m2", reader: "bob", readAt: 7000 },
      { msgId: "m3", reader: "bob", readAt: 5000, sig: "sig-a.path-3" },
      { msgId: "m4", reader: "bob", readAt: 7000, rejected: true },
    ]);
    assert.equal(await store.countMail("bob"), 0);
    // Each is remembered as read: a resend is not stored again.
    assert.equal(await store.storeMail(mail("bob", "alice", "m4"), 100), "duplicate");
  },
);

storeTest(
  "pendingReceipts() lists oldest first, by reader, and deleteReceipts() removes",
  async (fx) => {
    await using store = await openWith(fx, ["alice", "bob", "carol"]);
    await store.storeMail(mail("bob", "alice", "b1"), 100);
    await store.storeMail(mail("carol", "alice", "c1"), 100);
    await store.storeMail(mail("bob", "alice", "b2"), 100);
    await store.confirmMail("bob", "alice", ["b2"], 3000);
    await store.confirmMail("carol", "alice", ["c1"], 2000);
    await store.confirmMail("bob", "alice", ["b1"], 1000);
    assert.deepEqual((await store.pendingReceipts("alice", 10)).map((r) => r.msgId), [
      "b1",
      "c1",
      "b2",
    ]);
    assert.deepEqual((await store.pendingReceipts("alice", 2)).map((r) => r.msgId), ["b1", "c1"]);
    assert.deepEqual((await store.pendingReceipts("alice", 10, "BOB")).map((r) => r.msgId), [
      "b1",
      "b2",
    ]);
    assert.deepEqual(await store.pendingReceipts("bob", 10), []);
    await store.deleteReceipts("alice", ["b1", "c1", "unknown"]);
    assert.deepEqual((await store.pendingReceipts("alice", 10)).map((r) => r.msgId), ["b2"]);
    await store.deleteReceipts("bob", ["b2"]); // only the sender's own receipts
    assert.equal((await store.pendingReceipts("alice", 10)).length, 1);
  },
);

storeTest(
  "a sender reusing another sender's message id cannot have that mail dropped",
  async (fx) => {
    await using store = await openWith(fx, ["alice", "bob", "mallory"]);
    // Mallory saw the id of alice's message (in a group, say) and stores one with it first.
    assert.equal(await store.storeMail(mail("bob", "mallory", "m-1"), 100), "stored");
    assert.equal(await store.storeMail(mail("bob", "alice", "m-1"), 100), "stored", "alice's too");
    assert.equal(
      await store.storeMail(mail("bob", "alice", "m-1"), 100),
      "duplicate",
      "a resend not",
    );
    assert.equal(await store.countMail("bob"), 2);
    assert.deepEqual((await store.pendingMail("bob", "alice", 10)).map((m) => m.body), [
      "body m-1",
    ]);
    assert.equal((await store.pendingMail("bob", "mallory", 10)).length, 1);
    // Confirming one sender's copy leaves the other's waiting.
    assert.deepEqual(await store.confirmMail("bob", "mallory", ["m-1"], 2000), ["m-1"]);
    assert.deepEqual((await store.pendingMail("bob", "alice", 10)).map((m) => m.msgId), ["m-1"]);
  },
);

storeTest("storeMail() refuses a resend of mail already read, until forgotten", async (fx) => {
  await using store = await openWith(fx, ["alice", "bob"]);
  assert.equal(await store.storeMail(mail("bob", "alice", "m-1"), 100), "stored");
  assert.deepEqual(await store.confirmMail("bob", "alice", ["m-1"], 5000), ["m-1"]);
  // The sender's client never got the answer (the server died after the commit) and sends it
  // again after bob read it: not stored again, so never shown again.
  assert.equal(await store.storeMail(mail("bob", "alice", "m-1"), 100), "duplicate");
  assert.equal(await store.countMail("bob"), 0);
  assert.deepEqual(await store.mailbox("bob"), []);
  // Only that sender's id is remembered.
  assert.equal(await store.storeMail(mail("alice", "bob", "m-1"), 100, 6000), "stored");
  assert.equal(await store.forgetReadMail(5000), 0, "read at 5000: not before 5000");
  assert.equal(await store.forgetReadMail(5001), 1);
  assert.equal(await store.storeMail(mail("bob", "alice", "m-1"), 100), "stored", "forgotten");
});

// ---- sessions ------------------------------------------------------------------------------

/** findSession() with a max age and grace, at `now`. */
const ages = (now: number, maxAgeMs = 60_000, graceMs = 1000) => ({ maxAgeMs, graceMs, now });

storeTest(
  "findSession() finds a saved session: its user's display name, key and age",
  async (fx) => {
    await using store = await openWith(fx, ["Alice"]);
    await store.saveSession(token(1), "alice", { now: 10_000, clientKey: "K1" });
    await store.saveSession(token(2), "alice", { now: 10_000 });
    assert.deepEqual(await store.findSession(token(1), ages(10_001)), {
      user: "Alice",
      clientKey: "K1",
      createdAt: 10_000,
      replacedAt: null,
    });
    assert.equal((await store.findSession(token(2), ages(10_001)))?.clientKey, null, "not bound");
    assert.equal(await store.findSession(token(3), ages(10_001)), undefined);
  },
);

storeTest("findSession() refuses a session at or past its maximum age", async (fx) => {
  await using store = await openWith(fx, ["alice"]);
  await store.saveSession(token(1), "alice", { now: 10_000 });
  assert.equal((await store.findSession(token(1), ages(10_499, 500)))?.user, "alice");
  assert.equal(await store.findSession(token(1), ages(10_500, 500)), undefined);
  assert.equal(await store.findSession(token(1), ages(20_000, 500)), undefined);
  assert.equal((await store.findSession(token(1), ages(20_000, 20_000)))?.user, "alice");
});

storeTest(
  "resume() replaces the token: same user and login time, bound, the old one in grace",
  async (fx) => {
    const { store } = await runningStore(fx);
    await using _ = store;
    await signUp(store, ["alice", "bob"]);
    await store.saveSession(token(1), "alice", { now: 10_000 });
    await store.saveSession(token(9), "bob", { now: 10_000 });
    const again = (from: number, to: number, now: number, key = "K") =>
      store.resume({ ...resumption(from, "a"), newTokenHash: token(to), staticKey: key }, now);
    assert.equal((await again(1, 2, 20_000))?.user, "alice");
    assert.deepEqual(await store.findSession(token(2), ages(20_001)), {
      user: "alice",
      clientKey: "K",
      createdAt: 10_000,
      replacedAt: null,
    });
    const old = await store.findSession(token(1), ages(20_500));
    assert.deepEqual([old?.replacedAt, old?.clientKey], [20_000, "K"], "bound at first use");
    assert.equal(await store.findSession(token(1), ages(21_000)), undefined, "grace over");
    // From another client (key), the token is worth nothing, and nothing changes.
    assert.equal(await again(2, 5, 20_050, "other"), undefined);
    assert.equal(await store.findSession(token(5), ages(20_051)), undefined);
    // The successor is used: everything older goes; other users keep theirs.
    assert.equal((await again(2, 3, 20_100))?.user, "alice");
    assert.equal(await store.findSession(token(1), ages(20_101)), undefined);
    assert.equal((await store.findSession(token(2), ages(20_101)))?.replacedAt, 20_100);
    assert.equal((await store.findSession(token(9), ages(20_101)))?.user, "bob");
    // The old one again, within its grace (the welcome with 3 may have been lost, or it reached
    // the client over another connection and this is a stale attempt served late): a second
    // successor, and the first one stays.
    assert.equal((await again(2, 4, 20_200))?.user, "alice");
    assert.equal((await store.findSession(token(3), ages(20_201)))?.replacedAt, null, "kept");
    assert.equal((await store.findSession(token(2), ages(20_201)))?.replacedAt, 20_100, "kept");
    assert.equal((await store.findSession(token(4), ages(20_201)))?.createdAt, 10_000);
    // Past its grace, the replaced one is refused.
    assert.equal(await again(2, 6, 20_100 + 60_000), undefined);
    assert.equal(await again(7, 8, 20_300), undefined, "unknown");
    // The successor the client holds is used: the other one and the replaced one go.
    assert.equal((await again(3, 5, 20_400))?.user, "alice");
    assert.equal(await store.findSession(token(4), ages(20_401)), undefined);
    assert.equal(await store.findSession(token(2), ages(20_401)), undefined);
    assert.equal((await store.findSession(token(5), ages(20_401)))?.user, "alice");
  },
);

storeTest("deleteSession() and deleteUserSessions() remove only what they name", async (fx) => {
  await using store = await openWith(fx, ["alice", "bob"]);
  for (const [t, u] of [[1, "alice"], [2, "alice"], [3, "alice"], [4, "bob"]] as const) {
    await store.saveSession(token(t), u, { now: 10_000 });
  }
  await store.deleteSession(token(1));
  assert.equal(await store.findSession(token(1), ages(10_001)), undefined);
  await store.deleteSession(token(1)); // deleting twice is harmless
  assert.equal(await store.deleteUserSessions("ALICE", token(3)), 1);
  assert.equal(await store.findSession(token(2), ages(10_001)), undefined);
  assert.equal((await store.findSession(token(3), ages(10_001)))?.user, "alice");
  assert.equal(await store.deleteUserSessions("alice"), 1);
  assert.equal((await store.findSession(token(4), ages(10_001)))?.user, "bob");
});

storeTest(
  "purgeSessions() deletes tokens past their age or their grace, and keeps the rest",
  async (fx) => {
    const { store } = await runningStore(fx);
    await using _ = store;
    await signUp(store, ["alice", "bob"]);
    await store.saveSession(token(1), "alice", { now: 1_000 }); // too old
    await store.saveSession(token(2), "bob", { now: 50_000 });
    const rotated = { ...resumption(2, "b"), newTokenHash: token(3), maxAgeMs: 50_000 };
    assert.equal((await store.resume(rotated, 55_000))?.user, "bob"); // 2 replaced
    assert.equal(await store.purgeSessions(ages(56_000, 50_000, 1000)), 2);
    assert.equal((await store.findSession(token(3), ages(56_000, 50_000)))?.user, "bob");
    assert.equal(await store.purgeSessions(ages(56_000, 50_000, 1000)), 0);
  },
);

storeTest("saveSession() refuses a duplicate token or an unknown user", async (fx) => {
  await using store = await openWith(fx, ["alice"]);
  await store.saveSession(token(1), "alice");
  await assert.rejects(store.saveSession(token(1), "alice"));
  await assert.rejects(store.saveSession(token(2), "ghost"));
});

// ---- relay usage ---------------------------------------------------------------------------

storeTest("addRelayBytes() counts per pair and day; 0 only reads", async (fx) => {
  await using store = await fx.open();
  const pair = "alice\nbob";
  assert.equal(await store.addRelayBytes(pair, 20_000, 0), 0, "nothing relayed yet");
  assert.equal(await store.addRelayBytes(pair, 20_000, 1_000), 1_000);
  assert.equal(await store.addRelayBytes(pair, 20_000, 2 ** 40), 2 ** 40 + 1_000, "past 2^32");
  assert.equal(await store.addRelayBytes(pair, 20_000, 0), 2 ** 40 + 1_000);
  assert.equal(await store.addRelayBytes(pair, 20_001, 5), 5, "a new day starts at 0");
  assert.equal(await store.addRelayBytes("alice\ncarol", 20_000, 7), 7, "another pair");
  // Adds at once (as several relayed links or instances do) all count.
  const totals = await Promise.all(
    Array.from({ length: 20 }, () => store.addRelayBytes("bob\ncarol", 20_000, 10)),
  );
  assert.equal(Math.max(...totals), 200);
  assert.equal(new Set(totals).size, 20, "each add saw its own total");
});

storeTest(
  "forgetRelayUsage() forgets the days before the one given, and usage survives a reopen",
  async (fx) => {
    {
      await using store = await fx.open();
      await store.addRelayBytes("alice\nbob", 19_998, 1);
      await store.addRelayBytes("alice\nbob", 19_999, 2);
      await store.addRelayBytes("alice\nbob", 20_000, 3);
    }
    await using store = await fx.open();
    assert.equal(await store.addRelayBytes("alice\nbob", 20_000, 0), 3, "kept across a reopen");
    assert.equal(await store.forgetRelayUsage(19_999), 1);
    assert.equal(await store.addRelayBytes("alice\nbob", 19_998, 0), 0);
    assert.equal(await store.addRelayBytes("alice\nbob", 19_999, 0), 2);
    assert.equal(await store.forgetRelayUsage(19_999), 0);
  },
);

// ---- durability ----------------------------------------------------------------------------

storeTest("users, contacts, registry, sessions, mail and receipts survive a reopen", async (fx) => {
  {
    await using store = await openWith(fx, ["Alice", "Bob"]);
    await store.createUser({ ...user("Carol"), mailKey: MAIL_KEY, mailKeySig: MAIL_KEY_SIG });
    await store.addContact("alice", "bob", 1000);
    await store.addContact("bob", "alice", 1001);
    const seq = await store.recordLogin("alice", "10.1.1.1", 4243, 2000);
    await store.recordLogout(seq, 3000);
    await store.recordLogin("bob", "10.2.2.2", 4244, 2500);
    await store.saveSession(token(9), "bob", { now: 2500 });
    await store.storeMail(mail("bob", "alice", "m1", 11), 100);
    await store.storeMail(mail("bob", "alice", "m2", 12), 100);
    await store.storeMail(mail("carol", "alice", "m3", 13), 100);
    await store.confirmMail("carol", "alice", ["m3"], 4000);
  }
  await using store = await fx.open();
  assert.equal(await store.schemaVersion(), SCHEMA_VERSION);
  assert.equal(await store.userCount(), 3);
  assert.equal((await store.getUser("ALICE"))?.name, "Alice");
  assert.equal((await store.getUser("carol"))?.mailKey, MAIL_KEY);
  assert.equal((await store.getUser("carol"))?.mailKeySig, MAIL_KEY_SIG);
  assert.equal(await store.createUser(user("bob")), false, "uniqueness survives too");
  assert.deepEqual(await store.listContacts("alice"), ["Bob"]);
  assert.deepEqual(await store.listWatchers("bob"), ["alice"]);
  assert.deepEqual(await store.registry(), [
    { user: "Bob", host: "10.2.2.2", port: 4244, loginAt: 2500, logoutAt: null },
    { user: "Alice", host: "10.1.1.1", port: 4243, loginAt: 2000, logoutAt: 3000 },
  ]);
  assert.equal((await store.findSession(token(9), ages(3000, 10_000)))?.user, "Bob");
  assert.deepEqual(await store.pendingMail("bob", "alice", 10), [
    { msgId: "m1", ts: 11, body: "body m1" },
    { msgId: "m2", ts: 12, body: "body m2" },
  ]);
  assert.equal(await store.countMail("bob"), 2);
  assert.equal(await store.storeMail(mail("bob", "alice", "m2", 12), 100), "duplicate");
  assert.equal(await store.storeMail(mail("carol", "alice", "m3", 13), 100), "duplicate", "read");
  assert.deepEqual(await store.pendingReceipts("alice", 10), [
    { msgId: "m3", reader: "Carol", readAt: 4000 },
  ]);
});

// ---- presence and events -------------------------------------------------------------------

/** A store running as an instance, with the events it passed on. */
async function runningStore(fx: StoreFixture, name = "i1", leaseMs?: number) {
  const store = await fx.open(leaseMs === undefined ? {} : { leaseMs });
  const events: StoreEvent[] = [];
  const lost = Promise.withResolvers<void>();
  await store.run({
    name,
    onEvent: (e) => events.push(e),
    onLeaseLost: () => lost.resolve(),
    log: () => {},
  });
  /** Waits (up to 20 s) for an event that has `fields`. */
  const seen = async (fields: Partial<Record<string, unknown>>): Promise<StoreEvent> => {
    const match = (e: StoreEvent) =>
      Object.entries(fields).every(([k, v]) => (e as Record<string, unknown>)[k] === v);
    for (const deadline = Date.now() + 20_000; Date.now() < deadline;) {
      const found = events.find(match);
      if (found) return found;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`no event ${JSON.stringify(fields)} in ${JSON.stringify(events)}`);
  };
  return { store, events, seen, lost: lost.promise };
}

/** `watcher` online, a mutual contact of `user` (so it is told of `user`'s presence). */
async function watching(store: ServerStore, watcher: string, user: string): Promise<void> {
  await store.addContact(watcher, user);
  await store.addContact(user, watcher);
  const seq = await store.recordLogin(watcher, "10.0.0.8", 1, 100);
  await store.attach(attachment(watcher, seq, `${watcher}-watching`, 100));
}

function attachment(user: string, seq: number, attach: string, loginAt = 5000) {
  return {
    user,
    host: "10.0.0.9",
    peerPort: 4000 + seq,
    loginAt,
    registrySeq: seq,
    attach,
    staticKey: `key-of-${attach}`,
  };
}

storeTest("lookup() reads the target, both directions of the contact and receipts", async (fx) => {
  await using store = await openWith(fx, ["Alice", "Bob", "carol"]);
  assert.equal(await store.lookup("alice", "nobody"), undefined);
  assert.deepEqual(await store.lookup("alice", "BOB"), {
    user: { nameKey: "bob", name: "Bob", publicKey: KEY, mailKey: "", mailKeySig: "" },
    presence: undefined,
    mine: false,
    theirs: false,
    receipts: false,
  });
  // Each direction on its own, then both; a removal is seen by the next lookup.
  await store.addContact("alice", "bob");
  assert.deepEqual(pick(await store.lookup("ALICE", "bob")), { mine: true, theirs: false });
  assert.deepEqual(pick(await store.lookup("bob", "alice")), { mine: false, theirs: true });
  await store.addContact("bob", "alice");
  assert.deepEqual(pick(await store.lookup("alice", "bob")), { mine: true, theirs: true });
  assert.deepEqual(pick(await store.lookup("carol", "bob")), { mine: false, theirs: false });
  await store.removeContact("bob", "alice");
  assert.deepEqual(pick(await store.lookup("alice", "bob")), { mine: true, theirs: false });
  // Receipts: only those of the target's reading, for the asker, until they are deleted.
  await store.storeMail(mail("bob", "alice", "b1"), 100);
  await store.storeMail(mail("carol", "alice", "c1"), 100);
  await store.confirmMail("carol", "alice", ["c1"], 2000);
  assert.equal((await store.lookup("alice", "bob"))?.receipts, false, "carol read, not bob");
  assert.equal((await store.lookup("alice", "carol"))?.receipts, true);
  assert.equal((await store.lookup("carol", "alice"))?.receipts, false, "the other way round");
  await store.deleteReceipts("alice", ["c1"]);
  assert.equal((await store.lookup("alice", "carol"))?.receipts, false);
});

function pick(found: LookupRecord | undefined) {
  return { mine: found?.mine, theirs: found?.theirs };
}

storeTest("lookup() gives where the target is online, and nothing once they left", async (fx) => {
  const { store } = await runningStore(fx, "here:1");
  await using _ = store;
  await signUp(store, ["alice", "Bob"]);
  await store.createUser({ ...user("Keyed"), mailKey: MAIL_KEY, mailKeySig: MAIL_KEY_SIG });
  assert.deepEqual((await store.lookup("alice", "keyed"))?.user, {
    nameKey: "keyed",
    name: "Keyed",
    publicKey: KEY,
    mailKey: MAIL_KEY,
    mailKeySig: MAIL_KEY_SIG,
  });
  const seq = await store.recordLogin("bob", "10.0.0.9", 1, 5000);
  await store.attach(attachment("Bob", seq, "b-1"));
  const expected = await store.presenceOf("bob");
  assert.ok(expected);
  assert.deepEqual((await store.lookup("alice", "BOB"))?.presence, expected);
  assert.equal((await store.lookup("alice", "alice"))?.presence, undefined);
  assert.equal(await store.detach("bob", "b-1", 6000), true);
  assert.equal((await store.lookup("alice", "bob"))?.presence, undefined);
});

storeTest("attach() puts a user in the directory on this instance", async (fx) => {
  const { store, seen } = await runningStore(fx, "here:1");
  await using _ = store;
  await signUp(store, ["Alice", "bob"]);
  await watching(store, "bob", "alice");
  assert.equal(await store.presenceOf("alice"), undefined);
  const seq = await store.recordLogin("alice", "10.0.0.9", 1, 5000);
  await store.attach(attachment("Alice", seq, "a-1"));
  const online = await seen({ kind: "presence", user: "alice", online: true });
  // Named as she signed up: the server tells her watchers without looking her up.
  assert.equal(online.kind === "presence" && online.name, "Alice");
  const expected = {
    user: "Alice",
    host: "10.0.0.9",
    peerPort: 4000 + seq,
    loginAt: 5000,
    staticKey: "key-of-a-1",
  };
  assert.deepEqual(await store.presenceOf("ALICE"), { ...expected, instance: "here:1" });
  assert.deepEqual((await store.onlineUsers()).filter((p) => p.user === "Alice"), [
    { ...expected, instance: "here:1" },
  ]);
  assert.deepEqual([...await store.onlineAmong(["alice", "Bob", "nobody"])].sort(), [
    "alice",
    "bob",
  ]);
  assert.deepEqual(await store.registry("alice"), [
    { user: "Alice", host: "10.0.0.9", port: 4000 + seq, loginAt: 5000, logoutAt: null },
  ]);
});

storeTest("a second attach() replaces the first: kick, old registry row closed", async (fx) => {
  const { store, events, seen } = await runningStore(fx);
  await using _ = store;
  await signUp(store, ["alice", "bob"]);
  await watching(store, "bob", "alice");
  const first = await store.recordLogin("alice", "h", 1, 1000);
  await store.attach(attachment("alice", first, "a-1", 1000));
  await seen({ kind: "presence", online: true });
  const second = await store.recordLogin("alice", "h", 1, 2000);
  await store.attach(attachment("alice", second, "a-2", 2000));
  await seen({ kind: "kick", user: "alice", attach: "a-2", replaced: "a-1" });
  assert.equal(
    events.filter((e) => e.kind === "presence" && e.user === "alice").length,
    1,
    "no second announcement",
  );
  assert.deepEqual((await store.registry("alice")).map((r) => r.logoutAt), [null, 2000]);
  // The replaced connection ends later: it leaves the directory alone.
  assert.equal(await store.detach("alice", "a-1", 3000), false);
  assert.equal((await store.presenceOf("alice"))?.loginAt, 2000);
  assert.deepEqual((await store.registry("alice")).map((r) => r.logoutAt), [null, 2000]);
  // The one in place ends: offline, announced, its row closed.
  assert.equal(await store.detach("ALICE", "a-2", 4000), true);
  await seen({ kind: "presence", user: "alice", online: false });
  assert.equal(await store.presenceOf("alice"), undefined);
  assert.deepEqual((await store.onlineUsers()).map((p) => p.user), ["bob"]);
  assert.deepEqual((await store.registry("alice")).map((r) => r.logoutAt), [4000, 2000]);
});

storeTest("a resume re-opens its registry row when it attaches", async (fx) => {
  const { store } = await runningStore(fx);
  await using _ = store;
  await signUp(store, ["alice"]);
  const seq = await store.recordLogin("alice", "h", 1, 1000);
  await store.attach(attachment("alice", seq, "a-1", 1000));
  assert.equal(await store.detach("alice", "a-1", 1500), true);
  await store.attach({ ...attachment("alice", seq, "a-2", 2000), host: "new-host" });
  assert.deepEqual(await store.registry("alice"), [
    { user: "alice", host: "new-host", port: 4000 + seq, loginAt: 1000, logoutAt: null },
  ]);
});

/** A resume of `token(seed)` from 10.0.0.7, as the server makes it. */
function resumption(seed: number, attach: string, maxAgeMs = 60_000) {
  return {
    tokenHash: token(seed),
    newTokenHash: token(seed + 100),
    maxAgeMs,
    graceMs: 1000,
    host: "10.0.0.7",
    peerPort: 4500,
    attach,
    staticKey: `key-of-${attach}`,
  };
}

storeTest("resume() with an unknown or expired token changes nothing", async (fx) => {
  const { store, events } = await runningStore(fx);
  await using _ = store;
  await signUp(store, ["alice", "bob"]);
  await watching(store, "bob", "alice");
  await store.saveSession(token(1), "alice", { now: 10_000 });
  assert.equal(await store.resume(resumption(2, "a-1"), 10_001), undefined, "unknown");
  assert.equal(await store.resume(resumption(1, "a-1", 500), 10_500), undefined, "expired");
  assert.equal(await store.presenceOf("alice"), undefined);
  assert.deepEqual(await store.registry("alice"), []);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(events.filter((e) => e.kind !== "presence" || e.user === "alice"), []);
});

storeTest(
  "resume() re-opens the latest login with the new address and takes the place",
  async (fx) => {
    const { store, seen } = await runningStore(fx, "here:2");
    await using _ = store;
    await signUp(store, ["Alice", "bob"]);
    await watching(store, "bob", "alice");
    await store.saveSession(token(1), "alice", { now: 900 });
    await store.recordLogin("alice", "h", 1, 500);
    const seq = await store.recordLogin("alice", "h", 1, 1000);
    await store.attach(attachment("alice", seq, "a-1", 1000));
    assert.equal(await store.detach("alice", "a-1", 1500), true);
    const resumed = await store.resume(resumption(1, "a-2"), 2000);
    assert.deepEqual(resumed, { user: "Alice", registrySeq: seq, loginAt: 1000 });
    await seen({ kind: "presence", user: "alice", online: true });
    assert.deepEqual(await store.presenceOf("alice"), {
      user: "Alice",
      host: "10.0.0.7",
      peerPort: 4500,
      loginAt: 1000,
      instance: "here:2",
      staticKey: "key-of-a-2",
    });
    assert.deepEqual((await store.registry("alice")).map((r) => [r.host, r.logoutAt]), [
      ["10.0.0.7", null],
      ["h", null],
    ]);
    // The place is this attachment's: the old one cannot take it out, this one can.
    assert.equal(await store.detach("alice", "a-1", 2500), false);
    assert.equal(await store.detach("alice", "a-2", 2600), true);
    assert.equal(await store.presenceOf("alice"), undefined);
  },
);

storeTest("resume() of a user without a login row records one", async (fx) => {
  const { store } = await runningStore(fx);
  await using _ = store;
  await signUp(store, ["alice"]);
  await store.saveSession(token(1), "alice", { now: 900 });
  const resumed = await store.resume(resumption(1, "a-1"), 2000);
  assert.equal(resumed?.loginAt, 2000);
  assert.deepEqual(await store.registry("alice"), [
    { user: "alice", host: "10.0.0.7", port: 4500, loginAt: 2000, logoutAt: null },
  ]);
  assert.equal((await store.presenceOf("alice"))?.loginAt, 2000);
});

storeTest("resume() while attached replaces that attachment with a kick", async (fx) => {
  const { store, seen } = await runningStore(fx);
  await using _ = store;
  await signUp(store, ["alice"]);
  await store.saveSession(token(1), "alice", { now: 900 });
  const seq = await store.recordLogin("alice", "h", 1, 1000);
  await store.attach(attachment("alice", seq, "a-1", 1000));
  assert.equal((await store.resume(resumption(1, "a-2"), 2000))?.registrySeq, seq);
  await seen({ kind: "kick", user: "alice", attach: "a-2", replaced: "a-1" });
  assert.deepEqual((await store.registry("alice")).map((r) => r.logoutAt), [null]);
  assert.equal(await store.detach("alice", "a-1", 3000), false);
  assert.equal((await store.presenceOf("alice"))?.host, "10.0.0.7");
});

storeTest(
  "resumeMany() answers each in order, in one transaction, as resume() would",
  async (fx) => {
    const { store, seen } = await runningStore(fx, "here:3");
    await using _ = store;
    await signUp(store, ["alice", "bob", "carol"]);
    await watching(store, "carol", "alice");
    await store.saveSession(token(1), "alice", { now: 900 });
    await store.saveSession(token(2), "bob", { now: 900 });
    const seq = await store.recordLogin("alice", "h", 1, 1000);
    const answers = await store.resumeMany([
      resumption(1, "a-1"),
      resumption(9, "x-1"), // unknown token: undefined, nothing changed
      resumption(2, "b-1"),
    ], 2000);
    assert.deepEqual(answers, [
      { user: "alice", registrySeq: seq, loginAt: 1000 },
      undefined,
      { user: "bob", registrySeq: answers[2]?.registrySeq, loginAt: 2000 },
    ]);
    await seen({ kind: "presence", user: "alice", online: true });
    assert.equal((await store.presenceOf("bob"))?.instance, "here:3");
    assert.deepEqual(await store.resumeMany([], 2000), []);
    // A server closing takes everyone out in one step; a replaced attachment stays.
    assert.deepEqual(
      await store.detachMany([
        { user: "alice", attach: "a-1" },
        { user: "bob", attach: "not-bobs" },
      ], 3000),
      [true, false],
    );
    assert.equal(await store.presenceOf("alice"), undefined);
    assert.equal((await store.presenceOf("bob"))?.host, "10.0.0.7");
    assert.deepEqual((await store.registry("alice")).map((r) => r.logoutAt), [3000]);
  },
);

storeTest(
  "stored mail, confirmed mail and published events reach the running instance",
  async (fx) => {
    const { store, seen } = await runningStore(fx);
    await using _ = store;
    await signUp(store, ["alice", "bob"]);
    await store.attach(attachment("bob", await store.recordLogin("bob", "h", 1), "b-1"));
    await store.attach(attachment("alice", await store.recordLogin("alice", "h", 1), "a-1"));
    assert.equal(await store.storeMail(mail("bob", "alice", "m1"), 10), "stored");
    await seen({ kind: "mail", to: "bob", from: "alice" });
    await store.confirmMail("bob", "alice", ["m1"]);
    await seen({ kind: "receipts", to: "alice" });
    await store.publish({ kind: "check", user: "bob", reporter: "alice" });
    await seen({ kind: "check", user: "bob", reporter: "alice" });
  },
);
