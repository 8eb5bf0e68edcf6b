/**
 * The client's peer-links room: the listener for peers who dial us, dialing the people we
 * talk to, one authenticated link per user (when both dial at once, both ends keep the same
 * one), heartbeats, and noticing when a link ends. Messages that arrive on a link are handed
 * to the core, which routes them by type to the room that owns them.
 */
import { asError, type BinaryFrame, SilentPeerError } from "../net/framed_connection.ts";
import { TcpTransport, type Transport } from "../net/transport.ts";
import { ProtocolError } from "../protocol/errors.ts";
import type { PeerMessage } from "../protocol/messages.ts";
import { acceptPeer, dialPeer, type PeerLink } from "../peer/peer_link.ts";
import { delay } from "../util/time.ts";
import { type ClientContext, ClientError, describeConnectError } from "./context.ts";
import type { ServerSession } from "./server_session.ts";

/** What the links room needs from the client core. */
export interface PeerLinksHost {
  /** A message arrived on a link (replies and pings are answered by the connection). */
  onMessage(link: PeerLink, message: PeerMessage | BinaryFrame): Promise<void>;
  /** A link to `link.user` is up (new, or replacing one). */
  onLinkUp(link: PeerLink): void;
  /** The link to `user` ended and no other replaced it (`reason`: why, for people). */
  onLinkDown(user: string, reason: string): void;
}

export interface PeerLinksOptions {
  /** Address the listener binds. */
  listenHost: string;
  /** Port to listen on; 0 picks a free one. */
  peerPort: number;
  /** A peer silent this long is declared gone. */
  peerTimeoutMs: number;
}

export class PeerLinks {
  readonly #ctx: ClientContext;
  readonly #session: ServerSession;
  readonly #host: PeerLinksHost;
  readonly #opts: PeerLinksOptions;
  #listener: Deno.TcpListener | undefined;
  #acceptLoop: Promise<void> | undefined;
  readonly #links = new Map<string, PeerLink>();
  readonly #dialing = new Map<string, Promise<PeerLink>>();

  constructor(
    ctx: ClientContext,
    session: ServerSession,
    host: PeerLinksHost,
    options: PeerLinksOptions,
  ) {
    this.#ctx = ctx;
    this.#session = session;
    this.#host = host;
    this.#opts = options;
  }

  get peerPort(): number {
    return this.#listener?.addr.port ?? 0;
  }

