/**
 * End-to-end encrypted offline mail. A message for a user who is away is sealed to their mail
 * key (X25519) so that only they can read it, and authenticated as its sender's: the server
 * stores and forwards the sealed text; it can read none of it and forge none of it.
 *
 * Since protocol version 6 mail is sealed in **bursts** ({@link MailSealer}): the messages from
 * one sender to one recipient within a minute share one ephemeral key, one DH with the mail key
 * and one Ed25519 signature by the sender's identity key over the burst statement (sender,
 * recipient, mail key, ephemeral key, start time); each message is ChaCha20-Poly1305 under the
 * burst key, its number in the burst as the nonce, its number, id and time as associated data.
 *
 * Mail sealed alone by versions 3 to 5 (the Noise pattern N, each message with its own
 * ephemeral key and signed on its own; version 3 with AESGCM) may still wait in a server's store
 * after an upgrade, so it still opens: a text that does not begin with the burst prefix is one
 * of those. Its 48-byte header authenticates its suite (the protocol name is hashed into the
 * tag), so a header that fails under ChaChaPoly is tried once under AESGCM, and whichever
 * authenticates decides. Nothing new is ever sealed alone.
 *
 * Burst form (base64url): `CfMB` (3 bytes), format 1 (1 byte), the ephemeral key (32), the
 * burst's start (8, ms, big-endian), the signature (64): 144 characters, the same for every
 * message of the burst; then the message's number (4, big-endian) and the ciphertext with its
 * tag. Single form: the N handshake message (48 bytes: ephemeral key and the tag of an empty
 * payload), then the payload as Noise transport messages of at most 65,535 bytes.
 */
import {
  type CipherName,
  CipherState,
  CryptoError,
  exportPrivateKey,
  generateKeyPair,
  HandshakeState,
  KEY_LEN,
  type KeyPair,
  keyPairFromPrivateKey,
  TAG_LEN,
} from "../crypto/noise.ts";
import { dirname } from "../util/paths.ts";
import { dh } from "../crypto/x25519.ts";
import { hkdfSha256 } from "../crypto/sha256_small.ts";
import { loadNodeCrypto } from "../crypto/node_crypto.ts";
import { openFrame } from "../net/sealed_frames.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";
import { type Identity, verifySignature } from "./identity.ts";
export { mailKeyStatement } from "../crypto/ed25519.ts";

const PROLOGUE = new TextEncoder().encode("confab-mail-v1");
const HEADER_LENGTH = 48;

export interface MailContent {
  from: string;
  to: string;
  msgId: string;
  ts: number;
  text: string;
}

/** The mail key pair of a user: X25519, kept beside the identity key. */
export class MailKey {
  private constructor(readonly pair: KeyPair, readonly publicKey: string) {}

  static async generate(): Promise<MailKey> {
    const pair = await generateKeyPair();
    return new MailKey(pair, toBase64Url(pair.publicKey));
  }

  static async fromPrivate(raw: string): Promise<MailKey> {
    const pair = await keyPairFromPrivateKey(fromBase64Url(raw));
    return new MailKey(pair, toBase64Url(pair.publicKey));
  }

  async exportPrivate(): Promise<string> {
    return toBase64Url(await exportPrivateKey(this.pair));
  }

  /** Loads a key saved by {@link MailKey.save}; undefined when there is none. */
  static async load(path: string): Promise<MailKey | undefined> {
    try {
      const data = JSON.parse(await Deno.readTextFile(path)) as { privateKey: string };
      return await MailKey.fromPrivate(data.privateKey);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      throw error;
    }
  }

  /** Writes the key with owner-only permissions (temp file, then rename). */
  async save(path: string): Promise<void> {
    await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const body = JSON.stringify({
      algorithm: "X25519",
      publicKey: this.publicKey,
      privateKey: await this.exportPrivate(),
    });
    const tmp = `${path}.tmp`;
    // Sync: the async write loads web streams, ~3 ms of CPU for a few bytes.
    Deno.writeTextFileSync(tmp, body + "\n", { mode: 0o600 });
    await Deno.rename(tmp, path);
  }
}

