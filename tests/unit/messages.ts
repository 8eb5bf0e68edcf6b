/**
 * Unit tests for lib/protocol/messages.ts: every message schema round-trips through
 * encodeMessage/decodeMessage on the direction(s) that carry it, and everything else (extra
 * fields, wrong types, unknown types, bad bytes, bad names and passwords) is refused with a
 * ProtocolError carrying a stable code.
 */
import assert from "node:assert/strict";
import * as messages from "../../lib/protocol/messages.ts";
import {
  ClientToServer,
  decodeMessage,
  encodeMessage,
  MAX_CONTACTS,
  MAX_MAIL_BATCH,
  MAX_MAILBOX_ENTRIES,
  MAX_PASSWORD_LENGTH,
  MAX_SEALED_LENGTH,
  MAX_TEXT_LENGTH,
  MIN_PASSWORD_LENGTH,
  Password,
  PeerToPeer,
  PROTOCOL_VERSION,
  requestIdOf,
  ServerToClient,
  Username,
} from "../../lib/protocol/messages.ts";
import { ERROR_CODES, type ErrorCode, ProtocolError } from "../../lib/protocol/errors.ts";
import { LiteralSchema, ObjectSchema, Schema } from "../../lib/protocol/schema.ts";

const enc = new TextEncoder();

type Direction = "ClientToServer" | "ServerToClient" | "PeerToPeer";
const UNIONS = { ClientToServer, ServerToClient, PeerToPeer } as const;

const KEY = "A".repeat(42) + "g"; // 43 base64url chars: a 32-byte value
const TOKEN = "abcdefghijklmnopqrstuvwxyz0123456789-_ABCDE";
const NONCE = "Zz0-_".repeat(8) + "abc";
const SIGNATURE = "s".repeat(43) + "-_".repeat(21) + "x";
const TS = Date.UTC(2024, 5, 1, 12, 0, 0);
/** A sealed mail message as it travels: base64url, at least 64 characters. */
const SEALED = "Se4l-d_".repeat(12);
const GROUP = "6f9619ff-8b86-4011-b42d-00c04fc964ff";
/** The fields of a group message as its author signs them (`group_msg`, `group_relay`). */
const SIGNED_GROUP_MESSAGE = {
  group: GROUP,
  id: "3f1c2a9e-7b7d-4c1e-9a55-0d4f8c1b2a77",
  seq: 3,
  ts: TS,
  prevTs: TS,
  text: "hello all",
  sig: SIGNATURE,
};
const TAG_1 = "0e5b1f3a-2c4d-4e6f-8a9b-1c2d3e4f5a6b";
const TAG_2 = "9a8b7c6d-5e4f-4a3b-9c1d-0e1f2a3b4c5d";
/** A file transfer id (16 bytes, hex) and a SHA-256 (hex). */
const FID = "0123456789abcdef0123456789abcdef";
const SHA = "ab".repeat(32);
/** One Noise handshake message, base64url. */
const NOISE = "n0Ise-_".repeat(14);

interface Case {
  /** The exported schema's name in messages.ts. */
  name: string;
  /** The unions that must accept this message. */
  directions: readonly Direction[];
  /** A valid message, with every optional field present. */
  example: Record<string, unknown> & { type: string };
  /** A field set to a value of the wrong JSON type. */
  wrongType: [field: string, value: unknown];
  /** Fields of the example that may be left out. */
  optional?: readonly string[];
}

const ALL: readonly Direction[] = ["ClientToServer", "ServerToClient", "PeerToPeer"];

