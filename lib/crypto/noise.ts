/**
 * The Noise Protocol Framework (revision 34) for the suite `Noise_*_25519_ChaChaPoly_SHA256`
 * (and `Noise_*_25519_AESGCM_SHA256`, to open what older versions sealed), as pure functions of
 * bytes: no sockets here. A {@link HandshakeState} runs one of the
 * interactive fundamental patterns; when it finishes, {@link HandshakeState.session} gives a
 * {@link TransportCipher} per direction and the handshake hash for channel binding.
 *
 * @example
 * ```ts
 * const [a, b] = [await generateKeyPair(), await generateKeyPair()];
 * const xx = { pattern: "XX" } as const;
 * const alice = await HandshakeState.initialize({ ...xx, initiator: true, staticKeyPair: a });
 * const bob = await HandshakeState.initialize({ ...xx, initiator: false, staticKeyPair: b });
 * await bob.readMessage(await alice.writeMessage());
 * await alice.readMessage(await bob.writeMessage());
 * await bob.readMessage(await alice.writeMessage());
 * const { send } = alice.session(); // bob.session().receive decrypts what send encrypts
 * ```
 */
import { concatBytes } from "./bytes.ts";
import { CryptoError } from "./errors.ts";
import {
  type CipherName,
  CipherState,
  KEY_LEN,
  MAX_MESSAGE_LEN,
  TAG_LEN,
  TransportCipher,
} from "./noise_cipher.ts";
import { noiseHkdf, sha256 as sha256Small } from "./sha256_small.ts";
import { dh, DH_LEN, generateKeyPair, type KeyPair } from "./x25519.ts";

export { CRYPTO_ERROR_CODES, CryptoError, type CryptoErrorCode } from "./errors.ts";
export {
  type CipherName,
  CipherState,
  KEY_LEN,
  MAX_MESSAGE_LEN,
  MAX_PLAINTEXT_LEN,
  TAG_LEN,
  TransportCipher,
} from "./noise_cipher.ts";
export {
  DH_LEN,
  exportPrivateKey,
  generateKeyPair,
  type KeyPair,
  keyPairFromPrivateKey,
} from "./x25519.ts";

/** Length in bytes of a SHA-256 digest (Noise's HASHLEN). */
export const HASH_LEN = 32;
/** Length in bytes of a pre-shared key (§9). */
export const PSK_LEN = 32;

const EMPTY = new Uint8Array(0);

/**
 * SHA-256 of the concatenated inputs (Noise's HASH). Synchronous and in plain TypeScript for
 * short inputs (sha256_small.ts): a handshake hashes a dozen of them, and an op per hash (or a
 * trip through WebCrypto's thread pool) costs more than the hashing.
 */
function sha256(...parts: readonly Uint8Array[]): Promise<Uint8Array<ArrayBuffer>> {
  return Promise.resolve(sha256Small(...parts));
}

/**
 * Noise's HKDF (§4.3) with HMAC-SHA256: 2 or 3 outputs of 32 bytes.
 *
 * Noise defines it as temp_key = HMAC(chaining_key, ikm), output1 = HMAC(temp_key, 0x01),
 * output(i) = HMAC(temp_key, output(i-1) || byte(i)). That is exactly RFC 5869 HKDF with
 * salt = chaining_key, empty info and 32·n output bytes (the tests check it against the
 * literal chain); sha256_small.ts computes it with each HMAC key's padded blocks compressed once.
 */
export function hkdf(
  chainingKey: Uint8Array,
  inputKeyMaterial: Uint8Array,
  outputs: 2,
): Promise<[Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>]>;
export function hkdf(
  chainingKey: Uint8Array,
  inputKeyMaterial: Uint8Array,
  outputs: 3,
): Promise<[Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>]>;
export function hkdf(
  chainingKey: Uint8Array,
  inputKeyMaterial: Uint8Array,
  outputs: 2 | 3,
): Promise<Uint8Array<ArrayBuffer>[]> {
  // Synchronous, for the same reason as sha256 above.
  return Promise.resolve(noiseHkdf(chainingKey, inputKeyMaterial, outputs));
}

/**
 * Noise's SymmetricState (§5.2): the chaining key `ck` and handshake hash `h` that absorb every
 * DH result and every byte of the handshake, with the CipherState they key.
 */
