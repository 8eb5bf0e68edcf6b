/**
 * Unit tests for lib/client/client_store.ts: the client's SQLite history, known keys and
 * settings, each test in its own temporary directory.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ClientStore, type HistoryEntry } from "../lib/client/client_store.ts";

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
  assert.equal(store.hasMessage("m1"), false);
  assert.equal(store.addMessage(entry("m1", 1000)), true);
  assert.equal(store.hasMessage("m1"), true);
  assert.equal(store.addMessage(entry("m1", 2000, { text: "changed", mark: "**" })), false);
  // The first copy is kept untouched.
  assert.deepEqual(store.recent("bob", 10), [entry("m1", 1000)]);
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
