/**
 * File sharing end to end with real processes: byte-identical arrival (SHA-256), groups,
 * memory during a large transfer, hostile names from a crafted peer, corruption, refusal,
 * chat during a transfer, and resuming after the sender was killed.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { DatabaseSync } from "node:sqlite";
import { basename, dirname, join, relative } from "node:path";
import { OFF_THREAD_FROM } from "../lib/client/file_hash.ts";
import { fileTag, TAG_KEY_SETTING } from "../lib/client/transfers.ts";
import { Identity } from "../lib/peer/identity.ts";
import { sha256Of } from "./support/files.ts";
import { CraftedPeer } from "./support/crafted_peer.ts";
import { crowd, disposeAll, membersAre, meshed } from "./support/groups.ts";
import { type Event, TestClient, type TestServer } from "./support/processes.ts";
import { sharedServer } from "./support/shared_server.ts";

const MiB = 1024 * 1024;
/** Deadline for waits on big transfers (others run tests on this machine too). */
const BIG_MS = 120_000;

/**
 * A file of `bytes` random bytes, written fast: each MiB is a fresh random 64 KiB block
 * repeated, so no two MiB are alike and any lost, doubled or misplaced chunk changes the hash.
 */
async function randomFile(dir: string, name: string, bytes: number): Promise<string> {
  const path = join(dir, name);
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const block = 64 * 1024;
  const chunk = new Uint8Array(MiB);
  for (let left = bytes; left > 0; left -= chunk.length) {
    crypto.getRandomValues(chunk.subarray(0, block));
    for (let at = block; at < chunk.length; at += block) chunk.copyWithin(at, 0, block);
    const n = Math.min(left, chunk.length);
    let written = 0;
    while (written < n) written += await file.write(chunk.subarray(written, n));
  }
  return path;
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

/** These tests are about transfers, not acceptance: files from contacts are taken at once. */
const AUTO = ["--auto-accept", "contacts"];
const autoAll = (...names: string[]) => Object.fromEntries(names.map((n) => [n, { args: AUTO }]));

const downloadsOf = (c: TestClient, user: string) => join(c.home, user, "downloads");

/** The key `user`'s client tags the files it shares with, read from its store. */
function tagKeyOf(c: TestClient, user: string): Uint8Array {
  const db = new DatabaseSync(join(c.home, user, "confab.sqlite"), { readOnly: true });
  try {
    const row = db.prepare("SELECT value FROM settings WHERE key = ?").get(TAG_KEY_SETTING) as
      | { value: string }
      | undefined;
    assert.ok(row, `${user} has a file tag key once logged in`);
    return Uint8Array.from(row.value.match(/../g)!, (h) => parseInt(h, 16));
  } finally {
    db.close();
  }
}
const partialsOf = (c: TestClient, user: string) => join(c.home, user, "partial");

/** Waits for the next event of `type` that passes `test`. */
async function eventWhere(
  client: TestClient,
  type: string,
  test: (e: Event) => boolean,
  what: string,
  ms: number,
): Promise<Event> {
  return await client.nextWhere((e) => e.type === type && test(e), what, ms);
}

/** Where in a client's output the first event of `type` passing `test` is (-1: none). */
function lineIndex(client: TestClient, type: string, test: (e: Event) => boolean): number {
  return client.proc.out.lines.findIndex((l) => {
    if (!l.startsWith("{")) return false;
    const e = JSON.parse(l) as Event;
    return e.type === type && test(e);
  });
}

/**
 * alice and bob (named by `user`), contacts of each other, with alice in a chat with bob (a
 * live link).
 */
async function pair(
  server: TestServer,
  user: (name: string) => string,
  options: {
    alice?: Parameters<typeof TestClient.start>[2];
    bobArgs?: string[];
    /** bob answers offers himself (the default of a client) instead of taking them at once. */
    bobAsks?: boolean;
  } = {},
): Promise<{ alice: TestClient; bob: TestClient }> {
  const [A, B] = [user("alice"), user("bob")];
  const [alice, bob] = await crowd(server, [A, B], {
    [A]: { ...options.alice, args: [...AUTO, ...options.alice?.args ?? []] },
    [B]: { args: [...options.bobAsks ? [] : AUTO, ...options.bobArgs ?? []] },
  }) as [TestClient, TestClient];
  await alice.send(`chat ${B}`);
  await alice.event("chat_opened", { with: B, online: true });
  return { alice, bob };
}

/** `/proc/<pid>/status` figures, in bytes. */
async function memoryOf(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)![1]);
  return { rss: kib("VmRSS") * 1024, peak: kib("VmHWM") * 1024 };
}

