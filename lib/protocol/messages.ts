/**
 * Every message of the Confab wire protocol, as strict schemas. A frame body is a JSON object
 * with a `type`; requests carry an integer `id` that the reply echoes. Nothing else in the code
 * sees a message before it has passed {@link decodeMessage}: types, lengths, allowed characters
 * and the absence of extra fields are all checked here.
 *
 * Keep docs/protocol.md in step with this file.
 */
import * as s from "./schema.ts";
import { ERROR_CODES, ProtocolError } from "./errors.ts";

/**
 * Protocol version spoken by this build; `hello` carries it and both sides compare. Version 4:
 * Noise with ChaChaPoly instead of AESGCM (version 3). Version 5: resumption tickets (`welcome`
 * carries one, a client coming back offers it in its first `noise` message: NNpsk0). Version 6:
 * offline mail sealed in bursts (one key agreement and one signature for many messages), which
 * a version 5 reader cannot open, and read receipts signed once per batch. Version 7: `show` may
 * ask for the mail after a given message (`after`), so a reader fetches the next batch while it
 * opens one. Version 8: `mail_send` carries a batch of sealed messages to one recipient and
 * `mail_stored` answers the batch (one frame, one commit and one answer for a burst). Version 9:
 * a client coming back with a ticket puts the first NNpsk0 message in its `hello` (`resume`) and
 * the server answers with its `hello` carrying the second, so a re-attach takes one frame each
 * way and one round trip less; the server sends its `hello` in answer to the client's. Version
 * 10: a file's SHA-256 travels in `file_end` (the sender hashes the file as it sends it, not in
 * a pass before the offer) and `file_offer` carries a `tag` naming the file's version instead.
 * Version 11: `password_change` (a logged-in user sets a new password, proving the current one).
 * Version 12: `receipts` may carry `rejected`, the sender's messages the reader's client refused
 * (not delivered), and its `items` may then be empty.
 */
export const PROTOCOL_VERSION = 12;

// ---- field rules ---------------------------------------------------------------------------

/**
 * 1–32 characters: letters, digits, `_`, `-`, `.`, and not only dots (a name is also a folder
 * name in the client's home: `.` and `..` must never be one). Unique case-insensitively.
 */
export const USERNAME_PATTERN = /^(?!\.+$)[A-Za-z0-9_.-]{1,32}$/;
export const MIN_PASSWORD_LENGTH = 6;
export const MAX_PASSWORD_LENGTH = 256;
/** Longest chat message text, in UTF-16 code units (64 KiB of ASCII). */
export const MAX_TEXT_LENGTH = 64 * 1024;
/**
 * How long a client waits for the answer to a signup or login: the server hashes the password
 * first (scrypt at N=2^17 takes seconds on a busy machine, and requests wait for a free slot),
 * and turns one away at once with SERVER_BUSY when it could not answer within half this time.
 */
export const HASH_REQUEST_TIMEOUT_MS = 60_000;
export const MAX_CONTACTS = 1000;
/** Senders listed at most in `hanging_list` and `mail_summary`. */
export const MAX_MAILBOX_ENTRIES = MAX_CONTACTS * 10;
/** Messages handed over (or confirmed) in one `show` round; the client asks again for more. */
export const MAX_MAIL_BATCH = 500;
/**
 * Sealed text carried in one `mail_batch` (or one `mail_send`) at most, so the frame stays under
 * 1 MiB; a single message may exceed it alone.
 */
export const MAX_MAIL_BATCH_TEXT = 600 * 1024;
/**
 * Longest sealed message (base64url): a 64 Ki-character text is at most 384 KiB as escaped
 * JSON, plus the envelope, signature and Noise overhead, times 4/3.
 */
export const MAX_SEALED_LENGTH = 560 * 1024;
/**
 * Longest path of a message to the root of a batch read receipt, base64url: 16 levels of 33
 * bytes (`MAX_PROOF_LENGTH` in lib/crypto/receipt_tree.ts).
 */
export const MAX_RECEIPT_PROOF_LENGTH = 704;

const b64url = (len: number) =>
  s.string().length(len).regex(/^[A-Za-z0-9_-]+$/, "must be base64url");

