/**
 * Authenticated links between two clients, over any {@link Transport} (a direct TCP
 * connection, a stream relayed by the server, a memory pipe). The dialer and the listener exchange
 * `hello`, then prove who they are: each signs the handshake transcript (both names, both
 * fresh nonces) with its identity key, and each checks the other's signature against the key
 * the server's directory gave for the name it claims.
 */
import { type BinaryFrame, dial, FramedConnection } from "../net/framed_connection.ts";
import type { Transport } from "../net/transport.ts";
import { openSecureChannel } from "../net/secure_channel.ts";
import type { KeyPair } from "../crypto/noise.ts";
import { toBase64Url } from "../util/base64.ts";
import { knownCode, ProtocolError } from "../protocol/errors.ts";
import { type PeerMessage, PeerToPeer } from "../protocol/messages.ts";
import { handshakeTranscript, type Identity, randomToken, verifySignature } from "./identity.ts";

/** Replies we wait for on a peer link: `pong` to our `ping`. */
const PEER_REPLY_TYPES = ["pong"] as const;

/** A peer link carries JSON messages and binary frames (file chunks). */
export type PeerConnection = FramedConnection<PeerMessage | BinaryFrame>;

/** An authenticated link to another user. */
export interface PeerLink {
  /** The other user's name, as the directory spells it. */
  user: string;
  /** Who dialed: decides which link survives when both dial at once. */
  initiator: string;
  /** True when this side dialed. */
  outbound: boolean;
  fc: PeerConnection;
}

export interface HandshakeOptions {
  me: string;
  identity: Identity;
  /** Static key for the Noise handshake that encrypts the link (per process is fine). */
  noiseKey: KeyPair;
  timeoutMs?: number;
}

function authFailed(message: string): ProtocolError {
  return new ProtocolError("AUTH_FAILED", message);
}

/**
 * An incoming connection meant for another user: a dialer with an address that is no longer
 * theirs (the user logged out, another logged in on the same client or port). Refused as
 * AUTH_FAILED; nothing the user on this side needs to hear about.
 */
export class MisdirectedPeerError extends ProtocolError {
  override name = "MisdirectedPeerError";
  constructor(message: string) {
    super("AUTH_FAILED", message);
  }
}

async function expect<T extends PeerMessage["type"]>(
  fc: PeerConnection,
  type: T,
  timeoutMs: number,
): Promise<Extract<PeerMessage, { type: T }>> {
  const message = await fc.next(timeoutMs);
  if (message.type === "error") {
    throw new ProtocolError(knownCode(message.code), `peer refused: ${message.message}`);
  }
  if (message.type !== type) {
    await fc.fail("BAD_MESSAGE", `expected ${type}, got ${message.type}`);
    throw new ProtocolError("BAD_MESSAGE", `peer sent ${message.type} instead of ${type}`);
  }
  return message as Extract<PeerMessage, { type: T }>;
}

function peerConnection(transport: Transport | Deno.TcpConn): PeerConnection {
  return new FramedConnection(transport, {
    schema: PeerToPeer,
    replyTypes: PEER_REPLY_TYPES,
    acceptBinary: true,
  });
}

/**
 * `hello`, then the Noise handshake; returns the channel binding (the handshake hash,
 * base64url) that both identity proofs sign.
 */
async function openChannel(
  fc: PeerConnection,
  initiator: boolean,
  noiseKey: KeyPair,
  timeoutMs: number,
): Promise<string> {
  const noise = await openSecureChannel(fc, {
    role: "peer",
    expectRole: "peer",
    initiator,
    staticKeyPair: noiseKey,
    timeoutMs,
  });
  return toBase64Url(noise.handshakeHash);
}

/** What the dialing side must know of the user it dials. */
export type DialOptions = HandshakeOptions & { user: string; publicKey: string };

/**
 * Dials `user` at host:port over TCP and authenticates both ways.
 * @param options.publicKey the key the directory gave for `user`.
 * @throws {ProtocolError} AUTH_FAILED when the other side is not who it should be.
 */
export async function dialPeer(
  address: { host: string; port: number },
  options: DialOptions & { signal?: AbortSignal },
): Promise<PeerLink> {
  const conn = await dial(address.host, address.port, options.signal);
  return await connectPeer(conn, options);
}

/**
 * Runs the dialing side's handshake over an open transport: hello, Noise, then both identity
 * proofs. The transport is closed when the handshake fails.
 * @throws {ProtocolError} AUTH_FAILED when the other side is not who it should be.
 */
