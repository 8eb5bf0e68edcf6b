/**
 * Runs the Noise XX handshake (Noise_XX_25519_AESGCM_SHA256) over a framed connection, right
 * after `hello`, and switches the connection to encrypted frames. Each handshake message
 * travels as a `noise` message; the prologue names the kind of link, so a handshake made for
 * one kind cannot be replayed into another.
 */
import { CryptoError, HandshakeState, type KeyPair, type NoiseSession } from "../crypto/noise.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";
import type { AnyMessage, FramedConnection } from "./framed_connection.ts";

export type LinkKind = "client-server" | "peer";

export interface SecureOptions {
  /** The side that dialed sends the first handshake message. */
  initiator: boolean;
  kind: LinkKind;
  /** This side's static X25519 key pair (sent encrypted in the handshake). */
  staticKeyPair: KeyPair;
  timeoutMs?: number;
}

const encoder = new TextEncoder();

async function expectNoise<In extends AnyMessage>(
  fc: FramedConnection<In>,
  timeoutMs: number,
): Promise<Uint8Array> {
  const message = await fc.next(timeoutMs) as AnyMessage & { data?: string };
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
 * Authenticates and encrypts `fc`. Returns the session: its `remoteStaticKey` is the other
 * side's static key (check it against what you expect), its `handshakeHash` binds anything
 * signed later to this very session.
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
      prologue: encoder.encode(`confab-noise-v1 ${options.kind}`),
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
      // Queue the last handshake message, then switch: everything after it is encrypted.
      void fc.send({ type: "noise", data: last }).catch(() => {});
      fc.secure(session);
      return session;
    }
    await hs.readMessage(await expectNoise(fc, timeoutMs)); // -> e
    // Hold what follows the last handshake message: it is encrypted, and the keys for it
    // exist only once that message has been read. Armed before our reply goes out, since the
    // answer (and frames after it) can arrive before we ask for it.
    fc.holdAfterNext();
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