const CASES: readonly Case[] = [
  {
    name: "Hello",
    directions: ALL,
    example: { type: "hello", version: PROTOCOL_VERSION, role: "client", software: "confab/1.0" },
    wrongType: ["version", "1"],
  },
  {
    name: "ErrorMsg",
    directions: ALL,
    example: { type: "error", id: 7, code: "USER_OFFLINE", message: "bob is offline" },
    wrongType: ["message", 42],
    optional: ["id"],
  },
  {
    name: "Noise",
    directions: ALL,
    example: { type: "noise", data: NOISE },
    wrongType: ["data", 1],
  },
  { name: "Ping", directions: ALL, example: { type: "ping", id: 1 }, wrongType: ["id", "1"] },
  { name: "Pong", directions: ALL, example: { type: "pong", id: 1 }, wrongType: ["id", true] },
  {
    name: "Signup",
    directions: ["ClientToServer"],
    example: {
      type: "signup",
      id: 2,
      user: "alice",
      password: "hunter22",
      publicKey: KEY,
      mailKey: KEY,
      mailKeySig: SIGNATURE,
    },
    wrongType: ["password", 123456],
  },
  {
    name: "Login",
    directions: ["ClientToServer"],
    example: {
      type: "login",
      id: 3,
      user: "alice",
      password: "hunter22",
      peerPort: 40000,
      lastLogout: TS,
    },
    wrongType: ["peerPort", "40000"],
    optional: ["lastLogout"],
  },
  {
    name: "Resume",
    directions: ["ClientToServer"],
    example: { type: "resume", id: 4, token: TOKEN, peerPort: 1 },
    wrongType: ["token", null],
  },
  {
    name: "Logout",
    directions: ["ClientToServer"],
    example: { type: "logout", id: 5 },
    wrongType: ["id", null],
  },
  {
    name: "PasswordChange",
    directions: ["ClientToServer"],
    example: { type: "password_change", id: 5, password: "secret-pw", newPassword: "newer-pw" },
    wrongType: ["newPassword", 12345678],
  },
  {
    name: "Lookup",
    directions: ["ClientToServer"],
    example: { type: "lookup", id: 6, user: "bob" },
    wrongType: ["user", ["bob"]],
  },
  {
    name: "ContactsList",
    directions: ["ClientToServer"],
    example: { type: "contacts", id: 7 },
    wrongType: ["id", {}],
  },
  {
    name: "ContactAdd",
    directions: ["ClientToServer"],
    example: { type: "contact_add", id: 8, user: "bob" },
    wrongType: ["user", 5],
  },
  {
    name: "ContactRemove",
    directions: ["ClientToServer"],
    example: { type: "contact_remove", id: 9, user: "bob" },
    wrongType: ["user", false],
  },
  {
    name: "Ok",
    directions: ["ServerToClient"],
    example: { type: "ok", id: 10 },
    wrongType: ["id", "x"],
  },
  {
    name: "Welcome",
    directions: ["ServerToClient"],
    example: {
      type: "welcome",
      id: 11,
      user: "Alice",
      token: TOKEN,
      host: "127.0.0.1",
      resumed: false,
    },
    wrongType: ["resumed", "false"],
  },
  {
    name: "LookupResult",
    directions: ["ServerToClient"],
    example: {
      type: "lookup_result",
      id: 12,
      user: "bob",
      online: true,
      host: "::1",
      port: 4243,
      publicKey: KEY,
      mailKey: KEY,
      mailKeySig: SIGNATURE,
      contact: true,
    },
    wrongType: ["online", 1],
    // Without a mail key: an account from before mail keys existed.
    optional: ["host", "port", "mailKey", "mailKeySig"],
  },
  {
    name: "ContactListMsg",
    directions: ["ServerToClient"],
    example: {
      type: "contact_list",
      id: 13,
      contacts: [{ user: "bob", online: true }, { user: "carol.x", online: false }],
      requested: ["dave"],
      requests: ["erin", "frank"],
    },
    wrongType: ["contacts", { user: "bob", online: true }],
  },
  {
    name: "ContactResult",
    directions: ["ServerToClient"],
    example: { type: "contact_result", id: 14, user: "bob", state: "requested" },
    wrongType: ["state", "friends"],
  },
  {
    name: "ContactUpdate",
    directions: ["ServerToClient"],
    example: { type: "contact_update", user: "bob", state: "request" },
    wrongType: ["state", "maybe"],
  },
  {
    name: "Presence",
    directions: ["ServerToClient"],
    example: { type: "presence", user: "bob", online: false },
    wrongType: ["online", "no"],
  },
  {
    name: "ServerClosing",
    directions: ["ServerToClient"],
    example: { type: "server_closing", reason: "shutting down" },
    wrongType: ["reason", 0],
  },
  {
    name: "AuthInit",
    directions: ["PeerToPeer"],
    example: { type: "auth_init", from: "alice", to: "bob", nonce: NONCE },
    wrongType: ["nonce", 12345],
  },
  {
    name: "AuthReply",
    directions: ["PeerToPeer"],
    example: { type: "auth_reply", from: "bob", nonce: NONCE, signature: SIGNATURE },
    wrongType: ["signature", []],
  },
  {
    name: "AuthFinish",
    directions: ["PeerToPeer"],
    example: { type: "auth_finish", signature: SIGNATURE },
    wrongType: ["signature", 1],
  },
  {
    name: "AuthOk",
    directions: ["PeerToPeer"],
    example: { type: "auth_ok" },
    wrongType: ["type", 1],
  },
  {
    name: "ChatMsg",
    directions: ["PeerToPeer"],
    example: {
      type: "msg",
      id: "3f1c2a9e-7b7d-4c1e-9a55-0d4f8c1b2a77",
      seq: 0,
      ts: TS,
      text: "ciao! ✓ 🚀",
    },
    wrongType: ["seq", "0"],
  },
  {
    name: "Ack",
    directions: ["PeerToPeer"],
    example: { type: "ack", id: "3f1c2a9e-7b7d-4c1e-9a55-0d4f8c1b2a77" },
    wrongType: ["id", 17],
  },
  {
    name: "ChatState",
    directions: ["PeerToPeer"],
    example: { type: "chat_state", open: true },
    wrongType: ["open", "true"],
  },
  { name: "Bye", directions: ["PeerToPeer"], example: { type: "bye" }, wrongType: ["type", null] },
  {
    name: "Busy",
    directions: ["PeerToPeer"],
    example: { type: "busy", id: "3f1c2a9e-7b7d-4c1e-9a55-0d4f8c1b2a77" },
    wrongType: ["id", 3],
  },
  {
    name: "MailSend",
    directions: ["ClientToServer"],
    example: {
      type: "mail_send",
      id: 20,
      to: "bob",
      messages: [
        { msgId: "3f1c2a9e-7b7d-4c1e-9a55-0d4f8c1b2a77", ts: TS, sealed: SEALED },
        { msgId: "m-2", ts: TS, sealed: SEALED },
      ],
    },
    wrongType: ["messages", { msgId: "m-1", ts: TS, sealed: SEALED }],
  },
  {
    name: "Hanging",
    directions: ["ClientToServer"],
    example: { type: "hanging", id: 21 },
    wrongType: ["id", "21"],
  },
  {
    name: "Show",
    directions: ["ClientToServer"],
    example: { type: "show", id: 22, from: "alice", after: "m-1" },
    optional: ["after"],
    wrongType: ["from", 5],
  },
  {
    name: "MailConfirm",
    directions: ["ClientToServer"],
    example: {
      type: "mail_confirm",
      id: 23,
      from: "alice",
      msgIds: ["m-1", "m-2"],
      receipts: [{ msgId: "m-1", readAt: TS, sig: SIGNATURE }],
    },
    optional: ["receipts"],
    wrongType: ["msgIds", "m-1"],
  },
  {
    name: "ReceiptsAck",
    directions: ["ClientToServer"],
    example: { type: "receipts_ack", id: 24, msgIds: ["m-1"] },
    wrongType: ["msgIds", [1]],
  },
  {
    name: "ReportUnreachable",
    directions: ["ClientToServer"],
    example: { type: "report_unreachable", id: 25, user: "bob" },
    wrongType: ["user", false],
  },
  {
    name: "MailStored",
    directions: ["ServerToClient"],
    example: {
      type: "mail_stored",
      id: 20,
      stored: 1,
      refused: [{ msgId: "m-2", code: "QUOTA", message: "you have as much waiting for bob…" }],
    },
    optional: ["refused"],
    wrongType: ["stored", "1"],
  },
  {
    name: "HangingList",
    directions: ["ServerToClient"],
    example: { type: "hanging_list", id: 21, entries: [{ from: "alice", count: 2, newest: TS }] },
    wrongType: ["entries", {}],
  },
  {
    name: "MailBatch",
    directions: ["ServerToClient"],
    example: {
      type: "mail_batch",
      id: 22,
      from: "alice",
      messages: [{ msgId: "m-1", ts: TS, sealed: SEALED }],
      more: false,
    },
    wrongType: ["more", "no"],
  },
  {
    name: "MailNotice",
    directions: ["ServerToClient"],
    example: { type: "mail_notice", from: "alice", count: 1 },
    wrongType: ["count", "1"],
  },
  {
    name: "MailSummary",
    directions: ["ServerToClient"],
    example: { type: "mail_summary", entries: [{ from: "carol", count: 5, newest: TS }] },
    wrongType: ["entries", null],
  },
  {
    name: "Receipts",
    directions: ["ServerToClient"],
    example: {
      type: "receipts",
      items: [
        { msgId: "m-1", reader: "bob", readAt: TS, sig: SIGNATURE },
        { msgId: "m-2", reader: "bob", readAt: TS },
      ],
      rejected: [{ msgId: "m-3", reader: "bob", at: TS }],
    },
    optional: ["rejected"],
    wrongType: ["items", "m-1"],
  },
  {
    name: "GroupStateMsg",
    directions: ["PeerToPeer"],
    example: {
      type: "group_state",
      group: {
        id: GROUP,
        adds: [{ user: "alice", tag: TAG_1, at: TS }, { user: "bob", tag: TAG_2 }],
        removed: [TAG_2],
      },
    },
    wrongType: ["group", GROUP],
  },
  {
    name: "GroupSum",
    directions: ["PeerToPeer"],
    example: { type: "group_sum", group: GROUP, sum: "0123456789abcdef" },
    wrongType: ["sum", 123],
  },
  {
    name: "GroupWhere",
    directions: ["PeerToPeer"],
    example: {
      type: "group_where",
      group: GROUP,
      endpoints: [{ user: "carol", host: "203.0.113.7", port: 40123, at: TS }],
    },
    wrongType: ["endpoints", "carol"],
  },
  {
    name: "GroupRefused",
    directions: ["PeerToPeer"],
    example: { type: "group_refused", group: GROUP, code: "NOT_A_CONTACT" },
    wrongType: ["code", "STRANGER"],
  },
  {
    name: "GroupMsg",
    directions: ["PeerToPeer"],
    example: { type: "group_msg", ...SIGNED_GROUP_MESSAGE },
    wrongType: ["seq", "3"],
    optional: ["prevTs", "sig"],
  },
  {
    name: "GroupMarks",
    directions: ["PeerToPeer"],
    example: { type: "group_marks", group: GROUP, marks: [{ author: "carol", next: 12 }] },
    wrongType: ["marks", { carol: 12 }],
  },
  {
    name: "GroupRelay",
    directions: ["PeerToPeer"],
    example: { type: "group_relay", author: "carol", ...SIGNED_GROUP_MESSAGE },
    wrongType: ["sig", 64],
    optional: ["prevTs"],
  },
  {
    name: "GroupRelayMore",
    directions: ["PeerToPeer"],
    example: { type: "group_relay_more", group: GROUP },
    wrongType: ["group", 1],
  },
  {
    name: "FileOffer",
    directions: ["PeerToPeer"],
    example: {
      type: "file_offer",
      fid: FID,
      name: "notes.txt",
      size: 1234,
      tag: SHA,
      group: GROUP,
    },
    wrongType: ["size", "1234"],
    optional: ["group"],
  },
  {
    name: "FileAccept",
    directions: ["PeerToPeer"],
    example: { type: "file_accept", fid: FID, offset: 512 },
    wrongType: ["offset", "512"],
  },
  {
    name: "FileReject",
    directions: ["PeerToPeer"],
    example: { type: "file_reject", fid: FID, reason: "too large" },
    wrongType: ["reason", false],
  },
  {
    name: "FileEnd",
    directions: ["PeerToPeer"],
    example: { type: "file_end", fid: FID, sha256: SHA },
    wrongType: ["sha256", 1],
  },
  {
    name: "FileDone",
    directions: ["PeerToPeer"],
    example: { type: "file_done", fid: FID, ok: false, reason: "checksum mismatch" },
    wrongType: ["ok", "yes"],
    optional: ["reason"],
  },
  {
    name: "FileCancel",
    directions: ["PeerToPeer"],
    example: { type: "file_cancel", fid: FID, reason: "cancelled by the sender" },
    wrongType: ["reason", null],
  },
  {
    name: "RelayOpen",
    directions: ["ClientToServer"],
    example: { type: "relay_open", id: 30, user: "bob" },
    wrongType: ["user", 5],
  },
  {
    name: "RelayJoin",
    directions: ["ClientToServer"],
    example: { type: "relay_join", id: 31, token: TOKEN },
    wrongType: ["token", 1],
  },
  {
    name: "Observe",
    directions: ["ClientToServer"],
    example: { type: "observe", id: 32 },
    wrongType: ["id", "x"],
  },
  {
    name: "RelayToken",
    directions: ["ServerToClient"],
    example: { type: "relay_token", id: 30, token: TOKEN },
    wrongType: ["token", []],
  },
  {
    name: "RelayOffer",
    directions: ["ServerToClient"],
    example: { type: "relay_offer", from: "alice", token: TOKEN },
    wrongType: ["from", 1],
  },
  {
    name: "RelayStart",
    directions: ["ServerToClient"],
    example: { type: "relay_start", id: 31 },
    wrongType: ["id", null],
  },
  {
    name: "RelayNotice",
    directions: ["ServerToClient"],
    example: {
      type: "relay_notice",
      peer: "bob",
      limit: "rate",
      message: "relayed link slowed to 1 MiB/s",
    },
    wrongType: ["limit", 3],
  },
  {
    name: "Observed",
    directions: ["ServerToClient"],
    example: { type: "observed", id: 32, host: "203.0.113.10", port: 40000, probePort: 4243 },
    wrongType: ["port", "x"],
    optional: ["probePort"],
  },
  {
    name: "PunchOffer",
    directions: ["PeerToPeer"],
    example: {
      type: "punch_offer",
      round: 1,
      nonce: NONCE,
      host: "203.0.113.10",
      port: 40000,
      nat: "preserving",
    },
    wrongType: ["round", "1"],
  },
  {
    name: "PunchAnswer",
    directions: ["PeerToPeer"],
    example: {
      type: "punch_answer",
      round: 2,
      nonce: NONCE,
      host: "203.0.113.20",
      port: 41000,
      nat: "independent",
      reason: "tried recently",
    },
    wrongType: ["nat", 1],
    optional: ["nonce", "host", "port", "nat", "reason"],
  },
  {
    name: "PunchSync",
    directions: ["PeerToPeer"],
    example: { type: "punch_sync", round: 1 },
    wrongType: ["round", true],
  },
  {
    name: "PathSwitch",
    directions: ["PeerToPeer"],
    example: { type: "path_switch" },
    wrongType: ["type", 1],
  },
];

