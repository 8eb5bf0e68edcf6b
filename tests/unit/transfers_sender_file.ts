/**
 * Tests for lib/client/transfers.ts: what a receiver learns when the sender's transfer ends
 * on the sender's side (its file got shorter, or changed, while it was sent).
 *
 * Real Transfers on both sides, real ClientStores in temporary folders and a real
 * FramedConnection pair over a memory pipe.
 */
import assert from "node:assert/strict";
import { FramedConnection } from "../../lib/net/framed_connection.ts";
import { memoryPipe } from "../../lib/net/transport.ts";
import { type PeerMessage, PeerToPeer } from "../../lib/protocol/messages.ts";
import type { PeerLink } from "../../lib/peer/peer_link.ts";
import { ClientStore } from "../../lib/client/client_store.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { type TransferHost, Transfers } from "../../lib/client/transfers.ts";
import { join } from "../../lib/util/paths.ts";
import { bobsTransferHost, within } from "../support/peer_fixtures.ts";
import { tempDir } from "../support/temp_dir.ts";

type Event = ClientEvent;

/** A list of events with a wait for the first that matches. */
class Events {
  readonly all: Event[] = [];
  #waiters: { test: (e: Event) => boolean; resolve: (e: Event) => void }[] = [];

  push(e: Event): void {
    this.all.push(e);
    for (const w of [...this.#waiters]) {
      if (w.test(e)) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(e);
      }
    }
  }

  next(test: (e: Event) => boolean, what: string, ms = 10_000): Promise<Event> {
    const found = this.all.find(test);
    if (found) return Promise.resolve(found);
    const { promise, resolve } = Promise.withResolvers<Event>();
    this.#waiters.push({ test, resolve });
    return within(promise, ms, what);
  }
}

/**
 * Alice (sender) and Bob (receiver), each with a Transfers over one link between them; `onAlice`
 * sees each of Alice's events as it is emitted (before the code that emitted it goes on).
 */
async function pairOfTransfers(options: {
  onAlice?: (e: Event) => void;
  bob?: Partial<TransferHost>;
} = {}) {
  const dir = await tempDir("confab-transfers-");
  const aliceStore = new ClientStore(join(dir.path, "alice"));
  const bobStore = new ClientStore(join(dir.path, "bob"));
  const [a, b] = memoryPipe();
  const maxFrame = 1024 * 1024 + 64;
  const aliceEnd = new FramedConnection<PeerMessage>(a, {
    schema: PeerToPeer,
    replyTypes: [],
    maxFrame,
    acceptBinary: true,
  });
  const bobEnd = new FramedConnection<PeerMessage>(b, {
    schema: PeerToPeer,
    replyTypes: [],
    maxFrame,
    acceptBinary: true,
  });
  const toBob = { user: "bob", initiator: "alice", outbound: true, fc: aliceEnd } as PeerLink;
  const toAlice = { user: "alice", initiator: "alice", outbound: false, fc: bobEnd } as PeerLink;
  const aliceEvents = new Events();
  const bobEvents = new Events();
  const alice = new Transfers({
    ...bobsTransferHost(aliceStore, join(dir.path, "alice"), [], toBob),
    user: "alice",
    emit: (e) => {
      aliceEvents.push(e);
      options.onAlice?.(e);
    },
  });
  const bob = new Transfers({
    ...bobsTransferHost(bobStore, join(dir.path, "bob"), [], toAlice, {
      autoAccept: "contacts",
      isContact: () => Promise.resolve(true),
      ...options.bob,
    }),
    emit: (e) => bobEvents.push(e),
  });
  aliceEnd.setHandler((m) => alice.onPeerMessage(toBob, m as PeerMessage).then(() => {}));
  bobEnd.setHandler((m) => bob.onPeerMessage(toAlice, m as PeerMessage).then(() => {}));
  await alice.prepare();
  await bob.prepare();
  return {
    dir: dir.path,
    alice,
    bob,
    aliceEvents,
    bobEvents,
    bobDownloads: join(dir.path, "bob", "downloads"),
    bobPartial: join(dir.path, "bob", "partial"),
    async [Symbol.asyncDispose]() {
      await alice.close();
      await bob.close();
      await aliceEnd.close();
      await bobEnd.close();
      aliceStore.close();
      bobStore.close();
      await dir[Symbol.asyncDispose]();
    },
  };
}

