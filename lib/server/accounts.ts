/**
 * Password hashing (scrypt, per-user salt, constant-time compare) and the login throttle that
 * backs off repeated failures per username and per address.
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

/** scrypt cost: N=2^15, r=8, p=1 (≈ 80 ms a hash here, off the main thread). */
const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 } as const;
const KEY_LENGTH = 32;
const SALT_LENGTH = 16;

function scryptAsync(password: string, salt: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize("NFC"), salt, KEY_LENGTH, SCRYPT, (error, key) => {
      if (error) reject(error);
      else resolve(new Uint8Array(key));
    });
  });
}

/** Hashes a new password with a fresh random salt. */
export async function hashPassword(
  password: string,
): Promise<{ salt: Uint8Array; hash: Uint8Array }> {
  const salt = new Uint8Array(randomBytes(SALT_LENGTH));
  return { salt, hash: await scryptAsync(password, salt) };
}

const DUMMY_SALT = new Uint8Array(SALT_LENGTH);

/**
 * Checks a password against a stored hash in constant time. With no stored record it still
 * spends one hash, so an unknown user and a wrong password take the same time.
 */
export async function verifyPassword(
  password: string,
  stored: { salt: Uint8Array; hash: Uint8Array } | undefined,
): Promise<boolean> {
  const key = await scryptAsync(password, stored?.salt ?? DUMMY_SALT);
  if (!stored || stored.hash.length !== key.length) return false;
  return timingSafeEqual(key, stored.hash);
}

export interface ThrottleOptions {
  /** Failures allowed before waiting is required. */
  freeFailures: number;
  /** First wait, doubled with each further failure. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Entries kept at most (oldest dropped first), so a flood cannot grow memory. */
  maxEntries: number;
  /** Failures are forgotten this long after the last one (a shared address recovers). */
  forgetAfterMs: number;
}

/**
 * Counts failed logins per key (a username, an address) and says how long to wait before the
 * next attempt is even checked. Exponential: after `freeFailures`, 1 s, 2 s, 4 s ... capped.
 */
export class LoginThrottle {
  readonly #opts: ThrottleOptions;
  readonly #entries = new Map<string, { failures: number; until: number; last: number }>();

  constructor(options: Partial<ThrottleOptions> = {}) {
    this.#opts = {
      freeFailures: options.freeFailures ?? 5,
      baseDelayMs: options.baseDelayMs ?? 1000,
      maxDelayMs: options.maxDelayMs ?? 5 * 60_000,
      maxEntries: options.maxEntries ?? 100_000,
      forgetAfterMs: options.forgetAfterMs ?? 15 * 60_000,
    };
  }

  /** Milliseconds to wait before `key` may try again (0: go ahead). */
  waitFor(key: string, now = Date.now()): number {
    const entry = this.#entries.get(key);
    return entry ? Math.max(0, entry.until - now) : 0;
  }

  fail(key: string, now = Date.now()): void {
    let entry = this.#entries.get(key);
    if (!entry || now - entry.last > this.#opts.forgetAfterMs) {
      entry = { failures: 0, until: 0, last: now };
    }
    entry.failures++;
    entry.last = now;
    const over = entry.failures - this.#opts.freeFailures;
    if (over >= 0) {
      entry.until = now + Math.min(this.#opts.maxDelayMs, this.#opts.baseDelayMs * 2 ** over);
    }
    this.#entries.delete(key); // re-insert: Map order is then oldest-touched first
    this.#entries.set(key, entry);
    if (this.#entries.size > this.#opts.maxEntries) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
  }

  succeed(key: string): void {
    this.#entries.delete(key);
  }
}
