/**
 * The server's state in PostgreSQL (`--store postgres://…`), for several server instances
 * sharing one database. Same schema steps and semantics as the SQLite store: every method's
 * changes are committed when its promise resolves. The driver is postgres.js (`npm:postgres`):
 * see docs/architecture.md for why.
 */
import postgres from "postgres";
import { MIGRATIONS } from "./migrations.ts";
import {
  type MailSqlRow,
  type ReceiptSqlRow,
  type RegistrySqlRow,
  toPendingMail,
  toReceipt,
  toRegistryRow,
  toUser,
  USER_COLUMNS,
  type UserRow,
} from "./sql_rows.ts";
import {
  LEGACY_KDF,
  type MailboxEntry,
  nameKey,
  type NewMail,
  type NewUser,
  type PasswordHash,
  type PendingMail,
  type Receipt,
  type RegistryRow,
  type ServerStore,
  type StoreMailResult,
  type UserRecord,
} from "./store.ts";

/** BIGINT columns (times in ms, row numbers, counts) read as numbers: all stay below 2^53. */
const BIGINT_AS_NUMBER = {
  to: 20,
  from: [20],
  serialize: (value: number) => String(value),
  parse: (raw: string) => Number(raw),
};

type Sql = postgres.Sql<{ bigint: number }>;

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
}

/** One message of a group commit, inside its savepoint; `counts` are the locked counts. */
async function storeOneMail(
  tx: postgres.TransactionSql<{ bigint: number }>,
  mail: NewMail,
  max: number,
  now: number,
  counts: Map<string, number>,
): Promise<StoreMailResult> {
  const recipient = nameKey(mail.recipient);
  const sender = nameKey(mail.sender);
  const seen = await tx`
    SELECT 1 FROM mail WHERE recipient = ${recipient} AND sender = ${sender}
      AND msg_id = ${mail.msgId}
    UNION ALL SELECT 1 FROM mail_read WHERE recipient = ${recipient} AND sender = ${sender}
      AND msg_id = ${mail.msgId}`;
  if (seen.length > 0) return "duplicate";
  const count = counts.get(recipient) ?? 0;
  if (count >= max) return "full";
  await tx`
    INSERT INTO mail (recipient, sender, msg_id, ts, body, stored_at)
    VALUES (${recipient}, ${sender}, ${mail.msgId}, ${mail.ts}, ${mail.body}, ${now})`;
  counts.set(recipient, count + 1);
  return "stored";
}

