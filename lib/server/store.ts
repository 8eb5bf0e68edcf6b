/**
 * The server's durable state behind one interface: accounts, contacts, the login/logout
 * registry, session tokens, the mailbox and read receipts. Two implementations keep it:
 * `SqliteStore` (one file, the embedded default) and, for several instances sharing one
 * database, a PostgreSQL store. Every method is async because a network database needs it;
 * a method's changes are committed when its promise resolves (a stored mail is durable before
 * the server acknowledges it). Knows nothing of sockets.
 *
 * Adding server state: add it here, to every implementation, and to the shared conformance
 * tests (`tests/server_store_test.ts`), which run against every backend.
 */

export interface MailboxEntry {
  from: string;
  count: number;
  newest: number;
}

export interface PendingMail {
  msgId: string;
  ts: number;
  body: string;
}

/**
 * What became of a message the sender left in a mailbox, waiting to be told to them: read, or
 * (`rejected`) refused by the reader's client, so not delivered.
 */
export interface Receipt {
  msgId: string;
  reader: string;
  /** When it was read; for a rejected one, when the reader's client refused it (server time). */
  readAt: number;
  /**
   * The reader's signature over the receipt; absent for one stored unsigned (and for every
   * rejected one). A receipt of a batch is `<signature>.<path>`: the reader's one signature
   * over the batch's root, and this message's path to that root (lib/crypto/receipt_tree.ts).
   */
  sig?: string;
  /**
   * The reader's client could not open or verify the message (`mail_confirm.rejected`): it was
   * deleted unread. The reader signs nothing for it (see docs/protocol.md, read receipts).
   */
  rejected?: true;
}

/** A read receipt as the reader's client signed it: its own time, its signature. */
export interface SignedRead {
  readAt: number;
  sig: string;
}

export interface UserRecord {
  nameKey: string;
  name: string;
  salt: Uint8Array;
  hash: Uint8Array;
  /** How `hash` was made: `scrypt:<log2 N>:<r>:<p>`. */
  kdf: string;
  publicKey: string;
  mailKey: string;
  mailKeySig: string;
}

/**
 * What `createUser()` takes: the mail key may be missing (accounts made before it existed), and
 * so may `kdf`, which then means {@link LEGACY_KDF}.
 */
export type NewUser =
  & Omit<UserRecord, "nameKey" | "mailKey" | "mailKeySig" | "kdf">
  & Partial<Pick<UserRecord, "mailKey" | "mailKeySig" | "kdf">>;

/** The password hash parameters of accounts made before they were stored. */
export const LEGACY_KDF = "scrypt:15:8:1";

/** A password hash and how it was made. */
export interface PasswordHash {
  salt: Uint8Array;
  hash: Uint8Array;
  kdf: string;
}

export interface RegistryRow {
  user: string;
  host: string;
  port: number;
  loginAt: number;
  logoutAt: number | null;
}

export interface NewMail {
  recipient: string;
  sender: string;
  msgId: string;
  ts: number;
  body: string;
}

/** A session token's row (the token itself is never stored, only its SHA-256). */
export interface SessionRecord {
  /** The user's display name. */
  user: string;
  /** The client's Noise static key (base64url) the token is bound to; null: not yet bound. */
  clientKey: string | null;
  /** When the password login that began this session happened (rotation keeps it). */
  createdAt: number;
  /** When a resume replaced this token by a new one; null while it is the current one. */
  replacedAt: number | null;
}

/** How long session tokens live. */
export interface SessionAges {
  /** A session ends this long after its password login, however often it was resumed. */
  maxAgeMs: number;
  /** A replaced token still works this long (unless its successor was used). */
  graceMs: number;
  now?: number;
}

/**
 * The outcome of `storeMail()`: "full" when the recipient's mailbox is at one of its limits,
 * "quota" when the sender's share of it is.
 */
export type StoreMailResult = "stored" | "duplicate" | "full" | "quota";

/**
 * How much mail may wait for one recipient: from everyone together (`messages`, `bytes`) and
 * from one sender (`senderMessages`, `senderBytes`), so one sender cannot take a mailbox (or
 * the server's disk) for themselves. Bytes are those of the sealed bodies. A bare number is
 * `{ messages }` alone.
 */
