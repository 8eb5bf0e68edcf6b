/**
 * Confab clients for the bench items, and the steps that make a crowd of them:
 *
 * - {@link ClientProcess}: a real `client.ts --json` process, driven through stdin and followed
 *   through stdout. Every event is read as it arrives and time-stamped with the bench
 *   process's `performance.now()`; the links and group memberships it reports are tracked.
 * - {@link LocalClient}: a `ConfabClient` in the bench process, its events time-stamped as they
 *   are emitted (no pipe in between): the side an item measures from.
 * - {@link relateAll} (contacts so that everyone may link to everyone) and {@link BenchGroup}
 *   (a group made as a user makes one: `chat` with the first member, then `/a` for each other,
 *   and waited for until every member counts everyone in and holds a link to each).
 */
import { join } from "node:path";
import { type ClientOptions, ConfabClient } from "../../lib/client/client.ts";
import type { ClientError } from "../../lib/client/context.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { abortable, type BenchProcess, clientArgs, type JsonEvent, sleep } from "./support.ts";
import type { BenchContext } from "./types.ts";

export const PASSWORD = "bench-password";
/** Deadline for one setup step (a login, a group to settle). */
export const SETUP_MS = 30_000;

/** An event and when the bench process saw it (`performance.now()`). */
export interface Timed<E = JsonEvent> {
  event: E;
  at: number;
}

interface Waiter {
  test: (event: JsonEvent, at: number) => boolean;
  resolve: (timed: Timed) => void;
  reject: (error: Error) => void;
}

const lower = (name: unknown) => String(name).toLowerCase();

/** What a client process's `message` lines are passed on as (they are not parsed). */
const MESSAGE: JsonEvent = Object.freeze({ type: "message" });

/** The state both kinds of client follow from their events, and waits on it. */
abstract class Tracked {
  /** Users (lower case) this client holds a live direct link to. */
  readonly links = new Set<string>();
  /** The latest member list (lower case, sorted) of each group this client is in. */
  readonly groups = new Map<string, string[]>();
  /** `code: message` of each error event. */
  readonly errors: string[] = [];
  ready = false;
  loggedIn = false;
  readonly #waiters = new Set<Waiter>();
  #gone: string | undefined;

  abstract readonly name: string;

