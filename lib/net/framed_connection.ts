/**
 * A framed, validated, message-oriented view of one TCP connection: a read loop that decodes
 * and validates every frame, a single writer (at most one write in flight, short writes
 * looped), request/reply matching by `id`, and an idempotent close.
 */
import { encodeFrame, FrameDecoder, MAX_CONTROL_FRAME } from "../protocol/frame.ts";
import {
  ConnectionClosedError,
  type ErrorCode,
  FrameError,
  ProtocolError,
  RemoteError,
  TimeoutError,
} from "../protocol/errors.ts";
import { decodeMessage, encodeMessage, requestIdOf } from "../protocol/messages.ts";
import type { z } from "zod";

/** A message as it travels: an object with a string `type` (and for requests, an `id`). */
export type AnyMessage = { type: string; id?: number | string };
/** What may be sent: any message object; the receiving side validates it against its schema. */
export type OutgoingMessage = { type: string; [field: string]: unknown };

export interface FramedConnectionOptions<In> {
  /** The messages this side accepts; anything else is answered with an error frame. */
  schema: z.ZodDiscriminatedUnion;
  /** Message types that answer a request of ours (matched to it by `id`). */
  replyTypes: readonly string[];
  /**
   * Called for every accepted message that is not a reply, one at a time, in order. Until a
   * handler is set, messages wait for {@link FramedConnection.next}.
   */
  onMessage?: (message: In) => void | Promise<void>;
  /** Largest frame body accepted. */
  maxFrame?: number;
  /** Default deadline for {@link FramedConnection.request}, in ms. */
  requestTimeoutMs?: number;
  /** Malformed messages tolerated (each answered with an error) before the link is closed. */
  maxBadMessages?: number;
}

const READ_CHUNK = 64 * 1024;
/** Messages waiting for the handler before reading pauses (backpressure). */
const INBOX_HIGH_WATER = 256;

/** Writes all of `data`, looping over short writes. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    offset += await conn.write(data.subarray(offset));
  }
}

/** Why a connection closed: `undefined` for a clean close by either side. */
export type CloseReason = Error | undefined;

