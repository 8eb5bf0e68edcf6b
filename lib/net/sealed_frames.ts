/**
 * Encrypted frame bodies. A Noise transport message carries at most 65,519 bytes of plaintext
 * (65,535 with its tag), and a Confab frame up to 1 MiB, so a frame body is sealed as a run of
 * Noise transport messages: every one but the last exactly 65,535 bytes long. The receiver
 * cuts the body at the same places, so no extra lengths travel on the wire.
 */
import {
  MAX_MESSAGE_LEN,
  MAX_PLAINTEXT_LEN,
  TAG_LEN,
  type TransportCipher,
} from "../crypto/noise.ts";

/** The largest sealed body for a plaintext body of at most `maxPlain` bytes. */
export function sealedSize(maxPlain: number): number {
  return maxPlain + Math.max(1, Math.ceil(maxPlain / MAX_PLAINTEXT_LEN)) * TAG_LEN;
}

/**
 * Encrypts one frame body; call in wire order. Every nonce of the frame is taken before this
 * returns, so frames may be encrypting concurrently (the caller writes them in call order).
 * `body` must not change until the promise settles.
 */
export function closeFrame(cipher: TransportCipher, body: Uint8Array): Promise<Uint8Array> {
  if (body.length <= MAX_PLAINTEXT_LEN) return cipher.encrypt(body);
  const parts: Promise<Uint8Array>[] = [];
  for (let at = 0; at < body.length; at += MAX_PLAINTEXT_LEN) {
    parts.push(cipher.encrypt(body.subarray(at, at + MAX_PLAINTEXT_LEN)));
  }
  return Promise.all(parts).then(concat);
}

/**
 * {@link closeFrame}, done at once when the body is small enough for the cipher's synchronous
 * path (chat lines, control messages): no promise, no hop through the event loop.
 */
export function closeFrameNow(
  cipher: TransportCipher,
  body: Uint8Array,
): Uint8Array | Promise<Uint8Array> {
  return cipher.encryptNow(body) ?? closeFrame(cipher, body);
}

/**
 * Decrypts one frame body sealed by {@link closeFrame}. Every part starts decrypting at once,
 * and so may the next frames: the cipher settles them in call order (see
 * `CipherState.decryptWithAd`).
 * @throws {CryptoError} when any part fails authentication.
 */
export function openFrame(cipher: TransportCipher, sealed: Uint8Array): Promise<Uint8Array> {
  if (sealed.length <= MAX_MESSAGE_LEN) return cipher.decrypt(sealed);
  const parts: Promise<Uint8Array>[] = [];
  for (let at = 0; at < sealed.length; at += MAX_MESSAGE_LEN) {
    parts.push(cipher.decrypt(sealed.subarray(at, at + MAX_MESSAGE_LEN)));
  }
  return Promise.all(parts).then(concat);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
