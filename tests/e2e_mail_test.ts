/**
 * Offline mail end to end, with real processes: messages for users who are away wait on the
 * server, in order, up to the mailbox's limits, and come back as read receipts (or, when the
 * reader's client cannot open one, as a notice that it was not delivered); a user busy in
 * another chat is told. What survives crashes of the server and of the reader is in
 * tests/e2e_mail_crash_test.ts. Each runs on one server over SQLite and on two instances over
 * PostgreSQL, alice on one and bob on the other.
 */
import assert from "node:assert/strict";
import { makeVersion2File } from "./support/store_backends.ts";
import { type Deployment, deployments } from "./support/deployment.ts";
import { type Event, TestClient } from "./support/processes.ts";
import { historyOf, inChat, makeUsers, removeHomes, sendStored } from "./support/mail.ts";

deployments.test("messages for an offline user wait on the server: hanging counts, show delivers in order, sender by sender, receipts", async (d) => {
  const homes = await makeUsers(d, {
    alice: ["bob"],
    carol: ["bob"],
    bob: ["alice", "carol"],
  });
  try {
    await using alice = await inChat(d, homes, "alice", "bob", { online: false });
    const fromAlice = await sendStored(alice, ["one", "two", "three"]);

    const carol = await inChat(d, homes, "carol", "bob");
    const fromCarol = await sendStored(carol, ["hello from carol", "are you there?"]);
    // Carol goes away before bob reads: her receipt must wait for her next login.
    await carol[Symbol.asyncDispose]();

    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    const summary = await bob.event("mail_summary");
    assert.deepEqual(summary.entries, [
      { from: "alice", count: 3, newest: fromAlice[2]!.ts },
      { from: "carol", count: 2, newest: fromCarol[1]!.ts },
    ]);
    await bob.send("hanging");
    const hanging = await bob.event("hanging");
    assert.deepEqual(hanging.entries, summary.entries);

    // `show` without a name: every sender's messages, one sender after another, as listed.
    // (`show <user>`, one sender's alone, is what the other mail tests use.)
    await bob.send("show");
    for (const [i, text] of ["one", "two", "three"].entries()) {
      const m = await bob.event("message", { from: "alice", text });
      assert.equal(m.via, "server");
      assert.equal(m.ts, fromAlice[i]!.ts, "the send time travels with the message");
    }
    assert.equal((await bob.event("shown", { from: "alice" })).count, 3);
    for (const [i, text] of ["hello from carol", "are you there?"].entries()) {
      assert.equal((await bob.event("message", { from: "carol", text })).ts, fromCarol[i]!.ts);
    }
    assert.equal((await bob.event("shown", { from: "carol" })).count, 2);

    // Alice is online: the receipt comes at once and her * become **.
    const read = await alice.event("read", { by: "bob" });
    assert.deepEqual(new Set(read.ids as string[]), new Set(fromAlice.map((s) => s.id)));
    await alice.send("/q");
    await alice.event("chat_closed");
    await alice.send("chat bob");
    const reopened = await alice.event("chat_opened", { with: "bob" });
    const marks = (reopened.history as { text: string; mark: string }[]).map((h) => h.mark);
    assert.deepEqual(marks, ["**", "**", "**"]);

    await bob.send("hanging");
    assert.deepEqual((await bob.event("hanging")).entries, []);
    // Nothing waits: `show` says so, as `hanging` would.
    await bob.send("show");
    assert.deepEqual((await bob.event("hanging")).entries, []);

    // Carol's receipts waited on the server for her next login.
    await using carol2 = await TestClient.start("carol", d.at("carol"), { home: homes.carol });
    await carol2.login("carol");
    const late = await carol2.event("read", { by: "bob" });
    assert.deepEqual(new Set(late.ids as string[]), new Set(fromCarol.map((s) => s.id)));
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a user busy in another chat gets mail and a notice instead of the message", async (d) => {
  const homes = await makeUsers(d, {
    alice: ["bob"],
    bob: ["alice", "carol"],
    carol: ["bob"],
  });
  try {
    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    await using carol = await TestClient.start("carol", d.at("carol"), { home: homes.carol });
    await carol.login("carol");
    await bob.send("chat carol");
    await bob.event("chat_opened", { with: "carol", online: true });

    await using alice = await inChat(d, homes, "alice", "bob", { online: true });
    await alice.send("psst, bob");
    const stored = await alice.event("stored");
    assert.match(String(stored.reason), /busy/);
    const notice = await bob.event("mail_notice", { from: "alice" });
    assert.equal(notice.count, 1);
    assert.ok(!bob.events().some((e) => e.type === "message" && e.text === "psst, bob"));
    // Opening the chat with her shows what she left (and she learns it was read), once.
    await bob.send("/chat alice");
    await bob.event("chat_opened", { with: "alice" });
    await bob.event("message", { from: "alice", text: "psst, bob", via: "server" });
    await bob.event("shown", { from: "alice", count: 1 });
    await alice.event("read", { by: "bob" });
    await bob.send("/show alice");
    await bob.event("shown", { from: "alice", count: 0 });
    assert.equal(bob.events().filter((e) => e.text === "psst, bob").length, 1);
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("messages to a peer killed mid-chat are delivered directly or stored, each exactly once", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  try {
    await using alice = await TestClient.start("alice", d.at("alice"), { home: homes.alice });
    await alice.login("alice");
    const texts = ["m1", "m2", "m3", "m4", "m5", "m6"];
    {
      await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
      await bob.login("bob");
      await bob.send("chat alice");
      await bob.event("chat_opened");
      await alice.send("chat bob");
      await alice.event("chat_opened", { with: "bob", online: true });
      await alice.send(texts[0]!);
      await bob.event("message", { text: texts[0]! });
      // A burst, and bob dies in the middle of it.
      for (const text of texts.slice(1)) await alice.send(text);
      await alice.event("sent", { text: texts[2]! });
      bob.proc.kill("SIGKILL");
    }
    const outcomes = new Map<string, string>();
    for (const text of texts) {
      const sentLine = await alice.proc.out.find(
        (l) => l.includes(`"type":"sent"`) && l.includes(`"text":"${text}"`),
        `sent ${text}`,
      );
      const sent = JSON.parse(sentLine) as Event;
      const done = await alice.proc.out.find((l) => {
        if (!l.includes(String(sent.id))) return false;
        return /"type":"(delivered|stored|not_delivered|queued)"/.test(l);
      }, `outcome of ${text}`);
      outcomes.set(text, JSON.parse(done).type);
    }
    for (const [text, outcome] of outcomes) {
      assert.ok(outcome === "delivered" || outcome === "stored", `${text}: ${outcome}`);
    }

    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    await bob.send("show alice");
    await bob.event("shown", { from: "alice" });
    await bob.send("chat alice");
    const opened = await bob.event("chat_opened", { with: "alice" });
    const got = (opened.history as { text: string }[]).map((h) => h.text);
    assert.deepEqual([...got].sort(), [...texts].sort(), "each message once in bob's history");
  } finally {
    await removeHomes(homes);
  }
});

/**
 * alice sends bob (her contact, away) two messages that fit and a third that does not (the
 * deployment's servers are started with small mailboxes); checks the marks in her history (`*`,
 * `*`, `!`) and resolves to the reason she was given.
 */
async function overflow(d: Deployment): Promise<string> {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  try {
    await using alice = await inChat(d, homes, "alice", "bob", { online: false });
    await sendStored(alice, ["fits 1", "fits 2"]);
    await alice.send("one too many");
    const refused = await alice.event("not_delivered");
    await alice.send("/q");
    await alice.send("chat bob");
    const opened = await alice.event("chat_opened", { with: "bob" });
    const marks = (opened.history as { text: string; mark: string }[]).map((h) =>
      `${h.text}${h.mark}`
    );
    assert.deepEqual(marks, ["fits 1*", "fits 2*", "one too many!"]);
    return String(refused.reason);
  } finally {
    await removeHomes(homes);
  }
}

const smallMailboxes = deployments.with({ args: ["--max-pending", "2"] });
smallMailboxes.test("a full mailbox is refused with a clear reason, never dropped silently", async (d) => {
  const reason = await overflow(d);
  assert.match(reason, /mailbox is full \(at most 2 messages or 256 MiB wait\)/);
});

const smallShares = deployments.with({ args: ["--max-pending-per-sender", "2"] });
smallShares.test("one sender cannot fill someone's mailbox: past the sender's quota mail is refused with QUOTA and shown !", async (d) => {
  const reason = await overflow(d);
  assert.match(reason, /as much waiting for bob as one sender may \(2 messages or 32 MiB\)/);
});

deployments.test("an account from before mail keys can still be chatted with; mail to it is refused with a reason", async (d) => {
  {
    await using alice = await TestClient.start("alice", d.at("alice"));
    await alice.signup("alice");
    for (const status of await d.esc()) assert.equal(status.code, 0);
  }
  // Make alice's account what a build before migration 3 left behind: no mail key (over SQLite,
  // the file of that build; over PostgreSQL, what migrating such a file leaves).
  if (d.backend === "sqlite") makeVersion2File(d.dataDirs[0]!);
  else await d.sql("UPDATE users SET mail_key = '', mail_key_sig = '' WHERE name_key = 'alice'");
  await d.start();
  await using bob = await TestClient.start("bob", d.at("bob"));
  await bob.signup("bob");
  await bob.send("contacts add alice");
  await bob.event("contact_added", { user: "alice" });
  // alice accepts (her client is gone with that build; her row is written as it would).
  await d.sql("INSERT INTO contacts (owner, contact, added_at) VALUES ('alice', 'bob', 0)");
  // The directory entry of alice (no mail key) is still a valid lookup_result.
  await bob.send("chat alice");
  await bob.event("chat_opened", { with: "alice", online: false });
  await bob.send("are you still there?");
  const refused = await bob.event("not_delivered", { to: "alice" });
  assert.match(String(refused.reason), /no mail key/);
  assert.ok(!bob.events().some((e) => e.type === "error"), JSON.stringify(bob.events()));
});

/** The operator spoils message `id`'s sealed body in the mailbox: the reader cannot open it. */
async function spoil(d: Deployment, id: string): Promise<void> {
  const [row] = await d.sql("SELECT body FROM mail WHERE msg_id = ?", [id]);
  const body = String(row!.body);
  const at = body.length - 20; // in the ciphertext, past the burst's header
  const spoilt = body.slice(0, at) + (body[at] === "A" ? "B" : "A") + body.slice(at + 1);
  await d.sql("UPDATE mail SET body = ? WHERE msg_id = ?", [spoilt, id]);
}

/** bob logs in, shows alice's mail and is told that one message could not be opened. */
async function bobShowsOneRejected(d: Deployment, homes: Record<string, string>): Promise<void> {
  await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
  await bob.login("bob");
  await bob.send("show alice");
  await bob.event("error", { code: "MAIL_REJECTED" });
  await bob.event("shown", { from: "alice" });
}

deployments.test("mail the reader's client rejects is reported to its sender as not delivered, online or at her next login, once", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  try {
    let two: Event;
    {
      // alice is online while bob reads: "one" is refused, "two" read.
      await using alice = await inChat(d, homes, "alice", "bob", { online: false });
      let one: Event;
      [one, two] = await sendStored(alice, ["one, spoilt", "two"]) as [Event, Event];
      await spoil(d, String(one.id));
      await bobShowsOneRejected(d, homes);
      const rejected = await alice.event("mail_rejected", { id: one.id, to: "bob" });
      assert.equal(rejected.ts, one.ts);
      assert.equal(rejected.text, "one, spoilt");
      assert.deepEqual((await alice.anyEvent("read", { by: "bob" })).ids, [two.id]);
      await alice.send("/q");
      await alice.event("chat_closed");
      assert.deepEqual(await historyOf(alice, "bob", true), ["one, spoilt!", "two**"]);
    }
    // alice is away while bob reads: she is told at her next login.
    let three: Event;
    {
      await using alice = await inChat(d, homes, "alice", "bob", { online: false });
      [three] = await sendStored(alice, ["three, spoilt"]) as [Event];
    }
    await spoil(d, String(three.id));
    await bobShowsOneRejected(d, homes);
    await using alice = await inChat(d, homes, "alice", "bob", { online: false });
    await alice.anyEvent("mail_rejected", { id: three.id, to: "bob", text: "three, spoilt" });
    // One more for bob, stored (*).
    const [four] = await sendStored(alice, ["four"]) as [Event];

    // The server says it again (an acknowledgement lost), of a read message too, then of
    // "four": one push, in that order, so once "four" is told the others were taken. Told
    // twice, a notice is told once; a message read stays read.
    await alice.send("/q");
    await alice.event("chat_closed");
    await alice.send("out");
    await alice.event("logged_out", { user: "alice" });
    for (const [i, id] of [three.id, two.id, four.id].entries()) {
      await d.sql(
        `INSERT INTO receipts (sender, msg_id, reader, read_at, rejected)
         VALUES ('alice', ?, 'bob', ?, 1 = 1)`,
        [String(id), Date.now() + i],
      );
    }
    await alice.login("alice");
    await alice.event("mail_rejected", { id: four.id, text: "four" });
    const told = alice.events().filter((e) => e.type === "mail_rejected").map((e) => e.text);
    assert.deepEqual(told, ["three, spoilt", "four"], "each told once, a read one never");
    assert.deepEqual(await historyOf(alice, "bob", true), [
      "one, spoilt!",
      "two**",
      "three, spoilt!",
      "four!",
    ]);
  } finally {
    await removeHomes(homes);
  }
});
