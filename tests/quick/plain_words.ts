/**
 * What the client says, in line mode (a PTY adds nothing here): sentences a person
 * understands instead of library validation text, OS error codes and addresses; news about a
 * chat only in that chat; no placeholders. Technical detail stays available with --verbose.
 */
import assert from "node:assert/strict";
import { startServer, TestClient } from "../support/processes.ts";
import { addContacts, plainClient, plainSignUp } from "../support/tty.ts";

const TECHNICAL = /Too small|expected string|os error|Broken pipe|identity key for|show <user>/;

Deno.test("the client speaks plain words: password rules, unknown accounts, a lost server", async () => {
  await using server = await startServer();
  const home = await Deno.makeTempDir({ prefix: "confab-alice-" });
  try {
    // Colours are allowed (NO_COLOR empty), but this is no terminal: plain text it is.
    await using alice = plainClient("alice", server, home, { env: { NO_COLOR: "" } });
    await alice.out.waitFor((l) => l.startsWith("listening for peers"), "the banner");
    await alice.write("signup alice abc");
    assert.equal(
      await alice.out.waitFor((l) => l.startsWith("error:"), "the password error"),
      "error: a password needs 6 to 256 characters",
    );
    await alice.write("in nobody");
    const nobody = await alice.out.waitFor((l) => l.startsWith("error:"), "the login error");
    assert.match(nobody, /^error: there is no account nobody on this device/);
    assert.match(nobody, /signup nobody/);
    await plainSignUp(alice, "alice");
    server.proc.kill("SIGKILL");
    const lost = await alice.out.waitFor((l) => l.includes("lost the connection"), "lost");
    assert.equal(
      lost,
      "lost the connection to the server; chats go on, reconnecting in the background",
    );
    await alice.write("quit");
    assert.equal((await alice.exited()).code, 0);
    await Promise.all([alice.out.ended, alice.err.ended]);
    const all = alice.out.lines.join("\n");
    assert.doesNotMatch(all, TECHNICAL);
    assert.doesNotMatch(all, /directly at/);
    assert.ok(!all.includes("\x1b"), "no colour escapes when stdout is not a terminal");
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("news about a chat is told in that chat only, and without addresses", async () => {
  await using server = await startServer();
  await using bob = await TestClient.start("bob", server);
  await using carol = await TestClient.start("carol", server);
  await bob.signup("bob");
  await carol.signup("carol");
  const home = await Deno.makeTempDir({ prefix: "confab-alice-" });
  try {
    await using alice = plainClient("alice", server, home);
    await plainSignUp(alice, "alice");
    for (const name of ["bob", "carol"]) {
      await alice.write(`contacts add ${name}`);
      // Her request is on the server before they answer it: theirs would be a request else,
      // and carol could chat before alice accepted.
      await alice.out.waitFor((l) => l.includes(`request sent to ${name}`), `request to ${name}`);
    }
    await addContacts([bob, carol], "alice");
    await addContacts([bob], "carol");
    await addContacts([carol], "bob");

    // Carol opens a chat with alice and leaves it while alice is in no chat: not news for her.
    await carol.send("chat alice");
    await carol.event("chat_opened");
    await carol.send("/q");
    await carol.event("chat_closed");

    await alice.write("chat bob");
    const opened = await alice.out.waitFor((l) => l.startsWith("chatting with bob"), "the chat");
    assert.equal(opened, "chatting with bob, directly (/q leaves, /h helps)");
    // Bob turns the chat into a group with carol: alice is pulled in, bob never "left".
    await bob.send("chat alice");
    await bob.event("chat_opened");
    await bob.send("/a carol");
    await alice.out.waitFor((l) => /^group #\w+: alice, bob, carol/.test(l), "the group");
    await alice.write("/q");
    await alice.out.waitFor((l) => l.includes("closed for you"), "alice out of the group");
    // Carol's process goes away while alice is not chatting with her: not news either.
    carol.proc.kill("SIGKILL");
    await bob.event("group_members", {}, 20_000);
    await alice.out.waitFor((l) => l === "carol is offline", "carol offline");

    await alice.write("quit");
    assert.equal((await alice.exited()).code, 0);
    await Promise.all([alice.out.ended, alice.err.ended]);
    const all = alice.out.lines.join("\n");
    assert.doesNotMatch(all, /bob left the chat/);
    assert.doesNotMatch(all, /carol is in the chat with you|carol left the chat/);
    assert.doesNotMatch(all, /direct link to carol|connection from|connected to/);
    assert.doesNotMatch(all, / at 127\.0\.0\.1:\d+/);
    assert.doesNotMatch(all, TECHNICAL);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("the login notice names each sender, and --verbose shows the addresses", async () => {
  await using server = await startServer();
  await using carol = await TestClient.start("carol", server);
  await carol.signup("carol");
  const home = await Deno.makeTempDir({ prefix: "confab-alice-" });
  try {
    {
      await using alice = plainClient("alice", server, home);
      await plainSignUp(alice, "alice");
      await alice.write("contacts add carol");
      await alice.out.waitFor((l) => l.includes("request sent to carol"), "the request");
      await alice.write("quit");
      await alice.exited();
    }
    await carol.send("contacts add alice");
    await carol.event("contact_added", { user: "alice", mutual: true });
    await carol.send("chat alice");
    await carol.event("chat_opened", { with: "alice" });
    for (const text of ["one", "two", "three"]) await carol.send(text);
    for (let i = 0; i < 3; i++) await carol.event("stored");

    await using alice = plainClient("alice", server, home, { args: ["--verbose"] });
    await alice.write("in alice secret-pw");
    const notice = await alice.out.waitFor((l) => l.includes("pending messages"), "the summary");
    assert.match(notice, /3 from carol/);
    assert.match(notice, / — show carol to read$/);
    await alice.write("chat carol");
    await alice.out.waitFor(
      (l) => /^chatting with carol, directly \(127\.0\.0\.1:\d+\)/.test(l),
      "the address",
    );
    await alice.write("/q");
    await alice.write("quit");
    assert.equal((await alice.exited()).code, 0);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
