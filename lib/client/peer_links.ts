/**
 * The client's peer-links room: one authenticated link per user, and the path it takes.
 *
 * - **Direct**: we dial the address the directory gives, with a short deadline (a NAT drops
 *   the attempt silently; we do not wait seconds for that).
 * - **Relayed**: when the direct dial fails, the server pairs us with the peer and copies the
 *   bytes between two extra connections; the link's Noise session runs inside, end to end.
 * - **Punched**: over a relayed link, the dialing side starts a hole punch (both learn their
 *   public addresses from the server, then open a TCP connection to each other at the same
 *   moment). When it connects, the link moves onto it without a lost or repeated frame and
 *   the relay is released. At most two rounds; then no new attempt for minutes.
 * - **Fallback**: when a relayed or punched link dies while the peer is still online, a new
 *   relayed link replaces it before anyone is told the peer is gone.
 *
 * When both sides dial at once, both ends keep the same one of the two links. Messages that
 * arrive on a link are handed to the core, which routes them by type to their room.
 */
import {
  asError,
  type BinaryFrame,
  dial,
  type OutgoingMessage,
  SilentPeerError,
} from "../net/framed_connection.ts";
import { TcpTransport, type Transport } from "../net/transport.ts";
import { ProtocolError, RemoteError } from "../protocol/errors.ts";
import type { LookupResultMessage, PeerMessage, ServerMessage } from "../protocol/messages.ts";
import {
  acceptPeer,
  connectPeer,
  MisdirectedPeerError,
  pathOf,
  type PeerLink,
} from "../peer/peer_link.ts";
import { randomToken } from "../peer/identity.ts";
import { delay } from "../util/time.ts";
import { type ClientContext, ClientError, describeConnectError } from "./context.ts";
import { NotAContactError, type ServerSession, type Session } from "./server_session.ts";
import {
  joinRelay,
  type Observation,
  observeNat,
  provePunched,
  simultaneousOpen,
} from "./link_paths.ts";

/** What the links room needs from the client core. */
export interface PeerLinksHost {
  /** A message arrived on a link (replies and pings are answered by the connection). */
  onMessage(link: PeerLink, message: PeerMessage | BinaryFrame): Promise<void>;
  /** A link to `link.user` is up (new, or replacing one). */
  onLinkUp(link: PeerLink): void;
  /** The link to `user` ended and no other replaced it (`reason`: why, for people). */
  onLinkDown(user: string, reason: string): void;
  /** Whether `user` is a member of a group of mine (links come from contacts and them only). */
  sharesGroup?(user: string): boolean;
  /**
   * Where `user` said it can be reached, when someone other than the directory told us (a
   * fellow group member who is not a contact: the directory gives no address then).
   */
  endpointOf?(user: string): { host: string; port: number } | undefined;
}

export interface PeerLinksOptions {
  /** Address the listener binds. */
  listenHost: string;
  /** Port to listen on; 0 picks a free one. */
  peerPort: number;
  /** A peer silent this long is declared gone. */
  peerTimeoutMs: number;
  /** Try hole punching over relayed links (default true). */
  punch?: boolean;
  /** Connections to the peer port held at once, handshaking or linked (default 256). */
  maxConnections?: number;
  /** Of those, from one address (default 32). */
  maxPerAddress?: number;
}

/** Default caps on the peer port: a group is at most 32 members, so this leaves room. */
export const MAX_PEER_CONNECTIONS = 256;
export const MAX_PEER_CONNECTIONS_PER_ADDRESS = 32;

/** The punching messages, routed here by the core. */
export type PunchMessage = Extract<
  PeerMessage,
  { type: "punch_offer" | "punch_answer" | "punch_sync" }
>;

/** A direct dial that has not connected by then is taken as blocked (a NAT drops it). */
export const DIRECT_DIAL_MS = 750;
/** After two failed punch rounds with someone, no new attempt with them for this long. */
const PUNCH_BACKOFF_MS = 5 * 60_000;
/** A NAT found symmetric is not asked again for this long (it will not have changed). */
const SYMMETRIC_RECHECK_MS = 10 * 60_000;
/** How long a punching step waits for the other side's message. */
const PUNCH_STEP_MS = 15_000;
/** How long a lost relayed or punched link is retried through the relay before giving up. */
const FALLBACK_WINDOW_MS = 20_000;
/**
 * Just after the server came back, others are still re-attaching (their backoff is at most
 * 2 s): "offline" then may only mean "not back yet".
 */
