/**
 * Reads length-prefixed frames from a connection with as few copies and allocations as
 * possible. Bodies are cut from one reused read-ahead buffer: {@link FrameReader.nextView}
 * lends them as views into it (valid until the next call), {@link FrameReader.next} copies
 * them out. The buffer is small, since a server holds thousands of mostly idle connections;
 * a reader made for bulk data (file chunks on a peer link) lets it grow while large frames
 * arrive, so one read takes several frames and no frame needs a buffer of its own, and shrinks
 * it back once they stop. A frame larger than the buffer may grow to gets a buffer of exactly
 * its size, allocated only once its length has passed the maximum check, and the rest of it is
 * read straight into that buffer.
 */
import { FrameError } from "../protocol/errors.ts";
import { HEADER_SIZE } from "../protocol/frame.ts";

/**
 * The read-ahead buffer: small, because a server holds thousands of mostly idle connections
 * (each byte here is multiplied by them).
 */
const READ_AHEAD = 4 * 1024;
/** Owned bodies at least this large are read directly into their own buffer. */
const DIRECT_READ = 2 * 1024;

/** What the reader reads from: a transport, a TCP connection. */
export interface ByteSource {
  read(buffer: Uint8Array): Promise<number | null>;
}

export interface FrameReaderOptions {
  /** Bytes read ahead while frames are small (default 4 KiB). */
  readAhead?: number;
  /**
   * How far the read-ahead may grow while large frames arrive (default: not at all). Frames up
   * to this size (with their header) are then lent from it without a copy.
   */
  bulkReadAhead?: number;
}

export class FrameReader {
  readonly #conn: ByteSource;
  readonly #maxBody: number;
  readonly #small: number;
  readonly #bulk: number;
  #buffer: Uint8Array;
  #start = 0;
  #end = 0;
  /** Body length of the last frame read. */
  #last = 0;

  /** Called whenever bytes arrive (liveness counts bytes, not only whole frames). */
  onBytes: () => void = () => {};

  constructor(conn: ByteSource, maxBody: number, options: FrameReaderOptions = {}) {
    this.#conn = conn;
    this.#maxBody = maxBody;
    this.#small = Math.max(options.readAhead ?? READ_AHEAD, HEADER_SIZE);
    this.#bulk = Math.max(options.bulkReadAhead ?? 0, this.#small);
    this.#buffer = new Uint8Array(this.#small);
  }

  /**
   * The next frame body in a buffer of its own, or null when the stream ended cleanly between
   * frames.
   * @throws {FrameError} for a length above the maximum or a stream ending mid-frame.
   */
  async next(): Promise<Uint8Array | null> {
    const body = await this.#next(false);
    return body && body.buffer === this.#buffer.buffer ? body.slice() : body;
  }

  /**
   * The next frame body, lent: a view into the reader's buffer when it fits there, which the
   * next call may overwrite (copy what must be kept); or null at a clean end of the stream.
   * @throws {FrameError} for a length above the maximum or a stream ending mid-frame.
   */
  nextView(): Promise<Uint8Array | null> {
    return this.#next(true);
  }