export interface MailLimits {
  messages: number;
  bytes?: number;
  senderMessages?: number;
  senderBytes?: number;
}

/** `limits` with every field set (missing ones: no limit). */
export function fullLimits(limits: number | MailLimits): Required<MailLimits> {
  const l = typeof limits === "number" ? { messages: limits } : limits;
  return {
    messages: l.messages,
    bytes: l.bytes ?? Number.MAX_SAFE_INTEGER,
    senderMessages: l.senderMessages ?? Number.MAX_SAFE_INTEGER,
    senderBytes: l.senderBytes ?? Number.MAX_SAFE_INTEGER,
  };
}

/**
 * What answering a `lookup` takes, read in one statement: the target's public record (no
 * password hash), where they are online, both directions of the contact, and whether receipts
 * of their reading wait for the asker.
 */
export interface LookupRecord {
  user: Omit<UserRecord, "salt" | "hash" | "kdf">;
  presence: PresenceRecord | undefined;
  /** The asker has the target in their list. */
  mine: boolean;
  /** The target has the asker in theirs. */
  theirs: boolean;
  /** Read receipts from the target wait for the asker. */
  receipts: boolean;
}

/** Where a user is online: the instance holding their control connection, and their address. */
export interface PresenceRecord {
  /** Display name. */
  user: string;
  host: string;
  peerPort: number;
  loginAt: number;
  /** The name of the server instance the user is connected to. */
  instance: string;
  /** base64url Noise static key of their control connection (a relay leg must match it). */
  staticKey: string;
}

/** A user taking their place in the directory on this instance (a login or a resume). */
export interface Attachment {
  /** Display name. */
  user: string;
  host: string;
  peerPort: number;
  loginAt: number;
  /** The registry row of this login (closed when the attachment ends). */
  registrySeq: number;
  /** Unique per control connection: tells a replaced connection from the one in place. */
  attach: string;
  /** base64url Noise static key of the control connection. */
  staticKey: string;
}

/** A session coming back on a new control connection, by its token (`resume`). */
export interface Resumption {
  /**
   * SHA-256 of the session token presented. It is taken if younger than `maxAgeMs`, replaced
   * (by an earlier resume) less than `graceMs` ago if at all, and not bound to another key than
   * `staticKey`.
   */
  tokenHash: Uint8Array;
  /**
   * SHA-256 of the token that replaces it (same user, same login time, bound to `staticKey`):
   * the presented one is marked replaced (if it was not yet). When it was the current one, every
   * other token of the user — older ones, and successors of an older one that never reached the
   * client — is deleted; when it had been replaced already (a retry within its grace), the
   * others stay: one of its successors may have reached the client over another connection.
   */
  newTokenHash: Uint8Array;
  /** Tokens older than this are refused. */
  maxAgeMs: number;
  /** A replaced token still works this long. */
  graceMs: number;
  host: string;
  peerPort: number;
  /** Unique per control connection (see {@link Attachment}). */
  attach: string;
  /** base64url Noise static key of the control connection. */
  staticKey: string;
}

/** Who came back with a resume, and the login it continues. */
export interface Resumed {
  /** Display name. */
  user: string;
  /** The registry row re-opened (or recorded, when the user had none). */
  registrySeq: number;
  /** When that login began: a re-attach continues it. */
  loginAt: number;
}

/**
 * Something an instance must pass on to a user it holds, whichever instance caused it. User
 * names are name keys.
 */
