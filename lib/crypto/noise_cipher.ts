/**
 * The cipher layer of Noise (revision 34, §5.1) for the `AESGCM` cipher functions: a
 * {@link CipherState} holding a key and a 64-bit nonce counter, and the per-direction
 * {@link TransportCipher} that a finished handshake hands to the networking layer.
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import { bytesOf } from "./bytes.ts";
import { CryptoError } from "./errors.ts";

/**
 * Messages up to this size are sealed and opened with node:crypto, synchronously (≈ 5 µs for a
 * chat line, against ≈ 40 µs for a round trip through WebCrypto's thread pool); larger ones
 * (file chunks) with WebCrypto, which is faster per byte. Both are AES-256-GCM: the bytes are
 * the same either way.
 */
const SYNC_LIMIT = 8 * 1024;

/** Length in bytes of a cipher key (and of SHA-256 output, Noise's HASHLEN). */
export const KEY_LEN = 32;

/** Length in bytes of the AES-GCM authentication tag appended to every ciphertext. */
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

type Outcome =
  | { readonly ok: true; readonly value: Uint8Array<ArrayBuffer> }
  | { readonly ok: false; readonly error: unknown };

/**
 * Noise's CipherState over AES-256-GCM: encrypts and decrypts with associated data under one
 * key and a nonce that counts messages, so no nonce is ever used twice under a key.
 *
 * The AES key is imported into WebCrypto once per key (at construction and at each rekey),
 * not once per message. Inputs must not be modified until the returned promise settles.
 * A CipherState carries one direction of traffic at a time: Noise gives each direction its
 * own, so encrypting while decryptions are in flight is refused.
 */
export class CipherState {
  /** The AES key; a promise so that construction and rekey stay synchronous and ordered. */
  #webKey: Promise<CryptoKey> | undefined;
  /** The raw key, for the synchronous path; dropped after a rekey (WebCrypto only then). */
  #raw: Uint8Array | undefined;

