/**
 * X25519 key pairs and Diffie-Hellman over WebCrypto, the DH functions of the Noise suite
 * `25519`. Keys travel as raw 32-byte strings (the Noise wire form); private keys stay inside
 * `CryptoKey`s so that logging a key pair does not print the secret.
 */
import { bytesOf } from "./bytes.ts";
import { CryptoError } from "./errors.ts";

/** Length in bytes of an X25519 public key, private key and shared secret (Noise's DHLEN). */
export const DH_LEN = 32;

const X25519 = { name: "X25519" } as const;

/**
 * DER prefix of a PKCS#8 `PrivateKeyInfo` holding an X25519 key (RFC 8410): WebCrypto imports
 * X25519 private keys only as PKCS#8 or JWK, so a raw key gets this 16-byte header.
 */
const PKCS8_X25519_PREFIX = Uint8Array.from(
  "302e020100300506032b656e04220420".match(/../g) ?? [],
  (byte) => parseInt(byte, 16),
);

/** An X25519 key pair: the raw public key and the private key as a WebCrypto key. */
export interface KeyPair {
  /** The 32-byte public key, as sent in Noise messages. */
  readonly publicKey: Uint8Array<ArrayBuffer>;
  /** The private key (extractable, so {@link exportPrivateKey} can save it). */
  readonly privateKey: CryptoKey;
}

/** Builds the key pair of a raw 32-byte X25519 private key (for saved keys and test vectors). */
export async function keyPairFromPrivateKey(privateKey: Uint8Array): Promise<KeyPair> {
  if (privateKey.length !== DH_LEN) {
    throw new RangeError(
      `an X25519 private key is ${DH_LEN} bytes, got ${privateKey.length}`,
    );
  }
  const pkcs8 = new Uint8Array(PKCS8_X25519_PREFIX.length + DH_LEN);
  pkcs8.set(PKCS8_X25519_PREFIX);
  pkcs8.set(privateKey, PKCS8_X25519_PREFIX.length);
  const key = await crypto.subtle.importKey("pkcs8", pkcs8, X25519, true, ["deriveBits"]);
  pkcs8.fill(0);
  // WebCrypto has no "public key of this private key" call, but its JWK export carries it.
  const jwk = await crypto.subtle.exportKey("jwk", key);
  if (jwk.x === undefined) throw new TypeError("X25519 JWK export lacks the public key 'x'");
  return { publicKey: fromBase64Url(jwk.x), privateKey: key };
}

/** Generates a fresh random X25519 key pair. */
export function generateKeyPair(): Promise<KeyPair> {
  // Any 32 random bytes are a valid X25519 private key: the scalar is clamped when used.
  const raw = crypto.getRandomValues(new Uint8Array(DH_LEN));
  const pair = keyPairFromPrivateKey(raw);
  raw.fill(0);
  return pair;
}

/** Returns the raw 32-byte private key of a pair, to save it. */
export async function exportPrivateKey(pair: KeyPair): Promise<Uint8Array<ArrayBuffer>> {
  const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
  if (jwk.d === undefined) throw new TypeError("X25519 JWK export lacks the private key 'd'");
  return fromBase64Url(jwk.d);
}

/**
 * Computes the X25519 shared secret of a private key and a peer's raw public key.
 * @throws {CryptoError} `INVALID_KEY` when the public key is malformed or of low order.
 */
export async function dh(
  privateKey: CryptoKey,
  publicKey: Uint8Array,
): Promise<Uint8Array<ArrayBuffer>> {
  if (publicKey.length !== DH_LEN) {
    throw new CryptoError(
      "INVALID_KEY",
      `X25519 public key must be ${DH_LEN} bytes, got ${publicKey.length}`,
    );
  }
  try {
    const peer = await crypto.subtle.importKey("raw", bytesOf(publicKey), X25519, true, []);
    return new Uint8Array(
      await crypto.subtle.deriveBits({ name: "X25519", public: peer }, privateKey, DH_LEN * 8),
    );
  } catch (error) {
    // WebCrypto refuses low-order points (an all-zero shared secret), which Noise allows us
    // to treat as an error; a zero secret would make the handshake keys predictable.
    throw new CryptoError("INVALID_KEY", "X25519 rejected the peer's public key", {
      cause: error,
    });
  }
}

function fromBase64Url(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}
