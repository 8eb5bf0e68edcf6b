/**
 * The SQLite plumbing both stores share (node:sqlite): WAL with synchronous=NORMAL (a committed
 * transaction survives kill -9 of the process), numbered migrations recorded in
 * `PRAGMA user_version`, statements prepared once, transactions, and checkpoints moved off
 * the hot path. Knows nothing of what is stored.
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { ownerOnlyFile } from "./owner_only.ts";

/** How often the write-ahead log is folded back into the database, when something changed. */
const CHECKPOINT_EVERY_MS = 5_000;

export class Database implements Disposable {
  readonly path: string;
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();
  readonly #timer: ReturnType<typeof setInterval>;

  /**
   * Opens (creating) the database at `path`, owner-only, and brings its schema up to date.
   * SQLite gives the write-ahead log and shared-memory files the mode of the database file.
   */
  constructor(path: string, migrations: readonly string[]) {
    this.path = path;
    ownerOnlyFile(path, [`${path}-wal`, `${path}-shm`, `${path}-journal`]);
    this.#db = new DatabaseSync(path);
    this.#db.exec("PRAGMA journal_mode = WAL");
    this.#db.exec("PRAGMA synchronous = NORMAL");
    this.#db.exec("PRAGMA foreign_keys = ON");
    this.#db.exec("PRAGMA busy_timeout = 5000");
    // SQLite would checkpoint inside whichever commit crosses 1,000 pages, stalling that
    // message by milliseconds; a timer does it between messages instead.
    this.#db.exec("PRAGMA wal_autocheckpoint = 0");
    this.#migrate(migrations);
    this.#timer = setInterval(() => this.checkpoint(), CHECKPOINT_EVERY_MS);
  }

  /**
   * Applies the migrations not applied yet, all in one transaction: a new database gets its
   * whole schema in one commit (one commit per migration cost a fresh server or client ~3 ms
   * of CPU at start-up), and a failure leaves it as it was.
   */
  #migrate(migrations: readonly string[]): void {
    const from = this.schemaVersion;
    if (from >= migrations.length) return;
    this.transaction(() => {
      for (let v = from; v < migrations.length; v++) this.#db.exec(migrations[v]!);
      this.#db.exec(`PRAGMA user_version = ${migrations.length}`);
    });
  }

  /** The number of migrations applied. */
  get schemaVersion(): number {
    return (this.sql("PRAGMA user_version").get() as { user_version: number }).user_version;
  }

  /** The prepared statement for `sql`, prepared once: preparing costs more than a small run. */
  sql(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  /** Runs `work` in one write transaction: all of it is committed, or none. */
  transaction<T>(work: () => T): T {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const result = work();
      this.#db.exec("COMMIT");
      return result;
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw error;
    }
  }

  /** Folds the write-ahead log into the database without waiting for readers. */
  checkpoint(): void {
    if (this.#db.isOpen) this.#db.exec("PRAGMA wal_checkpoint(PASSIVE)");
  }

  close(): void {
    clearInterval(this.#timer);
    this.#statements.clear();
    if (this.#db.isOpen) {
      this.checkpoint();
      this.#db.close();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
