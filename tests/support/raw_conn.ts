/**
 * A raw TCP connection for tests that speak the wire protocol by hand, as an attacker or a
 * broken program would: write any bytes, and read what comes back frame by frame (a 4-byte
 * big-endian length, then a JSON body), parsed here rather than by the code under test. Every
 * wait has a deadline.
 */
import { encodeFrame } from "../../lib/protocol/frame.ts";
import { encodeMessage, PROTOCOL_VERSION } from "../../lib/protocol/messages.ts";
import {
  generateKeyPair,
  HandshakeState,
  type KeyPair,
  type NoiseSession,
} from "../../lib/crypto/noise.ts";
import { closeFrame, openFrame } from "../../lib/net/sealed_frames.ts";
import { handshakePrologue } from "../../lib/net/secure_channel.ts";
import type { HelloMessage } from "../../lib/protocol/messages.ts";
import { fromBase64Url, toBase64Url } from "../../lib/util/base64.ts";
import { DEADLINE_MS } from "./processes.ts";

/** A frame body as received: a JSON object with a `type`. */
export type Frame = { type: string; [key: string]: unknown };

const HEADER = 4;

export class RawConn implements AsyncDisposable {
  readonly conn: Deno.TcpConn;
  /** Every frame received so far, in order. */
  readonly frames: Frame[] = [];
  #consumed = 0;
  #pending = new Uint8Array(0);
  #ended = false;
  /** Why reading stopped: undefined for a clean end of stream (FIN). */
  endError: Error | undefined;
  #changed = Promise.withResolvers<void>();
  readonly #pump: Promise<void>;
  #closed = false;
  #paused: PromiseWithResolvers<void> | undefined;
  /** Bodies are decoded in order on this chain (decryption is asynchronous). */
  #decoding: Promise<void> = Promise.resolve();
  #session: NoiseSession | undefined;
  /** Serialises encryption, so nonces follow the order of the calls. */
  #sealing: Promise<unknown> = Promise.resolve();
  /** Both hellos once {@link hello} ran (ours first: we dial), for the Noise prologue. */
  #hellos: { initiator: HelloMessage; responder: HelloMessage } | undefined;

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    conn.setNoDelay(true);
    this.#pump = this.#read();
  }

  /** Connects to 127.0.0.1:`port`. */
  static async connect(port: number): Promise<RawConn> {
    return new RawConn(await Deno.connect({ hostname: "127.0.0.1", port, transport: "tcp" }));
  }

  /** True once the other side ended the stream (or it broke). */
  get ended(): boolean {
    return this.#ended;
  }

  /** Writes bytes as they are, looping over short writes. */
  async write(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) offset += await this.conn.write(bytes.subarray(offset));
  }

  /** Writes one well-formed frame holding `message` as JSON (encrypted once secure). */
  async send(message: { type: string; [field: string]: unknown }): Promise<void> {
    await this.write(await this.frame(message));
  }

  /**
   * The bytes of one frame holding `message`, encrypted when the connection is secure, without
   * sending them: tests tamper with them, replay them or cut them short. Each call uses the next
   * nonce, in call order.
   */
  frame(message: { type: string; [field: string]: unknown }): Promise<Uint8Array> {
    return this.frameOf(encodeMessage(message));
  }

  /** Like {@link frame}, for any body bytes. */
  frameOf(body: Uint8Array): Promise<Uint8Array> {
    const session = this.#session;
    const next = this.#sealing.then(async () =>
      encodeFrame(session ? await closeFrame(session.send, body) : body, 2 * 1024 * 1024)
    );
    this.#sealing = next.catch(() => {});
    return next;
  }

  /**
   * Takes a session made by hand (a resumption in the hellos): every frame after now, both
   * ways, is encrypted with it.
   */
  adopt(session: NoiseSession): void {
    this.#session = session;
  }

  /**
   * Runs the Noise XX handshake as the initiator (after {@link hello}), as a real client or
   * peer does; afterwards every frame both ways is encrypted.
   */
  async secure(
    kind: "client-server" | "peer",
    staticKeyPair?: KeyPair,
  ): Promise<NoiseSession> {
    const hs = await HandshakeState.initialize({
      pattern: "XX",
      initiator: true,
      prologue: this.prologue(kind),
      staticKeyPair: staticKeyPair ?? await generateKeyPair(),
    });
    await this.send({ type: "noise", data: toBase64Url(await hs.writeMessage()) });
    const reply = await this.next("noise");
    await hs.readMessage(fromBase64Url(String(reply.data)));
    const last = await this.frame({ type: "noise", data: toBase64Url(await hs.writeMessage()) });
    this.#session = hs.session();
    await this.write(last);
    return this.#session;
  }

  /** The Noise prologue of this connection, from both hellos (after {@link hello}). */
  prologue(kind: "client-server" | "peer"): Uint8Array {
    if (!this.#hellos) throw new Error("exchange hellos first (hello())");
    return handshakePrologue(kind, this.#hellos);
  }

  /** Sends our `hello` and waits for theirs (a peer sends its own at once, the server answers). */
  async hello(role: "client" | "peer", version = PROTOCOL_VERSION): Promise<Frame> {
    const ours = { type: "hello", version, role, software: "raw-test/1" } as const;
    await this.send(ours);
    const theirs = await this.next("hello");
    this.#hellos = { initiator: ours, responder: theirs as unknown as HelloMessage };
    return theirs;
  }

  /** The next frame not yet taken; fails if it is not of `type` (when given). */
  async next(type?: string, ms = DEADLINE_MS): Promise<Frame> {
    const frame = await this.#until(
      () => this.frames[this.#consumed],
      `a frame${type ? ` of type ${type}` : ""}`,
      ms,
    );
    this.#consumed++;
    if (type !== undefined && frame.type !== type) {
      throw new Error(`expected a ${type} frame, got ${JSON.stringify(frame)}`);
    }
    return frame;
  }

  /** Sends a request with `id` and returns the first frame that answers it. */
  async request(message: { type: string; id: number; [field: string]: unknown }): Promise<Frame> {
    await this.send(message);
    const found = await this.#until(
      () => this.frames.slice(this.#consumed).find((f) => f.id === message.id),
      `a reply to ${message.type} #${message.id}`,
      DEADLINE_MS,
    );
    this.#consumed = this.frames.indexOf(found) + 1;
    return found;
  }

  /** Waits for the other side to end the stream; returns the frames not yet taken. */
  async untilEnd(ms = DEADLINE_MS): Promise<Frame[]> {
    await this.#until(() => (this.#ended ? true : undefined), "the end of the stream", ms, true);
    const rest = this.frames.slice(this.#consumed);
    this.#consumed = this.frames.length;
    return rest;
  }

  async #until<T>(
    check: () => T | undefined,
    what: string,
    ms: number,
    endOk = false,
  ): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const value = check();
      if (value !== undefined) return value;
      if (this.#ended && !endOk) {
        throw new Error(
          `connection ended (${this.endError?.message ?? "EOF"}) before ${what}; frames: ` +
            JSON.stringify(this.frames),
        );
      }
      const left = deadline - Date.now();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((resolve) =>
        timer = setTimeout(() => resolve("late"), left)
      );
      const result = await Promise.race([this.#changed.promise, late]);
      clearTimeout(timer);
      if (result === "late" && check() === undefined) {
        throw new Error(`no ${what} within ${ms} ms; frames: ${JSON.stringify(this.frames)}`);
      }
    }
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        if (this.#paused) await this.#paused.promise;
        const n = await this.conn.read(buffer);
        if (n === null) break;
        this.#take(buffer.slice(0, n));
      }
    } catch (error) {
      if (!this.#closed) this.endError = error instanceof Error ? error : new Error(String(error));
    }
    await this.#decoding;
    this.#ended = true;
    this.#notify();
  }

  #take(chunk: Uint8Array): void {
    const joined = new Uint8Array(this.#pending.length + chunk.length);
    joined.set(this.#pending);
    joined.set(chunk, this.#pending.length);
    let at = 0;
    while (joined.length - at >= HEADER) {
      const length = new DataView(joined.buffer, at, HEADER).getUint32(0, false);
      if (joined.length - at - HEADER < length) break;
      const body = joined.slice(at + HEADER, at + HEADER + length);
      this.#decoding = this.#decoding.then(() => this.#decode(body));
      at += HEADER + length;
    }
    this.#pending = joined.slice(at);
  }

  async #decode(body: Uint8Array): Promise<void> {
    let frame: Frame;
    try {
      const plain = this.#session ? await openFrame(this.#session.receive, body) : body;
      frame = JSON.parse(new TextDecoder().decode(plain)) as Frame;
    } catch (error) {
      frame = { type: "<undecodable>", error: String(error) };
    }
    this.frames.push(frame);
    this.#notify();
  }

  #notify(): void {
    this.#changed.resolve();
    this.#changed = Promise.withResolvers<void>();
  }

  /**
   * Stops reading: what the other side sends piles up in the kernel's buffers, then in its own
   * write queue, as with a peer that is stuck. (A read already waiting takes one more chunk.)
   */
  pauseReading(): void {
    this.#paused ??= Promise.withResolvers<void>();
  }

  resumeReading(): void {
    this.#paused?.resolve();
    this.#paused = undefined;
  }

  /** Closes the socket and waits for the reader to stop. Idempotent. */
  async close(): Promise<void> {
    this.resumeReading();
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.conn.close();
      } catch {
        // Already closed.
      }
    }
    await this.#pump;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * A client connection to the server on `port`, secured with `key` and logged in as `user`
   * (password "secret-pw", peer port 1).
   */
  static async login(port: number, user: string, key: KeyPair): Promise<RawConn> {
    const raw = await RawConn.connect(port);
    try {
      await raw.hello("client");
      await raw.secure("client-server", key);
      const welcome = await raw.request({
        type: "login",
        id: 1,
        user,
        password: "secret-pw",
        peerPort: 1,
      });
      if (welcome.type !== "welcome") throw new Error(`login: ${JSON.stringify(welcome)}`);
      return raw;
    } catch (error) {
      await raw.close();
      throw error;
    }
  }
}
