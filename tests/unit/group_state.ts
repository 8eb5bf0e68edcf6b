/** Unit tests for the replicated group membership (lib/peer/group_state.ts). */
import assert from "node:assert/strict";
import {
  addMember,
  createGroup,
  groupChecksum,
  groupHandle,
  type GroupState,
  isMember,
  liveTags,
  MAX_GROUP_MEMBERS,
  MAX_GROUP_MEMBERS_ACCEPTED,
  memberSince,
  membersOf,
  mergeGroups,
  removeMember,
  removesLive,
  withinLimits,
} from "../../lib/peer/group_state.ts";

Deno.test("createGroup() makes a group with its members, sorted case-insensitively", () => {
  const g = createGroup(["carol", "Alice", "bob"]);
  assert.deepEqual(membersOf(g), ["Alice", "bob", "carol"]);
  assert.ok(isMember(g, "ALICE"));
  assert.ok(!isMember(g, "dave"));
});

Deno.test("removeMember() then addMember() brings a member back with a fresh tag", () => {
  const g = createGroup(["alice", "bob", "carol"]);
  const without = removeMember(g, "carol");
  assert.deepEqual(membersOf(without), ["alice", "bob"]);
  const back = addMember(without, "carol");
  assert.deepEqual(membersOf(back), ["alice", "bob", "carol"]);
  // Merging with the state that removed her does not remove her again: the new tag is live.
  assert.deepEqual(membersOf(mergeGroups(back, without)), ["alice", "bob", "carol"]);
});

Deno.test("mergeGroups() is commutative, associative and idempotent", () => {
  const base = createGroup(["ann", "ben", "cat"]);
  const a = addMember(base, "dan");
  const b = addMember(base, "eve");
  const c = removeMember(base, "cat");
  const sum = (s: GroupState) => groupChecksum(s);
  assert.equal(sum(mergeGroups(a, b)), sum(mergeGroups(b, a)));
  assert.equal(
    sum(mergeGroups(mergeGroups(a, b), c)),
    sum(mergeGroups(a, mergeGroups(b, c))),
  );
  assert.equal(sum(mergeGroups(a, a)), sum(mergeGroups(a, base)));
  assert.deepEqual(membersOf(mergeGroups(mergeGroups(a, b), c)), ["ann", "ben", "dan", "eve"]);
});

Deno.test("two concurrent adds converge to the same members whatever the order of merges", () => {
  const base = createGroup(["ann", "ben", "cat"]);
  const byAnn = addMember(base, "dan");
  const byBen = addMember(base, "eve");
  const seenByAnn = mergeGroups(byAnn, byBen);
  const seenByBen = mergeGroups(byBen, byAnn);
  const seenByCat = mergeGroups(mergeGroups(base, byBen), byAnn);
  for (const view of [seenByAnn, seenByBen, seenByCat]) {
    assert.deepEqual(membersOf(view), ["ann", "ben", "cat", "dan", "eve"]);
    assert.equal(groupChecksum(view), groupChecksum(seenByAnn));
  }
});

Deno.test("mergeGroups() refuses states of different groups", () => {
  assert.throws(() => mergeGroups(createGroup(["a", "b"]), createGroup(["a", "b"])), RangeError);
});

Deno.test("groupChecksum() differs when membership differs and ignores name case and order", () => {
  const g = createGroup(["alice", "bob"]);
  const plus = addMember(g, "carol");
  assert.notEqual(groupChecksum(g), groupChecksum(plus));
  const reordered: GroupState = { ...plus, adds: [...plus.adds].reverse() };
  assert.equal(groupChecksum(reordered), groupChecksum(plus));
  assert.match(groupChecksum(g), /^[0-9a-f]{16}$/);
});

