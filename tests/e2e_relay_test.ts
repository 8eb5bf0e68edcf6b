/**
 * End-to-end tests of the paths a peer link can take, with real processes on loopback: a
 * peer that cannot be dialed (it announces a port nobody listens on, as a peer behind a NAT
 * effectively does) is reached through the server's relay, and the link then moves to a
 * hole-punched direct connection (on loopback, a simultaneous open works as through a
 * port-preserving NAT). Relay limits, `--relay off`, who may join a relay pairing, and links
 * that come back after the server restarts. Real NATs: tests/e2e_nat_test.ts.
 */
import assert from "node:assert/strict";
import { type Event, startServer, TestClient } from "./support/processes.ts";
import { type Frame, RawConn } from "./support/raw_conn.ts";
import { PROTOCOL_VERSION } from "../lib/protocol/messages.ts";
import { generateKeyPair } from "../lib/crypto/noise.ts";
import { signUpAsContacts, startCluster } from "./support/cluster.ts";

/** A port that was free a moment ago and has nobody listening: dials to it are refused. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** Two users who have added each other; `bob` cannot be dialed directly. */
async function pairBehindRelay(
  server: { port: number },
  options: { punch?: boolean } = {},
): Promise<AsyncDisposable & { alice: TestClient; bob: TestClient }> {
  const punch = ["--punch", options.punch === false ? "off" : "on"];
  const alice = await TestClient.start("alice", server, { args: punch });
  const bob = await TestClient.start("bob", server, {
    args: ["--announce-port", String(closedPort()), ...punch],
  });
  await alice.signup("alice");
  await bob.signup("bob");
  await alice.send("contacts add bob");
  await alice.event("contact_added");
  await bob.send("contacts add alice");
  await bob.event("contact_added");
  return {
    alice,
    bob,
    async [Symbol.asyncDispose]() {
      await Promise.all([alice[Symbol.asyncDispose](), bob[Symbol.asyncDispose]()]);
    },
  };
}

/** The texts of `message` events from `from`, in the order they arrived. */
function received(client: TestClient, from: string): string[] {
  return client.events()
    .filter((e) => e.type === "message" && e.from === from)
    .map((e) => String(e.text));
}

Deno.test("a peer that cannot be dialed is reached through the relay; chat both ways, every line once and in order", async () => {
  await using server = await startServer();
  // Hole punching on loopback has nothing to punch through (tests/e2e_nat_test.ts does it).
  await using pair = await pairBehindRelay(server, { punch: false });
  const { alice, bob } = pair;
  await alice.send("chat bob");
  const up = await alice.event("link_up", { user: "bob" });
  assert.equal(up.path, "relayed");
  const opened = await alice.event("chat_opened", { with: "bob" });
  assert.equal(opened.path, "relayed");
  assert.equal((await bob.event("link_up", { user: "alice" })).path, "relayed");
  await server.proc.out.waitFor((l) => /relay: alice <-> bob started/.test(l), "relay log");
  await server.proc.write("list");
  await server.proc.out.waitFor((l) => /^relay alice<->bob\*\d\d:\d\d:\d\d\*/.test(l), "list");
  const total = 40;
  for (let i = 1; i <= total; i++) await alice.send(`line ${i}`);
  for (let i = 1; i <= total; i++) await alice.event("delivered", {}, 30_000);
  await bob.event("message", { text: `line ${total}` });
  assert.deepEqual(
    received(bob, "alice"),
    Array.from({ length: total }, (_, i) => `line ${i + 1}`),
  );
  await bob.send("chat alice");
  await bob.event("chat_opened", { with: "alice", path: "relayed" });
  await bob.send("and back");
  await alice.event("message", { from: "bob", text: "and back" });
  await bob.event("delivered");
  // Logging out ends the relayed link; the server logs what it carried.
  await alice.send("/q");
  await alice.event("chat_closed");
  await alice.send("out");
  await alice.event("logged_out");
  await server.proc.out.waitFor((l) => /relay: alice <-> bob ended after/.test(l), "released");
  assert.equal(bob.events().filter((e) => e.type === "link_path").length, 0);
});

