/**
 * Offline mail sealed in bursts (one key agreement and one signature for many messages), end to
 * end with real processes: a burst across a kill -9 of the server loses and duplicates nothing
 * and is shown in order; one signed receipt per batch turns it all `**`; a server that reorders
 * a burst is caught, one that moves a message into another burst or gives a batch receipt to
 * another message is refused. Over SQLite, and over PostgreSQL with alice and bob on two
 * instances.
 */
import assert from "node:assert/strict";
import { deployments } from "./support/deployment.ts";
import { type Event, TestClient } from "./support/processes.ts";
import { historyOf, inChat, makeUsers, removeHomes, sendStored } from "./support/mail.ts";
import { RawConn } from "./support/raw_conn.ts";
import { rawUser } from "./support/accounts.ts";
import { generateKeyPair } from "../lib/crypto/x25519.ts";

/**
 * Every message of the chat with `user` in history, `text` and mark, oldest first (`/history`
 * from inside a chat).
 */
async function wholeHistory(client: TestClient, user: string, inChat = false): Promise<string[]> {
  await client.send(`${inChat ? "/" : ""}history ${user} 10000`);
  const entries = (await client.event("history", { chat: user })).entries as Event[];
  return entries.map((h) => `${h.text}${h.mark}`);
}

/** Long enough for hundreds of messages on a machine with two CPU hogs beside the suite. */
const BURST_DEADLINE_MS = 90_000;

