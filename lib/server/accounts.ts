/**
 * Password hashing (scrypt, per-user salt, constant-time compare) and the login throttle that
 * backs off repeated failures per username and per address.
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import { LEGACY_KDF, type PasswordHash } from "./store.ts";

/**
 * The scrypt cost (log2 N) new passwords get by default: N=2^17, r=8, p=1, OWASP's recommended
 * minimum (128 MiB and ≈ 0.3 s a hash on an idle core, off the main thread). An operator may
 * choose another (`--password-cost`); the test suite runs its throwaway servers cheaper.
 */
export const DEFAULT_PASSWORD_COST = 17;

/** The lowest and highest scrypt cost (log2 N) a server accepts for new hashes. */
export const PASSWORD_COST_RANGE = { min: 10, max: 20 } as const;

/** The parameters string stored next to each hash: `scrypt:<log2 N>:<r>:<p>`. */
export function kdfOf(cost: number): string {
  if (!Number.isInteger(cost) || cost < PASSWORD_COST_RANGE.min || cost > PASSWORD_COST_RANGE.max) {
    throw new RangeError(
      `password cost must be ${PASSWORD_COST_RANGE.min}-${PASSWORD_COST_RANGE.max} (log2 of scrypt's N), got ${cost}`,
    );
  }
  return `scrypt:${cost}:8:1`;
}

/** The parameters new hashes get by default. */
export const CURRENT_KDF = kdfOf(DEFAULT_PASSWORD_COST);
const KEY_LENGTH = 32;
const SALT_LENGTH = 16;

interface ScryptParams {
  N: number;
  r: number;
  p: number;
  maxmem: number;
}

/** The scrypt parameters of a `kdf` string. @throws {RangeError} for anything else. */
function scryptParams(kdf: string): ScryptParams {
  const m = /^scrypt:(\d{1,2}):(\d{1,2}):(\d{1,2})$/.exec(kdf);
  const [logN, r, p] = m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [0, 0, 0];
  if (!m || logN < 10 || logN > 20 || r < 1 || r > 16 || p < 1 || p > 4) {
    throw new RangeError(`unknown password hash parameters ${JSON.stringify(kdf)}`);
  }
  // scrypt needs 128 * N * r bytes; node:crypto refuses more than maxmem (default 32 MiB).
  return { N: 2 ** logN, r, p, maxmem: 128 * 2 ** logN * r + 16 * 1024 * 1024 };
}

function scryptAsync(password: string, salt: Uint8Array, kdf: string): Promise<Uint8Array> {
  const params = scryptParams(kdf);
  return new Promise((resolve, reject) => {
    scrypt(password.normalize("NFC"), salt, KEY_LENGTH, params, (error, key) => {
      if (error) reject(error);
      else resolve(new Uint8Array(key));
    });
  });
}

/** Hashes a password with a fresh random salt, with `kdf` (the server's current parameters). */
export async function hashPassword(
  password: string,
  kdf = CURRENT_KDF,
): Promise<PasswordHash> {
  const salt = new Uint8Array(randomBytes(SALT_LENGTH));
  return { salt, hash: await scryptAsync(password, salt, kdf), kdf };
}

const DUMMY_SALT = new Uint8Array(SALT_LENGTH);

/**
 * Checks a password against a stored hash (made with its own `kdf`, the legacy one when
 * missing) in constant time. With no stored record it still spends one hash at the server's
 * current cost (`kdf`), so an unknown user and a wrong password take the same time.
 */
export async function verifyPassword(
  password: string,
  stored: { salt: Uint8Array; hash: Uint8Array; kdf?: string } | undefined,
  kdf = CURRENT_KDF,
): Promise<boolean> {
  const used = stored ? stored.kdf ?? LEGACY_KDF : kdf;
  const key = await scryptAsync(password, stored?.salt ?? DUMMY_SALT, used);
  if (!stored || stored.hash.length !== key.length) return false;
  return timingSafeEqual(key, stored.hash);
}

/**
 * True when a stored hash is weaker than `kdf` (the parameters new hashes get). A server
 * configured cheaper never rehashes a stronger hash down.
 */
