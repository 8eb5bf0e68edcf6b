/**
 * Encryption end to end, with real processes and sockets: what an eavesdropper on every link
 * sees (nothing readable), what the server keeps on disk (sealed mail only), what happens to
 * tampered, replayed and truncated frames (the connection ends, the program goes on), and how
 * a changed server key or a changed identity key in the directory is caught.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { encodeFrame } from "../lib/protocol/frame.ts";
import { encodeMessage } from "../lib/protocol/messages.ts";
import { generateKeyPair, HandshakeState } from "../lib/crypto/noise.ts";
import { closeFrame } from "../lib/net/sealed_frames.ts";
import { fromBase64Url, Identity, randomToken, toBase64Url } from "../lib/peer/identity.ts";
import { RecordingProxy } from "./support/proxy.ts";
import { RawConn } from "./support/raw_conn.ts";
import {
  befriend,
  containsBytes,
  type Event,
  readAllFiles,
  startServer,
  TestClient,
  type TestServer,
} from "./support/processes.ts";
import { sharedServer } from "./support/shared_server.ts";

const encoder = new TextEncoder();
const SAFETY_NUMBER = /^\d{5}( \d{5}){11}$/;

/** The peer port a client listens on, from its `ready` event. */
function listeningPort(client: TestClient): number {
  const ready = client.events().find((e) => e.type === "ready");
  assert.ok(ready, "the client said it is ready");
  return Number(ready.peerPort);
}

/** Fails unless the server process is still running. */
async function assertRunning(server: TestServer): Promise<void> {
  const state = await Promise.race([
    server.proc.status.then(() => "exited"),
    Promise.resolve("up"),
  ]);
  assert.equal(state, "up", "the server process is still running");
}

Deno.test("an eavesdropper on the client-server and peer links sees no password and no message text", async () => {
  const passwords = { alice: "PASSWORD-CANARY-alice", bob: "PASSWORD-CANARY-bob" };
  const texts = [
    "PLAINTEXT-CANARY-1 from alice, direct",
    "PLAINTEXT-CANARY-2 from bob, direct",
    "PLAINTEXT-CANARY-3 from alice, offline mail",
  ] as const;
  const bobHome = await Deno.makeTempDir({ prefix: "confab-bob-" });
  try {
    await using server = await startServer();
    await using aliceWire = new RecordingProxy(server.port);
    await using bobWire = new RecordingProxy(server.port);
    // Bob's peer listener sits behind a proxy: the directory hands out the proxy's port.
    await using bobPeerWire = new RecordingProxy();
    const startBob = async () => {
      const bob = await TestClient.start("bob", { port: bobWire.port }, {
        home: bobHome,
        args: ["--announce-port", String(bobPeerWire.port)],
      });
      bobPeerWire.target = listeningPort(bob);
      return bob;
    };

    await using alice = await TestClient.start("alice", { port: aliceWire.port });
    const bob = await startBob();
    try {
      await alice.signup("alice", passwords.alice);
      await bob.signup("bob", passwords.bob);
      await befriend(alice, bob);

      await alice.send("chat bob");
      const opened = await alice.event("chat_opened", { with: "bob" });
      assert.equal(opened.online, true);
      assert.equal(opened.address, `127.0.0.1:${bobPeerWire.port}`, "alice dialed the proxy");
      await bob.event("link_up", { user: "alice", outbound: false });
      await bob.send("chat alice");
      await bob.event("chat_opened", { with: "alice" });

      await alice.send(texts[0]);
      await bob.event("message", { from: "alice", text: texts[0], via: "direct" });
      await alice.event("delivered", { to: "bob" });
      await bob.send(texts[1]);
      await alice.event("message", { from: "bob", text: texts[1], via: "direct" });
      await bob.event("delivered", { to: "alice" });
      await alice.send("/q");
      await alice.event("chat_closed", { with: "bob" });
    } finally {
      await bob[Symbol.asyncDispose]();
    }
    await alice.event("presence", { user: "bob", online: false });

    // Bob is away: the message waits on the server, sealed.
    await alice.send("chat bob");
    const away = await alice.event("chat_opened", { with: "bob" });
    assert.equal(away.online, false);
    await alice.send(texts[2]);
    await alice.event("stored", { to: "bob" });

    await using bobAgain = await startBob();
    await bobAgain.login("bob", passwords.bob);
    await bobAgain.event("mail_summary");
    await bobAgain.send("show alice");
    await bobAgain.event("message", { from: "alice", text: texts[2], via: "server" });
    await bobAgain.event("shown", { from: "alice", count: 1 });
    await alice.event("read", { by: "bob" });

    const wires = { aliceWire, bobWire, bobPeerWire };
    const secrets = [...Object.values(passwords), ...texts, "PLAINTEXT-CANARY"];
    for (const [name, wire] of Object.entries(wires)) {
      const counts = wire.byteCounts;
      assert.ok(counts.up > 0 && counts.down > 0, `${name} carried traffic both ways`);
      const streams = wire.streams();
      // The search itself works: the hello that opens every connection is in the clear.
      assert.ok(
        streams.some((s) => containsBytes(s, encoder.encode('"type":"hello"'))),
        `${name} recorded the plain hello`,
      );
      for (const secret of secrets) {
        assert.ok(
          !streams.some((s) => containsBytes(s, encoder.encode(secret))),
          `${name} saw "${secret}" in the clear`,
        );
      }
    }
    assert.ok(bobPeerWire.connections.length >= 1, "the chat went through bob's peer proxy");
  } finally {
    await Deno.remove(bobHome, { recursive: true });
  }
});

