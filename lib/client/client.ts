/**
 * The Confab client core, without any terminal: a thin coordinator over the rooms that do the
 * work — the server session (control connection, accounts, contacts, directory), peer links
 * (listen, dial, accept), delivery (outbox, acks, mailbox fallback), the mailbox (hanging,
 * show, receipts), groups and file transfers — plus the windows the user has open. Messages
 * arriving on a peer link are routed by type to the room that owns them. Front ends
 * (terminal, `--json`, load generators) drive it through methods and read its events.
 */
import { join } from "../util/paths.ts";
import type { BinaryFrame } from "../net/framed_connection.ts";
import { ConnectionClosedError } from "../protocol/errors.ts";
import { MAX_TEXT_LENGTH, type PeerMessage, type ServerMessage } from "../protocol/messages.ts";
import { pathOf, type PeerLink } from "../peer/peer_link.ts";
import { groupChat } from "./client_store.ts";
import { GroupChats, GroupError } from "./group_chats.ts";
import { type AutoAccept, TransferError, Transfers } from "./transfers.ts";
import { groupHandle } from "../peer/group_state.ts";
import type { ClientEvent, EventSink } from "./events.ts";
import { ClientContext, ClientError, describeConnectError } from "./context.ts";
import { type ContactBook, ServerSession, type Session } from "./server_session.ts";
import { PeerLinks, type PunchMessage } from "./peer_links.ts";
import { Delivery, type Outcome } from "./delivery.ts";
import { Mailbox, type MailboxEntry } from "./mailbox.ts";
import { describeFix, ownerOnlyDir } from "../util/owner_only.ts";

export { ClientError, describeConnectError };
export type { ClientEvent, MailboxEntry, Outcome };

/** Files larger than this are refused unless the options say otherwise (`--max-file-size`). */
export const DEFAULT_MAX_FILE_SIZE = 4 * 1024 ** 3;
/** Bytes held aside by files being received, at most (`--max-partial`). */
export const DEFAULT_MAX_PARTIAL = 8 * 1024 ** 3;
/** Free disk space an accepted file must leave (`--keep-free`). */
export const DEFAULT_KEEP_FREE = 256 * 1024 ** 2;

export interface ClientOptions {
  /** Home dir: one subfolder per user (identity key, history). */
  home: string;
  /** The server; several addresses of one service: the first that answers, then the next. */
  server: { host: string; port: number } | readonly { host: string; port: number }[];
  /** Peer port to listen on; 0 picks a free one. */
  peerPort?: number;
  /** Address the peer listener binds (default: loopback when the server is on loopback). */
  listenHost?: string;
  /** Messages of a chat shown when it opens. */
  historyLines?: number;
  /** How long a peer has to acknowledge a message before it counts as not delivered. */
  ackTimeoutMs?: number;
  /**
   * The fingerprint of a new server key the user checked: accepted (and pinned) once, at the
   * first connection that presents it; any other key is refused.
   */
  acceptServerKey?: string;
  /**
   * The peer port to announce to the server, when a port forwarder sits in front of the
   * listening port (default: the listening port).
   */
  announcePort?: number;
  /**
   * A peer silent this long (frozen, cut off) is declared gone. Peers ping each second; a
   * peer whose process died is noticed at once from its socket.
   */
  peerTimeoutMs?: number;
  /** Largest file accepted from others. */
  maxFileSize?: number;
  /** Which file offers are accepted without asking (default "ask": none of them). */
  autoAccept?: AutoAccept;
  /** Most bytes held in partial files at once (default 8 GiB). */
  maxPartialBytes?: number;
  /** Free disk space a file must leave to be accepted (default 256 MiB). */
  keepFreeBytes?: number;
  /** A file offer nobody answers is declined after this long (default 5 min). */
  offerTimeoutMs?: number;
  /** Try to turn relayed links into direct ones by hole punching (default true). */
  punch?: boolean;
  /** Connections held at once on the peer port (default 256). */
  maxPeerConnections?: number;
  /** Connections held at once on the peer port from one address (default 32). */
  maxPeerConnectionsPerAddress?: number;
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host.startsWith("127.") || host === "::1";
}

/** The room that owns each message type arriving on a peer link. */
type PeerRoom = "transfers" | "groups" | "delivery" | "windows" | "link" | "paths";

const PEER_ROUTES: Record<(PeerMessage | BinaryFrame)["type"], PeerRoom | undefined> = {
  binary: "transfers",
  file_offer: "transfers",
  file_accept: "transfers",
  file_reject: "transfers",
  file_end: "transfers",
  file_done: "transfers",
  file_cancel: "transfers",
  group_state: "groups",
  group_sum: "groups",
  group_where: "groups",
  group_refused: "groups",
  group_msg: "groups",
  group_marks: "groups",
  group_relay: "groups",
  group_relay_more: "groups",
  msg: "delivery",
  ack: "delivery",
  busy: "delivery",
  chat_state: "windows",
  bye: "link",
  error: "link",
  ping: "link",
  pong: "link",
  punch_offer: "paths",
  punch_answer: "paths",
  punch_sync: "paths",
  // Consumed by the connection itself (a path switch), and handshake messages: not expected.
  path_switch: undefined,
  hello: undefined,
  noise: undefined,
  auth_init: undefined,
  auth_reply: undefined,
  auth_finish: undefined,
  auth_ok: undefined,
};

