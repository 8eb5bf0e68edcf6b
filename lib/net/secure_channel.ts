/**
 * Sets up every connection: the `hello` exchange, then the Noise XX handshake
 * (Noise_XX_25519_ChaChaPoly_SHA256), then encrypted frames. Each handshake message travels as a
 * `noise` message. From the other side's `hello` on, nothing but the expected handshake
 * message or a correctly encrypted frame is accepted: frames are held undecoded, taken one by
 * one as handshake messages, and whatever follows the last one is decrypted once the keys
 * exist (so a frame slipped in by someone on the path fails authentication and ends the link).
 */
import { CryptoError, HandshakeState, type KeyPair, type NoiseSession } from "../crypto/noise.ts";
import { ProtocolError } from "../protocol/errors.ts";
import type { HelloMessage } from "../protocol/messages.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";
import type { AnyMessage, FramedConnection } from "./framed_connection.ts";
import { exchangeHello, helloFor } from "./hello.ts";

export type LinkKind = "client-server" | "peer";

export interface SecureOptions {
  /** The side that dialed sends the first handshake message. */
  initiator: boolean;
  kind: LinkKind;
  /** This side's static X25519 key pair (sent encrypted in the handshake). */
  staticKeyPair: KeyPair;
  /** Both `hello`s as exchanged; they go into the prologue, so a change to either is caught. */
  hellos: { initiator: HelloMessage; responder: HelloMessage };
  timeoutMs?: number;
}

const encoder = new TextEncoder();

/** A hello as canonical JSON: its fields in sorted order, so both sides write the same bytes. */
function canonical(hello: HelloMessage): string {
  const fields = Object.entries(hello).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify(Object.fromEntries(fields));
}

/**
 * The Noise prologue: the kind of link and both `hello` messages (the initiator's first).
 * Both sides mix it into the handshake hash, so a handshake made for another kind of link, or
 * after a `hello` someone on the path changed (a downgrade), fails at the first authenticated
 * message.
 */
export function handshakePrologue(
  kind: LinkKind,
  hellos: { initiator: HelloMessage; responder: HelloMessage },
): Uint8Array {
  return encoder.encode(
    `confab-noise-v2 ${kind}\n${canonical(hellos.initiator)}\n${canonical(hellos.responder)}`,
  );
}

async function expectNoise<In extends AnyMessage>(
  fc: FramedConnection<In>,
  timeoutMs: number,
): Promise<Uint8Array> {
  const message = await fc.nextHeld(timeoutMs) as AnyMessage & { data?: string };
  if (message.type === "error") {
    const e = message as unknown as { message: string };
    throw new ProtocolError("HANDSHAKE_FAILED", `the other side refused: ${e.message}`);
  }
  if (message.type !== "noise" || typeof message.data !== "string") {
    throw new ProtocolError(
      "HANDSHAKE_FAILED",
      `expected a noise handshake message, got ${message.type}`,
    );
  }
  return fromBase64Url(message.data);
}

/**
 * Authenticates and encrypts `fc`, whose frames are held since the other side's `hello`
 * (`exchangeHello(..., { hold: true })`). Returns the session: its `remoteStaticKey` is the
 * other side's static key (check it against what you expect), its `handshakeHash` binds
 * anything signed later to this very session.
 * @throws {ProtocolError} HANDSHAKE_FAILED (after telling the other side) on any failure.
 */
export async function secureConnection<In extends AnyMessage>(
  fc: FramedConnection<In>,
  options: SecureOptions,
): Promise<NoiseSession> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  try {
    const hs = await HandshakeState.initialize({
      pattern: "XX",
      initiator: options.initiator,
      prologue: handshakePrologue(options.kind, options.hellos),
      staticKeyPair: options.staticKeyPair,
    });
    const send = async () => {
      await fc.send({ type: "noise", data: toBase64Url(await hs.writeMessage()) });
    };
    if (options.initiator) {
      await send(); // -> e
      await hs.readMessage(await expectNoise(fc, timeoutMs)); // <- e, ee, s, es
      const last = toBase64Url(await hs.writeMessage()); // -> s, se
      const session = hs.session();
      // Queue the last handshake message, then switch: everything after it is encrypted both
      // ways, including whatever arrived after message 2 (held until now).
      void fc.send({ type: "noise", data: last }).catch(() => {});
      fc.secure(session);
      return session;
    }
    await hs.readMessage(await expectNoise(fc, timeoutMs)); // -> e
    await send(); // <- e, ee, s, es
    await hs.readMessage(await expectNoise(fc, timeoutMs)); // -> s, se
    const session = hs.session();
    fc.secure(session);
    return session;
  } catch (error) {
    const message = error instanceof CryptoError || error instanceof ProtocolError
      ? error.message
      : String(error);
    const failure = new ProtocolError("HANDSHAKE_FAILED", `secure handshake failed: ${message}`, {
      cause: error,
    });
    if (!fc.isSecure) await fc.fail("HANDSHAKE_FAILED", failure.message).catch(() => {});
    else await fc.close(failure);
    throw failure;
  }
}

export interface ChannelOptions {
  /** Our role and the one the other side must announce in `hello`. */
  role: HelloMessage["role"];
  expectRole: HelloMessage["role"];
  /** True on the side that dialed. */
  initiator: boolean;
  staticKeyPair: KeyPair;
  timeoutMs: number;
}

/**
 * The whole set-up of a connection: `hello` both ways, then the Noise handshake with both
 * hellos in its prologue. Returns the session (see {@link secureConnection}).
 * @throws {ProtocolError} on a wrong hello (VERSION_MISMATCH, BAD_MESSAGE) or HANDSHAKE_FAILED.
 */
export async function openSecureChannel<In extends AnyMessage>(
  fc: FramedConnection<In>,
  options: ChannelOptions,
): Promise<NoiseSession> {
  const theirs = await exchangeHello(fc, { ...options, hold: true });
  const ours = helloFor(options.role);
  return await secureConnection(fc, {
    initiator: options.initiator,
    kind: options.role === "peer" ? "peer" : "client-server",
    staticKeyPair: options.staticKeyPair,
    hellos: options.initiator
      ? { initiator: ours, responder: theirs }
      : { initiator: theirs, responder: ours },
    timeoutMs: options.timeoutMs,
  });
}
