/**
 * Human-comparable forms of public keys: a short hex fingerprint for a server key, and
 * Signal-style safety numbers (60 digits) that two users compare out of band.
 */

import { sha256 as sha256Now } from "./sha256_small.ts";
import { toHex } from "../util/hex.ts";

const encoder = new TextEncoder();

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

/**
 * `3f2a 91bc 0d4e ...`: the first 16 bytes of SHA-256(key), in groups of four hex digits.
 * Hashed synchronously (sha256_small.ts): every control connection a client opens takes one, and
 * WebCrypto's asynchronous digest of these 32 bytes showed as 200-390 µs per client back in the
 * reattach bench's load generators, for a hash of about a microsecond.
 */
export function keyFingerprint(publicKey: Uint8Array<ArrayBuffer>): Promise<string> {
  const hex = toHex(sha256Now(publicKey).subarray(0, 16));
  return Promise.resolve(hex.match(/.{4}/g)!.join(" "));
}

/**
 * A fingerprint as typed by a person, in the form {@link keyFingerprint} prints: spaces and
 * colons dropped, lower case.
 * @throws {RangeError} unless 32 hex digits remain.
 */
export function parseFingerprint(text: string): string {
  const hex = text.replace(/[\s:]/g, "").toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) {
    throw new RangeError(
      `"${text.slice(0, 80)}" is not a key fingerprint (32 hex digits, as the server prints ` +
        `at start-up: "server key fingerprint: 3f2a 91bc ...")`,
    );
  }
  return hex.match(/.{4}/g)!.join(" ");
}

/** 30 digits for one user: an iterated hash of their name and key (iterations slow guessing). */
async function digitsFor(user: string, publicKey: string): Promise<string> {
  let hash = await sha256(encoder.encode(`confab-safety-v1\n${user.toLowerCase()}\n${publicKey}`));
  for (let i = 0; i < 1024; i++) {
    hash = await sha256(new Uint8Array([...hash, ...encoder.encode(publicKey)]));
  }
  let digits = "";
  for (let chunk = 0; chunk < 6; chunk++) {
    let n = 0;
    for (let i = 0; i < 5; i++) n = n * 256 + hash[chunk * 5 + i]!;
    digits += String(n % 100000).padStart(5, "0");
  }
  return digits;
}

/** Groups digits by five for reading aloud. */
function groups(digits: string): string {
  return digits.match(/.{5}/g)!.join(" ");
}

/** One user's own 30-digit number (`fingerprint` with no argument). */
export async function ownNumber(user: string, publicKey: string): Promise<string> {
  return groups(await digitsFor(user, publicKey));
}

/**
 * The safety number of a pair of users: the same 60 digits on both sides (the two halves are
 * sorted, so it does not matter who computes it). It changes when either key changes.
 */
export async function safetyNumber(
  a: { user: string; publicKey: string },
  b: { user: string; publicKey: string },
): Promise<string> {
  const halves = [await digitsFor(a.user, a.publicKey), await digitsFor(b.user, b.publicKey)];
  halves.sort();
  return groups(halves.join(""));
}