/** Expects `fn` to throw a ProtocolError with `code` (and a message matching `pattern`). */
function assertProtocolError(fn: () => unknown, code: ErrorCode, pattern?: RegExp): ProtocolError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ProtocolError, `expected a ProtocolError, got ${caught}`);
  assert.equal(caught.name, "ProtocolError");
  assert.equal(caught.code, code, caught.message);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

function decodeAs(direction: Direction, message: unknown): unknown {
  return decodeMessage(UNIONS[direction], enc.encode(JSON.stringify(message)));
}

function schemaOf(name: string): Schema<unknown> {
  const schema = (messages as Record<string, unknown>)[name];
  assert.ok(schema instanceof Schema, `messages.ts exports no schema named ${name}`);
  return schema;
}

// ---- coverage ------------------------------------------------------------------------------

Deno.test("messages.ts: every exported message schema has a test case", () => {
  const exported = Object.entries(messages)
    .filter(([, value]) =>
      value instanceof ObjectSchema &&
      (value.shape as Record<string, unknown>).type instanceof LiteralSchema
    )
    .map(([name]) => name)
    .sort();
  assert.deepEqual(exported, CASES.map((c) => c.name).sort());
});

Deno.test("messages.ts: every message type belongs to the unions of its direction", () => {
  for (const [direction, union] of Object.entries(UNIONS)) {
    const types = union.options.map((o) => (o.shape as { type: LiteralSchema<string> }).type.value);
    const expected = CASES.filter((c) => c.directions.includes(direction as Direction))
      .map((c) => c.example.type);
    assert.deepEqual(types.sort(), expected.sort(), direction);
  }
});

