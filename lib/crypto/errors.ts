/**
 * The error class of lib/crypto. Every failure that a peer can cause (a forged or replayed
 * message, a bad public key, a message out of turn) is a {@link CryptoError}, so the networking
 * layer can catch one class and drop the connection; mistakes in our own arguments stay
 * `TypeError`/`RangeError`.
 */

/** Stable codes of {@link CryptoError}, so callers branch on a code rather than on prose. */
export const CRYPTO_ERROR_CODES = [
  /** A ciphertext failed authentication: tampered, replayed, reordered or under the wrong key. */
  "DECRYPT_FAILED",
  /** The 64-bit message counter is used up; the session must be re-established. */
  "NONCE_EXHAUSTED",
  /** A public key from the peer is malformed or of low order (the DH result would be zero). */
  "INVALID_KEY",
  /** A handshake or transport message has an impossible length (truncated or oversized). */
  "BAD_MESSAGE",
  /** A call that the state machine does not allow now (out of turn, after the end, concurrent). */
  "WRONG_STATE",
] as const;

/** One of {@link CRYPTO_ERROR_CODES}. */
export type CryptoErrorCode = typeof CRYPTO_ERROR_CODES[number];

/** A cryptographic operation failed; the state it was applied to is left unchanged. */
export class CryptoError extends Error {
  override name = "CryptoError";
  readonly code: CryptoErrorCode;
  constructor(code: CryptoErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}
