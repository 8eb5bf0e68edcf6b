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
