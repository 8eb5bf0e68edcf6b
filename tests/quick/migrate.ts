/**
 * `server.ts migrate --from DIR --to postgres://…` as a person runs it: a SQLite server's state
 * (every table) arrives in PostgreSQL intact, counted, and a second run changes nothing.
 */
import assert from "node:assert/strict";
import { PostgresStore } from "../../lib/server/postgres_store.ts";
import { SqliteStore } from "../../lib/server/sqlite_store.ts";
import { LEGACY_KDF } from "../../lib/server/store.ts";
import { Proc } from "../support/processes.ts";
import { freshDatabase } from "../support/store_backends.ts";
import { tempDir } from "../support/temp_dir.ts";

const token = (n: number) => new Uint8Array(32).fill(n);

/** Runs `server.ts migrate` with `args`; its exit code and output lines. */
async function migrate(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  await using proc = new Proc(["run", "-A", "server.ts", "migrate", ...args], "migrate");
  const status = await proc.exited(60_000);
  await Promise.all([proc.out.ended, proc.err.ended]);
  return { code: status.code, out: proc.out.lines, err: proc.err.lines.filter((l) => l !== "") };
}

Deno.test("migrate copies every table of a SQLite server into PostgreSQL, once", async () => {
  await using dir = await tempDir("confab-migrate-");
  {
    await using store = new SqliteStore(dir.path);
    for (const [i, name] of ["Alice", "bob", "carol"].entries()) {
      await store.createUser({
        name,
        salt: new Uint8Array(16).fill(i),
        hash: new Uint8Array(32).fill(i + 1),
        ...(i === 0 ? { kdf: "scrypt:17:8:1" } : {}),
        publicKey: `${"K".repeat(42)}${i}`,
        mailKey: `${"M".repeat(42)}${i}`,
        mailKeySig: "S".repeat(86),
      }, 1000 + i);
    }
    await store.addContact("alice", "bob", 2000);
    await store.addContact("bob", "alice", 2001);
    const seq = await store.recordLogin("alice", "10.0.0.1", 4000, 3000);
    await store.recordLogout(seq, 3500);
    await store.recordLogin("bob", "10.0.0.2", 4001, 3600);
    await store.saveSession(token(7), "bob", { now: 3600, clientKey: "K7" });
    for (const id of ["m1", "m2", "m3", "m4"]) {
      assert.equal(
        await store.storeMail({
          recipient: "carol",
          sender: "alice",
          msgId: id,
          ts: 5000,
          body: `sealed ${id}`,
        }, 100),
        "stored",
      );
    }
    await store.confirmMail("carol", "alice", ["m1"], 6000);
    await store.confirmMail("carol", "alice", ["m4"], 6500, new Set(["m4"])); // refused
  }
  const url = await freshDatabase();
  const first = await migrate(["--from", dir.path, "--to", url]);
  assert.equal(first.code, 0, first.err.join("\n"));
  for (
    const line of ["users: 3 in SQLite, 3 in PostgreSQL", "mail: 2 in SQLite, 2 in PostgreSQL"]
  ) {
    assert.ok(first.out.some((l) => l.startsWith(line)), `${line} in:\n${first.out.join("\n")}`);
  }
  // Again: idempotent, the same counts.
  const second = await migrate(["--from", dir.path, "--to", url]);
  assert.equal(second.code, 0, second.err.join("\n"));
  assert.deepEqual(
    second.out.filter((l) => l.includes(" in SQLite")).map((l) => l.replace(/ \(.*\)$/, "")),
    first.out.filter((l) => l.includes(" in SQLite")).map((l) => l.replace(/ \(.*\)$/, "")),
  );

  await using pg = await PostgresStore.open(url);
  assert.equal(await pg.userCount(), 3);
  const alice = await pg.getUser("ALICE");
  assert.equal(alice?.name, "Alice");
  assert.deepEqual(new Uint8Array(alice!.hash), new Uint8Array(32).fill(1));
  // The hash's parameters come along: without them the password would no longer match.
  assert.equal(alice?.kdf, "scrypt:17:8:1");
  assert.equal((await pg.getUser("bob"))?.kdf, LEGACY_KDF);
  assert.equal(alice?.mailKey, `${"M".repeat(42)}0`);
  assert.deepEqual(await pg.listContacts("alice"), ["bob"]);
  assert.deepEqual(await pg.listWatchers("alice"), ["bob"]);
  assert.deepEqual(await pg.registry("alice"), [
    { user: "Alice", host: "10.0.0.1", port: 4000, loginAt: 3000, logoutAt: 3500 },
  ]);
  // The token stays bound to the client it was given to.
  assert.deepEqual(await pg.findSession(token(7), { maxAgeMs: 10_000, graceMs: 1000, now: 4000 }), {
    user: "bob",
    clientKey: "K7",
    createdAt: 3600,
    replacedAt: null,
  });
  assert.deepEqual((await pg.pendingMail("carol", "alice", 10)).map((m) => m.body), [
    "sealed m2",
    "sealed m3",
  ]);
  assert.equal(await pg.countMail("carol"), 2, "the mailbox size came along");
  assert.deepEqual(await pg.pendingReceipts("alice", 10), [
    { msgId: "m1", reader: "carol", readAt: 6000 },
    { msgId: "m4", reader: "carol", readAt: 6500, rejected: true },
  ]);
  assert.equal(
    await pg.storeMail({ recipient: "carol", sender: "alice", msgId: "m1", ts: 1, body: "x" }, 100),
    "duplicate",
    "read mail is remembered",
  );
  // New rows are numbered after the copied ones.
  const next = await pg.recordLogin("carol", "h", 1);
  assert.ok(next > 2, `registry row ${next} after the copied ones`);
});

Deno.test("migrate says plainly what is wrong: no source, no target", async () => {
  await using dir = await tempDir("confab-migrate-");
  const url = await freshDatabase();
  const none = await migrate(["--from", dir.path, "--to", url]);
  assert.equal(none.code, 1);
  assert.equal(none.err.length, 1, none.err.join("\n"));
  assert.match(none.err[0]!, /no Confab server database in .*check --from/);
  const bad = await migrate(["--from", dir.path]);
  assert.equal(bad.code, 1);
  assert.match(bad.err.join("\n"), /--to postgres:/);
});
