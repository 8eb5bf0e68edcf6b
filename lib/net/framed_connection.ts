/**
 * A framed, validated, message-oriented view of one byte stream (a {@link Transport}: TCP, a
 * relayed stream, a memory pipe): a read loop that decodes and validates every frame, a single
 * writer (at most one write in flight, short writes looped), request/reply matching by `id`,
 * and an idempotent close.
 */
import { HEADER_SIZE, MAX_CONTROL_FRAME } from "../protocol/frame.ts";
import { FrameReader } from "./frame_reader.ts";
import {
  ConnectionClosedError,
  type ErrorCode,
  FrameError,
  ProtocolError,
  RemoteError,
  TimeoutError,
} from "../protocol/errors.ts";
import {
  decodeMessage,
  encodeMessage,
  type MessageSchema,
  requestIdOf,
} from "../protocol/messages.ts";
import type { NoiseSession, TransportCipher } from "../crypto/noise.ts";
import { CryptoError, MAX_MESSAGE_LEN } from "../crypto/noise.ts";
import { closeFrameInto, openFrame, sealedSize } from "./sealed_frames.ts";
import { freeNow } from "../util/free.ts";
import { asTransport, type Transport, type TransportAddress, writeAll } from "./transport.ts";
import { delay } from "../util/time.ts";

export { writeAll };

/** A message as it travels: an object with a string `type` (and for requests, an `id`). */
export type AnyMessage = { type: string; id?: number | string };

/**
 * A binary frame (bulk data such as file chunks): its body starts with the byte 0x00, which
 * no JSON text can start with. Handed to the handler in order with the JSON messages.
 */
export interface BinaryFrame {
  type: "binary";
  data: Uint8Array;
  id?: undefined;
  /**
   * Present when `data` lies in a buffer the connection reuses (a frame of several Noise
   * messages): call it once done with `data`, which must not be used afterwards. A handler
   * that does not call it leaves the buffer to the garbage collector.
   */
  release?: () => void;
}

/** First byte of a binary frame body. */
export const BINARY_TAG = 0x00;
/** What may be sent: any message object; the receiving side validates it against its schema. */
export type OutgoingMessage = { type: string; [field: string]: unknown };

export interface FramedConnectionOptions<In> {
  /** The messages this side accepts; anything else is answered with an error frame. */
  schema: MessageSchema;
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
  /** Accept binary frames (peer links carry file data); elsewhere they are refused. */
  acceptBinary?: boolean;
  /**
   * Message types after which the reader stops reading (without closing), so the stream can
   * be handed to someone else with {@link FramedConnection.detach}: a relay leg after its
   * `relay_join` (server) or `relay_start` (client).
   */
  stopReadingAfter?: readonly string[];
  /**
   * Bytes read ahead per connection (default 4 KiB). A server holding thousands of mostly
   * idle connections takes less: each keeps this buffer for as long as it waits to read.
   */
  readAhead?: number;
  /**
   * Bytes of frames queued to be written (and not yet taken by the socket) at most, like
   * Redis's client-output-buffer-limit: a frame that would go past it ends the connection with
   * a {@link SlowReaderError}, so a peer that never reads (hostile, or frozen with its TCP
   * window full) cannot grow our memory without bound. Default {@link DEFAULT_MAX_WRITE_QUEUE}.
   */
  maxWriteQueue?: number;
}

/**
 * The default of {@link FramedConnectionOptions.maxWriteQueue}: 32 frames of the largest size
 * (1 MiB). Far above what legitimate traffic queues on one connection (a file transfer keeps
 * 4 chunks of 256 KiB in flight; an outbox of 520 messages of 64 Ki characters, sent at once,
 * stayed below 4 MiB), so only a reader that has stopped reaches it.
 */
export const DEFAULT_MAX_WRITE_QUEUE = 32 * 1024 * 1024;

/** Liveness: a `ping` every `intervalMs`; silence for `timeoutMs` ends the connection. */
export interface HeartbeatOptions {
  intervalMs: number;
  timeoutMs: number;
  /** False: only watch for silence (the other side sends the pings). */
  sendPings?: boolean;
}

/** Why a connection closed when the other side stopped answering. */
export class SilentPeerError extends Error {
  override name = "SilentPeerError";
}

/**
 * Why a connection closed when the other side stopped reading: more than
 * {@link FramedConnectionOptions.maxWriteQueue} bytes waited to be written to it.
 */
export class SlowReaderError extends Error {
  override name = "SlowReaderError";
  /** The bound that was reached, in bytes. */
  readonly limit: number;
  constructor(limit: number, options?: ErrorOptions) {
    super(
      `the other side does not read what is sent to it: ${mib(limit)} MiB waited to be ` +
        "written (the limit), so the connection was closed",
      options,
    );
    this.limit = limit;
  }
}

/** `bytes` in MiB, as text with at most one decimal. */
function mib(bytes: number): string {
  return String(Math.round(bytes / 1024 / 1024 * 10) / 10);
}

/** Messages waiting for the handler before reading pauses (backpressure). */
const INBOX_HIGH_WATER = 256;
/**
 * Bytes waiting for the handler before reading pauses: binary frames (file chunks) and the
 * bodies of messages alike (256 messages of up to 1 MiB each would be 256 MiB per connection).
 */
const INBOX_HIGH_WATER_BYTES = 2 * 1024 * 1024;
/** Frames at least this large (with their header) are never joined with others. */
const BATCH_ONLY_BELOW = 16 * 1024;
/**
 * How far the read-ahead of a link that takes binary frames grows while they arrive: room for
 * several file chunks per read, each decrypted where it lies.
 */
