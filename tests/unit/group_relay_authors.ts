/**
 * Tests for lib/client/group_chats.ts: a member whose marks cannot name every author (64 at
 * most on the wire) is not passed on the same messages of the others at every exchange.
 *
 * Real GroupChats over a real ClientStore in a temporary folder, real signatures; a stand-in
 * link for the member asking.
 */
import assert from "node:assert/strict";
import { ClientStore } from "../../lib/client/client_store.ts";
import { GroupChats } from "../../lib/client/group_chats.ts";
import { createGroup, groupMessageStatement, membersOf } from "../../lib/peer/group_state.ts";
import { Identity } from "../../lib/peer/identity.ts";
import type { PeerMessage } from "../../lib/protocol/messages.ts";
import { bobsHost, standIn } from "../support/peer_fixtures.ts";
import { tempDir } from "../support/temp_dir.ts";

Deno.test("catch-up: messages of an author a member's full marks leave out are passed on once, not again at every exchange", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const now = Date.now();
  // 64 authors of one message each (the most marks can name), and zoe, of 300.
  const authors = Array.from({ length: 64 }, (_, i) => `a${String(i).padStart(2, "0")}`);
  const state = createGroup(["bob", "carol"], now - 60_000);
  for (const a of [...authors, "zoe"]) state.adds.push({ user: a, tag: crypto.randomUUID() });
  store.saveGroupState(state, membersOf(state), { left: false });
  const keys: Record<string, string> = {};
  const log = async (author: string, identity: Identity, seq: number) => {
    const m = {
      group: state.id,
      author,
      id: crypto.randomUUID(),
      seq,
      ts: now - 30_000 + seq,
      ...(seq > 0 ? { prevTs: now - 30_000 + seq - 1 } : {}),
      text: `${author} ${seq}`,
    };
    const sig = await identity.sign(groupMessageStatement(m));
    store.addGroupReceived(
      {
        id: m.id,
        chat: `g:${state.id}`,
        sender: author,
        ts: m.ts,
        text: m.text,
        outgoing: false,
        mark: "**",
      },
      state.id,
      { seq, ...(m.prevTs !== undefined ? { prevTs: m.prevTs } : {}), sig, next: seq + 1 },
    );
  };
  for (const a of [...authors, "zoe"]) {
    const identity = (await Identity.generate()).identity;
    keys[a] = identity.publicKey;
    for (let seq = 0; seq < (a === "zoe" ? 300 : 1); seq++) await log(a, identity, seq);
  }
  const carol = standIn("carol");
  const groups = new GroupChats(bobsHost(store, [], { carol }, keys));
  try {
    groups.ready();
    // Carol has everything, but her marks name only the first 64 authors: zoe is left out.
    const marks: PeerMessage = {
      type: "group_marks",
      group: state.id,
      marks: authors.map((author) => ({ author, next: 1 })),
    };
    const relayed = () => carol.sent.filter((m) => m.type === "group_relay").map((m) => m.id);
    await groups.onPeerMessage(carol, marks);
    const first = relayed();
    assert.equal(first.length, 256, "one batch of zoe's");
    assert.ok(carol.sent.some((m) => m.type === "group_relay_more"));
    // She asks for more (her marks again, as her client answers group_relay_more), after the
    // 200 ms a member's marks are answered at most once in.
    for (let round = 0; round < 2; round++) {
      const since = Date.now();
      while (Date.now() - since < 250) await new Promise((r) => setTimeout(r, 25));
      carol.sent.length = 0;
      await groups.onPeerMessage(carol, marks);
      const again = relayed().filter((id) => first.includes(id));
      assert.deepEqual(again.length, 0, `round ${round}: zoe's first batch again`);
      first.push(...relayed());
    }
    assert.equal(new Set(first).size, 300, "each of zoe's once");
  } finally {
    groups.close();
  }
});