async function randomFile(path: string, bytes: number): Promise<Uint8Array> {
  const data = new Uint8Array(bytes);
  for (let at = 0; at < bytes; at += 65536) {
    crypto.getRandomValues(data.subarray(at, Math.min(bytes, at + 65536)));
  }
  await Deno.writeFile(path, data);
  return data;
}

Deno.test("a sender whose file got shorter while it was sent tells the receiver, which says the file did not arrive", async () => {
  let path = "";
  await using p = await pairOfTransfers({
    // Once the first chunk is on its way, the file loses its end (not read yet).
    onAlice: (e) => {
      if (e.type === "transfer_progress") Deno.truncateSync(path, 1000);
    },
  });
  path = join(p.dir, "shrinking.bin");
  await randomFile(path, 3 * 1024 * 1024);
  await p.alice.share(path, ["bob"]);
  const sent = await p.aliceEvents.next((e) => e.type === "transfer_failed", "alice's failure");
  assert.match(String(sent.type === "transfer_failed" && sent.reason), /shorter/);
  const got = await p.bobEvents.next(
    (e) => e.type === "transfer_failed" || e.type === "transfer_done",
    "bob told of the failure",
    5_000,
  );
  assert.equal(got.type, "transfer_failed");
  assert.match(String(got.type === "transfer_failed" && got.reason), /shorter/);
  assert.deepEqual([...Deno.readDirSync(p.bobDownloads)], []);
});

Deno.test("a file edited while it is sent does not arrive as a mix of its versions passed as verified", async () => {
  let path = "";
  let edited = false;
  await using p = await pairOfTransfers({
    // Once Alice has read the first block (the first chunk is on its way), both ends of the file
    // change: the start already read, the end not yet.
    onAlice: (e) => {
      if (e.type !== "transfer_progress" || edited) return;
      edited = true;
      using f = Deno.openSync(path, { write: true });
      f.writeSync(new Uint8Array([1, 2, 3, 4]));
      f.seekSync(-4, Deno.SeekMode.End);
      f.writeSync(new Uint8Array([5, 6, 7, 8]));
      f.utimeSync(new Date(), new Date(Date.now() + 5_000)); // an mtime that surely moved
    },
  });
  path = join(p.dir, "edited.bin");
  const before = await randomFile(path, 3 * 1024 * 1024);
  before.set([9, 9, 9, 9], 0); // the first bytes surely differ from the edit's
  await Deno.writeFile(path, before);
  await p.alice.share(path, ["bob"]);
  const sent = await p.aliceEvents.next(
    (e) => e.type === "transfer_failed" || e.type === "transfer_done",
    "alice's end",
  );
  assert.ok(edited, "the file was edited during the transfer");
  const got = await p.bobEvents.next(
    (e) => e.type === "transfer_failed" || e.type === "transfer_done",
    "bob's end",
    5_000,
  );
  const saved = [...Deno.readDirSync(p.bobDownloads)];
  if (saved.length > 0) {
    const bytes = await Deno.readFile(join(p.bobDownloads, saved[0]!.name));
    const after = await Deno.readFile(path);
    assert.ok(
      bytes.every((b, i) => b === before[i]) || bytes.every((b, i) => b === after[i]),
      `bob saved a file that is neither version (${sent.type} / ${got.type})`,
    );
  }
  assert.equal(sent.type, "transfer_failed");
  assert.match(String(sent.type === "transfer_failed" && sent.reason), /changed/);
  assert.equal(got.type, "transfer_failed");
  assert.match(String(got.type === "transfer_failed" && got.reason), /changed/);
});