const shareOfFour = deployments.with({ args: ["--max-pending-per-sender", "4"] });
shareOfFour.test("one mail_send carries a burst: stored in order with one answer, a resend kept once, each message past the quota refused on its own, a hostile batch refused whole", async (d) => {
  await using alice = await rawUser(d.at("alice").port, "alice");
  await using bob = await rawUser(d.at("bob").port, "bob");
  await alice.request({ type: "contact_add", id: 10, user: "bob" });
  assert.equal(
    (await bob.request({ type: "contact_add", id: 10, user: "alice" })).type,
    "contact_result",
  );
  const ts = Date.now();
  const mail = (msgId: string) => ({ msgId, ts, sealed: `${msgId}-`.padEnd(100, "A") });

  // A repeat within the batch is kept once, as a resend is.
  const first = [mail("a"), mail("b"), mail("a")];
  const stored = await alice.request({ type: "mail_send", id: 11, to: "BOB", messages: first });
  assert.deepEqual(stored, { type: "mail_stored", id: 11, stored: 3 });
  // b again (a resend), c and d fill alice's share of 4, e and f are refused, each on its own.
  const second = ["b", "c", "d", "e", "f"].map(mail);
  const answer = await alice.request({ type: "mail_send", id: 12, to: "bob", messages: second });
  assert.equal(answer.stored, 3, JSON.stringify(answer));
  const refused = answer.refused as { msgId: string; code: string; message: string }[];
  assert.deepEqual(refused.map((r) => [r.msgId, r.code]), [["e", "QUOTA"], ["f", "QUOTA"]]);
  assert.match(refused[1]!.message, /as much waiting for bob as one sender may \(4 messages/);

  // Hostile batches are refused whole (the connection stays), and store nothing.
  const hostile: unknown[] = [
    [],
    Array.from({ length: 501 }, (_, i) => mail(`h${i}`)),
    [mail("g"), { ...mail("h"), extra: 1 }],
    [mail("g"), { msgId: "h", ts }],
    [mail("g"), { ...mail("h"), sealed: "AAAA" }],
    [mail("g"), { ...mail("h"), msgId: "not an id" }],
    [mail("g"), "h"],
    mail("g"),
  ];
  for (const [i, messages] of hostile.entries()) {
    const bad = await alice.request({ type: "mail_send", id: 20 + i, to: "bob", messages });
    assert.deepEqual([bad.type, bad.code], ["error", "BAD_MESSAGE"], JSON.stringify(bad));
    assert.match(String(bad.message), /^bad mail_send: messages/);
  }
  // The one-message form of protocol version 7 is gone.
  const old = await alice.request({ type: "mail_send", id: 30, to: "bob", ...mail("g") });
  assert.deepEqual([old.type, old.code], ["error", "BAD_MESSAGE"], JSON.stringify(old));

  const shown = await bob.request({ type: "show", id: 11, from: "alice" });
  const ids = (shown.messages as { msgId: string }[]).map((m) => m.msgId);
  assert.deepEqual(ids, ["a", "b", "c", "d"], "in the order sent, each once, nothing else");
});

deployments.test("a burst of mail across a kill -9 of the server is stored once each, shown in order, and read with batch receipts", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  // More than a client keeps unanswered (512): some are still to be sent when it dies; fewer
  // than one sender may leave waiting (1,000).
  const texts = Array.from({ length: 900 }, (_, i) => `burst ${i}`);
  try {
    await using alice = await inChat(d, homes, "alice", "bob", { online: false });
    // Written at once, as a piped script does: they go to the server pipelined, in one burst.
    await alice.send(texts.join("\n"));
    await alice.event("stored", {}, BURST_DEADLINE_MS);
    await d.killAll();
    const storedAtKill = alice.events().filter((e) => e.type === "stored").length;
    assert.ok(storedAtKill < texts.length, `the server died mid-burst (${storedAtKill} stored)`);
    await d.start();
    // Alice's client comes back by itself and sends again what had no answer, in order.
    const sent = new Map<string, string>();
    for (const text of texts) {
      sent.set(String((await alice.anyEvent("sent", { text }, BURST_DEADLINE_MS)).id), text);
    }
    for (const id of sent.keys()) await alice.anyEvent("stored", { id }, BURST_DEADLINE_MS);
    const gaveUp = alice.events().filter((e) => e.type === "not_delivered");
    assert.deepEqual(gaveUp, [], "nothing refused");

    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    await bob.send("show alice");
    const shown = await bob.event("shown", { from: "alice" }, BURST_DEADLINE_MS);
    const messages = bob.events().filter((e) => e.type === "message" && e.from === "alice");
    assert.deepEqual(messages.map((m) => m.text), texts, "each once, in the order written");
    assert.equal(shown.count, texts.length);
    const errors = bob.events().filter((e) => e.type === "error");
    assert.deepEqual(errors, [], "none out of order, none refused");
    assert.deepEqual(await wholeHistory(bob, "alice"), texts.map((t) => `${t}**`));

    // Two batches (500 and 400), one signature each: alice believes every receipt.
    const read = new Set<string>();
    while (read.size < texts.length) {
      const event = await alice.event("read", { by: "bob" }, BURST_DEADLINE_MS);
      for (const id of event.ids as string[]) read.add(id);
    }
    assert.deepEqual([...read].sort(), [...sent.keys()].sort());
    assert.ok(!alice.events().some((e) => e.type === "error"), "no receipt refused");
    assert.deepEqual(await wholeHistory(alice, "bob", true), texts.map((t) => `${t}**`));
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("mail a server reorders within a burst is shown with a warning, and mail moved into another burst is refused", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  try {
    {
      // One client: one burst.
      await using alice = await inChat(d, homes, "alice", "bob", { online: false });
      await sendStored(alice, ["one", "two", "three"]);
    }
    {
      // A new client process: a new burst.
      await using alice = await inChat(d, homes, "alice", "bob", { online: false });
      await sendStored(alice, ["elsewhere"]);
    }
    const rows = await d.sql("SELECT * FROM mail ORDER BY seq");
    assert.equal(rows.length, 4);
    const [one, two, three, elsewhere] = rows as Record<string, string | number>[];
    const header = (row: Record<string, string | number>) => String(row.body).slice(0, 144);
    assert.equal(header(one!), header(three!), "one burst");
    assert.notEqual(header(one!), header(elsewhere!), "another burst");
    // The operator puts "three" first, and gives "elsewhere" the first burst's header.
    const moved: Record<string, string | number> = {
      ...elsewhere!,
      body: header(one!) + String(elsewhere!.body).slice(144),
    };
    await d.sql("DELETE FROM mail");
    for (const row of [three!, one!, two!, moved]) {
      await d.sql(
        `INSERT INTO mail (recipient, sender, msg_id, ts, body, stored_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
        ["recipient", "sender", "msg_id", "ts", "body", "stored_at"].map((c) => row[c]!),
      );
    }

    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    await bob.send("show alice");
    assert.equal((await bob.event("shown", { from: "alice" })).count, 3);
    const events = bob.events();
    const messages = events.filter((e) => e.type === "message").map((e) => e.text);
    assert.deepEqual(messages, ["three", "one", "two"], "genuine, so shown, as delivered");
    const errors = events.filter((e) => e.type === "error") as Event[];
    const outOfOrder = errors.filter((e) => e.code === "MAIL_OUT_OF_ORDER");
    assert.equal(outOfOrder.length, 2, JSON.stringify(errors));
    assert.match(
      String(outOfOrder[0]!.message),
      /from alice came out of the order.*number 0 .* after number 2/,
    );
    const rejected = errors.filter((e) => e.code === "MAIL_REJECTED");
    assert.equal(rejected.length, 1, JSON.stringify(errors));
    assert.deepEqual(
      (await historyOf(bob, "alice")).sort(),
      ["one", "three", "two"],
      "each once (in the order of their times)",
    );
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a batch read receipt is one signature, and a server that gives it to another message is refused", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  try {
    let ids: string[];
    {
      await using alice = await inChat(d, homes, "alice", "bob", { online: false });
      ids = (await sendStored(alice, ["read x", "read y"])).map((e) => String(e.id));
    }
    {
      await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
      await bob.login("bob");
      await bob.send("show alice");
      assert.equal((await bob.event("shown", { from: "alice" })).count, 2);
    }
    const [x, y] = ids as [string, string];
    const rows = await d.sql("SELECT msg_id, sig FROM receipts ORDER BY msg_id");
    const sigOf = (id: string) => String(rows.find((r) => r.msg_id === id)?.sig);
    const [sigX, proofX] = sigOf(x).split(".");
    const [sigY, proofY] = sigOf(y).split(".");
    assert.equal(sigX, sigY, "one signature for the batch");
    assert.ok(proofX && proofY && proofX !== proofY, "each message its own path");
    // The operator gives y the receipt of x (a signature bob really made, with x's path).
    await d.sql("UPDATE receipts SET sig = ? WHERE msg_id = ?", [sigOf(x), y]);

    await using alice = await TestClient.start("alice", d.at("alice"), { home: homes.alice });
    await alice.login("alice");
    const refused = await alice.anyEvent("error", { code: "RECEIPT_REJECTED" });
    assert.match(String(refused.message), /^1 read receipt said to be from bob refused/);
    const read = await alice.anyEvent("read", { by: "bob" });
    assert.deepEqual(read.ids, [x]);
    assert.deepEqual(await historyOf(alice, "bob", true), ["read x**", "read y*"]);
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("read receipts confirmed while a push waits for its ack are pushed once, after it", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  const texts = Array.from({ length: 700 }, (_, i) => `receipt ${i}`);
  try {
    {
      await using alice = await inChat(d, homes, "alice", "bob", { online: false });
      await alice.send(texts.join("\n"));
      for (const text of texts) {
        const sent = await alice.anyEvent("sent", { text }, BURST_DEADLINE_MS);
        await alice.anyEvent("stored", { id: sent.id }, BURST_DEADLINE_MS);
      }
    }
    // alice, online as a bare connection that acknowledges nothing until told to.
    await using alice = await RawConn.login(d.at("alice").port, "alice", await generateKeyPair());
    // Its heartbeat, as a client sends it (the server ends a silent control connection).
    let ping = 10_000;
    const heartbeat = setInterval(() => void alice.send({ type: "ping", id: ping++ }), 1000);
    try {
      await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
      await bob.login("bob");
      await bob.send("show alice");
      assert.equal((await bob.event("shown", { from: "alice" }, BURST_DEADLINE_MS)).count, 700);
      // Two batches (500 and 200) were confirmed: one push so far, the rest once it is acked.
      const seen: string[] = [];
      let id = 100;
      while (seen.length < texts.length) {
        let push = await alice.next(undefined, BURST_DEADLINE_MS);
        while (push.type !== "receipts") push = await alice.next(undefined, BURST_DEADLINE_MS);
        const ids = (push.items as { msgId: string }[]).map((i) => i.msgId);
        seen.push(...ids);
        // Sent, not awaited as a request: the next push may come before its answer.
        await alice.send({ type: "receipts_ack", id: id++, msgIds: ids });
      }
      assert.equal(new Set(seen).size, texts.length);
      assert.equal(seen.length, texts.length, "no receipt pushed twice");
    } finally {
      clearInterval(heartbeat);
    }
  } finally {
    await removeHomes(homes);
  }
});
