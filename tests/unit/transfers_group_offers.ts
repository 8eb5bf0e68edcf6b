/**
 * Tests for lib/client/transfers.ts: a file offered "in a group" by someone who is not a member
 * of it. The receiver's group chat takes messages from its members only (group_chats.ts answers
 * others `busy`); a file offer naming the group used to put its `[file]` line into that group's
 * history, from anyone with a link (a contact, a member of another group, a member removed).
 *
 * Real Transfers over a real ClientStore in a temporary folder; the sender is the test, over a
 * real FramedConnection pair on a memory pipe.
 */
import assert from "node:assert/strict";
import { FramedConnection } from "../../lib/net/framed_connection.ts";
import { memoryPipe } from "../../lib/net/transport.ts";
import { type PeerMessage, PeerToPeer } from "../../lib/protocol/messages.ts";
import type { PeerLink } from "../../lib/peer/peer_link.ts";
import { ClientStore, groupChat } from "../../lib/client/client_store.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { Transfers } from "../../lib/client/transfers.ts";
import { toHex } from "../../lib/util/hex.ts";
import { bobsTransferHost, within } from "../support/peer_fixtures.ts";
import { tempDir } from "../support/temp_dir.ts";

const GROUP = "6f1c1f7e-2f57-4d57-9a52-55a4a9a1e0c1";

/** Sends one file of `data` to Bob's Transfers as `from`, said to be in GROUP; Bob's events. */
async function offerInGroup(from: string, members: string[]) {
  const dir = await tempDir("confab-transfers-");
  const store = new ClientStore(dir.path);
  const [a, b] = memoryPipe();
  const options = { schema: PeerToPeer, replyTypes: [], acceptBinary: true };
  const sender = new FramedConnection<PeerMessage>(a, options);
  const bobEnd = new FramedConnection<PeerMessage>(b, options);
  const link = { user: from, initiator: from, outbound: false, fc: bobEnd } as PeerLink;
  const events: ClientEvent[] = [];
  const done = Promise.withResolvers<void>();
  const transfers = new Transfers(bobsTransferHost(store, dir.path, events, link, {
    autoAccept: "contacts",
    isContact: () => Promise.resolve(true),
    isGroupMember: (group, user) => group === GROUP && members.includes(user.toLowerCase()),
    emit: (e) => {
      events.push(e);
      if (e.type === "transfer_done" || e.type === "transfer_failed") done.resolve();
    },
  }));
  bobEnd.setHandler((m) => transfers.onPeerMessage(link, m as PeerMessage).then(() => {}));
  const accepted = Promise.withResolvers<void>();
  sender.setHandler((m) => {
    if (m.type === "file_accept") accepted.resolve();
  });
  try {
    await transfers.prepare();
    const data = new TextEncoder().encode("hello group");
    const sha256 = toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", data)));
    const fid = "00112233445566778899aabbccddeeff";
    await sender.send({
      type: "file_offer",
      fid,
      name: "note.txt",
      size: data.length,
      tag: "b".repeat(64),
      group: GROUP,
    });
    await within(accepted.promise, 10_000, "bob's file_accept");
    const chunk = new Uint8Array(25 + data.length);
    chunk.set(Array.from({ length: 16 }, (_, i) => parseInt(fid.slice(2 * i, 2 * i + 2), 16)), 1);
    chunk.set(data, 25);
    await sender.sendBinary(chunk);
    await sender.send({ type: "file_end", fid, sha256 });
    await within(done.promise, 10_000, "the end of the transfer");
    return {
      events,
      inGroup: store.recent(groupChat(GROUP), 10),
      direct: store.recent(from, 10),
    };
  } finally {
    await transfers.close();
    await sender.close();
    await bobEnd.close();
    store.close();
    await dir[Symbol.asyncDispose]();
  }
}

Deno.test("a file offered in a group by someone not in it does not reach the group's history", async () => {
  const { events, inGroup, direct } = await offerInGroup("mallory", ["bob", "carol"]);
  assert.ok(events.some((e) => e.type === "transfer_done"), "the file itself is received");
  assert.deepEqual(inGroup.map((m) => m.text), [], "nothing in the group's history");
  assert.equal(direct.length, 1, "the line is in the chat with mallory");
  assert.match(direct[0]!.text, /^\[file\] note\.txt/);
  const offered = events.find((e) => e.type === "transfer_started");
  assert.ok(offered);
});

Deno.test("a file offered in a group by a member lands in the group's history", async () => {
  const { inGroup } = await offerInGroup("carol", ["bob", "carol"]);
  assert.equal(inGroup.length, 1);
  assert.equal(inGroup[0]!.sender, "carol");
  assert.match(inGroup[0]!.text, /^\[file\] note\.txt/);
});
