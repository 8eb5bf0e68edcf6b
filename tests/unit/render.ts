/**
 * Unit tests for lib/client/render.ts: the `Renderer` turning client events into lines, without
 * colour (exact text) and with colour (ANSI escapes present), and its tracking of messages in
 * flight (`sent` → `delivered`/`not_delivered`, slow ones shown once as "sending").
 */
import assert from "node:assert/strict";
import { Renderer, SHOW_PENDING_AFTER_MS } from "../../lib/client/render.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { displayWidth, hasUnsafe } from "../../lib/cli/text.ts";

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
  { type: "contacts", contacts: [], requested: [], requests: [] },
  {
    type: "contacts",
    contacts: [{ user: "bob", online: true }, { user: "carol", online: false }],
    requested: ["dave"],
    requests: ["erin"],
  },
  { type: "contact_added", user: "bob", mutual: false },
  { type: "contact_added", user: "bob", mutual: true },
  { type: "contact_removed", user: "bob", state: "removed" },
  { type: "contact_removed", user: "bob", state: "declined" },
  { type: "contact_removed", user: "bob", state: "withdrawn" },
  { type: "contact_update", user: "bob", state: "request" },
  { type: "contact_update", user: "bob", state: "accepted" },
  { type: "contact_update", user: "bob", state: "declined" },
  { type: "contact_update", user: "bob", state: "removed" },
  { type: "presence", user: "bob", online: true },
  { type: "presence", user: "bob", online: false },
  { type: "chat_opened", with: "bob", online: true, address: "127.0.0.1:5556", history: [] },
  {
    type: "chat_opened",
    with: "bob",
    online: true,
    address: "127.0.0.1:4242",
    path: "relayed",
    history: [],
  },
  { type: "chat_closed", with: "bob" },
  { type: "message", id: "m1", from: "bob", ts: TS, text: "hi", inChat: true, via: "direct" },
  { type: "message", id: "m2", from: "bob", ts: TS, text: "hi", inChat: false, via: "direct" },
  { type: "not_delivered", id: "nope", to: "bob", reason: "link closed" },
  { type: "mail_rejected", id: "m9", to: "bob", ts: TS, text: "hello", at: TS },
  { type: "peer_joined", user: "bob" },
  { type: "peer_left", user: "bob" },
  { type: "link_up", user: "bob", address: "127.0.0.1:5556", outbound: true, path: "direct" },
  { type: "link_up", user: "bob", address: "127.0.0.1:5556", outbound: false, path: "direct" },
  { type: "link_up", user: "bob", address: "127.0.0.1:4242", outbound: true, path: "relayed" },
  { type: "link_down", user: "bob", reason: "peer closed" },
  {
    type: "link_path",
    user: "bob",
    path: "direct",
    address: "203.0.113.20:40000",
    reason: "hole punched in 3 ms; the relay is released",
  },
  {
    type: "link_path",
    user: "bob",
    path: "relayed",
    address: "127.0.0.1:4242",
    reason: "the direct path was lost",
  },
  { type: "relay_notice", user: "bob", limit: "rate", text: "limited to 1.0 MiB/s" },
  { type: "key_changed", user: "bob" },
  { type: "key_trusted", user: "bob", safetyNumber: SAFETY_NUMBER },
  { type: "fingerprint", user: "alice", number: OWN_NUMBER },
  { type: "fingerprint", user: "alice", number: SAFETY_NUMBER, with: "bob", changed: false },
  { type: "fingerprint", user: "alice", number: SAFETY_NUMBER, with: "bob", changed: true },
  { type: "server_lost", reason: "connection reset" },
  { type: "server_back", resumed: true, server: "127.0.0.1:4242" },
  { type: "server_closing", reason: "maintenance" },
  { type: "error", code: "USER_OFFLINE", message: "bob is offline" },
  { type: "help", text: "commands: ..." },
  { type: "bye" },
];

