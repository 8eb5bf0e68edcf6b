/**
 * X25519 key pairs and Diffie-Hellman, the DH functions of the Noise suite `25519`. Keys travel
 * as raw 32-byte strings (the Noise wire form); private keys stay inside key objects so that
 * logging a key pair does not print the secret.
 *
 * Two implementations, one result. node:crypto computes on the calling thread; WebCrypto hops
 * through a thread pool. Alone, one operation costs the same through either (measured here: a
 * public key imported and a secret derived, 164-178 µs through WebCrypto, 146-172 µs through
 * node:crypto), but a server taking back thousands of clients at once paid for the hops: the
 * reattach bench's 10,000 clients came back in 18.5 s after a kill -9 through WebCrypto against
 * 12.4 s through node:crypto. So keys are made through node:crypto wherever a process has
 * loaded it (a server always has; node_crypto.ts), and through WebCrypto where it has not (a
 * client, for which loading node:crypto would cost ≈ 40 ms of CPU at start-up for a handful
 * of operations). A key computes its secrets through the implementation that made it.
 */
import type { KeyObject } from "node:crypto";
import type { Buffer } from "node:buffer";
import { CryptoError } from "./errors.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";
import { nodeCrypto } from "./node_crypto.ts";

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
  readonly privateKey: CryptoKey | KeyObject;
}

/** A private key's JWK form (it carries the public key `x` too). */
async function jwkOf(privateKey: CryptoKey | KeyObject): Promise<JsonWebKey> {
  return privateKey instanceof CryptoKey
    ? await crypto.subtle.exportKey("jwk", privateKey)
    : privateKey.export({ format: "jwk" });
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
    const node = nodeCrypto();
    const key = node
      // node:crypto takes any byte view (its types say Buffer).
      ? node.createPrivateKey({ key: pkcs8 as Uint8Array as Buffer, format: "der", type: "pkcs8" })
      : await crypto.subtle.importKey("pkcs8", pkcs8, X25519, true, ["deriveBits"]);
    const { x } = await jwkOf(key);
    if (x === undefined) throw new TypeError("X25519 JWK export lacks the public key 'x'");
    return { publicKey: fromBase64Url(x), privateKey: key };
  } finally {
    pkcs8.fill(0);
  }
}

/** Generates a fresh random X25519 key pair. */
export async function generateKeyPair(): Promise<KeyPair> {
  const node = nodeCrypto();
  if (node) {
    const pair = node.generateKeyPairSync("x25519");
    const { x } = pair.publicKey.export({ format: "jwk" });
    if (x === undefined) throw new TypeError("X25519 JWK export lacks the public key 'x'");
    return { publicKey: fromBase64Url(x), privateKey: pair.privateKey };
  }
  const pair = await crypto.subtle.generateKey(X25519, true, ["deriveBits"]) as CryptoKeyPair;
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { publicKey, privateKey: pair.privateKey };
}

/** Returns the raw 32-byte private key of a pair, to save it. */
export async function exportPrivateKey(pair: KeyPair): Promise<Uint8Array<ArrayBuffer>> {
  const { d } = await jwkOf(pair.privateKey);
  if (d === undefined) throw new TypeError("X25519 JWK export lacks the private key 'd'");
  return fromBase64Url(d);
}

/**
 * Computes the X25519 shared secret of a private key and a peer's raw public key, through the
 * implementation that made the private key.
 * @throws {CryptoError} `INVALID_KEY` when the public key is malformed or of low order.
 */
export async function dh(
  privateKey: CryptoKey | KeyObject,
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
    if (privateKey instanceof CryptoKey) {
      const peer = await crypto.subtle.importKey(
        "raw",
        new Uint8Array(publicKey),
        X25519,
        true,
        [],
      );
      secret = new Uint8Array(
        await crypto.subtle.deriveBits({ ...X25519, public: peer }, privateKey, 256),
      );
    } else {
      // A KeyObject exists only once node:crypto is loaded.
      const node = nodeCrypto()!;
      const peer = node.createPublicKey({
        key: { kty: "OKP", crv: "X25519", x: toBase64Url(publicKey) },
        format: "jwk",
      });
      secret = new Uint8Array(node.diffieHellman({ privateKey, publicKey: peer }));
    }
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
