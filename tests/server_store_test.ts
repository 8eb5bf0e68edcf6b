/**
 * Unit tests for lib/server/store.ts: the server's SQLite state (accounts, contacts, the
 * login registry, sessions), each test in its own temporary directory.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { nameKey, SCHEMA_VERSION, ServerStore } from "../lib/server/store.ts";

/** A temporary directory, removed with everything in it on dispose. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "confab-store-test-" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}

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

/** Opens `store` with the given users already signed up. */
function openWith(dir: string, names: readonly string[]): ServerStore {
  const store = new ServerStore(dir);
  names.forEach((n, i) => assert.equal(store.createUser(user(n, i), 1000 + i), true, n));
  return store;
}

/** Every registry row of the file, oldest first, read through a separate connection. */
function allRegistryRows(path: string): { seq: number; user: string; logout_at: number | null }[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return db.prepare("SELECT seq, user, logout_at FROM registry ORDER BY seq").all() as {
      seq: number;
      user: string;
      logout_at: number | null;
    }[];
  } finally {
    db.close();
  }
}

const token = (n: number) => new Uint8Array(32).fill(n);

// ---- opening and migrations ----------------------------------------------------------------

Deno.test("ServerStore creates its data directory (mode 0700) and database file", async () => {
  await using dir = await tempDir();
  const dataDir = join(dir.path, "nested", "data");
  using store = new ServerStore(dataDir);
  assert.equal(store.path, join(dataDir, "confab-server.sqlite"));
  assert.ok(Deno.statSync(store.path).isFile);
  if (Deno.build.os !== "windows") assert.equal(Deno.statSync(dataDir).mode! & 0o777, 0o700);
});

Deno.test("ServerStore migrations set schemaVersion and a new store is empty", async () => {
  await using dir = await tempDir();
  using store = new ServerStore(dir.path);
  assert.equal(store.schemaVersion, SCHEMA_VERSION);
  assert.equal(store.userCount(), 0);
  assert.deepEqual(store.registry(), []);
});

Deno.test("ServerStore reopens an existing database without re-running migrations", async () => {
  await using dir = await tempDir();
  new ServerStore(dir.path).close();
  // A second run of the first migration would fail with "table users already exists".
  using again = new ServerStore(dir.path);
  assert.equal(again.schemaVersion, SCHEMA_VERSION);
});

Deno.test("ServerStore migrates a version 2 database (no mail keys), keeping its users", async () => {
  assert.ok(SCHEMA_VERSION >= 3, "migration 3 adds the mail keys");
  await using dir = await tempDir();
  openWith(dir.path, ["Alice"]).close();
  // Turn the file back into what a build before mail keys left behind.
  const db = new DatabaseSync(join(dir.path, "confab-server.sqlite"));
  try {
    db.exec("ALTER TABLE users DROP COLUMN mail_key");
    db.exec("ALTER TABLE users DROP COLUMN mail_key_sig");
    db.exec("PRAGMA user_version = 2");
  } finally {
    db.close();
  }
  using store = new ServerStore(dir.path);
  assert.equal(store.schemaVersion, SCHEMA_VERSION);
  const alice = store.getUser("alice");
  assert.ok(alice);
  assert.equal(alice.name, "Alice");
  assert.equal(alice.publicKey, KEY);
  // An account from before has no mail key yet: empty, not missing.
  assert.equal(alice.mailKey, "");
  assert.equal(alice.mailKeySig, "");
  assert.equal(
    store.createUser({ ...user("bob"), mailKey: MAIL_KEY, mailKeySig: MAIL_KEY_SIG }),
    true,
  );
  assert.equal(store.getUser("bob")?.mailKey, MAIL_KEY);
});

Deno.test("ServerStore opens the database in WAL mode", async () => {
  await using dir = await tempDir();
  using store = new ServerStore(dir.path);
  const db = new DatabaseSync(store.path);
  try {
    const row = db.prepare("PRAGMA journal_mode").get() as { journal_mode: string };
    assert.equal(row.journal_mode, "wal");
  } finally {
    db.close();
  }
});

Deno.test("ServerStore.close() is idempotent", async () => {
  await using dir = await tempDir();
  const store = new ServerStore(dir.path);
  store.close();
  store.close();
  store[Symbol.dispose]();
  assert.throws(() => store.userCount());
});

// ---- users ---------------------------------------------------------------------------------

Deno.test("nameKey() lower-cases a name", () => {
  assert.equal(nameKey("Alice.B_9-X"), "alice.b_9-x");
});

