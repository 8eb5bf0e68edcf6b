/**
 * Test fixtures that run the real programs: `server.ts` and `client.ts` as child processes on
 * free ports, in temporary directories, driven through stdin and read through stdout, as a
 * user (or a bot with `--json`) would. Every wait has a deadline; nothing sleeps blindly.
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DENO = Deno.execPath();
/** Default deadline for a wait in these tests. */
export const DEADLINE_MS = 15_000;

/** Whether a line of output (the `index`th the process wrote, from 0) is the one waited for. */
export type LineTest = (line: string, index: number) => boolean;

/** A line reader over a child's output that lets tests wait for a matching line. */
class LineLog {
  readonly lines: string[] = [];
  #waiters: { test: LineTest; resolve: (line: string) => void }[] = [];
  #ended = Promise.withResolvers<void>();
  #scanFrom = 0;

  constructor(stream: ReadableStream<Uint8Array>, readonly name: string) {
    void this.#pump(stream);
  }

  get ended(): Promise<void> {
    return this.#ended.promise;
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    let rest = "";
    try {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        let nl: number;
        while ((nl = rest.indexOf("\n")) >= 0) {
          this.#push(rest.slice(0, nl));
          rest = rest.slice(nl + 1);
        }
      }
      if (rest) this.#push(rest);
    } catch {
      // The process died; whatever was read stays.
    }
    this.#ended.resolve();
  }

  #push(line: string): void {
    const index = this.lines.push(line) - 1;
    if (Deno.env.get("CONFAB_TEST_VERBOSE")) console.error(`[${this.name}] ${line}`);
    this.#waiters = this.#waiters.filter((w) => {
      if (w.test(line, index)) {
        w.resolve(line);
        return false;
      }
      return true;
    });
  }

  /**
   * Waits for the next line (after those already consumed by earlier waits) that passes
   * `test`. Lines are consumed in order, so two waits for the same text see two lines.
   */
  async waitFor(test: LineTest, what: string, ms = DEADLINE_MS): Promise<string> {
    return await this.#wait(test, what, ms, true);
  }

  /** Waits for a line at index `from` or later that passes `test`; consumes nothing. */
  async findFrom(from: number, test: LineTest, what: string, ms = DEADLINE_MS): Promise<string> {
    return await this.find((line, index) => index >= from && test(line, index), what, ms);
  }

  /** Waits for any line, old or new, that passes `test`; consumes nothing. */
  async find(test: LineTest, what: string, ms = DEADLINE_MS): Promise<string> {
    const old = this.lines.find(test);
    if (old !== undefined) return old;
    return await this.#wait(test, what, ms, false);
  }

  async #wait(test: LineTest, what: string, ms: number, consume: boolean): Promise<string> {
    for (; consume && this.#scanFrom < this.lines.length; this.#scanFrom++) {
      const line = this.lines[this.#scanFrom]!;
      if (test(line, this.#scanFrom)) {
        this.#scanFrom++;
        return line;
      }
    }
    const found = Promise.withResolvers<string>();
    const waiter = {
      test,
      resolve: (line: string) => {
        if (consume) this.#scanFrom = this.lines.length;
        found.resolve(line);
      },
    };
    this.#waiters.push(waiter);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(
          new Error(
            `${this.name}: no line ${what} within ${ms} ms; last lines:\n  ` +
              this.lines.slice(-15).join("\n  "),
          ),
        );
      }, ms);
    });
    const ended = this.#ended.promise.then(() => {
      throw new Error(
        `${this.name}: output ended before a line ${what}; last lines:\n  ` +
          this.lines.slice(-15).join("\n  "),
      );
    });
    ended.catch(() => {}); // only matters while the race below is on
    try {
      return await Promise.race([found.promise, timeout, ended]);
    } finally {
      clearTimeout(timer);
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
    }
  }
}

export interface ProcOptions {
  /** Added to the environment (`NO_COLOR=1` is set unless given). */
  env?: Record<string, string>;
  /** Run inside this network namespace (`ip netns exec`; tests/support/nat_lab.ts). */
  netns?: string;
  /** A command that runs deno with the arguments it is given (e.g. in a mount namespace). */
  wrapper?: string[];
  /** The working directory (default: the repository). */
  cwd?: string;
}

