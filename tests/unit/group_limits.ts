/**
 * Tests for lib/client/group_chats.ts: a change of my own that would take a group past what
 * members accept (1,024 joins and leaves recorded) is refused with a reason, and the group is
 * unchanged. Made anyway, every other member would refuse the state, and the group would split
 * for good (a member can bring a group near the bound with one crafted state).
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
  groupChecksum,
  MAX_GROUP_TAGS,
  membersOf,
  mergeGroups,
  removeMember,
  withinLimits,
} from "../../lib/peer/group_state.ts";
import { bobsHost, standIn } from "../support/peer_fixtures.ts";
import { tempDir } from "../support/temp_dir.ts";

Deno.test("adding a member to a group at the bound of joins is refused, and the group stays as it was", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  // Carol's crafted joins and leaves of her own: one short of the bound.
  const state = createGroup(["alice", "bob", "carol"]);
  while (state.adds.length < MAX_GROUP_TAGS - 1) {
    const tag = crypto.randomUUID();
    state.adds.push({ user: "carol", tag, at: Date.now() });
    state.removed.push(tag);
  }
  store.saveGroupState(state, membersOf(state), { left: false });
  const events: ClientEvent[] = [];
  const links = { alice: standIn("alice"), carol: standIn("carol") };
  const groups = new GroupChats({
    ...bobsHost(store, events, links, {}),
    current: state.id,
  });
  try {
    groups.ready();
    // One more fits: dave joins.
    await groups.add("dave");
    assert.deepEqual(groups.members(state.id), ["alice", "bob", "carol", "dave"]);
    const before = groupChecksum(groups.find(state.id)!);
    assert.ok(withinLimits(groups.find(state.id)!));
    // The next would not.
    await assert.rejects(
      groups.add("erin"),
      (e: Error & { code?: string }) =>
        e.code === "GROUP_FULL" && /recorded 1024 joins/.test(e.message),
    );
    assert.equal(groupChecksum(groups.find(state.id)!), before, "unchanged");
    assert.deepEqual(groups.members(state.id), ["alice", "bob", "carol", "dave"]);
  } finally {
    groups.close();
  }
});

Deno.test("two members adding someone at once to a group of 31 do not split it: every member takes both adds", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const names = ["alice", "bob", "carol", ...Array.from({ length: 28 }, (_, i) => `m${i}`)];
  const state = createGroup(names);
  store.saveGroupState(state, membersOf(state), { left: false });
  const links = { alice: standIn("alice"), carol: standIn("carol") };
  const groups = new GroupChats(bobsHost(store, [], links, {}));
  try {
    groups.ready();
    // alice adds dave and carol adds erin, each seeing room for one more.
    const byAlice = addMember(state, "dave");
    const byCarol = addMember(state, "erin");
    await groups.onPeerMessage(links.alice, { type: "group_state", group: byAlice });
    await groups.onPeerMessage(links.carol, { type: "group_state", group: byCarol });
    const both = mergeGroups(byAlice, byCarol);
    assert.equal(membersOf(both).length, 33);
    assert.equal(groupChecksum(groups.find(state.id)!), groupChecksum(both), "bob took both");
    // And carol, who has only hers, is sent the union.
    const toCarol = links.carol.sent.filter((m) => m.type === "group_state").at(-1);
    assert.ok(toCarol?.type === "group_state");
    assert.equal(groupChecksum(toCarol.group), groupChecksum(both));
    // No one adds past 32 meanwhile.
    const adder = new GroupChats({ ...bobsHost(store, [], links, {}), current: state.id });
    try {
      await assert.rejects(
        adder.add("fred"),
        (e: Error & { code?: string }) => e.code === "GROUP_FULL",
      );
    } finally {
      adder.close();
    }
  } finally {
    groups.close();
  }
});

Deno.test("a member's leave in a group at the bound of joins is taken: a leave always fits", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  // As many joins as a group holds (alice's crafted joins and leaves, and the four members).
  const state = createGroup(["alice", "bob", "carol", "dave"]);
  while (state.adds.length < MAX_GROUP_TAGS) {
    const tag = crypto.randomUUID();
    state.adds.push({ user: "alice", tag, at: Date.now() });
    state.removed.push(tag);
  }
  store.saveGroupState(state, membersOf(state), { left: false });
  const carol = standIn("carol");
  const dave = standIn("dave");
  const groups = new GroupChats(bobsHost(store, [], { carol, dave }, {}));
  try {
    groups.ready();
    await groups.onPeerMessage(carol, { type: "group_state", group: removeMember(state, "carol") });
    assert.deepEqual(groups.members(state.id), ["alice", "bob", "dave"], "carol left");
    // Made-up tombstones (of no add) are not kept: they cannot fill the room leaves need.
    const junk = { ...state, removed: Array.from({ length: 1024 }, () => crypto.randomUUID()) };
    await groups.onPeerMessage(dave, { type: "group_state", group: junk });
    assert.equal(groups.find(state.id)!.removed.length, state.removed.length + 1);
  } finally {
    groups.close();
  }
});
