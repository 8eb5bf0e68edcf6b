/**
 * A headless load generator: one process holding many Confab control connections, each logged
 * in as a prepared user over the real protocol (the client library's control connection, then
 * `resume` with the user's session token, then heartbeats), driven by the bench with JSON
 * lines on stdin and reporting JSON lines on stdout (see `loadgen_protocol.ts`). When the
 * server goes away, every connection re-attaches on its own with the same backoff as
 * `ConfabClient` (`reconnectWaits` in lib/client/server_link.ts).
 *
 * With `--raw` it only opens plain TCP sockets and holds them idle: the baseline for the cost
 * of a connection in a server that does nothing with it.
 *
 *   deno run -A scripts/bench/loadgen.ts --port P[,P2...] --tokens FILE --first I --count N --users U
 *
 * It exits when told to (`close`) or when its stdin ends (the bench is gone).
 */
import { parseArgs } from "node:util";
import { readLines } from "../../lib/cli/lines.ts";
import {
  openServerLink,
  reconnectWaits,
  resumeSession,
  resumptionFrom,
} from "../../lib/client/server_link.ts";
import type { ResumptionOffer } from "../../lib/net/secure_channel.ts";
import { generateKeyPair } from "../../lib/crypto/noise.ts";
import { loadNodeCrypto } from "../../lib/crypto/node_crypto.ts";
import { asError, dial, type FramedConnection } from "../../lib/net/framed_connection.ts";
import { RemoteError } from "../../lib/protocol/errors.ts";
import type { LookupResultMessage, ServerMessage } from "../../lib/protocol/messages.ts";
import { delay } from "../../lib/util/time.ts";
import {
  benchUser,
  contactOf,
  type LoadgenCommand,
  type LoadgenEvent,
} from "./loadgen_protocol.ts";

// A generator stands in for thousands of clients: their X25519 goes through node:crypto on the
// calling thread (x25519.ts), as a server's does, not through WebCrypto's thread pool as a lone
// client's does, so the generators' share of the two cores stays what it was.
await loadNodeCrypto();

const HOST = "127.0.0.1";
/** Connections being set up at once during the initial attach (not during a re-attach). */
const ATTACH_CONCURRENCY = 64;
/** How long the initial attach of one slot may keep failing before the run is given up. */
const ATTACH_DEADLINE_MS = 120_000;

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string" },
    tokens: { type: "string" },
    first: { type: "string", default: "0" },
    count: { type: "string" },
    users: { type: "string" },
    raw: { type: "boolean", default: false },
  },
});

function intArg(name: string, value: string | undefined): number {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n < 0) {
    console.error(`loadgen: --${name} must be a whole number, got ${value}`);
    Deno.exit(2);
  }
  return n;
}

/** `--port P` or `--port P1,P2,...`: instances of one service, the first one first. */
const ports = (args.port ?? "").split(",").map((p) => intArg("port", p));
const first = intArg("first", args.first);
const count = intArg("count", args.count);
const users = intArg("users", args.users);
const raw = args.raw;

interface Slot {
  index: number;
  token: string;
  /** The peer port announced in `resume` (nobody dials it: this generator has no listeners). */
  peerPort: number;
  fc?: FramedConnection<ServerMessage>;
  rawConn?: Deno.TcpConn;
  /** The last error the server sent on the live connection (it says why it closes one). */
  lastError?: string;
  /** Which of `ports` it uses: the next one after a loss, as ConfabClient does. */
  portIndex: number;
  /** The last welcome's resumption ticket, offered at the next attach as ConfabClient does. */
  resumption?: ResumptionOffer;
}

function emit(event: LoadgenEvent): void {
  console.log(JSON.stringify(event));
}

const tokens = args.tokens
  ? (await Deno.readTextFile(args.tokens)).split("\n").slice(first, first + count)
  : [];
