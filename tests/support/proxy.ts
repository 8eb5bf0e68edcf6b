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

export class RecordingProxy implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #conns = new Set<Deno.TcpConn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #acceptLoop: Promise<void>;
  /** Every connection that passed, in the order they were accepted. */
  readonly connections: RecordedConnection[] = [];
  #closing: Promise<void> | undefined;

  /**
   * @param target the port on 127.0.0.1 to forward to; may be set later (before the first
   * connection arrives), when the target's port is only known after the proxy's port was
   * handed to it.
   */
  constructor(public target?: number) {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
    this.#acceptLoop = this.#accept();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

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

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // closed
      }
      this.#track(this.#forward(conn));
    }
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    void task.finally(() => this.#tasks.delete(task));
  }

  async #forward(inbound: Deno.TcpConn): Promise<void> {
    this.#conns.add(inbound);
    let outbound: Deno.TcpConn;
    try {
      if (this.target === undefined || this.#closing) throw new Error("no target");
      outbound = await Deno.connect({ hostname: "127.0.0.1", port: this.target });
    } catch {
      this.#close(inbound);
      return;
    }
    this.#conns.add(outbound);
    if (this.#closing) {
      this.#close(inbound);
      this.#close(outbound);
      return;
    }
    inbound.setNoDelay(true);
    outbound.setNoDelay(true);
    const record: RecordedConnection = { up: [], down: [] };
    this.connections.push(record);
    await Promise.all([
      this.#pump(inbound, outbound, record.up),
      this.#pump(outbound, inbound, record.down),
    ]);
    this.#close(inbound);
    this.#close(outbound);
  }

  /** Copies `from` to `to`, recording; passes a half-close on, and a failure as a close. */
  async #pump(from: Deno.TcpConn, to: Deno.TcpConn, log: Uint8Array[]): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        const chunk = buffer.slice(0, n);
        log.push(chunk);
        let offset = 0;
        while (offset < n) offset += await to.write(chunk.subarray(offset));
      }
      await to.closeWrite();
    } catch {
      // One side broke: end both, as a real network path would.
      this.#close(from);
      this.#close(to);
    }
  }

  #close(conn: Deno.TcpConn): void {
    if (!this.#conns.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
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
      for (const conn of [...this.#conns]) this.#close(conn);
      while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
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