// ---- round trips ---------------------------------------------------------------------------

for (const c of CASES) {
  Deno.test(`decodeMessage() round-trips a valid ${c.name} on ${c.directions.join(", ")}`, () => {
    assert.equal(schemaOf(c.name).safeParse(c.example).success, true);
    const body = encodeMessage(c.example);
    assert.ok(body instanceof Uint8Array);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(body)), c.example);
    for (const direction of c.directions) {
      assert.deepEqual(decodeMessage(UNIONS[direction], body), c.example, direction);
    }
  });

  const others = ALL.filter((d) => !c.directions.includes(d));
  if (others.length > 0) {
    Deno.test(`decodeMessage() refuses ${c.name} as UNKNOWN_TYPE on ${others.join(", ")}`, () => {
      for (const direction of others) {
        assertProtocolError(
          () => decodeAs(direction, c.example),
          "UNKNOWN_TYPE",
          new RegExp(c.example.type),
        );
      }
    });
  }

  Deno.test(`decodeMessage() rejects ${c.name} with an extra field`, () => {
    for (const direction of c.directions) {
      assertProtocolError(
        () => decodeAs(direction, { ...c.example, extra: 1 }),
        "BAD_MESSAGE",
        new RegExp(`bad ${c.example.type}`),
      );
    }
    assert.equal(schemaOf(c.name).safeParse({ ...c.example, admin: true }).success, false);
  });

  Deno.test(`decodeMessage() rejects ${c.name} with ${c.wrongType[0]} of the wrong type`, () => {
    const [field, value] = c.wrongType;
    for (const direction of c.directions) {
      assertProtocolError(
        () => decodeAs(direction, { ...c.example, [field]: value }),
        "BAD_MESSAGE",
      );
    }
  });

  const optional = c.optional ?? [];
  const required = Object.keys(c.example).filter((k) => k !== "type" && !optional.includes(k));
  if (required.length > 0) {
    Deno.test(`decodeMessage() rejects ${c.name} missing any of ${required.join(", ")}`, () => {
      for (const field of required) {
        const partial = Object.fromEntries(Object.entries(c.example).filter(([k]) => k !== field));
        assertProtocolError(
          () => decodeAs(c.directions[0]!, partial),
          "BAD_MESSAGE",
          new RegExp(field),
        );
      }
    });
  }
  if (optional.length > 0) {
    Deno.test(`decodeMessage() accepts ${c.name} without ${optional.join(", ")}`, () => {
      const minimal = Object.fromEntries(
        Object.entries(c.example).filter(([k]) => !optional.includes(k)),
      );
      assert.deepEqual(decodeAs(c.directions[0]!, minimal), minimal);
    });
  }
}