/**
 * Resets the process's peak RSS (VmHWM) to its current RSS, so the peak read later belongs
 * to what happened since, not to start-up. False where the kernel does not allow it.
 */
async function resetPeak(pid: number): Promise<boolean> {
  try {
    await Deno.writeTextFile(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/**
 * Every scenario of this file shares one server: none kills, freezes or restarts it (the
 * clients do the transfers; the server only introduces them), and each names its own users.
 */
const shared = sharedServer("files: scenarios on one server");

// ---- arrival -------------------------------------------------------------------------------

shared.test("a random binary file arrives byte-identical, 1:1", async ({ server, user }) => {
  const dir = await Deno.makeTempDir();
  const { alice, bob } = await pair(server, user);
  try {
    const path = await randomFile(dir, "photo.bin", 3 * MiB + 123);
    await alice.send(`/s ${path}`);
    const done = await bob.event("transfer_done", { direction: "in" }, 60_000);
    await alice.event("transfer_done", { direction: "out" }, 60_000);
    assert.equal(done.name, "photo.bin");
    assert.equal(await sha256Of(String(done.savedAs)), await sha256Of(path));
    assert.equal(String(done.savedAs), join(downloadsOf(bob, user("bob")), "photo.bin"));
  } finally {
    await disposeAll([alice, bob]);
    await Deno.remove(dir, { recursive: true });
  }
});

shared.test("a file shared in a 3-member group arrives byte-identical at each member", async ({ server, user }) => {
  const dir = await Deno.makeTempDir();
  const [A, B, C] = [user("alice"), user("bob"), user("carol")];
  const clients = await crowd(server, [A, B, C], autoAll(A, B, C));
  const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
  try {
    await alice.send(`chat ${B}`);
    await alice.event("chat_opened", { with: B, online: true });
    await alice.send(`/a ${C}`);
    const group = String((await alice.event("group_opened")).group);
    for (const c of clients) await membersAre(c, group, [A, B, C]);
    await meshed(clients);

    const path = await randomFile(dir, "group.bin", 2 * MiB + 7);
    const want = await sha256Of(path);
    await alice.send(`/s ${path}`);
    for (const member of [bob, carol]) {
      const done = await member.event("transfer_done", { direction: "in", peer: A }, 60_000);
      assert.equal(done.name, "group.bin");
      assert.equal(done.sha256, want);
      assert.equal(String(done.savedAs), join(downloadsOf(member, member.proc.name), "group.bin"));
      assert.equal(await sha256Of(String(done.savedAs)), want, `${member.proc.name}'s copy`);
    }
    const sent = [
      await alice.event("transfer_done", { direction: "out" }, 60_000),
      await alice.event("transfer_done", { direction: "out" }, 60_000),
    ];
    assert.deepEqual(sent.map((e) => e.peer).sort(), [B, C]);
  } finally {
    await disposeAll(clients);
    await Deno.remove(dir, { recursive: true });
  }
});

shared.test("a file shared in a group tells of a member who is away in those words", async ({ server, user }) => {
  const dir = await Deno.makeTempDir();
  const [A, B, C] = [user("alice"), user("bob"), user("carol")];
  const clients = await crowd(server, [A, B, C], autoAll(A, B, C));
  const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
  try {
    // bob and carol will be members but not contacts: the server neither says where carol is
    // nor relays between them, so a dial to her address is all bob can try.
    await bob.send(`contacts remove ${C}`);
    await bob.event("contact_removed", { user: C });
    await alice.send(`chat ${B}`);
    await alice.event("chat_opened", { with: B, online: true });
    await alice.send(`/a ${C}`);
    const group = String((await alice.event("group_opened")).group);
    for (const c of clients) await membersAre(c, group, [A, B, C]);
    await meshed(clients);
    carol.proc.kill("SIGKILL");
    await bob.event("group_presence", { user: C, here: false });

    const path = await randomFile(dir, "while-away.bin", 1000);
    await bob.send(`/s ${path}`);
    await alice.event("transfer_done", { direction: "in", peer: B });
    const failed = await bob.event("transfer_failed", { direction: "out", peer: C });
    assert.equal(failed.reason, `${C} is away; share it again when they are back`);
  } finally {
    await disposeAll(clients);
    await Deno.remove(dir, { recursive: true });
  }
});

shared.test("a frozen member does not stall a group transfer to the others", async ({ server, user }) => {
  const dir = await Deno.makeTempDir();
  const [A, B, C] = [user("alice"), user("bob"), user("carol")];
  const clients = await crowd(server, [A, B, C], autoAll(A, B, C));
  const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
  try {
    await alice.send(`chat ${B}`);
    await alice.event("chat_opened", { with: B, online: true });
    await alice.send(`/a ${C}`);
    const group = String((await alice.event("group_opened")).group);
    for (const c of clients) await membersAre(c, group, [A, B, C]);
    await meshed(clients);

    carol.proc.kill("SIGSTOP");
    try {
      const path = await randomFile(dir, "big-group.bin", 48 * MiB);
      await alice.send(`/s ${path}`);
      // Bob gets all of it, while carol's copy goes nowhere; hers fails on its own. The two
      // outcomes at alice's end come in either order.
      const done = await bob.event("transfer_done", { direction: "in", peer: A }, 60_000);
      assert.equal(done.sha256, await sha256Of(path));
      await alice.anyEvent("transfer_done", { direction: "out", peer: B }, 60_000);
      await alice.anyEvent("transfer_failed", { direction: "out", peer: C }, 60_000);
    } finally {
      carol.proc.kill("SIGCONT");
    }
  } finally {
    await disposeAll(clients);
    await Deno.remove(dir, { recursive: true });
  }
});

shared.test("a slow receiver holds the sender back: what is sent and not yet written stays bounded", async ({ server, user }) => {
  const dir = await Deno.makeTempDir();
  const { alice, bob } = await pair(server, user);
  const size = 192 * MiB;
  let slowing = true;
  let throttle: Promise<void> = Promise.resolve();
  try {
    const path = await randomFile(dir, "slow.bin", size);
    await alice.send(`/s ${path}`);
    await bob.event("transfer_started", { direction: "in" }, 60_000);
    // bob runs a quarter of the time (stopped 300 ms of every 400: his link stays up, the
    // heartbeats get through in between), so his disk and hash fall behind alice's reading.
    throttle = (async () => {
      while (slowing) {
        bob.proc.kill("SIGSTOP");
        await new Promise((r) => setTimeout(r, 300));
        bob.proc.kill("SIGCONT");
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const last = (client: TestClient, direction: string) =>
      Number(
        client.events().findLast((e) => e.type === "transfer_progress" && e.direction === direction)
          ?.bytes ?? 0,
      );
    const done = bob.event("transfer_done", { direction: "in" }, 180_000);
    let finished = false;
    done.then(() => finished = true, () => finished = true);
    // What alice has read and sealed, less what bob has written: the sockets' buffers (the
    // kernel's up to ≈ 36 MiB here), the chunks in flight and bob's queue. Without
    // backpressure alice would run ahead by most of the file.
    let ahead = 0;
    while (!finished) {
      ahead = Math.max(ahead, last(alice, "out") - last(bob, "in"));
      await Promise.race([done.catch(() => {}), new Promise((r) => setTimeout(r, 50))]);
    }
    slowing = false;
    await throttle;
    const received = await done;
    assert.equal(received.sha256, await sha256Of(path));
    assert.ok(ahead > 0, "alice's progress was seen ahead of bob's");
    assert.ok(ahead <= 64 * MiB, `alice ran ${(ahead / MiB).toFixed(1)} MiB ahead of bob's disk`);
    console.log(`alice ran at most ${(ahead / MiB).toFixed(1)} MiB ahead of bob's disk`);
  } finally {
    slowing = false;
    await throttle;
    bob.proc.kill("SIGCONT");
    await disposeAll([alice, bob]);
    await Deno.remove(dir, { recursive: true });
  }
});

// ---- memory --------------------------------------------------------------------------------

shared.test("a 512 MiB transfer keeps each side's peak RSS within 64 MiB of its idle RSS", async ({ server, user }) => {
  const dir = await Deno.makeTempDir();
  const { alice, bob } = await pair(server, user);
  try {
    const size = 512 * MiB;
    const path = await randomFile(dir, "big.bin", size);
    const idle = { alice: await memoryOf(alice.proc.pid), bob: await memoryOf(bob.proc.pid) };
    const reset = await resetPeak(alice.proc.pid) && await resetPeak(bob.proc.pid);

    await alice.send(`/s ${path}`);
    await alice.event("transfer_started", { direction: "out" }, BIG_MS);
    const started = performance.now();
    const done = await bob.event("transfer_done", { direction: "in" }, BIG_MS);
    const seconds = (performance.now() - started) / 1000;
    await alice.event("transfer_done", { direction: "out" }, BIG_MS);
    const after = { alice: await memoryOf(alice.proc.pid), bob: await memoryOf(bob.proc.pid) };

    const mib = (n: number) => (n / MiB).toFixed(1);
    console.log(
      `512 MiB in ${seconds.toFixed(2)} s (${(512 / seconds).toFixed(0)} MiB/s); ` +
        `peak RSS reset at idle: ${reset}; ` +
        `alice idle ${mib(idle.alice.rss)} MiB, peak ${mib(after.alice.peak)} MiB; ` +
        `bob idle ${mib(idle.bob.rss)} MiB, peak ${mib(after.bob.peak)} MiB`,
    );
    assert.equal(done.size, size);
    for (const who of ["alice", "bob"] as const) {
      const growth = after[who].peak - idle[who].rss;
      assert.ok(
        growth <= 64 * MiB,
        `${who}'s peak RSS grew by ${mib(growth)} MiB over idle (limit 64 MiB)`,
      );
    }
    assert.equal(await sha256Of(String(done.savedAs)), done.sha256);
  } finally {
    await disposeAll([alice, bob]);
    await Deno.remove(dir, { recursive: true });
  }
});

// ---- hostile names -------------------------------------------------------------------------

/** Every path below `root` with what it is: "dir", or the file's size, mtime and content. */
async function snapshot(
  root: string,
  skip: (path: string) => boolean,
): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      if (skip(path)) continue;
      const info = await Deno.lstat(path);
      if (entry.isDirectory) {
        out.set(relative(root, path), "dir");
        await walk(path);
      } else {
        const content = entry.isFile ? hex(await Deno.readFile(path)).slice(0, 256) : "link";
        out.set(relative(root, path), `${info.size} ${info.mtime?.getTime()} ${content}`);
      }
    }
  };
  await walk(root);
  return out;
}

shared.test("hostile file names from a crafted peer all land inside downloads, cleaned", async ({ server, user }) => {
  // Bob's home sits in a folder of its own, so a name that climbs out of it is seen.
  const outer = await Deno.makeTempDir({ prefix: "confab-outer-" });
  const bobHome = join(outer, "home");
  await Deno.mkdir(bobHome);
  const [B, M] = [user("bob"), user("mallory")];
  const bob = await TestClient.start(B, server, {
    home: bobHome,
    args: ["--peer-timeout", "30", ...AUTO],
  });
  try {
    await bob.signup(B);
    const { peerPort } = bob.events().find((e) => e.type === "ready")! as unknown as {
      peerPort: number;
    };

    // mallory is a real user (the directory has her key), but she talks through a crafted peer.
    let identity: Identity;
    {
      await using mallory = await TestClient.start(M, server);
      await mallory.signup(M);
      await mallory.send(`contacts add ${B}`);
      await mallory.event("contact_added", { user: B });
      identity = (await Identity.load(join(mallory.home, M, "identity.json")))!;
    }
    await bob.send(`contacts add ${M}`);
    await bob.event("contact_added", { user: M });

    const downloads = downloadsOf(bob, user("bob"));
    const existing = new TextEncoder().encode("bob's own file, not to be overwritten\n");
    await Deno.writeFile(join(downloads, "existing.txt"), existing);
    // Where "../../etc/passwd" and "../../../etc/passwd" from downloads would land.
    const sentinels = [join(bobHome, "etc", "passwd"), join(outer, "etc", "passwd")];
    for (const s of sentinels) {
      await Deno.mkdir(dirname(s), { recursive: true });
      await Deno.writeTextFile(s, "root:x:0:0:sentinel\n");
    }
    // The client's own database changes with every file received (history); all else must not.
    const skip = (path: string) =>
      path.startsWith(downloads + "/") || basename(path).startsWith("confab.sqlite");
    const before = await snapshot(outer, skip);

    await using peer = await CraftedPeer.dial(peerPort, {
      me: M,
      to: B,
      identity,
    });

    const offer = (name: string, data: Uint8Array) => {
      const fid = hex(crypto.getRandomValues(new Uint8Array(16)));
      const sha256 = createHash("sha256").update(data).digest("hex");
      const tag = createHash("sha256").update(fid).digest("hex");
      return { fid, sha256, message: { type: "file_offer", fid, name, size: data.length, tag } };
    };

    // Longer than the protocol allows (1,024 characters): refused at the edge, link kept.
    const huge = offer("h".repeat(10_000) + ".txt", new Uint8Array([1, 2, 3]));
    await peer.send(huge.message);
    const refused = await peer.next("error");
    assert.equal(refused.code, "BAD_MESSAGE");
    assert.match(String(refused.message), /file_offer: name/);

    const cases: { raw: string; saved: string }[] = [
      { raw: "../../etc/passwd", saved: "passwd" },
      { raw: "../../../etc/passwd", saved: "passwd (1)" },
      { raw: "a/b", saved: "b" },
      { raw: "..", saved: "file" },
      { raw: ".", saved: "file (1)" },
      { raw: "evil\u0000name.txt", saved: "evil_name.txt" },
      { raw: "bell\u0007.txt", saved: "bell_.txt" },
      { raw: "esc\u001b[2J\r\n.txt", saved: "esc_[2J__.txt" },
      { raw: "invoice\u202Efdp.exe", saved: "invoice_fdp.exe" },
      { raw: "CON", saved: "_CON" },
      { raw: "existing.txt", saved: "existing (1).txt" },
      // The longest names the protocol carries: cut to 200 bytes, extension kept.
      { raw: "x".repeat(1_020) + ".txt", saved: "x".repeat(196) + ".txt" },
      { raw: "日".repeat(1_000) + ".txt", saved: "日".repeat(65) + ".txt" },
    ];
    const sent = new Map<string, { raw: string; saved: string; data: Uint8Array }>();
    for (const [i, c] of cases.entries()) {
      const data = new TextEncoder().encode(`hostile file #${i}: ${JSON.stringify(c.raw)}\n`);
      const { fid, sha256, message } = offer(c.raw, data);
      sent.set(fid, { ...c, data });
      await peer.send(message);
      const accept = await peer.next("file_accept");
      assert.deepEqual([accept.fid, accept.offset], [fid, 0]);
      await peer.sendChunk(fid, 0, data);
      await peer.send({ type: "file_end", fid, sha256 });
      const done = await peer.next("file_done");
      assert.deepEqual([done.fid, done.ok], [fid, true], JSON.stringify(done));
    }

    for (const [fid, c] of sent) {
      const done = await bob.event("transfer_done", { fid });
      const savedAs = String(done.savedAs);
      assert.equal(dirname(savedAs), downloads, `${JSON.stringify(c.raw)} stays in downloads`);
      assert.equal(basename(savedAs), c.saved, `${JSON.stringify(c.raw)}`);
      assert.deepEqual(await Deno.readFile(savedAs), c.data);
    }
    const landed = await listDir(downloads);
    assert.deepEqual(landed, [...cases.map((c) => c.saved), "existing.txt"].sort());
    for (const name of landed) {
      assert.ok((await Deno.lstat(join(downloads, name))).isFile, `${name} is a plain file`);
      assert.ok(!name.includes("/") && !name.includes("\0"), JSON.stringify(name));
      // deno-lint-ignore no-control-regex
      assert.ok(!/[\u0000-\u001f\u007f-\u009f\u202a-\u202e]/.test(name), JSON.stringify(name));
      assert.ok(name !== "" && name !== "." && name !== "..", JSON.stringify(name));
      assert.ok(new TextEncoder().encode(name).length <= 200, `${name.length} chars`);
    }
    assert.deepEqual(await Deno.readFile(join(downloads, "existing.txt")), existing);
    assert.deepEqual(await listDir(partialsOf(bob, user("bob"))), []);
    assert.deepEqual(await snapshot(outer, skip), before, "nothing outside downloads changed");
    for (const s of sentinels) assert.equal(await Deno.readTextFile(s), "root:x:0:0:sentinel\n");
  } finally {
    await bob[Symbol.asyncDispose]();
    await Deno.remove(outer, { recursive: true });
  }
});

// ---- failures ------------------------------------------------------------------------------

for (
  const [size, how] of [
    [MiB + 1, "hashed on the main thread"],
    [OFF_THREAD_FROM + 3 * MiB + 7, "hashed by a worker"],
  ] as const
) {
  shared.test(`a file damaged on the way fails the SHA-256 check, on both sides, and is not kept (${how})`, async ({ server, user }) => {
    const dir = await Deno.makeTempDir();
    const { alice, bob } = await pair(server, user, {
      alice: { env: { CONFAB_FAULT: "corrupt-file" } },
    });
    try {
      const path = await randomFile(dir, "damaged.bin", size);
      await alice.send(`/s ${path}`);
      const failed = await bob.event("transfer_failed", { direction: "in" }, 60_000);
      assert.match(String(failed.reason), /SHA-256/);
      assert.equal(failed.kept, false);
      const told = await alice.event("transfer_failed", { direction: "out" }, 60_000);
      assert.match(String(told.reason), /SHA-256/);
      assert.deepEqual(await listDir(downloadsOf(bob, user("bob"))), []);
      assert.deepEqual(await listDir(partialsOf(bob, user("bob"))), []);
      assert.equal(lineIndex(bob, "transfer_done", () => true), -1);
    } finally {
      await disposeAll([alice, bob]);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

shared.test("the sender killed -9 mid-transfer: the part waits aside and sharing again resumes without asking again", async ({ server, user }) => {
  const dir = await Deno.makeTempDir();
  // alice's home is ours: it must outlive her first process.
  const aliceHome = await Deno.makeTempDir({ prefix: "confab-alice-" });
  const { alice, bob } = await pair(server, user, { alice: { home: aliceHome }, bobAsks: true });
  let alice2: TestClient | undefined;
  try {
    const size = 256 * MiB;
    const path = await randomFile(dir, "resume.bin", size);
    const want = await sha256Of(path);
    await alice.send(`/s ${path}`);
    const offered = await bob.event("transfer_offered", { direction: "in", name: "resume.bin" });
    await bob.send(`accept ${offered.offer}`);
    const progress = await eventWhere(
      bob,
      "transfer_progress",
      // Over 64 MiB (a quarter): the sender says it checks that part before going on.
      (e) => e.direction === "in" && Number(e.bytes) >= size / 4 && Number(e.bytes) < size,
      "with 25% to 99% received",
      BIG_MS,
    );
    alice.proc.kill("SIGKILL");
    await alice.proc.status;
    assert.ok(Number(progress.bytes) < size, "killed before the end");

    const failed = await bob.event("transfer_failed", { direction: "in" });
    assert.equal(failed.kept, true);
    assert.ok(Number(failed.bytes) > 0 && Number(failed.bytes) < size, String(failed.bytes));
    assert.deepEqual(
      await listDir(downloadsOf(bob, user("bob"))),
      [],
      "nothing partial in downloads",
    );
    const parts = await listDir(partialsOf(bob, user("bob")));
    assert.equal(parts.length, 1);
    const kept = (await Deno.stat(join(partialsOf(bob, user("bob")), parts[0]!))).size;
    assert.ok(kept >= Number(progress.bytes) && kept < size, `${kept} bytes kept`);

    alice2 = await TestClient.start(user("alice"), server, { home: aliceHome, args: AUTO });
    await alice2.login(user("alice"));
    await alice2.send(`chat ${user("bob")}`);
    await alice2.event("chat_opened", { with: user("bob"), online: true });
    await alice2.send(`/s ${path}`);
    const sent = await alice2.event("transfer_done", { direction: "out" }, BIG_MS);
    const received = await bob.event("transfer_done", { direction: "in" }, BIG_MS);
    // bob accepted this file once: the resume was not offered to him again.
    assert.equal(bob.events().filter((e) => e.type === "transfer_offered").length, 1);
    assert.ok(Number(sent.resumedFrom) > 0, `resumed from ${sent.resumedFrom}`);
    assert.ok(Number(sent.bytes) < size, `${sent.bytes} bytes sent again`);
    assert.equal(Number(sent.resumedFrom) + Number(sent.bytes), size);
    // alice2 hashed the part bob has from her copy first, and said so (it is over 64 MiB).
    const checking = `checking the ${(Number(sent.resumedFrom) / MiB).toFixed(1)} MiB of ` +
      `resume.bin ${user("bob")} already has (SHA-256) before sending the rest`;
    assert.ok(alice2.events().some((e) => e.type === "info" && e.text === checking), checking);
    assert.equal(received.resumedFrom, sent.resumedFrom);
    assert.equal(String(received.savedAs), join(downloadsOf(bob, user("bob")), "resume.bin"));
    assert.equal(await sha256Of(String(received.savedAs)), want);
    assert.deepEqual(await listDir(partialsOf(bob, user("bob"))), []);
  } finally {
    await disposeAll([alice, bob, ...(alice2 ? [alice2] : [])]);
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(aliceHome, { recursive: true });
  }
});

shared.test("a kept part that is not the file offered (same tag) fails the final check, is discarded, and sharing again sends it whole", async ({ server, user }) => {
  const dir = await Deno.makeTempDir();
  const { alice, bob } = await pair(server, user);
  try {
    const size = 3 * MiB + 11;
    const path = await randomFile(dir, "report.bin", size);
    const want = await sha256Of(path);
    // A part bob kept of another version of this file, under the name a part of this one has:
    // the tag (size, time, first and last bytes) cannot tell them apart, the hash can.
    const info = await Deno.stat(path);
    const tag = await fileTag(path, size, info.mtime!.getTime(), tagKeyOf(alice, user("alice")));
    const partials = partialsOf(bob, user("bob"));
    const part = join(partials, `${tag}-${size}-${user("alice").toLowerCase()}.part`);
    await Deno.writeFile(part, new Uint8Array(MiB + 5).fill(0x5a));

    await alice.send(`/s ${path}`);
    const started = await bob.event("transfer_started", { direction: "in" });
    assert.equal(started.offset, MiB + 5, "the part was taken up");
    const failed = await bob.event("transfer_failed", { direction: "in" });
    assert.match(String(failed.reason), /SHA-256/);
    assert.equal(failed.kept, false);
    const told = await alice.event("transfer_failed", { direction: "out" });
    assert.match(String(told.reason), /SHA-256/);
    assert.deepEqual(await listDir(partials), [], "the wrong part is gone");
    assert.deepEqual(await listDir(downloadsOf(bob, user("bob"))), []);

    await alice.send(`/s ${path}`);
    const done = await bob.event("transfer_done", { direction: "in" });
    assert.equal(done.resumedFrom, 0);
    assert.equal(done.sha256, want);
    assert.equal(await sha256Of(String(done.savedAs)), want);
    const sent = await alice.event("transfer_done", { direction: "out" });
    assert.equal(sent.sha256, want);
  } finally {
    await disposeAll([alice, bob]);
    await Deno.remove(dir, { recursive: true });
  }
});

shared.test("a chat message sent during a large transfer arrives before the transfer ends", async ({ server, user }) => {
  const dir = await Deno.makeTempDir();
  const { alice, bob } = await pair(server, user);
  try {
    const path = await randomFile(dir, "large.bin", 256 * MiB);
    await alice.send(`/s ${path}`);
    await bob.event("transfer_progress", { direction: "in" }, BIG_MS);
    await alice.send("still there? the file is on its way");
    await bob.event("message", {
      from: user("alice"),
      text: "still there? the file is on its way",
    });
    await bob.event("transfer_done", { direction: "in" }, BIG_MS);
    const message = lineIndex(bob, "message", (e) => e.from === user("alice"));
    const done = lineIndex(bob, "transfer_done", (e) => e.direction === "in");
    assert.ok(message >= 0 && message < done, `message at line ${message}, done at ${done}`);
    await alice.event("transfer_done", { direction: "out" }, BIG_MS);
  } finally {
    await disposeAll([alice, bob]);
    await Deno.remove(dir, { recursive: true });
  }
});

shared.test("the receiver refuses a file above --max-file-size, and both sides say why", async ({ server, user }) => {
  const dir = await Deno.makeTempDir();
  const { alice, bob } = await pair(server, user, { bobArgs: ["--max-file-size", "1M"] });
  try {
    const path = await randomFile(dir, "too-big.bin", 2 * MiB);
    await alice.send(`/s ${path}`);
    const failed = await alice.event("transfer_failed", { direction: "out" });
    assert.match(String(failed.reason), /larger than the receiver's limit/);
    const error = await bob.event("error", { code: "FILE_TOO_LARGE" });
    assert.match(String(error.message), /too-big\.bin/);
    assert.deepEqual(await listDir(downloadsOf(bob, user("bob"))), []);
    assert.deepEqual(await listDir(partialsOf(bob, user("bob"))), []);
  } finally {
    await disposeAll([alice, bob]);
    await Deno.remove(dir, { recursive: true });
  }
});

shared.test("a receiver that cannot save the file says so to both sides and keeps the link", async ({ server, user }) => {
  const dir = await Deno.makeTempDir();
  const { alice, bob } = await pair(server, user);
  try {
    // Something in the way of the downloads folder (a plain file where it should be).
    const downloads = downloadsOf(bob, user("bob"));
    await Deno.remove(downloads, { recursive: true });
    await Deno.writeTextFile(downloads, "not a folder\n");
    const path = await randomFile(dir, "blocked.bin", MiB + 5);
    await alice.send(`/s ${path}`);
    const failed = await bob.event("transfer_failed", { direction: "in" });
    assert.match(String(failed.reason), /cannot save/);
    assert.equal(failed.kept, true);
    const told = await alice.event("transfer_failed", { direction: "out" });
    assert.match(String(told.reason), /cannot save/);
    await alice.send("did it arrive?");
    await bob.event("message", { from: user("alice"), text: "did it arrive?" });
    assert.equal(lineIndex(bob, "link_down", () => true), -1);

    // Once the obstacle is gone, sharing again needs no data: the verified part was kept.
    await Deno.remove(downloads);
    await alice.send(`/s ${path}`);
    const done = await bob.event("transfer_done", { direction: "in" });
    assert.equal(done.resumedFrom, MiB + 5);
    assert.equal(done.bytes, 0);
    assert.equal(await sha256Of(String(done.savedAs)), await sha256Of(path));
  } finally {
    await disposeAll([alice, bob]);
    await Deno.remove(dir, { recursive: true });
  }
});

shared.test("sharing a file that does not exist says so", async ({ server, user }) => {
  const { alice, bob } = await pair(server, user);
  try {
    await alice.send("/s /no/such/file");
    const error = await alice.event("error");
    assert.equal(error.message, "cannot read /no/such/file: no such file");
    assert.equal(lineIndex(bob, "transfer_started", () => true), -1);
  } finally {
    await disposeAll([alice, bob]);
  }
});