export const Username = s.string().regex(
  USERNAME_PATTERN,
  "1-32 characters: letters, digits, _ - . (not only dots)",
);
export const Password = s.string().min(MIN_PASSWORD_LENGTH).max(MAX_PASSWORD_LENGTH)
  // deno-lint-ignore no-control-regex
  .regex(/^[^\u0000-\u001f\u007f]*$/, "no control characters");
/** An Ed25519 public key (32 bytes), base64url without padding. */
export const PublicKey = b64url(43);
/** An Ed25519 signature (64 bytes), base64url without padding. */
export const Signature = b64url(86);
/** 32 random bytes, base64url: session tokens and handshake nonces. */
export const Token = b64url(43);
export const Nonce = b64url(43);
export const RequestId = s.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** A message id, made by the sender (a UUID in practice). */
export const MessageId = s.string().min(1).max(64).regex(/^[A-Za-z0-9_-]+$/);
export const Port = s.number().int().min(1).max(65535);
/** Milliseconds since the Unix epoch; bounded to years 2000–2200 to keep garbage out. */
export const Timestamp = s.number().int().min(946_684_800_000).max(7_258_118_400_000);
export const Host = s.string().min(1).max(255).regex(/^[A-Za-z0-9.:%-]+$/);
export const Text = s.string().min(1).max(MAX_TEXT_LENGTH);
export const ErrorCodeSchema = s.oneOf(ERROR_CODES);
export const Role = s.oneOf(["client", "server", "peer"]);

// ---- messages on every connection ----------------------------------------------------------

/** One Noise handshake message, base64url. */
export const NoiseData = s.string().min(1).max(1024).regex(/^[A-Za-z0-9_-]+$/, "must be base64url");
/** A resumption ticket as the server sealed it, base64url (see lib/server/tickets.ts). */
export const Ticket = s.string().min(1).max(512).regex(/^[A-Za-z0-9_-]+$/, "must be base64url");
export const Hello = s.object({
  type: s.literal("hello"),
  version: s.number().int().min(0).max(65535),
  role: Role,
  software: s.string().max(64),
  /**
   * A resumption in the hellos (NNpsk0): the client's carries its ticket and the first message,
   * the server's (in answer) the second. Absent otherwise.
   */
  resume: s.object({ ticket: Ticket.optional(), data: NoiseData }).optional(),
});
export const ErrorMsg = s.object({
  type: s.literal("error"),
  id: RequestId.optional(),
  /**
   * A stable code. Any well-formed code is accepted (not only today's list), so a newer peer's
   * new code still reaches the request that waits for it instead of failing validation.
   */
  code: s.string().regex(/^[A-Z][A-Z0-9_]{0,39}$/, "an UPPER_SNAKE code"),
  message: s.string().max(500),
});
/** One message of the Noise XX handshake, sent right after the `hello`s (see Hello.resume). */
export const Noise = s.object({
  type: s.literal("noise"),
  data: NoiseData,
});
export const Ping = s.object({ type: s.literal("ping"), id: RequestId });
export const Pong = s.object({ type: s.literal("pong"), id: RequestId });

// ---- client → server -----------------------------------------------------------------------

export const Signup = s.object({
  type: s.literal("signup"),
  id: RequestId,
  user: Username,
  password: Password,
  /** Ed25519 identity key. */
  publicKey: PublicKey,
  /** X25519 key that offline mail is sealed to. */
  mailKey: PublicKey,
  /** The identity key's signature over the mail key statement (see sealed_mail.ts). */
  mailKeySig: Signature,
});
export const Login = s.object({
  type: s.literal("login"),
  id: RequestId,
  user: Username,
  password: Password,
  peerPort: Port,
  /** When the previous session ended while the server was unreachable, its logout time. */
  lastLogout: Timestamp.optional(),
});
export const Resume = s.object({
  type: s.literal("resume"),
  id: RequestId,
  token: Token,
  peerPort: Port,
});
export const Logout = s.object({ type: s.literal("logout"), id: RequestId });
/** A logged-in user sets a new password, proving the current one. */
export const PasswordChange = s.object({
  type: s.literal("password_change"),
  id: RequestId,
  password: Password,
  newPassword: Password,
});
export const Lookup = s.object({ type: s.literal("lookup"), id: RequestId, user: Username });
export const ContactsList = s.object({ type: s.literal("contacts"), id: RequestId });
export const ContactAdd = s.object({
  type: s.literal("contact_add"),
  id: RequestId,
  user: Username,
});
export const ContactRemove = s.object({
  type: s.literal("contact_remove"),
  id: RequestId,
  user: Username,
});

