/**
 * file: a file sent between two clients with `/s` (ConfabClient.share) over their direct link:
 * SHA-256 of the file at the sender, then chunks of 262,051 bytes (4 Noise messages), each
 * encrypted (ChaCha20-Poly1305 in the Noise transport) and written with four in flight, hashed and
 * written to disk at the
 * receiver, checked, and moved into its downloads. The sender is a ConfabClient in this
 * process, the receiver a real `client.ts --json` process; a real `server.ts` brokers them.
 *
 * Two figures: from the call to `share` to the receiver's `transfer_done` (what a user waits:
 * the file's tag, the offer and its answer, the data with both sides' SHA-256, the receiver's
 * check), and
 * "wire only", from the sender's `transfer_started` (the receiver accepted) to the same end.
 *
 * Baseline, in the same run: a raw Deno TCP copy of the same file between two processes, this
 * one reading the file in 64 KiB pieces and writing each as a length-prefixed frame (Nagle
 * off, short writes looped), a sink process (`raw_sink.ts`) writing them to a file and
 * answering one byte at the end; timed from the first read to that byte. Run before and after
 * the Confab transfer; the faster of the two is the baseline. Also iperf3 when it is installed.
 */
import { createCipheriv, createHash } from "node:crypto";
import { join } from "node:path";
import type { ClientEvent } from "../../lib/client/events.ts";
import { ClientProcess, LocalClient } from "./clients.ts";
import { CHUNK_SIZE } from "../../lib/client/transfers.ts";
import { describeSteps, describeTop } from "./cpu_profile.ts";
import {
  type BenchProcess,
  cpuSeconds,
  deadline,
  profiled,
  rssKiB,
  runQueueWait,
  startServer,
} from "./support.ts";
import type { BenchContext, BenchItem, ItemOutcome, Measurement } from "./types.ts";

const MIB = 1024 * 1024;
/**
 * The per-chunk figures are per 65,000 bytes of file data, the chunk size before chunks grew to
 * 4 Noise messages, so they compare with earlier reports.
 */
const UNIT = 65_000;
/** Raw frames: 64 KiB of file data each. */
const RAW_FRAME = 64 * 1024;

async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await w.write(data.subarray(offset));
}

/** Writes `size` bytes of random data (a random 4 MiB block, varied per block) to `path`. */
async function makeFile(path: string, size: number): Promise<void> {
  const block = new Uint8Array(4 * MIB);
  for (let i = 0; i < block.length; i += 65_536) {
    crypto.getRandomValues(block.subarray(i, i + 65_536));
  }
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  for (let at = 0, n = 0; at < size; at += block.length, n++) {
    new DataView(block.buffer).setUint32(0, n); // no two blocks alike
    await writeAll(file, block.subarray(0, Math.min(block.length, size - at)));
  }
}

/** One raw copy of `path` to the sink on `port`; returns the time in ms. */
async function rawCopy(
  path: string,
  size: number,
  sink: BenchProcess,
  port: number,
  signal: AbortSignal,
): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    conn.setNoDelay(true);
    using file = await Deno.open(path, { read: true });
    const frame = new Uint8Array(4 + RAW_FRAME);
    const view = new DataView(frame.buffer);
    const reply = new Uint8Array(1);
    const t0 = performance.now();
    let sent = 0;
    for (;;) {
      signal.throwIfAborted();
      let n = 0;
      while (n < RAW_FRAME) {
        const got = await file.read(frame.subarray(4 + n));
        if (got === null) break;
        n += got;
      }
      if (n === 0) break;
      view.setUint32(0, n);
      await writeAll(conn, frame.subarray(0, 4 + n));
      sent += n;
    }
    view.setUint32(0, 0);
    await writeAll(conn, frame.subarray(0, 4));
    if (await conn.read(reply) !== 1) throw new Error("the raw sink did not answer");
    const ms = performance.now() - t0;
    const report = await sink.nextEvent((e) => "bytes" in e || "error" in e, "report", 30_000);
    if (report.error) throw new Error(`raw sink: ${report.error}`);
    if (report.bytes !== size || sent !== size) {
      throw new Error(`raw copy: sent ${sent}, received ${report.bytes} of ${size} bytes`);
    }
    return ms;
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

