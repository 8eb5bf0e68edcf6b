/**
 * The SHA-256 a receiver keeps over a file as its chunks arrive. For a large file it runs on a
 * worker thread of its own: the receiver's main thread then only opens each chunk (the AEAD)
 * and hands it to the disk, while the worker hashes; on the main thread the hash cost ≈ 45 µs of
 * the ≈ 200-270 µs every 65,000 bytes took there. Chunks are hashed in the order given.
 *
 * The worker is made from source text rather than a module file, so the single-file bundle
 * carries it too.
 */
import { requireNodeCrypto } from "../crypto/node_crypto.ts";
import { toHex } from "../util/hex.ts";

/** Files from this size on are hashed off the main thread (starting a worker costs ≈ 20-50 ms). */
export const OFF_THREAD_FROM = 8 * 1024 * 1024;

/** A running SHA-256; updates are applied in call order. */
export interface FileHash {
  /**
   * Adds `bytes` to the hash. `bytes` must stay unchanged until the promise settles (a view
   * of shared memory is hashed where it lies, without a copy).
   */
  update(bytes: Uint8Array): Promise<void>;
  /** The hash of everything added, as lower-case hex; nothing may be added after it. */
  digest(): Promise<string>;
  /** Ends it early (the transfer failed): frees the worker; later calls reject. */
  close(): void;
}

/**
 * A running SHA-256 for a file of `size` bytes: on a worker thread when the file is large. The
 * caller loads node:crypto first (loadNodeCrypto): a transfer needs it for its chunks anyway.
 */
export function fileHash(size: number): FileHash {
  if (size < OFF_THREAD_FROM) return new InlineHash();
  try {
    return new WorkerHash();
  } catch {
    return new InlineHash(); // no worker to be had here: the same hash, on this thread
  }
}

/** Hashes on the calling thread (small files: no worker to start). */
class InlineHash implements FileHash {
  readonly #hash = requireNodeCrypto().createHash("sha256");

  update(bytes: Uint8Array): Promise<void> {
    this.#hash.update(bytes);
    return Promise.resolve();
  }

