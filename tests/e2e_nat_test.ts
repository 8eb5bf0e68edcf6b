/**
 * Relaying and hole punching through real NATs: each test builds its own lab of network
 * namespaces (tests/support/nat_lab.ts: a public segment with the server, homes behind
 * masquerading routers that drop unsolicited connections) and runs the real server and
 * clients inside it. Needs root, iproute2 and nftables (CI has them); skipped elsewhere.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { canBuildLab, type NatLab, type NatType, startNatLab } from "./support/nat_lab.ts";
import { type Event, startServer, TestClient, type TestServer } from "./support/processes.ts";
import { membersAre, meshed } from "./support/groups.ts";
import { sha256Of } from "./support/files.ts";

const ignore = !canBuildLab();

/** A lab, the server in its public segment, and one logged-in client per home. */
async function labWithUsers(options: {
  homes: NatType[];
  publicClients?: number;
  serverArgs?: string[];
  clientArgs?: string[];
  users: string[];
}): Promise<
  AsyncDisposable & { lab: NatLab; server: TestServer; clients: TestClient[] }
> {
  const lab = await startNatLab({ homes: options.homes, publicClients: options.publicClients });
  const clients: TestClient[] = [];
  let server: TestServer | undefined;
  const dispose = async () => {
    await Promise.allSettled(clients.map((c) => c[Symbol.asyncDispose]()));
    await server?.[Symbol.asyncDispose]();
    await lab[Symbol.asyncDispose]();
  };
  try {
    server = await startServer({
      netns: lab.serverNs,
      host: lab.serverHost,
      args: options.serverArgs,
    });
    const places = [...lab.homes, ...lab.publicClients];
    for (const [i, user] of options.users.entries()) {
      const client = await TestClient.start(user, { host: lab.serverHost, port: server.port }, {
        netns: places[i],
        // Files between these contacts are taken without asking (the tests are about paths).
        args: ["--auto-accept", "contacts", ...options.clientArgs ?? []],
      });
      clients.push(client);
      await client.signup(user);
    }
    // Everyone has everyone in their contacts (the relay serves mutual contacts only).
    for (const client of clients) {
      for (const other of options.users) {
        if (other === options.users[clients.indexOf(client)]) continue;
        await client.send(`contacts add ${other}`);
        await client.event("contact_added", { user: other });
      }
    }
    return { lab, server, clients, [Symbol.asyncDispose]: dispose };
  } catch (error) {
    await dispose();
    throw error;
  }
}

/** alice and bob behind port-preserving NATs, in a chat punched direct on both sides. */
async function punchedPair(): ReturnType<typeof labWithUsers> {
  const setup = await labWithUsers({ homes: ["cone", "cone"], users: ["alice", "bob"] });
  try {
    const [alice, bob] = setup.clients as [TestClient, TestClient];
    await alice.send("chat bob");
    await alice.event("chat_opened", { with: "bob" });
    await alice.event("link_path", { user: "bob", path: "direct" }, 30_000);
    await bob.event("link_path", { user: "alice", path: "direct" }, 30_000);
    return setup;
  } catch (error) {
    await setup[Symbol.asyncDispose]();
    throw error;
  }
}

/** The texts of `message` events from `from`, in the order they arrived. */
function received(client: TestClient, from: string): string[] {
  return client.events()
    .filter((e) => e.type === "message" && e.from === from)
    .map((e) => String(e.text));
}

/** An event, seen at any time before or within `ms`, that passes `test`. */
async function seen(
  client: TestClient,
  test: (e: Event) => boolean,
  what: string,
  ms = 30_000,
): Promise<Event> {
  return await client.seenWhere(test, what, ms);
}

/** Writes `size` bytes of a repeating, position-dependent pattern (cheap, not compressible). */
async function writePattern(path: string, size: number): Promise<void> {
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const block = new Uint8Array(1024 * 1024);
  for (let at = 0; at < size; at += block.length) {
    for (let i = 0; i < block.length; i += 4) {
      new DataView(block.buffer).setUint32(i, (at + i) * 2654435761 >>> 0);
    }
    let offset = 0;
    const chunk = block.subarray(0, Math.min(block.length, size - at));
    while (offset < chunk.length) offset += await file.write(chunk.subarray(offset));
  }
}

