/**
 * Integration tests for lib/peer/peer_link.ts over real loopback TCP: `dialPeer()` against
 * `acceptPeer()`, with real Ed25519 identities. A link only comes up when each side proves it
 * holds the key the directory gives for the name it claims.
 */
import assert from "node:assert/strict";
import { FramedConnection } from "../../lib/net/framed_connection.ts";
import { openSecureChannel } from "../../lib/net/secure_channel.ts";
import { generateKeyPair } from "../../lib/crypto/noise.ts";
import {
  handshakeTranscript,
  randomToken,
  toBase64Url,
  verifySignature,
} from "../../lib/peer/identity.ts";
import { acceptPeer, dialPeer, type PeerLink } from "../../lib/peer/peer_link.ts";
import { ConnectionClosedError, ProtocolError, RemoteError } from "../../lib/protocol/errors.ts";
import { type PeerMessage, PeerToPeer } from "../../lib/protocol/messages.ts";
import { testDirectory, within } from "../support/peer_fixtures.ts";

const LOOPBACK = "127.0.0.1";
const TIMEOUT_MS = 2000;

const { identities: { alice, bob, mallory }, resolveKey } = await testDirectory(
  "alice",
  "bob",
  "mallory",
);
/** Static keys of the Noise handshake that encrypts each link (one per process in the app). */
const aliceNoise = await generateKeyPair();
const bobNoise = await generateKeyPair();
const malloryNoise = await generateKeyPair();

/** The outcome of a promise, as a value: the result or the error. */
function settle<T>(promise: Promise<T>): Promise<{ ok: T } | { error: unknown }> {
  return promise.then((ok) => ({ ok }), (error) => ({ error }));
}

/**
 * A peer port that accepts one connection and authenticates it with acceptPeer(); the
 * listener and any link that came up are closed on dispose.
 */
function listenPeer(
  options: Partial<Parameters<typeof acceptPeer>[1]> = {},
): AsyncDisposable & { port: number; accepted: Promise<PeerLink> } {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  const accepted = listener.accept().then((conn) =>
    acceptPeer(conn, {
      me: "bob",
      identity: bob,
      noiseKey: bobNoise,
      resolveKey,
      timeoutMs: TIMEOUT_MS,
      ...options,
    })
  );
  const settled = accepted.catch(() => undefined);
  return {
    port: listener.addr.port,
    accepted,
    async [Symbol.asyncDispose]() {
      listener.close();
      await (await settled)?.fc.close();
    },
  };
}

function dial(
  port: number,
  options: Partial<Parameters<typeof dialPeer>[1]> = {},
): Promise<PeerLink> {
  return dialPeer({ host: LOOPBACK, port }, {
    me: "alice",
    identity: alice,
    noiseKey: aliceNoise,
    user: "bob",
    publicKey: bob.publicKey,
    timeoutMs: TIMEOUT_MS,
    ...options,
  });
}

/** Asserts `outcome` is a ProtocolError with `code`, and returns it. */
function assertProtocolError(
  outcome: { ok: unknown } | { error: unknown },
  code: string,
): ProtocolError {
  assert.ok("error" in outcome, "expected a failure, got a link");
  const error = outcome.error;
  assert.ok(error instanceof ProtocolError, String(error));
  assert.equal(error.code, code, error.message);
  return error;
}

// ---- success -------------------------------------------------------------------------------

Deno.test("dialPeer() and acceptPeer() authenticate both ways and leave usable links", async () => {
  await using peer = listenPeer();
  const out = await within(dial(peer.port));
  try {
    const inbound = await within(peer.accepted);
    assert.deepEqual(
      { user: out.user, initiator: out.initiator, outbound: out.outbound },
      { user: "bob", initiator: "alice", outbound: true },
    );
    assert.deepEqual(
      { user: inbound.user, initiator: inbound.initiator, outbound: inbound.outbound },
      { user: "alice", initiator: "alice", outbound: false },
    );

    const message: PeerMessage = { type: "msg", id: "m-1", seq: 1, ts: Date.now(), text: "hi" };
    await out.fc.send(message);
    assert.deepEqual(await within(inbound.fc.next(TIMEOUT_MS)), message);
    await inbound.fc.send({ type: "ack", id: "m-1" });
    assert.deepEqual(await within(out.fc.next(TIMEOUT_MS)), { type: "ack", id: "m-1" });
  } finally {
    await out.fc.close();
  }
});

