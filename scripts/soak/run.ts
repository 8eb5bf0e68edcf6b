/**
 * One soak run: a real server and nine real clients (two 1:1 pairs, a group of four, one who
 * fills a mailbox), numbered messages at a steady rate from several senders and a file, while
 * the seeded schedule kills, freezes and cuts; then everything settles, stops, and the
 * checker reads every history and every database.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  BenchProcess,
  deadline,
  freePort,
  sleep,
  type SpawnOptions,
  startServer,
} from "../bench/support.ts";
import { Actor, PASSWORD, type Role } from "./actor.ts";
import {
  check,
  type CheckResult,
  type HistoryRow,
  parseSoakText,
  type UserData,
} from "./checker.ts";
import { CutProxy } from "./proxy.ts";
import { describeSchedule, type Fault, makeSchedule, Rng } from "./schedule.ts";

export interface SoakOptions {
  seed: number;
  quick: boolean;
  /** How long faults keep coming. */
  chaosMs: number;
  /** Run the group of four (else its members chat in two more pairs). */
  groups: boolean;
  /** Where the run's files go (kept); a temporary directory when undefined. */
  outDir: string;
  /** Log lines (the schedule as it happens, notes). */
  log: (line: string) => void;
}

export interface SoakResult extends CheckResult {
  schedule: string[];
  /** What happened, with real times: `12.3 s kill-client bob (down 1.4 s)`. */
  happened: string[];
  wallMs: number;
  clients: number;
  messagesPerSecond: number;
  settleMs: number;
}

/** Sends `soak <name> <n>` every so often while in its window. */
const SEND_EVERY_MS = { pair: 300, group: 500 };
const PEER_TIMEOUT_S = 3;

