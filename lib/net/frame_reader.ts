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

  async #next(lend: boolean): Promise<Uint8Array | null> {
    if (
      this.#start === this.#end && this.#buffer.length > this.#small && this.#last < DIRECT_READ
    ) {
      // Large frames have stopped coming: give the memory back.
      this.#buffer = new Uint8Array(this.#small);
      this.#start = this.#end = 0;
    }
    while (this.#end - this.#start < HEADER_SIZE) {
      if (!await this.#fill(HEADER_SIZE)) {
        if (this.#end === this.#start) return null;
        throw new FrameError("connection ended in the middle of a frame");
      }
    }
    const length = new DataView(this.#buffer.buffer, this.#start, HEADER_SIZE).getUint32(0);
    if (length > this.#maxBody) {
      throw new FrameError(`frame of ${length} bytes exceeds the maximum of ${this.#maxBody}`);
    }
    this.#last = length;
    if (length + HEADER_SIZE > this.#buffer.length && length + HEADER_SIZE <= this.#bulk) {
      this.#grow();
    }
    this.#start += HEADER_SIZE;
    if (length <= this.#buffer.length && (lend || length < DIRECT_READ)) {
      while (this.#end - this.#start < length) {
        if (!await this.#fill(length)) {
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
   * Reads more into the read-ahead buffer, first moving what is buffered to its front when
   * `need` bytes from the first unread one would not fit; false at the end of the stream.
   */
  async #fill(need: number): Promise<boolean> {
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
    } else if (this.#buffer.length - this.#start < need || this.#end === this.#buffer.length) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    const n = await this.#conn.read(this.#buffer.subarray(this.#end));
    if (n === null) return false;
    this.onBytes();
    this.#end += n;
    return true;
  }
}