const BULK_READ_AHEAD = 1024 * 1024;
/**
 * Buffers kept for the plaintext of large binary frames (file chunks of several Noise messages)
 * once their handler released them: a fresh buffer of that size per frame costs page faults.
 */
const PLAIN_BUFFERS = 4;
/** At most this many bytes of small frames are joined into one write. */
const BATCH_BYTES = 64 * 1024;

/** Small frames queued behind a write under way, written together when their turn comes. */
interface WriteBatch {
  /** Whole frames: header and (sealed) body each. */
  frames: Uint8Array[];
  /** Their length. */
  bytes: number;
  written: Promise<void>;
}

/** Whole frames in one buffer of `bytes` bytes. */
function joinFrames(frames: Uint8Array[], bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let at = 0;
  for (const frame of frames) {
    out.set(frame, at);
    at += frame.length;
  }
  return out;
}
/** Frames a peer may send while we finish a handshake step; more is a flood. */
const MAX_HELD_FRAMES = 64;
/** How long a `path_switch` from the other side may wait for our side of the new path. */
const PATH_SWITCH_WAIT_MS = 15_000;
/** Pings kept for an answer while a pong waits to be written (the oldest dropped past this). */
const PINGS_WAITING = 8;
/** The old path stays open this long after a switch, so its last bytes are surely read. */
const OLD_PATH_GRACE_MS = 1_000;
/**
 * How long a connection ended with {@link FramedConnection.end} (every `fail()`) waits for the
 * other side to end its direction before it closes both: a peer that reads our last frame and
 * closes takes a round trip; one that never does costs no more than this.
 */
export const END_GRACE_MS = 1_000;

/** What the reader's wait yields when the other side moved to a new path. */
const SWITCHED = Symbol("switched");

/** A move to another transport in progress: the marker each way, and the new path. */
interface Migration {
  next: Transport;
  old: Transport;
  wrote: boolean;
  read: boolean;
  done: PromiseWithResolvers<void>;
}

/** Why a connection closed: `undefined` for a clean close by either side. */
export type CloseReason = Error | undefined;