export class ConfabClient implements AsyncDisposable {
  readonly #opts: {
    historyLines: number;
    maxFileSize: number;
    announcePort: number | undefined;
    autoAccept: AutoAccept;
    maxPartialBytes: number;
    keepFreeBytes: number;
    offerTimeoutMs: number;
  };
  readonly #ctx: ClientContext;
  readonly #session: ServerSession;
  readonly #links: PeerLinks;
  readonly #delivery: Delivery;
  readonly #mailbox: Mailbox;
  #chatWith: string | undefined;
  /** The group whose window is open (then #chatWith is unset). */
  #group: string | undefined;
  #groups: GroupChats | undefined;
  #transfers: Transfers | undefined;
  /**
   * My mutual contacts as the server last gave them in this session, kept up to date from its
   * pushes: what file offers (`--auto-accept contacts`) and group invitations are checked against.
   */
  #contacts = new Set<string>();
  /**
   * Messages waiting on the server, per sender (name keys), as the server last said (at login,
   * in notices, in `hanging`): opening a chat with one of them shows theirs.
   */
  #waiting = new Map<string, number>();
  /** Whether {@link #contacts} came from the server in this session. */
  #contactsKnown = false;
  #closing: Promise<void> | undefined;
  #closedNow = false;

  constructor(options: ClientOptions, emit: EventSink) {
    const servers = "host" in options.server ? [options.server] : [...options.server];
    this.#opts = {
      historyLines: options.historyLines ?? 50,
      maxFileSize: options.maxFileSize ?? DEFAULT_MAX_FILE_SIZE,
      announcePort: options.announcePort,
      autoAccept: options.autoAccept ?? "ask",
      maxPartialBytes: options.maxPartialBytes ?? DEFAULT_MAX_PARTIAL,
      keepFreeBytes: options.keepFreeBytes ?? DEFAULT_KEEP_FREE,
      offerTimeoutMs: options.offerTimeoutMs ?? 300_000,
    };
    this.#ctx = new ClientContext(emit);
    // deno-lint-ignore no-this-alias
    const core = this;
    this.#session = new ServerSession(this.#ctx, {
      announcePort: () => this.#opts.announcePort ?? this.peerPort,
      onPush: (m) => this.#onServerPush(m),
      onLogin: (session) => this.#onLogin(session),
      onReady: (session) => {
        this.#delivery.flushOutbox(session);
        this.#groups?.ready(); // stored groups rejoined; away members dialed again
        // Known before an offer or an invitation comes, in case the server is away by then
        // (once a session: pushes and our own changes keep it up to date). Offers from
        // contacts that came while it could not be asked wait no longer.
        const known = this.#contactsKnown ? Promise.resolve() : this.#refreshContacts();
        this.#ctx.track(known.then(() => this.#contactsConfirmed()));
      },
      onEnd: () => this.#onSessionEnd(),
    }, {
      home: options.home,
      servers: servers,
      acceptServerKey: options.acceptServerKey,
    });
    this.#links = new PeerLinks(this.#ctx, this.#session, {
      onMessage: (link, m) => this.#onPeerMessage(link, m),
      onLinkUp: (link) => {
        if (this.#chatWith?.toLowerCase() === link.user.toLowerCase()) {
          link.fc.send({ type: "chat_state", open: true }).catch(() => {});
        }
        this.#groups?.onLinkUp(link.user); // group states first, then what waited for them
        this.#delivery.onLinkUp(link.user);
      },
      onLinkDown: (user, reason) => this.#groups?.onLinkDown(user, reason),
      endpointOf: (user) => this.#groups?.endpointOf(user),
      sharesGroup: (user) => this.#groups?.sharesGroupWith(user) ?? false,
    }, {
      listenHost: options.listenHost ??
        (servers.every((s) => isLoopback(s.host)) ? "127.0.0.1" : "0.0.0.0"),
      peerPort: options.peerPort ?? 0,
      peerTimeoutMs: options.peerTimeoutMs ?? 3_000,
      punch: options.punch ?? true,
      ...(options.maxPeerConnections ? { maxConnections: options.maxPeerConnections } : {}),
      ...(options.maxPeerConnectionsPerAddress
        ? { maxPerAddress: options.maxPeerConnectionsPerAddress }
        : {}),
    });
    const windows = {
      get chatWith() {
        return core.#chatWith;
      },
      isGroupMember(group: string, user: string): boolean {
        return core.#groups?.members(group).some((m) => m.toLowerCase() === user.toLowerCase()) ??
          false;
      },
    };
    this.#delivery = new Delivery(this.#ctx, {
      session: this.#session,
      links: this.#links,
      host: windows,
    }, { ackTimeoutMs: options.ackTimeoutMs ?? 5_000 });
    this.#mailbox = new Mailbox(this.#ctx, this.#session, windows);
  }

  get user(): string | undefined {
    return this.#session.current?.user;
  }

  get chatWith(): string | undefined {
    return this.#chatWith;
  }

  /** What the prompt shows for the open chat: a user, or a group's handle and members. */
  get chatLabel(): string | undefined {
    if (this.#chatWith) return this.#chatWith;
    if (this.#group && this.#groups) {
      const others = this.#groups.members(this.#group)
        .filter((m) => m.toLowerCase() !== this.#session.current?.user.toLowerCase())
        .sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
      return `${groupHandle(this.#group)} (${others.join(", ")})`;
    }
    return undefined;
  }

  /** The handle (`#3f1c2a`) of the group whose window is open. */
  get groupHandle(): string | undefined {
    return this.#group !== undefined ? groupHandle(this.#group) : undefined;
  }

  /** Handles of the groups I am in. */
  get groupHandles(): string[] {
    return this.#groups?.active().map((g) => groupHandle(g.id)) ?? [];
  }

  /** True while a chat window (1:1 or group) is open. */
  get inChat(): boolean {
    return this.#chatWith !== undefined || this.#group !== undefined;
  }

  get serverAddress(): string {
    return this.#session.serverAddress;
  }

  get peerPort(): number {
    return this.#links.peerPort;
  }

  get serverConnected(): boolean {
    return this.#session.connected;
  }

  /**
   * Starts listening for peers.
   * @throws {ClientError} PORT_IN_USE when the peer port is taken.
   */
  start(): void {
    this.#links.listen();
    this.#ctx.emit({ type: "ready", peerPort: this.peerPort, server: this.serverAddress });
    const fixed = ownerOnlyDir(this.#session.home);
    if (fixed) this.#ctx.emit({ type: "info", text: describeFix(fixed, "the home folder") });
  }

  // ---- routing -------------------------------------------------------------------------------

  /** Pushes from the server, to the room that owns them. */
  #onServerPush(m: ServerMessage): void {
    switch (m.type) {
      case "presence":
        this.#ctx.emit({ type: "presence", user: m.user, online: m.online });
        this.#groups?.onPresence(m.user, m.online);
        return;
      case "contact_update":
        this.#ctx.emit({ type: "contact_update", user: m.user, state: m.state });
        // No longer contacts: our chat closes and the link between us ends (theirs is ended on
        // their side too).
        if (m.state === "removed") {
          this.#contactEnded(m.user);
          this.#ctx.track(this.#links.end(m.user));
        }
        // The list that invitations and files are checked against follows (it is what counts
        // while the server is away).
        if (m.state === "accepted") this.#contacts.add(m.user.toLowerCase());
        if (m.state === "removed") this.#contacts.delete(m.user.toLowerCase());
        return;
      case "server_closing":
        this.#ctx.emit({ type: "server_closing", reason: m.reason });
        return;
      case "error":
        this.#ctx.emit({ type: "error", code: m.code, message: `server: ${m.message}` });
        return;
      case "mail_notice":
        this.#ctx.emit({ type: "mail_notice", from: m.from, count: m.count });
        this.#waiting.set(m.from.toLowerCase(), m.count);
        // In the chat with them (their line came by the server: our link was down), it shows.
        if (this.#chatWith?.toLowerCase() === m.from.toLowerCase()) this.#showWaiting(m.from);
        return;
      case "mail_summary":
        this.#ctx.emit({ type: "mail_summary", entries: m.entries });
        this.#waiting = new Map(m.entries.map((e) => [e.from.toLowerCase(), e.count]));
        return;
      case "receipts":
        // Checked one signature at a time; tracked so a close waits for it.
        this.#ctx.track(this.#mailbox.onReceipts(m).catch(() => {}));
        return;
      case "relay_offer":
        this.#links.acceptRelay(m);
        return;
      case "relay_notice":
        this.#ctx.emit({ type: "relay_notice", user: m.peer, limit: m.limit, text: m.message });
        return;
    }
  }

  /** A message on a peer link, to the room that owns its type. */
  async #onPeerMessage(link: PeerLink, m: PeerMessage | BinaryFrame): Promise<void> {
    switch (PEER_ROUTES[m.type]) {
      case "transfers":
        // File data for no transfer (it was cancelled, or we logged out) is dropped.
        await this.#transfers?.onPeerMessage(link, m);
        return;
      case "groups":
        if (this.#groups) await this.#groups.onPeerMessage(link, m as PeerMessage);
        return;
      case "delivery":
        return await this.#delivery.onPeerMessage(
          link,
          m as Extract<PeerMessage, { type: "msg" | "ack" | "busy" }>,
        );
      case "windows": {
        const state = m as Extract<PeerMessage, { type: "chat_state" }>;
        this.#ctx.emit({ type: state.open ? "peer_joined" : "peer_left", user: link.user });
        return;
      }
      case "paths":
        this.#links.onPunchMessage(link, m as PunchMessage);
        return;
      case "link":
        if (m.type === "bye") await this.#links.onBye(link);
        if (m.type === "error") {
          this.#ctx.emit({ type: "error", code: m.code, message: `${link.user}: ${m.message}` });
        }
        // ping and pong are answered and matched by the connection itself.
        return;
      default:
        await link.fc.fail("BAD_MESSAGE", `${m.type} is not expected after the handshake`);
    }
  }

  // ---- session -------------------------------------------------------------------------------

  async #onLogin(session: Session): Promise<void> {
    this.#contacts = new Set();
    this.#waiting = new Map();
    this.#contactsKnown = false;
    this.#groups = this.#makeGroups(session);
    this.#transfers = this.#makeTransfers(session);
    await this.#transfers.prepare();
  }

  #onSessionEnd(): void {
    this.#chatWith = undefined;
    this.#group = undefined;
    this.#groups?.close();
    this.#groups = undefined;
    this.#transfers?.close().catch(() => {});
    this.#transfers = undefined;
    this.#links.closeAll();
  }

  /** Creates an account (and its identity key), then logs in. */
  signup(user: string, password: string, serverPort?: number): Promise<void> {
    return this.#session.signup(user, password, serverPort);
  }

  login(user: string, password: string, serverPort?: number): Promise<void> {
    return this.#session.login(user, password, serverPort);
  }

  /**
   * Logs out. When the server cannot be reached, the logout time is saved locally and sent
   * with the next login, so the server's registry ends up with the true time.
   */
  async logout(): Promise<void> {
    this.#session.require();
    if (this.#chatWith) await this.leaveChat();
    await this.#session.logout();
  }

  /** My contacts' names, without showing them (for completion). */
  async contactNames(): Promise<string[]> {
    this.#session.require();
    return (await this.#session.contactList()).contacts.map((c) => c.user);
  }

  /**
   * Checks, before a password is asked for, that `user` could sign up or log in from here.
   * @throws {ClientError} BAD_USERNAME, ALREADY_LOGGED_IN, NO_IDENTITY
   */
  checkAccount(user: string, verb: "signup" | "in"): Promise<void> {
    return this.#session.checkAccount(user, verb);
  }

  contacts(): Promise<ContactBook> {
    return this.#session.contacts();
  }

  /** Sets a new password (the current one proves it is me); the session goes on. */
  changePassword(current: string, next: string): Promise<void> {
    return this.#session.changePassword(current, next);
  }

  async addContact(user: string): Promise<void> {
    if (await this.#session.addContact(user)) this.#contacts.add(user.toLowerCase());
  }

  /** Ends a contact (and our link), declines a request or withdraws one. */
  async removeContact(user: string): Promise<void> {
    if (await this.#session.removeContact(user) === "removed") {
      this.#contactEnded(user);
      await this.#links.end(user);
    }
    this.#contacts.delete(user.toLowerCase());
  }

  /**
   * A contact ended (by either of us): a 1:1 chat open with them closes, since nothing can be
   * sent to them any more, before their link ends (so no "messages go through the server").
   */
  #contactEnded(user: string): void {
    if (this.#chatWith?.toLowerCase() !== user.toLowerCase()) return;
    const name = this.#chatWith;
    this.#chatWith = undefined;
    this.#ctx.emit({ type: "chat_closed", with: name, reason: "you are no longer contacts" });
  }

  /** Accepts a changed identity key for `user` (after comparing safety numbers). */
  trust(user: string): Promise<void> {
    return this.#session.trust(user);
  }

  /**
   * Shows my own number, or the safety number I share with `user` (computed from the key the
   * directory has now, so a changed key shows a new number).
   */
  fingerprint(user?: string): Promise<void> {
    return this.#session.fingerprint(user);
  }

  // ---- chats ---------------------------------------------------------------------------------

  /**
   * `user` from my contact list, if we are mutual contacts.
   * @throws {ClientError} NOT_A_CONTACT saying where we stand and what to do.
   */
  async #mutualContact(user: string): Promise<{ user: string; online: boolean }> {
    let book: Awaited<ReturnType<ServerSession["contactList"]>>;
    try {
      book = await this.#session.contactList();
    } catch (error) {
      // The server away: the list of this session stands, so a chat with a contact can still
      // be opened (over the link that is up, or with its lines waiting in the outbox).
      const unreachable = error instanceof ClientError && error.code === "SERVER_UNREACHABLE";
      if (!unreachable || !this.#contactsKnown || !this.#contacts.has(user.toLowerCase())) {
        throw error;
      }
      return { user: this.#links.current(user)?.user ?? user, online: false };
    }
    const same = (name: string) => name.toLowerCase() === user.toLowerCase();
    const contact = book.contacts.find((c) => same(c.user));
    if (contact) return contact;
    const asked = book.requested.find(same);
    const askedMe = book.requests.find(same);
    throw new ClientError(
      "NOT_A_CONTACT",
      asked
        ? `${asked} has not accepted your contact request yet; nothing was sent`
        : askedMe
        ? `${askedMe} asks to be your contact: contacts add ${askedMe} accepts, then you can chat`
        : `${user} is not in your contacts; add them first: contacts add ${user} ` +
          `(they must accept)`,
    );
  }

  /** Enters a chat with a contact: looks them up and opens a direct link. */
  async openChat(user: string): Promise<void> {
    const session = this.#session.require();
    if (user.startsWith("#")) return this.#openGroup(user);
    this.#session.checkName(user);
    if (user.toLowerCase() === session.user.toLowerCase()) {
      throw new ClientError("BAD_MESSAGE", "you cannot chat with yourself");
    }
    // Leaving and entering again would tell them "left" and "is in the chat" for nothing.
    if (this.#chatWith?.toLowerCase() === user.toLowerCase()) {
      throw new ClientError(
        "BAD_COMMAND",
        `you are in the chat with ${this.#chatWith} already (/history shows what came before)`,
      );
    }
    const contact = await this.#mutualContact(user);
    // The window open now goes: a 1:1 chat is left; a group's closes, and I stay in the group
    // (its window kept open, my lines would still go to all of it under the new chat's name).
    if (this.#chatWith) await this.leaveChat();
    else if (this.#group !== undefined) await this.closeWindow();
    let link: PeerLink | undefined;
    try {
      link = await this.#links.linkTo(contact.user, true);
    } catch (error) {
      const e = error instanceof Error ? error : new Error(String(error));
      const code = e instanceof ClientError ? e.code : "";
      if (code !== "USER_OFFLINE" && code !== "PEER_UNREACHABLE" && code !== "SERVER_UNREACHABLE") {
        throw error;
      }
      this.#ctx.emit({
        type: "info",
        text: code === "USER_OFFLINE"
          ? `${contact.user} is offline: your messages wait on the server (*) until they read them`
          : code === "SERVER_UNREACHABLE"
          ? `the server is unreachable and ${contact.user} cannot be looked up: your messages ` +
            `wait here until either is back`
          : `${e.message}; your messages go to the server (*) until ${contact.user} is back`,
      });
      if (code === "PEER_UNREACHABLE") this.#session.reportUnreachable(contact.user);
    }
    const name = link?.user ?? contact.user;
    this.#chatWith = name;
    await link?.fc.send({ type: "chat_state", open: true }).catch(() => {});
    const address = link ? `${link.fc.remoteAddr.hostname}:${link.fc.remoteAddr.port}` : "";
    this.#ctx.emit({
      type: "chat_opened",
      with: name,
      online: link !== undefined,
      address,
      ...(link ? { path: pathOf(link) } : {}),
      history: session.store.recent(name, this.#opts.historyLines).map((h) => ({
        id: h.id,
        from: h.sender,
        ts: h.ts,
        text: h.text,
        mark: h.mark,
      })),
    });
    // What they left on the server shows in the chat, as the other messages of it do (and they
    // learn it was read): opening the chat with someone is reading them.
    // (Not while the server is away: the status row still counts them, show reads them later.)
    if (this.#session.connected && (this.#waiting.get(name.toLowerCase()) ?? 0) > 0) {
      this.#showWaiting(name);
    }
  }

  /**
   * `/b`: back to the main prompt. A 1:1 chat is left as with `/q`; a group's window closes
   * but I stay in the group (its messages arrive as notices; `chat #handle` returns).
   */
  async closeWindow(): Promise<void> {
    if (this.#group === undefined) return await this.leaveChat();
    const group = this.#group;
    this.#group = undefined;
    this.#ctx.emit({ type: "group_window_closed", group, handle: groupHandle(group) });
  }

  async leaveChat(): Promise<void> {
    if (this.#group !== undefined) {
      // The window shuts at once (what is typed next goes nowhere in the group); the group
      // closes once my lines on their way went (group_closed).
      const group = this.#group;
      this.#group = undefined;
      await this.#groups?.leave(group);
      return;
    }
    const user = this.#chatWith;
    if (!user) throw new ClientError("NOT_IN_CHAT", "you are not in a chat");
    this.#chatWith = undefined;
    const link = this.#links.current(user);
    await link?.fc.send({ type: "chat_state", open: false }).catch(() => {});
    this.#ctx.emit({ type: "chat_closed", with: user });
  }

  /**
   * Sends a line to the current chat. It goes directly to the peer when a link can be had;
   * otherwise (offline, busy in another chat, unreachable) to the server's mailbox. Until one
   * of them acknowledges it, it stays in the local outbox and is sent again later.
   * @returns how it ended: "delivered" (`**`), "stored" (`*`), "queued" or "failed".
   */
  async send(text: string): Promise<Outcome> {
    const session = this.#session.require();
    if (text.length === 0) throw new ClientError("BAD_COMMAND", "nothing to send");
    if (text.length > MAX_TEXT_LENGTH) {
      throw new ClientError(
        "TOO_LONG",
        `message is ${text.length} characters; the limit is ${MAX_TEXT_LENGTH}`,
      );
    }
    if (this.#group !== undefined && this.#groups) {
      try {
        return await this.#groups.send(this.#group, text);
      } catch (error) {
        if (error instanceof GroupError) throw new ClientError(error.code, error.message);
        throw error;
      }
    }
    const to = this.#chatWith;
    if (!to) throw new ClientError("NOT_IN_CHAT", "open a chat first: chat <user>");
    return await this.#delivery.send(session, to, text);
  }

  // ---- groups, history, search ---------------------------------------------------------------

  #makeGroups(session: Session): GroupChats {
    // deno-lint-ignore no-this-alias
    const core = this;
    return new GroupChats({
      user: session.user,
      store: session.store,
      emit: (event) => this.#ctx.emit(event),
      link: (user) => this.#links.linkTo(user, false),
      openLink: (user) => this.#links.open(user),
      sendGroup: (group, members, text) => this.#delivery.sendGroup(session, group, members, text),
      kick: (member) => void this.#delivery.kickGroup(session, member),
      status: (msgId, group) => this.#delivery.groupStatus(session, msgId, group),
      setCurrent: (id) => {
        if (id !== undefined && this.#chatWith !== undefined) {
          // A 1:1 chat turning into a group: the window becomes the group's. The partner is
          // in the group too, so no "left the chat" for them: they did not lose us.
          this.#chatWith = undefined;
        }
        this.#group = id;
      },
      get current() {
        return core.#group;
      },
      get chatPartner() {
        return core.#chatWith;
      },
      selfEndpoint: () => {
        const seenAs = this.#session.current?.seenAs;
        return seenAs
          ? { host: seenAs, port: this.#opts.announcePort ?? this.peerPort }
          : undefined;
      },
      isContact: (user) => this.#isContact(user),
      keyOf: (user) => this.#session.keyOf(user),
    });
  }

  /** `chat #handle`: opens the window of a group I am in. */
  #openGroup(handle: string): void {
    const group = this.#groups?.find(handle);
    if (!group) {
      throw new ClientError(
        "NO_SUCH_GROUP",
        `you are not in a group ${handle} (groups lists yours)`,
      );
    }
    if (this.#chatWith) {
      const partner = this.#links.current(this.#chatWith);
      partner?.fc.send({ type: "chat_state", open: false }).catch(() => {});
      this.#ctx.emit({ type: "chat_closed", with: this.#chatWith });
      this.#chatWith = undefined;
    }
    this.#group = group.id;
    const session = this.#session.require();
    this.#ctx.emit({
      type: "group_opened",
      group: group.id,
      handle: groupHandle(group.id),
      by: session.user,
      members: this.#groups!.members(group.id),
      history: session.store.recent(groupChat(group.id), this.#opts.historyLines).map((h) => ({
        id: h.id,
        from: h.sender,
        ts: h.ts,
        text: h.text,
        mark: h.mark,
      })),
    });
  }

  /**
   * Whether `user` is a mutual contact (for a file offer with `--auto-accept contacts`, and a
   * group invitation): as the server said in this session, or says now.
   */
  async #isContact(user: string): Promise<boolean | undefined> {
    // The list of this session follows every change the server pushes: a contact found there
    // needs no question (and no wait, should the server be slow or away); anyone else is asked
    // about, in case the news is on its way.
    if (this.#contactsKnown && this.#contacts.has(user.toLowerCase())) return true;
    await this.#refreshContacts();
    if (!this.#contactsKnown) return undefined; // the server away, and no list yet
    return this.#contacts.has(user.toLowerCase());
  }

  /**
   * The contact list is known again (a session is ready): what waited because the server
   * could not say who is a contact (file offers under `--auto-accept contacts`, invitations
   * to groups) is taken or refused on its word, with no further question.
   */
  async #contactsConfirmed(): Promise<void> {
    if (!this.#contactsKnown) return; // asked, but the server went away again
    const isContact = (user: string) => this.#contacts.has(user.toLowerCase());
    await this.#groups?.contactsKnown(isContact);
    await this.#transfers?.acceptFromContacts(isContact);
  }

  /**
   * Asks the server for the (mutual) contact list. While the server is away, the last list it
   * gave in this session stands (a file offered then is not asked about).
   */
  async #refreshContacts(): Promise<void> {
    try {
      const reply = await this.#session.contactList();
      this.#contacts = new Set(reply.contacts.map((c) => c.user.toLowerCase()));
      this.#contactsKnown = true;
    } catch { /* unreachable: the last list known */ }
  }

  #makeTransfers(session: Session): Transfers {
    const dir = this.#session.userDir(session.user);
    return new Transfers({
      user: session.user,
      store: session.store,
      emit: (event) => this.#ctx.emit(event),
      link: (user) =>
        this.#links.linkTo(user, false).catch((error) => {
          // A member shown as away: whatever the dial met (a port closed, no relay between
          // non-contacts) says no more than that.
          if (!this.#groups?.isAway(user)) throw error;
          throw new ClientError(
            "USER_OFFLINE",
            `${user} is away; share it again when they are back`,
            { cause: error },
          );
        }),
      replacement: (user) => this.#links.replacement(user),
      downloadsDir: join(dir, "downloads"),
      partialDir: join(dir, "partial"),
      maxFileSize: this.#opts.maxFileSize,
      autoAccept: this.#opts.autoAccept,
      isContact: (user) => this.#isContact(user),
      isGroupMember: (group, user) => this.#groups?.isMember(group, user) ?? false,
      maxPartialBytes: this.#opts.maxPartialBytes,
      keepFreeBytes: this.#opts.keepFreeBytes,
      offerTimeoutMs: this.#opts.offerTimeoutMs,
    });
  }

  /** `accept [<n>]` / `decline [<n>]`: the user's answer to a file offer. */
  async answerOffer(offer: number | undefined, accept: boolean): Promise<void> {
    this.#session.require();
    try {
      await this.#transfers!.answer(offer, accept);
    } catch (error) {
      if (error instanceof TransferError) throw new ClientError(error.code, error.message);
      throw error;
    }
  }

  /** `offers`: the file offers waiting for the user's answer. */
  offers(): void {
    this.#session.require();
    this.#ctx.emit({ type: "offers", offers: this.#transfers!.waitingOffers() });
  }

  /**
   * `/s <path>` (or `share <path>`) in a chat: sends the file to the other user, or to every
   * member of the group, directly. Resolves when every transfer has ended (well or not).
   */
  async share(path: string): Promise<void> {
    const session = this.#session.require();
    const transfers = this.#transfers!;
    let peers: string[];
    let group: string | undefined;
    if (this.#group !== undefined) {
      group = this.#group;
      peers = this.#groups!.members(group).filter((m) =>
        m.toLowerCase() !== session.user.toLowerCase()
      );
    } else if (this.#chatWith !== undefined) {
      peers = [this.#chatWith];
    } else {
      throw new ClientError("NOT_IN_CHAT", "open a chat first, then /s <path>");
    }
    try {
      await transfers.share(path, peers, group);
    } catch (error) {
      if (error instanceof TransferError) throw new ClientError(error.code, error.message);
      throw error;
    }
  }

  /** `/u`: my contacts who are online now. */
  async onlineContacts(): Promise<string[]> {
    this.#session.require();
    let reply;
    try {
      reply = await this.#session.contactList();
    } catch (error) {
      if (
        !(error instanceof ClientError) ||
        (error.code !== "SERVER_UNREACHABLE" && error.code !== "SERVER_KEY_CHANGED")
      ) throw error;
      // Never "nobody": say that the server cannot be asked, and who is reached directly.
      const chat = this.#group !== undefined
        ? this.#groups?.members(this.#group) ?? []
        : this.#chatWith !== undefined
        ? [this.#chatWith]
        : [];
      const linked = chat.filter((u) => this.#links.open(u) !== undefined);
      throw new ClientError(
        error.code,
        (error.code === "SERVER_UNREACHABLE"
          ? "the server is unreachable, so who is online is unknown"
          : "the server's key is refused (see the warning), so who is online is unknown") +
          (linked.length > 0 ? `; connected directly to: ${linked.join(", ")}` : ""),
        { cause: error },
      );
    }
    // Contacts reached directly right now are online, whatever the server knows.
    const online = reply.contacts
      .filter((c) => c.online || this.#links.open(c.user) !== undefined)
      .map((c) => c.user);
    this.#ctx.emit({ type: "online_contacts", contacts: online });
    return online;
  }

  /**
   * `/a <user>`: adds an online contact to the open chat; a 1:1 chat becomes a group. Refused,
   * with the group unchanged, for an unknown user, a non-contact, someone offline or out of
   * reach.
   */
  async addToChat(user: string): Promise<void> {
    const session = this.#session.require();
    this.#session.checkName(user);
    if (!this.inChat) throw new ClientError("NOT_IN_CHAT", "open a chat first: chat <user>");
    if (user.toLowerCase() === session.user.toLowerCase()) {
      throw new ClientError("BAD_COMMAND", "you are in the chat already");
    }
    const found = await this.#session.lookup(user); // NO_SUCH_USER, KEY_CHANGED
    const contacts = await this.#session.contactList();
    const contact = contacts.contacts.find((c) => c.user.toLowerCase() === user.toLowerCase());
    if (!contact) {
      throw new ClientError(
        "NOT_A_CONTACT",
        `${found.user} is not in your contacts (contacts add ${found.user}, then they accept); ` +
          `nobody was added`,
      );
    }
    if (!found.online) {
      throw new ClientError("USER_OFFLINE", `${found.user} is offline; nobody was added`);
    }
    await this.#links.linkTo(found.user, true); // reachable, and proven to be who they are
    try {
      await this.#groups!.add(found.user);
    } catch (error) {
      if (error instanceof GroupError) throw new ClientError(error.code, error.message);
      throw error;
    }
  }

  /** Groups I am in, and those I was in. */
  listGroups(): void {
    const session = this.#session.require();
    const active = new Set(this.#groups?.active().map((g) => g.id) ?? []);
    this.#ctx.emit({
      type: "groups",
      groups: session.store.groups().map((g) => ({
        id: g.id,
        handle: groupHandle(g.id),
        members: active.has(g.id) ? this.#groups!.members(g.id) : g.members,
        active: active.has(g.id),
        joinedAt: g.joinedAt,
      })),
    });
  }

  /** `history <user|#group> [n]`: the last `n` messages of a chat, from local history. */
  history(target: string, limit = this.#opts.historyLines): void {
    const session = this.#session.require();
    let chat: string;
    if (target.startsWith("#")) {
      const id = this.#groups?.find(target)?.id ??
        session.store.groups().find((g) => groupHandle(g.id) === target.toLowerCase())?.id;
      if (!id) throw new ClientError("NO_SUCH_GROUP", `no group ${target} in your history`);
      chat = groupChat(id);
    } else {
      this.#session.checkName(target);
      chat = target;
    }
    this.#ctx.emit({
      type: "history",
      chat: target,
      entries: session.store.recent(chat, limit).map((h) => ({
        id: h.id,
        from: h.sender,
        ts: h.ts,
        text: h.text,
        mark: h.mark,
        outgoing: h.outgoing,
      })),
    });
  }

  /** `search <words>`: messages containing all the words (full text), newest first. */
  search(words: string[], limit = 50): void {
    const session = this.#session.require();
    if (words.length === 0) throw new ClientError("BAD_COMMAND", "usage: search <words>");
    const chatName = (chat: string) => chat.startsWith("g:") ? groupHandle(chat.slice(2)) : chat;
    this.#ctx.emit({
      type: "search_results",
      query: words.join(" "),
      results: session.store.search(words, limit).map((h) => ({
        id: h.id,
        chat: chatName(h.chat),
        from: h.sender,
        ts: h.ts,
        text: h.text,
        mark: h.mark,
      })),
    });
  }

  // ---- offline mail --------------------------------------------------------------------------

  /** Who has pending messages for me on the server. */
  async hanging(): Promise<MailboxEntry[]> {
    const entries = await this.#mailbox.hanging();
    this.#waiting = new Map(entries.map((e) => [e.from.toLowerCase(), e.count]));
    return entries;
  }

  /**
   * Fetches the pending messages from `user`, stores them, and only then confirms them to the
   * server (which deletes them and tells the sender they were read).
   */
  async show(user: string): Promise<number> {
    const shown = await this.#mailbox.show(user);
    this.#waiting.delete(user.toLowerCase());
    return shown;
  }

  /** Shows every sender's pending messages, one sender after another (see Mailbox.showAll). */
  async showAll(): Promise<number> {
    const shown = await this.#mailbox.showAll();
    this.#waiting.clear();
    return shown;
  }

  /** Shows what `user` left on the server, in the background; a failure is said, not thrown. */
  #showWaiting(user: string): void {
    this.#ctx.track(
      this.show(user).catch((error) => {
        this.#ctx.emit({
          type: "error",
          code: error instanceof ClientError ? error.code : "INTERNAL",
          message: `could not show the messages ${user} left you: ${
            error instanceof Error ? error.message : String(error)
          }`,
        });
      }),
    );
  }

  /** Leaves the chat, logs out if possible, closes every link and the listener. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#ctx.beginClose();
      if (this.#session.current) {
        try {
          await this.logout();
        } catch { /* closing anyway */ }
      }
      this.#ctx.abort(new ConnectionClosedError("client is closing"));
      await this.#links.close();
      await this.#session.close();
      await this.#links.settleDials();
      await this.#ctx.drain();
      this.#ctx.emit({ type: "bye" });
    })();
    return this.#closing;
  }

  /**
   * Ends everything here and now, without the network: the session is left (its logout time
   * kept for the next login), links dropped, the local store closed. Everything in the store
   * was committed as it came, so nothing is lost. For a quit that cannot wait for close().
   */
  closeNow(): void {
    if (this.#closedNow) return;
    this.#closedNow = true;
    this.#ctx.beginClose();
    this.#ctx.abort(new ConnectionClosedError("client is closing"));
    this.#session.abandon();
    this.#ctx.emit({ type: "bye" });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
