/**
 * Group membership as a convergent, replicated set (an observed-remove set, as in CRDTs):
 * every add creates a unique tag (with the adder's time), a remove tombstones the tags it has
 * seen, and merging two states is the union of adds and of tombstones. Members are the users
 * with a live tag. Clients only ever tombstone their own tags (leaving with `/q`).
 *
 * Whatever order changes arrive in, and however many members change the group at the same
 * moment, every member that has seen the same changes holds the same state. A checksum of the
 * state rides on the links (`group_sum`); a mismatch triggers an exchange of full states.
 * Pure: no I/O.
 */

/** Largest group a member makes by adding someone (`/a`). */
export const MAX_GROUP_MEMBERS = 32;
/**
 * Largest group accepted from a peer: room for adds that members made at the same moment, each
 * seeing room for one more (two `/a` in a group of 31 make 33). With no room, every member
 * refused the union of the others' states, and the group split for good (some saw the one
 * added, some the other, and neither state was ever taken by the other side).
 */
export const MAX_GROUP_MEMBERS_ACCEPTED = MAX_GROUP_MEMBERS + 8;
/**
 * Adds kept at most, and tombstones (bounds what a peer can make us store). A tombstone is kept
 * only beside its add, so a leave, which tombstones adds already counted, always fits: with
 * adds and tombstones counted together, a member's `/q` in a group at the bound made a state
 * every other member refused, and it stayed a member for them.
 */
export const MAX_GROUP_TAGS = 1024;

/** One add: who, its unique tag, and when the adder made it (ms since the epoch). */
export interface GroupAdd {
  user: string;
  tag: string;
  /**
   * The adder's clock when it added them: messages their author sends from then on are for
   * them, also when the author learns of the add later (it was frozen or cut off meanwhile).
   */
  at?: number;
}

export interface GroupState {
  id: string;
  adds: GroupAdd[];
  removed: string[];
}

/** A new group with these members (the creator first). */
export function createGroup(members: string[], now = Date.now()): GroupState {
  const state: GroupState = { id: crypto.randomUUID(), adds: [], removed: [] };
  for (const user of members) state.adds.push({ user, tag: crypto.randomUUID(), at: now });
  return state;
}

/**
 * Members of each state object, worked out once: states are values (every change makes a new
 * one), and a group of 32 asks who is in it at every message, state and endpoint it handles.
 * The counts guard against a state whose lists were changed in place after it was cached.
 */
interface StateView {
  adds: number;
  removed: number;
  members: string[];
  keys: Set<string>;
  sum?: string;
}
const views = new WeakMap<GroupState, StateView>();

