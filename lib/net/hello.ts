/**
 * The first exchange on every connection: each side sends `hello` with its protocol version
 * and role, and checks the other's. A mismatch is reported to both sides and ends the link.
 */
import { type ErrorCode, ProtocolError } from "../protocol/errors.ts";
import { type HelloMessage, PROTOCOL_VERSION } from "../protocol/messages.ts";
import type { AnyMessage, FramedConnection } from "./framed_connection.ts";

export const SOFTWARE = "confab/0.2.0";

/** Refusals of our hello that keep their code (any other is BAD_MESSAGE). */
const PASSED_ON: ReadonlySet<string> = new Set([
  "VERSION_MISMATCH",
  "BAD_TICKET",
  "HANDSHAKE_FAILED",
]);

/** The `hello` this build sends in `role`. */
export function helloFor(role: HelloMessage["role"]): HelloMessage {
  return { type: "hello", version: PROTOCOL_VERSION, role, software: SOFTWARE };
}

export interface HelloOptions {
  role: HelloMessage["role"];
  expectRole: HelloMessage["role"];
  timeoutMs: number;
  /**
   * Keep every frame after the other side's hello undecoded, for the handshake that follows
   * ({@link FramedConnection.nextHeld}): nothing after `hello` is read as plaintext.
   */
  hold?: boolean;
  /**
   * Send nothing: the caller answers the other side's hello (a server, whose answer to a client
   * coming back with a ticket carries the handshake's second message).
   */
  answer?: boolean;
  /** Send this hello (ours with more fields: a resumption) instead of the plain one. */
  hello?: HelloMessage;
}

/**
 * Sends our hello (unless we answer) and waits for the other side's.
 * @param expectRole the role the other side must announce.
 * @throws {ProtocolError} on a wrong first message, role or version (after telling the peer).
 */
export async function exchangeHello<In extends AnyMessage>(
  fc: FramedConnection<In>,
  options: HelloOptions,
): Promise<HelloMessage> {
  if (!options.answer) fc.send(options.hello ?? helloFor(options.role)).catch(() => {});
  const first = await fc.next(options.timeoutMs, { hold: options.hold });
  if (first.type === "error") {
    const e = first as unknown as { code: string; message: string };
    // A resumption in our hello is answered BAD_TICKET (make a full handshake instead) or
    // HANDSHAKE_FAILED.
    const code = PASSED_ON.has(e.code) ? e.code as ErrorCode : "BAD_MESSAGE";
    throw new ProtocolError(code, `the other side refused the connection: ${e.message}`);
  }
  if (first.type !== "hello") {
    await fc.fail("BAD_MESSAGE", `expected hello as the first message, got ${first.type}`);
    throw new ProtocolError("BAD_MESSAGE", `expected hello first, got ${first.type}`);
  }
  const hello = first as unknown as HelloMessage;
  if (hello.version !== PROTOCOL_VERSION) {
    // Names each side by its role and software, so the text reads right on both ends.
    const mine = `the ${options.role}`;
    const theirs = hello.role === options.role ? `the other ${hello.role}` : `the ${hello.role}`;
    const text = `protocol version mismatch: ${mine} (${SOFTWARE}) speaks ${PROTOCOL_VERSION}, ` +
      `${theirs} (${hello.software || "unknown software"}) speaks ${hello.version}; ` +
      `upgrade ${hello.version < PROTOCOL_VERSION ? theirs : mine}`;
    await fc.fail("VERSION_MISMATCH", text);
    throw new ProtocolError("VERSION_MISMATCH", text);
  }
  if (hello.role !== options.expectRole) {
    const text = `expected a ${options.expectRole}, but the other side is a ${hello.role}`;
    await fc.fail("BAD_MESSAGE", text);
    throw new ProtocolError("BAD_MESSAGE", text);
  }
  return hello;
}