  digest(): Promise<string> {
    return Promise.resolve(this.#hash.digest("hex"));
  }

  close(): void {}
}

/** Bytes of the ring the main thread copies chunks into for the worker (8 chunks of 256 KiB). */
const RING_BYTES = 2 * 1024 * 1024;
/** Most pieces waiting in the ring at once, and the largest piece. */
const SLOTS = 64;
const MAX_PIECE = RING_BYTES / 4;
/**
 * The control words, in shared memory: `SEQ` counts every change the main thread makes (the
 * worker sleeps on it, so no wake-up is lost), `PUBLISHED` and `CONSUMED` count pieces put into
 * and hashed out of the ring (32-bit, wrapping), `COMMAND` asks for the digest or the end, `DONE`
 * says the digest is in its place, `ASLEEP` and `WAITING` say that the worker, or the main
 * thread, sleeps and must be woken (a wake-up is a system call: ≈ 20 µs of the main thread's
 * time per chunk in the receiver's profile when made for every one). Each piece is described by
 * its start and length in the ring, in slot `n % SLOTS`.
 */
const SEQ = 0, PUBLISHED = 1, CONSUMED = 2, COMMAND = 3, DONE = 4, ASLEEP = 5, WAITING = 6;
/** The worker is woken once this much waits for it (or when asked for the digest). */
const WAKE_AT = RING_BYTES / 4;
const DIGEST_COMMAND = 1, STOP_COMMAND = 2;
const CONTROL_WORDS = 8;
const SLOTS_AT = CONTROL_WORDS * 4;
const DIGEST_AT = SLOTS_AT + SLOTS * 8;
const DATA_AT = DIGEST_AT + 32;
/** How long either side sleeps before it looks again (a lost worker is noticed by then). */
const WAIT_MS = 1000;

/**
 * The worker: hashes the pieces as they are published, writes the digest when asked, and ends
 * on the digest or on the stop command. It sleeps in `Atomics.wait` between pieces: no message
 * per chunk (a postMessage round trip costs ≈ 60-90 µs of CPU here, more than hashing 65,000
 * bytes).
 */
const WORKER_SOURCE = `
import { createHash } from "node:crypto";
self.onmessage = (event) => {
  const shared = event.data;
  const control = new Int32Array(shared, 0, ${CONTROL_WORDS});
  const slots = new Int32Array(shared, ${SLOTS_AT}, ${SLOTS * 2});
  const ring = new Uint8Array(shared, ${DATA_AT}, ${RING_BYTES});
  const digestOut = new Uint8Array(shared, ${DIGEST_AT}, 32);
  const hash = createHash("sha256");
  let consumed = 0;
  for (;;) {
    const seq = Atomics.load(control, ${SEQ});
    const published = Atomics.load(control, ${PUBLISHED});
    if (published !== consumed) {
      // Each piece is handed back as soon as it is hashed: the main thread refills the ring
      // while this goes on with the rest.
      for (; consumed !== published; consumed = (consumed + 1) | 0) {
        const slot = ((consumed >>> 0) % ${SLOTS}) * 2;
        hash.update(ring.subarray(slots[slot], slots[slot] + slots[slot + 1]));
        Atomics.store(control, ${CONSUMED}, (consumed + 1) | 0);
        if (Atomics.load(control, ${WAITING}) === 1) Atomics.notify(control, ${CONSUMED});
      }
      continue;
    }
    const command = Atomics.load(control, ${COMMAND});
    if (command === ${DIGEST_COMMAND}) {
      digestOut.set(hash.digest());
      Atomics.store(control, ${DONE}, 1);
      Atomics.notify(control, ${DONE});
    }
    if (command !== 0) break;
    // Said before the sleep and after reading SEQ: a change made meanwhile ends the sleep at once.
    Atomics.store(control, ${ASLEEP}, 1);
    Atomics.wait(control, ${SEQ}, seq, ${WAIT_MS});
    Atomics.store(control, ${ASLEEP}, 0);
  }
  self.close();
};
`;

let workerUrl: string | undefined;

/**
 * Hashes on a worker thread of its own. A chunk is copied into a ring in shared memory and the
 * caller goes on at once; it waits only when the worker is 2 MiB behind. Each piece is placed
 * at the same offset modulo 8 as its source: a copy into shared memory between offsets that
 * differ there goes byte by byte (≈ 100 µs for 256 KiB instead of ≈ 15).
 */
class WorkerHash implements FileHash {
  readonly #worker: Worker;
  readonly #control: Int32Array<SharedArrayBuffer>;
  readonly #slots: Int32Array<SharedArrayBuffer>;
  readonly #ring: Uint8Array<SharedArrayBuffer>;
  readonly #digest: Uint8Array<SharedArrayBuffer>;
  /** Pieces published (wrapping like the shared counter), and those not yet seen hashed. */
  #published = 0;
  readonly #unhashed: { start: number; end: number }[] = [];
  /** Their bytes, as last seen. */
  #unhashedBytes = 0;
  #closed: Error | undefined;
  /** Updates run one after another (each may wait for room). */
  #last: Promise<void> = Promise.resolve();

  constructor() {
    const shared = new SharedArrayBuffer(DATA_AT + RING_BYTES);
    this.#control = new Int32Array(shared, 0, CONTROL_WORDS);
    this.#slots = new Int32Array(shared, SLOTS_AT, SLOTS * 2);
    this.#ring = new Uint8Array(shared, DATA_AT, RING_BYTES);
    this.#digest = new Uint8Array(shared, DIGEST_AT, 32);
    workerUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    this.#worker = new Worker(workerUrl, { type: "module" });
    this.#worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      this.#end(new Error(`the SHA-256 worker failed: ${event.message}`));
    };
    this.#worker.postMessage(shared);
  }

