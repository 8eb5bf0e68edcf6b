/**
 * The ways a peer link's bytes can travel besides a plain dial: through the server's relay,
 * or over a hole-punched connection. Joining a relay leg, asking the server which address we
 * come from (and whether our NAT is symmetric), the simultaneous open, and the proof that a
 * punched connection reached the right peer.
 */
import type { KeyPair } from "../crypto/noise.ts";
import { connectFrom, NodeSocketTransport } from "../net/node_transport.ts";
import { HandedOverTransport, type Transport, writeAll } from "../net/transport.ts";
import type { ServerMessage } from "../protocol/messages.ts";
import { TimeoutError } from "../protocol/errors.ts";
import { fromBase64Url } from "../util/base64.ts";
import { delay } from "../util/time.ts";
import { openServerLink } from "./server_link.ts";

/** How to reach and recognise the server a second time. */
export interface ServerAccess {
  host: string;
  port: number;
  /** This process's Noise static key (the server matches relay legs against it). */
  staticKeyPair: KeyPair;
  /** The key the control connection's server presented. */
  serverKey: string;
  signal?: AbortSignal;
  /** How long connecting, and each step of the handshake, may take (default 10 s). */
  timeoutMs?: number;
}

/** How long the two legs of a relay have to meet at the server. */
export const RELAY_JOIN_TIMEOUT_MS = 20_000;

/**
 * Opens a connection to the server, joins the relay pairing `token`, and returns the stream
 * to the other peer once both legs are in (bytes past `relay_start` are theirs).
 * @throws {RemoteError} when the server refuses (bad token, not one of the peers, partner
 * gone) and connect errors when the server cannot be reached.
 */
export async function joinRelay(server: ServerAccess, token: string): Promise<Transport> {
  const link = await openServerLink({
    host: server.host,
    port: server.port,
    staticKeyPair: server.staticKeyPair,
    expectKey: server.serverKey,
    stopReadingAfter: ["relay_start"],
    signal: server.signal,
    timeoutMs: server.timeoutMs,
  });
  try {
    // One round trip first: the server reads our relay_join only once the handshake is fully
    // behind it, so it stops reading exactly there (frames sent along with the handshake's
    // last message are read ahead of it).
    await link.fc.request({ type: "observe" });
    await link.fc.request({ type: "relay_join", token }, { timeoutMs: RELAY_JOIN_TIMEOUT_MS });
    const { transport, rest } = await link.fc.detach();
    return new HandedOverTransport(transport, rest, "relayed");
  } catch (error) {
    await link.fc.close();
    throw error;
  }
}

/** How this client's NAT maps ports, and the address it is seen at from `localPort`. */
export interface Observation {
  localPort: number;
  host: string;
  port: number;
  nat: "preserving" | "independent" | "symmetric";
}

/** Local ports tried for punching: the upper, unprivileged range. */
const PUNCH_PORTS = { from: 20_000, span: 40_000 };

/** Asks the server, over a connection from `localPort` to `port`, where we come from. */
async function observeFrom(
  server: ServerAccess,
  localPort: number,
  port: number,
): Promise<Extract<ServerMessage, { type: "observed" }>> {
  const link = await openServerLink({
    host: server.host,
    port,
    staticKeyPair: server.staticKeyPair,
    expectKey: server.serverKey,
    signal: server.signal,
    timeoutMs: server.timeoutMs,
    connect: async (signal) =>
      new NodeSocketTransport(await connectFrom(localPort, server.host, port, signal)),
  });
  try {
    return await link.fc.request({ type: "observe" }, { timeoutMs: 10_000 });
  } finally {
    await link.fc.close();
  }
}

/**
 * Picks a local port and asks the server where connections from it come from, on its main
 * port and on its probe port. The same public port both times: hole punching can work; two
 * different ports: the NAT is symmetric and only the relay will do.
 */
export async function observeNat(server: ServerAccess): Promise<Observation> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const localPort = PUNCH_PORTS.from + Math.floor(Math.random() * PUNCH_PORTS.span);
    let first: Extract<ServerMessage, { type: "observed" }>;
    try {
      first = await observeFrom(server, localPort, server.port);
    } catch (error) {
      // The port may be taken here; another is tried.
      lastError = error;
      if ((error as { code?: string }).code === "EADDRINUSE") continue;
      throw error;
    }
    let nat: Observation["nat"] = first.port === localPort ? "preserving" : "independent";
    if (first.probePort !== undefined) {
      const second = await observeFrom(server, localPort, first.probePort);
      if (second.port !== first.port || second.host !== first.host) nat = "symmetric";
    }
    return { localPort, host: first.host, port: first.port, nat };
  }
  throw lastError;
}

/** Time one round of simultaneous open may take. */
export const PUNCH_DEADLINE_MS = 5_000;
/** Between attempts when the other side's NAT answers with a reset (it had no mapping yet). */
const PUNCH_RETRY_MS = 10;

/**
 * Connects from `localPort` to the other peer's observed address while they do the same
 * towards us (TCP simultaneous open: no listener), retrying quickly until `deadlineMs`.
 * @throws {TimeoutError} when no connection came up in time.
 */
export async function simultaneousOpen(
  localPort: number,
  remote: { host: string; port: number },
  options: { deadlineMs?: number; signal?: AbortSignal } = {},
): Promise<NodeSocketTransport> {
  const deadline = AbortSignal.timeout(options.deadlineMs ?? PUNCH_DEADLINE_MS);
  const signal = options.signal ? AbortSignal.any([deadline, options.signal]) : deadline;
  let attempts = 0;
  let lastError: unknown;
  // Bounded: the deadline ends it, and so does the attempt count.
  while (!signal.aborted && attempts < 2_000) {
    attempts++;
    try {
      const socket = await connectFrom(localPort, remote.host, remote.port, signal);
      return new NodeSocketTransport(socket, "direct");
    } catch (error) {
      lastError = error;
      if (signal.aborted) break;
      await delay(PUNCH_RETRY_MS, signal).catch(() => {});
    }
  }
  throw new TimeoutError(
    `no direct connection to ${remote.host}:${remote.port} after ${attempts} attempts` +
      (lastError ? ` (${(lastError as Error).message ?? lastError})` : ""),
  );
}

/**
 * Proves both ways that a punched connection reached the peer of the link: each side writes
 * its nonce (sent to the other over the encrypted link) and reads the other's.
 * @throws when the other side sends something else, or nothing in time.
 */
export async function provePunched(
  transport: Transport,
  nonces: { mine: string; theirs: string },
  timeoutMs = 5_000,
): Promise<void> {
  const mine = fromBase64Url(nonces.mine);
  const theirs = fromBase64Url(nonces.theirs);
  await writeAll(transport, mine);
  const got = new Uint8Array(theirs.length);
  let filled = 0;
  const timer = new AbortController();
  const deadline = delay(timeoutMs, timer.signal).then(() => {
    throw new TimeoutError("the punched connection did not prove who is at the other end");
  });
  deadline.catch(() => {});
  try {
    while (filled < got.length) {
      const n = await Promise.race([transport.read(got.subarray(filled)), deadline]);
      if (n === null) throw new Error("the punched connection closed before its proof");
      filled += n;
    }
  } finally {
    timer.abort();
  }
  if (!got.every((b, i) => b === theirs[i])) {
    throw new Error("the punched connection reached someone else");
  }
}