/** The plain text each event of {@link EVERY_EVENT} renders to, in the same order. */
const PLAIN: readonly (string | undefined)[] = [
  "listening for peers on port 5555; server 127.0.0.1:4242\ntype help for commands",
  "connecting to 127.0.0.1:4242…",
  "account alice created",
  "logged in as alice on 127.0.0.1:4242 (contacts, chat <user>, help)",
  "logged out alice",
  "logged out alice (server unreachable: the logout time is saved and sent at the next login)",
  "no contacts yet; add one: contacts add <user> (they must accept)",
  "  bob    online\n  carol  offline\n  erin   asks to be your contact (contacts add erin accepts)\n" +
  "  dave   request sent, not answered",
  "contact request sent to bob: you can chat once they accept",
  "bob and you are contacts now",
  "bob removed from your contacts",
  "declined bob's contact request",
  "withdrew your contact request to bob",
  "bob asks to be your contact: contacts add bob accepts, contacts remove bob declines",
  "bob accepted: you are contacts now",
  "bob declined your contact request",
  "bob removed you from their contacts",
  "bob is online",
  "bob is offline",
  "chatting with bob, directly (/q leaves, /h helps)",
  "chatting with bob, relayed through the server (/q leaves, /h helps)",
  "left the chat with bob",
  `${CLOCK} bob: hi`,
  `✉ ${CLOCK} bob: hi  (chat bob to answer)`,
  "a message ✗ not delivered to bob: link closed",
  "✗ bob could not open your message of 13:04:05 ('hello'); it was not delivered — send it again",
  // Outside a chat with bob, his window, link and path changes are not news (see --verbose).
  undefined,
  undefined,
  undefined,
  undefined,
  undefined,
  undefined,
  undefined,
  undefined,
  "relay limit: limited to 1.0 MiB/s",
  "WARNING: bob's identity key has changed since you last talked. " +
  "If bob did not reinstall, someone may be impersonating them. " +
  "Compare safety numbers (fingerprint bob); accept the new key with: trust bob",
  `you now trust bob's current key (safety number ${SAFETY_NUMBER})`,
  `your number (alice): ${OWN_NUMBER}`,
  `safety number for you and bob:\n  ${OWN_NUMBER}\n  99887 76655 44332 21100 10293 84756\n` +
  "compare it with theirs in person or on a call; if it matches, you talk to them",
  `safety number for you and bob:\n  ${OWN_NUMBER}\n  99887 76655 44332 21100 10293 84756\n` +
  "bob's key has CHANGED since you pinned it",
  "lost the connection to the server; chats go on, reconnecting in the background",
  "reconnected to the server (127.0.0.1:4242)",
  "the server is going away: maintenance",
  "error: bob is offline",
  "commands: ...",
  "bye",
];

Deno.test("Renderer without colour renders every event type as its plain line", () => {
  assert.equal(EVERY_EVENT.length, PLAIN.length);
  const r = new Renderer({ color: false, now: () => TS });
  EVERY_EVENT.forEach((event, i) => {
    assert.equal(r.render(event), PLAIN[i], JSON.stringify(event));
  });
});

Deno.test("Renderer without colour never writes an ANSI escape", () => {
  const r = new Renderer({ color: false, now: () => TS });
  for (const event of EVERY_EVENT) {
    const text = r.render(event);
    assert.ok(text === undefined || !ANSI.test(text), JSON.stringify(text));
  }
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "yo" });
  for (const line of r.takeSlow(TS + SHOW_PENDING_AFTER_MS)) assert.doesNotMatch(line, ANSI);
});

Deno.test("Renderer with colour wraps its styled lines in ANSI escapes", () => {
  const r = new Renderer({ color: true, now: () => TS });
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
  const r = new Renderer({ color: false, now: () => TS });
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
  const r = new Renderer({ color: false, now: () => TS });
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
  const r = new Renderer({ color: false, now: () => TS });
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
  const r = new Renderer({ color: false, now: () => TS });
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "hello" });
  assert.equal(
    r.render({ type: "not_delivered", id: "s1", to: "bob", reason: "bob went offline" }),
    "[13:04:05] you: hello ✗ not delivered to bob: bob went offline",
  );
  assert.equal(r.pending, 0);
});

