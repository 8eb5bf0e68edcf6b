/**
 * Rows as both SQL stores read them (snake_case columns) and the records the store interface
 * gives out: one mapping, so the backends cannot answer in different shapes.
 */
import type {
  LookupRecord,
  PendingMail,
  PresenceRecord,
  Receipt,
  RegistryRow,
  SessionRecord,
  UserRecord,
} from "./store.ts";

/** The columns `getUser()` selects. */
export const USER_COLUMNS = "name_key, name, salt, hash, kdf, public_key, mail_key, mail_key_sig";

export interface UserRow {
  name_key: string;
  name: string;
  salt: Uint8Array;
  hash: Uint8Array;
  kdf: string;
  public_key: string;
  mail_key: string;
  mail_key_sig: string;
}

export function toUser(row: UserRow): UserRecord {
  return {
    nameKey: row.name_key,
    name: row.name,
    salt: row.salt,
    hash: row.hash,
    kdf: row.kdf,
    publicKey: row.public_key,
    mailKey: row.mail_key,
    mailKeySig: row.mail_key_sig,
  };
}

export interface RegistrySqlRow {
  user: string;
  host: string;
  port: number;
  login_at: number;
  logout_at: number | null;
}

export function toRegistryRow(r: RegistrySqlRow): RegistryRow {
  return { user: r.user, host: r.host, port: r.port, loginAt: r.login_at, logoutAt: r.logout_at };
}

export interface MailSqlRow {
  msg_id: string;
  ts: number;
  body: string;
}

export function toPendingMail(r: MailSqlRow): PendingMail {
  return { msgId: r.msg_id, ts: r.ts, body: r.body };
}

/** The columns `findSession()` selects, from `sessions s` joined with `users u`. */
export const SESSION_COLUMNS = "u.name, s.client_key, s.created_at, s.replaced_at";

export interface SessionSqlRow {
  name: string;
  client_key: string | null;
  created_at: number;
  replaced_at: number | null;
}

export function toSession(r: SessionSqlRow): SessionRecord {
  return {
    user: r.name,
    clientKey: r.client_key,
    createdAt: r.created_at,
    replacedAt: r.replaced_at,
  };
}

export interface ReceiptSqlRow {
  msg_id: string;
  reader: string;
  read_at: number;
  sig: string | null;
  /** SQLite gives 0/1. */
  rejected: boolean | number;
}

export function toReceipt(r: ReceiptSqlRow): Receipt {
  return {
    msgId: r.msg_id,
    reader: r.reader,
    readAt: r.read_at,
    ...(r.sig ? { sig: r.sig } : {}),
    ...(r.rejected ? { rejected: true as const } : {}),
  };
}

/** A lookup's row: the target's public columns and three flags (SQLite gives 0/1). */
export interface LookupSqlRow {
  name_key: string;
  name: string;
  public_key: string;
  mail_key: string;
  mail_key_sig: string;
  mine: boolean | number;
  theirs: boolean | number;
  receipts: boolean | number;
}

export function toLookup(r: LookupSqlRow, presence: PresenceRecord | undefined): LookupRecord {
  return {
    user: {
      nameKey: r.name_key,
      name: r.name,
      publicKey: r.public_key,
      mailKey: r.mail_key,
      mailKeySig: r.mail_key_sig,
    },
    presence,
    mine: Boolean(r.mine),
    theirs: Boolean(r.theirs),
    receipts: Boolean(r.receipts),
  };
}