export type StoreEvent =
  /** Mail from `from` was stored for `to`. */
  | { kind: "mail"; to: string; from: string }
  /** Read receipts (or notices of rejected mail) wait for `to`. */
  | { kind: "receipts"; to: string }
  /**
   * `user` came online or went offline: tell their mutual contacts (`watchers`: all of them,
   * online or not, when the store knows: one attaching elsewhere at that moment is not in the
   * directory yet; each instance tells those it holds. `name`: the display name).
   */
  | { kind: "presence"; user: string; online: boolean; name?: string; watchers?: string[] }
  /**
   * `user` attached elsewhere as `attach`, replacing `replaced`: that connection must end (not
   * a newer one, which a kick passed on late would find in its place). Without `replaced` (an
   * instance of an older build wrote it), any other connection of theirs ends.
   */
  | { kind: "kick"; user: string; attach: string; replaced?: string }
  /** Someone could not reach `user`: the instance holding them checks the connection. */
  | { kind: "check"; user: string; reporter: string }
  /**
   * `from` asks for a relayed link with `to`, paired on the instance at `host`:`port` (the one
   * that issued `token`): `to`'s leg must join there.
   */
  | { kind: "relay_offer"; to: string; from: string; token: string; host: string; port: number }
  /** A relay limit was hit on `to`'s relayed link with `peer` (relayed by another instance). */
  | {
    kind: "relay_notice";
    to: string;
    peer: string;
    limit: "rate" | "daily" | "links";
    message: string;
  }
  /** `from` (a display name) changed where they stand with `to`: see `contact_update`. */
  | { kind: "contact"; to: string; from: string; state: ContactChange };

/** What `contact_update` tells a user about someone else's step. */
export type ContactChange = "request" | "accepted" | "declined" | "removed";

/** What the server gives the store to run with. */
export interface StoreRunOptions {
  /** This instance's name for people (`list` shows it): its listening address. */
  name: string;
  /** Called for every event, after the change that caused it was committed. */
  onEvent: (event: StoreEvent) => void;
  /**
   * Called when this instance lost its place in a shared store (its lease ran out while it
   * could not reach the database): the users it holds are shown offline elsewhere and must
   * re-attach.
   */
  onLeaseLost: () => void;
  log: (line: string) => void;
}

/** Error codes of a database that cannot be reached right now (network, restart, timeout). */
const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECTION_ENDED",
  "57P01", // admin_shutdown: the database is stopping
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now: starting up
  "08000",
  "08003",
  "08006", // connection exceptions
]);

/**
 * True when `error` says the store's database cannot be reached right now (a network database
 * restarting, say): the request may be tried again shortly, and nothing was committed.
 */
export function isStoreUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && UNAVAILABLE_CODES.has(code);
}

/** Lower-cases a username for lookups; names are unique case-insensitively. */
export function nameKey(name: string): string {
  return name.toLowerCase();
}

/** The server's state. Names are matched case-insensitively; results carry display names. */
export interface ServerStore extends AsyncDisposable {
  /** Where the data lives, for people: a file path, or a database URL without its password. */
  readonly location: string;

  /** The schema version in force (number of migrations applied). */
  schemaVersion(): Promise<number>;

  // ---- users ---------------------------------------------------------------------------------

  /** Creates an account; resolves false when the name is taken (case-insensitively). */
  createUser(user: NewUser, now?: number): Promise<boolean>;
  getUser(name: string): Promise<UserRecord | undefined>;
  userCount(): Promise<number>;
  /** Replaces a user's password hash (a rehash with stronger parameters); false if unknown. */
  updatePassword(name: string, password: PasswordHash): Promise<boolean>;

  // ---- contacts ------------------------------------------------------------------------------

  /** Adds `contact` to `owner`'s list; false if it was already there. Both must exist. */
  addContact(owner: string, contact: string, now?: number): Promise<boolean>;
  removeContact(owner: string, contact: string): Promise<boolean>;
  countContacts(owner: string): Promise<number>;
  /** The display names of `owner`'s contacts, in the order they were added (then by name). */
  listContacts(owner: string): Promise<string[]>;
  /**
   * Name keys of `contact`'s mutual contacts: those who have `contact` in their list and are in
   * `contact`'s (to tell them of presence; nobody else may learn it).
   */
  listWatchers(contact: string): Promise<string[]>;
  /**
   * Contact requests made to `user` and not answered: the display names of those who have
   * `user` in their list while `user` does not have them, oldest first, at most `limit`.
   */
  listContactRequests(user: string, limit: number): Promise<string[]>;
  /** Whether `a` and `b` each have the other in their list. */
  isMutual(a: string, b: string): Promise<boolean>;
  isContact(owner: string, contact: string): Promise<boolean>;
  /**
   * Everything a `lookup` of `target` by `asker` answers from, in one statement (one round trip
   * to a network database, where the separate calls took two); undefined for an unknown target.
   */
  lookup(asker: string, target: string): Promise<LookupRecord | undefined>;

