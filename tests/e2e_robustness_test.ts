/**
 * End to end with real processes: what survives a kill -9 of the server, what happens when the
 * server is away or misbehaves, and how the server copes with bytes that are not the protocol.
 * At the end, a few cases with the server in this process, whose store is made to fail or hold
 * for a moment (a network database away or slow).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Identity } from "../lib/peer/identity.ts";
import { dialPeer } from "../lib/peer/peer_link.ts";
import { ProtocolError } from "../lib/protocol/errors.ts";
import { encodeFrame } from "../lib/protocol/frame.ts";
import { encodeMessage, PROTOCOL_VERSION } from "../lib/protocol/messages.ts";
import { RawConn } from "./support/raw_conn.ts";
import { befriend, startServer, TestClient } from "./support/processes.ts";
import { generateKeyPair } from "../lib/crypto/noise.ts";
import { rawUser, signupFields } from "./support/accounts.ts";
import { inProcessServer, storeUnavailable, until } from "./support/in_process_server.ts";

const utf8 = new TextEncoder();

/** Two clients signed up, contacts of each other, both in a chat with the other. */
async function pairInChat(server: { port: number }) {
  const alice = await TestClient.start("alice", server);
  const bob = await TestClient.start("bob", server);
  await alice.signup("alice");
  await bob.signup("bob");
  await befriend(alice, bob);
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob" });
  await bob.send("chat alice");
  await bob.event("chat_opened", { with: "alice" });
  return { alice, bob };
}

