/**
 * The error vocabulary of Confab. Errors that cross the wire carry a stable
 * {@link ErrorCode}, so a program can react to `USER_OFFLINE` without parsing prose.
 */

/** Stable error codes sent in `error` replies. Never rename one: clients match on them. */
export const ERROR_CODES = [
  "BAD_FRAME",
  "BAD_MESSAGE",
  "UNKNOWN_TYPE",
  "VERSION_MISMATCH",
  "NOT_LOGGED_IN",
  "ALREADY_LOGGED_IN",
  "BAD_USERNAME",
  "BAD_PASSWORD",
  "USER_EXISTS",
  "LOGIN_FAILED",
  "TOO_MANY_ATTEMPTS",
  "BAD_TOKEN",
  "BAD_TICKET",
  "NO_SUCH_USER",
  "NOT_A_CONTACT",
  "MAILBOX_FULL",
  "QUOTA",
  "USER_OFFLINE",
  "AUTH_FAILED",
  "HANDSHAKE_FAILED",
  "KEY_CHANGED",
  "SERVER_BUSY",
  "SERVER_CLOSING",
  "TIMEOUT",
  "INTERNAL",
  "RELAY_OFF",
  "RELAY_FULL",
  "RELAY_LIMIT",
  "SLOW_READER",
] as const;

export type ErrorCode = typeof ERROR_CODES[number];

/** A code from the wire as one of ours, or `fallback` when this build does not know it. */
export function knownCode(code: string, fallback: ErrorCode = "BAD_MESSAGE"): ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(code) ? code as ErrorCode : fallback;
}

/** A failure reported by the other end of a connection, with its stable code. */
export class RemoteError extends Error {
  override name = "RemoteError";
  /** The other side's code; usually an {@link ErrorCode}, possibly one newer than this build. */
  readonly code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** The bytes on a connection do not form a valid frame (too large, truncated). */
export class FrameError extends Error {
  override name = "FrameError";
}

/** A frame decoded, but its body is not a valid message of the protocol. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** The connection was closed (by either side) while something still waited on it. */
export class ConnectionClosedError extends Error {
  override name = "ConnectionClosedError";
}

/** A request got no reply before its deadline. */
export class TimeoutError extends Error {
  override name = "TimeoutError";
}