  /**
   * The next frame body when it has been read ahead whole, lent as by {@link nextView};
   * undefined when more must be read first. No promise: a reader that takes several frames
   * per read waits only when it must.
   * @throws {FrameError} for a length above the maximum.
   */
  buffered(): Uint8Array | undefined {
    if (this.#end - this.#start < HEADER_SIZE) return undefined;
    const length = this.#length();
    if (this.#end - this.#start - HEADER_SIZE < length) return undefined;
    this.#last = length;
    this.#start += HEADER_SIZE + length;
    return this.#buffer.subarray(this.#start - length, this.#start);
  }

  /** The length in the header at the first unread byte, checked against the maximum. */
  #length(): number {
    const b = this.#buffer;
    const at = this.#start;
    const length = (b[at]! << 24 | b[at + 1]! << 16 | b[at + 2]! << 8 | b[at + 3]!) >>> 0;
    if (length > this.#maxBody) {
      throw new FrameError(`frame of ${length} bytes exceeds the maximum of ${this.#maxBody}`);
    }
    return length;
  }

  /** Whether nothing is read ahead: the next frame's first bytes are still to come. */
  get isEmpty(): boolean {
    return this.#start === this.#end;
  }

  /**
   * When nothing is read ahead ({@link isEmpty}): the read that waits for the next bytes, as the
   * source's own promise, with no promise of ours around it (a server holding thousands of idle
   * connections keeps one such wait on each). Hand its result to {@link filled}.
   */
  readMore(): Promise<number | null> {
    this.#shrink();
    return this.#conn.read(this.#room(HEADER_SIZE));
  }

  /** Large frames have stopped coming: gives the memory back. */
  #shrink(): void {
    if (
      this.#start === this.#end && this.#buffer.length > this.#small && this.#last < DIRECT_READ
    ) {
      this.#buffer = new Uint8Array(this.#small);
      this.#start = this.#end = 0;
    }
  }

  async #next(lend: boolean): Promise<Uint8Array | null> {
    this.#shrink();
    // (Reads are awaited here rather than in a helper: one promise per wait, not two.)
    while (this.#end - this.#start < HEADER_SIZE) {
      if (!this.filled(await this.#conn.read(this.#room(HEADER_SIZE)))) {
        if (this.#end === this.#start) return null;
        throw new FrameError("connection ended in the middle of a frame");
      }
    }
    const length = this.#length();
    this.#last = length;
    if (length + HEADER_SIZE > this.#buffer.length && length + HEADER_SIZE <= this.#bulk) {
      this.#grow();
    }
    this.#start += HEADER_SIZE;
    if (length <= this.#buffer.length && (lend || length < DIRECT_READ)) {
      while (this.#end - this.#start < length) {
        if (!this.filled(await this.#conn.read(this.#room(length)))) {
          throw new FrameError("connection ended in the middle of a frame");
        }
      }
      const body = this.#buffer.subarray(this.#start, this.#start + length);
      this.#start += length;
      return body;
    }
    // Too large to lend, or asked for in a buffer of its own: the rest goes straight there.
    const body = new Uint8Array(length);
    let filled = this.#take(body, 0);
    while (filled < length) {
      const n = await this.#conn.read(body.subarray(filled));
      if (n === null) throw new FrameError("connection ended in the middle of a frame");
      this.onBytes();
      filled += n;
    }
    return body;
  }

  /** The bytes read ahead past the last frame (for handing the stream to someone else). */
  rest(): Uint8Array {
    return this.#buffer.slice(this.#start, this.#end);
  }

  /** Moves buffered bytes into `body` from `at`; returns how far it is filled. */
  #take(body: Uint8Array, at: number): number {
    const n = Math.min(body.length - at, this.#end - this.#start);
    body.set(this.#buffer.subarray(this.#start, this.#start + n), at);
    this.#start += n;
    return at + n;
  }

  /** Takes the bulk-sized buffer, keeping the bytes read ahead. */
  #grow(): void {
    const bigger = new Uint8Array(this.#bulk);
    bigger.set(this.#buffer.subarray(this.#start, this.#end));
    this.#buffer = bigger;
    this.#end -= this.#start;
    this.#start = 0;
  }

  /**
   * Where the next read goes: the free end of the read-ahead buffer, after moving what is
   * buffered to its front when `need` bytes from the first unread one would not fit. An empty
   * buffer is read into whole (no view made for an idle connection's every read).
   */
  #room(need: number): Uint8Array {
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
      return this.#buffer;
    }
    if (this.#buffer.length - this.#start < need || this.#end === this.#buffer.length) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    return this.#buffer.subarray(this.#end);
  }

  /** Counts `n` bytes read (by {@link readMore}); false at the end of the stream. */
  filled(n: number | null): boolean {
    if (n === null) return false;
    this.onBytes();
    this.#end += n;
    return true;
  }
}