Deno.test("acceptPeer() names the dialer as the directory spells it, whatever case it used", async () => {
  await using peer = listenPeer();
  const out = await within(dial(peer.port, { me: "ALICE", user: "Bob" }));
  try {
    const inbound = await within(peer.accepted);
    assert.equal(inbound.user, "alice");
    assert.equal(out.user, "Bob");
  } finally {
    await out.fc.close();
  }
});

// ---- refusals ------------------------------------------------------------------------------

Deno.test("acceptPeer() refuses a dialer without the private key of the name it claims", async () => {
  await using peer = listenPeer();
  // Mallory claims to be alice but can only sign with her own key.
  const [dialer, listener] = await within(Promise.all([
    settle(dial(peer.port, { me: "alice", identity: mallory })),
    settle(peer.accepted),
  ]));
  const refused = assertProtocolError(listener, "AUTH_FAILED");
  assert.match(refused.message, /claimed to be alice/);
  const told = assertProtocolError(dialer, "AUTH_FAILED");
  assert.match(told.message, /peer refused/);
});

Deno.test("dialPeer() refuses a listener whose key is not the one it expected", async () => {
  // Whoever listens here signs as mallory, while the directory said bob's key.
  await using peer = listenPeer({ identity: mallory });
  const [dialer, listener] = await within(Promise.all([
    settle(dial(peer.port)),
    settle(peer.accepted),
  ]));
  const refused = assertProtocolError(dialer, "AUTH_FAILED");
  assert.match(refused.message, /could not prove it is bob/);
  assertProtocolError(listener, "AUTH_FAILED");
});

Deno.test("dialPeer() refuses a listener answering with the wrong expected key, even if honest", async () => {
  await using peer = listenPeer();
  const [dialer, listener] = await within(Promise.all([
    settle(dial(peer.port, { publicKey: alice.publicKey })),
    settle(peer.accepted),
  ]));
  assertProtocolError(dialer, "AUTH_FAILED");
  assertProtocolError(listener, "AUTH_FAILED");
});

Deno.test("acceptPeer() refuses an auth_init addressed to another user", async () => {
  await using peer = listenPeer({ me: "bob" });
  const [dialer, listener] = await within(Promise.all([
    settle(dial(peer.port, { user: "carol", publicKey: mallory.publicKey })),
    settle(peer.accepted),
  ]));
  const refused = assertProtocolError(listener, "AUTH_FAILED");
  assert.match(refused.message, /this is bob, not carol/);
  const told = assertProtocolError(dialer, "AUTH_FAILED");
  assert.match(told.message, /this is bob, not carol/);
});

Deno.test("acceptPeer() refuses a dialer claiming to be the user it dials", async () => {
  await using peer = listenPeer({ me: "bob" });
  const [dialer, listener] = await within(Promise.all([
    settle(dial(peer.port, { me: "bob", identity: bob })),
    settle(peer.accepted),
  ]));
  assertProtocolError(listener, "AUTH_FAILED");
  assertProtocolError(dialer, "AUTH_FAILED");
});

Deno.test("acceptPeer() refuses a dialer whose name the directory does not know", async () => {
  await using peer = listenPeer();
  const [dialer, listener] = await within(Promise.all([
    settle(dial(peer.port, { me: "zed", identity: mallory })),
    settle(peer.accepted),
  ]));
  assert.ok("error" in listener, "the listener must not accept an unknown user");
  assert.ok(listener.error instanceof RemoteError, String(listener.error));
  assert.equal(listener.error.code, "NO_SUCH_USER");
  assert.ok("error" in dialer, "the dialer must not get a link");
  assert.ok(
    dialer.error instanceof ProtocolError || dialer.error instanceof ConnectionClosedError,
    String(dialer.error),
  );
});