Deno.test("the server's data files hold offline messages only sealed", async () => {
  const secret = "PLAINTEXT-CANARY-on-disk";
  await using server = await startServer();
  const bobHome = await Deno.makeTempDir({ prefix: "confab-bob-" });
  try {
    await using alice = await TestClient.start("alice", server);
    {
      await using bob = await TestClient.start("bob", server, { home: bobHome });
      await alice.signup("alice");
      await bob.signup("bob");
      await befriend(alice, bob);
    }
    await alice.event("presence", { user: "bob", online: false });
    await alice.send("chat bob");
    await alice.event("chat_opened", { with: "bob", online: false });
    await alice.send(secret);
    await alice.event("stored", { to: "bob" });

    const files = await readAllFiles(server.dataDir);
    assert.ok(files.length > 0);
    for (const file of files) assert.ok(!containsBytes(file, encoder.encode(secret)));
    assert.ok(!server.proc.out.lines.some((l) => l.includes(secret)), "not in the server log");

    // It is there all the same, for bob alone.
    await using bob = await TestClient.start("bob", server, { home: bobHome });
    await bob.login("bob");
    await bob.send("show alice");
    await bob.event("message", { from: "alice", text: secret, via: "server" });
  } finally {
    await Deno.remove(bobHome, { recursive: true });
  }
});

/** A way to break a secure connection's frame stream, after a ping with id 1 was answered. */
type Tamper = (raw: RawConn) => Promise<void>;

const SERVER_TAMPERING: [string, Tamper][] = [
  ["a flipped bit in the ciphertext", async (raw) => {
    const frame = await raw.frame({ type: "ping", id: 2 });
    frame[6] = frame[6]! ^ 0x10;
    await raw.write(frame);
  }],
  ["a replayed frame", async (raw) => {
    const frame = await raw.frame({ type: "ping", id: 2 });
    await raw.write(frame);
    assert.equal((await raw.next("pong")).id, 2);
    await raw.write(frame);
  }],
  ["a frame cut short under a consistent length header", async (raw) => {
    const frame = await raw.frame({ type: "ping", id: 2 });
    await raw.write(encodeFrame(frame.subarray(4, frame.length - 5)));
  }],
  ["a frame cut short before the end of the stream", async (raw) => {
    const frame = await raw.frame({ type: "ping", id: 2 });
    await raw.write(frame.subarray(0, frame.length - 5));
    await raw.conn.closeWrite();
  }],
];

/**
 * The scenarios whose server only has to keep serving: they share one, each with users of its
 * own (the tampering ones use raw connections, no user). A crash would fail every step after.
 */
const shared = sharedServer("encryption: scenarios on one server");

shared.test("the server ends a secure connection on a tampered, replayed or truncated frame, and serves on", async ({ server, user }) => {
  for (const [what, tamper] of SERVER_TAMPERING) {
    await using raw = await RawConn.connect(server.port);
    await raw.hello("client");
    await raw.secure("client-server");
    const pong = await raw.request({ type: "ping", id: 1 });
    assert.equal(pong.type, "pong", `the secure channel works before ${what}`);
    await tamper(raw);
    const rest = await raw.untilEnd();
    assert.ok(
      rest.every((f) => f.type === "error" && f.code === "BAD_FRAME"),
      `${what}: only a BAD_FRAME error before the end, got ${JSON.stringify(rest)}`,
    );
    await assertRunning(server);
  }
  const C = user("carol");
  await using carol = await TestClient.start(C, server);
  await carol.signup(C);
  await carol.send("out");
  await carol.event("logged_out", { user: C });
  await carol.login(C);
});

