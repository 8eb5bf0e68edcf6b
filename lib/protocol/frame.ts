/**
 * Length-prefixed frames: a 4-byte big-endian body length, then exactly that many bytes.
 * Pure functions over bytes; no sockets here.
 */
import { FrameError } from "./errors.ts";

/** Bytes in the length header. */
export const HEADER_SIZE = 4;

/** Largest control frame body (1 MiB). Checked before anything is allocated. */
export const MAX_CONTROL_FRAME = 1024 * 1024;

/** Encodes one frame: header and body in a single buffer, so one write sends both. */
export function encodeFrame(body: Uint8Array, maxBody = MAX_CONTROL_FRAME): Uint8Array {
  if (body.length > maxBody) {
    throw new RangeError(`frame body of ${body.length} bytes exceeds the maximum of ${maxBody}`);
  }
  const out = new Uint8Array(HEADER_SIZE + body.length);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, HEADER_SIZE);
  return out;
}

/**
 * Incremental frame decoder. Feed it bytes as they arrive, in chunks of any size (one byte
 * at a time works); it returns every complete frame body. A declared length above the
 * maximum throws {@link FrameError} before any buffer for it is allocated.
 */
export class FrameDecoder {
  readonly #maxBody: number;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  /** Body length of the frame being read, or -1 while the header is incomplete. */
  #need = -1;

  constructor(maxBody = MAX_CONTROL_FRAME) {
    this.#maxBody = maxBody;
  }

  /** Bytes received but not yet returned as part of a frame. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Adds bytes and returns the frame bodies they complete, in order. */
  push(chunk: Uint8Array): Uint8Array[] {
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const frames: Uint8Array[] = [];
    for (;;) {
      if (this.#need < 0) {
        if (this.#buffered < HEADER_SIZE) break;
        const header = this.#take(HEADER_SIZE);
        const length = new DataView(header.buffer, header.byteOffset, HEADER_SIZE).getUint32(0);
        if (length > this.#maxBody) {
          throw new FrameError(`frame of ${length} bytes exceeds the maximum of ${this.#maxBody}`);
        }
        this.#need = length;
      }
      if (this.#buffered < this.#need) break;
      frames.push(this.#take(this.#need));
      this.#need = -1;
    }
    return frames;
  }

  /** Throws if the stream ended in the middle of a frame. */
  finish(): void {
    if (this.#buffered > 0 || this.#need >= 0) {
      throw new FrameError("connection ended in the middle of a frame");
    }
  }

  #take(n: number): Uint8Array {
    const first = this.#chunks[0];
    if (first !== undefined && first.length >= n) {
      // Fast path: the bytes sit in one chunk; hand out a view, no copy.
      const out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#buffered -= n;
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
      const part = Math.min(n - filled, chunk.length);
      out.set(chunk.subarray(0, part), filled);
      filled += part;
      if (part === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(part);
    }
    this.#buffered -= n;
    return out;
  }
}
