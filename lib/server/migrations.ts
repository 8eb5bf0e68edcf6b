/**
 * The server's schema as numbered migrations, applied in order by every store backend. Each
 * step is written once per SQL dialect, side by side, so the backends cannot drift apart: a
 * step added for one is added for all (the conformance tests compare the schema versions).
 */

export interface Migration {
  /** For SQLite (`node:sqlite`); tables are STRICT. */
  sqlite: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    sqlite: `
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
  },
  {
    sqlite: `
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
  },
  {
    sqlite: `
      ALTER TABLE users ADD COLUMN mail_key TEXT NOT NULL DEFAULT '';      -- X25519, base64url
      ALTER TABLE users ADD COLUMN mail_key_sig TEXT NOT NULL DEFAULT '';  -- by the identity key
    `,
  },
  {
    sqlite: `
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
  },
];

/** The schema version this build migrates databases to. */
export const SCHEMA_VERSION = MIGRATIONS.length;
