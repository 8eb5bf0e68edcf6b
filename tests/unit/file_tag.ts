/**
 * fileTag: the name a sender gives a version of a file, keyed so that a receiver holding the
 * file cannot search for its modification time.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileTag } from "../../lib/client/transfers.ts";

const KiB = 1024;

Deno.test("fileTag is stable for one file and key, and changes with the key, the time, the size and either end", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "f.bin");
    const data = new Uint8Array(300 * KiB);
    for (let at = 0; at < data.length; at += 64 * KiB) {
      crypto.getRandomValues(data.subarray(at, at + 64 * KiB));
    }
    await Deno.writeFile(path, data);
    const key = crypto.getRandomValues(new Uint8Array(32));
    const other = crypto.getRandomValues(new Uint8Array(32));
    const time = 1_795_000_000_123;
    const tag = await fileTag(path, data.length, time, key);
    assert.match(tag, /^[0-9a-f]{64}$/);
    assert.equal(await fileTag(path, data.length, time, key), tag);
    assert.notEqual(await fileTag(path, data.length, time, other), tag);
    assert.notEqual(await fileTag(path, data.length, time + 1, key), tag);
    assert.notEqual(await fileTag(path, data.length - 1, time, key), tag);

    const edited = async (at: number) => {
      const copy = data.slice();
      copy[at] = copy[at]! ^ 1;
      await Deno.writeFile(path, copy);
      return await fileTag(path, copy.length, time, key);
    };
    assert.notEqual(await edited(5), tag, "the first 64 KiB count");
    assert.notEqual(await edited(data.length - 5), tag, "the last 64 KiB count");
    // The middle does not: such an edit, with size and time kept, is caught by the SHA-256
    // check at the end of the transfer instead (tests/e2e_files_test.ts).
    assert.equal(await edited(150 * KiB), tag);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fileTag reads small and empty files whole", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const key = new Uint8Array(32);
    const path = join(dir, "small.txt");
    await Deno.writeTextFile(path, "hello");
    const a = await fileTag(path, 5, 0, key);
    await Deno.writeTextFile(path, "hellp");
    assert.notEqual(await fileTag(path, 5, 0, key), a);
    await Deno.writeFile(path, new Uint8Array(0));
    assert.match(await fileTag(path, 0, 0, key), /^[0-9a-f]{64}$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
