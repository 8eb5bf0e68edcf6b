/**
 * End to end with real processes: a connection reset by the other side while frames wait in the
 * write queue (the kernel's buffers full) ends that connection only. The client stays up, tells
 * the user, and nothing is lost or doubled. A client that reads nothing cannot stop the server.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { befriend, startServer, TestClient } from "./support/processes.ts";
import { backedUp, pairInChat, stallReceiver } from "./support/sockets.ts";
import { RawConn } from "./support/raw_conn.ts";
import { generateKeyPair } from "../lib/crypto/noise.ts";
import { crowd, disposeAll, groupOf } from "./support/groups.ts";

async function isRunning(c: TestClient): Promise<boolean> {
  return await Promise.race([c.proc.status.then(() => false), Promise.resolve(true)]);
}

/**
 * `victim` stops reading while `sender` sends it a file; frames from `texts` wait behind the
 * chunks; then `victim` is killed with all that unread, so the kernel resets the connection.
 */
async function resetWhileBackedUp(
  sender: TestClient,
  victim: TestClient,
  texts: TestClient[],
  dir: string,
): Promise<void> {
  await stallReceiver(sender, victim, dir);
  for (const [i, c] of texts.entries()) await c.send(`while frozen ${i}`);
  victim.proc.kill("SIGKILL");
  await victim.proc.status;
}

const PEERS = ["--peer-timeout", "30", "--auto-accept", "contacts"];

Deno.test("a peer reset while a file and messages wait in the 1:1 write queue: the sender stays up, is told, and the message arrives once", async () => {
  await using server = await startServer();
  const dir = await Deno.makeTempDir({ prefix: "confab-reset-" });
  try {
    await using alice = await TestClient.start("alice", server, { args: PEERS });
    const bobHome = join(dir, "bob");
    await Deno.mkdir(bobHome);
    const bob = await TestClient.start("bob", server, { home: bobHome, args: PEERS });
    try {
      await pairInChat(alice, bob);
      await resetWhileBackedUp(alice, bob, [alice], dir);
    } finally {
      await bob[Symbol.asyncDispose]();
    }
    // Alice is told about the link, the file and the message, and keeps running.
    await alice.anyEvent("link_down", { user: "bob" });
    await alice.anyEvent("transfer_failed", { direction: "out", peer: "bob" });
    await alice.anyEvent("stored", { to: "bob" });
    assert.ok(await isRunning(alice), "alice is still running");

    await using bob2 = await TestClient.start("bob", server, { home: bobHome, args: PEERS });
    await bob2.login("bob");
    await bob2.send("show alice");
    await bob2.event("shown", { from: "alice" });
    const got = bob2.events().filter((e) => e.type === "message" && e.from === "alice");
    assert.deepEqual(got.map((e) => e.text), ["while frozen 0"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a group member reset while a file and messages wait in the others' write queues: the others stay up, are told, and the member gets each message once", async () => {
  await using server = await startServer();
  const dir = await Deno.makeTempDir({ prefix: "confab-reset-" });
  const args = { args: PEERS };
  const clients = await crowd(server, ["alice", "bob", "carol"], {
    alice: args,
    bob: args,
    carol: args,
  });
  try {
    const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
    const group = await groupOf(clients);
    await resetWhileBackedUp(alice, carol, [alice, bob], dir);

    for (const c of [alice, bob]) {
      await c.anyEvent("group_presence", { group, user: "carol", here: false });
    }
    await alice.anyEvent("transfer_failed", { direction: "out", peer: "carol" });
    await bob.anyEvent("message", { group, from: "alice", text: "while frozen 0" });
    await alice.anyEvent("message", { group, from: "bob", text: "while frozen 1" });
    for (const c of [alice, bob]) assert.ok(await isRunning(c), `${c.proc.name} is still running`);

    // Carol comes back and gets what was sent while she was frozen, once each.
    const home = carol.home;
    await carol.proc[Symbol.asyncDispose]();
    await using carol2 = await TestClient.start("carol", server, { home, args: PEERS });
    await carol2.login("carol");
    await carol2.anyEvent("message", { group, from: "alice", text: "while frozen 0" });
    await carol2.anyEvent("message", { group, from: "bob", text: "while frozen 1" });
    const got = carol2.events().filter((e) => e.type === "message" && e.group === group);
    assert.deepEqual(got.map((e) => e.text).sort(), ["while frozen 0", "while frozen 1"]);
  } finally {
    await disposeAll(clients);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a client that stops reading cannot take the server down: the liveness check queued behind its unread replies times out and ends its connection only", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  {
    await using mallory = await TestClient.start("mallory", server);
    await using carol = await TestClient.start("carol", server);
    await alice.signup("alice");
    await mallory.signup("mallory");
    await carol.signup("carol");
    await befriend(alice, mallory);
  }
  // Mail for mallory, so that each `show` of hers is answered with a large batch.
  await alice.send("chat mallory");
  await alice.event("chat_opened", { with: "mallory", online: false });
  for (let i = 0; i < 10; i++) await alice.send(`${i} `.padEnd(60_000, "abcdefgh"));
  for (let i = 0; i < 10; i++) await alice.event("stored", { to: "mallory" });

  // Mallory asks and asks, and reads nothing: the server's replies back up.
  await using mallory = await RawConn.login(server.port, "mallory", await generateKeyPair());
  mallory.pauseReading();
  for (let i = 0; i < 20; i++) await mallory.send({ type: "show", id: 100 + i, from: "alice" });
  await backedUp(server.proc.pid, mallory.conn.localAddr.port, 1024 * 1024);

  // Carol says mallory is unreachable: the server checks with a ping (2 s for the answer),
  // which waits behind all that mallory does not read.
  await using carol = await RawConn.login(server.port, "carol", await generateKeyPair());
  assert.equal(
    (await carol.request({ type: "report_unreachable", id: 2, user: "mallory" })).type,
    "ok",
  );
  await server.proc.out.find((l) => l.includes("mallory does not answer"), "the check of mallory");
  const list = await carol.request({ type: "contacts", id: 3 });
  assert.equal(list.type, "contact_list", JSON.stringify(list));
  assert.equal(await Promise.race([server.proc.status.then(() => "exited"), "running"]), "running");
});
