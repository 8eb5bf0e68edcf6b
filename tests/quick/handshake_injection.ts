/**
 * A man in the middle who forwards a real handshake and slips plaintext frames in at every
 * position of it, on a control connection (the real server, the client's `openServerLink`)
 * and on a peer link (`dialPeer` against `acceptPeer`). From the first handshake message on,
 * nothing but the expected handshake message or a correctly encrypted frame may be accepted:
 * the injected frame must never be taken for a message, and the connection must end.
 */
import assert from "node:assert/strict";
import { ConfabServer } from "../../lib/server/server.ts";
import { openServerLink } from "../../lib/client/server_link.ts";
import { generateKeyPair } from "../../lib/crypto/noise.ts";
import { encodeFrame } from "../../lib/protocol/frame.ts";
import { ConnectionClosedError, FrameError, ProtocolError } from "../../lib/protocol/errors.ts";
import { encodeMessage, type ServerMessage } from "../../lib/protocol/messages.ts";
import { Identity, randomToken } from "../../lib/peer/identity.ts";
import { acceptPeer, dialPeer, type PeerLink } from "../../lib/peer/peer_link.ts";
import { InjectingProxy, type Injection } from "../support/proxy.ts";
import { within } from "../support/peer_fixtures.ts";
import { signupFields } from "../support/accounts.ts";

/** Every place in the handshake a frame can be slipped in (after `hello`; see the doc comment). */
const POSITIONS: Omit<Injection, "bytes">[] = [
  { direction: "down", afterFrames: 1 }, // after the responder's hello, before msg2
  { direction: "down", afterFrames: 2 }, // right after msg2, before anything encrypted
  { direction: "up", afterFrames: 1 }, // after the initiator's hello, before msg1
  { direction: "up", afterFrames: 2 }, // after msg1, before msg3
  { direction: "up", afterFrames: 3 }, // right after msg3, before the first encrypted frame
];

function describe(p: Omit<Injection, "bytes">): string {
  const toward = p.direction === "down" ? "the initiator" : "the responder";
  return `${p.afterFrames} frame(s) in, toward ${toward}`;
}

function plainFrame(message: { type: string; [field: string]: unknown }): Uint8Array {
  return encodeFrame(encodeMessage(message));
}

/**
 * How a side of an attacked link ended. Acceptable: the handshake failed (no session), or the
 * session was set up and then ended by a frame that failed authentication, or the other side
 * hung up, or the other side said (encrypted) that it got a frame that failed authentication.
 * Not acceptable: the injected frame read as a message.
 */
function assertRefusedSafely(error: unknown, where: string): void {
  if (error instanceof ProtocolError && error.code === "HANDSHAKE_FAILED") return;
  // The other side's encrypted (so authentic) word that a frame failed authentication there.
  if (error instanceof ProtocolError && error.code === "BAD_FRAME") return;
  if (error instanceof ConnectionClosedError) {
    const cause = error.cause;
    if (cause === undefined || cause instanceof FrameError) return;
    if (cause instanceof ProtocolError && cause.code === "HANDSHAKE_FAILED") return;
  }
  assert.fail(`${where} read the injected frame as a message: ${String(error)}`);
}

