/**
 * Opens the client's control connection: TCP, `hello`, then the Noise XX handshake (or, coming
 * back with a resumption ticket, NNpsk0), and the check of the server's static key against the
 * key pinned for that address.
 */
import { type KeyPair } from "../crypto/noise.ts";
import { keyFingerprint } from "../crypto/fingerprint.ts";
import { dial, FramedConnection } from "../net/framed_connection.ts";
import { openSecureChannel, type ResumptionOffer } from "../net/secure_channel.ts";
import { ProtocolError, TimeoutError } from "../protocol/errors.ts";
import type { Transport } from "../net/transport.ts";
import { type ServerMessage, ServerToClient, type WelcomeMessage } from "../protocol/messages.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";
import type { KnownServers } from "./known_servers.ts";

/** Server messages that answer one of our requests (matched by `id`). */
export const SERVER_REPLY_TYPES = [
  "ok",
  "welcome",
  "lookup_result",
  "contact_list",
  "contact_result",
  "mail_stored",
  "hanging_list",
  "mail_batch",
  "error",
  "pong",
  "relay_token",
  "relay_start",
  "observed",
] as const;

/**
 * Liveness of the control connection: a ping after 30 s without sending anything (as Signal
 * does: at 15,000 clients, pings every 5 s took a third of the server's time), and 75 s of
 * silence ends it. The server drops a client it has not heard from for 75 s; a client that
 * someone cannot reach is checked at once (`report_unreachable`).
 */
export const CONTROL_HEARTBEAT = { intervalMs: 30_000, timeoutMs: 75_000 } as const;

/**
 * Waits between attempts to reach a server that went away: exponential backoff with full
 * jitter. The first attempt comes at a random moment within {@link RECONNECT_BACKOFF}.firstMs
 * of a lost connection (it may have been the link, not the server), or within `closingMs` of a
 * `server_closing` (the server is going down: it will not be back before it has closed and
 * started again, and its clients should not all knock at once when it is). After each failed
 * attempt the window doubles from `baseMs` up to `maxMs`, and the wait is anywhere in it.
 *
 * Why not a fixed short wait: with 10,000 clients, every 250-500 ms for 10 s was 27,000 refused
 * connections a second while the server was away. Each costs a client ≈ 0.1 ms of CPU, so a
 * machine holding thousands of clients (the bench's load generators, a NAT gateway's worth of
 * devices) saturated, its own connects and handshakes timed out, and after a 15 s shutdown only
 * 1,565 of 10,000 were back 60 s later. Full jitter spreads the herd wider with each failure,
 * and a client still tries again within `maxMs` of the server's return.
 */
export const RECONNECT_BACKOFF = {
  firstMs: 250,
  closingMs: 1_000,
  baseMs: 500,
  maxMs: 4_000,
} as const;

/**
 * The waits, in ms, before each attempt to re-attach (see {@link RECONNECT_BACKOFF}).
 * @param afterClosing whether the server announced it was closing (`server_closing`).
 * @param random a source of numbers in [0, 1) (tests pass their own).
 */
export function* reconnectWaits(
  afterClosing = false,
  random: () => number = Math.random,
): Generator<number, never> {
  const { firstMs, closingMs, baseMs, maxMs } = RECONNECT_BACKOFF;
  yield random() * (afterClosing ? closingMs : firstMs);
  let window: number = baseMs;
  for (;;) {
    yield random() * window;
    window = Math.min(window * 2, maxMs);
  }
}

/**
 * How long a client waits for the answer to its `resume`: longer than a request's 10 s. The
 * server finished the handshake, so it is there; in a herd the resume waits its turn behind
 * thousands of others. Given up after 10 s, it was often served anyway, after its client had
 * made a new connection and handshake whose resume then ended the first session (on a loaded
 * machine, 1,087 of 10,000 clients resumed twice after a restart), all of it work thrown away
 * by a server that was short of nothing but time.
 */
export const RESUME_REPLY_TIMEOUT_MS = 30_000;