export class FramedConnection<In extends AnyMessage = AnyMessage> implements AsyncDisposable {
  /** The transport frames are written to (after a migration: the new one). */
  #transport: Transport;
  readonly #opts:
    & Required<
      Omit<
        FramedConnectionOptions<In>,
        "onMessage" | "stopReadingAfter" | "readAhead" | "maxWriteQueue"
      >
    >
    & { readAhead?: number };
  readonly #stopAfter: ReadonlySet<string>;
  /** Set when a stop-after message was read: the reader has stopped, the stream is intact. */
  #stopped = false;
  #rest: Uint8Array = new Uint8Array(0);
  #detached = false;
  #migration: Migration | undefined;
  #migrationWaiter: PromiseWithResolvers<Migration> | undefined;
  /** The other side's `path_switch` was handed over: read the new path next. */
  #switchRead = false;
  /** Wakes the reader's current wait when that happens (one per read: nothing accumulates). */
  #wakeForSwitch: ((value: typeof SWITCHED) => void) | undefined;
  readonly #oldPaths = new Set<Transport>();
  readonly #graceTimers = new Set<ReturnType<typeof setTimeout>>();
  #onMessage: ((message: In) => void | Promise<void>) | undefined;
  readonly #replyTypes: Set<string>;
  readonly #pending = new Map<number | string, {
    resolve: (m: In) => void;
    reject: (e: Error) => void;
  }>();
  #nextId = 1;
  #writeChain: Promise<void> = Promise.resolve();
  /** The batch of small frames waiting for the write under way, which more may still join. */
  #openBatch: WriteBatch | undefined;
  /** Frames queued or being written. */
  #writesQueued = 0;
  /** Their bytes (header and sealed body), bounded by `#maxWriteQueue`. */
  #queuedBytes = 0;
  /** See {@link FramedConnectionOptions.maxWriteQueue}; Infinity once it was reached. */
  #maxWriteQueue: number;
  /** When the last frame was queued (a ping is only needed on a quiet connection). */
  #lastSent = 0;
  /** Set once a frame could not be read: the connection is on its way down. */
  #readFailing = false;
  /** Bytes of binary frames in the inbox. */
  #inboxBytes = 0;
  #inbox: In[] = [];
  #dispatching = false;
  #inboxDrained: (() => void) | undefined;
  #waiter: { resolve: (m: In) => void; reject: (e: Error) => void; hold: boolean } | undefined;
  /** Set after a `next({ hold: true })`: frames are kept undecoded until secure()/release(). */
  #held = false;
  #heldFrames: Uint8Array[] = [];
  #heldWaiter: { resolve: (body: Uint8Array) => void; reject: (e: Error) => void } | undefined;
  /** See {@link PLAIN_BUFFERS}; emptied when large binary frames stop coming. */
  readonly #plainBuffers: Uint8Array[] = [];
  /** When the last binary frame of several Noise messages arrived. */
  #lastBulk = 0;
  #sendCipher: TransportCipher | undefined;
  #receiveCipher: TransportCipher | undefined;
  #badMessages = 0;
  /**
   * A pong is queued and not yet written; the pings that came meanwhile wait here for it, the
   * latest {@link PINGS_WAITING} of them. One pong at a time: a peer that sends pings and never
   * reads would otherwise grow the write queue without bound (a stranger could, before any
   * login).
   */
  #pongQueued = false;
  #pingsWaiting: number[] = [];
  #closing: Promise<void> | undefined;
  /** Set by end(): nothing more is sent or handed over, and close() gives `#endReason`. */
  #ending: Promise<void> | undefined;
  #endReason: CloseReason;
  #closeReason: CloseReason;
  #readLoop: Promise<void> | undefined;
  readonly #closed = Promise.withResolvers<CloseReason>();
  lastReceived = Date.now();
  #heartbeat: ReturnType<typeof setInterval> | undefined;

  /** @param transport the byte stream; a bare TCP connection is wrapped with Nagle off. */
  constructor(transport: Transport | Deno.TcpConn, options: FramedConnectionOptions<In>) {
    this.#transport = asTransport(transport);
    this.#stopAfter = new Set(options.stopReadingAfter ?? []);
    this.#opts = {
      schema: options.schema,
      replyTypes: options.replyTypes,
      maxFrame: options.maxFrame ?? MAX_CONTROL_FRAME,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      maxBadMessages: options.maxBadMessages ?? 10,
      acceptBinary: options.acceptBinary ?? false,
      readAhead: options.readAhead,
    };
    this.#maxWriteQueue = options.maxWriteQueue ?? DEFAULT_MAX_WRITE_QUEUE;
    if (!(this.#maxWriteQueue > 0)) {
      throw new RangeError(`maxWriteQueue must be above 0, got ${options.maxWriteQueue}`);
    }
    this.#onMessage = options.onMessage;
    this.#replyTypes = new Set(options.replyTypes);
    this.#readLoop = this.#read();
  }

  /** The byte stream under the connection now (it changes when the link moves). */
  get transport(): Transport {
    return this.#transport;
  }

  get remoteAddr(): TransportAddress {
    return this.#transport.remoteAddr;
  }

  /** Resolves with the reason once the connection is closed and its reader has stopped. */
  get closed(): Promise<CloseReason> {
    return this.#closed.promise;
  }

  get isClosed(): boolean {
    return this.#closing !== undefined || this.#ending !== undefined;
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
  next(timeoutMs: number, options: { hold?: boolean } = {}): Promise<In> {
    const queued = this.#inbox.shift();
    if (queued) {
      this.#inboxBytes -= bytesOf(queued);
      // Only step-by-step exchanges read ahead of a handler; holding applies to what follows.
      if (options.hold) this.#held = true;
      return Promise.resolve(queued);
    }
    return this.#arrival<In>(timeoutMs, (waiter) => {
      const entry = { ...waiter, hold: options.hold === true };
      this.#waiter = entry;
      return () => {
        if (this.#waiter === entry) this.#waiter = undefined;
      };
    });
  }

  /**
   * Waits for what `register` hands its resolvers to; fails on close or after `timeoutMs`.
   * `register` returns how to take them back.
   */
  #arrival<T>(
    timeoutMs: number,
    register: (waiter: { resolve: (v: T) => void; reject: (e: Error) => void }) => () => void,
  ): Promise<T> {
    if (this.#closing || this.#ending) {
      const cause = this.#closing ? this.#closeReason : this.#endReason;
      return Promise.reject(new ConnectionClosedError("connection closed", { cause }));
    }
    const waiter = Promise.withResolvers<T>();
    const timer = setTimeout(
      () => waiter.reject(new TimeoutError(`nothing received within ${timeoutMs / 1000}s`)),
      timeoutMs,
    );
    const unregister = register(waiter);
    return waiter.promise.finally(() => {
      clearTimeout(timer);
      unregister();
    });
  }

  /**
   * Starts heartbeats: a `ping` every interval when nothing else was sent (the other side's
   * connection answers `pong` by itself); when nothing at all has arrived for `timeoutMs`, the connection is closed with a
   * {@link SilentPeerError}. A process that died closes its socket and is noticed at once;
   * this catches the ones that are frozen or cut off.
   */
  startHeartbeat(options: HeartbeatOptions): void {
    if (this.#heartbeat !== undefined || this.#closing) return;
    this.lastReceived = Date.now();
    // Silence is checked four times per ping interval, and counted as too long one check
    // early: a frozen peer is declared gone no later than `timeoutMs` after it went quiet.
    const check = Math.max(50, Math.floor(options.intervalMs / 4));
    let untilPing = 0;
    this.#heartbeat = setInterval(() => {
      const silent = Date.now() - this.lastReceived;
      if (silent >= options.timeoutMs - check) {
        void this.close(
          new SilentPeerError(`no answer for ${(silent / 1000).toFixed(1)} s`),
        );
        return;
      }
      untilPing -= check;
      if (untilPing > 0) return;
      untilPing = options.intervalMs;
      // Anything sent within the interval said we are alive: no ping on a busy connection.
      if (Date.now() - this.#lastSent < options.intervalMs - check) return;
      // Ids from the request counter: a pong can never be taken for a request's reply.
      if (options.sendPings !== false) {
        this.send({ type: "ping", id: this.#nextId++ }).catch(() => {});
      }
    }, check);
  }

  /** Messages received and waiting for the handler (or for {@link next}). */
  get pendingMessages(): number {
    return this.#inbox.length;
  }

  /** True once {@link secure} installed the ciphers of a finished handshake. */
  get isSecure(): boolean {
    return this.#sendCipher !== undefined;
  }

  /**
   * Installs the ciphers of a finished Noise handshake. Every frame written after this call is
   * encrypted, and every frame read after the last handshake message is decrypted; a frame
   * that fails authentication (tampered, replayed, reordered, truncated) ends the connection.
   */
  secure(session: Pick<NoiseSession, "send" | "receive">): void {
    this.#sendCipher = session.send;
    this.#receiveCipher = session.receive;
    if (this.#inbox.length > 0) {
      // Decoded before the hold began and not taken by the handshake: plaintext that must not
      // reach the handler.
      this.#inbox.length = 0;
      this.#inboxBytes = 0;
      void this.close(new FrameError("plaintext messages arrived during the handshake"));
      return;
    }
    this.#releaseHeld();
  }

  /**
   * Takes the next message while frames are held (after `next({ hold: true })`, before
   * {@link secure}): the handshake reads its messages one at a time this way, so nothing
   * behind the last handshake message is ever decoded as plaintext. Unlike the handler's
   * path, a malformed frame here is not forgiven: it throws.
   * @throws {ProtocolError} for a malformed frame; {@link TimeoutError};
   * {@link ConnectionClosedError}.
   */
  async nextHeld(timeoutMs: number): Promise<In> {
    // Messages decoded before the hold began come first, in order.
    const queued = this.#inbox.shift();
    if (queued) {
      this.#inboxBytes -= bytesOf(queued);
      return queued;
    }
    if (!this.#held) throw new TypeError("nextHeld() needs a hold: next(ms, { hold: true })");
    const body = await this.#takeHeld(timeoutMs);
    return decodeMessage(this.#opts.schema, body) as In;
  }

  #takeHeld(timeoutMs: number): Promise<Uint8Array> {
    const held = this.#heldFrames.shift();
    if (held) return Promise.resolve(held);
    return this.#arrival<Uint8Array>(timeoutMs, (waiter) => {
      this.#heldWaiter = waiter;
      return () => {
        if (this.#heldWaiter === waiter) this.#heldWaiter = undefined;
      };
    });
  }

  /** Ends a hold started by `next({ hold: true })` without securing the connection. */
  release(): void {
    this.#releaseHeld();
  }

  #releaseHeld(): void {
    try {
      while (this.#heldFrames.length > 0 && !this.#closing && !this.#readFailing) {
        this.#ingest(this.#heldFrames.shift()!);
      }
    } catch (error) {
      // As in the read loop: a held frame that fails authentication ends the connection, with
      // an error frame saying why.
      void this.#readFailed(error);
    }
    this.#held = false;
  }

  /** Queues a message; resolves once it is written to the socket. */
  send(message: OutgoingMessage): Promise<void> {
    if (
      message.type === "error" && typeof message.message === "string" &&
      message.message.length > 500
    ) {
      // Error texts may quote hostile input; the schema allows 500 characters.
      message = { ...message, message: message.message.slice(0, 497) + "..." };
    }
    return this.#write(encodeMessage(message));
  }

  /**
   * Queues a message already encoded with `encodeMessage` (one not checked here, as `send`
   * does not check its message either); resolves once it is written to the socket. The same
   * message to many links (a group message to each member) is encoded once, sealed per link.
   */
  sendEncoded(body: Uint8Array): Promise<void> {
    return this.#write(body);
  }

  /**
   * Queues a binary frame (its first byte must be {@link BINARY_TAG}); resolves once written.
   * Keep only a few queued (await the oldest before queuing more): other messages slip in
   * between, so a chat line waits for at most those. `body` is encrypted before this returns
   * and may be reused at once.
   * @param into where to build the frame (header and sealed body), so a bulk sender reuses a
   * few buffers instead of taking a fresh one per frame: it needs {@link frameSize} bytes and
   * must not change until this settles. Without it, a buffer is allocated.
   */
  sendBinary(body: Uint8Array, into?: Uint8Array): Promise<void> {
    if (body[0] !== BINARY_TAG) {
      return Promise.reject(new RangeError("binary frames start with 0x00"));
    }
    return this.#write(body, undefined, into);
  }

  /** Bytes a frame of a `body` of `length` bytes takes on the wire now (header included). */
  frameSize(length: number): number {
    return HEADER_SIZE + (this.#sendCipher ? sealedSize(length) : length);
  }

  #write(body: Uint8Array, afterWrite?: () => void, into?: Uint8Array): Promise<void> {
    if (this.#closing || this.#ending) {
      return Promise.reject(new ConnectionClosedError("connection is closed"));
    }
    if (body.length > this.#opts.maxFrame) {
      return Promise.reject(
        new RangeError(
          `message of ${body.length} bytes exceeds the maximum of ${this.#opts.maxFrame}`,
        ),
      );
    }
    // Checked before sealing, which takes the next nonce: the error frame that follows then
    // takes it instead, and the other side can open it. (The body's length stands for the
    // frame's, a few bytes shorter.)
    if (this.#queuedBytes + body.length > this.#maxWriteQueue) return this.#overflow();
    // The cipher is taken now, so a frame queued before secure() goes out plain. Sealing is done
    // now too, on this thread: nonces follow the order of the calls, which is the order the
    // chain writes in.
    let frame: Uint8Array;
    try {
      frame = this.#frame(body, into);
    } catch (error) {
      return Promise.reject(error);
    }
    const length = frame.length;
    this.#queuedBytes += length;
    this.#writesQueued++;
    const written = () => {
      this.#writesQueued--;
      this.#queuedBytes -= length;
    };
    this.#lastSent = Date.now();
    const open = this.#openBatch;
    if (
      open !== undefined && afterWrite === undefined && into === undefined &&
      frame.length < BATCH_ONLY_BELOW && open.bytes + frame.length <= BATCH_BYTES
    ) {
      // Small frames queued while a write is under way go out together in one write.
      open.frames.push(frame);
      open.bytes += frame.length;
      return open.written.finally(written).catch(throwAsLost);
    }
    let write: Promise<void>;
    if (this.#writesQueued === 1) {
      // Nothing ahead of it (the usual case for a chat line): straight to the socket.
      this.#openBatch = undefined;
      write = writeAll(this.#transport, frame);
    } else {
      const batch: WriteBatch = {
        frames: [frame],
        bytes: frame.length,
        written: Promise.resolve(),
      };
      batch.written = this.#writeChain.then(() => {
        if (this.#openBatch === batch) this.#openBatch = undefined;
        // To the path the connection is on when its turn comes (see migrate()).
        return writeAll(
          this.#transport,
          batch.frames.length === 1 ? frame : joinFrames(batch.frames, batch.bytes),
        );
      });
      // Later small frames join it, unless this one must be written alone (see below), or is
      // in a caller's buffer (the caller may reuse it once this one is written).
      this.#openBatch =
        afterWrite === undefined && into === undefined && frame.length < BATCH_ONLY_BELOW
          ? batch
          : undefined;
      write = batch.written;
    }
    // Runs before anything queued later is written (a path switch moves the writes after it).
    if (afterWrite) write = write.then(afterWrite);
    const settled = write.finally(written);
    this.#writeChain = settled.catch((error) => {
      void this.close(asError(error));
    });
    return settled.catch(throwAsLost);
  }

  /**
   * The write queue is full: the other side has stopped reading. The connection ends with a
   * {@link SlowReaderError}; an error frame saying so goes behind what is queued (past the
   * bound, the one frame that may), read by a peer that catches up within end()'s grace. The
   * frame that did not fit is refused, and so is everything after it.
   */
  #overflow(): Promise<void> {
    const reason = new SlowReaderError(this.#maxWriteQueue);
    this.#maxWriteQueue = Infinity;
    this.send({ type: "error", code: "SLOW_READER", message: reason.message }).catch(() => {});
    void this.end(reason);
    return Promise.reject(
      new ConnectionClosedError(`connection closed: ${reason.message}`, { cause: reason }),
    );
  }

  /** Bytes queued to be written now (frames with their headers; see `maxWriteQueue`). */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /**
   * One whole frame, header and (sealed) body, in one buffer (`into`, or a new one), so it
   * takes one write: a header written on its own would leave as a packet of its own.
   */
  #frame(body: Uint8Array, into?: Uint8Array): Uint8Array {
    const cipher = this.#sendCipher;
    const length = cipher ? sealedSize(body.length) : body.length;
    const frame = into === undefined
      ? new Uint8Array(HEADER_SIZE + length)
      : into.subarray(0, HEADER_SIZE + length);
    if (frame.length < HEADER_SIZE + length) {
      throw new RangeError(
        `a frame of ${HEADER_SIZE + length} bytes does not fit a buffer of ${into!.length}`,
      );
    }
    new DataView(frame.buffer, frame.byteOffset, HEADER_SIZE).setUint32(0, length);
    if (cipher) closeFrameInto(cipher, body, frame, HEADER_SIZE);
    else frame.set(body, HEADER_SIZE);
    return frame;
  }

  /**
   * Moves the connection onto `next` (a punched connection, or a relay) without losing,
   * duplicating or reordering a frame, and without a new handshake: the ciphers go on. Both
   * sides call it with their ends of the same new stream. Each side writes a `path_switch` as
   * its last frame on the old path and everything after it on the new one; each reads the old
   * path up to the other's `path_switch`, then reads the new one. The old path is closed once
   * both directions have moved.
   * @throws {ConnectionClosedError} when the connection closes before the move completes.
   */
  migrate(next: Transport, options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#closing) {
      next.close();
      return Promise.reject(new ConnectionClosedError("connection is closed"));
    }
    if (this.#migration) {
      next.close();
      return Promise.reject(new RangeError("the connection is already moving to another path"));
    }
    const migration: Migration = {
      next,
      old: this.#transport,
      wrote: false,
      read: false,
      done: Promise.withResolvers<void>(),
    };
    this.#migration = migration;
    this.#migrationWaiter?.resolve(migration);
    this.#migrationWaiter = undefined;
    const timeoutMs = options.timeoutMs ?? PATH_SWITCH_WAIT_MS;
    const timer = setTimeout(() => {
      void this.close(new TimeoutError(`the other side did not move paths within ${timeoutMs}ms`));
    }, timeoutMs);
    this.#write(encodeMessage({ type: "path_switch" }), () => {
      this.#transport = next;
      migration.wrote = true;
      this.#finishMigration(migration);
    }).catch(() => {});
    void this.closed.then((reason) => {
      migration.done.reject(
        new ConnectionClosedError("connection closed while moving paths", { cause: reason }),
      );
    });
    return migration.done.promise.finally(() => clearTimeout(timer));
  }

  /** Both directions are on the new path: release the old one after a grace period. */
  #finishMigration(migration: Migration): void {
    if (!migration.wrote || !migration.read || this.#migration !== migration) return;
    this.#migration = undefined;
    const old = migration.old;
    this.#oldPaths.add(old);
    old.closeWrite().catch(() => {});
    const timer = setTimeout(() => {
      this.#graceTimers.delete(timer);
      this.#oldPaths.delete(old);
      old.close();
    }, OLD_PATH_GRACE_MS);
    this.#graceTimers.add(timer);
    migration.done.resolve();
  }

  /** The migration the other side's `path_switch` belongs to, once we have our end. */
  #awaitMigration(): Promise<Migration> {
    if (this.#migration) return Promise.resolve(this.#migration);
    this.#migrationWaiter ??= Promise.withResolvers<Migration>();
    const waiter = this.#migrationWaiter;
    let timer: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([
      waiter.promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new TimeoutError("the other side moved to a path we do not have")),
          PATH_SWITCH_WAIT_MS,
        );
      }),
    ]).finally(() => clearTimeout(timer));
  }

  /**
   * Hands the byte stream over after the reader stopped at a `stopReadingAfter` message: the
   * connection counts as closed (without closing the stream), and the caller gets the stream
   * and the bytes already read past that message.
   * @throws {ConnectionClosedError} when the connection ended instead.
   */
  async detach(): Promise<{ transport: Transport; rest: Uint8Array }> {
    await this.#readLoop;
    if (!this.#stopped || this.#closing) {
      throw new ConnectionClosedError("connection closed before it could be handed over", {
        cause: this.#closeReason,
      });
    }
    await this.#writeChain;
    this.#detached = true;
    await this.close();
    return { transport: this.#transport, rest: this.#rest };
  }

  /** Sends a request with a fresh `id` and waits for the reply with that id. */
  async request<R extends In = In>(
    message: OutgoingMessage,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<R> {
    const id = this.#nextId++;
    const reply = Promise.withResolvers<In>();
    // When the write fails first, close() rejects this too, with nobody waiting for it any
    // more: unobserved, that rejection would end the process.
    reply.promise.catch(() => {});
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
      // The deadline covers the wait to be written too: a request queued behind frames the
      // other side does not read fails in time (the write stays queued, its failure observed).
      await Promise.race([this.send({ ...message, id }), reply.promise]);
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

  /**
   * Sends an error frame (best effort), then ends the connection gracefully ({@link end}), so
   * the other side reads why before the connection goes.
   */
  async fail(code: ErrorCode, message: string, id?: number): Promise<void> {
    // Queued now, written before end() ends our direction. The peer may already be gone;
    // closing is what matters.
    this.send({ type: "error", code, message, ...(id === undefined ? {} : { id }) })
      .catch(() => {});
    await this.end(new ProtocolError(code, message));
  }

  /**
   * Closes gracefully: the frames queued are written, our direction of the stream is ended, and
   * what the other side still sends is read and dropped until it ends its own or `graceMs`
   * pass; then both are closed. Closing at once with bytes of theirs unread would send a reset,
   * and a reset can make the other side drop our last frame (an error saying why, a notice)
   * before it reads it. From the call on nothing more is sent or handed over (`isClosed` is
   * true), and the connection closes with `reason`. Idempotent, like {@link close}.
   */
  end(reason?: CloseReason, graceMs = END_GRACE_MS): Promise<void> {
    if (this.#closing) return this.#closing;
    if (this.#ending) return this.#ending;
    this.#endReason = reason;
    clearInterval(this.#heartbeat);
    this.#rejectWaiters(reason);
    // A reader paused for a slow handler reads on, to see the other side's end.
    this.#inboxDrained?.();
    this.#ending = (async () => {
      const grace = new AbortController();
      const timeout = delay(graceMs, grace.signal).catch(() => {});
      if (this.#writesQueued > 0) await Promise.race([this.#writeChain, timeout]);
      if (!this.#detached && !this.#closing) {
        await Promise.race([this.#transport.closeWrite().catch(() => {}), timeout]);
        await Promise.race([this.#closed.promise, timeout]);
      }
      grace.abort();
      await this.close(reason);
    })();
    return this.#ending;
  }

  /**
   * Closes the socket, fails pending requests and waits for the reader to stop. Idempotent:
   * later calls return the first call's promise.
   */
  close(reason?: CloseReason): Promise<void> {
    if (this.#closing) return this.#closing;
    // Ending (end()): whatever closes it now (the other side's end, the grace), it is our reason.
    this.#closeReason = this.#ending ? this.#endReason : reason;
    clearInterval(this.#heartbeat);
    this.#closing = (async () => {
      // Let queued frames (a final error, a bye) reach the socket before it is closed. (With
      // none queued, no timer: a server closing 10,000 connections set 10,000 of them.)
      if (this.#writesQueued > 0) {
        let grace: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([this.#writeChain, new Promise((r) => grace = setTimeout(r, 0))]);
        clearTimeout(grace);
      }
      if (!this.#detached) this.#transport.close();
      this.#migration?.next.close();
      this.#migration?.old.close();
      this.#migrationWaiter?.reject(new ConnectionClosedError("connection closed"));
      for (const timer of this.#graceTimers) clearTimeout(timer);
      this.#graceTimers.clear();
      for (const old of this.#oldPaths) old.close();
      this.#oldPaths.clear();
      this.#rejectWaiters(this.#closeReason);
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

  /** Fails pending requests and `next()` waits: the connection is going. */
  #rejectWaiters(reason: CloseReason): void {
    // Made only for someone waiting: an error's stack costs more than the rest of a close.
    if (this.#pending.size === 0 && !this.#waiter && !this.#heldWaiter) return;
    const error = new ConnectionClosedError(
      reason ? `connection closed: ${reason.message}` : "connection closed",
      { cause: reason },
    );
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
    this.#waiter?.reject(error);
    this.#waiter = undefined;
    this.#heldWaiter?.reject(error);
    this.#heldWaiter = undefined;
  }

  #readerOn(transport: Transport): FrameReader {
    const reader = new FrameReader(transport, sealedSize(this.#opts.maxFrame), {
      readAhead: this.#opts.readAhead,
      // Bulk data travels on links that take binary frames: read several of its frames at once.
      bulkReadAhead: this.#opts.acceptBinary ? BULK_READ_AHEAD : undefined,
    });
    reader.onBytes = () => this.lastReceived = Date.now();
    return reader;
  }

  async #read(): Promise<void> {
    let reader = this.#readerOn(this.#transport);
    let reason: CloseReason;
    try {
      while (!this.#closing) {
        if (this.#switchRead) {
          // The other side's path_switch was handed over: read the new path from here on.
          this.#switchRead = false;
          const migration = await this.#awaitMigration();
          reader = this.#readerOn(migration.next);
          migration.read = true;
          this.#finishMigration(migration);
        }
        let body: Uint8Array | null | undefined | typeof SWITCHED;
        try {
          // Lent by the reader until its next read: decrypted (or decoded) before that, and
          // copied where it is kept. A frame already read ahead is taken without a wait.
          body = reader.buffered();
          if (body === undefined && reader.isEmpty && !this.#held) {
            // The wait of an idle connection (see #nextFrame): the read itself, and nothing
            // else, until a frame's first bytes come (most often the whole frame).
            body = reader.filled(await reader.readMore()) ? reader.buffered() : null;
          }
          if (body === undefined) body = await this.#nextFrame(reader);
        } catch (error) {
          if (this.#closing) break;
          if (this.#switchRead) continue; // the old path ended after the move
          if (error instanceof FrameError) throw error;
          reason = asError(error);
          break;
        }
        if (body === SWITCHED) continue;
        if (body === null) {
          if (this.#switchRead) continue;
          break;
        }
        this.lastReceived = Date.now();
        // Ending (end()): read to the other side's end, and drop what comes.
        if (this.#ending) continue;
        if (this.#stopped) {
          // The stop-after message was held during a handshake and released meanwhile: this
          // frame already belongs to whoever detaches the stream.
          const header = new Uint8Array(HEADER_SIZE);
          new DataView(header.buffer).setUint32(0, body.length);
          const rest = reader.rest();
          this.#rest = new Uint8Array(HEADER_SIZE + body.length + rest.length);
          this.#rest.set(header);
          this.#rest.set(body, HEADER_SIZE);
          this.#rest.set(rest, HEADER_SIZE + body.length);
          return;
        }
        if (this.#held) {
          if (this.#heldFrames.length >= MAX_HELD_FRAMES) {
            throw new FrameError("too many frames sent before the handshake finished");
          }
          const waiter = this.#heldWaiter;
          this.#heldWaiter = undefined;
          if (waiter && this.#heldFrames.length === 0) waiter.resolve(body.slice());
          else this.#heldFrames.push(body.slice());
        } else if (this.#receiveCipher) {
          if (body.length > MAX_MESSAGE_LEN) this.#lastBulk = this.lastReceived;
          else if (this.#plainBuffers.length > 0 && this.lastReceived - this.#lastBulk > 1000) {
            // Large binary frames stopped coming: the buffers kept for them are not needed.
            for (const buffer of this.#plainBuffers.splice(0)) freeNow(buffer);
          }
          // Decrypted and handed over now, in wire order: nothing is kept between frames.
          this.#ingest(body);
        } else {
          this.#accept(body.slice());
        }
        if (this.#stopped) {
          // Not a byte more: the rest of the stream belongs to whoever detaches it.
          this.#rest = reader.rest();
          return;
        }
        if (this.#inboxFull() && !this.#closing) {
          const drained = Promise.withResolvers<void>();
          this.#inboxDrained = drained.resolve;
          await drained.promise;
        }
      }
    } catch (error) {
      await this.#readFailed(error);
    }
    // A frame that could not be read closes the connection with its own reason.
    if (!this.#closing && !this.#readFailing) void this.close(reason);
  }

  /**
   * Waits for the next frame. Only while frames are held for a handshake can a `path_switch`
   * be handed over (by secure() releasing them) while the reader waits: then the wait also
   * ends on that, since nothing follows a path_switch on the old path. Otherwise the reader
   * itself hands every frame over before it reads again, and a wait is one read, with no
   * promise of ours around it (thousands of idle connections each wait for every heartbeat).
   */
  #nextFrame(reader: FrameReader): Promise<Uint8Array | null | typeof SWITCHED> {
    const next = reader.nextView();
    if (!this.#held) return next;
    // A read pending on the old path when it is dropped.
    next.catch(() => {});
    const switched = new Promise<typeof SWITCHED>((wake) => this.#wakeForSwitch = wake);
    return Promise.race([next, switched]).finally(() => this.#wakeForSwitch = undefined);
  }

  /** Ends the connection for a frame that cannot be read, telling the sender why if it is bad. */
  async #readFailed(error: unknown): Promise<void> {
    if (this.#closing || this.#readFailing) return;
    this.#readFailing = true;
    const reason = asError(error);
    if (error instanceof FrameError) {
      // Tell the sender why, then hang up: the stream can no longer be trusted.
      await this.send({ type: "error", code: "BAD_FRAME", message: reason.message })
        .catch(() => {});
    }
    void this.close(reason);
  }

  /** Whether the handler has so much waiting that reading pauses (TCP then pushes back). */
  #inboxFull(): boolean {
    return this.#inbox.length >= INBOX_HIGH_WATER || this.#inboxBytes >= INBOX_HIGH_WATER_BYTES;
  }

  /**
   * Decrypts a frame body when the connection is secure, then decodes and routes it, before
   * it returns: frames are handed over in the order they are ingested, which is wire order.
   * @throws {FrameError} when the frame fails authentication.
   */
  #ingest(body: Uint8Array): void {
    const cipher = this.#receiveCipher;
    if (!cipher) {
      this.#accept(body);
      return;
    }
    let plain: Uint8Array;
    let release: (() => void) | undefined;
    try {
      if (body.length > MAX_MESSAGE_LEN) {
        // Several Noise messages: opened into a buffer of ours, reused once released.
        plain = openFrame(cipher, body, this.#plainBuffer(body.length));
        const whole = new Uint8Array(plain.buffer);
        release = () => {
          if (this.#plainBuffers.length < PLAIN_BUFFERS) this.#plainBuffers.push(whole);
          else freeNow(whole);
        };
      } else {
        plain = openFrame(cipher, body);
      }
    } catch (error) {
      if (!(error instanceof CryptoError)) throw error;
      throw new FrameError(
        "a frame failed authentication (tampered with, replayed, reordered or cut short); " +
          "the connection is closed",
        { cause: error },
      );
    }
    if (!this.#closing && !this.#ending && !this.#readFailing) this.#accept(plain, release);
  }

  /** A kept buffer of at least `size` bytes, or a new one. */
  #plainBuffer(size: number): Uint8Array {
    const kept = this.#plainBuffers.findIndex((b) => b.length >= size);
    return kept < 0 ? new Uint8Array(size) : this.#plainBuffers.splice(kept, 1)[0]!;
  }

  /** Routes a frame body; `release` (see {@link BinaryFrame}) once it is no longer needed. */
  #accept(body: Uint8Array, release?: () => void): void {
    if (body[0] === BINARY_TAG && this.#opts.acceptBinary) {
      this.#deliver({ type: "binary", data: body, release } as unknown as In);
      return;
    }
    try {
      this.#acceptMessage(body);
    } finally {
      release?.(); // decoded (or refused): the bytes are no longer needed
    }
  }

  #acceptMessage(body: Uint8Array): void {
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
    if (message.type === "path_switch") {
      // The other side's last frame on the old path (see migrate()).
      this.#switchRead = true;
      this.#wakeForSwitch?.(SWITCHED);
      return;
    }
    if (this.#stopAfter.has(message.type)) this.#stopped = true;
    // Liveness is answered here, not by the handler, so a busy handler never looks dead; also
    // once secure before a handler is set: frames held during the handshake are released by
    // secure(), and a ping among them must not wait in the inbox behind a request the handler
    // then works on (a login's password check kept a pong back 660 ms).
    if (
      message.type === "ping" && typeof message.id === "number" &&
      (this.#onMessage !== undefined || this.#sendCipher !== undefined)
    ) {
      this.#answerPing(message.id);
      return;
    }
    if (message.id !== undefined && this.#replyTypes.has(message.type)) {
      const pending = this.#pending.get(message.id);
      if (pending) pending.resolve(message);
      // A reply nobody waits for (timed out) is dropped.
      if (pending || message.type !== "error") return;
    }
    decodedBytes.set(message, body.length);
    this.#deliver(message);
  }

  /** Answers a ping, or, while a pong is still queued, once that one is written. */
  #answerPing(id: number): void {
    if (this.#pongQueued) {
      if (this.#pingsWaiting.push(id) > PINGS_WAITING) this.#pingsWaiting.shift();
      return;
    }
    this.#pongQueued = true;
    this.send({ type: "pong", id }).then(() => {
      this.#pongQueued = false;
      const next = this.#pingsWaiting.shift();
      if (next !== undefined) this.#answerPing(next);
    }, () => {}); // closed: nothing more is answered
  }

  /** Hands a message to whoever reads next: a `next()` waiter, or the handler's inbox. */
  #deliver(message: In): void {
    if (this.#waiter) {
      const waiter = this.#waiter;
      this.#waiter = undefined;
      if (waiter.hold) this.#held = true;
      waiter.resolve(message);
      return;
    }
    this.#inbox.push(message);
    this.#inboxBytes += bytesOf(message);
    if (!this.#dispatching && this.#onMessage) void this.#dispatch();
  }

  async #dispatch(): Promise<void> {
    this.#dispatching = true;
    try {
      while (this.#inbox.length > 0 && !this.#closing && !this.#ending && this.#onMessage) {
        const message = this.#inbox.shift()!;
        this.#inboxBytes -= bytesOf(message);
        if (message.type === "ping" && typeof message.id === "number") {
          // Queued before the handler was set (it came right behind the handshake): answered
          // here too, as the reader answers every later one.
          this.#answerPing(message.id);
          continue;
        }
        try {
          await this.#onMessage?.(message);
        } catch (error) {
          void this.close(asError(error));
        }
        if (
          this.#inbox.length < INBOX_HIGH_WATER / 2 &&
          this.#inboxBytes < INBOX_HIGH_WATER_BYTES / 2
        ) {
          this.#inboxDrained?.();
          this.#inboxDrained = undefined;
        }
      }
    } finally {
      this.#dispatching = false;
    }
  }
}

/** The size of the frame body each message waiting in an inbox was decoded from. */
const decodedBytes = new WeakMap<object, number>();

/** Bytes a queued message holds: a binary frame's data, or the body it was decoded from. */
function bytesOf(message: AnyMessage): number {
  return message.type === "binary"
    ? (message as unknown as BinaryFrame).data.length
    : decodedBytes.get(message) ?? 0;
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

/**
 * What the socket says when the other side is gone (reset, broken pipe, aborted, closed under
 * us), from `Deno.connect` or `node:net`. Callers see these as a {@link ConnectionClosedError}:
 * a lost link is one condition, however the kernel happened to report it.
 */
function isLinkFailure(error: unknown): boolean {
  if (
    error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted || error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.UnexpectedEof || error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.TimedOut
  ) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && NODE_LINK_FAILURES.has(code);
}

const NODE_LINK_FAILURES = new Set([
  "EPIPE",
  "ECONNRESET",
  "ECONNABORTED",
  "ENOTCONN",
  "ETIMEDOUT",
  "ERR_STREAM_DESTROYED",
  "ERR_SOCKET_CLOSED",
]);

/** Rethrows a write's failure, a lost link as {@link ConnectionClosedError} (with the cause). */
function throwAsLost(error: unknown): never {
  if (isLinkFailure(error)) {
    throw new ConnectionClosedError(`connection lost: ${asError(error).message}`, {
      cause: error,
    });
  }
  throw error;
}

/** `value` as an Error (a thrown string or object wrapped). */
export function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}