if (!raw && tokens.length !== count) {
  console.error(
    `loadgen: ${args.tokens} holds ${tokens.length} tokens from ${first}, not ${count}`,
  );
  Deno.exit(2);
}
const slots: Slot[] = Array.from({ length: count }, (_, k) => ({
  index: first + k,
  token: tokens[k] ?? "",
  peerPort: 20_000 + ((first + k) % 40_000),
  portIndex: 0,
}));

const shutdown = new AbortController();
/** One static Noise key for the process, as ConfabClient makes one per process. */
const staticKey = generateKeyPair();
let closing = false;
/** Slots that should be attached: the first `wanted`. */
let wanted = 0;
let attached = 0;
/**
 * A restart being watched (from the `watch` command until every slot is attached again): the
 * connections it took and why, which slots came back, the attempts and why they failed.
 */
interface Watch {
  lost: number;
  reasons: Map<string, number>;
  back: Set<number>;
  attempts: number;
  errors: Map<string, number>;
}
let watch: Watch | undefined;

/** Why connections were lost since it was last reported (reason → count). */
const lossReasons = new Map<string, number>();

function tally(counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

function top(counts: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]).slice(0, 5));
}

/** The most frequent loss reasons since the last call, and forgets them. */
function takeReasons(): Record<string, number> {
  const reasons = top(lossReasons);
  lossReasons.clear();
  return reasons;
}

function fatal(message: string): never {
  emit({ type: "error", message });
  Deno.exit(1);
}

function onServerMessage(
  slot: Slot,
  fc: FramedConnection<ServerMessage>,
  m: ServerMessage,
): void {
  // Presence needs no answer; a ping does, as ConfabClient gives it.
  if (m.type === "ping") fc.send({ type: "pong", id: m.id }).catch(() => {});
  if (m.type === "error") slot.lastError = `${m.code}: ${m.message}`;
  if (m.type === "server_closing") slot.lastError = `server_closing: ${m.reason}`;
}

/**
 * One attach attempt, as ConfabClient makes it: the control connection the client library
 * opens (`openServerLink`: dial, hello, Noise handshake), then `resume` with the token, then
 * heartbeats. The server's key is not pinned here (a bench has nothing to pin it against).
 */
async function attachOnce(slot: Slot): Promise<void> {
  // A timer cleared when the attempt ends: `AbortSignal.timeout` fired 10 s after every attempt
  // (tens of thousands in a herd), each time building a DOMException for an attempt long over.
  const deadline = new AbortController();
  const timer = setTimeout(
    () => deadline.abort(new DOMException("no connection within 10 s", "TimeoutError")),
    10_000,
  );
  try {
    await attachWithin(slot, AbortSignal.any([shutdown.signal, deadline.signal]));
  } finally {
    clearTimeout(timer);
  }
}

async function attachWithin(slot: Slot, signal: AbortSignal): Promise<void> {
  if (raw) {
    const conn = await dial(HOST, ports[slot.portIndex]!, signal);
    slot.rawConn = conn;
    void holdRaw(slot, conn);
    return;
  }
  const { fc, serverKey, resumed } = await openServerLink({
    host: HOST,
    port: ports[slot.portIndex]!,
    staticKeyPair: await staticKey,
    signal,
    resumption: slot.resumption,
  });
  try {
    slot.lastError = undefined;
    fc.setHandler((m) => onServerMessage(slot, fc, m));
    // Exactly the client library's re-attach: resume with the token, then heartbeats.
    // (The server hands out a new token at each resume: the next re-attach uses it.)
    const welcome = await resumeSession(fc, slot.token, slot.peerPort);
    slot.token = welcome.token;
    slot.resumption = resumptionFrom(welcome, serverKey, resumed ? slot.resumption : undefined);
  } catch (error) {
    await fc.close();
    throw error;
  }
  slot.fc = fc;
  void fc.closed.then((reason) => onLost(slot, fc, reason));
}

/** Keeps a read pending on a raw socket, to notice when it closes. */
async function holdRaw(slot: Slot, conn: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(64);
  try {
    while ((await conn.read(buffer)) !== null) { /* the raw server sends nothing */ }
  } catch { /* closed */ }
  if (slot.rawConn === conn && !closing) {
    slot.rawConn = undefined;
    attached--;
  }
}

