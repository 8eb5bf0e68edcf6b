/**
 * Tests for lib/client/transfers.ts and `--auto-accept contacts` while the contact list cannot
 * be had: an offer that came while the server could not say whether its sender is a contact
 * waits (for a person), and is taken once the server confirms the contact
 * (`acceptFromContacts()`, called when the list comes). A script taking files from its contacts
 * would otherwise never answer it, and the sender would wait up to the offer timeout.
 *
 * Real Transfers, a real ClientStore in a temporary folder and a real FramedConnection pair over
 * a memory pipe; the host's contact answer is the only thing chosen by the test.
 */
import assert from "node:assert/strict";
import { FramedConnection } from "../../lib/net/framed_connection.ts";
import { memoryPipe } from "../../lib/net/transport.ts";
import { type PeerMessage, PeerToPeer } from "../../lib/protocol/messages.ts";
import type { PeerLink } from "../../lib/peer/peer_link.ts";
import { ClientStore } from "../../lib/client/client_store.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { Transfers } from "../../lib/client/transfers.ts";
import { bobsTransferHost, within } from "../support/peer_fixtures.ts";

Deno.test("an offer from a contact that came while the server could not be asked is taken once it confirms the contact", async () => {
  const home = await Deno.makeTempDir({ prefix: "confab-transfers-" });
  const store = new ClientStore(home);
  const [a, b] = memoryPipe();
  const alice = new FramedConnection<PeerMessage>(a, { schema: PeerToPeer, replyTypes: [] });
  const bobEnd = new FramedConnection<PeerMessage>(b, { schema: PeerToPeer, replyTypes: [] });
  const link = { user: "alice", initiator: "alice", outbound: false, fc: bobEnd } as PeerLink;
  const events: ClientEvent[] = [];
  let serverSays: "unknown" | "contact" = "unknown";
  const transfers = new Transfers(bobsTransferHost(store, home, events, link, {
    autoAccept: "contacts",
    // The server away and no list yet in this session: not known to be a contact.
    isContact: () => Promise.resolve(serverSays === "contact" ? true : undefined),
  }));
  const answers: PeerMessage[] = [];
  const answered = Promise.withResolvers<void>();
  alice.setHandler((m) => {
    answers.push(m);
    answered.resolve();
  });
  bobEnd.setHandler((m) => transfers.onPeerMessage(link, m as PeerMessage).then(() => {}));
  try {
    await transfers.prepare();
    const fid = "0123456789abcdef0123456789abcdef";
    await alice.send({ type: "file_offer", fid, name: "notes.txt", size: 5, tag: "a".repeat(64) });
    // It waits for a person: an offer event, no answer to alice.
    const deadline = Date.now() + 10_000;
    while (!events.some((e) => e.type === "transfer_offered") && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(events.some((e) => e.type === "transfer_offered"), "the offer waits");
    assert.equal(answers.length, 0, "no answer yet");
    assert.deepEqual(transfers.waitingOffers().map((o) => o.peer), ["alice"]);

    // Not a contact yet: a call now leaves it waiting.
    await transfers.acceptFromContacts(() => serverSays === "contact");
    assert.equal(transfers.waitingOffers().length, 1);

    // The server is back and says alice is a contact: the offer is taken.
    serverSays = "contact";
    await transfers.acceptFromContacts(() => serverSays === "contact");
    await within(answered.promise, 10_000, "bob's answer to alice");
    assert.deepEqual(answers.map((m) => m.type), ["file_accept"]);
    assert.deepEqual(answers[0], { type: "file_accept", fid, offset: 0 });
    assert.equal(transfers.waitingOffers().length, 0);
    assert.ok(
      events.some((e) => e.type === "info" && /server confirms a contact/.test(String(e.text))),
      "bob is told why it was taken",
    );
  } finally {
    await transfers.close();
    await alice.close();
    await bobEnd.close();
    store.close();
    await Deno.remove(home, { recursive: true });
  }
});