Deno.test("Renderer shows a line sent from the outbox (no `sent` this run) with its text", () => {
  const r = new Renderer({ color: false, now: () => TS });
  const line = { ts: TS, text: "typed before the restart" };
  assert.equal(
    r.render({ type: "stored", id: "o1", to: "bob", reason: "bob is offline", ...line }),
    "[13:04:05] you: typed before the restart * (bob is offline: it waits on the server)",
  );
  assert.equal(
    r.render({ type: "delivered", id: "o2", to: "bob", ms: 9, ...line }),
    "[13:04:05] you: typed before the restart ** (sent from the outbox)",
  );
  assert.equal(
    r.render({ type: "not_delivered", id: "o3", to: "bob", reason: "not a contact", ...line }),
    "[13:04:05] you: typed before the restart ✗ not delivered to bob: not a contact",
  );
  assert.equal(
    r.render({ type: "queued", id: "o4", to: "bob", reason: "the server is away", ...line }),
    "[13:04:05] you: typed before the restart (not sent yet: the server is away)",
  );
  // Without the text (an older event), as before.
  assert.equal(r.render({ type: "delivered", id: "o5", to: "bob", ms: 9 }), undefined);
});

Deno.test("Renderer says a server's reason for going away once, not 'going away: the server is …'", () => {
  const r = new Renderer({ color: false, now: () => TS });
  assert.equal(
    r.render({ type: "server_closing", reason: "the server is shutting down" }),
    "the server is shutting down",
  );
  assert.equal(
    r.render({ type: "server_closing", reason: "maintenance" }),
    "the server is going away: maintenance",
  );
});

Deno.test("Renderer says in one line that mail the reader could not open was not delivered", () => {
  const r = new Renderer({ color: false, now: () => TS });
  const text = "hello bob, here is the long plan for tomorrow";
  assert.equal(
    r.render({ type: "mail_rejected", id: "m1", to: "bob", ts: TS, text, at: TS + 60_000 }),
    "✗ bob could not open your message of 13:04:05 ('hello bob, here is the …'); " +
      "it was not delivered — send it again",
  );
});

Deno.test("Renderer.takeSlow() shows a slow message once, after SHOW_PENDING_AFTER_MS", () => {
  const r = new Renderer({ color: false, now: () => TS });
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
  const r = new Renderer({ color: false, now: () => TS });
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "x" });
  assert.deepEqual(r.takeSlow(TS + 10, 20), []);
  assert.equal(r.takeSlow(TS + 20, 20).length, 1);
});

Deno.test("Renderer shows a slow message's later delivery or failure as a short follow-up", () => {
  const r = new Renderer({ color: false, now: () => TS });
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
  const r = new Renderer({ color: false, now: () => TS });
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
      "chatting with Bob, directly (/q leaves, /h helps)",
    ].join("\n"),
  );
});

Deno.test("Renderer shows a group's history with `you` and marks on your own messages only", () => {
  const r = new Renderer({ color: false, now: () => TS, where: () => ({ me: "Alice" }) });
  const text = r.render({
    type: "group_opened",
    group: "3f1c2a" + "0".repeat(26),
    handle: "#3f1c2a",
    by: "alice",
    members: ["alice", "bob", "carol"],
    history: [
      { id: "h1", from: "bob", ts: TS, text: "from bob", mark: "**" },
      { id: "h2", from: "alice", ts: TS, text: "mine, everyone has it", mark: "**" },
      { id: "h3", from: "alice", ts: TS, text: "mine, on its way", mark: "1/2" },
    ],
  });
  assert.equal(
    text,
    [
      "— earlier in #3f1c2a —",
      "[13:04:05] bob: from bob",
      "[13:04:05] you: mine, everyone has it **",
      "[13:04:05] you: mine, on its way 1/2",
      "group #3f1c2a: alice, bob, carol (opened by you; /a adds, /u lists who is online, /q leaves)",
    ].join("\n"),
  );
});

Deno.test("Renderer says why a group member is away in words, the low-level text only with --verbose", () => {
  const away = (reason: string): ClientEvent => ({
    type: "group_presence",
    group: "3f1c2a" + "0".repeat(26),
    handle: "#3f1c2a",
    user: "bob",
    here: false,
    reason,
  });
  const plain = new Renderer({ color: false });
  const reset = "Connection reset by peer (os error 104)";
  assert.equal(
    plain.render(away(reset)),
    "#3f1c2a: bob is away (connection lost); messages wait for them",
  );
  assert.equal(
    plain.render(away("closed")),
    "#3f1c2a: bob is away (connection closed); messages wait for them",
  );
  assert.equal(
    new Renderer({ color: false, verbose: true }).render(away(reset)),
    `#3f1c2a: bob is away (${reset}); messages wait for them`,
  );
});

