/**
 * Tests for lib/client/transfers.ts: waiting offers and the end of their link. A peer may offer
 * and cancel in a loop; each waiting offer used to add a watcher on its link's end, kept (with
 * the offer and its name of up to 1,024 characters) until the link closed: 2 KB a cycle, without
 * bound (40,000 cycles grew the heap by 86 MB). Now a link is watched once, and its end still
 * declines every offer waiting on it.
 *
 * Real Transfers over a real ClientStore in a temporary folder; the link is a stand-in whose
 * `closed` counts who waits on it.
 */
import assert from "node:assert/strict";
import { ClientStore } from "../../lib/client/client_store.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { MAX_KEPT_PARTS, MAX_RECEIVING_FROM_ONE, Transfers } from "../../lib/client/transfers.ts";
import { fromHex } from "../../lib/util/hex.ts";
import { join } from "../../lib/util/paths.ts";
import type { PeerLink } from "../../lib/peer/peer_link.ts";
import type { PeerMessage } from "../../lib/protocol/messages.ts";
import { bobsTransferHost, standIn } from "../support/peer_fixtures.ts";
import { tempDir } from "../support/temp_dir.ts";

Deno.test("offers cancelled in a loop add no watcher each on their link, and the link's end declines those still waiting", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const watchers: (() => void)[] = [];
  const closed = {
    then(onClosed: () => void) {
      watchers.push(onClosed);
      return new Promise(() => {});
    },
  };
  const fc = { send: () => Promise.resolve(), closed, isClosed: false };
  const link = {
    user: "mallory",
    initiator: "mallory",
    outbound: false,
    fc,
  } as unknown as PeerLink;
  const events: ClientEvent[] = [];
  const transfers = new Transfers(bobsTransferHost(store, dir.path, events, link));
  try {
    await transfers.prepare();
    const fid = (i: number) => i.toString(16).padStart(32, "0");
    const offer = (i: number) =>
      transfers.onPeerMessage(link, {
        type: "file_offer",
        fid: fid(i),
        name: `${i}-${"x".repeat(1000)}`,
        size: 1,
        tag: fid(i) + fid(i),
      } as PeerMessage);
    for (let i = 0; i < 500; i++) {
      await offer(i);
      await transfers.onPeerMessage(link, { type: "file_cancel", fid: fid(i), reason: "x" });
    }
    assert.equal(transfers.waitingOffers().length, 0);
    for (let i = 500; i < 503; i++) await offer(i);
    assert.equal(transfers.waitingOffers().length, 3);
    assert.ok(watchers.length <= 1, `${watchers.length} watchers on one link`);

    // The link ends: the three waiting are declined, each said once.
    for (const onClosed of watchers) onClosed();
    assert.equal(transfers.waitingOffers().length, 0);
    const gone = events.filter((e) =>
      e.type === "transfer_declined" && e.reason === "mallory disconnected"
    );
    assert.deepEqual(gone.map((e) => e.type === "transfer_declined" && e.fid), [
      fid(500),
      fid(501),
      fid(502),
    ]);
  } finally {
    await transfers.close();
  }
});

Deno.test("a peer whose accepted files never end holds at most 16 of them open; the next is declined until one ends", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const link = standIn("mallory");
  const events: ClientEvent[] = [];
  const transfers = new Transfers(
    bobsTransferHost(store, dir.path, events, link, {
      autoAccept: "contacts",
      isContact: () => Promise.resolve(true),
    }),
  );
  try {
    await transfers.prepare();
    const fid = (i: number) => i.toString(16).padStart(32, "0");
    const offer = (i: number) =>
      transfers.onPeerMessage(link, {
        type: "file_offer",
        fid: fid(i),
        name: `empty-${i}`,
        size: 0, // counts nothing against --max-partial
        tag: fid(i) + fid(i),
      });
    for (let i = 0; i < 40; i++) await offer(i);
    const answers = () => link.sent.map((m) => m.type);
    assert.equal(answers().filter((t) => t === "file_accept").length, MAX_RECEIVING_FROM_ONE);
    assert.equal(answers().filter((t) => t === "file_reject").length, 40 - MAX_RECEIVING_FROM_ONE);
    assert.equal((await Array.fromAsync(Deno.readDir(join(dir.path, "partial")))).length, 16);
    const declined = events.find((e) => e.type === "transfer_declined");
    assert.match(String(declined?.type === "transfer_declined" && declined.reason), /16 files/);

    // One ends (its sender cancels it): the next is taken.
    await transfers.onPeerMessage(link, { type: "file_cancel", fid: fid(0), reason: "x" });
    await offer(40);
    assert.equal(link.sent.at(-1)?.type, "file_accept");
  } finally {
    await transfers.close();
  }
});

Deno.test("parts kept of transfers a peer broke off stay few, however many it breaks off", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const link = standIn("mallory");
  const transfers = new Transfers(
    bobsTransferHost(store, dir.path, [], link, {
      autoAccept: "contacts",
      isContact: () => Promise.resolve(true),
    }),
  );
  try {
    await transfers.prepare();
    const fid = (i: number) => i.toString(16).padStart(32, "0");
    // Offered, accepted, one byte of two sent, cancelled: a part of 1 byte is kept to resume,
    // and 200 of them count 200 bytes against --max-partial.
    for (let i = 0; i < 200; i++) {
      await transfers.onPeerMessage(link, {
        type: "file_offer",
        fid: fid(i),
        name: `f-${i}`,
        size: 2,
        tag: fid(i) + fid(i),
      });
      const chunk = new Uint8Array(26);
      chunk.set(fromHex(fid(i)), 1);
      chunk[25] = 7;
      await transfers.onPeerMessage(link, { type: "binary", data: chunk });
      await transfers.onPeerMessage(link, { type: "file_cancel", fid: fid(i), reason: "x" });
    }
    assert.equal(link.sent.filter((m) => m.type === "file_accept").length, 200);
    const parts = await Array.fromAsync(Deno.readDir(join(dir.path, "partial")));
    assert.ok(parts.length <= MAX_KEPT_PARTS, `${parts.length} parts kept`);
  } finally {
    await transfers.close();
  }
});