Deno.test("dialPeer() refuses a listener that answers as someone else", async () => {
  // A hand-driven listener that speaks the protocol correctly, but as mallory.
  using listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  const fake = (async () => {
    const fc = new FramedConnection<PeerMessage>(await listener.accept(), {
      schema: PeerToPeer,
      replyTypes: [],
    });
    try {
      const session = await openSecureChannel(fc, {
        role: "peer",
        expectRole: "peer",
        initiator: false,
        staticKeyPair: malloryNoise,
        timeoutMs: TIMEOUT_MS,
      });
      const init = await fc.next(TIMEOUT_MS);
      assert.equal(init.type, "auth_init");
      const nonce = randomToken();
      const signature = await mallory.sign(handshakeTranscript({
        signer: "responder",
        initiator: "alice",
        responder: "mallory",
        initiatorNonce: (init as { nonce: string }).nonce,
        responderNonce: nonce,
        channel: toBase64Url(session.handshakeHash),
      }));
      await fc.send({ type: "auth_reply", from: "mallory", nonce, signature });
      return await fc.next(TIMEOUT_MS);
    } finally {
      await fc.close();
    }
  })();
  const [dialer, fakeSaw] = await within(Promise.all([
    settle(dial(listener.addr.port, { publicKey: mallory.publicKey })),
    settle(fake),
  ]));
  const refused = assertProtocolError(dialer, "AUTH_FAILED");
  assert.match(refused.message, /is mallory, not bob/);
  assert.ok("ok" in fakeSaw, String("error" in fakeSaw && fakeSaw.error));
  assert.deepEqual(
    { type: fakeSaw.ok.type, code: (fakeSaw.ok as { code?: string }).code },
    { type: "error", code: "AUTH_FAILED" },
  );
});

Deno.test("acceptPeer() refuses a proof made for another encrypted channel, even with the right key", async () => {
  await using peer = listenPeer();
  // A dialer that holds alice's real key, but signs a transcript bound to some other Noise
  // session: what a relay in the middle would hold. The binding alone must make it fail.
  const conn = await Deno.connect({ hostname: LOOPBACK, port: peer.port });
  const fc = new FramedConnection<PeerMessage>(conn, { schema: PeerToPeer, replyTypes: [] });
  const dialer = (async () => {
    try {
      const session = await openSecureChannel(fc, {
        role: "peer",
        expectRole: "peer",
        initiator: true,
        staticKeyPair: aliceNoise,
        timeoutMs: TIMEOUT_MS,
      });
      const otherChannel = toBase64Url(crypto.getRandomValues(new Uint8Array(32)));
      assert.notEqual(otherChannel, toBase64Url(session.handshakeHash));
      const nonce = randomToken();
      await fc.send({ type: "auth_init", from: "alice", to: "bob", nonce });
      const reply = await fc.next(TIMEOUT_MS);
      assert.equal(reply.type, "auth_reply");
      const fields = {
        signer: "initiator",
        initiator: "alice",
        responder: "bob",
        initiatorNonce: nonce,
        responderNonce: (reply as { nonce: string }).nonce,
      } as const;
      // bob's own proof is bound to this channel, and only to it.
      const bobSignature = (reply as { signature: string }).signature;
      const channel = toBase64Url(session.handshakeHash);
      assert.ok(
        await verifySignature(
          bob.publicKey,
          bobSignature,
          handshakeTranscript({ ...fields, signer: "responder", channel }),
        ),
      );
      assert.equal(
        await verifySignature(
          bob.publicKey,
          bobSignature,
          handshakeTranscript({ ...fields, signer: "responder", channel: otherChannel }),
        ),
        false,
      );
      const signature = await alice.sign(handshakeTranscript({ ...fields, channel: otherChannel }));
      await fc.send({ type: "auth_finish", signature });
      return await fc.next(TIMEOUT_MS);
    } finally {
      await fc.close();
    }
  })();
  const [dialerSaw, listener] = await within(Promise.all([settle(dialer), settle(peer.accepted)]));
  const refused = assertProtocolError(listener, "AUTH_FAILED");
  assert.match(refused.message, /claimed to be alice/);
  assert.ok("ok" in dialerSaw, String("error" in dialerSaw && dialerSaw.error));
  assert.deepEqual(
    { type: dialerSaw.ok.type, code: (dialerSaw.ok as { code?: string }).code },
    { type: "error", code: "AUTH_FAILED" },
  );
});
