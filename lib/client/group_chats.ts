/**
 * Group chats over a full mesh of direct links. Each member holds a link to every other; a
 * message goes from its author to each member directly (the server is never involved).
 *
 * Membership is a replicated set (lib/peer/group_state.ts), stored by every member and
 * rejoined after a restart. It changes only by an add (`/a`, by a member) or by a member
 * leaving itself (`/q`); nothing else removes anyone. A member whose link is down (crashed,
 * frozen, cut off, logged out) is *away*, not gone: it stays in everyone's member list, its
 * copies of messages wait in their authors' outboxes, links are dialed again until it is back,
 * and then it gets what it missed, in order, inside the group.
 *
 * Views converge: every change is sent to the members linked now, a link that comes up carries
 * both states at once, and every two seconds each link carries a checksum of each shared group.
 */
import type { PeerMessage } from "../protocol/messages.ts";
import { GroupStateSchema, MAX_GROUP_ENDPOINTS, MAX_GROUP_MARKS } from "../protocol/messages.ts";
import type { PeerLink } from "../peer/peer_link.ts";
import {
  addMember,
  createGroup,
  groupChecksum,
  groupHandle,
  groupMessageStatement,
  type GroupState,
  isMember,
  liveTags,
  MAX_GROUP_MEMBERS,
  MAX_GROUP_TAGS,
  memberSince,
  membersOf,
  mergeGroups,
  removeMember,
  removesLive,
  sentWhileMember,
  withinLimits,
} from "../peer/group_state.ts";
import { verifySignature } from "../crypto/ed25519.ts";
import { type ClientStore, groupChat, type LoggedGroupMessage } from "./client_store.ts";
import type { ClientEvent } from "./events.ts";

/** What the group layer needs from the client core. */
export interface GroupHost {
  readonly user: string;
  readonly store: ClientStore;
  emit(event: ClientEvent): void;
  /** An open link to `user`, dialing them if needed. */
  link(user: string): Promise<PeerLink>;
  /** The open link to `user`, if there is one. */
  openLink(user: string): PeerLink | undefined;
  /**
   * Stores my message to `group` with a copy owed to each of `members()` (asked when it is
   * stored) and sends them (the delivery room's rules, shared with 1:1 messages).
   */
  sendGroup(
    group: string,
    members: () => string[],
    text: string,
  ): Promise<"delivered" | "queued">;
  /** Sends the copies owed to `member` now (after it became owed more). */
  kick(member: string): void;
  /** Says who has my group message `msgId` now (`group_status`). */
  status(msgId: string, group: string): void;
  /** Tells the core which group window is open (undefined: none). */
  setCurrent(groupId: string | undefined): void;
  readonly current: string | undefined;
  /** The 1:1 chat partner, if the open window is a 1:1 chat. */
  readonly chatPartner: string | undefined;
  /** Where others can dial me: my address as the server sees it, and my peer port. */
  selfEndpoint(): { host: string; port: number } | undefined;
  /**
   * Whether `user` and I are mutual contacts (the server's word; while it is away, the last
   * list it gave): only they may add me to a group. Undefined when that cannot be told now
   * (the server away, and no list yet): the invitation waits for {@link GroupChats.contactsKnown}.
   */
  isContact(user: string): Promise<boolean | undefined>;
  /**
   * `user`'s identity key: the one pinned at first contact, else the directory's (pinned now);
   * undefined when neither can be had.
   */
  keyOf(user: string): Promise<string | undefined>;
}

/** Refused invitations remembered (so each is told about once); then forgotten at once. */
const MAX_REFUSALS_KEPT = 256;
/** Most invitations kept waiting for the server to say whether their senders are contacts. */
const MAX_PENDING_INVITATIONS = 64;
/** How often members compare group checksums on each link. */
const SUM_INTERVAL_MS = 2_000;
/**
 * A change learned from one member is passed on to the others as a checksum, after this long
 * (plus up to as much again, at random): those who lack it answer with their state and get the
 * merged one back; those who have it (from the member who made the change, most often) answer
 * nothing. Full states to everyone from everyone made a join cost n² states.
 */
const PASS_ON_MS = 200;
/** How often away members are considered for a new dial. */
const TICK_MS = 250;
/** First and longest wait between two dials of an away member. */
const REDIAL_MIN_MS = 250;
const REDIAL_MAX_MS = 4_000;

/** Every so many checksum rounds, each link also carries my marks (`group_marks`). */
const MARKS_EVERY = 5;
/** At most this many messages, and about this many bytes of text, per batch passed on. */
const RELAY_BATCH = 256;
const RELAY_BYTES = 1024 * 1024;
/**
 * Messages passed on that wait for an earlier one: at most this many, of at most this much text
 * in all (4,096 texts of 64 Ki characters would be 256 MiB, which a member signing its own
 * messages and leaving one out could make us hold), for this long.
 */
const MAX_HELD = 4_096;
const MAX_HELD_TEXT = 16 * 1024 * 1024;
const GAP_BOUND_MS = 30_000;
/**
 * A member's marks are answered at most this often per group (more often is ignored: a member
 * cannot make me send batch after batch); it asks for the next batch after this long.
 */
const RELAY_GAP_MS = 200;
/**
 * A message younger than this is not passed on yet (the member is asked to ask again once it is
 * old enough): it is most likely on its way from its author, and marks exchanged while messages
 * flow lag by the ones in flight (in a busy 32-member group every member passed each of them on
 * to dozens of members).
 */
const RELAY_MIN_AGE_MS = 2_000;
const MORE_AFTER_MS = 250;
/**
 * How long `/q` waits at most for my messages on their way to the members linked now (one ack
 * timeout): a member that does not answer gets them from the others, or not at all.
 */
const LEAVE_FLUSH_MS = 5_000;
/** Send times kept per author (see GroupChats.#recentTs). */
const RECENT_KEPT = 64;

/** A group message on the wire. */
type GroupFrame = Extract<PeerMessage, { type: "group_msg" }>;
type RelayFrame = Extract<PeerMessage, { type: "group_relay" }>;
/** A message passed on that waits for an earlier one of its author. */
type Held = { m: RelayFrame; by: string; at: number };
/** Where a member can be dialed, and since when. */
type Endpoint = Extract<PeerMessage, { type: "group_where" }>["endpoints"][number];