/** A port nothing listens on: the OS picks a free one, and we let it go again. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

Deno.test("accounts and contacts survive a kill -9 of the server", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-srv-" });
  const aliceHome = await Deno.makeTempDir({ prefix: "confab-alice-" });
  const bobHome = await Deno.makeTempDir({ prefix: "confab-bob-" });
  try {
    {
      await using first = await startServer({ dataDir });
      await using alice = await TestClient.start("alice", first, { home: aliceHome });
      await using bob = await TestClient.start("bob", first, { home: bobHome });
      await alice.signup("alice", "alice-pw-1");
      await bob.signup("bob", "bob-pw-22");
      await alice.send("contacts add bob");
      await alice.event("contact_added", { user: "bob" });
      await bob.send("contacts add alice");
      await bob.event("contact_added", { user: "alice" });

      first.proc.kill("SIGKILL");
      const status = await first.proc.status;
      assert.equal(status.signal, "SIGKILL");
    } // both client processes end here; their homes (identity keys) stay

    await using second = await startServer({ dataDir });
    await using alice = await TestClient.start("alice", second, { home: aliceHome });
    await using bob = await TestClient.start("bob", second, { home: bobHome });
    await alice.login("alice", "alice-pw-1");
    await bob.login("bob", "bob-pw-22");

    await alice.send("contacts");
    assert.deepEqual((await alice.event("contacts")).contacts, [{ user: "bob", online: true }]);
    await bob.send("contacts");
    assert.deepEqual((await bob.event("contacts")).contacts, [{ user: "alice", online: true }]);
  } finally {
    for (const dir of [dataDir, aliceHome, bobHome]) await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a chat goes on peer to peer both ways after a kill -9 of the server", async () => {
  await using server = await startServer();
  const { alice, bob } = await pairInChat(server);
  await using _a = alice;
  await using _b = bob;

  server.proc.kill("SIGKILL");
  await server.proc.status;
  await alice.event("server_lost");
  await bob.event("server_lost");

  await alice.send("sent while the server is dead");
  const got = await bob.event("message", { from: "alice", text: "sent while the server is dead" });
  assert.equal(got.inChat, true);
  await alice.event("delivered", { to: "bob" });

  await bob.send("received without it");
  await alice.event("message", { from: "bob", text: "received without it" });
  await bob.event("delivered", { to: "alice" });
});

Deno.test("a frame header declaring more than 1 MiB gets BAD_FRAME and the connection is closed", async () => {
  await using server = await startServer();
  for (const declared of [0xFFFF_FFFF, 2 * 1024 * 1024]) {
    await using raw = await RawConn.connect(server.port);
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, declared, false);
    await raw.write(header);
    // The server's hello may come first; then the error, then the end of the stream.
    const frames = (await raw.untilEnd()).filter((f) => f.type !== "hello");
    assert.equal(frames.length, 1, JSON.stringify(frames));
    assert.equal(frames[0]!.type, "error");
    assert.equal(frames[0]!.code, "BAD_FRAME");
    assert.match(String(frames[0]!.message), new RegExp(`${declared} bytes exceeds`));
  }
});

Deno.test("an unknown message type after hello gets UNKNOWN_TYPE and the connection stays usable", async () => {
  await using server = await startServer();
  await using raw = await RawConn.connect(server.port);
  await raw.hello("client");
  await raw.secure("client-server");

  const unknown = await raw.request({ type: "frobnicate", id: 7 });
  assert.equal(unknown.type, "error");
  assert.equal(unknown.code, "UNKNOWN_TYPE");
  assert.match(String(unknown.message), /frobnicate/);

  assert.deepEqual(await raw.request({ type: "ping", id: 8 }), { type: "pong", id: 8 });
  assert.equal(raw.ended, false);
});

Deno.test("a request sent after hello but before the Noise handshake ends the connection with HANDSHAKE_FAILED", async () => {
  await using server = await startServer();
  await using raw = await RawConn.connect(server.port);
  await raw.hello("client");
  await raw.send({ type: "ping", id: 1 });
  const frames = await raw.untilEnd();
  assert.deepEqual(frames.map((f) => [f.type, f.code]), [["error", "HANDSHAKE_FAILED"]]);
  assert.match(String(frames[0]!.message), /expected a noise handshake message, got ping/);
});

Deno.test("garbage, oversize frames, bad JSON, unknown types and a silent connection do not stop the server serving others", async () => {
  await using server = await startServer();

  // A connection that never sends a byte (held open during everything below, until the
  // server's 10 s deadline for a hello, which a loaded machine may reach before the end).
  await using silent = await RawConn.connect(server.port);
  const silentSince = Date.now();

  // Not our protocol at all: read as a length of 0x47455420 bytes, far above the maximum.
  await using http = await RawConn.connect(server.port);
  await http.write(utf8.encode("GET / HTTP/1.1\r\nHost: confab\r\n\r\n"));
  await using random = await RawConn.connect(server.port);
  const noise = crypto.getRandomValues(new Uint8Array(512));
  noise[0] = 0xFF; // keep the first "length" above the maximum, so the server reads it all
  await random.write(noise);
  await using oversize = await RawConn.connect(server.port);
  await oversize.write(new Uint8Array([0xFF, 0xFF, 0xFF, 0xFF]));

  // Well-framed nonsense before and after hello; each gets an error and the link stays.
  await using nonsense = await RawConn.connect(server.port);
  const bodies: [Uint8Array, string][] = [
    [utf8.encode("{not json"), "BAD_MESSAGE"],
    [new Uint8Array([0xC3, 0x28, 0xFF]), "BAD_MESSAGE"], // not UTF-8
    [utf8.encode("[1,2,3]"), "BAD_MESSAGE"],
    [utf8.encode('{"type":42}'), "BAD_MESSAGE"],
    [utf8.encode('{"type":"launch_missiles","id":3}'), "UNKNOWN_TYPE"],
    [
      encodeMessage({ type: "login", id: 4, user: "x y", password: "", peerPort: 0 }),
      "BAD_MESSAGE",
    ],
  ];
  // The server answers a client's hello (protocol 9): before it, only these errors come.
  for (const [body, code] of bodies) {
    await nonsense.write(encodeFrame(body));
    const reply = await nonsense.next("error");
    assert.equal(reply.code, code, `${new TextDecoder().decode(body)} → ${JSON.stringify(reply)}`);
  }
  // After hello the handshake has begun: anything but a handshake message ends the link.
  await nonsense.send({ type: "hello", version: PROTOCOL_VERSION, role: "client", software: "x" });
  await nonsense.write(encodeFrame(utf8.encode("\u0000\u0001")));
  const refused = (await nonsense.untilEnd()).filter((f) => f.type === "error");
  assert.deepEqual(refused.map((f) => f.code), ["HANDSHAKE_FAILED"]);
  // Inside the encrypted channel, a well-sealed frame that holds no JSON is a bad message, not
  // a bad frame: the link stays.
  await using sealed = await RawConn.connect(server.port);
  await sealed.hello("client");
  await sealed.secure("client-server");
  await sealed.write(await sealed.frameOf(utf8.encode("{still not json")));
  assert.equal((await sealed.next("error")).code, "BAD_MESSAGE");
  await sealed.send({ type: "who_knows", id: 5 });
  assert.equal((await sealed.next("error")).code, "UNKNOWN_TYPE");

  for (const raw of [http, random, oversize]) {
    const errors = (await raw.untilEnd()).filter((f) => f.type === "error");
    assert.deepEqual(errors.map((f) => f.code), ["BAD_FRAME"]);
  }

  // Meanwhile, real users get on with it: sign up, log out and in, add a contact, chat.
  const { alice, bob } = await pairInChat(server);
  await using _a = alice;
  await using _b = bob;
  await alice.send("/q");
  await alice.event("chat_closed", { with: "bob" });
  await alice.send("out");
  await alice.event("logged_out", { user: "alice" });
  await alice.login("alice");
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob" });
  await alice.send("the server shrugged it all off");
  await bob.event("message", { from: "alice", text: "the server shrugged it all off" });
  await bob.send("indeed");
  await alice.event("message", { from: "bob", text: "indeed" });

  // The abusers that were not thrown out are still attached (the silent one until its hello
  // deadline), and the sealed one still works.
  assert.ok(!silent.ended || Date.now() - silentSince >= 10_000, "silent dropped early");
  assert.deepEqual(await sealed.request({ type: "ping", id: 9 }), { type: "pong", id: 9 });
});

/** The resident set of process `pid`, in bytes (Linux). */
function rssOf(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) * 1024;
}