Deno.test("both dial at once and the relayed link is kept: the direct duplicate dropped is no lost path, and lines go both ways once", async () => {
  await using server = await startServer();
  await using pair = await pairBehindRelay(server, { punch: false });
  const { alice, bob } = pair;
  // bob reaches alice directly; alice's dial to bob goes through the relay and takes longer,
  // and since alice's name sorts first both ends keep it and drop bob's direct link.
  await Promise.all([alice.send("chat bob"), bob.send("chat alice")]);
  for (const [client, other] of [[alice, "bob"], [bob, "alice"]] as const) {
    const kept = await client.seenWhere(
      (e) => (e.type === "link_up" && e.path === "relayed") || e.type === "link_path",
      "the relayed link",
    );
    // Before, the dropped duplicate was reported as a move: "the direct path was lost".
    assert.equal(kept.type, "link_up", JSON.stringify(kept));
    assert.equal(kept.user, other);
    await client.event("chat_opened", { with: other });
  }
  await alice.send("to bob");
  await bob.send("to alice");
  await bob.event("message", { from: "alice", text: "to bob" });
  await alice.event("message", { from: "bob", text: "to alice" });
  // Each side's ack may come before or after the other's line: seen at any time.
  await alice.anyEvent("delivered", { to: "bob" });
  await bob.anyEvent("delivered", { to: "alice" });
  assert.deepEqual(received(bob, "alice"), ["to bob"]);
  assert.deepEqual(received(alice, "bob"), ["to alice"]);
  for (const client of [alice, bob]) {
    assert.deepEqual(client.events().filter((e) => e.type === "link_path"), []);
  }
});

Deno.test("with --relay off, messages to a peer that cannot be dialed wait on the server, and the user is told why", async () => {
  await using server = await startServer({ args: ["--relay", "off"] });
  await using pair = await pairBehindRelay(server);
  const { alice, bob } = pair;
  await alice.send("chat bob");
  const info = await alice.event("chat_opened", { with: "bob" });
  assert.equal(info.online, false);
  // The reason is shown (it may come just after the chat opened).
  await alice.proc.out.find(
    (l) => l.includes('"type":"info"') && /does not relay links/.test(l),
    "the reason",
  );
  await alice.send("via the mailbox");
  await alice.event("stored", {});
  await bob.send("show alice");
  await bob.event("message", { from: "alice", text: "via the mailbox", via: "server" });
  assert.ok(!server.proc.out.lines.some((l) => l.includes("relay: alice <-> bob started")));
});

Deno.test("relay limits: both users are told when the rate limit slows their link and when the daily limit closes it; nothing is lost", async () => {
  await using server = await startServer({
    args: ["--relay-rate", "128K", "--relay-daily", "256K"],
  });
  await using pair = await pairBehindRelay(server, { punch: false });
  const { alice, bob } = pair;
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob", path: "relayed" });
  const big = (i: number) => `${i}:` + "x".repeat(60_000);
  for (let i = 1; i <= 6; i++) await alice.send(big(i));
  for (const client of [alice, bob]) {
    await client.event("relay_notice", { limit: "rate" }, 30_000);
    await client.event("relay_notice", { limit: "daily" }, 30_000);
  }
  // Every message ends delivered directly or stored on the server, exactly once.
  const outcomes: Event[] = [];
  while (outcomes.length < 6) {
    const next = alice.events().filter((e) => e.type === "delivered" || e.type === "stored");
    if (next.length >= 6) {
      outcomes.push(...next);
      break;
    }
    await alice.event("stored", {}, 60_000).catch(() => {});
  }
  await bob.send("show alice");
  await bob.event("shown", { from: "alice" });
  const texts = received(bob, "alice");
  assert.deepEqual(
    texts.map((t) => Number(t.split(":")[0])).sort((a, b) => a - b),
    [1, 2, 3, 4, 5, 6],
  );
  assert.ok(
    server.proc.out.lines.some((l) => /relay: alice <-> bob hit the daily limit/.test(l)),
    "the server logs it",
  );
});

