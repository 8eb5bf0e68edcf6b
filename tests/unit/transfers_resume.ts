/**
 * Tests for lib/client/transfers.ts: sharing a file again while the receiver still waits for the
 * transfer that broke off to go on. When the link a transfer ran on is replaced, the receiver
 * keeps the transfer open for 30 s for its sender to offer it again (same file id, the link
 * moved under a running client). A sender whose client restarted shares the file anew (another
 * file id): that is the same file, and its part must be resumed, not refused as "already being
 * received".
 *
 * Real Transfers over a real ClientStore in a temporary folder; the links are stand-ins that
 * record what is sent on them.
 */
import assert from "node:assert/strict";
import { ClientStore } from "../../lib/client/client_store.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { Transfers } from "../../lib/client/transfers.ts";
import type { PeerLink } from "../../lib/peer/peer_link.ts";
import type { PeerMessage } from "../../lib/protocol/messages.ts";
import { fromHex } from "../../lib/util/hex.ts";
import { bobsTransferHost, within } from "../support/peer_fixtures.ts";
import { tempDir } from "../support/temp_dir.ts";

/** A link to `user` that records what is sent on it, and can be closed. */
function closable(user: string) {
  const sent: PeerMessage[] = [];
  const ended = Promise.withResolvers<void>();
  const fc = {
    send: (m: PeerMessage) => {
      sent.push(m);
      return Promise.resolve();
    },
    closed: ended.promise,
    isClosed: false,
  };
  const link = { user, initiator: user, outbound: false, fc } as unknown as PeerLink;
  return {
    link,
    sent,
    close() {
      fc.isClosed = true;
      ended.resolve();
    },
  };
}

Deno.test("a file shared anew while the receiver waits for its broken transfer to go on resumes from the part", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const first = closable("alice");
  const second = closable("alice");
  const events: ClientEvent[] = [];
  const transfers = new Transfers(
    bobsTransferHost(store, dir.path, events, first.link, {
      autoAccept: "contacts",
      isContact: () => Promise.resolve(true),
      // alice's client came back: the link that replaces the lost one is up.
      replacement: () => Promise.resolve(second.link),
    }),
  );
  try {
    await transfers.prepare();
    const tag = "c".repeat(64);
    const fid1 = "11".repeat(16);
    await transfers.onPeerMessage(first.link, {
      type: "file_offer",
      fid: fid1,
      name: "report.bin",
      size: 10,
      tag,
    });
    assert.deepEqual(first.sent.at(-1), { type: "file_accept", fid: fid1, offset: 0 });
    const chunk = new Uint8Array(25 + 4);
    chunk.set(fromHex(fid1), 1);
    chunk.set([1, 2, 3, 4], 25);
    await transfers.onPeerMessage(first.link, { type: "binary", data: chunk });

    // The first link dies; the receiver waits for alice to offer fid1 again on the second.
    first.close();
    await new Promise((r) => setTimeout(r, 0));

    // alice's client restarted and shares the same file again: another file id.
    const fid2 = "22".repeat(16);
    await transfers.onPeerMessage(second.link, {
      type: "file_offer",
      fid: fid2,
      name: "report.bin",
      size: 10,
      tag,
    });
    const answer = await within(
      (async () => {
        while (second.sent.length === 0) await new Promise((r) => setTimeout(r, 5));
        return second.sent[0];
      })(),
      5_000,
      "the answer to the new offer",
    );
    assert.deepEqual(answer, { type: "file_accept", fid: fid2, offset: 4 });
  } finally {
    await transfers.close();
  }
});
