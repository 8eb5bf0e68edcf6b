/**
 * Tests for lib/server/relay.ts's pairings and a user going offline: a pairing issued while the
 * store is still answering is refused when either user went offline meanwhile (it would
 * otherwise wait the whole join timeout for a leg that cannot come: a CI run saw a chat open
 * 15 s late over PostgreSQL, where that store write is slowest); a pending one ends at once.
 */
import assert from "node:assert/strict";
import { DEFAULT_RELAY_LIMITS, Relay, RelayRefused } from "../../lib/server/relay.ts";

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
