/**
 * The server's state in PostgreSQL (`--store postgres://…`), for several server instances
 * sharing one database. Same schema steps and semantics as the SQLite store: every method's
 * changes are committed when its promise resolves. The driver is postgres.js (`npm:postgres`):
 * see docs/architecture.md for why.
 */
import postgres from "postgres";
import { Buffer } from "node:buffer";
import { MIGRATIONS } from "./migrations.ts";
import {
  type LookupSqlRow,
  type MailSqlRow,
  type ReceiptSqlRow,
  type RegistrySqlRow,
  SESSION_COLUMNS,
  type SessionSqlRow,
  toLookup,
  toPendingMail,
  toReceipt,
  toRegistryRow,
  toSession,
  toUser,
  USER_COLUMNS,
  type UserRow,
} from "./sql_rows.ts";
import {
  type Attachment,
  fullLimits,
  isStoreUnavailable,
  LEGACY_KDF,
  type LookupRecord,
  type MailboxEntry,
  type MailLimits,
  nameKey,
  type NewMail,
  type NewUser,
  type PasswordHash,
  type PendingMail,
  type PresenceRecord,
  type Receipt,
  type RegistryRow,
  type Resumed,
  type Resumption,
  type ServerStore,
  type SessionAges,
  type SessionRecord,
  type SignedRead,
  type StoreEvent,
  type StoreMailResult,
  type StoreRunOptions,
  type UserRecord,
} from "./store.ts";

/** BIGINT columns (times in ms, row numbers, counts) read as numbers: all stay below 2^53. */
const BIGINT_AS_NUMBER = {
  to: 20,
  from: [20],
  serialize: (value: number) => String(value),
  parse: (raw: string) => Number(raw),
};

export type Sql = postgres.Sql<{ bigint: number }>;

/** The store could not reach or use its database. */
export class StoreUnavailableError extends Error {
  override name = "StoreUnavailableError";
}

/** The URL without its password, for log lines and errors. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(an unparsable URL)";
  }
}

/** A driver or network error as a line a person can act on. */
export function describeDatabaseError(error: unknown, location: string): string {
  const e = error as { code?: string; message?: string; errno?: string };
  const detail = e?.message ?? String(error);
  switch (e?.code) {
    case "ECONNREFUSED":
      return `cannot reach the database at ${location}: connection refused ` +
        `(is PostgreSQL running there? check --store)`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `cannot reach the database at ${location}: unknown host (check --store)`;
    case "ECONNRESET":
    case "CONNECTION_CLOSED":
    case "CONNECTION_DESTROYED":
    case "57P01": // terminating connection due to administrator command
    case "57P02":
    case "57P03": // the database system is starting up / shutting down
      return `cannot reach the database at ${location}: ${detail} (is it restarting?)`;
    case "CONNECT_TIMEOUT":
      return `cannot reach the database at ${location}: no answer in time ` +
        `(is the host up and the port open? check --store)`;
    case "28P01":
    case "28000":
      return `the database at ${location} refused the login: ${detail} ` +
        `(check the user and password in --store)`;
    case "3D000":
      return `the database at ${location} does not exist: ${detail} ` +
        `(create it first: createdb, or CREATE DATABASE)`;
    default:
      return `database error at ${location}: ${detail}`;
  }
}

export interface PostgresStoreOptions {
  /** Connections in the pool at most. */
  maxConnections?: number;
  /** Seconds to wait for a connection before giving up. */
  connectTimeoutS?: number;
  /**
   * How long an instance stays alive in the directory without renewing its lease: an instance
   * killed outright has its users shown offline after at most this (plus one renewal period).
   */
  leaseMs?: number;
}

/** Default lease: an instance renews it every fifth of it. */
export const DEFAULT_LEASE_MS = 10_000;
/** Events are kept this long, for instances that lost the database for a while to catch up. */
const EVENTS_KEPT_MS = 10 * 60_000;
/** Events read at most per query. */
const EVENT_BATCH = 1000;
/** Looked for new events this often even without a wake-up (a missed notification). */
const EVENT_POLL_MS = 1_000;

/** A presence row joined with its live instance and the user's display name. */
interface PresenceSqlRow {
  name: string;
  host: string;
  peer_port: number;
  login_at: number;
  instance: string;
  static_key: string;
}

function toPresence(r: PresenceSqlRow): PresenceRecord {
  return {
    user: r.name,
    host: r.host,
    peerPort: r.peer_port,
    loginAt: r.login_at,
    instance: r.instance,
    staticKey: r.static_key,
  };
}

const EVENT_KINDS = new Set([
  "mail",
  "receipts",
  "presence",
  "kick",
  "check",
  "relay_offer",
  "relay_notice",
  "contact",
]);

/**
 * A connection pool to `url` as the store uses it (BIGINT as numbers, no notices).
 * @throws {StoreUnavailableError} for a URL the driver cannot take.
 */
export function connectSql(url: string, options: PostgresStoreOptions = {}): Sql {
  const location = redactUrl(url);
  if (!/^postgres(ql)?:\/\//.test(url)) {
    throw new StoreUnavailableError(
      `--store must be a postgres://user:password@host:port/database URL, not ${location}`,
    );
  }
  try {
    return postgres(url, {
      max: options.maxConnections ?? 10,
      connect_timeout: options.connectTimeoutS ?? 10,
      onnotice: () => {},
      types: { bigint: BIGINT_AS_NUMBER },
      // Reconnect at the next query, not after a growing wait of the driver's own: the lease
      // timer and the event poll already pace the attempts, and a wait the driver keeps would
      // outlive close() (its timers cannot be cancelled).
      backoff: () => 0,
      connection: { application_name: "confab-server" },
    }) as unknown as Sql;
  } catch (error) {
    throw new StoreUnavailableError(describeDatabaseError(error, location), { cause: error });
  }
}