Deno.test("a stranger who sends pings and never reads costs the server one pong, not one per ping", async () => {
  await using server = await startServer();
  await using raw = await RawConn.connect(server.port);
  await raw.hello("client");
  await raw.secure("client-server");
  const first = await raw.request({ type: "ping", id: 1 });
  assert.equal(first.type, "pong", "pings are answered before any login");
  raw.pauseReading();
  const before = rssOf(server.proc.pid);
  // 50,000 pings (≈ 2.3 MB). Each pong went into the write queue, and with nobody reading it
  // was never written: the server grew ≈ 87 MiB per 100,000 (20× what the stranger sent).
  const PINGS = 50_000;
  const BATCH = 2_000;
  for (let i = 0; i < PINGS; i += BATCH) {
    const frames = await Promise.all(
      Array.from({ length: BATCH }, (_, j) => raw.frame({ type: "ping", id: 2 + i + j })),
    );
    const batch = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    frames.reduce((at, f) => (batch.set(f, at), at + f.length), 0);
    await raw.write(batch);
  }
  // Once the server has read them all (its answer to a request after them shows it), its
  // memory is what it was give or take the kernel's and the collector's slack (≈ 11 MiB here,
  // the same at 200,000 pings).
  raw.resumeReading();
  const last = await raw.request({ type: "ping", id: 2 + PINGS });
  assert.deepEqual([last.type, last.id], ["pong", 2 + PINGS], "the latest ping is answered");
  const grown = rssOf(server.proc.pid) - before;
  assert.ok(grown < 28 * 1024 * 1024, `the server grew ${(grown / 1048576).toFixed(1)} MiB`);
});

