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

/** The largest sealed body for a plaintext body of at most `maxPlain` bytes. */
export function sealedSize(maxPlain: number): number {
  return maxPlain + Math.max(1, Math.ceil(maxPlain / MAX_PLAINTEXT_LEN)) * TAG_LEN;
}

/** Encrypts one frame body; call in wire order. */
export function closeFrame(cipher: TransportCipher, body: Uint8Array): Uint8Array {
  if (body.length <= MAX_PLAINTEXT_LEN) return cipher.encryptNow(body);
  const parts: Uint8Array[] = [];
  for (let at = 0; at < body.length; at += MAX_PLAINTEXT_LEN) {
    parts.push(cipher.encryptNow(body.subarray(at, at + MAX_PLAINTEXT_LEN)));
  }
  return concat(parts);
}

/**
 * Decrypts one frame body sealed by {@link closeFrame}; call in wire order.
 * @throws {CryptoError} when any part fails authentication.
 */
export function openFrame(cipher: TransportCipher, sealed: Uint8Array): Uint8Array {
  if (sealed.length <= MAX_MESSAGE_LEN) return cipher.decryptNow(sealed);
  const parts: Uint8Array[] = [];
  for (let at = 0; at < sealed.length; at += MAX_MESSAGE_LEN) {
    parts.push(cipher.decryptNow(sealed.subarray(at, at + MAX_MESSAGE_LEN)));
  }
  return concat(parts);
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
