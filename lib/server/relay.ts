/**
 * The server's relay: when two clients cannot reach each other directly, each opens one more
 * connection to the server and joins with a token the server issued to both; the server then
 * copies bytes between the two legs. It cannot read them: the peers run their own Noise
 * session inside. Only the two peers of a pairing can join it (a leg must come from the same
 * Noise static key as that user's control connection), only mutual contacts are paired, and
 * the operator's limits hold: relayed links at once, bytes per second per link, bytes per
 * pair of users per day. Both users are told when a limit is hit. The bytes per pair and day
 * are kept in the server's store (written at least every second or MiB, and when a link ends),
 * so a restart does not reset the daily limit, and the instances of a cluster count together.
 */
import { randomBytes } from "node:crypto";
import type { FramedConnection } from "../net/framed_connection.ts";
import { type Transport, writeAll } from "../net/transport.ts";
import type { ClientMessage } from "../protocol/messages.ts";
import type { ErrorCode } from "../protocol/errors.ts";
import type { ServerStore } from "./store.ts";
import { delay } from "../util/time.ts";

export interface RelayLimits {
  /** `--relay off`: no relaying at all. */
  enabled: boolean;
  /** Relayed links at once (pairings waiting for their legs count too). */
  maxLinks: number;
  /** Bytes per second one relayed link may carry, both directions together. */
  bytesPerSecond: number;
  /** Bytes one pair of users may relay per day (UTC), both directions together. */
  bytesPerDay: number;
  /** How long the two legs of a pairing have to join. */
  joinTimeoutMs: number;
}

export const DEFAULT_RELAY_LIMITS: RelayLimits = {
  enabled: true,
  maxLinks: 1_000,
  bytesPerSecond: 4 * 1024 * 1024,
  bytesPerDay: 2 * 1024 ** 3,
  joinTimeoutMs: 15_000,
};

/** A relay request or join refused, with the stable code the client sees. */
export class RelayRefused extends Error {
  override name = "RelayRefused";
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

/** One side of a pairing: a user and the Noise static key of their control connection. */
export interface RelayParty {
  user: string;
  /** The user's name key (lower case). */
  key: string;
  /** base64url Noise static key of the user's control connection. */
  staticKey: string;
}

type LimitKind = "rate" | "daily" | "links";

export interface RelayHooks {
  /** Tells `userKey` (if online) about a limit hit on the link with `peer`. */
  notify(userKey: string, notice: { peer: string; limit: LimitKind; message: string }): void;
  log(line: string): void;
  /** Where the bytes per pair of users and day are kept (the server's store). */
  usage: Pick<ServerStore, "addRelayBytes" | "forgetRelayUsage">;
}

/** What one pair of users relayed today: the total as last known, and what is not written yet. */
interface DayCount {
  pair: string;
  day: number;
  /** All of the day's bytes this instance knows of (the store's total plus `unwritten`). */
  bytes: number;
  /** Counted here, not yet added in the store. */
  unwritten: number;
  writtenAt: number;
  /** The write to the store in progress. */
  writing?: Promise<void>;
}

interface Leg {
  fc: FramedConnection<ClientMessage>;
  requestId: number;
  /**
   * Told, as its connection is handed over, when the relayed link it becomes ends: the
   * connection is the link's from then on (the server's connection caps still count it).
   */
  handedOver?: (linkEnded: Promise<void>) => void;
}

interface Pairing {
  token: string;
  a: RelayParty;
  b: RelayParty;
  legs: [Leg | undefined, Leg | undefined];
  timer: ReturnType<typeof setTimeout>;
}

/** A relayed link: two legs and what went through them. */
interface ActiveLink {
  a: RelayParty;
  b: RelayParty;
  since: number;
  bytes: number;
  legs: [Transport, Transport];
  rateNoticed: boolean;
  /** Token bucket for the rate limit. */
  tokens: number;
  refilledAt: number;
  /** Ends a throttle wait when the link closes. */
  stop: AbortController;
  done: Promise<void>;
}

/** A summary of a relayed link, for the console and tests. */
export interface RelayedLinkInfo {
  a: string;
  b: string;
  since: number;
  bytes: number;
}

const COPY_BUFFER = 64 * 1024;
/**
 * Pairings and relayed links one pair of users may have at once: one link, plus room for both
 * dialing at the same moment and a replacement; more is someone flooding the other.
 */
const PER_PAIR = 4;
/** After one direction ended, the other may finish for this long before both are closed. */
const HALF_CLOSED_GRACE_MS = 5_000;
const DAY_MS = 24 * 3600_000;
/** A relayed pair's new bytes are written to the store after this many ... */
const WRITE_EVERY_BYTES = 1024 * 1024;
/** ... or this long after the last write, whichever comes first (and when the link ends). */
const WRITE_EVERY_MS = 1_000;

/** "1.5 MiB" */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

function pairKey(a: string, b: string): string {
  return a < b ? `${a}\n${b}` : `${b}\n${a}`;
}

/** Users of a pairing about to be issued, watched for going offline: {@link Relay.watch}. */
export interface RelayWatch {
  /** The user who went offline since the watch began, if one did. */
  readonly gone: string | undefined;
  /** Stops watching; call it once the pairing is issued or refused. */
  end(): void;
}

interface Watch extends RelayWatch {
  readonly parties: { user: string; key: string }[];
  gone: string | undefined;
}

export class Relay {
  readonly limits: RelayLimits;
  readonly #hooks: RelayHooks;
  readonly #pending = new Map<string, Pairing>();
  /**
   * Pairings being prepared or issued, waiting on the store before they are pending:
   * {@link cancelFor} marks the user of one who went offline meanwhile, and its issue is refused.
   */
  readonly #watches = new Set<Watch>();
  readonly #active = new Set<ActiveLink>();
  readonly #daily = new Map<string, DayCount>();
  /** The day whose earlier days' usage was last removed from the store. */
  #forgotBefore = 0;
  #closing = false;