export class SymmetricState {
  #ck: Uint8Array;
  #h: Uint8Array;
  #cipher: CipherState;
  readonly #name: CipherName;

  private constructor(ck: Uint8Array, h: Uint8Array, cipher: CipherState) {
    this.#ck = ck;
    this.#h = h;
    this.#cipher = cipher;
    this.#name = cipher.cipher;
  }

  /**
   * Starts from a protocol name (Noise's InitializeSymmetric): h is the name zero-padded to
   * 32 bytes if it fits, else its hash; ck starts equal to h.
   * @param cipher the cipher functions the protocol name names (ChaChaPoly by default).
   */
  static async initialize(
    protocolName: string,
    cipher: CipherName = "ChaChaPoly",
  ): Promise<SymmetricState> {
    const name = new TextEncoder().encode(protocolName);
    let h: Uint8Array;
    if (name.length <= HASH_LEN) {
      h = new Uint8Array(HASH_LEN);
      h.set(name);
    } else {
      h = await sha256(name);
    }
    return new SymmetricState(h, h, new CipherState(undefined, cipher));
  }

  /** The handshake hash h: after the handshake, a unique, secret-free id of the session. */
  get handshakeHash(): Uint8Array {
    return this.#h.slice();
  }

  /** Whether a key has been mixed in, so that static keys and payloads are encrypted. */
  hasKey(): boolean {
    return this.#cipher.hasKey();
  }

