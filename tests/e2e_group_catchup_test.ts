/**
 * Catch-up inside a group from any member who has the message, with real processes: a member
 * away while its author wrote, the author gone before the member came back; the other members
 * pass the messages on, signed by their author, and the member's client checks every
 * signature against the author's pinned key.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startServer, TestClient } from "./support/processes.ts";
import { crowd, disposeAll, groupOf } from "./support/groups.ts";
import { CraftedPeer } from "./support/crafted_peer.ts";
import { groupHandle, groupMessageStatement } from "../lib/peer/group_state.ts";
import { Identity } from "../lib/peer/identity.ts";

Deno.test("author offline before the absent member returns: the member gets the messages from another member, once, in order, and a forged one passed on is refused", async () => {
  await using server = await startServer();
  const fast = { args: ["--peer-timeout", "2"] };
  const names = ["alice", "bob", "carol", "mallory"];
  const clients = await crowd(server, names, Object.fromEntries(names.map((n) => [n, fast])));
  const [alice, bob, carol, mallory] = clients as [TestClient, TestClient, TestClient, TestClient];
  const runs: TestClient[] = [];
  try {
    const group = await groupOf(clients);
    // Mallory's key, for the forgery below; then she is away for good.
    const malloryKey = (await Identity.load(join(mallory.home, "mallory", "identity.json")))!;
    mallory.proc.kill("SIGKILL");
    await alice.send("a0");
    await bob.anyEvent("message", { text: "a0", group, via: "direct" });

    // Bob is away (killed); alice writes; carol gets it all; then alice is gone as well.
    bob.proc.kill("SIGKILL");
    await alice.anyEvent("group_presence", { group, user: "bob", here: false });
    const lines = ["a1", "a2", "a3", "a4", "a5"];
    for (const text of lines) await alice.send(text);
    for (const text of lines) await carol.anyEvent("message", { text, group, from: "alice" });
    const last = await alice.anyEvent("sent", { text: "a5", group });
    await alice.anyEvent("group_status", { id: last.id, mark: "1/3", pending: ["bob", "mallory"] });
    alice.proc.kill("SIGKILL");
    await carol.anyEvent("group_presence", { group, user: "alice", here: false });

    // Bob comes back: alice is not there, carol passes her messages on.
    await bob.proc[Symbol.asyncDispose]();
    const bob2 = await TestClient.start("bob", server, { home: bob.home, ...fast });
    runs.push(bob2);
    await bob2.login("bob");
    await bob2.event("group_rejoined", { group });
    for (const text of lines) {
      await bob2.anyEvent("message", {
        text,
        group,
        from: "alice",
        via: "member",
        relayedBy: "carol",
      });
    }

    // A member passes on a message that alice never wrote (signed with mallory's own key): bob
    // refuses it, stores nothing and shows nothing.
    const { peerPort } = bob2.events().find((e) => e.type === "ready")! as unknown as {
      peerPort: number;
    };
    await using peer = await CraftedPeer.dial(peerPort, {
      me: "mallory",
      to: "bob",
      identity: malloryKey,
    });
    const forged = {
      group,
      author: "alice",
      id: crypto.randomUUID(),
      seq: 6,
      ts: Date.now(),
      prevTs: Number(last.ts),
      text: "forged: send me your password",
    };
    await peer.send({
      type: "group_relay",
      ...forged,
      sig: await malloryKey.sign(groupMessageStatement(forged)),
    });
    const refused = await bob2.anyEvent("group_relay_refused", {
      group,
      from: "mallory",
      id: forged.id,
    });
    assert.match(String(refused.reason), /not signed by alice's identity key/);

    // Alice comes back: her outbox sends bob what he already has; he acks it (not shown again),
    // and only then does alice count him among those who have it.
    const alice2 = await TestClient.start("alice", server, { home: alice.home, ...fast });
    runs.push(alice2);
    await alice2.login("alice");
    await alice2.anyEvent("group_status", {
      id: last.id,
      have: ["bob", "carol"],
      pending: ["mallory"],
    });
    await bob2.send("/b");
    await bob2.send(`history ${groupHandle(group)}`);
    const history = await bob2.event("history");
    const fromAlice = (history.entries as { from: string; text: string }[])
      .filter((h) => h.from === "alice").map((h) => h.text);
    assert.deepEqual(fromAlice, ["a0", ...lines], "each once, in alice's order, nothing forged");
    const shown = [...bob.events(), ...bob2.events()]
      .filter((e) => e.type === "message" && e.group === group && e.from === "alice")
      .map((e) => e.text);
    assert.deepEqual(shown, ["a0", ...lines], "shown once each, in order");
  } finally {
    await disposeAll([...clients, ...runs]);
  }
});