export async function connectPeer(
  transport: Transport | Deno.TcpConn,
  options: DialOptions,
): Promise<PeerLink> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const fc = peerConnection(transport);
  const where = describePeerAddress(fc);
  try {
    const channel = await openChannel(fc, true, options.noiseKey, timeoutMs);
    const myNonce = randomToken();
    await fc.send({ type: "auth_init", from: options.me, to: options.user, nonce: myNonce });
    const reply = await expect(fc, "auth_reply", timeoutMs);
    if (reply.from.toLowerCase() !== options.user.toLowerCase()) {
      throw authFailed(`${where} is ${reply.from}, not ${options.user}`);
    }
    const theirs = handshakeTranscript({
      signer: "responder",
      initiator: options.me,
      responder: options.user,
      initiatorNonce: myNonce,
      responderNonce: reply.nonce,
      channel,
    });
    if (!await verifySignature(options.publicKey, reply.signature, theirs)) {
      throw authFailed(
        `the peer at ${where} could not prove it is ${options.user}`,
      );
    }
    const signature = await options.identity.sign(handshakeTranscript({
      signer: "initiator",
      initiator: options.me,
      responder: options.user,
      initiatorNonce: myNonce,
      responderNonce: reply.nonce,
      channel,
    }));
    await fc.send({ type: "auth_finish", signature });
    await expect(fc, "auth_ok", timeoutMs);
    return { user: options.user, initiator: options.me, outbound: true, fc };
  } catch (error) {
    if (error instanceof ProtocolError && error.code === "AUTH_FAILED") {
      await fc.fail("AUTH_FAILED", error.message);
    } else {
      await fc.close(error instanceof Error ? error : undefined);
    }
    throw error;
  }
}

/**
 * Authenticates an incoming connection on the peer port.
 * @param options.resolveKey gives the directory's key for a claimed name (throws if unknown;
 * throws a ProtocolError NOT_A_CONTACT, said to the dialer, for someone not let in).
 */
export async function acceptPeer(
  transport: Transport | Deno.TcpConn,
  options: HandshakeOptions & {
    resolveKey: (user: string) => Promise<{ user: string; publicKey: string }>;
  },
): Promise<PeerLink> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const fc = peerConnection(transport);
  try {
    const channel = await openChannel(fc, false, options.noiseKey, timeoutMs);
    const init = await expect(fc, "auth_init", timeoutMs);
    if (init.to.toLowerCase() !== options.me.toLowerCase()) {
      throw new MisdirectedPeerError(`this is ${options.me}, not ${init.to}`);
    }
    if (init.from.toLowerCase() === options.me.toLowerCase()) {
      throw authFailed("a peer cannot claim to be the user it dials");
    }
    const claimed = await options.resolveKey(init.from);
    const myNonce = randomToken();
    const signature = await options.identity.sign(handshakeTranscript({
      signer: "responder",
      initiator: claimed.user,
      responder: options.me,
      initiatorNonce: init.nonce,
      responderNonce: myNonce,
      channel,
    }));
    await fc.send({ type: "auth_reply", from: options.me, nonce: myNonce, signature });
    const finish = await expect(fc, "auth_finish", timeoutMs);
    const theirs = handshakeTranscript({
      signer: "initiator",
      initiator: claimed.user,
      responder: options.me,
      initiatorNonce: init.nonce,
      responderNonce: myNonce,
      channel,
    });
    if (!await verifySignature(claimed.publicKey, finish.signature, theirs)) {
      throw authFailed(`a peer at ${describePeerAddress(fc)} claimed to be ${init.from}`);
    }
    await fc.send({ type: "auth_ok" });
    return { user: claimed.user, initiator: claimed.user, outbound: false, fc };
  } catch (error) {
    if (
      error instanceof ProtocolError &&
      (error.code === "AUTH_FAILED" || error.code === "NOT_A_CONTACT")
    ) {
      await fc.fail(error.code, error.message);
    } else {
      await fc.close(error instanceof Error ? error : undefined);
    }
    throw error;
  }
}

/** Where a link leads, for messages: `host:port`, or how it travels when not direct. */
export function describePeerAddress(fc: PeerConnection): string {
  const t = fc.transport;
  const address = `${t.remoteAddr.hostname}:${t.remoteAddr.port}`;
  return t.path === "direct" ? address : `${address} (${t.path})`;
}

/** How a link's bytes travel, as users are told: through the server's relay, or directly. */
export function pathOf(link: PeerLink): "direct" | "relayed" {
  return link.fc.transport.path === "relayed" ? "relayed" : "direct";
}
