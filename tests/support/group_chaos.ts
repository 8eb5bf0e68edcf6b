/**
 * A seeded chaos run for groups, with real processes: a server and six clients who are all each
 * other's contacts; four of them make a group and three send numbered lines at a steady rate
 * while a schedule drawn from the seed kills the server (-9) and restarts it, has two members
 * add the other two at the same moment while everyone re-attaches, kills a member (-9) and
 * restarts it on its home, kills a sender while that member is away and keeps it down until the
 * member has the sender's messages from the other members (catch-up without the author), and
 * freezes another past the peer timeout (SIGSTOP, SIGCONT).
 *
 * Then it checks what users would: every member has every message sent to the group while it
 * was a member (away included), once, in order per sender; every sender sees `**` on each of
 * its messages; all members end with the same member list, within 5 s of being linked again;
 * nobody was removed or shut out while its process was alive. The same seed replays the same
 * schedule.
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { type Event, startServer, TestClient, type TestServer } from "./processes.ts";
import { crowd, enter } from "./groups.ts";
import { groupHandle } from "../../lib/peer/group_state.ts";
import { groupChat } from "../../lib/client/client_store.ts";

export interface GroupChaosOptions {
  seed: number;
  /** How long members send and faults happen, ms. */
  activeMs?: number;
  /** Lines per second from each sender. */
  rate?: number;
  /** Progress lines (the schedule, phases). */
  log?: (line: string) => void;
  /**
   * Kill the victim at a moment its store holds one of the author's messages that it has not
   * shown yet (found by freezing it at random moments): the window between a commit and the
   * line that shows it, which a kill -9 falls into only now and then.
   */
  killUnshown?: boolean;
}

export interface GroupChaosReport {
  seed: number;
  /** Problems found; empty when the run passed. */
  problems: string[];
  /** Messages sent (a `sent` event at their author). */
  sent: number;
  /** Copies checked (message × member it was for). */
  copies: number;
  /** From the full mesh after the last fault to equal member lists everywhere, ms. */
  convergeMs: number;
  /** From the end of sending to every copy in place, ms. */
  settleMs: number;
  /** What happened when, for a report that replays. */
  timeline: string[];
}

/** A small seeded generator (mulberry32): the same seed, the same schedule. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PEER_TIMEOUT_S = 2;
const NAMES = ["ann", "ben", "cat", "dan", "eve", "fay"];
/** How long everything may take to settle once the faults are over, ms. */
const SETTLE_MS = 90_000;
const CONVERGE_BOUND_MS = 5_000;

/**
 * Errors a run may show without anything being wrong: an `/a` tried while the server or the
 * newcomer is still coming back, or repeated after it worked; a sign-up tried again after its
 * answer was lost on a loaded machine.
 */
function expectedError(e: Event): boolean {
  return ["USER_OFFLINE", "SERVER_UNREACHABLE", "PEER_UNREACHABLE", "USER_EXISTS"].includes(
    String(e.code),
  ) ||
    (e.code === "BAD_COMMAND" && String(e.message).includes("already in the group"));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One user: the processes it ran, in order (a restart is a new one on the same home). */
class Member {
  readonly runs: TestClient[] = [];
  frozen = false;
  dead = false;
  /** In the group's window, so a typed line is a group message. */
  inWindow = false;
  /** Next line number (across runs). */
  next = 0;

  constructor(readonly name: string) {}

  get client(): TestClient {
    return this.runs.at(-1)!;
  }

  /** Every event of every run, in order. */
  events(): Event[] {
    return this.runs.flatMap((r) => r.events());
  }

  get alive(): boolean {
    return !this.dead && !this.frozen;
  }
}

/** The latest member list each event stream reports for `group`. */
function viewOf(m: Member, group: string): string | undefined {
  const last = m.client.events().filter((e) =>
    ["group_opened", "group_invited", "group_members", "group_rejoined"].includes(e.type) &&
    e.group === group
  ).at(-1);
  return last && JSON.stringify([...(last.members as string[])].sort());
}

/** Users the current run of `m` holds a link to. */
function linksOf(m: Member): Set<string> {
  const up = new Set<string>();
  for (const e of m.client.events()) {
    if (e.type === "link_up") up.add(String(e.user));
    if (e.type === "link_down") up.delete(String(e.user));
    if (e.type === "logged_out") up.clear();
  }
  return up;
}

async function until(
  test: () => boolean,
  what: string,
  ms: number,
  step = 50,
): Promise<number> {
  const start = Date.now();
  while (!test()) {
    if (Date.now() - start > ms) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(step);
  }
  return Date.now() - start;
}

/** Runs `work` on `m`'s store, read-only (beside its process, or after it died). */
function readStore<T>(m: Member, work: (db: DatabaseSync) => T): T | undefined {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(join(m.client.home, m.name, "confab.sqlite"), { readOnly: true });
    db.exec("PRAGMA busy_timeout = 2000");
    return work(db);
  } catch {
    return undefined; // not there yet, or busy
  } finally {
    db?.close();
  }
}

