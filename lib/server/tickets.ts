/**
 * Resumption tickets: what lets a client that was logged in come back with a Noise NNpsk0
 * handshake (one X25519 key generation and one DH per side) instead of the full XX (one and
 * three), when thousands come back at once.
 *
 * At every welcome the server hands the client, inside the encrypted channel, a fresh random
 * pre-shared key and a ticket: that key, the user and the client's static key (as the XX
 * handshake authenticated it) sealed with ChaCha20-Poly1305 under a key derived from the
 * server's private static key. The server keeps nothing: any instance given the same key file
 * opens any ticket, and someone who reads the database learns no pre-shared key. A ticket alone
 * is worth nothing (the pre-shared key never crosses the wire in the clear), nor is a session
 * token alone (the resumed connection stands for the static key in the ticket, to which the
 * token is bound). See docs/architecture.md, "Resumption".
 */
import { hkdfSync, randomBytes } from "node:crypto";
import { Buffer } from "node:buffer";
import { exportPrivateKey, type KeyPair } from "../crypto/noise.ts";
import { openWithNonce, sealWithNonce, TAG_LEN } from "../crypto/noise_cipher.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";

/** A ticket is refused this long after it was issued (the client then makes a full handshake). */
export const TICKET_LIFETIME_MS = 24 * 3600_000;
/** Longest ticket on the wire (base64url); the schema holds it to this. */
export const MAX_TICKET_LENGTH = 512;

const NONCE_LEN = 12;
/** Sealed tickets start with this byte: the format (and key derivation) version. */
const VERSION = 1;
/** The version byte, also the associated data of the seal. */
const HEADER = Uint8Array.of(VERSION);
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** What a ticket holds once opened. */
export interface TicketContents {
  /** The user's name key. */
  readonly user: string;
  /** The client's static Noise key (base64url) the ticket was issued to. */
  readonly clientKey: string;
  /** The 32-byte pre-shared key of the NNpsk0 handshake. */
  readonly psk: Uint8Array<ArrayBuffer>;
  /** When it was issued (ms since the epoch). */
  readonly issuedAt: number;
}

/** Seals and opens tickets with a key derived from the server's static key. */
export class TicketBox {
  readonly #key: Buffer;

  private constructor(key: Buffer) {
    this.#key = key;
  }

  /** The box of a deployment: every instance with the same key file makes the same one. */
  static async forServerKey(serverKey: KeyPair): Promise<TicketBox> {
    const secret = await exportPrivateKey(serverKey);
    const key = Buffer.from(
      hkdfSync("sha256", secret, new Uint8Array(0), "confab resumption tickets v1", 32),
    );
    secret.fill(0);
    return new TicketBox(key);
  }

  /** A fresh pre-shared key and the ticket that carries it, for `user` on `clientKey`. */
  issue(user: string, clientKey: string, now = Date.now()): { ticket: string; psk: string } {
    const psk = randomBytes(32);
    const body = Buffer.from(JSON.stringify({
      u: user,
      k: clientKey,
      p: psk.toString("base64url"),
      t: now,
    }));
    const nonce = randomBytes(NONCE_LEN);
    const sealed = Buffer.concat([
      HEADER,
      nonce,
      sealWithNonce("ChaChaPoly", this.#key, nonce, HEADER, body),
    ]);
    return { ticket: toBase64Url(sealed), psk: psk.toString("base64url") };
  }

  /** The contents of a ticket this deployment issued and that has not expired, else undefined. */
  open(ticket: string, now = Date.now()): TicketContents | undefined {
    if (ticket.length > MAX_TICKET_LENGTH) return undefined;
    let sealed: Uint8Array;
    try {
      sealed = fromBase64Url(ticket);
    } catch {
      return undefined;
    }
    if (sealed.length < 1 + NONCE_LEN + TAG_LEN || sealed[0] !== VERSION) return undefined;
    try {
      const body = openWithNonce(
        "ChaChaPoly",
        this.#key,
        sealed.subarray(1, 1 + NONCE_LEN),
        HEADER,
        sealed.subarray(1 + NONCE_LEN),
      );
      const data = JSON.parse(UTF8.decode(body)) as Record<string, unknown>;
      const { u, k, p, t } = data;
      if (
        typeof u !== "string" || typeof k !== "string" || typeof p !== "string" ||
        typeof t !== "number"
      ) return undefined;
      if (t > now + 60_000 || now - t > TICKET_LIFETIME_MS) return undefined;
      const psk = fromBase64Url(p);
      if (psk.length !== 32) return undefined;
      return { user: u, clientKey: k, psk, issuedAt: t };
    } catch {
      return undefined;
    }
  }
}