shared.test("a tampered frame that arrives with the last handshake message ends that connection, not the server", async ({ server }) => {
  {
    await using raw = await RawConn.connect(server.port);
    await raw.hello("client");
    // The handshake by hand, so the last message and a forged frame leave in one write: the
    // server holds the frame while it finishes the handshake, then decrypts it.
    const hs = await HandshakeState.initialize({
      pattern: "XX",
      initiator: true,
      prologue: raw.prologue("client-server"),
      staticKeyPair: await generateKeyPair(),
    });
    await raw.send({ type: "noise", data: toBase64Url(await hs.writeMessage()) });
    await hs.readMessage(fromBase64Url(String((await raw.next("noise")).data)));
    const last = encodeFrame(
      encodeMessage({ type: "noise", data: toBase64Url(await hs.writeMessage()) }),
    );
    const forged = encodeFrame(
      await closeFrame(hs.session().send, encodeMessage({ type: "ping", id: 1 })),
    );
    forged[8] = forged[8]! ^ 0x01;
    const both = new Uint8Array(last.length + forged.length);
    both.set(last);
    both.set(forged, last.length);
    await raw.write(both);
    await raw.untilEnd();
  }
  // Still serving: a new connection is answered.
  await using again = await RawConn.connect(server.port);
  await again.hello("client");
  await again.secure("client-server");
  assert.equal((await again.request({ type: "ping", id: 2 })).type, "pong");
  await assertRunning(server);
});

shared.test("a client's peer listener ends a link on a tampered or replayed frame, and chats on", async ({ server, user }) => {
  const [A, B] = [user("alice"), user("bob")];
  await using alice = await TestClient.start(A, server);
  await using bob = await TestClient.start(B, server);
  await alice.signup(A);
  await bob.signup(B);
  await befriend(alice, bob);

  const peerTampering: [string, (raw: RawConn, init: Uint8Array) => Promise<void>][] = [
    ["a flipped bit in the ciphertext", async (raw) => {
      const frame = await raw.frame({ type: "auth_finish", signature: "A".repeat(86) });
      frame[frame.length - 3] = frame[frame.length - 3]! ^ 0x01;
      await raw.write(frame);
    }],
    ["a replayed frame", async (raw, init) => {
      await raw.write(init);
    }],
  ];
  for (const [what, tamper] of peerTampering) {
    await using raw = await RawConn.connect(listeningPort(bob));
    await raw.hello("peer");
    await raw.secure("peer");
    const init = await raw.frame({
      type: "auth_init",
      from: A,
      to: B,
      nonce: randomToken(),
    });
    await raw.write(init);
    // Bob answers inside the encrypted channel: it works.
    const reply = await raw.next("auth_reply");
    assert.equal(reply.from, B);
    await tamper(raw, init);
    await raw.untilEnd();
    assert.ok(raw.ended, `${what}: the link was ended`);
  }

  await alice.send(`chat ${B}`);
  await alice.event("chat_opened", { with: B, online: true });
  await bob.send(`chat ${A}`);
  await bob.event("chat_opened", { with: A });
  await alice.send("still talking after the attack");
  await bob.event("message", { from: A, text: "still talking after the attack" });
  await bob.send("loud and clear");
  await alice.event("message", { from: B, text: "loud and clear" });
});