/**
 * What the cryptography alone costs per chunk on this machine, in CPU µs (all threads of this
 * process, from /proc): ChaCha20-Poly1305 through node:crypto (what Confab uses for chunks since
 * protocol version 4), SHA-256 through node:crypto, and for comparison AES-256-GCM through
 * WebCrypto (what it used before) and through Node.js's OpenSSL when `node` is installed. It
 * bounds the transfer rate before any I/O: the sender and the receiver each seal or open every
 * chunk and hash it.
 */
async function cryptoCost(signal: AbortSignal): Promise<CryptoCost> {
  const chunk = crypto.getRandomValues(new Uint8Array(65_000));
  const n = 2_000;
  const key = new Uint8Array(32);
  const iv = new Uint8Array(12);
  let c0 = await cpuSeconds(Deno.pid);
  for (let i = 0; i < n; i++) {
    signal.throwIfAborted();
    const c = createCipheriv("chacha20-poly1305", key, iv, { authTagLength: 16 });
    c.update(chunk);
    c.final();
    c.getAuthTag();
  }
  const aead = (await cpuSeconds(Deno.pid) - c0) * 1e6 / n;
  const webKey = await crypto.subtle.importKey("raw", key, "AES-GCM", false, ["encrypt"]);
  c0 = await cpuSeconds(Deno.pid);
  for (let i = 0; i < n / 4; i++) {
    signal.throwIfAborted();
    await crypto.subtle.encrypt({ name: "AES-GCM", iv }, webKey, chunk);
  }
  const aes = (await cpuSeconds(Deno.pid) - c0) * 1e6 / (n / 4);
  c0 = await cpuSeconds(Deno.pid);
  const hash = createHash("sha256");
  for (let i = 0; i < n; i++) hash.update(chunk);
  hash.digest();
  const sha = (await cpuSeconds(Deno.pid) - c0) * 1e6 / n;
  let openssl: number | undefined;
  try {
    const script = `const c=require("crypto"),b=Buffer.alloc(65000),k=Buffer.alloc(32),` +
      `v=Buffer.alloc(12),u=process.cpuUsage();for(let i=0;i<${n};i++){const x=` +
      `c.createCipheriv("aes-256-gcm",k,v);x.update(b);x.final();x.getAuthTag()}` +
      `const d=process.cpuUsage(u);console.log((d.user+d.system)/${n})`;
    const out = await new Deno.Command("node", { args: ["-e", script], stdout: "piped", signal })
      .output();
    const value = Number(new TextDecoder().decode(out.stdout).trim());
    if (out.success && Number.isFinite(value)) openssl = value;
  } catch {
    // No Node.js here: no comparison.
  }
  return { aead, aes, sha, openssl };
}

interface CryptoCost {
  /** ChaCha20-Poly1305 (node:crypto), µs per chunk. */
  aead: number;
  /** AES-256-GCM through WebCrypto, µs per chunk. */
  aes: number;
  /** SHA-256 (node:crypto), µs per chunk. */
  sha: number;
  /** AES-256-GCM through Node.js's OpenSSL, when `node` is installed. */
  openssl: number | undefined;
}

/** iperf3 over loopback for `size` bytes, when it is installed: MiB/s, or undefined. */
async function iperf3(ctx: BenchContext, size: number): Promise<number | undefined> {
  const which = await new Deno.Command("which", { args: ["iperf3"], stdout: "null" }).output()
    .catch(() => undefined);
  if (!which?.success) return undefined;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const server = new Deno.Command("iperf3", {
    args: ["-s", "-1", "-B", "127.0.0.1", "-p", String(port)],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const stopServer = () => {
    try {
      server.kill("SIGKILL");
    } catch { /* gone */ }
  };
  ctx.defer(async () => {
    stopServer();
    await server.status;
  });
  try {
    await new Promise((r) => setTimeout(r, 300)); // let it listen
    const run = await new Deno.Command("iperf3", {
      args: ["-c", "127.0.0.1", "-p", String(port), "-n", String(size), "-J"],
      stdout: "piped",
      stderr: "null",
      signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(60_000)]),
    }).output();
    if (!run.success) return undefined;
    const json = JSON.parse(new TextDecoder().decode(run.stdout));
    const bps = Number(json?.end?.sum_received?.bits_per_second);
    return Number.isFinite(bps) ? bps / 8 / MIB : undefined;
  } catch {
    return undefined;
  } finally {
    stopServer();
  }
}

