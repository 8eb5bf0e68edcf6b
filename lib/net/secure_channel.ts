/**
 * Sets up every connection: the `hello` exchange, then the Noise XX handshake
 * (Noise_XX_25519_ChaChaPoly_SHA256), or, for a client coming back to a server that gave it a
 * resumption ticket, Noise_NNpsk0_25519_ChaChaPoly_SHA256 keyed by the ticket's pre-shared key
 * (see lib/server/tickets.ts), then encrypted frames. Each XX message travels as a `noise`
 * message; the two of a resumption ride in the hellos (one frame each way). From the other
 * side's `hello` on, nothing but the expected handshake message or a correctly encrypted frame
 * is accepted: frames are held undecoded, taken one by one as handshake messages, and whatever
 * follows the last one is decrypted once the keys exist (so a frame slipped in by someone on
 * the path fails authentication and ends the link).
 */
import { CryptoError, HandshakeState, type KeyPair, type NoiseSession } from "../crypto/noise.ts";
import { ProtocolError } from "../protocol/errors.ts";
import type { HelloMessage } from "../protocol/messages.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";
import type { AnyMessage, FramedConnection } from "./framed_connection.ts";
import { exchangeHello, helloFor } from "./hello.ts";

export type LinkKind = "client-server" | "peer";

/** What a client holds to resume with: the server's last ticket and its pre-shared key. */
export interface ResumptionOffer {
  /** The sealed ticket, as the server gave it (sent in the first handshake message). */
  readonly ticket: string;
  /** The 32-byte pre-shared key that came with it (never sent). */
  readonly psk: Uint8Array;
  /**
   * The static key of the server that issued it (authenticated by the XX handshake then): the
   * resumed session stands for it, as only holders of its private half can open the ticket.
   */
  readonly serverKey: Uint8Array;
}

/** A ticket a server could open: the pre-shared key and the client key it was issued to. */
export interface OpenedTicket {
  readonly psk: Uint8Array;
  readonly clientKey: Uint8Array;
}

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

/** A finished handshake: the session, and whether it resumed with a ticket (and which). */
export interface SecureSession extends NoiseSession {
  /** The ticket the session resumed with (NNpsk0), or undefined after a full XX handshake. */
  readonly ticket: string | undefined;
}

const encoder = new TextEncoder();
const UTF8 = new TextDecoder("utf-8", { fatal: true });

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
    const e = message as unknown as { code: string; message: string };
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

/** A hello without its `resume` field: what a resumption's prologue and msg2 bind. */
function withoutResume(hello: HelloMessage): HelloMessage {
  const { resume: _, ...rest } = hello;
  return rest;
}

/**
 * The prologue of a resumption: the client's hello (without `resume`) and the ticket. The
 * server's hello cannot be in it (the client sends msg1 before it has it): msg2 carries it as
 * its payload instead, encrypted and authenticated, and the client compares.
 */
export function resumptionPrologue(clientHello: HelloMessage, ticket: string): Uint8Array {
  return encoder.encode(
    `confab-noise-v3 client-server resume\n${canonical(withoutResume(clientHello))}\n` +
      `ticket ${ticket}`,
  );
}

/**
 * Runs a handshake step; on failure tells the other side (`HANDSHAKE_FAILED`, or `BAD_TICKET`
 * for a ticket it cannot use), closes, and throws that as a {@link ProtocolError}.
 */
async function guarded<In extends AnyMessage, T>(
  fc: FramedConnection<In>,
  work: () => Promise<T>,
): Promise<T> {
  try {
    return await work();
  } catch (error) {
    const message = error instanceof CryptoError || error instanceof ProtocolError
      ? error.message
      : String(error);
    const code = error instanceof ProtocolError && error.code === "BAD_TICKET"
      ? "BAD_TICKET"
      : "HANDSHAKE_FAILED";
    const failure = new ProtocolError(code, `secure handshake failed: ${message}`, {
      cause: error,
    });
    if (!fc.isSecure) await fc.fail(code, failure.message).catch(() => {});
    else await fc.close(failure);
    throw failure;
  }
}

/**
 * Authenticates and encrypts `fc` with the Noise XX handshake; its frames are held since the
 * other side's `hello` (`exchangeHello(..., { hold: true })`). Returns the session: its
 * `remoteStaticKey` is the other side's static key (check it against what you expect), its
 * `handshakeHash` binds anything signed later to this very session.
 * @throws {ProtocolError} HANDSHAKE_FAILED (after telling the other side) on any failure.
 */
export function secureConnection<In extends AnyMessage>(
  fc: FramedConnection<In>,
  options: SecureOptions,
): Promise<SecureSession> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  return guarded(fc, async () => {
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
      return { ...session, ticket: undefined };
    }
    await hs.readMessage(await expectNoise(fc, timeoutMs)); // -> e
    await send(); // <- e, ee, s, es
    await hs.readMessage(await expectNoise(fc, timeoutMs)); // -> s, se
    const session = hs.session();
    fc.secure(session);
    return { ...session, ticket: undefined };
  });
}