const SERVER_SETTLE_MS = 5_000;

type PunchOutcome = "moved" | "failed" | "impossible";

export class PeerLinks {
  readonly #ctx: ClientContext;
  readonly #session: ServerSession;
  readonly #host: PeerLinksHost;
  readonly #opts: Required<PeerLinksOptions>;
  #listener: Deno.TcpListener | undefined;
  #acceptLoop: Promise<void> | undefined;
  /** Connections accepted on the peer port and still open, per remote address. */
  readonly #inbound = new Map<string, number>();
  #inboundTotal = 0;
  readonly #links = new Map<string, PeerLink>();
  readonly #dialing = new Map<string, Promise<PeerLink>>();
  /** Links the other side ended with `bye` (logged out): they are not fallen back on. */
  readonly #byes = new WeakSet<PeerLink>();
  /** Lost links whose fallback (a new relayed link) is under way. */
  readonly #fallingBack = new WeakSet<PeerLink>();
  /** Links that moved onto a punched connection. */
  readonly #punched = new WeakSet<PeerLink>();
  /** Per user: no punch attempt before this time. */
  readonly #punchBackoff = new Map<string, number>();
  /** Users a punch is in progress with (either side started it). */
  readonly #punching = new Set<string>();
  /** Our NAT was found symmetric until this time: no punching. */
  #symmetricUntil = 0;
  readonly #punchWaiters = new Map<string, (message: PunchMessage) => void>();

  constructor(
    ctx: ClientContext,
    session: ServerSession,
    host: PeerLinksHost,
    options: PeerLinksOptions,
  ) {
    this.#ctx = ctx;
    this.#session = session;
    this.#host = host;
    this.#opts = {
      punch: true,
      maxConnections: MAX_PEER_CONNECTIONS,
      maxPerAddress: MAX_PEER_CONNECTIONS_PER_ADDRESS,
      ...options,
    };
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

  /**
   * The link that replaces a lost one to `user`: one already up, or the one the fallback or
   * dial under way brings. Undefined when none is coming (they are gone).
   */
  async replacement(user: string): Promise<PeerLink | undefined> {
    const open = this.open(user);
    if (open) return open;
    return await this.#dialing.get(user.toLowerCase())?.catch(() => undefined);
  }