/** The ids of `author`'s messages to `group` in `m`'s history, as its store holds them now. */
function storedIds(m: Member, group: string, author: string): Set<string> {
  return readStore(m, (db) =>
    new Set(
      db.prepare("SELECT id FROM messages WHERE chat = ? AND lower(sender) = lower(?)")
        .all(groupChat(group).toLowerCase(), author).map((r) => String(r.id)),
    )) ?? new Set();
}

/** The next seq of `author` that `m`'s store expects in `group` (its catch-up mark). */
function headOf(m: Member, group: string, author: string): string {
  const next = readStore(
    m,
    (db) =>
      db.prepare("SELECT next FROM group_heads WHERE group_id = ? AND lower(author) = lower(?)")
        .get(group, author)?.next,
  );
  return next === undefined ? "none" : String(next);
}

/**
 * The messages of an author who died while `victim` was away that the victim is owed by the
 * other members: those the author sent (in order) that another member was shown, less what the
 * victim had before its kill: shown by an earlier run, or stored by it. A kill -9 between the
 * commit of a message and the line that shows it leaves it in history unshown; being there, it
 * is not passed on again (the reopened window shows it in its history).
 */
export function catchUpOwed(
  sent: string[],
  shownByOthers: Set<string>,
  had: { shown: Set<string>; stored: Set<string> },
): string[] {
  return sent.filter((id) => shownByOthers.has(id) && !had.shown.has(id) && !had.stored.has(id));
}

/** Event types that tell how a member's catch-up went. */
const TOLD = new Set([
  "logged_in",
  "server_back",
  "logged_out",
  "link_up",
  "link_down",
  "group_rejoined",
  "group_opened",
  "group_invited",
  "group_members",
  "group_gap",
  "group_relay_refused",
  "group_closed",
  "error",
]);

/**
 * What `m` went through and holds, for a report that explains a missing message: its store's
 * mark for `author` beside the other members', each missing message (who has it, whether `m`'s
 * store does), and the current run's events that matter (its messages from `author` among them).
 */
