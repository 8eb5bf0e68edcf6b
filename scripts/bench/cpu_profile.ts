/**
 * CPU profiles of the real processes of a bench item, through V8's own sampling profiler
 * (`node:inspector`, the same data as Chrome's `.cpuprofile`), and a breakdown of them: where
 * the time went, by step (framing, JSON, validation, the AEAD, SHA-256, SQLite, sockets, ...)
 * and by function.
 *
 * A child process loads this module with `--preload` when `CONFAB_PROFILE_DIR` is set; a first
 * SIGUSR2 starts its profiler, the next stops it and writes `<dir>/<name>-<pid>.cpuprofile`. The bench
 * process profiles itself with {@link startProfiling} / {@link stopProfiling}.
 */
import { Session } from "node:inspector";
import { join } from "node:path";

/** The sampling interval: 100 µs, fine enough to see a step of a few µs per message. */
const SAMPLING_US = 100;

export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

let session: Session | undefined;

function post<T>(method: string, params: object = {}): Promise<T> {
  return new Promise((resolve, reject) =>
    session!.post(
      method,
      params,
      (error: Error | null, result: unknown) => error ? reject(error) : resolve(result as T),
    )
  );
}

/**
 * Starts sampling this process, every `samplingUs` µs (sampling has a cost: a server under
 * heavy load is better sampled every millisecond).
 */
export async function startProfiling(samplingUs = SAMPLING_US): Promise<void> {
  if (!session) {
    session = new Session();
    session.connect();
    await post("Profiler.enable");
  }
  await post("Profiler.setSamplingInterval", { interval: samplingUs });
  await post("Profiler.start");
}

/** The file in the profile directory that tells children the sampling interval. */
export const SAMPLING_FILE = "sampling-us";

/** Stops sampling and returns the profile. */
export async function stopProfiling(): Promise<CpuProfile> {
  const { profile } = await post<{ profile: CpuProfile }>("Profiler.stop");
  return profile;
}

/** Where a step of the work is, by the script and function that do it. */
const STEPS: [string, (fn: string, url: string) => boolean][] = [
  ["profiler", (_, url) => url.includes("ext:deno_node/inspector")],
  ["GC", (fn) => fn === "(garbage collector)"],
  ["idle", (fn) => fn === "(idle)"],
  ["JSON encode/decode", (fn) => /^(JSON\.)?(parse|stringify)$/.test(fn)],
  ["schema validation", (_, url) => url.includes("/lib/protocol/schema.ts")],
  [
    "AEAD (ChaCha20-Poly1305)",
    (fn, url) =>
      url.includes("noise_cipher.ts") || url.includes("sealed_frames.ts") ||
      url.includes("chacha_small.ts") ||
      /cipher|Cipher|decrypt|encrypt/.test(fn),
  ],
  [
    "X25519 and Ed25519",
    (fn, url) =>
      url.includes("crypto/x25519.ts") || url.includes("crypto/ed25519.ts") ||
      /x25519|ed25519|sign|verify|DiffieHellman|generateKeyPair/i.test(fn),
  ],
  [
    // With Noise's HKDF (HMAC-SHA256): sha256_small.ts computes both, node:crypto's op_node_hkdf.
    "SHA-256",
    (fn, url) =>
      url.includes("sha256_small.ts") ||
      /Hash|hash|digest|hkdf/.test(fn) && !url.includes("/lib/client/"),
  ],
  [
    "SQLite",
    (fn, url) =>
      url.includes("client_store.ts") || url.includes("util/sqlite.ts") ||
      url.includes("_store.ts") ||
      // node:sqlite's statements are native: they show as bare names without a script.
      (url === "" && ["run", "get", "all", "exec", "iterate", "prepare"].includes(fn)),
  ],
  ["framing", (_, url) => url.includes("frame_reader.ts") || url.includes("protocol/frame.ts")],
  [
    "stdout (--json events)",
    (fn, url) => url.includes("client/app.ts") || url.includes("render.ts") || fn === "writeSync",
  ],
  [
    "socket and file I/O",
    (fn, url) =>
      /^(read|write|op_read|op_write)/.test(fn) && (url.startsWith("ext:") || url === "") ||
      url.includes("ext:deno_net") || url.includes("ext:deno_io") || url.includes("ext:deno_fs"),
  ],
  ["promises and timers (runtime)", (_, url) => url.startsWith("ext:core") || url === "native"],
  [
    "bench harness (reading children's stdout)",
    (_, url) =>
      url.includes("scripts/bench/support.ts") || url.includes("scripts/bench/clients.ts"),
  ],
  ["native, outside JS (program)", (fn) => fn === "(program)"],
  ["other Confab code (lib/)", (_, url) => url.includes("/lib/")],
];

export interface Breakdown {
  /** Sampled time in ms (wall time covered by the profile). */
  totalMs: number;
  /** Busy time in ms (everything but idle). */
  busyMs: number;
  /** ms per step, busiest first (self time, attributed to the innermost recognised step). */
  steps: { step: string; ms: number }[];
  /** The functions with the most self time. */
  top: { fn: string; where: string; ms: number }[];
}