function signedBytes(m: MailContent): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(
    JSON.stringify([
      "confab-mail-v1",
      m.from.toLowerCase(),
      m.to.toLowerCase(),
      m.msgId,
      m.ts,
      m.text,
    ]),
  );
}

// ---- bursts (protocol version 6) ------------------------------------------------------------

/** The first 4 characters of every burst-sealed message (3 bytes), then a format byte. */
const BURST_PREFIX = "CfMB";
const BURST_FORMAT = 1;
const MAGIC = fromBase64Url(BURST_PREFIX);
/** prefix 3 + format 1 + ephemeral key 32 + created 8 + signature 64: 144 base64url characters. */
const BURST_HEADER_LENGTH = 108;
const BURST_HEADER_CHARS = (BURST_HEADER_LENGTH / 3) * 4;
const SEQ_LENGTH = 4;

/** A burst's key is used for at most this many messages, */
export const BURST_MAX_MESSAGES = 100_000;
/** and for at most this long after it was made; then the next message starts a new burst. */
export const BURST_MAX_AGE_MS = 60_000;
/** Bursts a sealer or an opener keeps at once (one per recipient, or per sender's burst). */
const MAX_BURSTS = 1024;

/**
 * What the sender signs once per burst: who writes to whom, the recipient's mail key, the
 * burst's ephemeral key and when the burst began (names lower-cased). The burst key is derived
 * from it too, so each message's tag also covers every field.
 */
function burstStatement(b: {
  from: string;
  to: string;
  mailKey: string;
  ephemeral: string;
  created: number;
}): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(
    `confab-mail-burst-v1\n${b.from.toLowerCase()}\n${b.to.toLowerCase()}\n${b.mailKey}\n` +
      `${b.ephemeral}\n${b.created}`,
  );
}

/** The burst key: HKDF-SHA256 of the X25519 secret, with the statement as its info. */
function burstKey(secret: Uint8Array, statement: Uint8Array): Uint8Array<ArrayBuffer> {
  return hkdfSha256(secret, statement).subarray(0, KEY_LEN);
}

/**
 * The associated data of message `seq` of a burst: its number, id and time, so a message
 * cannot be given another message's envelope, number or place.
 */
function messageAd(seq: number, msgId: string, ts: number): Uint8Array {
  return new TextEncoder().encode(`${seq}\n${msgId}\n${ts}`);
}

interface Burst {
  /** The header as base64url: the first 144 characters of each of its messages. */
  header: string;
  key: Uint8Array;
  created: number;
  next: number;
}

/**
 * Seals offline mail in bursts: the messages from one sender to one recipient within a minute
 * share one ephemeral X25519 key, one DH and one Ed25519 signature over the burst statement;
 * each message is ChaCha20-Poly1305 under the burst key with its own nonce (its number in the
 * burst) and its number, id and time as associated data. The ephemeral private key is dropped
 * once the burst key is derived; the burst key stays in memory until a new burst replaces it.
 */
export class MailSealer {
  readonly #identity: Identity;
  readonly #bursts = new Map<string, Burst>();
  readonly #making = new Map<string, Promise<Burst>>();
  readonly #now: () => number;
  readonly #maxMessages: number;

  /**
   * @param options `now` (the clock) and `maxMessages` (a burst's length, at most
   * {@link BURST_MAX_MESSAGES}), for tests.
   */
  constructor(identity: Identity, options: { now?: () => number; maxMessages?: number } = {}) {
    this.#identity = identity;
    this.#now = options.now ?? Date.now;
    this.#maxMessages = Math.min(options.maxMessages ?? BURST_MAX_MESSAGES, BURST_MAX_MESSAGES);
  }

