/**
 * Every message of the Confab wire protocol, as strict schemas. A frame body is a JSON object
 * with a `type`; requests carry an integer `id` that the reply echoes. Nothing else in the code
 * sees a message before it has passed {@link decodeMessage}: types, lengths, allowed characters
 * and the absence of extra fields are all checked here.
 *
 * Keep docs/protocol.md in step with this file.
 */
import { z } from "zod";
import { ERROR_CODES, ProtocolError } from "./errors.ts";

/**
 * Protocol version spoken by this build; `hello` carries it and both sides compare. Version 4:
 * Noise with ChaChaPoly instead of AESGCM (version 3). Version 5: resumption tickets (`welcome`
 * carries one, a client coming back offers it in its first `noise` message: NNpsk0). Version 6:
 * offline mail sealed in bursts (one key agreement and one signature for many messages), which
 * a version 5 reader cannot open, and read receipts signed once per batch.
 */
export const PROTOCOL_VERSION = 6;

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
/** Sealed text carried in one `mail_batch` at most, so the frame stays under 1 MiB. */
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
  z.string().length(len).regex(/^[A-Za-z0-9_-]+$/, "must be base64url");

export const Username = z.string().regex(
  USERNAME_PATTERN,
  "1-32 characters: letters, digits, _ - . (not only dots)",
);
export const Password = z.string().min(MIN_PASSWORD_LENGTH).max(MAX_PASSWORD_LENGTH)
  // deno-lint-ignore no-control-regex
  .regex(/^[^\u0000-\u001f\u007f]*$/, "no control characters");
/** An Ed25519 public key (32 bytes), base64url without padding. */
export const PublicKey = b64url(43);
/** An Ed25519 signature (64 bytes), base64url without padding. */
export const Signature = b64url(86);
/** 32 random bytes, base64url: session tokens and handshake nonces. */
export const Token = b64url(43);
export const Nonce = b64url(43);
export const RequestId = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** A message id, made by the sender (a UUID in practice). */
export const MessageId = z.string().min(1).max(64).regex(/^[A-Za-z0-9_-]+$/);
export const Port = z.number().int().min(1).max(65535);
/** Milliseconds since the Unix epoch; bounded to years 2000–2200 to keep garbage out. */
export const Timestamp = z.number().int().min(946_684_800_000).max(7_258_118_400_000);
export const Host = z.string().min(1).max(255).regex(/^[A-Za-z0-9.:%-]+$/);
export const Text = z.string().min(1).max(MAX_TEXT_LENGTH);
export const ErrorCodeSchema = z.enum(ERROR_CODES);
export const Role = z.enum(["client", "server", "peer"]);

// ---- messages on every connection ----------------------------------------------------------

export const Hello = z.strictObject({
  type: z.literal("hello"),
  version: z.number().int().min(0).max(65535),
  role: Role,
  software: z.string().max(64),
});
export const ErrorMsg = z.strictObject({
  type: z.literal("error"),
  id: RequestId.optional(),
  /**
   * A stable code. Any well-formed code is accepted (not only today's list), so a newer peer's
   * new code still reaches the request that waits for it instead of failing validation.
   */
  code: z.string().regex(/^[A-Z][A-Z0-9_]{0,39}$/, "an UPPER_SNAKE code"),
  message: z.string().max(500),
});
/** A resumption ticket as the server sealed it, base64url (see lib/server/tickets.ts). */
export const Ticket = z.string().min(1).max(512).regex(/^[A-Za-z0-9_-]+$/, "must be base64url");
/**
 * One Noise handshake message (XX, or NNpsk0 when the first one offers a resumption `ticket`),
 * base64url; sent right after `hello` on every connection.
 */
export const Noise = z.strictObject({
  type: z.literal("noise"),
  data: z.string().min(1).max(1024).regex(/^[A-Za-z0-9_-]+$/, "must be base64url"),
  ticket: Ticket.optional(),
});
export const Ping = z.strictObject({ type: z.literal("ping"), id: RequestId });
export const Pong = z.strictObject({ type: z.literal("pong"), id: RequestId });

// ---- client → server -----------------------------------------------------------------------

