/**
 * Resumption tickets (lib/server/tickets.ts) and the NNpsk0 handshake a client comes back with:
 * against a real server in this process, over real sockets. A ticket without its pre-shared key
 * is worth nothing, a ticket of another deployment is refused (and the client falls back to a
 * full handshake), and a resumed link stands for the server key the ticket came from.
 */
import assert from "node:assert/strict";
import { ConfabServer } from "../lib/server/server.ts";
import { TICKET_LIFETIME_MS, TicketBox } from "../lib/server/tickets.ts";
import { openServerLink, resumeSession, resumptionFrom } from "../lib/client/server_link.ts";
import { generateKeyPair, type KeyPair } from "../lib/crypto/noise.ts";
import type { ResumptionOffer } from "../lib/net/secure_channel.ts";
import { ProtocolError, RemoteError } from "../lib/protocol/errors.ts";
import type { WelcomeMessage } from "../lib/protocol/messages.ts";
import { toBase64Url } from "../lib/peer/identity.ts";
import { signupFields, TEST_PASSWORD_COST } from "./support/accounts.ts";

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

Deno.test("a client comes back with its ticket (NNpsk0) and resumes; a full handshake brings a new ticket", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-resumption-" });
  try {
    await using server = await ConfabServer.start({
      dataDir,
      port: 0,
      passwordCost: TEST_PASSWORD_COST,
    });
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
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
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
  const dataDir = await Deno.makeTempDir({ prefix: "confab-resumption-" });
  try {
    await using server = await ConfabServer.start({
      dataDir,
      port: 0,
      passwordCost: TEST_PASSWORD_COST,
    });
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
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