Deno.test("Renderer says a contact is online or offline once per change, not again on a re-attach", () => {
  const r = new Renderer({ color: false });
  const presence = (user: string, online: boolean): ClientEvent => ({
    type: "presence",
    user,
    online,
  });
  assert.equal(r.render(presence("bob", true)), "bob is online");
  // The server came back: bob re-attached and is pushed as online again; he never left.
  assert.equal(r.render(presence("Bob", true)), undefined);
  assert.equal(r.render(presence("bob", false)), "bob is offline");
  assert.equal(r.render(presence("bob", true)), "bob is online");
  // A new login (or the contact ended and made again) starts afresh.
  r.render({ type: "logged_out", user: "alice", savedLocally: false, at: TS });
  assert.equal(r.render(presence("bob", true)), "bob is online");
  r.render({ type: "contact_update", user: "bob", state: "removed" });
  assert.equal(r.render(presence("bob", true)), "bob is online");
});

Deno.test("Renderer shows a mailbox message like a chat line, not as a notice", () => {
  const r = new Renderer({ color: false, now: () => TS });
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
  // In a group's window (bob may be a member), it must not pass for a line of the group's.
  const inGroup = new Renderer({
    color: false,
    now: () => TS,
    where: () => ({ group: "#abc123" }),
  });
  assert.equal(
    inGroup.render({
      type: "message",
      id: "m1",
      from: "bob",
      ts: TS,
      text: "left for you",
      inChat: false,
      via: "server",
    }),
    "✉ [13:04:05] bob: left for you",
  );
});

Deno.test("Renderer says when the other side of a chat is offline", () => {
  const r = new Renderer({ color: false, now: () => TS });
  const text = r.render({
    type: "chat_opened",
    with: "bob",
    online: false,
    address: "",
    history: [],
  });
  assert.match(text ?? "", /chatting with bob/);
  assert.match(text ?? "", /offline/);
  assert.doesNotMatch(text ?? "", /directly/);
});

Deno.test("Renderer shows a message stored on the server with its text and `*`", () => {
  const r = new Renderer({ color: false, now: () => TS });
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "for later" });
  const text = r.render({ type: "stored", id: "s1", to: "bob", reason: "bob is offline" });
  assert.ok(text?.startsWith("[13:04:05] you: for later *"), text);
  assert.match(text!, /bob is offline/);
  assert.equal(r.pending, 0);
});

Deno.test("Renderer shows a queued message with its text and the reason", () => {
  const r = new Renderer({ color: false, now: () => TS });
  r.render({ type: "sent", id: "s1", to: "bob", ts: TS, text: "try again" });
  const text = r.render({ type: "queued", id: "s1", to: "bob", reason: "server unreachable" });
  assert.ok(text?.startsWith("[13:04:05] you: try again"), text);
  assert.match(text!, /server unreachable/);
  assert.equal(r.pending, 0);
});