  /** Mixes a DH result into the chaining key and rekeys the cipher (Noise's MixKey). */
  async mixKey(inputKeyMaterial: Uint8Array): Promise<void> {
    const [ck, k] = await hkdf(this.#ck, inputKeyMaterial, 2);
    this.#ck = ck;
    this.#cipher = new CipherState(k.subarray(0, KEY_LEN), this.#name);
  }

  /** Mixes data into the handshake hash: h = HASH(h || data) (Noise's MixHash). */
  async mixHash(data: Uint8Array): Promise<void> {
    this.#h = await sha256(this.#h, data);
  }

  /** Mixes a pre-shared key into both ck and h (Noise's MixKeyAndHash). */
  async mixKeyAndHash(inputKeyMaterial: Uint8Array): Promise<void> {
    const [ck, tempH, k] = await hkdf(this.#ck, inputKeyMaterial, 3);
    this.#ck = ck;
    await this.mixHash(tempH);
    this.#cipher = new CipherState(k.subarray(0, KEY_LEN), this.#name);
  }

  /** Encrypts with h as associated data, then mixes the ciphertext into h. */
  async encryptAndHash(plaintext: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    const ciphertext = await this.#cipher.encryptWithAd(this.#h, plaintext);
    await this.mixHash(ciphertext);
    return ciphertext;
  }

  /** Decrypts with h as associated data, then mixes the ciphertext into h (not on failure). */
  async decryptAndHash(ciphertext: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    const plaintext = await this.#cipher.decryptWithAd(this.#h, ciphertext);
    await this.mixHash(ciphertext);
    return plaintext;
  }

  /** Derives the two transport CipherStates, initiator-to-responder first (Noise's Split). */
  async split(): Promise<[CipherState, CipherState]> {
    const [k1, k2] = await hkdf(this.#ck, EMPTY, 2);
    return [
      new CipherState(k1.subarray(0, KEY_LEN), this.#name),
      new CipherState(k2.subarray(0, KEY_LEN), this.#name),
    ];
  }

  /** An independent copy, for rolling back a handshake step that fails. */
  clone(): SymmetricState {
    return new SymmetricState(this.#ck, this.#h, this.#cipher.clone());
  }
}

/** A token of a handshake message (§7.1), or `psk` (§9: the pre-shared key mixed in there). */
export type Token = "e" | "s" | "ee" | "es" | "se" | "ss" | "psk";

/** A handshake pattern: pre-messages (static keys known in advance) and message tokens. */
export interface HandshakePattern {
  /** Keys of the initiator the responder knows before the handshake (`-> s`). */
  readonly initiatorPreMessage: readonly "s"[];
  /** Keys of the responder the initiator knows before the handshake (`<- s`). */
  readonly responderPreMessage: readonly "s"[];
  /** The messages in order; even indexes go initiator to responder. */
  readonly messages: readonly (readonly Token[])[];
}

/**
 * The interactive fundamental patterns of §7.5, keyed by name, and the one-way pattern N of
 * §7.4 (a message sealed to a known recipient key: Confab's offline mail).
 */
export const HANDSHAKE_PATTERNS = {
  N: { initiatorPreMessage: [], responderPreMessage: ["s"], messages: [["e", "es"]] },
  NN: { initiatorPreMessage: [], responderPreMessage: [], messages: [["e"], ["e", "ee"]] },
  NK: {
    initiatorPreMessage: [],
    responderPreMessage: ["s"],
    messages: [["e", "es"], ["e", "ee"]],
  },
  NX: {
    initiatorPreMessage: [],
    responderPreMessage: [],
    messages: [["e"], ["e", "ee", "s", "es"]],
  },
  KN: {
    initiatorPreMessage: ["s"],
    responderPreMessage: [],
    messages: [["e"], ["e", "ee", "se"]],
  },
  KK: {
    initiatorPreMessage: ["s"],
    responderPreMessage: ["s"],
    messages: [["e", "es", "ss"], ["e", "ee", "se"]],
  },
  KX: {
    initiatorPreMessage: ["s"],
    responderPreMessage: [],
    messages: [["e"], ["e", "ee", "se", "s", "es"]],
  },
  XN: {
    initiatorPreMessage: [],
    responderPreMessage: [],
    messages: [["e"], ["e", "ee"], ["s", "se"]],
  },
  XK: {
    initiatorPreMessage: [],
    responderPreMessage: ["s"],
    messages: [["e", "es"], ["e", "ee"], ["s", "se"]],
  },
  XX: {
    initiatorPreMessage: [],
    responderPreMessage: [],
    messages: [["e"], ["e", "ee", "s", "es"], ["s", "se"]],
  },
  IN: {
    initiatorPreMessage: [],
    responderPreMessage: [],
    messages: [["e", "s"], ["e", "ee", "se"]],
  },
  IK: {
    initiatorPreMessage: [],
    responderPreMessage: ["s"],
    messages: [["e", "es", "s", "ss"], ["e", "ee", "se"]],
  },
  IX: {
    initiatorPreMessage: [],
    responderPreMessage: [],
    messages: [["e", "s"], ["e", "ee", "se", "s", "es"]],
  },
  /**
   * NN with a pre-shared key mixed in first (§9.3): only the two holders of the key can
   * finish it; the ephemeral-ephemeral DH gives the session forward secrecy. Confab's
   * resumption of a control connection (the key comes from the previous session).
   */
  NNpsk0: {
    initiatorPreMessage: [],
    responderPreMessage: [],
    messages: [["psk", "e"], ["e", "ee"]],
  },
} as const satisfies Record<string, HandshakePattern>;

/** The name of a supported handshake pattern, e.g. `"XX"`. */
export type HandshakePatternName = keyof typeof HANDSHAKE_PATTERNS;

/**
 * The full Noise protocol name of a pattern in this suite, e.g.
 * `Noise_XX_25519_ChaChaPoly_SHA256`.
 */
export function protocolName(
  pattern: HandshakePatternName,
  cipher: CipherName = "ChaChaPoly",
): string {
  return `Noise_${pattern}_25519_${cipher}_SHA256`;
}

/** How to set up one side of a handshake. */
export interface HandshakeOptions {
  /** The handshake pattern; both sides must use the same one. */
  readonly pattern: HandshakePatternName;
  /**
   * The cipher functions; both sides must use the same ones. `ChaChaPoly` (the default) for
   * everything new; `AESGCM` only to open what protocol version 3 sealed.
   */
  readonly cipher?: CipherName;
  /** True on the side that sends the first message. */
  readonly initiator: boolean;
  /** Data both sides must agree on (e.g. the negotiation that chose the pattern); default empty. */
  readonly prologue?: Uint8Array;
  /** Our static key pair, when the pattern sends or uses it (`s`, `es`, `se`, `ss`). */
  readonly staticKeyPair?: KeyPair;
  /** The peer's static public key, when the pattern has it known in advance (a pre-message). */
  readonly remoteStaticKey?: Uint8Array;
  /** The 32-byte pre-shared key, for the patterns with a `psk` token (and only those). */
  readonly psk?: Uint8Array;
  /**
   * Our ephemeral key pair instead of a fresh random one. Only for test vectors: reusing an
   * ephemeral key across handshakes breaks the security of Noise.
   */
  readonly ephemeralKeyPair?: KeyPair;
}

/** What a finished handshake yields: one cipher per direction and the handshake hash. */
export interface NoiseSession {
  /** Encrypts what we send. */
  readonly send: TransportCipher;
  /** Decrypts what we receive. */
  readonly receive: TransportCipher;
  /** The final handshake hash h, equal on both sides: use it for channel binding. */
  readonly handshakeHash: Uint8Array;
  /** The peer's static public key, when the pattern transmits or pre-shares it. */
  readonly remoteStaticKey: Uint8Array | undefined;
}

interface Snapshot {
  readonly symmetric: SymmetricState;
  readonly e: KeyPair | undefined;
  readonly re: Uint8Array<ArrayBuffer> | undefined;
  readonly rs: Uint8Array<ArrayBuffer> | undefined;
  readonly index: number;
}

/**
 * Noise's HandshakeState (§5.3): one side of a handshake, driven by alternating
 * {@link writeMessage} and {@link readMessage} calls as the pattern dictates. A failing call
 * (a forged message, a bad key) throws and leaves the state as it was before the call.
 */
export class HandshakeState {
  readonly #pattern: HandshakePattern;
  readonly #initiator: boolean;
  readonly #s: KeyPair | undefined;
  readonly #psk: Uint8Array | undefined;
  #symmetric: SymmetricState;
  #e: KeyPair | undefined;
  #re: Uint8Array<ArrayBuffer> | undefined;
  #rs: Uint8Array<ArrayBuffer> | undefined;
  /** Index of the next message of the pattern. */
  #index = 0;
  #busy = false;
  #session: NoiseSession | undefined;

  private constructor(
    options: HandshakeOptions,
    symmetric: SymmetricState,
    rs: Uint8Array<ArrayBuffer> | undefined,
  ) {
    this.#pattern = HANDSHAKE_PATTERNS[options.pattern];
    this.#initiator = options.initiator;
    this.#s = options.staticKeyPair;
    this.#psk = options.psk?.slice();
    this.#e = options.ephemeralKeyPair;
    this.#rs = rs;
    this.#symmetric = symmetric;
  }

  /**
   * Sets up one side (Noise's Initialize): hashes the protocol name, the prologue and the
   * pre-message keys.
   * @throws {TypeError} when a static key the pattern needs is missing, or one it does not
   * use is given (likely a mix-up of patterns).
   */
  static async initialize(options: HandshakeOptions): Promise<HandshakeState> {
    const pattern: HandshakePattern | undefined = HANDSHAKE_PATTERNS[options.pattern];
    if (pattern === undefined) {
      throw new TypeError(
        `unknown Noise pattern ${JSON.stringify(options.pattern)}; supported: ${
          Object.keys(HANDSHAKE_PATTERNS).join(", ")
        }`,
      );
    }
    const { initiator, staticKeyPair, remoteStaticKey } = options;
    const localUsesS = usesStatic(pattern, initiator);
    const remoteHasS = usesStatic(pattern, !initiator);
    const remotePre = initiator ? pattern.responderPreMessage : pattern.initiatorPreMessage;
    if (localUsesS && staticKeyPair === undefined) {
      throw new TypeError(`Noise ${options.pattern} needs our static key pair (staticKeyPair)`);
    }
    if (!localUsesS && staticKeyPair !== undefined) {
      throw new TypeError(`Noise ${options.pattern} does not use our static key pair`);
    }
    if (remotePre.includes("s") && remoteStaticKey === undefined) {
      throw new TypeError(
        `Noise ${options.pattern} needs the peer's static public key in advance ` +
          `(remoteStaticKey)`,
      );
    }
    if (!remotePre.includes("s") && remoteStaticKey !== undefined) {
      throw new TypeError(
        `Noise ${options.pattern} does not take the peer's static key in advance` +
          (remoteHasS ? "; it arrives in the handshake: compare session().remoteStaticKey" : ""),
      );
    }
    const usesPsk = pattern.messages.some((tokens) => tokens.includes("psk"));
    if (usesPsk !== (options.psk !== undefined)) {
      throw new TypeError(
        usesPsk
          ? `Noise ${options.pattern} needs a pre-shared key (psk)`
          : `Noise ${options.pattern} does not use a pre-shared key`,
      );
    }
    if (options.psk !== undefined && options.psk.length !== PSK_LEN) {
      throw new RangeError(`a pre-shared key is ${PSK_LEN} bytes, got ${options.psk.length}`);
    }
    if (remoteStaticKey !== undefined && remoteStaticKey.length !== DH_LEN) {
      throw new RangeError(`a static public key is ${DH_LEN} bytes, got ${remoteStaticKey.length}`);
    }

    const cipher = options.cipher ?? "ChaChaPoly";
    const symmetric = await SymmetricState.initialize(
      protocolName(options.pattern, cipher),
      cipher,
    );
    await symmetric.mixHash(options.prologue ?? EMPTY);
    const rs = remoteStaticKey === undefined ? undefined : remoteStaticKey.slice();
    // Pre-messages are hashed initiator's first, each side using its own key or the peer's.
    const initiatorS = initiator ? staticKeyPair?.publicKey : rs;
    const responderS = initiator ? rs : staticKeyPair?.publicKey;
    for (const _ of pattern.initiatorPreMessage) await symmetric.mixHash(initiatorS!);
    for (const _ of pattern.responderPreMessage) await symmetric.mixHash(responderS!);
    return new HandshakeState(options, symmetric, rs);
  }

  /** What the pattern expects of this side next. */
  get nextStep(): "write" | "read" | "done" {
    if (this.#session !== undefined) return "done";
    return (this.#index % 2 === 0) === this.#initiator ? "write" : "read";
  }

  /** The handshake hash so far; final once {@link nextStep} is `"done"`. */
  get handshakeHash(): Uint8Array {
    return this.#symmetric.handshakeHash;
  }

  /** The peer's static public key, once known (pre-shared or received). */
  get remoteStaticKey(): Uint8Array | undefined {
    return this.#rs?.slice();
  }

  /**
   * Builds the next handshake message, carrying a payload (Noise's WriteMessage). The payload
   * is encrypted once a key exists; in the first message of most patterns it is not, and
   * whether it is authenticated depends on the pattern (§7.7).
   * @throws {RangeError} when the message would exceed {@link MAX_MESSAGE_LEN} bytes.
   * @throws {CryptoError} `WRONG_STATE` when it is the peer's turn or the handshake is over.
   */
  async writeMessage(payload: Uint8Array = EMPTY): Promise<Uint8Array<ArrayBuffer>> {
    return await this.#step("write", async (tokens) => {
      const parts: Uint8Array[] = [];
      for (const token of tokens) {
        if (token === "e") {
          this.#e ??= await generateKeyPair();
          parts.push(this.#e.publicKey);
          await this.#symmetric.mixHash(this.#e.publicKey);
          // With a psk, the ephemeral key also keys the cipher (§9.2).
          if (this.#psk) await this.#symmetric.mixKey(this.#e.publicKey);
        } else if (token === "psk") {
          await this.#symmetric.mixKeyAndHash(this.#psk!);
        } else if (token === "s") {
          parts.push(await this.#symmetric.encryptAndHash(this.#s!.publicKey));
        } else {
          await this.#mixDh(token);
        }
      }
      parts.push(await this.#symmetric.encryptAndHash(payload));
      const message = concatBytes(...parts);
      if (message.length > MAX_MESSAGE_LEN) {
        throw new RangeError(
          `handshake message of ${message.length} bytes exceeds the Noise maximum of ` +
            `${MAX_MESSAGE_LEN}; send a smaller payload`,
        );
      }
      return message;
    });
  }

  /**
   * Processes the peer's next handshake message and returns its payload (Noise's
   * ReadMessage).
   * @throws {CryptoError} `DECRYPT_FAILED`, `INVALID_KEY`, `BAD_MESSAGE` when the message is
   * forged, corrupt or truncated; `WRONG_STATE` when it is our turn or the handshake is over.
   */
  async readMessage(message: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    if (message.length > MAX_MESSAGE_LEN) {
      throw new CryptoError(
        "BAD_MESSAGE",
        `handshake message of ${message.length} bytes exceeds the Noise maximum of ` +
          `${MAX_MESSAGE_LEN}`,
      );
    }
    return await this.#step("read", async (tokens) => {
      let at = 0;
      const take = (length: number): Uint8Array<ArrayBuffer> => {
        if (message.length - at < length) {
          throw new CryptoError(
            "BAD_MESSAGE",
            `handshake message ${this.#index} is truncated: ${message.length} bytes`,
          );
        }
        at += length;
        return message.slice(at - length, at);
      };
      for (const token of tokens) {
        if (token === "e") {
          this.#re = take(DH_LEN);
          await this.#symmetric.mixHash(this.#re);
          if (this.#psk) await this.#symmetric.mixKey(this.#re);
        } else if (token === "psk") {
          await this.#symmetric.mixKeyAndHash(this.#psk!);
        } else if (token === "s") {
          const sealed = take(this.#symmetric.hasKey() ? DH_LEN + TAG_LEN : DH_LEN);
          this.#rs = await this.#symmetric.decryptAndHash(sealed);
        } else {
          await this.#mixDh(token);
        }
      }
      return await this.#symmetric.decryptAndHash(message.subarray(at));
    });
  }

  /**
   * The transport ciphers and handshake hash, once the handshake is done.
   * @throws {CryptoError} `WRONG_STATE` before the last handshake message.
   */
  session(): NoiseSession {
    if (this.#session === undefined) {
      throw new CryptoError(
        "WRONG_STATE",
        `the handshake is not finished: message ${this.#index} of ` +
          `${this.#pattern.messages.length} is next`,
      );
    }
    return this.#session;
  }

  /** Runs one message step atomically: on any error, every field is restored. */
  async #step<T>(
    kind: "write" | "read",
    body: (tokens: readonly Token[]) => Promise<T>,
  ): Promise<T> {
    const next = this.nextStep;
    if (next !== kind) {
      throw new CryptoError(
        "WRONG_STATE",
        next === "done"
          ? `cannot ${kind} a handshake message: the handshake is finished`
          : `cannot ${kind} handshake message ${this.#index}: it is ours to ${next}`,
      );
    }
    if (this.#busy) {
      throw new CryptoError("WRONG_STATE", `another handshake ${kind} is still in progress`);
    }
    this.#busy = true;
    const saved: Snapshot = {
      symmetric: this.#symmetric.clone(),
      e: this.#e,
      re: this.#re,
      rs: this.#rs,
      index: this.#index,
    };
    try {
      const tokens = this.#pattern.messages[this.#index]!;
      const result = await body(tokens);
      this.#index++;
      if (this.#index === this.#pattern.messages.length) await this.#finish();
      return result;
    } catch (error) {
      this.#symmetric = saved.symmetric;
      this.#e = saved.e;
      this.#re = saved.re;
      this.#rs = saved.rs;
      this.#index = saved.index;
      throw error;
    } finally {
      this.#busy = false;
    }
  }

  async #mixDh(token: "ee" | "es" | "se" | "ss"): Promise<void> {
    // "es" is initiator-ephemeral with responder-static; each side names its own key and the
    // peer's counterpart, so the initiator and responder read the token from opposite ends.
    const ours = token[this.#initiator ? 0 : 1] === "e" ? this.#e : this.#s;
    const theirs = token[this.#initiator ? 1 : 0] === "e" ? this.#re : this.#rs;
    if (ours === undefined || theirs === undefined) {
      throw new CryptoError("WRONG_STATE", `token ${token} needs a key that is not known yet`);
    }
    const shared = await dh(ours.privateKey, theirs);
    await this.#symmetric.mixKey(shared);
    shared.fill(0);
  }

  async #finish(): Promise<void> {
    const [initiatorToResponder, responderToInitiator] = await this.#symmetric.split();
    const [send, receive] = this.#initiator
      ? [initiatorToResponder, responderToInitiator]
      : [responderToInitiator, initiatorToResponder];
    this.#session = {
      send: new TransportCipher(send, "send"),
      receive: new TransportCipher(receive, "receive"),
      handshakeHash: this.#symmetric.handshakeHash,
      remoteStaticKey: this.#rs?.slice(),
    };
    // The ephemeral secrets are no longer needed; let them be collected.
    this.#e = undefined;
    this.#re = undefined;
  }
}

/** Whether one side's static key enters the pattern: in a pre-message, sent, or in a DH. */
function usesStatic(pattern: HandshakePattern, initiator: boolean): boolean {
  const pre = initiator ? pattern.initiatorPreMessage : pattern.responderPreMessage;
  if (pre.includes("s")) return true;
  return pattern.messages.some((tokens, index) =>
    tokens.some((token) => {
      if (token === "s") return (index % 2 === 0) === initiator;
      if (token.length !== 2) return false;
      return token[initiator ? 0 : 1] === "s";
    })
  );
}
