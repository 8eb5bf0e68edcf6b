/**
 * offline: messages to a contact who is offline, through the server's mailbox. alice (a
 * ConfabClient in this process) is in a chat with bob while bob is logged out: every line she
 * sends goes to the server, sealed to bob's mail key end to end, and counts as stored (`*`)
 * when the server answers `mail_stored`, which it does after the row is committed (SQLite,
 * WAL, synchronous=NORMAL). N lines are sent as a script would pipe them in (all at once; the
 * client delivers them one after another, in order). Then bob (a real `client.ts --json`
 * process) logs in and types `show alice`: fetched in batches, each message opened and checked,
 * stored in bob's history, shown, and confirmed to the server.
 *
 * Baseline, in the same run: single-row INSERTs with node:sqlite, one transaction each, WAL and
 * synchronous=NORMAL, into a table shaped like the server's mail table (same columns and
 * indexes) in a temporary database, with bodies as long as the sealed messages were.
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import type { ClientEvent } from "../../lib/client/events.ts";
import type { Outcome } from "../../lib/client/client.ts";
import { ClientProcess, LocalClient, PASSWORD } from "./clients.ts";
import { describeSteps, describeTop } from "./cpu_profile.ts";
import { abortable, cpuSeconds, profiled, startServer } from "./support.ts";
import type { BenchContext, BenchItem, ItemOutcome } from "./types.ts";

const MESSAGE_BYTES = 100;

function messageText(i: number): string {
  return `offline message ${i} `.padEnd(MESSAGE_BYTES, "abcdefghijklmnopqrstuvwxyz");
}

/**
 * From the server's database, with the messages stored: the average length of the sealed
 * bodies, and how long the count of the recipient's pending mail takes (the server counts it
 * before every store, to enforce --max-pending).
 */
function mailFacts(serverDir: string): { sealedLength: number; countMs: number } {
  const db = new DatabaseSync(join(serverDir, "confab-server.sqlite"), { readOnly: true });
  try {
    const row = db.prepare("SELECT avg(length(body)) AS n FROM mail").get() as { n: number };
    const count = db.prepare("SELECT count(*) AS n FROM mail WHERE recipient = ?");
    count.get("bob");
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) count.get("bob");
    return { sealedLength: Math.round(row.n), countMs: (performance.now() - t0) / 20 };
  } finally {
    db.close();
  }
}