export class FramedConnection<In extends AnyMessage = AnyMessage> implements AsyncDisposable {
  readonly conn: Deno.TcpConn;
  readonly remoteAddr: Deno.NetAddr;
  readonly #opts: Required<Omit<FramedConnectionOptions<In>, "onMessage">>;
  #onMessage: ((message: In) => void | Promise<void>) | undefined;
  readonly #replyTypes: Set<string>;
  readonly #pending = new Map<number | string, {
    resolve: (m: In) => void;
    reject: (e: Error) => void;
  }>();
  #nextId = 1;
  #writeChain: Promise<void> = Promise.resolve();
  #inbox: In[] = [];
  #dispatching = false;
  #inboxDrained: (() => void) | undefined;
  #waiter: PromiseWithResolvers<In> | undefined;
  #badMessages = 0;
  #closing: Promise<void> | undefined;
  #closeReason: CloseReason;
  #readLoop: Promise<void> | undefined;
  readonly #closed = Promise.withResolvers<CloseReason>();
  lastReceived = Date.now();

  constructor(conn: Deno.TcpConn, options: FramedConnectionOptions<In>) {
    this.conn = conn;
    this.remoteAddr = conn.remoteAddr;
    this.#opts = {
      schema: options.schema,
      replyTypes: options.replyTypes,
      maxFrame: options.maxFrame ?? MAX_CONTROL_FRAME,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      maxBadMessages: options.maxBadMessages ?? 10,
    };
    this.#onMessage = options.onMessage;
    this.#replyTypes = new Set(options.replyTypes);
    try {
      conn.setNoDelay(true);
    } catch {
      // Not every platform/socket supports it; frames are written in one piece anyway.
    }
    this.#readLoop = this.#read();
  }

  /** Resolves with the reason once the connection is closed and its reader has stopped. */
  get closed(): Promise<CloseReason> {
    return this.#closed.promise;
  }

  get isClosed(): boolean {
    return this.#closing !== undefined;
  }

  /**
   * Sets the handler for incoming non-reply messages; messages that arrived before it was set
   * are handed to it first, in order.
   */
  setHandler(onMessage: (message: In) => void | Promise<void>): void {
    this.#onMessage = onMessage;
    if (!this.#dispatching && this.#inbox.length > 0) void this.#dispatch();
  }

  /**
   * Takes the next incoming non-reply message, for step-by-step exchanges (hello, handshakes)
   * before a handler is set.
   * @throws {TimeoutError} when nothing arrives in time; {@link ConnectionClosedError} on close.
   */
  next(timeoutMs: number): Promise<In> {
    const queued = this.#inbox.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#closing) {
      return Promise.reject(
        new ConnectionClosedError("connection closed", { cause: this.#closeReason }),
      );
    }
    const waiter = Promise.withResolvers<In>();
    const timer = setTimeout(
      () => waiter.reject(new TimeoutError(`nothing received within ${timeoutMs / 1000}s`)),
      timeoutMs,
    );
    this.#waiter = waiter;
    return waiter.promise.finally(() => {
      clearTimeout(timer);
      if (this.#waiter === waiter) this.#waiter = undefined;
    });
  }

  /** Queues a message; resolves once it is written to the socket. */
  send(message: OutgoingMessage): Promise<void> {
    if (this.#closing) return Promise.reject(new ConnectionClosedError("connection is closed"));
    const frame = encodeFrame(encodeMessage(message), this.#opts.maxFrame);
    const write = this.#writeChain.then(() => writeAll(this.conn, frame));
    this.#writeChain = write.catch((error) => {
      void this.close(asError(error));
    });
    return write;
  }

  /** Sends a request with a fresh `id` and waits for the reply with that id. */
  async request<R extends In = In>(
    message: OutgoingMessage,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<R> {
    const id = this.#nextId++;
    const reply = Promise.withResolvers<In>();
    this.#pending.set(id, reply);
    const timeoutMs = options.timeoutMs ?? this.#opts.requestTimeoutMs;
    const timer = setTimeout(
      () =>
        reply.reject(new TimeoutError(`no reply to ${message.type} within ${timeoutMs / 1000}s`)),
      timeoutMs,
    );
    const onAbort = () => reply.reject(options.signal?.reason ?? new Error("aborted"));
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await this.send({ ...message, id });
      const answer = await reply.promise;
      if (answer.type === "error") {
        const e = answer as unknown as { code: ErrorCode; message: string };
        throw new RemoteError(e.code, e.message);
      }
      return answer as R;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      this.#pending.delete(id);
    }
  }

  /** Sends an error frame (best effort), then closes. */
  async fail(code: ErrorCode, message: string, id?: number): Promise<void> {
    try {
      await this.send({ type: "error", code, message, ...(id === undefined ? {} : { id }) });
    } catch {
      // The peer may already be gone; closing is what matters.
    }
    await this.close(new ProtocolError(code, message));
  }

  /**
   * Closes the socket, fails pending requests and waits for the reader to stop. Idempotent:
   * later calls return the first call's promise.
   */
  close(reason?: CloseReason): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closeReason = reason;
    this.#closing = (async () => {
      // Let queued frames (a final error, a bye) reach the socket before it is closed.
      let grace: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.#writeChain, new Promise((r) => grace = setTimeout(r, 0))]);
      clearTimeout(grace);
      try {
        this.conn.close();
      } catch {
        // Already closed.
      }
      const error = new ConnectionClosedError(
        reason ? `connection closed: ${reason.message}` : "connection closed",
        { cause: reason },
      );
      for (const pending of this.#pending.values()) pending.reject(error);
      this.#pending.clear();
      this.#waiter?.reject(error);
      this.#inboxDrained?.();
      await this.#readLoop;
      await this.#writeChain.catch(() => {});
      this.#closed.resolve(this.#closeReason);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #read(): Promise<void> {
    const decoder = new FrameDecoder(this.#opts.maxFrame);
    const buffer = new Uint8Array(READ_CHUNK);
    let reason: CloseReason;
    try {
      while (!this.#closing) {
        let n: number | null;
        try {
          n = await this.conn.read(buffer);
        } catch (error) {
          if (this.#closing) break;
          reason = asError(error);
          break;
        }
        if (n === null) {
          decoder.finish();
          break;
        }
        this.lastReceived = Date.now();
        // The decoder keeps views of what it is given, so hand it a copy of this read.
        for (const body of decoder.push(buffer.slice(0, n))) {
          this.#accept(body);
          if (this.#closing) break;
        }
        if (this.#inbox.length >= INBOX_HIGH_WATER && !this.#closing) {
          const drained = Promise.withResolvers<void>();
          this.#inboxDrained = drained.resolve;
          await drained.promise;
        }
      }
    } catch (error) {
      reason = asError(error);
      if (error instanceof FrameError) {
        // Tell the sender why, then hang up: the stream can no longer be trusted.
        try {
          await writeAll(
            this.conn,
            encodeFrame(
              encodeMessage({ type: "error", code: "BAD_FRAME", message: reason.message }),
            ),
          );
        } catch {
          // It may not be listening.
        }
      }
    }
    if (!this.#closing) void this.close(reason);
  }

  #accept(body: Uint8Array): void {
    let message: In;
    try {
      message = decodeMessage(this.#opts.schema, body) as In;
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this.#badMessages++;
      const id = requestIdOf(body);
      if (this.#badMessages > this.#opts.maxBadMessages) {
        void this.fail(error.code, `too many bad messages; last: ${error.message}`, id);
      } else {
        this.send({ type: "error", code: error.code, message: error.message, id }).catch(() => {});
      }
      return;
    }
    if (message.id !== undefined && this.#replyTypes.has(message.type)) {
      const pending = this.#pending.get(message.id);
      if (pending) pending.resolve(message);
      // A reply nobody waits for (timed out) is dropped.
      if (pending || message.type !== "error") return;
    }
    if (this.#waiter) {
      this.#waiter.resolve(message);
      this.#waiter = undefined;
      return;
    }
    this.#inbox.push(message);
    if (!this.#dispatching && this.#onMessage) void this.#dispatch();
  }

  async #dispatch(): Promise<void> {
    this.#dispatching = true;
    try {
      while (this.#inbox.length > 0 && !this.#closing && this.#onMessage) {
        const message = this.#inbox.shift()!;
        try {
          await this.#onMessage?.(message);
        } catch (error) {
          void this.close(asError(error));
        }
        if (this.#inbox.length < INBOX_HIGH_WATER / 2) {
          this.#inboxDrained?.();
          this.#inboxDrained = undefined;
        }
      }
    } finally {
      this.#dispatching = false;
    }
  }
}

/** Opens a TCP connection with Nagle off. */
export async function dial(
  host: string,
  port: number,
  signal?: AbortSignal,
): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: host, port, transport: "tcp", signal });
  conn.setNoDelay(true);
  return conn;
}

export function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}