Deno.test("ServerStore.createUser() stores a user that getUser() returns intact", async () => {
  await using dir = await tempDir();
  using store = new ServerStore(dir.path);
  const alice = user("Alice", 7);
  assert.equal(store.createUser(alice), true);
  const got = store.getUser("Alice");
  assert.ok(got);
  assert.equal(got.nameKey, "alice");
  assert.equal(got.name, "Alice");
  assert.deepEqual(new Uint8Array(got.salt), alice.salt);
  assert.deepEqual(new Uint8Array(got.hash), alice.hash);
  assert.equal(got.publicKey, KEY);
  assert.equal(got.mailKey, "", "no mail key was given");
  assert.equal(got.mailKeySig, "");
  assert.equal(store.userCount(), 1);
});

Deno.test("ServerStore.createUser() stores the mail key and its signature", async () => {
  await using dir = await tempDir();
  using store = new ServerStore(dir.path);
  assert.equal(
    store.createUser({ ...user("Alice", 7), mailKey: MAIL_KEY, mailKeySig: MAIL_KEY_SIG }),
    true,
  );
  const got = store.getUser("alice");
  assert.ok(got);
  assert.equal(got.publicKey, KEY);
  assert.equal(got.mailKey, MAIL_KEY);
  assert.equal(got.mailKeySig, MAIL_KEY_SIG);
});

Deno.test("ServerStore usernames are unique case-insensitively", async () => {
  await using dir = await tempDir();
  using store = new ServerStore(dir.path);
  assert.equal(store.createUser(user("Alice", 1)), true);
  assert.equal(store.createUser(user("alice", 2)), false);
  assert.equal(store.createUser(user("ALICE", 3)), false);
  assert.equal(store.userCount(), 1);
  const got = store.getUser("aLiCe");
  assert.ok(got);
  assert.equal(got.name, "Alice", "the first signup's spelling is kept");
  assert.deepEqual(new Uint8Array(got.salt), new Uint8Array(16).fill(1), "and its credentials");
});

Deno.test("ServerStore.getUser() returns undefined for an unknown name", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice"]);
  assert.equal(store.getUser("bob"), undefined);
  assert.equal(store.getUser("alice2"), undefined);
  assert.equal(store.getUser(""), undefined);
});

// ---- contacts ------------------------------------------------------------------------------

Deno.test("ServerStore.addContact() adds once, case-insensitively", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["Alice", "Bob"]);
  assert.equal(store.addContact("alice", "bob"), true);
  assert.equal(store.addContact("ALICE", "BOB"), false);
  assert.equal(store.countContacts("Alice"), 1);
  assert.equal(store.isContact("alice", "BOB"), true);
  assert.equal(store.isContact("bob", "alice"), false, "contacts are one-way");
  assert.equal(store.countContacts("bob"), 0);
});

Deno.test("ServerStore.listContacts() gives display names in the order they were added", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice", "Zed", "Bob", "Carol"]);
  store.addContact("alice", "carol", 3000);
  store.addContact("alice", "bob", 2000);
  store.addContact("alice", "zed", 1000);
  assert.deepEqual(store.listContacts("ALICE"), ["Zed", "Bob", "Carol"]);
  assert.deepEqual(store.listContacts("bob"), []);
});

Deno.test("ServerStore.listContacts() orders contacts added at the same time by name", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice", "Zed", "Bob"]);
  store.addContact("alice", "zed", 5000);
  store.addContact("alice", "bob", 5000);
  assert.deepEqual(store.listContacts("alice"), ["Bob", "Zed"]);
});

Deno.test("ServerStore.removeContact() removes once and only that contact", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice", "bob", "carol"]);
  store.addContact("alice", "bob");
  store.addContact("alice", "carol");
  store.addContact("bob", "carol");
  assert.equal(store.removeContact("Alice", "Bob"), true);
  assert.equal(store.removeContact("alice", "bob"), false);
  assert.equal(store.removeContact("alice", "nobody"), false);
  assert.deepEqual(store.listContacts("alice"), ["carol"]);
  assert.deepEqual(store.listContacts("bob"), ["carol"]);
  assert.equal(store.isContact("alice", "bob"), false);
});

Deno.test("ServerStore.listWatchers() gives the name keys of users who list a contact", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["Alice", "Bob", "Carol", "Dave"]);
  store.addContact("Alice", "Carol");
  store.addContact("Bob", "Carol");
  store.addContact("Carol", "Dave");
  assert.deepEqual(store.listWatchers("CAROL").sort(), ["alice", "bob"]);
  assert.deepEqual(store.listWatchers("dave"), ["carol"]);
  assert.deepEqual(store.listWatchers("alice"), []);
  store.removeContact("bob", "carol");
  assert.deepEqual(store.listWatchers("carol"), ["alice"]);
});

