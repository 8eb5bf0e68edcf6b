/**
 * A user's local state in one SQLite file under the home dir: chat history with delivery
 * marks, the public keys seen for other users, and small settings (a logout time saved while
 * the server was unreachable). Knows nothing of sockets.
 */
import { Database } from "../util/sqlite.ts";
import { join } from "node:path";

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
];

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

export type DeliveryMark = "" | "*" | "**" | "!";

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

  constructor(userDir: string) {
    Deno.mkdirSync(userDir, { recursive: true, mode: 0o700 });
    this.path = join(userDir, "confab.sqlite");
    this.#db = new Database(this.path, MIGRATIONS);
  }

  /**
   * Stores a message; returns false when this sender's message with this id is already there
   * (a duplicate, which is then neither stored nor shown again).
   */
  addMessage(entry: HistoryEntry): boolean {
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
    return this.#db.sql("SELECT 1 FROM messages WHERE lower(sender) = ? AND id = ?")
      .get(sender.toLowerCase(), id) !== undefined;
  }

  /**
   * Sets the delivery mark of one of my own messages. `**` is final: an answer that comes late
   * (a resend stored, `*`, after the first copy was read) does not take it back.
   */
  setMark(id: string, mark: DeliveryMark): void {
    this.#db.sql("UPDATE messages SET mark = ? WHERE id = ? AND outgoing = 1 AND mark != '**'")
      .run(mark, id);
  }

  /** The last `limit` messages of a chat, oldest first. */
  recent(chat: string, limit: number): HistoryEntry[] {
    const rows = this.#db.sql(
      `SELECT id, chat, sender, ts, text, outgoing, mark FROM (
         SELECT *, rowid AS r FROM messages WHERE chat = ? ORDER BY ts DESC, r DESC LIMIT ?
       ) ORDER BY ts, r`,
    ).all(chat.toLowerCase(), limit) as MessageRow[];
    return rows.map(toEntry);
  }

  /** Marks `!` the group messages left unacknowledged by a previous run (they cannot be resent). */
  failInterruptedGroupSends(): number {
    return Number(
      this.#db.sql(
        "UPDATE messages SET mark = '!' WHERE outgoing = 1 AND mark = '' AND chat LIKE 'g:%'",
      ).run().changes,
    );
  }

  /** 1:1 messages nobody has acknowledged yet (mark ''), oldest first: the outbox. */
  outbox(): HistoryEntry[] {
    const rows = this.#db.sql(
      `SELECT id, chat, sender, ts, text, outgoing, mark FROM messages
       WHERE outgoing = 1 AND mark = '' AND chat NOT LIKE 'g:%' ORDER BY ts, rowid`,
    ).all() as MessageRow[];
    return rows.map(toEntry);
  }

  /** Messages whose text matches all `words` (FTS5), newest first. */
  search(words: string[], limit: number): HistoryEntry[] {
    const query = words.map((w) => `"${w.replaceAll('"', '""')}"*`).join(" ");
    const rows = this.#db.sql(
      `SELECT m.id, m.chat, m.sender, m.ts, m.text, m.outgoing, m.mark FROM messages_fts f
       JOIN messages m ON m.rowid = f.rowid WHERE messages_fts MATCH ?
       ORDER BY m.ts DESC LIMIT ?`,
    ).all(query, limit) as MessageRow[];
    return rows.map(toEntry);
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
    this.#db.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
