/**
 * Offline mail end to end, with real processes: messages for users who are away wait on the
 * server, survive crashes of the server and of the reader, and come back as read receipts. Each
 * runs on one server over SQLite and on two instances over PostgreSQL, alice on one and bob on
 * the other.
 */
import assert from "node:assert/strict";
import { makeVersion2File } from "./support/store_backends.ts";
import { dateTime } from "../lib/util/time.ts";
import { CutProxy } from "../scripts/soak/proxy.ts";
import { type Deployment, deployments } from "./support/deployment.ts";
import { type Event, TestClient } from "./support/processes.ts";

type Homes = Record<string, string>;

/** Signs users up, each with the given contacts, then quits them all. Returns their homes. */
async function makeUsers(d: Deployment, contacts: Record<string, string[]>): Promise<Homes> {
  const homes: Homes = {};
  for (const user of Object.keys(contacts)) {
    homes[user] = await Deno.makeTempDir({ prefix: `confab-${user}-` });
    await using c = await TestClient.start(user, d.at(user), { home: homes[user] });
    await c.signup(user);
  }
  // Contacts in a second pass: every account exists by now.
  for (const [user, list] of Object.entries(contacts)) {
    if (list.length === 0) continue;
    await using c = await TestClient.start(user, d.at(user), { home: homes[user] });
    await c.login(user);
    for (const contact of list) {
      await c.send(`contacts add ${contact}`);
      await c.event("contact_added", { user: contact });
    }
  }
  return homes;
}

async function removeHomes(homes: Homes): Promise<void> {
  for (const home of Object.values(homes)) await Deno.remove(home, { recursive: true });
}

/** Sends `texts` in a chat and waits for each to be stored on the server (`*`). */
async function sendStored(client: TestClient, texts: string[]): Promise<Event[]> {
  const sent: Event[] = [];
  for (const text of texts) {
    await client.send(text);
    const s = await client.event("sent", { text });
    await client.event("stored", { id: s.id });
    sent.push(s);
  }
  return sent;
}

/** Signs users up (see makeUsers), then the server stops; for tests that start it again. */
async function usersOnStoppedServer(
  d: Deployment,
  contacts: Record<string, string[]>,
): Promise<Homes> {
  const homes = await makeUsers(d, contacts);
  await d.killAll();
  return homes;
}

/** `user`'s client, from its home on its instance, logged in and in a chat with `peer`. */
async function inChat(
  d: Deployment,
  homes: Homes,
  user: string,
  peer: string,
  match: { online?: boolean } = {},
): Promise<TestClient> {
  const client = await TestClient.start(user, d.at(user), { home: homes[user] });
  try {
    await client.login(user);
    await client.send(`chat ${peer}`);
    await client.event("chat_opened", { with: peer, ...match });
  } catch (error) {
    await client[Symbol.asyncDispose]();
    throw error;
  }
  return client;
}

/** `history <chat>` as `text` (and `mark`) strings, oldest first. */
async function historyOf(client: TestClient, chat: string, marks = false): Promise<string[]> {
  await client.send(`history ${chat}`);
  const entries = (await client.event("history", { chat })).entries as Event[];
  return entries.map((h) => `${h.text}${marks ? h.mark : ""}`);
}

/** The answer to `hanging`. */
async function hangingOf(client: TestClient): Promise<Event[]> {
  await client.send("hanging");
  return (await client.event("hanging")).entries as Event[];
}

