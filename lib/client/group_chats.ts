/**
 * Group chats over a full mesh of direct links. Each member holds a link to every other; a
 * message goes from its author to each member directly (the server is never involved).
 * Membership is a replicated set (lib/peer/group_state.ts) that members exchange on every
 * change and compare by checksum every few seconds, so concurrent adds and removals converge
 * to one member list everywhere.
 *
 * Failure: a member whose link dies (process killed: at once; frozen: after the heartbeat
 * timeout) is removed by everyone who notices, and the group carries on. A member removed
 * while frozen finds, when it wakes, that all its links are gone: it is out of the group,
 * and can be added again like anyone else.
 */
import type { OutgoingMessage } from "../net/framed_connection.ts";
import type { PeerMessage } from "../protocol/messages.ts";
import type { PeerLink } from "../peer/peer_link.ts";
import {
  addMember,
  createGroup,
  groupChecksum,
  groupHandle,
  type GroupState,
  isMember,
  MAX_GROUP_MEMBERS,
  membersOf,
  mergeGroups,
  removeMember,
  withinLimits,
} from "../peer/group_state.ts";
import { type ClientStore, groupChat } from "./client_store.ts";
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
  /** Sends a frame and waits for the peer's ack (or the link's end, or the deadline). */
  sendOnLink(
    link: PeerLink,
    frame: OutgoingMessage & { id: string },
  ): Promise<"ack" | "busy" | "dropped" | "timeout">;
  /** Runs `task` after every earlier task for `user` (keeps each link's messages in order). */
  serial(user: string, task: () => Promise<void>): Promise<void>;
  /** Hands a message to the server's mailbox for `to` (sealed end to end). */
  mail(to: string, message: { id: string; ts: number; text: string }): Promise<"stored" | "failed">;
  /** Tells the core which group window is open (undefined: none). */
  setCurrent(groupId: string | undefined): void;
  readonly current: string | undefined;
  /** The 1:1 chat partner, if the open window is a 1:1 chat. */
  readonly chatPartner: string | undefined;
}

/** How often members compare group checksums on each link. */
const SUM_INTERVAL_MS = 2_000;

export class GroupChats {
  readonly #host: GroupHost;
  /** The replicated state of each group (what members exchange). */
  readonly #groups = new Map<string, GroupState>();
  /**
   * Per group, the add tags of members this client found unreachable. Kept locally, never
   * replicated: a member cut off from everyone must not be able to remove the others by
   * syncing its view. Everyone who sees a crash marks it; a later re-add makes a fresh tag.
   */
  readonly #dead = new Map<string, Set<string>>();
  readonly #seq = new Map<string, number>();
  /**
   * Groups I am out of, with my add tags at that time: a state still carrying only those tags
   * is stale (sent before the others saw me go), not an invitation. A re-add makes a new tag.
   */
  readonly #left = new Map<string, Set<string>>();
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(host: GroupHost) {
    this.#host = host;
    this.#timer = setInterval(() => this.#exchangeSums(), SUM_INTERVAL_MS);
  }