/** A message sealed end to end (sealed_mail.ts), base64url: the server cannot read it. */
export const Sealed = s.string().min(64).max(MAX_SEALED_LENGTH).regex(
  /^[A-Za-z0-9_-]+$/,
  "must be base64url",
);
/** One sealed message, as `mail_send` hands it over and `mail_batch` gives it back. */
export const PendingMessage = s.object({ msgId: MessageId, ts: Timestamp, sealed: Sealed });
/**
 * Hands messages for an offline (or busy, or unreachable) user to the server's mailbox: a burst
 * in one frame, stored in the order given and answered once (`mail_stored`).
 */
export const MailSend = s.object({
  type: s.literal("mail_send"),
  id: RequestId,
  to: Username,
  messages: s.array(PendingMessage).min(1).max(MAX_MAIL_BATCH),
});
/** Who has pending messages for me: `hanging`. */
export const Hanging = s.object({ type: s.literal("hanging"), id: RequestId });
/**
 * Hand me the pending messages from one user: `show <user>`; with `after`, those stored after
 * that one (the last of a batch not confirmed yet, so the next batch is on its way meanwhile).
 */
export const Show = s.object({
  type: s.literal("show"),
  id: RequestId,
  from: Username,
  after: MessageId.optional(),
});
/** My client stored these messages: delete them and tell the sender they were read. */
export const MailConfirm = s.object({
  type: s.literal("mail_confirm"),
  id: RequestId,
  from: Username,
  msgIds: s.array(MessageId).min(1).max(MAX_MAIL_BATCH),
  /** Of those, the ones my client refused (not decryptable, wrongly signed): no receipt. */
  rejected: s.array(MessageId).max(MAX_MAIL_BATCH).optional(),
  /**
   * A read receipt for each message read, signed by my identity key over
   * `receiptStatement` (lib/crypto/ed25519.ts): the sender's client believes a receipt only with its signature.
   */
  receipts: s.array(s.object({ msgId: MessageId, readAt: Timestamp, sig: Signature }))
    .max(MAX_MAIL_BATCH).optional(),
  /**
   * One read receipt for all the messages read (`msgIds` without `rejected`, in that order),
   * signed by my identity key over `batchReceiptStatement` (lib/crypto/receipt_tree.ts): the
   * root of their hash tree. The server gives each message's receipt its path to that root.
   */
  receipt: s.object({ readAt: Timestamp, sig: Signature }).optional(),
});
/** I have recorded these read receipts: the server may forget them. */
export const ReceiptsAck = s.object({
  type: s.literal("receipts_ack"),
  id: RequestId,
  msgIds: s.array(MessageId).min(1).max(MAX_MAIL_BATCH),
});
/** A direct link to `user` could not be opened although the directory says they are online. */
export const ReportUnreachable = s.object({
  type: s.literal("report_unreachable"),
  id: RequestId,
  user: Username,
});

/**
 * Asks the server to relay a link to `user` (a direct dial failed). Only between mutual
 * contacts, both online; answered with `relay_token`, and `user` gets a `relay_offer`.
 */
export const RelayOpen = s.object({
  type: s.literal("relay_open"),
  id: RequestId,
  user: Username,
});
/**
 * Turns this connection into one leg of a relayed link: sent instead of a login on a fresh
 * connection whose Noise static key is that of the control connection the token went to.
 * Answered with `relay_start` once both legs are in; after that the server copies bytes.
 */
export const RelayJoin = s.object({
  type: s.literal("relay_join"),
  id: RequestId,
  token: Token,
});
/** The address the server sees this connection come from (for hole punching). */
export const Observe = s.object({ type: s.literal("observe"), id: RequestId });

// ---- server → client -----------------------------------------------------------------------

