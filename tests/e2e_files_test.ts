/**
 * File sharing end to end with real processes: byte-identical arrival (SHA-256), groups,
 * chat during a transfer, corruption, refusal, and resuming after the sender was killed.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { startServer, TestClient, type TestServer } from "./support/processes.ts";

async function randomFile(dir: string, name: string, bytes: number): Promise<string> {
  const path = join(dir, name);
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const chunk = new Uint8Array(1024 * 1024);
  for (let left = bytes; left > 0; left -= chunk.length) {
    crypto.getRandomValues(chunk.subarray(0, 65536));
    chunk.copyWithin(65536, 0, chunk.length - 65536);
    const n = Math.min(left, chunk.length);
    let written = 0;
    while (written < n) written += await file.write(chunk.subarray(written, n));
  }
  return path;
}

async function sha256Of(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  const buffer = new Uint8Array(1024 * 1024);
  for (;;) {
    const n = await file.read(buffer);
    if (n === null) break;
    hash.update(buffer.subarray(0, n));
  }
  return hash.digest("hex");
}

async function pair(server: TestServer, options: { bobArgs?: string[] } = {}) {
  const alice = await TestClient.start("alice", server);
  const bob = await TestClient.start("bob", server, { args: options.bobArgs });
  await alice.signup("alice");
  await bob.signup("bob");
  await alice.send("contacts add bob");
  await alice.event("contact_added");
  await bob.send("contacts add alice");
  await bob.event("contact_added");
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob", online: true });
  return { alice, bob };
}

Deno.test("a random binary file arrives byte-identical, 1:1", async () => {
  await using server = await startServer();
  const dir = await Deno.makeTempDir();
  const { alice, bob } = await pair(server);
  try {
    const path = await randomFile(dir, "photo.bin", 3 * 1024 * 1024 + 123);
    await alice.send(`/s ${path}`);
    const done = await bob.event("transfer_done", { direction: "in" }, 60_000);
    await alice.event("transfer_done", { direction: "out" }, 60_000);
    assert.equal(done.name, "photo.bin");
    assert.equal(await sha256Of(String(done.savedAs)), await sha256Of(path));
    assert.equal(String(done.savedAs), join(bob.home, "bob", "downloads", "photo.bin"));
  } finally {
    await alice[Symbol.asyncDispose]();
    await bob[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true });
  }
});