export class PostgresStore implements ServerStore {
  readonly location: string;
  readonly #sql: Sql;
  #closing: Promise<void> | undefined;
  /** Mail waiting for the next group commit, in arrival order. */
  readonly #mailQueue: {
    mail: NewMail;
    max: number;
    now: number;
    done: PromiseWithResolvers<StoreMailResult>;
  }[] = [];
  /** The group commit under way, if any. */
  #mailCommit: Promise<void> | undefined;

  private constructor(sql: Sql, location: string) {
    this.#sql = sql;
    this.location = location;
  }

  /**
   * Connects to the database at `url` and brings its schema up to date (one instance at a
   * time: the migrations run under an advisory lock).
   * @throws {StoreUnavailableError} with a line a person can act on.
   */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const location = redactUrl(url);
    if (!/^postgres(ql)?:\/\//.test(url)) {
      throw new StoreUnavailableError(
        `--store must be a postgres://user:password@host:port/database URL, not ${location}`,
      );
    }
    let sql: Sql;
    try {
      sql = postgres(url, {
        max: options.maxConnections ?? 10,
        connect_timeout: options.connectTimeoutS ?? 10,
        onnotice: () => {},
        types: { bigint: BIGINT_AS_NUMBER },
        connection: { application_name: "confab-server" },
      }) as unknown as Sql;
    } catch (error) {
      throw new StoreUnavailableError(describeDatabaseError(error, location), { cause: error });
    }
    const store = new PostgresStore(sql, location);
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
      SELECT owner FROM contacts WHERE contact = ${nameKey(contact)}`;
    return rows.map((r) => r.owner);
  }

  async isContact(owner: string, contact: string): Promise<boolean> {
    const rows = await this.#sql`
      SELECT 1 FROM contacts WHERE owner = ${nameKey(owner)} AND contact = ${nameKey(contact)}`;
    return rows.length > 0;
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

  async latestLogin(user: string): Promise<number | undefined> {
    const [row] = await this.#sql<{ seq: number | null }[]>`
      SELECT max(seq) AS seq FROM registry WHERE "user" = ${nameKey(user)}`;
    return row?.seq ?? undefined;
  }

  // ---- mail ----------------------------------------------------------------------------------

  /**
   * Group commit: the mail that arrives while a commit is under way (or before the next turn
   * of the event loop) is stored in the next transaction, in arrival order, each message in
   * its own savepoint; each call resolves once its transaction is committed.
   */
  storeMail(mail: NewMail, max: number, now = Date.now()): Promise<StoreMailResult> {
    const done = Promise.withResolvers<StoreMailResult>();
    this.#mailQueue.push({ mail, max, now, done });
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
    type Outcome = { ok: true; result: StoreMailResult } | { ok: false; error: unknown };
    let outcomes: Outcome[];
    try {
      outcomes = await this.#sql.begin(async (tx) => {
        // The recipients' count rows, locked in one order (two instances committing batches
        // for the same people cannot deadlock): stores to one mailbox take turns, whichever
        // instance they come from, so the limit holds. (Kept by a trigger on mail.)
        const counts = new Map<string, number>();
        for (const recipient of [...new Set(batch.map((b) => nameKey(b.mail.recipient)))].sort()) {
          await tx`INSERT INTO mail_counts (recipient, n) VALUES (${recipient}, 0)
                   ON CONFLICT DO NOTHING`;
          const [count] = await tx<{ n: number }[]>`
            SELECT n FROM mail_counts WHERE recipient = ${recipient} FOR UPDATE`;
          counts.set(recipient, count!.n);
        }
        const out: Outcome[] = [];
        for (const { mail, max, now } of batch) {
          try {
            const result = await tx.savepoint((sp) => storeOneMail(sp, mail, max, now, counts));
            out.push({ ok: true, result: result as StoreMailResult });
          } catch (error) {
            out.push({ ok: false, error });
          }
        }
        return out;
      }) as Outcome[];
    } catch (error) {
      for (const { done } of batch) done.reject(error);
      return;
    }
    batch.forEach(({ done }, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) done.resolve(outcome.result);
      else done.reject(outcome.error);
    });
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

  async pendingMail(recipient: string, sender: string, limit: number): Promise<PendingMail[]> {
    await this.#mailCommitted();
    const rows = await this.#sql<MailSqlRow[]>`
      SELECT msg_id, ts, body FROM mail
      WHERE recipient = ${nameKey(recipient)} AND sender = ${nameKey(sender)}
      ORDER BY seq LIMIT ${limit}`;
    return rows.map(toPendingMail);
  }

  async confirmMail(
    recipient: string,
    sender: string,
    msgIds: string[],
    now = Date.now(),
    rejected: ReadonlySet<string> = new Set(),
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
      // A message the reader's client refused (forged, undecryptable) was not read.
      const read = done.filter((id) => !rejected.has(id));
      if (read.length > 0) {
        await tx`
          INSERT INTO receipts (sender, msg_id, reader, read_at)
          SELECT ${s}, id, ${r}, ${now} FROM unnest(${read}::text[]) AS id
          ON CONFLICT DO NOTHING`;
      }
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
        SELECT r.msg_id, u.name AS reader, r.read_at FROM receipts r
        JOIN users u ON u.name_key = r.reader WHERE r.sender = ${nameKey(sender)}
        ORDER BY r.read_at LIMIT ${limit}`
      : await this.#sql<ReceiptSqlRow[]>`
        SELECT r.msg_id, u.name AS reader, r.read_at FROM receipts r
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

  async saveSession(tokenHash: Uint8Array, user: string, now = Date.now()): Promise<void> {
    await this.#sql`
      INSERT INTO sessions (token_hash, "user", created_at)
      VALUES (${tokenHash}, ${nameKey(user)}, ${now})`;
  }

  async sessionUser(
    tokenHash: Uint8Array,
    maxAgeMs: number,
    now = Date.now(),
  ): Promise<string | undefined> {
    const [row] = await this.#sql<{ name: string }[]>`
      SELECT u.name FROM sessions s JOIN users u ON u.name_key = s."user"
      WHERE s.token_hash = ${tokenHash} AND s.created_at > ${now - maxAgeMs}`;
    return row?.name;
  }

  async deleteSession(tokenHash: Uint8Array): Promise<void> {
    await this.#sql`DELETE FROM sessions WHERE token_hash = ${tokenHash}`;
  }

  close(): Promise<void> {
    this.#closing ??= this.#mailCommitted().then(() => this.#sql.end({ timeout: 5 }));
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
