/**
 * What every room of the client core shares: the error type users see, the event sink, and
 * the lifetime (background tasks to wait for on close, the abort signal, the closing flag).
 */
import { asError } from "../net/framed_connection.ts";
import { ProtocolError, TimeoutError } from "../protocol/errors.ts";
import type { EventSink } from "./events.ts";

/** A failure the user should see as one line, with its stable code. */
export class ClientError extends Error {
  override name = "ClientError";
  constructor(readonly code: string, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Turns a connect failure into a sentence that says what to do. */
export function describeConnectError(error: unknown, where: string, flag: string): string {
  const e = asError(error);
  if (e instanceof Deno.errors.ConnectionRefused) {
    return `cannot reach ${where}: connection refused (is it running? try ${flag})`;
  }
  if (e instanceof Deno.errors.TimedOut || e instanceof TimeoutError) {
    return `cannot reach ${where}: timed out (check the address, try ${flag})`;
  }
  if (e instanceof Deno.errors.NotFound || /lookup|resolve/i.test(e.message)) {
    return `cannot reach ${where}: unknown host (try ${flag})`;
  }
  if (e instanceof ProtocolError) return `${where}: ${e.message}`;
  return `cannot reach ${where}: ${e.message}`;
}

/** The lifetime and event sink shared by the rooms of one client. */
export class ClientContext {
  readonly emit: EventSink;
  readonly #tasks = new Set<Promise<unknown>>();
  readonly #abort = new AbortController();
  #closing = false;

  constructor(emit: EventSink) {
    this.emit = emit;
  }

  /** Aborted when the client closes: dials and waits in progress end. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  get closing(): boolean {
    return this.#closing;
  }

  /** Marks the client as closing (before the logout that close does). */
  beginClose(): void {
    this.#closing = true;
  }

  /** Aborts everything that waits on {@link signal}. */
  abort(reason: Error): void {
    this.#abort.abort(reason);
  }

  /** Keeps a background task, so closing waits for it; its failure is not unhandled. */
  track(task: Promise<unknown>): void {
    this.#tasks.add(task);
    void task.catch(() => {}).finally(() => this.#tasks.delete(task));
  }

  /** Waits until every tracked task (and the tasks they started) has settled. */
  async drain(): Promise<void> {
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
  }
}