// ---- field rules on particular messages ----------------------------------------------------

Deno.test("decodeMessage() names the offending field in a BAD_MESSAGE", () => {
  assertProtocolError(
    () => decodeAs("ClientToServer", { type: "lookup", id: 1, user: "no spaces" }),
    "BAD_MESSAGE",
    /^bad lookup: user: /,
  );
  assertProtocolError(
    () =>
      decodeAs("ServerToClient", {
        type: "contact_list",
        id: 1,
        contacts: [{ user: "a", online: "y" }],
        requested: [],
        requests: [],
      }),
    "BAD_MESSAGE",
    /contacts\.0\.online/,
  );
});

Deno.test("decodeMessage() accepts an empty contact list and an empty error message", () => {
  const list = { type: "contact_list", id: 1, contacts: [], requested: [], requests: [] };
  assert.deepEqual(decodeAs("ServerToClient", list), list);
  const error = { type: "error", code: "INTERNAL", message: "" };
  assert.deepEqual(decodeAs("ClientToServer", error), error);
});

Deno.test("decodeMessage() accepts every ERROR_CODES code and any newer UPPER_SNAKE code", () => {
  for (const code of [...ERROR_CODES, "NOPE", "X", "QUOTA_2_EXCEEDED", "A".repeat(40)]) {
    for (const direction of ALL) {
      const error = { type: "error", code, message: "x" };
      assert.deepEqual(decodeAs(direction, error), error, `${code} on ${direction}`);
    }
  }
});

Deno.test("decodeMessage() rejects an error code that is not UPPER_SNAKE", () => {
  for (
    const code of ["internal", "Internal", "", "_X", "1X", "X-Y", "X Y", "A".repeat(41), "É", 7]
  ) {
    assertProtocolError(
      () => decodeAs("PeerToPeer", { type: "error", code, message: "x" }),
      "BAD_MESSAGE",
      /code/,
    );
  }
});

Deno.test("decodeMessage() bounds hello versions, roles and software names", () => {
  const hello = { type: "hello", version: 0, role: "peer", software: "" };
  assert.deepEqual(decodeAs("PeerToPeer", hello), hello);
  for (
    const bad of [
      { version: -1 },
      { version: 65536 },
      { version: 1.5 },
      { role: "admin" },
      { software: "x".repeat(65) },
    ]
  ) {
    assertProtocolError(() => decodeAs("PeerToPeer", { ...hello, ...bad }), "BAD_MESSAGE");
  }
});

Deno.test("decodeMessage() requires request ids to be safe non-negative integers", () => {
  assert.deepEqual(decodeAs("ClientToServer", { type: "ping", id: 0 }), { type: "ping", id: 0 });
  const max = { type: "ping", id: Number.MAX_SAFE_INTEGER };
  assert.deepEqual(decodeAs("ClientToServer", max), max);
  for (const id of [-1, 1.5, Number.MAX_SAFE_INTEGER + 2, 1e300]) {
    assertProtocolError(() => decodeAs("ClientToServer", { type: "ping", id }), "BAD_MESSAGE");
  }
});

Deno.test("decodeMessage() bounds ports to 1-65535", () => {
  const login = { type: "login", id: 1, user: "alice", password: "secret" };
  for (const peerPort of [1, 65535]) {
    assert.deepEqual(decodeAs("ClientToServer", { ...login, peerPort }), { ...login, peerPort });
  }
  for (const peerPort of [0, 65536, -1, 80.5]) {
    assertProtocolError(() => decodeAs("ClientToServer", { ...login, peerPort }), "BAD_MESSAGE");
  }
});

Deno.test("decodeMessage() bounds timestamps to the years 2000-2200", () => {
  const msg = { type: "msg", id: "m1", seq: 1, text: "hi" };
  for (const ts of [Date.UTC(2000, 0, 1), Date.UTC(2199, 11, 31)]) {
    assert.deepEqual(decodeAs("PeerToPeer", { ...msg, ts }), { ...msg, ts });
  }
  for (const ts of [0, Date.UTC(1999, 11, 31), Date.UTC(2200, 0, 2), TS + 0.5]) {
    assertProtocolError(() => decodeAs("PeerToPeer", { ...msg, ts }), "BAD_MESSAGE", /ts/);
  }
});

Deno.test("decodeMessage() requires keys, tokens, nonces and signatures in base64url", () => {
  const signup = {
    type: "signup",
    id: 1,
    user: "alice",
    password: "secret",
    publicKey: KEY,
    mailKey: KEY,
    mailKeySig: SIGNATURE,
  };
  assert.deepEqual(decodeAs("ClientToServer", signup), signup);
  for (
    const bad of [
      KEY.slice(1),
      KEY + "A",
      KEY.slice(1) + "=",
      KEY.slice(1) + "+",
      KEY.slice(1) + "/",
    ]
  ) {
    for (const field of ["publicKey", "mailKey"]) {
      assertProtocolError(
        () => decodeAs("ClientToServer", { ...signup, [field]: bad }),
        "BAD_MESSAGE",
        new RegExp(field),
      );
    }
  }
  for (const mailKeySig of [SIGNATURE.slice(1), SIGNATURE + "A", SIGNATURE.slice(1) + "="]) {
    assertProtocolError(
      () => decodeAs("ClientToServer", { ...signup, mailKeySig }),
      "BAD_MESSAGE",
      /mailKeySig/,
    );
  }
  assertProtocolError(
    () => decodeAs("PeerToPeer", { type: "auth_finish", signature: SIGNATURE.slice(2) }),
    "BAD_MESSAGE",
  );
  assertProtocolError(
    () =>
      decodeAs("ClientToServer", {
        type: "resume",
        id: 1,
        token: TOKEN.replace("a", "."),
        peerPort: 1,
      }),
    "BAD_MESSAGE",
  );
});