Deno.test("the relay's daily limit holds across a server restart (kill -9): the pair is not relayed again that day", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-relay-daily-" });
  try {
    const args = ["--relay-daily", "256K"];
    let server = await startServer({ dataDir, args });
    const port = server.port;
    await using pair = await pairBehindRelay(server, { punch: false });
    const { alice, bob } = pair;
    await alice.send("chat bob");
    await alice.event("chat_opened", { with: "bob", path: "relayed" });
    for (let i = 1; i <= 6; i++) await alice.send(`${i}:` + "x".repeat(60_000));
    await alice.event("relay_notice", { limit: "daily" }, 30_000);
    // Once the link has ended, what it carried is in the store.
    await server.proc.out.waitFor(
      (l) => /relay: alice <-> bob ended/.test(l),
      "the relayed link ended",
      30_000,
    );
    await server[Symbol.asyncDispose]();
    await alice.event("server_lost");
    server = await startServer({ dataDir, port, args });
    try {
      await alice.event("server_back", {}, 30_000);
      await bob.event("server_back", {}, 30_000);
      // bob must be back in the directory, or nothing would be relayed anyway.
      for (let i = 0;; i++) {
        await alice.send("/contacts");
        const { contacts } = await alice.event("contacts");
        if ((contacts as { online: boolean }[])[0]?.online) break;
        assert.ok(i < 30, "bob is back online for alice");
        await alice.event("presence", { user: "bob", online: true }, 1_000).catch(() => {});
      }
      const from = alice.events().length;
      const mark = alice.proc.out.lines.length;
      const after = (type: string, what: string) =>
        alice.proc.out.findFrom(mark, (l) => l.startsWith(`{"type":"${type}"`), what, 30_000);
      await alice.send("after the restart");
      // The next relayed link is refused at once with the daily notice; the line waits on
      // the server instead.
      assert.match(
        await after("relay_notice", "the daily notice after the restart"),
        /"limit":"daily"/,
      );
      await after("stored", "the line stored on the server");
      assert.ok(
        !server.proc.out.lines.some((l) => /relay: alice <-> bob started/.test(l)),
        "no relayed link after the restart",
      );
      assert.equal(
        alice.events().slice(from).filter((e) => e.type === "link_up").length,
        0,
        "no link came up",
      );
    } finally {
      await server[Symbol.asyncDispose]();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});

Deno.test("only the two peers of a relay pairing can join it, and only mutual contacts are paired", async () => {
  await using server = await startServer();
  {
    await using alice = await TestClient.start("alice", server);
    await using bob = await TestClient.start("bob", server);
    await using carol = await TestClient.start("carol", server);
    await alice.signup("alice");
    await bob.signup("bob");
    await carol.signup("carol");
    await alice.send("contacts add bob");
    await alice.event("contact_added");
    await bob.send("contacts add alice");
    await bob.event("contact_added");
    await carol.send("contacts add alice");
    await carol.event("contact_added");
    for (const c of [alice, bob, carol]) {
      await c.send("out");
      await c.event("logged_out");
    }
  }
  const keys = { alice: await generateKeyPair(), bob: await generateKeyPair() };
  const login = (user: string, key = keys[user as "alice" | "bob"]) =>
    RawConn.login(server.port, user, key);
  await using alice = await login("alice");
  await using bob = await login("bob");
  await using carol = await login("carol", await generateKeyPair());
  // carol has alice in her contacts, but alice has not added carol: no relay between them.
  const refused = await carol.request({ type: "relay_open", id: 2, user: "alice" });
  assert.equal(refused.code, "NOT_A_CONTACT", JSON.stringify(refused));
  const granted = await alice.request({ type: "relay_open", id: 2, user: "bob" });
  assert.equal(granted.type, "relay_token", JSON.stringify(granted));
  const offer = await bob.next("relay_offer");
  assert.equal(offer.from, "alice");
  assert.equal(offer.token, granted.token);
  // Someone who learned the token but is neither peer (another static key) is turned away.
  const leg = async (key = keys.alice) => {
    const raw = await RawConn.connect(server.port);
    await raw.hello("client");
    await raw.secure("client-server", key);
    return raw;
  };
  {
    await using intruder = await leg(await generateKeyPair());
    const answer = await intruder.request({ type: "relay_join", id: 3, token: granted.token });
    assert.equal(answer.code, "AUTH_FAILED", JSON.stringify(answer));
    await intruder.untilEnd();
  }
  // The two peers themselves join and are paired.
  await using aliceLeg = await leg(keys.alice);
  await using bobLeg = await leg(keys.bob);
  await aliceLeg.send({ type: "relay_join", id: 4, token: granted.token });
  await bobLeg.send({ type: "relay_join", id: 5, token: granted.token });
  assert.equal((await aliceLeg.next("relay_start")).id, 4);
  assert.equal((await bobLeg.next("relay_start")).id, 5);
  // A token is good for one pairing only.
  {
    await using late = await leg(keys.bob);
    const answer = await late.request({ type: "relay_join", id: 6, token: granted.token });
    assert.equal(answer.code, "BAD_TOKEN", JSON.stringify(answer));
  }
});

Deno.test("a relayed chat survives a server restart: the link comes back and no message is lost or repeated", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-relay-restart-" });
  try {
    let server = await startServer({ dataDir });
    const port = server.port;
    await using pair = await pairBehindRelay(server, { punch: false });
    const { alice, bob } = pair;
    await alice.send("chat bob");
    await alice.event("chat_opened", { with: "bob", path: "relayed" });
    await alice.send("before");
    await bob.event("message", { from: "alice", text: "before" });
    await server[Symbol.asyncDispose]();
    await alice.event("server_lost");
    await alice.send("during");
    server = await startServer({ dataDir, port });
    try {
      await alice.event("server_back", {}, 30_000);
      // Sent during the outage: it arrives once, directly or from the mailbox.
      const outcome = await Promise.race([
        alice.event("delivered", {}, 60_000),
        alice.event("stored", {}, 60_000),
      ]);
      if (outcome.type === "stored") {
        await bob.send("show alice");
        await bob.event("shown");
      }
      await alice.send("after");
      await bob.event("message", { from: "alice", text: "after" }, 30_000);
      assert.deepEqual(received(bob, "alice"), ["before", "during", "after"]);
      const events = alice.events();
      const lost = events.findIndex((e) => e.type === "server_lost");
      const back = events.slice(lost).filter((e) =>
        (e.type === "link_up" || e.type === "link_path") && e.path === "relayed"
      );
      assert.ok(back.length > 0, "the link came back relayed");
      assert.equal(
        events.slice(lost).filter((e) => e.type === "link_down").length,
        0,
        "nobody was told bob was gone",
      );
    } finally {
      await server[Symbol.asyncDispose]();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});

Deno.test("in a cluster, peers on two instances are relayed by the instance that paired them: the other leg joins there; chat both ways, notices reach both", async () => {
  await using cluster = await startCluster(2, ["--relay-rate", "128K"]);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  // Nobody can be dialed: every link must be relayed.
  const undialable = (server: typeof a) => ({
    args: ["--server", server.address, "--announce-port", String(closedPort()), "--punch", "off"],
  });
  await using alice = await TestClient.start("alice", a, undialable(a));
  await using bob = await TestClient.start("bob", b, undialable(b));
  await using carol = await TestClient.start("carol", b, undialable(b));
  await signUpAsContacts(alice, bob);
  await carol.signup("carol");
  for (const [x, y] of [[carol, alice], [alice, carol]] as const) {
    await x.send(`contacts add ${y.proc.name}`);
    await x.event("contact_added", { user: y.proc.name });
  }
  const started = (server: typeof a, who: string) =>
    server.proc.out.lines.filter((l) => l.includes(`relay: ${who} started`)).length;

  // alice (instance a) asks: a pairs them, and bob's leg comes to a.
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob", path: "relayed" }, 30_000);
  await a.proc.out.find((l) => l.includes("relay: alice <-> bob started"), "relay at a");
  assert.equal(started(b, "alice <-> bob"), 0, "b relays nothing for them");
  await alice.send("hello through a");
  await bob.event("message", { from: "alice", text: "hello through a" }, 30_000);
  await bob.send("chat alice");
  await bob.event("chat_opened", { with: "alice" });
  await bob.send("and back");
  await alice.event("message", { from: "bob", text: "and back" }, 30_000);
  // a's rate limit is told to both, bob through his own instance.
  for (let i = 1; i <= 4; i++) await alice.send(`${i}:` + "x".repeat(60_000));
  await alice.event("relay_notice", { limit: "rate" }, 30_000);
  await bob.event("relay_notice", { limit: "rate" }, 30_000);
  await bob.event("message", { from: "alice" }, 30_000);

  // carol (instance b) asks for alice (instance a): b pairs them, alice's leg goes to b.
  await carol.send("chat alice");
  await carol.event("chat_opened", { with: "alice", path: "relayed" }, 30_000);
  await b.proc.out.find((l) => l.includes("relay: carol <-> alice started"), "relay at b");
  assert.equal(started(a, "carol <-> alice"), 0, "a relays nothing for them");
  await alice.send("/q");
  await alice.event("chat_closed");
  await alice.send("chat carol");
  await alice.event("chat_opened", { with: "carol", path: "relayed" });
  await carol.send("hello through b");
  await alice.event("message", { from: "carol", text: "hello through b" }, 30_000);
  assert.deepEqual(received(bob, "alice").slice(0, 1), ["hello through a"]);
});

Deno.test("relay legs count toward --max-per-address for as long as their relayed link lasts", async () => {
  // Two control connections and, once relayed, two legs from 127.0.0.1: six leave room for two.
  await using server = await startServer({ args: ["--max-per-address", "6"] });
  await using pair = await pairBehindRelay(server, { punch: false });
  const { alice } = pair;
  await alice.send("chat bob");
  assert.equal((await alice.event("link_up", { user: "bob" })).path, "relayed");
  await server.proc.out.waitFor((l) => /relay: alice <-> bob started/.test(l), "relay log");
  const held: RawConn[] = [];
  try {
    let refused: Frame | undefined;
    for (let i = 0; i < 6 && !refused; i++) {
      const raw = await RawConn.connect(server.port);
      held.push(raw);
      // A refused connection gets its error at once; one let in, the server's hello.
      await raw.send({ type: "hello", version: PROTOCOL_VERSION, role: "client", software: "t" })
        .catch(() => {});
      const first = await raw.next();
      if (first.type === "error") refused = first;
    }
    // Handed over, the legs were no longer counted: four more got in (the old code).
    assert.equal(refused?.code, "SERVER_BUSY");
    assert.equal(held.length, 3, "two got in, the third was refused");
  } finally {
    for (const raw of held) await raw.close();
  }
});
