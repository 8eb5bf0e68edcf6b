/**
 * Contacts need consent. A stranger with an account who "adds" someone only sends a request:
 * until it is accepted they learn neither the address nor the presence of that user, cannot
 * leave mail and cannot open a peer link (so no messages, files or group invitations), and
 * they are told so. Real server and client processes; the stranger also speaks the protocol by
 * hand, as an attacker would.
 */
import assert from "node:assert/strict";
import { randomToken } from "../lib/peer/identity.ts";
import { type Frame, RawConn } from "./support/raw_conn.ts";
import { rawUser } from "./support/accounts.ts";
import { befriend, type Event, startServer, TestClient } from "./support/processes.ts";

function peerPortOf(client: TestClient): number {
  const ready = client.events().find((e: Event) => e.type === "ready");
  assert.ok(ready, "the client announced its peer port");
  return Number(ready.peerPort);
}

const pushes = (raw: RawConn, type: string) => raw.frames.filter((f: Frame) => f.type === type);

Deno.test("a stranger who adds you learns neither your address nor whether you are online until you accept", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await alice.signup("alice");
  await using mallory = await rawUser(server.port, "mallory");

  const added = await mallory.request({ type: "contact_add", id: 10, user: "alice" });
  assert.deepEqual([added.type, added.state], ["contact_result", "requested"]);
  const found = await mallory.request({ type: "lookup", id: 11, user: "alice" });
  assert.equal(found.type, "lookup_result");
  assert.deepEqual(
    [found.online, found.host, found.port, found.contact],
    [false, undefined, undefined, false],
    "alice is online, but mallory may not know it",
  );
  const list = await mallory.request({ type: "contacts", id: 12 });
  assert.deepEqual([list.contacts, list.requested], [[], ["alice"]], "alice's presence hidden");
  // alice is asked at once.
  await alice.event("contact_update", { user: "mallory", state: "request" });

  // alice comes and goes: mallory, not a contact, hears nothing of it.
  await alice.send("out");
  await alice.event("logged_out");
  await alice.login("alice");
  // ... and hears of her only once she accepted.
  await alice.send("contacts accept mallory");
  await alice.event("contact_added", { user: "mallory", mutual: true });
  await mallory.next("contact_update");
  const accepted = pushes(mallory, "contact_update");
  assert.deepEqual(accepted.map((f) => [f.user, f.state]), [["alice", "accepted"]]);
  const now = await mallory.request({ type: "lookup", id: 13, user: "alice" });
  assert.equal(now.contact, true);
  assert.equal(typeof now.port, "number", "the address, now that they are contacts");
  const before = mallory.frames.indexOf(accepted[0]!);
  assert.deepEqual(
    mallory.frames.slice(0, before).filter((f) => f.type === "presence"),
    [],
    "no presence before the request was accepted",
  );
  await alice.send("out");
  await alice.event("logged_out");
  await mallory.next("presence");
  assert.deepEqual(pushes(mallory, "presence").map((f) => [f.user, f.online]), [["alice", false]]);
});

Deno.test("a stranger cannot fill your mailbox: mail from someone you have not accepted is refused at the sender", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await alice.signup("alice");
  await using mallory = await rawUser(server.port, "mallory");
  await mallory.request({ type: "contact_add", id: 10, user: "alice" });
  const sent = await mallory.request({
    type: "mail_send",
    id: 11,
    to: "alice",
    messages: [{ msgId: "m1", ts: Date.now(), sealed: "A".repeat(100) }],
  });
  assert.deepEqual([sent.type, sent.code], ["error", "NOT_A_CONTACT"], JSON.stringify(sent));
  await alice.send("hanging");
  assert.deepEqual((await alice.event("hanging")).entries, [], "nothing was stored for alice");

  // A real client is refused before it sends anything, and told why.
  await using eve = await TestClient.start("eve", server);
  await eve.signup("eve");
  await eve.send("contacts add alice");
  await eve.event("contact_added", { user: "alice", mutual: false });
  await eve.send("chat alice");
  const refused = await eve.event("error", { code: "NOT_A_CONTACT" });
  assert.match(String(refused.message), /alice has not accepted your contact request yet/);
  assert.ok(!eve.events().some((e) => e.type === "chat_opened"));
});

