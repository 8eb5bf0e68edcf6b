/**
 * Resumption tickets (lib/server/tickets.ts) and the NNpsk0 handshake a client comes back with:
 * against a real server in this process, over real sockets. A ticket without its pre-shared key
 * is worth nothing, a ticket of another deployment is refused (and the client falls back to a
 * full handshake), and a resumed link stands for the server key the ticket came from.
 */
import assert from "node:assert/strict";
import { ConfabServer } from "../../lib/server/server.ts";
import { TICKET_LIFETIME_MS, TicketBox } from "../../lib/server/tickets.ts";
import { openServerLink, resumeSession, resumptionFrom } from "../../lib/client/server_link.ts";
import { generateKeyPair, type KeyPair } from "../../lib/crypto/noise.ts";
import type { ResumptionOffer } from "../../lib/net/secure_channel.ts";
import { ProtocolError, RemoteError } from "../../lib/protocol/errors.ts";
import type { WelcomeMessage } from "../../lib/protocol/messages.ts";
import { toBase64Url } from "../../lib/peer/identity.ts";
import { HandshakeState } from "../../lib/crypto/noise.ts";
import { resumptionPrologue } from "../../lib/net/secure_channel.ts";
import { helloFor } from "../../lib/net/hello.ts";
import type { HelloMessage } from "../../lib/protocol/messages.ts";
import { fromBase64Url } from "../../lib/util/base64.ts";
import { signupFields, TEST_PASSWORD_COST } from "../support/accounts.ts";
import { RawConn } from "../support/raw_conn.ts";

Deno.test("a ticket opens only with the box of the same server key, unchanged and in time", async () => {
  const key = await generateKeyPair();
  const box = await TicketBox.forServerKey(key);
  const again = await TicketBox.forServerKey(key); // another instance, the same key file
  const other = await TicketBox.forServerKey(await generateKeyPair());
  const now = Date.now();
  const { ticket, psk } = box.issue("alice", "client-key", now);
  const opened = again.open(ticket, now);
  assert.ok(opened);
  assert.equal(opened.user, "alice");
  assert.equal(opened.clientKey, "client-key");
  assert.equal(toBase64Url(opened.psk), psk);
  assert.equal(other.open(ticket, now), undefined);
  assert.equal(box.open(ticket, now + TICKET_LIFETIME_MS + 1), undefined);
  // One character changed anywhere: refused. The change flips the top bit of the character's six:
  // the last character of base64url may carry fewer than six bits, and always the top ones, so
  // a change in its low bits alone (A to B, say) could decode to the same bytes.
  const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (const at of [0, 5, Math.floor(ticket.length / 2), ticket.length - 1]) {
    const flippedChar = ALPHABET[ALPHABET.indexOf(ticket[at]!) ^ 32]!;
    const flipped = ticket.slice(0, at) + flippedChar + ticket.slice(at + 1);
    assert.equal(box.open(flipped, now), undefined, `changed at ${at}`);
  }
  assert.equal(box.open("", now), undefined);
  assert.equal(box.open("x".repeat(600), now), undefined);
  // Each ticket has its own key.
  assert.notEqual(box.issue("alice", "client-key", now).psk, psk);
});

/** A control connection to `server` from `clientKey`, with a resumption offer or without. */
function connect(
  server: ConfabServer,
  clientKey: KeyPair,
  resumption?: ResumptionOffer,
) {
  return openServerLink({
    host: "127.0.0.1",
    port: server.addr.port,
    staticKeyPair: clientKey,
    resumption,
  });
}

async function signupAndLogin(server: ConfabServer, user: string) {
  const clientKey = await generateKeyPair();
  const { fc, serverKey } = await connect(server, clientKey);
  fc.setHandler(() => {});
  try {
    await fc.request(await signupFields(user, "resume-pw"));
    const welcome = await fc.request<WelcomeMessage>({
      type: "login",
      user,
      password: "resume-pw",
      peerPort: 4000,
    });
    return { clientKey, welcome, serverKey };
  } finally {
    await fc.close();
  }
}

/** Runs `test` with a server of its own (in a temporary data directory, removed after). */
async function withServer(test: (server: ConfabServer) => Promise<void>): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-resumption-" });
  try {
    await using server = await ConfabServer.start({
      dataDir,
      port: 0,
      passwordCost: TEST_PASSWORD_COST,
    });
    await test(server);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
}

