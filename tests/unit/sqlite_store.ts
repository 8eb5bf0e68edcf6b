/**
 * What only the SQLite store does: its file in the data directory, WAL mode, and migrating a
 * file an older build left behind. Everything else is in the conformance tests
 * (`server_store_test.ts`), which run against every backend.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { SCHEMA_VERSION } from "../../lib/server/migrations.ts";
import { SQLITE_FILE, SqliteStore } from "../../lib/server/sqlite_store.ts";
import { makeVersion2File, undoMigrationsFrom5 } from "../support/store_backends.ts";
import { tempDir } from "../support/temp_dir.ts";

Deno.test("SqliteStore creates its data directory (mode 0700) and database file", async () => {
  await using dir = await tempDir();
  const dataDir = join(dir.path, "nested", "data");
  await using store = new SqliteStore(dataDir);
  assert.equal(store.path, join(dataDir, SQLITE_FILE));
  assert.equal(store.location, store.path);
  assert.ok(Deno.statSync(store.path).isFile);
  if (Deno.build.os !== "windows") assert.equal(Deno.statSync(dataDir).mode! & 0o777, 0o700);
});

Deno.test("SqliteStore opens the database in WAL mode", async () => {
  await using dir = await tempDir();
  await using store = new SqliteStore(dir.path);
  const db = new DatabaseSync(store.path);
  try {
    const row = db.prepare("PRAGMA journal_mode").get() as { journal_mode: string };
    assert.equal(row.journal_mode, "wal");
  } finally {
    db.close();
  }
});

Deno.test("SqliteStore migrates a version 2 file (no mail keys), keeping its users", async () => {
  assert.ok(SCHEMA_VERSION >= 3, "migration 3 adds the mail keys");
  await using dir = await tempDir();
  {
    await using store = new SqliteStore(dir.path);
    await store.createUser({
      name: "Alice",
      salt: new Uint8Array(16),
      hash: new Uint8Array(32),
      publicKey: "A".repeat(43),
    });
  }
  makeVersion2File(dir.path);
  await using store = new SqliteStore(dir.path);
  assert.equal(await store.schemaVersion(), SCHEMA_VERSION);
  const alice = await store.getUser("alice");
  assert.ok(alice);
  assert.equal(alice.name, "Alice");
  assert.equal(alice.publicKey, "A".repeat(43));
  // An account from before has no mail key yet: empty, not missing.
  assert.equal(alice.mailKey, "");
  assert.equal(alice.mailKeySig, "");
});

Deno.test("SqliteStore migrates a version 3 mailbox, keeping its mail in order", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, SQLITE_FILE);
  const mail = (sender: string, msgId: string, body: string) => ({
    recipient: "bob",
    sender,
    msgId,
    ts: 1000,
    body,
  });
  {
    await using store = new SqliteStore(dir.path);
    for (const name of ["alice", "bob", "carol"]) {
      await store.createUser({
        name,
        salt: new Uint8Array(16),
        hash: new Uint8Array(32),
        publicKey: "A".repeat(43),
      });
    }
    await store.storeMail(mail("alice", "m-1", "one"), 100);
    await store.storeMail(mail("carol", "m-2", "two"), 100);
    await store.storeMail(mail("alice", "m-3", "three"), 100);
  }
  // Back to the version 3 schema: mail unique by (recipient, msg_id), no mail_read.
  const db = new DatabaseSync(path);
  try {
    undoMigrationsFrom5(db);
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
  await using store = new SqliteStore(dir.path);
  assert.equal(await store.schemaVersion(), SCHEMA_VERSION);
  assert.deepEqual((await store.mailbox("bob")).map((e) => [e.from, e.count]), [
    ["alice", 2],
    ["carol", 1],
  ]);
  assert.deepEqual((await store.pendingMail("bob", "alice", 10)).map((m) => m.body), [
    "one",
    "three",
  ]);
  assert.equal(await store.storeMail(mail("carol", "m-1", "same id, other sender"), 100), "stored");
  const check = new DatabaseSync(path, { readOnly: true });
  try {
    assert.equal(check.prepare("PRAGMA integrity_check").get()?.integrity_check, "ok");
  } finally {
    check.close();
  }
});

Deno.test("SqliteStore folds its write-ahead log on a worker thread once it grows", async () => {
  await using dir = await tempDir();
  await using store = new SqliteStore(dir.path);
  // On the server's thread a checkpoint's fsyncs stall every connection's lookups behind it.
  assert.equal(store.checkpointsOffThread, true);
});
