/**
 * Leaving a group right after a line: the line typed before `/q` reaches every member linked
 * at the time, before they learn of the leave, and each member's ack counts. Real processes.
 */
import assert from "node:assert/strict";
import { startServer, type TestClient } from "./support/processes.ts";
import { crowd, disposeAll, groupOf } from "./support/groups.ts";

Deno.test("a line typed right before /q reaches every member linked, before they learn of the leave", async () => {
  await using server = await startServer();
  const clients = await crowd(server, ["alice", "bob", "carol"]);
  try {
    const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
    const group = await groupOf(clients);
    await bob.event("group_opened", { group });
    // One write: the client reads /q while the line is still being signed and stored.
    await bob.send("bye all\n/q");
    const sent = await bob.anyEvent("sent", { text: "bye all" });
    await bob.anyEvent("group_closed", { group, reason: "you left" });
    for (const c of [alice, carol]) {
      const left = await c.anyEvent("group_members", { group, left: ["bob"] });
      const got = c.events().find((e) =>
        e.type === "message" && e.from === "bob" && e.text === "bye all"
      );
      assert.ok(got, `${c.proc.name} got bob's last line`);
      assert.ok(Number(got.time) <= Number(left.time), "before it learned of the leave");
      await bob.anyEvent("delivered", { id: sent.id, to: c.proc.name });
    }
  } finally {
    await disposeAll(clients);
  }
});