function isBadToken(error: unknown): boolean {
  return error instanceof RemoteError && error.code === "BAD_TOKEN";
}

/** The initial attach of a slot: retried quickly until it works or the deadline passes. */
async function attachWithRetry(slot: Slot, until: number): Promise<number> {
  let retries = 0;
  let wait = 50;
  for (;;) {
    try {
      await attachOnce(slot);
      attached++;
      return retries;
    } catch (error) {
      if (closing) return retries;
      if (isBadToken(error)) fatal(`${benchUser(slot.index)}: ${asError(error).message}`);
      if (Date.now() > until) {
        fatal(`${benchUser(slot.index)} could not attach: ${asError(error).message}`);
      }
      retries++;
      await delay(wait + Math.random() * wait);
      wait = Math.min(wait * 2, 2000);
    }
  }
}

async function attachUpTo(upTo: number): Promise<void> {
  const start = performance.now();
  const from = wanted;
  wanted = Math.min(Math.max(upTo, wanted), slots.length);
  const until = Date.now() + ATTACH_DEADLINE_MS;
  let next = from;
  let retries = 0;
  let lastProgress = 0;
  const worker = async () => {
    while (next < wanted && !closing) {
      const slot = slots[next++]!;
      retries += await attachWithRetry(slot, until);
      if (Date.now() - lastProgress > 500) {
        lastProgress = Date.now();
        emit({ type: "progress", attached, target: wanted, lost: Object.fromEntries(lossReasons) });
      }
    }
  };
  await Promise.all(Array.from({ length: ATTACH_CONCURRENCY }, worker));
  emit({ type: "attached", attached, ms: performance.now() - start, retries });
}

/** While a watched restart has taken clients away, a status line 4 times a second. */
setInterval(() => {
  if (!watch || watch.lost === 0 || closing) return;
  emit({
    type: "status",
    t: Date.now(),
    attached,
    back: watch.back.size,
    target: wanted,
    attempts: watch.attempts,
    errors: top(watch.errors),
    lost: top(watch.reasons),
  });
}, 250);

function onLost(slot: Slot, fc: FramedConnection<ServerMessage>, reason: Error | undefined): void {
  if (closing || slot.fc !== fc) return;
  const why = (reason?.message ?? slot.lastError ?? "closed by the server").slice(0, 120);
  tally(lossReasons, why);
  if (watch) {
    watch.lost++;
    tally(watch.reasons, why);
    watch.back.delete(slot.index);
  }
  slot.fc = undefined;
  slot.portIndex = (slot.portIndex + 1) % ports.length;
  attached--;
  const announced = slot.lastError?.startsWith("server_closing") ?? false;
  slot.lastError = undefined;
  void reattach(slot, announced);
}

/** Re-attaches a slot that lost the server, with ConfabClient's waits (#reconnect). */
async function reattach(slot: Slot, afterClosing: boolean): Promise<void> {
  const waits = reconnectWaits(afterClosing);
  while (!closing) {
    // Not `delay(ms, shutdown.signal)`: each wait would add and remove a listener on the one
    // signal thousands of slots wait on, and EventTarget does both by scanning the listeners
    // (400-640 µs each with 5,000-10,000 there, measured), which stalled a generator for seconds
    // in a herd. The process exits when closed; a slot sees `closing` when its wait ends.
    await delay(waits.next().value);
    if (closing) return;
    if (watch) watch.attempts++;
    try {
      await attachOnce(slot);
    } catch (error) {
      if (isBadToken(error)) fatal(`${benchUser(slot.index)}: ${asError(error).message}`);
      if (watch) tally(watch.errors, asError(error).message.slice(0, 120));
      continue;
    }
    attached++;
    if (watch) {
      watch.back.add(slot.index);
      if (attached === wanted) {
        emit({
          type: "all_attached",
          t: Date.now(),
          attempts: watch.attempts,
          lost: watch.lost,
          reasons: top(watch.reasons),
          errors: top(watch.errors),
        });
        watch = undefined;
      }
    }
    return;
  }
}

