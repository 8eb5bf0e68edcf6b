/**
 * One soak user: a real `client.ts --json` process, restarted with the same home after each
 * kill, driven through stdin as a person would type (log in again, open the chat again, read
 * the mail the partner left). Every event of every run of the process is kept, for the
 * checker, and written to `<out>/events/<name>.jsonl`.
 */
import { join } from "node:path";
import { type BenchProcess, clientArgs, deadline, sleep } from "../bench/support.ts";
import type { CutProxy } from "./proxy.ts";

/** An event as the client writes it with `--json`. */
export type SoakEvent = { type: string; [key: string]: unknown };

/** An event with the run of the process it came from and when the soak read it. */
export interface Logged {
  /** 1 for the first process, 2 after the first restart, … */
  inc: number;
  /** Date.now() when the soak read the line. */
  at: number;
  e: SoakEvent;
}

export type Role =
  /** Chats 1:1 with `partner`, sends numbered messages, reads the mail `partner` leaves. */
  | { kind: "pair"; partner: string }
  /** A member of the soak's group, in its window. */
  | { kind: "group" }
  /** Stays out of chats; fills `target`'s mailbox once when told to. */
  | { kind: "filler"; target: string };

/** Where the client's window is, as far as its events said. */
export type Mode = "down" | "out" | "idle" | "chat" | "group";

/** Errors that belong to no command (pushed by the server or a peer, or a chat line's). */
function isBackground(e: SoakEvent): boolean {
  const message = String(e.message ?? "");
  return ["MAIL_REJECTED", "FILE_TOO_LARGE", "TOO_LONG", "BAD_FILE", "AUTH_FAILED"].includes(
    String(e.code),
  ) || message.startsWith("server: ") || /^[\w.-]+: /.test(message);
}

interface Waiter {
  test: (e: SoakEvent) => boolean;
  resolve: (e: SoakEvent) => void;
  reject: (error: Error) => void;
}

export interface ActorOptions {
  name: string;
  home: string;
  role: Role;
  serverPort: () => number;
  /** Where events/<name>.jsonl goes. */
  outDir: string;
  peerTimeoutS: number;
  proxy?: CutProxy;
  /** Spawns a child (with the bench's reaper watching it). */
  spawn: (name: string, args: string[]) => BenchProcess;
  /** Says what a client does, for the soak's log. */
  note: (line: string) => void;
}

export const PASSWORD = "soak-password";
/** How long one command may take: a frozen process can hold it up for a freeze. */
const COMMAND_MS = 40_000;

export class Actor {
  readonly name: string;
  readonly role: Role;
  readonly log: Logged[] = [];
  proc: BenchProcess | undefined;
  inc = 0;
  mode: Mode = "down";
  frozen = false;
  /** The group's id, once this user is in it. */
  groupId: string | undefined;
  /** Senders whose mail this user reads while the soak runs (at the end: everyone's). */
  readonly readsFrom = new Set<string>();
  /** Senders with mail waiting (from notices and summaries); read in the next round. */
  readonly mailFrom = new Set<string>();
  /** Asks the soak to have this user added to the group again (it lost its membership). */
  onLostGroup: ((actor: Actor) => void) | undefined;
  /** Wanted: keep to the role (false at the end, when the soak reads the last mail itself). */
  keepRole = true;
  readonly #opts: ActorOptions;
  #waiters: Waiter[] = [];
  #lock: Promise<unknown> = Promise.resolve();
  #file: Deno.FsFile | undefined;
  #wake = Promise.withResolvers<void>();
  #stopped = false;
  #maintaining: Promise<void> | undefined;
  readonly #encoder = new TextEncoder();

  constructor(options: ActorOptions) {
    this.#opts = options;
    this.name = options.name;
    this.role = options.role;
    if (options.role.kind === "pair") this.readsFrom.add(options.role.partner);
  }

  get home(): string {
    return this.#opts.home;
  }

  /** The window this user should be in, per its role. */
  get inRoleWindow(): boolean {
    const role = this.role;
    if (role.kind === "pair") return this.mode === "chat";
    if (role.kind === "group") return this.mode === "group";
    return this.mode === "idle";
  }

  /** Events of one type, over every run of the process. */
  events(type: string): Logged[] {
    return this.log.filter((l) => l.e.type === type);
  }

  // ---- the process ----------------------------------------------------------------------------