export class PostgresStore implements ServerStore {
  readonly location: string;
  readonly shared = true;
  readonly #sql: Sql;
  readonly #leaseMs: number;
  #closing: Promise<void> | undefined;
  /** Mail waiting for the next group commit, in arrival order. */
  readonly #mailQueue: {
    mail: NewMail;
    limits: Required<MailLimits>;
    now: number;
    done: PromiseWithResolvers<StoreMailResult>;
  }[] = [];
  /** The group commit under way, if any. */
  #mailCommit: Promise<void> | undefined;
  /** This instance's row in `instances`, once running. */
  readonly #id = crypto.randomUUID();
  #run: StoreRunOptions | undefined;
  #timers: ReturnType<typeof setInterval>[] = [];
  #unlisten: (() => Promise<void>) | undefined;
  /** The last event handed on: events are read in (xid, id) order after it. */
  #cursor = { xid: "0", id: 0 };
  #pulling: Promise<void> | undefined;
  #ticking: Promise<void> | undefined;
  #pullAgain = false;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #frozen = false;
  /** Whether the last contact with the database failed (to log changes once, not each try). */
  #unreachable = false;
  /** When this instance last renewed its lease (`performance.now()`). */
  #renewedAt = 0;
  /** Other instances are not judged dead before this (`performance.now()`): see #tick. */
  #judgeFrom = 0;

  private constructor(sql: Sql, location: string, options: PostgresStoreOptions) {
    this.#sql = sql;
    this.location = location;
    this.#leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
  }

  /**
   * Connects to the database at `url` and brings its schema up to date (one instance at a
   * time: the migrations run under an advisory lock).
   * @throws {StoreUnavailableError} with a line a person can act on.
   */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const location = redactUrl(url);
    const sql = connectSql(url, options);
    const store = new PostgresStore(sql, location, options);
    try {
      await store.#migrate();
    } catch (error) {
      await sql.end({ timeout: 1 }).catch(() => {});
      throw new StoreUnavailableError(describeDatabaseError(error, location), { cause: error });
    }
    return store;
  }

  async #migrate(): Promise<void> {
    await this.#sql.begin(async (tx) => {
      // Several instances may start at once: one migrates, the others wait and find it done.
      await tx`SELECT pg_advisory_xact_lock(4242001)`;
      await tx`CREATE TABLE IF NOT EXISTS confab_schema (version INTEGER NOT NULL)`;
      const [row] = await tx<{ version: number }[]>`SELECT version FROM confab_schema`;
      let version = row?.version ?? 0;
      if (!row) await tx`INSERT INTO confab_schema (version) VALUES (0)`;
      for (; version < MIGRATIONS.length; version++) {
        await tx.unsafe(MIGRATIONS[version]!.postgres);
        await tx`UPDATE confab_schema SET version = ${version + 1}`;
      }
    });
  }

  async schemaVersion(): Promise<number> {
    const [row] = await this.#sql<{ version: number }[]>`SELECT version FROM confab_schema`;
    return row?.version ?? 0;
  }

  // ---- users ---------------------------------------------------------------------------------

  async createUser(user: NewUser, now = Date.now()): Promise<boolean> {
    const result = await this.#sql`
      INSERT INTO users (name_key, name, salt, hash, kdf, public_key, mail_key, mail_key_sig,
                         created_at)
      VALUES (${nameKey(user.name)}, ${user.name}, ${user.salt}, ${user.hash},
              ${user.kdf ?? LEGACY_KDF}, ${user.publicKey}, ${user.mailKey ?? ""},
              ${user.mailKeySig ?? ""}, ${now})
      ON CONFLICT (name_key) DO NOTHING`;
    return result.count === 1;
  }

  async getUser(name: string): Promise<UserRecord | undefined> {
    const [row] = await this.#sql<UserRow[]>`
      SELECT ${this.#sql.unsafe(USER_COLUMNS)} FROM users WHERE name_key = ${nameKey(name)}`;
    return row && toUser(row);
  }

  async userCount(): Promise<number> {
    const [row] = await this.#sql<{ n: number }[]>`SELECT count(*) AS n FROM users`;
    return row!.n;
  }

  async updatePassword(name: string, password: PasswordHash): Promise<boolean> {
    const result = await this.#sql`
      UPDATE users SET salt = ${password.salt}, hash = ${password.hash}, kdf = ${password.kdf}
      WHERE name_key = ${nameKey(name)}`;
    return result.count === 1;
  }

  // ---- contacts ------------------------------------------------------------------------------

  async addContact(owner: string, contact: string, now = Date.now()): Promise<boolean> {
    const result = await this.#sql`
      INSERT INTO contacts (owner, contact, added_at)
      VALUES (${nameKey(owner)}, ${nameKey(contact)}, ${now}) ON CONFLICT DO NOTHING`;
    return result.count === 1;
  }

  async removeContact(owner: string, contact: string): Promise<boolean> {
    const result = await this.#sql`
      DELETE FROM contacts WHERE owner = ${nameKey(owner)} AND contact = ${nameKey(contact)}`;
    return result.count === 1;
  }

  async countContacts(owner: string): Promise<number> {
    const [row] = await this.#sql<{ n: number }[]>`
      SELECT count(*) AS n FROM contacts WHERE owner = ${nameKey(owner)}`;
    return row!.n;
  }

  async listContacts(owner: string): Promise<string[]> {
    const rows = await this.#sql<{ name: string }[]>`
      SELECT u.name FROM contacts c JOIN users u ON u.name_key = c.contact
      WHERE c.owner = ${nameKey(owner)} ORDER BY c.added_at, u.name COLLATE "C"`;
    return rows.map((r) => r.name);
  }

  async listWatchers(contact: string): Promise<string[]> {
    const rows = await this.#sql<{ owner: string }[]>`
      SELECT c.owner FROM contacts c
      JOIN contacts back ON back.owner = c.contact AND back.contact = c.owner
      WHERE c.contact = ${nameKey(contact)}`;
    return rows.map((r) => r.owner);
  }

  async listContactRequests(user: string, limit: number): Promise<string[]> {
    const rows = await this.#sql<{ name: string }[]>`
      SELECT u.name FROM contacts c JOIN users u ON u.name_key = c.owner
      WHERE c.contact = ${nameKey(user)} AND NOT EXISTS
        (SELECT 1 FROM contacts back WHERE back.owner = c.contact AND back.contact = c.owner)
      ORDER BY c.added_at, u.name COLLATE "C" LIMIT ${limit}`;
    return rows.map((r) => r.name);
  }

  async isMutual(a: string, b: string): Promise<boolean> {
    const [a1, b1] = [nameKey(a), nameKey(b)];
    const [row] = await this.#sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM contacts
      WHERE (owner = ${a1} AND contact = ${b1}) OR (owner = ${b1} AND contact = ${a1})`;
    return row?.n === 2;
  }

  async isContact(owner: string, contact: string): Promise<boolean> {
    const rows = await this.#sql`
      SELECT 1 FROM contacts WHERE owner = ${nameKey(owner)} AND contact = ${nameKey(contact)}`;
    return rows.length > 0;
  }

  async lookup(asker: string, target: string): Promise<LookupRecord | undefined> {
    // One round trip where the separate calls took two (the user, then the rest at once).
    const [row] = await this.#sql<(LookupSqlRow & Partial<PresenceSqlRow>)[]>`
      SELECT u.name_key, u.name, u.public_key, u.mail_key, u.mail_key_sig,
        EXISTS (SELECT 1 FROM contacts WHERE owner = ${nameKey(asker)}
                AND contact = u.name_key) AS mine,
        EXISTS (SELECT 1 FROM contacts WHERE owner = u.name_key
                AND contact = ${nameKey(asker)}) AS theirs,
        EXISTS (SELECT 1 FROM receipts WHERE sender = ${nameKey(asker)}
                AND reader = u.name_key) AS receipts,
        p.host, p.peer_port, p.login_at, i.name AS instance, p.static_key
      FROM users u
      LEFT JOIN (presence p JOIN instances i
                 ON i.id = p.instance AND i.lease_until > confab_now())
        ON p."user" = u.name_key
      WHERE u.name_key = ${nameKey(target)}`;
    if (!row) return undefined;
    return toLookup(
      row,
      row.instance == null ? undefined : toPresence(row as PresenceSqlRow),
    );
  }

  // ---- registry ------------------------------------------------------------------------------

  async recordLogin(user: string, host: string, port: number, at = Date.now()): Promise<number> {
    const [row] = await this.#sql<{ seq: number }[]>`
      INSERT INTO registry ("user", host, port, login_at)
      VALUES (${nameKey(user)}, ${host}, ${port}, ${at}) RETURNING seq`;
    return row!.seq;
  }

  async recordLogout(seq: number, at = Date.now()): Promise<void> {
    await this.#sql`UPDATE registry SET logout_at = ${at} WHERE seq = ${seq}`;
  }

  async reopenLogin(seq: number, host: string, port: number): Promise<void> {
    await this.#sql`
      UPDATE registry SET logout_at = NULL, host = ${host}, port = ${port} WHERE seq = ${seq}`;
  }

  async correctLastLogout(user: string, at: number): Promise<void> {
    await this.#sql`
      UPDATE registry SET logout_at = ${at} WHERE seq = (
        SELECT seq FROM registry WHERE "user" = ${nameKey(user)} AND logout_at IS NOT NULL
        ORDER BY seq DESC LIMIT 1) AND login_at <= ${at}`;
  }

  async registry(user?: string, limit = 20): Promise<RegistryRow[]> {
    const rows = user === undefined
      ? await this.#sql<RegistrySqlRow[]>`
        SELECT u.name AS "user", r.host, r.port, r.login_at, r.logout_at FROM registry r
        JOIN users u ON u.name_key = r."user"
        WHERE r.seq IN (SELECT max(seq) FROM registry GROUP BY "user")
        ORDER BY r.login_at DESC`
      : await this.#sql<RegistrySqlRow[]>`
        SELECT u.name AS "user", r.host, r.port, r.login_at, r.logout_at FROM registry r
        JOIN users u ON u.name_key = r."user" WHERE r."user" = ${nameKey(user)}
        ORDER BY r.seq DESC LIMIT ${limit}`;
    return rows.map(toRegistryRow);
  }

  async closeDanglingLogins(at = Date.now()): Promise<number> {
    const result = await this.#sql`UPDATE registry SET logout_at = ${at} WHERE logout_at IS NULL`;
    return result.count;
  }

  // ---- mail ----------------------------------------------------------------------------------

  /**
   * Group commit: the mail that arrives while a commit is under way (or before the next turn
   * of the event loop) is stored in the next transaction, in arrival order, each message in
   * its own savepoint; each call resolves once its transaction is committed.
   */
  storeMail(
    mail: NewMail,
    limits: number | MailLimits,
    now = Date.now(),
  ): Promise<StoreMailResult> {
    const done = Promise.withResolvers<StoreMailResult>();
    this.#mailQueue.push({ mail, limits: fullLimits(limits), now, done });
    this.#scheduleMail();
    return done.promise;
  }

  #scheduleMail(): void {
    this.#mailCommit ??= this.#commitMail().finally(() => {
      this.#mailCommit = undefined;
      if (this.#mailQueue.length > 0) this.#scheduleMail();
    });
  }

  /** Resolves once every storeMail() call made so far is committed (reads of mail wait). */
  async #mailCommitted(): Promise<void> {
    while (this.#mailCommit !== undefined) await this.#mailCommit;
  }

  async #commitMail(): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, 0)); // let a burst gather
    const batch = this.#mailQueue.splice(0);
    if (batch.length === 0) return;
    let outcomes: { r_i: number; r_result: string }[];
    try {
      // One statement (confab_store_mails, migration 7): the recipients' counts locked in one
      // order, then each message in arrival order, its own subtransaction, with its event.
      const json = batch.map(({ mail, limits, now }) => ({
        recipient: nameKey(mail.recipient),
        sender: nameKey(mail.sender),
        msg_id: mail.msgId,
        ts: mail.ts,
        body: mail.body,
        max: limits.messages,
        max_bytes: limits.bytes,
        sender_max: limits.senderMessages,
        sender_max_bytes: limits.senderBytes,
        now,
      }));
      outcomes = await this.#sql<{ r_i: number; r_result: string }[]>`
        SELECT r_i, r_result FROM confab_store_mails(${this.#sql.json(json)}) ORDER BY r_i`;
    } catch (error) {
      for (const { done } of batch) done.reject(error);
      return;
    }
    batch.forEach(({ done }, i) => {
      const result = outcomes[i]?.r_result;
      if (
        result === "stored" || result === "duplicate" || result === "full" || result === "quota"
      ) {
        done.resolve(result);
      } else done.reject(new Error(`cannot store mail: ${result ?? "no outcome"}`));
    });
  }

  /**
   * Writes `event` in the transaction `tx` if `user` is in the directory: most mail is for
   * users who are away, and nobody would pass it on. The user's row is shared first: an
   * attachment of theirs under way holds it (confab_attach), so it commits before the directory
   * is looked at; one that comes later waits for this transaction, and what its server reads
   * then includes this change. Last in the transaction, after every other lock it takes (the
   * batches that lock users' rows never wait for a count or mail row: no cycle of waits).
   */
  async #eventFor(tx: postgres.TransactionSql, user: string, event: StoreEvent): Promise<void> {
    await tx`SELECT 1 FROM users WHERE name_key = ${user} FOR SHARE`;
    await tx`
      INSERT INTO events (at, body) SELECT confab_now(), ${tx.json(event)}
      WHERE EXISTS (SELECT 1 FROM presence WHERE "user" = ${user})`;
  }

  async countMail(recipient: string, sender?: string): Promise<number> {
    await this.#mailCommitted();
    if (sender === undefined) {
      const [row] = await this.#sql<{ n: number }[]>`
        SELECT n FROM mail_counts WHERE recipient = ${nameKey(recipient)}`;
      return row?.n ?? 0;
    }
    const [row] = await this.#sql<{ n: number }[]>`
      SELECT count(*) AS n FROM mail
      WHERE recipient = ${nameKey(recipient)} AND sender = ${nameKey(sender)}`;
    return row!.n;
  }

  async mailbox(recipient: string): Promise<MailboxEntry[]> {
    await this.#mailCommitted();
    const rows = await this.#sql<{ from: string; count: number; newest: number }[]>`
      SELECT u.name AS "from", count(*) AS count, max(m.ts) AS newest FROM mail m
      JOIN users u ON u.name_key = m.sender WHERE m.recipient = ${nameKey(recipient)}
      GROUP BY m.sender, u.name ORDER BY min(m.seq)`;
    return rows.map((r) => ({ from: r.from, count: r.count, newest: r.newest }));
  }

  async pendingMail(
    recipient: string,
    sender: string,
    limit: number,
    after?: string,
  ): Promise<PendingMail[]> {
    await this.#mailCommitted();
    const r = nameKey(recipient);
    const s = nameKey(sender);
    const rows = after === undefined
      ? await this.#sql<MailSqlRow[]>`
        SELECT msg_id, ts, body FROM mail WHERE recipient = ${r} AND sender = ${s}
        ORDER BY seq LIMIT ${limit}`
      : await this.#sql<MailSqlRow[]>`
        SELECT msg_id, ts, body FROM mail WHERE recipient = ${r} AND sender = ${s} AND seq > (
          SELECT seq FROM mail WHERE recipient = ${r} AND sender = ${s} AND msg_id = ${after})
        ORDER BY seq LIMIT ${limit}`;
    return rows.map(toPendingMail);
  }

  async confirmMail(
    recipient: string,
    sender: string,
    msgIds: string[],
    now = Date.now(),
    rejected: ReadonlySet<string> = new Set(),
    signed: ReadonlyMap<string, SignedRead> = new Map(),
  ): Promise<string[]> {
    await this.#mailCommitted();
    if (msgIds.length === 0) return [];
    const r = nameKey(recipient);
    const s = nameKey(sender);
    return await this.#sql.begin(async (tx) => {
      const deleted = await tx<{ msg_id: string }[]>`
        DELETE FROM mail WHERE recipient = ${r} AND sender = ${s} AND msg_id = ANY(${msgIds})
        RETURNING msg_id`;
      const gone = new Set(deleted.map((d) => d.msg_id));
      // In the order asked, each once, as the SQLite store answers.
      const done = [...new Set(msgIds)].filter((id) => gone.has(id));
      if (done.length === 0) return [];
      await tx`
        INSERT INTO mail_read (recipient, sender, msg_id, read_at)
        SELECT ${r}, ${s}, id, ${now} FROM unnest(${done}::text[]) AS id
        ON CONFLICT DO NOTHING`;
      // A message the reader's client refused (forged, undecryptable) was not read: its sender
      // is told it was not delivered, in this same transaction.
      const refused = done.filter((id) => rejected.has(id));
      const times = done.map((id) => rejected.has(id) ? now : signed.get(id)?.readAt ?? now);
      const sigs = done.map((id) => rejected.has(id) ? null : signed.get(id)?.sig ?? null);
      await tx`
        INSERT INTO receipts (sender, msg_id, reader, read_at, sig, rejected)
        SELECT ${s}, id, ${r}, t, g, id = ANY(${refused}::text[])
        FROM unnest(${done}::text[], ${times}::bigint[], ${sigs}::text[]) AS x(id, t, g)
        ON CONFLICT DO NOTHING`;
      await this.#eventFor(tx, s, { kind: "receipts", to: s });
      return done;
    }) as string[];
  }

  async forgetReadMail(before: number): Promise<number> {
    await this.#mailCommitted();
    const result = await this.#sql`DELETE FROM mail_read WHERE read_at < ${before}`;
    return result.count;
  }

  async pendingReceipts(sender: string, limit: number, reader?: string): Promise<Receipt[]> {
    const rows = reader === undefined
      ? await this.#sql<ReceiptSqlRow[]>`
        SELECT r.msg_id, u.name AS reader, r.read_at, r.sig, r.rejected FROM receipts r
        JOIN users u ON u.name_key = r.reader WHERE r.sender = ${nameKey(sender)}
        ORDER BY r.read_at LIMIT ${limit}`
      : await this.#sql<ReceiptSqlRow[]>`
        SELECT r.msg_id, u.name AS reader, r.read_at, r.sig, r.rejected FROM receipts r
        JOIN users u ON u.name_key = r.reader
        WHERE r.sender = ${nameKey(sender)} AND r.reader = ${nameKey(reader)}
        ORDER BY r.read_at LIMIT ${limit}`;
    return rows.map(toReceipt);
  }

  async deleteReceipts(sender: string, msgIds: string[]): Promise<void> {
    if (msgIds.length === 0) return;
    await this.#sql`
      DELETE FROM receipts WHERE sender = ${nameKey(sender)} AND msg_id = ANY(${msgIds})`;
  }

  // ---- sessions ------------------------------------------------------------------------------

  async addRelayBytes(pair: string, day: number, bytes: number): Promise<number> {
    if (bytes === 0) {
      const [row] = await this.#sql<{ bytes: number }[]>`
        SELECT bytes FROM relay_usage WHERE pair = ${pair} AND day = ${day}`;
      return row?.bytes ?? 0;
    }
    // One statement: instances adding at once each get a total that includes the other's.
    const [row] = await this.#sql<{ bytes: number }[]>`
      INSERT INTO relay_usage (pair, day, bytes) VALUES (${pair}, ${day}, ${bytes})
      ON CONFLICT (pair, day) DO UPDATE SET bytes = relay_usage.bytes + excluded.bytes
      RETURNING bytes`;
    return row!.bytes;
  }

  async forgetRelayUsage(day: number): Promise<number> {
    const result = await this.#sql`DELETE FROM relay_usage WHERE day < ${day}`;
    return result.count;
  }

  async saveSession(
    tokenHash: Uint8Array,
    user: string,
    options: { clientKey?: string; now?: number } = {},
  ): Promise<void> {
    await this.#sql`
      INSERT INTO sessions (token_hash, "user", created_at, client_key)
      VALUES (${tokenHash}, ${nameKey(user)}, ${options.now ?? Date.now()},
              ${options.clientKey ?? null})`;
  }

  async findSession(tokenHash: Uint8Array, ages: SessionAges): Promise<SessionRecord | undefined> {
    const now = ages.now ?? Date.now();
    const [row] = await this.#sql<SessionSqlRow[]>`
      SELECT ${this.#sql.unsafe(SESSION_COLUMNS)}
      FROM sessions s JOIN users u ON u.name_key = s."user"
      WHERE s.token_hash = ${tokenHash} AND s.created_at > ${now - ages.maxAgeMs}
        AND (s.replaced_at IS NULL OR s.replaced_at > ${now - ages.graceMs})`;
    return row && toSession(row);
  }

  async deleteSession(tokenHash: Uint8Array): Promise<void> {
    await this.#sql`DELETE FROM sessions WHERE token_hash = ${tokenHash}`;
  }

  // ---- presence and events --------------------------------------------------------------------

  async run(options: StoreRunOptions): Promise<void> {
    if (this.#run) throw new Error("the store is running already");
    this.#run = options;
    globalThis.addEventListener("error", this.#onDriverFault);
    globalThis.addEventListener("unhandledrejection", this.#onDriverRejection);
    const [snapshot] = await this.#sql<{ xmin: string }[]>`
      SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin`;
    this.#cursor = { xid: snapshot!.xmin, id: 0 };
    await this.#register();
    // Registry rows open without a place in the directory: left by a build before the cluster,
    // or by an instance that died and whose users were taken out without it.
    await this.#sql`
      UPDATE registry SET logout_at = confab_now()
      WHERE logout_at IS NULL AND seq NOT IN (SELECT registry_seq FROM presence)`;
    await this.#reap();
    const listening = await this.#sql.listen(
      "confab_events",
      () => this.#pull(),
      // Called at every (re)subscription: after the database came back, catch up at once.
      () => this.#pull(),
    );
    this.#unlisten = listening.unlisten;
    this.#timers.push(setInterval(() => {
      this.#ticking ??= this.#tick().finally(() => (this.#ticking = undefined));
    }, this.#leaseMs / 5));
    this.#timers.push(setInterval(() => this.#pull(), EVENT_POLL_MS));
  }

  async #register(): Promise<void> {
    await this.#sql`
      INSERT INTO instances (id, name, started_at, lease_until)
      VALUES (${this.#id}, ${this.#run!.name}, confab_now(), confab_now() + ${this.#leaseMs})
      ON CONFLICT (id) DO UPDATE SET lease_until = EXCLUDED.lease_until`;
    this.#renewedAt = performance.now();
  }

  /**
   * Stops renewing the lease and reading events, as a frozen process would, until `thaw()`:
   * for tests of what the other instances do then.
   */
  freeze(): void {
    this.#frozen = true;
  }

  thaw(): void {
    this.#frozen = false;
  }

  /**
   * postgres.js 3.4.9 can throw from a write it scheduled just before its connection died
   * ("Cannot read properties of null (reading 'write')" in `nextWrite`), outside any query:
   * uncaught, it would end the server while the database restarts. That fault is the
   * driver's own and harmless (the query it belonged to has failed already, and the
   * connection is made anew): note it and carry on. Anything else stays fatal.
   */
  readonly #onDriverFault = (event: ErrorEvent): void => {
    const stack = String((event.error as Error | undefined)?.stack ?? "");
    if (!/nextWrite .*\/postgres\/[\d.]+\/src\/connection\.js/.test(stack.replace(/\n/g, " "))) {
      return;
    }
    event.preventDefault();
    this.#reachable(false, event.error);
  };

  /**
   * The driver also leaves a promise of its own rejected with nobody to catch it when the
   * database drops its connections (a restart: "read ECONNRESET" from the socket). A lost
   * connection is never a reason to end the server: note it and carry on. Other rejections
   * stay fatal.
   */
  readonly #onDriverRejection = (event: PromiseRejectionEvent): void => {
    if (!isStoreUnavailable(event.reason)) return;
    event.preventDefault();
    this.#reachable(false, event.reason);
  };

  /** Renews the lease, takes out instances whose lease ran out, forgets old events. */
  async #tick(): Promise<void> {
    const run = this.#run;
    if (!run || this.#closing || this.#frozen) return;
    try {
      const renewed = await this.#sql`
        UPDATE instances SET lease_until = confab_now() + ${this.#leaseMs} WHERE id = ${this.#id}`;
      const now = performance.now();
      if (now - this.#renewedAt > this.#leaseMs / 2) {
        // Out of touch for a good part of a lease (the database away, or this process stalled
        // by a loaded machine): the others likely were too, and their leases ran out as ours
        // did, with no chance yet to renew. Judged now, every instance but the first back
        // would be taken for dead and its users out of the directory. They get one lease.
        this.#judgeFrom = now + this.#leaseMs;
      }
      this.#renewedAt = now;
      this.#reachable(true);
      if (renewed.count === 0) {
        // Others took us for dead while we could not reach the database, and showed our users
        // offline: they must attach again, here or elsewhere.
        run.log(`this instance's lease ran out while the database was away; users re-attach`);
        await this.#register();
        run.onLeaseLost();
      }
      if (performance.now() >= this.#judgeFrom) await this.#reap();
      await this.#sql`DELETE FROM events WHERE at < confab_now() - ${EVENTS_KEPT_MS}`;
    } catch (error) {
      this.#reachable(false, error);
    }
  }

  /** Logs when the database goes away and when it is back: once each, not at every try. */
  #reachable(ok: boolean, error?: unknown): void {
    const run = this.#run;
    if (!run || this.#closing || ok === !this.#unreachable) return;
    this.#unreachable = !ok;
    if (ok) {
      run.log(`database ${this.location} reachable again`);
    } else {
      const line = describeDatabaseError(error, this.location);
      run.log(
        `${
          line.startsWith("cannot reach") ? line : `cannot reach the database: ${line}`
        }; retrying (users stay connected; ` +
          `requests that need the database fail meanwhile; after ${this.#leaseMs / 1000} s ` +
          `other instances take this one's users for offline)`,
      );
    }
  }

  /**
   * Takes the users of instances whose lease ran out out of the directory, closes their
   * registry rows at the end of the lease, and announces them offline: one transaction. Their
   * users' rows are locked first, in name order, as every batch locks them: those users are
   * coming back elsewhere at this very moment, thousands at once, and a take-over that locked
   * them in any other order deadlocked with their resumes.
   */
  async #reap(): Promise<void> {
    const [due] = await this.#sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM instances WHERE lease_until < confab_now()`;
    if (!due || due.n === 0) return;
    await this.#sql.begin(async (tx) => {
      const dead = await tx<{ id: string }[]>`
        SELECT id FROM instances WHERE lease_until < confab_now() ORDER BY id FOR UPDATE`;
      if (dead.length === 0) return;
      const ids = dead.map((d) => d.id);
      await tx`
        SELECT 1 FROM users WHERE name_key IN
          (SELECT "user" FROM presence WHERE instance = ANY(${ids}::text[]))
        ORDER BY name_key FOR NO KEY UPDATE`;
      await tx`
        WITH dead AS (
          DELETE FROM instances WHERE id = ANY(${ids}::text[]) RETURNING id, lease_until
        ), gone AS (
          DELETE FROM presence p USING dead WHERE p.instance = dead.id
          RETURNING p."user", p.registry_seq, dead.lease_until
        ), closed AS (
          UPDATE registry r SET logout_at = gone.lease_until FROM gone
          WHERE r.seq = gone.registry_seq AND r.logout_at IS NULL
        )
        -- Every mutual contact a watcher, online now or not (one attaching elsewhere at this
        -- moment is not in the directory yet): each instance tells those it holds.
        INSERT INTO events (at, body)
        SELECT confab_now(), jsonb_build_object('kind', 'presence', 'user', g."user",
          'online', false, 'name', u.name, 'watchers', jsonb_agg(c.owner))
        FROM gone g JOIN users u ON u.name_key = g."user"
        JOIN contacts c ON c.contact = g."user"
        JOIN contacts back ON back.owner = c.contact AND back.contact = c.owner
        GROUP BY g."user", u.name`;
    });
  }

  /**
   * Reads the events after the cursor and hands them on, in order. Ids are taken when rows are
   * inserted, not when they commit, so reading by id alone could pass over one committed late.
   * Rows are read in (transaction id, id) order and only from transactions older than every
   * transaction still running that could write one: later no row can appear before the cursor.
   * Rows of newer transactions that are visible already are read shortly after, once those
   * older ones end. A transaction running in another database of the server cannot write here
   * and does not count (pg_stat_activity tells its database; one it does not place counts).
   */
  #pull(): void {
    if (!this.#run || this.#closing || this.#frozen) return;
    if (this.#pulling) {
      this.#pullAgain = true;
      return;
    }
    this.#pulling = (async () => {
      do {
        this.#pullAgain = false;
        const rows = await this.#sql<
          { id: number; xid: string; body: StoreEvent; early: boolean }[]
        >`
          WITH s AS (SELECT pg_current_snapshot() AS snap),
          -- Transactions of other databases of the server, known to be so for certain: they
          -- cannot write these events, so a long one (another application's batch job) must
          -- not hold them back. One not known to be elsewhere counts as one of ours.
          elsewhere AS (
            SELECT backend_xid::text AS xid FROM pg_stat_activity
            WHERE datname IS DISTINCT FROM current_database() AND backend_xid IS NOT NULL),
          h AS (
            SELECT coalesce(
              (SELECT min(x) FROM pg_snapshot_xip(s.snap) AS x
               WHERE (x::text::numeric % 4294967296)::text NOT IN (SELECT xid FROM elsewhere)),
              pg_snapshot_xmax(s.snap)) AS horizon
            FROM s)
          SELECT e.id, e.xid::text AS xid, e.body, e.xid >= h.horizon AS early
          FROM events e, h
          WHERE (e.xid, e.id) > (${this.#cursor.xid}::xid8, ${this.#cursor.id})
          ORDER BY e.xid, e.id LIMIT ${EVENT_BATCH}`;
        let early = false;
        for (const row of rows) {
          if (row.early) {
            early = true;
            break;
          }
          this.#cursor = { xid: row.xid, id: row.id };
          if (EVENT_KINDS.has(row.body?.kind)) this.#run?.onEvent(row.body);
        }
        if (early) {
          clearTimeout(this.#retry);
          this.#retry = setTimeout(() => this.#pull(), 5);
        } else if (rows.length === EVENT_BATCH) {
          this.#pullAgain = true;
        }
      } while (this.#pullAgain && !this.#closing);
    })().then(() => this.#reachable(true), (error) => {
      // The next wake-up or poll tries again.
      this.#reachable(false, error);
    }).finally(() => {
      this.#pulling = undefined;
    });
  }

  async attach(a: Attachment): Promise<void> {
    // One statement (confab_attach, migration 7; with the static key, 8): the user's row locked (attachments of one
    // user take turns, whichever instance they come from), the registry row re-opened, the
    // place taken, a replaced login's row closed, and a kick or presence event written.
    await this.#sql`
      SELECT confab_attach_keyed(${nameKey(a.user)}, ${this.#id}, ${a.attach}, ${a.host},
                           ${a.peerPort}, ${a.loginAt}, ${a.registrySeq}, ${a.staticKey})`;
  }

  async resume(r: Resumption, now = Date.now()): Promise<Resumed | undefined> {
    const [row] = await this.#sql<{ r_name: string; r_seq: number; r_login_at: number }[]>`
      SELECT r_name, r_seq, r_login_at FROM confab_resume_rotating(${r.tokenHash},
        ${r.newTokenHash}, ${now - r.maxAgeMs}, ${now - r.graceMs}, ${this.#id}, ${r.attach},
        ${r.host}, ${r.peerPort}, ${now}, ${r.staticKey})`;
    return row && { user: row.r_name, registrySeq: row.r_seq, loginAt: row.r_login_at };
  }

  async resumeMany(
    rs: readonly Resumption[],
    now = Date.now(),
  ): Promise<(Resumed | undefined)[]> {
    if (rs.length === 0) return [];
    const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
    // One statement: one transaction, one commit and one wake-up of the other instances for
    // the whole batch, each resumption done as confab_resume_rotating does it alone, in the
    // order of the users' names: every batch that locks users' rows (other resumes, detaches,
    // the take-over of a dead instance's users in #reap) takes them in that order, so two never
    // wait for each other (in token order, a resume batch and the take-over deadlocked every
    // time they met, and the one PostgreSQL aborted after a second of waiting was done again).
    const rows = await this.#sql<
      { i: number; r_name: string | null; r_seq: number | null; r_login_at: number | null }[]
    >`
      SELECT t.i::int AS i, r.r_name, r.r_seq, r.r_login_at
      FROM (
        SELECT t.*, s."user" AS owner
        FROM unnest(${rs.map((r) => hex(r.tokenHash))}::text[],
                    ${rs.map((r) => hex(r.newTokenHash))}::text[],
                    ${rs.map((r) => now - r.maxAgeMs)}::bigint[],
                    ${rs.map((r) => now - r.graceMs)}::bigint[],
                    ${rs.map((r) => r.attach)}::text[], ${rs.map((r) => r.host)}::text[],
                    ${rs.map((r) => r.peerPort)}::int[], ${rs.map((r) => r.staticKey)}::text[])
          WITH ORDINALITY AS t(token, new_token, since, grace_since, attach, host, port, key, i)
        LEFT JOIN sessions s ON s.token_hash = decode(t.token, 'hex')
        ORDER BY s."user", t.i
      ) t
      LEFT JOIN LATERAL confab_resume_rotating(decode(t.token, 'hex'), decode(t.new_token, 'hex'),
        t.since, t.grace_since, ${this.#id}, t.attach, t.host, t.port, ${now}, t.key) r ON true
      ORDER BY t.i`;
    const out: (Resumed | undefined)[] = rs.map(() => undefined);
    for (const row of rows) {
      if (row.r_name === null) continue;
      out[row.i - 1] = { user: row.r_name, registrySeq: row.r_seq!, loginAt: row.r_login_at! };
    }
    return out;
  }

  async detach(user: string, attach: string, at = Date.now()): Promise<boolean> {
    const [row] = await this.#sql<{ gone: boolean }[]>`
      SELECT confab_detach(${nameKey(user)}, ${attach}, ${at}) AS gone`;
    return row?.gone === true;
  }

  async detachMany(
    places: readonly { user: string; attach: string }[],
    at = Date.now(),
  ): Promise<boolean[]> {
    if (places.length === 0) return [];
    // One statement, so one transaction and one commit (and one wake-up of the others); the
    // users' rows locked in name order, as every batch takes them (see resumeMany).
    const sorted = places.map((p, i) => ({ key: nameKey(p.user), attach: p.attach, i }))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.i - b.i));
    const rows = await this.#sql<{ i: number; gone: boolean }[]>`
      SELECT t.i::int AS i, confab_detach(t.u, t.a, ${at}) AS gone
      FROM unnest(${sorted.map((p) => p.key)}::text[], ${sorted.map((p) => p.attach)}::text[],
                  ${sorted.map((p) => p.i)}::int[]) AS t(u, a, i)`;
    const out = places.map(() => false);
    for (const row of rows) out[row.i] = row.gone;
    return out;
  }

  async presenceOf(user: string): Promise<PresenceRecord | undefined> {
    const [row] = await this.#sql<PresenceSqlRow[]>`
      SELECT u.name, p.host, p.peer_port, p.login_at, i.name AS instance, p.static_key
      FROM presence p JOIN instances i ON i.id = p.instance AND i.lease_until > confab_now()
      JOIN users u ON u.name_key = p."user" WHERE p."user" = ${nameKey(user)}`;
    return row && toPresence(row);
  }

  async onlineUsers(): Promise<PresenceRecord[]> {
    const rows = await this.#sql<PresenceSqlRow[]>`
      SELECT u.name, p.host, p.peer_port, p.login_at, i.name AS instance, p.static_key
      FROM presence p JOIN instances i ON i.id = p.instance AND i.lease_until > confab_now()
      JOIN users u ON u.name_key = p."user" ORDER BY p.login_at DESC`;
    return rows.map(toPresence);
  }

  async onlineAmong(users: readonly string[]): Promise<Set<string>> {
    if (users.length === 0) return new Set();
    const rows = await this.#sql<{ user: string }[]>`
      SELECT p."user" FROM presence p
      JOIN instances i ON i.id = p.instance AND i.lease_until > confab_now()
      WHERE p."user" = ANY(${users.map(nameKey)})`;
    return new Set(rows.map((r) => r.user));
  }

  async publish(event: StoreEvent): Promise<void> {
    await this.#sql`INSERT INTO events (at, body) VALUES (confab_now(), ${this.#sql.json(event)})`;
  }

  async deleteUserSessions(user: string, except?: Uint8Array): Promise<number> {
    const result = except
      ? await this.#sql`
        DELETE FROM sessions WHERE "user" = ${nameKey(user)} AND token_hash <> ${except}`
      : await this.#sql`DELETE FROM sessions WHERE "user" = ${nameKey(user)}`;
    return result.count;
  }

  async purgeSessions(ages: SessionAges): Promise<number> {
    const now = ages.now ?? Date.now();
    const result = await this.#sql`
      DELETE FROM sessions
      WHERE created_at <= ${now - ages.maxAgeMs} OR replaced_at <= ${now - ages.graceMs}`;
    return result.count;
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#mailCommitted();
      for (const timer of this.#timers) clearInterval(timer);
      await this.#ticking;
      await this.#pulling;
      clearTimeout(this.#retry);
      await this.#unlisten?.().catch(() => {});
      if (this.#run) {
        // Leaving cleanly: whoever is still attached here is taken out now (offline, login row
        // closed), rather than when the lease runs out.
        await this.#sql`UPDATE instances SET lease_until = 0 WHERE id = ${this.#id}`
          .then(() => this.#reap()).catch(() => {});
      }
      this.#run = undefined;
      await this.#sql.end({ timeout: 5 });
      globalThis.removeEventListener("error", this.#onDriverFault);
      globalThis.removeEventListener("unhandledrejection", this.#onDriverRejection);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
