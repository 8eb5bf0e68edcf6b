/**
 * Unit tests for lib/client/render.ts: the `Renderer` turning client events into lines, without
 * colour (exact text) and with colour (ANSI escapes present), and its tracking of messages in
 * flight (`sent` → `delivered`/`not_delivered`, slow ones shown once as "sending").
 */
import assert from "node:assert/strict";
import { Renderer, SHOW_PENDING_AFTER_MS } from "../lib/client/render.ts";
import type { ClientEvent } from "../lib/client/events.ts";

/** 13:04:05 local time, so the expected `[HH:MM:SS]` does not depend on the time zone. */
const TS = new Date(2024, 0, 2, 13, 4, 5).getTime();
const CLOCK = "[13:04:05]";

// deno-lint-ignore no-control-regex
const ANSI = /\u001b\[[0-9;]*m/;

const OWN_NUMBER = "12345 67890 13579 24680 11223 34455";
const SAFETY_NUMBER = `${OWN_NUMBER} 99887 76655 44332 21100 10293 84756`;

/** One of every event type, with plausible fields. */
const EVERY_EVENT: readonly ClientEvent[] = [
  { type: "ready", peerPort: 5555, server: "127.0.0.1:4242" },
  { type: "info", text: "connecting to 127.0.0.1:4242" },
  { type: "signed_up", user: "alice" },
  { type: "logged_in", user: "alice", server: "127.0.0.1:4242", resumed: false },
  { type: "logged_out", user: "alice", savedLocally: false, at: TS },
  { type: "logged_out", user: "alice", savedLocally: true, at: TS },
  { type: "contacts", contacts: [] },
  { type: "contacts", contacts: [{ user: "bob", online: true }, { user: "carol", online: false }] },
  { type: "contact_added", user: "bob" },
  { type: "contact_removed", user: "bob" },
  { type: "presence", user: "bob", online: true },
  { type: "presence", user: "bob", online: false },
  { type: "chat_opened", with: "bob", online: true, address: "127.0.0.1:5556", history: [] },
  { type: "chat_closed", with: "bob" },
  { type: "message", id: "m1", from: "bob", ts: TS, text: "hi", inChat: true, via: "direct" },
  { type: "message", id: "m2", from: "bob", ts: TS, text: "hi", inChat: false, via: "direct" },
  { type: "not_delivered", id: "nope", to: "bob", reason: "link closed" },
  { type: "peer_joined", user: "bob" },
  { type: "peer_left", user: "bob" },
  { type: "link_up", user: "bob", address: "127.0.0.1:5556", outbound: true },
  { type: "link_up", user: "bob", address: "127.0.0.1:5556", outbound: false },
  { type: "link_down", user: "bob", reason: "peer closed" },
  { type: "key_changed", user: "bob" },
  { type: "key_trusted", user: "bob", safetyNumber: SAFETY_NUMBER },
  { type: "fingerprint", user: "alice", number: OWN_NUMBER },
  { type: "fingerprint", user: "alice", number: SAFETY_NUMBER, with: "bob", changed: false },
  { type: "fingerprint", user: "alice", number: SAFETY_NUMBER, with: "bob", changed: true },
  { type: "server_lost", reason: "connection reset" },
  { type: "server_back", resumed: true },
  { type: "server_closing", reason: "maintenance" },
  { type: "error", code: "USER_OFFLINE", message: "bob is offline" },
  { type: "help", text: "commands: ..." },
  { type: "bye" },
];

/** The plain text each event of {@link EVERY_EVENT} renders to, in the same order. */
const PLAIN: readonly string[] = [
  "listening for peers on port 5555; server 127.0.0.1:4242\ntype help for commands",
  "connecting to 127.0.0.1:4242…",
  "account alice created",
  "logged in as alice on 127.0.0.1:4242 (contacts, chat <user>, help)",
  "logged out alice",
  "logged out alice (server unreachable: the logout time is saved and sent at the next login)",
  "no contacts yet; add one: contacts add <user>",
  "  bob  online\n  carol  offline",
  "bob added to your contacts",
  "bob removed from your contacts",
  "bob is online",
  "bob is offline",
  "chatting with bob directly at 127.0.0.1:5556 (/q leaves, /h helps)",
  "left the chat with bob",
  `${CLOCK} bob: hi`,
  `✉ ${CLOCK} bob: hi  (chat bob to answer)`,
  "a message ✗ not delivered to bob: link closed",
  "bob is in the chat with you",
  "bob left the chat",
  "connected to bob directly at 127.0.0.1:5556",
  "connection from bob directly at 127.0.0.1:5556",
  "direct link to bob closed (peer closed)",
  "WARNING: bob's identity key has changed since you last talked. " +
  "If bob did not reinstall, someone may be impersonating them. " +
  "Compare safety numbers (fingerprint bob); accept the new key with: trust bob",
  `you now trust bob's current key (safety number ${SAFETY_NUMBER})`,
  `your number (alice): ${OWN_NUMBER}`,
  `safety number for you and bob: ${SAFETY_NUMBER}\n` +
  "compare it with theirs in person or on a call; if it matches, you talk to them",
  `safety number for you and bob: ${SAFETY_NUMBER}\nbob's key has CHANGED since you pinned it`,
  "lost the server (connection reset); chats go on, reconnecting in the background",
  "reconnected to the server",
  "the server is going away: maintenance",
  "error: bob is offline",
  "commands: ...",
  "bye",
];

Deno.test("Renderer without colour renders every event type as its plain line", () => {
  assert.equal(EVERY_EVENT.length, PLAIN.length);
  const r = new Renderer({ color: false });
  EVERY_EVENT.forEach((event, i) => {
    assert.equal(r.render(event), PLAIN[i], JSON.stringify(event));
  });
});

Deno.test("Renderer without colour never writes an ANSI escape", () => {
  const r = new Renderer({ color: false });
  for (const event of EVERY_EVENT) {
    const text = r.render(event);
    assert.ok(text === undefined || !ANSI.test(text), JSON.stringify(text));
  }
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "yo" });
  for (const line of r.takeSlow(TS + SHOW_PENDING_AFTER_MS)) assert.doesNotMatch(line, ANSI);
});

