/**
 * A recording TCP proxy for tests: it listens on a free loopback port, forwards every
 * connection to a target port, and keeps every byte that passes in either direction, so a test
 * can check what an eavesdropper on the wire would see.
 */

/** The bytes of one proxied connection, each direction as one contiguous stream. */
export interface RecordedConnection {
  /** From the dialer to the target. */
  up: Uint8Array[];
  /** From the target back to the dialer. */
  down: Uint8Array[];
}

/**
 * What every test proxy shares: a listener on a free loopback port, one task per accepted
 * connection, and a close that ends them all.
 */
abstract class Proxy implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #conns = new Set<Deno.TcpConn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #acceptLoop: Promise<void>;
  #closing: Promise<void> | undefined;

  constructor() {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
    this.#acceptLoop = this.#accept();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  protected get closing(): boolean {
    return this.#closing !== undefined;
  }

  /** Serves one accepted connection (the n-th, from 0) until both directions end. */
  protected abstract forward(inbound: Deno.TcpConn, n: number): Promise<void>;

  async #accept(): Promise<void> {
    for (let n = 0;; n++) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // closed
      }
      this.#conns.add(conn);
      const task = this.forward(conn, n);
      this.#tasks.add(task);
      void task.finally(() => this.#tasks.delete(task));
    }
  }

  /** Dials the target, tracked so close() ends it; undefined when it cannot be reached. */
  protected async connect(port: number | undefined): Promise<Deno.TcpConn | undefined> {
    if (port === undefined || this.#closing) return undefined;
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      this.#conns.add(conn);
      if (this.#closing) {
        this.closeConn(conn);
        return undefined;
      }
      conn.setNoDelay(true);
      return conn;
    } catch {
      return undefined;
    }
  }

  protected closeConn(conn: Deno.TcpConn): void {
    if (!this.#conns.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }

  /** Closes every connection through the proxy now (what was held is lost); it goes on listening. */
  cutAll(): void {
    for (const conn of [...this.#conns]) this.closeConn(conn);
  }

  /** Stops listening, closes every proxied connection and waits for the pumps. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        this.#listener.close();
      } catch {
        // Already closed.
      }
      await this.#acceptLoop;
      for (const conn of [...this.#conns]) this.closeConn(conn);
      while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

export class RecordingProxy extends Proxy {
  /** Every connection that passed, in the order they were accepted. */
  readonly connections: RecordedConnection[] = [];

  /**
   * @param target the port on 127.0.0.1 to forward to; may be set later (before the first
   * connection arrives), when the target's port is only known after the proxy's port was
   * handed to it.
   */
  constructor(public target?: number) {
    super();
  }

  /** While true, bytes from the target are recorded but not passed on: answers held back. */
  holdDown = false;

  /** Bytes recorded so far in each direction, over all connections. */
  get byteCounts(): { up: number; down: number } {
    const sum = (chunks: Uint8Array[]) => chunks.reduce((n, c) => n + c.length, 0);
    return {
      up: this.connections.reduce((n, c) => n + sum(c.up), 0),
      down: this.connections.reduce((n, c) => n + sum(c.down), 0),
    };
  }

  /** Each direction of each connection as one byte stream (a needle may span reads). */
  streams(): Uint8Array[] {
    return this.connections.flatMap((c) => [concat(c.up), concat(c.down)]);
  }

  protected async forward(inbound: Deno.TcpConn): Promise<void> {
    const outbound = await this.connect(this.target);
    if (!outbound) {
      this.closeConn(inbound);
      return;
    }
    inbound.setNoDelay(true);
    const record: RecordedConnection = { up: [], down: [] };
    this.connections.push(record);
    await Promise.all([
      this.#pump(inbound, outbound, record.up, outbound),
      this.#pump(outbound, inbound, record.down, outbound),
    ]);
    this.closeConn(inbound);
    this.closeConn(outbound);
  }

  /** Copies `from` to `to`, recording; passes a half-close on, and a failure as a close. */
  async #pump(
    from: Deno.TcpConn,
    to: Deno.TcpConn,
    log: Uint8Array[],
    outbound: Deno.TcpConn,
  ): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        const chunk = buffer.slice(0, n);
        log.push(chunk);
        if (this.holdDown && from === outbound) continue;
        let offset = 0;
        while (offset < n) offset += await to.write(chunk.subarray(offset));
      }
      await to.closeWrite();
    } catch {
      // One side broke: end both, as a real network path would.
      this.closeConn(from);
      this.closeConn(to);
    }
  }
}

