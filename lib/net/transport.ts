/**
 * The byte stream under every framed connection. A peer link (hello, Noise, identity proof,
 * frames) does not care whether its bytes travel over a direct TCP connection, a stream the
 * server relays, or a hole-punched connection, and tests run the same code over memory pipes.
 */

/** Where a transport leads: an address, or a label for paths that have none (memory pipes). */
export interface TransportAddress {
  hostname: string;
  port: number;
}

/** How the bytes travel: straight to the other side, through the server, or in memory. */
export type TransportPath = "direct" | "relayed" | "memory";

/**
 * A reliable, ordered byte stream. One reader and one writer at a time (the framed connection
 * guarantees that); `read`/`write` may return short counts like `Deno.Conn`.
 */
export interface Transport {
  readonly path: TransportPath;
  readonly localAddr: TransportAddress;
  readonly remoteAddr: TransportAddress;
  /** Reads into `buffer`; the number of bytes read, or null at the end of the stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes some of `data`; the number of bytes written (loop with {@link writeAll}). */
  write(data: Uint8Array): Promise<number>;
  /** Ends our direction of the stream; the other side reads null after what was written. */
  closeWrite(): Promise<void>;
  /** Closes both directions at once. Closing twice is not an error. */
  close(): void;
}

/** Writes all of `data`, looping over short writes. */
export async function writeAll(
  sink: { write(data: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    offset += await sink.write(data.subarray(offset));
  }
}

/** A TCP connection as a transport: Nagle off, since frames are written whole. */
export class TcpTransport implements Transport {
  readonly conn: Deno.TcpConn;
  readonly path: TransportPath;
  readonly localAddr: TransportAddress;
  readonly remoteAddr: TransportAddress;

  constructor(conn: Deno.TcpConn, path: TransportPath = "direct") {
    this.conn = conn;
    this.path = path;
    this.localAddr = conn.localAddr;
    this.remoteAddr = conn.remoteAddr;
    try {
      conn.setNoDelay(true);
    } catch {
      // Not every platform/socket supports it; frames are written in one piece anyway.
    }
  }

  read(buffer: Uint8Array): Promise<number | null> {
    return this.conn.read(buffer);
  }

  write(data: Uint8Array): Promise<number> {
    return this.conn.write(data);
  }

  closeWrite(): Promise<void> {
    return this.conn.closeWrite();
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** True for something that is already a {@link Transport} (not a bare `Deno.TcpConn`). */
export function isTransport(value: Transport | Deno.TcpConn): value is Transport {
  return "path" in value && typeof (value as Transport).path === "string";
}

/** Wraps a bare TCP connection; passes a transport through. */
export function asTransport(value: Transport | Deno.TcpConn): Transport {
  return isTransport(value) ? value : new TcpTransport(value);
}

/** Chunks of bytes in arrival order, read out into buffers of any size. */
export class ByteQueue {
  readonly #chunks: Uint8Array[] = [];
  #bytes = 0;

  /** Bytes waiting. */
  get size(): number {
    return this.#bytes;
  }

  push(chunk: Uint8Array): void {
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
  }

  /** Moves as many bytes as fit into `buffer`; returns how many. */
  take(buffer: Uint8Array): number {
    let n = 0;
    while (n < buffer.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0]!;
      const take = Math.min(chunk.length, buffer.length - n);
      buffer.set(chunk.subarray(0, take), n);
      n += take;
      if (take === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(take);
    }
    this.#bytes -= n;
    return n;
  }

  clear(): void {
    this.#chunks.length = 0;
    this.#bytes = 0;
  }
}

/** Bytes a memory pipe buffers per direction before a write waits for the reader. */
const PIPE_HIGH_WATER = 256 * 1024;

/** One direction of a memory pipe: chunks in order, a reader waiting, writers waiting. */
class PipeChannel {
  readonly #queue = new ByteQueue();
  #ended = false;
  #broken = false;
  #reader: (() => void) | undefined;
  readonly #writers: (() => void)[] = [];

  /** Copies `data` in (the caller may reuse its buffer); waits while the buffer is full. */
  async write(data: Uint8Array): Promise<number> {
    while (this.#queue.size >= PIPE_HIGH_WATER && !this.#broken && !this.#ended) {
      const room = Promise.withResolvers<void>();
      this.#writers.push(room.resolve);
      await room.promise;
    }
    if (this.#broken) throw new Deno.errors.BrokenPipe("the other end of the pipe is closed");
    if (this.#ended) throw new Deno.errors.BadResource("the pipe is closed for writing");
    if (data.length === 0) return 0;
    this.#queue.push(data.slice());
    this.#wakeReader();
    return data.length;
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    while (this.#queue.size === 0) {
      if (this.#ended || this.#broken) return null;
      const wake = Promise.withResolvers<void>();
      this.#reader = wake.resolve;
      await wake.promise;
    }
    const n = this.#queue.take(buffer);
    for (const writer of this.#writers.splice(0)) writer();
    return n;
  }

  /** The writer is done: the reader gets what is buffered, then the end. */
  end(): void {
    this.#ended = true;
    this.#wakeReader();
    for (const writer of this.#writers.splice(0)) writer();
  }

  /** The reader is gone: writers fail, and nothing more is read. */
  break(): void {
    this.#broken = true;
    this.#queue.clear();
    this.#wakeReader();
    for (const writer of this.#writers.splice(0)) writer();
  }

  #wakeReader(): void {
    const reader = this.#reader;
    this.#reader = undefined;
    reader?.();
  }
}

let pipeCounter = 0;

class PipeEnd implements Transport {
  readonly path = "memory" as const;
  readonly localAddr: TransportAddress;
  readonly remoteAddr: TransportAddress;
  readonly #in: PipeChannel;
  readonly #out: PipeChannel;
  #closed = false;

  constructor(incoming: PipeChannel, outgoing: PipeChannel, local: number, remote: number) {
    this.#in = incoming;
    this.#out = outgoing;
    this.localAddr = { hostname: "memory", port: local };
    this.remoteAddr = { hostname: "memory", port: remote };
  }

  read(buffer: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("the pipe is closed"));
    return this.#in.read(buffer);
  }

  write(data: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("the pipe is closed"));
    return this.#out.write(data);
  }

  closeWrite(): Promise<void> {
    this.#out.end();
    return Promise.resolve();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // As with TCP: our own pending read ends, the other side reads the end of the stream.
    this.#out.end();
    this.#in.break();
  }
}

/**
 * Two connected in-memory transports: what one writes, the other reads, in order, with the
 * same end-of-stream and broken-pipe behaviour as a TCP connection. For in-process tests.
 */
export function memoryPipe(): [Transport, Transport] {
  const aToB = new PipeChannel();
  const bToA = new PipeChannel();
  const a = ++pipeCounter;
  const b = ++pipeCounter;
  return [new PipeEnd(bToA, aToB, a, b), new PipeEnd(aToB, bToA, b, a)];
}

/**
 * A transport handed over from a framed connection: reads return the bytes that connection
 * had already read ahead, then the stream itself. `path` says how the bytes travel now (a
 * server connection that became a relay leg carries a relayed link).
 */
export class HandedOverTransport implements Transport {
  readonly path: TransportPath;
  readonly #inner: Transport;
  #rest: Uint8Array;

  constructor(inner: Transport, rest: Uint8Array, path: TransportPath) {
    this.#inner = inner;
    this.#rest = rest;
    this.path = path;
  }

  get localAddr(): TransportAddress {
    return this.#inner.localAddr;
  }

  get remoteAddr(): TransportAddress {
    return this.#inner.remoteAddr;
  }

  read(buffer: Uint8Array): Promise<number | null> {
    if (this.#rest.length === 0) return this.#inner.read(buffer);
    const n = Math.min(buffer.length, this.#rest.length);
    buffer.set(this.#rest.subarray(0, n));
    this.#rest = this.#rest.subarray(n);
    return Promise.resolve(n);
  }

  write(data: Uint8Array): Promise<number> {
    return this.#inner.write(data);
  }

  closeWrite(): Promise<void> {
    return this.#inner.closeWrite();
  }

  close(): void {
    this.#inner.close();
  }
}
