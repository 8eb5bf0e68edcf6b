/**
 * What Confab leaves on disk is for its owner only: every file it writes (databases and their
 * write-ahead logs, keys, pins) is 0600 and every folder 0700, and a data or home folder that
 * someone left open to others is closed, with a notice.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { befriend, startServer, TestClient } from "../support/processes.ts";

/** Every path below `dir` whose mode lets the group or others in, with that mode. */
async function openToOthers(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (path: string) => {
    const info = await Deno.lstat(path);
    const mode = info.mode! & 0o777;
    if (mode & 0o077) found.push(`${path} ${mode.toString(8)}`);
    if (info.isDirectory) {
      for await (const entry of Deno.readDir(path)) await walk(join(path, entry.name));
    }
  };
  await walk(dir);
  return found;
}

Deno.test("a server data dir and a client home left open to others are closed, and every file written is owner-only", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-srv-" });
  const home = await Deno.makeTempDir({ prefix: "confab-home-" });
  try {
    await Deno.chmod(dataDir, 0o755);
    await Deno.chmod(home, 0o755);
    {
      await using server = await startServer({ dataDir });
      await server.proc.out.find((l) => l.includes(dataDir) && /0?755/.test(l), "a notice");
      await using alice = await TestClient.start("alice", server, { home });
      await alice.proc.out.find(
        (l) => l.includes('"type":"info"') && l.includes(home) && l.includes("755"),
        "a notice about the home",
      );
      await using bob = await TestClient.start("bob", server);
      await alice.signup("alice");
      await bob.signup("bob");
      await befriend(alice, bob);
      // Some history on alice's side, and mail waiting on the server (the WAL files exist).
      await bob.send("chat alice");
      await bob.event("chat_opened");
      await bob.send("hello alice");
      await alice.event("message", { from: "bob" });
      await alice.send("out");
      await alice.event("logged_out");
      await bob.send("while you were out");
      await bob.event("stored");
      assert.deepEqual(await openToOthers(dataDir), [], "open to others while running");
      assert.deepEqual(await openToOthers(home), [], "open to others while running");
    }
    assert.deepEqual(await openToOthers(dataDir), [], "open to others after the server stopped");
    assert.deepEqual(await openToOthers(home), []);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
    await Deno.remove(home, { recursive: true });
  }
});