export function needsRehash(stored: { kdf?: string }, kdf = CURRENT_KDF): boolean {
  const have = scryptParams(stored.kdf ?? LEGACY_KDF);
  const want = scryptParams(kdf);
  return have.N < want.N || have.r < want.r || have.p < want.p;
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

interface ThrottleEntry {
  failures: number;
  /** Attempts being checked now (their password hash is running or waiting). */
  inFlight: number;
  until: number;
  last: number;
}

/**
 * Counts failed logins per key (a username, an address) and says how long to wait before the
 * next attempt is even checked. Exponential: after `freeFailures`, 1 s, 2 s, 4 s ... capped.
 * Attempts still being checked count as failures until they are known not to be: a burst of
 * concurrent guesses gets no more checks than `freeFailures` (it used to get all of them).
 */
export class LoginThrottle {
  readonly #opts: ThrottleOptions;
  readonly #entries = new Map<string, ThrottleEntry>();

  constructor(options: Partial<ThrottleOptions> = {}) {
    this.#opts = {
      freeFailures: options.freeFailures ?? 5,
      baseDelayMs: options.baseDelayMs ?? 1000,
      maxDelayMs: options.maxDelayMs ?? 5 * 60_000,
      maxEntries: options.maxEntries ?? 100_000,
      forgetAfterMs: options.forgetAfterMs ?? 15 * 60_000,
    };
  }

  #delayAfter(failures: number): number {
    const over = failures - this.#opts.freeFailures;
    return over < 0 ? 0 : Math.min(this.#opts.maxDelayMs, this.#opts.baseDelayMs * 2 ** over);
  }

  /** Milliseconds to wait before `key` may try again (0: go ahead). */
  waitFor(key: string, now = Date.now()): number {
    const entry = this.#entries.get(key);
    if (!entry) return 0;
    const wait = Math.max(0, entry.until - now);
    if (wait > 0 || entry.inFlight === 0) return wait;
    // Were every attempt being checked now to fail, would this one have to wait?
    const failures = now - entry.last > this.#opts.forgetAfterMs ? 0 : entry.failures;
    return failures + entry.inFlight >= this.#opts.freeFailures
      ? Math.max(1, this.#delayAfter(failures + entry.inFlight))
      : 0;
  }

  /**
   * Records that an attempt for `key` is being checked; end it with {@link end}. Call only
   * after {@link waitFor} said 0.
   */
  begin(key: string, now = Date.now()): void {
    const entry = this.#touch(key, now);
    entry.inFlight++;
  }

  /** Ends an attempt started with {@link begin}: a failure counts; a success or a cancel not. */
  end(key: string, outcome: "failed" | "ok" | "cancelled", now = Date.now()): void {
    const entry = this.#entries.get(key);
    if (entry) entry.inFlight = Math.max(0, entry.inFlight - 1);
    if (outcome === "failed") this.fail(key, now);
    else if (outcome === "ok") this.succeed(key);
  }

  fail(key: string, now = Date.now()): void {
    const entry = this.#touch(key, now);
    entry.failures++;
    entry.last = now;
    const delay = this.#delayAfter(entry.failures);
    if (delay > 0) entry.until = now + delay;
  }

  /** Forgets the failures of `key` (attempts still being checked stay counted). */
  succeed(key: string): void {
    const entry = this.#entries.get(key);
    if (!entry) return;
    if (entry.inFlight === 0) {
      this.#entries.delete(key);
      return;
    }
    entry.failures = 0;
    entry.until = 0;
  }

  /** The entry of `key`, made the most recent (forgotten failures dropped); bounded map. */
  #touch(key: string, now: number): ThrottleEntry {
    let entry = this.#entries.get(key);
    if (!entry) entry = { failures: 0, inFlight: 0, until: 0, last: now };
    else if (now - entry.last > this.#opts.forgetAfterMs) {
      entry = { failures: 0, inFlight: entry.inFlight, until: 0, last: now };
    }
    this.#entries.delete(key); // re-insert: Map order is then oldest-touched first
    this.#entries.set(key, entry);
    if (this.#entries.size > this.#opts.maxEntries) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    return entry;
  }
}

/**
 * A token bucket per key (an address): `capacity` actions at once, then one more every
 * `intervalMs`. Bounded: the least recently used keys are dropped first.
 */
export class RateLimit {
  readonly #capacity: number;
  readonly #intervalMs: number;
  readonly #maxEntries: number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(options: { capacity: number; intervalMs: number; maxEntries?: number }) {
    this.#capacity = options.capacity;
    this.#intervalMs = options.intervalMs;
    this.#maxEntries = options.maxEntries ?? 100_000;
  }

  /** Takes one token for `key`: 0 when there was one, else the milliseconds until there is. */
  take(key: string, now = Date.now()): number {
    const bucket = this.#buckets.get(key) ?? { tokens: this.#capacity, at: now };
    const refilled = Math.floor((now - bucket.at) / this.#intervalMs);
    if (refilled > 0) {
      bucket.tokens = Math.min(this.#capacity, bucket.tokens + refilled);
      bucket.at = bucket.tokens === this.#capacity ? now : bucket.at + refilled * this.#intervalMs;
    }
    this.#buckets.delete(key);
    this.#buckets.set(key, bucket);
    if (this.#buckets.size > this.#maxEntries) {
      this.#buckets.delete(this.#buckets.keys().next().value!);
    }
    if (bucket.tokens === 0) return Math.max(1, bucket.at + this.#intervalMs - now);
    bucket.tokens--;
    return 0;
  }
}
