/**
 * The SQLite plumbing both stores share (node:sqlite): WAL with synchronous=NORMAL (a committed
 * transaction survives kill -9 of the process), numbered migrations recorded in
 * `PRAGMA user_version`, statements prepared once, transactions, and checkpoints moved off
 * the hot path. Knows nothing of what is stored.
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { ownerOnlyFile } from "./owner_only.ts";
import { Checkpointer } from "./checkpointer.ts";

/** How often the write-ahead log is folded back into the database, when something changed. */
const CHECKPOINT_EVERY_MS = 5_000;
/**
 * With a checkpointer thread: a log below this is folded on this thread (a light user's few
 * pages: the worker is not worth starting).
 */
const LOG_WORKER_FROM_BYTES = 1024 * 1024;
/** What SQLite cuts the log back to when it starts over. */
const LOG_KEPT_BYTES = 8 * 1024 * 1024;
/** Offset and length of the log header's checkpoint sequence, which counts its restarts. */
const LOG_SEQ_AT = 12;

export class Database implements Disposable {
  readonly path: string;
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #checkpointer: Checkpointer | undefined;
  /** The log's restart count when the worker's last checkpoint ended. */
  #logSeq = -1;

  /**
   * Opens (creating) the database at `path`, owner-only, and brings its schema up to date.
   * SQLite gives the write-ahead log and shared-memory files the mode of the database file.
   * @param options.checkpointOffThread fold the log back on a worker thread (see Checkpointer),
   * so the checkpoint's fsyncs never stall this thread.
   * @param options.checkpointEveryMs how often the log is looked at (tests make it short).
   */
  constructor(
    path: string,
    migrations: readonly string[],
    options: { checkpointOffThread?: boolean; checkpointEveryMs?: number } = {},
  ) {
    this.path = path;
    this.checkpointsOffThread = options.checkpointOffThread === true;
    if (options.checkpointOffThread) {
      this.#checkpointer = new Checkpointer(path, { onDone: () => this.#checkpointed() });
    }
    ownerOnlyFile(path, [`${path}-wal`, `${path}-shm`, `${path}-journal`]);
    this.#db = new DatabaseSync(path);
    try {
      this.#db.exec("PRAGMA journal_mode = WAL");
      this.#db.exec("PRAGMA synchronous = NORMAL");
      this.#db.exec("PRAGMA foreign_keys = ON");
      this.#db.exec("PRAGMA busy_timeout = 5000");
      // SQLite would checkpoint inside whichever commit crosses 1,000 pages, stalling that
      // message by milliseconds; a timer does it between messages instead.
      this.#db.exec("PRAGMA wal_autocheckpoint = 0");
      if (this.#checkpointer) this.#db.exec(`PRAGMA journal_size_limit = ${LOG_KEPT_BYTES}`);
      this.#migrate(migrations);
    } catch (error) {
      // A database that cannot be opened (not one, from a newer build, damaged) is closed.
      this.#checkpointer?.close();
      this.#db.close();
      throw error;
    }
    this.#timer = setInterval(
      () => this.#checkpointSoon(),
      options.checkpointEveryMs ?? CHECKPOINT_EVERY_MS,
    );
  }

  /** Whether the log may be folded on a worker thread (the `checkpointOffThread` option). */
  readonly checkpointsOffThread: boolean;

  /** Whether the worker thread was started: the log grew past what this thread folds itself. */
  get checkpointWorkerStarted(): boolean {
    return this.#checkpointer?.started ?? false;
  }

  /** The timer's checkpoint: on the checkpointer's thread when there is one and it pays. */
  #checkpointSoon(): void {
    const checkpointer = this.#checkpointer;
    if (checkpointer?.running) return;
    if (checkpointer) {
      const worth = checkpointer.started || this.#log().size >= LOG_WORKER_FROM_BYTES;
      if (worth && checkpointer.start()) return;
    }
    this.checkpoint();
  }

  /**
   * The log starts over only at a write that finds every frame of it folded, which a checkpoint
   * running beside a steady stream of writes (a script's, the bench's) never leaves. So when a
   * checkpoint on the worker ends and the log has not started over since the one before, this
   * thread folds what was written meanwhile, at once: a few frames, between two writes, and the
   * next write starts the log over. One short stall every other checkpoint of such a stream
   * (instead of one of 80-180 ms every 5 s), and a log of at most ≈ 10 s of its writes.
   */
  #checkpointed(): void {
    if (!this.#db.isOpen) return;
    const seq = this.#log().seq;
    if (seq === this.#logSeq) this.checkpoint();
    this.#logSeq = seq;
  }

  /** The log's size and restart count (its header's checkpoint sequence), read from its file. */
  #log(): { size: number; seq: number } {
    try {
      using file = Deno.openSync(`${this.path}-wal`, { read: true });
      const header = new Uint8Array(LOG_SEQ_AT + 4);
      if (file.readSync(header) !== header.length) return { size: 0, seq: -1 };
      const seq = new DataView(header.buffer).getUint32(LOG_SEQ_AT);
      return { size: file.statSync().size, seq };
    } catch {
      return { size: 0, seq: -1 }; // no log yet
    }
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
    // Prepared once like any statement: exec() parsed these again at every transaction (a group
    // member commits one per message).
    this.sql("BEGIN IMMEDIATE").run();
    try {
      const result = work();
      this.sql("COMMIT").run();
      return result;
    } catch (error) {
      this.sql("ROLLBACK").run();
      throw error;
    }
  }

  /** Folds the write-ahead log into the database without waiting for readers. */
  checkpoint(): void {
    if (this.#db.isOpen) this.#db.exec("PRAGMA wal_checkpoint(PASSIVE)");
  }

  close(): void {
    clearInterval(this.#timer);
    this.#checkpointer?.close();
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
