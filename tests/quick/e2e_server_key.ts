/**
 * The server key override, end to end: `--accept-server-key <fingerprint>` accepts that one
 * key once, and nothing else. A server that presents any other key — at first contact or at a
 * reconnect later in the same process — is refused before the client sends anything, so an
 * impostor never learns the session token.
 */
import assert from "node:assert/strict";
import { keyFingerprint } from "../../lib/crypto/fingerprint.ts";
import { generateKeyPair, type KeyPair } from "../../lib/crypto/noise.ts";
import { FramedConnection } from "../../lib/net/framed_connection.ts";
import { openSecureChannel } from "../../lib/net/secure_channel.ts";
import { type ClientMessage, ClientToServer } from "../../lib/protocol/messages.ts";
import { KnownServers } from "../../lib/client/known_servers.ts";
import { toBase64Url } from "../../lib/util/base64.ts";
import { RecordingProxy } from "../support/proxy.ts";
import { startServer, TestClient } from "../support/processes.ts";

/**
 * A server impostor in this process: it completes the handshake with its own key, as a real
 * server would, and records every message the client sends it afterwards.
 */
class Impostor implements AsyncDisposable {
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #conns = new Set<FramedConnection<ClientMessage>>();
  readonly #loop: Promise<void>;
  /** Every message received inside an encrypted channel. */
  readonly received: ClientMessage[] = [];
  handshakes = 0;

  constructor(readonly key: KeyPair) {
    this.#loop = this.#accept();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  async #accept(): Promise<void> {
    for await (const conn of this.#listener) {
      const fc = new FramedConnection<ClientMessage>(conn, {
        schema: ClientToServer,
        replyTypes: [],
      });
      this.#conns.add(fc);
      openSecureChannel(fc, {
        role: "server",
        expectRole: "client",
        initiator: false,
        staticKeyPair: this.key,
        timeoutMs: 15_000,
      }).then(() => {
        this.handshakes++;
        fc.setHandler((m) => void this.received.push(m));
      }, () => {});
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#loop.catch(() => {});
    await Promise.all([...this.#conns].map((fc) => fc.close()));
  }
}

Deno.test("an impostor answering a reconnect after --accept-server-key gets neither the pin nor the session token", async () => {
  await using server = await startServer();
  const banner = await server.proc.out.find(
    (l) => l.startsWith("server key fingerprint: "),
    "the key fingerprint",
  );
  const fingerprint = banner.slice("server key fingerprint: ".length);
  await using impostor = new Impostor(await generateKeyPair());
  await using wire = new RecordingProxy(server.port);
  const home = await Deno.makeTempDir({ prefix: "confab-alice-" });
  try {
    // This home knew the address under an older key: the server was reinstalled, and the user
    // checked the new fingerprint and passes it.
    const address = `127.0.0.1:${wire.port}`;
    await new KnownServers(home).pin(address, toBase64Url((await generateKeyPair()).publicKey));
    await using alice = await TestClient.start("alice", { port: wire.port }, {
      home,
      args: ["--accept-server-key", fingerprint],
    });
    await alice.signup("alice");
    assert.equal((await new KnownServers(home).get(address))?.key.length, 43);

    // The real server goes away; an impostor takes its address and the client reconnects.
    wire.target = impostor.port;
    assert.equal((await server.esc()).code, 0);
    await alice.event("server_lost");
    const refused = await alice.event("error", { code: "SERVER_KEY_CHANGED" });
    assert.ok(
      String(refused.message).includes(await keyFingerprint(impostor.key.publicKey)),
      String(refused.message),
    );
    // The impostor counts its handshake when the client's last handshake message arrives,
    // which may be after the client's refusal reached us: wait for it, with a deadline.
    for (const until = Date.now() + 15_000; impostor.handshakes < 1 && Date.now() < until;) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(impostor.handshakes >= 1, "the impostor completed a handshake");
    assert.deepEqual(impostor.received, [], "the client sent the impostor something");
    const pinned = await new KnownServers(home).get(address);
    assert.notEqual(pinned?.key, toBase64Url(impostor.key.publicKey), "the impostor was pinned");
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("--accept-server-key with another fingerprint than the server's is refused before anything is sent", async () => {
  await using server = await startServer();
  await using impostor = new Impostor(await generateKeyPair());
  const home = await Deno.makeTempDir({ prefix: "confab-alice-" });
  try {
    const banner = await server.proc.out.find(
      (l) => l.startsWith("server key fingerprint: "),
      "the key fingerprint",
    );
    const fingerprint = banner.slice("server key fingerprint: ".length);
    await using alice = await TestClient.start("alice", impostor, {
      home,
      args: ["--accept-server-key", fingerprint.replaceAll(" ", "")],
    });
    await alice.send("signup alice secret-pw");
    const refused = await alice.event("error");
    assert.equal(refused.code, "SERVER_KEY_CHANGED");
    assert.match(String(refused.message), new RegExp(fingerprint));
    assert.deepEqual(impostor.received, [], "the client sent the impostor something");
    assert.equal(await new KnownServers(home).get(`127.0.0.1:${impostor.port}`), undefined);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
