/**
 * Races between the instances of a cluster, end to end with real processes over one real
 * PostgreSQL: the events that cross instances are held back (a transaction left open holds
 * back every instance's reading of them, as a slow commit or a busy database does) so that
 * they arrive after what came later on another instance.
 */
import assert from "node:assert/strict";
import { startCluster } from "./support/cluster.ts";
import { RawConn } from "./support/raw_conn.ts";
import { rawUser } from "./support/accounts.ts";
import { generateKeyPair } from "../lib/crypto/noise.ts";
import { connectSql } from "../lib/server/postgres_store.ts";

/**
 * Opens a transaction with an id at the database of `url` and keeps it open until the
 * returned release() is called: instances read only the events of transactions older than
 * every one still running, so until then they pass none on.
 */
async function holdEvents(url: string): Promise<{ release(): Promise<void> }> {
  const sql = connectSql(url, { maxConnections: 1 });
  const held = Promise.withResolvers<void>();
  const release = Promise.withResolvers<void>();
  const open = sql.begin(async (tx) => {
    await tx`SELECT pg_current_xact_id()`;
    held.resolve();
    await release.promise;
  });
  open.catch(held.reject);
  await held.promise;
  return {
    async release() {
      release.resolve();
      try {
        await open;
      } finally {
        await sql.end({ timeout: 5 });
      }
    },
  };
}

Deno.test("a kick that reaches an instance late ends the login it replaced, not a newer one there", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  await using bob = await rawUser(b.port, "bob");
  await using first = await rawUser(a.port, "alice");
  const events = await holdEvents(cluster.url!);
  let released = false;
  try {
    // Alice logs in on b (the place on a is to end: a kick for a, held back), then again on a.
    await using second = await RawConn.login(b.port, "alice", await generateKeyPair());
    await using third = await RawConn.login(a.port, "alice", await generateKeyPair());
    // a ended the first itself at once: the newest login there replaced it.
    const ended = await first.untilEnd();
    assert.ok(ended.some((f) => f.code === "ALREADY_LOGGED_IN"), JSON.stringify(ended));
    released = true;
    await events.release();
    // b ends the second (the third replaced it)...
    const kicked = await second.untilEnd();
    assert.ok(kicked.some((f) => f.code === "ALREADY_LOGGED_IN"), JSON.stringify(kicked));
    // ...and a, having passed on the kick meant for the first (it came before this check),
    // asks the third whether it is alive: it is still logged in.
    const reported = await bob.request({ type: "report_unreachable", id: 10, user: "alice" });
    assert.equal(reported.type, "ok", JSON.stringify(reported));
    const ping = await third.next();
    assert.equal(ping.type, "ping", `the newest login stays: ${JSON.stringify(third.frames)}`);
  } finally {
    if (!released) await events.release();
  }
});