function explain(
  m: Member,
  author: string,
  group: string,
  missing: { id: string; text: string }[],
  members: Member[],
  t0: number,
): string[] {
  const lines: string[] = [];
  const others = members.filter((o) => o !== m && o.name !== author && !o.dead);
  lines.push(
    `${m.name}'s mark for ${author}: next ${headOf(m, group, author)} (others: ` +
      `${others.map((o) => `${o.name} ${headOf(o, group, author)}`).join(", ")}); ` +
      `run ${m.runs.length}, ${m.dead ? "dead" : m.frozen ? "frozen" : "up"}`,
  );
  const stored = storedIds(m, group, author);
  const shownAt = (id: string) =>
    others.filter((o) =>
      o.events().some((e) => e.type === "message" && e.from === author && e.id === id)
    ).map((o) => o.name);
  for (const x of missing.slice(0, 10)) {
    lines.push(
      `missing "${x.text}" (${x.id.slice(0, 8)}): shown at ${shownAt(x.id).join(",") || "none"}; ` +
        `in ${m.name}'s store: ${stored.has(x.id) ? "yes" : "no"}`,
    );
  }
  if (missing.length > 10) lines.push(`… and ${missing.length - 10} more missing`);
  const at = (e: Event) => `+${((Number(e.time ?? t0) - t0) / 1000).toFixed(2)}s`;
  const told = m.client.events().flatMap((e) => {
    if (e.type === "message" && e.group === group && e.from === author) {
      return [`${at(e)} message "${e.text}" ${e.via}${e.relayedBy ? ` by ${e.relayedBy}` : ""}`];
    }
    if (!TOLD.has(e.type) || (e.group !== undefined && e.group !== group)) return [];
    const { type, time: _t, history: _h, handle: _g, group: _i, ...rest } = e;
    return [`${at(e)} ${type} ${JSON.stringify(rest)}`];
  });
  lines.push(`${m.name}'s run ${m.runs.length}: ${told.length} events that matter`);
  for (const line of told.length > 60 ? [...told.slice(0, 20), "…", ...told.slice(-40)] : told) {
    lines.push(`  ${line}`);
  }
  return lines;
}

/**
 * Freezes `m` (SIGSTOP) at random moments until its store holds a message of `author` that it
 * has not shown (stored, its line not written yet), for at most `ms`. Returns frozen at such a
 * moment with the message's id, or woken with undefined.
 */
async function freezeUnshown(
  m: Member,
  group: string,
  author: string,
  random: () => number,
  ms = 20_000,
): Promise<string | undefined> {
  const out = m.client.proc.out;
  for (const end = Date.now() + ms; Date.now() < end;) {
    m.client.proc.kill("SIGSTOP");
    // Everything it printed is read: its output stopped growing.
    for (let n = -1; n !== out.lines.length;) {
      n = out.lines.length;
      await sleep(40);
    }
    const shown = new Set(
      m.client.events().filter((e) => e.type === "message" && e.from === author)
        .map((e) => String(e.id)),
    );
    const unshown = [...storedIds(m, group, author)].find((id) => !shown.has(id));
    if (unshown !== undefined) return unshown;
    m.client.proc.kill("SIGCONT");
    await sleep(random() * 30);
  }
  return undefined;
}