Deno.test("Renderer with colour wraps its styled lines in ANSI escapes", () => {
  const r = new Renderer({ color: true });
  const styled: ClientEvent[] = [
    { type: "message", id: "m1", from: "bob", ts: TS, text: "hi", inChat: true, via: "direct" },
    { type: "signed_up", user: "alice" },
    { type: "error", code: "INTERNAL", message: "boom" },
    { type: "key_changed", user: "bob" },
    { type: "key_trusted", user: "bob", safetyNumber: SAFETY_NUMBER },
    { type: "fingerprint", user: "alice", number: SAFETY_NUMBER, with: "bob", changed: true },
    { type: "presence", user: "bob", online: true },
  ];
  for (const event of styled) {
    const text = r.render(event);
    assert.ok(text !== undefined && ANSI.test(text), `${event.type}: ${JSON.stringify(text)}`);
  }
  // The words stay readable once the escapes are removed.
  const text = r.render(styled[0]!)!;
  // deno-lint-ignore no-control-regex
  assert.equal(text.replace(/\u001b\[[0-9;]*m/g, ""), `${CLOCK} bob: hi`);
});

Deno.test("Renderer shows a message in the open chat as `[HH:MM:SS] from: text`", () => {
  const r = new Renderer({ color: false });
  assert.equal(
    r.render({
      type: "message",
      id: "m1",
      from: "bob",
      ts: TS,
      text: "hi",
      inChat: true,
      via: "direct",
    }),
    "[13:04:05] bob: hi",
  );
});

Deno.test("Renderer shows a message outside the chat as a notice naming how to answer", () => {
  const r = new Renderer({ color: false });
  const text = r.render({
    type: "message",
    id: "m1",
    from: "carol",
    ts: TS,
    text: "ping?",
    inChat: false,
    via: "direct",
  });
  assert.equal(text, "✉ [13:04:05] carol: ping?  (chat carol to answer)");
});

Deno.test("Renderer shows nothing for `sent`, then `you: text **` once delivered", () => {
  const r = new Renderer({ color: false });
  assert.equal(r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "hello" }), undefined);
  assert.equal(r.pending, 1);
  assert.equal(
    r.render({ type: "delivered", id: "s1", to: "bob", ms: 3 }),
    "[13:04:05] you: hello **",
  );
  assert.equal(r.pending, 0);
  // A second acknowledgement of the same message shows nothing.
  assert.equal(r.render({ type: "delivered", id: "s1", to: "bob", ms: 3 }), undefined);
});

Deno.test("Renderer shows an undelivered message with its text and the reason", () => {
  const r = new Renderer({ color: false });
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "hello" });
  assert.equal(
    r.render({ type: "not_delivered", id: "s1", to: "bob", reason: "bob went offline" }),
    "[13:04:05] you: hello ✗ not delivered to bob: bob went offline",
  );
  assert.equal(r.pending, 0);
});

Deno.test("Renderer.takeSlow() shows a slow message once, after SHOW_PENDING_AFTER_MS", () => {
  const r = new Renderer({ color: false });
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "slow one" });
  r.render({ type: "sent", id: "s2", to: "bob", ts: TS + 500, text: "later one" });
  assert.deepEqual(r.takeSlow(TS + SHOW_PENDING_AFTER_MS - 1), []);
  assert.deepEqual(r.takeSlow(TS + SHOW_PENDING_AFTER_MS), [
    "[13:04:05] you: slow one (sending…)",
  ]);
  // Already shown: not again, even much later; the second one's turn comes on its own.
  assert.deepEqual(r.takeSlow(TS + SHOW_PENDING_AFTER_MS + 100), []);
  assert.deepEqual(r.takeSlow(TS + 500 + SHOW_PENDING_AFTER_MS), [
    "[13:04:05] you: later one (sending…)",
  ]);
  assert.deepEqual(r.takeSlow(TS + 60_000), []);
  assert.equal(r.pending, 2);
});