  /** Seals a message to the recipient's mail key, in the current burst to them. */
  async seal(content: MailContent, recipientMailKey: string): Promise<string> {
    const plaintext = new TextEncoder().encode(JSON.stringify({ text: content.text }));
    for (;;) {
      const burst = await this.#burstFor(content, recipientMailKey);
      if (burst.next >= this.#maxMessages) continue; // used up while this call waited
      // From here on synchronous: numbers are taken in the order the seals were asked for.
      const seq = burst.next++;
      const cipher = new CipherState(burst.key);
      cipher.setNonce(BigInt(seq));
      const body = cipher.encryptWithAdNow(messageAd(seq, content.msgId, content.ts), plaintext);
      const tail = new Uint8Array(SEQ_LENGTH + body.length);
      new DataView(tail.buffer).setUint32(0, seq);
      tail.set(body, SEQ_LENGTH);
      return burst.header + toBase64Url(tail);
    }
  }

  /** The current burst to the recipient, or a new one when it is used up or too old. */
  #burstFor(content: MailContent, mailKey: string): Promise<Burst> {
    const key = `${content.from.toLowerCase()}\n${content.to.toLowerCase()}\n${mailKey}`;
    const burst = this.#bursts.get(key);
    if (
      burst !== undefined && burst.next < this.#maxMessages &&
      this.#now() - burst.created < BURST_MAX_AGE_MS
    ) {
      return Promise.resolve(burst);
    }
    let making = this.#making.get(key);
    if (making === undefined) {
      this.#bursts.delete(key); // dropped: its key is garbage from now on
      making = this.#newBurst(content, mailKey).then((made) => {
        if (this.#bursts.size >= MAX_BURSTS) this.#bursts.clear();
        this.#bursts.set(key, made);
        return made;
      }).finally(() => this.#making.delete(key));
      this.#making.set(key, making);
    }
    return making;
  }

  async #newBurst(content: MailContent, mailKey: string): Promise<Burst> {
    const created = this.#now();
    const ephemeral = await generateKeyPair();
    const secret = await dh(ephemeral.privateKey, fromBase64Url(mailKey));
    const statement = burstStatement({
      from: content.from,
      to: content.to,
      mailKey,
      ephemeral: toBase64Url(ephemeral.publicKey),
      created,
    });
    const key = burstKey(secret, statement);
    secret.fill(0);
    const sig = fromBase64Url(await this.#identity.sign(statement));
    const header = new Uint8Array(BURST_HEADER_LENGTH);
    header.set(MAGIC);
    header[3] = BURST_FORMAT;
    header.set(ephemeral.publicKey, 4);
    new DataView(header.buffer).setBigUint64(36, BigInt(created));
    header.set(sig, 44);
    return { header: toBase64Url(header), key, created, next: 0 };
  }
}

/**
 * Seals one message to the recipient's mail key, signed by the sender: a burst of one. A
 * sender with more to say keeps a {@link MailSealer}.
 */
export function sealMail(
  content: MailContent,
  sender: Identity,
  recipientMailKey: string,
): Promise<string> {
  return new MailSealer(sender).seal(content, recipientMailKey);
}

/**
 * Reads the N header of a sealed message under one cipher suite; undefined when it does not
 * authenticate under that suite (other failures, such as a low-order key, throw).
 */
async function openHeader(
  header: Uint8Array,
  mailKey: MailKey,
  cipher: CipherName,
): Promise<HandshakeState | undefined> {
  const hs = await HandshakeState.initialize({
    pattern: "N",
    initiator: false,
    prologue: PROLOGUE,
    staticKeyPair: mailKey.pair,
    cipher,
  });
  try {
    await hs.readMessage(header);
    return hs;
  } catch (error) {
    if (error instanceof CryptoError && error.code === "DECRYPT_FAILED") return undefined;
    throw error;
  }
}

/** A sealed message that cannot be opened or whose signature or envelope does not match. */
export class MailRejected extends Error {
  override name = "MailRejected";
}