/** CPU seconds of each live thread of a process, by thread id and name. */
async function threadCpu(pid: number): Promise<Map<string, { name: string; s: number }>> {
  const out = new Map<string, { name: string; s: number }>();
  for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
    const stat = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/stat`).catch(() => "");
    if (stat === "") continue; // ended meanwhile
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    out.set(task.name, { name, s: (Number(fields[11]) + Number(fields[12])) / 100 });
  }
  return out;
}

/**
 * Where a process's CPU went between two {@link threadCpu} samples, per 65,000 bytes of the
 * file, by kind of thread: the main thread (the one whose id is the pid), Deno's I/O threads
 * (tokio: file and socket work off the main thread), V8's helper threads (GC, compilation), and
 * threads that ended meanwhile (the receiver's SHA-256 worker, which ends with its digest) or
 * others; `total` is the process's own count.
 */
function cpuByThread(
  pid: number,
  before: Map<string, { name: string; s: number }>,
  after: Map<string, { name: string; s: number }>,
  total: number,
  units: number,
): string {
  const kinds = new Map<string, number>();
  let live = 0;
  for (const [tid, { name, s }] of after) {
    const used = s - (before.get(tid)?.s ?? 0);
    live += used;
    const kind = tid === String(pid)
      ? "main thread"
      : name.startsWith("tokio")
      ? "I/O threads"
      : name.startsWith("V8")
      ? "V8 helpers"
      : name.startsWith("worker")
      ? "workers"
      : "other threads";
    kinds.set(kind, (kinds.get(kind) ?? 0) + used);
  }
  kinds.set("ended threads (workers)", Math.max(0, total - live));
  return [...kinds].filter(([, s]) => s > 0).sort((a, b) => b[1] - a[1])
    .map(([kind, s]) => `${kind} ${(s * 1e6 / units).toFixed(0)}`).join(", ");
}

/** Peak resident memory of a process in MiB (VmHWM), or NaN when it cannot be read. */
async function peakRssMiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() => "");
  return Number(/^VmHWM:\s+(\d+)\s+kB/m.exec(status)?.[1] ?? NaN) / 1024;
}

/** The bound the cryptography sets on the rate, in words. */
function cryptoNote(cost: CryptoCost, rawRate: number): string {
  // Per chunk: the sender seals it and hashes it (as it reads it, since protocol 10), the
  // receiver opens it and hashes it; two cores at most.
  const perChunk = 2 * cost.aead + 2 * cost.sha;
  const bound = 65_000 / MIB / (perChunk / 2 / 1e6);
  return `The cryptography alone, measured in this process (CPU µs per chunk of 65,000 bytes): ` +
    `ChaCha20-Poly1305 through node:crypto ${cost.aead.toFixed(0)}, SHA-256 through ` +
    `node:crypto ${cost.sha.toFixed(0)}; for comparison AES-256-GCM through WebCrypto ` +
    `${cost.aes.toFixed(0)}${
      cost.openssl === undefined ? "" : `, through Node.js's OpenSSL ${cost.openssl.toFixed(0)}`
    }. Sealing, opening and two hashes per chunk take ${perChunk.toFixed(0)} µs of CPU, so ` +
    `on 2 cores with nothing else running a transfer can go no faster than ` +
    `${bound.toFixed(0)} MiB/s = ${(bound / rawRate).toFixed(2)}× this run's raw copy, before ` +
    `any reading, writing or framing.`;
}

