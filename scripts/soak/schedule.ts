/**
 * The soak's fault schedule: made from a seed alone, before anything runs, so a failing seed
 * replays the same faults at the same moments (the processes' own timing still varies).
 * Pure: no I/O.
 */

/** A small seeded generator (mulberry32): the same seed gives the same numbers everywhere. */
export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A number in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** A number in [min, max). */
  between(min: number, max: number): number {
    return min + (max - min) * this.next();
  }

  /** One of `items`. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("nothing to pick from");
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const word = Math.floor(this.next() * 4294967296);
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (word >>> (8 * j)) & 0xff;
    }
    return out;
  }
}

/** A fresh seed for a run that was given none. */
export function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}

export type FaultKind =
  | "kill-server" // SIGKILL, restarted after `forMs` on the same port and data
  | "kill-client" // SIGKILL, restarted after `forMs` with the same home; logs in again
  | "freeze-client" // SIGSTOP for `forMs` (past the peer timeout), then SIGCONT
  | "cut" // packets between the two clients of `target` and its partner vanish for `forMs`
  | "fill-mailbox" // someone fills `target`'s mailbox to its quota (once)
  | "send-file"; // `target` shares a file with its partner (once)

export interface Fault {
  /** When it starts, in ms after the chaos began. */
  atMs: number;
  kind: FaultKind;
  /** The client it hits (none for the server). */
  target?: string;
  /** How long it lasts (down, frozen, cut), in ms. */
  forMs: number;
}

export interface ScheduleOptions {
  /** How long faults keep coming, in ms. */
  chaosMs: number;
  /** Average gap between the starts of two faults, in ms. */
  meanGapMs: number;
  /** Clients that may be killed. */
  killable: readonly string[];
  /** Clients that may be frozen. */
  freezable: readonly string[];
  /** The client whose link to its partner is cut (through the soak's proxies). */
  cuttable: string;
  /** Whose mailbox gets filled. */
  mailboxOf: string;
  /** Who sends the file. */
  fileFrom: string;
  /** A peer is declared gone after this long: freezes and cuts last longer. */
  peerTimeoutMs: number;
}

/** The kinds that happen again and again, with their weights. */
const REPEATED: readonly [FaultKind, number][] = [
  ["kill-client", 4],
  ["freeze-client", 3],
  ["kill-server", 2],
  ["cut", 2],
];

/**
 * The faults of one run: every kind at least once (the mailbox fill and the file exactly
 * once), the rest drawn by weight, at random moments, never two at once on the same target.
 * They start within `chaosMs` (but the first of a kind, which may wait for its target a little
 * longer), and may end after it.
 */
export function makeSchedule(seed: number, options: ScheduleOptions): Fault[] {
  const rng = new Rng(seed);
  const lengthOf = (kind: FaultKind): number => {
    switch (kind) {
      case "kill-server":
        return Math.round(rng.between(300, 3_000));
      case "kill-client":
        return Math.round(rng.between(200, 2_500));
      case "freeze-client":
      case "cut":
        return Math.round(
          rng.between(options.peerTimeoutMs + 1_000, options.peerTimeoutMs + 5_000),
        );
      default:
        return 0;
    }
  };
  const targetOf = (kind: FaultKind): string | undefined => {
    switch (kind) {
      case "kill-client":
        return rng.pick(options.killable);
      case "freeze-client":
        return rng.pick(options.freezable);
      case "cut":
        return options.cuttable;
      case "fill-mailbox":
        return options.mailboxOf;
      case "send-file":
        return options.fileFrom;
      default:
        return undefined;
    }
  };
  const count = Math.max(1, Math.round(options.chaosMs / options.meanGapMs));
  const kinds: FaultKind[] = ["kill-server", "kill-client", "freeze-client", "cut"];
  const total = REPEATED.reduce((sum, [, w]) => sum + w, 0);
  while (kinds.length < count) {
    let roll = rng.next() * total;
    for (const [kind, weight] of REPEATED) {
      roll -= weight;
      if (roll < 0) {
        kinds.push(kind);
        break;
      }
    }
  }
  // The mailbox fill and the file go somewhere among the others.
  kinds.splice(Math.floor(rng.next() * (kinds.length + 1)), 0, "fill-mailbox");
  kinds.splice(Math.floor(rng.next() * (kinds.length + 1)), 0, "send-file");

  const faults: Fault[] = [];
  const seen = new Set<FaultKind>();
  /** When each target (the server: "") is free again. */
  const busyUntil = new Map<string, number>();
  const gap = options.chaosMs / (kinds.length + 1);
  kinds.forEach((kind, i) => {
    // Spread over the window, each within half a gap of its slot.
    const slot = gap * (i + 1 + rng.between(-0.45, 0.45));
    const target = targetOf(kind);
    const forMs = lengthOf(kind);
    const key = target ?? "";
    // Never two faults at once on one target: a later one waits (and may end after chaosMs).
    const start = Math.round(Math.max(slot, busyUntil.get(key) ?? 0));
    if (start >= options.chaosMs && seen.has(kind)) return; // a repeat with no room left
    seen.add(kind);
    busyUntil.set(key, start + forMs + 500);
    faults.push({ atMs: start, kind, ...(target ? { target } : {}), forMs });
  });
  return faults.sort((a, b) => a.atMs - b.atMs);
}

/** One line per fault, for the log and the report: `  12.3 s  kill-client b (1.4 s)`. */
export function describeSchedule(faults: readonly Fault[]): string[] {
  return faults.map((f) => {
    const lasting = f.forMs > 0 ? ` (${(f.forMs / 1000).toFixed(1)} s)` : "";
    return `${(f.atMs / 1000).toFixed(1).padStart(6)} s  ${f.kind}${
      f.target ? ` ${f.target}` : ""
    }${lasting}`;
  });
}