/** Where a burst-sealed message stands in its burst (undefined for mail sealed alone). */
export interface BurstPlace {
  /** The burst's header as sealed: equal for every message of one burst. */
  burst: string;
  /** The message's number in the burst: the sender sealed them 0, 1, 2 ... in order. */
  seq: number;
}

/** An opened message, with its place in its burst when it came in one. */
export interface OpenedMail extends MailContent {
  place?: BurstPlace;
}

/**
 * Opens the mail sealed to me, bursts and single messages alike. A burst's header is checked
 * once (one DH, one signature check against the sender's identity key) and its key kept for
 * the messages after it; each message is then one AEAD open.
 */
export class MailOpener {
  readonly #me: { user: string; mailKey: MailKey };
  readonly #keys = new Map<string, Promise<Uint8Array>>();

  constructor(me: { user: string; mailKey: MailKey }) {
    this.#me = me;
  }

  /**
   * Opens a sealed message and checks it: the envelope (sender, id, time as the server
   * delivered them) must match what the sender sealed, and the sender's signature must verify
   * with the identity key I know for them.
   * @throws {MailRejected} with the reason.
   */
  open(
    sealed: string,
    envelope: { from: string; msgId: string; ts: number },
    senderIdentityKey: string,
  ): Promise<OpenedMail> {
    if (sealed.startsWith(BURST_PREFIX) && sealed.length > BURST_HEADER_CHARS) {
      return this.#openBurst(sealed, envelope, senderIdentityKey).catch((error) =>
        // One single message in 2^24 begins like a burst by chance: it opens alone.
        openSingle(sealed, this.#me, envelope, senderIdentityKey).catch(() => {
          throw error;
        })
      );
    }
    return openSingle(sealed, this.#me, envelope, senderIdentityKey);
  }

  async #openBurst(
    sealed: string,
    envelope: { from: string; msgId: string; ts: number },
    senderIdentityKey: string,
  ): Promise<OpenedMail> {
    const header = sealed.slice(0, BURST_HEADER_CHARS);
    let tail: Uint8Array;
    try {
      tail = fromBase64Url(sealed.slice(BURST_HEADER_CHARS));
    } catch {
      throw new MailRejected("cannot decrypt it (not a burst)");
    }
    if (tail.length < SEQ_LENGTH + TAG_LEN) {
      throw new MailRejected("cannot decrypt it (not a burst)");
    }
    const at = `${senderIdentityKey}\n${envelope.from.toLowerCase()}\n${header}`;
    let key = this.#keys.get(at);
    if (key === undefined) {
      if (this.#keys.size >= MAX_BURSTS) this.#keys.clear();
      key = this.#burstKey(header, envelope.from, senderIdentityKey);
      this.#keys.set(at, key);
    }
    const seq = new DataView(tail.buffer, tail.byteOffset).getUint32(0);
    let plaintext: Uint8Array;
    try {
      const cipher = new CipherState(await key);
      cipher.setNonce(BigInt(seq));
      plaintext = cipher.decryptWithAdNow(
        messageAd(seq, envelope.msgId, envelope.ts),
        tail.subarray(SEQ_LENGTH),
      );
    } catch (error) {
      if (error instanceof MailRejected) throw error;
      throw new MailRejected(
        "its envelope does not match what the sender sealed, or it was tampered with " +
          `(${(error as Error).message})`,
        { cause: error },
      );
    }
    let text: unknown;
    try {
      text = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plaintext)).text;
    } catch {
      throw new MailRejected("its content is not valid");
    }
    if (typeof text !== "string") throw new MailRejected("its content is not valid");
    return {
      from: envelope.from,
      to: this.#me.user,
      msgId: envelope.msgId,
      ts: envelope.ts,
      text,
      place: { burst: header, seq },
    };
  }

  /**
   * Checks a burst header (format, the sender's signature over the statement rebuilt from what
   * I know: their name, mine, my mail key) and derives its key.
   */
  async #burstKey(header: string, from: string, senderIdentityKey: string): Promise<Uint8Array> {
    let bytes: Uint8Array;
    try {
      bytes = fromBase64Url(header);
    } catch {
      throw new MailRejected("cannot decrypt it (not a burst)");
    }
    if (bytes[3] !== BURST_FORMAT) throw new MailRejected("cannot decrypt it (not a burst)");
    const ephemeral = bytes.subarray(4, 36);
    const created = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(36));
    const statement = burstStatement({
      from,
      to: this.#me.user,
      mailKey: this.#me.mailKey.publicKey,
      ephemeral: toBase64Url(ephemeral),
      created,
    });
    if (!await verifySignature(senderIdentityKey, toBase64Url(bytes.subarray(44)), statement)) {
      throw new MailRejected(
        `it is not signed by ${from}'s identity key, or its envelope does not match what the ` +
          `sender signed (sealed to someone else, or tampered with)`,
      );
    }
    let secret: Uint8Array;
    try {
      secret = await dh(this.#me.mailKey.pair.privateKey, ephemeral);
    } catch (error) {
      throw new MailRejected(`cannot decrypt it (${(error as Error).message})`, { cause: error });
    }
    const key = burstKey(secret, statement);
    secret.fill(0);
    return key;
  }
}