export const Ok = s.object({ type: s.literal("ok"), id: RequestId });
export const Welcome = s.object({
  type: s.literal("welcome"),
  id: RequestId,
  user: Username,
  token: Token,
  /** The address the server sees this client connect from. */
  host: Host,
  /** True when the login re-attached a session (resume) rather than starting one. */
  resumed: s.boolean(),
  /**
   * What to come back with next time: a ticket and its pre-shared key (32 bytes), for a
   * resumption handshake (NNpsk0) instead of a full one. Kept in memory only.
   */
  resumption: s.object({ ticket: Ticket, psk: Nonce }).optional(),
});
export const LookupResult = s.object({
  type: s.literal("lookup_result"),
  id: RequestId,
  user: Username,
  online: s.boolean(),
  host: Host.optional(),
  port: Port.optional(),
  publicKey: PublicKey,
  /** Absent for an account made before mail keys existed: no mail can be sealed to it. */
  mailKey: PublicKey.optional(),
  mailKeySig: Signature.optional(),
  /** Whether we are mutual contacts: only then does the address come along. */
  contact: s.boolean(),
});
export const ContactEntry = s.object({ user: Username, online: s.boolean() });
export const ContactListMsg = s.object({
  type: s.literal("contact_list"),
  id: RequestId,
  /** Mutual contacts (each has added the other), with who is online. */
  contacts: s.array(ContactEntry).max(MAX_CONTACTS),
  /** Requests I made that are not answered yet. */
  requested: s.array(Username).max(MAX_CONTACTS),
  /** Requests made to me, not answered yet (oldest first, at most {@link MAX_CONTACTS}). */
  requests: s.array(Username).max(MAX_CONTACTS),
});
/**
 * The answer to `contact_add` and `contact_remove`: where I stand with `user` now.
 * - `requested`: a request was sent (or was already waiting); `user` sees it.
 * - `mutual`: we are contacts (I accepted their request, or we already were).
 * - `removed`: we were contacts and are not any more, both ways.
 * - `declined`: I turned down their request.
 * - `withdrawn`: I took back a request they had not answered.
 */
export const ContactResult = s.object({
  type: s.literal("contact_result"),
  id: RequestId,
  user: Username,
  state: s.oneOf(["requested", "mutual", "removed", "declined", "withdrawn"]),
});
/**
 * Pushed: someone changed where they stand with me. `request`: `user` asks to be my contact
 * (pushed at once, and again at each login while unanswered); `accepted`: my request was
 * accepted; `declined`: my request was turned down; `removed`: we are no longer contacts.
 */
export const ContactUpdate = s.object({
  type: s.literal("contact_update"),
  user: Username,
  state: s.oneOf(["request", "accepted", "declined", "removed"]),
});
export const Presence = s.object({
  type: s.literal("presence"),
  user: Username,
  online: s.boolean(),
});
/** Why the server did not store one message of a `mail_send`. */
export const MAIL_REFUSALS = ["MAILBOX_FULL", "QUOTA", "SERVER_BUSY", "INTERNAL"] as const;
export type MailRefusal = typeof MAIL_REFUSALS[number];
/**
 * The answer to a `mail_send`, after the commit: `stored` of its messages are stored (or were
 * already), every one but the `refused`, each of those with its reason.
 */
export const MailStored = s.object({
  type: s.literal("mail_stored"),
  id: RequestId,
  stored: s.number().int().min(0).max(MAX_MAIL_BATCH),
  refused: s.array(s.object({
    msgId: MessageId,
    code: s.oneOf(MAIL_REFUSALS),
    message: s.string().max(500),
  })).min(1).max(MAX_MAIL_BATCH).optional(),
});
const MailboxEntry = s.object({
  from: Username,
  count: s.number().int().min(1),
  /** Send time of the newest pending message from this user. */
  newest: Timestamp,
});
export const HangingList = s.object({
  type: s.literal("hanging_list"),
  id: RequestId,
  entries: s.array(MailboxEntry).max(MAX_MAILBOX_ENTRIES),
});
export const MailBatch = s.object({
  type: s.literal("mail_batch"),
  id: RequestId,
  from: Username,
  messages: s.array(PendingMessage).max(MAX_MAIL_BATCH),
  /** More pending messages from this user wait after these. */
  more: s.boolean(),
});
/** Pushed: new mail was stored for you while you are online (busy in another chat, say). */
export const MailNotice = s.object({
  type: s.literal("mail_notice"),
  from: Username,
  count: s.number().int().min(1),
});
/** Pushed after login: who has pending messages for you. */
export const MailSummary = s.object({
  type: s.literal("mail_summary"),
  entries: s.array(MailboxEntry).max(MAX_MAILBOX_ENTRIES),
});
/**
 * Pushed: your messages were read (shown) by `reader` (`items`), or refused by the reader's
 * client and deleted unread (`rejected`); acknowledged with `receipts_ack` (both lists' ids).
 */
