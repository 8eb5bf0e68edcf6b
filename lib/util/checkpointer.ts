/**
 * Folds a database's write-ahead log back into it on a worker thread, with a connection of its
 * own. On the calling thread a checkpoint stalls everything else for as long as its two fsyncs
 * take: 80-180 ms every 5 s for a chat at a message a millisecond, the longest round trips of
 * the chat bench. A PASSIVE checkpoint never waits for the writer, so the main thread goes on
 * committing while it runs; what it has not copied yet is copied by the next one.
 *
 * The worker is made from source text rather than a module file, so the single-file bundle
 * carries it too; it starts at the first checkpoint (≈ 20-50 ms of CPU), not at start-up, and
 * opens its connection only for each checkpoint, so an idle one holds no file open.
 */

/**
 * The worker: for each path it is sent, opens the database, checkpoints it, closes it, and
 * answers with an empty string or the error's message.
 */
const WORKER_SOURCE = `
import { DatabaseSync } from "node:sqlite";
self.onmessage = (event) => {
  let db;
  try {
    db = new DatabaseSync(event.data);
    db.exec("PRAGMA synchronous = NORMAL");
    db.exec("PRAGMA wal_checkpoint(PASSIVE)");
    self.postMessage("");
  } catch (error) {
    self.postMessage(String(error?.message ?? error) || "failed");
  } finally {
    try {
      db?.close();
    } catch { /* closed */ }
  }
};
`;

let workerUrl: string | undefined;

/** Checkpoints one database on a worker thread, one checkpoint at a time. */
export class Checkpointer implements Disposable {
  readonly #path: string;
  #worker: Worker | undefined;
  #running = false;
  /** Settled when the checkpoint running now ends (or the checkpointer closes). */
  #run = Promise.withResolvers<void>();
  /** Set once the worker failed or could not start: the caller checkpoints on its own thread. */
  #broken = false;

  readonly #onDone: (() => void) | undefined;

  /** @param options.onDone called on the caller's thread after each checkpoint the worker made. */
  constructor(path: string, options: { onDone?: () => void } = {}) {
    this.#path = path;
    this.#onDone = options.onDone;
  }

  /**
   * Starts a checkpoint on the worker unless one is running.
   * @returns false when there is no worker to be had (the caller checkpoints itself).
   */
  start(): boolean {
    if (this.#broken) return false;
    if (this.#running) return true;
    try {
      this.#worker ??= this.#spawn();
    } catch {
      this.#broken = true;
      return false;
    }
    this.#running = true;
    this.#run = Promise.withResolvers<void>();
    this.#worker.postMessage(this.#path);
    return true;
  }

  /** Whether the worker was started (and has not failed). */
  get started(): boolean {
    return this.#worker !== undefined && !this.#broken;
  }

  /** Whether a checkpoint is running on the worker now. */
  get running(): boolean {
    return this.#running;
  }

  /** Resolves once no checkpoint runs on the worker. */
  idle(): Promise<void> {
    return this.#running ? this.#run.promise : Promise.resolve();
  }

  #ended(broken: boolean): void {
    this.#running = false;
    if (broken) this.#broken = true;
    this.#run.resolve();
  }

  #spawn(): Worker {
    workerUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    const worker = new Worker(workerUrl, { type: "module" });
    // A failed checkpoint leaves the log as it was: the caller's own (or the close) folds it.
    worker.onmessage = (event: MessageEvent<string>) => {
      this.#ended(event.data !== "");
      if (event.data === "") this.#onDone?.();
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      this.#ended(true);
    };
    return worker;
  }

  /** Ends the worker (a checkpoint under way finishes or not; the log stays valid either way). */
  close(): void {
    this.#worker?.terminate();
    this.#worker = undefined;
    this.#ended(true);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