Deno.test("decodeMessage() bounds message ids of msg and ack", () => {
  assertProtocolError(() => decodeAs("PeerToPeer", { type: "ack", id: "" }), "BAD_MESSAGE");
  assertProtocolError(
    () => decodeAs("PeerToPeer", { type: "ack", id: "x".repeat(65) }),
    "BAD_MESSAGE",
  );
  assertProtocolError(() => decodeAs("PeerToPeer", { type: "ack", id: "a b" }), "BAD_MESSAGE");
  assert.deepEqual(decodeAs("PeerToPeer", { type: "ack", id: "x".repeat(64) }), {
    type: "ack",
    id: "x".repeat(64),
  });
});

Deno.test("decodeMessage() accepts chat text up to 64 KiB and rejects longer or empty text", () => {
  assert.equal(MAX_TEXT_LENGTH, 64 * 1024);
  const msg = { type: "msg", id: "m", seq: 5, ts: TS };
  const longest = { ...msg, text: "x".repeat(MAX_TEXT_LENGTH) };
  assert.deepEqual(decodeAs("PeerToPeer", longest), longest);
  assertProtocolError(
    () => decodeAs("PeerToPeer", { ...msg, text: "x".repeat(MAX_TEXT_LENGTH + 1) }),
    "BAD_MESSAGE",
    /text/,
  );
  assertProtocolError(() => decodeAs("PeerToPeer", { ...msg, text: "" }), "BAD_MESSAGE", /text/);
});

Deno.test("decodeMessage() limits a contact list to MAX_CONTACTS entries", () => {
  const contacts = Array.from(
    { length: MAX_CONTACTS },
    (_, i) => ({ user: `u${i}`, online: false }),
  );
  const full = { type: "contact_list", id: 1, contacts, requested: [], requests: [] };
  assert.deepEqual(decodeAs("ServerToClient", full), full);
  assertProtocolError(
    () =>
      decodeAs("ServerToClient", {
        ...full,
        contacts: [...contacts, { user: "one", online: true }],
      }),
    "BAD_MESSAGE",
  );
  assertProtocolError(
    () =>
      decodeAs("ServerToClient", { ...full, contacts: [{ user: "a", online: true, extra: 1 }] }),
    "BAD_MESSAGE",
  );
});

Deno.test("decodeMessage() limits hanging_list and mail_summary to MAX_MAILBOX_ENTRIES senders", () => {
  const entries = Array.from(
    { length: MAX_MAILBOX_ENTRIES },
    (_, i) => ({ from: `u${i}`, count: 1, newest: TS }),
  );
  const more = [...entries, { from: "one", count: 1, newest: TS }];
  for (const base of [{ type: "hanging_list", id: 1 }, { type: "mail_summary" }]) {
    assert.deepEqual(decodeAs("ServerToClient", { ...base, entries }), { ...base, entries });
    assertProtocolError(
      () => decodeAs("ServerToClient", { ...base, entries: more }),
      "BAD_MESSAGE",
      /entries/,
    );
  }
});

Deno.test("decodeMessage() bounds sealed mail to 64..MAX_SEALED_LENGTH base64url characters", () => {
  const send = { type: "mail_send", id: 1, to: "bob" };
  const batch = { type: "mail_batch", id: 1, from: "alice", more: false };
  for (const sealed of ["x".repeat(64), "y".repeat(MAX_SEALED_LENGTH)]) {
    const messages = [{ msgId: "m-1", ts: TS, sealed }];
    assert.deepEqual(decodeAs("ClientToServer", { ...send, messages }), { ...send, messages });
    assert.deepEqual(decodeAs("ServerToClient", { ...batch, messages }), { ...batch, messages });
  }
  const bad = [
    "x".repeat(63),
    "x".repeat(MAX_SEALED_LENGTH + 1),
    "x".repeat(63) + "=",
    "x".repeat(63) + "+",
    "x".repeat(63) + "/",
    "x".repeat(63) + " ",
  ];
  for (const sealed of bad) {
    const messages = [{ msgId: "m", ts: TS, sealed: SEALED }, { msgId: "m", ts: TS, sealed }];
    assertProtocolError(
      () => decodeAs("ClientToServer", { ...send, messages }),
      "BAD_MESSAGE",
      /messages\.1\.sealed/,
    );
    assertProtocolError(
      () => decodeAs("ServerToClient", { ...batch, messages: [{ msgId: "m", ts: TS, sealed }] }),
      "BAD_MESSAGE",
      /sealed/,
    );
  }
  // The plain text of the old protocol is gone: the server only ever carries sealed mail.
  assertProtocolError(
    () =>
      decodeAs("ClientToServer", {
        ...send,
        messages: [{ msgId: "m", ts: TS, sealed: SEALED, text: "hi" }],
      }),
    "BAD_MESSAGE",
  );
});