Deno.test("Renderer gives each mailbox event a line naming who and how many", () => {
  const r = new Renderer({ color: false, now: () => TS });
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

Deno.test("Renderer shows control characters, ESC and bidi overrides from the network as visible escapes", () => {
  const r = new Renderer({ color: false, now: () => TS });
  const hostile = "hi\x1b]0;pwned\x07\x1b[2J\x1b[31mred\r\nfake line\u202Eevil\u2066x\x9b1m";
  const events: ClientEvent[] = [
    { type: "message", id: "m1", from: "bob", ts: TS, text: hostile, inChat: true, via: "direct" },
    { type: "message", id: "m2", from: "bob", ts: TS, text: hostile, inChat: false, via: "server" },
    { type: "error", code: "X", message: `server: ${hostile}` },
    { type: "server_closing", reason: hostile },
    {
      type: "transfer_done",
      fid: "f",
      direction: "in",
      peer: "bob",
      name: hostile,
      size: 1,
      bytes: 1,
      resumedFrom: 0,
      sha256: "ab".repeat(32),
      savedAs: `/tmp/${hostile}`,
    },
    {
      type: "history",
      chat: "bob",
      entries: [{ id: "h", from: "bob", ts: TS, text: hostile, mark: "**", outgoing: false }],
    },
    {
      type: "search_results",
      query: hostile,
      results: [{ id: "h", chat: "bob", from: "bob", ts: TS, text: hostile, mark: "**" }],
    },
  ];
  for (const event of events) {
    const text = r.render(event)!;
    assert.ok(!hasUnsafe(text), text);
    assert.match(text, /\\e\]0;pwned\\x07\\e\[2J\\e\[31mred\\r\\nfake line\\u\{202e\}evil/);
  }
  r.render({ type: "sent", id: "s", to: "bob", ts: TS, text: "own\x1b[2J" });
  assert.equal(
    r.render({ type: "delivered", id: "s", to: "bob", ms: 1 }),
    `${CLOCK} you: own\\e[2J **`,
  );
});

Deno.test("Renderer leaves --json-bound events untouched: cleanEvent() copies, never edits", () => {
  const event: ClientEvent = {
    type: "message",
    id: "m",
    from: "bob",
    ts: TS,
    text: "\x1b[2J",
    inChat: true,
    via: "direct",
  };
  new Renderer({ color: false }).render(event);
  assert.equal((event as { text: string }).text, "\x1b[2J");
});

Deno.test("Renderer dates a message that is not from today, and not one that is", () => {
  const r = new Renderer({ color: false, now: () => TS + 24 * 3600_000 });
  const msg = (ts: number): ClientEvent => ({
    type: "message",
    id: "m",
    from: "bob",
    ts,
    text: "hi",
    inChat: true,
    via: "direct",
  });
  assert.equal(r.render(msg(TS)), "[2024-01-02 13:04:05] bob: hi");
  assert.equal(r.render(msg(TS + 24 * 3600_000)), "[13:04:05] bob: hi");
});

Deno.test("Renderer gives each name its own stable colour, and none without colour", () => {
  const r = new Renderer({ color: true, now: () => TS });
  assert.equal(r.name("bob"), r.name("bob"));
  assert.equal(
    r.name("Bob").replace("Bob", "bob"),
    r.name("bob"),
    "the same colour whatever the case",
  );
  const colours = new Set(["alice", "bob", "carol", "dave", "erin", "frank"].map((n) => r.name(n)));
  assert.ok(colours.size >= 3, "different people get different colours");
  assert.equal(new Renderer({ color: false }).name("bob"), "bob");
});

Deno.test("Renderer says how to answer with the command that works where the user is", () => {
  let where = {};
  const r = new Renderer({ color: false, now: () => TS, where: () => where });
  const notice: ClientEvent = { type: "mail_notice", from: "carol", count: 2 };
  assert.match(r.render(notice)!, / — show carol to read$/);
  where = { chatWith: "bob" };
  assert.match(r.render(notice)!, / — \/show carol to read$/);
  const msg: ClientEvent = {
    type: "message",
    id: "m",
    from: "carol",
    ts: TS,
    text: "hey",
    inChat: false,
    via: "direct",
  };
  assert.match(r.render(msg)!, /\(\/chat carol to answer\)$/);
  where = { group: "#abc123" };
  assert.match(
    r.render({
      type: "group_invited",
      group: "g",
      handle: "#def456",
      by: "dave",
      members: ["dave", "bob"],
    })!,
    /\/chat #def456 to enter/,
  );
});

Deno.test("Renderer gives the commands an error suggests in the form that works where the user is", () => {
  let where = {};
  const r = new Renderer({ color: false, now: () => TS, where: () => where });
  const error = (message: string): ClientEvent => ({ type: "error", code: "X", message });
  const noContact = error("carol is not in your contacts (contacts add carol); nobody was added");
  const add = error("carol is not in your contacts; add them first: contacts add carol");
  const empty: ClientEvent = { type: "contacts", contacts: [], requested: [], requests: [] };
  const noGroup = error("you are not in a group #abc123 (groups lists yours)");
  assert.match(r.render(noGroup)!, /\(groups lists yours\)$/);
  assert.match(r.render(noContact)!, /\(contacts add carol\)/);
  assert.match(r.render(add)!, /: contacts add carol$/);
  assert.match(r.render(empty)!, /: contacts add <user> \(they must accept\)$/);
  for (const w of [{ chatWith: "bob" }, { group: "#abc123" }]) {
    where = w;
    assert.match(r.render(noContact)!, /\(\/contacts add carol\)/);
    assert.match(r.render(noGroup)!, /\(\/groups lists yours\)$/);
    assert.match(r.render(add)!, /: \/contacts add carol$/);
    assert.match(r.render(empty)!, /: \/contacts add <user> \(they must accept\)$/);
    // Words in a sentence stay as they are.
    assert.equal(r.render(error("cannot chat with yourself")), "error: cannot chat with yourself");
  }
});

Deno.test("Renderer tells of a read receipt in words, with the date when not from today", () => {
  const r = new Renderer({ color: false, now: () => TS });
  const read = (ids: string[], readAt: number): ClientEvent => ({
    type: "read",
    by: "bob",
    ids,
    readAt,
  });
  assert.equal(r.render(read(["a"], TS)), "bob read your message at 13:04:05 (* → **)");
  assert.equal(r.render(read(["a", "b"], TS)), "bob read 2 of your messages at 13:04:05 (* → **)");
  assert.equal(
    r.render(read(["a"], TS - 24 * 3600_000)),
    "bob read your message at 2024-01-01 13:04:05 (* → **)",
  );
});

Deno.test("Renderer names each sender in the login summary instead of a placeholder", () => {
  const r = new Renderer({ color: false, now: () => TS });
  const one = r.render({
    type: "mail_summary",
    entries: [{ from: "alice", count: 3, newest: TS }],
  })!;
  assert.match(one, /3 from alice/);
  assert.match(one, / — show alice to read$/);
  assert.doesNotMatch(one, /<user>/);
  const two = r.render({
    type: "mail_summary",
    entries: [{ from: "alice", count: 3, newest: TS }, { from: "bob", count: 1, newest: TS }],
  })!;
  assert.match(two, / — show to read them all, show alice one sender's$/);
  assert.equal(r.render({ type: "mail_summary", entries: [] }), undefined, "a hostile empty list");
});

Deno.test("Renderer keeps link and window news to the chat it concerns, and details to --verbose", () => {
  let where: { chatWith?: string } = {};
  const r = new Renderer({ color: false, now: () => TS, where: () => where });
  const v = new Renderer({ color: false, now: () => TS, verbose: true });
  const down: ClientEvent = {
    type: "link_down",
    user: "carol",
    reason: "Broken pipe (os error 32)",
  };
  const up: ClientEvent = {
    type: "link_up",
    user: "carol",
    address: "127.0.0.1:34110",
    outbound: false,
    path: "direct",
  };
  assert.equal(r.render(down), undefined);
  assert.equal(r.render(up), undefined);
  assert.equal(r.render({ type: "peer_joined", user: "carol" }), undefined);
  assert.equal(r.render({ type: "peer_left", user: "carol" }), undefined);
  where = { chatWith: "carol" };
  assert.match(r.render(down)!, /lost the connection to carol/);
  assert.doesNotMatch(r.render(down)!, /os error|closed \(/);
  // Ended cleanly by the other side (a logout, a quit): said plainly, not as a loss.
  assert.equal(
    r.render({ type: "link_down", user: "carol", reason: "closed" }),
    "the connection to carol closed; messages go through the server until it is back",
  );
  assert.equal(r.render({ type: "peer_left", user: "carol" }), "carol left the chat");
  assert.match(v.render(up)!, /127\.0\.0\.1:34110/);
  assert.match(v.render(down)!, /Broken pipe/);
  const lost: ClientEvent = { type: "server_lost", reason: "Broken pipe (os error 32)" };
  assert.doesNotMatch(r.render(lost)!, /Broken pipe|os error/);
  assert.match(v.render(lost)!, /Broken pipe/);
  const err: ClientEvent = {
    type: "error",
    code: "PEER_UNREACHABLE",
    message: "cannot reach carol at 127.0.0.1:34110: Connection reset by peer (os error 104)",
  };
  assert.equal(r.render(err), "error: cannot reach carol: Connection reset by peer");
  assert.match(v.render(err)!, /127\.0\.0\.1:34110.*os error 104/);
  const opened: ClientEvent = {
    type: "chat_opened",
    with: "carol",
    online: true,
    address: "127.0.0.1:34110",
    history: [],
  };
  assert.doesNotMatch(r.render(opened)!, /127\.0\.0\.1/);
  assert.match(v.render(opened)!, /127\.0\.0\.1:34110/);
});

Deno.test("Renderer shows contacts and groups as aligned tables, members in one order for all", () => {
  const r = new Renderer({ color: false, now: () => TS });
  assert.equal(
    r.render({
      type: "contacts",
      contacts: [{ user: "zoe", online: false }, { user: "bob", online: true }, {
        user: "Christina",
        online: true,
      }],
      requested: ["dave"],
      requests: ["erin"],
    }),
    "  bob        online\n  Christina  online\n  zoe        offline\n" +
      "  erin       asks to be your contact (contacts add erin accepts)\n" +
      "  dave       request sent, not answered",
  );
  const groups = (members: string[]): ClientEvent => ({
    type: "groups",
    groups: [
      { id: "g1", handle: "#abc123", members, active: true, joinedAt: TS },
      { id: "g2", handle: "#def456", members: ["x", "y"], active: false, joinedAt: TS },
    ],
  });
  const a = r.render(groups(["carol", "alice", "bob"]));
  assert.equal(a, r.render(groups(["bob", "carol", "alice"])));
  assert.equal(a, "  #abc123  alice, bob, carol  active\n  #def456  x, y               left");
});

Deno.test("Renderer shows a file offer with sender, size and how to answer it", () => {
  const r = new Renderer({ color: false, now: () => TS });
  const base = { fid: "f", peer: "bob", name: "report.pdf", size: 2 * 1024 * 1024 };
  assert.equal(
    r.render({
      type: "transfer_offered",
      ...base,
      direction: "in",
      offer: 3,
      expiresAt: TS + 300_000,
    }),
    "bob offers report.pdf (2.0 MiB) — accept: /y 3, decline: /n 3; it expires in 5 min",
  );
  // A short --offer-timeout is said in seconds, not rounded up to a minute.
  assert.equal(
    r.render({
      type: "transfer_offered",
      ...base,
      direction: "in",
      offer: 3,
      expiresAt: TS + 4_000,
    }),
    "bob offers report.pdf (2.0 MiB) — accept: /y 3, decline: /n 3; it expires in 4 s",
  );
  assert.equal(
    r.render({ type: "transfer_offered", ...base, direction: "out" }),
    "offered report.pdf (2.0 MiB) to bob; waiting for them to accept",
  );
  assert.equal(
    r.render({ type: "transfer_declined", ...base, direction: "in", reason: "you declined" }),
    "not receiving report.pdf (2.0 MiB) from bob: you declined",
  );
  assert.equal(r.render({ type: "offers", offers: [] }), "no file offer waits for your answer");
  assert.equal(
    r.render({
      type: "offers",
      offers: [{ offer: 3, peer: "bob", name: "a.txt", size: 5 }],
    }),
    "3: a.txt (5 B) from bob\naccept with /y <n>, decline with /n <n>",
  );
  // A hostile name from the network is shown with visible escapes.
  const text = r.render({
    type: "transfer_offered",
    ...base,
    name: "x\x1b]0;pwned\x07.pdf",
    direction: "in",
    offer: 4,
  })!;
  assert.ok(!hasUnsafe(text), JSON.stringify(text));
});

Deno.test("Renderer.statusLine() cuts a transfer to the columns given, never inside a character", () => {
  const r = new Renderer({ color: false });
  const name = `photos ${"😀".repeat(30)}.zip`;
  const base = { fid: "f", peer: "bob", name, size: 100, direction: "in" } as const;
  r.render({ type: "transfer_started", ...base, offset: 0 });
  r.render({ type: "transfer_progress", ...base, bytes: 10, rate: 1, eta: 1, path: "direct" });
  for (let columns = 20; columns < 40; columns++) {
    const line = r.statusLine(columns)!;
    assert.ok(line.isWellFormed(), `no half of a character at ${columns} columns: ${line}`);
    assert.ok(displayWidth(line) <= columns - 1, `${columns} columns: ${line}`);
    assert.ok(line.startsWith("↓ photos 😀") && line.endsWith("…"), line);
  }
});