Deno.test("ServerStore.addContact() refuses a user that does not exist", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice"]);
  assert.throws(() => store.addContact("alice", "ghost"));
  assert.throws(() => store.addContact("ghost", "alice"));
  assert.equal(store.countContacts("alice"), 0);
});

// ---- registry ------------------------------------------------------------------------------

Deno.test("ServerStore.recordLogin() opens a registry row that recordLogout() closes", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["Alice"]);
  const seq = store.recordLogin("alice", "10.0.0.5", 40000, 5000);
  assert.deepEqual(store.registry(), [
    { user: "Alice", host: "10.0.0.5", port: 40000, loginAt: 5000, logoutAt: null },
  ]);
  store.recordLogout(seq, 9000);
  assert.deepEqual(store.registry(), [
    { user: "Alice", host: "10.0.0.5", port: 40000, loginAt: 5000, logoutAt: 9000 },
  ]);
});

Deno.test("ServerStore.registry() lists the latest login of each user, or every login of one", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice", "bob", "carol"]);
  const a1 = store.recordLogin("alice", "h1", 1, 1000);
  const b1 = store.recordLogin("bob", "h2", 2, 2000);
  assert.ok(b1 > a1, "sequence numbers increase");
  store.recordLogout(a1, 3000);
  store.recordLogin("alice", "h3", 3, 4000);
  assert.deepEqual(store.registry(), [
    { user: "alice", host: "h3", port: 3, loginAt: 4000, logoutAt: null },
    { user: "bob", host: "h2", port: 2, loginAt: 2000, logoutAt: null },
  ]);
  assert.deepEqual(store.registry("ALICE"), [
    { user: "alice", host: "h3", port: 3, loginAt: 4000, logoutAt: null },
    { user: "alice", host: "h1", port: 1, loginAt: 1000, logoutAt: 3000 },
  ]);
  assert.equal(store.registry("alice", 1).length, 1);
  assert.deepEqual(store.registry("carol"), []);
});

Deno.test("ServerStore.reopenLogin() clears the logout and updates the address", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice"]);
  const seq = store.recordLogin("alice", "old-host", 1111, 1000);
  store.recordLogout(seq, 2000);
  store.reopenLogin(seq, "new-host", 2222);
  assert.deepEqual(store.registry("alice"), [
    { user: "alice", host: "new-host", port: 2222, loginAt: 1000, logoutAt: null },
  ]);
});

Deno.test("ServerStore.latestLogin() gives the newest registry row of a user", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice", "bob"]);
  assert.equal(store.latestLogin("alice"), undefined);
  const first = store.recordLogin("alice", "h", 1, 1000);
  assert.equal(store.latestLogin("ALICE"), first);
  store.recordLogin("bob", "h", 1, 1500);
  const second = store.recordLogin("alice", "h", 1, 2000);
  assert.notEqual(second, first);
  assert.equal(store.latestLogin("alice"), second);
});

Deno.test("ServerStore.correctLastLogout() rewrites only the latest finished session", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice", "bob"]);
  const s1 = store.recordLogin("alice", "h", 1, 1000);
  store.recordLogout(s1, 2000);
  const s2 = store.recordLogin("alice", "h", 1, 3000);
  store.recordLogout(s2, 9000); // the server's guess when the connection dropped
  const b = store.recordLogin("bob", "h", 1, 3500);
  store.recordLogout(b, 9500);

  store.correctLastLogout("ALICE", 4000); // the client's saved, true logout time
  assert.equal(store.registry("alice")[0]!.logoutAt, 4000);
  assert.deepEqual(
    allRegistryRows(store.path).map((r) => [r.user, r.logout_at]),
    [["alice", 2000], ["alice", 4000], ["bob", 9500]],
  );
});

Deno.test("ServerStore.correctLastLogout() ignores a time before that session's login", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice"]);
  const seq = store.recordLogin("alice", "h", 1, 5000);
  store.recordLogout(seq, 9000);
  store.correctLastLogout("alice", 4999);
  assert.equal(store.registry("alice")[0]!.logoutAt, 9000);
  store.correctLastLogout("alice", 5000);
  assert.equal(store.registry("alice")[0]!.logoutAt, 5000);
});

Deno.test("ServerStore.correctLastLogout() leaves an open session alone", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice"]);
  store.recordLogin("alice", "h", 1, 5000);
  store.correctLastLogout("alice", 6000);
  assert.equal(store.registry("alice")[0]!.logoutAt, null);
  store.correctLastLogout("nobody", 6000); // an unknown user is not an error
});