Deno.test({
  name:
    "behind port-preserving NATs: the chat starts relayed, is punched direct within seconds, a 100 MiB file arrives intact, the relay is released",
  ignore,
  async fn() {
    await using setup = await labWithUsers({ homes: ["cone", "cone"], users: ["alice", "bob"] });
    const [alice, bob] = setup.clients as [TestClient, TestClient];
    await alice.send("chat bob");
    const opened = await alice.event("chat_opened", { with: "bob" });
    assert.equal(opened.path, "relayed", "behind NATs the first path is the relay");
    await alice.send("first, relayed");
    const moved = await alice.event("link_path", { user: "bob", path: "direct" }, 30_000);
    assert.match(String(moved.address), /^203\.0\.113\.20:/, "the direct path leads to bob's NAT");
    await bob.event("link_path", { user: "alice", path: "direct" }, 30_000);
    await setup.server.proc.out.waitFor(
      (l) => /relay: alice <-> bob ended/.test(l),
      "the relay released",
      30_000,
    );
    await alice.send("second, direct");
    await bob.event("message", { from: "alice", text: "second, direct" });
    assert.deepEqual(received(bob, "alice"), ["first, relayed", "second, direct"]);
    // A big file goes over the punched path, intact.
    const path = join(alice.home, "big.bin");
    await writePattern(path, 100 * 1024 * 1024);
    const sent = await sha256Of(path);
    await alice.send(`/s ${path}`);
    const done = await bob.event("transfer_done", { direction: "in" }, 120_000);
    await alice.event("transfer_done", { direction: "out" }, 30_000);
    assert.equal(done.sha256, sent);
    assert.equal(await sha256Of(String(done.savedAs)), sent);
    const progress = bob.events().filter((e) => e.type === "transfer_progress");
    assert.ok(progress.every((e) => e.path === "direct"), "the file went directly");
    assert.ok(
      !setup.server.proc.out.lines.some((l) =>
        /relay: alice <-> bob started/.test(l) &&
        setup.server.proc.out.lines.indexOf(l) >
          setup.server.proc.out.lines.findIndex((x) => /relay: alice <-> bob ended/.test(x))
      ),
      "no relay afterwards",
    );
  },
});

Deno.test({
  name:
    "behind port-randomising NATs: everything works over the relay, punching is not tried in a loop, the relay's limits hold",
  ignore,
  async fn() {
    await using setup = await labWithUsers({
      homes: ["symmetric", "symmetric"],
      users: ["alice", "bob"],
      serverArgs: ["--relay-rate", "1M"],
    });
    const [alice, bob] = setup.clients as [TestClient, TestClient];
    await alice.send("chat bob");
    await alice.event("chat_opened", { with: "bob", path: "relayed" });
    for (let i = 1; i <= 20; i++) await alice.send(`relayed ${i}`);
    await bob.event("message", { from: "alice", text: "relayed 20" }, 30_000);
    assert.deepEqual(
      received(bob, "alice"),
      Array.from({ length: 20 }, (_, i) => `relayed ${i + 1}`),
    );
    // The symmetric NAT is found once, and nothing is tried after that.
    await alice.event("info", {}, 1).catch(() => {});
    const symmetric = (c: TestClient) =>
      c.events().filter((e) => e.type === "info" && /another port/.test(String(e.text))).length;
    const deadline = Date.now() + 20_000;
    while (symmetric(alice) === 0 && Date.now() < deadline) {
      await alice.event("info", {}, 2_000).catch(() => {});
    }
    assert.equal(symmetric(alice), 1, "alice was told once that her NAT is symmetric");
    // A 3 MiB file at 1 MiB/s: the rate limit holds, both are told, the progress says relayed.
    const path = join(alice.home, "three.bin");
    await writePattern(path, 3 * 1024 * 1024);
    const started = Date.now();
    await alice.send(`/s ${path}`);
    await bob.event("transfer_done", { direction: "in" }, 60_000);
    const seconds = (Date.now() - started) / 1000;
    assert.ok(seconds >= 1.8, `3 MiB took ${seconds.toFixed(1)} s through a 1 MiB/s relay`);
    for (const c of [alice, bob]) await c.anyEvent("relay_notice", { limit: "rate" });
    assert.ok(
      bob.events().filter((e) => e.type === "transfer_progress").every((e) => e.path === "relayed"),
    );
    assert.equal(alice.events().filter((e) => e.type === "link_path").length, 0);
    assert.equal(symmetric(alice), 1, "still no new attempt");
    assert.equal(symmetric(bob), 0);
  },
});