  update(bytes: Uint8Array): Promise<void> {
    const run = this.#last.then(() => this.#put(bytes));
    this.#last = run.catch(() => {});
    return run;
  }

  async #put(bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.length;) {
      const piece = bytes.subarray(at, at + MAX_PIECE);
      let start: number | undefined;
      while ((start = this.#place(piece)) === undefined) {
        if (this.#closed) throw this.#closed;
        this.#wake(true); // whatever waits in the ring: the room is made by hashing it
        Atomics.store(this.#control, WAITING, 1);
        await this.#changed(CONSUMED, Atomics.load(this.#control, CONSUMED));
        Atomics.store(this.#control, WAITING, 0);
      }
      if (this.#closed) throw this.#closed;
      this.#ring.set(piece, start);
      const slot = ((this.#published >>> 0) % SLOTS) * 2;
      this.#slots[slot] = start;
      this.#slots[slot + 1] = piece.length;
      this.#unhashed.push({ start, end: start + piece.length });
      this.#unhashedBytes += piece.length;
      this.#published = (this.#published + 1) | 0;
      Atomics.store(this.#control, PUBLISHED, this.#published);
      this.#wake(this.#unhashedBytes >= WAKE_AT);
      at += piece.length;
    }
  }

  /**
   * Where `piece` can go in the ring now (at its own offset modulo 8), or undefined when there
   * is no room until the worker hashes more.
   */
  #place(piece: Uint8Array): number | undefined {
    const hashed = this.#unhashed.length -
      ((this.#published - Atomics.load(this.#control, CONSUMED)) | 0);
    for (const done of this.#unhashed.splice(0, hashed)) {
      this.#unhashedBytes -= done.end - done.start;
    }
    if (this.#unhashed.length >= SLOTS) return undefined;
    const aligned = (from: number) => from + ((piece.byteOffset - from) & 7);
    const fits = (from: number, limit: number) => {
      const start = aligned(from);
      return start + piece.length <= limit ? start : undefined;
    };
    const first = this.#unhashed[0];
    const last = this.#unhashed[this.#unhashed.length - 1];
    if (first === undefined || last === undefined) return fits(0, RING_BYTES);
    if (last.start >= first.start) {
      // Not wrapped: room after the last piece, or else before the first.
      return fits(last.end, RING_BYTES) ?? fits(0, first.start);
    }
    return fits(last.end, first.start);
  }

  /** Resolves once control word `index` differs from `value` (or after {@link WAIT_MS}). */
  async #changed(index: number, value: number): Promise<void> {
    const wait = Atomics.waitAsync(this.#control, index, value, WAIT_MS);
    if (wait.async) await wait.value;
  }

  /** Tells the worker of a change; wakes it when it sleeps and `now` (else it looks later). */
  #wake(now = true): void {
    Atomics.add(this.#control, SEQ, 1);
    if (now && Atomics.load(this.#control, ASLEEP) === 1) Atomics.notify(this.#control, SEQ);
  }

  async digest(): Promise<string> {
    await this.#last;
    if (this.#closed) throw this.#closed;
    Atomics.store(this.#control, COMMAND, DIGEST_COMMAND);
    this.#wake();
    while (Atomics.load(this.#control, DONE) === 0) {
      if (this.#closed) throw this.#closed;
      await this.#changed(DONE, 0);
    }
    const hex = toHex(this.#digest);
    this.#end(new Error("the hash is complete"));
    return hex;
  }

  close(): void {
    this.#end(new Error("the hash was closed"));
  }

  #end(reason: Error): void {
    if (this.#closed) return;
    this.#closed = reason;
    // A worker asleep in Atomics.wait is not woken by terminate(): tell it to stop first.
    Atomics.store(this.#control, COMMAND, STOP_COMMAND);
    this.#wake();
    this.#worker.terminate();
  }
}