async function run(ctx: BenchContext): Promise<ItemOutcome> {
  // CONFAB_BENCH_FILE_MIB: another size, for trying a change without a full 1 GiB run.
  const size = Number(Deno.env.get("CONFAB_BENCH_FILE_MIB") ?? (ctx.quick ? 16 : 1024)) * MIB;
  const dir = await ctx.tempDir("confab-bench-file-");
  const source = join(dir, "payload.bin");
  ctx.log(`  writing a ${size / MIB} MiB file`);
  await makeFile(source, size);

  // The raw sink and the Confab pair.
  const rawOut = join(dir, "raw-copy.bin");
  const sink = ctx.spawn("raw-sink", [
    "run",
    "--allow-net",
    "--allow-write",
    "scripts/bench/raw_sink.ts",
    rawOut,
  ]);
  const sinkPort = (await sink.nextEvent((e) => typeof e.port === "number", "port", 30_000))
    .port as number;
  const server = await startServer(ctx.spawn, { dataDir: join(dir, "server"), signal: ctx.signal });
  const bob = await ClientProcess.start(ctx, "bob", { serverPort: server.port, dir });
  await bob.signup(ctx.signal);
  const alice = await LocalClient.signup(ctx, "alice", {
    dir,
    server: { host: "127.0.0.1", port: server.port },
  });
  await alice.client.addContact("bob");
  await bob.ask("contacts add alice", "contact_added", { user: "alice" }, ctx.signal);
  await alice.client.openChat("bob");

  const raw: number[] = [];
  // Seconds the main threads waited for a core during each raw copy (this process, the sink).
  const rawWaits: number[][] = [];
  const rawOnce = async () => {
    ctx.log(`  raw TCP copy of ${size / MIB} MiB`);
    const w0 = await Promise.all([Deno.pid, sink.pid].map(runQueueWait));
    raw.push(await rawCopy(source, size, sink, sinkPort, ctx.signal));
    const w1 = await Promise.all([Deno.pid, sink.pid].map(runQueueWait));
    rawWaits.push(w1.map((w, i) => w - w0[i]!));
    await Deno.remove(rawOut).catch(() => {});
  };
  await rawOnce();

  ctx.log(`  Confab: /s of ${size / MIB} MiB from alice to bob`);
  let started: number | undefined;
  let senderDone: number | undefined;
  let failed: string | undefined;
  alice.onEvent = (e: ClientEvent, at: number) => {
    if (e.type === "transfer_started" && e.direction === "out") started = at;
    if (e.type === "transfer_done" && e.direction === "out") senderDone = at;
    if (e.type === "transfer_failed") failed = e.reason;
  };
  const received = bob.waitFor(
    (e) => e.type === "transfer_done" || e.type === "transfer_failed",
    "end of the transfer",
    ctx.quick ? 30_000 : 240_000,
    ctx.signal,
  );
  received.catch(() => {});
  // Idle memory, and the peak counted from here on (writing 5 to clear_refs resets VmHWM).
  const idle = [await rssKiB(Deno.pid) / 1024, await rssKiB(bob.proc.pid) / 1024];
  const peakReset = await Promise.all(
    [Deno.pid, bob.proc.pid].map((pid) =>
      Deno.writeTextFile(`/proc/${pid}/clear_refs`, "5").then(() => true, () => false)
    ),
  );
  const cpu0 = [await cpuSeconds(Deno.pid), await cpuSeconds(bob.proc.pid)];
  const threads0 = [await threadCpu(Deno.pid), await threadCpu(bob.proc.pid)];
  const waited0 = await Promise.all([Deno.pid, bob.proc.pid].map(runQueueWait));
  const t0 = performance.now();
  await deadline(alice.client.share(source), ctx.quick ? 30_000 : 240_000, "share", ctx.signal);
  const done = await received;
  alice.onEvent = undefined;
  if (done.event.type !== "transfer_done" || failed !== undefined || started === undefined) {
    throw new Error(`the transfer failed: ${failed ?? done.event.reason}`);
  }
  if (done.event.size !== size || done.event.bytes !== size) {
    throw new Error(`bob received ${done.event.bytes} of ${size} bytes`);
  }
  const totalMs = done.at - t0;
  const wireMs = done.at - started;
  const cpu = [
    await cpuSeconds(Deno.pid) - cpu0[0]!,
    await cpuSeconds(bob.proc.pid) - cpu0[1]!,
  ];
  const threads1 = [await threadCpu(Deno.pid), await threadCpu(bob.proc.pid)];
  const waited = (await Promise.all([Deno.pid, bob.proc.pid].map(runQueueWait)))
    .map((w, i) => w - waited0[i]!);
  const byThread = [Deno.pid, bob.proc.pid].map((pid, i) =>
    cpuByThread(pid, threads0[i]!, threads1[i]!, cpu[i]!, size / UNIT)
  );
  const bobPeak = await peakRssMiB(bob.proc.pid);
  const alicePeak = await peakRssMiB(Deno.pid);
  // The received copy is no longer needed: free the disk before the second raw copy.
  if (typeof done.event.savedAs === "string") await Deno.remove(done.event.savedAs).catch(() => {});

  await rawOnce();
  const iperf = await iperf3(ctx, size);
  const cost = await cryptoCost(ctx.signal);

  // Where the time goes: another transfer (a quarter of the size) with the CPU profiler on in
  // both clients.
  const profiledSize = size / 4;
  const small = join(dir, "profiled.bin");
  await makeFile(small, profiledSize);
  ctx.log(`  profiling a transfer of ${profiledSize / MIB} MiB`);
  const { result: profiledMs, profiles } = await profiled([bob.proc], async () => {
    const end = bob.waitFor(
      (e) => e.type === "transfer_done" || e.type === "transfer_failed",
      "end of the profiled transfer",
      ctx.quick ? 30_000 : 240_000,
      ctx.signal,
    );
    end.catch(() => {});
    const t = performance.now();
    await deadline(alice.client.share(small), ctx.quick ? 30_000 : 240_000, "share", ctx.signal);
    const last = await end;
    if (last.event.type !== "transfer_done") throw new Error("the profiled transfer failed");
    if (typeof last.event.savedAs === "string") await Deno.remove(last.event.savedAs);
    return last.at - t;
  }, ctx.signal);
  const chunks = Math.ceil(profiledSize / UNIT);

  const rawMs = Math.min(...raw);
  const rate = (ms: number) => size / MIB / (ms / 1000);
  const rawName = "raw Deno TCP copy, 64 KiB frames, file to file";
  const measurements: Measurement[] = [
    {
      metric: "rate share→done",
      value: rate(totalMs),
      unit: "MiB/s",
      baseline: rate(rawMs),
      baselineName: rawName,
      goal: { type: "ratio_min", value: 0.5 },
    },
    {
      metric: "rate wire only",
      value: rate(wireMs),
      unit: "MiB/s",
      baseline: rate(rawMs),
      baselineName: rawName,
      goal: { type: "ratio_min", value: 0.5 },
    },
    {
      metric: "time share→done",
      value: totalMs / 1000,
      unit: "s",
      baseline: rawMs / 1000,
      baselineName: rawName,
    },
    {
      metric: "receiver peak rss over idle",
      value: bobPeak - idle[1]!,
      unit: "MiB",
      goal: { type: "max", value: 64 },
    },
    {
      metric: "sender peak rss over idle",
      value: alicePeak - idle[0]!,
      unit: "MiB",
      goal: { type: "max", value: 64 },
    },
    {
      metric: "time before the data",
      value: (started - t0) / 1000,
      unit: "s",
    },
  ];
  if (iperf !== undefined) {
    measurements.push({
      metric: "iperf3 rate",
      value: iperf,
      unit: "MiB/s",
      baseline: rate(rawMs),
      baselineName: rawName,
    });
  }
  return {
    measurements,
    params: { bytes: size, chunkBytes: CHUNK_SIZE, rawFrameBytes: RAW_FRAME },
    notes: [
      `A ${size / MIB} MiB file of random bytes (in the page cache) shared with \`/s\` ` +
      `(ConfabClient.share in the bench process) to bob, a client.ts --json process, over their ` +
      `direct link. share→done: from the call to bob's transfer_done event as this process read ` +
      `it from bob's stdout (${(totalMs / 1000).toFixed(2)} s); it includes the sender's ` +
      `tag of the file (its size, time and first and last 64 KiB; since protocol 10 the ` +
      `SHA-256 is taken as the file is sent, not in a pass before the offer), the offer and ` +
      `bob's answer ` +
      `(${((started - t0) / 1000).toFixed(2)} s until the sender's transfer_started), the ` +
      `data (encrypted, chunks of ${CHUNK_SIZE} bytes, four in flight), bob's hash check and ` +
      `the move into downloads. ` +
      `Wire only: from transfer_started to the same end (${(wireMs / 1000).toFixed(2)} s). ` +
      `The sender's own transfer_done came ${
        senderDone === undefined ? "—" : (senderDone - done.at).toFixed(1)
      } ms from bob's (negative: before it reached this process). CPU used meanwhile: ` +
      `sender (the bench process) ${cpu[0]!.toFixed(1)} s, receiver ${cpu[1]!.toFixed(1)} s, ` +
      `in ${(totalMs / 1000).toFixed(1)} s (per 65,000 bytes, the chunk of earlier runs: ` +
      `${(cpu[0]! * 1e6 / (size / UNIT)).toFixed(0)} µs and ` +
      `${(cpu[1]! * 1e6 / (size / UNIT)).toFixed(0)} µs; by thread, µs per 65,000 bytes: ` +
      `sender ${byThread[0]}; receiver ${byThread[1]}). RSS: bob ${idle[1]!.toFixed(0)} MiB ` +
      `idle, ${bobPeak.toFixed(0)} MiB at the peak; the bench process (the sender) ` +
      `${idle[0]!.toFixed(0)} MiB idle, ${alicePeak.toFixed(0)} MiB at the peak${
        peakReset.every(Boolean) ? "" : " (the peak could not be reset: it counts from the start)"
      }. Waiting for a core meanwhile (run-queue delay of the main threads, ` +
      `/proc/PID/task/PID/schedstat): sender ${waited[0]!.toFixed(2)} s, receiver ` +
      `${waited[1]!.toFixed(2)} s.`,
      `Baseline: the same file copied over plain Deno TCP from this process to a sink process ` +
      `(raw_sink.ts) in frames of 4 + ${RAW_FRAME} bytes, read from and written to files as ` +
      `Confab does, no encryption, no hashing; timed from the first read to the sink's one-byte ` +
      `answer after its last write. Runs: ${
        raw.map((ms) => `${rate(ms).toFixed(0)} MiB/s`).join(" before, ")
      } after the Confab transfer; the faster is the baseline. Its main threads waited for a ` +
      `core (this process, the sink): ${
        rawWaits.map((w) => w.map((s) => `${s.toFixed(2)} s`).join(" and ")).join(" before, ")
      } after.`,
      iperf === undefined
        ? "iperf3 is not installed here (`which iperf3` found nothing): no iperf3 figure."
        : `iperf3 (-n ${size} over 127.0.0.1): ${iperf.toFixed(0)} MiB/s.`,
      cryptoNote(cost, rate(rawMs)),
      ...profiles.map((p) =>
        `Profile of ${
          p.name === "bench" ? "the sender (bench process)" : `the receiver (${p.name})`
        }` +
        ` over a transfer of ${profiledSize / MIB} MiB (${chunks} units of 65,000 bytes; ` +
        `${(profiledMs / 1000).toFixed(2)} s share→done with the profiler on, ` +
        `${(profiledMs * 1000 / chunks).toFixed(0)} µs per 65,000 bytes), by step: ${
          describeSteps(p.breakdown, chunks, "65,000 bytes")
        }. Top functions by self time (µs per 65,000 bytes): ${describeTop(p.breakdown, chunks)}.`
      ),
    ],
  };
}

export const file: BenchItem = {
  name: "file",
  title: "a 1 GiB file (quick: 16 MiB) sent with /s between two clients: share to transfer_done",
  metrics: [
    "rate share→done",
    "rate wire only",
    "time share→done",
    "receiver peak rss over idle",
    "sender peak rss over idle",
    "time before the data",
  ],
  timeoutMs: (quick) => quick ? 30_000 : 300_000,
  run,
};