/**
 * Re-attaches a logged-in session on a fresh control connection, as a client does after the
 * server came back: `resume` with the session token (no password), then heartbeats. Set the
 * connection's handler first: the server's pushes follow the welcome. The welcome carries a
 * new token: keep it for the next resume (the one used here dies once that one is used).
 * @throws {RemoteError} BAD_TOKEN when the session has expired.
 */
export async function resumeSession(
  fc: FramedConnection<ServerMessage>,
  token: string,
  peerPort: number,
): Promise<WelcomeMessage> {
  const welcome = await fc.request<WelcomeMessage>(
    { type: "resume", token, peerPort },
    { timeoutMs: RESUME_REPLY_TIMEOUT_MS },
  );
  fc.startHeartbeat(CONTROL_HEARTBEAT);
  return welcome;
}

/**
 * The resumption to come back with next time (kept in memory only): the one the welcome offers,
 * or, when it offers none after a resumption, the one used (the server keeps a ticket in use
 * until it is half its life).
 * @param serverKey the key (base64url) of the server that sent it, as the handshake showed it.
 * @param used the resumption this connection was opened with, if it was.
 */
export function resumptionFrom(
  welcome: WelcomeMessage,
  serverKey: string,
  used?: ResumptionOffer,
): ResumptionOffer | undefined {
  if (!welcome.resumption) return used;
  return {
    ticket: welcome.resumption.ticket,
    psk: fromBase64Url(welcome.resumption.psk),
    serverKey: fromBase64Url(serverKey),
  };
}

/** The server presented a key other than the pinned one. */
export class ServerKeyChangedError extends Error {
  override name = "ServerKeyChangedError";
}

export interface ServerLinkOptions {
  host: string;
  port: number;
  /** This client's static key for the handshake (the user is authenticated inside). */
  staticKeyPair: KeyPair;
  /** Pinned server keys; without it (load generators), the key is not checked. */
  knownServers?: KnownServers;
  /**
   * The fingerprint (as `parseFingerprint` gives it) of a new key the user checked and
   * accepts: a key with exactly this fingerprint replaces the pin; any other key is refused.
   */
  acceptKey?: string;
  /**
   * The server key this connection must present (base64url): a second connection to a server
   * already checked (a relay leg, a NAT probe) is held to the key of the first.
   */
  expectKey?: string;
  /**
   * Opens the byte stream (default: a TCP connection to host:port); `signal` aborts it when the
   * caller's signal does or `timeoutMs` has passed.
   */
  connect?: (signal: AbortSignal) => Promise<Transport>;
  /** Message types after which the reader stops (see FramedConnection). */
  stopReadingAfter?: readonly string[];
  /** The name the key is pinned under (default `host:port`): what the user typed. */
  pinAs?: string;
  /**
   * The key another address of the same service is pinned with: an address met for the first
   * time must present it (all instances of a deployment share one key).
   */
  serviceKey?: { key: string; pinnedAs: string };
  signal?: AbortSignal;
  /** How long the connect may take, and then each step of the handshake (default 10 s). */
  timeoutMs?: number;
  /**
   * Come back with this ticket (a resumption handshake, NNpsk0) rather than a full handshake.
   * A server that cannot open it says so, and the link is opened again with a full handshake.
   */
  resumption?: ResumptionOffer;
}

export interface ServerLink {
  fc: FramedConnection<ServerMessage>;
  /** The server's static key, base64url. */
  serverKey: string;
  fingerprint: string;
  /** "new": pinned now (first contact, or accepted change); "known": matched the pin. */
  pin: "new" | "known" | "unchecked";
  /** Whether the handshake was a resumption with the ticket offered. */
  resumed: boolean;
}

/**
 * Connects, secures and checks the server's key against the pin, before anything is sent.
 * @throws {ServerKeyChangedError} when the key differs from the pinned one (and is not the one
 * accepted), or differs from the one accepted.
 */