/** A running child process with line-oriented stdin/stdout. */
export class Proc implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly out: LineLog;
  readonly err: LineLog;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #status: Promise<Deno.CommandStatus>;
  #stdinClosed = false;

  /** Runs `deno ARGS`, in the repository unless `options.cwd` says where. */
  constructor(args: string[], readonly name: string, options: ProcOptions = {}) {
    const { env = {}, netns, wrapper = [], cwd = ROOT } = options;
    const command = [...(netns ? ["ip", "netns", "exec", netns] : []), ...wrapper, DENO, ...args];
    this.child = new Deno.Command(command[0]!, {
      args: command.slice(1),
      cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...env },
    }).spawn();
    this.out = new LineLog(this.child.stdout, name);
    this.err = new LineLog(this.child.stderr, `${name}:stderr`);
    this.#stdin = this.child.stdin.getWriter();
    this.#status = this.child.status;
  }

  get pid(): number {
    return this.child.pid;
  }

  get status(): Promise<Deno.CommandStatus> {
    return this.#status;
  }

  async write(line: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(line + "\n"));
  }

  async closeStdin(): Promise<void> {
    if (this.#stdinClosed) return;
    this.#stdinClosed = true;
    await this.#stdin.close().catch(() => {});
  }

  kill(signal: Deno.Signal = "SIGKILL"): void {
    try {
      this.child.kill(signal);
    } catch {
      // Already gone.
    }
  }

  /** Waits for exit within the deadline; kills it if it does not go. */
  async exited(ms = DEADLINE_MS): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), ms));
    const result = await Promise.race([this.#status, late]);
    clearTimeout(timer);
    if (result === "late") {
      this.kill();
      throw new Error(`${this.name} did not exit within ${ms} ms`);
    }
    return result;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.closeStdin();
    this.kill();
    await this.#status;
    await Promise.all([this.out.ended, this.err.ended]);
  }
}

export interface TestServer extends AsyncDisposable {
  proc: Proc;
  port: number;
  dataDir: string;
  address: string;
  /** Types `esc` and waits for a clean exit. */
  esc(): Promise<Deno.CommandStatus>;
}

/** Starts `server.ts` on a free port (or `port`) with a data dir; resolves once it listens. */
export async function startServer(
  options: {
    dataDir?: string;
    port?: number;
    args?: string[];
    env?: Record<string, string>;
    /** Network namespace to run in, and the address to listen on there. */
    netns?: string;
    host?: string;
  } = {},
): Promise<TestServer> {
  const dataDir = options.dataDir ?? await Deno.makeTempDir({ prefix: "confab-srv-" });
  const ownDir = options.dataDir === undefined;
  const proc = new Proc(
    [
      "run",
      "-A",
      "server.ts",
      "--port",
      String(options.port ?? 0),
      "--data",
      dataDir,
      ...(options.host ? ["--host", options.host] : []),
      ...(options.args ?? []),
    ],
    "server",
    { env: options.env, netns: options.netns },
  );
  let port: number;
  try {
    const banner = await proc.out.waitFor((l) => l.startsWith("confab server listening"), "banner");
    port = Number(/:(\d+) /.exec(banner)![1]);
  } catch (error) {
    await proc[Symbol.asyncDispose]();
    throw error;
  }
  return {
    proc,
    port,
    dataDir,
    address: `${options.host ?? "127.0.0.1"}:${port}`,
    async esc() {
      await proc.write("esc");
      return await proc.exited();
    },
    async [Symbol.asyncDispose]() {
      await proc[Symbol.asyncDispose]();
      if (ownDir) await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    },
  };
}

/** A JSON event as the client writes it with `--json`. */
export type Event = { type: string; [key: string]: unknown };

/** A `client.ts --json` process, driven like a bot. */
export class TestClient implements AsyncDisposable {
  readonly proc: Proc;
  readonly home: string;
  readonly #ownHome: boolean;
  /** Each line of output parsed (`null`: not an event), filled in as lines are looked at. */
  readonly #parsed: (Event | null)[] = [];

  private constructor(proc: Proc, home: string, ownHome: boolean) {
    this.proc = proc;
    this.home = home;
    this.#ownHome = ownHome;
  }

  static async start(
    name: string,
    server: { port: number; host?: string },
    options: {
      home?: string;
      peerPort?: number;
      args?: string[];
      env?: Record<string, string>;
      /** Network namespace to run in (tests/support/nat_lab.ts). */
      netns?: string;
      /** A command that runs deno with the arguments it is given (see {@link Proc}). */
      wrapper?: string[];
    } = {},
  ): Promise<TestClient> {
    const home = options.home ?? await Deno.makeTempDir({ prefix: `confab-${name}-` });
    const proc = new Proc(
      [
        "run",
        "-A",
        "client.ts",
        "--json",
        "--server",
        `${server.host ?? "127.0.0.1"}:${server.port}`,
        "--home",
        home,
        "--port",
        String(options.peerPort ?? 0),
        ...(options.args ?? []),
      ],
      name,
      { env: options.env, netns: options.netns, wrapper: options.wrapper },
    );
    const client = new TestClient(proc, home, options.home === undefined);
    await client.event("ready");
    return client;
  }