  constructor(limits: RelayLimits, hooks: RelayHooks) {
    this.limits = limits;
    this.#hooks = hooks;
  }

  /** Relayed links now. */
  links(): RelayedLinkInfo[] {
    return [...this.#active].map((l) => ({
      a: l.a.user,
      b: l.b.user,
      since: l.since,
      bytes: l.bytes,
    }));
  }

  /** Today's count for the pair `a`, `b` (what this instance knows of it). */
  #usedToday(a: string, b: string, now = Date.now()): DayCount {
    const key = pairKey(a, b);
    const day = Math.floor(now / DAY_MS);
    let entry = this.#daily.get(key);
    if (!entry || entry.day !== day) {
      entry = { pair: key, day, bytes: 0, unwritten: 0, writtenAt: now };
      this.#daily.set(key, entry);
      // Earlier days' counts leave memory (bounded by the pairs seen in one day), once what
      // they still hold is written.
      for (const [k, e] of this.#daily) {
        if (e.day === day) continue;
        this.#daily.delete(k);
        void this.#write(e);
      }
    }
    if (this.#forgotBefore < day - 1) {
      this.#forgotBefore = day - 1;
      this.#hooks.usage.forgetRelayUsage(day - 1).catch((error) => {
        this.#hooks.log(`relay: cannot forget old relay usage: ${errorText(error)}`);
      });
    }
    return entry;
  }

  /**
   * Adds what `entry` counted since its last write to the store and takes the store's total
   * (other instances' bytes, and the days before a restart, included). One write at a time
   * per pair; a failed write is counted again at the next.
   */
  async #write(entry: DayCount): Promise<void> {
    while (entry.writing) await entry.writing;
    const bytes = entry.unwritten;
    entry.unwritten = 0;
    entry.writtenAt = Date.now();
    const writing = (async () => {
      try {
        const total = await this.#hooks.usage.addRelayBytes(entry.pair, entry.day, bytes);
        entry.bytes = Math.max(entry.bytes, total + entry.unwritten);
      } catch (error) {
        entry.unwritten += bytes;
        this.#hooks.log(`relay: cannot record relay usage: ${errorText(error)}`);
      }
    })();
    entry.writing = writing;
    await writing;
    if (entry.writing === writing) entry.writing = undefined;
  }

  /**
   * Starts watching `parties` for a pairing about to be issued: from now until
   * {@link RelayWatch.end}, one of them going offline ({@link cancelFor}) is remembered, and
   * {@link issue} given this watch refuses. The caller starts it before it looks up where the
   * other user is, so an offline notice handled during that lookup is not missed.
   */
  watch(...parties: { user: string; key: string }[]): RelayWatch {
    const watch: Watch = {
      parties,
      gone: undefined,
      end: () => void this.#watches.delete(watch),
    };
    this.#watches.add(watch);
    return watch;
  }

  /**
   * Issues a pairing between `a` (who asks) and `b`, both online mutual contacts (the caller
   * checked). Returns the token both join with.
   * @throws {RelayRefused} RELAY_OFF, RELAY_FULL or RELAY_LIMIT; USER_OFFLINE when either went
   * offline while the pairing was being issued (or, given `watch`, since it began).
   */
  async issue(a: RelayParty, b: RelayParty, watch?: RelayWatch): Promise<string> {
    if (!this.limits.enabled) {
      throw new RelayRefused("RELAY_OFF", "this server does not relay links (--relay off)");
    }
    // The day's total as the store has it (after a restart, or from other instances).
    const used = this.#usedToday(a.key, b.key);
    const issuing = watch ?? this.watch(a, b);
    try {
      await this.#write(used);
    } finally {
      if (issuing !== watch) issuing.end(); // the caller's watch is the caller's to end
    }
    if (issuing.gone !== undefined) {
      // A pairing now would wait the whole join timeout for a leg that cannot come.
      throw new RelayRefused("USER_OFFLINE", `${issuing.gone} went offline`);
    }
    if (this.#active.size + this.#pending.size >= this.limits.maxLinks) {
      const message = `the server relays at most ${this.limits.maxLinks} links at once and ` +
        `is full; ${b.user} cannot be reached through it now`;
      this.#hooks.notify(a.key, { peer: b.user, limit: "links", message });
      this.#hooks.log(`relay: refused ${a.user} -> ${b.user}: ${this.limits.maxLinks} links`);
      throw new RelayRefused("RELAY_FULL", message);
    }
    const pair = pairKey(a.key, b.key);
    const between = [...this.#pending.values(), ...this.#active]
      .filter((p) => pairKey(p.a.key, p.b.key) === pair).length;
    if (between >= PER_PAIR) {
      throw new RelayRefused(
        "RELAY_FULL",
        `${a.user} and ${b.user} already have ${between} relayed links or pairings; ` +
          `wait for them to end`,
      );
    }
    if (used.bytes >= this.limits.bytesPerDay) {
      const message = `the relayed link between ${a.user} and ${b.user} used the server's ` +
        `daily limit of ${formatBytes(this.limits.bytesPerDay)}; it opens again tomorrow (UTC)`;
      this.#hooks.notify(a.key, { peer: b.user, limit: "daily", message });
      this.#hooks.notify(b.key, { peer: a.user, limit: "daily", message });
      throw new RelayRefused("RELAY_LIMIT", message);
    }
    const token = randomBytes(32).toString("base64url");
    const pairing: Pairing = {
      token,
      a,
      b,
      legs: [undefined, undefined],
      timer: setTimeout(() => {
        this.#fail(pairing, "TIMEOUT", "the other side did not join the relay in time");
      }, this.limits.joinTimeoutMs),
    };
    this.#pending.set(token, pairing);
    return token;
  }

  /**
   * A connection (not logged in, its reader stopped after `relay_join`) joins a pairing. When
   * both legs are in, both get `relay_start` and the copying begins.
   * @throws {RelayRefused} for an unknown token or a leg that is not one of the two peers.
   */
  async join(
    token: string,
    staticKey: string,
    leg: Leg,
  ): Promise<void> {
    const pairing = this.#pending.get(token);
    if (!pairing) {
      throw new RelayRefused("BAD_TOKEN", "no relay pairing with this token (expired or used)");
    }
    const side: 0 | 1 | undefined = staticKey === pairing.a.staticKey && !pairing.legs[0]
      ? 0
      : staticKey === pairing.b.staticKey && !pairing.legs[1]
      ? 1
      : undefined;
    if (side === undefined) {
      this.#hooks.log(
        `relay: refused a leg for ${pairing.a.user} <-> ${pairing.b.user}: not one of them`,
      );
      throw new RelayRefused(
        "AUTH_FAILED",
        "this connection is not one of the two peers of that relay pairing",
      );
    }
    pairing.legs[side] = leg;
    const [first, second] = pairing.legs;
    if (!first || !second) return;
    this.#pending.delete(token);
    clearTimeout(pairing.timer);
    const linkEnded = Promise.withResolvers<void>();
    for (const l of [first, second]) l.handedOver?.(linkEnded.promise);
    const ends: Transport[] = [];
    try {
      for (const l of [first, second]) {
        await l.fc.send({ type: "relay_start", id: l.requestId });
        const { transport, rest } = await l.fc.detach();
        ends.push(transport);
        // The reader stops right after relay_join, and a client sends nothing more before
        // relay_start: anything read past it would be a broken client's.
        if (rest.length > 0) throw new Error("bytes sent before relay_start");
      }
    } catch {
      for (const t of ends) t.close();
      await Promise.all([first.fc.close(), second.fc.close()]);
      linkEnded.resolve();
      return;
    }
    const ended = () => linkEnded.resolve();
    this.#start(pairing, ends as [Transport, Transport]).then(ended, ended);
  }

  /**
   * Pairings waiting for `userKey` end, and those being issued for it are refused: that user
   * went offline.
   */
  cancelFor(userKey: string): void {
    for (const watch of this.#watches) {
      watch.gone ??= watch.parties.find((p) => p.key === userKey)?.user;
    }
    for (const pairing of [...this.#pending.values()]) {
      if (pairing.a.key === userKey || pairing.b.key === userKey) {
        const gone = pairing.a.key === userKey ? pairing.a.user : pairing.b.user;
        this.#fail(pairing, "USER_OFFLINE", `${gone} went offline`);
      }
    }
  }

  #fail(pairing: Pairing, code: ErrorCode, message: string): void {
    if (this.#pending.get(pairing.token) !== pairing) return;
    this.#pending.delete(pairing.token);
    clearTimeout(pairing.timer);
    for (const leg of pairing.legs) {
      if (!leg) continue;
      void leg.fc.send({ type: "error", id: leg.requestId, code, message })
        .catch(() => {})
        .finally(() => leg.fc.close());
    }
  }

  /** Starts relaying; resolves when the link has ended. */
  #start(pairing: Pairing, legs: [Transport, Transport]): Promise<void> {
    const link: ActiveLink = {
      a: pairing.a,
      b: pairing.b,
      since: Date.now(),
      bytes: 0,
      legs,
      rateNoticed: false,
      tokens: this.limits.bytesPerSecond,
      refilledAt: performance.now(),
      stop: new AbortController(),
      done: Promise.resolve(),
    };
    this.#active.add(link);
    this.#hooks.log(`relay: ${link.a.user} <-> ${link.b.user} started`);
    link.done = this.#run(link);
    return link.done;
  }

  async #run(link: ActiveLink): Promise<void> {
    const [a, b] = link.legs;
    let firstEnded: (() => void) | undefined;
    const oneEnded = new Promise<void>((resolve) => firstEnded = resolve);
    const pumps = [
      this.#pump(link, a, b).finally(() => firstEnded?.()),
      this.#pump(link, b, a).finally(() => firstEnded?.()),
    ];
    await oneEnded;
    // One direction ended (a clean end is half a close): the other may finish, briefly.
    const grace = new AbortController();
    await Promise.race([
      Promise.all(pumps),
      delay(HALF_CLOSED_GRACE_MS, grace.signal).catch(() => {}),
    ]);
    grace.abort();
    link.stop.abort();
    a.close();
    b.close();
    await Promise.allSettled(pumps);
    await this.#write(this.#usedToday(link.a.key, link.b.key));
    this.#active.delete(link);
    const seconds = ((Date.now() - link.since) / 1000).toFixed(1);
    this.#hooks.log(
      `relay: ${link.a.user} <-> ${link.b.user} ended after ${seconds} s, ` +
        `${formatBytes(link.bytes)}`,
    );
  }

  /** Copies one direction until it ends; a clean end is passed on as a half close. */
  async #pump(link: ActiveLink, from: Transport, to: Transport): Promise<void> {
    const buffer = new Uint8Array(COPY_BUFFER);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) {
          await to.closeWrite().catch(() => {});
          return;
        }
        if (!this.#account(link, n)) return;
        await this.#throttle(link, n);
        await writeAll(to, buffer.subarray(0, n));
      }
    } catch {
      // A leg reset or closed: the link is over.
      from.close();
      to.close();
    }
  }

  /** Counts bytes against the daily limit; false (and both told) once it is used up. */
  #account(link: ActiveLink, n: number): boolean {
    link.bytes += n;
    const used = this.#usedToday(link.a.key, link.b.key);
    used.bytes += n;
    used.unwritten += n;
    if (
      !used.writing &&
      (used.unwritten >= WRITE_EVERY_BYTES || Date.now() - used.writtenAt >= WRITE_EVERY_MS)
    ) void this.#write(used);
    if (used.bytes <= this.limits.bytesPerDay) return true;
    const message = `the relayed link between ${link.a.user} and ${link.b.user} reached the ` +
      `server's daily limit of ${formatBytes(this.limits.bytesPerDay)} and is closed; ` +
      `it opens again tomorrow (UTC)`;
    this.#hooks.notify(link.a.key, { peer: link.b.user, limit: "daily", message });
    this.#hooks.notify(link.b.key, { peer: link.a.user, limit: "daily", message });
    this.#hooks.log(`relay: ${link.a.user} <-> ${link.b.user} hit the daily limit`);
    link.stop.abort();
    link.legs[0].close();
    link.legs[1].close();
    return false;
  }

  /** Waits as long as the link's rate allows (a token bucket one second deep). */
  async #throttle(link: ActiveLink, n: number): Promise<void> {
    const rate = this.limits.bytesPerSecond;
    const now = performance.now();
    link.tokens = Math.min(rate, link.tokens + (now - link.refilledAt) * rate / 1000);
    link.refilledAt = now;
    link.tokens -= n;
    if (link.tokens >= 0) return;
    if (!link.rateNoticed) {
      link.rateNoticed = true;
      const message = `the relayed link between ${link.a.user} and ${link.b.user} is limited ` +
        `to ${formatBytes(rate)}/s by the server (a direct link is not)`;
      this.#hooks.notify(link.a.key, { peer: link.b.user, limit: "rate", message });
      this.#hooks.notify(link.b.key, { peer: link.a.user, limit: "rate", message });
    }
    await delay(-link.tokens * 1000 / rate, link.stop.signal);
  }

  /** Ends every pairing and relayed link. Idempotent. */
  async close(): Promise<void> {
    this.#closing = true;
    for (const pairing of [...this.#pending.values()]) {
      this.#fail(pairing, "SERVER_CLOSING", "the server is shutting down");
    }
    for (const link of this.#active) {
      link.stop.abort();
      link.legs[0].close();
      link.legs[1].close();
    }
    await Promise.allSettled([...this.#active].map((l) => l.done));
    // What was counted and not written yet goes to the store before it closes.
    await Promise.all(
      [...this.#daily.values()].filter((e) => e.unwritten > 0 || e.writing).map((e) =>
        this.#write(e)
      ),
    );
  }

  get closing(): boolean {
    return this.#closing;
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
