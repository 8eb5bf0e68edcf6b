/**
 * `deno task cluster` as a person tries it: PostgreSQL and instances on consecutive ports come
 * up, a client pointed at all of them signs up, and Ctrl-C stops and removes everything.
 */
import assert from "node:assert/strict";
import { Proc, TestClient } from "../support/processes.ts";

/**
 * A port `p` with `p + 1` free as well. Tried below the OS's ephemeral range (32768 and up on
 * Linux), where the neighbour of a port the OS hands out is often some connection's.
 */
function twoFreePorts(): number {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    try {
      const a = Deno.listen({ hostname: "127.0.0.1", port });
      try {
        Deno.listen({ hostname: "127.0.0.1", port: port + 1 }).close();
        return port;
      } finally {
        a.close();
      }
    } catch {
      // taken: try another
    }
  }
  throw new Error("no two consecutive free ports");
}

Deno.test("deno task cluster starts PostgreSQL and instances, and Ctrl-C removes them", async () => {
  const port = twoFreePorts();
  await using task = new Proc(
    ["run", "-A", "scripts/cluster.ts", "--port", String(port), "--instances", "2"],
    "cluster",
  );
  const dataLine = await task.out.waitFor((l) => l.includes("(data in "), "PostgreSQL up", 60_000);
  const dir = /\(data in (.+)\)$/.exec(dataLine)![1]!;
  await task.out.waitFor((l) => l.includes("2 instances are up"), "instances up", 60_000);
  const hint = await task.out.waitFor((l) => l.includes("--server "), "the client command");
  const addresses = `127.0.0.1:${port},127.0.0.1:${port + 1}`;
  assert.ok(hint.endsWith(`--server ${addresses}`), hint);
  {
    await using alice = await TestClient.start("alice", { port }, {
      args: ["--server", addresses],
    });
    await alice.signup("alice");
  }
  task.kill("SIGINT");
  const status = await task.exited(60_000);
  assert.equal(status.code, 0);
  await task.out.find((l) => l.includes("bye"), "bye");
  assert.throws(() => Deno.statSync(dir), Deno.errors.NotFound, "the directory is removed");
});
