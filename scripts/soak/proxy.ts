/**
 * A TCP proxy the soak puts in front of a client's peer port (the client announces the proxy's
 * port), so the soak can cut the network: while cut, nothing passes in either direction and
 * new connections are held, yet nothing is closed — the bytes vanish as on a broken path, and
 * only the endpoints' own timeouts notice. When the cut heals, whatever still waits goes on.
 */

export class CutProxy implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #conns = new Set<Deno.TcpConn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #acceptLoop: Promise<void>;
  #healed = Promise.withResolvers<void>();
  #cut = false;
  #closing: Promise<void> | undefined;
  /** The port on 127.0.0.1 to forward to (the client's peer port; it moves at each restart). */
  target: number | undefined;

  constructor() {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
    this.#healed.resolve();
    this.#acceptLoop = this.#accept();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  get isCut(): boolean {
    return this.#cut;
  }

  /** From now on nothing passes, until {@link heal}. */
  cut(): void {
    if (this.#cut) return;
    this.#cut = true;
    this.#healed = Promise.withResolvers<void>();
  }

  heal(): void {
    if (!this.#cut) return;
    this.#cut = false;
    this.#healed.resolve();
  }

  /** Resolves at once when not cut; else when healed (or closing). */
  #open(): Promise<void> {
    return this.#healed.promise;
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closing || error instanceof Deno.errors.BadResource) return;
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      const task = this.#forward(conn);
      this.#tasks.add(task);
      void task.finally(() => this.#tasks.delete(task));
    }
  }

  async #forward(inbound: Deno.TcpConn): Promise<void> {
    this.#conns.add(inbound);
    await this.#open(); // a connection made during a cut waits, as a SYN would be retried
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
    await Promise.all([this.#pump(inbound, outbound), this.#pump(outbound, inbound)]);
    this.#close(inbound);
    this.#close(outbound);
  }

  /** Copies `from` to `to`, holding everything while cut; passes a close on. */
  async #pump(from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        await this.#open();
        const n = await from.read(buffer);
        if (n === null) break;
        await this.#open(); // read just before a cut: held, not passed
        let offset = 0;
        while (offset < n) offset += await to.write(buffer.subarray(offset, n));
      }
      await to.closeWrite();
    } catch {
      this.#close(from);
      this.#close(to);
    }
  }

  #close(conn: Deno.TcpConn): void {
    if (!this.#conns.delete(conn)) return;
    try {
      conn.close();
    } catch { /* closed already */ }
  }

  /** Stops listening, closes every connection, waits for the pumps. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        this.#listener.close();
      } catch { /* closed already */ }
      await this.#acceptLoop;
      this.#healed.resolve(); // release held pumps; they find their connections closed
      for (const conn of [...this.#conns]) this.#close(conn);
      while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
