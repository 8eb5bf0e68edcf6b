/**
 * The terminal client on a real pseudo-terminal: every way out (Ctrl-C, Ctrl-D, SIGTERM,
 * SIGHUP) logs out and exits 0 without a stack trace; Ctrl-C cancels a password question;
 * Ctrl-Z and `fg` give back a working terminal.
 */
import assert from "node:assert/strict";
import { startServer } from "./support/processes.ts";
import { signUp, ttyChat, ttyClient } from "./support/tty.ts";

const TRACE = /Uncaught|\n\s+at |error: Uncaught/;

Deno.test("Ctrl-C clears the typed line, and a second Ctrl-C on an empty line logs out and exits 0", async () => {
  await using server = await startServer();
  await using alice = await ttyClient("alice", server);
  await signUp(alice, "alice");
  await alice.type("half a thought");
  await alice.waitFor("alice> half a thought", "the typed text");
  await alice.key("C-c");
  const cleared = await alice.waitFor((s) => /alice>$/m.test(s), "an empty input line");
  assert.doesNotMatch(cleared, /half a thought/);
  await alice.key("C-c");
  await alice.waitFor("Ctrl-C again", "the hint to press Ctrl-C again");
  await alice.key("C-c");
  assert.equal(await alice.exitCode(), 0);
  const all = await alice.history();
  assert.match(all, /logged out alice/);
  assert.doesNotMatch(all, TRACE);
  await server.proc.out.find((l) => l.includes("offline: alice"), "alice's logout on the server");
});

Deno.test("Ctrl-D on an empty line leaves the chat in a chat, and logs out and exits 0 outside one", async () => {
  await using server = await startServer();
  await using chat = await ttyChat(server);
  const { alice } = chat;
  // With text on the line, Ctrl-D deletes under the cursor, as in a shell.
  await alice.type("ab");
  await alice.key("Left", "C-d");
  await alice.waitFor(/alice → bob> a$/m, "one character deleted");
  await alice.key("C-u", "C-d");
  await alice.waitFor("left the chat with bob", "the chat left");
  await alice.waitFor(/^alice>$/m, "the prompt outside the chat");
  await alice.key("C-d");
  assert.equal(await alice.exitCode(), 0);
  const all = await alice.history();
  assert.match(all, /logged out alice/);
  assert.doesNotMatch(all, TRACE);
});

for (const signal of ["SIGTERM", "SIGHUP", "SIGINT"] as const) {
  Deno.test(`${signal} logs out and exits 0 without a stack trace`, async () => {
    await using server = await startServer();
    await using alice = await ttyClient("alice", server);
    await signUp(alice, "alice");
    await alice.type("typed but not sent");
    await alice.waitFor("typed but not sent", "the typed text");
    Deno.kill(await alice.pid(), signal);
    assert.equal(await alice.exitCode(), 0);
    const all = await alice.history();
    assert.match(all, /logged out alice/);
    assert.doesNotMatch(all, TRACE);
    await server.proc.out.find((l) => l.includes("offline: alice"), "alice's logout on the server");
  });
}

Deno.test("closing the terminal window in a chat logs out and exits 0", async () => {
  await using server = await startServer();
  await using chat = await ttyChat(server);
  const { alice } = chat;
  await alice.type("half typed");
  await alice.hangUp();
  assert.equal(await alice.exitCode(), 0);
  await server.proc.out.find((l) => l.includes("offline: alice"), "alice's logout on the server");
});

Deno.test("Ctrl-C at the password prompt cancels that command and nothing else", async () => {
  await using server = await startServer();
  await using alice = await ttyClient("alice", server);
  await alice.waitFor("type help", "the banner");
  await alice.line("signup alice");
  await alice.waitFor(/^password:$/m, "the password question");
  await alice.type("secre");
  await alice.key("C-c");
  await alice.waitFor("cancelled", "the command cancelled");
  const screen = await alice.waitFor(/^confab>$/m, "the prompt back");
  assert.doesNotMatch(screen, /secre/, "the password never shows");
  assert.doesNotMatch(screen, /account alice created/);
  // Still running, and the next command works.
  await alice.line("signup alice");
  await alice.waitFor(/^password:$/m, "the password question");
  await alice.line("secret-pw");
  await alice.waitFor(/^the same password again:$/m, "the second question");
  await alice.line("secret-pw");
  await alice.waitFor("logged in as alice", "logged in");
  assert.doesNotMatch(await alice.history(), /secret-pw/);
});

Deno.test("Ctrl-Z and fg give back a terminal in raw mode that echoes once", async () => {
  await using server = await startServer();
  await using alice = await ttyClient("alice", server, { shell: true });
  await signUp(alice, "alice");
  await alice.key("C-z");
  await alice.waitFor(/Stopped/, "the job stopped");
  await alice.line("fg");
  await alice.waitFor(/^alice>$/m, "the prompt redrawn");
  await alice.type("contacts");
  const typed = await alice.waitFor(/^alice> contacts$/m, "the typed word, once");
  // What follows `fg` and the job's command line: only the prompt with the word, once.
  const after = typed.slice(typed.lastIndexOf(alice.home.slice(-8))).split("\n").slice(1).join(
    "\n",
  );
  assert.equal(after.trim(), "alice> contacts", `echoed once:\n${typed}`);
  await alice.key("Enter");
  await alice.waitFor("no contacts yet", "the command ran");
  await alice.line("quit");
  assert.equal(await alice.exitCode(), 0);
});
