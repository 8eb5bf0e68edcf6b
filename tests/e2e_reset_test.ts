/**
 * End to end with real processes: a connection reset by the other side while frames wait in the
 * write queue (the kernel's buffers full) ends that connection only. The client stays up, tells
 * the user, and nothing is lost or doubled.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { befriend, DEADLINE_MS, startServer, TestClient } from "./support/processes.ts";
import { crowd, disposeAll, groupOf, saw } from "./support/groups.ts";

/** Bytes the kernel holds unsent on `pid`'s TCP connections to `port` (ss's Send-Q). */
async function unsentTo(pid: number, port: number): Promise<number> {
  const { stdout } = await new Deno.Command("ss", {
    args: ["-tnpH", "state", "established", `( dport = :${port} )`],
    stdout: "piped",
    stderr: "null",
  }).output();
  let bytes = 0;
  for (const line of new TextDecoder().decode(stdout).split("\n")) {
    if (!line.includes(`pid=${pid},`)) continue;
    bytes += Number(line.trim().split(/\s+/)[1] ?? 0);
  }
  return bytes;
}

/** Waits until `pid` has at least `bytes` unsent to `port`: its writes are backed up. */
async function backedUp(pid: number, port: number, bytes: number): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  while (await unsentTo(pid, port) < bytes) {
    if (Date.now() > deadline) {
      throw new Error(`fewer than ${bytes} bytes waited to be sent (${await unsentTo(pid, port)})`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function peerPortOf(c: TestClient): number {
  return Number(c.events().find((e) => e.type === "ready")?.peerPort);
}

async function isRunning(c: TestClient): Promise<boolean> {
  return await Promise.race([c.proc.status.then(() => false), Promise.resolve(true)]);
}

/** A file of `mib` MiB of random bytes in `dir`. */
async function bigFile(dir: string, mib: number): Promise<string> {
  const path = join(dir, "big.bin");
  using file = await Deno.open(path, { write: true, create: true });
  const chunk = crypto.getRandomValues(new Uint8Array(65_536));
  for (let i = 0; i < mib * 16; i++) await file.write(chunk);
  return path;
}

/**
 * `victim` stops reading while `sender` sends it a file: the kernel's buffers fill and file
 * chunks wait in the sender's write queue; then `victim` is killed with all that unread, so
 * the kernel resets the connection.
 */
async function resetWhileBackedUp(sender: TestClient, victim: TestClient, texts: TestClient[]) {
  victim.proc.kill("SIGSTOP");
  await backedUp(sender.proc.pid, peerPortOf(victim), 1024 * 1024);
  // Frames queued behind the file's chunks, from every sender.
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
      await alice.signup("alice");
      await bob.signup("bob");
      await befriend(alice, bob);
      await alice.send("chat bob");
      await alice.event("chat_opened", { with: "bob", online: true });
      await alice.send(`/s ${await bigFile(dir, 64)}`);
      await bob.event("transfer_started", { direction: "in" });
      await resetWhileBackedUp(alice, bob, [alice]);
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
    await alice.send(`/s ${await bigFile(dir, 64)}`);
    await carol.event("transfer_started", { direction: "in" });
    await resetWhileBackedUp(alice, carol, [alice, bob]);

    for (const c of [alice, bob]) {
      await saw(c, "group_presence", { group, user: "carol", here: false });
    }
    await saw(alice, "transfer_failed", { direction: "out", peer: "carol" });
    await saw(bob, "message", { group, from: "alice", text: "while frozen 0" });
    await saw(alice, "message", { group, from: "bob", text: "while frozen 1" });
    for (const c of [alice, bob]) assert.ok(await isRunning(c), `${c.proc.name} is still running`);

    // Carol comes back and gets what was sent while she was frozen, once each.
    const home = carol.home;
    await carol.proc[Symbol.asyncDispose]();
    await using carol2 = await TestClient.start("carol", server, { home, args: PEERS });
    await carol2.login("carol");
    await saw(carol2, "message", { group, from: "alice", text: "while frozen 0" });
    await saw(carol2, "message", { group, from: "bob", text: "while frozen 1" });
    const got = carol2.events().filter((e) => e.type === "message" && e.group === group);
    assert.deepEqual(got.map((e) => e.text).sort(), ["while frozen 0", "while frozen 1"]);
  } finally {
    await disposeAll(clients);
    await Deno.remove(dir, { recursive: true });
  }
});