/**
 * Opens one sealed message with my mail key and checks it (see {@link MailOpener.open}); a
 * reader of many keeps a {@link MailOpener}, which checks each burst once.
 * @throws {MailRejected} with the reason.
 */
export function openMail(
  sealed: string,
  me: { user: string; mailKey: MailKey },
  envelope: { from: string; msgId: string; ts: number },
  senderIdentityKey: string,
): Promise<OpenedMail> {
  return new MailOpener(me).open(sealed, envelope, senderIdentityKey);
}

/**
 * Opens a message sealed alone (protocol versions 3 to 5): Noise N, the payload signed by the
 * sender. @throws {MailRejected}
 */
async function openSingle(
  sealed: string,
  me: { user: string; mailKey: MailKey },
  envelope: { from: string; msgId: string; ts: number },
  senderIdentityKey: string,
): Promise<MailContent> {
  let payload: Uint8Array;
  try {
    const bytes = fromBase64Url(sealed);
    if (bytes.length <= HEADER_LENGTH) throw new CryptoError("BAD_MESSAGE", "too short");
    const header = bytes.subarray(0, HEADER_LENGTH);
    let hs = await openHeader(header, me.mailKey, "ChaChaPoly");
    if (hs === undefined) {
      // Sealed by protocol version 3, before an upgrade (see the top of this file). AES-GCM
      // is node:crypto's alone.
      await loadNodeCrypto();
      hs = await openHeader(header, me.mailKey, "AESGCM");
      if (hs === undefined) {
        throw new CryptoError("DECRYPT_FAILED", "not sealed to my mail key, or tampered with");
      }
    }
    payload = openFrame(hs.session().receive, bytes.subarray(HEADER_LENGTH));
  } catch (error) {
    throw new MailRejected(`cannot decrypt it (${(error as Error).message})`, { cause: error });
  }
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload));
  } catch {
    throw new MailRejected("its content is not valid");
  }
  // Valid JSON need not be an object: `null`, a number or an array is no mail either.
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new MailRejected("its content is not valid");
  }
  const content: MailContent = {
    from: String(data.from),
    to: String(data.to),
    msgId: String(data.msgId),
    ts: Number(data.ts),
    text: String(data.text),
  };
  if (
    typeof data.text !== "string" || typeof data.sig !== "string" ||
    content.from.toLowerCase() !== envelope.from.toLowerCase() ||
    content.to.toLowerCase() !== me.user.toLowerCase() ||
    content.msgId !== envelope.msgId || content.ts !== envelope.ts
  ) {
    throw new MailRejected("its envelope does not match what the sender sealed");
  }
  if (!await verifySignature(senderIdentityKey, data.sig, signedBytes(content))) {
    throw new MailRejected(`it is not signed by ${envelope.from}'s identity key`);
  }
  return content;
}
