/**
 * End to end with real processes: a stranger who opens connections to a client's peer port by
 * the dozen (each held open without a handshake) cannot hold more than the caps, per address
 * and in all, and real peers get through once the flood is gone.
 */
import assert from "node:assert/strict";
import { befriend, DEADLINE_MS, startServer, TestClient } from "../support/processes.ts";

function peerPortOf(client: TestClient): number {
  const ready = client.events().find((e) => e.type === "ready");
  assert.ok(ready, "the client announced its peer port");
  return Number(ready.peerPort);
}

/**
 * Opens `n` silent connections to `port`; resolves each one's index, in the order the client
 * closed them.
 */
async function flood(port: number, n: number) {
  const conns: Deno.TcpConn[] = [];
  const closedOrder: number[] = [];
  const closings: Promise<void>[] = [];
  let changed = Promise.withResolvers<void>();
  for (let i = 0; i < n; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conns.push(conn);
    closings.push((async () => {
      const buffer = new Uint8Array(4096);
      try {
        while (await conn.read(buffer) !== null) { /* the client's hello: ignored */ }
      } catch { /* reset: closed too */ }
      closedOrder.push(i);
      changed.resolve();
      changed = Promise.withResolvers<void>();
    })());
  }
  return {
    closedOrder,
    /** Waits until `count` connections were closed by the client. */
    async closedAtLeast(count: number): Promise<void> {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`only ${closedOrder.length} of ${count} closed in time`)),
          DEADLINE_MS,
        );
      });
      try {
        while (closedOrder.length < count) await Promise.race([changed.promise, late]);
      } finally {
        clearTimeout(timer);
      }
    },
    async [Symbol.asyncDispose]() {
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed by the client */ }
      }
      await Promise.all(closings);
    },
  };
}

Deno.test("a stranger flooding the peer port from one address holds at most 32 connections", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await using bob = await TestClient.start("bob", server);
  await alice.signup("alice");
  await bob.signup("bob");
  await befriend(alice, bob);

  {
    await using attack = await flood(peerPortOf(alice), 40);
    // The 8 above the cap are closed at once; the 32 wait for the handshake deadline (10 s).
    await attack.closedAtLeast(8);
    assert.deepEqual(
      attack.closedOrder.slice(0, 8).sort((a, b) => a - b),
      [32, 33, 34, 35, 36, 37, 38, 39],
    );
  }

  // Once the flood has gone, a real peer gets through (the counts went down again).
  await bob.send("chat alice");
  await bob.event("chat_opened", { with: "alice" });
  await bob.send("still reachable");
  await alice.event("message", { from: "bob", text: "still reachable" });
  await bob.event("delivered", { to: "alice" });
});

Deno.test("a stranger flooding the peer port holds at most --max-peer-conns connections in all", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server, {
    args: ["--max-peer-conns", "4"],
  });
  await alice.signup("alice");

  await using attack = await flood(peerPortOf(alice), 6);
  await attack.closedAtLeast(2);
  assert.deepEqual(attack.closedOrder.slice(0, 2).sort((a, b) => a - b), [4, 5]);
});