Deno.test("a server with another key is refused as SERVER_KEY_CHANGED until --accept-server-key <its fingerprint>", async () => {
  const home = await Deno.makeTempDir({ prefix: "confab-alice-" });
  try {
    let port: number;
    {
      await using first = await startServer();
      port = first.port;
      await using alice = await TestClient.start("alice", first, { home });
      await alice.signup("alice");
      await alice.proc.out.find((l) => l.includes("pinned its key"), "the first pin");
    }
    // Same address, another data dir: a new server key, as a man in the middle would have.
    await using second = await startServer({ port });
    const banner = await second.proc.out.find(
      (l) => l.startsWith("server key fingerprint: "),
      "the key fingerprint",
    );
    const fingerprint = banner.slice("server key fingerprint: ".length);
    {
      await using alice = await TestClient.start("alice", second, { home });
      await alice.send("in alice secret-pw");
      const refused = await alice.event("error");
      assert.equal(refused.code, "SERVER_KEY_CHANGED");
      assert.ok(String(refused.message).includes(fingerprint), String(refused.message));
      assert.match(String(refused.message), /--accept-server-key/);
      assert.ok(!second.proc.out.lines.some((l) => l.includes("login: ")));
    }
    {
      await using alice = await TestClient.start("alice", second, {
        home,
        args: ["--accept-server-key", fingerprint],
      });
      await alice.send("in alice secret-pw");
      const failed = await alice.event("error");
      assert.equal(failed.code, "LOGIN_FAILED", "connected: the account just is not there");
    }
    {
      // The new key is pinned now: no flag needed any more.
      await using dave = await TestClient.start("dave", second, { home });
      await dave.signup("dave");
    }
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("a logged-in client whose server comes back with another key says SERVER_KEY_CHANGED", async () => {
  const first = await startServer();
  const port = first.port;
  try {
    await using alice = await TestClient.start("alice", first);
    await alice.signup("alice");
    assert.equal((await first.esc()).code, 0);
    await first[Symbol.asyncDispose]();
    await alice.event("server_lost");

    await using second = await startServer({ port });
    // The client tries to re-attach on its own: the warning must reach the user then, not
    // only when they next type a command.
    const refused = await alice.event("error");
    assert.equal(refused.code, "SERVER_KEY_CHANGED");
    assert.match(String(refused.message), /--accept-server-key/);
    assert.ok(!second.proc.out.lines.some((l) => l.includes("resume: ")), "no resume");
    // And so it is for the next command.
    await alice.send("contacts");
    assert.equal((await alice.event("error")).code, "SERVER_KEY_CHANGED");
  } finally {
    await first[Symbol.asyncDispose]();
  }
});

shared.test("both sides of a pair see the same 60-digit safety number", async ({ server, user }) => {
  const [A, B] = [user("alice"), user("bob")];
  await using alice = await TestClient.start(A, server);
  await using bob = await TestClient.start(B, server);
  await alice.signup(A);
  await bob.signup(B);
  await befriend(alice, bob);
  await alice.send(`fingerprint ${B}`);
  const seenByAlice = await alice.event("fingerprint", { with: B });
  await bob.send(`fingerprint ${A}`);
  const seenByBob = await bob.event("fingerprint", { with: A });
  assert.match(String(seenByAlice.number), SAFETY_NUMBER);
  assert.equal(seenByAlice.number, seenByBob.number);
  assert.equal(seenByAlice.changed, false);
  await alice.send("fingerprint");
  const own = await alice.event("fingerprint", { user: A });
  assert.match(String(own.number), /^\d{5}( \d{5}){5}$/);
});

Deno.test("a changed identity key in the directory is refused until trust, and a fake key cannot link", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-srv-" });
  const homes = {
    alice: await Deno.makeTempDir({ prefix: "confab-alice-" }),
    bob: await Deno.makeTempDir({ prefix: "confab-bob-" }),
  };
  try {
    let port: number;
    let before: Event;
    {
      await using first = await startServer({ dataDir });
      port = first.port;
      await using alice = await TestClient.start("alice", first, { home: homes.alice });
      await using bob = await TestClient.start("bob", first, { home: homes.bob });
      await alice.signup("alice");
      await bob.signup("bob");
      await befriend(alice, bob);
      // The first chat pins bob's key on alice's side.
      await alice.send("chat bob");
      await alice.event("chat_opened", { with: "bob", online: true });
      await alice.send("/q");
      await alice.event("chat_closed");
      await alice.send("fingerprint bob");
      before = await alice.event("fingerprint", { with: "bob" });
      await alice[Symbol.asyncDispose]();
      await bob[Symbol.asyncDispose]();
      assert.equal((await first.esc()).code, 0);
    }

    // The directory now vouches for a key bob never had (a hostile or broken server).
    const { identity: fake } = await Identity.generate();
    {
      using db = new DatabaseSync(join(dataDir, "confab-server.sqlite"));
      const changed = db.prepare("UPDATE users SET public_key = ? WHERE name_key = 'bob'")
        .run(fake.publicKey);
      assert.equal(changed.changes, 1);
    }

    await using second = await startServer({ dataDir, port });
    await using alice = await TestClient.start("alice", second, { home: homes.alice });
    await using bob = await TestClient.start("bob", second, { home: homes.bob });
    await alice.login("alice");
    await bob.login("bob");

    await alice.send("chat bob");
    await alice.event("key_changed", { user: "bob" });
    const refused = await alice.event("error");
    assert.equal(refused.code, "KEY_CHANGED");
    assert.match(String(refused.message), /trust bob/);

    await alice.send("fingerprint bob");
    const after = await alice.event("fingerprint", { with: "bob" });
    assert.equal(after.changed, true);
    assert.notEqual(after.number, before.number);
    assert.match(String(after.number), SAFETY_NUMBER);

    await alice.send("trust bob");
    const trusted = await alice.event("key_trusted", { user: "bob" });
    assert.equal(trusted.safetyNumber, after.number);

    // Trusted or not, the real bob cannot sign with the fake key: no link.
    await alice.send("chat bob");
    const failed = await alice.event("error");
    assert.equal(failed.code, "AUTH_FAILED", String(failed.message));
    assert.ok(!alice.events().some((e) => e.type === "link_up"), "no link was made");
  } finally {
    for (const dir of [dataDir, ...Object.values(homes)]) {
      await Deno.remove(dir, { recursive: true });
    }
  }
});
