/**
 * The prompt never lies, on a real pseudo-terminal: it changes at once when the user is pulled
 * into a group, when members leave, when the group closes and when the session ends elsewhere,
 * and the next line goes where the prompt says.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startServer, TestClient } from "../support/processes.ts";
import { addContacts, signUp, ttyClient } from "../support/tty.ts";

Deno.test("the prompt follows a group: pulled in, members leaving, closed", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await using bob = await TestClient.start("bob", server);
  await alice.signup("alice");
  await bob.signup("bob");
  await using carol = await ttyClient("carol", server);
  await signUp(carol, "carol");
  await addContacts([alice], "bob", "carol");
  await addContacts([bob], "alice", "carol");
  await carol.line("contacts add alice");
  await carol.line("contacts add bob");
  await carol.waitFor("bob and you are contacts now", "contacts added");
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob" });
  await alice.send("/a carol");
  const opened = await alice.event("group_opened");
  const handle = opened.handle as string;

  // Carol typed nothing: her prompt is the group's at once.
  await carol.waitFor(`carol → ${handle} (alice, bob)>`, "the group prompt");
  await carol.line("hello all");
  await alice.event("message", { from: "carol", text: "hello all" });
  await bob.event("message", { from: "carol", text: "hello all" });

  await bob.send("/q");
  await carol.waitFor(new RegExp(`^carol → ${handle} \\(alice\\)>$`, "m"), "bob gone from it");
  await alice.send("/q");
  await carol.waitFor(/closed for you/, "the group closed");
  await carol.waitFor(/^carol>$/m, "the prompt outside any chat");
  await carol.line("/q");
  const screen = await carol.waitFor("not in a chat", "the answer to /q");
  assert.doesNotMatch(screen, /unknown command/);
  // `contacts` is a command again, not a message to a group.
  await carol.line("contacts");
  await carol.waitFor(/alice +(online|offline)/, "the contact list");
});

Deno.test("the prompt shows the session ended when the user logs in from another place", async () => {
  await using server = await startServer();
  await using carol = await ttyClient("carol", server);
  await signUp(carol, "carol");
  // The same account from another home (its keys copied there).
  const elsewhere = await Deno.makeTempDir({ prefix: "confab-elsewhere-" });
  try {
    await Deno.mkdir(join(elsewhere, "carol"));
    for (const file of ["identity.json", "mail-key.json"]) {
      await Deno.copyFile(join(carol.home, "carol", file), join(elsewhere, "carol", file));
    }
    await using other = await TestClient.start("carol2", server, { home: elsewhere });
    await other.login("carol");
    await carol.waitFor(/logged out carol/, "the session ended");
    await carol.waitFor(/^confab>$/m, "the logged-out prompt");
    await carol.line("contacts");
    await carol.waitFor(/log in first/, "commands need a login again");
  } finally {
    await Deno.remove(elsewhere, { recursive: true });
  }
});