Deno.test("ServerStore.closeDanglingLogins() closes every open row and counts them", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice", "bob", "carol"]);
  store.recordLogin("alice", "h", 1, 1000);
  store.recordLogin("bob", "h", 1, 2000);
  const c = store.recordLogin("carol", "h", 1, 3000);
  store.recordLogout(c, 3500);
  assert.equal(store.closeDanglingLogins(7000), 2);
  const byUser = Object.fromEntries(store.registry().map((r) => [r.user, r.logoutAt]));
  assert.deepEqual(byUser, { alice: 7000, bob: 7000, carol: 3500 });
  assert.equal(store.closeDanglingLogins(8000), 0);
});

Deno.test("ServerStore.recordLogin() refuses a user that does not exist", async () => {
  await using dir = await tempDir();
  using store = new ServerStore(dir.path);
  assert.throws(() => store.recordLogin("ghost", "h", 1));
});

// ---- sessions ------------------------------------------------------------------------------

Deno.test("ServerStore.sessionUser() finds a saved session's display name", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["Alice"]);
  store.saveSession(token(1), "alice", 10_000);
  assert.equal(store.sessionUser(token(1), 60_000, 10_001), "Alice");
  assert.equal(store.sessionUser(token(2), 60_000, 10_001), undefined);
});

Deno.test("ServerStore.sessionUser() refuses a session at or past its maximum age", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice"]);
  store.saveSession(token(1), "alice", 10_000);
  assert.equal(store.sessionUser(token(1), 500, 10_499), "alice");
  assert.equal(store.sessionUser(token(1), 500, 10_500), undefined);
  assert.equal(store.sessionUser(token(1), 500, 20_000), undefined);
  assert.equal(store.sessionUser(token(1), 20_000, 20_000), "alice", "a longer max age allows it");
});

Deno.test("ServerStore.deleteSession() removes only that session", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice", "bob"]);
  store.saveSession(token(1), "alice", 10_000);
  store.saveSession(token(2), "bob", 10_000);
  store.deleteSession(token(1));
  assert.equal(store.sessionUser(token(1), 1000, 10_001), undefined);
  assert.equal(store.sessionUser(token(2), 1000, 10_001), "bob");
  store.deleteSession(token(1)); // deleting twice is harmless
});

Deno.test("ServerStore.saveSession() refuses a duplicate token or an unknown user", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice"]);
  store.saveSession(token(1), "alice");
  assert.throws(() => store.saveSession(token(1), "alice"));
  assert.throws(() => store.saveSession(token(2), "ghost"));
});

// ---- mail ----------------------------------------------------------------------------------

const mail = (sender: string, msgId: string, body = `from ${sender}`) => ({
  recipient: "bob",
  sender,
  msgId,
  ts: 1000,
  body,
});

Deno.test("a sender reusing another sender's message id cannot have that mail dropped", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice", "bob", "mallory"]);
  // Mallory saw the id of alice's message (in a group, say) and stores one with it first.
  assert.equal(store.storeMail(mail("mallory", "m-1"), 100), "stored");
  assert.equal(store.storeMail(mail("alice", "m-1"), 100), "stored", "alice's is stored too");
  assert.equal(store.storeMail(mail("alice", "m-1"), 100), "duplicate", "a resend is not");
  assert.equal(store.countMail("bob"), 2);
  assert.deepEqual(store.pendingMail("bob", "alice", 10).map((m) => m.body), ["from alice"]);
  assert.deepEqual(store.pendingMail("bob", "mallory", 10).map((m) => m.body), ["from mallory"]);
  // Confirming one sender's copy leaves the other's waiting.
  assert.deepEqual(store.confirmMail("bob", "mallory", ["m-1"], 2000), ["m-1"]);
  assert.deepEqual(store.pendingMail("bob", "alice", 10).map((m) => m.msgId), ["m-1"]);
});

Deno.test("ServerStore.storeMail() refuses a resend of mail already read, until forgotten", async () => {
  await using dir = await tempDir();
  using store = openWith(dir.path, ["alice", "bob"]);
  assert.equal(store.storeMail(mail("alice", "m-1"), 100), "stored");
  assert.deepEqual(store.confirmMail("bob", "alice", ["m-1"], 5000), ["m-1"]);
  // The sender's client never got the answer (the server died after the commit) and sends it
  // again after bob read it: not stored again, so never shown again.
  assert.equal(store.storeMail(mail("alice", "m-1"), 100), "duplicate");
  assert.equal(store.countMail("bob"), 0);
  assert.deepEqual(store.mailbox("bob"), []);
  // Only that sender's id is remembered.
  assert.equal(store.storeMail(mail("bob", "m-1", "to alice"), 100, 6000), "stored");
  assert.equal(store.forgetReadMail(5000), 0, "read at 5000: not before 5000");
  assert.equal(store.forgetReadMail(5001), 1);
  assert.equal(store.storeMail(mail("alice", "m-1"), 100), "stored", "forgotten: stored again");
});

