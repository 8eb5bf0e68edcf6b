/**
 * The soak's checker: from every user's history (read from their database after the run) and
 * every event their clients wrote, it counts what was sent, acknowledged, refused, lost,
 * duplicated, shown twice or out of order, what group members missed, how the file ended, and
 * how long the last delivery took after the last fault. Pure: the soak gathers the data.
 */
import type { HistoryEntry } from "../../lib/client/client_store.ts";
import type { Logged } from "./actor.ts";

/** A row of a user's history (`messages` in confab.sqlite), with its place in the table. */
export interface HistoryRow extends HistoryEntry {
  seq: number;
}

export interface UserData {
  name: string;
  /** Every event of every run of the user's client, in the order written. */
  log: Logged[];
  history: HistoryRow[];
  /** The files in the user's downloads folder. */
  downloads: { name: string; sha256: string; size: number }[];
}

export interface Scenario {
  /** Users chatting 1:1 with each other. */
  pairs: [string, string][];
  /** The group, when the group scenario runs: every member stays in it throughout. */
  group?: { members: string[] };
  /** Who filled whose mailbox. */
  filler?: { from: string; to: string };
  /** The shared file. */
  file?: {
    from: string;
    to: string;
    sha256: string;
    size: number;
    /** How many times the soak shared it (`/s`): a failed transfer is shared again. */
    shares: number;
  };
}

export interface CheckInput {
  seed: number;
  scenario: Scenario;
  users: UserData[];
  /** `PRAGMA integrity_check` of every database. */
  databases: { path: string; integrity: string }[];
  /** What the server still held at the end. */
  serverLeft: { mail: number; receipts: number };
  /**
   * When the last fault ended (Date.now()): the messages sent until then must all be delivered
   * afterwards; how long that took is the recovery time.
   */
  lastFaultEndAt: number;
  /** Whether everything settled (no mail waiting, no mark open) before the deadline. */
  settled: boolean;
}

export interface Figures {
  seed: number;
  /** Numbered messages the senders' clients took (rows in their histories). */
  sent: number;
  /** Of those, acknowledged by the recipient's client (`**`). */
  delivered: number;
  /** Acknowledged by the server and not read by the end (`*`). */
  stored: number;
  /** Refused for good (`!`). */
  refused: number;
  /** `!` with no `not_delivered` event for the sender. */
  refusedSilently: number;
  /** `!` although the recipient has it. */
  refusedYetDelivered: number;
  /** Neither in the recipient's history nor refused. */
  lost: number;
  /** A `sent` event with no history row at the sender. */
  lostAtSender: number;
  /** Still in an outbox (no mark), or `*` although read, at the end. */
  unresolved: number;
  /** Extra rows of one message in any history. */
  duplicatedInHistory: number;
  /** Extra `message` events of one message to one user. */
  shownTwice: number;
  /** Messages shown from the mailbox (their sender's direct path was down or busy). */
  shownFromMail: number;
  /** Messages shown before one their sender sent earlier (on the same path). */
  outOfOrder: number;
  /** Group messages missing at a member (who stayed in the group). */
  groupMissing: number;
  /** Group messages that landed in a 1:1 chat instead of the group's. */
  groupMisfiled: number;
  /** Group copies refused for a member, with the author told. */
  groupRefused: number;
  file: "identical" | "failed, reported" | "unresolved" | "none";
  /** How many times the file was shared (`/s`). */
  fileShares: number;
  /** How many of those shares started sending (`transfer_started`, out). */
  fileStarts: number;
  /** Files in downloads that differ from what was sent. */
  filesCorrupt: number;
  /** Databases whose integrity check is not "ok". */
  databasesBroken: number;
  databases: number;
  /**
   * From the end of the last fault until the last message sent before it was shown to its
   * recipient, in ms (0: all were shown before the fault ended).
   */
  lastDeliveryAfterFaultMs: number;
  settled: boolean;
  serverLeft: { mail: number; receipts: number };
}

export interface CheckResult {
  ok: boolean;
  figures: Figures;
  /** What went wrong, one line each (the first ones of each kind). */
  problems: string[];
}

