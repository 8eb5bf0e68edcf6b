/**
 * The cipher layer of Noise (revision 34, §5.1): a {@link CipherState} holding a key and a
 * 64-bit nonce counter, and the per-direction {@link TransportCipher} that a finished handshake
 * hands to the networking layer.
 *
 * Confab speaks the `ChaChaPoly` cipher functions (ChaCha20-Poly1305, RFC 8439). `AESGCM`
 * (AES-256-GCM) is kept only to open offline mail sealed by protocol version 3, which may still
 * wait in a server's store after an upgrade.
 */
import { nodeCrypto, requireNodeCrypto } from "./node_crypto.ts";
import { CryptoError } from "./errors.ts";
import { freeNow } from "../util/free.ts";
import { openSmall, sealSmall, SMALL_AEAD, SMALL_MAX } from "./chacha_small.ts";

/**
 * The Noise cipher functions: `ChaChaPoly` for everything Confab seals, `AESGCM` for opening
 * what older versions sealed. Both run on the calling thread: short ChaChaPoly messages in
 * TypeScript (chacha_small.ts), long ones through node:crypto, which seals a 64 KiB file chunk
 * in ≈ 80 µs of CPU, against ≈ 170-290 µs for WebCrypto's AES-256-GCM (which also costs a hop
 * through its thread pool per message). node:crypto is loaded on first need (node_crypto.ts):
 * until then long ChaChaPoly messages go through the TypeScript code too, and AESGCM is only
 * used after an explicit load.
 */
export type CipherName = "ChaChaPoly" | "AESGCM";

const CIPHER_NAMES: readonly string[] = ["ChaChaPoly", "AESGCM"] satisfies CipherName[];

/** Length in bytes of a cipher key (and of SHA-256 output, Noise's HASHLEN). */
export const KEY_LEN = 32;

/** Length in bytes of the authentication tag appended to every ciphertext (both ciphers). */
export const TAG_LEN = 16;

/** The largest Noise message in bytes (§3): handshake and transport messages alike. */
export const MAX_MESSAGE_LEN = 65535;

/** The largest transport plaintext in bytes: a maximal message minus the tag. */
export const MAX_PLAINTEXT_LEN = MAX_MESSAGE_LEN - TAG_LEN;

/**
 * 2^64-1: Noise reserves this nonce for {@link CipherState.rekey}, so a counter that reaches
 * it is used up.
 */
const MAX_NONCE = 0xffff_ffff_ffff_ffffn;

const EMPTY = new Uint8Array(0);

/**
 * Noise's CipherState: encrypts and decrypts with associated data under one key and a nonce
 * that counts messages, so no nonce is ever used twice under a key. Every operation completes
 * on the calling thread, so messages are sealed and opened strictly in call order; the
 * promise-returning methods are the same work for callers that await.
 */
export class CipherState {
  #key: Uint8Array | undefined;
  readonly #cipher: CipherName;
  /** The nonce of the next message. */
  #n = 0n;

  /**
   * Creates a CipherState with a 32-byte key (Noise's InitializeKey), or with no key, in
   * which case encryption and decryption return their input unchanged, as Noise specifies.
   * @param cipher the cipher functions; `ChaChaPoly` unless opening what an older version sealed.
   */
  constructor(key?: Uint8Array, cipher: CipherName = "ChaChaPoly") {
    if (!CIPHER_NAMES.includes(cipher)) {
      throw new TypeError(
        `unknown Noise cipher ${JSON.stringify(cipher)}; known: ChaChaPoly, AESGCM`,
      );
    }
    this.#cipher = cipher;
    if (key === undefined) return;
    if (key.length !== KEY_LEN) {
      throw new RangeError(`a cipher key is ${KEY_LEN} bytes, got ${key.length}`);
    }
    this.#key = key.slice();
  }

  /** The cipher functions this state uses. */
  get cipher(): CipherName {
    return this.#cipher;
  }

  /** Whether a key is set (Noise's HasKey). */
  hasKey(): boolean {
    return this.#key !== undefined;
  }

  /** The nonce the next message will use. */
  get nonce(): bigint {
    return this.#n;
  }

  /** Sets the nonce (Noise's SetNonce), for transports that number messages themselves. */
  setNonce(nonce: bigint): void {
    if (nonce < 0n || nonce > MAX_NONCE) {
      throw new RangeError(`a nonce is a 64-bit unsigned integer, got ${nonce}`);
    }
    this.#n = nonce;
  }