  /** The group as this client sees it: the replicated state less the members found dead. */
  #view(state: GroupState): GroupState {
    const dead = this.#dead.get(state.id);
    if (!dead || dead.size === 0) return state;
    return { ...state, removed: [...state.removed, ...dead] };
  }

  /** Members now, as this client sees them. */
  #members(id: string): string[] {
    const state = this.#groups.get(id);
    return state ? membersOf(this.#view(state)) : [];
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
    return this.#members(id);
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
      if (isMember(this.#view(current), user)) {
        throw new GroupError("BAD_COMMAND", `${user} is already in the group`);
      }
      if (membersOf(this.#view(current)).length >= MAX_GROUP_MEMBERS) {
        throw new GroupError(
          "GROUP_FULL",
          `the group is full (${MAX_GROUP_MEMBERS} members at most); nobody was added`,
        );
      }
      this.#apply(currentId, addMember(current, user), {});
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

  /** `/q` in a group: leave it; the others carry on. */
  leave(id: string): void {
    if (!this.#groups.has(id)) return;
    const others = this.#members(id).filter((m) => !this.#isMe(m));
    for (const member of others) {
      this.#host.openLink(member)?.fc.send({ type: "group_leave", group: id }).catch(() => {});
    }
    this.#close(id, "you left");
  }

  /** Sends a message to every other member, directly; each link keeps its order. */
  async send(id: string, text: string): Promise<void> {
    const host = this.#host;
    const state = this.#groups.get(id);
    if (!state) throw new GroupError("NOT_IN_CHAT", "that group is closed");
    const message = {
      type: "group_msg" as const,
      group: id,
      id: crypto.randomUUID(),
      seq: this.#nextSeq(id),
      ts: Date.now(),
      text,
    };
    host.store.addMessage({
      id: message.id,
      chat: groupChat(id),
      sender: host.user,
      ts: message.ts,
      text,
      outgoing: true,
      mark: "",
    });
    const handle = groupHandle(id);
    host.emit({ type: "sent", id: message.id, to: handle, ts: message.ts, text, group: id });
    const others = this.#members(id).filter((m) => !this.#isMe(m));
    const outcomes = await Promise.all(
      others.map((member) => this.#deliverTo(member, message)),
    );
    const mark = outcomes.every((o) => o === "delivered")
      ? "**"
      : outcomes.some((o) => o === "failed")
      ? "!"
      : "*";
    host.store.setMark(message.id, mark);
  }

  async #deliverTo(
    member: string,
    message: {
      type: "group_msg";
      group: string;
      id: string;
      seq: number;
      ts: number;
      text: string;
    },
  ): Promise<"delivered" | "stored" | "failed"> {
    const host = this.#host;
    let outcome: "delivered" | "stored" | "failed" = "failed";
    await host.serial(member, async () => {
      let reason = `${member} is unreachable`;
      for (let attempt = 0; attempt < 2; attempt++) {
        let link: PeerLink;
        try {
          link = await host.link(member);
        } catch (error) {
          reason = (error as Error).message;
          break;
        }
        const answer = await host.sendOnLink(link, message);
        if (answer === "ack") {
          outcome = "delivered";
          host.emit({
            type: "delivered",
            id: message.id,
            to: member,
            ms: Date.now() - message.ts,
            group: message.group,
          });
          return;
        }
        if (answer === "timeout") {
          reason = `${member} did not acknowledge in time`;
          break;
        }
        if (answer === "busy") {
          // They do not count us as a member (we were removed while away): not for the mailbox.
          host.emit({
            type: "not_delivered",
            id: message.id,
            to: member,
            reason: `${member} does not count you as a member of the group any more`,
            group: message.group,
          });
          return;
        }
        reason = `${member} disconnected`;
      }
      // A member who dropped out while this was on its way: their mailbox gets it.
      const mailed = await host.mail(member, {
        id: message.id,
        ts: message.ts,
        text: `[group ${groupHandle(message.group)}] ${message.text}`,
      });
      outcome = mailed;
      if (mailed === "stored") {
        host.emit({ type: "stored", id: message.id, to: member, reason, group: message.group });
      } else {
        host.emit({
          type: "not_delivered",
          id: message.id,
          to: member,
          reason,
          group: message.group,
        });
      }
    });
    return outcome;
  }

  /** Handles a group message from a peer link. Returns false if it is not a group message. */
  async onPeerMessage(link: PeerLink, m: PeerMessage): Promise<boolean> {
    switch (m.type) {
      case "group_state":
        await this.#onState(link, m.group);
        return true;
      case "group_sum": {
        const mine = this.#groups.get(m.group);
        if (!mine) return true;
        if (!isMember(this.#view(mine), link.user)) {
          await link.fc.send({ type: "group_gone", group: m.group }).catch(() => {});
        } else if (groupChecksum(mine) !== m.sum) {
          await link.fc.send({ type: "group_state", group: mine }).catch(() => {});
        }
        return true;
      }
      case "group_gone": {
        const mine = this.#groups.get(m.group);
        if (mine && isMember(this.#view(mine), link.user)) {
          this.#close(
            m.group,
            `you were removed while unreachable (${link.user} no longer counts you in); ` +
              `anyone in the group can add you again`,
          );
        }
        return true;
      }
      case "group_leave": {
        const mine = this.#groups.get(m.group);
        if (mine && isMember(this.#view(mine), link.user)) {
          // A member leaving removes itself: that removal is replicated.
          this.#apply(m.group, removeMember(mine, link.user), { reason: "left" });
          await this.#broadcast(m.group);
        }
        return true;
      }
      case "group_msg":
        await this.#onMessage(link, m);
        return true;
      default:
        return false;
    }
  }

  async #onMessage(link: PeerLink, m: Extract<PeerMessage, { type: "group_msg" }>): Promise<void> {
    const host = this.#host;
    const state = this.#groups.get(m.group);
    if (!state || !isMember(this.#view(state), link.user)) {
      // Not (any more) a member in our view: say no, and show them the group as we see it,
      // so a member that was removed while away learns it.
      await link.fc.send({ type: "busy", id: m.id }).catch(() => {});
      if (state) await link.fc.send({ type: "group_gone", group: m.group }).catch(() => {});
      return;
    }
    const fresh = host.store.addMessage({
      id: m.id,
      chat: groupChat(m.group),
      sender: link.user,
      ts: m.ts,
      text: m.text,
      outgoing: false,
      mark: "**",
    });
    await link.fc.send({ type: "ack", id: m.id }).catch(() => {});
    if (!fresh) return;
    host.emit({
      type: "message",
      id: m.id,
      from: link.user,
      ts: m.ts,
      text: m.text,
      inChat: host.current === m.group,
      via: "direct",
      group: m.group,
    });
  }

  async #onState(link: PeerLink, incoming: GroupState): Promise<void> {
    const host = this.#host;
    if (!withinLimits(incoming)) return;
    const mine = this.#groups.get(incoming.id);
    if (!mine) {
      // An invitation: only from a member, and only to a group that has us in it.
      if (!isMember(incoming, link.user) || !isMember(incoming, host.user)) return;
      const old = this.#left.get(incoming.id);
      if (old && !this.#myLiveTags(incoming).some((tag) => !old.has(tag))) {
        // A stale state from before they saw us leave: remind them instead of rejoining.
        await link.fc.send({ type: "group_leave", group: incoming.id }).catch(() => {});
        return;
      }
      this.#left.delete(incoming.id);
      this.#adopt(incoming);
      const partner = host.chatPartner;
      const idle = host.current === undefined && partner === undefined;
      if (idle || partner?.toLowerCase() === link.user.toLowerCase()) {
        host.setCurrent(incoming.id);
        host.emit(this.#opened(incoming, link.user));
      } else {
        host.emit({
          type: "group_invited",
          group: incoming.id,
          handle: groupHandle(incoming.id),
          by: link.user,
          members: membersOf(incoming),
        });
      }
      this.#connectAll(incoming.id);
      return;
    }
    const merged = mergeGroups(mine, incoming);
    // Only members (in our view, or newly added ones) may change the group.
    if (!isMember(this.#view(mine), link.user) && !isMember(this.#view(merged), link.user)) return;
    if (!withinLimits(merged)) return;
    const changed = groupChecksum(merged) !== groupChecksum(mine);
    if (changed) this.#apply(incoming.id, merged, {});
    if (!this.#groups.has(incoming.id)) return; // we were removed: closed by #apply
    if (groupChecksum(merged) !== groupChecksum(incoming)) {
      await link.fc.send({ type: "group_state", group: merged }).catch(() => {});
    }
    if (changed) await this.#broadcast(incoming.id);
  }

  /**
   * A link died: in every group where that user is a member, they are removed (they crashed,
   * froze or were cut off); the others are told.
   */
  onLinkDown(user: string): void {
    if (this.#isMe(user)) return;
    for (const state of [...this.#groups.values()]) {
      if (!isMember(this.#view(state), user)) continue;
      const before = this.#view(state);
      const dead = this.#dead.get(state.id) ?? new Set<string>();
      for (const add of state.adds) {
        if (add.user.toLowerCase() === user.toLowerCase()) dead.add(add.tag);
      }
      this.#dead.set(state.id, dead);
      this.#announce(state.id, before, { reason: "unreachable" });
    }
  }

  /** Adopts a group we were not in: remembered in history, links to every member. */
  #adopt(state: GroupState): void {
    this.#groups.set(state.id, state);
    this.#host.store.saveGroup(state.id, membersOf(state));
    this.#connectAll(state.id);
  }

  /** Replaces the state and announces who joined and who left. */
  #apply(id: string, next: GroupState, options: { reason?: "left" | "unreachable" }): void {
    const before = this.#groups.get(id);
    if (!before) return;
    const was = this.#view(before);
    this.#groups.set(id, next);
    this.#announce(id, was, options);
  }

  /** Compares the view before a change with the view now; tells who joined and who left. */
  #announce(
    id: string,
    beforeView: GroupState,
    options: { reason?: "left" | "unreachable" },
  ): void {
    const host = this.#host;
    const was = membersOf(beforeView);
    const now = this.#members(id);
    const lower = (list: string[]) => new Set(list.map((u) => u.toLowerCase()));
    const wasSet = lower(was);
    const nowSet = lower(now);
    const joined = now.filter((u) => !wasSet.has(u.toLowerCase()));
    const left = was.filter((u) => !nowSet.has(u.toLowerCase()));
    if (!nowSet.has(host.user.toLowerCase())) {
      this.#close(id, "you were removed from the group (unreachable for the others)");
      return;
    }
    if (joined.length > 0 || left.length > 0) {
      host.store.saveGroup(id, now);
      host.emit({
        type: "group_members",
        group: id,
        handle: groupHandle(id),
        joined,
        left,
        reason: options.reason ?? (left.length > 0 ? "left" : undefined),
        members: now,
      });
      this.#connectAll(id);
    }
    if (now.length <= 1) this.#close(id, "everyone else left");
  }

  /** My add tags that are live in `state`. */
  #myLiveTags(state: GroupState): string[] {
    const dead = new Set(state.removed);
    return state.adds
      .filter((a) => this.#isMe(a.user) && !dead.has(a.tag))
      .map((a) => a.tag);
  }

  #close(id: string, reason: string): void {
    const host = this.#host;
    const state = this.#groups.get(id);
    if (!state) return;
    this.#left.set(id, new Set(state.adds.filter((a) => this.#isMe(a.user)).map((a) => a.tag)));
    this.#groups.delete(id);
    this.#dead.delete(id);
    host.store.leaveGroup(id);
    if (host.current === id) host.setCurrent(undefined);
    host.emit({ type: "group_closed", group: id, handle: groupHandle(id), reason });
  }

  /** Sends our state to every other member (dialing those we have no link to). */
  async #broadcast(id: string): Promise<void> {
    const state = this.#groups.get(id);
    if (!state) return;
    await Promise.all(
      this.#members(id).filter((m) => !this.#isMe(m)).map(async (member) => {
        try {
          const link = await this.#host.link(member);
          await link.fc.send({ type: "group_state", group: state });
        } catch {
          // Unreachable: the link layer reports it, and they are removed then.
        }
      }),
    );
  }

  /** Full mesh: open a link to every member we do not have one to. */
  #connectAll(id: string): void {
    for (const member of this.#members(id)) {
      if (this.#isMe(member) || this.#host.openLink(member)) continue;
      // A member we cannot reach at all is as gone as one whose link died.
      this.#host.link(member).catch(() => this.onLinkDown(member));
    }
  }

  #exchangeSums(): void {
    for (const state of this.#groups.values()) {
      const sum = groupChecksum(state);
      for (const member of this.#members(state.id)) {
        if (this.#isMe(member)) continue;
        this.#host.openLink(member)?.fc.send({ type: "group_sum", group: state.id, sum })
          .catch(() => {});
      }
    }
  }

  #opened(state: GroupState, by: string): ClientEvent {
    return {
      type: "group_opened",
      group: state.id,
      handle: groupHandle(state.id),
      by,
      members: this.#members(state.id),
      history: this.#host.store.recent(groupChat(state.id), 50).map((h) => ({
        id: h.id,
        from: h.sender,
        ts: h.ts,
        text: h.text,
        mark: h.mark,
      })),
    };
  }

  #nextSeq(id: string): number {
    const n = this.#seq.get(id) ?? 0;
    this.#seq.set(id, n + 1);
    return n;
  }

  #isMe(user: string): boolean {
    return user.toLowerCase() === this.#host.user.toLowerCase();
  }

  /** Stops the checksum timer; groups end with the session. */
  close(): void {
    clearInterval(this.#timer);
    this.#groups.clear();
    this.#dead.clear();
  }
}

export class GroupError extends Error {
  override name = "GroupError";
  constructor(readonly code: string, message: string) {
    super(message);
  }
}