Deno.test("a client comes back with its ticket (NNpsk0) and resumes; a full handshake brings a new ticket", async () => {
  await withServer(async (server) => {
    const { clientKey, welcome, serverKey } = await signupAndLogin(server, "alice");
    const offer = resumptionFrom(welcome, serverKey);
    assert.ok(offer, "a welcome carries a ticket");
    let token = welcome.token;
    const link = await connect(server, clientKey, offer);
    try {
      assert.equal(link.resumed, true);
      assert.equal(link.serverKey, serverKey, "the link stands for the ticket's server key");
      link.fc.setHandler(() => {});
      const back = await resumeSession(link.fc, welcome.token, 4001);
      token = back.token;
      assert.equal(back.resumed, true);
      assert.equal(back.user, "alice");
      // A young ticket stays in use: none comes with this welcome, the client keeps its own.
      assert.equal(back.resumption, undefined);
      assert.equal(resumptionFrom(back, link.serverKey, offer), offer);
      assert.deepEqual(await link.fc.request({ type: "ping" }), { type: "pong", id: 2 });
    } finally {
      await link.fc.close();
    }
    // Resumed after a full handshake (no ticket offered): the welcome brings a new ticket.
    const full = await connect(server, clientKey);
    try {
      assert.equal(full.resumed, false);
      full.fc.setHandler(() => {});
      const back = await resumeSession(full.fc, token, 4002);
      assert.ok(back.resumption);
      assert.notEqual(back.resumption.ticket, offer.ticket);
    } finally {
      await full.fc.close();
    }
  });
});

Deno.test("a ticket without its pre-shared key gets no session; a foreign ticket falls back to a full handshake", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-resumption-" });
  const otherDir = await Deno.makeTempDir({ prefix: "confab-resumption-" });
  try {
    await using server = await ConfabServer.start({
      dataDir,
      port: 0,
      passwordCost: TEST_PASSWORD_COST,
    });
    await using other = await ConfabServer.start({
      dataDir: otherDir,
      port: 0,
      passwordCost: TEST_PASSWORD_COST,
    });
    const { clientKey, welcome, serverKey } = await signupAndLogin(server, "bob");
    const offer = resumptionFrom(welcome, serverKey)!;
    // Someone who copied the ticket (and the token) but not the key that came with it.
    const stolen = { ...offer, psk: crypto.getRandomValues(new Uint8Array(32)) };
    await assert.rejects(
      connect(server, await generateKeyPair(), stolen),
      (error) => error instanceof ProtocolError && error.code === "HANDSHAKE_FAILED",
    );
    // Offered to a server with another key: refused there (BAD_TICKET), and the link is made
    // again with a full handshake, which shows that server's own key.
    const link = await connect(other, clientKey, offer);
    try {
      assert.equal(link.resumed, false);
      assert.equal(link.serverKey, toBase64Url(other.publicKey));
      assert.notEqual(link.serverKey, serverKey);
    } finally {
      await link.fc.close();
    }
    // The real server still serves the real ticket.
    const real = await connect(server, clientKey, offer);
    assert.equal(real.resumed, true);
    await real.fc.close();
  } finally {
    await Deno.remove(dataDir, { recursive: true });
    await Deno.remove(otherDir, { recursive: true });
  }
});

Deno.test("a resumed link counts as the client key its ticket was issued to: another key's token is refused", async () => {
  await withServer(async (server) => {
    const carol = await signupAndLogin(server, "carol");
    const dave = await signupAndLogin(server, "dave");
    // Carol's ticket (and its key) with dave's token, which is bound to dave's client key.
    const link = await connect(
      server,
      carol.clientKey,
      resumptionFrom(carol.welcome, carol.serverKey),
    );
    try {
      assert.equal(link.resumed, true);
      link.fc.setHandler(() => {});
      await assert.rejects(
        resumeSession(link.fc, dave.welcome.token, 4003),
        (error) => error instanceof RemoteError && error.code === "BAD_TOKEN",
      );
    } finally {
      await link.fc.close();
    }
  });
});

/**
 * A client's hello that resumes with `offer`, made by hand: msg1 keyed by the offer's pre-shared
 * key, over a prologue of `signed` (the hello as the client means it; by default the one sent).
 */
async function resumingHello(offer: ResumptionOffer, signed: HelloMessage = helloFor("client")) {
  const hs = await HandshakeState.initialize({
    pattern: "NNpsk0",
    initiator: true,
    prologue: resumptionPrologue(signed, offer.ticket),
    psk: offer.psk,
  });
  const data = toBase64Url(await hs.writeMessage());
  return { hs, hello: { ...helloFor("client"), resume: { ticket: offer.ticket, data } } };
}

/**
 * Logs `user` in, then comes back as a client would, by hand on a raw connection: the hello
 * with msg1, the server's hello with msg2 read, the session's keys taken.
 */
