/**
 * The attack of issue 11, item 5: a peer puts terminal escape sequences in what it sends
 * (clear the screen, move the cursor, set the window title with OSC, reorder text with bidi
 * overrides) to rewrite the victim's screen. On a real pseudo-terminal the victim sees them as
 * visible escapes; `--json` still carries the exact text.
 */
import assert from "node:assert/strict";
import { startServer, TestClient } from "../support/processes.ts";
import { addContacts, signUp, ttyClient } from "../support/tty.ts";

const HOSTILE =
  "hi\x1b]0;PWNED\x07\x1b[2J\x1b[H\x1b[31mFAKE: the server says log in again\u202Edrow";
const SHOWN = "hi\\e]0;PWNED\\x07\\e[2J\\e[H\\e[31mFAKE: the server says log in again\\u{202e}drow";

Deno.test("a peer's escape sequences in messages cannot clear the screen, set the title or fake lines", async () => {
  await using server = await startServer();
  await using bob = await TestClient.start("bob", server);
  await bob.signup("bob");
  await using carol = await TestClient.start("carol", server);
  await carol.signup("carol");
  await using alice = await ttyClient("alice", server);
  await signUp(alice, "alice");
  for (const line of ["contacts add bob", "contacts add carol"]) await alice.line(line);
  await alice.waitFor("request sent to carol", "contacts added");
  await addContacts([bob, carol], "alice");
  await alice.line("chat bob");
  await alice.waitFor("alice → bob>", "the chat");
  await bob.send("chat alice");
  await bob.event("chat_opened");

  // Directly, in the open chat.
  await bob.send(HOSTILE);
  await alice.waitFor(SHOWN, "the message with visible escapes", { history: true });
  // Through the mailbox: carol writes while alice is busy with bob, then alice reads it.
  await carol.send("chat alice");
  await carol.event("chat_opened");
  await carol.send(HOSTILE);
  await carol.event("stored");
  await alice.line("/show carol");
  await alice.waitFor(`carol: ${SHOWN}`, "the mail with visible escapes", { history: true });

  const screen = await alice.screen();
  assert.match(screen, /logged in as alice/, "the screen was not cleared");
  assert.doesNotMatch(screen, /^FAKE/m, "no line starts with the forged text");
  assert.notEqual(await alice.title(), "PWNED", "the window title was not set");

  // A bot reading --json gets the exact text.
  await carol.send("/q");
  await bob.send("/q");
  await bob.event("chat_closed");
  await addContacts([bob], "carol");
  await addContacts([carol], "bob");
  await carol.send("chat bob");
  await carol.event("chat_opened", { with: "bob" });
  await carol.send(HOSTILE);
  const got = await bob.event("message", { from: "carol" });
  assert.equal(got.text, HOSTILE);
});