  // ---- accepting -----------------------------------------------------------------------------

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
      // Caps, as the server has: a stranger opening connections by the thousand (each held
      // for the handshake's deadline) must not use up this process's file descriptors.
      const host = conn.remoteAddr.hostname;
      const fromHost = this.#inbound.get(host) ?? 0;
      if (
        this.#inboundTotal >= this.#opts.maxConnections || fromHost >= this.#opts.maxPerAddress
      ) {
        try {
          conn.close();
        } catch { /* already closed */ }
        continue;
      }
      this.#inbound.set(host, fromHost + 1);
      this.#inboundTotal++;
      this.#ctx.track(this.#serveInbound(conn, host));
    }
  }

  /** One accepted connection, counted until it closes. */
  async #serveInbound(conn: Deno.TcpConn, host: string): Promise<void> {
    try {
      const link = await this.acceptOn(new TcpTransport(conn));
      if (link) await link.fc.closed;
    } finally {
      this.#inboundTotal--;
      const left = (this.#inbound.get(host) ?? 1) - 1;
      if (left > 0) this.#inbound.set(host, left);
      else this.#inbound.delete(host);
    }
  }

  /**
   * Authenticates a peer that reached us over `transport` and adopts the link.
   * @returns the link, or undefined when the peer was refused.
   */
  async acceptOn(transport: Transport): Promise<PeerLink | undefined> {
    const session = this.#session.current;
    if (!session || this.#ctx.closing) {
      transport.close();
      return undefined;
    }
    try {
      const link = await acceptPeer(transport, {
        me: session.user,
        identity: session.identity,
        noiseKey: await this.#session.staticKey(),
        resolveKey: (user) =>
          this.#session.resolveKey(user, {
            contactOnly: true,
            alsoAllow: (name) => this.#host.sharesGroup?.(name) ?? false,
          }),
      });
      if (this.#session.current !== session || this.#ctx.closing) {
        await link.fc.close();
        return undefined;
      }
      this.#attach(link);
      return link;
    } catch (error) {
      const e = asError(error);
      // (A dialer that wanted whoever was here before is told so; no news for this user.)
      if (
        e instanceof ProtocolError && e.code === "AUTH_FAILED" &&
        !(e instanceof MisdirectedPeerError)
      ) {
        this.#ctx.emit({
          type: "error",
          code: "AUTH_FAILED",
          message: `refused a peer: ${e.message}`,
        });
      }
      if (e instanceof NotAContactError) {
        this.#ctx.emit({
          type: "error",
          code: "NOT_A_CONTACT",
          message: `refused a link from ${e.user}: not a mutual contact ` +
            `(contacts add ${e.user} accepts a request from them)`,
        });
      }
      return undefined;
    }
  }

  /** `from` could not reach us directly: join the relay pairing the server offers. */
  acceptRelay(offer: Extract<ServerMessage, { type: "relay_offer" }>): void {
    if (!this.#session.current || this.#ctx.closing) return;
    this.#ctx.track((async () => {
      let transport: Transport;
      try {
        const access = await this.#session.access();
        // Paired by another instance of the cluster: the leg joins there (the same service
        // key is expected of it).
        if (offer.host !== undefined && offer.port !== undefined) {
          access.host = offer.host;
          access.port = offer.port;
        }
        transport = await joinRelay(access, offer.token);
      } catch {
        return; // the side that asked reports what went wrong
      }
      await this.acceptOn(transport);
    })());
  }

  // ---- adopting and losing links -------------------------------------------------------------

  /**
   * Adopts an authenticated link. When both sides dialed at once there are two links; both
   * ends keep the one dialed by the user whose name sorts first, so they agree without talking.
   * @param replacing why an earlier link to the same user is being replaced (a fallback).
   */
  #attach(link: PeerLink, replacing?: string): PeerLink {
    const key = link.user.toLowerCase();
    const existing = this.#links.get(key);
    const path = pathOf(link);
    // A lost link replaced on another path is a move: its fallback is under way here, or its
    // dialer dialed again. Not so a duplicate dropped because both dialed at once (open here
    // and closed below, or closed by the other end already): the link kept may take another
    // path than the one dropped, and no path was lost.
    const lost = existing !== undefined && (
      this.#fallingBack.has(existing) ||
      existing.initiator.toLowerCase() === link.initiator.toLowerCase()
    );
    const moved = replacing ??
      (lost && pathOf(existing) !== path ? `the ${pathOf(existing)} path was lost` : undefined);
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
    if (moved !== undefined) {
      this.#ctx.emit({ type: "link_path", user: link.user, path, address, reason: moved });
    } else {
      this.#ctx.emit({
        type: "link_up",
        user: link.user,
        address,
        outbound: link.outbound,
        path,
      });
    }
    link.fc.setHandler((m) => this.#host.onMessage(link, m));
    this.#ctx.track(link.fc.closed.then((reason) => this.#onClosed(link, reason)));
    this.#host.onLinkUp(link);
    if (link.outbound && path === "relayed") this.#ctx.track(this.#upgrade(link));
    return link;
  }

  async #onClosed(link: PeerLink, reason: Error | undefined): Promise<void> {
    const key = link.user.toLowerCase();
    if (this.#links.get(key) !== link) return;
    // Both ends dialed at once and the other end dropped this link as the duplicate: our
    // own dial is about to replace it. Only if it does not is the user gone.
    // The other end may close it hard (a write then fails with a broken pipe). Not when the
    // link went silent: that is the peer itself, and a dial to a frozen peer only hangs.
    const replacing = reason instanceof SilentPeerError ? undefined : this.#dialing.get(key);
    if (replacing) await replacing.catch(() => {});
    if (this.#links.get(key) !== link) return;
    if (this.#mayFallBack(link)) {
      this.#fallingBack.add(link);
      await this.#fallBack(link, reason).catch(() => {});
      if (this.#links.get(key) !== link) return;
    }
    this.#links.delete(key);
    const why = reason?.message ?? "closed";
    this.#ctx.emit({ type: "link_down", user: link.user, reason: why });
    if (reason instanceof SilentPeerError) {
      // Frozen or cut off: the server may still think they are online. Let it check.
      this.#session.reportUnreachable(link.user);
    }
    this.#host.onLinkDown(link.user, why);
  }

  /** Ends the link to `user` for good (we are no longer contacts): no fallback, no redial. */
  async end(user: string): Promise<void> {
    const link = this.#links.get(user.toLowerCase());
    if (!link) return;
    this.#byes.add(link);
    await link.fc.send({ type: "bye" }).catch(() => {});
    await link.fc.close();
  }

  /** The other side said goodbye (logged out): its link ends for good. */
  async onBye(link: PeerLink): Promise<void> {
    this.#byes.add(link);
    await link.fc.close();
  }

  /** A relayed or punched link lost while both sides may still be online gets a new path. */
  #mayFallBack(link: PeerLink): boolean {
    return !this.#byes.has(link) && this.#session.current !== undefined &&
      !this.#ctx.closing &&
      (link.fc.transport.path === "relayed" || this.#punched.has(link));
  }

  /**
   * Replaces a lost relayed or punched link with a new relayed one, unless the peer is gone
   * (the server says offline). While the server itself is away (restarting), keeps trying for
   * a while. Senders meanwhile wait for this as for any dial.
   */
  async #fallBack(lost: PeerLink, reason: Error | undefined): Promise<void> {
    const key = lost.user.toLowerCase();
    if (this.#dialing.has(key)) return;
    const session = this.#session.require();
    const path = this.#punched.has(lost) ? "direct" : lost.fc.transport.path;
    const why = `the ${path} path to ${lost.user} was lost (${reason?.message ?? "closed"})`;
    // A silent peer may be frozen rather than cut off: let the server check at once, so a
    // frozen peer is found offline instead of being waited for.
    if (reason instanceof SilentPeerError) this.#session.reportUnreachable(lost.user);
    const attempt = (async (): Promise<PeerLink> => {
      const until = Date.now() + FALLBACK_WINDOW_MS;
      for (let round = 0; Date.now() < until; round++) {
        if (this.#session.current !== session || this.#ctx.closing) break;
        try {
          const found = await this.#session.lookup(lost.user);
          if (!found.online) throw new ClientError("USER_OFFLINE", `${found.user} is offline`);
          const transport = await this.#relayTo(found.user, why, false);
          return await this.#handshake(session, transport, found, why);
        } catch (error) {
          // Only the server's absence (a restart, and the moments after it while the others
          // re-attach) is worth waiting out; anything else is final.
          if (!this.#session.unsettled(SERVER_SETTLE_MS)) throw error;
          await delay(Math.min(2_000, 250 * 2 ** round), this.#ctx.signal);
        }
      }
      throw new ClientError("PEER_UNREACHABLE", why);
    })();
    const pending = attempt.finally(() => {
      if (this.#dialing.get(key) === pending) this.#dialing.delete(key);
    });
    this.#dialing.set(key, pending);
    await pending;
  }

  // ---- dialing -------------------------------------------------------------------------------

  /** An open link to `user`, reusing one that exists or dialing them. */
  async linkTo(user: string, emitProgress: boolean): Promise<PeerLink> {
    const key = user.toLowerCase();
    const existing = this.#links.get(key);
    if (existing && !existing.fc.isClosed) return existing;
    let pending = this.#dialing.get(key);
    if (!pending) {
      const started = this.#dial(user, emitProgress).finally(() => {
        if (this.#dialing.get(key) === started) this.#dialing.delete(key);
      });
      pending = started;
      this.#dialing.set(key, pending);
    }
    return await pending;
  }

  async #dial(user: string, emitProgress: boolean): Promise<PeerLink> {
    const session = this.#session.require();
    if (emitProgress) this.#ctx.emit({ type: "info", text: `looking ${user} up` });
    // A command looks up afresh; a message on its way may use a lookup of a moment ago.
    let found: LookupResultMessage;
    try {
      found = emitProgress
        ? await this.#session.lookup(user)
        : await this.#session.lookupForSend(user);
    } catch (error) {
      // The server is away: a fellow group member who told us where it is, and whose key we
      // pinned, can still be dialed (the identity proof checks the pinned key).
      const told = this.#host.endpointOf?.(user);
      const pinned = session.store.knownKey(user);
      if (
        !(error instanceof ClientError && error.code === "SERVER_UNREACHABLE") || !told || !pinned
      ) {
        throw error;
      }
      found = {
        type: "lookup_result",
        id: 0,
        user,
        online: true,
        ...told,
        publicKey: pinned,
        contact: false,
      };
    }
    // To a non-contact the directory says "offline" whatever the truth: a fellow group member
    // who told us where it is gets dialed all the same.
    if (!found.online && (found.contact || !this.#host.endpointOf?.(found.user))) {
      throw new ClientError("USER_OFFLINE", `${found.user} is offline`);
    }
    // No address for a non-contact; a fellow group member may have told us theirs.
    const endpoint = found.host !== undefined && found.port !== undefined
      ? { host: found.host, port: found.port }
      : this.#host.endpointOf?.(found.user);
    if (endpoint === undefined) {
      throw new ClientError(
        "NOT_A_CONTACT",
        `${found.user} is online but not reachable for you: add them (contacts add ${found.user})`,
      );
    }
    const where = `${endpoint.host}:${endpoint.port}`;
    if (emitProgress) {
      this.#ctx.emit({ type: "info", text: `connecting to ${found.user} at ${where}` });
    }
    let transport: Transport;
    try {
      const conn = await dial(
        endpoint.host,
        endpoint.port,
        AbortSignal.any([this.#ctx.signal, AbortSignal.timeout(DIRECT_DIAL_MS)]),
      );
      transport = new TcpTransport(conn);
    } catch (error) {
      if (this.#ctx.signal.aborted) throw error;
      const why = describeConnectError(error, `${found.user} at ${where}`, "again in a moment");
      transport = await this.#relayTo(found.user, why, emitProgress);
    }
    return await this.#handshake(session, transport, found);
  }

  /** Runs the dialing side's handshake over `transport` and adopts the link. */
  async #handshake(
    session: Session,
    transport: Transport,
    found: LookupResultMessage,
    replacing?: string,
  ): Promise<PeerLink> {
    let link: PeerLink;
    try {
      link = await connectPeer(transport, {
        me: session.user,
        identity: session.identity,
        noiseKey: await this.#session.staticKey(),
        user: found.user,
        publicKey: found.publicKey,
      });
    } catch (error) {
      if (error instanceof ProtocolError && error.code === "AUTH_FAILED") {
        throw new ClientError("AUTH_FAILED", error.message);
      }
      if (error instanceof ProtocolError && error.code === "NOT_A_CONTACT") {
        throw new ClientError("NOT_A_CONTACT", error.message);
      }
      const where = transport.path === "relayed"
        ? `${found.user} through the server's relay`
        : `${found.user} at ${transport.remoteAddr.hostname}:${transport.remoteAddr.port}`;
      throw new ClientError(
        "PEER_UNREACHABLE",
        describeConnectError(error, where, "again in a moment"),
      );
    }
    if (this.#session.current !== session) {
      await link.fc.close();
      throw new ClientError("NOT_LOGGED_IN", "logged out meanwhile");
    }
    return this.#attach(link, replacing);
  }

  /**
   * Asks the server to relay a link to `user` and joins it.
   * @param why why the direct path does not do (said to the user if the relay fails too).
   * @throws {ClientError} USER_OFFLINE, or PEER_UNREACHABLE saying why neither path works.
   */
  async #relayTo(user: string, why: string, emitProgress: boolean): Promise<Transport> {
    if (emitProgress) {
      this.#ctx.emit({ type: "info", text: `${why}; asking the server to relay` });
    }
    let token: string;
    try {
      token = (await this.#session.request<Extract<ServerMessage, { type: "relay_token" }>>({
        type: "relay_open",
        user,
      })).token;
    } catch (error) {
      const e = asError(error);
      if (e instanceof ClientError && e.code === "USER_OFFLINE") throw e;
      if (e instanceof ClientError && e.code === "SERVER_UNREACHABLE") {
        throw new ClientError("PEER_UNREACHABLE", `${why}, and the server is unreachable`);
      }
      throw new ClientError("PEER_UNREACHABLE", `${why}; no relay either: ${e.message}`);
    }
    try {
      return await joinRelay(await this.#session.access(), token);
    } catch (error) {
      if (error instanceof RemoteError && error.code === "USER_OFFLINE") {
        throw new ClientError("USER_OFFLINE", `${user} is offline`);
      }
      throw new ClientError(
        "PEER_UNREACHABLE",
        `${why}; the relay did not connect: ${asError(error).message}`,
      );
    }
  }

  // ---- hole punching -------------------------------------------------------------------------

  /** Whether a punch with `user` may start now (none running, not backing off, NAT fine). */
  #mayPunch(user: string): string | undefined {
    const key = user.toLowerCase();
    if (!this.#opts.punch) return "hole punching is off here";
    if (Date.now() < this.#symmetricUntil) return "this side's NAT is symmetric";
    if (this.#punching.has(key)) return "a punch is already running";
    const until = this.#punchBackoff.get(key) ?? 0;
    if (Date.now() < until) return "tried recently";
    return undefined;
  }

  /** Asks the server where we come from; remembers a symmetric NAT for a while. */
  async #observe(): Promise<Observation> {
    const observation = await observeNat(await this.#session.access());
    if (observation.nat === "symmetric") {
      this.#symmetricUntil = Date.now() + SYMMETRIC_RECHECK_MS;
    }
    return observation;
  }

  /** Waits for the other side's next punching message of `type` for `round`. */
  #expect<T extends PunchMessage["type"]>(
    link: PeerLink,
    type: T,
    round: number,
  ): Promise<Extract<PunchMessage, { type: T }>> {
    const key = `${link.user.toLowerCase()}\n${type}\n${round}`;
    const got = Promise.withResolvers<Extract<PunchMessage, { type: T }>>();
    this.#punchWaiters.set(key, got.resolve as (m: PunchMessage) => void);
    const stop = new AbortController();
    const late = delay(PUNCH_STEP_MS, AbortSignal.any([stop.signal, this.#ctx.signal]))
      .then(() => {
        throw new Error(`no ${type} from ${link.user} in time`);
      });
    const closed = link.fc.closed.then(() => {
      throw new Error(`the link to ${link.user} closed`);
    });
    return Promise.race([got.promise, late, closed]).finally(() => {
      stop.abort();
      late.catch(() => {});
      closed.catch(() => {});
      if (this.#punchWaiters.get(key) === got.resolve) this.#punchWaiters.delete(key);
    });
  }

  /** A punching message from the other side of `link`. */
  onPunchMessage(link: PeerLink, m: PunchMessage): void {
    if (m.type === "punch_offer") {
      this.#ctx.track(this.#answerPunch(link, m));
      return;
    }
    this.#punchWaiters.get(`${link.user.toLowerCase()}\n${m.type}\n${m.round}`)?.(m);
  }

  #send(link: PeerLink, message: OutgoingMessage): Promise<void> {
    return link.fc.send(message).catch(() => {});
  }

  /**
   * The dialing side of a relayed link tries to move it to a direct path: at most two rounds,
   * then it backs off for minutes. A symmetric NAT on either side ends it at once.
   */
  async #upgrade(link: PeerLink): Promise<void> {
    const key = link.user.toLowerCase();
    if (this.#mayPunch(link.user) !== undefined) return;
    this.#punching.add(key);
    try {
      for (const round of [1, 2] as const) {
        if (link.fc.isClosed || this.#links.get(key) !== link || this.#ctx.closing) return;
        let outcome: PunchOutcome;
        try {
          outcome = await this.#punchAsDialer(link, round);
        } catch {
          outcome = "failed";
        }
        if (outcome === "moved") return;
        if (outcome === "impossible") break;
        if (round === 1) await delay(1_000, this.#ctx.signal).catch(() => {});
      }
      this.#punchBackoff.set(key, Date.now() + PUNCH_BACKOFF_MS);
    } finally {
      this.#punching.delete(key);
    }
  }

  async #punchAsDialer(link: PeerLink, round: 1 | 2): Promise<PunchOutcome> {
    const mine = await this.#observe();
    if (mine.nat === "symmetric") {
      this.#ctx.emit({
        type: "info",
        text: `your NAT gives each destination another port, so a direct path to ${link.user} ` +
          `cannot be punched; the link stays relayed through the server`,
      });
      return "impossible";
    }
    const nonce = randomToken();
    const answered = this.#expect(link, "punch_answer", round);
    await this.#send(link, {
      type: "punch_offer",
      round,
      nonce,
      host: mine.host,
      port: mine.port,
      nat: mine.nat,
    });
    const answer = await answered;
    if (!answer.nonce || !answer.host || !answer.port) {
      return answer.nat === "symmetric" ? "impossible" : "failed";
    }
    // DCUtR: half a round trip after our sync, the sync reaches them and both dial at once.
    const started = performance.now();
    await link.fc.request({ type: "ping" }, { timeoutMs: PUNCH_STEP_MS });
    const rtt = performance.now() - started;
    await this.#send(link, { type: "punch_sync", round });
    await delay(rtt / 2, this.#ctx.signal);
    return await this.#punchAndMove(link, mine, {
      host: answer.host,
      port: answer.port,
      mine: nonce,
      theirs: answer.nonce,
    });
  }

  /** The other side of a relayed link asks to punch: answer, then dial at its sync. */
  async #answerPunch(link: PeerLink, offer: Extract<PunchMessage, { type: "punch_offer" }>) {
    const key = link.user.toLowerCase();
    const refusal = offer.nat === "symmetric" ? "your NAT is symmetric" : this.#mayPunch(link.user);
    if (refusal !== undefined) {
      await this.#send(link, {
        type: "punch_answer",
        round: offer.round,
        reason: refusal,
        ...(Date.now() < this.#symmetricUntil ? { nat: "symmetric" } : {}),
      });
      return;
    }
    this.#punching.add(key);
    try {
      let mine: Observation;
      try {
        mine = await this.#observe();
      } catch (error) {
        await this.#send(link, {
          type: "punch_answer",
          round: offer.round,
          reason: `cannot ask the server: ${asError(error).message}`.slice(0, 200),
        });
        return;
      }
      if (mine.nat === "symmetric") {
        await this.#send(link, { type: "punch_answer", round: offer.round, nat: "symmetric" });
        return;
      }
      const nonce = randomToken();
      const synced = this.#expect(link, "punch_sync", offer.round);
      await this.#send(link, {
        type: "punch_answer",
        round: offer.round,
        nonce,
        host: mine.host,
        port: mine.port,
        nat: mine.nat,
      });
      await synced;
      await this.#punchAndMove(link, mine, {
        host: offer.host,
        port: offer.port,
        mine: nonce,
        theirs: offer.nonce,
      }).catch(() => {});
    } catch {
      // The other side gave up or the link closed: it decides whether to try again.
    } finally {
      this.#punching.delete(key);
    }
  }

  /** Opens the punched connection, proves it, and moves the link onto it. */
  async #punchAndMove(
    link: PeerLink,
    mine: Observation,
    other: { host: string; port: number; mine: string; theirs: string },
  ): Promise<PunchOutcome> {
    const started = performance.now();
    const transport = await simultaneousOpen(mine.localPort, other, { signal: this.#ctx.signal });
    try {
      await provePunched(transport, { mine: other.mine, theirs: other.theirs });
    } catch (error) {
      transport.close();
      throw error;
    }
    if (link.fc.isClosed) {
      transport.close();
      return "failed";
    }
    await link.fc.migrate(transport);
    this.#punched.add(link);
    this.#ctx.emit({
      type: "link_path",
      user: link.user,
      path: "direct",
      address: `${transport.remoteAddr.hostname}:${transport.remoteAddr.port}`,
      reason: `hole punched in ${
        Math.round(performance.now() - started)
      } ms; the relay is released`,
    });
    return "moved";
  }

  // ---- closing -------------------------------------------------------------------------------

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