export const Signup = z.strictObject({
  type: z.literal("signup"),
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
export const Login = z.strictObject({
  type: z.literal("login"),
  id: RequestId,
  user: Username,
  password: Password,
  peerPort: Port,
  /** When the previous session ended while the server was unreachable, its logout time. */
  lastLogout: Timestamp.optional(),
});
export const Resume = z.strictObject({
  type: z.literal("resume"),
  id: RequestId,
  token: Token,
  peerPort: Port,
});
export const Logout = z.strictObject({ type: z.literal("logout"), id: RequestId });
export const Lookup = z.strictObject({ type: z.literal("lookup"), id: RequestId, user: Username });
export const ContactsList = z.strictObject({ type: z.literal("contacts"), id: RequestId });
export const ContactAdd = z.strictObject({
  type: z.literal("contact_add"),
  id: RequestId,
  user: Username,
});
export const ContactRemove = z.strictObject({
  type: z.literal("contact_remove"),
  id: RequestId,
  user: Username,
});

/** A message sealed end to end (sealed_mail.ts), base64url: the server cannot read it. */
export const Sealed = z.string().min(64).max(MAX_SEALED_LENGTH).regex(
  /^[A-Za-z0-9_-]+$/,
  "must be base64url",
);
/** Hands a message for an offline (or busy, or unreachable) user to the server's mailbox. */
export const MailSend = z.strictObject({
  type: z.literal("mail_send"),
  id: RequestId,
  to: Username,
  msgId: MessageId,
  ts: Timestamp,
  sealed: Sealed,
});
/** Who has pending messages for me: `hanging`. */
export const Hanging = z.strictObject({ type: z.literal("hanging"), id: RequestId });
/** Hand me the pending messages from one user: `show <user>`. */
export const Show = z.strictObject({ type: z.literal("show"), id: RequestId, from: Username });
/** My client stored these messages: delete them and tell the sender they were read. */
export const MailConfirm = z.strictObject({
  type: z.literal("mail_confirm"),
  id: RequestId,
  from: Username,
  msgIds: z.array(MessageId).min(1).max(MAX_MAIL_BATCH),
  /** Of those, the ones my client refused (not decryptable, wrongly signed): no receipt. */
  rejected: z.array(MessageId).max(MAX_MAIL_BATCH).optional(),
  /**
   * A read receipt for each message read, signed by my identity key over
   * `receiptStatement` (lib/crypto/ed25519.ts): the sender's client believes a receipt only with its signature.
   */
  receipts: z.array(z.strictObject({ msgId: MessageId, readAt: Timestamp, sig: Signature }))
    .max(MAX_MAIL_BATCH).optional(),
  /**
   * One read receipt for all the messages read (`msgIds` without `rejected`, in that order),
   * signed by my identity key over `batchReceiptStatement` (lib/crypto/receipt_tree.ts): the
   * root of their hash tree. The server gives each message's receipt its path to that root.
   */
  receipt: z.strictObject({ readAt: Timestamp, sig: Signature }).optional(),
});
/** I have recorded these read receipts: the server may forget them. */
export const ReceiptsAck = z.strictObject({
  type: z.literal("receipts_ack"),
  id: RequestId,
  msgIds: z.array(MessageId).min(1).max(MAX_MAIL_BATCH),
});
/** A direct link to `user` could not be opened although the directory says they are online. */
export const ReportUnreachable = z.strictObject({
  type: z.literal("report_unreachable"),
  id: RequestId,
  user: Username,
});

/**
 * Asks the server to relay a link to `user` (a direct dial failed). Only between mutual
 * contacts, both online; answered with `relay_token`, and `user` gets a `relay_offer`.
 */
export const RelayOpen = z.strictObject({
  type: z.literal("relay_open"),
  id: RequestId,
  user: Username,
});
/**
 * Turns this connection into one leg of a relayed link: sent instead of a login on a fresh
 * connection whose Noise static key is that of the control connection the token went to.
 * Answered with `relay_start` once both legs are in; after that the server copies bytes.
 */
export const RelayJoin = z.strictObject({
  type: z.literal("relay_join"),
  id: RequestId,
  token: Token,
});
/** The address the server sees this connection come from (for hole punching). */
export const Observe = z.strictObject({ type: z.literal("observe"), id: RequestId });

// ---- server → client -----------------------------------------------------------------------

export const Ok = z.strictObject({ type: z.literal("ok"), id: RequestId });
export const Welcome = z.strictObject({
  type: z.literal("welcome"),
  id: RequestId,
  user: Username,
  token: Token,
  /** The address the server sees this client connect from. */
  host: Host,
  /** True when the login re-attached a session (resume) rather than starting one. */
  resumed: z.boolean(),
  /**
   * What to come back with next time: a ticket and its pre-shared key (32 bytes), for a
   * resumption handshake (NNpsk0) instead of a full one. Kept in memory only.
   */
  resumption: z.strictObject({ ticket: Ticket, psk: Nonce }).optional(),
});
export const LookupResult = z.strictObject({
  type: z.literal("lookup_result"),
  id: RequestId,
  user: Username,
  online: z.boolean(),
  host: Host.optional(),
  port: Port.optional(),
  publicKey: PublicKey,
  /** Absent for an account made before mail keys existed: no mail can be sealed to it. */
  mailKey: PublicKey.optional(),
  mailKeySig: Signature.optional(),
  /** Whether we are mutual contacts: only then does the address come along. */
  contact: z.boolean(),
});
export const ContactEntry = z.strictObject({ user: Username, online: z.boolean() });
export const ContactListMsg = z.strictObject({
  type: z.literal("contact_list"),
  id: RequestId,
  /** Mutual contacts (each has added the other), with who is online. */
  contacts: z.array(ContactEntry).max(MAX_CONTACTS),
  /** Requests I made that are not answered yet. */
  requested: z.array(Username).max(MAX_CONTACTS),
  /** Requests made to me, not answered yet (oldest first, at most {@link MAX_CONTACTS}). */
  requests: z.array(Username).max(MAX_CONTACTS),
});
/**
 * The answer to `contact_add` and `contact_remove`: where I stand with `user` now.
 * - `requested`: a request was sent (or was already waiting); `user` sees it.
 * - `mutual`: we are contacts (I accepted their request, or we already were).
 * - `removed`: we were contacts and are not any more, both ways.
 * - `declined`: I turned down their request.
 * - `withdrawn`: I took back a request they had not answered.
 */
export const ContactResult = z.strictObject({
  type: z.literal("contact_result"),
  id: RequestId,
  user: Username,
  state: z.enum(["requested", "mutual", "removed", "declined", "withdrawn"]),
});
/**
 * Pushed: someone changed where they stand with me. `request`: `user` asks to be my contact
 * (pushed at once, and again at each login while unanswered); `accepted`: my request was
 * accepted; `declined`: my request was turned down; `removed`: we are no longer contacts.
 */
export const ContactUpdate = z.strictObject({
  type: z.literal("contact_update"),
  user: Username,
  state: z.enum(["request", "accepted", "declined", "removed"]),
});
export const Presence = z.strictObject({
  type: z.literal("presence"),
  user: Username,
  online: z.boolean(),
});
export const MailStored = z.strictObject({
  type: z.literal("mail_stored"),
  id: RequestId,
  msgId: MessageId,
});
const MailboxEntry = z.strictObject({
  from: Username,
  count: z.number().int().min(1),
  /** Send time of the newest pending message from this user. */
  newest: Timestamp,
});
export const HangingList = z.strictObject({
  type: z.literal("hanging_list"),
  id: RequestId,
  entries: z.array(MailboxEntry).max(MAX_MAILBOX_ENTRIES),
});
export const PendingMessage = z.strictObject({ msgId: MessageId, ts: Timestamp, sealed: Sealed });
export const MailBatch = z.strictObject({
  type: z.literal("mail_batch"),
  id: RequestId,
  from: Username,
  messages: z.array(PendingMessage).max(MAX_MAIL_BATCH),
  /** More pending messages from this user wait after these. */
  more: z.boolean(),
});
/** Pushed: new mail was stored for you while you are online (busy in another chat, say). */
export const MailNotice = z.strictObject({
  type: z.literal("mail_notice"),
  from: Username,
  count: z.number().int().min(1),
});
/** Pushed after login: who has pending messages for you. */
export const MailSummary = z.strictObject({
  type: z.literal("mail_summary"),
  entries: z.array(MailboxEntry).max(MAX_MAILBOX_ENTRIES),
});
/** Pushed: your messages were read (shown) by `reader`. */
export const Receipts = z.strictObject({
  type: z.literal("receipts"),
  items: z.array(
    z.strictObject({
      msgId: MessageId,
      reader: Username,
      readAt: Timestamp,
      /**
       * The reader's signature: over `receiptStatement` alone, or with `proof` over the
       * `batchReceiptStatement` of a batch; absent: only the server's word.
       */
      sig: Signature.optional(),
      /** The message's path to the root the reader signed (lib/crypto/receipt_tree.ts). */
      proof: z.string().max(MAX_RECEIPT_PROOF_LENGTH).regex(/^[A-Za-z0-9_-]*$/, "must be base64url")
        .optional(),
    }),
  ).min(1).max(MAX_MAIL_BATCH),
});
export const ServerClosing = z.strictObject({
  type: z.literal("server_closing"),
  reason: z.string().max(200),
});

// ---- peer ↔ peer ---------------------------------------------------------------------------
// After `hello`, the dialer sends auth_init; the listener answers auth_reply (its signature
// over both nonces and both names); the dialer sends auth_finish (its own signature); the
// listener confirms with auth_ok. Only then do chat frames flow.

export const AuthInit = z.strictObject({
  type: z.literal("auth_init"),
  from: Username,
  to: Username,
  nonce: Nonce,
});
export const AuthReply = z.strictObject({
  type: z.literal("auth_reply"),
  from: Username,
  nonce: Nonce,
  signature: Signature,
});
export const AuthFinish = z.strictObject({ type: z.literal("auth_finish"), signature: Signature });
export const AuthOk = z.strictObject({ type: z.literal("auth_ok") });
export const ChatMsg = z.strictObject({
  type: z.literal("msg"),
  id: MessageId,
  /** The sender's message counter (increasing in the order it sent them). */
  seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  ts: Timestamp,
  text: Text,
});
export const Ack = z.strictObject({ type: z.literal("ack"), id: MessageId });
/**
 * The receiver did not take the message because its user is busy in another chat: the sender
 * hands it to the server's mailbox instead, and the receiver is told there is mail.
 */
export const Busy = z.strictObject({ type: z.literal("busy"), id: MessageId });
/** The sender opened (`open: true`) or left the chat window with the receiver. */
export const ChatState = z.strictObject({ type: z.literal("chat_state"), open: z.boolean() });
export const Bye = z.strictObject({ type: z.literal("bye") });

// ---- groups (peer ↔ peer) ------------------------------------------------------------------

export const GroupId = z.string().uuid();
const Tag = z.string().uuid();
/** A group's replicated membership (see lib/peer/group_state.ts). */
export const GroupStateSchema = z.strictObject({
  id: GroupId,
  adds: z.array(z.strictObject({ user: Username, tag: Tag, at: Timestamp.optional() })).max(1024),
  removed: z.array(Tag).max(1024),
});
/**
 * "Here is the group as I know it": on every change, on a checksum mismatch, when a link comes
 * up, to invite, and to answer a member who talks about a group I left (my tombstones say so).
 */
export const GroupStateMsg = z.strictObject({
  type: z.literal("group_state"),
  group: GroupStateSchema,
});
/** Sent now and then on each link: the checksum of each group both ends are in. */
export const GroupSum = z.strictObject({
  type: z.literal("group_sum"),
  group: GroupId,
  sum: z.string().regex(/^[0-9a-f]{16}$/),
});
/**
 * A message to a group, sent by its author to each member directly; answered with `ack` once
 * stored, or with `busy` (followed by the receiver's `group_state`) when the receiver does not
 * count the author as a member (yet) or left: the author keeps the copy and tries again.
 */
export const GroupMsg = z.strictObject({
  type: z.literal("group_msg"),
  group: GroupId,
  id: MessageId,
  /** The author's counter in this group: receivers show each author's messages in order. */
  seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
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
/** Seqs as members count them. */
const GroupSeq = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/**
 * "This is how far I have each author's messages in this group" (the next seq I expect from
 * each; an author I have nothing of is left out). Sent on every link that comes up, for each
 * group both ends are in, and every ten seconds; the other side answers with `group_relay`
 * copies of what it holds and I lack.
 */
export const GroupMarks = z.strictObject({
  type: z.literal("group_marks"),
  group: GroupId,
  marks: z.array(z.strictObject({ author: Username, next: GroupSeq })).max(64),
});
/**
 * Another member's message, passed on to a member who lacks it, signed by its author (checked
 * by the receiver against the author's pinned key; the member passing it on is not trusted for
 * content or authorship). Not acknowledged: the author learns who has it from the members.
 */
export const GroupRelay = z.strictObject({
  type: z.literal("group_relay"),
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
export const GroupRelayMore = z.strictObject({
  type: z.literal("group_relay_more"),
  group: GroupId,
});

/** Where a member can be dialed: its address as the server sees it, and its peer port. */
export const GroupEndpoint = z.strictObject({
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
export const GroupWhere = z.strictObject({
  type: z.literal("group_where"),
  group: GroupId,
  endpoints: z.array(GroupEndpoint).min(1).max(32),
});

/**
 * The receiver did not join the group a `group_state` of the sender invited it to: only a
 * mutual contact may add someone to a group (a fellow member of another group may not).
 */
export const GroupRefused = z.strictObject({
  type: z.literal("group_refused"),
  group: GroupId,
  code: z.enum(["NOT_A_CONTACT"]),
});

// ---- files (peer ↔ peer) -------------------------------------------------------------------
// The sender offers; the receiver accepts (from an offset, to resume) or rejects; the data
// follows as binary frames ([0x00][16-byte file id][8-byte offset][bytes]); the sender ends
// with file_end and the receiver answers file_done once it checked the SHA-256.

/** 16 random bytes, hex: names one transfer. */
export const FileId = z.string().regex(/^[0-9a-f]{32}$/);
export const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
/** Largest file the protocol can describe (a receiver sets its own, lower limit). */
export const MAX_FILE_SIZE = 2 ** 50;
export const FileOffer = z.strictObject({
  type: z.literal("file_offer"),
  fid: FileId,
  /** The sender's name for the file: hostile until the receiver has cleaned it. */
  name: z.string().min(1).max(1024),
  size: z.number().int().min(0).max(MAX_FILE_SIZE),
  sha256: Sha256Hex,
  /** The group the file is shared in, if any. */
  group: GroupId.optional(),
});
export const FileAccept = z.strictObject({
  type: z.literal("file_accept"),
  fid: FileId,
  /** Bytes the receiver already has from an earlier, interrupted transfer of this file. */
  offset: z.number().int().min(0).max(MAX_FILE_SIZE),
});
export const FileReject = z.strictObject({
  type: z.literal("file_reject"),
  fid: FileId,
  reason: z.string().max(300),
});
export const FileEnd = z.strictObject({ type: z.literal("file_end"), fid: FileId });
export const FileDone = z.strictObject({
  type: z.literal("file_done"),
  fid: FileId,
  ok: z.boolean(),
  reason: z.string().max(300).optional(),
});
export const FileCancel = z.strictObject({
  type: z.literal("file_cancel"),
  fid: FileId,
  reason: z.string().max(300),
});

// ---- relay and hole punching ---------------------------------------------------------------

/** The answer to `relay_open`: join the relay with this token (valid for a few seconds). */
export const RelayToken = z.strictObject({
  type: z.literal("relay_token"),
  id: RequestId,
  token: Token,
});
/**
 * `from` could not reach you directly and asks for a relayed link: join with `token`, at
 * `host`:`port` when given (the instance of a cluster that paired it), else at this server.
 */
export const RelayOffer = z.strictObject({
  type: z.literal("relay_offer"),
  from: Username,
  token: Token,
  host: Host.optional(),
  port: Port.optional(),
});
/**
 * Both legs are in: the last frame the server sends on this connection. Every byte after it
 * comes from the other peer, and every byte we write goes to them.
 */
export const RelayStart = z.strictObject({ type: z.literal("relay_start"), id: RequestId });
/** A relay limit the operator set was hit on the relayed link with `peer`. */
export const RelayNotice = z.strictObject({
  type: z.literal("relay_notice"),
  peer: Username,
  limit: z.enum(["rate", "daily", "links"]),
  message: z.string().max(300),
});
/**
 * The answer to `observe`: the address and port this connection comes from as the server
 * sees it, and the server's second port, where the same question tells whether the client's
 * NAT keeps one public port per local port (hole punching works) or not.
 */
export const Observed = z.strictObject({
  type: z.literal("observed"),
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
export const NatKind = z.enum(["preserving", "independent", "symmetric"]);
/** Hole punching attempts per link before backing off: at most two rounds. */
export const PunchRound = z.number().int().min(1).max(2);
/**
 * Over a relayed link: my address as the server sees it from the local port I will punch
 * from, my NAT's kind, and a nonce that I will send first on the punched connection.
 */
export const PunchOffer = z.strictObject({
  type: z.literal("punch_offer"),
  round: PunchRound,
  nonce: Nonce,
  host: Host,
  port: Port,
  nat: NatKind,
});
/** The answer to `punch_offer`: the same from the other side, or (no nonce) a refusal. */
export const PunchAnswer = z.strictObject({
  type: z.literal("punch_answer"),
  round: PunchRound,
  nonce: Nonce.optional(),
  host: Host.optional(),
  port: Port.optional(),
  nat: NatKind.optional(),
  reason: z.string().max(200).optional(),
});
/** Dial now: the sender dials half a round trip later, so both open at the same moment. */
export const PunchSync = z.strictObject({ type: z.literal("punch_sync"), round: PunchRound });
/**
 * The last frame the sender writes on the link's current path; every later frame comes over
 * the new one (a punched connection, or back to a relay). Handled by the connection itself.
 */
export const PathSwitch = z.strictObject({ type: z.literal("path_switch") });

// ---- unions by direction -------------------------------------------------------------------

const common = [Hello, ErrorMsg, Noise, Ping, Pong] as const;

export const ClientToServer = z.discriminatedUnion("type", [
  ...common,
  Signup,
  Login,
  Resume,
  Logout,
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
export const ServerToClient = z.discriminatedUnion("type", [
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
export const PeerToPeer = z.discriminatedUnion("type", [
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

export type ClientMessage = z.infer<typeof ClientToServer>;
export type ServerMessage = z.infer<typeof ServerToClient>;
export type PeerMessage = z.infer<typeof PeerToPeer>;
export type HelloMessage = z.infer<typeof Hello>;
export type ErrorMessage = z.infer<typeof ErrorMsg>;
export type LookupResultMessage = z.infer<typeof LookupResult>;
export type WelcomeMessage = z.infer<typeof Welcome>;
export type ChatMessage = z.infer<typeof ChatMsg>;

/** A set of messages one side of a connection accepts. */
export type MessageSchema<T> = {
  safeParse(data: unknown): { success: true; data: T } | { success: false; error: z.ZodError };
};

const typeSets = new WeakMap<object, Set<string>>();
function knownTypes(schema: z.ZodDiscriminatedUnion): Set<string> {
  let set = typeSets.get(schema);
  if (!set) {
    set = new Set<string>();
    for (const option of schema.options) {
      const shape = (option as z.ZodObject).shape as { type: z.ZodLiteral<string> };
      set.add(shape.type.value);
    }
    typeSets.set(schema, set);
  }
  return set;
}

const textDecoder = new TextDecoder("utf-8", { fatal: true });
const textEncoder = new TextEncoder();

/**
 * Decodes and validates one frame body against the messages a side accepts.
 * @throws {ProtocolError} with code BAD_MESSAGE (not JSON, wrong shape) or UNKNOWN_TYPE.
 */
export function decodeMessage<S extends z.ZodDiscriminatedUnion>(
  schema: S,
  body: Uint8Array,
): z.infer<S> {
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
  if (!knownTypes(schema).has(type)) {
    throw new ProtocolError("UNKNOWN_TYPE", `unknown message type "${type.slice(0, 40)}"`);
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.length ? issue.path.join(".") : "message";
    throw new ProtocolError("BAD_MESSAGE", `bad ${type}: ${where}: ${issue?.message ?? "invalid"}`);
  }
  return result.data;
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
