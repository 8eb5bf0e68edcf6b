/**
 * End to end with real processes: accounts, contacts, a direct chat both ways, and chats that
 * survive the server going away and coming back. Each runs on one server over SQLite and on two
 * instances over PostgreSQL, alice on one and bob on the other.
 */
import assert from "node:assert/strict";
import { befriend, TestClient } from "./support/processes.ts";
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
