/**
 * The server's console: on a real pseudo-terminal it has a prompt and log lines never split
 * what the operator is typing; times read as the clients show them (local `HH:MM:SS`, dates in
 * `registry`); `list` shows when a user logged in, not when their client last re-attached.
 */
import assert from "node:assert/strict";
import { startServer, TestClient } from "../support/processes.ts";
import { Tty } from "../support/tty.ts";
import { clock } from "../../lib/util/time.ts";

Deno.test("the server console keeps the operator's half-typed line below the log lines", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-srv-" });
  try {
    await using server = await Tty.deno("server", ["server.ts", "--port", "0", "--data", dataDir], {
      env: { NO_COLOR: "1" },
    });
    const banner = await server.waitFor(/listening on 127\.0\.0\.1:(\d+)/, "the banner");
    const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(banner)![1]);
    await server.waitFor(/^confab-server>$/m, "the prompt");
    await server.type("regis");

    await using alice = await TestClient.start("alice", { port });
    await alice.signup("alice");
    const screen = await server.waitFor(/login: alice/, "alice's login in the log");
    // Log lines carry the local time the way clients show it, and come above the prompt.
    assert.match(screen, /^\[\d\d:\d\d:\d\d\] login: alice/m);
    assert.doesNotMatch(screen, /\d{4}-\d\d-\d\dT/, "no ISO timestamps");
    const rows = screen.split("\n");
    assert.equal(rows.at(-1), "confab-server> regis", `the typed text intact:\n${screen}`);
    assert.ok(rows.findIndex((r) => r.includes("login: alice")) < rows.length - 1);

    await server.type("try alice");
    await server.key("Enter");
    await server.waitFor(
      /^alice\*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\*-\*\d+$/m,
      "a registry row with dates",
    );
    // Tab completes a console command.
    await server.type("li");
    await server.key("Tab");
    await server.waitFor(/^confab-server> list$/m, "list completed");
    await server.key("Enter");
    await server.waitFor(/^alice\*\d\d:\d\d:\d\d\*\d+$/m, "the list");
    await server.line("esc");
    assert.equal(await server.exitCode(), 0);
    await alice.event("server_closing");
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("list shows the original login time after the client re-attached", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-srv-" });
  try {
    let server = await startServer({ dataDir });
    const port = server.port;
    try {
      await using alice = await TestClient.start("alice", server);
      await alice.signup("alice");
      await server.proc.write("list");
      const first = await server.proc.out.waitFor((l) => l.startsWith("alice*"), "alice listed");
      const loginTime = first.split("*")[1]!;
      // A re-attach a second or more later must still show the login time.
      for (let i = 0; clock(Date.now()) === loginTime && i < 100; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal((await server.esc()).code, 0);
      await server[Symbol.asyncDispose]();
      await alice.event("server_lost");
      server = await startServer({ dataDir, port });
      await alice.event("server_back", { resumed: true }, 30_000);
      await server.proc.write("list");
      const again = await server.proc.out.waitFor((l) => l.startsWith("alice*"), "alice listed");
      assert.equal(again.split("*")[1], loginTime);
    } finally {
      await server[Symbol.asyncDispose]();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