export const Receipts = s.object({
  type: s.literal("receipts"),
  items: s.array(
    s.object({
      msgId: MessageId,
      reader: Username,
      readAt: Timestamp,
      /**
       * The reader's signature: over `receiptStatement` alone, or with `proof` over the
       * `batchReceiptStatement` of a batch; absent: only the server's word.
       */
      sig: Signature.optional(),
      /** The message's path to the root the reader signed (lib/crypto/receipt_tree.ts). */
      proof: s.string().max(MAX_RECEIPT_PROOF_LENGTH).regex(/^[A-Za-z0-9_-]*$/, "must be base64url")
        .optional(),
    }),
  ).max(MAX_MAIL_BATCH),
  /**
   * Your messages `reader`'s client could not open or verify (`mail_confirm.rejected`), so not
   * delivered; `at`: when it refused them (server time). The server's word alone, unsigned.
   */
  rejected: s.array(s.object({ msgId: MessageId, reader: Username, at: Timestamp }))
    .max(MAX_MAIL_BATCH).optional(),
});
export const ServerClosing = s.object({
  type: s.literal("server_closing"),
  reason: s.string().max(200),
});

// ---- peer ↔ peer ---------------------------------------------------------------------------
// After `hello`, the dialer sends auth_init; the listener answers auth_reply (its signature
// over both nonces and both names); the dialer sends auth_finish (its own signature); the
// listener confirms with auth_ok. Only then do chat frames flow.

export const AuthInit = s.object({
  type: s.literal("auth_init"),
  from: Username,
  to: Username,
  nonce: Nonce,
});
export const AuthReply = s.object({
  type: s.literal("auth_reply"),
  from: Username,
  nonce: Nonce,
  signature: Signature,
});
export const AuthFinish = s.object({ type: s.literal("auth_finish"), signature: Signature });
export const AuthOk = s.object({ type: s.literal("auth_ok") });
export const ChatMsg = s.object({
  type: s.literal("msg"),
  id: MessageId,
  /** The sender's message counter (increasing in the order it sent them). */
  seq: s.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  ts: Timestamp,
  text: Text,
});
export const Ack = s.object({ type: s.literal("ack"), id: MessageId });
/**
 * The receiver did not take the message because its user is busy in another chat: the sender
 * hands it to the server's mailbox instead, and the receiver is told there is mail.
 */
export const Busy = s.object({ type: s.literal("busy"), id: MessageId });
/** The sender opened (`open: true`) or left the chat window with the receiver. */
export const ChatState = s.object({ type: s.literal("chat_state"), open: s.boolean() });
export const Bye = s.object({ type: s.literal("bye") });

// ---- groups (peer ↔ peer) ------------------------------------------------------------------

export const GroupId = s.string().uuid();
const Tag = s.string().uuid();
/** A group's replicated membership (see lib/peer/group_state.ts). */
export const GroupStateSchema = s.object({
  id: GroupId,
  adds: s.array(s.object({ user: Username, tag: Tag, at: Timestamp.optional() })).max(1024),
  removed: s.array(Tag).max(1024),
});
/**
 * "Here is the group as I know it": on every change, on a checksum mismatch, when a link comes
 * up, to invite, and to answer a member who talks about a group I left (my tombstones say so).
 */
export const GroupStateMsg = s.object({
  type: s.literal("group_state"),
  group: GroupStateSchema,
});
/** Sent now and then on each link: the checksum of each group both ends are in. */
export const GroupSum = s.object({
  type: s.literal("group_sum"),
  group: GroupId,
  sum: s.string().regex(/^[0-9a-f]{16}$/),
});
/**
 * A message to a group, sent by its author to each member directly; answered with `ack` once
 * stored, or with `busy` (followed by the receiver's `group_state`) when the receiver does not
 * count the author as a member (yet) or left: the author keeps the copy and tries again.
 */
