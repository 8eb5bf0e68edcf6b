/**
 * What every bench item needs: child processes with line-oriented output and deadlines on
 * every wait, a reaper so no child outlives the bench, the Confab server as a real process,
 * and small measuring helpers (percentiles, RSS from /proc).
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CLIENT_PERMISSIONS, SERVER_PERMISSIONS } from "../permissions.ts";
import {
  type Breakdown,
  breakDown,
  type CpuProfile,
  SAMPLING_FILE,
  startProfiling,
  stopProfiling,
} from "./cpu_profile.ts";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DENO = Deno.execPath();
const encoder = new TextEncoder();

/** Lines kept for a wait that has not been asked for yet; older ones are dropped. */
const MAX_QUEUED_LINES = 20_000;
/** Lines of stderr/stdout kept to explain a failure. */
const TAIL_LINES = 30;

/** Rejects with `signal.reason` when it aborts; otherwise settles like `promise`. */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  let onAbort = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([promise, aborted]).finally(() =>
    signal.removeEventListener("abort", onAbort)
  );
}

/** Settles like `promise`, or rejects after `ms` (or when `signal` aborts) naming `what`. */
export function deadline<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
  signal?: AbortSignal,
): Promise<T> {
  const timeout = AbortSignal.timeout(ms);
  const any = signal ? AbortSignal.any([signal, timeout]) : timeout;
  return abortable(promise, any).catch((error) => {
    if (timeout.aborted && !signal?.aborted) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    throw error;
  });
}

/** Resolves after `ms`; rejects early when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  const timer = new Promise<void>((resolve) => setTimeout(resolve, ms));
  return signal ? abortable(timer, signal) : timer;
}

// ---- reaper -----------------------------------------------------------------------------------

let reaper:
  | { child: Deno.ChildProcess; stdin: WritableStreamDefaultWriter<Uint8Array> }
  | undefined;

let reaperStopped = false;

function tellReaper(line: string): void {
  if (reaperStopped) return;
  if (!reaper) {
    const child = new Deno.Command(DENO, {
      args: ["run", "--allow-run", "--allow-read", "--allow-write", "scripts/bench/reaper.ts"],
      cwd: ROOT,
      stdin: "piped",
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    reaper = { child, stdin: child.stdin.getWriter() };
  }
  reaper.stdin.write(encoder.encode(line + "\n")).catch(() => {});
}

/** Has the reaper remove `dir` if the bench dies before it does (`forget`: it did). */
export function reapDir(dir: string, forget = false): void {
  tellReaper(`${forget ? "-" : "+"}${dir}`);
}

/** Ends the reaper (after every child is gone, so it has nothing left to kill). */
export async function stopReaper(): Promise<void> {
  reaperStopped = true;
  if (!reaper) return;
  const { child, stdin } = reaper;
  reaper = undefined;
  await stdin.close().catch(() => {});
  await child.status;
}

// ---- processes ------------------------------------------------------------------------------

/** A line stream that lets a caller wait for the next line passing a test. */
class LineQueue {
  readonly tail: string[] = [];
  #queue: string[] = [];
  #waiter: { test: (line: string) => boolean; resolve: (line: string) => void } | undefined;
  #listener: ((line: string) => void) | undefined;
  readonly #ended = Promise.withResolvers<void>();
  #isEnded = false;

  readonly #logFile: string | undefined;

  /** `logFile`: every line is also appended there (`CONFAB_BENCH_LOGS`, for a post-mortem). */
  constructor(stream: ReadableStream<Uint8Array>, logFile?: string) {
    this.#logFile = logFile;
    void this.#pump(stream);
  }

  get ended(): Promise<void> {
    return this.#ended.promise;
  }