export async function openServerLink(options: ServerLinkOptions): Promise<ServerLink> {
  if (!options.resumption) return await openLink(options);
  try {
    return await openLink(options);
  } catch (error) {
    if (!(error instanceof ProtocolError && error.code === "BAD_TICKET")) throw error;
    // Expired, or the service has a new key: a full handshake, at once.
    return await openLink({ ...options, resumption: undefined });
  }
}

async function openLink(options: ServerLinkOptions): Promise<ServerLink> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  // The connect has a deadline too: a SYN that is dropped (an accept queue that is full, an
  // address not routed from here) is otherwise retried by the kernel for about two minutes,
  // and a relay leg or NAT probe held that long holds whatever waits for it (a dial to a peer).
  const deadline = AbortSignal.timeout(timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
  let conn: Transport | Deno.TcpConn;
  try {
    conn = options.connect
      ? await options.connect(signal)
      : await dial(options.host, options.port, signal);
  } catch (error) {
    if (!deadline.aborted || options.signal?.aborted) throw error;
    throw new TimeoutError(
      `no connection to ${options.host}:${options.port} within ${timeoutMs / 1000}s`,
    );
  }
  const fc = new FramedConnection<ServerMessage>(conn, {
    schema: ServerToClient,
    replyTypes: SERVER_REPLY_TYPES,
    stopReadingAfter: options.stopReadingAfter,
  });
  try {
    const session = await openSecureChannel(fc, {
      role: "client",
      expectRole: "server",
      initiator: true,
      staticKeyPair: options.staticKeyPair,
      timeoutMs,
      resumption: options.resumption,
    });
    const resumed = session.ticket !== undefined;
    const serverKey = toBase64Url(session.remoteStaticKey!);
    const fingerprint = await keyFingerprint(session.remoteStaticKey! as Uint8Array<ArrayBuffer>);
    const address = `${options.host}:${options.port}`;
    if (options.expectKey !== undefined) {
      if (serverKey !== options.expectKey) {
        throw new ServerKeyChangedError(
          `the server at ${address} presented a different key (fingerprint ${fingerprint}) ` +
            `than on the control connection; not using it`,
        );
      }
      return { fc, serverKey, fingerprint, pin: "known", resumed };
    }
    if (!options.knownServers) return { fc, serverKey, fingerprint, pin: "unchecked", resumed };
    const pinName = options.pinAs ?? address;
    const pinned = await options.knownServers.get(pinName);
    const service = options.serviceKey;
    if (!pinned && service && service.key !== serverKey && options.acceptKey === undefined) {
      throw new ServerKeyChangedError(
        `WARNING: the server at ${pinName} presented a key (fingerprint ${fingerprint}) other ` +
          `than the one pinned for ${service.pinnedAs}, an address of the same service. ` +
          `Someone may be intercepting the connection; every instance of a deployment should ` +
          `present the same key file. Compare the fingerprint its start-up banner prints`,
      );
    }
    if (pinned?.key === serverKey) return { fc, serverKey, fingerprint, pin: "known", resumed };
    if (options.acceptKey !== undefined && options.acceptKey !== fingerprint) {
      throw new ServerKeyChangedError(
        `WARNING: the server at ${pinName} presented the key fingerprint ${fingerprint}, not ` +
          `${options.acceptKey} given with --accept-server-key: refused (someone may be ` +
          `intercepting the connection; compare the fingerprint the server prints at start-up)`,
      );
    }
    if (pinned && options.acceptKey === undefined) {
      throw new ServerKeyChangedError(
        `WARNING: the server at ${pinName} presented a different key (fingerprint ` +
          `${fingerprint}) than the one pinned on ${new Date(pinned.firstSeen).toISOString()}. ` +
          `Someone may be intercepting the connection. If the server was reinstalled, compare ` +
          `the fingerprint its start-up banner prints, then start once with ` +
          `--accept-server-key "<that fingerprint>"`,
      );
    }
    await options.knownServers.pin(pinName, serverKey);
    return { fc, serverKey, fingerprint, pin: "new", resumed };
  } catch (error) {
    await fc.close();
    throw error;
  }
}
