/**
 * Reads length-prefixed frames from a connection with as few copies as possible: small frames
 * are cut from one reused read-ahead buffer; a large frame gets a buffer of exactly its size
 * (allocated only once its length has passed the maximum check) and the rest of it is read
 * straight into that buffer. Bulk transfers then allocate one buffer per frame and nothing
 * else, which keeps memory flat.
 */
import { FrameError } from "../protocol/errors.ts";
import { HEADER_SIZE } from "../protocol/frame.ts";

/**
 * The read-ahead buffer: small, because a server holds thousands of mostly idle connections
 * (each byte here is multiplied by them); larger bodies go straight into their own buffer.
 */
const READ_AHEAD = 4 * 1024;
/** Bodies at least this large are read directly into their own buffer. */
const DIRECT_READ = 2 * 1024;

/** What the reader reads from: a transport, a TCP connection. */
export interface ByteSource {
  read(buffer: Uint8Array): Promise<number | null>;
}

export class FrameReader {
  readonly #conn: ByteSource;
  readonly #maxBody: number;
  readonly #buffer: Uint8Array;
  #start = 0;
  #end = 0;

  /** Called whenever bytes arrive (liveness counts bytes, not only whole frames). */
  onBytes: () => void = () => {};

  constructor(conn: ByteSource, maxBody: number, readAhead = READ_AHEAD) {
    this.#conn = conn;
    this.#maxBody = maxBody;
    this.#buffer = new Uint8Array(Math.max(readAhead, HEADER_SIZE));
  }

  /**
   * The next frame body, or null when the stream ended cleanly between frames.
   * @throws {FrameError} for a length above the maximum or a stream ending mid-frame.
   */
  async next(): Promise<Uint8Array | null> {
    while (this.#end - this.#start < HEADER_SIZE) {
      if (!await this.#fill()) {
        if (this.#end === this.#start) return null;
        throw new FrameError("connection ended in the middle of a frame");
      }
    }
    const length = new DataView(this.#buffer.buffer, this.#start, HEADER_SIZE).getUint32(0);
    if (length > this.#maxBody) {
      throw new FrameError(`frame of ${length} bytes exceeds the maximum of ${this.#maxBody}`);
    }
    this.#start += HEADER_SIZE;
    const body = new Uint8Array(length);
    let filled = this.#take(body, 0);
    while (filled < length) {
      if (length - filled >= DIRECT_READ) {
        const n = await this.#conn.read(body.subarray(filled));
        if (n === null) throw new FrameError("connection ended in the middle of a frame");
        this.onBytes();
        filled += n;
      } else {
        if (!await this.#fill()) throw new FrameError("connection ended in the middle of a frame");
        filled = this.#take(body, filled);
      }
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

  /** Reads more into the read-ahead buffer; false at the end of the stream. */
  async #fill(): Promise<boolean> {
    if (this.#start > 0) {
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