/** Waits until `check` gives a value (asked every 20 ms), at most `ms`. */
async function until<T>(check: () => Promise<T | undefined>, what: string, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`no ${what} within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Holds the commit of a transaction that stores mail `held-mail` or a receipt for `held-read`
 * (just after it wrote, or left out, its event) for as long as `hold()` holds: a slow commit,
 * made slower. Then `user` logs in on the instance at `port` meanwhile, and the hold is let go;
 * resolves to their connection once their login is done and its answer read.
 */
async function heldCommit(url: string) {
  const sql = connectSql(url, { maxConnections: 1 });
  await sql`SELECT pg_advisory_lock(4242777)`;
  await sql.unsafe(`
    CREATE FUNCTION test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM mail WHERE msg_id = 'held-mail')
         OR EXISTS (SELECT 1 FROM receipts WHERE msg_id = 'held-read')
         OR EXISTS (SELECT 1 FROM presence WHERE "user" = 'held-user') THEN
        PERFORM pg_advisory_xact_lock(4242777);
      END IF;
      RETURN NULL;
    END $$;
    CREATE TRIGGER test_hold AFTER INSERT ON events
      FOR EACH STATEMENT EXECUTE FUNCTION test_hold();`);
  // Waiting for the hold (an advisory lock), or for a row another transaction holds.
  const waiting = (pattern: string, hold: boolean) =>
    sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE wait_event_type = 'Lock' AND (wait_event = 'advisory') = ${hold}
        AND query LIKE ${pattern}`.then(([r]) => r!.n > 0);
  return {
    sql,
    /** Resolves once a statement matching `pattern` waits for the hold. */
    held: (pattern: string) =>
      until(async () => (await waiting(pattern, true)) || undefined, "a hold"),
    /**
     * `user` logs in on `port` while the commit is held (their mailbox and receipts read, or
     * their attach waiting for that commit), then the hold is let go.
     */
    async loginMeanwhile(
      port: number,
      user: string,
      read: { type: string; id: number } = { type: "hanging", id: 8 },
    ): Promise<RawConn> {
      const logins = RawConn.login(port, user, await generateKeyPair());
      logins.catch(() => {});
      const attached = await until(async () => {
        const [row] = await sql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM presence WHERE "user" = ${user}`;
        if (row!.n > 0) return true;
        return (await waiting("%confab_attach%", false)) ? false : undefined;
      }, `${user} attached or waiting`);
      if (attached) {
        // What a login tells is told before the answer to the next request.
        const conn = await logins;
        await conn.request(read);
      }
      await sql`SELECT pg_advisory_unlock(4242777)`;
      return await logins;
    },
    async [Symbol.asyncDispose]() {
      await sql.unsafe(`DROP TRIGGER IF EXISTS test_hold ON events;
                        DROP FUNCTION IF EXISTS test_hold()`).catch(() => {});
      await sql.end({ timeout: 5 });
    },
  };
}

const SEALED = "A".repeat(64);

Deno.test("mail stored while its recipient attaches on another instance is announced to them", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  await using alice = await rawUser(a.port, "alice");
  {
    await using bob = await rawUser(b.port, "bob");
    await bob.request({ type: "logout", id: 5 });
  }
  await using hold = await heldCommit(cluster.url!);
  await hold.sql`INSERT INTO contacts (owner, contact, added_at)
                 VALUES ('alice', 'bob', 0), ('bob', 'alice', 0)`;
  const message = { msgId: "held-mail", ts: Date.now(), sealed: SEALED };
  await alice.send({ type: "mail_send", id: 7, to: "bob", messages: [message] });
  await hold.held("%confab_store_mails%");
  await using bob = await hold.loginMeanwhile(b.port, "bob");
  const stored = await alice.next("mail_stored");
  assert.equal(stored.stored, 1, JSON.stringify(stored));
  // Told at once, one way or the other: in the summary at login, or by a notice after it.
  await until(
    () => Promise.resolve(bob.frames.find((f) => /^mail_(summary|notice)$/.test(f.type))),
    "mail_summary or mail_notice for bob",
    5_000,
  );
});

Deno.test("receipts written while their sender attaches on another instance are pushed to them", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  await using bob = await rawUser(b.port, "bob");
  await using hold = await heldCommit(cluster.url!);
  {
    await using alice = await rawUser(a.port, "alice");
    await hold.sql`INSERT INTO contacts (owner, contact, added_at)
                   VALUES ('alice', 'bob', 0), ('bob', 'alice', 0)`;
    const message = { msgId: "held-read", ts: Date.now(), sealed: SEALED };
    const stored = await alice.request({
      type: "mail_send",
      id: 7,
      to: "bob",
      messages: [message],
    });
    assert.equal(stored.stored, 1, JSON.stringify(stored));
    await alice.request({ type: "logout", id: 8 });
  }
  await bob.send({ type: "mail_confirm", id: 9, from: "alice", msgIds: ["held-read"] });
  await hold.held("%INSERT INTO events%");
  await using alice = await hold.loginMeanwhile(a.port, "alice");
  await until(
    () => Promise.resolve(alice.frames.find((f) => f.type === "receipts")),
    "receipts for alice",
    5_000,
  );
});

Deno.test("a user attaching while a contact attaches on another instance: each learns the other is online", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  for (const [port, user] of [[a.port, "held-user"], [b.port, "bob"]] as const) {
    await using conn = await rawUser(port, user);
    await conn.request({ type: "logout", id: 5 });
  }
  await using hold = await heldCommit(cluster.url!);
  await hold.sql`INSERT INTO contacts (owner, contact, added_at)
                 VALUES ('held-user', 'bob', 0), ('bob', 'held-user', 0)`;
  // held-user's attach is held after it wrote (or left out) its presence event...
  const logins = RawConn.login(a.port, "held-user", await generateKeyPair());
  logins.catch(() => {});
  try {
    await hold.held("%confab_attach%");
    // ...while bob logs in on b and reads his contacts.
    await using bob = await hold.loginMeanwhile(b.port, "bob", { type: "contacts", id: 8 });
    await logins;
    // Bob is told, one way or the other: listed online, or by a push once the attach is done.
    await until(
      () =>
        Promise.resolve(
          bob.frames.find((f) =>
            (f.type === "presence" && f.user === "held-user" && f.online === true) ||
            (f.type === "contact_list" &&
              JSON.stringify(f).includes('{"user":"held-user","online":true}'))
          ),
        ),
      "held-user shown online to bob",
      5_000,
    ).catch((error) => {
      throw new Error(`${error.message}; bob got ${JSON.stringify(bob.frames.slice(3))}`);
    });
  } finally {
    await (await logins.catch(() => undefined))?.close();
  }
});