  /** The WebCrypto key, imported from the raw key when first needed. */
  get #key(): Promise<CryptoKey> | undefined {
    if (this.#webKey === undefined && this.#raw !== undefined) {
      this.#webKey = importAesKey(bytesOf(this.#raw));
    }
    return this.#webKey;
  }

  set #key(value: Promise<CryptoKey> | undefined) {
    this.#webKey = value;
  }
  /** The nonce of the next message whose outcome is settled. */
  #n = 0n;
  /** Decryptions started but not yet settled; they have guessed nonces `#n`, `#n + 1`, ... */
  #pendingDecrypts = 0;
  /** Settles after the most recently started decryption, which the next one waits for. */
  #lastDecrypt: Promise<void> = Promise.resolve();

  /**
   * Creates a CipherState with a 32-byte key (Noise's InitializeKey), or with no key, in
   * which case encryption and decryption return their input unchanged, as Noise specifies.
   */
  constructor(key?: Uint8Array) {
    if (key === undefined) return;
    if (key.length !== KEY_LEN) {
      throw new RangeError(`a cipher key is ${KEY_LEN} bytes, got ${key.length}`);
    }
    // The WebCrypto key (for large messages) is imported on first use: a server holds
    // thousands of connections that never carry one, and each key costs memory.
    this.#raw = key.slice();
  }

  /** Whether a key is set (Noise's HasKey). */
  hasKey(): boolean {
    return this.#raw !== undefined || this.#webKey !== undefined;
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
    this.#refuseWhileDecrypting("setNonce");
    this.#n = nonce;
  }

  /**
   * Encrypts a plaintext with associated data under the next nonce (Noise's EncryptWithAd);
   * the nonce is taken when the call is made, so concurrent calls get distinct nonces in call
   * order.
   * @throws {CryptoError} `NONCE_EXHAUSTED` when 2^64-1 messages have been encrypted.
   */
  async encryptWithAd(
    ad: Uint8Array,
    plaintext: Uint8Array,
  ): Promise<Uint8Array<ArrayBuffer>> {
    if (!this.hasKey()) return plaintext.slice();
    this.#refuseWhileDecrypting("encrypt");
    const n = this.#n;
    if (n >= MAX_NONCE) throw exhausted();
    // Taken before the first await: a failure after this burns the nonce rather than reuse it.
    this.#n = n + 1n;
    if (this.#raw !== undefined && plaintext.length <= SYNC_LIMIT) {
      return sealSync(this.#raw, n, ad, plaintext);
    }
    const key = this.#key!;
    return new Uint8Array(
      await crypto.subtle.encrypt(aesParams(n, ad), await key, bytesOf(plaintext)),
    );
  }

  /**
   * {@link encryptWithAd} done at once, on the calling thread, when the message is small
   * enough for that path (a chat line, a control message); `undefined`, with no nonce taken,
   * when it is not (then call {@link encryptWithAd}).
   */
  encryptWithAdNow(ad: Uint8Array, plaintext: Uint8Array): Uint8Array<ArrayBuffer> | undefined {
    if (this.#raw === undefined || plaintext.length > SYNC_LIMIT) return undefined;
    this.#refuseWhileDecrypting("encrypt");
    const n = this.#n;
    if (n >= MAX_NONCE) throw exhausted();
    this.#n = n + 1n;
    return sealSync(this.#raw, n, ad, plaintext);
  }

  /**
   * Decrypts a ciphertext with associated data under the next nonce (Noise's DecryptWithAd).
   * On failure the nonce does not advance, so the genuine message can still be accepted.
   *
   * Calls settle in call order with the result a one-at-a-time caller would see, yet several
   * may be in flight: each starts decrypting under the nonce it would get if all earlier ones
   * succeed, and is redone only if an earlier one failed. A reader can therefore keep many
   * frames decrypting at once, which WebCrypto runs in parallel.
   * @throws {CryptoError} `DECRYPT_FAILED` when authentication fails; `NONCE_EXHAUSTED`.
   */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    if (!this.hasKey()) return Promise.resolve(ciphertext.slice());
    const guess = this.#n + BigInt(this.#pendingDecrypts);
    const raw = this.#raw;
    // The WebCrypto key only for what the synchronous path does not take.
    const key = raw !== undefined && ciphertext.length <= SYNC_LIMIT + TAG_LEN
      ? undefined
      : this.#key;
    const early = guess < MAX_NONCE ? settle(aesOpen(key, raw, guess, ad, ciphertext)) : undefined;
    this.#pendingDecrypts++;
    const result = this.#settleInOrder(this.#lastDecrypt, {
      key,
      raw,
      guess,
      early,
      ad,
      ciphertext,
    });
    this.#lastDecrypt = result.then(ignore, ignore);
    return result;
  }

  async #settleInOrder(
    previous: Promise<void>,
    attempt: {
      readonly key: Promise<CryptoKey> | undefined;
      readonly raw: Uint8Array | undefined;
      readonly guess: bigint;
      readonly early: Promise<Outcome> | undefined;
      readonly ad: Uint8Array;
      readonly ciphertext: Uint8Array;
    },
  ): Promise<Uint8Array<ArrayBuffer>> {
    try {
      await previous;
      // Always wait for the early attempt, even when discarding it: no WebCrypto work may
      // outlive the call (the test sanitizers would report it as a leaked op).
      const early = await attempt.early;
      const n = this.#n;
      if (n >= MAX_NONCE) throw exhausted();
      const outcome = early !== undefined && n === attempt.guess
        ? early
        : await settle(aesOpen(attempt.key, attempt.raw, n, attempt.ad, attempt.ciphertext));
      if (!outcome.ok) {
        throw new CryptoError(
          "DECRYPT_FAILED",
          `message ${n} failed authentication (tampered, replayed, reordered or wrong key)`,
          { cause: outcome.error },
        );
      }
      this.#n = n + 1n;
      return outcome.value;
    } finally {
      this.#pendingDecrypts--;
    }
  }

  /**
   * Replaces the key with one derived from it (Noise's Rekey: the first 32 bytes of
   * encrypting 32 zero bytes under nonce 2^64-1); the nonce is kept. Both ends must rekey
   * after the same message. Calls made after this one use the new key.
   */
  rekey(): void {
    const old = this.#key;
    if (old === undefined) throw new CryptoError("WRONG_STATE", "cannot rekey without a key");
    this.#raw = undefined;
    this.#key = old.then(async (key) => {
      const derived = new Uint8Array(
        await crypto.subtle.encrypt(aesParams(MAX_NONCE, EMPTY), key, new Uint8Array(KEY_LEN)),
      );
      const next = await importAesKey(derived.subarray(0, KEY_LEN));
      derived.fill(0);
      return next;
    });
  }

  /** An independent copy, for rolling back a handshake step that fails. */
  clone(): CipherState {
    this.#refuseWhileDecrypting("clone");
    const copy = new CipherState();
    copy.#webKey = this.#webKey;
    copy.#raw = this.#raw;
    copy.#n = this.#n;
    return copy;
  }

  #refuseWhileDecrypting(what: string): void {
    if (this.#pendingDecrypts > 0) {
      throw new CryptoError(
        "WRONG_STATE",
        `cannot ${what} while decryptions are in flight on the same CipherState`,
      );
    }
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
   */
  encrypt(plaintext: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    if (this.#direction !== "send") {
      return Promise.reject(new TypeError("encrypt() called on the receiving cipher"));
    }
    if (plaintext.length > MAX_PLAINTEXT_LEN) {
      return Promise.reject(
        new RangeError(
          `a Noise transport message carries at most ${MAX_PLAINTEXT_LEN} bytes, got ` +
            `${plaintext.length} (split it into several messages)`,
        ),
      );
    }
    return this.#cipher.encryptWithAd(EMPTY, plaintext);
  }

  /**
   * {@link encrypt} done at once when the message is small (see
   * `CipherState.encryptWithAdNow`); `undefined`, with no nonce taken, when it is not.
   */
  encryptNow(plaintext: Uint8Array): Uint8Array<ArrayBuffer> | undefined {
    if (this.#direction !== "send") throw new TypeError("encrypt() called on the receiving cipher");
    return this.#cipher.encryptWithAdNow(EMPTY, plaintext);
  }

  /**
   * Decrypts the next transport message; a failure leaves the cipher as it was.
   * @throws {CryptoError} `DECRYPT_FAILED`, `BAD_MESSAGE` (oversized), `NONCE_EXHAUSTED`.
   */
  decrypt(ciphertext: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    if (this.#direction !== "receive") {
      return Promise.reject(new TypeError("decrypt() called on the sending cipher"));
    }
    if (ciphertext.length > MAX_MESSAGE_LEN) {
      return Promise.reject(
        new CryptoError(
          "BAD_MESSAGE",
          `a Noise message is at most ${MAX_MESSAGE_LEN} bytes, got ${ciphertext.length}`,
        ),
      );
    }
    return this.#cipher.decryptWithAd(EMPTY, ciphertext);
  }

  /** Derives the next key of this direction (Noise's Rekey); the peer must do the same. */
  rekey(): void {
    this.#cipher.rekey();
  }
}

