/**
 * X25519 key pairs and Diffie-Hellman (WebCrypto), the DH functions of the Noise suite
 * `25519`. Keys travel as raw 32-byte strings (the Noise wire form); private keys stay inside
 * key objects so that logging a key pair does not print the secret.
 *
 * WebCrypto rather than node:crypto: importing node:crypto costs a process ≈ 40-45 ms of CPU at
 * start-up (node_crypto.ts), and every client does a handshake. Measured in one run here: a
 * public key imported and a secret derived, 164-178 µs through WebCrypto against 146-172 µs
 * through node:crypto; a key pair made, 150-156 µs.
 */
import { CryptoError } from "./errors.ts";
import { fromBase64Url } from "../util/base64.ts";

/** Length in bytes of an X25519 public key, private key and shared secret (Noise's DHLEN). */
export const DH_LEN = 32;

const X25519 = { name: "X25519" } as const;

/**
 * DER prefix of a PKCS#8 `PrivateKeyInfo` holding an X25519 key (RFC 8410): private keys are
 * imported as PKCS#8, so a raw key gets this 16-byte header.
 */
const PKCS8_X25519_PREFIX = Uint8Array.from(
  "302e020100300506032b656e04220420".match(/../g) ?? [],
  (byte) => parseInt(byte, 16),
);

/** An X25519 key pair: the raw public key and the private key as an opaque key object. */
export interface KeyPair {
  /** The 32-byte public key, as sent in Noise messages. */
  readonly publicKey: Uint8Array<ArrayBuffer>;
  /** The private key ({@link exportPrivateKey} can save it). */
  readonly privateKey: CryptoKey;
}

/** The raw public key of a private key (from its JWK form, which carries both). */
async function publicOf(privateKey: CryptoKey): Promise<Uint8Array<ArrayBuffer>> {
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  if (jwk.x === undefined) throw new TypeError("X25519 JWK export lacks the public key 'x'");
  return fromBase64Url(jwk.x);
}

/** Builds the key pair of a raw 32-byte X25519 private key (for saved keys and test vectors). */
export async function keyPairFromPrivateKey(privateKey: Uint8Array): Promise<KeyPair> {
  if (privateKey.length !== DH_LEN) {
    throw new RangeError(`an X25519 private key is ${DH_LEN} bytes, got ${privateKey.length}`);
  }
  const pkcs8 = new Uint8Array(PKCS8_X25519_PREFIX.length + DH_LEN);
  pkcs8.set(PKCS8_X25519_PREFIX);
  pkcs8.set(privateKey, PKCS8_X25519_PREFIX.length);
  try {
    const key = await crypto.subtle.importKey("pkcs8", pkcs8, X25519, true, ["deriveBits"]);
    return { publicKey: await publicOf(key), privateKey: key };
  } finally {
    pkcs8.fill(0);
  }
}

/** Generates a fresh random X25519 key pair. */
export async function generateKeyPair(): Promise<KeyPair> {
  const pair = await crypto.subtle.generateKey(X25519, true, ["deriveBits"]) as CryptoKeyPair;
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { publicKey, privateKey: pair.privateKey };
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
  let secret: Uint8Array<ArrayBuffer>;
  try {
    const peer = await crypto.subtle.importKey("raw", new Uint8Array(publicKey), X25519, true, []);
    const bits = await crypto.subtle.deriveBits({ ...X25519, public: peer }, privateKey, 256);
    secret = new Uint8Array(bits);
  } catch (error) {
    // WebCrypto refuses a low-order point itself (its all-zero secret).
    throw new CryptoError("INVALID_KEY", "X25519 rejected the peer's public key", {
      cause: error,
    });
  }
  // A low-order point gives an all-zero secret, which would make the handshake keys
  // predictable: Noise lets us (and we choose to) refuse it.
  if (secret.every((b) => b === 0)) {
    throw new CryptoError("INVALID_KEY", "X25519 rejected the peer's public key (low order)");
  }
  return secret;
}

let probe: Promise<KeyPair> | undefined;

/**
 * True when `publicKey` is a usable X25519 public key: 32 bytes whose shared secret with a key
 * of ours is not all zero (a low-order point would make every secret with it predictable).
 */
export async function isStrongX25519Key(publicKey: Uint8Array): Promise<boolean> {
  probe ??= generateKeyPair();
  try {
    await dh((await probe).privateKey, publicKey);
    return true;
  } catch {
    return false;
  }
}