export const GroupMsg = s.object({
  type: s.literal("group_msg"),
  group: GroupId,
  id: MessageId,
  /** The author's counter in this group: receivers show each author's messages in order. */
  seq: s.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  ts: Timestamp,
  /**
   * The send time of the author's previous message to the group (absent for its first): tells a
   * member who gets this one from another member whether the one before was for it too.
   */
  prevTs: Timestamp.optional(),
  text: Text,
  /**
   * The author's Ed25519 signature over group, author, id, seq, ts, prevTs and text
   * (`groupMessageStatement`): lets members pass the message on to a member who missed it.
   */
  sig: Signature.optional(),
});
/** Authors one `group_marks` names at most. */
export const MAX_GROUP_MARKS = 64;
/** Endpoints one `group_where` carries at most. */
export const MAX_GROUP_ENDPOINTS = 32;
/** Seqs as members count them. */
const GroupSeq = s.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/**
 * "This is how far I have each author's messages in this group" (the next seq I expect from
 * each; an author I have nothing of is left out). Sent on every link that comes up, for each
 * group both ends are in, and every ten seconds; the other side answers with `group_relay`
 * copies of what it holds and I lack.
 */
export const GroupMarks = s.object({
  type: s.literal("group_marks"),
  group: GroupId,
  marks: s.array(s.object({ author: Username, next: GroupSeq })).max(MAX_GROUP_MARKS),
});
/**
 * Another member's message, passed on to a member who lacks it, signed by its author (checked
 * by the receiver against the author's pinned key; the member passing it on is not trusted for
 * content or authorship). Not acknowledged: the author learns who has it from the members.
 */
export const GroupRelay = s.object({
  type: s.literal("group_relay"),
  group: GroupId,
  author: Username,
  id: MessageId,
  seq: GroupSeq,
  ts: Timestamp,
  prevTs: Timestamp.optional(),
  text: Text,
  sig: Signature,
});
/** Ends a batch of `group_relay` that was cut at its limit: answer with fresh `group_marks`. */
export const GroupRelayMore = s.object({
  type: s.literal("group_relay_more"),
  group: GroupId,
});

/** Where a member can be dialed: its address as the server sees it, and its peer port. */
export const GroupEndpoint = s.object({
  user: Username,
  host: Host,
  port: Port,
  /** When the member said so (its login): a newer one replaces an older one. */
  at: Timestamp,
});
/**
 * Where the members of a group can be dialed, as far as the sender knows (its own address
 * first): members who are not each other's contacts get no address from the directory, so
 * the group tells them. Sent when a link comes up and when the sender learns a newer one.
 */
export const GroupWhere = s.object({
  type: s.literal("group_where"),
  group: GroupId,
  endpoints: s.array(GroupEndpoint).min(1).max(MAX_GROUP_ENDPOINTS),
});

/**
 * The receiver did not join the group a `group_state` of the sender invited it to: only a
 * mutual contact may add someone to a group (a fellow member of another group may not).
 */
export const GroupRefused = s.object({
  type: s.literal("group_refused"),
  group: GroupId,
  code: s.oneOf(["NOT_A_CONTACT"]),
});

// ---- files (peer ↔ peer) -------------------------------------------------------------------
// The sender offers; the receiver accepts (from an offset, to resume) or rejects; the data
// follows as binary frames ([0x00][16-byte file id][8-byte offset][bytes]); the sender ends
// with file_end, which carries the SHA-256 of the whole file (hashed while it was read for
// sending), and the receiver answers file_done once it checked it against its own.