/** Breaks a profile down by step and by function. */
export function breakDown(profile: CpuProfile, topN = 12): Breakdown {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0));
  }
  const stepMs = new Map<string, number>();
  const fnMs = new Map<string, { fn: string; where: string; ms: number }>();
  const stack: [number, string][] = [[profile.nodes[0]!.id, "other JS and runtime"]];
  while (stack.length > 0) {
    const [id, inherited] = stack.pop()!;
    const node = byId.get(id)!;
    const { functionName: fn, url, lineNumber } = node.callFrame;
    const step = STEPS.find(([, test]) => test(fn, url))?.[0] ?? inherited;
    const ms = (self.get(id) ?? 0) / 1000;
    if (ms > 0) {
      stepMs.set(step, (stepMs.get(step) ?? 0) + ms);
      const where = url
        ? `${url.replace(/^.*\/(lib|scripts|node_modules)\//, "$1/")}:${lineNumber + 1}`
        : "";
      const key = `${fn}@${where}`;
      const entry = fnMs.get(key) ?? { fn: fn || "(anonymous)", where, ms: 0 };
      entry.ms += ms;
      fnMs.set(key, entry);
    }
    for (const child of node.children ?? []) stack.push([child, step]);
  }
  const totalMs = (profile.endTime - profile.startTime) / 1000;
  const steps = [...stepMs].map(([step, ms]) => ({ step, ms })).sort((a, b) => b.ms - a.ms);
  const idle = stepMs.get("idle") ?? 0;
  const top = [...fnMs.values()]
    .filter((f) => f.fn !== "(idle)" && !f.where.includes("inspector")).sort((a, b) => b.ms - a.ms)
    .slice(0, topN);
  return { totalMs, busyMs: totalMs - idle, steps, top };
}

/** Several processes' breakdowns as one (load generators sharing the work): times add up. */
export function mergeBreakdowns(all: Breakdown[]): Breakdown {
  const steps = new Map<string, number>();
  const top = new Map<string, { fn: string; where: string; ms: number }>();
  for (const b of all) {
    for (const s of b.steps) steps.set(s.step, (steps.get(s.step) ?? 0) + s.ms);
    for (const f of b.top) {
      const key = `${f.fn}@${f.where}`;
      top.set(key, { ...f, ms: (top.get(key)?.ms ?? 0) + f.ms });
    }
  }
  return {
    totalMs: all.reduce((n, b) => n + b.totalMs, 0),
    busyMs: all.reduce((n, b) => n + b.busyMs, 0),
    steps: [...steps].map(([step, ms]) => ({ step, ms })).sort((a, b) => b.ms - a.ms),
    top: [...top.values()].sort((a, b) => b.ms - a.ms),
  };
}

/** One line per step: µs per unit of work (message, chunk), busiest first. */
export function describeSteps(b: Breakdown, units: number, unit: string): string {
  return b.steps.filter((s) => s.step !== "idle" && s.step !== "profiler")
    .map((s) => `${s.step} ${(s.ms * 1000 / units).toFixed(1)}`).join(", ") +
    ` (µs per ${unit}; the profile spans ${(b.totalMs / 1000).toFixed(2)} s: busy ` +
    `${(b.busyMs * 1000 / units).toFixed(1)} µs per ${unit}, idle ` +
    `${((b.totalMs - b.busyMs) * 1000 / units).toFixed(1)})`;
}

/** The top functions by self time, as "name (file:line) µs per unit". */
export function describeTop(b: Breakdown, units: number, n = 8): string {
  return b.top.slice(0, n).map((f) =>
    `${f.fn}${f.where ? ` (${f.where})` : ""} ${(f.ms * 1000 / units).toFixed(1)}`
  ).join("; ");
}

// ---- as a preload module in a child process ---------------------------------------------------

/** An environment variable, when this process may read it (not every child may). */
function env(variable: string): string | undefined {
  if (Deno.permissions.querySync({ name: "env", variable }).state !== "granted") return undefined;
  return Deno.env.get(variable);
}

const dir = env("CONFAB_PROFILE_DIR");
const name = env("CONFAB_PROFILE_NAME") ?? "process";
if (dir && Deno.permissions.querySync({ name: "write", path: dir }).state === "granted") {
  // SIGUSR2 toggles (SIGUSR1 would open Deno's inspector port).
  let on = false;
  Deno.addSignalListener("SIGUSR2", async () => {
    on = !on;
    if (on) {
      const us = Number(await Deno.readTextFile(join(dir, SAMPLING_FILE)).catch(() => ""));
      await startProfiling(us > 0 ? us : SAMPLING_US);
      // Starting stalls this process (V8 logs every function compiled so far: ≈ 0.2-0.9 s in
      // a server holding 15,000 connections); the bench waits for this before it measures.
      return void await Deno.writeTextFile(join(dir, `${name}-${Deno.pid}.started`), "");
    }
    const profile = await stopProfiling();
    const path = join(dir, `${name}-${Deno.pid}.cpuprofile`);
    await Deno.writeTextFile(path + ".tmp", JSON.stringify(profile));
    await Deno.rename(path + ".tmp", path);
  });
}