Deno.test({
  name:
    "a punched direct link that dies while both stay online falls back to the relay; no message is lost or repeated",
  ignore,
  async fn() {
    await using setup = await punchedPair();
    const [alice, bob] = setup.clients as [TestClient, TestClient];
    await alice.send("before the cut");
    await bob.event("message", { text: "before the cut" });
    // The homes can no longer reach each other; both still reach the server.
    const undo = await setup.lab.cutBetweenHomes(0, 1);
    try {
      for (let i = 1; i <= 5; i++) await alice.send(`during ${i}`);
      const back = await alice.event("link_path", { user: "bob", path: "relayed" }, 30_000);
      assert.match(String(back.reason), /direct path/);
      await bob.event("message", { from: "alice", text: "during 5" }, 60_000);
      await alice.send("after the move");
      await bob.event("message", { from: "alice", text: "after the move" });
      assert.deepEqual(received(bob, "alice"), [
        "before the cut",
        "during 1",
        "during 2",
        "during 3",
        "during 4",
        "during 5",
        "after the move",
      ]);
      assert.equal(alice.events().filter((e) => e.type === "link_down").length, 0);
    } finally {
      await undo();
    }
  },
});

Deno.test({
  name:
    "a file transfer running while the punched direct path dies goes on over the relay by itself; the file arrives byte-identical, nothing fails",
  ignore,
  async fn() {
    await using setup = await punchedPair();
    const [alice, bob] = setup.clients as [TestClient, TestClient];
    // A slow uplink at alice's (4 MB/s, on every path), so the file is surely under way when
    // the direct path dies.
    await setup.lab.limitUplink(0, 32);
    const size = 24 * 1024 * 1024;
    const path = join(alice.home, "moving.bin");
    await writePattern(path, size);
    const want = await sha256Of(path);
    await alice.send(`/s ${path}`);
    const before = await bob.event("transfer_progress", { direction: "in" }, 30_000);
    assert.equal(before.path, "direct");
    await seen(
      bob,
      (e) => e.type === "transfer_progress" && Number(e.bytes) >= 2 * 1024 * 1024,
      "2 MiB received",
    );
    const undo = await setup.lab.cutBetweenHomes(0, 1);
    try {
      const moved = await alice.event("link_path", { user: "bob", path: "relayed" }, 30_000);
      assert.match(String(moved.reason), /direct path/);
      const resumed = await seen(
        bob,
        (e) => e.type === "info" && /goes on from byte/.test(String(e.text)),
        "the transfer going on",
      );
      const from = Number(/from byte (\d+)/.exec(String(resumed.text))![1]);
      assert.ok(from >= 2 * 1024 * 1024 && from < size, `went on from byte ${from}`);
      const done = await bob.event("transfer_done", { direction: "in" }, 120_000);
      const sent = await alice.event("transfer_done", { direction: "out" }, 30_000);
      assert.equal(done.sha256, want);
      assert.equal(await sha256Of(String(done.savedAs)), want, "the saved file is byte-identical");
      assert.equal(done.resumedFrom, 0);
      assert.equal(sent.resumedFrom, 0);
      assert.equal(done.fid, sent.fid, "one transfer, not a new one");
      for (const c of [alice, bob]) {
        assert.equal(c.events().filter((e) => e.type === "transfer_failed").length, 0);
        assert.equal(c.events().filter((e) => e.type === "transfer_started").length, 1);
      }
      const paths = bob.events().filter((e) => e.type === "transfer_progress").map((e) => e.path);
      assert.equal(paths.at(-1), "relayed", "the rest came through the relay");
      assert.deepEqual([...Deno.readDirSync(join(bob.home, "bob", "partial"))], []);
      // One line for the file in each history, as for any transfer.
      await alice.send("still chatting");
      await bob.event("message", { from: "alice", text: "still chatting" });
    } finally {
      await undo();
    }
  },
});