Deno.test("Renderer.takeSlow() honours a custom age", () => {
  const r = new Renderer({ color: false });
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "x" });
  assert.deepEqual(r.takeSlow(TS + 10, 20), []);
  assert.equal(r.takeSlow(TS + 20, 20).length, 1);
});

Deno.test("Renderer shows a slow message's later delivery or failure as a short follow-up", () => {
  const r = new Renderer({ color: false });
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "one" });
  r.render({ type: "sent", id: "s2", to: "bob", ts: TS, text: "two" });
  assert.equal(r.takeSlow(TS + SHOW_PENDING_AFTER_MS).length, 2);
  assert.equal(
    r.render({ type: "delivered", id: "s1", to: "bob", ms: 900 }),
    "  ↳ delivered to bob **",
  );
  assert.equal(
    r.render({ type: "not_delivered", id: "s2", to: "bob", reason: "timeout" }),
    "  ↳ ✗ not delivered to bob: timeout",
  );
  assert.equal(r.pending, 0);
});

Deno.test("Renderer shows chat history with `you` and marks on your own messages only", () => {
  const r = new Renderer({ color: false });
  const text = r.render({
    type: "chat_opened",
    with: "Bob",
    online: true,
    address: "127.0.0.1:5556",
    history: [
      { id: "h1", from: "alice", ts: TS, text: "delivered one", mark: "**" },
      { id: "h2", from: "bob", ts: TS, text: "their reply", mark: "**" },
      { id: "h3", from: "alice", ts: TS, text: "stored one", mark: "*" },
      { id: "h4", from: "alice", ts: TS, text: "failed one", mark: "!" },
      { id: "h5", from: "alice", ts: TS, text: "unsent one", mark: "" },
    ],
  });
  assert.equal(
    text,
    [
      "— earlier with Bob —",
      "[13:04:05] you: delivered one **",
      "[13:04:05] bob: their reply",
      "[13:04:05] you: stored one *",
      "[13:04:05] you: failed one !",
      "[13:04:05] you: unsent one",
      "chatting with Bob directly at 127.0.0.1:5556 (/q leaves, /h helps)",
    ].join("\n"),
  );
});

Deno.test("Renderer shows a mailbox message like a chat line, not as a notice", () => {
  const r = new Renderer({ color: false });
  const text = r.render({
    type: "message",
    id: "m1",
    from: "bob",
    ts: TS,
    text: "left for you",
    inChat: false,
    via: "server",
  });
  assert.equal(text, "[13:04:05] bob: left for you");
});

Deno.test("Renderer says when the other side of a chat is offline", () => {
  const r = new Renderer({ color: false });
  const text = r.render({
    type: "chat_opened",
    with: "bob",
    online: false,
    address: "",
    history: [],
  });
  assert.match(text ?? "", /chatting with bob/);
  assert.match(text ?? "", /offline/);
  assert.doesNotMatch(text ?? "", /directly at/);
});

Deno.test("Renderer shows a message stored on the server with its text and `*`", () => {
  const r = new Renderer({ color: false });
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "for later" });
  const text = r.render({ type: "stored", id: "s1", to: "bob", reason: "bob is offline" });
  assert.ok(text?.startsWith("[13:04:05] you: for later *"), text);
  assert.match(text!, /bob is offline/);
  assert.equal(r.pending, 0);
});

Deno.test("Renderer shows a queued message with its text and the reason", () => {
  const r = new Renderer({ color: false });
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "try again" });
  const text = r.render({ type: "queued", id: "s1", to: "bob", reason: "server unreachable" });
  assert.ok(text?.startsWith("[13:04:05] you: try again"), text);
  assert.match(text!, /server unreachable/);
  assert.equal(r.pending, 0);
});

Deno.test("Renderer gives each mailbox event a line naming who and how many", () => {
  const r = new Renderer({ color: false });
  const cases: [ClientEvent, RegExp[]][] = [
    [{ type: "read", by: "bob", ids: ["a", "b"], readAt: TS }, [/bob/, /\b2\b/, /13:04:05/]],
    [{ type: "mail_notice", from: "carol", count: 3 }, [/carol/, /\b3\b/]],
    [
      { type: "mail_summary", entries: [{ from: "carol", count: 2, newest: TS }] },
      [/carol/, /\b2\b/, /13:04:05/],
    ],
    [
      {
        type: "hanging",
        entries: [{ from: "carol", count: 1, newest: TS }, { from: "dave", count: 4, newest: TS }],
      },
      [/carol/, /dave/, /\b4\b/],
    ],
    [{ type: "hanging", entries: [] }, [/no pending/]],
    [{ type: "shown", from: "carol", count: 2 }, [/carol/, /\b2\b/]],
    [{ type: "shown", from: "carol", count: 0 }, [/carol/, /no /]],
  ];
  for (const [event, patterns] of cases) {
    const text = r.render(event);
    assert.ok(text, `${event.type} renders nothing`);
    for (const pattern of patterns) assert.match(text, pattern, JSON.stringify(event));
    assert.doesNotMatch(text, ANSI);
  }
});