  protected apply(event: JsonEvent, at: number): void {
    switch (event.type) {
      case "ready":
        this.ready = true;
        break;
      case "logged_in":
        this.loggedIn = true;
        break;
      case "logged_out":
        this.loggedIn = false;
        this.links.clear();
        this.groups.clear();
        break;
      case "link_up":
        this.links.add(lower(event.user));
        break;
      case "link_down":
        this.links.delete(lower(event.user));
        break;
      case "group_opened":
      case "group_members":
      case "group_rejoined":
        this.groups.set(String(event.group), (event.members as string[]).map(lower).sort());
        break;
      case "group_closed":
        this.groups.delete(String(event.group));
        break;
      case "error":
        this.errors.push(`${event.code}: ${event.message}`);
        if (this.errors.length > 20) this.errors.shift();
        break;
    }
    for (const waiter of [...this.#waiters]) {
      if (waiter.test(event, at)) {
        this.#waiters.delete(waiter);
        waiter.resolve({ event, at });
      }
    }
  }

  /** No more events will come (the process ended): every wait fails. */
  protected end(why: string): void {
    this.#gone = why;
    for (const waiter of this.#waiters) waiter.reject(new Error(`${this.name}: ${why}`));
    this.#waiters.clear();
  }

  protected describe(): string {
    return this.errors.length > 0 ? `; its last errors: ${this.errors.slice(-3).join(" | ")}` : "";
  }

  /**
   * The first event from now on passing `test` (called with each event and the time it was
   * seen), within `ms`. Register the wait before doing what causes the event.
   */
  waitFor(
    test: (event: JsonEvent, at: number) => boolean,
    what: string | (() => string),
    ms: number,
    signal: AbortSignal,
  ): Promise<Timed> {
    if (this.#gone) return Promise.reject(new Error(`${this.name}: ${this.#gone}`));
    const found = Promise.withResolvers<Timed>();
    const waiter: Waiter = { test, resolve: found.resolve, reject: found.reject };
    this.#waiters.add(waiter);
    const timeout = AbortSignal.timeout(ms);
    return abortable(found.promise, AbortSignal.any([signal, timeout])).catch((error) => {
      this.#waiters.delete(waiter);
      if (timeout.aborted && !signal.aborted) {
        const said = typeof what === "string" ? what : what();
        throw new Error(`${this.name}: no ${said} within ${ms} ms${this.describe()}`);
      }
      throw error;
    });
  }

  /** The next event of `type` whose fields equal those in `match`. */
  event(
    type: string,
    match: Record<string, unknown>,
    signal: AbortSignal,
    ms = SETUP_MS,
  ): Promise<Timed> {
    return this.waitFor(
      (e) => e.type === type && Object.entries(match).every(([k, v]) => e[k] === v),
      `${type} event ${JSON.stringify(match)}`,
      ms,
      signal,
    );
  }

  /** Waits until `condition` holds (checked now, then after each event). */
  async until(
    condition: () => boolean,
    what: string | (() => string),
    signal: AbortSignal,
    ms = SETUP_MS,
  ): Promise<void> {
    if (condition()) return;
    await this.waitFor(() => condition(), what, ms, signal);
  }
}

/** A `client.ts --json` process. */
export class ClientProcess extends Tracked {
  /**
   * `message` events seen. They are the bulk of the output, so they are counted, not parsed:
   * a wait sees each as a bare `{type: "message"}`.
   */
  messages = 0;

  private constructor(readonly proc: BenchProcess, readonly name: string) {
    super();
    proc.out.listen((line) => this.#onLine(line, performance.now()));
    void proc.out.ended.then(async () => {
      // Why it went: its exit status and the last lines it wrote on stderr.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const status = await Promise.race([
        proc.status,
        new Promise((r) => timer = setTimeout(r, 1000)),
      ]).finally(() => clearTimeout(timer));
      const code = status ? ` with ${JSON.stringify(status)}` : "";
      const err = proc.err.tail.slice(-5).join(" | ").slice(0, 500);
      this.end(`its output ended (the process exited${code}; stderr: ${err || "none"})`);
    });
  }

  /**
   * Starts `client.ts --json` as `name` (the user it will be) with its own home under `dir`,
   * talking to the server on `serverPort`, and waits until it listens for peers.
   */
  static async start(
    ctx: BenchContext,
    name: string,
    options: { serverPort: number; dir: string; args?: string[] },
  ): Promise<ClientProcess> {
    const proc = ctx.spawn(
      name,
      clientArgs(options.serverPort, join(options.dir, name), [
        "--history",
        "0",
        // A bot: files from its contacts are taken without asking.
        "--auto-accept",
        "contacts",
        ...(options.args ?? []),
      ]),
      { profile: true },
    );
    const client = new ClientProcess(proc, name);
    await client.until(() => client.ready, "ready event", ctx.signal);
    return client;
  }

  #onLine(line: string, at: number): void {
    if (!line.startsWith("{")) return;
    if (line.startsWith('{"type":"message"')) {
      // Counted, and passed on unparsed: waits on the count see it, waits on fields do not.
      this.messages++;
      this.apply(MESSAGE, at);
      return;
    }
    if (line.startsWith('{"type":"transfer_progress"')) return;
    let event: JsonEvent;
    try {
      event = JSON.parse(line) as JsonEvent;
    } catch {
      return;
    }
    this.apply(event, at);
  }

  protected override describe(): string {
    return `${super.describe()}\n${this.proc.describe()}`;
  }

  /** Types a line. */
  command(line: string): Promise<void> {
    return this.proc.write(line);
  }

  /** Types `line` and waits for the event it causes (the wait is on before the line goes). */
  async ask(
    line: string,
    type: string,
    match: Record<string, unknown>,
    signal: AbortSignal,
    ms = SETUP_MS,
  ): Promise<Timed> {
    const answer = this.event(type, match, signal, ms);
    answer.catch(() => {}); // (handled below; a failed write must not leave it unhandled)
    await this.command(line);
    return await answer;
  }

  async signup(signal: AbortSignal): Promise<void> {
    await this.ask(`signup ${this.name} ${PASSWORD}`, "logged_in", { user: this.name }, signal);
  }

  async login(signal: AbortSignal): Promise<void> {
    await this.ask(`in ${this.name} ${PASSWORD}`, "logged_in", { user: this.name }, signal);
  }

  /** Adds `users` as contacts (typed one after another, the answers awaited together). */
  async addContacts(users: string[], signal: AbortSignal): Promise<void> {
    if (users.length === 0) return;
    const pending = new Set(users.map(lower));
    const done = this.waitFor(
      (e) => e.type === "contact_added" && pending.delete(lower(e.user)) && pending.size === 0,
      `contact_added for ${users.length} users`,
      SETUP_MS,
      signal,
    );
    done.catch(() => {});
    for (const user of users) await this.command(`contacts add ${user}`);
    await done;
  }
}

/** A ConfabClient in the bench process; `onEvent` sees each event as it is emitted. */
export class LocalClient extends Tracked {
  readonly client: ConfabClient;
  /** Called with every event and `performance.now()` at its emission (before tracking). */
  onEvent: ((event: ClientEvent, at: number) => void) | undefined;