  async #pump(stream: ReadableStream<Uint8Array>) {
    let rest = "";
    const push = (line: string) => {
      if (this.#logFile) Deno.writeTextFileSync(this.#logFile, `${line}\n`, { append: true });
      this.tail.push(line);
      if (this.tail.length > TAIL_LINES) this.tail.shift();
      if (this.#listener) {
        this.#listener(line);
        return;
      }
      if (this.#waiter) {
        // Lines that do not pass the waiter's test are consumed and dropped.
        if (this.#waiter.test(line)) {
          const waiter = this.#waiter;
          this.#waiter = undefined;
          waiter.resolve(line);
        }
        return;
      }
      this.#queue.push(line);
      if (this.#queue.length > MAX_QUEUED_LINES) this.#queue.shift();
    };
    try {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        let nl: number;
        while ((nl = rest.indexOf("\n")) >= 0) {
          push(rest.slice(0, nl));
          rest = rest.slice(nl + 1);
        }
      }
      if (rest) push(rest);
    } catch { /* the process died: what was read stays */ }
    this.#isEnded = true;
    this.#ended.resolve();
  }

  /**
   * Hands every line from now on to `listener` as it arrives (the queued ones first), instead
   * of keeping them for {@link next}: for an owner that follows the whole stream itself.
   */
  listen(listener: (line: string) => void): void {
    if (this.#waiter) throw new Error("a wait is on: cannot hand the line stream over");
    this.#listener = listener;
    for (const line of this.#queue.splice(0)) listener(line);
  }

  /**
   * The next line (consuming the ones before it) that passes `test`. When `signal` aborts, the
   * wait ends (with its reason) and the lines after it are kept for the next wait.
   */
  next(test: (line: string) => boolean, signal: AbortSignal): Promise<string> {
    if (this.#waiter) throw new Error("only one wait at a time on a line stream");
    while (this.#queue.length > 0) {
      const line = this.#queue.shift()!;
      if (test(line)) return Promise.resolve(line);
    }
    if (this.#isEnded) return Promise.reject(new Error("output ended"));
    const found = Promise.withResolvers<string>();
    this.#waiter = { test, resolve: found.resolve };
    const ended = this.#ended.promise.then(() => {
      throw new Error("output ended");
    });
    return abortable(Promise.race([found.promise, ended]), signal).finally(() => {
      this.#waiter = undefined;
    });
  }
}

/** An event line from a child that speaks JSON lines. */
export type JsonEvent = { type?: string; [key: string]: unknown };

let profileDir: string | undefined;

/** Where child processes write their CPU profiles; set once, before any is spawned. */
export function setProfileDir(dir: string): void {
  profileDir = dir;
}

/** A breakdown of one process's CPU profile over a phase of an item. */
export interface ProcessProfile {
  name: string;
  breakdown: Breakdown;
}

/**
 * Runs `phase` with the CPU profiler on in this process and in each of `procs`; returns the
 * breakdown of each profile (this process as "bench"). The profiles are kept in the profile
 * directory.
 */
export async function profiled<T>(
  procs: BenchProcess[],
  phase: () => Promise<T>,
  signal?: AbortSignal,
  options: { samplingUs?: number } = {},
): Promise<{ result: T; profiles: ProcessProfile[] }> {
  if (profileDir === undefined) throw new Error("no profile directory set");
  const dir = profileDir;
  const samplingUs = options.samplingUs ?? 100;
  await Deno.writeTextFile(join(dir, SAMPLING_FILE), String(samplingUs));
  for (const p of procs) {
    if (!p.profiled) throw new Error(`${p.name} was not started with { profile: true }`);
    Deno.kill(p.pid, "SIGUSR2");
  }
  await startProfiling(samplingUs);
  // The children start on the signal. A start stalls a process (for most of a second in a
  // server holding 15,000 connections), so what is measured begins once each says it samples.
  await Promise.all(procs.map(async (p) => {
    const started = join(dir, `${p.name}-${p.pid}.started`);
    await untilFile(started, signal);
    await Deno.remove(started);
  }));
  await sleep(50, signal);
  let result: T;
  let own: CpuProfile;
  try {
    result = await phase();
  } finally {
    own = await stopProfiling();
    for (const p of procs) Deno.kill(p.pid, "SIGUSR2");
  }
  const stamp = Date.now();
  await Deno.writeTextFile(join(dir, `bench-${Deno.pid}-${stamp}.cpuprofile`), JSON.stringify(own));
  const profiles: ProcessProfile[] = [{ name: "bench", breakdown: breakDown(own) }];
  for (const p of procs) {
    const path = join(dir, `${p.name}-${p.pid}.cpuprofile`);
    const text = await untilFile(path, signal);
    profiles.push({ name: p.name, breakdown: breakDown(JSON.parse(text) as CpuProfile) });
    await Deno.rename(path, join(dir, `${p.name}-${p.pid}-${stamp}.cpuprofile`));
  }
  return { result, profiles };
}

/** The text of the file a child writes at `path`, once it is there (within 30 s). */
async function untilFile(path: string, signal?: AbortSignal): Promise<string> {
  const started = performance.now();
  for (;;) {
    const text = await Deno.readTextFile(path).catch(() => undefined);
    if (text !== undefined) return text;
    if (performance.now() - started > 30_000) throw new Error(`no ${path} within 30 s`);
    await sleep(20, signal);
  }
}

export interface SpawnOptions {
  /** `stop` sends this signal (else it only closes stdin) before waiting for the exit. */
  stopSignal?: Deno.Signal;
  /** Time `stop` waits for the exit before SIGKILL. */
  graceMs?: number;
  /** Ready for {@link profiled}: V8's profiler on demand (and the permission it needs). */
  profile?: boolean;
  /** Run inside this network namespace (`ip netns exec`; the NAT lab of the relay item). */
  netns?: string;
}

/** A child Deno process in the project root, with stdin and line-oriented stdout/stderr. */
export class BenchProcess implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly out: LineQueue;
  readonly err: LineQueue;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #opts: SpawnOptions;
  #exited = false;
  readonly status: Promise<Deno.CommandStatus>;
  /** Started with {@link SpawnOptions.profile}. */
  readonly profiled: boolean;
  /** performance.now() when it was spawned (its V8 clock starts about then). */
  readonly spawnedAt = performance.now();
  #stopping: Promise<void> | undefined;

  constructor(readonly name: string, args: string[], options: SpawnOptions = {}) {
    this.#opts = options;
    // A child asked for can be profiled on demand (see cpu_profile.ts); idle until asked.
    const profiled = options.profile === true && args[0] === "run" && profileDir !== undefined;
    this.profiled = profiled;
    const preload = ["--preload", "scripts/bench/cpu_profile.ts", "--allow-sys"];
    // The profiler needs sys access to "inspector": a narrower --allow-sys=… given for the
    // program itself would take it away again, so a profiled child gets the whole of it.
    const own = args.slice(1).filter((a) => !a.startsWith("--allow-sys="));
    const denoArgs = profiled ? ["run", ...preload, ...own] : args;
    this.child = new Deno.Command(options.netns ? "ip" : DENO, {
      args: options.netns ? ["netns", "exec", options.netns, DENO, ...denoArgs] : denoArgs,
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: {
        NO_COLOR: "1",
        DENO_NO_UPDATE_CHECK: "1",
        ...(profiled ? { CONFAB_PROFILE_DIR: profileDir!, CONFAB_PROFILE_NAME: name } : {}),
      },
    }).spawn();
    tellReaper(`+${this.child.pid}`);
    const logs = Deno.env.get("CONFAB_BENCH_LOGS");
    const logFile = (stream: string) =>
      logs ? join(logs, `${name}-${this.child.pid}.${stream}`) : undefined;
    this.out = new LineQueue(this.child.stdout, logFile("out"));
    this.err = new LineQueue(this.child.stderr, logFile("err"));
    this.#stdin = this.child.stdin.getWriter();
    this.status = this.child.status.then((status) => {
      this.#exited = true;
      tellReaper(`-${this.child.pid}`);
      return status;
    });
  }

  get pid(): number {
    return this.child.pid;
  }

  get hasExited(): boolean {
    return this.#exited;
  }

  /** The last lines the process wrote, to explain a failure. */
  describe(): string {
    const out = this.out.tail.slice(-10).map((l) => `  ${l.slice(0, 300)}`).join("\n");
    const err = this.err.tail.slice(-10).map((l) => `  ${l.slice(0, 300)}`).join("\n");
    return `${this.name} (pid ${this.pid}) stdout:\n${out || "  (none)"}\nstderr:\n${
      err || "  (none)"
    }`;
  }

  async write(line: string): Promise<void> {
    await this.#stdin.write(encoder.encode(line + "\n"));
  }

  async closeStdin(): Promise<void> {
    await this.#stdin.close().catch(() => {});
  }

  /** The next stdout line passing `test`, within `ms`. */
  async nextLine(
    test: (line: string) => boolean,
    what: string,
    ms: number,
    signal?: AbortSignal,
  ): Promise<string> {
    const timeout = AbortSignal.timeout(ms);
    try {
      return await this.out.next(test, signal ? AbortSignal.any([signal, timeout]) : timeout);
    } catch (error) {
      const why = timeout.aborted && !signal?.aborted
        ? `timed out after ${ms} ms`
        : (error as Error).message;
      throw new Error(`${this.name}: no line ${what}: ${why}\n${this.describe()}`);
    }
  }

  /**
   * The next JSON event passing `test`, within `ms`. An `{"type":"error"}` event fails the
   * wait with its message.
   */
  async nextEvent<T extends JsonEvent = JsonEvent>(
    test: (event: JsonEvent) => boolean,
    what: string,
    ms: number,
    signal?: AbortSignal,
  ): Promise<T> {
    let failure: string | undefined;
    const line = await this.nextLine(
      (l) => {
        const event = parseJson(l);
        if (!event) return false;
        if (event.type === "error") {
          failure = String(event.message);
          return true;
        }
        return test(event);
      },
      what,
      ms,
      signal,
    );
    if (failure !== undefined) throw new Error(`${this.name}: ${failure}`);
    return parseJson(line) as T;
  }

  kill(signal: Deno.Signal = "SIGKILL"): void {
    if (this.#exited) return;
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
  }

  /** Waits for the exit within `ms`; SIGKILLs it when it is late and says so. */
  async exited(ms: number): Promise<Deno.CommandStatus> {
    try {
      return await deadline(this.status, ms, `${this.name} to exit`);
    } catch (error) {
      this.kill();
      await this.status;
      throw error;
    }
  }

  /** Stops the process: closes stdin (and sends the stop signal), then SIGKILL if it lingers. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      await this.closeStdin();
      if (!this.#exited) {
        if (this.#opts.stopSignal) this.kill(this.#opts.stopSignal);
        const grace = this.#opts.graceMs ?? 2000;
        await deadline(this.status, grace, "exit").catch(() => this.kill());
      }
      await this.status;
      await deadline(Promise.all([this.out.ended, this.err.ended]), 2000, "output").catch(() => {});
    })();
    return this.#stopping;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

function parseJson(line: string): JsonEvent | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    return JSON.parse(line) as JsonEvent;
  } catch {
    return undefined;
  }
}

// ---- the Confab server as a process -----------------------------------------------------------

export interface RunningServer {
  proc: BenchProcess;
  port: number;
  /** Date.now() when its banner said it listens. */
  listeningAt: number;
}

/**
 * The scrypt cost (log2 N) of servers whose items do not measure logins: their setup signs up
 * and logs in dozens of users, which the default cost makes take minutes on a loaded machine.
 */
export const SETUP_PASSWORD_COST = 12;

/** The event-loop monitor a bench process can be started with (see loop_monitor.ts). */
export const LOOP_MONITOR = "scripts/bench/loop_monitor.ts";

/**
 * Starts `server.ts` (quiet: no line per login; no per-address connection cap) on `port` (0:
 * any free one) with `dataDir` (and `args`), and waits for its banner. Stopping it sends
 * SIGTERM, which closes it as `esc` does.
 */
export async function startServer(
  spawn: (name: string, args: string[], options?: SpawnOptions) => BenchProcess,
  options: {
    dataDir: string;
    port?: number;
    name?: string;
    signal?: AbortSignal;
    /** More server.ts options (`--max-pending N`). */
    args?: string[];
    /** V8 flags (`--trace-gc`). */
    v8Flags?: string[];
    /** Preload the event-loop monitor ({@link LOOP_MONITOR}): stalls on stderr. */
    monitor?: boolean;
  },
): Promise<RunningServer> {
  const proc = spawn(options.name ?? "server", [
    "run",
    ...(options.v8Flags ? [`--v8-flags=${options.v8Flags.join(",")}`] : []),
    ...(options.monitor ? ["--preload", LOOP_MONITOR] : []),
    ...SERVER_PERMISSIONS,
    "server.ts",
    "--port",
    String(options.port ?? 0),
    "--data",
    options.dataDir,
    // With CONFAB_BENCH_LOGS the server logs logins and errors (into that directory).
    ...(Deno.env.get("CONFAB_BENCH_LOGS") ? [] : ["--quiet"]),
    // Every bench client comes from 127.0.0.1; real ones come from many addresses.
    "--max-per-address",
    "0",
    "--max-signups-per-hour",
    "0",
    ...(options.args ?? []),
  ], { stopSignal: "SIGTERM", graceMs: 20_000, profile: true });
  const banner = await proc.nextLine(
    (l) => l.startsWith("confab server listening"),
    "with the listening banner",
    30_000,
    options.signal,
  );
  const listeningAt = Date.now();
  const port = Number(/:(\d+) /.exec(banner)?.[1]);
  if (!Number.isInteger(port) || port <= 0) throw new Error(`cannot read a port in: ${banner}`);
  return { proc, port, listeningAt };
}

/** The arguments of `deno` that run `client.ts --json` against the server on `serverPort`. */
export function clientArgs(serverPort: number, home: string, more: string[] = []): string[] {
  return [
    "run",
    ...CLIENT_PERMISSIONS,
    "client.ts",
    "--json",
    "--server",
    `127.0.0.1:${serverPort}`,
    "--home",
    home,
    ...more,
  ];
}

/** Starts a bench helper that prints `{"port":N}` first; resolves with the port. */
export async function startHelper(
  spawn: (name: string, args: string[], options?: SpawnOptions) => BenchProcess,
  name: string,
  script: string,
  signal?: AbortSignal,
): Promise<{ proc: BenchProcess; port: number }> {
  const proc = spawn(name, ["run", "--allow-net", script]);
  const first = await proc.nextEvent(
    (e) => typeof e.port === "number",
    "with its port",
    30_000,
    signal,
  );
  return { proc, port: first.port as number };
}

// ---- measuring ----------------------------------------------------------------------------------

/** The `p` quantile (0–1) of ascending `sorted`, nearest rank. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil(p * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Resident memory of a process in KiB (VmRSS from /proc/PID/status). */
export async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

/** Clock ticks per second in /proc/PID/stat (USER_HZ: 100 on Linux). */
export const CLOCK_TICKS = 100;

/**
 * Seconds a process's main thread has spent runnable but waiting for a core (the scheduler's
 * run-queue delay, `/proc/PID/task/PID/schedstat`): what a saturated machine adds to latency.
 */
export async function runQueueWait(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/task/${pid}/schedstat`).catch(() => "");
  return Number(stat.split(" ")[1] ?? NaN) / 1e9;
}

/** CPU time (user + system) a process has used so far, in seconds; NaN once it is gone. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  // After the command name (which may hold spaces): utime is field 14, stime 15, in ticks.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** How long a process is left alone before its RSS is read, and the gap between samples. */
export interface RssSettling {
  settleMs: number;
  gapMs: number;
}

/**
 * Full runs wait 1 s and sample 200 ms apart; quick runs (which only keep the items from
 * rotting) 100 ms and 50 ms.
 */
export function rssSettling(quick: boolean): RssSettling {
  return quick ? { settleMs: 100, gapMs: 50 } : { settleMs: 1000, gapMs: 200 };
}

/**
 * RSS once a process has settled: waits `settleMs`, then takes the median of five samples
 * `gapMs` apart (a GC can move one sample).
 */
export async function settledRssKiB(
  pid: number,
  { settleMs, gapMs }: RssSettling,
  signal?: AbortSignal,
): Promise<number> {
  await sleep(settleMs, signal);
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    if (i > 0) await sleep(gapMs, signal);
    samples.push(await rssKiB(pid));
  }
  return percentile(samples.sort((a, b) => a - b), 0.5);
}

/**
 * `wanted` clients, or fewer when this machine's open-file limit (soft, per process; the
 * children inherit it) could not hold them: the server needs a descriptor per client.
 */
export async function clientsFor(wanted: number): Promise<number> {
  const limits = await Deno.readTextFile("/proc/self/limits").catch(() => "");
  const limit = Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1] ?? Infinity);
  return Math.min(wanted, Math.floor(limit * 0.75));
}

/** A port that was free a moment ago (for a server that must come back on the same port). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}