/** 16 random bytes, hex: names one transfer. */
export const FileId = s.string().regex(/^[0-9a-f]{32}$/);
export const Sha256Hex = s.string().regex(/^[0-9a-f]{64}$/);
/** Largest file the protocol can describe (a receiver sets its own, lower limit). */
export const MAX_FILE_SIZE = 2 ** 50;
export const FileOffer = s.object({
  type: s.literal("file_offer"),
  fid: FileId,
  /** The sender's name for the file: hostile until the receiver has cleaned it. */
  name: s.string().min(1).max(1024),
  size: s.number().int().min(0).max(MAX_FILE_SIZE),
  /**
   * Names this version of the file (the sender's fingerprint of its size, modification time,
   * first and last bytes): offered again with the same tag and size, a part kept from an
   * interrupted transfer resumes. The content is checked by the hash in file_end.
   */
  tag: Sha256Hex,
  /** The group the file is shared in, if any. */
  group: GroupId.optional(),
});
export const FileAccept = s.object({
  type: s.literal("file_accept"),
  fid: FileId,
  /** Bytes the receiver already has from an earlier, interrupted transfer of this file. */
  offset: s.number().int().min(0).max(MAX_FILE_SIZE),
});
export const FileReject = s.object({
  type: s.literal("file_reject"),
  fid: FileId,
  reason: s.string().max(300),
});
export const FileEnd = s.object({
  type: s.literal("file_end"),
  fid: FileId,
  /** SHA-256 of the whole file, as the sender read it. */
  sha256: Sha256Hex,
});
export const FileDone = s.object({
  type: s.literal("file_done"),
  fid: FileId,
  ok: s.boolean(),
  reason: s.string().max(300).optional(),
});
export const FileCancel = s.object({
  type: s.literal("file_cancel"),
  fid: FileId,
  reason: s.string().max(300),
});

// ---- relay and hole punching ---------------------------------------------------------------

/** The answer to `relay_open`: join the relay with this token (valid for a few seconds). */
export const RelayToken = s.object({
  type: s.literal("relay_token"),
  id: RequestId,
  token: Token,
});
/**
 * `from` could not reach you directly and asks for a relayed link: join with `token`, at
 * `host`:`port` when given (the instance of a cluster that paired it), else at this server.
 */
export const RelayOffer = s.object({
  type: s.literal("relay_offer"),
  from: Username,
  token: Token,
  host: Host.optional(),
  port: Port.optional(),
});
/**
 * Both legs are in: the last frame the server sends on this connection. Every byte after it
 * comes from the other peer, and every byte we write goes to them.
 */
export const RelayStart = s.object({ type: s.literal("relay_start"), id: RequestId });
/** A relay limit the operator set was hit on the relayed link with `peer`. */
export const RelayNotice = s.object({
  type: s.literal("relay_notice"),
  peer: Username,
  limit: s.oneOf(["rate", "daily", "links"]),
  message: s.string().max(300),
});
/**
 * The answer to `observe`: the address and port this connection comes from as the server
 * sees it, and the server's second port, where the same question tells whether the client's
 * NAT keeps one public port per local port (hole punching works) or not.
 */
export const Observed = s.object({
  type: s.literal("observed"),
  id: RequestId,
  host: Host,
  port: Port,
  probePort: Port.optional(),
});

/**
 * How a NAT maps a local port, judged by comparing the port the server sees on two of its
 * ports: "preserving" (same port as the local one), "independent" (another port, the same
 * towards every host), "symmetric" (a new port per destination: hole punching cannot work).
 */
export const NatKind = s.oneOf(["preserving", "independent", "symmetric"]);
/** Hole punching attempts per link before backing off: at most two rounds. */
export const PunchRound = s.number().int().min(1).max(2);
/**
 * Over a relayed link: my address as the server sees it from the local port I will punch
 * from, my NAT's kind, and a nonce that I will send first on the punched connection.
 */
export const PunchOffer = s.object({
  type: s.literal("punch_offer"),
  round: PunchRound,
  nonce: Nonce,
  host: Host,
  port: Port,
  nat: NatKind,
});
/** The answer to `punch_offer`: the same from the other side, or (no nonce) a refusal. */
export const PunchAnswer = s.object({
  type: s.literal("punch_answer"),
  round: PunchRound,
  nonce: Nonce.optional(),
  host: Host.optional(),
  port: Port.optional(),
  nat: NatKind.optional(),
  reason: s.string().max(200).optional(),
});
/** Dial now: the sender dials half a round trip later, so both open at the same moment. */
export const PunchSync = s.object({ type: s.literal("punch_sync"), round: PunchRound });
/**
 * The last frame the sender writes on the link's current path; every later frame comes over
 * the new one (a punched connection, or back to a relay). Handled by the connection itself.
 */
export const PathSwitch = s.object({ type: s.literal("path_switch") });

// ---- unions by direction -------------------------------------------------------------------