  constructor(readonly name: string, options: ClientOptions) {
    super();
    this.client = new ConfabClient(options, (event) => {
      const at = performance.now();
      this.onEvent?.(event, at);
      this.apply(event as unknown as JsonEvent, at);
    });
  }

  /** Starts it (listening for peers) and signs it up; it is closed when the item ends. */
  static async signup(
    ctx: BenchContext,
    name: string,
    options: Omit<ClientOptions, "home"> & { dir: string },
  ): Promise<LocalClient> {
    const { dir, ...rest } = options;
    const local = new LocalClient(name, { ...rest, home: join(dir, name) });
    ctx.defer(() => local.client.close());
    local.client.start();
    await abortable(local.client.signup(name, PASSWORD), ctx.signal);
    return local;
  }
}

/**
 * Contacts so that any two may link: the server gives a user's address only to a mutual
 * contact. `creator` adds everyone (requests); each member adds the creator and every other
 * member (accepting the requests made to it, making its own).
 */
export async function relateAll(
  creator: LocalClient,
  members: ClientProcess[],
  signal: AbortSignal,
): Promise<void> {
  for (const member of members) await abortable(creator.client.addContact(member.name), signal);
  await Promise.all(
    members.map((m) =>
      m.addContacts([creator.name, ...members.filter((o) => o !== m).map((o) => o.name)], signal)
    ),
  );
}

/**
 * Opens a direct link between every two members before they are in a group together: member
 * i opens a chat with each member after it and leaves it again (`chat <user>`, `/q`); the
 * links stay. So no two members ever dial each other at the same moment, which is what the
 * group layer does when a member joins (the newcomer dials everyone while everyone dials the
 * newcomer). Under load that race can end a link with EPIPE instead of a clean close, which
 * the client takes for the peer being gone: it drops a live member as "unreachable" (see
 * bench/REPORT.md, group).
 */
export async function linkAll(members: ClientProcess[], signal: AbortSignal): Promise<void> {
  await Promise.all(members.map(async (m, i) => {
    for (const other of members.slice(i + 1)) {
      await m.ask(`chat ${other.name}`, "chat_opened", { with: other.name, online: true }, signal);
      await m.ask("/q", "chat_closed", { with: other.name }, signal);
    }
  }));
  await Promise.all(members.map((m) => {
    const me = m.name.toLowerCase();
    const others = members.map((o) => o.name.toLowerCase()).filter((u) => u !== me);
    return m.until(() => others.every((u) => m.links.has(u)), "links to every member", signal);
  }));
}

/** A group made by `creator` the way a user makes one, and grown the same way. */
export class BenchGroup {
  id: string | undefined;
  readonly members: ClientProcess[] = [];
  /** Setup requests asked again after a timeout (see {@link add}). */
  setupRetries = 0;