/**
 * The client's side of a resumption: its hello carries the ticket and msg1 (-> psk, e); the
 * server's hello answers with msg2 (<- e, ee), whose payload is that hello, authenticated. The
 * session stands for the server key the ticket came from.
 */
async function resumeAsInitiator<In extends AnyMessage>(
  fc: FramedConnection<In>,
  options: ChannelOptions,
  offer: ResumptionOffer,
): Promise<SecureSession> {
  const ours = helloFor(options.role);
  const hs = await HandshakeState.initialize({
    pattern: "NNpsk0",
    initiator: true,
    prologue: resumptionPrologue(ours, offer.ticket),
    psk: offer.psk,
  });
  const data = toBase64Url(await hs.writeMessage());
  const theirs = await exchangeHello(fc, {
    ...options,
    hold: true,
    hello: { ...ours, resume: { ticket: offer.ticket, data } },
  });
  return await guarded(fc, async () => {
    if (theirs.resume === undefined) {
      throw new ProtocolError("HANDSHAKE_FAILED", "the server's hello did not resume");
    }
    const payload = await hs.readMessage(fromBase64Url(theirs.resume.data));
    // The hello that came in the clear must be the one msg2 authenticates.
    if (UTF8.decode(payload) !== canonical(withoutResume(theirs))) {
      throw new ProtocolError("HANDSHAKE_FAILED", "the server's hello was changed on the way");
    }
    const session = hs.session();
    fc.secure(session);
    return { ...session, remoteStaticKey: offer.serverKey.slice(), ticket: offer.ticket };
  });
}

/**
 * The server's side of a resumption: the ticket opened (or BAD_TICKET, and the client makes a
 * full handshake on a new connection), msg1 read, and the answer: our hello with msg2, whose
 * payload is that hello. The session stands for the client key the ticket was issued to.
 */
async function resumeAsResponder<In extends AnyMessage>(
  fc: FramedConnection<In>,
  options: ChannelOptions,
  theirs: HelloMessage,
): Promise<SecureSession> {
  const { ticket, data } = theirs.resume!;
  if (options.role !== "server" || ticket === undefined) {
    throw new ProtocolError(
      "HANDSHAKE_FAILED",
      "only a client resumes, with a ticket, and only with a server",
    );
  }
  const opened = options.openTicket?.(ticket);
  if (!opened) {
    throw new ProtocolError(
      "BAD_TICKET",
      "the resumption ticket is not valid here (expired, or from another key); " +
        "make a full handshake",
    );
  }
  const hs = await HandshakeState.initialize({
    pattern: "NNpsk0",
    initiator: false,
    prologue: resumptionPrologue(theirs, ticket),
    psk: opened.psk,
  });
  await hs.readMessage(fromBase64Url(data));
  const ours = helloFor(options.role);
  const reply = toBase64Url(await hs.writeMessage(encoder.encode(canonical(ours))));
  await fc.send({ ...ours, resume: { data: reply } });
  const session = hs.session();
  fc.secure(session);
  return { ...session, remoteStaticKey: opened.clientKey.slice(), ticket };
}

export interface ChannelOptions {
  /** Our role and the one the other side must announce in `hello`. */
  role: HelloMessage["role"];
  expectRole: HelloMessage["role"];
  /** True on the side that dialed. */
  initiator: boolean;
  staticKeyPair: KeyPair;
  timeoutMs: number;
  /** Initiator (a client): resume with this ticket (NNpsk0) instead of a full XX handshake. */
  resumption?: ResumptionOffer;
  /**
   * Responder (a server): opens a ticket offered in a client's hello (undefined when it is not
   * one of ours, or expired: the client is told BAD_TICKET). Without it, only XX is spoken.
   */
  openTicket?: (ticket: string) => OpenedTicket | undefined;
}

/**
 * The whole set-up of a connection: `hello` both ways, then the Noise handshake with both
 * hellos in its prologue; or, for a client coming back with a ticket, the resumption inside the
 * hellos. A server answers the client's hello (so its answer can carry a resumption). Returns
 * the session (see {@link secureConnection}).
 * @throws {ProtocolError} on a wrong hello (VERSION_MISMATCH, BAD_MESSAGE), HANDSHAKE_FAILED, or
 * BAD_TICKET (a ticket the server cannot use: make a full handshake on a new connection).
 */
export async function openSecureChannel<In extends AnyMessage>(
  fc: FramedConnection<In>,
  options: ChannelOptions,
): Promise<SecureSession> {
  if (options.initiator && options.resumption) {
    return await resumeAsInitiator(fc, options, options.resumption);
  }
  const answer = options.role === "server";
  const theirs = await exchangeHello(fc, { ...options, hold: true, answer });
  if (theirs.resume !== undefined) {
    return await guarded(fc, () => resumeAsResponder(fc, options, theirs));
  }
  const ours = helloFor(options.role);
  if (answer) fc.send(ours).catch(() => {});
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
