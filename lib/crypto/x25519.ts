/**
 * X25519 key pairs and Diffie-Hellman (node:crypto), the DH functions of the Noise suite
 * `25519`. Keys travel as raw 32-byte strings (the Noise wire form); private keys stay inside
 * key objects so that logging a key pair does not print the secret.
 */
import {
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";
import { Buffer } from "node:buffer";
import { CryptoError } from "./errors.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";

/** Length in bytes of an X25519 public key, private key and shared secret (Noise's DHLEN). */
export const DH_LEN = 32;

/**
 * DER prefix of a PKCS#8 `PrivateKeyInfo` holding an X25519 key (RFC 8410): private keys are
 * imported as PKCS#8 (or JWK), so a raw key gets this 16-byte header.
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
  readonly privateKey: KeyObject;
}

/** Builds the key pair of a raw 32-byte X25519 private key (for saved keys and test vectors). */
export function keyPairFromPrivateKey(privateKey: Uint8Array): Promise<KeyPair> {
  if (privateKey.length !== DH_LEN) {
    return Promise.reject(
      new RangeError(`an X25519 private key is ${DH_LEN} bytes, got ${privateKey.length}`),
    );
  }
  const pkcs8 = new Uint8Array(PKCS8_X25519_PREFIX.length + DH_LEN);
  pkcs8.set(PKCS8_X25519_PREFIX);
  pkcs8.set(privateKey, PKCS8_X25519_PREFIX.length);
  const key = createPrivateKey({ key: Buffer.from(pkcs8), format: "der", type: "pkcs8" });
  pkcs8.fill(0);
  const jwk = createPublicKey(key).export({ format: "jwk" });
  if (jwk.x === undefined) throw new TypeError("X25519 JWK export lacks the public key 'x'");
  return Promise.resolve({ publicKey: fromBase64Url(jwk.x), privateKey: key });
}

/** Generates a fresh random X25519 key pair. */
export function generateKeyPair(): Promise<KeyPair> {
  const pair = generateKeyPairSync("x25519");
  const jwk = pair.publicKey.export({ format: "jwk" });
  if (jwk.x === undefined) throw new TypeError("X25519 JWK export lacks the public key 'x'");
  return Promise.resolve({ publicKey: fromBase64Url(jwk.x), privateKey: pair.privateKey });
}

/** Returns the raw 32-byte private key of a pair, to save it. */
export function exportPrivateKey(pair: KeyPair): Promise<Uint8Array<ArrayBuffer>> {
  const jwk = pair.privateKey.export({ format: "jwk" });
  if (jwk.d === undefined) throw new TypeError("X25519 JWK export lacks the private key 'd'");
  return Promise.resolve(fromBase64Url(jwk.d));
}

/**
 * Computes the X25519 shared secret of a private key and a peer's raw public key. Done on the
 * calling thread (node:crypto): the handshake needs three of these per side, and a trip
 * through WebCrypto's thread pool costs as much as the arithmetic.
 * @throws {CryptoError} `INVALID_KEY` when the public key is malformed or of low order.
 */
export function dh(
  privateKey: KeyObject,
  publicKey: Uint8Array,
): Promise<Uint8Array<ArrayBuffer>> {
  if (publicKey.length !== DH_LEN) {
    return Promise.reject(
      new CryptoError(
        "INVALID_KEY",
        `X25519 public key must be ${DH_LEN} bytes, got ${publicKey.length}`,
      ),
    );
  }
  let secret: Uint8Array<ArrayBuffer>;
  try {
    const peer = createPublicKey({
      key: { kty: "OKP", crv: "X25519", x: toBase64Url(publicKey) },
      format: "jwk",
    });
    secret = new Uint8Array(diffieHellman({ privateKey, publicKey: peer }));
  } catch (error) {
    return Promise.reject(
      new CryptoError("INVALID_KEY", "X25519 rejected the peer's public key", { cause: error }),
    );
  }
  // A low-order point gives an all-zero secret, which would make the handshake keys
  // predictable: Noise lets us (and we choose to) refuse it.
  if (secret.every((b) => b === 0)) {
    return Promise.reject(
      new CryptoError("INVALID_KEY", "X25519 rejected the peer's public key (low order)"),
    );
  }
  return Promise.resolve(secret);
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
