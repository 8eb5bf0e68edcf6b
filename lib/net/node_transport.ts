/**
 * TCP through `node:net`, for the one thing `Deno.connect` cannot do: connect from a chosen
 * local port (it ignores `localPort`). Hole punching needs it — the port the server saw us
 * use is the port the other peer dials, and we dial them from it at the same moment
 * (simultaneous open; no listener, which would collide with the outgoing connection).
 *
 * node:net is imported when a connection is made, not with this module: importing it costs a
 * process ≈ 40 ms of CPU at start-up, and most never punch a hole.
 */
import type net from "node:net";
import {
  ByteQueue,
  type Transport,
  type TransportAddress,
  type TransportPath,
} from "./transport.ts";

/** Bytes buffered from the socket before it is paused until the reader catches up. */
const HIGH_WATER = 256 * 1024;

/** A connected `node:net` socket as a transport. */
export class NodeSocketTransport implements Transport {
  readonly path: TransportPath;
  readonly localAddr: TransportAddress;
  readonly remoteAddr: TransportAddress;
  readonly #socket: net.Socket;
  readonly #queue = new ByteQueue();
  #ended = false;
  #error: Error | undefined;
  #closed = false;
  #wake: (() => void) | undefined;

  constructor(socket: net.Socket, path: TransportPath = "direct") {
    this.#socket = socket;
    this.path = path;
    this.localAddr = { hostname: socket.localAddress ?? "", port: socket.localPort ?? 0 };
    this.remoteAddr = { hostname: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    socket.setNoDelay(true);
    socket.on("data", (data: Uint8Array) => {
      this.#queue.push(data);
      if (this.#queue.size >= HIGH_WATER) socket.pause();
      this.#wakeReader();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wakeReader();
    });
    socket.on("error", (error: Error) => {
      this.#error = error;
      this.#wakeReader();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#wakeReader();
    });
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    while (this.#queue.size === 0) {
      if (this.#closed) throw new Deno.errors.BadResource("the connection is closed");
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      const wake = Promise.withResolvers<void>();
      this.#wake = wake.resolve;
      await wake.promise;
    }
    const n = this.#queue.take(buffer);
    if (this.#queue.size < HIGH_WATER / 2 && this.#socket.isPaused()) this.#socket.resume();
    return n;
  }

  write(data: Uint8Array): Promise<number> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource("the connection is closed"));
    }
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#socket.write(data, (error) => error ? reject(error) : resolve(data.length));
    });
  }

  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(() => resolve()));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.destroy();
    this.#wakeReader();
  }
}

/**
 * Connects from `localPort` on every local address to host:port.
 * @throws the socket's error (refused, reset, address in use) or an AbortError.
 */
export async function connectFrom(
  localPort: number,
  host: string,
  port: number,
  signal?: AbortSignal,
): Promise<net.Socket> {
  const { connect } = await import("node:net");
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const socket = connect({ host, port, localPort, localAddress: "0.0.0.0" });
    const onAbort = () => {
      socket.destroy();
      reject(signal?.reason);
    };
    const fail = (error: Error) => {
      signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      reject(error);
    };
    socket.once("error", fail);
    socket.once("connect", () => {
      signal?.removeEventListener("abort", onAbort);
      socket.off("error", fail);
      resolve(socket);
    });
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