/** Who does what. */
function cast(groups: boolean): { name: string; role: Role }[] {
  const pair = (a: string, b: string): { name: string; role: Role }[] => [
    { name: a, role: { kind: "pair", partner: b } },
    { name: b, role: { kind: "pair", partner: a } },
  ];
  const groupOf = (names: string[]) =>
    names.map((name) => ({ name, role: { kind: "group" } as Role }));
  return [
    ...pair("alice", "bob"), // the cut, the file
    ...pair("carol", "dave"), // dave's mailbox gets filled
    ...(groups ? groupOf(["erin", "frank", "grace", "heidi"]) : [
      ...pair("erin", "frank"),
      ...pair("grace", "heidi"),
    ]),
    { name: "zed", role: { kind: "filler", target: "dave" } },
  ];
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const started = Date.now();
  const { log } = options;
  const quota = options.quick ? 30 : 200;
  const fileSize = options.quick ? 4 * 1024 * 1024 : 32 * 1024 * 1024;
  const settleLimitMs = options.quick ? 30_000 : 120_000;
  const out = options.outDir;
  for (const dir of ["events", "data", "homes", "files"]) {
    await Deno.mkdir(join(out, dir), { recursive: true });
  }

  const children = new Set<BenchProcess>();
  const spawn = (name: string, args: string[], spawnOptions?: SpawnOptions) => {
    const proc = new BenchProcess(name, args, spawnOptions);
    children.add(proc);
    void proc.status.then(() => children.delete(proc));
    return proc;
  };
  const note = (line: string) => log(`${clock()} ${line}`);
  let chaosStart = Date.now();
  const clock = () => `${((Date.now() - chaosStart) / 1000).toFixed(1).padStart(6)} s`;

  // ---- the server ------------------------------------------------------------------------------
  const dataDir = join(out, "data");
  const port = freePort();
  const serverArgs = ["--max-pending", String(quota)];
  let server = await startServer(spawn, { dataDir, port, args: serverArgs });
  const restartServer = async () => {
    for (let attempt = 0;; attempt++) {
      try {
        server = await startServer(spawn, { dataDir, port, args: serverArgs });
        return;
      } catch (error) {
        if (attempt >= 20) throw error;
        await sleep(250); // the port may be a moment in TIME_WAIT's way
      }
    }
  };

  // ---- the clients ------------------------------------------------------------------------------
  const roles = cast(options.groups);
  const proxies = new Map<string, CutProxy>([["alice", new CutProxy()], ["bob", new CutProxy()]]);
  const actors = new Map<string, Actor>();
  for (const { name, role } of roles) {
    actors.set(
      name,
      new Actor({
        name,
        role,
        home: join(out, "homes", name),
        serverPort: () => port,
        outDir: out,
        peerTimeoutS: PEER_TIMEOUT_S,
        proxy: proxies.get(name),
        spawn,
        note,
      }),
    );
  }
  const actor = (name: string) => actors.get(name)!;
  const all = [...actors.values()];
  const happened: string[] = [];
  /** When the last fault so far ended (restarted, thawed, healed). */
  let lastFaultEndAt = Date.now();
  let sending = false;
  /** How many times alice shared the file (`/s`). */
  let fileShares = 0;
  const senders: Promise<void>[] = [];

  try {
    // ---- setting up: accounts, contacts, the group --------------------------------------------
    const setUp = (what: string) => log(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
    // Each signs up once started, two at a time: the server hashes two passwords at once, and a
    // sign-up that waits too long for its turn times out at the client.
    let signing = 0;
    const turns: (() => void)[] = [];
    await Promise.all(all.map(async (a) => {
      await a.start();
      while (signing >= 2) await new Promise<void>((r) => turns.push(r));
      signing++;
      try {
        await signUp(a);
      } finally {
        signing--;
        turns.shift()?.();
      }
    }));
    setUp("signed up");
    const contacts: [string, string][] = [];
    for (const { name, role } of roles) {
      if (role.kind === "pair" && name < role.partner) contacts.push([name, role.partner]);
      if (role.kind === "filler") contacts.push([name, role.target]);
    }
    const members = roles.filter((r) => r.role.kind === "group").map((r) => r.name);
    for (const [i, a] of members.entries()) {
      for (const b of members.slice(i + 1)) contacts.push([a, b]);
    }
    // Both sides add each other: contacts as two people set them up.
    const toAdd = new Map<string, string[]>();
    for (const [a, b] of contacts) {
      toAdd.set(a, [...toAdd.get(a) ?? [], b]);
      toAdd.set(b, [...toAdd.get(b) ?? [], a]);
    }
    await Promise.all([...toAdd].map(([name, list]) =>
      actor(name).exclusive(async () => {
        for (const other of list) {
          await actor(name).command(`contacts add ${other}`, (e) => e.type === "contact_added");
        }
      })
    ));
    setUp("contacts added");
    if (members.length > 0) await makeGroup(members.map(actor));

    for (const a of all) {
      a.onLostGroup = (lost) => void reAdd(lost);
      a.maintain();
    }
    await until(() => all.every((a) => a.inRoleWindow), 60_000, "every client in its window");
    setUp("every client in its window; faults begin");

    // ---- the chaos ------------------------------------------------------------------------------
    const schedule = makeSchedule(options.seed, {
      chaosMs: options.chaosMs,
      meanGapMs: options.quick ? 4_000 : 8_000,
      killable: all.map((a) => a.name).filter((n) => n !== "zed"),
      freezable: all.map((a) => a.name).filter((n) => n !== "zed"),
      cuttable: "alice",
      mailboxOf: "dave",
      fileFrom: "alice",
      peerTimeoutMs: PEER_TIMEOUT_S * 1000,
    });
    const scheduleLines = describeSchedule(schedule);
    log(`seed ${options.seed}; schedule:`);
    for (const line of scheduleLines) log(`  ${line}`);

    chaosStart = Date.now();
    sending = true;
    for (const a of all) {
      if (a.role.kind === "filler") continue;
      if (a.role.kind === "group" && !["erin", "grace"].includes(a.name)) continue;
      senders.push(
        sendSteadily(a, a.role.kind === "group" ? SEND_EVERY_MS.group : SEND_EVERY_MS.pair),
      );
    }
    let fileTask: Promise<void> = Promise.resolve();
    // A fault on a target waits for the one before it on that target to end: a restart slowed
    // by load can outlast the gap the schedule left (two restarts would race for the port).
    const onTarget = new Map<string, Promise<void>>();
    const faults = schedule.map(async (fault) => {
      await sleep(Math.max(0, chaosStart + fault.atMs - Date.now()));
      if (fault.kind === "send-file") {
        happened.push(`${clock()}  send-file alice → bob`);
        fileTask = sendFile(actor(fault.target!), actor("bob").name);
        return;
      }
      const target = fault.target ?? "server";
      const mine = (onTarget.get(target) ?? Promise.resolve()).then(() => inject(fault));
      onTarget.set(target, mine.catch(() => {}));
      await mine;
    });
    await Promise.all(faults);
    await sleep(Math.max(0, chaosStart + options.chaosMs - Date.now()));
    sending = false;
    await Promise.all(senders);

    // ---- settling -------------------------------------------------------------------------------
    // Every fault is over: all up, thawed, connected.
    // (Each fault ends itself; this only mends one that could not, e.g. a failed restart.)
    let mended = false;
    for (const proxy of proxies.values()) mended = proxy.isCut || mended;
    for (const proxy of proxies.values()) proxy.heal();
    if (server.proc.hasExited) {
      await restartServer();
      mended = true;
    }
    for (const a of all) {
      mended = a.frozen || a.mode === "down" || mended;
      if (a.frozen) a.thaw();
      if (a.mode === "down") await a.start();
    }
    if (mended) lastFaultEndAt = Date.now();
    note("faults over; settling");
    await deadline(fileTask, 240_000, "the file transfer to end");
    const settleStart = Date.now();
    const settled = await settle(settleLimitMs);
    const settleMs = Date.now() - settleStart;
    note(settled ? `settled in ${(settleMs / 1000).toFixed(1)} s` : "NOT settled");

    // ---- stopping, reading, checking ------------------------------------------------------------
    await Promise.all(all.map((a) => a.stop()));
    await server.proc.stop();
    const users: UserData[] = [];
    const databases: { path: string; integrity: string }[] = [];
    for (const a of all) {
      const path = join(a.home, a.name, "confab.sqlite");
      const { rows, integrity } = readDatabase(path);
      databases.push({ path, integrity });
      users.push({
        name: a.name,
        log: a.log,
        history: rows,
        downloads: await listDownloads(join(a.home, a.name, "downloads")),
      });
    }
    const serverDb = join(dataDir, "confab-server.sqlite");
    const serverLeft = countServerLeft(serverDb);
    databases.push({ path: serverDb, integrity: serverLeft.integrity });
    const sentTotal = users.reduce((n, u) => n + u.history.filter((r) => r.outgoing).length, 0);
    const result = check({
      seed: options.seed,
      scenario: {
        pairs: roles.filter((r) => r.role.kind === "pair").map((r) =>
          [r.name, (r.role as { partner: string }).partner] as [string, string]
        ),
        ...(members.length > 0 ? { group: { members } } : {}),
        filler: { from: "zed", to: "dave" },
        file: await fileFacts(),
      },
      users,
      databases,
      serverLeft: { mail: serverLeft.mail, receipts: serverLeft.receipts },
      lastFaultEndAt,
      settled,
    });
    return {
      ...result,
      schedule: scheduleLines,
      happened,
      wallMs: Date.now() - started,
      clients: all.length,
      messagesPerSecond: sentTotal / (options.chaosMs / 1000),
      settleMs,
    };
  } finally {
    sending = false;
    await Promise.allSettled(senders);
    for (const a of all) a.thaw();
    await Promise.allSettled(all.map((a) => a.stop()));
    for (const proc of children) proc.kill();
    await Promise.allSettled([...children].map((p) => p.status));
    await Promise.allSettled([...proxies.values()].map((p) => p.close()));
  }

  // ---- the pieces --------------------------------------------------------------------------------

  async function makeGroup(group: Actor[]): Promise<void> {
    const [first, second, ...rest] = group as [Actor, Actor, ...Actor[]];
    await first.exclusive(async () => {
      await first.command(`chat ${second.name}`, (e) => e.type === "chat_opened");
      for (const [i, other] of rest.entries()) {
        await first.command(
          `/a ${other.name}`,
          (e) =>
            i === 0
              ? e.type === "group_opened"
              : e.type === "group_members" && (e.joined as string[]).includes(other.name),
        );
      }
    });
    await until(
      () => group.every((a) => a.mode === "group" && a.groupId === first.groupId),
      30_000,
      "every member in the group",
    );
    for (const a of group) a.groupId = first.groupId;
  }

  /**
   * Signs `a` up as a person would: told to try again (the server slow to answer), they do; told
   * the name is taken (the first try went through after all), they log in.
   */
  async function signUp(a: Actor): Promise<void> {
    let verb = "signup";
    for (let attempt = 1;; attempt++) {
      try {
        await a.exclusive(() =>
          a.command(`${verb} ${a.name} ${PASSWORD}`, (e) => e.type === "logged_in", 60_000)
        );
        return;
      } catch (error) {
        const message = (error as Error).message;
        if (attempt >= 10 || a.mode === "down") throw error;
        note(`${a.name}: ${message.split("\n")[0]}; again`);
        if (message.includes("USER_EXISTS")) verb = "in";
        await sleep(500);
      }
    }
  }

  /** A member that lost the group is added again by one still in it (as a person would). */
  async function reAdd(lost: Actor): Promise<void> {
    const adder = all.find((a) =>
      a !== lost && a.role.kind === "group" && a.mode === "group" && !a.frozen
    );
    if (!adder) return;
    note(`${adder.name} adds ${lost.name} to the group again`);
    await adder.exclusive(() =>
      adder.command(
        `/a ${lost.name}`,
        (e) => e.type === "group_members" && (e.joined as string[]).includes(lost.name),
        15_000,
      )
    ).catch((error) => note(`re-adding ${lost.name}: ${(error as Error).message.split("\n")[0]}`));
  }

  async function sendSteadily(a: Actor, everyMs: number): Promise<void> {
    let n = 0;
    let next = Date.now();
    while (sending) {
      next += everyMs;
      await sleep(Math.max(0, next - Date.now()));
      if (!sending) return;
      if (await a.say(`soak ${a.name} ${n}`)) n++;
    }
  }

  async function inject(fault: Fault): Promise<void> {
    const at = clock();
    const begun = Date.now();
    const target = fault.target ? actor(fault.target) : undefined;
    const lasted = () => {
      lastFaultEndAt = Math.max(lastFaultEndAt, Date.now());
      return `${((Date.now() - begun) / 1000).toFixed(1)} s`;
    };
    switch (fault.kind) {
      case "kill-server": {
        note("kill -9 server");
        server.proc.kill("SIGKILL");
        await server.proc.status;
        await sleep(fault.forMs);
        await restartServer();
        note("server back");
        happened.push(`${at}  kill-server (down ${lasted()})`);
        return;
      }
      case "kill-client": {
        note(`kill -9 ${target!.name}`);
        await target!.kill();
        await sleep(fault.forMs);
        await target!.start();
        note(`${target!.name} restarted`);
        happened.push(`${at}  kill-client ${target!.name} (down ${lasted()})`);
        return;
      }
      case "freeze-client": {
        note(`SIGSTOP ${target!.name}`);
        target!.freeze();
        await sleep(fault.forMs);
        target!.thaw();
        note(`SIGCONT ${target!.name}`);
        happened.push(`${at}  freeze-client ${target!.name} (${lasted()})`);
        return;
      }
      case "cut": {
        note("cut alice ↔ bob");
        for (const proxy of proxies.values()) proxy.cut();
        await sleep(fault.forMs);
        for (const proxy of proxies.values()) proxy.heal();
        note("alice ↔ bob healed");
        happened.push(`${at}  cut alice ↔ bob (${lasted()})`);
        return;
      }
      case "fill-mailbox": {
        const refused = await fillMailbox(actor("zed"), target!);
        happened.push(
          `${at}  fill ${target!.name}'s mailbox (quota ${quota}; ${
            refused ? "refused past it" : "NOT full"
          }, ${lasted()})`,
        );
        return;
      }
      case "send-file":
        return;
    }
  }

  /** Zed writes to dave until the server refuses (mailbox full); then dave reads it. */
  async function fillMailbox(filler: Actor, target: Actor): Promise<boolean> {
    note(`zed fills ${target.name}'s mailbox`);
    const refusedBefore = filler.events("not_delivered").length;
    const full = () => filler.events("not_delivered").length > refusedBefore;
    let n = 0;
    const sent = () => filler.events("sent").length;
    const outcomes = () =>
      filler.log.filter((l) => ["stored", "delivered", "not_delivered"].includes(l.e.type))
        .length;
    await filler.exclusive(async () => {
      // The server may be down this moment: try again as a person would.
      for (let attempt = 1;; attempt++) {
        try {
          await filler.command(`chat ${target.name}`, (e) => e.type === "chat_opened");
          break;
        } catch (error) {
          if (attempt >= 30) throw error;
          await sleep(500);
        }
      }
      try {
        // Bursts of ten, each sent through before the next, until the server says full.
        for (let lines = 0; lines < 4 * quota && !full(); lines += 10) {
          for (let i = 0; i < 10; i++) await filler.proc!.write(`soak zed ${n++}`);
          await until(() => sent() >= n && outcomes() >= sent(), 60_000, "zed's sends");
        }
      } finally {
        await filler.command("/q", (e) => e.type === "chat_closed").catch(() => {});
      }
    }).catch((error) => note(`filling: ${(error as Error).message.split("\n")[0]}`));
    note(full() ? `${target.name}'s mailbox is full` : `${target.name}'s mailbox never filled`);
    target.readsFrom.add("zed");
    target.mailFrom.add("zed");
    target.poke();
    return full();
  }

  async function fileFacts() {
    const bytes = await Deno.readFile(join(out, "files", "payload.bin")).catch(() => undefined);
    return {
      from: "alice",
      to: "bob",
      sha256: bytes ? createHash("sha256").update(bytes).digest("hex") : "",
      size: bytes?.length ?? 0,
      shares: fileShares,
    };
  }

  /** Alice shares a file with bob; a failed transfer is shared again (it resumes). */
  async function sendFile(from: Actor, to: string): Promise<void> {
    const path = join(out, "files", "payload.bin");
    await Deno.writeFile(path, new Rng(options.seed ^ 0x5eed).bytes(fileSize));
    for (let attempt = 1; attempt <= 8; attempt++) {
      await until(() => from.inRoleWindow && !from.frozen, 60_000, "alice in her chat");
      const inc = from.inc;
      const mark = from.log.length;
      note(`alice shares a ${fileSize / 1024 / 1024} MiB file with ${to} (attempt ${attempt})`);
      const written = await from.exclusive(async () => {
        if (!from.inRoleWindow || from.frozen) return false;
        await from.proc!.write(`/s ${path}`);
        return true;
      });
      if (!written) continue;
      fileShares++;
      const outcome = await deadline(
        (async () => {
          for (;;) {
            const ended = from.log.slice(mark).find((l) =>
              (l.e.type === "transfer_done" || l.e.type === "transfer_failed") &&
              l.e.direction === "out"
            );
            if (ended) return ended.e.type;
            if (from.inc !== inc) return "killed";
            await sleep(100);
          }
        })(),
        120_000,
        "the transfer to end",
      ).catch(() => "timeout");
      note(`file transfer: ${outcome}`);
      if (outcome === "transfer_done") return;
      await sleep(1_000);
    }
  }

  /**
   * Until no mail waits on the server and no mark is open: each user with mail reads it (group
   * members leave the group's window for that once every group send has its outcome).
   */
  async function settle(limitMs: number): Promise<boolean> {
    const end = Date.now() + limitMs;
    const serverDb = join(dataDir, "confab-server.sqlite");
    let groupsDone = false;
    while (Date.now() < end) {
      const waiting = waitingMail(serverDb);
      const open = all.flatMap((a) => openMarks(a));
      if (waiting.size === 0 && open.length === 0) return true;
      // Group sends still waiting for an outcome (mark '') keep the members in the window.
      const groupOpen = open.some((o) => o.startsWith("g:") && o.endsWith("[]"));
      if (!groupOpen && !groupsDone) {
        groupsDone = true;
        for (const a of all) {
          if (a.role.kind !== "pair") a.keepRole = false;
        }
      }
      for (const [recipient, senders] of waiting) {
        const a = actors.get(recipient);
        if (!a || a.mode === "down" || a.mode === "out" || a.frozen) continue;
        for (const s of senders) a.readsFrom.add(s);
        if (a.role.kind === "pair") {
          for (const s of senders) a.mailFrom.add(s);
          a.poke();
        } else if (!a.keepRole) {
          await a.exclusive(() => a.readMail([...senders])).catch((error) =>
            note(`${a.name} reading mail: ${(error as Error).message.split("\n")[0]}`)
          );
        }
      }
      await sleep(500);
    }
    const open = all.flatMap((a) => openMarks(a).map((o) => `${a.name}: ${o}`));
    for (const line of open.slice(0, 10)) note(`open at the end: ${line}`);
    for (const [r, s] of waitingMail(serverDb)) note(`mail waiting for ${r} from ${[...s]}`);
    return false;
  }
}

/** Resolves once `condition()` holds (checked every 50 ms); rejects after `ms`. */
async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

/** Recipient → senders with mail waiting on the server (read beside the running server). */
function waitingMail(path: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  withDatabase(path, (db) => {
    for (const row of db.prepare("SELECT DISTINCT recipient, sender FROM mail").all()) {
      const set = out.get(String(row.recipient)) ?? new Set<string>();
      set.add(String(row.sender));
      out.set(String(row.recipient), set);
    }
  });
  return out;
}

/** The user's soak messages with an open mark: '' (outbox) or '*' (not read yet). */
function openMarks(a: Actor): string[] {
  const out: string[] = [];
  withDatabase(join(a.home, a.name, "confab.sqlite"), (db) => {
    for (
      const row of db.prepare(
        "SELECT chat, text, mark FROM messages WHERE outgoing = 1 AND mark IN ('', '*')",
      ).all()
    ) {
      if (parseSoakText(String(row.text))) out.push(`${row.chat} "${row.text}" [${row.mark}]`);
    }
  });
  return out;
}

function withDatabase(path: string, work: (db: DatabaseSync) => void): void {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { readOnly: true });
    db.exec("PRAGMA busy_timeout = 2000");
    work(db);
  } catch {
    // Not there yet, or busy: the next round looks again.
  } finally {
    db?.close();
  }
}

