/**
 * The terminal client says plainly what state the server connection is in, on a real
 * pseudo-terminal: unreachable, or answered by a server with another key (refused, never given
 * the session); it keeps retrying and re-attaches on its own when the real server is back, and
 * `/u` never answers "nobody online" when the truth is that the server cannot be asked.
 */
import assert from "node:assert/strict";
import { startServer, TestClient } from "../support/processes.ts";
import { addContacts, signUp, ttyClient } from "../support/tty.ts";

Deno.test("after a server-key mismatch the client keeps retrying and re-attaches when the real server is back", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-real-" });
  try {
    let real = await startServer({ dataDir });
    const port = real.port;
    try {
      await using bob = await TestClient.start("bob", real);
      await bob.signup("bob");
      await using alice = await ttyClient("alice", real);
      await signUp(alice, "alice");
      await alice.line("contacts add bob");
      await addContacts([bob], "alice");
      await alice.line("chat bob");
      await alice.waitFor("alice → bob>", "the chat");
      await bob.event("link_up", { user: "alice" });

      // The real server goes away: the status line says so at once.
      assert.equal((await real.esc()).code, 0);
      await real[Symbol.asyncDispose]();
      await alice.waitFor("server unreachable", "the unreachable state");
      await alice.line("/u");
      const unreachable = await alice.waitFor(
        "the server is unreachable, so who is online is unknown; connected directly to: bob",
        "an honest /u while the server is away",
      );
      assert.doesNotMatch(unreachable, /none of your contacts is online/);

      // Something else answers at its address, with another key.
      {
        await using impostor = await startServer({ port });
        await alice.waitFor(/different key/, "the warning about the key", { history: true });
        await alice.waitFor("server key refused", "the refused state on the status line");
        await alice.line("/u");
        const screen = await alice.waitFor(/so who is online is unknown/, "an honest /u", {
          history: true,
        });
        assert.doesNotMatch(screen, /none of your contacts is online/);
        assert.match(screen, /connected directly to: bob/);
        // The session token never went to it.
        assert.ok(!impostor.proc.out.lines.some((l) => /resume|login: alice/.test(l)));
        // Chatting goes on meanwhile.
        await alice.line("still talking");
        await bob.event("message", { from: "alice", text: "still talking" });
        assert.equal((await impostor.esc()).code, 0);
      }

      // The real server is back: both re-attach without anyone typing anything.
      real = await startServer({ dataDir, port });
      await alice.waitFor("reconnected to the server", "alice re-attached", { ms: 30_000 });
      await bob.event("server_back", {}, 30_000);
      const back = await alice.waitFor(/^alice → bob>$/m, "the prompt");
      assert.doesNotMatch(back, /server key refused|server unreachable/);
      await alice.line("/u");
      await alice.waitFor("online: bob", "bob online");
    } finally {
      await real[Symbol.asyncDispose]();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
