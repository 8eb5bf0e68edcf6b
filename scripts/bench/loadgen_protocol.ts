/**
 * What the bench driver and its load generator processes (`loadgen.ts`) say to each other:
 * commands as JSON lines on the generator's stdin, events as JSON lines on its stdout. Also the
 * naming of the bench's prepared users, which both sides (and the data-dir preparation) share.
 */

/** The name of prepared user `i` (0-based): `b00000`, `b00001`, ... */
export function benchUser(i: number): string {
  return `b${String(i).padStart(5, "0")}`;
}

/** Prepared user `i` has user `i + 1` (wrapping) as its one contact; lookups ask for it. */
export function contactOf(i: number, users: number): number {
  return (i + 1) % users;
}

export type LoadgenCommand =
  /** Attach slots in order until `upTo` of this generator's slots are attached. */
  | { cmd: "attach"; upTo: number }
  /** Issue `lookup` requests at `rate` per second (open loop) for `seconds`. */
  | { cmd: "lookups"; rate: number; seconds: number }
  /**
   * Watch a restart: from now until every slot is attached again, report `status` lines and
   * then one `all_attached`.
   */
  | { cmd: "watch" }
  /** Close every connection and exit. */
  | { cmd: "close" };

export type LoadgenEvent =
  /** Started; holds `slots` prepared users (or raw sockets). */
  | { type: "ready"; slots: number; pid: number }
  /** Progress while attaching. */
  | { type: "progress"; attached: number; target: number; lost: Record<string, number> }
  /** `attach` finished: `attached` slots are logged in; `ms` it took; `retries` on the way. */
  | { type: "attached"; attached: number; ms: number; retries: number }
  /** The `watch` command took effect. */
  | { type: "watching"; attached: number; target: number }
  /** 4 times a second while a watched restart keeps clients away. */
  | {
    type: "status";
    t: number;
    /** Attached now (some may not have noticed the restart yet). */
    attached: number;
    /** Slots that came back since they were lost (and have not been lost again). */
    back: number;
    target: number;
    attempts: number;
    /** Why attempts failed (reason → count, the most frequent). */
    errors: Record<string, number>;
    /** Why connections were lost (reason → count, the most frequent). */
    lost: Record<string, number>;
  }
  /**
   * Every slot is attached again after the watched restart; `t` (Date.now()) is when the last
   * one got its welcome.
   */
  | {
    type: "all_attached";
    t: number;
    attempts: number;
    lost: number;
    /** Why connections were lost (reason → count, the most frequent). */
    reasons: Record<string, number>;
    /** Why attempts failed (reason → count, the most frequent). */
    errors: Record<string, number>;
  }
  /** Lookup latencies in ms (rounded to µs), in the order the replies came. */
  | {
    type: "lookups";
    samples: number[];
    /** When each of `samples` was sent (wall-clock ms, to the 0.1 ms). */
    sent: number[];
    errors: number;
    /** Why lookups failed (reason → count, the most frequent). */
    failures: Record<string, number>;
    issued: number;
    seconds: number;
    /** Connections lost during the lookups, by reason. */
    lost: Record<string, number>;
  }
  | { type: "error"; message: string }
  | { type: "closed" };