Deno.test("decodeMessage() takes 1..MAX_MAIL_BATCH messages in a mail_send, and a mail_stored names each refused one with a known code", () => {
  const send = { type: "mail_send", id: 1, to: "bob" };
  const mail = (i: number) => ({ msgId: `m-${i}`, ts: TS, sealed: SEALED });
  const full = Array.from({ length: MAX_MAIL_BATCH }, (_, i) => mail(i));
  const most = { ...send, messages: full };
  assert.deepEqual(decodeAs("ClientToServer", most), most);
  for (const messages of [[], [...full, mail(MAX_MAIL_BATCH)], mail(1), [mail(1), "m-2"]]) {
    assertProtocolError(
      () => decodeAs("ClientToServer", { ...send, messages }),
      "BAD_MESSAGE",
      /bad mail_send: messages/,
    );
  }
  // The one-message form of version 7.
  assertProtocolError(
    () => decodeAs("ClientToServer", { ...send, ...mail(1) }),
    "BAD_MESSAGE",
  );
  const stored = { type: "mail_stored", id: 1, stored: 2 };
  assert.deepEqual(decodeAs("ServerToClient", stored), stored);
  const refusal = (code: string) => ({ msgId: "m-1", code, message: "no" });
  for (const code of ["MAILBOX_FULL", "QUOTA", "SERVER_BUSY", "INTERNAL"]) {
    const answer = { ...stored, refused: [refusal(code)] };
    assert.deepEqual(decodeAs("ServerToClient", answer), answer);
  }
  for (
    const bad of [
      { ...stored, refused: [] },
      { ...stored, refused: [refusal("NOT_A_CONTACT")] },
      { ...stored, stored: -1 },
      { ...stored, stored: MAX_MAIL_BATCH + 1 },
      { ...stored, refused: [{ ...refusal("QUOTA"), message: "x".repeat(501) }] },
    ]
  ) {
    assertProtocolError(() => decodeAs("ServerToClient", bad), "BAD_MESSAGE", /mail_stored/);
  }
});

Deno.test("decodeMessage() bounds noise handshake messages to 1..1024 base64url characters", () => {
  for (const data of ["A", "z".repeat(1024), NOISE]) {
    for (const direction of ALL) {
      assert.deepEqual(decodeAs(direction, { type: "noise", data }), { type: "noise", data });
    }
  }
  for (const data of ["", "z".repeat(1025), "abc=", "a+b", "a/b", "a b"]) {
    assertProtocolError(
      () => decodeAs("PeerToPeer", { type: "noise", data }),
      "BAD_MESSAGE",
      /data/,
    );
  }
});

Deno.test("decodeMessage() bounds the reason of server_closing and the message of error", () => {
  assertProtocolError(
    () => decodeAs("ServerToClient", { type: "server_closing", reason: "r".repeat(201) }),
    "BAD_MESSAGE",
  );
  assertProtocolError(
    () => decodeAs("ServerToClient", { type: "error", code: "INTERNAL", message: "m".repeat(501) }),
    "BAD_MESSAGE",
  );
});

Deno.test("decodeMessage() restricts hosts to address characters", () => {
  const welcome = { type: "welcome", id: 1, user: "a", token: TOKEN, resumed: true };
  for (const host of ["10.0.0.1", "fe80::1%eth0", "example.com"]) {
    assert.deepEqual(decodeAs("ServerToClient", { ...welcome, host }), { ...welcome, host });
  }
  for (const host of ["", "a b", "evil\nhost", "h".repeat(256), "<script>"]) {
    assertProtocolError(
      () => decodeAs("ServerToClient", { ...welcome, host }),
      "BAD_MESSAGE",
      /host/,
    );
  }
});

// ---- usernames and passwords ---------------------------------------------------------------

Deno.test("Username accepts 1-32 letters, digits, underscore, hyphen and dot", () => {
  for (
    const name of [
      "a",
      "Z",
      "0",
      "alice",
      "Bob_99",
      "c-d.e",
      "_",
      "x".repeat(32),
      "A.b-C_9",
      ".a",
      "a..b",
    ]
  ) {
    assert.equal(Username.safeParse(name).success, true, name);
    assert.deepEqual(decodeAs("ClientToServer", { type: "lookup", id: 1, user: name }), {
      type: "lookup",
      id: 1,
      user: name,
    });
  }
});

Deno.test("Username rejects empty, too long, spaces, slashes, unicode and control characters", () => {
  const bad = [
    "",
    "x".repeat(33),
    "al ice",
    " alice",
    "alice ",
    "a/b",
    "a\\b",
    "../etc",
    "é",
    "alicé",
    "аlice", // Cyrillic а
    "ａlice", // full-width
    "a\nb",
    "alice\n",
    "a\u0000",
    "a@b",
    "a:b",
    "😀",
    ".", // a name is a folder in the client's home: never . or ..
    "..",
    "...",
  ];
  for (const name of bad) {
    assert.equal(Username.safeParse(name).success, false, JSON.stringify(name));
    assertProtocolError(
      () => decodeAs("ClientToServer", { type: "contact_add", id: 1, user: name }),
      "BAD_MESSAGE",
    );
  }
  assert.equal(Username.safeParse(5).success, false);
});

Deno.test("Password accepts 6 to 256 characters without control characters", () => {
  assert.equal(MIN_PASSWORD_LENGTH, 6);
  assert.equal(MAX_PASSWORD_LENGTH, 256);
  for (const pw of ["123456", "p".repeat(256), "with spaces ok", "ünïcödé ✓", "~!@#$%^&*()"]) {
    assert.equal(Password.safeParse(pw).success, true, pw);
  }
  const signup = {
    type: "signup",
    id: 1,
    user: "alice",
    password: "secret",
    publicKey: KEY,
    mailKey: KEY,
    mailKeySig: SIGNATURE,
  };
  assert.deepEqual(decodeAs("ClientToServer", signup), signup);
});

