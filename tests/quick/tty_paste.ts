/**
 * Pasting into the terminal client on a real pseudo-terminal: a 100 KiB paste shows at once
 * (no redraw per character), and the screen work never starves heartbeats: the direct link and
 * the server session stay up.
 */
import assert from "node:assert/strict";
import { startServer, TestClient } from "../support/processes.ts";
import { signUp, ttyChat, ttyClient } from "../support/tty.ts";

/** Words, no line breaks, `size` characters, ending in a marker to look for. */
function pasteText(size: number): string {
  const words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing"];
  let text = "";
  for (let i = 0; text.length < size - 20; i++) text += words[i % words.length] + " ";
  return text.slice(0, size - 12) + " END-OF-IT";
}

Deno.test("a 100 KiB paste shows at once on a PTY and the links stay up", async () => {
  await using server = await startServer();
  await using chat = await ttyChat(server);
  const { alice, bob } = chat;

  const text = pasteText(100 * 1024);
  const started = Date.now();
  await alice.paste(text);
  // The input line scrolls to its end: the last words show next to the cursor.
  await alice.waitFor(/END-OF-IT$/m, "the end of the paste on the input line", { ms: 20_000 });
  const ms = Date.now() - started;
  assert.ok(ms < 5_000, `the paste took ${ms} ms to show`);

  // Editing the long line stays instant too.
  await alice.key("BSpace", "BSpace");
  await alice.waitFor(/END-OF-$/m, "two characters deleted");

  // Longer than the peer timeout (3 s) and a few server heartbeats: nothing dropped.
  await alice.key("C-u");
  await alice.waitFor(/^alice → bob>$/m, "the line cleared");
  await alice.line("still here");
  const got = await bob.event("message", { from: "alice", text: "still here" });
  assert.equal(got.via, "direct");
  await alice.waitFor("you: still here **", "delivered directly");
  const dropped = bob.events().filter((e) =>
    (e.type === "link_down" && e.user === "alice") ||
    (e.type === "presence" && e.user === "alice" && e.online === false)
  );
  assert.deepEqual(dropped, []);
  const screen = await alice.history();
  assert.doesNotMatch(screen, /lost the|closed|unreachable/);
});

Deno.test("several commands pasted at once all run, their output above the prompt", async () => {
  await using server = await startServer();
  for (const name of ["bob", "carol"]) {
    await using other = await TestClient.start(name, server);
    await other.signup(name);
  }
  await using alice = await ttyClient("alice", server);
  await signUp(alice, "alice");
  await alice.paste("contacts add bob\ncontacts add carol\ngroups\ncontacts\n");
  const screen = await alice.waitFor(/carol +request sent, not answered/, "the contact table");
  const rows = screen.split("\n");
  const last = rows.findLastIndex((r) => r.trim() !== "");
  assert.equal(rows[last], "alice>", `the prompt is the last row:\n${screen}`);
  for (
    const expected of [
      "request sent to bob",
      "request sent to carol",
      "no groups yet",
      "bob",
      "carol",
    ]
  ) {
    const at = rows.findIndex((r) => r.includes(expected));
    assert.ok(at >= 0 && at < last, `${expected} above the prompt:\n${screen}`);
  }
});
