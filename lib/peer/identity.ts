/**
 * A user's long-term Ed25519 identity key (WebCrypto), and signing/verifying of the peer
 * handshake transcript. Keys are stored in the user's home dir, readable by the owner only.
 */
import { dirname } from "../util/paths.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";

export { fromBase64Url, toBase64Url };
export { verifySignature } from "../crypto/ed25519.ts";

const ED25519 = { name: "Ed25519" } as const;

/** 32 random bytes as base64url: nonces and ids. */
export function randomToken(): string {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(32)));
}

export class Identity {
  readonly publicKey: string;
  readonly #privateKey: CryptoKey;

  private constructor(publicKey: string, privateKey: CryptoKey) {
    this.publicKey = publicKey;
    this.#privateKey = privateKey;
  }

  static async generate(): Promise<{ identity: Identity; pkcs8: Uint8Array }> {
    const pair = await crypto.subtle.generateKey(ED25519, true, [
      "sign",
      "verify",
    ]) as CryptoKeyPair;
    const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
    return { identity: new Identity(toBase64Url(raw), pair.privateKey), pkcs8 };
  }

  /** Loads a key saved by {@link Identity.save}; undefined when there is none. */
  static async load(path: string): Promise<Identity | undefined> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      throw error;
    }
    const data = JSON.parse(text) as { publicKey: string; privateKey: string };
    const key = await crypto.subtle.importKey(
      "pkcs8",
      fromBase64Url(data.privateKey),
      ED25519,
      false,
      ["sign"],
    );
    return new Identity(data.publicKey, key);
  }

  /** Writes the key pair with owner-only permissions (atomically: temp file, then rename). */
  static async save(path: string, publicKey: string, pkcs8: Uint8Array): Promise<void> {
    await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp`;
    const body = JSON.stringify({
      algorithm: "Ed25519",
      publicKey,
      privateKey: toBase64Url(pkcs8),
    });
    // Sync: the async write loads web streams, ~3 ms of CPU for a few bytes.
    Deno.writeTextFileSync(tmp, body + "\n", { mode: 0o600 });
    await Deno.rename(tmp, path);
  }

  async sign(data: Uint8Array<ArrayBuffer>): Promise<string> {
    return toBase64Url(new Uint8Array(await crypto.subtle.sign(ED25519, this.#privateKey, data)));
  }
}

/**
 * The bytes each side signs in the peer handshake: the Noise session it happens in, who
 * speaks, both names, both nonces. The channel binding means a proof made on one link is
 * worthless on any other (no relaying); the role tag keeps one side's signature from being
 * replayed as the other's.
 */
export function handshakeTranscript(fields: {
  signer: "initiator" | "responder";
  initiator: string;
  responder: string;
  initiatorNonce: string;
  responderNonce: string;
  /** The Noise handshake hash of the link, base64url: binds the proof to this session. */
  channel: string;
}): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(
    [
      "confab-peer-auth-v2",
      fields.channel,
      fields.signer,
      fields.initiator.toLowerCase(),
      fields.responder.toLowerCase(),
      fields.initiatorNonce,
      fields.responderNonce,
    ].join("\n"),
  );
}