Deno.test("ServerStore remembers read mail across a reopen", async () => {
  await using dir = await tempDir();
  {
    using store = openWith(dir.path, ["alice", "bob"]);
    store.storeMail(mail("alice", "m-1"), 100);
    store.confirmMail("bob", "alice", ["m-1"], 5000);
  }
  using store = new ServerStore(dir.path);
  assert.equal(store.storeMail(mail("alice", "m-1"), 100), "duplicate");
});

Deno.test("ServerStore migrates a version 3 mailbox, keeping its mail in order", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "confab-server.sqlite");
  {
    using store = openWith(dir.path, ["alice", "bob", "carol"]);
    store.storeMail(mail("alice", "m-1", "one"), 100);
    store.storeMail(mail("carol", "m-2", "two"), 100);
    store.storeMail(mail("alice", "m-3", "three"), 100);
  }
  // Back to the version 3 schema: mail unique by (recipient, msg_id), no mail_read.
  const db = new DatabaseSync(path);
  try {
    db.exec(`
      DROP TABLE mail_read;
      CREATE TABLE mail_old (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient TEXT NOT NULL REFERENCES users(name_key),
        sender TEXT NOT NULL REFERENCES users(name_key),
        msg_id TEXT NOT NULL, ts INTEGER NOT NULL, body TEXT NOT NULL,
        stored_at INTEGER NOT NULL, UNIQUE (recipient, msg_id)) STRICT;
      INSERT INTO mail_old SELECT * FROM mail;
      DROP TABLE mail;
      ALTER TABLE mail_old RENAME TO mail;
      CREATE INDEX mail_by_sender ON mail(recipient, sender, seq);
      PRAGMA user_version = 3;
    `);
  } finally {
    db.close();
  }
  using store = new ServerStore(dir.path);
  assert.equal(store.schemaVersion, SCHEMA_VERSION);
  assert.deepEqual(store.mailbox("bob").map((e) => [e.from, e.count]), [["alice", 2], [
    "carol",
    1,
  ]]);
  assert.deepEqual(store.pendingMail("bob", "alice", 10).map((m) => m.body), ["one", "three"]);
  assert.equal(store.storeMail(mail("carol", "m-1", "same id, other sender"), 100), "stored");
  const check = new DatabaseSync(path, { readOnly: true });
  try {
    assert.equal(check.prepare("PRAGMA integrity_check").get()?.integrity_check, "ok");
  } finally {
    check.close();
  }
});

// ---- durability ----------------------------------------------------------------------------

Deno.test("ServerStore keeps users, contacts, registry and sessions across a reopen", async () => {
  await using dir = await tempDir();
  {
    using store = openWith(dir.path, ["Alice", "Bob"]);
    store.createUser({ ...user("Carol"), mailKey: MAIL_KEY, mailKeySig: MAIL_KEY_SIG });
    store.addContact("alice", "bob", 1000);
    const seq = store.recordLogin("alice", "10.1.1.1", 4243, 2000);
    store.recordLogout(seq, 3000);
    store.recordLogin("bob", "10.2.2.2", 4244, 2500);
    store.saveSession(token(9), "bob", 2500);
  }
  using store = new ServerStore(dir.path);
  assert.equal(store.schemaVersion, SCHEMA_VERSION);
  assert.equal(store.userCount(), 3);
  assert.equal(store.getUser("ALICE")?.name, "Alice");
  assert.equal(store.getUser("carol")?.mailKey, MAIL_KEY);
  assert.equal(store.getUser("carol")?.mailKeySig, MAIL_KEY_SIG);
  assert.equal(store.createUser(user("bob")), false, "uniqueness survives too");
  assert.deepEqual(store.listContacts("alice"), ["Bob"]);
  assert.deepEqual(store.listWatchers("bob"), ["alice"]);
  assert.deepEqual(store.registry(), [
    { user: "Bob", host: "10.2.2.2", port: 4244, loginAt: 2500, logoutAt: null },
    { user: "Alice", host: "10.1.1.1", port: 4243, loginAt: 2000, logoutAt: 3000 },
  ]);
  assert.equal(store.sessionUser(token(9), 10_000, 3000), "Bob");
});
