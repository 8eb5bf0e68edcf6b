/**
 * End to end with real processes: passwords never reach the disk in the clear, failed logins
 * say nothing about which part was wrong and are throttled, a peer cannot pass itself off as
 * someone else, and the plain front end reports a refused login in one line.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { generateKeyPair, HandshakeState } from "../../lib/crypto/noise.ts";
import {
  handshakeTranscript,
  Identity,
  randomToken,
  toBase64Url,
} from "../../lib/peer/identity.ts";
import { type Frame, RawConn } from "../support/raw_conn.ts";
import { signupFields } from "../support/accounts.ts";
import {
  befriend,
  containsBytes,
  type Event,
  Proc,
  readAllFiles,
  startServer,
  TestClient,
} from "../support/processes.ts";

const utf8 = new TextEncoder();

function peerPortOf(client: TestClient): number {
  const ready = client.events().find((e: Event) => e.type === "ready");
  assert.ok(ready, "the client announced its peer port");
  return Number(ready.peerPort);
}

Deno.test("the server's data files hold no plain password after signup and login", async () => {
  const password = "Unmistakable-Pa55phrase-q7Z";
  const needle = utf8.encode(password);
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await alice.signup("alice", password);
  await alice.send("out");
  await alice.event("logged_out", { user: "alice" });
  await alice.login("alice", password);

  // While the server runs, the last writes sit in the WAL: it is read too.
  await Deno.stat(join(server.dataDir, "confab-server.sqlite-wal"));
  const live = await readAllFiles(server.dataDir);
  assert.ok(live.some((bytes) => containsBytes(bytes, utf8.encode("alice"))), "search works");
  assert.ok(!live.some((bytes) => containsBytes(bytes, needle)), "password on disk (live)");

  // And once the server has shut down cleanly and folded the WAL into the database.
  assert.equal((await server.esc()).code, 0);
  const after = await readAllFiles(server.dataDir);
  assert.ok(!after.some((bytes) => containsBytes(bytes, needle)), "password on disk (after)");
  assert.ok(!server.proc.out.lines.some((l) => l.includes(password)), "password in the log");
});

Deno.test("a failed login gets the same answer for an unknown user and a wrong password, then TOO_MANY_ATTEMPTS", async () => {
  await using server = await startServer();
  await using raw = await RawConn.connect(server.port);
  await raw.hello("client");
  await raw.secure("client-server");
  const signup = await raw.request({ ...await signupFields("alice", "right-password"), id: 1 });
  assert.deepEqual(signup, { type: "ok", id: 1 });

  let id = 1;
  const login = (user: string, password: string): Promise<Frame> =>
    raw.request({ type: "login", id: ++id, user, password, peerPort: 5555 });
  const answer = ({ type, code, message }: Frame) => ({ type, code, message });
  const refused = { type: "error", code: "LOGIN_FAILED", message: "wrong username or password" };

  assert.deepEqual(answer(await login("nobody", "right-password")), refused);
  // Five failures for one name are answered normally (the throttle's free ones)...
  for (let i = 0; i < 5; i++) {
    assert.deepEqual(answer(await login("alice", `wrong-password-${i}`)), refused);
  }
  // ...then that name must wait: even the right password is not checked.
  const throttled = await login("alice", "right-password");
  assert.equal(throttled.code, "TOO_MANY_ATTEMPTS");
  assert.match(String(throttled.message), /try again in \d+ s/);
});

Deno.test("a peer link that claims to be someone else is refused and the real user still gets through", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await using bob = await TestClient.start("bob", server);
  await alice.signup("alice");
  await bob.signup("bob");
  await befriend(alice, bob);
  const bobPort = peerPortOf(bob);

  {
    // Claims to be alice, but signs the handshake with a key that is not alice's. Everything
    // else is right, down to the binding to this very encrypted channel.
    await using impostor = await RawConn.connect(bobPort);
    const hello = await impostor.hello("peer");
    assert.equal(hello.role, "peer");
    const session = await impostor.secure("peer");
    const nonce = randomToken();
    await impostor.send({ type: "auth_init", from: "alice", to: "bob", nonce });
    const reply = await impostor.next("auth_reply");
    assert.equal(reply.from, "bob");
    const { identity: otherKey } = await Identity.generate();
    const signature = await otherKey.sign(handshakeTranscript({
      signer: "initiator",
      initiator: "alice",
      responder: "bob",
      initiatorNonce: nonce,
      responderNonce: String(reply.nonce),
      channel: toBase64Url(session.handshakeHash),
    }));
    await impostor.send({ type: "auth_finish", signature });
    const rest = await impostor.untilEnd();
    assert.deepEqual(rest.map((f) => [f.type, f.code]), [["error", "AUTH_FAILED"]]);
    const error = await bob.event("error", { code: "AUTH_FAILED" });
    assert.match(String(error.message), /claimed to be alice/);
  }

  {
    // Dials bob's port asking for someone who does not live there: refused, and the dialer is
    // told. Bob is not: that is what a member with carol's old address does (she logged out,
    // bob logged in on that client), again and again, and it is no news for him.
    await using wrongDoor = await RawConn.connect(bobPort);
    await wrongDoor.hello("peer");
    await wrongDoor.secure("peer");
    await wrongDoor.send({ type: "auth_init", from: "alice", to: "carol", nonce: randomToken() });
    const rest = await wrongDoor.untilEnd();
    assert.deepEqual(rest.map((f) => [f.type, f.code]), [["error", "AUTH_FAILED"]]);
    assert.match(String(rest[0]!.message), /this is bob, not carol/);
    await bob.send("contacts");
    await bob.event("contacts");
    const errors = bob.events().filter((e) => e.type === "error");
    assert.equal(errors.length, 1, JSON.stringify(errors)); // the impostor's, above
  }

  assert.ok(!bob.events().some((e) => e.type === "link_up"), "no link for an impostor");

  // Bob is unharmed: the real alice chats with him, both ways.
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob" });
  await alice.send("it is really me");
  await bob.event("message", { from: "alice", text: "it is really me" });
  assert.ok(bob.events().some((e) => e.type === "link_up" && e.user === "alice"));
  await bob.send("chat alice");
  await bob.event("chat_opened", { with: "alice" });
  await bob.send("I believe you");
  await alice.event("message", { from: "bob", text: "I believe you" });
});

Deno.test("the plain front end reports a wrong password as one error line without a stack trace", async () => {
  await using server = await startServer();
  const home = await Deno.makeTempDir({ prefix: "confab-alice-" });
  try {
    {
      await using alice = await TestClient.start("alice", server, { home });
      await alice.signup("alice", "the-right-one");
    }
    await using plain = new Proc(
      ["run", "-A", "client.ts", "--server", server.address, "--home", home],
      "plain",
    );
    await plain.out.waitFor((l) => l.startsWith("listening for peers"), "the banner");
    await plain.write("in alice not-the-right-one");
    const line = await plain.out.waitFor((l) => l.startsWith("error: "), "an error line");
    assert.equal(line, "error: wrong username or password");
    await plain.write("quit");
    assert.equal((await plain.exited()).code, 0);
    await Promise.all([plain.out.ended, plain.err.ended]);

    const all = [...plain.out.lines, ...plain.err.lines];
    assert.equal(all.filter((l) => l.includes("error")).length, 1, all.join("\n"));
    assert.ok(!all.some((l) => l.includes("    at ")), all.join("\n"));
    assert.deepEqual(plain.err.lines, []);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("a server shutting down sends nothing in plaintext to connections still in their handshake", async () => {
  await using server = await startServer();
  // One connection stopped after the hellos, one after Noise message 2 (message 3 never sent).
  await using afterHello = await RawConn.connect(server.port);
  await afterHello.hello("client");
  await using midNoise = await RawConn.connect(server.port);
  await midNoise.hello("client");
  const hs = await HandshakeState.initialize({
    pattern: "XX",
    initiator: true,
    prologue: midNoise.prologue("client-server"),
    staticKeyPair: await generateKeyPair(),
  });
  await midNoise.send({ type: "noise", data: toBase64Url(await hs.writeMessage()) });
  await midNoise.next("noise");
  // A logged-in client beside them is told the server is going (encrypted).
  await using alice = await TestClient.start("alice", server);
  await alice.signup("alice");

  assert.equal((await server.esc()).code, 0);
  await alice.event("server_closing");
  assert.deepEqual(await afterHello.untilEnd(), [], "no frame after the hellos");
  assert.deepEqual(await midNoise.untilEnd(), [], "no frame after Noise message 2");
});