/** `soak <sender> <n>`, also as a group's mail copy (`[group #3f1c2a] soak erin 7`). */
const SOAK_TEXT = /^(?:\[group #[0-9a-f]+\] )?soak (\S+) (\d+)$/;

/** The sender and number of a soak message, or undefined for any other text. */
export function parseSoakText(text: string): { sender: string; n: number } | undefined {
  const m = SOAK_TEXT.exec(text);
  return m ? { sender: m[1]!.toLowerCase(), n: Number(m[2]) } : undefined;
}

const lower = (s: unknown) => String(s).toLowerCase();
const PROBLEMS_PER_KIND = 8;

export function check(input: CheckInput): CheckResult {
  const problems = new Map<string, string[]>();
  const problem = (kind: string, line: string) => {
    const list = problems.get(kind) ?? [];
    list.push(line);
    problems.set(kind, list);
  };
  const users = new Map(input.users.map((u) => [lower(u.name), u]));
  const f: Figures = {
    seed: input.seed,
    sent: 0,
    delivered: 0,
    stored: 0,
    refused: 0,
    refusedSilently: 0,
    refusedYetDelivered: 0,
    lost: 0,
    lostAtSender: 0,
    unresolved: 0,
    duplicatedInHistory: 0,
    shownTwice: 0,
    shownFromMail: 0,
    outOfOrder: 0,
    groupMissing: 0,
    groupMisfiled: 0,
    groupRefused: 0,
    file: "none",
    fileShares: 0,
    fileStarts: 0,
    filesCorrupt: 0,
    databasesBroken: 0,
    databases: input.databases.length,
    lastDeliveryAfterFaultMs: 0,
    settled: input.settled,
    serverLeft: input.serverLeft,
  };
  const groupMembers = (input.scenario.group?.members ?? []).map(lower);

  /** The row of `sender`'s message `id` in `user`'s history (received). */
  const received = (user: UserData | undefined, sender: string, id: string) =>
    user?.history.find((r) => !r.outgoing && lower(r.sender) === sender && r.id === id);
  /** Whether `user` was told `id` did not reach `to` (any `to` when undefined). */
  const told = (user: UserData, id: string, to?: string) =>
    user.log.some((l) =>
      l.e.type === "not_delivered" && l.e.id === id && (to === undefined || lower(l.e.to) === to)
    );

  const checkGroupMessage = (sender: UserData, row: HistoryRow, what: string): void => {
    const s = lower(sender.name);
    const group = row.chat.slice(2);
    if (row.mark === "**") f.delivered++;
    if (row.mark === "*") f.stored++;
    if (row.mark === "!") f.refused++;
    if (row.mark === "") {
      f.unresolved++;
      problem("unresolved", `${what}: still owed to a member`);
    }
    for (const member of groupMembers) {
      if (member === s) continue;
      const copy = received(users.get(member), s, row.id);
      if (copy && copy.chat === row.chat) continue;
      if (copy) {
        f.groupMisfiled++;
        problem("group message filed as a 1:1 message", `${what} at ${member} (in ${copy.chat})`);
        continue;
      }
      if (told(sender, row.id, member)) {
        f.groupRefused++;
        if (row.mark !== "!") {
          f.refusedSilently++;
          problem("refused, not marked !", `${what} for ${member}`);
        }
        continue;
      }
      f.groupMissing++;
      problem(
        "group member missing a message",
        `${what} (group ${group.slice(0, 6)}) at ${member}`,
      );
    }
  };

  for (const sender of input.users) {
    const s = lower(sender.name);
    // Every `sent` event has its row (the row is written before the event).
    const rows = new Set(sender.history.filter((r) => r.outgoing).map((r) => r.id));
    for (const l of sender.log) {
      if (l.e.type === "sent" && parseSoakText(String(l.e.text)) && !rows.has(String(l.e.id))) {
        f.lostAtSender++;
        problem("lost at the sender", `${s}: "${l.e.text}" was sent but is not in its history`);
      }
    }
    for (const row of sender.history) {
      if (!row.outgoing || !parseSoakText(row.text)) continue;
      f.sent++;
      const what = `${s} → ${row.chat}: "${row.text}"`;
      if (row.chat.startsWith("g:")) {
        checkGroupMessage(sender, row, what);
        continue;
      }
      const recipient = users.get(row.chat);
      const has = received(recipient, s, row.id) !== undefined;
      if (row.mark === "!") {
        f.refused++;
        if (!told(sender, row.id)) {
          f.refusedSilently++;
          problem("refused without telling the sender", what);
        }
        if (has) {
          f.refusedYetDelivered++;
          problem("refused, yet delivered", what);
        }
        continue;
      }
      if (row.mark === "**") f.delivered++;
      if (row.mark === "*") f.stored++;
      if (!has) {
        f.lost++;
        problem("lost", `${what} (mark "${row.mark}")`);
      } else if (row.mark === "*") {
        f.unresolved++;
        problem("unresolved", `${what}: read, but still marked "*"`);
      }
      if (row.mark === "") {
        f.unresolved++;
        problem("unresolved", `${what}: still in the outbox`);
      }
    }
  }

  for (const user of input.users) {
    const u = lower(user.name);
    // The same message twice in a history: its text is unique to one send.
    const rowsByText = new Map<string, number>();
    for (const row of user.history) {
      const soak = parseSoakText(row.text);
      if (!soak) continue;
      const key = `${soak.sender} ${soak.n}`;
      rowsByText.set(key, (rowsByText.get(key) ?? 0) + 1);
    }
    for (const [key, count] of rowsByText) {
      if (count < 2) continue;
      f.duplicatedInHistory += count - 1;
      problem("duplicated in a history", `${u} holds "soak ${key}" ${count} times`);
    }
    // Shown twice; and per sender and path, in the order sent.
    const shown = new Map<string, number>();
    const last = new Map<string, number>();
    for (const l of user.log) {
      if (l.e.type !== "message") continue;
      const soak = parseSoakText(String(l.e.text));
      if (!soak) continue;
      if (Number(l.e.ts) <= input.lastFaultEndAt) {
        f.lastDeliveryAfterFaultMs = Math.max(
          f.lastDeliveryAfterFaultMs,
          l.at - input.lastFaultEndAt,
        );
      }
      if (l.e.via === "server") f.shownFromMail++;
      const key = `${soak.sender} ${soak.n}`;
      const times = (shown.get(key) ?? 0) + 1;
      shown.set(key, times);
      if (times > 1) {
        f.shownTwice++;
        problem("shown twice", `${u} was shown "soak ${key}" ${times} times`);
        continue;
      }
      const path = `${soak.sender} ${l.e.via}`;
      const before = last.get(path);
      if (before !== undefined && soak.n < before) {
        f.outOfOrder++;
        problem(
          "out of order",
          `${u} was shown "soak ${key}" (${l.e.via}) after "soak ${soak.sender} ${before}"`,
        );
      }
      last.set(path, Math.max(before ?? -1, soak.n));
    }
  }

  const file = input.scenario.file;
  if (file) {
    const from = users.get(lower(file.from));
    const to = users.get(lower(file.to));
    const outcomes = (from?.log ?? []).filter((l) =>
      (l.e.type === "transfer_done" || l.e.type === "transfer_failed") &&
      l.e.direction === "out" && lower(l.e.peer) === lower(file.to)
    );
    f.fileShares = file.shares;
    f.fileStarts = (from?.log ?? []).filter((l) =>
      l.e.type === "transfer_started" && l.e.direction === "out"
    ).length;
    for (const d of to?.downloads ?? []) {
      if (d.sha256 !== file.sha256 || d.size !== file.size) {
        f.filesCorrupt++;
        problem("file corrupt", `${file.to}'s downloads/${d.name} is not what ${file.from} sent`);
      }
    }
    const arrived = (to?.downloads ?? []).some((d) => d.sha256 === file.sha256);
    if (arrived) f.file = "identical";
    else if (outcomes.some((l) => l.e.type === "transfer_failed")) f.file = "failed, reported";
    else {
      f.file = "unresolved";
      problem("file unresolved", `${file.from} → ${file.to}: neither arrived nor reported failed`);
    }
  }

  for (const db of input.databases) {
    if (db.integrity === "ok") continue;
    f.databasesBroken++;
    problem("database damaged", `${db.path}: ${db.integrity.slice(0, 200)}`);
  }
  if (!input.settled) problem("not settled", "mail or marks were still open at the deadline");
  if (input.serverLeft.mail > 0) {
    problem("mail left on the server", `${input.serverLeft.mail} messages nobody read`);
  }

  const lines: string[] = [];
  for (const [kind, list] of problems) {
    lines.push(`${kind}: ${list.length}`);
    for (const line of list.slice(0, PROBLEMS_PER_KIND)) lines.push(`  ${line}`);
    if (list.length > PROBLEMS_PER_KIND) lines.push(`  … ${list.length - PROBLEMS_PER_KIND} more`);
  }
  return { ok: problems.size === 0, figures: f, problems: lines };
}
