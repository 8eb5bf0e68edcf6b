/**
 * Tests for lib/server/relay.ts's pairings and a user going offline: a pairing issued while the
 * store is still answering is refused when either user went offline meanwhile (it would
 * otherwise wait the whole join timeout for a leg that cannot come: a CI run saw a chat open
 * 15 s late over PostgreSQL, where that store write is slowest); a pending one ends at once.
 * And the client's side of a pairing: a leg whose connect goes unanswered gives up in time.
 */
import assert from "node:assert/strict";
import { DEFAULT_RELAY_LIMITS, Relay, RelayRefused } from "../../lib/server/relay.ts";
import { joinRelay } from "../../lib/client/link_paths.ts";
import { generateKeyPair } from "../../lib/crypto/noise.ts";
import { TimeoutError } from "../../lib/protocol/errors.ts";
import { within } from "../support/peer_fixtures.ts";

const alice = { user: "alice", key: "alice", staticKey: "alice-static" };
const bob = { user: "Bob", key: "bob", staticKey: "bob-static" };

/** A relay whose store answers the usage write when `release` is called. */
function relayWithSlowStore() {
  const writes: (() => void)[] = [];
  const relay = new Relay(DEFAULT_RELAY_LIMITS, {
    notify: () => {},
    log: () => {},
    usage: {
      addRelayBytes: () => new Promise<number>((resolve) => writes.push(() => resolve(0))),
      forgetRelayUsage: () => Promise.resolve(0),
    },
  });
  const release = async () => {
    while (writes.length === 0) await new Promise((r) => setTimeout(r, 1));
    writes.shift()!();
  };
  return { relay, release };
}

Deno.test("a pairing with a user who went offline while it was being issued is refused, and nothing waits", async () => {
  const { relay, release } = relayWithSlowStore();
  const issuing = relay.issue(alice, bob);
  relay.cancelFor("bob"); // bob's connection closed while the store was writing
  await release();
  await assert.rejects(
    issuing,
    (e: unknown) =>
      e instanceof RelayRefused && e.code === "USER_OFFLINE" && e.message === "Bob went offline",
  );
  // No pairing waits for a leg: a join with any token is refused at once.
  await assert.rejects(
    relay.join("x", bob.staticKey, {} as never),
    (e: unknown) => e instanceof RelayRefused && e.code === "BAD_TOKEN",
  );
});

Deno.test("a pairing issued before its user went offline is pending, and cancelFor() ends it", async () => {
  const { relay, release } = relayWithSlowStore();
  const issuing = relay.issue(alice, bob);
  relay.cancelFor("carol"); // someone else: no effect
  await release();
  const token = await issuing;
  relay.cancelFor("alice");
  await assert.rejects(
    relay.join(token, bob.staticKey, {} as never),
    (e: unknown) => e instanceof RelayRefused && e.code === "BAD_TOKEN",
  );
});

Deno.test("a user who went offline while the server looked up where they are is caught by the watch begun before", async () => {
  // The cluster's case: bob is on another instance; while this one asks the store for his
  // presence, the other instance's offline notice arrives (cancelFor) and the lookup still
  // returns his old row.
  const { relay, release } = relayWithSlowStore();
  const watch = relay.watch(alice, bob);
  relay.cancelFor("bob"); // during the lookup, before issue() began
  const issuing = relay.issue(alice, bob, watch);
  await release();
  await assert.rejects(
    issuing,
    (e: unknown) =>
      e instanceof RelayRefused && e.code === "USER_OFFLINE" && e.message === "Bob went offline",
  );
  watch.end();
  // An ended watch no longer listens, and a later pairing goes through.
  const again = relay.watch(alice, bob);
  again.end();
  relay.cancelFor("bob");
  assert.equal(again.gone, undefined);
  const later = relay.issue(alice, bob);
  await release();
  assert.equal(typeof await later, "string");
  relay.cancelFor("bob");
});

/**
 * Connects to `port` (a listener that never accepts) until a connect is left unanswered: its
 * accept queue is full and the kernel drops every further SYN. Returns the connections made.
 */
async function fillAcceptQueue(port: number): Promise<Deno.TcpConn[]> {
  const conns: Deno.TcpConn[] = [];
  try {
    while (conns.length < 5_000) {
      const signal = AbortSignal.timeout(500);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port, signal }).catch(() => {
        if (!signal.aborted) throw new Error("a connect failed instead of going unanswered");
      });
      if (!conn) return conns;
      conns.push(conn);
    }
    throw new Error("the accept queue did not fill");
  } catch (error) {
    for (const conn of conns) conn.close();
    throw error;
  }
}

Deno.test("a relay leg whose connect goes unanswered fails within its deadline instead of holding the dial for minutes", async () => {
  // The kernel retries a dropped SYN for about two minutes: before, the leg (and the dial to a
  // peer that waited for it, and every message to that peer) waited that long.
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held = await fillAcceptQueue(listener.addr.port);
  try {
    const leg = joinRelay({
      host: "127.0.0.1",
      port: listener.addr.port,
      staticKeyPair: await generateKeyPair(),
      serverKey: "unused",
      timeoutMs: 300,
    }, "token");
    await assert.rejects(
      within(leg, 5_000, "the relay leg"),
      (e: unknown) =>
        e instanceof TimeoutError &&
        e.message === `no connection to 127.0.0.1:${listener.addr.port} within 0.3s`,
    );
  } finally {
    for (const conn of held) conn.close();
  }
});
