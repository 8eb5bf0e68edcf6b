/**
 * The server over PostgreSQL (`--store`), end to end with real processes and a real throwaway
 * database cluster: state survives a kill -9 of the server, and a store that cannot be reached
 * or named is one clear line at start and a non-zero exit.
 */
import assert from "node:assert/strict";
import { signUpAsContacts } from "../support/cluster.ts";
import { freshDatabase } from "../support/store_backends.ts";
import { Proc, startServer, TestClient } from "../support/processes.ts";

Deno.test("a server over PostgreSQL keeps accounts, contacts and mail across a kill -9", async () => {
  const url = await freshDatabase();
  const dataDir = await Deno.makeTempDir({ prefix: "confab-srv-" });
  const bobHome = await Deno.makeTempDir({ prefix: "confab-bob-" });
  try {
    let port: number;
    {
      await using first = await startServer({ dataDir, args: ["--store", url] });
      port = first.port;
      assert.ok(
        first.proc.out.lines.some((l) => l.includes("data: postgres://confab@127.0.0.1")),
        "the banner names the database",
      );
      await using alice = await TestClient.start("alice", first);
      {
        await using bob = await TestClient.start("bob", first, { home: bobHome });
        await signUpAsContacts(alice, bob);
      }
      await alice.send("chat bob");
      await alice.event("chat_opened", { with: "bob", online: false });
      for (const text of ["kept one", "kept two"]) {
        await alice.send(text);
        const sent = await alice.event("sent", { text });
        await alice.event("stored", { id: sent.id });
      }
      first.proc.kill("SIGKILL");
      await first.proc.status;
    }
    await using server = await startServer({ dataDir, port, args: ["--store", url] });
    await using bob = await TestClient.start("bob", server, { home: bobHome });
    await bob.login("bob");
    const summary = await bob.event("mail_summary");
    assert.deepEqual(
      (summary.entries as { from: string; count: number }[]).map((e) => [e.from, e.count]),
      [["alice", 2]],
    );
    await bob.send("show alice");
    await bob.event("message", { text: "kept one" });
    await bob.event("message", { text: "kept two" });
    await bob.event("shown", { from: "alice", count: 2 });
  } finally {
    await Deno.remove(dataDir, { recursive: true });
    await Deno.remove(bobHome, { recursive: true });
  }
});

/** Runs `server.ts` with `args` and waits for it to exit. */
async function serverFails(args: string[]): Promise<{ code: number; stderr: string[] }> {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-srv-" });
  try {
    await using proc = new Proc([
      "run",
      "-A",
      "server.ts",
      "--port",
      "0",
      "--data",
      dataDir,
      ...args,
    ], "server");
    const status = await proc.exited(30_000);
    await proc.err.ended;
    return { code: status.code, stderr: proc.err.lines.filter((l) => l.trim() !== "") };
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
}

Deno.test("a bad --store URL, an unreachable database or a pool without a database is one clear line and exit 1", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = listener.addr.port;
  listener.close();
  const cases: [string[], RegExp][] = [
    [["--store", "mysql://db/confab"], /--store must be a postgres:\/\/.* URL/],
    // A pool size for SQLite would be ignored without a word.
    [["--store-connections", "3"], /--store-connections .*: give --store postgres:/],
    [
      ["--store", `postgres://confab:hunter2@127.0.0.1:${closedPort}/confab`],
      /cannot reach the database at postgres:\/\/confab:\*\*\*@127\.0\.0\.1:\d+\/confab: connection refused/,
    ],
  ];
  for (const [args, pattern] of cases) {
    const { code, stderr } = await serverFails(args);
    assert.equal(code, 1, args.join(" "));
    assert.equal(stderr.length, 1, `one line, got:\n${stderr.join("\n")}`);
    assert.match(stderr[0]!, pattern);
    assert.doesNotMatch(stderr[0]!, /hunter2/, "the password is not printed");
  }
  // A database that does not exist on a server that does.
  const url = new URL(await freshDatabase());
  url.pathname = "/no_such_database";
  const { code, stderr } = await serverFails(["--store", url.toString()]);
  assert.equal(code, 1);
  assert.equal(stderr.length, 1, stderr.join("\n"));
  assert.match(stderr[0]!, /does not exist/);
});
