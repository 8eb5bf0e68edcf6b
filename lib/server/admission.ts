/**
 * Admission of new connections to their handshake, when many arrive at once: the others wait,
 * costing nothing but a socket, and the newest is served first. A few are always admitted (32
 * in their handshake at once); beyond that, more are let in only while the server keeps up: a
 * turn of the event loop every 10 ms admits up to 16 more when the turn came on time (within
 * 25 ms), 2 when it was late (within 75 ms), none when later still, and at most 4,096 are in
 * their handshake at once. So the server works on what it can finish, whatever slows the
 * handshakes down: its own CPU (the loop runs late), or its clients (a slot held while a handshake
 * waits for a slow client's next message costs nothing, and a fixed bound on slots would then
 * idle the server: with 32 slots, a herd of slow clients got a few dozen handshakes a second).
 *
 * Newest first: when more arrive than the server can serve within a client's timeout, serving
 * the oldest first would serve only clients about to give up (all work lost); newest first, every
 * handshake started is one a client still waits for, and one that gave up comes back as the
 * newest. Nobody is refused: a refusal costs the server an accept, a frame and a close, and
 * brings the client back sooner.
 */
export class Admission {
  #busy = 0;
  /** Waiting connections, newest last; those that ended meanwhile are marked and skipped. */
  #stack: Waiter[] = [];
  #ended = 0;
  #pump: ReturnType<typeof setTimeout> | undefined;
  #tickAt = 0;

  /**
   * Waits for a turn. Resolves true when it is ours (call {@link leave} when done), false when
   * the connection ended first (`ended` settled; no turn taken).
   */
  enter(ended: Promise<unknown>): Promise<boolean> {
    if (this.#busy < ALWAYS && this.#stack.length === this.#ended) {
      this.#busy++;
      return Promise.resolve(true);
    }
    return new Promise<boolean>((resolve) => {
      const waiter: Waiter = { resolve, done: false };
      this.#stack.push(waiter);
      void ended.finally(() => {
        if (waiter.done) return;
        waiter.done = true;
        this.#ended++;
        resolve(false);
        this.#compact();
      });
      this.#schedule();
    });
  }

  /** Ends a turn. */
  leave(): void {
    this.#busy--;
    if (this.#busy < ALWAYS) this.#admit(ALWAYS - this.#busy);
  }

  /** Stops admitting (the server closes; waiting connections end with their sockets). */
  close(): void {
    clearTimeout(this.#pump);
    this.#pump = undefined;
  }

  #schedule(): void {
    if (this.#pump !== undefined) return;
    this.#tickAt = performance.now() + TICK_MS;
    this.#pump = setTimeout(() => this.#tick(), TICK_MS);
  }

  #tick(): void {
    this.#pump = undefined;
    const late = performance.now() - this.#tickAt;
    this.#admit(late <= ON_TIME_MS ? BURST : late <= LATE_MS ? TRICKLE : 0);
    if (this.#stack.length > this.#ended) this.#schedule();
  }

  /** Lets in up to `n` of the newest still waiting, within the bound. */
  #admit(n: number): void {
    while (n > 0 && this.#busy < MAX_BUSY && this.#stack.length > 0) {
      const waiter = this.#stack.pop()!;
      if (waiter.done) {
        this.#ended--;
        continue;
      }
      waiter.done = true;
      this.#busy++;
      n--;
      waiter.resolve(true);
    }
  }

  /** Drops the marks of ended connections once they are most of the stack. */
  #compact(): void {
    if (this.#ended < 1024 || this.#ended * 2 < this.#stack.length) return;
    this.#stack = this.#stack.filter((waiter) => !waiter.done);
    this.#ended = 0;
  }
}

/** Handshakes always allowed at once. */
const ALWAYS = 32;
/** Handshakes at once at most. */
const MAX_BUSY = 4096;
/** How often more are let in, and how many when the event loop is on time, or a little late. */
const TICK_MS = 10;
const BURST = 16;
const TRICKLE = 2;
const ON_TIME_MS = 25;
const LATE_MS = 75;

interface Waiter {
  resolve: (admitted: boolean) => void;
  done: boolean;
}

/**
 * A group commit: items added while a batch is being committed go together into the next one
 * (up to `maxBatch`), so a burst costs one transaction per batch rather than one per item.
 * Up to `concurrency` batches are under way at once. Each item's promise settles with its own
 * answer, or with the batch's failure.
 */
export class GroupCommit<T, R> {
  readonly #commit: (batch: T[]) => Promise<R[]>;
  readonly #maxBatch: number;
  readonly #concurrency: number;
  #queue: { item: T; resolve: (r: R) => void; reject: (e: unknown) => void }[] = [];
  #running = 0;
  #scheduled = false;

  constructor(
    commit: (batch: T[]) => Promise<R[]>,
    options: { maxBatch: number; concurrency: number },
  ) {
    this.#commit = commit;
    this.#maxBatch = options.maxBatch;
    this.#concurrency = options.concurrency;
  }

  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      // The first of a burst waits one turn of the event loop for the others to join it.
      if (!this.#scheduled) {
        this.#scheduled = true;
        setTimeout(() => {
          this.#scheduled = false;
          this.#start();
        }, 0);
      }
    });
  }

  #start(): void {
    while (this.#running < this.#concurrency && this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#maxBatch);
      this.#running++;
      void this.#commit(batch.map((entry) => entry.item)).then(
        (results) => batch.forEach((entry, i) => entry.resolve(results[i]!)),
        (error) => batch.forEach((entry) => entry.reject(error)),
      ).finally(() => {
        this.#running--;
        this.#start();
      });
    }
  }
}
