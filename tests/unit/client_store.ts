/**
 * Unit tests for lib/client/client_store.ts: the client's SQLite history, known keys and
 * settings, each test in its own temporary directory.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { ClientStore, type HistoryEntry } from "../../lib/client/client_store.ts";

/** A temporary directory, removed with everything in it on dispose. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "confab-client-store-test-" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}

function entry(id: string, ts: number, fields: Partial<HistoryEntry> = {}): HistoryEntry {
  return {
    id,
    chat: "bob",
    sender: "alice",
    ts,
    text: `text ${id}`,
    outgoing: true,
    mark: "",
    ...fields,
  };
}

const KEY_A = "A".repeat(43);
const KEY_B = "B".repeat(43);

Deno.test("ClientStore creates its directory and database file", async () => {
  await using dir = await tempDir();
  const userDir = join(dir.path, "home", "alice");
  using store = new ClientStore(userDir);
  assert.equal(store.path, join(userDir, "confab.sqlite"));
  assert.ok((await Deno.stat(store.path)).isFile);
  assert.equal((await Deno.stat(userDir)).mode! & 0o777, 0o700);
});

Deno.test("ClientStore.addMessage() stores a message and returns false for a duplicate id", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  assert.equal(store.hasMessage("alice", "m1"), false);
  assert.equal(store.addMessage(entry("m1", 1000)), true);
  assert.equal(store.hasMessage("Alice", "m1"), true);
  assert.equal(store.addMessage(entry("m1", 2000, { text: "changed", mark: "**" })), false);
  assert.equal(store.addMessage(entry("m1", 2000, { sender: "ALICE" })), false);
  // The first copy is kept untouched.
  assert.deepEqual(store.recent("bob", 10), [entry("m1", 1000)]);
});

Deno.test("a peer reusing another sender's message id cannot have that message dropped", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const incoming = { chat: "g:group", outgoing: false, mark: "**" as const };
  // Mallory saw carol's message id in a group and got a message with it here first.
  assert.equal(store.addMessage(entry("m1", 1000, { ...incoming, sender: "mallory" })), true);
  assert.equal(store.addMessage(entry("m1", 1001, { ...incoming, sender: "carol" })), true);
  assert.equal(store.hasMessage("carol", "m1"), true);
  assert.deepEqual(store.recent("g:group", 10).map((e) => e.sender), ["mallory", "carol"]);
  // A message of mine with that id is mine alone: marks never touch theirs.
  assert.equal(store.addMessage(entry("m1", 1002, { chat: "g:group" })), true);
  store.setMark("m1", "!");
  assert.deepEqual(store.recent("g:group", 10).map((e) => e.mark), ["**", "**", "!"]);
});

Deno.test("ClientStore.recent() returns the last messages of a chat, oldest first", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  // Inserted out of order; read back by time.
  for (const ts of [3000, 1000, 5000, 2000, 4000]) store.addMessage(entry(`m${ts}`, ts));
  store.addMessage(entry("other", 2500, { chat: "carol" }));
  assert.deepEqual(store.recent("bob", 10).map((e) => e.ts), [1000, 2000, 3000, 4000, 5000]);
  assert.deepEqual(store.recent("bob", 3).map((e) => e.id), ["m3000", "m4000", "m5000"]);
  assert.deepEqual(store.recent("bob", 0), []);
  assert.deepEqual(store.recent("carol", 10).map((e) => e.id), ["other"]);
  assert.deepEqual(store.recent("nobody", 10), []);
});

Deno.test("ClientStore.recent() keeps insertion order for messages with the same time", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  for (const id of ["z", "a", "m"]) store.addMessage(entry(id, 1000));
  assert.deepEqual(store.recent("bob", 10).map((e) => e.id), ["z", "a", "m"]);
  assert.deepEqual(store.recent("bob", 2).map((e) => e.id), ["a", "m"]);
});

Deno.test("ClientStore keys chats case-insensitively and round-trips every field", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  store.addMessage(entry("in1", 1000, { chat: "Bob", sender: "Bob", outgoing: false, mark: "" }));
  store.addMessage(entry("out1", 2000, { chat: "BOB", text: "héllo ✓", mark: "*" }));
  assert.deepEqual(store.recent("bOb", 10), [
    entry("in1", 1000, { chat: "bob", sender: "Bob", outgoing: false, mark: "" }),
    entry("out1", 2000, { chat: "bob", text: "héllo ✓", mark: "*" }),
  ]);
});

Deno.test("ClientStore.setMark() changes the mark of one message", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  store.addMessage(entry("m1", 1000));
  store.addMessage(entry("m2", 2000));
  store.setMark("m1", "**");
  store.setMark("missing", "!");
  assert.deepEqual(store.recent("bob", 10).map((e) => e.mark), ["**", ""]);
  store.setMark("m2", "!");
  assert.deepEqual(store.recent("bob", 10).map((e) => e.mark), ["**", "!"]);
});

Deno.test("ClientStore.setMark() never takes back a delivered mark", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  store.addMessage(entry("m1", 1000));
  store.setMark("m1", "*");
  store.setMark("m1", "**"); // read
  store.setMark("m1", "*"); // a late answer to a resend
  store.setMark("m1", "");
  assert.deepEqual(store.recent("bob", 10).map((e) => e.mark), ["**"]);
});

Deno.test("ClientStore.markRead() marks my message to the reader once, and says so", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  store.addMessage(entry("m1", 1000, { mark: "*" }));
  store.addMessage(entry("in1", 2000, { sender: "Bob", outgoing: false }));
  assert.equal(store.markRead("m1", "carol"), "unknown", "not sent to carol");
  assert.equal(store.markRead("in1", "bob"), "unknown", "not mine");
  assert.equal(store.markRead("nope", "bob"), "unknown");
  assert.equal(store.markRead("m1", "BOB"), "read");
  assert.equal(store.markRead("m1", "bob"), "already", "a receipt told twice");
  assert.deepEqual(store.recent("bob", 10).map((e) => e.mark), ["**", ""]);
});

Deno.test("ClientStore.markNotDelivered() marks my stored message ! once, never one read", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  store.addMessage(entry("m1", 1000, { mark: "*", text: "hello" }));
  store.addMessage(entry("m2", 1500, { mark: "**" }));
  store.addMessage(entry("in1", 2000, { sender: "Bob", outgoing: false }));
  assert.equal(store.markNotDelivered("m1", "carol").status, "unknown", "not sent to carol");
  assert.equal(store.markNotDelivered("in1", "bob").status, "unknown", "not mine");
  assert.deepEqual(store.markNotDelivered("m1", "BOB"), {
    status: "marked",
    ts: 1000,
    text: "hello",
  });
  assert.equal(store.markNotDelivered("m1", "bob").status, "already", "a notice told twice");
  assert.equal(store.markNotDelivered("m2", "bob").status, "read", "a signed read stays");
  // A resend from the outbox answered "stored" does not hide it, alone or in a burst's marks.
  store.setMark("m1", "*");
  store.addMessage(entry("m3", 3000));
  void store.setMarkSoon("m1", "*");
  void store.setMarkSoon("m3", "*");
  store.flush();
  assert.deepEqual(store.recent("bob", 10).map((e) => e.mark), ["!", "**", "", "*"]);
  assert.equal(store.markRead("m1", "bob"), "read", "a signed read still counts");
});

Deno.test("ClientStore migrates a version 2 history: rows, order and search kept", async () => {
  await using dir = await tempDir();
  {
    using store = new ClientStore(dir.path);
    store.addMessage(entry("m1", 1000, { text: "first words" }));
    store.addMessage(entry("m2", 1000, { text: "second words", sender: "bob", outgoing: false }));
  }
  // Back to the version 2 tables: messages unique by id alone, no seq column; groups without
  // their state.
  const db = new DatabaseSync(join(dir.path, "confab.sqlite"));
  try {
    // Version 2 kept the full-text index in step with a trigger on insert and one on delete.
    const triggers = `
      DROP TRIGGER IF EXISTS messages_ad;
      CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, text) VALUES (new.rowid, new.text);
      END;
      CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
      END;`;
    db.exec(`
      CREATE TABLE old (id TEXT PRIMARY KEY, chat TEXT NOT NULL, sender TEXT NOT NULL,
        ts INTEGER NOT NULL, text TEXT NOT NULL, outgoing INTEGER NOT NULL, mark TEXT NOT NULL)
        STRICT;
      INSERT INTO old (rowid, id, chat, sender, ts, text, outgoing, mark)
        SELECT seq, id, chat, sender, ts, text, outgoing, mark FROM messages;
      DROP INDEX messages_by_id_sender;
      DROP TABLE messages;
      ALTER TABLE old RENAME TO messages;
      CREATE INDEX messages_by_chat ON messages(chat, ts);
      ${triggers}
      DROP TABLE group_copies;
      DROP TABLE group_sent;
      DROP TABLE group_log;
      DROP TABLE group_heads;
      CREATE TABLE groups_v2 (id TEXT PRIMARY KEY, members TEXT NOT NULL,
        joined_at INTEGER NOT NULL, left_at INTEGER) STRICT;
      DROP TABLE groups;
      ALTER TABLE groups_v2 RENAME TO groups;
      PRAGMA user_version = 2;
    `);
  } finally {
    db.close();
  }
  using store = new ClientStore(dir.path);
  assert.deepEqual(store.recent("bob", 10).map((e) => e.id), ["m1", "m2"]);
  assert.deepEqual(store.search(["second"], 10).map((e) => e.id), ["m2"]);
  assert.equal(store.addMessage(entry("m2", 2000, { sender: "alice" })), true);
  assert.equal(store.addMessage(entry("m1", 2000)), false);
  store.addMessage(entry("m3", 3000, { text: "third words" }));
  assert.deepEqual(store.search(["words"], 10).map((e) => e.id), ["m3", "m1", "m2"]);
});

Deno.test("ClientStore.rememberKey() keeps the first key and returns the one known before", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  assert.equal(store.knownKey("bob"), undefined);
  assert.equal(store.rememberKey("bob", KEY_A), undefined);
  assert.equal(store.knownKey("bob"), KEY_A);
  assert.equal(store.rememberKey("BOB", KEY_B), KEY_A);
  // The key first seen stays; a change is reported, not silently accepted.
  assert.equal(store.knownKey("Bob"), KEY_A);
  assert.equal(store.rememberKey("carol", KEY_B), undefined);
  assert.equal(store.knownKey("carol"), KEY_B);
});

Deno.test("ClientStore.trustKey() replaces a pinned key, or pins a first one", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  store.rememberKey("bob", KEY_A);
  store.trustKey("Bob", KEY_B);
  assert.equal(store.knownKey("bob"), KEY_B);
  // The trusted key is now the pinned one: seeing it again is no change, the old one is.
  assert.equal(store.rememberKey("BOB", KEY_B), KEY_B);
  assert.equal(store.rememberKey("bob", KEY_A), KEY_B);
  assert.equal(store.knownKey("bob"), KEY_B);
  store.trustKey("carol", KEY_A);
  assert.equal(store.knownKey("carol"), KEY_A);
  assert.equal(store.knownKey("dave"), undefined, "trusting one user pins no other");
});

Deno.test("ClientStore settings are set, overwritten and unset", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  assert.equal(store.getSetting("last_logout"), undefined);
  store.setSetting("last_logout", "123");
  assert.equal(store.getSetting("last_logout"), "123");
  store.setSetting("last_logout", "456");
  assert.equal(store.getSetting("last_logout"), "456");
  store.setSetting("other", "x");
  store.setSetting("last_logout", undefined);
  assert.equal(store.getSetting("last_logout"), undefined);
  assert.equal(store.getSetting("other"), "x");
  // Unsetting what is not there is fine.
  store.setSetting("never", undefined);
});

Deno.test("ClientStore keeps messages, keys and settings across a reopen", async () => {
  await using dir = await tempDir();
  {
    using store = new ClientStore(dir.path);
    store.addMessage(entry("m1", 1000));
    store.setMark("m1", "**");
    store.rememberKey("bob", KEY_A);
    store.setSetting("last_logout", "789");
  }
  using store = new ClientStore(dir.path);
  assert.deepEqual(store.recent("bob", 10), [entry("m1", 1000, { mark: "**" })]);
  assert.equal(store.addMessage(entry("m1", 1000)), false);
  assert.equal(store.knownKey("bob"), KEY_A);
  assert.equal(store.getSetting("last_logout"), "789");
});

Deno.test("ClientStore.close() is idempotent", async () => {
  await using dir = await tempDir();
  const store = new ClientStore(dir.path);
  store.close();
  store.close();
  store[Symbol.dispose]();
});

const GROUP = "0b3c9d0e-5f2a-4b7c-8d1e-2f3a4b5c6d7e";

function groupEntry(id: string, ts: number): HistoryEntry {
  return entry(id, ts, { chat: `g:${GROUP}` });
}

Deno.test("ClientStore keeps a group's state and whether I left it across a reopen", async () => {
  await using dir = await tempDir();
  const state = { id: GROUP, adds: [{ user: "alice", tag: "t1" }], removed: [] };
  {
    using store = new ClientStore(dir.path);
    store.saveGroupState(state, ["alice", "bob"], { left: false });
  }
  {
    using store = new ClientStore(dir.path);
    assert.deepEqual(store.storedGroups(), [
      { id: GROUP, state: JSON.stringify(state), left: false },
    ]);
    store.saveGroupState(state, ["alice", "bob"], { left: true });
    assert.equal(store.storedGroups()[0]!.left, true);
    assert.notEqual(store.groups()[0]!.leftAt, null);
    store.saveGroupState(state, ["alice", "bob"], { left: false }); // added again
    assert.equal(store.storedGroups()[0]!.left, false);
  }
});

Deno.test("ClientStore group outbox: numbered messages, one copy per member, acked in order", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  store.saveGroupState({ id: GROUP }, ["alice", "bob", "carol"], { left: false });
  assert.equal(store.addGroupMessage(groupEntry("m1", 10), GROUP, ["bob", "carol"]), 0);
  assert.equal(store.addGroupMessage(groupEntry("m2", 20), GROUP, ["bob", "carol"]), 1);
  assert.deepEqual(store.pendingCopies("BOB").map((c) => [c.msgId, c.seq]), [["m1", 0], [
    "m2",
    1,
  ]]);
  assert.equal(store.groupMark("m1"), "0/2");
  assert.ok(store.settleCopy("m1", "Bob", "acked"));
  assert.ok(!store.settleCopy("m1", "bob", "acked"), "a repeated ack changes nothing");
  assert.deepEqual(store.copyStatus("m1"), { have: ["bob"], pending: ["carol"] });
  assert.equal(store.recent(`g:${GROUP}`, 10)[0]!.mark, "1/2");
  assert.ok(store.settleCopy("m1", "carol", "acked"));
  assert.equal(store.groupMark("m1"), "**");
  assert.equal(store.recent(`g:${GROUP}`, 10)[0]!.mark, "**");
  assert.deepEqual(store.membersOwed().sort(), ["bob", "carol"]);
  // Carol left: what she was owed is dropped; m2 is complete once Bob has it.
  assert.deepEqual(store.dropCopies(GROUP, "carol"), ["m2"]);
  assert.equal(store.groupMark("m2"), "0/1");
  store.settleCopy("m2", "bob", "acked");
  assert.equal(store.groupMark("m2"), "**");
  assert.deepEqual(store.membersOwed(), []);
});

Deno.test("ClientStore.applyGroupState() owes a late-known member my messages since its add, in order", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  store.saveGroupState({ id: GROUP }, ["alice", "bob"], { left: false });
  store.addGroupMessage(groupEntry("m1", 100), GROUP, ["bob"]);
  store.addGroupMessage(groupEntry("m2", 200), GROUP, ["bob"]);
  store.addGroupMessage(groupEntry("m3", 300), GROUP, ["bob", "dave"]);
  store.settleCopy("m2", "bob", "acked");
  // Dave was added at 150 by someone else; I learn it after m3.
  const learned = () =>
    store.applyGroupState({ id: GROUP }, ["alice", "bob", "dave"], {
      late: [{ member: "dave", since: 150 }],
      gone: [],
    }).owed.get("dave");
  assert.deepEqual(learned(), ["m2"]);
  assert.deepEqual(store.pendingCopies("dave").map((c) => c.msgId), ["m2", "m3"]);
  assert.equal(store.groupMark("m2"), "1/2");
  assert.deepEqual(learned(), [], "owed once");
});

Deno.test("ClientStore group catch-up: others' messages stored once with their signature, marks only move forward, and what a member lacks is found by seq and time", async () => {
  await using dir = await tempDir();
  const sig = "s".repeat(86);
  {
    using store = new ClientStore(dir.path);
    store.saveGroupState({ id: GROUP }, ["alice", "bob", "carol"], { left: false });
    const received = (id: string, seq: number, ts: number, options: { signed?: boolean } = {}) =>
      store.addGroupReceived(
        entry(id, ts, { chat: `g:${GROUP}`, sender: "carol", outgoing: false }),
        GROUP,
        {
          seq,
          ...(seq > 0 ? { prevTs: ts - 100 } : {}),
          next: seq + 1,
          ...(options.signed === false ? {} : { sig }),
        },
      );
    assert.equal(store.groupHead(GROUP, "carol"), undefined);
    assert.ok(received("c0", 0, 100));
    assert.ok(received("c2", 2, 300));
    assert.ok(received("c1", 1, 200)); // shown late: the mark stays past c2
    assert.ok(!received("c1", 1, 200), "a duplicate is not stored again");
    assert.ok(received("c3", 3, 400, { signed: false }), "kept, but cannot be passed on");
    assert.equal(store.groupHead(GROUP, "CAROL"), 4);
    assert.deepEqual(store.groupHeads(GROUP), [{ author: "carol", next: 4 }]);
    assert.deepEqual(store.loggedAuthors(GROUP), ["carol"]);
    const lacks = (from: number, since: number) =>
      store.loggedMessages(GROUP, "carol", { from, since, limit: 10 }).map((m) => m.id);
    assert.deepEqual(lacks(0, 0), ["c0", "c1", "c2"]);
    assert.deepEqual(lacks(1, 0), ["c1", "c2"], "from the member's mark on");
    assert.deepEqual(lacks(0, 250), ["c2"], "only what was sent while it was a member");
    const [c1] = store.loggedMessages(GROUP, "carol", { from: 1, since: 0, limit: 1 });
    assert.deepEqual(c1, {
      author: "carol",
      id: "c1",
      seq: 1,
      ts: 200,
      prevTs: 100,
      text: "text c1",
      sig,
    });
    store.skipGroupGap(GROUP, "carol", 2);
    assert.equal(store.groupHead(GROUP, "carol"), 4, "never back");
    // My own messages are numbered, signed and logged too; a number taken is refused.
    const mine = store.nextGroupSeq(GROUP);
    assert.deepEqual(mine, { seq: 0 });
    store.addGroupMessage(groupEntry("a0", 500), GROUP, ["bob"], { seq: 0, sig });
    assert.deepEqual(store.nextGroupSeq(GROUP), { seq: 1, prevTs: 500 });
    assert.throws(
      () => store.addGroupMessage(groupEntry("a1", 600), GROUP, ["bob"], { seq: 0, sig }),
      RangeError,
    );
    assert.deepEqual(store.pendingCopies("bob").map((c) => [c.msgId, c.sig]), [["a0", sig]]);
  }
  using store = new ClientStore(dir.path);
  assert.equal(store.groupHead(GROUP, "carol"), 4, "kept across a restart");
  store.resetGroupHeads(GROUP);
  assert.equal(store.groupHead(GROUP, "carol"), undefined);
});

Deno.test("ClientStore: a group message for nobody else is complete at once, and a copy for someone who left is !", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  store.saveGroupState({ id: GROUP }, ["alice"], { left: false });
  store.addGroupMessage(groupEntry("m1", 100), GROUP, []);
  assert.equal(store.recent(`g:${GROUP}`, 1)[0]!.mark, "**");
  store.addGroupMessage(groupEntry("m2", 200), GROUP, ["bob"]);
  store.dropCopies(GROUP, "bob");
  assert.equal(store.recent(`g:${GROUP}`, 5)[1]!.mark, "!");
});

Deno.test("ClientStore indexes at the next start what a run stored but had not indexed yet", async () => {
  await using dir = await tempDir();
  using first = new ClientStore(dir.path);
  first.addMessage(entry("m1", 1000, { text: "unindexed words" }));
  // As after a kill -9 of the first: a new process opens the same file before any batch ran.
  using second = new ClientStore(dir.path);
  assert.deepEqual(second.search(["unindexed"], 10).map((e) => e.id), ["m1"]);
  first.flush(); // the first's batch comes late: nothing is indexed twice
  assert.deepEqual(second.search(["words"], 10).map((e) => e.id), ["m1"]);
});

Deno.test("ClientStore's index takes in a long stream a batch at a time, with turns between", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path, { indexDelayMs: 1 });
  store.addMessages(
    Array.from({ length: 1200 }, (_, i) => entry(`m${i}`, i, { text: `word${i}` })),
  );
  // What the index holds at each turn until it has all: never all 1,200 in one commit.
  const seen: string[] = [];
  const deadline = Date.now() + 10_000;
  while (seen.at(-1) !== "1200" && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 0));
    const at = store.getSetting("fts_seq") ?? "0";
    if (at !== seen.at(-1)) seen.push(at);
  }
  assert.deepEqual(seen.filter((s) => s !== "0"), ["512", "1024", "1200"]);
  assert.deepEqual(store.search(["word1199"], 10).map((e) => e.id), ["m1199"]);
  assert.deepEqual(store.search(["word0"], 10).map((e) => e.id), ["m0"]);
});

Deno.test("ClientStore.addMessageSoon() commits a burst together and every read sees it", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const added = Array.from({ length: 20 }, (_, i) => store.addMessageSoon(entry(`m${i}`, i)));
  const again = store.addMessageSoon(entry("m3", 3));
  // A read before the commit ran sees the rows all the same.
  assert.equal(store.recent("bob", 100).length, 20);
  assert.deepEqual(await Promise.all(added), Array(20).fill(true));
  assert.equal(await again, false);
});

Deno.test("ClientStore.addMessageSoon() commits at writeQueued() or the next turn, together with the marks queued, the marks told first", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  await store.addMessageSoon(entry("m0", 0));
  const other = new DatabaseSync(join(dir.path, "confab.sqlite"));
  try {
    const committed = () =>
      (other.prepare("SELECT id, mark FROM messages ORDER BY ts").all() as {
        id: string;
        mark: string;
      }[]).map((r) => `${r.id}${r.mark}`);
    const told: string[] = [];
    const marked = store.setMarkSoon("m0", "**").then(() => told.push("mark m0"));
    const added = store.addMessageSoon(entry("m1", 1)).then(() => told.push("row m1"));
    // Not in this turn (a sender puts the frame on the wire first) ...
    await Promise.resolve();
    assert.deepEqual(committed(), ["m0"]);
    // ... but at writeQueued(), both in one transaction.
    store.writeQueued();
    assert.deepEqual(committed(), ["m0**", "m1"]);
    await Promise.all([marked, added]);
    assert.deepEqual(told, ["mark m0", "row m1"]);
    // Nobody calls writeQueued(): the next turn commits it.
    const later = store.addMessageSoon(entry("m2", 2));
    assert.deepEqual(committed(), ["m0**", "m1"]);
    assert.equal(await later, true);
    assert.deepEqual(committed(), ["m0**", "m1", "m2"]);
  } finally {
    other.close();
  }
});

Deno.test("ClientStore.setMarkSoon() commits the marks of a turn together, and every read sees them", async () => {
  await using dir = await tempDir();
  {
    using store = new ClientStore(dir.path);
    const rows = Array.from({ length: 10 }, (_, i) => entry(`m${i}`, i));
    await Promise.all(rows.map((r) => store.addMessageSoon(r)));
    store.setMark("m0", "**");
    const marked = rows.map((r) => store.setMarkSoon(r.id, "*"));
    // A read before the commit ran sees the marks all the same; a delivered one stays.
    assert.deepEqual(store.recent("bob", 100).map((e) => e.mark), ["**", ...Array(9).fill("*")]);
    await Promise.all(marked);
    // Queued and not yet written when the store closes: written by close().
    void store.setMarkSoon("m9", "!");
  }
  using reopened = new ClientStore(dir.path);
  assert.deepEqual(
    reopened.recent("bob", 100).map((e) => e.mark),
    ["**", ...Array(8).fill("*"), "!"],
  );
});

Deno.test("ClientStore.setMarkSoon(): of two marks for one message in a turn the later stays, and only my own messages are marked", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  await Promise.all(["m0", "m1", "m2"].map((id, i) => store.addMessageSoon(entry(id, i))));
  // Someone else's message with my message's id (ids are the sender's own).
  store.addMessage({ ...entry("m1", 5), sender: "bob", outgoing: false, mark: "**" });
  await Promise.all([
    store.setMarkSoon("m0", "*"),
    store.setMarkSoon("m1", "*"),
    store.setMarkSoon("m2", "*"),
    store.setMarkSoon("m1", "!"),
  ]);
  assert.deepEqual(
    store.recent("bob", 100).map((e) => `${e.id}${e.outgoing ? ">" : "<"}${e.mark}`),
    ["m0>*", "m1>!", "m2>*", "m1<**"],
  );
});

Deno.test("ClientStore.settleCopySoon() commits the acks of a turn together, and every read of the outbox sees them", async () => {
  await using dir = await tempDir();
  let last: Promise<boolean>;
  {
    using store = new ClientStore(dir.path);
    store.saveGroupState({ id: GROUP }, ["alice", "bob", "carol"], { left: false });
    store.addGroupMessage(groupEntry("m1", 10), GROUP, ["bob", "carol"]);
    store.addGroupMessage(groupEntry("m2", 20), GROUP, ["bob", "carol"]);
    const acks = [
      store.settleCopySoon("m1", "bob"),
      store.settleCopySoon("m1", "Carol"),
      store.settleCopySoon("m2", "bob"),
      store.settleCopySoon("m2", "bob"), // a repeated ack changes nothing
    ];
    // Read before the commit ran: seen all the same.
    assert.deepEqual(store.pendingCopies("bob"), []);
    assert.deepEqual(store.copyStatus("m2"), { have: ["bob"], pending: ["carol"] });
    assert.equal(store.recent(`g:${GROUP}`, 10).map((e) => e.mark).join(" "), "** 1/2");
    assert.deepEqual(await Promise.all(acks), [true, true, true, false]);
    // Queued and not yet written when the store closes: written by close().
    last = store.settleCopySoon("m2", "carol");
  }
  assert.equal(await last, true);
  using reopened = new ClientStore(dir.path);
  assert.deepEqual(reopened.membersOwed(), []);
  assert.equal(reopened.groupMark("m2"), "**");
});

Deno.test("ClientStore.settleCopySoon() says a copy is settled once: not again for a copy sent again and acked again", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  store.saveGroupState({ id: GROUP }, ["alice", "bob"], { left: false });
  store.addGroupMessage(groupEntry("m1", 10), GROUP, ["bob"]);
  // Committed on its own (the next turn), as the ack of the first copy.
  assert.equal(await store.settleCopySoon("m1", "bob"), true);
  // The copy went again (the first ack was late), and bob acked the duplicate.
  assert.equal(await store.settleCopySoon("m1", "Bob"), false);
  // Two acks of one copy in one turn: the first settles it.
  store.addGroupMessage(groupEntry("m2", 20), GROUP, ["bob"]);
  const twice = [store.settleCopySoon("m2", "bob"), store.settleCopySoon("m2", "bob")];
  assert.deepEqual(await Promise.all(twice), [true, false]);
  assert.equal(store.groupMark("m2"), "**");
  // A copy nobody owes (a member who left: dropped) is not settled by a late ack.
  store.addGroupMessage(groupEntry("m3", 30), GROUP, ["bob"]);
  store.dropCopies(GROUP, "bob");
  assert.equal(await store.settleCopySoon("m3", "bob"), false);
});

Deno.test("ClientStore.loggedAuthors() lists each author of a group once, whatever the case", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const add = (group: string, sender: string, seq: number) =>
    store.addGroupReceived(
      { ...groupEntry(`${group}-${sender}-${seq}`, seq), sender, outgoing: false, mark: "**" },
      group,
      { seq, sig: "sig", next: seq + 1 },
    );
  for (let seq = 0; seq < 5; seq++) {
    for (const sender of ["carol", "Bob", "dave"]) add(GROUP, sender, seq);
  }
  add("other", "erin", 0);
  assert.deepEqual(store.loggedAuthors(GROUP).map((a) => a.toLowerCase()), [
    "bob",
    "carol",
    "dave",
  ]);
  assert.deepEqual(store.loggedAuthors("other"), ["erin"]);
  assert.deepEqual(store.loggedAuthors("none"), []);
});

Deno.test("ClientStore folds its write-ahead log on a worker thread once it grows", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  // On the thread that carries the chats, a checkpoint's fsyncs stalled it up to 180 ms.
  assert.equal(store.checkpointsOffThread, true);
});

Deno.test("ClientStore that cannot open its history throws and leaves no timer or handle behind", () => {
  const dir = Deno.makeTempDirSync({ prefix: "confab-store-" });
  try {
    {
      using store = new ClientStore(dir, { indexDelayMs: 60_000 });
      store.addMessages([{
        id: "m1",
        chat: "bob",
        sender: "bob",
        ts: 1,
        text: "not yet indexed",
        outgoing: false,
        mark: "**",
      }]);
    }
    // The index behind the messages (as after a kill -9) and broken: taking them in at
    // start-up fails.
    const raw = new DatabaseSync(join(dir, "confab.sqlite"));
    raw.exec("UPDATE settings SET value = '0' WHERE key = 'fts_seq'");
    raw.exec("DROP TABLE messages_fts");
    raw.close();
    assert.throws(() => new ClientStore(dir), /messages_fts/);
    // (The test's sanitizers fail it if the checkpoint timer of the failed store lives on.)
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