Deno.test({
  name:
    "a group of three, two behind NATs and one public: every member gets every message once; a killed relayed member is noticed at once",
  ignore,
  async fn() {
    await using setup = await labWithUsers({
      homes: ["symmetric", "symmetric"],
      publicClients: 1,
      users: ["alice", "bob", "carol"],
    });
    const [alice, bob, carol] = setup.clients as [TestClient, TestClient, TestClient];
    await alice.send("chat bob");
    await alice.event("chat_opened", { with: "bob", path: "relayed" });
    await alice.send("/a carol");
    const group = String((await alice.event("group_opened")).group);
    const users = ["alice", "bob", "carol"];
    for (const c of setup.clients) await membersAre(c, group, users);
    await meshed(setup.clients);
    // Every member writes; everyone else gets each line exactly once.
    for (const [i, c] of setup.clients.entries()) await c.send(`hello from ${users[i]}`);
    for (const [i, c] of setup.clients.entries()) {
      for (const [j, from] of users.entries()) {
        if (i === j) continue;
        await c.anyEvent("message", { from, text: `hello from ${from}`, group }, 30_000);
      }
    }
    for (const [i, c] of setup.clients.entries()) {
      for (const [j, from] of users.entries()) {
        if (i === j) continue;
        const copies = c.events().filter((e: Event) =>
          e.type === "message" && e.from === from && e.text === `hello from ${from}`
        );
        assert.equal(copies.length, 1, `${users[i]} got ${from}'s line once`);
      }
    }
    // alice and bob are relayed (both NATs are symmetric); killing bob is noticed at once, as
    // on a direct link: his relay leg ends with his process.
    const relayed = alice.events().find((e) => e.type === "link_up" && e.user === "bob");
    assert.equal(relayed?.path, "relayed");
    const killed = Date.now();
    bob.proc.kill("SIGKILL");
    for (const c of [alice, carol]) {
      const e = await c.event("group_presence", { group, user: "bob", here: false }, 10_000);
      // From the closed link (leg), not after it went silent for the peer timeout.
      const ms = Number(e.time) - killed;
      assert.doesNotMatch(
        String(e.reason),
        /^no answer for/,
        `${c.proc.name} was told bob is away after ${ms} ms`,
      );
    }
    await alice.send("still here");
    await carol.event("message", { from: "alice", text: "still here", group });
  },
});

Deno.test({
  name:
    "behind NATs, the server restarting under a relayed chat: the link comes back and no message is lost or repeated",
  ignore,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "confab-nat-restart-" });
    try {
      await using setup = await labWithUsers({
        homes: ["symmetric", "symmetric"],
        users: ["alice", "bob"],
        serverArgs: ["--data", dataDir],
      });
      const [alice, bob] = setup.clients as [TestClient, TestClient];
      await alice.send("chat bob");
      await alice.event("chat_opened", { with: "bob", path: "relayed" });
      await alice.send("before");
      await bob.event("message", { from: "alice", text: "before" });
      const port = setup.server.port;
      await setup.server.proc[Symbol.asyncDispose]();
      await alice.event("server_lost");
      await alice.send("during");
      await using again = await startServer({
        netns: setup.lab.serverNs,
        host: setup.lab.serverHost,
        port,
        dataDir,
      });
      await alice.event("server_back", {}, 30_000);
      const outcome = await Promise.race([
        alice.anyEvent("delivered", {}, 60_000),
        alice.anyEvent("stored", {}, 60_000),
      ]);
      if (outcome.type === "stored") {
        await bob.send("show alice");
        await bob.anyEvent("shown", {}, 30_000);
      }
      await alice.send("after");
      await bob.anyEvent("message", { from: "alice", text: "after" }, 60_000);
      assert.deepEqual(received(bob, "alice"), ["before", "during", "after"]);
      assert.ok(
        again.proc.out.lines.some((l) => /relay: alice <-> bob started/.test(l)),
        "the link came back through the restarted server's relay",
      );
    } finally {
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});