  /**
   * The event on line `index` of the output (`line`), parsed once: scenarios that wait for
   * hundreds of events would otherwise parse every earlier line again for each.
   */
  #eventAt(line: string, index: number): Event | undefined {
    let e = this.#parsed[index];
    if (e === undefined) this.#parsed[index] = e = parseEvent(line) ?? null;
    return e ?? undefined;
  }

  /** Waits for the next event of `type` whose fields include `match`. */
  event(type: string, match: Record<string, unknown> = {}, ms = DEADLINE_MS): Promise<Event> {
    return this.nextWhere((e) => matches(e, type, match), describe(type, match), ms);
  }

  /**
   * Waits for an event of `type` whose fields include `match`, seen at any time, before or
   * after the events other waits consumed: for outcomes that may come in either order.
   */
  anyEvent(type: string, match: Record<string, unknown> = {}, ms = DEADLINE_MS): Promise<Event> {
    return this.seenWhere((e) => matches(e, type, match), describe(type, match), ms);
  }

  /** Waits for the next event that passes `test` (consumed in order, as with {@link event}). */
  nextWhere(test: (e: Event) => boolean, what: string, ms = DEADLINE_MS): Promise<Event> {
    return this.#waitEvent("waitFor", test, what, ms);
  }

  /** Waits for an event that passes `test`, seen at any time (as with {@link anyEvent}). */
  seenWhere(test: (e: Event) => boolean, what: string, ms = DEADLINE_MS): Promise<Event> {
    return this.#waitEvent("find", test, what, ms);
  }

  async #waitEvent(
    how: "waitFor" | "find",
    test: (e: Event) => boolean,
    what: string,
    ms: number,
  ): Promise<Event> {
    // The line that passes is the last one tested: a wait stops testing at its match.
    let found: Event | undefined;
    const passes: LineTest = (l, i) => {
      found = this.#eventAt(l, i);
      return found !== undefined && test(found);
    };
    await this.proc.out[how](passes, what, ms);
    return found!;
  }

  /** Every event seen so far. */
  events(): Event[] {
    return this.proc.out.lines.map((l, i) => this.#eventAt(l, i))
      .filter((e): e is Event => e !== undefined);
  }

  send(line: string): Promise<void> {
    return this.proc.write(line);
  }

  async signup(user: string, password = "secret-pw"): Promise<void> {
    await this.send(`signup ${user} ${password}`);
    await this.event("logged_in", { user });
  }

  async login(user: string, password = "secret-pw"): Promise<void> {
    await this.send(`in ${user} ${password}`);
    await this.event("logged_in", { user });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.proc[Symbol.asyncDispose]();
    if (this.#ownHome) await Deno.remove(this.home, { recursive: true }).catch(() => {});
  }
}

/** Whether `e` is an event of `type` whose fields include `match`. */
function matches(e: Event, type: string, match: Record<string, unknown>): boolean {
  return e.type === type &&
    Object.entries(match).every(([k, v]) => JSON.stringify(e[k]) === JSON.stringify(v));
}

/** How a wait for an event of `type` with fields `match` is named in its error. */
function describe(type: string, match: Record<string, unknown>): string {
  return `with event ${type} ${JSON.stringify(match)}`;
}

/**
 * Makes `a` and `b` mutual contacts, as two users do: each adds the other (the first add is a
 * request, the second accepts it). Each client's user is its process name unless given.
 */
export async function befriend(
  a: TestClient,
  b: TestClient,
  names: { a?: string; b?: string } = {},
): Promise<void> {
  const aName = names.a ?? a.proc.name;
  const bName = names.b ?? b.proc.name;
  await a.send(`contacts add ${bName}`);
  await a.event("contact_added", { user: bName });
  await b.send(`contacts add ${aName}`);
  await b.event("contact_added", { user: aName });
}

function parseEvent(line: string): Event | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    return JSON.parse(line) as Event;
  } catch {
    return undefined;
  }
}

/** Reads every file below `dir` as bytes (for "no plaintext on disk" checks). */
export async function readAllFiles(dir: string): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) out.push(...await readAllFiles(path));
    else if (entry.isFile) out.push(await Deno.readFile(path));
  }
  return out;
}

/** True when `needle` occurs in `haystack` (byte search). */
export function containsBytes(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}

/**
 * Runs `deno <args>` in `cwd` (the repository by default) to its end (stdin closed, no colours),
 * killed after `deadlineMs`; its exit code and its stdout and stderr together.
 */
export async function runDeno(
  args: string[],
  deadlineMs: number,
  cwd = ROOT,
): Promise<{ code: number; output: string }> {
  const { code, stdout, stderr } = await new Deno.Command(DENO, {
    args,
    cwd,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(deadlineMs),
  }).output();
  const decoder = new TextDecoder();
  return { code, output: `${decoder.decode(stdout)}\n${decoder.decode(stderr)}` };
}
