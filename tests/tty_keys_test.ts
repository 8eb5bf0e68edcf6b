/**
 * The terminal client's keys and help on a real pseudo-terminal: Tab completes commands,
 * contacts and groups; up-arrow never brings back a password; signup asks twice (and password
 * for the new one); help fits
 * where the user is; `clear` clears; `--help` reads well.
 */
import assert from "node:assert/strict";
import { startServer, TestClient } from "./support/processes.ts";
import { addContacts, signUp, ttyClient } from "./support/tty.ts";
import { ROOT } from "./support/processes.ts";

Deno.test("Tab completes commands, contact names and #groups", async () => {
  await using server = await startServer();
  await using bob = await TestClient.start("bob", server);
  await using carol = await TestClient.start("carol", server);
  await bob.signup("bob");
  await carol.signup("carol");
  await using alice = await ttyClient("alice", server);
  await signUp(alice, "alice");
  await alice.type("contacts ad");
  await alice.key("Tab");
  await alice.waitFor(/^alice> contacts add$/m, "the subcommand");
  await alice.type("bo");
  await alice.key("C-u");
  await alice.line("contacts add bob");
  await alice.line("contacts add carol");
  await alice.waitFor("request sent to carol", "contacts");
  await alice.type("cha");
  await alice.key("Tab");
  await alice.waitFor(/^alice> chat$/m, "the command completed");
  await alice.type("b");
  await alice.key("Tab");
  await alice.waitFor(/^alice> chat bob$/m, "the contact completed");
  await alice.key("C-u");
  // A group, then its handle completes after `chat #`.
  await addContacts([bob, carol], "alice");
  await addContacts([bob], "carol");
  await addContacts([carol], "bob");
  await alice.line("chat bob");
  await alice.waitFor(/^alice → bob>$/m, "the chat");
  await alice.line("/a carol");
  const opened = await alice.waitFor(/^group (#\w+):/m, "the group");
  const handle = /^group (#\w+):/m.exec(opened)![1]!;
  await alice.type("/gr");
  await alice.key("Tab");
  await alice.waitFor(/ \/groups$/m, "a / command completed in a chat");
  await alice.key("C-u");
  await alice.type("/chat #");
  await alice.key("Tab");
  await alice.waitFor(new RegExp(` /chat ${handle}$`, "m"), "the group handle completed");
  // A file name with terminal commands in it is not offered (it would set the window title).
  const dir = await Deno.makeTempDir({ prefix: "confab-tab-" });
  try {
    await Deno.writeTextFile(`${dir}/x\x1b]0;PWNED\x07.txt`, "");
    await Deno.writeTextFile(`${dir}/y.txt`, "");
    await alice.key("C-u");
    await alice.type(`/s ${dir}/x`);
    await alice.key("Tab");
    await alice.key("C-u");
    await alice.type(`/s ${dir}/y`);
    await alice.key("Tab");
    await alice.waitFor(`/s ${dir}/y.txt`, "a file name completed");
    assert.notEqual(await alice.title(), "PWNED");
    assert.doesNotMatch(await alice.history(), /PWNED/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("up-arrow never brings back a password, and signup asks for it twice", async () => {
  await using server = await startServer();
  await using alice = await ttyClient("alice", server);
  await alice.waitFor("type help", "the banner");
  await alice.line("signup alice");
  await alice.waitFor(/^password:$/m, "the first question");
  await alice.line("secret-pw");
  await alice.waitFor(/^the same password again:$/m, "the second question");
  await alice.line("secret-pX");
  await alice.waitFor("the two passwords differ", "the mismatch");
  await alice.line("signup alice secret-pw");
  await alice.waitFor(/^alice>$/m, "logged in");
  await alice.line("out");
  await alice.waitFor(/^confab>$/m, "logged out");
  await alice.line("in alice secret-pw");
  await alice.waitFor(/^alice>$/m, "logged in again");
  await alice.key("Up");
  await alice.waitFor(/^alice> in alice$/m, "the login line without its password");
  await alice.key("Up", "Up");
  await alice.waitFor(/^alice> signup alice$/m, "the signup line without its password");
  await alice.key("C-u");
  // password asks for the current one and the new one twice, none of them echoed.
  await alice.line("password");
  await alice.waitFor(/^current password:$/m, "the first question");
  await alice.line("secret-pw");
  await alice.waitFor(/^new password:$/m, "the second question");
  await alice.line("secret-pw2");
  await alice.waitFor(/^the same new password again:$/m, "the third question");
  await alice.line("secret-pw2");
  await alice.waitFor("password changed", "the change");
  await alice.line("password secret-pw2 secret-pw3");
  await alice.waitFor((s) => s.split("password changed").length > 2, "the second change");
  await alice.key("Up");
  await alice.waitFor(/^alice> password$/m, "the password line without its passwords");
  const all = await alice.history();
  assert.doesNotMatch(all, /secret-p/, "no password on screen, ever");
  assert.match(all, /signup alice \*\*\*\*\*\*/);
});

Deno.test("help shows what works where the user is, and clear clears the screen", async () => {
  await using server = await startServer();
  await using bob = await TestClient.start("bob", server);
  await bob.signup("bob");
  await using alice = await ttyClient("alice", server);
  await alice.waitFor("type help", "the banner");
  await alice.line("help");
  let screen = await alice.waitFor("before logging in:", "the logged-out help");
  assert.doesNotMatch(screen, /contacts add/);
  await alice.line("signup alice secret-pw");
  await alice.waitFor(/^alice>$/m, "logged in");
  await alice.line("clear");
  screen = await alice.waitFor((s) => s.trim() === "alice>", "an empty screen");
  await alice.line("help");
  screen = await alice.waitFor("logged in:", "the logged-in help");
  assert.doesNotMatch(screen, /signup/);
  assert.match(screen, /contacts add <user>/);
  await alice.line("contacts add bob");
  await alice.waitFor("request sent to bob", "the contact request");
  await bob.send("contacts accept alice");
  await bob.event("contact_added", { user: "alice", mutual: true });
  await alice.line("chat bob");
  await alice.waitFor(/^alice → bob>$/m, "the chat");
  await alice.key("C-l");
  await alice.waitFor((s) => s.trim() === "alice → bob>", "cleared with Ctrl-L");
  await alice.line("/h");
  screen = await alice.waitFor("in a chat:", "the chat help");
  assert.match(screen, /\/show \[<user>\]/);
  assert.match(screen, /\/chat <user\|#group>/);
  assert.doesNotMatch(screen, /^ +signup/m);
});

Deno.test("--help shows readable defaults, aligned, with the commands of a chat", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "client.ts", "--help"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0);
  const text = new TextDecoder().decode(out.stdout);
  assert.match(
    text,
    /--server <host:port,\.\.\.> +the Confab server; several addresses of one service/,
  );
  assert.match(text, /\(default: 4G\)/);
  assert.match(text, /\(default: ~\/\.confab\)/);
  assert.doesNotMatch(text, /\{"host"|4294967296/);
  assert.match(text, /in a chat:\n/);
  assert.match(text, /^ {2}\/show \[<user>\] +read the messages/m);
  // Each block of commands is aligned: every description starts in the same column.
  for (const block of text.split(/\n\n/).filter((b) => /^(before|logged in|in a chat)/.test(b))) {
    const columns = new Set(
      block.split("\n").map((l) => /^ {2}\S.*?\S {2,}(?=\S)/.exec(l)?.[0].length)
        .filter((c) => c !== undefined),
    );
    assert.equal(columns.size, 1, block);
  }
  assert.ok(text.split("\n").every((l) => l.length <= 100), "no line wider than 100 columns");
});

Deno.test("a terminal made narrower than the status row, the typed line short, leaves no stale part of it", async () => {
  await using server = await startServer();
  await using alice = await ttyClient("alice", server, { cols: 60 });
  await signUp(alice, "alice");
  assert.equal((await server.esc()).code, 0);
  await alice.waitFor(/^server unreachable, reconnecting…$/m, "the status row");
  // The input row fits the new width, so the cursor does not tell whether the terminal rewraps
  // (tmux does); the status row, wider than the new width, took two rows.
  await alice.resize(24, 30);
  const screen = await alice.waitFor((s) => {
    const [status = "", input = ""] = s.split("\n").slice(-2);
    return /^alice>$/.test(input.trimEnd()) && /^server unr.*…$/.test(status) &&
      status.length < 24;
  }, "the status row redrawn 24 columns wide");
  const above = screen.split("\n").slice(0, -2).join("\n");
  assert.doesNotMatch(above, /server unr|alice>/, `a stale part of a row:\n${screen}`);
});

Deno.test("a terminal made narrower than the typed line keeps one input row, with no stale part above", async () => {
  await using server = await startServer();
  await using alice = await ttyClient("alice", server);
  await signUp(alice, "alice");
  const words = Array.from({ length: 18 }, (_, i) => `w${String(i).padStart(2, "0")}`);
  await alice.type(words.join(" "));
  await alice.waitFor(/^alice> w00 .* w17$/m, "the typed line");
  for (const cols of [60, 40, 30]) {
    await alice.resize(cols, 30);
    // Redrawn to the new width: the end of the line, next to the cursor.
    const screen = await alice.waitFor(
      (s) =>
        /^alice> .*w17$/.test(s.split("\n").at(-1) ?? "") && s.split("\n").at(-1)!.length < cols,
      `the input row redrawn ${cols} columns wide`,
    );
    const above = screen.split("\n").slice(0, -1).join("\n");
    assert.doesNotMatch(above, /alice>|\bw\d\d\b/, `a stale part of the input row:\n${screen}`);
  }
  // With a status row (the server went away): both rows rewrap, and both are erased.
  await alice.resize(60, 30);
  assert.equal((await server.esc()).code, 0);
  await alice.waitFor(/^server unreachable, reconnecting…$/m, "the status row");
  await alice.resize(24, 30);
  const screen = await alice.waitFor((s) => {
    const [status = "", input = ""] = s.split("\n").slice(-2);
    return /^alice> .*w17$/.test(input) && input.length < 24 && /^server unr.*…$/.test(status) &&
      status.length < 24;
  }, "both rows redrawn 24 columns wide");
  const above = screen.split("\n").slice(0, -2).join("\n");
  assert.doesNotMatch(above, /server unr|alice>|\bw\d\d\b/, `a stale part of a row:\n${screen}`);
  // Wider again, then the line still works.
  await alice.resize(100, 30);
  await alice.key("C-u");
  await alice.waitFor(/^alice>$/m, "the line cleared");
  await alice.line("help");
  await alice.waitFor("logged in:", "the command ran");
});
