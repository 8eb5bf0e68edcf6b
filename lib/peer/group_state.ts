/**
 * Group membership as a convergent, replicated set (an observed-remove set, as in CRDTs):
 * every add creates a unique tag, a remove tombstones the tags it has seen, and merging two
 * states is the union of adds and of tombstones. Members are the users with a live tag.
 *
 * Whatever order changes arrive in, and however many members change the group at the same
 * moment, every member that has seen the same changes holds the same state. A checksum of the
 * state rides on the links (`group_sum`); a mismatch triggers an exchange of full states.
 * Pure: no I/O.
 */

/** Largest group. */
export const MAX_GROUP_MEMBERS = 32;
/** Adds and tombstones kept at most (bounds what a peer can make us store). */
export const MAX_GROUP_TAGS = 1024;

export interface GroupState {
  id: string;
  adds: { user: string; tag: string }[];
  removed: string[];
}

/** A new group with these members (the creator first). */
export function createGroup(members: string[]): GroupState {
  const state: GroupState = { id: crypto.randomUUID(), adds: [], removed: [] };
  for (const user of members) state.adds.push({ user, tag: crypto.randomUUID() });
  return state;
}

/** Current members, as the names were first added, sorted case-insensitively. */
export function membersOf(state: GroupState): string[] {
  const dead = new Set(state.removed);
  const live = new Map<string, string>();
  for (const { user, tag } of state.adds) {
    if (!dead.has(tag) && !live.has(user.toLowerCase())) live.set(user.toLowerCase(), user);
  }
  return [...live.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, u]) => u);
}

export function isMember(state: GroupState, user: string): boolean {
  return membersOf(state).some((m) => m.toLowerCase() === user.toLowerCase());
}

/** Adds a member (a fresh tag: a re-add after a removal works). */
export function addMember(state: GroupState, user: string): GroupState {
  return { ...state, adds: [...state.adds, { user, tag: crypto.randomUUID() }] };
}

/** Removes a member: tombstones every tag of theirs this state has seen. */
export function removeMember(state: GroupState, user: string): GroupState {
  const key = user.toLowerCase();
  const tags = state.adds.filter((a) => a.user.toLowerCase() === key).map((a) => a.tag);
  return { ...state, removed: [...new Set([...state.removed, ...tags])] };
}

/** The union of two states of the same group. Commutative, associative, idempotent. */
export function mergeGroups(a: GroupState, b: GroupState): GroupState {
  if (a.id !== b.id) throw new RangeError("cannot merge states of different groups");
  const adds = new Map<string, { user: string; tag: string }>();
  for (const add of [...a.adds, ...b.adds]) if (!adds.has(add.tag)) adds.set(add.tag, add);
  const removed = new Set([...a.removed, ...b.removed]);
  return {
    id: a.id,
    adds: [...adds.values()].sort((x, y) => (x.tag < y.tag ? -1 : x.tag > y.tag ? 1 : 0)),
    removed: [...removed].sort(),
  };
}

/**
 * A compact checksum of the state (FNV-1a, 64 bits, hex). Not a security measure: links are
 * authenticated; it only tells two members cheaply whether they agree.
 */
export function groupChecksum(state: GroupState): string {
  const canonical = mergeGroups(state, { id: state.id, adds: [], removed: [] });
  const text = JSON.stringify([
    canonical.id,
    canonical.adds.map((a) => [a.tag, a.user.toLowerCase()]),
    canonical.removed,
  ]);
  let hash = 0xcbf29ce484222325n;
  for (let i = 0; i < text.length; i++) {
    hash ^= BigInt(text.charCodeAt(i));
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return hash.toString(16).padStart(16, "0");
}

/** Whether a state is within the limits (checked on everything a peer sends). */
export function withinLimits(state: GroupState): boolean {
  return state.adds.length + state.removed.length <= MAX_GROUP_TAGS &&
    membersOf(state).length <= MAX_GROUP_MEMBERS;
}

/** A short handle for a group, for commands: `#` and the first 6 characters of its id. */
export function groupHandle(id: string): string {
  return `#${id.replaceAll("-", "").slice(0, 6)}`;
}