  constructor(readonly creator: LocalClient) {}

  /** Everyone in it, the creator first. */
  get everyone(): (LocalClient | ClientProcess)[] {
    return [this.creator, ...this.members];
  }

  /**
   * Adds `newcomers`: the first ever by `chat <user>`, then each by `/a <user>` (the 1:1 chat
   * turns into a group at the second); then waits until it has settled.
   */
  async add(newcomers: ClientProcess[], signal: AbortSignal): Promise<void> {
    const client = this.creator.client;
    for (const member of newcomers) {
      for (let attempt = 1;; attempt++) {
        try {
          if (this.members.length === 0) await abortable(client.openChat(member.name), signal);
          else await abortable(client.addToChat(member.name), signal);
          break;
        } catch (error) {
          // A request of the setup that timed out on a saturated machine (the lookup or the
          // contact list: nobody was added yet) is asked again; what is measured is not this.
          if ((error as ClientError).code !== "SERVER_UNREACHABLE" || attempt === 3) throw error;
          this.setupRetries++;
          await sleep(1_000, signal); // the next request reconnects if the connection went
        }
      }
      this.members.push(member);
    }
    if (this.members.length >= 2) this.id ??= [...this.creator.groups.keys()][0];
    if (this.id === undefined && this.members.length >= 2) {
      throw new Error(`${this.creator.name} made no group`);
    }
    await this.settled(signal);
  }

  /**
   * Waits until every member (the creator too) counts exactly everyone in the group, and holds
   * a direct link to each of the others: the full mesh a group message travels over.
   */
  async settled(signal: AbortSignal, ms = SETUP_MS): Promise<void> {
    const all = this.everyone.map((c) => lower(c.name)).sort();
    const want = JSON.stringify(all);
    await Promise.all(this.everyone.map((c) => {
      const me = lower(c.name);
      const done = () =>
        (this.id === undefined || JSON.stringify(c.groups.get(this.id)) === want) &&
        all.every((u) => u === me || c.links.has(u));
      const missing = () => {
        const links = all.filter((u) => u !== me && !c.links.has(u));
        const view = this.id === undefined ? undefined : c.groups.get(this.id);
        return `group of ${all.length} and full mesh (it counts ${
          view ? view.length : "no group"
        } members; no link to ${links.join(", ") || "—"})`;
      };
      return c.until(done, missing, signal, ms);
    }));
  }

  /** Forgets a member that is gone (killed); the others drop it on their own. */
  drop(member: ClientProcess): void {
    const i = this.members.indexOf(member);
    if (i >= 0) this.members.splice(i, 1);
  }
}

/**
 * Sign-ups under way at once: the server counts password attempts in progress from one address
 * against it (all bench clients come from 127.0.0.1), and refuses past 20.
 */
const SIGNUPS_AT_ONCE = 8;

/** Starts client processes named `names` (in parallel) and signs each up, a few at a time. */
export async function startClients(
  ctx: BenchContext,
  names: string[],
  options: { serverPort: number; dir: string; args?: string[] },
): Promise<ClientProcess[]> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return await Promise.all(names.map(async (name) => {
    const c = await ClientProcess.start(ctx, name, options);
    while (running >= SIGNUPS_AT_ONCE) await new Promise<void>((r) => waiting.push(r));
    running++;
    try {
      await c.signup(ctx.signal);
    } finally {
      running--;
      waiting.shift()?.();
    }
    return c;
  }));
}