  // ---- registry ------------------------------------------------------------------------------

  /** Records a login; resolves to the registry row's number (increasing). */
  recordLogin(user: string, host: string, port: number, at?: number): Promise<number>;
  /** Records the end of a login session. */
  recordLogout(seq: number, at?: number): Promise<void>;
  /** Re-opens a session row (a dropped control connection re-attached). */
  reopenLogin(seq: number, host: string, port: number): Promise<void>;
  /**
   * Sets the logout time of `user`'s latest finished session to the time its client saved
   * while the server was unreachable (the client knows the true time; the server only guessed
   * it when the connection dropped). A time before that session's login is ignored.
   */
  correctLastLogout(user: string, at: number): Promise<void>;
  /**
   * The latest registry row of each user, newest login first; or, for one user, that user's
   * last `limit` rows, newest first.
   */
  registry(user?: string, limit?: number): Promise<RegistryRow[]>;
  /** Closes registry rows left open by a previous run that ended without recording them. */
  closeDanglingLogins(at?: number): Promise<number>;

  // ---- mail ----------------------------------------------------------------------------------

  /**
   * Stores a pending message, committed before the promise resolves. A message this sender sent
   * this recipient before is not stored again ("duplicate"): neither while it waits, nor once it
   * was read (for as long as {@link forgetReadMail} keeps its id), so a resend after a crash is
   * never shown twice. A message id is its sender's: the same id from two senders is two
   * messages. A mailbox at one of `limits` is "full"; a sender at their share is "quota"
   * (checked in that order). A stored message is a `mail` event.
   */
  storeMail(mail: NewMail, limits: number | MailLimits, now?: number): Promise<StoreMailResult>;
  /** How many messages wait for `recipient` (from `sender` only, when given). */
  countMail(recipient: string, sender?: string): Promise<number>;
  /** Who has pending messages for `recipient`: count and newest send time, oldest first. */
  mailbox(recipient: string): Promise<MailboxEntry[]>;
  /**
   * Pending messages from `sender` to `recipient` in the order they were stored; with `after`,
   * only those stored after that pending message (none when it is no longer pending).
   */
  pendingMail(
    recipient: string,
    sender: string,
    limit: number,
    after?: string,
  ): Promise<PendingMail[]>;
  /**
   * Deletes delivered mail and records a read receipt for each, in one transaction; for each of
   * the `rejected` ones (the reader's client refused it) a notice that it was not delivered
   * instead (a {@link Receipt} with `rejected`, at `now`, unsigned). The ids are remembered as
   * read, so a resend is not stored again. Ids that are not pending (already confirmed) are
   * ignored. A receipt the reader signed (`signed`) keeps the reader's time and signature; one
   * without is stored at `now`, unsigned. Resolves to the ids deleted; when any were, the
   * sender gets a `receipts` event.
   */
  confirmMail(
    recipient: string,
    sender: string,
    msgIds: string[],
    now?: number,
    rejected?: ReadonlySet<string>,
    signed?: ReadonlyMap<string, SignedRead>,
  ): Promise<string[]>;
  /**
   * Forgets the ids of mail read before `before` (ms since the epoch): a resend of one of those
   * would be stored again. Resolves to how many were forgotten.
   */
  forgetReadMail(before: number): Promise<number>;
  /**
   * Read receipts and notices of rejected mail waiting for `sender` (from `reader` only, when
   * given), oldest first.
   */
  pendingReceipts(sender: string, limit: number, reader?: string): Promise<Receipt[]>;
  deleteReceipts(sender: string, msgIds: string[]): Promise<void>;

  // ---- sessions ------------------------------------------------------------------------------

