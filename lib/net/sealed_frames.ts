/**
 * Encrypted frame bodies. A Noise transport message carries at most 65,519 bytes of plaintext
 * (65,535 with its tag), and a Confab frame up to 1 MiB, so a frame body is sealed as a run of
 * Noise transport messages: every one but the last exactly 65,535 bytes long. The receiver
 * cuts the body at the same places, so no extra lengths travel on the wire.
 *
 * Both directions run on the calling thread (see `CipherState`): a frame is sealed or opened
 * before the call returns, so frames are processed strictly in call order, which is wire order.
 */
import {
  MAX_MESSAGE_LEN,
  MAX_PLAINTEXT_LEN,
  TAG_LEN,
  type TransportCipher,
} from "../crypto/noise.ts";
import { freeNow } from "../util/free.ts";

/**
 * The largest sealed body for a plaintext body of at most `maxPlain` bytes (exactly the sealed
 * length of a body of `maxPlain` bytes).
 */
export function sealedSize(maxPlain: number): number {
  return maxPlain + Math.max(1, Math.ceil(maxPlain / MAX_PLAINTEXT_LEN)) * TAG_LEN;
}

/** Encrypts one frame body; call in wire order. */
export function closeFrame(cipher: TransportCipher, body: Uint8Array): Uint8Array {
  if (body.length <= MAX_PLAINTEXT_LEN) return cipher.encryptNow(body);
  const out = new Uint8Array(sealedSize(body.length));
  closeFrameInto(cipher, body, out, 0);
  return out;
}

/**
 * Encrypts one frame body into `out` from byte `at` (it needs {@link sealedSize} bytes there),
 * so a sender can put the frame's header in front and reuse the buffer; call in wire order.
 * @returns the sealed length.
 */
export function closeFrameInto(
  cipher: TransportCipher,
  body: Uint8Array,
  out: Uint8Array,
  at: number,
): number {
  if (body.length === 0) return cipher.encryptInto(body, out, at);
  let written = 0;
  for (let from = 0; from < body.length; from += MAX_PLAINTEXT_LEN) {
    written += cipher.encryptInto(
      body.subarray(from, from + MAX_PLAINTEXT_LEN),
      out,
      at + written,
    );
  }
  return written;
}

/**
 * Decrypts one frame body sealed by {@link closeFrame}; call in wire order. A body of several
 * Noise messages is opened into `into` when it has room (`sealed.length` bytes are always
 * enough), so a receiver of bulk data can reuse a few buffers; else into a new buffer.
 * @throws {CryptoError} when any part fails authentication.
 */
export function openFrame(
  cipher: TransportCipher,
  sealed: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  if (sealed.length <= MAX_MESSAGE_LEN) return cipher.decryptNow(sealed);
  const out = into !== undefined && into.length >= sealed.length
    ? into
    : new Uint8Array(sealed.length);
  let n = 0;
  for (let at = 0; at < sealed.length; at += MAX_MESSAGE_LEN) {
    const part = cipher.decryptNow(sealed.subarray(at, at + MAX_MESSAGE_LEN));
    out.set(part, n);
    n += part.length;
    freeNow(part); // the opener's own, copied: freed now rather than at the next GC
  }
  return out.subarray(0, n);
}