/** Reads a stored state back; undefined when it is not a valid one. */
function parseState(json: string): GroupState | undefined {
  try {
    const parsed = GroupStateSchema.safeParse(JSON.parse(json));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export class GroupChats {
  readonly #host: GroupHost;
  /** The replicated state of each group I am in. */
  readonly #groups = new Map<string, GroupState>();
  /**
   * Groups I left, with my last state (my own tags tombstoned): a member who was away when I
   * left learns it from this when it talks to me about the group.
   */
  readonly #left = new Map<string, GroupState>();
  /** Refused invitations already told about (group id and name key). */
  readonly #refusals = new Set<string>();
  /**
   * Invitations that came while no one could say whether their senders are contacts (key:
   * group id and name key), the latest state of each; see {@link contactsKnown}.
   */
  readonly #pendingInvitations = new Map<string, { link: PeerLink; state: GroupState }>();
  /** Users whose link I announced as up (name keys). */
  readonly #linked = new Set<string>();
  /** Members I said were away (name keys): their next link up is news ("is back"). */
  readonly #away = new Set<string>();
  /** When to dial each away member next, and the wait after that (name keys). */
  readonly #redial = new Map<string, { at: number; wait: number }>();
  readonly #dialing = new Set<string>();
  /** Where fellow members said they can be dialed (name keys), newest kept. */
  readonly #endpoints = new Map<string, Endpoint>();
  /** My own, as last told. */
  #mine: Endpoint | undefined;
  /** The checksum each member last told for each group (key: group and member), and when. */
  readonly #theirSums = new Map<string, { sum: string; at: number }>();
  /** My messages to each group on their way (stored, then sent to the members linked now). */
  readonly #sending = new Map<string, Set<Promise<unknown>>>();
  /** Groups I am leaving: my messages on their way go first (see {@link leave}). */
  readonly #leaving = new Set<string>();
  /** Groups with a change waiting to be passed on (see {@link PASS_ON_MS}). */
  readonly #passOn = new Set<string>();
  readonly #sumTimer: ReturnType<typeof setInterval>;
  readonly #tickTimer: ReturnType<typeof setInterval>;
  #closed = false;
  #restored = false;
  readonly #gapBoundMs: number;
  readonly #maxHeldText: number;
  #sumRounds = 0;
  /**
   * Messages passed on by members that wait for an earlier message of the same author (key:
   * group and author), by seq; and how many in all.
   */
  readonly #held = new Map<string, Map<number, Held>>();
  #heldCount = 0;
  #heldText = 0;
  /** Members who asked for more (`group_relay_more`) and are answered shortly (group, name). */
  readonly #moreAsked = new Set<string>();
  /** One-off waits, cleared at close. */
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  /** Members to be asked again for their marks (key: group and member; see RELAY_MIN_AGE_MS). */
  readonly #askAgain = new Set<string>();
  /**
   * How far I passed on each author's messages on a link whose member's full marks left that
   * author out (key: group and author): the next batch goes on from there (see #onMarks). Per
   * link: what went on a link that died may not have arrived.
   */
  readonly #passedOn = new WeakMap<PeerLink, Map<string, number>>();
  /** When I last passed on a batch, per member and group (key: group and member). */
  readonly #relayedAt = new Map<string, number>();
  /**
   * The send times of each author's last few messages I stored (key: group and author; seq →
   * ts): a member's marks that lag only by those need no read of the store (see #onMarks).
   */
  readonly #recentTs = new Map<string, Map<number, number>>();

  /**
   * @param options.gapBoundMs how long a message passed on waits for an earlier one before the
   * gap is reported (tests shorten it).
   * @param options.maxHeldText how much text such messages may hold in all (tests lower it).
   */
  constructor(host: GroupHost, options: { gapBoundMs?: number; maxHeldText?: number } = {}) {
    this.#host = host;
    this.#gapBoundMs = options.gapBoundMs ?? GAP_BOUND_MS;
    this.#maxHeldText = options.maxHeldText ?? MAX_HELD_TEXT;
    this.#sumTimer = setInterval(() => this.#exchangeSums(), SUM_INTERVAL_MS);
    this.#tickTimer = setInterval(() => {
      this.#dialAway();
      this.#checkGaps();
    }, TICK_MS);
    this.#load();
  }

  /**
   * The session can work (after the login, and after each re-attach to the server): the first
   * time, stored groups are rejoined; later, away members are dialed at once (lookups work
   * again).
   */
  ready(): void {
    if (this.#restored) return this.onServerBack();
    this.#restored = true;
    this.#restore();
  }

  /**
   * Reads the groups stored by earlier sessions, at once: a link that comes up before the
   * session is ready (a member dialed us as soon as the server said we are back) finds them, and
   * their states are news about groups I am in, not invitations (an invitation starts my marks
   * afresh, and what I missed would wait for the gap bound).
   */
  #load(): void {
    const host = this.#host;
    for (const row of host.store.storedGroups()) {
      const state = parseState(row.state);
      if (!state) continue;
      if (row.left || !isMember(state, host.user)) this.#left.set(state.id, state);
      else this.#groups.set(state.id, state);
    }
  }

  /**
   * Rejoins the groups stored by earlier sessions: no one needs to add us back. Links to their
   * members come up on their own.
   */
  #restore(): void {
    for (const state of this.#groups.values()) {
      this.#host.emit({
        type: "group_rejoined",
        group: state.id,
        handle: groupHandle(state.id),
        members: membersOf(state),
      });
    }
    this.#dialAway();
  }

  /** The group with this id, or with this handle (`#3f1c2a`). */
  find(idOrHandle: string): GroupState | undefined {
    const direct = this.#groups.get(idOrHandle);
    if (direct) return direct;
    for (const g of this.#groups.values()) {
      if (groupHandle(g.id) === idOrHandle.toLowerCase()) return g;
    }
    return undefined;
  }

  /** Groups I am in now. */
  active(): GroupState[] {
    return [...this.#groups.values()];
  }

  members(id: string): string[] {
    const state = this.#groups.get(id);
    return state ? membersOf(state) : [];
  }

  /** True when `user` is a member of my group `id` (any case). */
  isMember(id: string, user: string): boolean {
    const state = this.#groups.get(id);
    return state !== undefined && isMember(state, user);
  }

  /** True when `user` is a member shown as away (their link went, and is not back yet). */
  isAway(user: string): boolean {
    return this.#away.has(user.toLowerCase());
  }

  /** True when `user` is in a group with me (a reason to accept their link). */
  sharesGroupWith(user: string): boolean {
    if (this.#isMe(user)) return false;
    for (const state of this.#groups.values()) if (isMember(state, user)) return true;
    return false;
  }

  /**
   * `/a user` in a chat: a 1:1 chat becomes a new group of three; in a group, `user` joins.
   * The caller has checked that `user` is an online contact and reachable.
   */
  async add(user: string): Promise<GroupState> {
    const host = this.#host;
    const currentId = host.current;
    if (currentId !== undefined) {
      const current = this.#groups.get(currentId);
      if (!current) throw new GroupError("NOT_IN_CHAT", "that group is closed");
      if (isMember(current, user)) {
        throw new GroupError("BAD_COMMAND", `${user} is already in the group`);
      }
      if (membersOf(current).length >= MAX_GROUP_MEMBERS) {
        throw new GroupError(
          "GROUP_FULL",
          `the group is full (${MAX_GROUP_MEMBERS} members at most); nobody was added`,
        );
      }
      const added = addMember(current, user);
      if (!withinLimits(added)) {
        // Every member would refuse the new state, and the group would split.
        throw new GroupError(
          "GROUP_FULL",
          `the group has recorded ${MAX_GROUP_TAGS} joins, the most it can hold; ` +
            `nobody was added (start a new group: chat ${user}, then /a)`,
        );
      }
      this.#apply(currentId, added);
      await this.#broadcast(currentId);
      return this.#groups.get(currentId)!;
    }
    const partner = host.chatPartner;
    if (partner === undefined) {
      throw new GroupError("NOT_IN_CHAT", "add people from inside a chat: chat <user>, then /a");
    }
    if (partner.toLowerCase() === user.toLowerCase()) {
      throw new GroupError("BAD_COMMAND", `you are already chatting with ${user}`);
    }
    const state = createGroup([host.user, partner, user]);
    this.#adopt(state);
    host.setCurrent(state.id);
    host.emit(this.#opened(state, host.user));
    await this.#broadcast(state.id);
    return state;
  }

  /**
   * `/q` in a group: leave it; the others carry on. My own tags are tombstoned and that state
   * is sent to every member linked now; the others learn it from them, or from me when they
   * next talk to me about the group.
   */
  async leave(id: string): Promise<void> {
    if (!this.#groups.has(id) || this.#leaving.has(id)) return;
    this.#leaving.add(id);
    // My lines typed before go first to every member linked now, and only then the state that
    // says I left: a member who learns it first refuses them, and my copies are dropped at the
    // leave (a line typed just before /q was stored owed to nobody, marked as everyone's).
    const sending = [...this.#sending.get(id) ?? []];
    if (sending.length > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled(sending),
        new Promise((resolve) => timer = setTimeout(resolve, LEAVE_FLUSH_MS)),
      ]);
      clearTimeout(timer);
    }
    if (this.#leaving.delete(id)) this.#leaveNow(id);
  }

  /** {@link leave}, at once. */
  #leaveNow(id: string): void {
    const host = this.#host;
    const state = this.#groups.get(id);
    if (!state) return;
    const final = removeMember(state, host.user);
    for (const member of this.#others(id)) {
      host.openLink(member)?.fc.send({ type: "group_state", group: final }).catch(() => {});
      this.#dropCopies(id, member);
    }
    this.#groups.set(id, final);
    this.#close(id, "you left");
  }

  /**
   * Sends a message to every other member, by the delivery room's rules: stored first with a
   * copy owed to each member, each copy acked by its member, a member away now gets it when
   * back. Resolves once each member's copy was acked or has to wait.
   * @returns "delivered" when every member has it, else "queued".
   */
  async send(id: string, text: string): Promise<"delivered" | "queued"> {
    if (!this.#groups.has(id) || this.#leaving.has(id)) {
      throw new GroupError("NOT_IN_CHAT", "that group is closed");
    }
    const sending = this.#host.sendGroup(id, () => this.#others(id), text);
    const all = this.#sending.get(id) ?? new Set();
    this.#sending.set(id, all.add(sending));
    try {
      return await sending;
    } finally {
      all.delete(sending);
      if (all.size === 0 && this.#sending.get(id) === all) this.#sending.delete(id);
    }
  }

  #dropCopies(group: string, member: string): void {
    const host = this.#host;
    for (const id of host.store.dropCopies(group, member)) host.status(id, group);
  }

  /** Handles a group message from a peer link. Returns false if it is not a group message. */
  async onPeerMessage(link: PeerLink, m: PeerMessage): Promise<boolean> {
    switch (m.type) {
      case "group_state":
        await this.#onState(link, m.group);
        return true;
      case "group_sum": {
        const mine = this.#groups.get(m.group) ?? this.#left.get(m.group);
        this.#toldSum(m.group, link.user, m.sum);
        if (mine && groupChecksum(mine) !== m.sum) {
          await link.fc.send({ type: "group_state", group: mine }).catch(() => {});
        }
        return true;
      }
      case "group_msg":
        await this.#onMessage(link, m);
        return true;
      case "group_where":
        this.#onWhere(link, m);
        return true;
      case "group_refused":
        this.#onRefused(link, m.group);
        return true;
      case "group_marks":
        await this.#onMarks(link, m);
        return true;
      case "group_relay":
        await this.#onRelay(link, m);
        return true;
      case "group_relay_more":
        // After the relaying member's limit, so the request is not ignored; once however
        // often it is asked meanwhile (a timer each would let a peer pile them up).
        {
          const state = this.#groups.get(m.group);
          if (!state || !isMember(state, link.user)) return true;
          const asked = this.#memberKey(m.group, link.user);
          if (this.#moreAsked.has(asked)) return true;
          this.#moreAsked.add(asked);
          const timer = setTimeout(() => {
            this.#timers.delete(timer);
            this.#moreAsked.delete(asked);
            this.#sendMarks(link, m.group);
          }, MORE_AFTER_MS);
          this.#timers.add(timer);
        }
        return true;
      default:
        return false;
    }
  }

  async #onMessage(link: PeerLink, m: GroupFrame): Promise<void> {
    const state = this.#groups.get(m.group);
    if (!state || !isMember(state, link.user)) {
      // I left, or I do not count them yet: not now. My state tells them why; they merge it,
      // answer with theirs if it has more, and try again.
      await link.fc.send({ type: "busy", id: m.id }).catch(() => {});
      const mine = state ?? this.#left.get(m.group);
      if (mine) await link.fc.send({ type: "group_state", group: mine }).catch(() => {});
      return;
    }
    // The link proves the author. The signature is what lets me pass the message on: it is
    // kept as it came and checked when I pass the message on (one that does not verify is
    // never passed on), not here: few messages are ever passed on, and a check at every
    // message was a quarter of a member's work.
    // From its author, a message comes in the author's order (each copy goes only after the
    // one before was acked): shown at once.
    this.#store(m.group, { ...m, author: link.user }, { sig: m.sig, by: undefined });
    // Acknowledged once stored, also a duplicate (our first ack may have been lost).
    await link.fc.send({ type: "ack", id: m.id }).catch(() => {});
    this.#drain(m.group, link.user);
  }

  /**
   * Stores a group message of another member and shows it (once: a duplicate is neither), and
   * moves my mark for its author past it.
   */
  #store(
    group: string,
    m: { author: string; id: string; seq: number; ts: number; prevTs?: number; text: string },
    options: { sig: string | undefined; by: string | undefined },
  ): void {
    const host = this.#host;
    const fresh = host.store.addGroupReceived(
      {
        id: m.id,
        chat: groupChat(group),
        sender: m.author,
        ts: m.ts,
        text: m.text,
        outgoing: false,
        mark: "**",
      },
      group,
      {
        seq: m.seq,
        ...(m.prevTs !== undefined ? { prevTs: m.prevTs } : {}),
        ...(options.sig !== undefined ? { sig: options.sig } : {}),
        next: m.seq + 1,
      },
    );
    if (!fresh) return;
    const key = this.#memberKey(group, m.author);
    const recent = this.#recentTs.get(key) ?? new Map<number, number>();
    recent.set(m.seq, m.ts);
    if (recent.size > RECENT_KEPT) recent.delete(recent.keys().next().value!);
    this.#recentTs.set(key, recent);
    host.emit({
      type: "message",
      id: m.id,
      from: m.author,
      ts: m.ts,
      text: m.text,
      inChat: host.current === group,
      via: options.by === undefined ? "direct" : "member",
      group,
      ...(options.by !== undefined ? { relayedBy: options.by } : {}),
    });
  }

  /**
   * Whether `sig` is `author`'s signature of the message, by their pinned key: "unknown" when
   * no key for them can be had now (neither pinned nor from the directory).
   */
  async #signedBy(
    author: string,
    m: { group: string; id: string; seq: number; ts: number; prevTs?: number; text: string },
    sig: string,
  ): Promise<boolean | "unknown"> {
    const key = await this.#host.keyOf(author);
    if (key === undefined) return "unknown";
    return await verifySignature(key, sig, groupMessageStatement({ ...m, author }));
  }

  // ---- catch-up: members pass on what a member missed ------------------------------------------

  /** Tells `link`'s user how far I have each author's messages in `group`. */
  #sendMarks(
    link: PeerLink,
    group: string,
    marks: () => { author: string; next: number }[] = () => this.#host.store.groupHeads(group),
  ): void {
    if (!this.#groups.has(group)) return;
    link.fc.send({ type: "group_marks", group, marks: marks() }).catch(() => {});
  }

  /**
   * A member told how far it has each author's messages: I pass on, signed by their authors,
   * the messages I hold that it lacks and that were sent while it was a member (never my own:
   * those go from my outbox, acked). At most one batch; it asks for more.
   */
  async #onMarks(link: PeerLink, m: Extract<PeerMessage, { type: "group_marks" }>): Promise<void> {
    const host = this.#host;
    const state = this.#groups.get(m.group);
    if (!state || !isMember(state, link.user)) return;
    const asked = this.#memberKey(m.group, link.user);
    const now = Date.now();
    if (now - (this.#relayedAt.get(asked) ?? 0) < RELAY_GAP_MS) return;
    this.#relayedAt.set(asked, now);
    if (this.#relayedAt.size > 4 * MAX_GROUP_MEMBERS * 64) this.#relayedAt.clear();
    const since = memberSince(state, link.user) ?? 0;
    const marks = new Map(m.marks.map((x) => [x.author.toLowerCase(), x.next]));
    let budget = RELAY_BATCH;
    let bytes = 0;
    let young = false;
    // How far I have each author: where they are as far as I am, nothing is read.
    const heads = new Map(
      host.store.groupHeads(m.group).map((h) => [h.author.toLowerCase(), h.next]),
    );
    // Marks name 64 authors at most: a full list may leave out authors it has (a group of long
    // standing has had more), which are passed on from where the last batch to this member ended,
    // not from the start at every exchange (every 250 ms, while a batch ended with "more").
    const full = m.marks.length >= MAX_GROUP_MARKS;
    const passedOn = this.#passedOn.get(link) ?? new Map<string, number>();
    this.#passedOn.set(link, passedOn);
    for (const author of host.store.loggedAuthors(m.group)) {
      if (this.#isMe(author) || author.toLowerCase() === link.user.toLowerCase()) continue;
      const listed = marks.get(author.toLowerCase());
      const leftOut = full && listed === undefined ? this.#memberKey(m.group, author) : undefined;
      const from = listed ?? (leftOut !== undefined ? passedOn.get(leftOut) : 0) ?? 0;
      const mine = heads.get(author.toLowerCase());
      if (mine !== undefined && mine <= from) continue;
      // The first one they lack came to me just now: it and the later ones are young (below).
      const firstTs = this.#recentTs.get(this.#memberKey(m.group, author))?.get(from);
      if (firstTs !== undefined && now - firstTs >= 0 && now - firstTs < RELAY_MIN_AGE_MS) {
        if (!host.openLink(author)) young = true;
        continue;
      }
      const batch = host.store.loggedMessages(m.group, author, { from, since, limit: budget + 1 });
      for (const msg of batch) {
        if (budget === 0 || bytes >= RELAY_BYTES) {
          await link.fc.send({ type: "group_relay_more", group: m.group }).catch(() => {});
          return;
        }
        const age = now - msg.ts;
        if (age >= 0 && age < RELAY_MIN_AGE_MS) {
          // (The author's later ones are younger still.) An author linked to me is alive: its
          // outbox sends what it owes them, and the periodic marks catch anything else. Asked
          // again at every such message, each link of a busy group swapped marks every 2 s.
          if (!host.openLink(author)) young = true;
          break;
        }
        budget--;
        // Only what its author signed (checked now: it was kept unchecked when it came).
        if (await this.#signedBy(msg.author, { group: m.group, ...msg }, msg.sig) !== true) {
          continue;
        }
        bytes += msg.text.length;
        await link.fc.send(relayFrame(m.group, msg)).catch(() => {});
        if (leftOut !== undefined) {
          if (passedOn.size >= 64 * MAX_GROUP_TAGS) passedOn.clear(); // (groups × authors)
          passedOn.set(leftOut, msg.seq + 1);
        }
      }
    }
    // Asked again once those are old enough (by then they most likely came from their author).
    if (young && !this.#askAgain.has(asked)) {
      this.#askAgain.add(asked);
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        this.#askAgain.delete(asked);
        link.fc.send({ type: "group_relay_more", group: m.group }).catch(() => {});
      }, RELAY_MIN_AGE_MS);
      this.#timers.add(timer);
    }
  }

  /**
   * Another member's message passed on by `link`'s user: kept only when its author signed it
   * (checked against the author's pinned key) and it was sent while I was a member; shown in
   * its author's order, a later one waiting (bounded) for the one before.
   */
  async #onRelay(link: PeerLink, m: RelayFrame): Promise<void> {
    const host = this.#host;
    const state = this.#groups.get(m.group);
    if (!state || !isMember(state, link.user)) return;
    const author = m.author;
    const byAuthor = author.toLowerCase() === link.user.toLowerCase();
    if (this.#isMe(author) || byAuthor || !sentWhileMember(state, host.user, m.ts)) return;
    if (!state.adds.some((a) => a.user.toLowerCase() === author.toLowerCase())) {
      return this.#refused(link, m, `${author} was never a member of the group`);
    }
    if (host.store.hasMessage(author, m.id)) return;
    const key = this.#memberKey(m.group, author);
    if (this.#held.get(key)?.has(m.seq)) return;
    const signed = await this.#signedBy(author, m, m.sig);
    // No key to check it with (the server is away and we never met): not now; it is passed on
    // again at a later exchange.
    if (signed === "unknown") return;
    if (!signed) return this.#refused(link, m, `not signed by ${author}'s identity key`);
    const head = host.store.groupHead(m.group, author);
    // The one before was for me too (sent while I was a member): wait for it first.
    const before = m.prevTs !== undefined && sentWhileMember(state, host.user, m.prevTs);
    if (head === undefined ? !before : m.seq <= head) {
      // Next in line (or one that came after I gave up waiting for it: shown late, once).
      this.#store(m.group, m, { sig: m.sig, by: link.user });
      this.#drain(m.group, author);
      return;
    }
    // Past the bounds: passed on again at the next exchange.
    if (this.#heldCount >= MAX_HELD || this.#heldText + m.text.length > this.#maxHeldText) return;
    const held = this.#held.get(key) ?? new Map<number, Held>();
    held.set(m.seq, { m, by: link.user, at: Date.now() });
    this.#held.set(key, held);
    this.#heldCount++;
    this.#heldText += m.text.length;
  }

  #refused(link: PeerLink, m: RelayFrame, reason: string): void {
    this.#host.emit({
      type: "group_relay_refused",
      group: m.group,
      handle: groupHandle(m.group),
      from: link.user,
      author: m.author,
      id: m.id,
      reason,
    });
  }

  /** The key of a group and a user (by name, any case) in the maps of this class. */
  #memberKey(group: string, user: string): string {
    return `${group}\n${user.toLowerCase()}`;
  }

  /** Shows the held messages of `author` that are next in line now. */
  #drain(group: string, author: string): void {
    const key = this.#memberKey(group, author);
    const held = this.#held.get(key);
    if (!held) return;
    const host = this.#host;
    for (const seq of [...held.keys()].sort((a, b) => a - b)) {
      const head = host.store.groupHead(group, author);
      if (head !== undefined && seq > head) break;
      const { m, by } = held.get(seq)!;
      held.delete(seq);
      this.#heldCount--;
      this.#heldText -= m.text.length;
      this.#store(group, m, { sig: m.sig, by });
    }
    if (held.size === 0) this.#held.delete(key);
  }

  /**
   * Gives up waiting for messages no member could pass on within the gap bound: says
   * so, and shows the later ones (the missing ones are shown if they come after all).
   */
  #checkGaps(): void {
    const now = Date.now();
    const host = this.#host;
    for (const held of [...this.#held.values()]) {
      const oldest = Math.min(...[...held.values()].map((h) => h.at));
      if (now - oldest < this.#gapBoundMs) continue;
      const first = Math.min(...held.keys());
      const { m } = held.get(first)!;
      const head = host.store.groupHead(m.group, m.author);
      host.emit({
        type: "group_gap",
        group: m.group,
        handle: groupHandle(m.group),
        author: m.author,
        ...(head !== undefined ? { missing: first - head } : {}),
      });
      host.store.skipGroupGap(m.group, m.author, first);
      this.#drain(m.group, m.author);
    }
  }

  #dropHeld(key: string): void {
    for (const { m } of this.#held.get(key)?.values() ?? []) {
      this.#heldCount--;
      this.#heldText -= m.text.length;
    }
    this.#held.delete(key);
  }

  async #onState(link: PeerLink, incoming: GroupState): Promise<void> {
    const host = this.#host;
    if (!withinLimits(incoming)) return;
    const mine = this.#groups.get(incoming.id);
    if (!mine) return await this.#onOtherState(link, incoming);
    let merged = mergeGroups(mine, incoming);
    // Only members (in my view, or added by this state) may change the group.
    if (!isMember(mine, link.user) && !isMember(merged, link.user)) return;
    if (!withinLimits(merged)) return;
    this.#toldSum(incoming.id, link.user, groupChecksum(incoming));
    const readded = removesLive(mine, incoming, host.user);
    if (readded) {
      // Only I remove myself, and I did not: a fresh tag of mine puts me back everywhere.
      merged = addMember(merged, host.user);
    }
    const changed = groupChecksum(merged) !== groupChecksum(mine);
    if (changed) this.#apply(incoming.id, merged);
    if (!this.#groups.has(incoming.id)) return;
    if (groupChecksum(merged) !== groupChecksum(incoming)) {
      this.#toldSum(incoming.id, link.user, groupChecksum(merged));
      await link.fc.send({ type: "group_state", group: merged }).catch(() => {});
    }
    // A change of my own (back in) goes to everyone at once; one I learned, as a checksum.
    if (readded && changed) await this.#broadcast(incoming.id, link.user);
    else if (changed) this.#schedulePassOn(incoming.id);
  }

  /** What `user` told (or was just sent) as their checksum of `group`. */
  #toldSum(group: string, user: string, sum: string): void {
    const key = this.#memberKey(group, user);
    this.#theirSums.delete(key); // (re-inserted last: the oldest go first below)
    this.#theirSums.set(key, { sum, at: Date.now() });
    if (this.#theirSums.size > 4 * MAX_GROUP_MEMBERS * 64) {
      this.#theirSums.delete(this.#theirSums.keys().next().value!);
    }
  }

  /** Passes a change I learned on to the members not known to have it, shortly (coalesced). */
  #schedulePassOn(group: string): void {
    if (this.#passOn.has(group) || this.#closed) return;
    this.#passOn.add(group);
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      this.#passOn.delete(group);
      const state = this.#groups.get(group);
      if (!state) return;
      const sum = groupChecksum(state);
      for (const member of this.#others(group)) {
        if (this.#theirSums.get(this.#memberKey(group, member))?.sum === sum) continue;
        this.#host.openLink(member)?.fc.send({ type: "group_sum", group, sum }).catch(() => {});
      }
    }, PASS_ON_MS * (1 + Math.random()));
    this.#timers.add(timer);
  }

  /** A state of a group I am not in: an invitation, a re-add, or news for a group I left. */
  async #onOtherState(link: PeerLink, incoming: GroupState): Promise<void> {
    const host = this.#host;
    let state = incoming;
    const left = this.#left.get(incoming.id);
    if (left) {
      // Back in only if this state adds me anew (a tag of mine my leave did not tombstone).
      state = mergeGroups(left, incoming);
      // Within the limits as any state I hold: each state alone may be, and a union of them
      // grew with every crafted one (anyone linked who knows the group's id could send them).
      if (!withinLimits(state)) return;
      if (liveTags(state, host.user).length === 0 || !isMember(state, link.user)) {
        this.#left.set(incoming.id, state);
        if (groupChecksum(state) !== groupChecksum(incoming)) {
          await link.fc.send({ type: "group_state", group: state }).catch(() => {});
        }
        return;
      }
    }
    // An invitation: only from a member, and only to a group that has us in it.
    if (!isMember(state, link.user) || !isMember(state, host.user)) return;
    if (!withinLimits(state)) return;
    // And only from a mutual contact: a fellow member of one group who is not my contact
    // (linked to me for that group) cannot pull me into groups of theirs.
    const contact = await host.isContact(link.user);
    if (contact === undefined) return this.#hold(link, incoming);
    if (!contact) return await this.#refuse(link, state);
    // Adopted meanwhile (another member's copy came while the server was asked): a merge.
    if (this.#groups.has(incoming.id)) return await this.#onState(link, incoming);
    if (left) this.#left.delete(incoming.id);
    this.#adopt(state);
    const partner = host.chatPartner;
    const idle = host.current === undefined && partner === undefined;
    if (idle || partner?.toLowerCase() === link.user.toLowerCase()) {
      host.setCurrent(state.id);
      host.emit(this.#opened(state, link.user));
    } else {
      host.emit({
        type: "group_invited",
        group: state.id,
        handle: groupHandle(state.id),
        by: link.user,
        members: membersOf(state),
      });
    }
    if (groupChecksum(state) !== groupChecksum(incoming)) {
      await link.fc.send({ type: "group_state", group: state }).catch(() => {});
    }
  }

  /**
   * Keeps an invitation whose sender may or may not be a contact (the server away, no list yet)
   * until the server says, telling the user once. Neither taken nor refused: a contact's
   * invitation refused for want of a server would leave their group without me, and a stranger's
   * taken would let anyone who can reach me pull me into groups.
   */
  #hold(link: PeerLink, state: GroupState): void {
    const key = this.#memberKey(state.id, link.user);
    const told = this.#pendingInvitations.delete(key);
    if (this.#pendingInvitations.size >= MAX_PENDING_INVITATIONS) {
      this.#pendingInvitations.delete(this.#pendingInvitations.keys().next().value!);
    }
    this.#pendingInvitations.set(key, { link, state });
    if (told) return;
    this.#host.emit({
      type: "info",
      text: `${link.user} invites you to group ${groupHandle(state.id)}; it is taken once the ` +
        `server confirms ${link.user} is a contact (the server cannot be reached now)`,
    });
  }

  /**
   * The server has given the contact list: the invitations held for it are taken (a contact's)
   * or refused (anyone else's), as if they came now.
   *
   * @param isContact the list just given.
   */
  async contactsKnown(isContact: (user: string) => boolean): Promise<void> {
    const pending = [...this.#pendingInvitations.values()];
    this.#pendingInvitations.clear();
    for (const { link, state } of pending) {
      if (this.#closed) return;
      if (isContact(link.user)) await this.#onState(link, state);
      else await this.#refuse(link, state);
    }
  }

  /**
   * Refuses an invitation from someone who is not a mutual contact, telling both sides (each
   * once per group and user: an inviter sends its state again at every link).
   */
  async #refuse(link: PeerLink, state: GroupState): Promise<void> {
    if (!this.#toldOnce(state.id, link.user)) {
      this.#host.emit({
        type: "error",
        code: "NOT_A_CONTACT",
        message: `refused ${link.user}'s invitation to group ${groupHandle(state.id)}: only a ` +
          `mutual contact can add you to a group (contacts add ${link.user} sends a request)`,
      });
    }
    await link.fc.send({ type: "group_refused", group: state.id, code: "NOT_A_CONTACT" })
      .catch(() => {});
  }

  /** A member I invited (or think I did) did not join: we are not mutual contacts. */
  #onRefused(link: PeerLink, id: string): void {
    const state = this.#groups.get(id);
    if (!state || !isMember(state, link.user) || this.#toldOnce(id, link.user)) return;
    this.#host.emit({
      type: "error",
      code: "NOT_A_CONTACT",
      message: `${link.user} refused to join group ${groupHandle(id)}: you are not mutual ` +
        `contacts (contacts add ${link.user} sends a request; they must accept)`,
    });
  }

  /** False the first time for this group and user, true after (a bounded memory). */
  #toldOnce(group: string, user: string): boolean {
    const key = this.#memberKey(group, user);
    if (this.#refusals.has(key)) return true;
    if (this.#refusals.size >= MAX_REFUSALS_KEPT) this.#refusals.clear();
    this.#refusals.add(key);
    return false;
  }

  /**
   * Where a fellow member can be dialed, as members told: the directory gives addresses only
   * to contacts, and members of a group need not be each other's contacts.
   */
  endpointOf(user: string): { host: string; port: number } | undefined {
    if (!this.sharesGroupWith(user)) return undefined;
    const known = this.#endpoints.get(user.toLowerCase());
    return known && { host: known.host, port: known.port };
  }

  /** My endpoint, with the time it became so (a new address is newer news). */
  #myEndpoint(): Endpoint | undefined {
    const self = this.#host.selfEndpoint();
    if (!self) return undefined;
    const mine = this.#mine;
    if (!mine || mine.host !== self.host || mine.port !== self.port) {
      this.#mine = { user: this.#host.user, host: self.host, port: self.port, at: Date.now() };
    }
    return this.#mine;
  }

  /** What I can tell `link`'s user about where the members of `state` are (me first). */
  #sendWhere(link: PeerLink, state: GroupState): void {
    const endpoints: Endpoint[] = [];
    const mine = this.#myEndpoint();
    if (mine) endpoints.push(mine);
    for (const member of membersOf(state)) {
      const key = member.toLowerCase();
      if (this.#isMe(member) || key === link.user.toLowerCase()) continue;
      const known = this.#endpoints.get(key);
      if (known) endpoints.push(known);
    }
    // (In frames of MAX_GROUP_ENDPOINTS: a group may hold a few more members than that; see
    // group_state.ts.)
    for (let i = 0; i < endpoints.length; i += MAX_GROUP_ENDPOINTS) {
      const some = endpoints.slice(i, i + MAX_GROUP_ENDPOINTS);
      link.fc.send({ type: "group_where", group: state.id, endpoints: some }).catch(() => {});
    }
  }

  #onWhere(link: PeerLink, m: Extract<PeerMessage, { type: "group_where" }>): void {
    const state = this.#groups.get(m.group);
    if (!state || !isMember(state, link.user)) return;
    const fresh: string[] = [];
    for (const endpoint of m.endpoints) {
      const key = endpoint.user.toLowerCase();
      if (this.#isMe(endpoint.user) || !isMember(state, endpoint.user)) continue;
      const known = this.#endpoints.get(key);
      if (known && known.at >= endpoint.at) continue;
      this.#endpoints.set(key, endpoint);
      fresh.push(key);
      // A member we could not reach may be reachable now: dial at once.
      if (!this.#host.openLink(endpoint.user)) {
        this.#redial.set(key, { at: 0, wait: REDIAL_MIN_MS });
      }
    }
    if (fresh.length === 0) return;
    // Pass the news on to the other members linked now (each only once: older news stops).
    for (const member of this.#others(m.group)) {
      const key = member.toLowerCase();
      if (key === link.user.toLowerCase()) continue;
      const other = this.#host.openLink(member);
      const news = m.endpoints.filter((e) =>
        fresh.includes(e.user.toLowerCase()) && e.user.toLowerCase() !== key
      );
      if (other && news.length > 0) {
        other.fc.send({ type: "group_where", group: m.group, endpoints: news }).catch(() => {});
      }
    }
  }

  /**
   * A link came up (we dialed, or they did): both ends send their state of every group they
   * share at once, so a member back from a crash or a freeze catches up on membership before
   * anything else, then gets the copies that waited for it.
   */
  onLinkUp(user: string): void {
    const host = this.#host;
    if (this.#isMe(user) || this.#closed) return;
    const key = user.toLowerCase();
    this.#redial.delete(key);
    const link = host.openLink(user);
    if (!link) return;
    // "Is back" only after "is away": a member's first link (it just joined, or this process
    // just started) is no return.
    const announce = this.#away.delete(key);
    this.#linked.add(key);
    for (const state of this.#groups.values()) {
      if (!isMember(state, user)) continue;
      link.fc.send({ type: "group_state", group: state }).catch(() => {});
      this.#sendWhere(link, state);
      // What I missed while one of us was away: they pass on what they have of it.
      this.#sendMarks(link, state.id);
      if (announce) this.#emitPresence(state.id, user, true);
    }
    for (const state of this.#left.values()) {
      // They may not know I left: my state says so.
      if (liveTags(state, user).length > 0) {
        link.fc.send({ type: "group_state", group: state }).catch(() => {});
      }
    }
    // (The delivery room sends what waited for them, after these states.)
  }

  /**
   * A link died (the process crashed, froze or was cut off; or it logged out). The member
   * stays in every group: it is away, its copies wait, and it is dialed again until it is back.
   */
  onLinkDown(user: string, reason = "link closed"): void {
    const key = user.toLowerCase();
    if (this.#isMe(user) || !this.#linked.delete(key)) return;
    if (!this.sharesGroupWith(user)) return;
    this.#away.add(key);
    for (const state of this.#groups.values()) {
      if (isMember(state, user)) this.#emitPresence(state.id, user, false, reason);
    }
    this.#redial.set(key, { at: Date.now() + REDIAL_MIN_MS, wait: REDIAL_MIN_MS });
  }

  /** A contact came online: an away member among them is dialed at once. */
  onPresence(user: string, online: boolean): void {
    if (online && this.sharesGroupWith(user)) {
      this.#redial.set(user.toLowerCase(), { at: 0, wait: REDIAL_MIN_MS });
    }
  }

  /** The server is back: lookups work again, so every away member is dialed at once. */
  onServerBack(): void {
    for (const entry of this.#redial.values()) {
      entry.at = 0;
      entry.wait = REDIAL_MIN_MS;
    }
  }

  #emitPresence(group: string, user: string, here: boolean, reason?: string): void {
    this.#host.emit({
      type: "group_presence",
      group,
      handle: groupHandle(group),
      user,
      here,
      ...(reason !== undefined ? { reason } : {}),
    });
  }

  /**
   * Dials the members of my groups that I have no link to, each with its own backoff: "offline",
   * "the lookup failed" or "the server is away" only mean "not yet", never "gone".
   */
  #dialAway(): void {
    if (this.#closed || !this.#restored) return;
    const now = Date.now();
    const seen = new Set<string>();
    for (const state of this.#groups.values()) {
      for (const member of membersOf(state)) {
        const key = member.toLowerCase();
        if (this.#isMe(member) || seen.has(key)) continue;
        seen.add(key);
        if (this.#dialing.has(key)) continue;
        if (this.#host.openLink(member)) {
          if (!this.#linked.has(key)) this.onLinkUp(member); // linked by someone else's dial
          continue;
        }
        const entry = this.#redial.get(key) ?? { at: 0, wait: REDIAL_MIN_MS };
        this.#redial.set(key, entry);
        if (now < entry.at) continue;
        this.#dialing.add(key);
        this.#host.link(member).then(
          () => this.#redial.delete(key),
          () => {
            entry.wait = Math.min(entry.wait * 2, REDIAL_MAX_MS);
            entry.at = Date.now() + entry.wait * (0.75 + Math.random() / 2);
          },
        ).finally(() => this.#dialing.delete(key));
      }
    }
  }

  /**
   * Adopts a group we were not in: stored, and linked to every member. A newcomer (also one
   * added back) starts counting each author's messages afresh: none from before is for it.
   */
  #adopt(state: GroupState): void {
    this.#host.store.resetGroupHeads(state.id);
    for (const key of [...this.#held.keys()]) {
      if (key.startsWith(`${state.id}\n`)) this.#dropHeld(key);
    }
    this.#groups.set(state.id, state);
    this.#host.store.saveGroupState(state, membersOf(state), { left: false });
    this.#tellWhere(state.id);
    this.#dialAway();
  }

  /** Tells every member linked now where the members are (after a join). */
  #tellWhere(id: string): void {
    const state = this.#groups.get(id);
    if (!state) return;
    for (const member of this.#others(id)) {
      const link = this.#host.openLink(member);
      if (link) this.#sendWhere(link, state);
    }
  }

  /**
   * After a join: the newcomers hear where everyone I know of is; the others only where the
   * newcomers are, when I know it (they knew the rest already).
   */
  #tellWhereJoined(id: string, joined: string[]): void {
    const state = this.#groups.get(id);
    if (!state) return;
    const fresh = new Set(joined.map((u) => u.toLowerCase()));
    const news = [...fresh].map((key) => this.#endpoints.get(key)).filter((e) => e !== undefined);
    for (const member of this.#others(id)) {
      const link = this.#host.openLink(member);
      if (!link) continue;
      const key = member.toLowerCase();
      if (fresh.has(key)) {
        this.#sendWhere(link, state);
        continue;
      }
      const told = news.filter((e) => e.user.toLowerCase() !== key);
      if (told.length > 0) {
        link.fc.send({ type: "group_where", group: id, endpoints: told }).catch(() => {});
      }
    }
  }

  /**
   * Replaces the state, stores it, and announces who joined and who left. A member learned
   * late is owed my messages from the time of its add; one who left is owed nothing more.
   */
  #apply(id: string, next: GroupState): void {
    const host = this.#host;
    const before = this.#groups.get(id);
    if (!before) return;
    const was = membersOf(before);
    const now = membersOf(next);
    const lower = (list: string[]) => new Set(list.map((u) => u.toLowerCase()));
    const wasSet = lower(was);
    const nowSet = lower(now);
    const joined = now.filter((u) => !wasSet.has(u.toLowerCase()));
    const left = was.filter((u) => !nowSet.has(u.toLowerCase()));
    // A member learned late is owed my messages from the time of its add, one who left is owed
    // nothing more: in the same commit as the state (see ClientStore.applyGroupState).
    // Each of `members` but me, with when its membership in `next` began (when known).
    const since = (members: string[]) =>
      members.filter((user) => !this.#isMe(user)).flatMap((member) => {
        const at = memberSince(next, member);
        return at === undefined ? [] : [{ member, since: at }];
      });
    const late = since(joined);
    const gone = left.filter((user) => !this.#isMe(user));
    // A member who left and was added back, both before I heard (a tag of theirs tombstoned, a
    // newer one live): what I wrote before it came back was for the membership it ended, as for
    // a leave; what I wrote since is still owed.
    const back = since(now.filter((user) => removesLive(before, next, user)));
    const { owed, dropped } = host.store.applyGroupState(next, now, { late, gone, back });
    this.#groups.set(id, next);
    if (joined.length > 0 || left.length > 0) {
      host.emit({
        type: "group_members",
        group: id,
        handle: groupHandle(id),
        joined,
        left,
        ...(left.length > 0 ? { reason: "left" as const } : {}),
        members: now,
      });
    }
    for (const [user, ids] of owed) {
      for (const msgId of ids) host.status(msgId, id);
      if (ids.length > 0) host.kick(user);
    }
    for (const ids of dropped.values()) for (const msgId of ids) host.status(msgId, id);
    if (joined.length > 0) {
      this.#tellWhereJoined(id, joined);
      this.#dialAway();
    }
    if (now.length <= 1) this.#close(id, "everyone else left");
  }

  #close(id: string, reason: string): void {
    const host = this.#host;
    const state = this.#groups.get(id);
    if (!state) return;
    this.#groups.delete(id);
    this.#left.set(id, state);
    // What waited for an earlier message is for a member: never shown once I am out.
    for (const key of [...this.#held.keys()]) {
      if (key.startsWith(`${id}\n`)) this.#dropHeld(key);
    }
    host.store.saveGroupState(state, membersOf(state), { left: true });
    if (host.current === id) host.setCurrent(undefined);
    host.emit({ type: "group_closed", group: id, handle: groupHandle(id), reason });
  }

  /** Sends our state to every other member linked now (the rest learn it when linked). */
  async #broadcast(id: string, except?: string): Promise<void> {
    const state = this.#groups.get(id);
    if (!state) return;
    await Promise.all(
      this.#others(id).filter((m) => m.toLowerCase() !== except?.toLowerCase()).map(
        async (member) => {
          await this.#host.openLink(member)?.fc.send({ type: "group_state", group: state })
            .catch(() => {});
        },
      ),
    );
  }

  #exchangeSums(): void {
    const host = this.#host;
    const marks = ++this.#sumRounds % MARKS_EVERY === 0;
    const now = Date.now();
    for (const state of this.#groups.values()) {
      const sum = groupChecksum(state);
      // Read once for all the links of the round (when one needs them).
      let heads: { author: string; next: number }[] | undefined;
      const myMarks = () => heads ??= host.store.groupHeads(state.id);
      for (const member of this.#others(state.id)) {
        const link = host.openLink(member);
        // A member who told me this very checksum within the interval compares for both of us
        // (a mismatch brings my state to them and theirs back): one side of a link suffices.
        const told = this.#theirSums.get(this.#memberKey(state.id, member));
        const agreed = told !== undefined && told.sum === sum && now - told.at < SUM_INTERVAL_MS;
        if (!agreed) link?.fc.send({ type: "group_sum", group: state.id, sum }).catch(() => {});
        // Now and then too, in case a member got what I missed after we linked.
        if (link && marks) this.#sendMarks(link, state.id, myMarks);
      }
    }
  }

  #opened(state: GroupState, by: string): ClientEvent {
    return {
      type: "group_opened",
      group: state.id,
      handle: groupHandle(state.id),
      by,
      members: membersOf(state),
      history: this.#host.store.recent(groupChat(state.id), 50).map((h) => ({
        id: h.id,
        from: h.sender,
        ts: h.ts,
        text: h.text,
        mark: h.mark,
      })),
    };
  }

  /** Members other than me. */
  #others(id: string): string[] {
    return this.members(id).filter((m) => !this.#isMe(m));
  }

  #isMe(user: string): boolean {
    return user.toLowerCase() === this.#host.user.toLowerCase();
  }

  /** Stops the timers; groups stay stored and are rejoined at the next login. */
  close(): void {
    // A leave waiting for my messages on their way is made now (the session ends: they would
    // not go anyway), not lost: the group would be rejoined at the next login.
    for (const id of [...this.#leaving]) {
      this.#leaving.delete(id);
      this.#leaveNow(id);
    }
    this.#closed = true;
    clearInterval(this.#sumTimer);
    clearInterval(this.#tickTimer);
    this.#groups.clear();
    this.#left.clear();
    this.#held.clear();
    this.#recentTs.clear();
    this.#heldCount = 0;
    this.#heldText = 0;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.#moreAsked.clear();
  }
}

/** A logged message as passed on to a member. */
function relayFrame(group: string, m: LoggedGroupMessage): RelayFrame {
  return {
    type: "group_relay",
    group,
    author: m.author,
    id: m.id,
    seq: m.seq,
    ts: m.ts,
    ...(m.prevTs !== undefined ? { prevTs: m.prevTs } : {}),
    text: m.text,
    sig: m.sig,
  };
}

export class GroupError extends Error {
  override name = "GroupError";
  constructor(readonly code: string, message: string) {
    super(message);
  }
}