async function runLookups(rate: number, seconds: number): Promise<void> {
  const live = slots.filter((s) => s.fc !== undefined && !s.fc.isClosed);
  if (live.length === 0) fatal("lookups: no attached connection");
  const total = Math.max(1, Math.round(rate * seconds));
  const samples: number[] = [];
  const sent: number[] = [];
  const failures = new Map<string, number>();
  const fail = (why: string) => tally(failures, why);
  let issued = 0;
  const inflight = new Set<Promise<void>>();
  const issue = () => {
    const slot = live[Math.floor(Math.random() * live.length)]!;
    if (!slot.fc) return fail("asker's connection lost");
    const target = benchUser(contactOf(slot.index, users));
    const t0 = performance.now();
    const request = slot.fc.request<LookupResultMessage>({ type: "lookup", user: target })
      .then((reply) => {
        // The contact is online and related: the directory must give its address.
        if (reply.type !== "lookup_result" || reply.user !== target) fail("wrong reply");
        else if (reply.port === undefined) fail(`no address (online: ${reply.online})`);
        else {
          samples.push(Math.round((performance.now() - t0) * 1000) / 1000);
          sent.push(Math.round((performance.timeOrigin + t0) * 10) / 10);
        }
      }, (error) => fail(asError(error).message.slice(0, 120)));
    inflight.add(request);
    void request.finally(() => inflight.delete(request));
  };
  const start = performance.now();
  while (issued < total && !closing) {
    // Open loop: issue what is due by now, whatever the replies are doing.
    const due = Math.min(total, Math.floor((performance.now() - start) * rate / 1000) + 1);
    while (issued < due) {
      issue();
      issued++;
    }
    await delay(1);
  }
  await Promise.allSettled([...inflight]);
  const took = (performance.now() - start) / 1000;
  const errors = [...failures.values()].reduce((a, b) => a + b, 0);
  emit({
    type: "lookups",
    samples,
    sent,
    errors,
    failures: top(failures),
    issued,
    seconds: took,
    lost: takeReasons(),
  });
}

async function closeAll(): Promise<void> {
  if (closing) return;
  closing = true;
  shutdown.abort();
  await Promise.all(slots.map(async (slot) => {
    if (slot.fc) await slot.fc.close();
    if (slot.rawConn) {
      try {
        slot.rawConn.close();
      } catch { /* closed */ }
    }
  }));
}

/** Runs one command to its end. */
async function execute(command: LoadgenCommand): Promise<void> {
  switch (command.cmd) {
    case "attach":
      return await attachUpTo(command.upTo);
    case "lookups":
      return await runLookups(command.rate, command.seconds);
    case "watch":
      watch = { lost: 0, reasons: new Map(), back: new Set(), attempts: 0, errors: new Map() };
      emit({ type: "watching", attached, target: wanted });
      return;
    case "close":
      await closeAll();
      emit({ type: "closed" });
      Deno.exit(0);
      break;
    default:
      fatal(`unknown command: ${JSON.stringify(command).slice(0, 80)}`);
  }
}

emit({ type: "ready", slots: slots.length, pid: Deno.pid });

// Commands run one after another; the end of stdin (the bench is gone) is acted on at once,
// even in the middle of a command, so a generator never lingers.
let queue: Promise<void> = Promise.resolve();
for await (const line of readLines(Deno.stdin.readable)) {
  if (line.trim() === "") continue;
  let command: LoadgenCommand;
  try {
    command = JSON.parse(line) as LoadgenCommand;
  } catch {
    fatal(`not a command: ${line.slice(0, 80)}`);
  }
  queue = queue.then(() => execute(command)).catch((error) => fatal(asError(error).message));
}
await closeAll();
Deno.exit(0);