function importAesKey(key: Uint8Array<ArrayBuffer>): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]);
}

/** AES-GCM parameters for a nonce: 4 zero bytes, then the counter big-endian (§12.3). */
function aesParams(n: bigint, ad: Uint8Array): AesGcmParams {
  const iv = new Uint8Array(12);
  new DataView(iv.buffer).setBigUint64(4, n, false);
  return { name: "AES-GCM", iv, additionalData: bytesOf(ad), tagLength: TAG_LEN * 8 };
}

function nonceBytes(n: bigint): Uint8Array {
  const iv = new Uint8Array(12);
  new DataView(iv.buffer).setBigUint64(4, n, false);
  return iv;
}

/** AES-256-GCM seal on the calling thread (node:crypto): ciphertext then the 16-byte tag. */
function sealSync(
  raw: Uint8Array,
  n: bigint,
  ad: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const cipher = createCipheriv("aes-256-gcm", raw, nonceBytes(n), { authTagLength: TAG_LEN });
  cipher.setAAD(ad);
  const body = cipher.update(plaintext);
  const last = cipher.final();
  const tag = cipher.getAuthTag();
  const out = new Uint8Array(body.length + last.length + tag.length);
  out.set(body);
  out.set(last, body.length);
  out.set(tag, body.length + last.length);
  return out;
}

/** AES-256-GCM open on the calling thread; throws when authentication fails. */
function openSync(
  raw: Uint8Array,
  n: bigint,
  ad: Uint8Array,
  ciphertext: Uint8Array,
): Uint8Array<ArrayBuffer> {
  if (ciphertext.length < TAG_LEN) throw new CryptoError("BAD_MESSAGE", "shorter than its tag");
  const decipher = createDecipheriv("aes-256-gcm", raw, nonceBytes(n), {
    authTagLength: TAG_LEN,
  });
  decipher.setAAD(ad);
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - TAG_LEN));
  const body = decipher.update(ciphertext.subarray(0, ciphertext.length - TAG_LEN));
  const last = decipher.final();
  const out = new Uint8Array(body.length + last.length);
  out.set(body);
  out.set(last, body.length);
  return out;
}

function aesOpen(
  key: Promise<CryptoKey> | undefined,
  raw: Uint8Array | undefined,
  n: bigint,
  ad: Uint8Array,
  ciphertext: Uint8Array,
): Promise<Uint8Array<ArrayBuffer>> {
  if (raw !== undefined && ciphertext.length <= SYNC_LIMIT + TAG_LEN) {
    try {
      return Promise.resolve(openSync(raw, n, ad, ciphertext));
    } catch (error) {
      return Promise.reject(error);
    }
  }
  return aesOpenAsync(key!, n, ad, ciphertext);
}

async function aesOpenAsync(
  key: Promise<CryptoKey>,
  n: bigint,
  ad: Uint8Array,
  ciphertext: Uint8Array,
): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(
    await crypto.subtle.decrypt(aesParams(n, ad), await key, bytesOf(ciphertext)),
  );
}

/** Turns a rejection into a value, so a promise nobody may await never rejects unhandled. */
function settle(promise: Promise<Uint8Array<ArrayBuffer>>): Promise<Outcome> {
  return promise.then(
    (value) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, error }),
  );
}

function exhausted(): CryptoError {
  return new CryptoError(
    "NONCE_EXHAUSTED",
    "the message counter reached 2^64-1; run a new handshake",
  );
}

function ignore(): void {}