deployments.test("messages for an offline user wait on the server: hanging counts, show delivers in order, receipts", async (d) => {
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

    await bob.send("show alice");
    for (const [i, text] of ["one", "two", "three"].entries()) {
      const m = await bob.event("message", { from: "alice", text });
      assert.equal(m.via, "server");
      assert.equal(m.ts, fromAlice[i]!.ts, "the send time travels with the message");
    }
    assert.equal((await bob.event("shown", { from: "alice" })).count, 3);

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
    assert.deepEqual((await bob.event("hanging")).entries, [
      { from: "carol", count: 2, newest: fromCarol[1]!.ts },
    ]);
    await bob.send("show carol");
    await bob.event("shown", { from: "carol", count: 2 });

    // Carol's receipts waited on the server for her next login.
    await using carol2 = await TestClient.start("carol", d.at("carol"), { home: homes.carol });
    await carol2.login("carol");
    const late = await carol2.event("read", { by: "bob" });
    assert.deepEqual(new Set(late.ids as string[]), new Set(fromCarol.map((s) => s.id)));
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("pending messages survive kill -9 of the server and are shown once", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  try {
    {
      await using alice = await inChat(d, homes, "alice", "bob");
      await sendStored(alice, ["kept 1", "kept 2"]);
      await d.killAll();
    }
    await d.start();
    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    await bob.send("show alice");
    await bob.event("message", { text: "kept 1" });
    await bob.event("message", { text: "kept 2" });
    assert.equal((await bob.event("shown", { from: "alice" })).count, 2);
    await bob.send("show alice");
    assert.equal((await bob.event("shown", { from: "alice" })).count, 0, "gone once confirmed");
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a reader killed during show is not shown the messages twice, and history holds each once", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  try {
    {
      await using alice = await inChat(d, homes, "alice", "bob");
      await sendStored(alice, ["first", "second"]);
    }
    {
      // This client kills itself (SIGKILL) after storing the batch, before confirming it.
      await using bob = await TestClient.start("bob", d.at("bob"), {
        home: homes.bob,
        env: { CONFAB_FAULT: "crash-before-mail-confirm" },
      });
      await bob.login("bob");
      await bob.send("show alice");
      const status = await bob.proc.exited();
      assert.equal(status.signal, "SIGKILL");
    }
    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    assert.equal((await hangingOf(bob))[0]!.count, 2);
    // They were stored (and shown) before the crash: confirmed now, not shown again.
    await bob.send("show alice");
    await bob.event("shown", { from: "alice", count: 0 });
    assert.equal(bob.events().filter((e) => e.type === "message").length, 0);
    assert.deepEqual(await hangingOf(bob), []);
    await bob.send("chat alice");
    const opened = await bob.event("chat_opened", { with: "alice" });
    const texts = (opened.history as { text: string }[]).map((h) => h.text);
    assert.deepEqual(texts, ["first", "second"], "no duplicate rows in history");
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a resend of mail stored just before a server crash and read since is not stored or shown again", async (d) => {
  const homes = await usersOnStoppedServer(d, { alice: ["bob"], bob: ["alice"] });
  try {
    {
      // This server dies right after committing a mail, before answering the sender.
      await d.start({ env: { CONFAB_FAULT: "crash-after-mail-store" } });
      const crashing = d.at("alice");
      await using alice = await TestClient.start("alice", crashing, { home: homes.alice });
      await alice.login("alice");
      await alice.send("chat bob");
      await alice.event("chat_opened", { with: "bob", online: false });
      await alice.send("only once");
      const sent = await alice.event("sent", { text: "only once" });
      await alice.event("queued", { id: sent.id }); // no answer: it stays in alice's outbox
      assert.equal((await crashing.proc.status).signal, "SIGKILL");
      alice.proc.kill("SIGKILL"); // before she can send it again
    }
    await d.killAll();
    await d.start();
    {
      // Bob reads the copy the server committed.
      await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
      await bob.login("bob");
      await bob.send("show alice");
      await bob.event("message", { text: "only once" });
      await bob.event("shown", { from: "alice", count: 1 });
    }
    // Alice's client sends what it had no answer for: the server knows bob read it.
    await using alice = await TestClient.start("alice", d.at("alice"), { home: homes.alice });
    await alice.login("alice");
    const read = await alice.anyEvent("read", { by: "bob" });
    await alice.anyEvent("stored", { id: (read.ids as string[])[0] });
    assert.deepEqual(await historyOf(alice, "bob", true), ["only once**"]);

    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    assert.deepEqual(await hangingOf(bob), [], "the resend was not stored");
    assert.deepEqual(await historyOf(bob, "alice"), ["only once"]);
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a mail message the server delivers again is shown once", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  try {
    let row: Record<string, unknown>;
    {
      await using alice = await inChat(d, homes, "alice", "bob", { online: false });
      await sendStored(alice, ["replayed"]);
      // What the server holds now, as a backup (or an attacker holding the database) keeps it.
      row = (await d.sql("SELECT * FROM mail"))[0]!;
      await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
      await bob.login("bob");
      await bob.send("show alice");
      await bob.event("message", { text: "replayed" });
      await bob.event("shown", { from: "alice", count: 1 });
    }
    await d.killAll();
    // The server comes back with the message waiting again (restored from that backup).
    await d.sql("DELETE FROM mail_read");
    await d.sql(
      `INSERT INTO mail (recipient, sender, msg_id, ts, body, stored_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
      ["recipient", "sender", "msg_id", "ts", "body", "stored_at"].map((c) =>
        row[c] as string | number
      ),
    );
    await d.start();
    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    assert.equal((await hangingOf(bob))[0]?.count, 1);
    await bob.send("show alice");
    await bob.event("shown", { from: "alice", count: 0 });
    assert.equal(bob.events().filter((e) => e.type === "message").length, 0, "not shown again");
    assert.deepEqual(await hangingOf(bob), [], "confirmed all the same");
    assert.deepEqual(await historyOf(bob, "alice"), ["replayed"]);
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a message neither the peer nor the server could take is not overtaken by the next", async (d) => {
  const homes = await usersOnStoppedServer(d, { alice: ["bob"], bob: ["alice"] });
  // Bob is reached through a proxy that can cut the path without closing it.
  await using proxy = new CutProxy();
  try {
    await d.start();
    await using bob = await TestClient.start("bob", d.at("bob"), {
      home: homes.bob,
      args: ["--announce-port", String(proxy.port)],
    });
    proxy.target = Number(bob.events().find((e) => e.type === "ready")!.peerPort);
    await bob.login("bob");
    await using alice = await inChat(d, homes, "alice", "bob", { online: true });

    // The path to bob goes silent and the server dies: the first message can go nowhere.
    proxy.cut();
    await alice.event("link_down", { user: "bob" });
    await d.killAll();
    await alice.send("first");
    const first = await alice.event("sent", { text: "first" });
    await alice.event("queued", { id: first.id });

    // Both come back; the next message reaches alice's line while the first still waits.
    proxy.heal();
    await d.start();
    await alice.send("second");
    const second = await alice.event("sent", { text: "second" });
    // Each goes directly, or to bob's mailbox if alice is back before him; the first is settled
    // first either way, and on the direct path bob sees them in order.
    const settled = async (id: unknown) =>
      await Promise.any([alice.anyEvent("delivered", { id }), alice.anyEvent("stored", { id })]);
    const outcomes = [await settled(first.id), await settled(second.id)];
    assert.ok(
      outcomes[0]!.time as number <= (outcomes[1]!.time as number),
      "first settled first",
    );
    // Bob acks before his own output says so: wait for it before reading what he was shown.
    for (const [i, m] of [first, second].entries()) {
      if (outcomes[i]!.type === "delivered") await bob.anyEvent("message", { id: m.id });
    }
    const direct = bob.events().filter((e) => e.type === "message" && e.via === "direct");
    assert.deepEqual(
      direct.map((e) => e.text),
      ["first", "second"].filter((_, i) => outcomes[i]!.type === "delivered"),
    );
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
    await bob.send("/q");
    await bob.event("chat_closed");
    await bob.send("show alice");
    await bob.event("message", { from: "alice", text: "psst, bob", via: "server" });
    await alice.event("read", { by: "bob" });
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a logout made while the server is down reaches the registry at the next login", async (d) => {
  const homes: Homes = {};
  try {
    homes.bob = await Deno.makeTempDir({ prefix: "confab-bob-" });
    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.signup("bob");
    await d.killAll();
    await bob.event("server_lost");
    await bob.send("out");
    const out = await bob.event("logged_out", { savedLocally: true });

    await d.start();
    await bob.login("bob");
    const second = d.at("bob");
    await second.proc.write("registry bob");
    const saved = dateTime(out.at as number);
    // The newest row is the new login (still open); the one before ends at the saved time.
    const line = await second.proc.out.waitFor(
      (l) => l.startsWith("bob*") && l.split("*")[2] === saved,
      `registry row ending at ${saved}`,
    );
    const at = "\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d";
    assert.match(line, new RegExp(`^bob\\*${at}\\*${at}\\*\\d+$`));
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