/** Runs one seed. Never throws for a defect found: those are in `problems`. */
export async function runGroupChaos(options: GroupChaosOptions): Promise<GroupChaosReport> {
  const random = seededRandom(options.seed);
  const pick = <T>(list: T[]): T => list[Math.floor(random() * list.length)]!;
  const between = (lo: number, hi: number) => lo + random() * (hi - lo);
  const activeMs = options.activeMs ?? 16_000;
  const rate = options.rate ?? 8;
  const t0 = Date.now();
  const timeline: string[] = [];
  const note = (line: string) => {
    const entry = `+${((Date.now() - t0) / 1000).toFixed(2)}s ${line}`;
    timeline.push(entry);
    options.log?.(entry);
  };
  const problems: string[] = [];
  const dataDir = await Deno.makeTempDir({ prefix: "confab-chaos-srv-" });
  let server: TestServer | undefined = await startServer({ dataDir });
  const port = server.port;
  const members = NAMES.map((n) => new Member(n));
  const args = ["--peer-timeout", String(PEER_TIMEOUT_S)];
  const homes: string[] = [];
  let group = "";
  let handle = "";
  const joinedAt = new Map<string, number>();
  let convergeMs = -1;
  let settleMs = -1;
  let sent = 0;
  let copies = 0;
  try {
    const clients = await crowd(
      server,
      NAMES,
      Object.fromEntries(NAMES.map((n) => [n, { args }])),
    );
    clients.forEach((c, i) => {
      members[i]!.runs.push(c);
      homes.push(c.home);
    });
    const [ann, ben, cat, dan, eve, fay] = members as [
      Member,
      Member,
      Member,
      Member,
      Member,
      Member,
    ];

    // The schedule, all drawn up front: the same seed replays the same run.
    const initial = [ann, ben, cat, dan];
    const senders = [...initial].sort(() => random() - 0.5).slice(0, 3);
    const serverKillAt = between(2_000, 5_000);
    const serverDownMs = between(300, 1_500);
    const adders = [...initial].sort(() => random() - 0.5).slice(0, 2) as [Member, Member];
    const victim = pick(initial);
    const killAt = between(5_000, 10_000);
    const deadMs = between(500, 3_000);
    const sleeper = pick(initial.filter((m) => m !== victim));
    const freezeAt = between(3_000, 11_000);
    const frozenMs = PEER_TIMEOUT_S * 1000 + between(500, 3_000);
    // A sender killed while the victim is away, and kept down until the victim is back and
    // has that sender's messages from the other members (there are three senders, so one is
    // neither the victim nor the sleeper).
    const author = pick(senders.filter((m) => m !== victim && m !== sleeper));
    const authorKillAfter = deadMs * between(0.4, 0.8);
    note(
      `seed ${options.seed}: senders ${senders.map((m) => m.name)}; server -9 at ` +
        `${(serverKillAt / 1000).toFixed(2)}s for ${serverDownMs.toFixed(0)} ms, then ` +
        `${adders[0].name} adds eve and ${adders[1].name} adds fay at once; ${victim.name} -9 at ` +
        `${(killAt / 1000).toFixed(2)}s for ${deadMs.toFixed(0)} ms, and ${author.name} -9 ` +
        `${authorKillAfter.toFixed(0)} ms after it until ${victim.name} has ${author.name}'s ` +
        `messages from the others; ${sleeper.name} frozen at ` +
        `${(freezeAt / 1000).toFixed(2)}s for ${frozenMs.toFixed(0)} ms`,
    );

    // The group: ann chats with ben and adds cat and dan; everyone opens its window.
    await ann.client.send("chat ben");
    await ann.client.event("chat_opened", { with: "ben" });
    await ann.client.send("/a cat");
    group = String((await ann.client.event("group_opened")).group);
    handle = groupHandle(group);
    await ann.client.send("/a dan");
    await ann.client.event("group_members", { joined: ["dan"] });
    for (const m of initial) {
      await until(
        () => viewOf(m, group) === JSON.stringify(["ann", "ben", "cat", "dan"]),
        `${m.name} in the group`,
        15_000,
      );
      if (m !== ann) {
        await m.client.send(`chat ${handle}`);
        await m.client.event("group_opened", { group });
      }
      m.inWindow = true;
      joinedAt.set(m.name, 0);
    }
    await until(
      () => initial.every((m) => initial.every((o) => o === m || linksOf(m).has(o.name))),
      "the mesh of four",
      15_000,
    );
    note(`group ${handle} of ann, ben, cat, dan; sending`);
    const started = Date.now();

    // Senders: `rate` lines a second each, typed whatever the state of their process (a
    // frozen one finds them on waking; a dead one types nothing).
    let sending = true;
    const senderLoops = senders.map(async (m) => {
      const gap = 1000 / rate;
      let due = Date.now();
      while (sending) {
        due += gap;
        await sleep(Math.max(0, due - Date.now()));
        if (!sending) break;
        if (m.dead || !m.inWindow) continue;
        await m.client.send(`${m.name}:${m.next++}`).catch(() => {});
      }
    });

    const restart = async (m: Member) => {
      const c = await TestClient.start(m.name, { port }, {
        home: homes[NAMES.indexOf(m.name)]!,
        args,
      });
      m.runs.push(c);
      await enter(c, m.name, "in");
      await c.event("group_rejoined", { group }, 30_000);
      await c.send(`chat ${handle}`);
      await c.event("group_opened", { group }, 30_000);
      m.inWindow = true;
    };

    /** `/a user` by `adder`, again until it works: the server may be back only just. */
    const add = async (adder: Member, user: Member) => {
      for (let attempt = 0; attempt < 400; attempt++) {
        while (adder.frozen || adder.dead || !adder.inWindow) await sleep(50);
        const c = adder.client;
        const from = c.proc.out.lines.length;
        await c.send(`/a ${user.name}`);
        const line = await c.proc.out.findFrom(
          from,
          (l) =>
            (l.includes('"type":"group_members"') && l.includes(`"${user.name}"`)) ||
            l.includes('"type":"error"'),
          `the outcome of /a ${user.name}`,
          30_000,
        ).catch(() => "");
        if (line.includes('"group_members"') || line.includes("already in the group")) {
          const e = JSON.parse(line) as Event;
          joinedAt.set(user.name, Number(e.time ?? Date.now()));
          note(`${adder.name} added ${user.name}`);
          return;
        }
        await sleep(100);
      }
      throw new Error(`${adder.name} could not add ${user.name}`);
    };

    /** `m` killed (-9): it types nothing until restarted. */
    const kill = async (m: Member) => {
      m.dead = true;
      m.inWindow = false;
      m.client.proc.kill("SIGKILL");
      await m.client.proc.status;
      await m.client.proc.out.ended; // every line it printed is read
      note(`${m.name} killed`);
    };

    const faults: Promise<void>[] = [];
    faults.push((async () => {
      await sleep(serverKillAt);
      server!.proc.kill("SIGKILL");
      await server!.proc[Symbol.asyncDispose](); // (its stdin closed: nothing is left open)
      note("server killed");
      await sleep(serverDownMs);
      server = await startServer({ dataDir, port });
      note("server back");
      await Promise.all([add(adders[0], eve), add(adders[1], fay)]);
      for (const m of [eve, fay]) {
        await m.client.event("group_opened", { group }, 30_000).catch(() =>
          m.client.send(`chat ${handle}`)
        );
        m.inWindow = true;
      }
    })());
    faults.push((async () => {
      await sleep(killAt);
      if (options.killUnshown) {
        const unshown = await freezeUnshown(victim, group, author.name, random);
        note(
          unshown === undefined
            ? `${victim.name} never caught with a message of ${author.name}'s stored, unshown`
            : `${victim.name} frozen with ${author.name}'s ${unshown.slice(0, 8)} stored, unshown`,
        );
      }
      await kill(victim);
      // What it stored before its kill, shown or not (see catchUpOwed).
      const stored = storedIds(victim, group, author.name);
      await sleep(authorKillAfter);
      while (author.frozen) await sleep(50);
      await kill(author);
      await sleep(deadMs - authorKillAfter);
      while (server === undefined) await sleep(50);
      await restart(victim);
      victim.dead = false;
      note(`${victim.name} back`);
      // The author of messages the victim missed is still down: the other members pass them on
      // (those that reached at least one of them before the author died).
      const shown = (runs: TestClient[]) =>
        new Set(
          runs.flatMap((r) => r.events()).filter((e) =>
            e.type === "message" && e.group === group && e.from === author.name
          ).map((e) => String(e.id)),
        );
      const had = { shown: shown(victim.runs.slice(0, -1)), stored };
      const others = members.filter((m) => m !== victim && m !== author);
      const authorSent = () =>
        author.events().filter((e) => e.type === "sent" && e.group === group);
      const owed = () =>
        catchUpOwed(
          authorSent().map((e) => String(e.id)),
          new Set(others.flatMap((m) => [...shown(m.runs)])),
          had,
        );
      const lacking = () => {
        const have = shown([victim.client]);
        return owed().filter((id) => !have.has(id));
      };
      await until(
        () => lacking().length === 0,
        `${victim.name} has ${author.name}'s messages from the others`,
        30_000,
      ).then(
        (ms) =>
          note(
            `${victim.name} got ${author.name}'s ${owed().length} messages from members in ${ms} ` +
              `ms (${[...stored].filter((id) => !had.shown.has(id)).length} stored unshown ` +
              `before its kill)`,
          ),
        (error) => {
          problems.push(String(error.message));
          const texts = new Map(authorSent().map((e) => [String(e.id), String(e.text)]));
          const missing = lacking().map((id) => ({ id, text: texts.get(id) ?? "?" }));
          for (const line of explain(victim, author.name, group, missing, members, t0)) {
            note(line);
          }
        },
      );
      const relayed = victim.client.events().filter((e) =>
        e.type === "message" && e.from === author.name && e.via === "member"
      ).length;
      if (owed().length > 0 && relayed === 0) {
        problems.push(`${victim.name} got none of ${author.name}'s messages from a member`);
      }
      await restart(author);
      author.dead = false;
      note(`${author.name} back`);
    })());
    faults.push((async () => {
      await sleep(freezeAt);
      while (sleeper.dead) await sleep(50);
      sleeper.frozen = true;
      sleeper.client.proc.kill("SIGSTOP");
      note(`${sleeper.name} frozen`);
      await sleep(frozenMs);
      sleeper.client.proc.kill("SIGCONT");
      sleeper.frozen = false;
      note(`${sleeper.name} woken`);
    })());

    await sleep(Math.max(0, started + activeMs - Date.now()));
    await Promise.all(faults);
    sending = false;
    await Promise.all(senderLoops);
    const stoppedAt = Date.now();
    note("sending stopped; all processes up");

    // Convergence: once every member holds a link to every other, equal views within 5 s.
    const everyone = members;
    const all = JSON.stringify(NAMES);
    await until(
      () => everyone.every((m) => everyone.every((o) => o === m || linksOf(m).has(o.name))),
      "the full mesh of six after the faults",
      SETTLE_MS,
    ).catch((error) => problems.push(String(error.message)));
    const meshAt = Date.now();
    await until(
      () => everyone.every((m) => viewOf(m, group) === all),
      "equal member lists",
      SETTLE_MS,
    )
      .catch(() => {
        problems.push(
          `member lists differ: ${everyone.map((m) => `${m.name} ${viewOf(m, group)}`).join("; ")}`,
        );
      });
    convergeMs = Date.now() - meshAt;
    if (convergeMs > CONVERGE_BOUND_MS) {
      problems.push(`member lists took ${convergeMs} ms to agree after the mesh (bound 5 s)`);
    }
    note(`mesh complete; member lists equal after ${convergeMs} ms`);

    // Ground truth: each author's sent events (lines it took), in order.
    const sentBy = new Map<string, { id: string; text: string; ts: number }[]>();
    for (const m of everyone) {
      sentBy.set(
        m.name,
        m.events().filter((e) => e.type === "sent" && e.group === group).map((e) => ({
          id: String(e.id),
          text: String(e.text),
          ts: Number(e.ts),
        })),
      );
    }
    sent = [...sentBy.values()].reduce((n, list) => n + list.length, 0);
    const owed = (reader: Member) =>
      [...sentBy.entries()].filter(([author]) => author !== reader.name).flatMap((
        [author, list],
      ) => list.filter((s) => s.ts >= joinedAt.get(reader.name)!).map((s) => ({ author, ...s })));

    // Every copy in place, read through each client's own history.
    const histories = new Map<string, { id: string; from: string; text: string; mark: string }[]>();
    const readHistories = async () => {
      for (const m of everyone) {
        const c = m.client;
        const from = c.proc.out.lines.length;
        await c.send("/b");
        await c.send(`history ${handle} 10000`);
        const line = await c.proc.out.findFrom(
          from,
          (l) => l.includes('"type":"history"'),
          "history",
          30_000,
        );
        histories.set(m.name, (JSON.parse(line) as Event).entries as never);
        await c.send(`chat ${handle}`);
      }
    };
    const complete = () =>
      everyone.every((m) => {
        const have = new Set(histories.get(m.name)!.map((h) => `${h.from}\n${h.id}`));
        const mine = histories.get(m.name)!.filter((h) => h.from === m.name);
        return owed(m).every((s) => have.has(`${s.author}\n${s.id}`)) &&
          mine.every((h) => h.mark === "**");
      });
    const settleStart = Date.now();
    for (;;) {
      await readHistories();
      if (complete() || Date.now() - settleStart > SETTLE_MS) break;
      await sleep(1_000);
    }
    settleMs = Date.now() - stoppedAt;
    note(`histories read; settled ${settleMs} ms after sending stopped`);

    for (const m of everyone) {
      const history = histories.get(m.name)!;
      const have = new Map<string, number>();
      for (const h of history) {
        const key = `${h.from}\n${h.id}`;
        have.set(key, (have.get(key) ?? 0) + 1);
      }
      const absent = new Map<string, { id: string; text: string }[]>();
      for (const s of owed(m)) {
        copies++;
        const n = have.get(`${s.author}\n${s.id}`) ?? 0;
        if (n !== 1) problems.push(`${m.name} has ${s.author}'s "${s.text}" ${n} times`);
        if (n === 0) absent.set(s.author, [...absent.get(s.author) ?? [], s]);
      }
      for (const [author, missing] of absent) {
        for (const line of explain(m, author, group, missing, everyone, t0)) note(line);
      }
      const texts = history.map((h) => `${h.from}\n${h.text}`);
      if (new Set(texts).size !== texts.length) problems.push(`${m.name}: a text twice in history`);
      for (const h of history) {
        if (h.from === m.name && h.mark !== "**") {
          problems.push(`${m.name}'s own "${h.text}" is marked ${h.mark || "(sending)"}, not **`);
        }
      }
      // Shown once, and in order per sender (arrival order of message events, all runs).
      const shown = m.events().filter((e) => e.type === "message" && e.group === group);
      const ids = shown.map((e) => `${e.from}\n${e.id}`);
      if (new Set(ids).size !== ids.length) problems.push(`${m.name} was shown a message twice`);
      const last = new Map<string, number>();
      for (const e of shown) {
        const [author, n] = String(e.text).split(":");
        const seq = Number(n);
        if (seq <= (last.get(author!) ?? -1)) {
          problems.push(`${m.name} got ${e.text} after ${author}:${last.get(author!)}`);
        }
        last.set(author!, seq);
      }
      // Nobody was put out, and nobody left.
      for (const e of m.events()) {
        if (e.type === "group_closed") problems.push(`${m.name}: group closed (${e.reason})`);
        if (e.type === "group_members" && (e.left as string[]).length > 0) {
          problems.push(`${m.name} saw ${e.left} leave`);
        }
        if (e.type === "error" && !expectedError(e)) {
          problems.push(`${m.name}: error ${e.code}: ${e.message}`);
        }
      }
    }
    for (const [name, list] of sentBy) {
      if (list.length === 0 && senders.some((s) => s.name === name)) {
        problems.push(`${name} was to send but sent nothing`);
      }
    }
  } catch (error) {
    problems.push(`run failed: ${(error as Error).stack ?? error}`);
  } finally {
    for (const m of members) {
      for (const run of m.runs) {
        run.proc.kill("SIGCONT");
        await run[Symbol.asyncDispose]().catch(() => {});
      }
    }
    for (const home of homes) await Deno.remove(home, { recursive: true }).catch(() => {});
    try {
      await server?.[Symbol.asyncDispose]();
    } catch { /* already gone */ }
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
  return {
    seed: options.seed,
    problems: problems.slice(0, 50),
    sent,
    copies,
    convergeMs,
    settleMs,
    timeline,
  };
}
