/**
 * The server's durable state in one SQLite file (node:sqlite): accounts, contacts, the
 * login/logout registry and session tokens. WAL with synchronous=NORMAL: a committed
 * transaction survives a kill -9 of the process. Knows nothing of sockets.
 */
import { Database } from "../util/sqlite.ts";
import { join } from "node:path";

/** Schema migrations, applied in order; `PRAGMA user_version` records how many ran. */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE users (
    name_key   TEXT PRIMARY KEY,          -- lower-cased name: uniqueness is case-insensitive
    name       TEXT NOT NULL,             -- as the user typed it at signup
    salt       BLOB NOT NULL,
    hash       BLOB NOT NULL,             -- scrypt(password, salt)
    public_key TEXT NOT NULL,             -- Ed25519, base64url
    created_at INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE contacts (
    owner      TEXT NOT NULL REFERENCES users(name_key),
    contact    TEXT NOT NULL REFERENCES users(name_key),
    added_at   INTEGER NOT NULL,
    PRIMARY KEY (owner, contact)
  ) STRICT;
  CREATE INDEX contacts_by_contact ON contacts(contact);
  CREATE TABLE registry (                 -- one row per login: the original spec's registry
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user       TEXT NOT NULL REFERENCES users(name_key),
    host       TEXT NOT NULL,
    port       INTEGER NOT NULL,
    login_at   INTEGER NOT NULL,
    logout_at  INTEGER                    -- NULL while the session is live
  ) STRICT;
  CREATE INDEX registry_by_user ON registry(user, seq);
  CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY,          -- SHA-256 of the token; the token itself is not kept
    user       TEXT NOT NULL REFERENCES users(name_key),
    created_at INTEGER NOT NULL
  ) STRICT;
  `,
  `
  CREATE TABLE mail (                     -- pending messages for users who were not reachable
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient  TEXT NOT NULL REFERENCES users(name_key),
    sender     TEXT NOT NULL REFERENCES users(name_key),
    msg_id     TEXT NOT NULL,             -- made by the sender: a resend is stored once
    ts         INTEGER NOT NULL,          -- send time
    body       TEXT NOT NULL,
    stored_at  INTEGER NOT NULL,
    UNIQUE (recipient, msg_id)
  ) STRICT;
  CREATE INDEX mail_by_sender ON mail(recipient, sender, seq);
  CREATE TABLE receipts (                 -- "read" notices waiting for the sender
    sender     TEXT NOT NULL REFERENCES users(name_key),
    msg_id     TEXT NOT NULL,
    reader     TEXT NOT NULL REFERENCES users(name_key),
    read_at    INTEGER NOT NULL,
    PRIMARY KEY (sender, msg_id)
  ) STRICT;
  `,
  `
  ALTER TABLE users ADD COLUMN mail_key TEXT NOT NULL DEFAULT '';      -- X25519, base64url
  ALTER TABLE users ADD COLUMN mail_key_sig TEXT NOT NULL DEFAULT '';  -- by the identity key
  `,
  `
  -- A message id is its sender's: the same id from two senders is two messages (before, one
  -- sender could have another's message dropped as a duplicate while it was acknowledged).
  CREATE TABLE mail_v4 (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient  TEXT NOT NULL REFERENCES users(name_key),
    sender     TEXT NOT NULL REFERENCES users(name_key),
    msg_id     TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    body       TEXT NOT NULL,
    stored_at  INTEGER NOT NULL,
    UNIQUE (recipient, sender, msg_id)
  ) STRICT;
  INSERT INTO mail_v4 (seq, recipient, sender, msg_id, ts, body, stored_at)
    SELECT seq, recipient, sender, msg_id, ts, body, stored_at FROM mail;
  DROP TABLE mail;
  ALTER TABLE mail_v4 RENAME TO mail;
  CREATE INDEX mail_by_sender ON mail(recipient, sender, seq);
  CREATE TABLE IF NOT EXISTS mail_read (  -- mail read lately: a late resend of it is not stored
    recipient  TEXT NOT NULL,
    sender     TEXT NOT NULL,
    msg_id     TEXT NOT NULL,
    read_at    INTEGER NOT NULL,
    PRIMARY KEY (recipient, sender, msg_id)
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS mail_read_by_time ON mail_read(read_at);
  `,
];

/** The schema version this build migrates databases to. */
export const SCHEMA_VERSION = MIGRATIONS.length;

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

export interface Receipt {
  msgId: string;
  reader: string;
  readAt: number;
}

export interface UserRecord {
  nameKey: string;
  name: string;
  salt: Uint8Array;
  hash: Uint8Array;
  publicKey: string;
  mailKey: string;
  mailKeySig: string;
}

export interface RegistryRow {
  user: string;
  host: string;
  port: number;
  loginAt: number;
  logoutAt: number | null;
}

/** Lower-cases a username for lookups; names are unique case-insensitively. */
export function nameKey(name: string): string {
  return name.toLowerCase();
}

export class ServerStore implements Disposable {
  readonly path: string;
  readonly #db: Database;
  readonly #mailboxSizes = new Map<string, number>();

  constructor(dataDir: string) {
    Deno.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    this.path = join(dataDir, "confab-server.sqlite");
    this.#db = new Database(this.path, MIGRATIONS);
  }

  /** The schema version in force (number of migrations applied). */
  get schemaVersion(): number {
    return this.#db.schemaVersion;
  }

  // ---- users ---------------------------------------------------------------------------------

  /** Creates an account; returns false when the name is taken (case-insensitively). */
  createUser(
    user:
      & Omit<UserRecord, "nameKey" | "mailKey" | "mailKeySig">
      & Partial<Pick<UserRecord, "mailKey" | "mailKeySig">>,
    now = Date.now(),
  ): boolean {
    const result = this.#db.sql(
      `INSERT INTO users (name_key, name, salt, hash, public_key, mail_key, mail_key_sig, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name_key) DO NOTHING`,
    ).run(
      nameKey(user.name),
      user.name,
      user.salt,
      user.hash,
      user.publicKey,
      user.mailKey ?? "",
      user.mailKeySig ?? "",
      now,
    );
    return result.changes === 1;
  }

  getUser(name: string): UserRecord | undefined {
    const row = this.#db.sql(
      `SELECT name_key, name, salt, hash, public_key, mail_key, mail_key_sig
       FROM users WHERE name_key = ?`,
    ).get(nameKey(name)) as
      | {
        name_key: string;
        name: string;
        salt: Uint8Array;
        hash: Uint8Array;
        public_key: string;
        mail_key: string;
        mail_key_sig: string;
      }
      | undefined;
    return row && {
      nameKey: row.name_key,
      name: row.name,
      salt: row.salt,
      hash: row.hash,
      publicKey: row.public_key,
      mailKey: row.mail_key,
      mailKeySig: row.mail_key_sig,
    };
  }

  userCount(): number {
    return (this.#db.sql("SELECT count(*) AS n FROM users").get() as { n: number }).n;
  }

  // ---- contacts ------------------------------------------------------------------------------

  /** Adds `contact` to `owner`'s list; returns false if it was already there. */
  addContact(owner: string, contact: string, now = Date.now()): boolean {
    return this.#db.sql(
      "INSERT INTO contacts (owner, contact, added_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
    ).run(nameKey(owner), nameKey(contact), now).changes === 1;
  }

  removeContact(owner: string, contact: string): boolean {
    return this.#db.sql("DELETE FROM contacts WHERE owner = ? AND contact = ?")
      .run(nameKey(owner), nameKey(contact)).changes === 1;
  }

  countContacts(owner: string): number {
    return (this.#db.sql("SELECT count(*) AS n FROM contacts WHERE owner = ?")
      .get(nameKey(owner)) as { n: number }).n;
  }

  /** The display names of `owner`'s contacts, in the order they were added. */
  listContacts(owner: string): string[] {
    return (this.#db.sql(
      `SELECT u.name FROM contacts c JOIN users u ON u.name_key = c.contact
       WHERE c.owner = ? ORDER BY c.added_at, u.name`,
    ).all(nameKey(owner)) as { name: string }[]).map((r) => r.name);
  }

  /** Name keys of the users who have `contact` in their list (to tell them of presence). */
  listWatchers(contact: string): string[] {
    return (this.#db.sql("SELECT owner FROM contacts WHERE contact = ?")
      .all(nameKey(contact)) as { owner: string }[]).map((r) => r.owner);
  }

  isContact(owner: string, contact: string): boolean {
    return this.#db.sql("SELECT 1 FROM contacts WHERE owner = ? AND contact = ?")
      .get(nameKey(owner), nameKey(contact)) !== undefined;
  }

  // ---- registry ------------------------------------------------------------------------------

  /** Records a login; returns the registry row's sequence number. */
  recordLogin(user: string, host: string, port: number, at = Date.now()): number {
    const result = this.#db.sql(
      "INSERT INTO registry (user, host, port, login_at) VALUES (?, ?, ?, ?)",
    ).run(nameKey(user), host, port, at);
    return Number(result.lastInsertRowid);
  }

  /** Records the end of a login session. */
  recordLogout(seq: number, at = Date.now()): void {
    this.#db.sql("UPDATE registry SET logout_at = ? WHERE seq = ?").run(at, seq);
  }

  /** Re-opens a session row (a dropped control connection re-attached). */
  reopenLogin(seq: number, host: string, port: number): void {
    this.#db.sql("UPDATE registry SET logout_at = NULL, host = ?, port = ? WHERE seq = ?")
      .run(host, port, seq);
  }

  /**
   * Sets the logout time of `user`'s latest finished session to the time its client saved
   * while the server was unreachable (the client knows the true time; the server only
   * guessed it when the connection dropped).
   */
  correctLastLogout(user: string, at: number): void {
    this.#db.sql(
      `UPDATE registry SET logout_at = ? WHERE seq = (
         SELECT seq FROM registry WHERE user = ? AND logout_at IS NOT NULL
         ORDER BY seq DESC LIMIT 1) AND login_at <= ?`,
    ).run(at, nameKey(user), at);
  }

  /**
   * The latest registry row of each user, newest login first; or, for one user, that user's
   * last `limit` rows.
   */
  registry(user?: string, limit = 20): RegistryRow[] {
    const rows = (user === undefined
      ? this.#db.sql(
        `SELECT u.name AS user, r.host, r.port, r.login_at, r.logout_at FROM registry r
         JOIN users u ON u.name_key = r.user
         WHERE r.seq IN (SELECT max(seq) FROM registry GROUP BY user)
         ORDER BY r.login_at DESC`,
      ).all()
      : this.#db.sql(
        `SELECT u.name AS user, r.host, r.port, r.login_at, r.logout_at FROM registry r
         JOIN users u ON u.name_key = r.user WHERE r.user = ?
         ORDER BY r.seq DESC LIMIT ?`,
      ).all(nameKey(user), limit)) as {
        user: string;
        host: string;
        port: number;
        login_at: number;
        logout_at: number | null;
      }[];
    return rows.map((r) => ({
      user: r.user,
      host: r.host,
      port: r.port,
      loginAt: r.login_at,
      logoutAt: r.logout_at,
    }));
  }

  /** Closes registry rows left open by a previous run that ended without recording them. */
  closeDanglingLogins(at = Date.now()): number {
    return Number(
      this.#db.sql("UPDATE registry SET logout_at = ? WHERE logout_at IS NULL").run(at)
        .changes,
    );
  }

  /** The open-or-latest registry row number of a user, to re-open on session resume. */
  latestLogin(user: string): number | undefined {
    const row = this.#db.sql(
      "SELECT max(seq) AS seq FROM registry WHERE user = ?",
    ).get(nameKey(user)) as { seq: number | null };
    return row.seq ?? undefined;
  }

  // ---- mail ----------------------------------------------------------------------------------

  /**
   * Stores a pending message, committed before this returns. A message this sender sent this
   * recipient before is not stored again ("duplicate"): neither while it waits, nor once it was
   * read (for as long as {@link forgetReadMail} keeps its id), so a resend after a crash is never
   * shown twice. Returns "full" when the mailbox holds `max` already.
   */
  storeMail(
    mail: { recipient: string; sender: string; msgId: string; ts: number; body: string },
    max: number,
    now = Date.now(),
  ): "stored" | "duplicate" | "full" {
    const recipient = nameKey(mail.recipient);
    const sender = nameKey(mail.sender);
    const exists = this.#db.sql(
      `SELECT 1 FROM mail WHERE recipient = ? AND sender = ? AND msg_id = ?
       UNION ALL SELECT 1 FROM mail_read WHERE recipient = ? AND sender = ? AND msg_id = ?`,
    ).get(recipient, sender, mail.msgId, recipient, sender, mail.msgId);
    if (exists) return "duplicate";
    const size = this.#mailboxSize(recipient);
    if (size >= max) return "full";
    this.#db.sql(
      `INSERT INTO mail (recipient, sender, msg_id, ts, body, stored_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ).run(recipient, sender, mail.msgId, mail.ts, mail.body, now);
    this.#mailboxSizes.set(recipient, size + 1);
    return "stored";
  }

  /**
   * How many messages wait for `recipientKey`, counted once and then kept up to date here (the
   * server is the only writer): counting a large mailbox before every store was the cost.
   */
  #mailboxSize(recipientKey: string): number {
    let size = this.#mailboxSizes.get(recipientKey);
    if (size === undefined) {
      size = (this.#db.sql("SELECT count(*) AS n FROM mail WHERE recipient = ?")
        .get(recipientKey) as { n: number }).n;
      this.#mailboxSizes.set(recipientKey, size);
    }
    return size;
  }

  countMail(recipient: string, sender?: string): number {
    if (sender === undefined) return this.#mailboxSize(nameKey(recipient));
    const row = this.#db.sql("SELECT count(*) AS n FROM mail WHERE recipient = ? AND sender = ?")
      .get(nameKey(recipient), nameKey(sender));
    return (row as { n: number }).n;
  }

  /** Who has pending messages for `recipient`: count and newest send time, oldest first. */
  mailbox(recipient: string): MailboxEntry[] {
    return this.#db.sql(
      `SELECT u.name AS "from", count(*) AS count, max(m.ts) AS newest FROM mail m
       JOIN users u ON u.name_key = m.sender WHERE m.recipient = ?
       GROUP BY m.sender ORDER BY min(m.seq)`,
    ).all(nameKey(recipient)) as unknown as MailboxEntry[];
  }

  /** Pending messages from `sender` to `recipient` in the order they were stored. */
  pendingMail(recipient: string, sender: string, limit: number): PendingMail[] {
    return (this.#db.sql(
      `SELECT msg_id, ts, body FROM mail WHERE recipient = ? AND sender = ?
       ORDER BY seq LIMIT ?`,
    ).all(nameKey(recipient), nameKey(sender), limit) as {
      msg_id: string;
      ts: number;
      body: string;
    }[]).map((r) => ({ msgId: r.msg_id, ts: r.ts, body: r.body }));
  }

  /**
   * Deletes delivered mail and records a read receipt for each (except the `rejected` ones), in
   * one transaction; the ids are kept in `mail_read` so a resend is not stored again. Ids that
   * are not pending (already confirmed) are ignored. Returns the ids deleted.
   */
  confirmMail(
    recipient: string,
    sender: string,
    msgIds: string[],
    now = Date.now(),
    rejected: ReadonlySet<string> = new Set(),
  ): string[] {
    const r = nameKey(recipient);
    const s = nameKey(sender);
    const del = this.#db.sql(
      "DELETE FROM mail WHERE recipient = ? AND sender = ? AND msg_id = ?",
    );
    const receipt = this.#db.sql(
      `INSERT INTO receipts (sender, msg_id, reader, read_at) VALUES (?, ?, ?, ?)
       ON CONFLICT DO NOTHING`,
    );
    const read = this.#db.sql(
      `INSERT INTO mail_read (recipient, sender, msg_id, read_at) VALUES (?, ?, ?, ?)
       ON CONFLICT DO NOTHING`,
    );
    const done: string[] = [];
    this.#mailboxSizes.delete(r); // recounted at the next store
    this.#db.transaction(() => {
      for (const id of msgIds) {
        if (del.run(r, s, id).changes === 1) {
          read.run(r, s, id, now);
          // A message the reader's client refused (forged, undecryptable) was not read.
          if (!rejected.has(id)) receipt.run(s, id, r, now);
          done.push(id);
        }
      }
    });
    return done;
  }

  /**
   * Forgets the ids of mail read before `before` (ms since the epoch): a resend of one of those
   * would be stored again. Returns how many were forgotten.
   */
  forgetReadMail(before: number): number {
    return Number(this.#db.sql("DELETE FROM mail_read WHERE read_at < ?").run(before).changes);
  }

  /** Read receipts waiting for `sender`, oldest first. */
  pendingReceipts(sender: string, limit: number, reader?: string): Receipt[] {
    const rows = (reader === undefined
      ? this.#db.sql(
        `SELECT r.msg_id, u.name AS reader, r.read_at FROM receipts r
         JOIN users u ON u.name_key = r.reader WHERE r.sender = ? ORDER BY r.read_at LIMIT ?`,
      ).all(nameKey(sender), limit)
      : this.#db.sql(
        `SELECT r.msg_id, u.name AS reader, r.read_at FROM receipts r
         JOIN users u ON u.name_key = r.reader WHERE r.sender = ? AND r.reader = ?
         ORDER BY r.read_at LIMIT ?`,
      ).all(nameKey(sender), nameKey(reader), limit)) as {
        msg_id: string;
        reader: string;
        read_at: number;
      }[];
    return rows.map((r) => ({ msgId: r.msg_id, reader: r.reader, readAt: r.read_at }));
  }

  deleteReceipts(sender: string, msgIds: string[]): void {
    const del = this.#db.sql("DELETE FROM receipts WHERE sender = ? AND msg_id = ?");
    this.#db.transaction(() => {
      for (const id of msgIds) del.run(nameKey(sender), id);
    });
  }

  // ---- sessions ------------------------------------------------------------------------------

  saveSession(tokenHash: Uint8Array, user: string, now = Date.now()): void {
    this.#db.sql("INSERT INTO sessions (token_hash, user, created_at) VALUES (?, ?, ?)")
      .run(tokenHash, nameKey(user), now);
  }

  /** The user a token belongs to, if it exists and is younger than `maxAgeMs`. */
  sessionUser(tokenHash: Uint8Array, maxAgeMs: number, now = Date.now()): string | undefined {
    const row = this.#db.sql(
      `SELECT u.name FROM sessions s JOIN users u ON u.name_key = s.user
       WHERE s.token_hash = ? AND s.created_at > ?`,
    ).get(tokenHash, now - maxAgeMs) as { name: string } | undefined;
    return row?.name;
  }

  deleteSession(tokenHash: Uint8Array): void {
    this.#db.sql("DELETE FROM sessions WHERE token_hash = ?").run(tokenHash);
  }

  close(): void {
    this.#db.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
