/**
 * End to end with real processes: accounts, contacts, a direct chat both ways, and chats that
 * survive the server going away and coming back.
 */
import assert from "node:assert/strict";
import { befriend, startServer, TestClient } from "./support/processes.ts";

async function pairInChat(server: { port: number }) {
  const alice = await TestClient.start("alice", server);
  const bob = await TestClient.start("bob", server);
  await alice.signup("alice");
  await bob.signup("bob");
  await alice.send("contacts add bob");
  await alice.event("contact_added", { user: "bob", mutual: false });
  await bob.send("contacts add alice");
  await bob.event("contact_added", { user: "alice", mutual: true });
  await alice.send("contacts");
  const list = await alice.event("contacts");
  assert.deepEqual(list.contacts, [{ user: "bob", online: true }]);
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob" });
  await bob.send("chat alice");
  await bob.event("chat_opened", { with: "alice" });
  return { alice, bob };
}

Deno.test("two clients sign up, add each other and chat both ways directly", async () => {
  await using server = await startServer();
  const { alice, bob } = await pairInChat(server);
  await using _a = alice;
  await using _b = bob;

  await alice.send("hello bob");
  const got = await bob.event("message", { from: "alice", text: "hello bob" });
  assert.equal(got.inChat, true);
  await alice.event("delivered", { to: "bob" });

  await bob.send("hi alice, got it");
  await alice.event("message", { from: "bob", text: "hi alice, got it" });
  await bob.event("delivered", { to: "alice" });

  // The server only brokered: it never saw the texts.
  const serverLog = server.proc.out.lines.join("\n");
  assert.ok(!serverLog.includes("hello bob"));

  await alice.send("/q");
  await alice.event("chat_closed", { with: "bob" });
  await bob.event("peer_left", { user: "alice" });
});

Deno.test("a message to a user who is not in the chat arrives as a notice", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await using bob = await TestClient.start("bob", server);
  await alice.signup("alice");
  await bob.signup("bob");
  await befriend(alice, bob);
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob" });
  await alice.send("are you there?");
  const notice = await bob.event("message", { from: "alice" });
  assert.equal(notice.inChat, false);
});

Deno.test("chats go on when the server leaves with esc, and clients re-attach when it is back", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-srv-" });
  try {
    const first = await startServer({ dataDir });
    const { alice, bob } = await pairInChat(first);
    await using _a = alice;
    await using _b = bob;

    const status = await first.esc();
    assert.equal(status.code, 0);
    await first[Symbol.asyncDispose]();
    await alice.event("server_closing");
    await alice.event("server_lost");
    await bob.event("server_lost");

    // The server is down: messages still go peer to peer, both ways.
    await alice.send("still here without the server");
    await bob.event("message", { from: "alice", text: "still here without the server" });
    await bob.send("me too");
    await alice.event("message", { from: "bob", text: "me too" });

    // Back on the same port: both clients re-attach with their session tokens.
    await using second = await startServer({ dataDir, port: first.port });
    await alice.event("server_back", { resumed: true });
    await bob.event("server_back", { resumed: true });
    await second.proc.out.find((l) => l.includes("resume: alice"), "alice resumed");
    await second.proc.out.find((l) => l.includes("resume: bob"), "bob resumed");
    assert.ok(!second.proc.out.lines.some((l) => l.includes("login: ")), "no password login");

    // And the directory works again: contacts with presence.
    await alice.send("/q");
    await alice.event("chat_closed");
    await alice.send("contacts");
    const list = await alice.event("contacts");
    assert.deepEqual(list.contacts, [{ user: "bob", online: true }]);
    await second.proc.write("list");
    await second.proc.out.waitFor((l) => /^bob\*\d\d:\d\d:\d\d\*\d+$/.test(l), "bob in list");
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
