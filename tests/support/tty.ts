/**
 * A real pseudo-terminal for end-to-end tests of the terminal client: each `Tty` runs one
 * program in its own tmux server (its own socket, so parallel tests never meet), types keys into
 * it and reads the screen as a person would see it. Waits poll the screen with a deadline.
 */
import {
  DEADLINE_MS,
  Proc,
  ROOT,
  type TestClient,
  TestClient as TestClientClass,
} from "./processes.ts";

const DENO = Deno.execPath();
let counter = 0;

async function tmux(socket: string, args: string[]): Promise<string> {
  const out = await new Deno.Command("tmux", {
    args: ["-L", socket, ...(args[0] === "-f" ? [] : ["-f", "/dev/null"]), ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  if (!out.success) {
    throw new Error(`tmux ${args[0]}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Quotes a word for the shell tmux runs the command with. */
function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

export interface TtyOptions {
  cols?: number;
  rows?: number;
  env?: Record<string, string>;
  /** Run the program from an interactive bash, so job control (Ctrl-Z, `fg`) works. */
  shell?: boolean;
}

/** True while `pid` runs (a zombie waiting to be reaped counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) [ZX]/s.test(stat);
  } catch {
    return false;
  }
}

/** Waits for a process to end, and kills it when it does not within the deadline. */
async function waitGone(pid: number, ms = DEADLINE_MS): Promise<void> {
  const deadline = Date.now() + ms;
  for (let wait = 20; alive(pid); wait = Math.min(wait * 2, 200)) {
    if (Date.now() > deadline) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
      return;
    }
    await new Promise((r) => setTimeout(r, wait));
  }
}

/** A child process of `parent` (from /proc: no procps needed on a bare CI machine). */
function childOf(parent: number): number | undefined {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      // pid (comm) state ppid ...; comm may hold spaces and parentheses.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === parent) return Number(entry.name);
    } catch { /* gone meanwhile */ }
  }
  return undefined;
}

/** True when the last line on the screen is a shell's prompt. */
function atShellPrompt(screen: string): boolean {
  return /[$#]$/.test(screen.trimEnd().split("\n").pop() ?? "");
}

/** A program on a pseudo-terminal. */
export class Tty implements AsyncDisposable {
  readonly #socket: string;
  readonly name: string;
  readonly #shell: boolean;
  /** Where the program's exit code is written (tmux does not always report it). */
  readonly #exitFile: string;
  readonly #dir: string;
  /** tmux's socket file, removed at the end (kill-server leaves it). */
  #socketPath: string | undefined;
  #closed = false;

  private constructor(socket: string, name: string, shell: boolean, dir: string) {
    this.#socket = socket;
    this.name = name;
    this.#shell = shell;
    this.#dir = dir;
    this.#exitFile = `${dir}/exit-code`;
  }

  /** Starts `deno run -A <args>` (from the repository root) on a new terminal. */
  static async deno(name: string, args: string[], options: TtyOptions = {}): Promise<Tty> {
    const socket = `confab-tty-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    const dir = await Deno.makeTempDir({ prefix: "confab-tty-" });
    const tty = new Tty(socket, name, options.shell ?? false, dir);
    // The pane stays after the program ends, so its last screen can be read.
    await Deno.writeTextFile(
      `${dir}/tmux.conf`,
      "set -g remain-on-exit on\nset -g default-shell /bin/sh\nset -g history-limit 5000\n",
    );
    const env = { TERM: "xterm-256color", ...options.env };
    const command = [DENO, "run", "-A", ...args].map(shellQuote).join(" ");
    const envArgs = Object.entries(env).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
    const size = ["-x", String(options.cols ?? 100), "-y", String(options.rows ?? 30)];
    const session = (program: string) =>
      tmux(socket, [
        "-f",
        `${dir}/tmux.conf`,
        "new-session",
        "-d",
        ...size,
        "-c",
        ROOT,
        ...envArgs,
        "-s",
        "t",
        program,
      ]);
    try {
      if (tty.#shell) {
        await session("exec bash --norc --noprofile -i");
        await tty.waitFor(atShellPrompt, "a shell prompt");
        await tty.line(command);
      } else {
        // The shell outlives a hang-up to write down how the program ended.
        await session(`trap '' HUP; ${command}; echo $? > ${shellQuote(tty.#exitFile)}`);
      }
      tty.#socketPath = (await tmux(socket, ["display", "-p", "#{socket_path}"])).trim();
    } catch (error) {
      await tty[Symbol.asyncDispose]();
      throw error;
    }
    return tty;
  }

  /** Resizes the terminal, as dragging its window's edge does. */
  async resize(cols: number, rows: number): Promise<void> {
    await tmux(this.#socket, ["resize-window", "-t", "t", "-x", String(cols), "-y", String(rows)]);
  }

  /** Types text literally (no key names). */
  async type(text: string): Promise<void> {
    await tmux(this.#socket, ["send-keys", "-t", "t", "-l", text]);
  }

  /** Presses keys by name: `Enter`, `C-c`, `C-d`, `C-z`, `Tab`, `Up`, `BSpace`... */
  async key(...names: string[]): Promise<void> {
    await tmux(this.#socket, ["send-keys", "-t", "t", ...names]);
  }

  /** Types a line and presses Enter. */
  async line(text: string): Promise<void> {
    await this.type(text);
    await this.key("Enter");
  }

  /**
   * Pastes `text` as a terminal does when the user pastes: as one bracketed paste if the
   * program asked for bracketed pastes, else as typed bytes.
   */
  async paste(text: string): Promise<void> {
    const buffer = `paste-${++counter}`;
    const child = new Deno.Command("tmux", {
      args: ["-L", this.#socket, "-f", "/dev/null", "load-buffer", "-b", buffer, "-"],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(text));
    await writer.close();
    await child.status;
    await tmux(this.#socket, ["paste-buffer", "-p", "-d", "-b", buffer, "-t", "t"]);
  }

  /** The visible screen, one string, rows joined by newlines (trailing blanks trimmed). */
  async screen(): Promise<string> {
    return (await tmux(this.#socket, ["capture-pane", "-p", "-t", "t"])).replace(/\s+$/, "");
  }

  /** The visible screen with its colours, as terminal escapes. */
  async styledScreen(): Promise<string> {
    return await tmux(this.#socket, ["capture-pane", "-p", "-e", "-t", "t"]);
  }

  /** Everything printed so far: the scrollback and the screen, wrapped rows joined. */
  async history(): Promise<string> {
    return await tmux(this.#socket, ["capture-pane", "-p", "-J", "-S", "-", "-t", "t"]);
  }

  /** The window title the program set (OSC 0/2). */
  async title(): Promise<string> {
    return (await tmux(this.#socket, ["display", "-p", "-t", "t", "#{pane_title}"])).trim();
  }

  /** True once the program has rung the terminal bell (tmux keeps the flag). */
  async bellRung(): Promise<boolean> {
    return (await tmux(this.#socket, ["display", "-p", "-t", "t", "#{window_bell_flag}"]))
      .trim() === "1";
  }

  /** Waits until the program rings the terminal bell. */
  async waitForBell(what: string, ms = DEADLINE_MS): Promise<void> {
    const deadline = Date.now() + ms;
    for (let wait = 20; !(await this.bellRung()); wait = Math.min(wait * 2, 200)) {
      if (Date.now() > deadline) {
        throw new Error(
          `${this.name}: no bell for ${what} within ${ms} ms:\n${await this.screen()}`,
        );
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  /** The row the cursor is on, as the screen shows it. */
  async cursorLine(): Promise<string> {
    const y = Number(
      (await tmux(this.#socket, ["display", "-p", "-t", "t", "#{cursor_y}"])).trim(),
    );
    const rows = (await tmux(this.#socket, ["capture-pane", "-p", "-t", "t"])).split("\n");
    return rows[y] ?? "";
  }

  /** The program's process id (the child of the pane's shell). */
  async pid(): Promise<number> {
    const panePid = Number(
      (await tmux(this.#socket, ["display", "-p", "-t", "t", "#{pane_pid}"])).trim(),
    );
    const pid = childOf(panePid);
    if (pid === undefined) throw new Error(`${this.name}: the program is not running`);
    return pid;
  }

  /**
   * Waits until the screen (or with `history`, everything printed) passes `test`; returns it.
   */
  async waitFor(
    test: RegExp | string | ((screen: string) => boolean),
    what: string,
    options: { ms?: number; history?: boolean } = {},
  ): Promise<string> {
    const ms = options.ms ?? DEADLINE_MS;
    const check = typeof test === "function"
      ? test
      : typeof test === "string"
      ? (s: string) => s.includes(test)
      : (s: string) => test.test(s);
    const deadline = Date.now() + ms;
    let last = "";
    for (let wait = 20;; wait = Math.min(wait * 2, 200)) {
      last = options.history ? await this.history() : await this.screen();
      if (check(last)) return last;
      if (Date.now() > deadline) {
        throw new Error(`${this.name}: no screen with ${what} within ${ms} ms; screen:\n${last}`);
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  /** Waits for the program to end; resolves with its exit code. */
  async exitCode(ms = DEADLINE_MS): Promise<number> {
    if (this.#shell) {
      await this.waitFor(atShellPrompt, "the shell prompt after the program ended", { ms });
      await this.line("echo EXIT=$?");
      const screen = await this.waitFor(/EXIT=\d+/, "the exit code", { ms });
      return Number(/EXIT=(\d+)/.exec(screen)![1]);
    }
    const deadline = Date.now() + ms;
    for (let wait = 20;; wait = Math.min(wait * 2, 200)) {
      const written = await Deno.readTextFile(this.#exitFile).catch(() => "");
      if (/^\d+\s*$/.test(written)) return Number(written);
      if (Date.now() > deadline) {
        throw new Error(
          `${this.name}: still running after ${ms} ms; screen:\n${await this.screen()}`,
        );
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  /** Closes the terminal, as closing its window does: the program sees a hang-up. */
  async hangUp(): Promise<void> {
    await tmux(this.#socket, ["kill-server"]).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const pid = await this.pid().catch(() => undefined);
    await this.hangUp(); // the program logs out and goes
    if (pid !== undefined) await waitGone(pid);
    if (this.#socketPath) await Deno.remove(this.#socketPath).catch(() => {});
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

/** A terminal client: `client.ts` on a PTY against `server`, in its own home dir. */
export async function ttyClient(
  name: string,
  server: { port: number },
  options: TtyOptions & { home?: string; args?: string[] } = {},
): Promise<Tty & { home: string }> {
  const home = options.home ?? await Deno.makeTempDir({ prefix: `confab-tty-${name}-` });
  const tty = await Tty.deno(name, [
    "client.ts",
    "--server",
    `127.0.0.1:${server.port}`,
    "--home",
    home,
    ...(options.args ?? []),
  ], { env: { NO_COLOR: "1", ...options.env }, ...options });
  const dispose = tty[Symbol.asyncDispose].bind(tty);
  return Object.assign(tty, {
    home,
    async [Symbol.asyncDispose]() {
      await dispose();
      if (options.home === undefined) await Deno.remove(home, { recursive: true }).catch(() => {});
    },
  });
}

/** Signs `user` up on a terminal client (password on the line) and waits for the prompt. */
export async function signUp(tty: Tty, user: string, password = "secret-pw"): Promise<void> {
  await tty.waitFor("type help", "the banner");
  await tty.line(`signup ${user} ${password}`);
  await tty.waitFor(`logged in as ${user}`, `${user} logged in`);
  await tty.waitFor(new RegExp(`^${user}>$`, "m"), `the prompt ${user}>`);
}

/** Each `--json` client adds each of `names` to its contacts, and waits until it has. */
export async function addContacts(clients: TestClient[], ...names: string[]): Promise<void> {
  for (const client of clients) {
    for (const name of names) {
      await client.send(`contacts add ${name}`);
      await client.event("contact_added", { user: name });
    }
  }
}

/** A line-mode client (`client.ts` without `--json`, stdin and stdout piped). */
export function plainClient(
  name: string,
  server: { address: string },
  home: string,
  options: { args?: string[]; env?: Record<string, string> } = {},
): Proc {
  return new Proc(
    ["run", "-A", "client.ts", "--server", server.address, "--home", home, ...(options.args ?? [])],
    name,
    { env: options.env },
  );
}

/** Signs `user` up on a line-mode client and waits until logged in. */
export async function plainSignUp(proc: Proc, user: string, password = "secret-pw"): Promise<void> {
  await proc.write(`signup ${user} ${password}`);
  await proc.out.waitFor((l) => l.startsWith(`logged in as ${user}`), `${user} logged in`);
}

/**
 * bob (a `--json` client) and alice on a terminal, each in the other's contacts, alice in a
 * chat with bob over a direct link.
 */
export async function ttyChat(
  server: { port: number },
): Promise<{ alice: Tty & { home: string }; bob: TestClient } & AsyncDisposable> {
  const bob = await TestClientClass.start("bob", server);
  await bob.signup("bob");
  const alice = await ttyClient("alice", server);
  try {
    await signUp(alice, "alice");
    await alice.line("contacts add bob");
    await addContacts([bob], "alice");
    await alice.line("chat bob");
    await alice.waitFor(/^alice → bob>$/m, "the chat");
    await bob.event("link_up", { user: "alice" });
  } catch (error) {
    await alice[Symbol.asyncDispose]();
    await bob[Symbol.asyncDispose]();
    throw error;
  }
  return {
    alice,
    bob,
    async [Symbol.asyncDispose]() {
      await alice[Symbol.asyncDispose]();
      await bob[Symbol.asyncDispose]();
    },
  };
}