/** Rows/s of single-row autocommit INSERTs (WAL, synchronous=NORMAL) into a mail-like table. */
function sqliteInserts(path: string, rows: number, bodyLength: number): number {
  const db = new DatabaseSync(path);
  try {
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    db.exec(`
      CREATE TABLE mail (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient  TEXT NOT NULL,
        sender     TEXT NOT NULL,
        msg_id     TEXT NOT NULL,
        ts         INTEGER NOT NULL,
        body       TEXT NOT NULL,
        stored_at  INTEGER NOT NULL,
        UNIQUE (recipient, msg_id)
      ) STRICT;
      CREATE INDEX mail_by_sender ON mail(recipient, sender, seq);
    `);
    const insert = db.prepare(
      `INSERT INTO mail (recipient, sender, msg_id, ts, body, stored_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    );
    const body = "x".repeat(bodyLength);
    const t0 = performance.now();
    for (let i = 0; i < rows; i++) {
      const now = Date.now();
      insert.run("bob", "alice", crypto.randomUUID(), now, body, now);
    }
    return rows / ((performance.now() - t0) / 1000);
  } finally {
    db.close();
  }
}

async function run(ctx: BenchContext): Promise<ItemOutcome> {
  const n = ctx.quick ? 200 : 20_000;
  const dir = await ctx.tempDir("confab-bench-offline-");
  const serverDir = join(dir, "server");
  // The default mailbox holds 10,000 messages per recipient: room for all of them.
  const server = await startServer(ctx.spawn, {
    dataDir: serverDir,
    signal: ctx.signal,
    // All from one sender: its share (1,000 by default) raised as well.
    args: [
      "--max-pending",
      String(n + n / 4 + 1_000),
      "--max-pending-per-sender",
      String(n + n / 4 + 1_000),
    ],
  });
  const bob = await ClientProcess.start(ctx, "bob", { serverPort: server.port, dir });
  await bob.signup(ctx.signal);
  const alice = await LocalClient.signup(ctx, "alice", {
    dir,
    server: { host: "127.0.0.1", port: server.port },
  });
  await alice.client.addContact("bob");
  await bob.ask("contacts add alice", "contact_added", { user: "alice" }, ctx.signal);
  // carol writes the mail whose show is profiled (alice, back, would first take the receipts
  // of everything bob read).
  const carol = await LocalClient.signup(ctx, "carol", {
    dir,
    server: { host: "127.0.0.1", port: server.port },
  });
  await carol.client.addContact("bob");
  await bob.ask("contacts add carol", "contact_added", { user: "carol" }, ctx.signal);
  await carol.client.logout();
  await bob.ask("out", "logged_out", { user: "bob" }, ctx.signal);
  await alice.client.openChat("bob");
  if (alice.client.chatWith !== "bob") throw new Error("alice is not in a chat with bob");

  ctx.log(`  alice sends ${n} messages to bob, who is offline`);
  let stored = 0;
  let lastStored = 0;
  let other: string | undefined;
  /** When each tenth of the messages had been stored. */
  const tenths: number[] = [];
  alice.onEvent = (e: ClientEvent, at: number) => {
    if (e.type === "stored") {
      stored++;
      lastStored = at;
      if (stored % (n / 10) === 0) tenths.push(at);
    } else if (e.type === "delivered" || e.type === "queued" || e.type === "not_delivered") {
      other ??= JSON.stringify(e);
    }
  };
  const cpu0 = [await cpuSeconds(Deno.pid), await cpuSeconds(server.proc.pid)];
  const t0 = performance.now();
  const sends: Promise<Outcome>[] = [];
  for (let i = 0; i < n; i++) sends.push(alice.client.send(messageText(i)));
  const queuedMs = performance.now() - t0;
  const outcomes = await abortable(Promise.all(sends), ctx.signal);
  alice.onEvent = undefined;
  const notStored = outcomes.filter((o) => o !== "stored").length;
  if (notStored > 0 || stored !== n) {
    throw new Error(`${notStored} of ${n} messages were not stored: ${other ?? "?"}`);
  }
  const storeMs = lastStored - t0;
  const senderCpu = await cpuSeconds(Deno.pid) - cpu0[0]!;
  const serverCpu = await cpuSeconds(server.proc.pid) - cpu0[1]!;
  // Where the time goes: n / 4 more messages with the CPU profiler on in the sender and server.
  const extra = n / 4;
  ctx.log(`  profiling ${extra} more messages`);
  const { result: extraMs, profiles } = await profiled([server.proc], async () => {
    const t = performance.now();
    const more: Promise<Outcome>[] = [];
    for (let i = 0; i < extra; i++) more.push(alice.client.send(messageText(n + i)));
    const ends = await abortable(Promise.all(more), ctx.signal);
    if (ends.some((o) => o !== "stored")) throw new Error("not stored while profiling");
    return performance.now() - t;
  }, ctx.signal);
  const { sealedLength: bodyLength, countMs } = mailFacts(serverDir);
  // alice goes away, so bob's reading is measured alone (her read receipts wait on the server).
  await alice.client.logout();

  ctx.log(`  bob logs in and shows them`);
  await bob.login(ctx.signal);
  const before = bob.messages;
  const showCpu0 = [await cpuSeconds(bob.proc.pid), await cpuSeconds(server.proc.pid)];
  const s0 = performance.now();
  const shown = await bob.ask("show alice", "shown", { from: "alice" }, ctx.signal, 120_000);
  const showMs = shown.at - s0;
  const bobCpu = await cpuSeconds(bob.proc.pid) - showCpu0[0]!;
  const showServerCpu = await cpuSeconds(server.proc.pid) - showCpu0[1]!;
  const seen = bob.messages - before;
  const total = n + extra; // the profiled ones are shown too
  if (shown.event.count !== total || seen !== total) {
    throw new Error(`bob was shown ${shown.event.count} (${seen} message events) of ${total}`);
  }

  // Where the reader's time goes: as many more as were profiled above, from carol, stored the
  // same way, then shown with the profiler on in bob and the server.
  ctx.log(`  profiling bob's show of ${extra} more`);
  await bob.ask("out", "logged_out", { user: "bob" }, ctx.signal);
  await abortable(carol.client.login("carol", PASSWORD), ctx.signal);
  await abortable(carol.client.openChat("bob"), ctx.signal);
  const again: Promise<Outcome>[] = [];
  for (let i = 0; i < extra; i++) again.push(carol.client.send(messageText(i)));
  if ((await abortable(Promise.all(again), ctx.signal)).some((o) => o !== "stored")) {
    throw new Error("not stored before the profiled show");
  }
  await carol.client.logout();
  await bob.login(ctx.signal);
  const { result: profiledShow, profiles: showProfiles } = await profiled(
    [bob.proc, server.proc],
    async () => {
      const t = performance.now();
      const answer = await bob.ask("show carol", "shown", { from: "carol" }, ctx.signal, 120_000);
      return { ...answer, ms: answer.at - t };
    },
    ctx.signal,
  );
  if (profiledShow.event.count !== extra) {
    throw new Error(`bob was shown ${profiledShow.event.count} of ${extra} while profiled`);
  }

  ctx.log(`  baseline: ${n} single-row SQLite inserts`);
  const sqliteRate = sqliteInserts(join(dir, "baseline.sqlite"), n, bodyLength);

  const storedRate = n / (storeMs / 1000);
  const perMessage = (seconds: number) => (seconds * 1000 / n).toFixed(2);
  const tenthRate = (i: number) => n / 10 / ((tenths[i]! - (i === 0 ? t0 : tenths[i - 1]!)) / 1000);
  const shownRate = total / (showMs / 1000);
  const perShown = (seconds: number) => (seconds * 1000 / total).toFixed(2);
  const baselineName = "node:sqlite single-row inserts, WAL, synchronous=NORMAL";
  return {
    measurements: [
      {
        metric: "stored rate",
        value: storedRate,
        unit: "/s",
        baseline: sqliteRate,
        baselineName,
        goal: { type: "min", value: 5_000 },
      },
      {
        metric: "shown rate",
        value: shownRate,
        unit: "/s",
        baseline: sqliteRate,
        baselineName,
        goal: { type: "min", value: 10_000 },
      },
      { metric: "store time", value: storeMs / 1000, unit: "s" },
      { metric: "show time", value: showMs / 1000, unit: "s" },
    ],
    params: { messages: n, messageBytes: MESSAGE_BYTES, sealedBytes: bodyLength },
    notes: [
      `alice (ConfabClient in the bench process) in a chat with bob while bob is logged out; ` +
      `${n} messages of ${MESSAGE_BYTES} characters sent at once, as a piped script would ` +
      `(${queuedMs.toFixed(0)} ms to write them all to her outbox); the client delivers them ` +
      `one after another: for each, a directory lookup (bob offline) and a lookup of bob's ` +
      `mail key (its signature checked), both reused for the burst, sealing in the burst to ` +
      `bob (ChaCha20-Poly1305 under the burst key; one X25519 key, one DH and one Ed25519 ` +
      `signature per burst of up to a minute: ${bodyLength} bytes sealed), the messages sealed ` +
      `in one turn handed over in one mail_send (up to 256), the server's one mail_stored for ` +
      `them once they are committed, and the \`*\` mark in her history (the marks of one ` +
      `turn share a commit and one statement) (WAL, synchronous=NORMAL; the server was ` +
      `started with --max-pending ` +
      `${n + 1_000}, its default mailbox holding 10,000). Stored rate: ${n} / time from the ` +
      `first send to the last "stored" event (${(storeMs / 1000).toFixed(2)} s). Rate by ` +
      `tenths: ${tenths.map((_, i) => Math.round(tenthRate(i))).join(", ")} /s (the first ` +
      `includes writing the outbox). CPU per message meanwhile: ${perMessage(senderCpu)} ms in ` +
      `the sender (the bench process), ${perMessage(serverCpu)} ms in the server, against ` +
      `${perMessage(storeMs / 1000)} ms of time per message. The sender seals each message ` +
      `in order and queues each mail_send without waiting for the answer to the one before ` +
      `(up to 512 messages unanswered); ` +
      `lookups are reused for the burst. Before each store the server counts bob's pending ` +
      `messages (the --max-pending check), which grows with the mailbox: with all ${n} ` +
      `stored, that count took ${countMs.toFixed(2)} ms here (read-only, on the server's ` +
      `database).`,
      `Then alice logs out, bob (client.ts --json) logs in and types \`show alice\`; shown rate: ` +
      `${total} (the ${n} and the ${extra} profiled) / time from the line to bob's "shown" ` +
      `event as this process read it ` +
      `(${(showMs / 1000).toFixed(2)} s); bob opened, checked, stored in his history and ` +
      `printed each (${seen} message events), and confirmed each batch (up to 500) to the ` +
      `server with one read receipt signed for the batch. Each burst's header is checked once ` +
      `(one DH, one signature check); each message is one AEAD open. CPU ` +
      `per message: ${perShown(bobCpu)} ms in bob, ${perShown(showServerCpu)} ms in the ` +
      `server, against ${perShown(showMs / 1000)} ms of time per message.`,
      `Baseline: ${n} single-row INSERTs (one transaction each) through node:sqlite in this ` +
      `process into a fresh database in WAL mode with synchronous=NORMAL, into a table with the ` +
      `server's mail columns and indexes and ${bodyLength}-character bodies: ` +
      `${Math.round(sqliteRate)} rows/s.`,
      ...profiles.map((p) =>
        `Profile of ${p.name === "bench" ? "the sender (bench process)" : "the server"} over ` +
        `${extra} more messages sent the same way (${(extraMs / 1000).toFixed(2)} s with the ` +
        `profiler on), by step: ${describeSteps(p.breakdown, extra, "message")}. Top functions ` +
        `by self time (µs per message): ${describeTop(p.breakdown, extra)}.`
      ),
      ...showProfiles.filter((p) => p.name !== "bench").map((p) =>
        `Profile of ${p.name === "bob" ? "the reader (bob)" : "the server"} while bob showed ` +
        `${extra} more, from carol (${
          (profiledShow.ms / 1000).toFixed(2)
        } s with the profiler on), by ` +
        `step: ${describeSteps(p.breakdown, extra, "message")}. Top functions by self time ` +
        `(µs per message): ${describeTop(p.breakdown, extra)}.`
      ),
    ],
  };
}

export const offline: BenchItem = {
  name: "offline",
  title: "messages to an offline contact: stored on the server (sealed, durable) and shown",
  metrics: ["stored rate", "shown rate", "store time", "show time"],
  timeoutMs: (quick) => quick ? 45_000 : 300_000,
  run,
};