Deno.test("the server answers a hello with another protocol version with VERSION_MISMATCH and hangs up", async () => {
  await using server = await startServer();
  await using raw = await RawConn.connect(server.port);
  await raw.send({ type: "hello", version: 999, role: "client", software: "x" });
  const frames = (await raw.untilEnd()).filter((f) => f.type !== "hello");
  assert.equal(frames.length, 1, JSON.stringify(frames));
  assert.equal(frames[0]!.type, "error");
  assert.equal(frames[0]!.code, "VERSION_MISMATCH");
  const message = String(frames[0]!.message);
  assert.match(message, new RegExp(`\\b${PROTOCOL_VERSION}\\b`));
  assert.match(message, /\b999\b/);
});

Deno.test("a client facing a server with another protocol version reports the mismatch and keeps running", async () => {
  const home = await Deno.makeTempDir({ prefix: "confab-alice-" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    // `in` needs the identity key a signup would have left in the home dir.
    const { identity, pkcs8 } = await Identity.generate();
    await Identity.save(join(home, "alice", "identity.json"), identity.publicKey, pkcs8);

    // A fake server that speaks version 999 to the first connection.
    const fake = (async () => {
      await using peer = new RawConn(await listener.accept());
      const theirs = await peer.next("hello");
      await peer.send({ type: "hello", version: 999, role: "server", software: "future/9" });
      return { theirs, rest: await peer.untilEnd() };
    })();
    fake.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled

    await using alice = await TestClient.start("alice", { port: listener.addr.port }, { home });
    await alice.send("in alice pw123456");
    const error = await alice.event("error");
    assert.match(String(error.message), /version mismatch/);
    assert.match(String(error.message), /\b999\b/);

    const seen = await fake;
    assert.equal(seen.theirs.version, PROTOCOL_VERSION);
    assert.deepEqual(seen.rest.map((f) => [f.type, f.code]), [["error", "VERSION_MISMATCH"]]);

    await alice.send("help");
    await alice.event("help");
    assert.ok(!alice.events().some((e) => e.type === "logged_in"));
  } finally {
    listener.close();
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("the server closes a connection that does not log in within --login-timeout with TIMEOUT", async () => {
  await using server = await startServer({ args: ["--login-timeout", "1"] });
  await using raw = await RawConn.connect(server.port);
  await raw.hello("client");
  await raw.secure("client-server");
  const started = Date.now();
  const frames = await raw.untilEnd(5_000);
  assert.deepEqual(frames.map((f) => [f.type, f.code]), [["error", "TIMEOUT"]]);
  assert.ok(Date.now() - started >= 900, "closed before the timeout");
});

Deno.test("a client that cannot reach the server says connection refused, suggests --server and keeps running", async () => {
  await using alice = await TestClient.start("alice", { port: freePort() });
  await alice.send("signup alice pw123456");
  const error = await alice.event("error");
  assert.equal(error.code, "SERVER_UNREACHABLE");
  const message = String(error.message);
  assert.match(message, /connection refused/);
  assert.match(message, /--server/);
  assert.ok(!message.includes("\n"), "one line");

  await alice.send("help");
  await alice.event("help");
});

Deno.test("connections past --max-per-address are refused with SERVER_BUSY, and others still get in", async () => {
  await using server = await startServer({ args: ["--max-per-address", "3"] });
  const held: RawConn[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const raw = await RawConn.connect(server.port);
      held.push(raw);
      await raw.hello("client");
    }
    await using fourth = await RawConn.connect(server.port);
    const refused = await fourth.untilEnd();
    assert.equal(refused[0]?.type, "error");
    assert.equal(refused[0]?.code, "SERVER_BUSY");
    assert.match(String(refused[0]?.message), /too many connections from 127\.0\.0\.1/);
    // One of the three goes away: there is room again, for a real client this time.
    await held.pop()!.close();
    await using alice = await TestClient.start("alice", server);
    await alice.signup("alice");
  } finally {
    for (const raw of held) await raw.close();
  }
});

Deno.test("a stranger's error reports are logged three times a connection, then once said to be left out", async () => {
  await using server = await startServer();
  await using raw = await RawConn.connect(server.port);
  await raw.hello("client");
  await raw.secure("client-server");
  // Before any login: each report was a line of the server's log, as many as anyone sent.
  for (let i = 0; i < 200; i++) {
    await raw.send({ type: "error", code: "FLOOD", message: `#${i} `.padEnd(400, "~") });
  }
  const seen = await raw.request({ type: "observe", id: 1 }); // after all 200 were handled
  assert.equal(seen.type, "observed");
  // Another connection's report comes after, in the log too: every line of the first is in.
  await using other = await RawConn.connect(server.port);
  await other.hello("client");
  await other.secure("client-server");
  await other.send({ type: "error", code: "MARK", message: "the last" });
  await server.proc.out.waitFor((l) => l.includes("reported: MARK"), "the second one's report");
  const lines = server.proc.out.lines;
  assert.deepEqual(
    lines.filter((l) => l.includes("reported: FLOOD")).map((l) => /#\d+/.exec(l)?.[0]),
    ["#0", "#1", "#2"],
  );
  assert.equal(lines.filter((l) => l.includes("the rest on this connection are not")).length, 1);
  assert.ok(!raw.ended, "the connection stays up");
});

// ---- the store failing or slow: a server in this process, one store method wrapped ----------

/** alice and bob, logged in over raw connections to `port`, mutual contacts. */
async function rawContacts(port: number) {
  const alice = await rawUser(port, "alice");
  const bob = await rawUser(port, "bob");
  await alice.request({ type: "contact_add", id: 10, user: "bob" });
  const accepted = await bob.request({ type: "contact_add", id: 11, user: "alice" });
  assert.equal(accepted.state, "mutual");
  return { alice, bob };
}

const toldOffline = (raw: RawConn, user: string) => () =>
  raw.frames.some((f) => f.type === "presence" && f.user === user && f.online === false);

Deno.test("a user who leaves while the database is away is taken out of the directory once it is back", async () => {
  // The store's detach fails once, as a network database restarting makes it. Nothing tried
  // again: alice stayed online in the directory for good, this instance keeping her row alive.
  await using running = await inProcessServer();
  const { server, port, log } = running;
  const { alice, bob } = await rawContacts(port);
  await using _bob = bob;
  const detachMany = server.store.detachMany.bind(server.store);
  let failures = 1;
  server.store.detachMany = (places, at) =>
    failures-- > 0 ? Promise.reject(storeUnavailable()) : detachMany(places, at);
  await alice.close();
  await until(toldOffline(bob, "alice"), "bob is told that alice went offline", 5_000);
  assert.deepEqual((await server.store.onlineUsers()).map((u) => u.user), ["bob"]);
  const found = await bob.request({ type: "lookup", id: 12, user: "alice" });
  assert.equal(found.online, false);
  assert.ok(log.includes("offline: alice"), log.join("\n"));
});

Deno.test("a resume whose client left, and whose place cannot be given back at once, gives it back later", async () => {
  // The client gives up while the store resumes its session; the server then gives the place
  // back, and that detach fails once (the database away): it is tried again, as at a logout.
  await using running = await inProcessServer();
  const { server, port } = running;
  const key = await generateKeyPair();
  let token: unknown;
  {
    await using raw = await RawConn.connect(port);
    await raw.hello("client");
    await raw.secure("client-server", key);
    assert.equal((await raw.request({ ...await signupFields("alice"), id: 1 })).type, "ok");
    const login = { type: "login", id: 2, user: "alice", password: "secret-pw", peerPort: 5555 };
    token = (await raw.request(login)).token;
  }
  await until(() => server.online().length === 0, "alice's first session ended");
  const resumeMany = server.store.resumeMany.bind(server.store);
  const reached = Promise.withResolvers<void>();
  const go = Promise.withResolvers<void>();
  server.store.resumeMany = async (resumptions, now) => {
    reached.resolve();
    await go.promise;
    return await resumeMany(resumptions, now);
  };
  const detachMany = server.store.detachMany.bind(server.store);
  let failures = 1;
  server.store.detachMany = (places, at) =>
    failures-- > 0 ? Promise.reject(storeUnavailable()) : detachMany(places, at);
  {
    await using raw = await RawConn.connect(port);
    await raw.hello("client");
    await raw.secure("client-server", key);
    await raw.send({ type: "resume", id: 3, token, peerPort: 5555 });
    await reached.promise;
  }
  await until(() => server.connectionCount === 0, "the server saw the client leave");
  go.resolve();
  await until(() => failures < 0, "the place given back, tried again", 5_000);
  const online = async () => (await server.store.onlineUsers()).map((u) => u.user);
  const deadline = Date.now() + 5_000;
  while ((await online()).length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.deepEqual(await online(), [], "alice is not left online in the directory");
});

Deno.test("a logout that fails for want of the database leaves the session in place, and the next one ends it", async () => {
  // The server let go of the session before deleting its tokens: when that failed, the user
  // stayed online for good, the tokens lived on, and the retry got NOT_LOGGED_IN.
  await using running = await inProcessServer();
  const { server, port } = running;
  const { alice, bob } = await rawContacts(port);
  await using _alice = alice;
  await using _bob = bob;
  const deleteUserSessions = server.store.deleteUserSessions.bind(server.store);
  let failures = 1;
  server.store.deleteUserSessions = (user, except) =>
    failures-- > 0 ? Promise.reject(storeUnavailable()) : deleteUserSessions(user, except);
  const refused = await alice.request({ type: "logout", id: 20 });
  assert.deepEqual([refused.type, refused.code], ["error", "SERVER_BUSY"]);
  const again = await alice.request({ type: "logout", id: 21 });
  assert.equal(again.type, "ok", JSON.stringify(again));
  await until(toldOffline(bob, "alice"), "bob is told that alice went offline");
  assert.deepEqual((await server.store.onlineUsers()).map((u) => u.user), ["bob"]);
  const afterwards = await alice.request({ type: "lookup", id: 22, user: "bob" });
  assert.equal(afterwards.code, "NOT_LOGGED_IN");
});

Deno.test("a client that pipelines mail_send faster than the store takes it has 16 handled at once, not all", async () => {
  // The store holds every message until let go (a slow database). Each mail_send read was
  // handled at once, without a bound: a client that pipelines and never reads its answers grew
  // the server's memory without end. Past 16 unanswered the connection reads no more.
  await using running = await inProcessServer();
  const { server, port } = running;
  const { alice, bob } = await rawContacts(port);
  await using _alice = alice;
  await using _bob = bob;
  const storeMail = server.store.storeMail.bind(server.store);
  const go = Promise.withResolvers<void>();
  let calls = 0;
  server.store.storeMail = async (...args) => {
    calls++;
    await go.promise;
    return await storeMail(...args);
  };
  const REQUESTS = 200; // fewer than 16 plus what a connection's inbox takes (256)
  const ts = Date.now();
  const frames = await Promise.all(
    Array.from({ length: REQUESTS }, (_, i) =>
      alice.frame({
        type: "mail_send",
        id: 100 + i,
        to: "bob",
        messages: [{ msgId: `m${i}`, ts, sealed: "A".repeat(64) }],
      })),
  );
  for (const frame of frames) await alice.write(frame);
  // Answered by the connection's reader once it has read everything before it.
  const pong = await alice.request({ type: "ping", id: 99 });
  assert.equal(pong.type, "pong");
  await until(() => calls >= 16, "the first 16 reach the store");
  await new Promise((resolve) => setTimeout(resolve, 300)); // room for more, were they taken
  assert.equal(calls, 16, `${calls} mail_send requests reached the store, none answered`);
  go.resolve();
  const answered = () => alice.frames.filter((f) => f.type === "mail_stored");
  await until(() => answered().length === REQUESTS, "every mail_send answered");
  assert.deepEqual(answered().map((f) => [f.id, f.stored]), frames.map((_, i) => [100 + i, 1]));
});

Deno.test("a client that stops reading while pushes flood to it is dropped at --max-write-queue, with a log line; the others go on", async () => {
  await using server = await startServer({
    args: ["--max-write-queue", "1M", "--max-pending", "100000", "--max-signups-per-hour", "0"],
  });
  await using bob = await rawUser(server.port, "bob");
  // Senders with the longest names, so each push bob gets (a mail_notice) is ≈ 100 bytes.
  const SENDERS = 64;
  const PER_SENDER = 1000; // each sender's share of bob's mailbox (--max-pending-per-sender)
  const senders: RawConn[] = [];
  try {
    for (let i = 0; i < SENDERS; i++) {
      const name = `s${String(i).padStart(2, "0")}`.padEnd(32, "x");
      const sender = await rawUser(server.port, name);
      senders.push(sender);
      await sender.request({ type: "contact_add", id: 10, user: "bob" });
      const added = await bob.request({ type: "contact_add", id: 10 + i, user: name });
      assert.equal(added.state, "mutual", JSON.stringify(added));
    }
    // ≈ 5 s of CPU for the server alone; longer beside the rest of the suite on two cores.
    const dropped = server.proc.out.waitFor(
      (l) => l.includes("dropped bob"),
      "bob dropped",
      60_000,
    );
    dropped.catch(() => {}); // awaited below
    // Bob stops reading; 64,000 pushes (≈ 6 MiB) come for him: the kernel's buffers take ≈ 4
    // MiB, the server's write queue the rest up to its bound of 1 MiB.
    bob.pauseReading();
    const ts = Date.now();
    let dropSeen = false;
    void dropped.then(() => dropSeen = true, () => {});
    for (let at = 0; at < PER_SENDER && !dropSeen; at += 250) {
      await Promise.all(senders.map(async (sender, i) => {
        const messages = Array.from({ length: 250 }, (_, k) => {
          const msgId = `m${i}-${at + k}`;
          return { msgId, ts, sealed: `${msgId}-`.padEnd(64, "A") };
        });
        const stored = await sender.request({
          type: "mail_send",
          id: 100 + at,
          to: "bob",
          messages,
        });
        assert.equal(stored.type, "mail_stored", JSON.stringify(stored).slice(0, 300));
      }));
    }
    const line = await dropped;
    assert.match(line, /dropped bob \(127\.0\.0\.1\): it stopped reading, 1048576 bytes/);
    // Dropped as any lost connection is: his contacts see him go offline.
    const watcher = senders[0]!;
    const deadline = Date.now() + 15_000;
    while (!watcher.frames.some((f) => f.type === "presence" && f.user === "bob" && !f.online)) {
      assert.ok(Date.now() < deadline, "bob's contacts were told he is offline");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // The others go on.
    const pong = await senders[SENDERS - 1]!.request({ type: "ping", id: 99_999 });
    assert.equal(pong.type, "pong");
    // Bob, reading again, reads what the kernel held for him, then the end of the stream.
    bob.resumeReading();
    await bob.untilEnd();
  } finally {
    for (const sender of senders) await sender.close();
  }
});

Deno.test("a link meant for the user who was here before is refused without an error for the one here now", async () => {
  // Carol logged out and dave logged in on the same client (same peer port): her group's
  // members still dial that address for carol, and must not fill dave's screen with errors.
  await using server = await startServer();
  await using dave = await TestClient.start("dave", server);
  await dave.signup("dave");
  const ready = dave.events().find((e) => e.type === "ready")!;
  const { identity } = await Identity.generate();
  const dialing = dialPeer({ host: "127.0.0.1", port: Number(ready.peerPort) }, {
    me: "alice",
    identity,
    noiseKey: await generateKeyPair(),
    user: "carol",
    publicKey: identity.publicKey,
    timeoutMs: 5000,
  });
  await assert.rejects(dialing, (e: Error) => {
    assert.ok(e instanceof ProtocolError && e.code === "AUTH_FAILED", String(e));
    assert.match(e.message, /this is dave, not carol/);
    return true;
  });
  // A round trip after the refusal: anything it said is out by then.
  await dave.send("contacts");
  await dave.event("contacts");
  const errors = dave.events().filter((e) => e.type === "error");
  assert.deepEqual(errors, []);
});