  /**
   * Encrypts a plaintext with associated data under the next nonce (Noise's EncryptWithAd).
   * @throws {CryptoError} `NONCE_EXHAUSTED` when 2^64-1 messages have been encrypted.
   */
  encryptWithAdNow(ad: Uint8Array, plaintext: Uint8Array): Uint8Array<ArrayBuffer> {
    const key = this.#key;
    if (key === undefined) return plaintext.slice();
    const n = this.#n;
    if (n >= MAX_NONCE) throw exhausted();
    this.#n = n + 1n;
    return seal(this.#cipher, key, n, ad, plaintext);
  }

  /**
   * {@link encryptWithAdNow} into `out` from byte `at` (ciphertext, then the tag), so a caller
   * that frames many messages reuses one buffer instead of taking a fresh one per message.
   * @returns the bytes written: the plaintext's length plus {@link TAG_LEN} (plus 0 without a key).
   * @throws {RangeError} when `out` has no room; {@link CryptoError} `NONCE_EXHAUSTED`.
   */
  encryptWithAdInto(ad: Uint8Array, plaintext: Uint8Array, out: Uint8Array, at: number): number {
    const key = this.#key;
    const length = plaintext.length + (key === undefined ? 0 : TAG_LEN);
    if (at < 0 || at + length > out.length) {
      throw new RangeError(`no room for ${length} bytes at ${at} in a buffer of ${out.length}`);
    }
    if (key === undefined) {
      out.set(plaintext, at);
      return length;
    }
    const n = this.#n;
    if (n >= MAX_NONCE) throw exhausted();
    this.#n = n + 1n;
    sealInto(this.#cipher, key, nonceBytes(this.#cipher, n), ad, plaintext, out, at);
    return length;
  }

  /** {@link encryptWithAdNow}, as a promise (a failure rejects it). */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    return promised(() => this.encryptWithAdNow(ad, plaintext));
  }

  /**
   * Decrypts a ciphertext with associated data under the next nonce (Noise's DecryptWithAd).
   * On failure the nonce does not advance, so the genuine message can still be accepted.
   * @throws {CryptoError} `DECRYPT_FAILED` when authentication fails; `NONCE_EXHAUSTED`.
   */
  decryptWithAdNow(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array<ArrayBuffer> {
    const key = this.#key;
    if (key === undefined) return ciphertext.slice();
    const n = this.#n;
    if (n >= MAX_NONCE) throw exhausted();
    const plaintext = open(this.#cipher, key, n, ad, ciphertext);
    this.#n = n + 1n;
    return plaintext;
  }

  /** {@link decryptWithAdNow}, as a promise (a failure rejects it). */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    return promised(() => this.decryptWithAdNow(ad, ciphertext));
  }

  /**
   * Replaces the key with one derived from it (Noise's Rekey: the first 32 bytes of
   * encrypting 32 zero bytes under nonce 2^64-1 with empty associated data); the nonce is
   * kept. Both ends must rekey after the same message.
   */
  rekey(): void {
    const key = this.#key;
    if (key === undefined) throw new CryptoError("WRONG_STATE", "cannot rekey without a key");
    const derived = seal(this.#cipher, key, MAX_NONCE, EMPTY, new Uint8Array(KEY_LEN));
    key.fill(0);
    this.#key = derived.slice(0, KEY_LEN);
    derived.fill(0);
  }

  /** An independent copy, for rolling back a handshake step that fails. */
  clone(): CipherState {
    const copy = new CipherState(undefined, this.#cipher);
    copy.#key = this.#key?.slice();
    copy.#n = this.#n;
    return copy;
  }
}

/**
 * One direction of a Noise session after the handshake: the sending side encrypts, the
 * receiving side decrypts, with empty associated data as Noise transport messages have.
 */
export class TransportCipher {
  readonly #cipher: CipherState;
  readonly #direction: "send" | "receive";

  /** Wraps the CipherState of one direction, as returned by Noise's Split. */
  constructor(cipher: CipherState, direction: "send" | "receive") {
    if (!cipher.hasKey()) throw new TypeError("a transport cipher needs a keyed CipherState");
    this.#cipher = cipher;
    this.#direction = direction;
  }

  /** Which way the traffic under this cipher flows. */
  get direction(): "send" | "receive" {
    return this.#direction;
  }

  /** The number of messages this cipher has processed (the next nonce). */
  get nonce(): bigint {
    return this.#cipher.nonce;
  }

  /**
   * Encrypts one transport message of at most {@link MAX_PLAINTEXT_LEN} bytes; messages must
   * be sent in the order of the calls.
   * @throws {TypeError} on the receiving cipher; {@link RangeError} when too large.
   */
  encryptNow(plaintext: Uint8Array): Uint8Array<ArrayBuffer> {
    this.#checkSend(plaintext);
    return this.#cipher.encryptWithAdNow(EMPTY, plaintext);
  }

  #checkSend(plaintext: Uint8Array): void {
    if (this.#direction !== "send") throw new TypeError("encrypt() called on the receiving cipher");
    if (plaintext.length > MAX_PLAINTEXT_LEN) {
      throw new RangeError(
        `a Noise transport message carries at most ${MAX_PLAINTEXT_LEN} bytes, got ` +
          `${plaintext.length} (split it into several messages)`,
      );
    }
  }

  /**
   * {@link encryptNow} into `out` from byte `at`; returns the bytes written (plaintext + tag).
   * @throws {TypeError} on the receiving cipher; {@link RangeError} when too large or no room.
   */
  encryptInto(plaintext: Uint8Array, out: Uint8Array, at: number): number {
    this.#checkSend(plaintext);
    return this.#cipher.encryptWithAdInto(EMPTY, plaintext, out, at);
  }

  /** {@link encryptNow}, as a promise (a failure rejects it). */
  encrypt(plaintext: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    return promised(() => this.encryptNow(plaintext));
  }

  /**
   * Decrypts the next transport message; a failure leaves the cipher as it was.
   * @throws {CryptoError} `DECRYPT_FAILED`, `BAD_MESSAGE` (oversized), `NONCE_EXHAUSTED`;
   * {@link TypeError} on the sending cipher.
   */
  decryptNow(ciphertext: Uint8Array): Uint8Array<ArrayBuffer> {
    if (this.#direction !== "receive") {
      throw new TypeError("decrypt() called on the sending cipher");
    }
    if (ciphertext.length > MAX_MESSAGE_LEN) {
      throw new CryptoError(
        "BAD_MESSAGE",
        `a Noise message is at most ${MAX_MESSAGE_LEN} bytes, got ${ciphertext.length}`,
      );
    }
    return this.#cipher.decryptWithAdNow(EMPTY, ciphertext);
  }

  /** {@link decryptNow}, as a promise (a failure rejects it). */
  decrypt(ciphertext: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    return promised(() => this.decryptNow(ciphertext));
  }

  /** Derives the next key of this direction (Noise's Rekey); the peer must do the same. */
  rekey(): void {
    this.#cipher.rekey();
  }
}

/**
 * The 96-bit nonce of message n: 4 zero bytes, then the counter, little-endian for ChaChaPoly
 * and big-endian for AESGCM (§12.3, §12.4).
 */
function nonceBytes(cipher: CipherName, n: bigint): Uint8Array {
  // One buffer for every call: node:crypto copies the nonce before returning, and a fresh
  // array and view per message showed in the server's profile (garbage on every frame).
  NONCE_VIEW.setBigUint64(4, n, cipher === "ChaChaPoly");
  return NONCE;
}

const NONCE = new Uint8Array(12);
const NONCE_VIEW = new DataView(NONCE.buffer);

/** Seals on the calling thread: ciphertext, then the 16-byte tag. */
function seal(
  name: CipherName,
  key: Uint8Array,
  n: bigint,
  ad: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array<ArrayBuffer> {
  return sealWithNonce(name, key, nonceBytes(name, n), ad, plaintext);
}

/**
 * Seals with a 12-byte nonce the caller chose, outside any CipherState: for a key that seals
 * few messages, each under a random nonce (the server's resumption tickets). Ciphertext, then
 * the 16-byte tag.
 */
export function sealWithNonce(
  name: CipherName,
  key: Uint8Array,
  iv: Uint8Array,
  ad: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(plaintext.length + TAG_LEN);
  sealInto(name, key, iv, ad, plaintext, out, 0);
  return out;
}

/** The AEAD options of every seal and open: a 16-byte tag. */
const AEAD_OPTIONS = { authTagLength: TAG_LEN };

/** Seals into `out` from `at` (room checked by the caller): ciphertext, then the 16-byte tag. */
function sealInto(
  name: CipherName,
  key: Uint8Array,
  iv: Uint8Array,
  ad: Uint8Array,
  plaintext: Uint8Array,
  out: Uint8Array,
  at: number,
): void {
  if (name === "ChaChaPoly" && SMALL_AEAD && (plaintext.length <= SMALL_MAX || !nodeCrypto())) {
    // A control message: no cipher object (and its garbage) for it, see chacha_small.ts. A
    // longer one too while node:crypto is not loaded (node_crypto.ts): slower per byte, but a
    // process that only chats never pays for loading it.
    sealSmall(key, iv, ad, plaintext, out, at);
    return;
  }
  const cipher = name === "ChaChaPoly"
    ? requireNodeCrypto().createCipheriv("chacha20-poly1305", key, iv, AEAD_OPTIONS)
    : requireNodeCrypto().createCipheriv("aes-256-gcm", key, iv, AEAD_OPTIONS);
  if (ad.length > 0) cipher.setAAD(ad, { plaintextLength: plaintext.length });
  const body = cipher.update(plaintext);
  const last = cipher.final();
  out.set(body, at);
  out.set(last, at + body.length);
  out.set(cipher.getAuthTag(), at + body.length + last.length);
  freeNow(body); // a file chunk's worth, garbage from here on: freed now, not at the next GC
}

/** Opens message `n` on the calling thread. @throws {CryptoError} `DECRYPT_FAILED` */
function open(
  name: CipherName,
  key: Uint8Array,
  n: bigint,
  ad: Uint8Array,
  ciphertext: Uint8Array,
): Uint8Array<ArrayBuffer> {
  try {
    return openWithNonce(name, key, nonceBytes(name, n), ad, ciphertext);
  } catch (error) {
    throw new CryptoError(
      "DECRYPT_FAILED",
      `message ${n} failed authentication (tampered, replayed, reordered or wrong key)`,
      { cause: error },
    );
  }
}

/**
 * Opens what {@link sealWithNonce} sealed.
 * @throws {CryptoError} `BAD_MESSAGE` when shorter than a tag; the cipher's error when the tag
 * does not verify (tampered, or another key, nonce or associated data).
 */
export function openWithNonce(
  name: CipherName,
  key: Uint8Array,
  iv: Uint8Array,
  ad: Uint8Array,
  ciphertext: Uint8Array,
): Uint8Array<ArrayBuffer> {
  if (ciphertext.length < TAG_LEN) {
    throw new CryptoError("BAD_MESSAGE", `${ciphertext.length} bytes: shorter than a tag`);
  }
  if (
    name === "ChaChaPoly" && SMALL_AEAD &&
    (ciphertext.length - TAG_LEN <= SMALL_MAX || !nodeCrypto())
  ) {
    return openSmall(key, iv, ad, ciphertext);
  }
  const decipher = name === "ChaChaPoly"
    ? requireNodeCrypto().createDecipheriv("chacha20-poly1305", key, iv, AEAD_OPTIONS)
    : requireNodeCrypto().createDecipheriv("aes-256-gcm", key, iv, AEAD_OPTIONS);
  if (ad.length > 0) decipher.setAAD(ad, { plaintextLength: ciphertext.length - TAG_LEN });
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - TAG_LEN));
  const body = decipher.update(ciphertext.subarray(0, ciphertext.length - TAG_LEN));
  const last = decipher.final();
  // The output is handed on as is when it owns its memory (no copy of a file chunk), and
  // copied when it is a view into a shared pool.
  if (last.length === 0 && body.byteOffset === 0 && body.buffer.byteLength === body.length) {
    return new Uint8Array(body.buffer as ArrayBuffer);
  }
  const out = new Uint8Array(body.length + last.length);
  out.set(body);
  out.set(last, body.length);
  return out;
}

/** The result of a synchronous call as a promise; what it throws rejects the promise. */
function promised<T>(call: () => T): Promise<T> {
  try {
    return Promise.resolve(call());
  } catch (error) {
    return Promise.reject(error);
  }
}

function exhausted(): CryptoError {
  return new CryptoError(
    "NONCE_EXHAUSTED",
    "the message counter reached 2^64-1; run a new handshake",
  );
}