Deno.test("plaintext frames injected into the client-server handshake at every position are never accepted", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-inject-" });
  await using server = await ConfabServer.start({ dataDir, port: 0 });
  const clientKey = await generateKeyPair();
  // A signup that would succeed if the server read it: a valid key and mail-key signature.
  const signup = plainFrame({ ...await signupFields("mallory", "injected-pw"), id: 1 });
  const forgedPresence = plainFrame({ type: "presence", user: "bob", online: true });
  try {
    for (const position of POSITIONS) {
      const bytes = position.direction === "down" ? forgedPresence : signup;
      await using proxy = new InjectingProxy(server.addr.port, { ...position, bytes });
      const seen: ServerMessage[] = [];
      const link = await openServerLink({
        host: "127.0.0.1",
        port: proxy.port,
        staticKeyPair: clientKey,
      }).catch((error) => assertRefusedSafely(error, `the client (${describe(position)})`));
      if (link) {
        const forged = Promise.withResolvers<void>();
        link.fc.setHandler((m) => {
          seen.push(m);
          if (m.type === "presence") forged.resolve();
        });
        // The attacked connection must end; a forged message seen meanwhile fails the test.
        await within(
          Promise.race([link.fc.closed, forged.promise]),
          undefined,
          `the attacked connection (${describe(position)}) to end`,
        );
        await link.fc.close();
      }
      await within(proxy.firstEnded.promise, undefined, "the proxied connection to end");
      assert.deepEqual(
        seen.filter((m) => m.type === "presence"),
        [],
        `the client took a forged presence for real (${describe(position)})`,
      );
      assert.equal(
        await server.store.getUser("mallory"),
        undefined,
        `the server took an injected signup (${describe(position)})`,
      );
    }
  } finally {
    await server.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("plaintext frames injected into a peer-link handshake at every position are never accepted", async () => {
  const alice = (await Identity.generate()).identity;
  const bob = (await Identity.generate()).identity;
  const mallory = (await Identity.generate()).identity;
  const directory = new Map([
    ["alice", { user: "alice", publicKey: alice.publicKey }],
    ["mallory", { user: "mallory", publicKey: mallory.publicKey }],
  ]);
  const forgedMsg = plainFrame({ type: "msg", id: "forged", seq: 1, ts: Date.now(), text: "x" });
  const forgedInit = plainFrame({
    type: "auth_init",
    from: "mallory",
    to: "bob",
    nonce: randomToken(),
  });
  for (const position of POSITIONS) {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const bytes = position.direction === "down" ? forgedMsg : forgedInit;
    await using proxy = new InjectingProxy(listener.addr.port, { ...position, bytes });
    const accepted = listener.accept().then((conn) =>
      acceptPeer(conn, {
        me: "bob",
        identity: bob,
        noiseKey: bobNoise,
        resolveKey: (user) => {
          const found = directory.get(user.toLowerCase());
          return found ? Promise.resolve(found) : Promise.reject(new Error(`no user ${user}`));
        },
      })
    );
    const dialed = dialPeer({ host: "127.0.0.1", port: proxy.port }, {
      me: "alice",
      identity: alice,
      noiseKey: aliceNoise,
      user: "bob",
      publicKey: bob.publicKey,
    });
    const [out, inbound] = await within(
      Promise.allSettled([dialed, accepted]),
      undefined,
      `both ends of the attacked link (${describe(position)}) to settle`,
    );
    const links: PeerLink[] = [];
    for (const [result, side] of [[out, "the dialer"], [inbound, "the listener"]] as const) {
      if (result.status === "fulfilled") links.push(result.value);
      else assertRefusedSafely(result.reason, `${side} (${describe(position)})`);
    }
    for (const link of links) {
      // A side may finish its part before the other noticed the attack: it must end anyway.
      await within(link.fc.closed, undefined, `the link to end (${describe(position)})`);
      await link.fc.close();
    }
    assert.ok(
      out.status === "rejected" || inbound.status === "rejected",
      `the link came up although frames were injected (${describe(position)})`,
    );
    await within(proxy.firstEnded.promise, undefined, "the proxied connection to end");
  }
});

Deno.test("a hello altered on the path (a downgrade) fails the handshake on both sides", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-downgrade-" });
  await using server = await ConfabServer.start({ dataDir, port: 0 });
  try {
    for (const direction of ["up", "down"] as const) {
      // Each hello is rewritten in a way that passes every check of the hello itself: what a
      // downgrade of a future version negotiation would look like.
      await using proxy = new InjectingProxy(server.addr.port, (frame, where) => {
        if (where.before || where.direction !== direction || where.index !== 0) return frame;
        const hello = JSON.parse(new TextDecoder().decode(frame.subarray(4)));
        return plainFrame({ ...hello, software: "confab/0.0.1-old" });
      });
      const outcome = await openServerLink({
        host: "127.0.0.1",
        port: proxy.port,
        staticKeyPair: await generateKeyPair(),
      }).then(async (link) => {
        await link.fc.close();
        return "connected";
      }, (error) => error);
      assert.ok(
        outcome instanceof ProtocolError && outcome.code === "HANDSHAKE_FAILED",
        `a hello altered ${direction} went unnoticed: ${String(outcome)}`,
      );
      await within(proxy.firstEnded.promise, undefined, "the proxied connection to end");
    }
  } finally {
    await server.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});

const aliceNoise = await generateKeyPair();
const bobNoise = await generateKeyPair();