const common = [Hello, ErrorMsg, Noise, Ping, Pong] as const;

export const ClientToServer = s.union("type", [
  ...common,
  Signup,
  Login,
  Resume,
  Logout,
  PasswordChange,
  Lookup,
  ContactsList,
  ContactAdd,
  ContactRemove,
  MailSend,
  Hanging,
  Show,
  MailConfirm,
  ReceiptsAck,
  ReportUnreachable,
  RelayOpen,
  RelayJoin,
  Observe,
]);
export const ServerToClient = s.union("type", [
  ...common,
  Ok,
  Welcome,
  LookupResult,
  ContactListMsg,
  ContactResult,
  ContactUpdate,
  Presence,
  ServerClosing,
  MailStored,
  HangingList,
  MailBatch,
  MailNotice,
  MailSummary,
  Receipts,
  RelayToken,
  RelayOffer,
  RelayStart,
  RelayNotice,
  Observed,
]);
export const PeerToPeer = s.union("type", [
  ...common,
  AuthInit,
  AuthReply,
  AuthFinish,
  AuthOk,
  ChatMsg,
  Ack,
  Busy,
  ChatState,
  Bye,
  GroupStateMsg,
  GroupSum,
  GroupWhere,
  GroupRefused,
  GroupMsg,
  GroupMarks,
  GroupRelay,
  GroupRelayMore,
  FileOffer,
  FileAccept,
  FileReject,
  FileEnd,
  FileDone,
  FileCancel,
  PunchOffer,
  PunchAnswer,
  PunchSync,
  PathSwitch,
]);

export type ClientMessage = s.Infer<typeof ClientToServer>;
export type ServerMessage = s.Infer<typeof ServerToClient>;
export type PeerMessage = s.Infer<typeof PeerToPeer>;
export type HelloMessage = s.Infer<typeof Hello>;
export type ErrorMessage = s.Infer<typeof ErrorMsg>;
export type LookupResultMessage = s.Infer<typeof LookupResult>;
export type WelcomeMessage = s.Infer<typeof Welcome>;
export type ChatMessage = s.Infer<typeof ChatMsg>;

/** The messages one side of a connection accepts: a union by `type`. */
// deno-lint-ignore no-explicit-any
export type MessageSchema = s.UnionSchema<readonly s.ObjectSchema<any>[]>;

const textDecoder = new TextDecoder("utf-8", { fatal: true });
const textEncoder = new TextEncoder();

/**
 * Decodes and validates one frame body against the messages a side accepts.
 * @throws {ProtocolError} with code BAD_MESSAGE (not JSON, wrong shape) or UNKNOWN_TYPE.
 */
export function decodeMessage<S extends MessageSchema>(schema: S, body: Uint8Array): s.Infer<S> {
  let value: unknown;
  try {
    value = JSON.parse(textDecoder.decode(body));
  } catch (cause) {
    throw new ProtocolError("BAD_MESSAGE", "frame is not valid UTF-8 JSON", { cause });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError("BAD_MESSAGE", "message must be a JSON object");
  }
  const type = (value as Record<string, unknown>).type;
  if (typeof type !== "string") {
    throw new ProtocolError("BAD_MESSAGE", "message has no string `type`");
  }
  if (!schema.has(type)) {
    throw new ProtocolError("UNKNOWN_TYPE", `unknown message type "${type.slice(0, 40)}"`);
  }
  const issue = schema.check(value);
  if (issue !== undefined) {
    const where = issue.path.length ? issue.path.join(".") : "message";
    throw new ProtocolError("BAD_MESSAGE", `bad ${type}: ${where}: ${issue.message}`);
  }
  return value as s.Infer<S>;
}

/** The request id of a raw, possibly invalid message, if it has a usable one (for replies). */
export function requestIdOf(body: Uint8Array): number | undefined {
  try {
    const value = JSON.parse(textDecoder.decode(body));
    const id = value?.id;
    return RequestId.safeParse(id).success ? id : undefined;
  } catch {
    return undefined;
  }
}

/** Encodes a message as a frame body (UTF-8 JSON). */
export function encodeMessage(message: { type: string; [field: string]: unknown }): Uint8Array {
  return textEncoder.encode(JSON.stringify(message));
}