/** Where an {@link InjectingProxy} slips its bytes in: after the n-th frame of one direction. */
export interface Injection {
  /** "up": from the dialer to the target; "down": back to the dialer. */
  direction: "up" | "down";
  /** Frames of that direction passed on before the injected bytes (0: before the first). */
  afterFrames: number;
  /** The bytes to inject (one or more whole frames). */
  bytes: Uint8Array;
}

/**
 * What a tampering proxy does with each whole frame (header included) of the attacked
 * connection: return the bytes to send instead (the frame, changed, or with more after it).
 * `index` counts the frames of that direction from 0; `before` is true for one extra call
 * before the first frame (with an empty frame), so bytes can go ahead of everything.
 */
export type Tamper = (
  frame: Uint8Array,
  where: { direction: "up" | "down"; index: number; before: boolean },
) => Uint8Array;

/** A {@link Tamper} that slips `injection.bytes` in after the chosen frame. */
export function injectAfter(injection: Injection): Tamper {
  return (frame, where) => {
    if (where.direction !== injection.direction) return frame;
    const passed = where.before ? 0 : where.index + 1;
    return passed === injection.afterFrames ? concat([frame, injection.bytes]) : frame;
  };
}

/**
 * A man in the middle for tests: it forwards every connection to a target port frame by frame
 * (a 4-byte big-endian length, then the body) and lets a {@link Tamper} change the frames of
 * the first connection, each result in one write, as an attacker on the path would. Later
 * connections pass untouched.
 */
export class InjectingProxy extends Proxy {
  readonly #tamper: Tamper;
  /** Resolves once the first (attacked) connection has ended in both directions. */
  readonly firstEnded = Promise.withResolvers<void>();

  constructor(readonly target: number, tamper: Tamper | Injection) {
    super();
    this.#tamper = typeof tamper === "function" ? tamper : injectAfter(tamper);
  }

  protected async forward(inbound: Deno.TcpConn, n: number): Promise<void> {
    const tamper = n === 0 ? this.#tamper : undefined;
    const outbound = await this.connect(this.target);
    if (outbound) {
      await Promise.all([
        this.#pump(inbound, outbound, "up", tamper),
        this.#pump(outbound, inbound, "down", tamper),
      ]);
      this.closeConn(outbound);
    }
    this.closeConn(inbound);
    if (n === 0) this.firstEnded.resolve();
  }

  /** Copies whole frames from `from` to `to`, each through `tamper` when given. */
  async #pump(
    from: Deno.TcpConn,
    to: Deno.TcpConn,
    direction: "up" | "down",
    tamper?: Tamper,
  ): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    let pending = new Uint8Array(0);
    let index = 0;
    const write = async (bytes: Uint8Array) => {
      let offset = 0;
      while (offset < bytes.length) offset += await to.write(bytes.subarray(offset));
    };
    try {
      if (tamper) await write(tamper(new Uint8Array(0), { direction, index: 0, before: true }));
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        const joined = concat([pending, buffer.subarray(0, n)]);
        const out: Uint8Array[] = [];
        let at = 0;
        while (joined.length - at >= 4) {
          const length = new DataView(joined.buffer, joined.byteOffset + at, 4).getUint32(0);
          if (joined.length - at - 4 < length) break;
          const frame = joined.slice(at, at + 4 + length);
          out.push(tamper ? tamper(frame, { direction, index: index++, before: false }) : frame);
          at += 4 + length;
        }
        pending = joined.slice(at);
        if (out.length > 0) await write(concat(out));
      }
      await to.closeWrite();
    } catch {
      this.closeConn(from);
      this.closeConn(to);
    }
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