function viewOf(state: GroupState): StateView {
  const cached = views.get(state);
  if (
    cached && cached.adds === state.adds.length && cached.removed === state.removed.length
  ) return cached;
  const dead = new Set(state.removed);
  const live = new Map<string, string>();
  for (const { user, tag } of state.adds) {
    if (!dead.has(tag) && !live.has(user.toLowerCase())) live.set(user.toLowerCase(), user);
  }
  const sorted = [...live.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const view: StateView = {
    adds: state.adds.length,
    removed: state.removed.length,
    members: sorted.map(([, u]) => u),
    keys: new Set(sorted.map(([k]) => k)),
  };
  views.set(state, view);
  return view;
}

/** Current members, as the names were first added, sorted case-insensitively. */
export function membersOf(state: GroupState): string[] {
  return [...viewOf(state).members];
}

export function isMember(state: GroupState, user: string): boolean {
  return viewOf(state).keys.has(user.toLowerCase());
}

/** How many members the state has. */
export function memberCount(state: GroupState): number {
  return viewOf(state).members.length;
}

/** Adds a member (a fresh tag: a re-add after a removal works). */
export function addMember(state: GroupState, user: string, now = Date.now()): GroupState {
  return { ...state, adds: [...state.adds, { user, tag: crypto.randomUUID(), at: now }] };
}

/** The tags of `user` that no tombstone covers (empty: not a member). */
export function liveTags(state: GroupState, user: string): string[] {
  const dead = new Set(state.removed);
  const key = user.toLowerCase();
  return state.adds.filter((a) => a.user.toLowerCase() === key && !dead.has(a.tag))
    .map((a) => a.tag);
}

/**
 * When `user` became a member as far as `state` tells: the earliest time on a live add of
 * theirs; undefined when they are not a member or no live add carries a time.
 */
export function memberSince(state: GroupState, user: string): number | undefined {
  const live = new Set(liveTags(state, user));
  const times = state.adds.filter((a) => live.has(a.tag) && a.at !== undefined)
    .map((a) => a.at!);
  return times.length === 0 ? undefined : Math.min(...times);
}

/**
 * Whether merging `incoming` into `mine` would end a membership of `user` that `mine` holds
 * live: only the member itself ever removes itself (`/q`), so a client refuses a state that
 * removes it when it did not leave.
 */
export function removesLive(mine: GroupState, incoming: GroupState, user: string): boolean {
  const tombstones = new Set(incoming.removed);
  return liveTags(mine, user).some((tag) => tombstones.has(tag));
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
  const adds = new Map<string, GroupAdd>();
  for (const add of [...a.adds, ...b.adds]) if (!adds.has(add.tag)) adds.set(add.tag, add);
  // A tombstone of no add is dropped: a member tombstones only tags of its own state, which
  // goes whole, so its adds are always there too; any other is junk a peer made up.
  const removed = new Set([...a.removed, ...b.removed].filter((tag) => adds.has(tag)));
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
  const view = viewOf(state);
  if (view.sum !== undefined) return view.sum;
  const canonical = mergeGroups(state, { id: state.id, adds: [], removed: [] });
  const text = JSON.stringify([
    canonical.id,
    canonical.adds.map((a) => [a.tag, a.user.toLowerCase()]),
    canonical.removed,
  ]);
  // FNV-1a over the UTF-16 code units, in two 32-bit halves (the prime is 2^40 + 0x1b3).
  let hi = 0xcbf29ce4;
  let lo = 0x84222325;
  for (let i = 0; i < text.length; i++) {
    lo = (lo ^ text.charCodeAt(i)) >>> 0;
    const low = lo * 0x1b3;
    const carry = Math.floor(low / 0x100000000);
    hi = (Math.imul(hi, 0x1b3) + carry + (lo << 8)) >>> 0;
    lo = low >>> 0;
  }
  view.sum = hi.toString(16).padStart(8, "0") + lo.toString(16).padStart(8, "0");
  return view.sum;
}

/** Whether a state is within the limits (checked on everything a peer sends). */
export function withinLimits(state: GroupState): boolean {
  return state.adds.length <= MAX_GROUP_TAGS && state.removed.length <= MAX_GROUP_TAGS &&
    memberCount(state) <= MAX_GROUP_MEMBERS_ACCEPTED;
}

/** A short handle for a group, for commands: `#` and the first 6 characters of its id. */
export function groupHandle(id: string): string {
  return `#${id.replaceAll("-", "").slice(0, 6)}`;
}

/** A group message as its author signs it (every field a member passing it on must keep). */
export interface SignedGroupMessage {
  group: string;
  author: string;
  id: string;
  seq: number;
  ts: number;
  /** The send time of the author's previous message to the group; absent for its first. */
  prevTs?: number;
  text: string;
}

/**
 * What an author signs for each group message, so that any member can pass it on to a member
 * who missed it and the receiver can tell it is the author's, unchanged (names lower-cased:
 * names are unique ignoring case; the text last, so its newlines cannot shift a field).
 */
export function groupMessageStatement(m: SignedGroupMessage): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(
    `confab-group-msg-v1\n${m.group}\n${m.author.toLowerCase()}\n${m.id}\n${m.seq}\n${m.ts}\n` +
      `${m.prevTs ?? ""}\n${m.text}`,
  );
}

/**
 * Whether a message of another member sent at `ts` is for `user`: sent once `user` was a
 * member (its earliest live add, by the adder's clock), the rule authors use for members they
 * learn of late, and members use to pass messages on. False when `user` is not a member now.
 */
export function sentWhileMember(state: GroupState, user: string, ts: number): boolean {
  if (!isMember(state, user)) return false;
  const since = memberSince(state, user);
  return since === undefined || ts >= since; // (an add from before adds had times)
}
