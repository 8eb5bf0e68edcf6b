import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { fileHash, OFF_THREAD_FROM } from "../../lib/client/file_hash.ts";
import { loadNodeCrypto } from "../../lib/crypto/node_crypto.ts";

await loadNodeCrypto(); // a transfer loads it before it hashes a file (node_crypto.ts)

const MiB = 1024 * 1024;

/** Chunks of the sizes given, random bytes each. */
function chunks(sizes: number[]): Uint8Array[] {
  return sizes.map((size) => {
    const chunk = new Uint8Array(size);
    for (let at = 0; at < size; at += 65_536) {
      crypto.getRandomValues(chunk.subarray(at, Math.min(size, at + 65_536)));
    }
    return chunk;
  });
}

function expected(parts: Uint8Array[]): string {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  return hash.digest("hex");
}

Deno.test("fileHash() of a large file, off the main thread, is the SHA-256 of its chunks in order, across the ring's wrap", async () => {
  // Chunk sizes that do not divide the 2 MiB ring, one larger than half of it, some tiny.
  const parts = chunks([262_051, 262_051, 1, 1_500_000, 262_051, 7, 3 * MiB, 262_051, 1_048_576]);
  const hash = fileHash(OFF_THREAD_FROM);
  // Queued without waiting for one another (more than the ring holds).
  const updates = parts.map((part) => hash.update(part));
  await Promise.all(updates);
  assert.equal(await hash.digest(), expected(parts));
});

Deno.test("fileHash() of a small file hashes on this thread, the same SHA-256", async () => {
  const parts = chunks([1000, 65_000, 3]);
  const hash = fileHash(OFF_THREAD_FROM - 1);
  for (const part of parts) await hash.update(part);
  assert.equal(await hash.digest(), expected(parts));
});

Deno.test("fileHash() closed early ends its worker, and later calls reject", async () => {
  const hash = fileHash(OFF_THREAD_FROM);
  await hash.update(new Uint8Array(1000));
  hash.close();
  hash.close(); // a second close is no error
  await assert.rejects(hash.update(new Uint8Array(10)), /closed/);
  await assert.rejects(hash.digest(), /closed/);
});

Deno.test("fileHash() of an empty file off the main thread is the SHA-256 of nothing", async () => {
  const hash = fileHash(OFF_THREAD_FROM);
  assert.equal(await hash.digest(), expected([]));
});
