/**
 * node:crypto, loaded when first needed rather than at start-up. Importing it makes Deno load
 * its Node compatibility scripts, ≈ 40-45 ms of CPU in every process that does (measured: an
 * empty program 28 ms, one importing node:crypto 70 ms), while a client that only logs in and
 * chats never needs it: X25519 goes through WebCrypto, and SHA-256, HMAC, HKDF and
 * ChaCha20-Poly1305 have TypeScript versions (sha256_small.ts, chacha_small.ts). What does need
 * it (the bulk cipher of file chunks, file hashes, AESGCM for old sealed mail, the server's
 * scrypt) awaits {@link loadNodeCrypto} first; code that can do without it asks
 * {@link nodeCrypto} and takes the TypeScript way while it is not there.
 */
import type * as NodeCrypto from "node:crypto";

export type NodeCryptoModule = typeof NodeCrypto;

let loaded: NodeCryptoModule | undefined;
let loading: Promise<NodeCryptoModule> | undefined;

/** node:crypto once {@link loadNodeCrypto} has finished, undefined before. */
export function nodeCrypto(): NodeCryptoModule | undefined {
  return loaded;
}

/** Loads node:crypto (once; later calls get the same module). */
export function loadNodeCrypto(): Promise<NodeCryptoModule> {
  return loading ??= import("node:crypto").then((module) => loaded = module);
}

/**
 * node:crypto, which the caller's path loaded before.
 * @throws {Error} when it was not loaded: a bug in the caller, which must await
 * {@link loadNodeCrypto} before it gets here.
 */
export function requireNodeCrypto(): NodeCryptoModule {
  if (loaded === undefined) {
    throw new Error("node:crypto is needed here and was not loaded first (loadNodeCrypto)");
  }
  return loaded;
}