/** A user's history and the database's integrity check, after the run. */
function readDatabase(path: string): { rows: HistoryRow[]; integrity: string } {
  let rows: HistoryRow[] = [];
  let integrity = "missing";
  withDatabase(path, (db) => {
    integrity = integrityOf(db);
    rows = (db.prepare(
      "SELECT rowid AS seq, id, chat, sender, ts, text, outgoing, mark FROM messages ORDER BY rowid",
    ).all() as unknown as (Omit<HistoryRow, "outgoing"> & { outgoing: number })[])
      .map((r) => ({ ...r, outgoing: r.outgoing === 1 }));
  });
  return { rows, integrity };
}

function integrityOf(db: DatabaseSync): string {
  return db.prepare("PRAGMA integrity_check").all().map((r) => String(r.integrity_check))
    .join("; ");
}

function countServerLeft(path: string): { mail: number; receipts: number; integrity: string } {
  let left = { mail: -1, receipts: -1, integrity: "missing" };
  withDatabase(path, (db) => {
    const count = (table: string) =>
      Number((db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n);
    left = { mail: count("mail"), receipts: count("receipts"), integrity: integrityOf(db) };
  });
  return left;
}

async function listDownloads(dir: string): Promise<UserData["downloads"]> {
  const out: UserData["downloads"] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile) continue;
      const bytes = await Deno.readFile(join(dir, entry.name));
      out.push({
        name: entry.name,
        size: bytes.length,
        sha256: createHash("sha256").update(bytes).digest("hex"),
      });
    }
  } catch {
    // No downloads folder: nothing arrived.
  }
  return out;
}