Deno.test("a peer link from someone who is not a mutual contact is refused, although they know the address", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await alice.signup("alice");
  await using mallory = await rawUser(server.port, "mallory");
  await mallory.request({ type: "contact_add", id: 10, user: "alice" });

  // mallory learned alice's peer port some other way, and dials it: no handshake for her.
  await using dialer = await RawConn.connect(peerPortOf(alice));
  await dialer.hello("peer");
  await dialer.secure("peer");
  await dialer.send({ type: "auth_init", from: "mallory", to: "alice", nonce: randomToken() });
  const rest = await dialer.untilEnd();
  assert.deepEqual(rest.map((f) => [f.type, f.code]), [["error", "NOT_A_CONTACT"]]);
  assert.match(String(rest[0]?.message), /alice has not accepted you as a contact/);
  const notice = await alice.event("error", { code: "NOT_A_CONTACT" });
  assert.match(String(notice.message), /refused a link from mallory/);
  assert.ok(!alice.events().some((e) => e.type === "link_up"), "no link for a stranger");
});

Deno.test("a removed contact's link ends and their messages are refused with a reason", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await using bob = await TestClient.start("bob", server);
  await alice.signup("alice");
  await bob.signup("bob");
  await befriend(alice, bob);
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob", online: true });
  await alice.send("still friends?");
  await bob.event("message", { from: "alice", text: "still friends?" });

  await bob.send("contacts remove alice");
  await bob.event("contact_removed", { user: "alice", state: "removed" });
  await alice.event("contact_update", { user: "bob", state: "removed" });
  await alice.event("link_down", { user: "bob" });
  await alice.send("hello?");
  const refused = await alice.event("not_delivered", { to: "bob" });
  assert.match(String(refused.reason), /bob has not accepted you as a contact/);
  assert.ok(!bob.events().some((e) => e.type === "message" && e.text === "hello?"));
  await alice.send("/contacts"); // in a chat, a command needs its slash
  const list = await alice.event("contacts");
  assert.deepEqual([list.contacts, list.requested, list.requests], [[], [], []]);
});

Deno.test("contact requests: shown at once or at the next login, listed both ways, accepted or declined", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await using bob = await TestClient.start("bob", server);
  await alice.signup("alice");
  await bob.signup("bob");
  const carolHome = await Deno.makeTempDir({ prefix: "confab-carol-" });
  try {
    {
      await using carol = await TestClient.start("carol", server, { home: carolHome });
      await carol.signup("carol");
      await carol.send("out");
      await carol.event("logged_out");
    }
    await alice.send("contacts add bob");
    await alice.event("contact_added", { user: "bob", mutual: false });
    await bob.event("contact_update", { user: "alice", state: "request" });
    await alice.send("contacts add carol"); // carol is away
    await alice.event("contact_added", { user: "carol", mutual: false });
    await alice.send("contacts");
    const mine = await alice.event("contacts");
    assert.deepEqual([mine.contacts, mine.requested, mine.requests], [[], ["bob", "carol"], []]);
    await bob.send("contacts");
    const bobs = await bob.event("contacts");
    assert.deepEqual([bobs.contacts, bobs.requested, bobs.requests], [[], [], ["alice"]]);

    await bob.send("contacts accept alice");
    await bob.event("contact_added", { user: "alice", mutual: true });
    await alice.event("contact_update", { user: "bob", state: "accepted" });

    await using carol = await TestClient.start("carol", server, { home: carolHome });
    await carol.login("carol");
    await carol.event("contact_update", { user: "alice", state: "request" });
    await carol.send("contacts decline alice");
    await carol.event("contact_removed", { user: "alice", state: "declined" });
    await alice.event("contact_update", { user: "carol", state: "declined" });

    await alice.send("contacts");
    const after = await alice.event("contacts", { requested: [] });
    assert.deepEqual(after.contacts, [{ user: "bob", online: true }]);
    await alice.send("chat bob");
    await alice.event("chat_opened", { with: "bob", online: true });
  } finally {
    await Deno.remove(carolHome, { recursive: true });
  }
});