  /**
   * Saves a session token's hash, bound to `clientKey` when given; a duplicate hash or an
   * unknown user is refused.
   */
  saveSession(
    tokenHash: Uint8Array,
    user: string,
    options?: { clientKey?: string; now?: number },
  ): Promise<void>;
  /**
   * The session of a token, if it is younger than `maxAgeMs` and, when replaced, was replaced
   * less than `graceMs` ago.
   */
  findSession(tokenHash: Uint8Array, ages: SessionAges): Promise<SessionRecord | undefined>;
  deleteSession(tokenHash: Uint8Array): Promise<void>;
  /** Deletes every session token of `user` (but `except`); resolves to how many. */
  deleteUserSessions(user: string, except?: Uint8Array): Promise<number>;
  /** Deletes the tokens {@link findSession} would refuse for their age; resolves to how many. */
  purgeSessions(ages: SessionAges): Promise<number>;

  // ---- relay usage --------------------------------------------------------------------------

  /**
   * Adds `bytes` to what the pair of users `pair` relayed on `day` (days since the epoch, UTC)
   * and resolves to the new total, as every instance counted it; `bytes` 0 only reads it.
   */
  addRelayBytes(pair: string, day: number, bytes: number): Promise<number>;
  /** Forgets the relay usage of the days before `day`; resolves to how many rows went. */
  forgetRelayUsage(day: number): Promise<number>;

  // ---- presence and events (the cluster) -----------------------------------------------------

  /** True when several instances may share this store (then `list` names the instance). */
  readonly shared: boolean;

  /**
   * Starts this instance's duties: in a shared store, its lease (renewed while it runs; users
   * of an instance whose lease ran out are shown offline) and event delivery; rows of the
   * registry left open by instances that died are closed. Call once, after listening.
   */
  run(options: StoreRunOptions): Promise<void>;
  /**
   * Puts a user in the directory as connected to this instance. One place per user: an
   * earlier attachment (on any instance) is replaced and gets a `kick` event; its registry row
   * is closed if it is another. The attachment's registry row is (re-)opened with its address.
   * A user who was offline is announced (`presence`).
   */
  attach(attachment: Attachment): Promise<void>;
  /**
   * A resume in one step (one round trip to a network database, however many clients come
   * back at once): checks the token (unknown, too old, past its grace or bound to another
   * key: undefined, nothing changed), replaces it by a new one, re-opens the user's latest
   * registry row with the new address (records one when there is none), and
   * attaches the user as {@link attach} does. Resolves once committed.
   */
  resume(r: Resumption, now?: number): Promise<Resumed | undefined>;
  /**
   * {@link resume} for several at once, in one transaction (a group commit: one round trip and
   * one commit for whatever resumes arrived meanwhile). One answer per resumption, in order.
   * Fails as a whole (nothing changed) when the transaction does.
   */
  resumeMany(rs: readonly Resumption[], now?: number): Promise<(Resumed | undefined)[]>;
  /**
   * Takes a user out of the directory if `attach` is still their attachment (not replaced),
   * closes its registry row at `at` and announces them offline. Resolves false when it had been
   * replaced (nothing changed).
   */
  detach(user: string, attach: string, at?: number): Promise<boolean>;
  /**
   * {@link detach} for many at once, in one transaction: a server shutting down takes all its
   * users out in one commit rather than one each, and connections that end at the same time
   * (a herd of clients giving up) share one. One answer per place, in order: whether it was
   * taken out.
   */
  detachMany(places: readonly { user: string; attach: string }[], at?: number): Promise<boolean[]>;
  /** Where `user` is online, if they are (on a live instance). */
  presenceOf(user: string): Promise<PresenceRecord | undefined>;
  /** Everyone online, on every instance, newest login first. */
  onlineUsers(): Promise<PresenceRecord[]>;
  /** The name keys among `users` that are online. */
  onlineAmong(users: readonly string[]): Promise<Set<string>>;
  /** Sends an event to every instance (itself included). */
  publish(event: StoreEvent): Promise<void>;

  /** Closes the store; idempotent. Calls after it fail. */
  close(): Promise<void>;
}
