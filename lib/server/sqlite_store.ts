/**
 * The server's state in one SQLite file (`node:sqlite`), the embedded default. WAL with
 * synchronous=NORMAL: a committed transaction survives a kill -9 of the process. The calls run
 * synchronously underneath; each resolves once its work is committed.
 */
import { join } from "../util/paths.ts";
import { Database } from "../util/sqlite.ts";
import { ownerOnlyDir } from "../util/owner_only.ts";
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

/** The database file's name inside the data directory. */
export const SQLITE_FILE = "confab-server.sqlite";

/** Runs synchronous work as a promise: a throw becomes a rejection, as with the other store. */
function settle<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error);
  }
}

/** What waits for one recipient: messages and bytes, in all and per sender (name key). */
interface MailboxSize {
  n: number;
  bytes: number;
  senders: Map<string, { n: number; bytes: number }>;
}

export class SqliteStore implements ServerStore {
  /** The database file. */
  readonly path: string;
  readonly #db: Database;
  readonly #mailboxSizes = new Map<string, MailboxSize>();
  /** Mail waiting for the next group commit, in arrival order. */
  readonly #mailQueue: {
    mail: NewMail;
    limits: Required<MailLimits>;
    now: number;
    done: PromiseWithResolvers<StoreMailResult>;
  }[] = [];
  #mailTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  /** Who is online: this process is the only instance, so the directory lives in memory. */
  readonly #online = new Map<string, PresenceRecord & { attach: string; registrySeq: number }>();
  #run: StoreRunOptions | undefined;
  readonly shared = false;

  /** Opens (creating) `<dataDir>/confab-server.sqlite` and brings its schema up to date. */
  constructor(dataDir: string) {
    ownerOnlyDir(dataDir);
    this.path = join(dataDir, SQLITE_FILE);
    // The log is folded back on a worker thread, as the client's is: on this thread a
    // checkpoint's fsyncs stall every connection's lookups and heartbeats behind it.
    this.#db = new Database(this.path, MIGRATIONS.map((m) => m.sqlite), {
      checkpointOffThread: true,
    });
  }

  /** Whether the log is folded on a worker thread once it grows (see lib/util/sqlite.ts). */
  get checkpointsOffThread(): boolean {
    return this.#db.checkpointsOffThread;
  }

  get location(): string {
    return this.path;
  }

  schemaVersion(): Promise<number> {
    return settle(() => this.#db.schemaVersion);
  }

  // ---- users ---------------------------------------------------------------------------------

  createUser(user: NewUser, now = Date.now()): Promise<boolean> {
    return settle(() =>
      this.#db.sql(
        `INSERT INTO users (name_key, name, salt, hash, kdf, public_key, mail_key, mail_key_sig,
                            created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name_key) DO NOTHING`,
      ).run(
        nameKey(user.name),
        user.name,
        user.salt,
        user.hash,
        user.kdf ?? LEGACY_KDF,
        user.publicKey,
        user.mailKey ?? "",
        user.mailKeySig ?? "",
        now,
      ).changes === 1
    );
  }

  getUser(name: string): Promise<UserRecord | undefined> {
    return settle(() => {
      const row = this.#db.sql(
        `SELECT ${USER_COLUMNS}
         FROM users WHERE name_key = ?`,
      ).get(nameKey(name)) as UserRow | undefined;
      return row && toUser(row);
    });
  }

  userCount(): Promise<number> {
    return settle(() => (this.#db.sql("SELECT count(*) AS n FROM users").get() as { n: number }).n);
  }

  updatePassword(name: string, password: PasswordHash): Promise<boolean> {
    return settle(() =>
      this.#db.sql("UPDATE users SET salt = ?, hash = ?, kdf = ? WHERE name_key = ?")
        .run(password.salt, password.hash, password.kdf, nameKey(name)).changes === 1
    );
  }

  // ---- contacts ------------------------------------------------------------------------------

  addContact(owner: string, contact: string, now = Date.now()): Promise<boolean> {
    return settle(() =>
      this.#db.sql(
        "INSERT INTO contacts (owner, contact, added_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
      ).run(nameKey(owner), nameKey(contact), now).changes === 1
    );
  }

  removeContact(owner: string, contact: string): Promise<boolean> {
    return settle(() =>
      this.#db.sql("DELETE FROM contacts WHERE owner = ? AND contact = ?")
        .run(nameKey(owner), nameKey(contact)).changes === 1
    );
  }

  countContacts(owner: string): Promise<number> {
    return settle(() =>
      (this.#db.sql("SELECT count(*) AS n FROM contacts WHERE owner = ?")
        .get(nameKey(owner)) as { n: number }).n
    );
  }

  listContacts(owner: string): Promise<string[]> {
    return settle(() =>
      (this.#db.sql(
        `SELECT u.name FROM contacts c JOIN users u ON u.name_key = c.contact
         WHERE c.owner = ? ORDER BY c.added_at, u.name`,
      ).all(nameKey(owner)) as { name: string }[]).map((r) => r.name)
    );
  }

  listWatchers(contact: string): Promise<string[]> {
    return settle(() =>
      (this.#db.sql(
        `SELECT c.owner FROM contacts c
         JOIN contacts back ON back.owner = c.contact AND back.contact = c.owner
         WHERE c.contact = ?`,
      ).all(nameKey(contact)) as { owner: string }[]).map((r) => r.owner)
    );
  }

  listContactRequests(user: string, limit: number): Promise<string[]> {
    return settle(() =>
      (this.#db.sql(
        `SELECT u.name FROM contacts c JOIN users u ON u.name_key = c.owner
         WHERE c.contact = ? AND NOT EXISTS
           (SELECT 1 FROM contacts back WHERE back.owner = c.contact AND back.contact = c.owner)
         ORDER BY c.added_at, u.name LIMIT ?`,
      ).all(nameKey(user), limit) as { name: string }[]).map((r) => r.name)
    );
  }

  isMutual(a: string, b: string): Promise<boolean> {
    return settle(() =>
      (this.#db.sql(
        `SELECT count(*) AS n FROM contacts
         WHERE (owner = ? AND contact = ?) OR (owner = ? AND contact = ?)`,
      ).get(nameKey(a), nameKey(b), nameKey(b), nameKey(a)) as { n: number }).n === 2
    );
  }

  isContact(owner: string, contact: string): Promise<boolean> {
    return settle(() =>
      this.#db.sql("SELECT 1 FROM contacts WHERE owner = ? AND contact = ?")
        .get(nameKey(owner), nameKey(contact)) !== undefined
    );
  }

  lookup(asker: string, target: string): Promise<LookupRecord | undefined> {
    return settle(() => {
      // One statement for what was four (the user with its hash and salt, which cost more to
      // copy out than the rest together, two contact rows, a receipt): ≈ 20 against 50 µs.
      const row = this.#db.sql(
        `SELECT u.name_key, u.name, u.public_key, u.mail_key, u.mail_key_sig,
           EXISTS (SELECT 1 FROM contacts WHERE owner = ?1 AND contact = u.name_key) AS mine,
           EXISTS (SELECT 1 FROM contacts WHERE owner = u.name_key AND contact = ?1) AS theirs,
           EXISTS (SELECT 1 FROM receipts WHERE sender = ?1 AND reader = u.name_key) AS receipts
         FROM users u WHERE u.name_key = ?2`,
      ).get(nameKey(asker), nameKey(target)) as LookupSqlRow | undefined;
      if (!row) return undefined;
      const live = this.#online.get(row.name_key);
      return toLookup(row, live && presence(live));
    });
  }

  // ---- registry ------------------------------------------------------------------------------

  recordLogin(user: string, host: string, port: number, at = Date.now()): Promise<number> {
    return settle(() =>
      Number(
        this.#db.sql("INSERT INTO registry (user, host, port, login_at) VALUES (?, ?, ?, ?)")
          .run(nameKey(user), host, port, at).lastInsertRowid,
      )
    );
  }

  recordLogout(seq: number, at = Date.now()): Promise<void> {
    return settle(() => this.#logout(seq, at));
  }

  reopenLogin(seq: number, host: string, port: number): Promise<void> {
    return settle(() => {
      this.#db.sql("UPDATE registry SET logout_at = NULL, host = ?, port = ? WHERE seq = ?")
        .run(host, port, seq);
    });
  }

  correctLastLogout(user: string, at: number): Promise<void> {
    return settle(() => {
      this.#db.sql(
        `UPDATE registry SET logout_at = ? WHERE seq = (
           SELECT seq FROM registry WHERE user = ? AND logout_at IS NOT NULL
           ORDER BY seq DESC LIMIT 1) AND login_at <= ?`,
      ).run(at, nameKey(user), at);
    });
  }

  registry(user?: string, limit = 20): Promise<RegistryRow[]> {
    return settle(() => {
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
        ).all(nameKey(user), limit)) as unknown as RegistrySqlRow[];
      return rows.map(toRegistryRow);
    });
  }

  closeDanglingLogins(at = Date.now()): Promise<number> {
    return settle(() =>
      Number(
        this.#db.sql("UPDATE registry SET logout_at = ? WHERE logout_at IS NULL").run(at).changes,
      )
    );
  }

  // ---- mail ----------------------------------------------------------------------------------

  /**
   * Group commit: the mail that arrives before the next turn of the event loop is stored in
   * one transaction, in arrival order, and each call resolves once that transaction is
   * committed. One commit per message was the cost of a burst (a commit writes the WAL).
   */
  storeMail(
    mail: NewMail,
    limits: number | MailLimits,
    now = Date.now(),
  ): Promise<StoreMailResult> {
    if (this.#closed) return Promise.reject(new Error("the store is closed"));
    const done = Promise.withResolvers<StoreMailResult>();
    this.#mailQueue.push({ mail, limits: fullLimits(limits), now, done });
    this.#mailTimer ??= setTimeout(() => this.#commitMail(), 0);
    return done.promise;
  }

  /** Commits the mail waiting in the queue (every read of mail does this first). */
  #commitMail(): void {
    clearTimeout(this.#mailTimer);
    this.#mailTimer = undefined;
    const batch = this.#mailQueue.splice(0);
    if (batch.length === 0) return;
    let outcomes: ({ ok: true; result: StoreMailResult } | { ok: false; error: unknown })[];
    try {
      outcomes = this.#db.transaction(() =>
        batch.map(({ mail, limits, now }) => {
          // A message that fails is undone alone; the others are committed.
          this.#db.sql("SAVEPOINT one_mail").run();
          try {
            const result = this.#storeOne(mail, limits, now);
            this.#db.sql("RELEASE one_mail").run();
            return { ok: true as const, result };
          } catch (error) {
            this.#db.sql("ROLLBACK TO one_mail").run();
            this.#db.sql("RELEASE one_mail").run();
            return { ok: false as const, error };
          }
        })
      );
    } catch (error) {
      this.#mailboxSizes.clear(); // not committed: counted again from the file
      for (const { done } of batch) done.reject(error);
      return;
    }
    batch.forEach(({ done }, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) {
        const { mail } = batch[i]!;
        if (outcome.result === "stored") {
          this.#emit({ kind: "mail", to: nameKey(mail.recipient), from: nameKey(mail.sender) });
        }
        done.resolve(outcome.result);
      } else done.reject(outcome.error);
    });
  }

  #storeOne(mail: NewMail, limits: Required<MailLimits>, now: number): StoreMailResult {
    const recipient = nameKey(mail.recipient);
    const sender = nameKey(mail.sender);
    const exists = this.#db.sql(
      `SELECT 1 FROM mail WHERE recipient = ? AND sender = ? AND msg_id = ?
       UNION ALL SELECT 1 FROM mail_read WHERE recipient = ? AND sender = ? AND msg_id = ?`,
    ).get(recipient, sender, mail.msgId, recipient, sender, mail.msgId);
    if (exists) return "duplicate";
    const size = this.#mailboxSize(recipient);
    const bytes = mail.body.length; // base64url: one byte a character
    if (size.n >= limits.messages || size.bytes + bytes > limits.bytes) return "full";
    let share = size.senders.get(sender);
    if (share === undefined) {
      share = this.#db.sql(
        `SELECT count(*) AS n, coalesce(sum(length(body)), 0) AS bytes FROM mail
         WHERE recipient = ? AND sender = ?`,
      ).get(recipient, sender) as { n: number; bytes: number };
      size.senders.set(sender, share);
    }
    if (share.n >= limits.senderMessages || share.bytes + bytes > limits.senderBytes) {
      return "quota";
    }
    this.#db.sql(
      `INSERT INTO mail (recipient, sender, msg_id, ts, body, stored_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ).run(recipient, sender, mail.msgId, mail.ts, mail.body, now);
    size.n++;
    size.bytes += bytes;
    share.n++;
    share.bytes += bytes;
    return "stored";
  }

  /**
   * How many messages (and bytes) wait for `recipientKey`, counted once and then kept up to date
   * here (this process is the only writer of the file): counting a large mailbox before every
   * store was the cost. Each sender's share is counted at its first store, and kept too.
   */
  #mailboxSize(recipientKey: string): MailboxSize {
    let size = this.#mailboxSizes.get(recipientKey);
    if (size === undefined) {
      const row = this.#db.sql(
        "SELECT count(*) AS n, coalesce(sum(length(body)), 0) AS bytes FROM mail WHERE recipient = ?",
      ).get(recipientKey) as { n: number; bytes: number };
      size = { n: row.n, bytes: row.bytes, senders: new Map() };
      this.#mailboxSizes.set(recipientKey, size);
    }
    return size;
  }

  countMail(recipient: string, sender?: string): Promise<number> {
    return settle(() => {
      this.#commitMail();
      if (sender === undefined) return this.#mailboxSize(nameKey(recipient)).n;
      return (this.#db.sql("SELECT count(*) AS n FROM mail WHERE recipient = ? AND sender = ?")
        .get(nameKey(recipient), nameKey(sender)) as { n: number }).n;
    });
  }

  mailbox(recipient: string): Promise<MailboxEntry[]> {
    return settle(() => {
      this.#commitMail();
      return (this.#db.sql(
        `SELECT u.name AS "from", count(*) AS count, max(m.ts) AS newest FROM mail m
         JOIN users u ON u.name_key = m.sender WHERE m.recipient = ?
         GROUP BY m.sender ORDER BY min(m.seq)`,
      ).all(nameKey(recipient)) as unknown as MailboxEntry[]).map((r) => ({
        from: r.from,
        count: r.count,
        newest: r.newest,
      }));
    });
  }

  pendingMail(
    recipient: string,
    sender: string,
    limit: number,
    after?: string,
  ): Promise<PendingMail[]> {
    return settle(() => {
      this.#commitMail();
      const r = nameKey(recipient);
      const s = nameKey(sender);
      const rows = after === undefined
        ? this.#db.sql(
          `SELECT msg_id, ts, body FROM mail WHERE recipient = ? AND sender = ?
           ORDER BY seq LIMIT ?`,
        ).all(r, s, limit)
        : this.#db.sql(
          `SELECT msg_id, ts, body FROM mail WHERE recipient = ? AND sender = ? AND seq > (
             SELECT seq FROM mail WHERE recipient = ? AND sender = ? AND msg_id = ?)
           ORDER BY seq LIMIT ?`,
        ).all(r, s, r, s, after, limit);
      return (rows as unknown as MailSqlRow[]).map(toPendingMail);
    });
  }

  confirmMail(
    recipient: string,
    sender: string,
    msgIds: string[],
    now = Date.now(),
    rejected: ReadonlySet<string> = new Set(),
    signed: ReadonlyMap<string, SignedRead> = new Map(),
  ): Promise<string[]> {
    return settle(() => {
      this.#commitMail();
      const r = nameKey(recipient);
      const s = nameKey(sender);
      this.#mailboxSizes.delete(r); // recounted at the next store
      // One statement each for the whole batch (up to 500), not three per message: the
      // statements' own cost was most of a confirmed message's.
      const done = this.#db.transaction(() => {
        const gone = new Set(
          (this.#db.sql(
            `DELETE FROM mail WHERE recipient = ? AND sender = ?
             AND msg_id IN (SELECT value FROM json_each(?)) RETURNING msg_id`,
          ).all(r, s, JSON.stringify(msgIds)) as { msg_id: string }[]).map((row) => row.msg_id),
        );
        const deleted = msgIds.filter((id) => gone.delete(id)); // in the order given, each once
        if (deleted.length === 0) return deleted;
        this.#db.sql(
          `INSERT INTO mail_read (recipient, sender, msg_id, read_at)
           SELECT ?, ?, value, ? FROM json_each(?) WHERE true ON CONFLICT DO NOTHING`,
        ).run(r, s, now, JSON.stringify(deleted));
        // A message the reader's client refused (forged, undecryptable) was not read: its
        // sender is told it was not delivered, in this same commit.
        const outcomes = deleted.map((id) => {
          if (rejected.has(id)) return [id, now, null, 1];
          const read = signed.get(id);
          return [id, read?.readAt ?? now, read?.sig ?? null, 0];
        });
        this.#db.sql(
          `INSERT INTO receipts (sender, msg_id, reader, read_at, sig, rejected)
           SELECT ?, value ->> 0, ?, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?)
           WHERE true ON CONFLICT DO NOTHING`,
        ).run(s, r, JSON.stringify(outcomes));
        return deleted;
      });
      if (done.length > 0) this.#emit({ kind: "receipts", to: s });
      return done;
    });
  }

  forgetReadMail(before: number): Promise<number> {
    return settle(() => {
      this.#commitMail();
      return Number(this.#db.sql("DELETE FROM mail_read WHERE read_at < ?").run(before).changes);
    });
  }

  pendingReceipts(sender: string, limit: number, reader?: string): Promise<Receipt[]> {
    return settle(() => {
      // Asked at every lookup and re-attach, and almost always empty: a look at the key first
      // (≈ 5 µs) spares the join and the sorter (≈ 30-100 µs even with no row).
      const any = this.#db.sql("SELECT 1 FROM receipts WHERE sender = ? LIMIT 1").get(
        nameKey(sender),
      );
      if (any === undefined) return [];
      const rows = (reader === undefined
        ? this.#db.sql(
          `SELECT r.msg_id, u.name AS reader, r.read_at, r.sig, r.rejected FROM receipts r
           JOIN users u ON u.name_key = r.reader WHERE r.sender = ? ORDER BY r.read_at LIMIT ?`,
        ).all(nameKey(sender), limit)
        : this.#db.sql(
          `SELECT r.msg_id, u.name AS reader, r.read_at, r.sig, r.rejected FROM receipts r
           JOIN users u ON u.name_key = r.reader WHERE r.sender = ? AND r.reader = ?
           ORDER BY r.read_at LIMIT ?`,
        ).all(nameKey(sender), nameKey(reader), limit)) as unknown as ReceiptSqlRow[];
      return rows.map(toReceipt);
    });
  }

  deleteReceipts(sender: string, msgIds: string[]): Promise<void> {
    return settle(() => {
      const del = this.#db.sql("DELETE FROM receipts WHERE sender = ? AND msg_id = ?");
      this.#db.transaction(() => {
        for (const id of msgIds) del.run(nameKey(sender), id);
      });
    });
  }

  // ---- sessions ------------------------------------------------------------------------------

  addRelayBytes(pair: string, day: number, bytes: number): Promise<number> {
    return settle(() => {
      if (bytes === 0) {
        const row = this.#db.sql("SELECT bytes FROM relay_usage WHERE pair = ? AND day = ?")
          .get(pair, day) as { bytes: number } | undefined;
        return row?.bytes ?? 0;
      }
      return (this.#db.sql(
        `INSERT INTO relay_usage (pair, day, bytes) VALUES (?, ?, ?)
         ON CONFLICT (pair, day) DO UPDATE SET bytes = bytes + excluded.bytes RETURNING bytes`,
      ).get(pair, day, bytes) as { bytes: number }).bytes;
    });
  }

  forgetRelayUsage(day: number): Promise<number> {
    return settle(() =>
      Number(this.#db.sql("DELETE FROM relay_usage WHERE day < ?").run(day).changes)
    );
  }

  saveSession(
    tokenHash: Uint8Array,
    user: string,
    options: { clientKey?: string; now?: number } = {},
  ): Promise<void> {
    return settle(() => {
      this.#db.sql(
        "INSERT INTO sessions (token_hash, user, created_at, client_key) VALUES (?, ?, ?, ?)",
      ).run(tokenHash, nameKey(user), options.now ?? Date.now(), options.clientKey ?? null);
    });
  }

  findSession(tokenHash: Uint8Array, ages: SessionAges): Promise<SessionRecord | undefined> {
    const now = ages.now ?? Date.now();
    return settle(() => {
      const row = this.#db.sql(
        `SELECT ${SESSION_COLUMNS} FROM sessions s JOIN users u ON u.name_key = s.user
         WHERE s.token_hash = ? AND s.created_at > ?
           AND (s.replaced_at IS NULL OR s.replaced_at > ?)`,
      ).get(tokenHash, now - ages.maxAgeMs, now - ages.graceMs) as SessionSqlRow | undefined;
      return row && toSession(row);
    });
  }

  deleteSession(tokenHash: Uint8Array): Promise<void> {
    return settle(() => {
      this.#db.sql("DELETE FROM sessions WHERE token_hash = ?").run(tokenHash);
    });
  }

  // ---- presence and events --------------------------------------------------------------------

  run(options: StoreRunOptions): Promise<void> {
    this.#run = options;
    // Rows left open by a run that died (kill -9): those users are not connected any more.
    return this.closeDanglingLogins().then(() => {});
  }

  /** Hands `event` to the server after the current call returned (its change is committed). */
  #emit(event: StoreEvent): void {
    const run = this.#run;
    if (run) queueMicrotask(() => run.onEvent(event));
  }

  attach(a: Attachment): Promise<void> {
    return settle(() => this.#attach(a));
  }

  resume(r: Resumption, now = Date.now()): Promise<Resumed | undefined> {
    return settle(() => this.#db.transaction(() => this.#resume(r, now)));
  }

  resumeMany(rs: readonly Resumption[], now = Date.now()): Promise<(Resumed | undefined)[]> {
    return settle(() => this.#db.transaction(() => rs.map((r) => this.#resume(r, now))));
  }

  #resume(r: Resumption, now: number): Resumed | undefined {
    const user = this.#db.sql(
      `SELECT u.name_key, u.name, s.created_at, s.replaced_at
       FROM sessions s JOIN users u ON u.name_key = s.user
       WHERE s.token_hash = ? AND s.created_at > ?
         AND (s.replaced_at IS NULL OR s.replaced_at > ?)
         AND (s.client_key IS NULL OR s.client_key = ?)`,
    ).get(r.tokenHash, now - r.maxAgeMs, now - r.graceMs, r.staticKey) as
      | { name_key: string; name: string; created_at: number; replaced_at: number | null }
      | undefined;
    if (!user) return undefined;
    // A fresh token; the presented one lives on for its grace, unless its successor is used.
    // The current token, used: every other token of the user goes (older ones, and successors
    // of an older one that never reached the client). A replaced one, used again within its
    // grace: the others stay, for a successor of it may have reached the client after all,
    // over another connection (a stale resume of a client that gave up, served after the
    // attempt that succeeded, deleted the token that client then held).
    if (user.replaced_at === null) {
      this.#db.sql("DELETE FROM sessions WHERE user = ? AND token_hash <> ?")
        .run(user.name_key, r.tokenHash);
    }
    this.#db.sql(
      `UPDATE sessions SET replaced_at = coalesce(replaced_at, ?),
                           client_key = coalesce(client_key, ?)
       WHERE token_hash = ?`,
    ).run(now, r.staticKey, r.tokenHash);
    this.#db.sql(
      "INSERT INTO sessions (token_hash, user, created_at, client_key) VALUES (?, ?, ?, ?)",
    ).run(r.newTokenHash, user.name_key, user.created_at, r.staticKey);
    const latest = this.#db.sql(
      "SELECT seq, login_at FROM registry WHERE user = ? ORDER BY seq DESC LIMIT 1",
    ).get(user.name_key) as { seq: number; login_at: number } | undefined;
    const login = latest ?? {
      seq: Number(
        this.#db.sql("INSERT INTO registry (user, host, port, login_at) VALUES (?, ?, ?, ?)")
          .run(user.name_key, r.host, r.peerPort, now).lastInsertRowid,
      ),
      login_at: now,
    };
    this.#attach({
      user: user.name,
      host: r.host,
      peerPort: r.peerPort,
      loginAt: login.login_at,
      registrySeq: login.seq,
      attach: r.attach,
      staticKey: r.staticKey,
    });
    return { user: user.name, registrySeq: login.seq, loginAt: login.login_at };
  }

  #attach(a: Attachment): void {
    const key = nameKey(a.user);
    const previous = this.#online.get(key);
    this.#db.sql("UPDATE registry SET logout_at = NULL, host = ?, port = ? WHERE seq = ?")
      .run(a.host, a.peerPort, a.registrySeq);
    this.#online.set(key, {
      user: a.user,
      host: a.host,
      peerPort: a.peerPort,
      loginAt: a.loginAt,
      instance: this.#run?.name ?? "",
      staticKey: a.staticKey,
      attach: a.attach,
      registrySeq: a.registrySeq,
    });
    if (previous) {
      if (previous.registrySeq !== a.registrySeq) this.#logout(previous.registrySeq, a.loginAt);
      this.#emit({ kind: "kick", user: key, attach: a.attach, replaced: previous.attach });
    } else {
      // With the name, the server need not look the user up to tell their watchers.
      this.#emit({ kind: "presence", user: key, online: true, name: a.user });
    }
  }

  detach(user: string, attach: string, at = Date.now()): Promise<boolean> {
    return settle(() => this.#detach(user, attach, at));
  }

  detachMany(
    places: readonly { user: string; attach: string }[],
    at = Date.now(),
  ): Promise<boolean[]> {
    return settle(() =>
      this.#db.transaction(() => places.map(({ user, attach }) => this.#detach(user, attach, at)))
    );
  }

  /** Takes `user` out if `attach` still holds their place; whether it did. */
  #detach(user: string, attach: string, at: number): boolean {
    const key = nameKey(user);
    const current = this.#online.get(key);
    if (current?.attach !== attach) return false;
    this.#online.delete(key);
    this.#logout(current.registrySeq, at);
    this.#emit({ kind: "presence", user: key, online: false });
    return true;
  }

  #logout(seq: number, at: number): void {
    this.#db.sql("UPDATE registry SET logout_at = ? WHERE seq = ?").run(at, seq);
  }

  presenceOf(user: string): Promise<PresenceRecord | undefined> {
    const p = this.#online.get(nameKey(user));
    return Promise.resolve(p && presence(p));
  }

  onlineUsers(): Promise<PresenceRecord[]> {
    return Promise.resolve(
      [...this.#online.values()].map(presence).sort((a, b) => b.loginAt - a.loginAt),
    );
  }

  onlineAmong(users: readonly string[]): Promise<Set<string>> {
    return Promise.resolve(new Set(users.map(nameKey).filter((k) => this.#online.has(k))));
  }

  publish(event: StoreEvent): Promise<void> {
    this.#emit(event);
    return Promise.resolve();
  }

  deleteUserSessions(user: string, except?: Uint8Array): Promise<number> {
    return settle(() =>
      Number(
        this.#db.sql("DELETE FROM sessions WHERE user = ? AND token_hash IS NOT ?")
          .run(nameKey(user), except ?? null).changes,
      )
    );
  }

  purgeSessions(ages: SessionAges): Promise<number> {
    const now = ages.now ?? Date.now();
    return settle(() =>
      Number(
        this.#db.sql("DELETE FROM sessions WHERE created_at <= ? OR replaced_at <= ?")
          .run(now - ages.maxAgeMs, now - ages.graceMs).changes,
      )
    );
  }

  close(): Promise<void> {
    this.#run = undefined;
    return settle(() => {
      this.#commitMail();
      this.#closed = true;
      this.#db.close();
    });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function presence(p: PresenceRecord): PresenceRecord {
  return {
    user: p.user,
    host: p.host,
    peerPort: p.peerPort,
    loginAt: p.loginAt,
    instance: p.instance,
    staticKey: p.staticKey,
  };
}
