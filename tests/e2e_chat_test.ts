/**
 * End to end with real processes: accounts, contacts, a direct chat both ways, and chats that
 * survive the server going away and coming back. Each runs on one server over SQLite and on two
 * instances over PostgreSQL, alice on one and bob on the other.
 */
import assert from "node:assert/strict";
import { befriend, startServer, TestClient } from "./support/processes.ts";
import { type Deployment, deployments } from "./support/deployment.ts";

async function pairInChat(d: Deployment) {
  const alice = await TestClient.start("alice", d.at("alice"));
  const bob = await TestClient.start("bob", d.at("bob"));
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

deployments.test("two clients sign up, add each other and chat both ways directly", async (d) => {
  const { alice, bob } = await pairInChat(d);
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
  for (const server of d.servers) {
    assert.ok(!server.proc.out.lines.join("\n").includes("hello bob"));
  }

  await alice.send("/q");
  await alice.event("chat_closed", { with: "bob" });
  await bob.event("peer_left", { user: "alice" });
});

deployments.test("a message to a user who is not in the chat arrives as a notice", async (d) => {
  await using alice = await TestClient.start("alice", d.at("alice"));
  await using bob = await TestClient.start("bob", d.at("bob"));
  await alice.signup("alice");
  await bob.signup("bob");
  await befriend(alice, bob);
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob" });
  await alice.send("are you there?");
  const notice = await bob.event("message", { from: "alice" });
  assert.equal(notice.inChat, false);
});

deployments.test("chats go on when the server leaves with esc, and clients re-attach when it is back", async (d) => {
  const { alice, bob } = await pairInChat(d);
  await using _a = alice;
  await using _b = bob;

  for (const status of await d.esc()) assert.equal(status.code, 0);
  await alice.event("server_closing");
  await alice.event("server_lost");
  await bob.event("server_lost");

  // The server is down: messages still go peer to peer, both ways.
  await alice.send("still here without the server");
  await bob.event("message", { from: "alice", text: "still here without the server" });
  await bob.send("me too");
  await alice.event("message", { from: "bob", text: "me too" });

  // Back on the same ports: both clients re-attach with their session tokens.
  await d.start();
  await alice.event("server_back", { resumed: true });
  await bob.event("server_back", { resumed: true });
  await d.at("alice").proc.out.find((l) => l.includes("resume: alice"), "alice resumed");
  await d.at("bob").proc.out.find((l) => l.includes("resume: bob"), "bob resumed");
  for (const server of d.servers) {
    assert.ok(!server.proc.out.lines.some((l) => l.includes("login: ")), "no password login");
  }

  // And the directory works again: contacts with presence.
  await alice.send("/q");
  await alice.event("chat_closed");
  await alice.send("contacts");
  const list = await alice.event("contacts");
  assert.deepEqual(list.contacts, [{ user: "bob", online: true }]);
  // The console lists bob, on alice's instance too (with the instance he is on, in a cluster).
  const operator = d.at("alice").proc;
  await operator.write("list");
  const where = d.shared ? `\\*${d.at("bob").address.replaceAll(".", "\\.")}` : "";
  const listed = new RegExp(`^bob\\*\\d\\d:\\d\\d:\\d\\d\\*\\d+${where}$`);
  await operator.out.waitFor((l) => listed.test(l), "bob in list");
});

/** Alice and bob, signed up, contacts and each in a chat with the other. */
async function inChat(alice: TestClient, bob: TestClient): Promise<void> {
  await alice.signup("alice");
  await bob.signup("bob");
  await befriend(alice, bob);
  for (const [c, other] of [[alice, "bob"], [bob, "alice"]] as const) {
    await c.send(`chat ${other}`);
    await c.event("chat_opened", { with: other });
  }
}

Deno.test("a sender killed -9 the moment delivered shows keeps ** after a restart and neither sends nor says it again: said once its mark is stored", async () => {
  await using server = await startServer();
  await using bob = await TestClient.start("bob", server);
  const alice = await TestClient.start("alice", server);
  let again: TestClient | undefined;
  try {
    await inChat(alice, bob);
    await alice.send("said once");
    const sent = await alice.event("sent", { text: "said once" });
    // The round trip ends at bob's ack; the mark is committed after it, and delivered is said
    // once it is. Had it been said before, the kill could take the mark: the line would be in
    // the outbox after the restart, go again and be said again.
    await alice.event("delivered", { id: sent.id });
    alice.proc.kill("SIGKILL");
    const home = alice.home;
    await alice.proc[Symbol.asyncDispose]();
    again = await TestClient.start("alice", server, { home });
    await again.login("alice");
    await again.send("chat bob");
    const opened = await again.event("chat_opened", { with: "bob" });
    assert.deepEqual(
      (opened.history as { text: string; mark: string }[]).map((h) => [h.text, h.mark]),
      [["said once", "**"]],
    );
    // Whatever was still in the outbox would go before this line.
    await again.send("after the restart");
    const later = await again.event("sent", { text: "after the restart" });
    await again.event("delivered", { id: later.id });
    assert.deepEqual(again.events().filter((e) => e.type === "delivered" && e.id === sent.id), []);
    await bob.event("message", { text: "after the restart" });
    assert.equal(bob.events().filter((e) => e.type === "message" && e.id === sent.id).length, 1);
  } finally {
    await again?.[Symbol.asyncDispose]();
    await alice[Symbol.asyncDispose]();
  }
});

/** Alice and bob, signed up, contacts and in a chat with each other, their link up. */
async function chatting(alice: TestClient, bob: TestClient): Promise<void> {
  await inChat(alice, bob);
  await alice.send("warm up");
  await alice.event("delivered", { to: "bob" });
}

/** The outcomes `client` said of its message `id`, in order. */
function outcomesOf(client: TestClient, id: unknown): string[] {
  return client.events()
    .filter((e) =>
      e.id === id && ["delivered", "stored", "queued", "not_delivered"].includes(e.type)
    )
    .map((e) => e.type);
}

Deno.test("a line waiting for its ack at a logout is not said not_delivered: it stays in the outbox and goes once at the next login", async () => {
  await using server = await startServer();
  await using bob = await TestClient.start("bob", server);
  const alice = await TestClient.start("alice", server);
  let again: TestClient | undefined;
  try {
    await chatting(alice, bob);
    bob.proc.kill("SIGSTOP"); // bob stops answering: the next line waits for its ack
    await alice.send("in flight at logout");
    const sent = await alice.event("sent", { text: "in flight at logout" });
    await alice.send("/out");
    await alice.event("logged_out");
    // The logout closed the link the line waited on. Quitting waits for the work under way to
    // end (bye comes after it): whatever alice would say of the line is said before bye. It
    // was `not_delivered` ("log in first"), though the line stays in the outbox.
    await alice.send("quit");
    await alice.event("bye");
    assert.deepEqual(outcomesOf(alice, sent.id), []);
    bob.proc.kill("SIGCONT");
    await alice.proc[Symbol.asyncDispose]();
    again = await TestClient.start("alice", server, { home: alice.home });
    await again.login("alice");
    await again.event("delivered", { id: sent.id });
    await again.send("chat bob");
    await again.event("chat_opened", { with: "bob" });
    await again.send("after the login");
    await bob.event("message", { text: "after the login" });
    assert.deepEqual(outcomesOf(again, sent.id), ["delivered"]);
    assert.equal(bob.events().filter((e) => e.type === "message" && e.id === sent.id).length, 1);
  } finally {
    await again?.[Symbol.asyncDispose]();
    await alice[Symbol.asyncDispose]();
  }
});

Deno.test("lines on their way at a logout go first, in order, when the user logs in again at once", async () => {
  await using server = await startServer();
  await using bob = await TestClient.start("bob", server);
  await using alice = await TestClient.start("alice", server);
  await chatting(alice, bob);
  bob.proc.kill("SIGSTOP"); // "one" waits for its ack, "two" behind it
  await alice.send("one");
  const one = await alice.event("sent", { text: "one" });
  await alice.send("two");
  const two = await alice.event("sent", { text: "two" });
  // Out and in again while the old session's work on them is still ending: the new login sends
  // the outbox. It skipped the lines the old session held; they stayed there (its retry looked
  // at the old session only) and "three" overtook them.
  await alice.send("/out");
  await alice.send("in alice secret-pw");
  await alice.event("logged_in", { user: "alice" });
  bob.proc.kill("SIGCONT");
  await alice.anyEvent("delivered", { id: one.id });
  await alice.anyEvent("delivered", { id: two.id });
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob" });
  await alice.send("three");
  const three = await alice.event("sent", { text: "three" });
  await alice.event("delivered", { id: three.id });
  await bob.event("message", { text: "three" });
  const got = bob.events().filter((e) => e.type === "message" && e.from === "alice");
  assert.deepEqual(got.map((e) => e.text), ["warm up", "one", "two", "three"]);
  for (const id of [one.id, two.id, three.id]) {
    assert.deepEqual(outcomesOf(alice, id), ["delivered"]);
  }
});

Deno.test("chat <contact> opens while the server is away: over the link that is up, or with its lines kept for later", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await using bob = await TestClient.start("bob", server);
  await using carol = await TestClient.start("carol", server);
  await carol.signup("carol");
  await inChat(alice, bob);
  await alice.send("/b");
  await alice.event("chat_closed", { with: "bob" });
  await befriend(alice, carol);
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob", online: true });
  server.proc.kill("SIGKILL");
  await alice.event("server_lost");
  // Back to the main prompt and into the chat again: the link to bob is still up.
  await alice.send("/b");
  await alice.event("chat_closed", { with: "bob" });
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob", online: true });
  await alice.send("back without the server");
  await bob.event("message", { from: "alice", text: "back without the server", inChat: true });
  // carol, a contact with no link up, cannot be looked up: the chat opens and its line waits.
  await alice.send("/chat carol");
  await alice.event("chat_opened", { with: "carol", online: false });
  await alice.send("for later");
  await alice.event("queued", { to: "carol" });
  assert.ok(!alice.events().some((e) => e.type === "error"), JSON.stringify(alice.events()));
});

Deno.test("chat <user> for the chat already open says so, and the other side is not told of a leave", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await using bob = await TestClient.start("bob", server);
  await inChat(alice, bob);
  await alice.send("/chat BOB");
  const error = await alice.event("error", { code: "BAD_COMMAND" });
  assert.match(String(error.message), /already/);
  await alice.send("still here");
  await bob.event("message", { from: "alice", text: "still here", inChat: true });
  assert.ok(!bob.events().some((e) => e.type === "peer_left"), JSON.stringify(bob.events()));
  assert.ok(!alice.events().some((e) => e.type === "chat_closed"), JSON.stringify(alice.events()));
});
