/**
 * The terminal client on a real pseudo-terminal, in a chat: every command works with a `/`,
 * notices name the command that works there, the status line counts unread messages per chat
 * and the title tells of them, your own line shows once, names have colours unless NO_COLOR.
 */
import assert from "node:assert/strict";
import { startServer, TestClient } from "./support/processes.ts";
import { addContacts, signUp, type Tty, ttyClient } from "./support/tty.ts";

async function world(options: { env?: Record<string, string>; args?: string[] } = {}) {
  const server = await startServer();
  const bob = await TestClient.start("bob", server);
  const carol = await TestClient.start("carol", server);
  await bob.signup("bob");
  await carol.signup("carol");
  const alice = await ttyClient("alice", server, options);
  await signUp(alice, "alice");
  for (const name of ["bob", "carol"]) await alice.line(`contacts add ${name}`);
  await alice.waitFor("request sent to carol", "contacts added");
  await addContacts([bob, carol], "alice");
  await alice.line("chat bob");
  await alice.waitFor(/^alice → bob>$/m, "the chat");
  await bob.send("chat alice");
  await bob.event("chat_opened");
  return {
    server,
    bob,
    carol,
    alice,
    async [Symbol.asyncDispose]() {
      await alice[Symbol.asyncDispose]();
      await bob[Symbol.asyncDispose]();
      await carol[Symbol.asyncDispose]();
      await server[Symbol.asyncDispose]();
    },
  };
}

/** The input row: the last row on the screen. */
async function inputRow(tty: Tty): Promise<string> {
  return (await tty.screen()).split("\n").at(-1) ?? "";
}

Deno.test("inside a chat every command works with a /, and notices name that form", async () => {
  await using w = await world();
  const { alice, bob, carol } = w;
  await alice.line("hello bob, a word about lunch");
  await bob.event("message", { text: "hello bob, a word about lunch" });
  await carol.send("chat alice");
  await carol.event("chat_opened");
  await carol.send("are you there?");
  await carol.event("stored");
  await alice.waitFor("— /show carol to read", "the notice in its chat form");
  await alice.line("/hanging");
  await alice.waitFor(/^ {2}carol +1 message/m, "the hanging table");
  await alice.line("/show carol");
  await alice.waitFor("carol: are you there?", "carol's message");
  await alice.line("/contacts");
  await alice.waitFor(/^ {2}carol +online$/m, "the contact table");
  await alice.line("/history"); // this chat: bob
  await alice.waitFor(/you: hello bob, a word about lunch \*\*$/m, "the history");
  await alice.line("/search lunch");
  await alice.waitFor(/\] with bob, you: hello bob, a word about lunch$/m, "found");
  await alice.line("/chat carol");
  await alice.waitFor(/^alice → carol>$/m, "the chat switched without /q");
  await bob.event("peer_left", { user: "alice" });
  // None of those lines went to bob as a message.
  const texts = bob.events().filter((e) => e.type === "message").map((e) => e.text);
  assert.deepEqual(texts, ["hello bob, a word about lunch"]);
});

Deno.test("the status line counts unread messages per chat and the title tells of them", async () => {
  await using w = await world({ args: ["--notify", "title"] });
  const { alice, carol } = w;
  await carol.send("chat alice");
  await carol.event("chat_opened");
  await carol.send("one");
  await carol.send("two");
  await carol.event("stored");
  await carol.event("stored");
  const screen = await alice.waitFor(/^\[carol 2\]$/m, "the unread count on the status line");
  const rows = screen.split("\n");
  assert.equal(rows.at(-2), "[carol 2]", "the status line is just above the input line");
  assert.equal(await inputRow(alice), "alice → bob>");
  assert.equal(await alice.title(), "confab (2 unread)");
  await alice.line("/show carol");
  await alice.waitFor("carol: two", "carol's messages");
  const after = await alice.waitFor((s) => !s.includes("[carol"), "the count gone");
  assert.equal(after.split("\n").at(-1), "alice → bob>");
  assert.equal(await alice.title(), "confab");
});

/** Carol writes to alice, who is in her chat with bob: a message for a chat that is not open. */
async function carolWrites(w: Awaited<ReturnType<typeof world>>, text: string): Promise<void> {
  await w.carol.send("chat alice");
  await w.carol.event("chat_opened");
  await w.carol.send(text);
  await w.carol.event("stored");
  await w.alice.waitFor(/^\[carol 1\]$/m, "the unread count on the status line");
}

Deno.test("a message for a chat that is not open rings the bell by default, and --notify none keeps quiet", async () => {
  {
    await using w = await world();
    await w.bob.send("in the open chat");
    await w.alice.waitFor("bob: in the open chat", "bob's message");
    assert.equal(await w.alice.bellRung(), false, "no bell for the chat that is open");
    await carolWrites(w, "ring");
    await w.alice.waitForBell("carol's message");
    assert.notEqual(
      await w.alice.title(),
      "confab (1 unread)",
      "the title only with --notify title",
    );
  }
  {
    await using w = await world({ args: ["--notify", "none"] });
    await carolWrites(w, "quiet");
    // The bell would have come before the status line it goes with.
    assert.equal(await w.alice.bellRung(), false, "no bell with --notify none");
    assert.notEqual(await w.alice.title(), "confab (1 unread)");
  }
});

Deno.test("your own message shows once, as `you:`, and names have colours unless NO_COLOR", async () => {
  await using w = await world({ env: { NO_COLOR: "" } });
  const { alice, bob } = w;
  await alice.line("just once please");
  await bob.event("message", { text: "just once please" });
  const screen = await alice.waitFor(/you: just once please \*\*/, "the delivered line");
  assert.equal(screen.split("just once please").length - 1, 1, screen);
  await bob.send("a reply");
  await alice.waitFor("bob: a reply", "bob's reply");
  // deno-lint-ignore no-control-regex
  assert.match(await alice.styledScreen(), /\x1b\[[0-9;]*m+bob\x1b\[[0-9;]*m: a reply/);

  await using plain = await ttyClient("dave", w.server); // NO_COLOR=1 by default
  await plain.waitFor("type help", "the banner");
  await plain.line("help");
  await plain.waitFor("before logging in", "the help");
  // deno-lint-ignore no-control-regex
  assert.doesNotMatch(await plain.styledScreen(), /\x1b\[(?!0?m)[0-9;]*m/);
});
