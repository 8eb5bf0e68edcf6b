/**
 * End to end with real processes: SIGTERM, SIGINT and SIGHUP end a client promptly and cleanly,
 * whatever it was doing: here, closing a chat whose peer stopped reading (frozen with a file
 * half sent), with its stdin already closed. Its history is all there afterwards.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startServer, TestClient } from "./support/processes.ts";
import { pairInChat, stallReceiver } from "./support/sockets.ts";

const SLOW_TO_NOTICE = ["--peer-timeout", "300", "--auto-accept", "contacts"];

const CASES = [
  { signal: "SIGTERM", stdin: "closed" },
  { signal: "SIGINT", stdin: "open" },
  { signal: "SIGHUP", stdin: "closed" },
] as const;

for (const { signal, stdin } of CASES) {
  Deno.test(`${signal} ends a client (stdin ${stdin}) that is stuck closing a chat with a frozen peer, within seconds, history kept`, async () => {
    await using server = await startServer();
    const dir = await Deno.makeTempDir({ prefix: "confab-signal-" });
    const aliceHome = join(dir, "alice");
    await Deno.mkdir(aliceHome);
    const alice = await TestClient.start("alice", server, {
      home: aliceHome,
      args: SLOW_TO_NOTICE,
    });
    await using bob = await TestClient.start("bob", server, { args: SLOW_TO_NOTICE });
    try {
      await pairInChat(alice, bob);
      await alice.send("before the freeze");
      await alice.event("delivered", { to: "bob" });
      // Bob stops reading; alice's writes to him back up (her link to him stays up: she gives
      // a silent peer 300 s).
      await stallReceiver(alice, bob, dir);

      // Her input ends (closing the chat waits on bob), or not; then the signal comes.
      if (stdin === "closed") await alice.proc.closeStdin();
      const sent = Date.now();
      alice.proc.kill(signal);
      const status = await alice.proc.exited();
      const took = Date.now() - sent;
      assert.equal(status.code, 0, `exit code ${status.code}`);
      // A quit gives the logout and the links 5 s; then the store is closed and it exits.
      assert.ok(took < 12_000, `took ${took} ms`);
    } finally {
      await alice[Symbol.asyncDispose]();
      bob.proc.kill("SIGKILL");
    }
    // Her history is intact.
    await using again = await TestClient.start("alice", server, { home: aliceHome });
    await again.login("alice");
    await again.send("history bob");
    const history = await again.event("history");
    const texts = (history.entries as { text: string }[]).map((e) => e.text);
    assert.ok(texts.includes("before the freeze"), JSON.stringify(texts));
    await Deno.remove(dir, { recursive: true });
  });
}