  /**
   * Starts listening for peers.
   * @throws {ClientError} PORT_IN_USE when the peer port is taken.
   */
  listen(): void {
    try {
      this.#listener = Deno.listen({
        hostname: this.#opts.listenHost,
        port: this.#opts.peerPort,
        transport: "tcp",
      });
    } catch (error) {
      if (error instanceof Deno.errors.AddrInUse) {
        throw new ClientError(
          "PORT_IN_USE",
          `peer port ${this.#opts.peerPort} is already in use (pick another with --port N, ` +
            `or leave it out for any free port)`,
        );
      }
      throw error;
    }
    this.#acceptLoop = this.#accept(this.#listener);
  }

  /** The open link to `user`, if there is one. */
  open(user: string): PeerLink | undefined {
    const link = this.#links.get(user.toLowerCase());
    return link && !link.fc.isClosed ? link : undefined;
  }

  /** The link to `user` as the map holds it (also one that is closing). */
  current(user: string): PeerLink | undefined {
    return this.#links.get(user.toLowerCase());
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    let backoff = 10;
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
        backoff = 10;
      } catch (error) {
        if (this.#ctx.closing || error instanceof Deno.errors.BadResource) return;
        await delay(backoff).catch(() => {});
        backoff = Math.min(backoff * 2, 1000);
        continue;
      }
      this.#ctx.track(this.acceptOn(new TcpTransport(conn)));
    }
  }

  /** Authenticates a peer that reached us over `transport` and adopts the link. */
  async acceptOn(transport: Transport): Promise<void> {
    const session = this.#session.current;
    if (!session || this.#ctx.closing) {
      transport.close();
      return;
    }
    try {
      const link = await acceptPeer(transport, {
        me: session.user,
        identity: session.identity,
        noiseKey: await this.#session.staticKey(),
        resolveKey: (user) => this.#session.resolveKey(user),
      });
      if (this.#session.current !== session || this.#ctx.closing) {
        await link.fc.close();
        return;
      }
      this.#attach(link);
    } catch (error) {
      const e = asError(error);
      if (e instanceof ProtocolError && e.code === "AUTH_FAILED") {
        this.#ctx.emit({
          type: "error",
          code: "AUTH_FAILED",
          message: `refused a peer: ${e.message}`,
        });
      }
    }
  }

  /**
   * Adopts an authenticated link. When both sides dialed at once there are two links; both
   * ends keep the one dialed by the user whose name sorts first, so they agree without talking.
   */
  #attach(link: PeerLink): PeerLink {
    const key = link.user.toLowerCase();
    const existing = this.#links.get(key);
    if (existing && !existing.fc.isClosed) {
      const me = this.#session.require().user.toLowerCase();
      const preferred = me < key ? me : key;
      const newWins = link.initiator.toLowerCase() === existing.initiator.toLowerCase() ||
        link.initiator.toLowerCase() === preferred;
      if (!newWins) {
        void link.fc.close();
        return existing;
      }
      this.#links.delete(key);
      void existing.fc.close();
    }
    this.#links.set(key, link);
    link.fc.startHeartbeat({
      intervalMs: Math.min(1_000, this.#opts.peerTimeoutMs / 3),
      timeoutMs: this.#opts.peerTimeoutMs,
    });
    const address = `${link.fc.remoteAddr.hostname}:${link.fc.remoteAddr.port}`;
    this.#ctx.emit({ type: "link_up", user: link.user, address, outbound: link.outbound });
    link.fc.setHandler((m) => this.#host.onMessage(link, m));
    this.#ctx.track(link.fc.closed.then(async (reason) => {
      if (this.#links.get(key) !== link) return;
      // Both ends dialed at once and the other end dropped this link as the duplicate: our
      // own dial is about to replace it. Only if it does not is the user gone.
      // The other end may close it hard (a write then fails with a broken pipe). Not when the
      // link went silent: that is the peer itself, and a dial to a frozen peer only hangs.
      const replacing = reason instanceof SilentPeerError ? undefined : this.#dialing.get(key);
      if (replacing) await replacing.catch(() => {});
      if (this.#links.get(key) !== link) return;
      this.#links.delete(key);
      const why = reason?.message ?? "closed";
      this.#ctx.emit({ type: "link_down", user: link.user, reason: why });
      if (reason instanceof SilentPeerError) {
        // Frozen or cut off: the server may still think they are online. Let it check.
        this.#session.reportUnreachable(link.user);
      }
      this.#host.onLinkDown(link.user, why);
    }));
    this.#host.onLinkUp(link);
    return link;
  }

  /** An open link to `user`, reusing one that exists or dialing them. */
  async linkTo(user: string, emitProgress: boolean): Promise<PeerLink> {
    const key = user.toLowerCase();
    const existing = this.#links.get(key);
    if (existing && !existing.fc.isClosed) return existing;
    let pending = this.#dialing.get(key);
    if (!pending) {
      pending = this.#dial(user, emitProgress).finally(() => this.#dialing.delete(key));
      this.#dialing.set(key, pending);
    }
    return await pending;
  }

  async #dial(user: string, emitProgress: boolean): Promise<PeerLink> {
    const session = this.#session.require();
    if (emitProgress) this.#ctx.emit({ type: "info", text: `looking ${user} up` });
    // A command looks up afresh; a message on its way may use a lookup of a moment ago.
    const found = emitProgress
      ? await this.#session.lookup(user)
      : await this.#session.lookupForSend(user);
    if (!found.online) {
      throw new ClientError("USER_OFFLINE", `${found.user} is offline`);
    }
    if (found.host === undefined || found.port === undefined) {
      throw new ClientError(
        "NOT_A_CONTACT",
        `${found.user} is online but not reachable for you: add them (contacts add ${found.user})`,
      );
    }
    const where = `${found.host}:${found.port}`;
    if (emitProgress) {
      this.#ctx.emit({ type: "info", text: `connecting to ${found.user} at ${where}` });
    }
    let link: PeerLink;
    try {
      link = await dialPeer({ host: found.host, port: found.port }, {
        me: session.user,
        identity: session.identity,
        noiseKey: await this.#session.staticKey(),
        user: found.user,
        publicKey: found.publicKey,
        signal: this.#ctx.signal,
      });
    } catch (error) {
      if (error instanceof ProtocolError && error.code === "AUTH_FAILED") {
        throw new ClientError("AUTH_FAILED", error.message);
      }
      throw new ClientError(
        "PEER_UNREACHABLE",
        describeConnectError(error, `${found.user} at ${where}`, "again in a moment"),
      );
    }
    if (this.#session.current !== session) {
      await link.fc.close();
      throw new ClientError("NOT_LOGGED_IN", "logged out meanwhile");
    }
    return this.#attach(link);
  }

  /** Says goodbye on every link and closes them (the session ended). */
  closeAll(): void {
    for (const link of this.#links.values()) {
      link.fc.send({ type: "bye" }).catch(() => {});
      void link.fc.close();
    }
    this.#links.clear();
  }

  /** Stops listening, closes every link, waits for dials in progress. */
  async close(): Promise<void> {
    try {
      this.#listener?.close();
    } catch { /* closed */ }
    await this.#acceptLoop;
    await Promise.all([...this.#links.values()].map((l) => l.fc.close()));
  }

  /** Waits for the dials in progress to end (after the control connection closed). */
  async settleDials(): Promise<void> {
    await Promise.allSettled([...this.#dialing.values()]);
  }
}