  /** Starts the process (again) with the same home; resolves once it is ready. */
  async start(): Promise<void> {
    this.#file ??= await Deno.open(join(this.#opts.outDir, "events", `${this.name}.jsonl`), {
      append: true,
      create: true,
    });
    this.inc++;
    const args = clientArgs(this.#opts.serverPort(), this.#opts.home, [
      // A bot: the file shared between contacts is taken without asking.
      "--auto-accept",
      "contacts",
      "--peer-timeout",
      String(this.#opts.peerTimeoutS),
      ...(this.#opts.proxy ? ["--announce-port", String(this.#opts.proxy.port)] : []),
    ]);
    const proc = this.#opts.spawn(`${this.name}#${this.inc}`, args);
    this.proc = proc;
    this.frozen = false;
    const inc = this.inc;
    proc.out.listen((line) => this.#onLine(inc, line));
    void proc.status.then(() => {
      if (this.proc !== proc) return;
      this.mode = "down";
      this.#failWaiters(new Error(`${this.name}: the process ended`));
    });
    const ready = await this.#wait((e) => e.type === "ready", COMMAND_MS, "ready");
    if (this.#opts.proxy) this.#opts.proxy.target = Number(ready.peerPort);
    this.mode = "out";
    this.#poke();
  }

  /** kill -9: the process dies at once, in whatever it was doing. */
  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    proc.kill("SIGKILL");
    await proc.status;
    this.mode = "down";
    this.frozen = false;
  }

  freeze(): void {
    if (!this.proc || this.mode === "down") return;
    this.proc.kill("SIGSTOP");
    this.frozen = true;
  }

  thaw(): void {
    if (!this.proc || !this.frozen) return;
    this.proc.kill("SIGCONT");
    this.frozen = false;
    this.#poke();
  }

  /** Ends the process the way a user does (`quit` by closing stdin), then stops driving it. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#poke();
    this.thaw();
    await this.#maintaining;
    await this.proc?.stop();
    this.mode = "down";
    this.#file?.close();
    this.#file = undefined;
  }

  #onLine(inc: number, line: string): void {
    if (!line.startsWith("{")) return;
    let e: SoakEvent;
    try {
      e = JSON.parse(line) as SoakEvent;
    } catch {
      return;
    }
    const logged = { inc, at: Date.now(), e };
    this.log.push(logged);
    this.#file?.write(this.#encoder.encode(JSON.stringify({ inc, at: logged.at, ...e }) + "\n"))
      .catch(() => {});
    this.#track(e);
    for (const waiter of [...this.#waiters]) {
      if (waiter.test(e)) {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        waiter.resolve(e);
      }
    }
  }

  /** Follows where the window is and who left mail, from the events. */
  #track(e: SoakEvent): void {
    switch (e.type) {
      case "logged_in":
        this.mode = "idle";
        break;
      case "logged_out":
        this.mode = "out";
        break;
      case "chat_opened":
        this.mode = "chat";
        break;
      case "chat_closed":
        if (this.mode === "chat") this.mode = "idle";
        break;
      case "group_opened":
        this.groupId ??= String(e.group);
        if (e.group === this.groupId) this.mode = "group";
        break;
      case "group_window_closed":
        if (e.group === this.groupId && this.mode === "group") this.mode = "idle";
        break;
      case "group_closed":
        if (e.group === this.groupId && this.mode === "group") {
          this.mode = "idle";
          if (this.keepRole && !String(e.reason).includes("you left")) {
            this.#opts.note(`${this.name} is out of the group: ${e.reason}`);
          }
        }
        break;
      case "mail_notice":
        this.mailFrom.add(String(e.from).toLowerCase());
        break;
      case "mail_summary":
        for (const entry of e.entries as { from: string }[]) {
          this.mailFrom.add(entry.from.toLowerCase());
        }
        break;
    }
    this.#poke();
  }

  // ---- commands -----------------------------------------------------------------------------

  #wait(test: (e: SoakEvent) => boolean, ms: number, what: string): Promise<SoakEvent> {
    const found = Promise.withResolvers<SoakEvent>();
    const waiter = { test, resolve: found.resolve, reject: found.reject };
    this.#waiters.push(waiter);
    return deadline(found.promise, ms, `${this.name}: ${what}`).finally(() => {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
    });
  }

  #failWaiters(error: Error): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(error);
  }

  /** Runs `task` with the client's stdin to itself: one command at a time, as typed. */
  exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(task, task);
    this.#lock = run.catch(() => {});
    return run;
  }

  /**
   * Types `line` and waits for the event that ends it (`done`), or an error of that command.
   * Call inside {@link exclusive}.
   */
  async command(
    line: string,
    done: (e: SoakEvent) => boolean,
    ms = COMMAND_MS,
  ): Promise<SoakEvent> {
    const proc = this.proc;
    if (!proc || this.mode === "down") throw new Error(`${this.name} is down`);
    const answer = this.#wait(
      (e) => done(e) || (e.type === "error" && !isBackground(e)),
      ms,
      `the end of "${line.split(" ").slice(0, 2).join(" ")}"`,
    );
    await proc.write(line).catch(() => {});
    const e = await answer;
    if (e.type === "error" && !done(e)) throw new Error(`${this.name}: ${e.code}: ${e.message}`);
    return e;
  }

  /** Writes a chat line (not awaited by the client either: its outcome comes as events). */
  async say(text: string): Promise<boolean> {
    return await this.exclusive(async () => {
      if (!this.inRoleWindow || this.frozen || !this.proc) return false;
      await this.proc.write(text).catch(() => {});
      return true;
    });
  }

  // ---- keeping to the role ----------------------------------------------------------------------

  /** Running and not frozen (the mode changes under an await, hence a method). */
  #isUp(): boolean {
    return this.mode !== "down" && !this.frozen;
  }

  #poke(): void {
    this.#wake.resolve();
  }

  /** Starts the loop that puts the user back where the role wants them after each fault. */
  maintain(): void {
    this.#maintaining ??= this.#maintainLoop();
  }

  async #maintainLoop(): Promise<void> {
    let backoff = 200;
    while (!this.#stopped) {
      await Promise.race([this.#wake.promise, sleep(1_000)]);
      this.#wake = Promise.withResolvers<void>();
      if (this.#stopped) return;
      if (this.frozen || this.mode === "down" || !this.keepRole) continue;
      try {
        await this.exclusive(() => this.#step());
        backoff = 200;
      } catch (error) {
        if (this.#isUp()) {
          this.#opts.note(`${this.name}: ${(error as Error).message.split("\n")[0]}`);
        }
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 3_000);
      }
    }
  }

  /** One move towards the role's window: log in, read waiting mail, open the window. */
  async #step(): Promise<void> {
    if (this.frozen || this.mode === "down" || this.#stopped || !this.keepRole) return;
    if (this.mode === "out") {
      await this.command(`in ${this.name} ${PASSWORD}`, (e) => e.type === "logged_in");
      return;
    }
    const role = this.role;
    if (role.kind === "pair") {
      const readable = [...this.mailFrom].filter((u) => this.readsFrom.has(u));
      if (readable.length > 0) {
        await this.readMail(readable);
        return;
      }
      if (this.mode === "idle") {
        await this.command(`chat ${role.partner}`, (e) => e.type === "chat_opened");
      }
      return;
    }
    if (role.kind === "group" && this.mode === "idle" && this.groupId) {
      const listed = await this.command("groups", (e) => e.type === "groups");
      const mine = (listed.groups as { id: string; handle: string; active: boolean }[])
        .find((g) => g.id === this.groupId);
      if (mine?.active) {
        await this.command(`chat ${mine.handle}`, (e) => e.type === "group_opened");
      } else {
        this.onLostGroup?.(this);
        // Wait for someone to add us (group_opened moves the mode), or try again later.
        await this.#wait((e) => e.type === "group_opened", 5_000, "being added again")
          .catch(() => {});
      }
    }
  }

  /**
   * Reads the mail of `senders` (leaving the window first: in a window every line is a
   * message). Call inside {@link exclusive}.
   */
  async readMail(senders: readonly string[]): Promise<void> {
    if (this.mode === "chat") await this.command("/q", (e) => e.type === "chat_closed");
    // `/b` closes a group's window and keeps the membership (`/q` would leave the group).
    if (this.mode === "group") await this.command("/b", (e) => e.type === "group_window_closed");
    for (const sender of senders) {
      this.mailFrom.delete(sender);
      try {
        await this.command(`show ${sender}`, (e) => e.type === "shown");
      } catch (error) {
        this.mailFrom.add(sender);
        throw error;
      }
    }
  }

  /** Wakes the loop (after a change the events do not show, e.g. new senders to read). */
  poke(): void {
    this.#poke();
  }
}
