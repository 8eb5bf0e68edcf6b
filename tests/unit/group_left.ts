/**
 * Tests for lib/client/group_chats.ts: the state of a group I left stays within the limits every
 * state is held to, whatever anyone linked to me sends about that group.
 *
 * Real GroupChats over a real ClientStore in a temporary folder; stand-in links.
 */
import assert from "node:assert/strict";
import { ClientStore } from "../../lib/client/client_store.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { GroupChats } from "../../lib/client/group_chats.ts";
import {
  addMember,
  createGroup,
  groupMessageStatement,
  type GroupState,
  MAX_GROUP_TAGS,
  membersOf,
  removeMember,
  withinLimits,
} from "../../lib/peer/group_state.ts";
import { Identity } from "../../lib/peer/identity.ts";
import { bobsHost, standIn } from "../support/peer_fixtures.ts";
import { tempDir } from "../support/temp_dir.ts";

Deno.test("the state of a group bob left does not grow past the limits however many crafted states come about it", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const state = removeMember(createGroup(["alice", "bob", "carol"]), "bob");
  store.saveGroupState(state, membersOf(state), { left: true });
  const events: ClientEvent[] = [];
  const carol = standIn("carol");
  const groups = new GroupChats(bobsHost(store, events, { carol }, {}));
  try {
    groups.ready();
    // Each within the limits on its own: 1,024 adds never seen before (of one user).
    for (let i = 0; i < 8; i++) {
      const crafted: GroupState = {
        id: state.id,
        adds: Array.from({ length: MAX_GROUP_TAGS }, () => ({
          user: "mallory",
          tag: crypto.randomUUID(),
        })),
        removed: [],
      };
      await groups.onPeerMessage(carol, { type: "group_state", group: crafted });
    }
    // What bob holds for the group shows in what he answers about it.
    carol.sent.length = 0;
    await groups.onPeerMessage(carol, { type: "group_sum", group: state.id, sum: "0".repeat(16) });
    const answer = carol.sent.find((m) => m.type === "group_state");
    assert.ok(answer?.type === "group_state");
    const tags = answer.group.adds.length + answer.group.removed.length;
    assert.ok(withinLimits(answer.group), `bob holds ${tags} tags for a group he left`);
  } finally {
    groups.close();
  }
});

Deno.test("messages of a group bob left that were waiting for an earlier one are not shown when their wait runs out", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const now = Date.now();
  const left = createGroup(["alice", "bob", "carol"], now - 60_000);
  const stays = createGroup(["alice", "bob", "carol"], now - 60_000);
  for (const g of [left, stays]) store.saveGroupState(g, membersOf(g), { left: false });
  const alice = (await Identity.generate()).identity;
  const events: ClientEvent[] = [];
  const carol = standIn("carol");
  const groups = new GroupChats(
    bobsHost(store, events, { carol }, { alice: alice.publicKey }),
    { gapBoundMs: 300 },
  );
  try {
    groups.ready();
    // alice's second message of each group, passed on by carol: each waits for the first.
    for (const g of [left, stays]) {
      const m = {
        group: g.id,
        author: "alice",
        id: crypto.randomUUID(),
        seq: 1,
        ts: now - 2_000,
        prevTs: now - 3_000,
        text: `in ${g.id}`,
      };
      const sig = await alice.sign(groupMessageStatement(m));
      await groups.onPeerMessage(carol, { type: "group_relay", ...m, sig });
    }
    assert.deepEqual(events.filter((e) => e.type === "message"), []);
    await groups.leave(left.id);
    // The wait runs out for both at once: the gap of the group bob is in is reported.
    await until(() => events.some((e) => e.type === "group_gap"), "the gap of the other group");
    const about = (e: ClientEvent) =>
      (e.type === "message" || e.type === "group_gap") && e.group === left.id;
    assert.deepEqual(events.filter(about), [], "nothing of the group bob left");
    assert.ok(events.some((e) => e.type === "message" && e.group === stays.id));
  } finally {
    groups.close();
  }
});

async function until(test: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`not within 10 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

Deno.test("a member who left and was added back while bob did not hear of it is not owed what bob wrote before it came back", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const now = Date.now();
  const state = createGroup(["alice", "bob", "carol"], now - 60_000);
  store.saveGroupState(state, membersOf(state), { left: false });
  // Carol is away; bob writes m1, owed to her.
  const line = { chat: `g:${state.id}`, sender: "bob", outgoing: true, mark: "" as const };
  store.addGroupMessage({ ...line, id: "m1", ts: now - 20_000, text: "one" }, state.id, [
    "alice",
    "carol",
  ]);
  store.settleCopy("m1", "alice", "acked");
  // Meanwhile carol left (her tag tombstoned) and alice added her back; then bob wrote m2.
  const back = addMember(removeMember(state, "carol"), "carol", now - 10_000);
  store.addGroupMessage({ ...line, id: "m2", ts: now - 5_000, text: "two" }, state.id, [
    "alice",
    "carol",
  ]);
  const alice = standIn("alice");
  const groups = new GroupChats(bobsHost(store, [], { alice }, {}));
  try {
    groups.ready();
    await groups.onPeerMessage(alice, { type: "group_state", group: back });
    assert.deepEqual(groups.members(state.id), ["alice", "bob", "carol"]);
    assert.deepEqual(
      store.pendingCopies("carol").map((c) => c.msgId),
      ["m2"],
      "m1 was written before carol came back",
    );
    assert.equal(store.groupMark("m1"), "**", "alice, the one member it is for now, has it");
  } finally {
    groups.close();
  }
});