Deno.test("Password rejects too short, too long and control characters", () => {
  const bad = [
    "",
    "12345",
    "p".repeat(257),
    "secret\n",
    "sec\tret",
    "\u0000secret",
    "secret\u001f",
    "secret\u007f",
    "\rsecret",
    "secret\u001b[31m",
  ];
  for (const pw of bad) {
    assert.equal(Password.safeParse(pw).success, false, JSON.stringify(pw));
    assertProtocolError(
      () =>
        decodeAs("ClientToServer", { type: "login", id: 1, user: "a", password: pw, peerPort: 1 }),
      "BAD_MESSAGE",
      /password/,
    );
  }
});

// ---- bytes that are not a message ----------------------------------------------------------

Deno.test("decodeMessage() rejects a body that is not JSON as BAD_MESSAGE, keeping the cause", () => {
  for (const text of ["", "{", "not json", '{"type":"ping","id":1', "{'type':'ping'}", "\u0000"]) {
    const error = assertProtocolError(
      () => decodeMessage(ClientToServer, enc.encode(text)),
      "BAD_MESSAGE",
      /not valid UTF-8 JSON/,
    );
    assert.ok(error.cause instanceof SyntaxError, `cause of ${JSON.stringify(text)}`);
  }
});

Deno.test("decodeMessage() rejects invalid UTF-8 as BAD_MESSAGE", () => {
  const valid = enc.encode('{"type":"ping","id":1,"x":"__"}');
  const at = valid.indexOf(0x5f); // first "_"
  const cases = [
    Uint8Array.of(0xff, 0xfe),
    (() => {
      const b = valid.slice();
      b[at] = 0xc3; // a lead byte followed by "_" instead of a continuation byte
      return b;
    })(),
    (() => {
      const b = valid.slice();
      b.set([0xc0, 0xaf], at); // overlong encoding of "/"
      return b;
    })(),
  ];
  for (const body of cases) {
    assertProtocolError(() => decodeMessage(PeerToPeer, body), "BAD_MESSAGE", /UTF-8/);
  }
  // A UTF-8 encoded lone surrogate (CESU-8 style) is invalid too.
  const surrogate = new Uint8Array([
    ...enc.encode('{"type":"bye","x":"'),
    0xed,
    0xa0,
    0x80,
    ...enc.encode('"}'),
  ]);
  assertProtocolError(() => decodeMessage(PeerToPeer, surrogate), "BAD_MESSAGE");
});

Deno.test("decodeMessage() rejects JSON that is not an object as BAD_MESSAGE", () => {
  for (const text of ["null", "42", '"ping"', "true", "[]", '[{"type":"ping","id":1}]']) {
    assertProtocolError(
      () => decodeMessage(ServerToClient, enc.encode(text)),
      "BAD_MESSAGE",
      /object/,
    );
  }
});

Deno.test("decodeMessage() rejects an object without a string type as BAD_MESSAGE", () => {
  for (
    const value of [{}, { id: 1 }, { type: 1 }, { type: null }, { type: ["ping"] }, {
      Type: "ping",
    }]
  ) {
    assertProtocolError(() => decodeAs("ServerToClient", value), "BAD_MESSAGE", /type/);
  }
});

Deno.test("decodeMessage() rejects an unknown type as UNKNOWN_TYPE", () => {
  for (
    const type of ["", "PING", "shutdown", "toString", "__proto__", "constructor", "hasOwnProperty"]
  ) {
    for (const direction of ALL) {
      assertProtocolError(() => decodeAs(direction, { type, id: 1 }), "UNKNOWN_TYPE");
    }
  }
});

Deno.test("decodeMessage() quotes at most 40 characters of an unknown type", () => {
  const type = "t".repeat(40) + "X".repeat(10_000);
  const error = assertProtocolError(() => decodeAs("PeerToPeer", { type }), "UNKNOWN_TYPE");
  assert.ok(error.message.includes("t".repeat(40)));
  assert.ok(!error.message.includes("X"), "the message must not echo the whole type");
});

Deno.test("decodeMessage() rejects a __proto__ key as an extra field", () => {
  const body = enc.encode('{"type":"ping","id":1,"__proto__":{"admin":true}}');
  assertProtocolError(() => decodeMessage(ClientToServer, body), "BAD_MESSAGE", /__proto__/);
});

Deno.test("encodeMessage() produces UTF-8 JSON that decodeMessage() reads back", () => {
  const msg = { type: "msg", id: "u-1", seq: 9, ts: TS, text: 'emoji 😀 and "quotes"\nnewline' };
  const body = encodeMessage(msg);
  assert.equal(new TextDecoder().decode(body), JSON.stringify(msg));
  assert.deepEqual(decodeMessage(PeerToPeer, body), msg);
});

// ---- requestIdOf ---------------------------------------------------------------------------

Deno.test("requestIdOf() returns the id of a message, valid or not", () => {
  assert.equal(requestIdOf(enc.encode('{"type":"ping","id":42}')), 42);
  assert.equal(requestIdOf(enc.encode('{"type":"no_such_type","id":0}')), 0);
  assert.equal(requestIdOf(enc.encode('{"type":"login","id":7,"user":"bad name"}')), 7);
  assert.equal(
    requestIdOf(enc.encode(`{"id":${Number.MAX_SAFE_INTEGER}}`)),
    Number.MAX_SAFE_INTEGER,
  );
});

Deno.test("requestIdOf() returns undefined when there is no usable id", () => {
  const bodies = [
    '{"type":"ping"}',
    '{"type":"ping","id":-1}',
    '{"type":"ping","id":1.5}',
    '{"type":"ping","id":"1"}',
    '{"type":"ping","id":null}',
    `{"type":"ping","id":${Number.MAX_SAFE_INTEGER + 2}}`,
    "null",
    "42",
    "[1,2]",
    '"id"',
    "not json",
    "",
  ];
  for (const text of bodies) assert.equal(requestIdOf(enc.encode(text)), undefined, text);
  assert.equal(requestIdOf(Uint8Array.of(0x7b, 0xff, 0x7d)), undefined); // invalid UTF-8
});