Deno.test("withinLimits() takes 32 members and room for adds made at once, and refuses more than 40", () => {
  let g = createGroup(["m0"]);
  for (let i = 1; i < MAX_GROUP_MEMBERS; i++) g = addMember(g, `m${i}`);
  assert.equal(membersOf(g).length, 32);
  assert.ok(withinLimits(g));
  for (let i = MAX_GROUP_MEMBERS; i < MAX_GROUP_MEMBERS_ACCEPTED; i++) g = addMember(g, `m${i}`);
  assert.equal(membersOf(g).length, 40);
  assert.ok(withinLimits(g));
  assert.ok(!withinLimits(addMember(g, "one-too-many")));
});

Deno.test("groupHandle() is # and the first six hex digits of the id", () => {
  assert.equal(groupHandle("3f1c2a9e-7b7d-4c1e-9a55-0d4f8c1b2a77"), "#3f1c2a");
});

Deno.test("memberSince() is the time of the live add: a re-add counts from the re-add", () => {
  const g = createGroup(["alice", "bob", "carol"], 1_000);
  assert.equal(memberSince(g, "carol"), 1_000);
  const left = removeMember(g, "carol");
  assert.equal(memberSince(left, "carol"), undefined);
  assert.deepEqual(liveTags(left, "carol"), []);
  const back = addMember(left, "Carol", 5_000);
  assert.equal(memberSince(back, "CAROL"), 5_000);
  assert.equal(liveTags(back, "carol").length, 1);
  // A state without times (from an older peer) owes nothing late.
  const untimed: GroupState = { ...g, adds: g.adds.map(({ user, tag }) => ({ user, tag })) };
  assert.equal(memberSince(untimed, "bob"), undefined);
});

Deno.test("removesLive() spots a state that ends a live membership, not an old one", () => {
  const g = createGroup(["alice", "bob", "carol"]);
  assert.ok(removesLive(g, removeMember(g, "carol"), "carol"));
  assert.ok(!removesLive(g, removeMember(g, "carol"), "bob"));
  // Carol left and was added again: her old leave does not end the new membership.
  const back = addMember(removeMember(g, "carol"), "carol");
  assert.ok(!removesLive(back, removeMember(g, "carol"), "carol"));
  assert.deepEqual(membersOf(mergeGroups(back, removeMember(g, "carol"))), [
    "alice",
    "bob",
    "carol",
  ]);
});

Deno.test("groupChecksum() is 64-bit FNV-1a over the canonical state, as older clients compute it", () => {
  // The reference: FNV-1a in BigInt over the same canonical JSON (members compare checksums,
  // so every version must compute the same one).
  const reference = (state: GroupState): string => {
    const byTag = (x: { tag: string }, y: { tag: string }) =>
      x.tag < y.tag ? -1 : x.tag > y.tag ? 1 : 0;
    const text = JSON.stringify([
      state.id,
      [...state.adds].sort(byTag).map((a) => [a.tag, a.user.toLowerCase()]),
      [...state.removed].sort(),
    ]);
    let hash = 0xcbf29ce484222325n;
    for (let i = 0; i < text.length; i++) {
      hash ^= BigInt(text.charCodeAt(i));
      hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
    }
    return hash.toString(16).padStart(16, "0");
  };
  let state = createGroup(["Alice", "bob", "Zoë"]);
  for (let i = 0; i < MAX_GROUP_MEMBERS; i++) {
    state = addMember(state, `user${i}`);
    assert.equal(groupChecksum(state), reference(state));
  }
  state = removeMember(state, "bob");
  assert.equal(groupChecksum(state), reference(state));
  // Worked out once per state, yet a state whose lists were changed in place is not stale.
  const grown = createGroup(["ann", "ben"]);
  const before = groupChecksum(grown);
  grown.adds.push({ user: "cy", tag: crypto.randomUUID(), at: 1 });
  assert.notEqual(groupChecksum(grown), before);
  assert.equal(groupChecksum(grown), reference(grown));
  assert.ok(isMember(grown, "CY"));
});
