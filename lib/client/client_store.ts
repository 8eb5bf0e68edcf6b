/**
 * A user's local state in one SQLite file under the home dir: chat history with delivery
 * marks, the public keys seen for other users, and small settings (a logout time saved while
 * the server was unreachable). Knows nothing of sockets.
 */
import { Database } from "../util/sqlite.ts";
import { type ModeFix, ownerOnlyDir } from "../util/owner_only.ts";
import { join } from "../util/paths.ts";
import type { SignedGroupMessage } from "../peer/group_state.ts";
import { MAX_GROUP_MARKS } from "../protocol/messages.ts";

/** Keep the full-text index in step with the messages table. */
const FTS_TRIGGERS = `
  CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES (new.rowid, new.text);
  END;
  CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
  END;`;

const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE messages (
    id        TEXT PRIMARY KEY,           -- made by the sender; receivers drop duplicates by it
    chat      TEXT NOT NULL,              -- the other user's name key for a 1:1 chat
    sender    TEXT NOT NULL,
    ts        INTEGER NOT NULL,           -- send time, ms since the epoch
    text      TEXT NOT NULL,
    outgoing  INTEGER NOT NULL,
    mark      TEXT NOT NULL               -- '' (sending), '*' (stored), '**' (delivered), '!' (failed)
  ) STRICT;
  CREATE INDEX messages_by_chat ON messages(chat, ts);
  CREATE TABLE known_keys (
    user       TEXT PRIMARY KEY,          -- name key
    public_key TEXT NOT NULL,
    first_seen INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
  `,
  `
  -- Full-text search over message texts (FTS5), kept in step by triggers.
  CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', content_rowid='rowid');
  INSERT INTO messages_fts (rowid, text) SELECT rowid, text FROM messages;
  ${FTS_TRIGGERS}
  CREATE TABLE groups (                   -- groups this user has been in
    id         TEXT PRIMARY KEY,
    members    TEXT NOT NULL,             -- JSON array: the members when last seen
    joined_at  INTEGER NOT NULL,
    left_at    INTEGER
  ) STRICT;
  `,
  `
  -- A message id is its sender's: duplicates are dropped by (sender, id), so nobody can have
  -- another's message dropped by sending one with its id first. The rowid becomes a column
  -- (seq), which VACUUM keeps: the full-text index refers to rows by it.
  CREATE TABLE messages_v3 (
    seq       INTEGER PRIMARY KEY,
    id        TEXT NOT NULL,
    chat      TEXT NOT NULL,
    sender    TEXT NOT NULL,
    ts        INTEGER NOT NULL,
    text      TEXT NOT NULL,
    outgoing  INTEGER NOT NULL,
    mark      TEXT NOT NULL
  ) STRICT;
  INSERT INTO messages_v3 (seq, id, chat, sender, ts, text, outgoing, mark)
    SELECT rowid, id, chat, sender, ts, text, outgoing, mark FROM messages;
  DROP TRIGGER messages_ai;
  DROP TRIGGER messages_ad;
  DROP TABLE messages;
  ALTER TABLE messages_v3 RENAME TO messages;
  CREATE UNIQUE INDEX messages_by_sender_id ON messages(lower(sender), id);
  CREATE INDEX messages_by_id ON messages(id);
  CREATE INDEX messages_by_chat ON messages(chat, ts);
  ${FTS_TRIGGERS}
  `,
  `
  -- Durable groups: the replicated member set, to rejoin after a restart (and, once left, to
  -- tell members who were away that we left), and my next message number in each.
  ALTER TABLE groups ADD COLUMN state TEXT;
  ALTER TABLE groups ADD COLUMN next_seq INTEGER NOT NULL DEFAULT 0;
  -- The group outbox: one row per member each of my group messages is for. A copy stays
  -- 'pending' until that member acked it; it is 'dropped' when the member left the group.
  CREATE TABLE group_copies (
    msg_id    TEXT NOT NULL,
    member    TEXT NOT NULL COLLATE NOCASE,
    group_id  TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    status    TEXT NOT NULL,              -- 'pending', 'acked', 'dropped'
    PRIMARY KEY (msg_id, member)
  ) STRICT;
  CREATE INDEX group_copies_by_member ON group_copies(member, status, seq);
  CREATE INDEX group_copies_by_group ON group_copies(group_id, member);
  -- My group messages with their number in the group (to owe them to members learned late).
  CREATE TABLE group_sent (
    msg_id    TEXT PRIMARY KEY,
    group_id  TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    ts        INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX group_sent_by_group ON group_sent(group_id, ts);
  `,
  `
  -- The full-text index is brought up to date in batches (see ClientStore.#index), not by a
  -- trigger inside every insert: one FTS5 update per message tripled the cost of storing it.
  DROP TRIGGER IF EXISTS messages_ai;
  INSERT OR REPLACE INTO settings (key, value)
    SELECT 'fts_seq', CAST(coalesce(max(seq), 0) AS TEXT) FROM messages;
  `,
  `
  -- Group catch-up: every group message I have (mine and others'), as its author signed it,
  -- so I can pass it on to a member who missed it (the text and time are in messages).
  CREATE TABLE group_log (
    group_id  TEXT NOT NULL,
    author    TEXT NOT NULL COLLATE NOCASE,
    seq       INTEGER NOT NULL,
    msg_id    TEXT NOT NULL,
    prev_ts   INTEGER,                    -- the author's previous message's time, if any
    sig       TEXT NOT NULL,              -- the author's signature (groupMessageStatement)
    PRIMARY KEY (group_id, author, seq)
  ) STRICT;
  -- How far I have each author's messages in each group: the next seq I expect.
  CREATE TABLE group_heads (
    group_id  TEXT NOT NULL,
    author    TEXT NOT NULL COLLATE NOCASE,
    next      INTEGER NOT NULL,
    PRIMARY KEY (group_id, author)
  ) STRICT;
  `,
  `
  -- One index for both lookups by id: duplicates are still dropped by (sender, id), and a
  -- query by id alone reads the same index by its first column. Every index is one more page
  -- written by each commit that stores a message (a random one: ids are random), and the
  -- index by id alone was ≈ a third of the CPU of storing a message.
  DROP INDEX messages_by_sender_id;
  DROP INDEX messages_by_id;
  CREATE UNIQUE INDEX messages_by_id_sender ON messages(id, lower(sender));
  `,
  `
  -- The group outbox indexed by member only while a copy is owed: a message to 31 members put
  -- 31 entries into each of two indexes that held every copy ever sent (a page each, far
  -- apart), and each ack moved one; the pending ones are a page or two. Copies of a group for
  -- a member are found by their message's key (msg_id, member).
  DROP INDEX group_copies_by_member;
  DROP INDEX group_copies_by_group;
  CREATE INDEX group_copies_pending ON group_copies(member, seq) WHERE status = 'pending';
  `,
];

/**
 * How soon after a message is stored the full-text index takes it in (with any others). A
 * search brings it up to date first, and a start catches up on what a killed run left, so the
 * delay only decides how many messages share the index's commit: at 50 ms a chat or a group
 * at a few messages a second paid a second commit per message, and at 500 ms a member of a busy
 * group still spent ≈ 6 % of its CPU per message in the index's commits (its profile).
 */
const BATCH_DELAY_MS = 2_000;
/**
 * Messages the index takes in per commit when its timer comes, with the chats' own work let
 * through between two such commits: ≈ 3-6 ms each. In one commit, the index stalled the chats
 * for as long as it took, ≈ 5-7 µs a message: 50-68 ms after 20,000 messages stored at once
 * (a show of a full mailbox), 11-19 ms every 2 s in the chat bench's stream. Not much smaller:
 * FTS5 pays ≈ 0.5 ms per commit whatever it holds.
 */
const INDEX_BATCH_ROWS = 512;
/** How long acked group copies wait to share a commit (see ClientStore.settleCopySoon). */
const SETTLE_DELAY_MS = 50;

/** The history key of a group chat. */
export function groupChat(id: string): string {
  return `g:${id}`;
}

export interface GroupRecord {
  id: string;
  members: string[];
  joinedAt: number;
  leftAt: number | null;
}

/** A group as stored to be rejoined: its replicated state (JSON) and whether I left it. */
export interface StoredGroup {
  id: string;
  state: string;
  left: boolean;
}

/** One copy of my group message still owed to a member, with what goes on the wire. */
export interface PendingCopy {
  msgId: string;
  group: string;
  seq: number;
  ts: number;
  text: string;
  /** As signed (absent for a message stored before messages were signed). */
  prevTs?: number;
  sig?: string;
}

/** What an author signed for a group message, beside its history row (see group_log). */
export interface GroupSignature {
  seq: number;
  prevTs?: number;
  sig?: string;
}

/** A group message as a member passes it on: every signed field, and the signature. */
export type LoggedGroupMessage = Omit<SignedGroupMessage, "group"> & { sig: string };

/** Who has one of my group messages (acked) and who it still waits for. */
export interface CopyStatus {
  have: string[];
  pending: string[];
}

/** `**` when every member a group message is for has it, else how many have it: `n/m`. */
export function groupMarkOf(s: CopyStatus): DeliveryMark {
  if (s.pending.length === 0) return s.have.length > 0 ? "**" : "!";
  return `${s.have.length}/${s.have.length + s.pending.length}`;
}

/**
 * '' sending, '*' stored on the server, '**' delivered (in a group: every member has it),
 * '!' failed; `n/m`: a group message that n of its m members have so far.
 */
export type DeliveryMark = "" | "*" | "**" | "!" | `${number}/${number}`;

export interface HistoryEntry {
  id: string;
  chat: string;
  sender: string;
  ts: number;
  text: string;
  outgoing: boolean;
  mark: DeliveryMark;
}

/** A `messages` row as SQLite returns it. */
type MessageRow = Omit<HistoryEntry, "outgoing"> & { outgoing: number };

function toEntry(row: MessageRow): HistoryEntry {
  return { ...row, outgoing: row.outgoing === 1 };
}

export class ClientStore implements Disposable {
  readonly path: string;
  readonly #db: Database;
  /** Set when the user's folder was open to others and has been closed (for a notice). */
  readonly fixedMode: ModeFix | undefined;

  /** Whether messages were stored that the full-text index does not have yet. */
  #unindexed = true;
  #batchTimer: ReturnType<typeof setTimeout> | undefined;
  /** Rows waiting for their group commit (see addMessageSoon). */
  readonly #rows: { entry: HistoryEntry; done: PromiseWithResolvers<boolean> }[] = [];
  readonly #marks: { id: string; mark: DeliveryMark; done: PromiseWithResolvers<void> }[] = [];
  /** Writes what {@link addMessageSoon} and {@link setMarkSoon} queued, at the next turn. */
  #soonTimer: ReturnType<typeof setTimeout> | undefined;
  /** Group copies acked, waiting for their group commit (see settleCopySoon). */
  readonly #settles: { msgId: string; member: string; done: PromiseWithResolvers<boolean> }[] = [];
  #settleTimer: ReturnType<typeof setTimeout> | undefined;

  readonly #indexDelayMs: number;

  /** @param options.indexDelayMs how soon after a message the index takes it in (tests). */
  constructor(userDir: string, options: { indexDelayMs?: number } = {}) {
    this.#indexDelayMs = options.indexDelayMs ?? BATCH_DELAY_MS;
    this.fixedMode = ownerOnlyDir(userDir);
    this.path = join(userDir, "confab.sqlite");
    // Off the thread that carries the chats: a checkpoint's fsyncs stalled it up to 180 ms.
    this.#db = new Database(this.path, MIGRATIONS, { checkpointOffThread: true });
    try {
      this.#index(); // what a previous run stored but did not index
    } catch (error) {
      // Nothing of a store that did not open lives on (its database, its checkpoint timer).
      this.#db.close();
      throw error;
    }
  }

  /** Whether the log is folded on a worker thread once it grows (see lib/util/sqlite.ts). */
  get checkpointsOffThread(): boolean {
    return this.#db.checkpointsOffThread;
  }

  /**
   * Brings the full-text index up to date with the messages stored since the last batch (in
   * one transaction). A search does this first, so it never misses a stored message.
   */
  flush(): void {
    this.#writeRows();
    clearTimeout(this.#batchTimer);
    this.#batchTimer = undefined;
    if (!this.#unindexed) return;
    this.#db.transaction(() => this.#index());
  }

  /**
   * Adds the messages stored since the last call to the full-text index, in the order stored:
   * all of them, or the first `limit`.
   * @returns whether the index has every message now.
   */
  #index(limit = Number.MAX_SAFE_INTEGER): boolean {
    if (!this.#unindexed) return true;
    const from = Number(this.getSetting("fts_seq") ?? "0");
    const next = this.#db.sql(
      `SELECT max(seq) AS last, count(*) AS n
       FROM (SELECT seq FROM messages WHERE seq > ? ORDER BY seq LIMIT ?)`,
    ).get(from, limit) as { last: number | null; n: number };
    if (next.last !== null) {
      this.#db.sql(
        "INSERT INTO messages_fts (rowid, text) SELECT seq, text FROM messages WHERE seq > ? AND seq <= ?",
      ).run(from, next.last);
      this.setSetting("fts_seq", String(next.last));
    }
    if (next.n < limit) this.#unindexed = false;
    return !this.#unindexed;
  }

  #later(): void {
    this.#batchTimer ??= setTimeout(() => this.#indexSome(), this.#indexDelayMs);
  }

  /** The timer's share of the index: a batch now, the next one after what waits meanwhile. */
  #indexSome(): void {
    this.#batchTimer = undefined;
    this.#writeRows();
    if (!this.#db.transaction(() => this.#index(INDEX_BATCH_ROWS))) {
      this.#batchTimer = setTimeout(() => this.#indexSome(), 0);
    }
  }

  /**
   * Stores a message; returns false when this sender's message with this id is already there
   * (a duplicate, which is then neither stored nor shown again).
   */
  addMessage(entry: HistoryEntry): boolean {
    this.#writeRows();
    return this.#insert(entry);
  }

  /** {@link addMessage} for several messages in one transaction; for each, whether it was new. */
  addMessages(entries: HistoryEntry[]): boolean[] {
    this.#writeRows();
    return this.#db.transaction(() => entries.map((entry) => this.#insert(entry)));
  }

  /**
   * {@link addMessage} in a group commit: the rows added before the next turn of the event loop
   * (a burst of lines piped in) are written in one transaction, at that turn, or sooner at
   * {@link writeQueued} or any other use of the history (which writes what is queued first),
   * together with the marks {@link setMarkSoon} queued. So a caller can put a message on the
   * wire first and have its row committed while the frame travels (see Delivery.send). Each
   * resolves once committed, with whether it was new.
   */
  addMessageSoon(entry: HistoryEntry): Promise<boolean> {
    const done = Promise.withResolvers<boolean>();
    this.#rows.push({ entry, done });
    this.#writeSoon();
    return done.promise;
  }

  /**
   * {@link setMark} (without `to`) in a group commit: the marks set before the next turn of
   * the event loop (the server's answers to a burst of mail) are written in one transaction;
   * each resolves once it is committed.
   */
  setMarkSoon(id: string, mark: DeliveryMark): Promise<void> {
    const done = Promise.withResolvers<void>();
    this.#marks.push({ id, mark, done });
    // The next turn, not the next microtask: the answers to a burst come as many frames of one
    // read, each settled in its own chain of promises.
    this.#writeSoon();
    return done.promise;
  }

  /**
   * Has {@link #writeRows} run at the next turn. The timer is armed once and left armed when a
   * commit comes sooner (it then finds nothing to write): a timer set and cleared per chat line
   * cost ≈ 10-20 µs of CPU here, as much as the commit it stood behind.
   */
  #writeSoon(): void {
    this.#soonTimer ??= setTimeout(() => {
      this.#soonTimer = undefined;
      this.#writeRows();
    }, 0);
  }

  /**
   * {@link settleCopy} (acked) in a group commit: the acks settled within
   * {@link SETTLE_DELAY_MS}, or before anything reads or changes the group outbox or history, or
   * before {@link writeQueued}, are written in one transaction (the 31 acks of a message to 32
   * members come one by one: a commit each cost the sender ≈ 8 ms of CPU per message).
   * @returns once committed, whether this ack settled the copy: true once per copy, false for
   * a copy acked before (a copy sent again after a lost ack, acked again), so "delivered" is
   * said once, and only when it would survive a kill -9. One whose commit failed (the store
   * closed meanwhile) is false too: it stays owed and goes again.
   */
  settleCopySoon(msgId: string, member: string): Promise<boolean> {
    const done = Promise.withResolvers<boolean>();
    this.#settles.push({ msgId, member, done });
    this.#settleTimer ??= setTimeout(() => this.#writeRows(), SETTLE_DELAY_MS);
    return done.promise;
  }

  /** Commits now what {@link addMessageSoon}, {@link setMarkSoon} and {@link settleCopySoon} queued. */
  writeQueued(): void {
    this.#writeRows();
  }

  /**
   * Commits the rows {@link addMessageSoon} queued and the marks {@link setMarkSoon} queued, in
   * one transaction (a chat's next line and the mark of the one before share a commit), then
   * the acks {@link settleCopySoon} queued (every other use of history does this first). The
   * marks are told first, so a mark's outcome comes before the next line's.
   */
  #writeRows(): void {
    const rows = this.#rows.splice(0);
    const marks = this.#marks.splice(0);
    if (rows.length > 0 || marks.length > 0) {
      let added: boolean[] | undefined;
      try {
        added = rows.length === 1 && marks.length === 0
          ? [this.#insert(rows[0]!.entry)]
          : this.#db.transaction(() => {
            const news = rows.map((r) => this.#insert(r.entry));
            if (marks.length > 0) this.#markAll(marks);
            return news;
          });
      } catch (error) {
        for (const m of marks) m.done.reject(error);
        for (const r of rows) r.done.reject(error);
      }
      if (added) {
        for (const m of marks) m.done.resolve();
        rows.forEach((r, i) => r.done.resolve(added[i]!));
      }
    }
    clearTimeout(this.#settleTimer);
    this.#settleTimer = undefined;
    if (this.#settles.length > 0) this.#writeSettles();
  }

  #writeSettles(): void {
    const settles = this.#settles.splice(0);
    let first: boolean[] = [];
    try {
      first = this.#db.transaction(() => {
        const changed = settles.map(({ msgId, member }) => this.#settleOne(msgId, member, "acked"));
        for (const msgId of new Set(settles.filter((_, i) => changed[i]).map((s) => s.msgId))) {
          this.#settleMark(msgId);
        }
        return changed;
      });
    } catch {
      // (Closed meanwhile, say: those copies stay owed and go again; their members ack again.)
    }
    settles.forEach((s, i) => s.done.resolve(first[i] ?? false));
  }

  /**
   * {@link #markOutgoing} for many messages: one statement per mark (the answers to a burst of
   * mail set hundreds of `*` at once; a statement per message was half the cost of a mark).
   */
  #markAll(marks: { id: string; mark: DeliveryMark }[]): void {
    if (marks.length === 1) return this.#markOutgoing(marks[0]!.id, marks[0]!.mark);
    const last = new Map<string, DeliveryMark>(); // one message marked twice: the later mark
    for (const { id, mark } of marks) last.set(id, mark);
    const ids = new Map<DeliveryMark, string[]>();
    for (const [id, mark] of last) {
      const some = ids.get(mark);
      if (some) some.push(id);
      else ids.set(mark, [id]);
    }
    for (const [mark, some] of ids) {
      this.#db.sql(
        `UPDATE messages SET mark = ?1 WHERE id IN (SELECT value FROM json_each(?2))
         AND outgoing = 1 AND mark != '**' AND (mark != '!' OR ?1 != '*')`,
      ).run(mark, JSON.stringify(some));
    }
  }

  /**
   * `**` is final. A `!` is not undone by a `*`: a resend from the outbox answered "stored"
   * (the server has the id already) after the reader's client refused the message
   * ({@link markNotDelivered}) would otherwise hide that it was not delivered.
   */
  #markOutgoing(id: string, mark: DeliveryMark): void {
    this.#db.sql(
      `UPDATE messages SET mark = ?1 WHERE id = ?2 AND outgoing = 1 AND mark != '**'
       AND (mark != '!' OR ?1 != '*')`,
    ).run(mark, id);
  }

  #insert(entry: HistoryEntry): boolean {
    this.#unindexed = true;
    this.#later();
    return this.#db.sql(
      `INSERT INTO messages (id, chat, sender, ts, text, outgoing, mark)
       VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
    ).run(
      entry.id,
      entry.chat.toLowerCase(),
      entry.sender,
      entry.ts,
      entry.text,
      entry.outgoing ? 1 : 0,
      entry.mark,
    ).changes === 1;
  }

  /** Whether `sender`'s message `id` is in the history. */
  hasMessage(sender: string, id: string): boolean {
    this.#writeRows();
    return this.#db.sql("SELECT 1 FROM messages WHERE lower(sender) = ? AND id = ?")
      .get(sender.toLowerCase(), id) !== undefined;
  }

  /**
   * Sets the delivery mark of one of my own messages. `**` is final: an answer that comes late
   * (a resend stored, `*`, after the first copy was read) does not take it back; nor does a `*`
   * take back a `!`.
   */
  setMark(id: string, mark: DeliveryMark): void {
    this.#writeRows();
    this.#markOutgoing(id, mark);
  }

  /**
   * Marks my message `id` to `reader` read (`**`), if it is a 1:1 message I sent them: "read"
   * when it is now, "already" when it was before (a receipt told twice), "unknown" otherwise.
   */
  markRead(id: string, reader: string): "read" | "already" | "unknown" {
    this.#writeRows();
    const where = "id = ? AND outgoing = 1 AND lower(chat) = ?";
    const changed = this.#db.sql(`UPDATE messages SET mark = '**' WHERE ${where} AND mark != '**'`)
      .run(id, reader.toLowerCase()).changes;
    if (Number(changed) > 0) return "read";
    return this.#db.sql(`SELECT 1 FROM messages WHERE ${where}`).get(id, reader.toLowerCase()) !==
        undefined
      ? "already"
      : "unknown";
  }

  /**
   * Marks my message `id` to `recipient` not delivered (`!`): their client refused it. "marked"
   * (with the message's time and text) when it is now; "already" when it was `!` before (a
   * notice told twice); "read" when it is `**`, which stays: a signed read outweighs the
   * server's word; "unknown" when it is no 1:1 message I sent them.
   */
  markNotDelivered(
    id: string,
    recipient: string,
  ): { status: "marked"; ts: number; text: string } | { status: "already" | "read" | "unknown" } {
    this.#writeRows();
    const where = "id = ? AND outgoing = 1 AND lower(chat) = ?";
    const row = this.#db.sql(
      `UPDATE messages SET mark = '!' WHERE ${where} AND mark NOT IN ('**', '!')
       RETURNING ts, text`,
    ).get(id, recipient.toLowerCase()) as { ts: number; text: string } | undefined;
    if (row) return { status: "marked", ts: row.ts, text: row.text };
    const mark = (this.#db.sql(`SELECT mark FROM messages WHERE ${where}`)
      .get(id, recipient.toLowerCase()) as { mark: string } | undefined)?.mark;
    if (mark === undefined) return { status: "unknown" };
    return { status: mark === "**" ? "read" : "already" };
  }

  /** The last `limit` messages of a chat, oldest first (a group message still on its way: n/m). */
  recent(chat: string, limit: number): HistoryEntry[] {
    this.#writeRows();
    const rows = this.#db.sql(
      `SELECT id, chat, sender, ts, text, outgoing, mark FROM (
         SELECT *, rowid AS r FROM messages WHERE chat = ? ORDER BY ts DESC, r DESC LIMIT ?
       ) ORDER BY ts, r`,
    ).all(chat.toLowerCase(), limit) as MessageRow[];
    return rows.map((row) => this.#withGroupMark(toEntry(row)));
  }

  #withGroupMark(entry: HistoryEntry): HistoryEntry {
    if (!entry.outgoing || entry.mark !== "" || !entry.chat.startsWith("g:")) return entry;
    return { ...entry, mark: this.groupMark(entry.id) };
  }

  /** 1:1 messages nobody has acknowledged yet (mark ''), oldest first: the outbox. */
  outbox(): HistoryEntry[] {
    this.#writeRows();
    const rows = this.#db.sql(
      `SELECT id, chat, sender, ts, text, outgoing, mark FROM messages
       WHERE outgoing = 1 AND mark = '' AND chat NOT LIKE 'g:%' ORDER BY ts, rowid`,
    ).all() as MessageRow[];
    return rows.map(toEntry);
  }

  /** Messages whose text matches all `words` (FTS5), newest first. */
  search(words: string[], limit: number): HistoryEntry[] {
    this.flush();
    const query = words.map((w) => `"${w.replaceAll('"', '""')}"*`).join(" ");
    const rows = this.#db.sql(
      `SELECT m.id, m.chat, m.sender, m.ts, m.text, m.outgoing, m.mark FROM messages_fts f
       JOIN messages m ON m.rowid = f.rowid WHERE messages_fts MATCH ?
       ORDER BY m.ts DESC LIMIT ?`,
    ).all(query, limit) as MessageRow[];
    return rows.map(toEntry);
  }

  // ---- groups ------------------------------------------------------------------------------

  /**
   * Stores a group's replicated state (and its members, for `groups`): rejoined at the next
   * login while `left` is false; once left, kept to tell members who were away.
   */
  saveGroupState(
    state: { id: string },
    members: string[],
    options: { left: boolean; now?: number },
  ): void {
    const now = options.now ?? Date.now();
    this.#db.sql(
      `INSERT INTO groups (id, members, joined_at, left_at, state) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET members = excluded.members, state = excluded.state,
         left_at = CASE WHEN excluded.left_at IS NULL THEN NULL ELSE COALESCE(left_at, excluded.left_at) END,
         joined_at = CASE WHEN groups.left_at IS NOT NULL AND excluded.left_at IS NULL
                          THEN excluded.joined_at ELSE joined_at END`,
    ).run(state.id, JSON.stringify(members), now, options.left ? now : null, JSON.stringify(state));
  }

  /** Every group with a stored state: those I am in (to rejoin) and those I left. */
  storedGroups(): StoredGroup[] {
    return (this.#db.sql(
      "SELECT id, state, left_at FROM groups WHERE state IS NOT NULL ORDER BY joined_at",
    ).all() as { id: string; state: string; left_at: number | null }[])
      .map((r) => ({ id: r.id, state: r.state, left: r.left_at !== null }));
  }

  /**
   * The number my next message to `group` gets, and the time of my message before it (both
   * are signed with it, so they are known before {@link addGroupMessage}).
   */
  nextGroupSeq(group: string): { seq: number; prevTs?: number } {
    const row = this.#db.sql("SELECT next_seq FROM groups WHERE id = ?").get(group) as
      | { next_seq: number }
      | undefined;
    // The last by time is the last by number (times never go back), and the index is by time:
    // ordered by number alone, this read every message ever sent to the group.
    const last = this.#db.sql(
      "SELECT ts FROM group_sent WHERE group_id = ? ORDER BY ts DESC, seq DESC LIMIT 1",
    ).get(group) as { ts: number } | undefined;
    return { seq: row?.next_seq ?? 0, ...(last ? { prevTs: last.ts } : {}) };
  }

  /**
   * Stores one of my group messages with a pending copy for each of `members`, in one
   * transaction, under the number {@link nextGroupSeq} gave (per group, increasing across
   * restarts), with its signature (none: the next number, unsigned).
   * @returns its number in the group.
   * @throws {RangeError} when that number was taken meanwhile.
   */
  addGroupMessage(
    entry: HistoryEntry,
    group: string,
    members: string[],
    signed?: GroupSignature,
  ): number {
    this.#writeRows(); // (a commit of queued rows cannot nest inside this one)
    return this.#db.transaction(() => {
      const seq = this.nextGroupSeq(group).seq;
      if (signed === undefined) signed = { seq };
      if (seq !== signed.seq) throw new RangeError(`group message number ${signed.seq} is taken`);
      this.#db.sql("UPDATE groups SET next_seq = ? WHERE id = ?").run(seq + 1, group);
      this.addMessage(entry);
      this.#db.sql("INSERT INTO group_sent (msg_id, group_id, seq, ts) VALUES (?, ?, ?, ?)")
        .run(entry.id, group, seq, entry.ts);
      if (signed.sig !== undefined) {
        this.#logGroupMessage(group, entry.sender, { id: entry.id, ...signed, sig: signed.sig });
      }
      const insert = this.#db.sql(
        `INSERT INTO group_copies (msg_id, member, group_id, seq, status)
         VALUES (?, ?, ?, ?, 'pending') ON CONFLICT DO NOTHING`,
      );
      for (const member of members) insert.run(entry.id, member, group, seq);
      if (members.length === 0) this.setMark(entry.id, "**");
      return seq;
    });
  }

  /** The copies still owed to `member`, oldest first within each group. */
  pendingCopies(member: string, limit = 100): PendingCopy[] {
    this.#writeRows();
    return (this.#db.sql(
      `SELECT c.msg_id, c.group_id, c.seq, m.ts, m.text, l.prev_ts, l.sig FROM group_copies c
       JOIN messages m ON m.id = c.msg_id AND m.outgoing = 1
       LEFT JOIN group_log l ON l.group_id = c.group_id AND l.author = m.sender AND l.seq = c.seq
       WHERE c.member = ? AND c.status = 'pending' ORDER BY c.seq, c.rowid LIMIT ?`,
    ).all(member, limit) as {
      msg_id: string;
      group_id: string;
      seq: number;
      ts: number;
      text: string;
      prev_ts: number | null;
      sig: string | null;
    }[]).map((r) => ({
      msgId: r.msg_id,
      group: r.group_id,
      seq: r.seq,
      ts: r.ts,
      text: r.text,
      ...(r.prev_ts !== null ? { prevTs: r.prev_ts } : {}),
      ...(r.sig !== null ? { sig: r.sig } : {}),
    }));
  }

  // ---- group catch-up ------------------------------------------------------------------------

  #logGroupMessage(
    group: string,
    author: string,
    m: { id: string; seq: number; prevTs?: number; sig: string },
  ): void {
    this.#db.sql(
      `INSERT INTO group_log (group_id, author, seq, msg_id, prev_ts, sig)
       VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
    ).run(group, author, m.seq, m.id, m.prevTs ?? null, m.sig);
  }

  /**
   * Stores another member's group message (from its author, or passed on by a member) in one
   * transaction: the history row, the signed fields to pass it on (when signed), and how far I
   * have that author's messages now (`next`; it never goes back).
   * @returns false when I had it already (a duplicate, not shown again).
   */
  addGroupReceived(
    entry: HistoryEntry,
    group: string,
    signed: GroupSignature & { next: number },
  ): boolean {
    this.#writeRows(); // (a commit of queued rows cannot nest inside this one)
    return this.#db.transaction(() => {
      const fresh = this.#insert(entry);
      if (fresh && signed.sig !== undefined) {
        this.#logGroupMessage(group, entry.sender, { id: entry.id, ...signed, sig: signed.sig });
      }
      this.#db.sql(
        `INSERT INTO group_heads (group_id, author, next) VALUES (?, ?, ?)
         ON CONFLICT(group_id, author) DO UPDATE SET next = max(next, excluded.next)`,
      ).run(group, entry.sender, signed.next);
      return fresh;
    });
  }

  /** The next seq I expect from `author` in `group`; undefined when I have none of theirs. */
  groupHead(group: string, author: string): number | undefined {
    const row = this.#db.sql("SELECT next FROM group_heads WHERE group_id = ? AND author = ?")
      .get(group, author) as { next: number } | undefined;
    return row?.next;
  }

  /** Moves my mark for `author` in `group` forward to `next` (past a gap given up on). */
  skipGroupGap(group: string, author: string, next: number): void {
    this.#db.sql(
      `INSERT INTO group_heads (group_id, author, next) VALUES (?, ?, ?)
       ON CONFLICT(group_id, author) DO UPDATE SET next = max(next, excluded.next)`,
    ).run(group, author, next);
  }

  /** How far I have each author's messages in `group` (at most `limit` authors). */
  groupHeads(group: string, limit = MAX_GROUP_MARKS): { author: string; next: number }[] {
    return (this.#db.sql(
      "SELECT author, next FROM group_heads WHERE group_id = ? ORDER BY author LIMIT ?",
    ).all(group, limit) as { author: string; next: number }[])
      .map((r) => ({ author: r.author, next: r.next }));
  }

  /** Forgets how far I had each author (I am a newcomer to the group again). */
  resetGroupHeads(group: string): void {
    this.#db.sql("DELETE FROM group_heads WHERE group_id = ?").run(group);
  }

  /** Authors whose signed messages to `group` I hold. */
  loggedAuthors(group: string): string[] {
    // One index step per author (DISTINCT read every message of the group, at each member's
    // marks: the largest cost of a member in a busy group).
    return (this.#db.sql(
      `WITH RECURSIVE a(author) AS (
         SELECT min(author) FROM group_log WHERE group_id = ?1
         UNION ALL
         SELECT (SELECT min(author) FROM group_log WHERE group_id = ?1 AND author > a.author)
         FROM a WHERE a.author IS NOT NULL
       ) SELECT author FROM a WHERE author IS NOT NULL`,
    ).all(group) as { author: string }[]).map((r) => r.author);
  }

  /**
   * `author`'s signed messages to `group` that I hold, from seq `from` on and sent at `since` or
   * later, oldest first, at most `limit`.
   */
  loggedMessages(
    group: string,
    author: string,
    options: { from: number; since: number; limit: number },
  ): LoggedGroupMessage[] {
    this.#writeRows();
    return (this.#db.sql(
      `SELECT l.author, l.msg_id, l.seq, m.ts, l.prev_ts, m.text, l.sig FROM group_log l
       JOIN messages m ON m.id = l.msg_id AND lower(m.sender) = lower(l.author)
       WHERE l.group_id = ? AND l.author = ? AND l.seq >= ? AND m.ts >= ?
       ORDER BY l.seq LIMIT ?`,
    ).all(group, author, options.from, options.since, options.limit) as {
      author: string;
      msg_id: string;
      seq: number;
      ts: number;
      prev_ts: number | null;
      text: string;
      sig: string;
    }[]).map((r) => ({
      author: r.author,
      id: r.msg_id,
      seq: r.seq,
      ts: r.ts,
      ...(r.prev_ts !== null ? { prevTs: r.prev_ts } : {}),
      text: r.text,
      sig: r.sig,
    }));
  }

  /** Members with copies still owed to them. */
  membersOwed(): string[] {
    this.#writeRows();
    return (this.#db.sql(
      "SELECT DISTINCT member FROM group_copies WHERE status = 'pending'",
    ).all() as { member: string }[]).map((r) => r.member);
  }

  /**
   * `member` acked the copy (or left the group: `dropped`). The message's mark becomes `**`
   * once no copy is pending and someone has it, `!` when every member it was for left.
   * @returns false when that copy was not pending (a repeated ack).
   */
  settleCopy(msgId: string, member: string, status: "acked" | "dropped"): boolean {
    this.#writeRows(); // (a commit of queued rows cannot nest inside this one)
    return this.#db.transaction(() => {
      const changed = this.#settleOne(msgId, member, status);
      if (changed) this.#settleMark(msgId);
      return changed;
    });
  }

  #settleOne(msgId: string, member: string, status: "acked" | "dropped"): boolean {
    return this.#db.sql(
      `UPDATE group_copies SET status = ? WHERE msg_id = ? AND member = ? AND status = 'pending'`,
    ).run(status, msgId, member).changes === 1;
  }

  #settleMark(msgId: string): void {
    // Counted, not listed: this runs at every member's ack.
    const s = this.#db.sql(
      `SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
              count(*) FILTER (WHERE status = 'acked') AS have
       FROM group_copies WHERE msg_id = ?`,
    ).get(msgId) as { pending: number; have: number };
    if (s.pending > 0) return;
    this.#markOutgoing(msgId, s.have > 0 ? "**" : "!");
  }

  /**
   * `member` left: the copies still owed to them are dropped.
   * @returns the ids of the messages concerned.
   */
  dropCopies(group: string, member: string): string[] {
    this.#writeRows(); // (a commit of queued rows cannot nest inside this one)
    return this.#db.transaction(() => this.#dropCopies(group, member));
  }

  #dropCopies(group: string, member: string): string[] {
    const ids = (this.#db.sql(
      `SELECT msg_id FROM group_copies WHERE group_id = ? AND member = ? AND status = 'pending'`,
    ).all(group, member) as { msg_id: string }[]).map((r) => r.msg_id);
    this.#db.sql(
      `UPDATE group_copies SET status = 'dropped'
       WHERE group_id = ? AND member = ? AND status = 'pending'`,
    ).run(group, member);
    for (const id of ids) this.#settleMark(id);
    return ids;
  }

  /**
   * {@link #dropCopies} for my messages to `group` sent before `since` only (`member` left and
   * was added back then: those were for its first membership, which it ended).
   */
  #dropCopiesBefore(group: string, member: string, since: number): string[] {
    const ids = (this.#db.sql(
      `SELECT c.msg_id FROM group_copies c JOIN group_sent s ON s.msg_id = c.msg_id
       WHERE c.group_id = ? AND c.member = ? AND c.status = 'pending' AND s.ts < ?`,
    ).all(group, member, since) as { msg_id: string }[]).map((r) => r.msg_id);
    const drop = this.#db.sql(
      `UPDATE group_copies SET status = 'dropped' WHERE msg_id = ? AND member = ? AND status = 'pending'`,
    );
    for (const id of ids) {
      drop.run(id, member);
      this.#settleMark(id);
    }
    return ids;
  }

  /**
   * `member` is in the group since `since` (I learned it late): my messages to the group
   * from then on that were not for them are now, at most the last `limit`.
   * @returns the ids of the messages now owed to them, oldest first.
   */
  #addLateCopies(group: string, member: string, since: number, limit = 1000): string[] {
    const rows = this.#db.sql(
      `SELECT msg_id, seq FROM (
         SELECT msg_id, seq FROM group_sent WHERE group_id = ? AND ts >= ?
         ORDER BY seq DESC LIMIT ?
       ) s WHERE NOT EXISTS (SELECT 1 FROM group_copies c WHERE c.msg_id = s.msg_id AND c.member = ?)
       ORDER BY seq`,
    ).all(group, since, limit, member) as { msg_id: string; seq: number }[];
    const insert = this.#db.sql(
      `INSERT INTO group_copies (msg_id, member, group_id, seq, status)
       VALUES (?, ?, ?, ?, 'pending') ON CONFLICT DO NOTHING`,
    );
    for (const r of rows) {
      insert.run(r.msg_id, member, group, r.seq);
      // Owed to one more member: no longer complete (the only way back from `**`).
      this.#db.sql("UPDATE messages SET mark = '' WHERE id = ? AND outgoing = 1").run(r.msg_id);
    }
    return rows.map((r) => r.msg_id);
  }

  /**
   * A group's new state, in one transaction: stored as {@link saveGroupState} does (not left),
   * each member in it learned late (`late`, with the time of its add) owed my messages since
   * then ({@link #addLateCopies}), and the copies owed to members gone from it (`gone`) dropped
   * ({@link dropCopies}). Stored apart, a kill -9 after the state left a late member's copies
   * never owed (the state that says it joined comes again, but changes nothing then) and my
   * messages marked `**` although it never had them.
   * @returns per member (as given), the ids of the messages now owed to it or dropped.
   */
  applyGroupState(
    state: { id: string },
    members: string[],
    changes: {
      late: { member: string; since: number }[];
      gone: string[];
      back?: { member: string; since: number }[];
    },
  ): { owed: Map<string, string[]>; dropped: Map<string, string[]> } {
    this.#writeRows(); // (a commit of queued rows cannot nest inside this one)
    return this.#db.transaction(() => {
      this.saveGroupState(state, members, { left: false });
      const owed = new Map<string, string[]>();
      for (const { member, since } of changes.late) {
        owed.set(member, this.#addLateCopies(state.id, member, since));
      }
      const dropped = new Map<string, string[]>();
      for (const member of changes.gone) dropped.set(member, this.#dropCopies(state.id, member));
      for (const { member, since } of changes.back ?? []) {
        dropped.set(member, this.#dropCopiesBefore(state.id, member, since));
      }
      return { owed, dropped };
    });
  }

  /** Who has my group message and who it still waits for. */
  copyStatus(msgId: string): CopyStatus {
    this.#writeRows();
    const rows = this.#db.sql(
      "SELECT member, status FROM group_copies WHERE msg_id = ? ORDER BY member",
    ).all(msgId) as { member: string; status: string }[];
    return {
      have: rows.filter((r) => r.status === "acked").map((r) => r.member),
      pending: rows.filter((r) => r.status === "pending").map((r) => r.member),
    };
  }

  /** `**` when every member it is for has my group message, else how many have it: `n/m`. */
  groupMark(msgId: string): DeliveryMark {
    return groupMarkOf(this.copyStatus(msgId));
  }

  saveGroup(id: string, members: string[], now = Date.now()): void {
    this.#db.sql(
      `INSERT INTO groups (id, members, joined_at) VALUES (?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET members = excluded.members, left_at = NULL`,
    ).run(id, JSON.stringify(members), now);
  }

  leaveGroup(id: string, now = Date.now()): void {
    this.#db.sql("UPDATE groups SET left_at = ? WHERE id = ?").run(now, id);
  }

  /** Groups this user has been in, newest first. */
  groups(): GroupRecord[] {
    return (this.#db.sql(
      "SELECT id, members, joined_at, left_at FROM groups ORDER BY joined_at DESC",
    ).all() as { id: string; members: string; joined_at: number; left_at: number | null }[])
      .map((r) => ({
        id: r.id,
        members: JSON.parse(r.members) as string[],
        joinedAt: r.joined_at,
        leftAt: r.left_at,
      }));
  }

  knownKey(user: string): string | undefined {
    const row = this.#db.sql("SELECT public_key FROM known_keys WHERE user = ?")
      .get(user.toLowerCase()) as { public_key: string } | undefined;
    return row?.public_key;
  }

  /** Remembers a user's key the first time it is seen; returns the key known before, if any. */
  rememberKey(user: string, publicKey: string): string | undefined {
    const before = this.knownKey(user);
    if (before === undefined) {
      this.#db.sql("INSERT INTO known_keys (user, public_key, first_seen) VALUES (?, ?, ?)")
        .run(user.toLowerCase(), publicKey, Date.now());
    }
    return before;
  }

  /** Replaces the pinned key of `user` (the user accepted a changed key deliberately). */
  trustKey(user: string, publicKey: string): void {
    this.#db.sql(
      `INSERT INTO known_keys (user, public_key, first_seen) VALUES (?, ?, ?)
       ON CONFLICT(user) DO UPDATE SET public_key = excluded.public_key, first_seen = excluded.first_seen`,
    ).run(user.toLowerCase(), publicKey, Date.now());
  }

  getSetting(key: string): string | undefined {
    const row = this.#db.sql("SELECT value FROM settings WHERE key = ?").get(key) as
      | { value: string }
      | undefined;
    return row?.value;
  }

  setSetting(key: string, value: string | undefined): void {
    if (value === undefined) this.#db.sql("DELETE FROM settings WHERE key = ?").run(key);
    else {
      this.#db.sql(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
      ).run(key, value, value);
    }
  }

  close(): void {
    this.flush();
    clearTimeout(this.#soonTimer);
    this.#soonTimer = undefined;
    this.#db.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
