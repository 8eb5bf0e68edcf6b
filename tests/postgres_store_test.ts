/**
 * What only a shared store does: several instances over one PostgreSQL database pass events
 * to each other, an instance whose lease runs out has its users taken out of the directory,
 * and instances catch up on events after the database restarts. The rest is in the
 * conformance tests (`server_store_test.ts`), which run against every backend.
 */
import assert from "node:assert/strict";
import { connectSql, PostgresStore } from "../lib/server/postgres_store.ts";
import type { ServerStore, StoreEvent } from "../lib/server/store.ts";
import { openStore } from "../lib/server/open_store.ts";
import { freshDatabase, testPostgres, useOwnPostgres } from "./support/store_backends.ts";

// Tests here stop and start their PostgreSQL cluster: not one that other test files share.
useOwnPostgres();

const KEY = "A".repeat(43);

/** An instance over `url`, with the events it passed on and a way to wait for one. */
async function instance(url: string, name: string, leaseMs = 10_000) {
  const store = await PostgresStore.open(url, { maxConnections: 4, leaseMs });
  const events: StoreEvent[] = [];
  const logs: string[] = [];
  let leaseLost = 0;
  await store.run({
    name,
    onEvent: (e) => events.push(e),
    onLeaseLost: () => leaseLost++,
    log: (line) => logs.push(line),
  });
  const until = async (what: string, test: () => boolean, ms = 20_000) => {
    for (const deadline = Date.now() + ms; !test();) {
      if (Date.now() > deadline) {
        throw new Error(`${name}: not ${what} within ${ms} ms; events ${JSON.stringify(events)}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const seen = (fields: Record<string, unknown>) =>
    until(
      `seen ${JSON.stringify(fields)}`,
      () =>
        events.some((e) =>
          Object.entries(fields).every(([k, v]) => (e as Record<string, unknown>)[k] === v)
        ),
    );
  return { store, events, logs, seen, until, leaseLost: () => leaseLost };
}

/** Two instances over a fresh database where alice and bob have signed up. */
async function twoInstances(leaseMs?: number) {
  const url = await freshDatabase();
  const a = await instance(url, "a:1", leaseMs);
  const b = await instance(url, "b:2", leaseMs);
  await signUp(a.store, ["alice", "bob"]);
  return { a, b };
}

async function signUp(store: PostgresStore, names: string[]): Promise<void> {
  for (const name of names) {
    await store.createUser({
      name,
      salt: new Uint8Array(16),
      hash: new Uint8Array(32),
      publicKey: KEY,
    });
  }
}

async function attach(store: PostgresStore, user: string, attach: string) {
  const seq = await store.recordLogin(user, "10.0.0.1", 5000);
  await store.attach({
    user,
    host: "10.0.0.1",
    peerPort: 5000,
    loginAt: Date.now(),
    registrySeq: seq,
    attach,
    staticKey: "",
  });
  return seq;
}

const mail = (recipient: string, sender: string, msgId: string) => ({
  recipient,
  sender,
  msgId,
  ts: 1,
  body: "sealed",
});

Deno.test("instances sharing a database see each other's users and pass events", async () => {
  const { a, b } = await twoInstances();
  await using _a = a.store;
  await using _b = b.store;
  await attach(a.store, "alice", "alice-on-a");
  await attach(b.store, "bob", "bob-on-b");
  // Both see both, with the instance each is on.
  for (const i of [a, b]) {
    assert.deepEqual(
      (await i.store.onlineUsers()).map((p) => `${p.user}@${p.instance}`).sort(),
      ["alice@a:1", "bob@b:2"],
    );
  }
  assert.equal((await b.store.presenceOf("alice"))?.instance, "a:1");
  // Mail stored through b for alice (on a): a hears of it; confirmed through a: b hears.
  assert.equal(await b.store.storeMail(mail("alice", "bob", "m1"), 10), "stored");
  await a.seen({ kind: "mail", to: "alice", from: "bob" });
  await a.store.confirmMail("alice", "bob", ["m1"]);
  await b.seen({ kind: "receipts", to: "bob" });
  // Alice attaches on b: a is told to end her old connection.
  await attach(b.store, "alice", "alice-on-b");
  await a.seen({ kind: "kick", user: "alice", attach: "alice-on-b", replaced: "alice-on-a" });
  assert.equal((await a.store.presenceOf("alice"))?.instance, "b:2");
  assert.equal(await a.store.detach("alice", "alice-on-a"), false, "the old place is gone");
});

Deno.test("a write transaction left open in another database does not hold back the events", async () => {
  const { a, b } = await twoInstances();
  await using _a = a.store;
  await using _b = b.store;
  await attach(a.store, "alice", "alice-on-a");
  // Another application's database on the same PostgreSQL, in the middle of a long write: its
  // transaction has an id, which every snapshot of the cluster counts as running.
  const other = await freshDatabase();
  const sql = connectSql(other, { maxConnections: 1 });
  const reserved = await sql.reserve();
  try {
    await reserved`BEGIN`;
    await reserved`CREATE TABLE batch_job (n INTEGER)`;
    await reserved`INSERT INTO batch_job VALUES (1)`;
    assert.equal(await b.store.storeMail(mail("alice", "bob", "m1"), 10), "stored");
    // An event takes milliseconds; 10 s is for a loaded machine, not a wait for the other.
    await a.until("told of the mail", () => a.events.some((e) => e.kind === "mail"), 10_000);
    await reserved`ROLLBACK`;
  } finally {
    reserved.release();
    await sql.end();
  }
});

Deno.test("an instance whose lease ran out has its users shown offline, and learns it", async () => {
  const url = await freshDatabase();
  // Only a's lease is short: b, with a short one too, lost its own lease when a loaded machine
  // stalled it for a second, a (still renewing) took bob out first, and alice's going offline
  // then had nobody to be told to.
  const a = await instance(url, "a:1", 3_000);
  await using _a = a.store;
  const b = await instance(url, "b:2");
  await using _b = b.store;
  await signUp(a.store, ["alice", "bob"]);
  // bob, on b, and alice are contacts: bob watches alice.
  await b.store.addContact("bob", "alice");
  await b.store.addContact("alice", "bob");
  await attach(b.store, "bob", "bob-on-b");
  const seq = await attach(a.store, "alice", "alice-on-a");
  // a stops renewing (frozen, or cut off from the database): after its lease, b takes it out.
  a.store.freeze();
  await b.seen({ kind: "presence", user: "alice", online: false });
  assert.equal(await b.store.presenceOf("alice"), undefined);
  assert.notEqual((await b.store.registry("alice"))[0]!.logoutAt, null, "her login row closed");
  // a finds out at its next renewal, and its users must attach again.
  a.store.thaw();
  await a.until("told its lease ran out", () => a.leaseLost() > 0);
  assert.ok(a.logs.some((l) => l.includes("lease ran out")), a.logs.join("\n"));
  await attach(a.store, "alice", "alice-again");
  assert.equal((await b.store.presenceOf("alice"))?.instance, "a:1");
  assert.ok(seq > 0);
});

Deno.test("instances catch up on events written while the database restarted", async () => {
  const pg = await testPostgres();
  const { a, b } = await twoInstances();
  await using _a = a.store;
  await using _b = b.store;
  await attach(a.store, "alice", "alice-on-a");
  await pg.stop("fast");
  await assert.rejects(b.store.storeMail(mail("alice", "bob", "lost"), 10));
  // Each instance says so, once, in its log.
  for (const i of [a, b]) {
    await i.until("logged the outage", () => i.logs.some((l) => l.includes("cannot reach")));
  }
  await pg.start();
  // Stored as soon as the database is back, before a has listened again.
  const stored = await retry(() => b.store.storeMail(mail("alice", "bob", "m1"), 10));
  assert.equal(stored, "stored");
  await a.seen({ kind: "mail", to: "alice", from: "bob" });
  await a.until("told the database is back", () => a.logs.some((l) => l.includes("again")));
  assert.equal(a.logs.filter((l) => l.includes("cannot reach")).length, 1, a.logs.join("\n"));
});

Deno.test("the database away for longer than the lease: no instance takes the others' users out", async () => {
  const pg = await testPostgres();
  const url = await freshDatabase();
  // Leases of 1 s, renewed every 200 ms.
  const a = await instance(url, "a:1", 1_000);
  await using _a = a.store;
  const b = await instance(url, "b:2", 1_000);
  await using _b = b.store;
  await signUp(a.store, ["alice", "bob"]);
  await attach(a.store, "alice", "alice-on-a");
  await attach(b.store, "bob", "bob-on-b");
  await pg.stop("fast");
  for (const i of [a, b]) {
    await i.until("logged the outage", () => i.logs.some((l) => l.includes("cannot reach")));
  }
  // Away for longer than the lease: every lease ran out meanwhile, through no fault of the
  // instances, which are all alive.
  const stoppedAt = Date.now();
  await a.until("away for 1.5 leases", () => Date.now() - stoppedAt > 1_500);
  await pg.start();
  for (const i of [a, b]) {
    await i.until("told the database is back", () => i.logs.some((l) => l.includes("again")));
  }
  // Both renew again, and look for dead instances after each renewal: whichever came back first
  // took the other for dead, and its users (here bob, or alice) out of the directory.
  const sql = connectSql(url, { maxConnections: 1 });
  try {
    const leases = async () =>
      new Map(
        (await sql<{ name: string; lease_until: number }[]>`
          SELECT name, lease_until FROM instances`).map((r) => [r.name, r.lease_until]),
      );
    const deadline = Date.now() + 10_000;
    let last = await leases();
    for (let rounds = 0; rounds < 2 && a.leaseLost() + b.leaseLost() === 0;) {
      if (Date.now() > deadline) throw new Error("the instances did not renew their leases");
      await new Promise((r) => setTimeout(r, 50));
      const now = await leases();
      if (["a:1", "b:2"].every((n) => (now.get(n) ?? 0) > (last.get(n) ?? Infinity))) {
        rounds++;
        last = now;
      }
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
  assert.deepEqual([a.leaseLost(), b.leaseLost()], [0, 0], [...a.logs, ...b.logs].join("\n"));
  assert.deepEqual((await a.store.onlineUsers()).map((p) => p.user).sort(), ["alice", "bob"]);
});

/** Retries `work` (the database coming back) for up to 20 s. */
async function retry<T>(work: () => Promise<T>): Promise<T> {
  for (const deadline = Date.now() + 20_000;;) {
    try {
      return await work();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

Deno.test(
  "the users of a dead instance resume elsewhere while it is taken over, without a deadlock",
  async () => {
    const url = await freshDatabase();
    const a = await instance(url, "a:1");
    await using _a = a.store;
    // b renews (and looks for dead instances) every 200 ms.
    const b = await instance(url, "b:2", 1_000);
    await using _b = b.store;
    const users = ["u1", "u2"];
    await signUp(a.store, users);
    const token = (user: string, n: number) => new TextEncoder().encode(`${user}-token-${n}`);
    for (const user of users) {
      await a.store.saveSession(token(user, 0), user);
      await attach(a.store, user, `${user}-on-a`);
    }
    const sql = connectSql(url, { maxConnections: 2 });
    try {
      // Another transaction holds u1's row for a moment (a login of u1 under way, say).
      const held = Promise.withResolvers<void>();
      const locked = Promise.withResolvers<void>();
      const holder = sql.begin(async (tx) => {
        await tx`SELECT 1 FROM users WHERE name_key = 'u1' FOR SHARE`;
        locked.resolve();
        await held.promise;
      });
      await locked.promise;
      const waiting = async (n: number, meanwhile?: () => Promise<unknown>) => {
        for (const deadline = Date.now() + 20_000;;) {
          await meanwhile?.();
          const [row] = await sql<{ n: number }[]>`
            SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted`;
          if (row!.n >= n) return;
          if (Date.now() > deadline) throw new Error(`not ${n} waiting locks within 20 s`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      // Both users come back on b in one batch, u2's token first: the batch waits for u1.
      const resumed = b.store.resumeMany(
        users.toReversed().map((user) => ({
          tokenHash: token(user, 0),
          newTokenHash: token(user, 1),
          maxAgeMs: 60_000,
          graceMs: 1_000,
          host: "10.0.0.2",
          peerPort: 4000,
          attach: `${user}-on-b`,
          staticKey: "",
        })),
      );
      await waiting(1);
      // a dies (its lease is over): b takes its users out while the batch waits.
      // (Again while waiting: a renewal of a's under way as it froze would undo it.)
      a.store.freeze();
      // (Not waiting for the row: b's take-over may hold it already.)
      await waiting(2, () =>
        sql`
        UPDATE instances SET lease_until = 0 WHERE id IN
          (SELECT id FROM instances WHERE name = 'a:1' FOR UPDATE SKIP LOCKED)`);
      held.resolve();
      await holder;
      // Until a's row is gone (b took a out), polled beside the instance's own wait.
      let gone = false;
      const polling = (async () => {
        for (const deadline = Date.now() + 20_000; !gone && Date.now() < deadline;) {
          const [left] = await sql<{ n: number }[]>`
            SELECT count(*)::int AS n FROM instances WHERE name = 'a:1'`;
          gone = left!.n === 0;
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      const answers = await resumed;
      assert.deepEqual(answers.map((r) => r?.user), ["u2", "u1"]);
      for (const user of users) assert.equal((await b.store.presenceOf(user))?.instance, "b:2");
      await b.until("taken a out", () => b.logs.some((l) => l.includes("deadlock")) || gone);
      await polling;
      assert.ok(!b.logs.some((l) => l.includes("deadlock")), b.logs.join("\n"));
    } finally {
      await sql.end({ timeout: 1 });
    }
  },
);

Deno.test("a server's store keeps to the pool it was given (--store-connections): never more backends at once", async () => {
  const url = await freshDatabase();
  const backends = async () => {
    const sql = connectSql(url, { maxConnections: 1 });
    try {
      const [row] = await sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'confab-server'
          AND pid <> pg_backend_pid()`;
      return row!.n;
    } finally {
      await sql.end({ timeout: 5 });
    }
  };
  // Many calls at once: the driver opens a connection for each until the pool is full.
  const burst = (store: ServerStore) =>
    Promise.all(Array.from({ length: 16 }, (_, i) => store.getUser(`nobody${i}`)));
  {
    await using store = await openStore({ dataDir: "unused", url, connections: 2 });
    await burst(store);
    await burst(store);
    assert.equal(await backends(), 2);
  }
  {
    // The same burst with a bigger pool does open more: the count above is the limit's doing.
    await using store = await openStore({ dataDir: "unused", url, connections: 6 });
    await burst(store);
    assert.ok((await backends()) > 2, "a pool of 6 opened more than 2 connections");
  }
});
