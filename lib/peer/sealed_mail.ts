/**
 * End-to-end encrypted offline mail. A message for a user who is away is sealed to their mail
 * key (X25519) with the one-way Noise pattern N (Noise_N_25519_ChaChaPoly_SHA256), and signed
 * by the sender's identity key (Ed25519) over who wrote it, to whom, its id, time and text. The
 * server stores and forwards the sealed blob; it can read none of it.
 *
 * Mail sealed by protocol version 3 (Noise_N_25519_AESGCM_SHA256) may still wait in a server's
 * store after an upgrade, so it still opens: the 48-byte header authenticates its suite (the
 * protocol name is hashed into the tag), so a header that fails under ChaChaPoly is tried once
 * under AESGCM, and whichever authenticates decides. Nothing new is ever sealed with AESGCM.
 *
 * Sealed form (base64url): the N handshake message (48 bytes: ephemeral key and the tag of an
 * empty payload), then the payload as Noise transport messages of at most 65,535 bytes.
 */
import {
  type CipherName,
  CryptoError,
  exportPrivateKey,
  generateKeyPair,
  HandshakeState,
  type KeyPair,
  keyPairFromPrivateKey,
} from "../crypto/noise.ts";
import { dirname } from "node:path";
import { closeFrame, openFrame } from "../net/sealed_frames.ts";
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
    await Deno.writeTextFile(tmp, body + "\n", { mode: 0o600 });
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

/** Seals a message to the recipient's mail key, signed by the sender. */
export async function sealMail(
  content: MailContent,
  sender: Identity,
  recipientMailKey: string,
): Promise<string> {
  const hs = await HandshakeState.initialize({
    pattern: "N",
    initiator: true,
    prologue: PROLOGUE,
    remoteStaticKey: fromBase64Url(recipientMailKey),
  });
  const header = await hs.writeMessage();
  const signature = await sender.sign(signedBytes(content));
  const payload = new TextEncoder().encode(JSON.stringify({ ...content, sig: signature }));
  const body = closeFrame(hs.session().send, payload);
  const out = new Uint8Array(header.length + body.length);
  out.set(header);
  out.set(body, header.length);
  return toBase64Url(out);
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

/**
 * Opens a sealed message with my mail key and checks it: the envelope (sender, recipient, id,
 * time as the server delivered them) must match what the sender signed, and the signature
 * must be the sender's (by the identity key I know for them).
 * @throws {MailRejected} with the reason.
 */
export async function openMail(
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
      // Sealed by protocol version 3, before an upgrade (see the top of this file).
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