async function resumeByHand(server: ConfabServer, user: string) {
  const login = await signupAndLogin(server, user);
  const raw = await RawConn.connect(server.addr.port);
  const { hs, hello } = await resumingHello(resumptionFrom(login.welcome, login.serverKey)!);
  await raw.send(hello);
  const answer = await raw.next("hello") as unknown as HelloMessage;
  assert.ok(answer.resume, "the server's hello carries msg2");
  const payload = await hs.readMessage(fromBase64Url(answer.resume.data));
  raw.adopt(hs.session());
  return { login, raw, hello, answer, payload };
}

Deno.test("a resumption takes one frame each way: the server answers the client's hello with msg2, which authenticates its own hello", async () => {
  await withServer(async (server) => {
    const { login: erin, answer, payload, ...hand } = await resumeByHand(server, "erin");
    await using raw = hand.raw;
    const { resume, ...plain } = answer;
    assert.equal(resume!.ticket, undefined);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(payload)), plain);
    // The keys work at once: resume, and the session is there.
    const welcome = await raw.request({
      type: "resume",
      id: 1,
      token: erin.welcome.token,
      peerPort: 4001,
    });
    assert.equal(welcome.type, "welcome");
    assert.equal(welcome.user, "erin");
    // The handshake was the hello each way: nothing else came before the welcome.
    assert.deepEqual(raw.frames.map((f) => f.type), ["hello", "welcome"]);
  });
});

Deno.test("a resumption whose client hello was changed on the way fails at the server", async () => {
  await withServer(async (server) => {
    const fay = await signupAndLogin(server, "fay");
    const offer = resumptionFrom(fay.welcome, fay.serverKey)!;
    await using raw = await RawConn.connect(server.addr.port);
    // msg1 made for one hello, another hello sent: its prologue is not the server's.
    const { hello } = await resumingHello(offer, { ...helloFor("client"), software: "meant/1" });
    await raw.send(hello);
    const frames = await raw.untilEnd();
    assert.deepEqual(frames.map((f) => [f.type, f.code]), [["error", "HANDSHAKE_FAILED"]]);
  });
});

Deno.test("a resumption whose server hello was changed on the way fails at the client", async () => {
  // A server of our own: it answers with msg2 authenticating one hello and sends another.
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const psk = crypto.getRandomValues(new Uint8Array(32));
  const offer = { ticket: "dGlja2V0", psk, serverKey: (await generateKeyPair()).publicKey };
  const served = (async () => {
    await using raw = new RawConn(await listener.accept());
    const theirs = await raw.next("hello") as unknown as HelloMessage;
    const hs = await HandshakeState.initialize({
      pattern: "NNpsk0",
      initiator: false,
      prologue: resumptionPrologue(theirs, theirs.resume!.ticket!),
      psk,
    });
    await hs.readMessage(fromBase64Url(theirs.resume!.data));
    const signed = { ...helloFor("server"), software: "signed/1" };
    const sorted = Object.fromEntries(Object.entries(signed).sort(([a], [b]) => a < b ? -1 : 1));
    const data = toBase64Url(
      await hs.writeMessage(new TextEncoder().encode(JSON.stringify(sorted))),
    );
    await raw.send({ ...helloFor("server"), software: "changed/1", resume: { data } });
    return (await raw.untilEnd()).map((f) => [f.type, f.code]);
  })();
  await assert.rejects(
    openServerLink({
      host: "127.0.0.1",
      port: listener.addr.port,
      staticKeyPair: await generateKeyPair(),
      resumption: offer,
    }),
    (error) =>
      error instanceof ProtocolError && error.code === "HANDSHAKE_FAILED" &&
      /changed on the way/.test(error.message),
  );
  assert.deepEqual(await served, [["error", "HANDSHAKE_FAILED"]]);
});

Deno.test("a replayed resuming hello gets an answer nobody can use: the session stays where it is", async () => {
  await withServer(async (server) => {
    const { login: gus, hello, ...hand } = await resumeByHand(server, "gus");
    await using live = hand.raw;
    // What someone on the path records: the hello and the sealed resume that follows it.
    const resume = await live.frame({
      type: "resume",
      id: 1,
      token: gus.welcome.token,
      peerPort: 1,
    });
    await live.write(resume);
    assert.equal((await live.next("welcome")).user, "gus");
    // Both replayed on a connection of their own.
    await using replay = await RawConn.connect(server.addr.port);
    await replay.send(hello);
    assert.ok((await replay.next("hello")).resume, "the server cannot tell a replay from msg1");
    await replay.write(resume);
    await replay.untilEnd();
    // The live connection still holds the session: its requests are answered.
    const list = await live.request({ type: "contacts", id: 2 });
    assert.equal(list.type, "contact_list");
    assert.deepEqual(server.online().map((u) => u.user), ["gus"]);
  });
});
