/**
 * Receiving a file is a choice, end to end with real processes: an offer shows name, size,
 * sender and SHA-256 and waits for the receiver's answer; nothing is written before it is
 * accepted; a declined or unanswered offer is refused at the sender; `--auto-accept` decides for
 * scripts; a file is refused when the partial files would exceed `--max-partial` or the disk
 * would keep less than `--keep-free`.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { statfs } from "node:fs/promises";
import { join } from "node:path";
import { befriend, startServer, TestClient, type TestServer } from "./support/processes.ts";
import { sharedServer } from "./support/shared_server.ts";

const KiB = 1024;

async function randomFile(dir: string, name: string, bytes: number): Promise<Uint8Array> {
  const data = new Uint8Array(bytes);
  for (let at = 0; at < bytes; at += 65_536) {
    crypto.getRandomValues(data.subarray(at, Math.min(bytes, at + 65_536)));
  }
  await Deno.writeFile(join(dir, name), data);
  return data;
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return names.sort();
}

/**
 * alice (sharing) and bob (receiving, with `bobArgs`), named `A` and `B` by `user`, mutual
 * contacts, alice in a chat.
 */
async function pair(
  server: TestServer,
  user: (name: string) => string,
  bobArgs: string[] = [],
  aliceArgs: string[] = [],
) {
  const [A, B] = [user("alice"), user("bob")];
  const alice = await TestClient.start(A, server, { args: aliceArgs });
  const bob = await TestClient.start(B, server, { args: bobArgs });
  await alice.signup(A);
  await bob.signup(B);
  await befriend(alice, bob);
  await alice.send(`chat ${B}`);
  await alice.event("chat_opened", { with: B, online: true });
  const dir = await Deno.makeTempDir({ prefix: "confab-offers-" });
  return {
    alice,
    bob,
    A,
    B,
    dir,
    downloads: join(bob.home, B, "downloads"),
    partial: join(bob.home, B, "partial"),
    async [Symbol.asyncDispose]() {
      await alice[Symbol.asyncDispose]();
      await bob[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/**
 * The scenarios that leave the server up share one, each with users of its own; the one that
 * kills its server keeps a server of its own.
 */
const shared = sharedServer("file offers: scenarios on one server");

shared.test("a peer pushing a file nobody asked for writes nothing until the receiver accepts it", async ({ server, user }) => {
  await using p = await pair(server, user);
  const { alice, bob } = p;
  const data = await randomFile(p.dir, "report.pdf", 300 * KiB + 5);
  const sha256 = createHash("sha256").update(data).digest("hex");

  await alice.send(`/s ${join(p.dir, "report.pdf")}`);
  const offer = await bob.event("transfer_offered", { direction: "in" });
  assert.equal(offer.peer, p.A);
  assert.equal(offer.name, "report.pdf");
  assert.equal(offer.size, data.length);
  assert.equal(typeof offer.offer, "number");
  assert.ok(Number(offer.expiresAt) > Date.now(), "an offer says when it expires");
  await alice.event("transfer_offered", { direction: "out", peer: p.B });

  // Waiting for bob: not a byte of it on his disk.
  assert.deepEqual(await listDir(p.partial), []);
  assert.deepEqual(await listDir(p.downloads), []);
  assert.ok(!bob.events().some((e) => e.type === "transfer_started"), "nothing started");

  await bob.send("offers");
  const list = await bob.event("offers");
  assert.deepEqual(list.offers, [
    { offer: offer.offer, peer: p.A, name: "report.pdf", size: data.length },
  ]);

  await bob.send(`accept ${offer.offer}`);
  const done = await bob.event("transfer_done", { direction: "in" });
  await alice.event("transfer_done", { direction: "out" });
  assert.deepEqual(await Deno.readFile(String(done.savedAs)), data);
  assert.equal(done.sha256, sha256, "the hash the sender sent after the data, checked");
});

shared.test("a file offer the receiver declines (/n) is refused at the sender and nothing is stored", async ({ server, user }) => {
  await using p = await pair(server, user);
  const { alice, bob } = p;
  await randomFile(p.dir, "unwanted.bin", 200 * KiB);

  await alice.send(`/s ${join(p.dir, "unwanted.bin")}`);
  await bob.event("transfer_offered", { direction: "in" });
  await bob.send("/n");
  const declined = await bob.event("transfer_declined", { peer: p.A });
  assert.equal(declined.reason, "you declined");
  const failed = await alice.event("transfer_failed", { direction: "out" });
  assert.equal(failed.reason, `${p.B} declined`);
  assert.deepEqual(await listDir(p.partial), []);
  assert.deepEqual(await listDir(p.downloads), []);

  // An answer to an offer that no longer waits is a clear error, not a crash.
  await bob.send("/y");
  const error = await bob.event("error", { code: "NO_OFFER" });
  assert.match(String(error.message), /no file offer waits/);
});

shared.test("a file offer nobody answers expires and is refused at the sender", async ({ server, user }) => {
  await using p = await pair(server, user, ["--offer-timeout", "1"]);
  const { alice, bob } = p;
  await randomFile(p.dir, "ignored.bin", 100 * KiB);

  await alice.send(`/s ${join(p.dir, "ignored.bin")}`);
  const offer = await bob.event("transfer_offered", { direction: "in" });
  const declined = await bob.event("transfer_declined", { offer: offer.offer });
  assert.match(String(declined.reason), /nobody answered/);
  const failed = await alice.event("transfer_failed", { direction: "out" });
  // bob's client said no for him: the sender is not told he declined.
  assert.equal(
    failed.reason,
    `${p.B} did not take it: the offer expired: nobody answered it in time`,
  );
  assert.deepEqual(await listDir(p.partial), []);
});

Deno.test("--auto-accept contacts takes a contact's file while the server is away (the list known at login)", async () => {
  await using server = await startServer();
  await using p = await pair(server, (name) => name, ["--auto-accept", "contacts"]);
  const { alice, bob } = p;
  const data = await randomFile(p.dir, "offline.bin", 100 * KiB);
  // bob's client knows his contacts (asked at login and when he added alice); the server dies.
  server.proc.kill("SIGKILL");
  await server.proc.status;
  await bob.event("server_lost");

  await alice.send(`/s ${join(p.dir, "offline.bin")}`);
  const done = await bob.event("transfer_done", { direction: "in" });
  assert.deepEqual(await Deno.readFile(String(done.savedAs)), data);
  assert.ok(!bob.events().some((e) => e.type === "transfer_offered"), "not asked");
});

shared.test("--auto-accept none declines every file offer without asking", async ({ server, user }) => {
  await using p = await pair(server, user, ["--auto-accept", "none"]);
  const { alice, bob } = p;
  await randomFile(p.dir, "pushed.bin", 100 * KiB);

  await alice.send(`/s ${join(p.dir, "pushed.bin")}`);
  const declined = await bob.event("transfer_declined", { peer: p.A });
  assert.match(String(declined.reason), /--auto-accept none/);
  await alice.event("transfer_failed", { direction: "out" });
  assert.ok(!bob.events().some((e) => e.type === "transfer_offered"), "not asked");
  assert.deepEqual(await listDir(p.partial), []);
});

shared.test("a peer offering more than --max-partial holds aside is refused before a byte is written", async ({ server, user }) => {
  await using p = await pair(server, user, ["--auto-accept", "contacts", "--max-partial", "1M"]);
  const { alice, bob } = p;
  await randomFile(p.dir, "filler.bin", 2 * 1024 * KiB);

  await alice.send(`/s ${join(p.dir, "filler.bin")}`);
  const declined = await bob.event("transfer_declined", { peer: p.A });
  assert.match(String(declined.reason), /--max-partial/);
  const failed = await alice.event("transfer_failed", { direction: "out" });
  assert.match(String(failed.reason), /no room/);
  assert.deepEqual(await listDir(p.partial), []);

  // A file that fits is taken: the cap is on room, not on the sender.
  const small = await randomFile(p.dir, "small.bin", 500 * KiB);
  await alice.send(`/s ${join(p.dir, "small.bin")}`);
  const done = await bob.event("transfer_done", { direction: "in" });
  assert.deepEqual(await Deno.readFile(String(done.savedAs)), small);
});

shared.test("two offers accepted at once cannot both take the last room: a transfer in progress counts whole", async ({ server, user }) => {
  // Long peer timeouts: alice is frozen for a moment, and the link must outlive it.
  const slow = ["--peer-timeout", "60"];
  await using p = await pair(server, user, [...slow, "--max-partial", "1M"], slow);
  const { alice, bob } = p;
  await randomFile(p.dir, "one.bin", 700 * KiB);
  await randomFile(p.dir, "two.bin", 700 * KiB);
  await alice.send(`/s ${join(p.dir, "one.bin")}`);
  const one = await bob.event("transfer_offered", { direction: "in", name: "one.bin" });
  await alice.send(`/s ${join(p.dir, "two.bin")}`);
  const two = await bob.event("transfer_offered", { direction: "in", name: "two.bin" });

  // alice frozen: once accepted, "one" stays in progress with nothing received yet.
  alice.proc.kill("SIGSTOP");
  try {
    await bob.send(`accept ${one.offer}`);
    await bob.event("transfer_started", { direction: "in", name: "one.bin" });
    await bob.send(`accept ${two.offer}`);
    const declined = await bob.event("transfer_declined", { name: "two.bin" });
    assert.match(String(declined.reason), /--max-partial/);
  } finally {
    alice.proc.kill("SIGCONT");
  }
  await bob.event("transfer_done", { direction: "in", name: "one.bin" });
  const failed = await alice.event("transfer_failed", { direction: "out", name: "two.bin" });
  assert.match(String(failed.reason), /no room/);
});

shared.test("a peer offering a file the disk has no room for is refused after a free-space check", async ({ server, user }) => {
  // More free space asked for than any disk here has: the real free space (statfs) is short.
  await using p = await pair(server, user, [
    "--auto-accept",
    "contacts",
    "--keep-free",
    "100000000G",
  ]);
  const { alice, bob } = p;
  await randomFile(p.dir, "big.bin", 100 * KiB);

  await alice.send(`/s ${join(p.dir, "big.bin")}`);
  const declined = await bob.event("transfer_declined", { peer: p.A });
  assert.match(String(declined.reason), /not enough free disk space: \d+ bytes free/);
  await alice.event("transfer_failed", { direction: "out" });
  assert.deepEqual(await listDir(p.partial), []);
});

Deno.test("statfs from node:fs, which the free-space check uses, agrees with df on Deno", async () => {
  const dir = await Deno.makeTempDir({ prefix: "confab-statfs-" });
  try {
    const fs = await statfs(dir);
    const ours = fs.bavail * fs.bsize;
    const df = await new Deno.Command("df", { args: ["-B1", "--output=avail", dir] }).output();
    assert.ok(df.success, new TextDecoder().decode(df.stderr));
    const theirs = Number(new TextDecoder().decode(df.stdout).trim().split("\n").at(-1));
    assert.ok(ours > 0 && theirs > 0, `${ours} and ${theirs}`);
    // Others write to this disk meanwhile: the same figure within 1 %.
    assert.ok(Math.abs(ours - theirs) <= theirs / 100, `statfs ${ours}, df ${theirs}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
