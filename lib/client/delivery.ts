/**
 * The client's delivery room: one set of rules for every message I send, 1:1 or to a group.
 *
 * - **Outbox.** A message is stored before anything leaves, with what is owed for it: a 1:1
 *   message is its history row with an empty mark; a group message has one copy owed to each
 *   member (the group outbox).
 * - **One line per recipient.** Everything for one user (1:1 messages and group copies alike)
 *   goes through one queue, one at a time and in the order written, over the direct link; the
 *   next leaves only when the previous was acked or has taken its fallback. So each chat's
 *   messages arrive in order, also across reconnections and restarts.
 * - **One login at a time.** Each login session has its own queues and bookkeeping. The end of
 *   one (a logout) is no failure of what it was sending: its work stops without a word, what was
 *   not settled stays in the outbox, and the next login sends the whole outbox again, in order.
 * - **Acks.** The recipient acks after storing; a copy sent again (no ack seen) is dropped by
 *   the receiver as a duplicate, by sender and id.
 * - **Fallback.** A 1:1 message the peer cannot take (offline, busy, unreachable, silent) is
 *   sealed to the server's mailbox (`*`). A group copy waits for the member's link instead: the
 *   server carries no group traffic. What neither path can take stays owed and goes again when
 *   the recipient's link comes up, when the server is back, at the next login, or after a
 *   short while.
 *
 * Incoming 1:1 lines are stored, then acknowledged; group messages belong to the group room.
 */
import { asError, type OutgoingMessage } from "../net/framed_connection.ts";
import {
  encodeMessage,
  MAX_MAIL_BATCH_TEXT,
  type PeerMessage,
  type ServerMessage,
} from "../protocol/messages.ts";
import type { PeerLink } from "../peer/peer_link.ts";
import { MailSealer } from "../peer/sealed_mail.ts";
import type { Identity } from "../peer/identity.ts";
import { delay } from "../util/time.ts";
import { type DeliveryMark, groupChat, groupMarkOf, type PendingCopy } from "./client_store.ts";
import { groupHandle, groupMessageStatement } from "../peer/group_state.ts";
import { type ClientContext, ClientError } from "./context.ts";
import type { PeerLinks } from "./peer_links.ts";
import type { ServerSession, Session } from "./server_session.ts";
import { KickLines } from "../util/kick_lines.ts";

/** Where a 1:1 message waits while not under way: not started yet, or left in the outbox. */
interface Idle {
  fresh: Map<string, number>;
  held: Map<string, number>;
}

/**
 * What one login session keeps of what it sends, made at its first use. Each session has its own:
 * work of one that ended (a line waiting for its ack at the logout, a retry timer set before it)
 * finds its own and changes nothing of the next session's, which sends every line of the outbox
 * afresh, in its own queues. Kept for the session before, these made the next login's flush skip
 * the lines the old one still held and left them in the outbox while newer lines overtook them.
 */
interface Sends {
  /** Per recipient (name key), the end of their queue (see {@link Delivery.serial}). */
  readonly queues: Map<string, Promise<void>>;
  /** The 1:1 messages being delivered now: a flush does not start them again. */
  readonly inFlight: Set<string>;
  /**
   * Per recipient, my messages not settled yet (acked, stored or refused), each with its place
   * in the order they were written; and those whose delivery is under way now. A message goes
   * only when every earlier one to the same recipient is under way (or settled).
   */
  readonly unsent: Map<string, Map<string, number>>;
  readonly underWay: Set<string>;
  /**
   * Per recipient, those of {@link unsent} not under way: `fresh`, not started yet (in the
   * order written, so the first is the earliest), and `held`, left in the outbox. Asking these
   * whether an earlier message waits costs a message of a burst a step or two; walking the
   * messages before it cost one step per message on its way (hundreds in a burst).
   */
  readonly idle: Map<string, Idle>;
  /** Messages written (or taken from the outbox): the place of the next. */
  written: number;
  /** Per recipient, the outcomes of their messages whose `mail_send` is not answered yet. */
  readonly mailing: Map<string, Set<Promise<Outcome>>>;
  /** Ids already reported `queued` (said once, not at every try). */
  readonly toldQueued: Set<string>;
  /** The wait before the outbox is tried again, and the timer that will. */
  retryWait: number;
  retryTimer: Promise<void> | undefined;
  /** The group line of each recipient (name key): a kick asks it for one more pass. */
  readonly groupLines: KickLines;
  /**
   * Per recipient (name key), every group copy owed to them, oldest first, when this process
   * knows it without reading the store: their line read the store to the end, and the copies
   * of my messages since were added here as they were stored. Absent: only the store knows (a
   * copy owed for another reason, a line stopped with copies left). A query per copy was the
   * largest cost of sending to a group.
   */
  readonly owed: Map<string, PendingCopy[]>;
}

/** Ids of received messages remembered in memory to drop duplicates fast (the store has all). */
const SEEN_IDS = 10_000;

/**
 * Messages a client keeps in `mail_send` requests unanswered at once: enough for the server to
 * commit a burst together while the next is sealed, few enough that none waits near its request
 * timeout behind the others.
 */
const MAIL_IN_FLIGHT = 512;
/** Messages in one `mail_send` at most (also at most {@link MAX_MAIL_BATCH_TEXT} of sealed text). */
const MAIL_BATCH = 256;
/** Messages neither the peer nor the server could take are tried again after this, doubling. */
const RETRY_FIRST_MS = 2_000;
const RETRY_MAX_MS = 30_000;

/** How a send ended: `**`, `*`, still in the outbox, or refused for good. */
export type Outcome = "delivered" | "stored" | "queued" | "failed";

/** A message sealed for the mailbox, as `mail_send` carries it. */
interface SealedMail {
  msgId: string;
  ts: number;
  sealed: string;
}

/** The messages to one recipient that leave together in one `mail_send`. */
interface MailBatch {
  session: Session;
  to: string;
  messages: SealedMail[];
  /** Each message's answer, settled from the server's `mail_stored`. */
  answers: PromiseWithResolvers<void>[];
  /** Their sealed text. */
  chars: number;
}

/** A message on its way out. */
export interface Outgoing {
  id: string;
  to: string;
  ts: number;
  text: string;
  /** A fresh message: settles once its row (the outbox) is committed, or fails. */
  stored?: Promise<void>;
}

/** What the peer answered to a chat frame, or how the wait for it ended. */
export type LinkAnswer = "ack" | "busy" | "dropped" | "timeout";

/** What the delivery room needs to know of the windows and groups the user has. */
export interface DeliveryHost {
  /** The 1:1 chat partner whose window is open, if any. */
  readonly chatWith: string | undefined;
  /** Whether `user` is a member of my group `group` now: a copy for one who left is dropped. */
  isGroupMember(group: string, user: string): boolean;
}

/** A group copy not acked is tried again after this (busy: our states differ for a moment). */
const GROUP_BUSY_RETRY_MS = 300;
const GROUP_SILENT_RETRY_MS = 2_000;
/** `group_status` while acks arrive: at most this often (and at once for the last one). */
const STATUS_EVERY_MS = 50;
/** Group copies a member's line reads from the store at a time. */
const LINE_BATCH = 16;

/**
 * Those waiting for an answer on each link, told "dropped" when it closes: one reaction on the
 * link's `closed`, not a race against it per message sent (each race would leave a reaction on
 * it until the link ends).
 */
const waitingOn = new WeakMap<PeerLink, Set<(answer: "dropped") => void>>();

/** Calls `tell("dropped")` when `link` closes; returns how to stop waiting. */
function onDropped(link: PeerLink, tell: (answer: "dropped") => void): () => void {
  let waiting = waitingOn.get(link);
  if (!waiting) {
    const all = new Set<(answer: "dropped") => void>();
    waiting = all;
    waitingOn.set(link, all);
    void link.fc.closed.then(() => {
      for (const t of all) t("dropped");
      all.clear();
    });
  }
  waiting.add(tell);
  return () => waiting.delete(tell);
}

/**
 * The `group_msg` frame of a copy, encoded once per copy object: the copies of a new message
 * owed to every member are one object, so its JSON is made once, not once per member.
 */
const encodedCopies = new WeakMap<PendingCopy, Uint8Array>();

function encoded(copy: PendingCopy): Uint8Array {
  let body = encodedCopies.get(copy);
  if (body === undefined) {
    body = encodeMessage({
      type: "group_msg",
      group: copy.group,
      id: copy.msgId,
      seq: copy.seq,
      ts: copy.ts,
      ...(copy.prevTs !== undefined ? { prevTs: copy.prevTs } : {}),
      text: copy.text,
      ...(copy.sig !== undefined ? { sig: copy.sig } : {}),
    });
    encodedCopies.set(copy, body);
  }
  return body;
}

/** Acks are waited for per peer and message id. */
function ackKey(user: string, id: string): string {
  return `${user.toLowerCase()}\n${id}`;
}

export class Delivery {
  readonly #ctx: ClientContext;
  readonly #session: ServerSession;
  readonly #links: PeerLinks;
  readonly #host: DeliveryHost;
  readonly #ackTimeoutMs: number;
  /** Answers awaited (by peer and id), each with its deadline (`Date.now()` ms). */
  readonly #acks = new Map<
    string,
    { resolve: (answer: "ack" | "busy" | "timeout") => void; by: number }
  >();
  #ackTimer: ReturnType<typeof setInterval> | undefined;
  /** What each login session sends, kept while its work may still run. */
  readonly #sends = new WeakMap<Session, Sends>();
  readonly #seen = new Set<string>();
  #seq = 0;
  /** My group messages being numbered and signed, one after another. */
  #groupSends: Promise<unknown> = Promise.resolve();
  /** Group messages acked just now whose `group_status` is due (id → group). */
  readonly #statusDue = new Map<string, string>();
  /** My group messages being sent now: how many of their copies are not acked yet. */
  readonly #unacked = new Map<string, number>();
  /** `mail_send` requests not answered yet, and the sends waiting for one of them to end. */
  #mailInFlight = 0;
  readonly #mailWaiting: (() => void)[] = [];
  /** Per recipient, the sealed messages of the `mail_send` leaving next, and its timer. */
  readonly #mailBatches = new Map<string, MailBatch>();
  #batchTimer: ReturnType<typeof setTimeout> | undefined;
  #sealer: { identity: Identity; sealer: MailSealer } | undefined;

  constructor(
    ctx: ClientContext,
    rooms: { session: ServerSession; links: PeerLinks; host: DeliveryHost },
    options: { ackTimeoutMs: number },
  ) {
    this.#ctx = ctx;
    this.#session = rooms.session;
    this.#links = rooms.links;
    this.#host = rooms.host;
    this.#ackTimeoutMs = options.ackTimeoutMs;
  }

  /**
   * Writes a 1:1 message to the outbox, then delivers it.
   * @returns how it ended: "delivered" (`**`), "stored" (`*`), "queued" or "failed".
   */
  async send(session: Session, to: string, text: string): Promise<Outcome> {
    const id = crypto.randomUUID();
    const ts = Date.now();
    // The history row with an empty mark is the outbox. Its commit is not waited for before
    // the frame leaves: it is made right after the frame is handed to the socket, while the
    // frame travels (or at the next turn, should no frame leave in this one; a burst of lines
    // shares it), and the peer's ack is taken only once it is made. A kill -9 before it leaves
    // a line that was never said `sent`, that no outbox will send again, and that the peer has
    // at most once (docs/architecture.md, "A chat line's round trip").
    const stored = session.store.addMessageSoon({
      id,
      chat: to,
      sender: session.user,
      ts,
      text,
      outgoing: true,
      mark: "",
    }).then(() => this.#ctx.emit({ type: "sent", id, to, ts, text }));
    stored.catch(() => {}); // awaited below and by the delivery
    const outcome = this.#enqueue(session, { id, to, ts, text, stored });
    try {
      await stored;
    } catch (error) {
      outcome.catch(() => {});
      throw new Error(
        `the message could not be saved in your history (${asError(error).message}); ` +
          `it may have reached ${to} all the same`,
        { cause: error },
      );
    }
    return await outcome;
  }

  /**
   * Runs `task` after every earlier task of `session` for the same recipient: each link carries
   * its messages in the order they were written, 1:1 and group alike. (Not after the tasks of a
   * session that ended: they stop without sending, and the outbox goes again in this one.)
   */
  serial<T>(session: Session, user: string, task: () => Promise<T>): Promise<T> {
    const queues = this.#sendsOf(session).queues;
    const key = user.toLowerCase();
    const previous = queues.get(key) ?? Promise.resolve();
    const result = previous.then(task);
    const tail: Promise<void> = result.then(() => {}, () => {}).finally(() => {
      if (queues.get(key) === tail) queues.delete(key);
    });
    queues.set(key, tail);
    this.#ctx.track(tail);
    return result;
  }

  /**
   * Delivers messages to one recipient one after another, so they keep their order. The queue
   * moves on once a message is on its way: acked by the peer, or handed to the control
   * connection for the mailbox. The server's answers are awaited outside the queue, so a burst
   * of messages to someone away travels pipelined (the connection keeps their order).
   */
  #enqueue(session: Session, message: Outgoing): Promise<Outcome> {
    const sends = this.#sendsOf(session);
    const key = message.to.toLowerCase();
    const unsent = sends.unsent.get(key) ?? new Map<string, number>();
    if (!unsent.has(message.id)) {
      const place = ++sends.written;
      unsent.set(message.id, place);
      this.#idleOf(sends, key).fresh.set(message.id, place);
    }
    sends.unsent.set(key, unsent);
    sends.inFlight.add(message.id);
    return this.serial(session, message.to, () => this.#deliver(session, message))
      .then((onItsWay) => onItsWay.outcome)
      .finally(() => sends.inFlight.delete(message.id));
  }

  /**
   * Puts one message on its way. Its order among the messages to the same recipient is kept
   * across paths: a direct try waits for the mailbox's answers to the ones before it, and once
   * one is left in the outbox (neither the peer nor the server took it) the next ones stay
   * there behind it, until they all go again in order.
   */
  async #deliver(session: Session, m: Outgoing): Promise<{ outcome: Promise<Outcome> }> {
    // Logged out meanwhile: stays in the outbox, for the next login (see #ended).
    const ended = { outcome: Promise.resolve<Outcome>("queued") };
    if (this.#ended(session)) return ended;
    const sends = this.#sendsOf(session);
    const key = m.to.toLowerCase();
    const mailing = sends.mailing.get(key);
    // Known to be away (a lookup of a moment ago, no link): no direct try, so no wait for the
    // mail before it either. It follows that mail on the control connection, which keeps
    // their order to the store: a burst to someone away travels pipelined.
    const away = mailing !== undefined && this.#links.open(m.to) === undefined &&
      this.#session.knownOffline(m.to);
    if (mailing && !away) {
      await Promise.all(mailing);
      if (this.#ended(session)) return ended;
    }
    const place = sends.unsent.get(key)?.get(m.id) ?? Infinity;
    if (this.#waitsBehind(sends, key, place)) {
      const why = `it waits behind an earlier message to ${m.to} that could not be sent yet`;
      return { outcome: Promise.resolve(this.#leaveQueued(session, m, why)) };
    }
    sends.underWay.add(m.id);
    this.#notIdle(sends, key, m.id);
    const direct = away
      ? { ok: false as const, reason: `${m.to} is offline` }
      : await this.#deliverDirect(session, m);
    // Nothing more before the row is committed (made as the frame left: this waits only when
    // no frame left, or it did in a turn before). A row that could not be saved fails send().
    if (m.stored && !await m.stored.then(() => true, () => false)) {
      this.#settled(session, m);
      return { outcome: Promise.resolve(direct.ok ? "delivered" : "failed") };
    }
    if (direct.ok) {
      this.#settled(session, m);
      // The peer has it: the round trip ends here. The mark is committed with the next line's
      // row or at the next turn, and `delivered` is said once it is: once per message, and
      // never before it would survive a kill -9 (one before it leaves the message in the
      // outbox: sent again, dropped by the peer as a duplicate, acked again, said then).
      if (this.#session.current === session) {
        this.#ctx.track(
          session.store.setMarkSoon(m.id, "**").then(
            () =>
              this.#ctx.emit({
                type: "delivered",
                id: m.id,
                to: m.to,
                ms: Date.now() - m.ts,
                ...outboxLine(m),
              }),
            () => {}, // (the store closed meanwhile: it stays in the outbox and goes again)
          ),
        );
      }
      return { outcome: Promise.resolve("delivered") };
    }
    // The session ended while the message was on its way (the logout closed the link it waited
    // on for an ack): not a failure of the message. It stays in the outbox, for the next login.
    if (this.#ended(session)) return ended;
    let stored: Promise<void>;
    try {
      stored = (await this.#startMail(session, m.to, m)).answer;
    } catch (error) {
      return { outcome: Promise.resolve(this.#mailFailed(session, m, direct.reason, error)) };
    }
    const outcome = stored.then(async () => {
      this.#settled(session, m);
      // Answered after the session ended: no mark, so it goes again at the next login (the
      // server answers that it has it) and is said then.
      if (this.#ended(session)) return "queued" as const;
      // The marks of a burst's answers share one commit; said once it is committed.
      await session.store.setMarkSoon(m.id, "*");
      this.#ctx.emit({
        type: "stored",
        id: m.id,
        to: m.to,
        reason: direct.reason,
        ...outboxLine(m),
      });
      return "stored" as const;
    }, (error) => this.#mailFailed(session, m, direct.reason, error));
    const set = sends.mailing.get(key) ?? new Set<Promise<Outcome>>();
    set.add(outcome);
    sends.mailing.set(key, set);
    // The caller awaits the outcome; this copy of it must not fail unobserved.
    outcome.finally(() => {
      set.delete(outcome);
      if (set.size === 0 && sends.mailing.get(key) === set) sends.mailing.delete(key);
    }).catch(() => {});
    return { outcome };
  }

  /** What a message becomes when the mailbox did not take it either. */
  #mailFailed(session: Session, m: Outgoing, directReason: string, error: unknown): Outcome {
    const e = asError(error);
    // The session ended before the server answered (the lookup for the mail key found no one
    // logged in, say): no failure of the message, which goes at the next login. Said
    // `not_delivered`, it was sent all the same then, and the user may have typed it again.
    if (this.#ended(session)) return "queued";
    if (e instanceof ClientError && e.code === "NOT_LOGGED_IN") {
      // The server does not know this session (yet): the outbox goes again shortly.
      return this.#leaveQueued(
        session,
        m,
        `${directReason}, and the server does not have the session back yet; trying again shortly`,
      );
    }
    if (e instanceof ClientError && e.code === "SERVER_BUSY") {
      // For a moment (its database restarting, say): try the outbox again shortly.
      return this.#leaveQueued(
        session,
        m,
        `${directReason}, and the server is busy (${e.message}); trying again shortly`,
      );
    }
    if (e instanceof ClientError && e.code === "SERVER_UNREACHABLE") {
      // The control connection may have stayed up (a request that timed out): then no
      // re-attach will flush the outbox, so it is tried again shortly anyway.
      return this.#leaveQueued(
        session,
        m,
        `${directReason}, and the server is unreachable; it will be sent when either is back`,
      );
    }
    this.#settled(session, m);
    this.#finish(session, m.id, "!");
    this.#ctx.emit({
      type: "not_delivered",
      id: m.id,
      to: m.to,
      reason: e.message,
      ...outboxLine(m),
    });
    return "failed";
  }

  /**
   * Leaves a message in the outbox, the messages after it to the same recipient with it, and
   * has them all tried again, in order, after a while (or when the server is back).
   */
  #leaveQueued(session: Session, m: Outgoing, reason: string): Outcome {
    const sends = this.#sendsOf(session);
    sends.underWay.delete(m.id);
    const key = m.to.toLowerCase();
    const place = sends.unsent.get(key)?.get(m.id);
    if (place !== undefined && !sends.idle.get(key)?.fresh.has(m.id)) {
      this.#idleOf(sends, key).held.set(m.id, place);
    }
    if (!sends.toldQueued.has(m.id)) {
      sends.toldQueued.add(m.id);
      this.#ctx.emit({ type: "queued", id: m.id, to: m.to, reason, ...outboxLine(m) });
    }
    // (The session's own: one set before a logout ends with nothing to do, and the next login
    // sends the outbox at once and sets its own when it needs one.)
    sends.retryTimer ??= (async () => {
      try {
        await delay(sends.retryWait, this.#ctx.signal);
      } catch {
        return; // closing: the outbox keeps them for the next start
      } finally {
        sends.retryTimer = undefined;
      }
      sends.retryWait = Math.min(sends.retryWait * 2, RETRY_MAX_MS);
      if (!this.#ended(session)) this.flushOutbox(session);
    })();
    this.#ctx.track(sends.retryTimer);
    return "queued";
  }

  /**
   * Seals a message and adds it to the `mail_send` leaving next for its recipient; resolves once
   * it is there, with the promise of the server's answer (the message is stored once that
   * settles).
   */
  async #startMail(
    session: Session,
    to: string,
    m: { id: string; ts: number; text: string },
  ): Promise<{ answer: Promise<void> }> {
    await this.#mailSlot();
    if (this.#ended(session)) {
      // (Not a lookup in the next session's name.)
      this.#mailDone();
      throw new ClientError("NOT_LOGGED_IN", "the session ended before the message left");
    }
    const recipient = await this.#session.mailKeyOf(to).catch((error) => {
      this.#mailDone();
      throw error;
    });
    let sealed: string;
    try {
      // In the burst to this recipient: one key agreement and one signature for many messages.
      sealed = await this.#sealerOf(session.identity).seal(
        { from: session.user, to: recipient.user, msgId: m.id, ts: m.ts, text: m.text },
        recipient.mailKey,
      );
    } catch (error) {
      this.#mailDone();
      throw error;
    }
    const answer = this.#batchMail(session, to, { msgId: m.id, ts: m.ts, sealed })
      .finally(() => this.#mailDone());
    answer.catch(() => {}); // the caller awaits it
    return { answer };
  }

  /**
   * Adds a sealed message to the batch for its recipient, which leaves as one `mail_send` at
   * the next turn of the event loop (a burst is sealed in one turn, message after message), or
   * at once when it is full. Batches leave in the order they were begun, so each recipient's
   * messages reach the server in the order written.
   */
  #batchMail(session: Session, to: string, mail: SealedMail): Promise<void> {
    const key = to.toLowerCase();
    let batch = this.#mailBatches.get(key);
    if (
      batch !== undefined &&
      (batch.session !== session || batch.chars + mail.sealed.length > MAX_MAIL_BATCH_TEXT)
    ) {
      this.#sendBatch(key, batch);
      batch = undefined;
    }
    if (batch === undefined) {
      batch = { session, to, messages: [], answers: [], chars: 0 };
      this.#mailBatches.set(key, batch);
    }
    const answer = Promise.withResolvers<void>();
    batch.messages.push(mail);
    batch.answers.push(answer);
    batch.chars += mail.sealed.length;
    if (batch.messages.length >= MAIL_BATCH) this.#sendBatch(key, batch);
    else this.#batchTimer ??= setTimeout(() => this.#sendBatches(), 0);
    return answer.promise;
  }

  /** Sends every batch begun. */
  #sendBatches(): void {
    clearTimeout(this.#batchTimer);
    this.#batchTimer = undefined;
    for (const [key, batch] of this.#mailBatches) this.#sendBatch(key, batch);
  }

  /** Sends one batch as a `mail_send` and settles each of its messages from the answer. */
  #sendBatch(key: string, batch: MailBatch): void {
    if (this.#mailBatches.get(key) === batch) this.#mailBatches.delete(key);
    if (this.#session.current !== batch.session) {
      const gone = new ClientError(
        "SERVER_UNREACHABLE",
        "the session ended before the message left; it stays in the outbox",
      );
      for (const a of batch.answers) a.reject(gone);
      return;
    }
    const { messages, answers } = batch;
    void this.#session.request<Extract<ServerMessage, { type: "mail_stored" }>>({
      type: "mail_send",
      to: batch.to,
      messages,
    }).then((reply) => {
      const refused = new Map((reply.refused ?? []).map((r) => [r.msgId, r]));
      if (reply.stored + refused.size !== messages.length) {
        // Not what was asked: each is sent again (the server keeps one copy of each).
        throw new ClientError(
          "SERVER_BUSY",
          `it answered for ${reply.stored + refused.size} of ${messages.length} messages`,
        );
      }
      messages.forEach((mail, i) => {
        const no = refused.get(mail.msgId);
        if (no) answers[i]!.reject(new ClientError(no.code, no.message));
        else answers[i]!.resolve();
      });
    }).catch((error) => {
      for (const a of answers) a.reject(error);
    });
  }

  /** The sealer of my identity key's mail (bursts live as long as the key in use). */
  #sealerOf(identity: Identity): MailSealer {
    if (this.#sealer?.identity !== identity) {
      this.#sealer = { identity, sealer: new MailSealer(identity) };
    }
    return this.#sealer.sealer;
  }

  /**
   * Waits until fewer than {@link MAIL_IN_FLIGHT} `mail_send` requests are unanswered, then
   * counts this one ({@link #mailDone} gives it back).
   */
  async #mailSlot(): Promise<void> {
    while (this.#mailInFlight >= MAIL_IN_FLIGHT) {
      await new Promise<void>((resolve) => this.#mailWaiting.push(resolve));
    }
    this.#mailInFlight++;
  }

  #mailDone(): void {
    this.#mailInFlight--;
    this.#mailWaiting.shift()?.();
  }

  /** Tries the direct link: a few attempts when it drops, none when the user is away. */
  async #deliverDirect(
    session: Session,
    m: Outgoing,
  ): Promise<{ ok: true } | { ok: false; reason: string }> {
    let reason = `${m.to} is unreachable`;
    let unreachable = false;
    const frame = { type: "msg" as const, id: m.id, seq: this.#seq++, ts: m.ts, text: m.text };
    for (let attempt = 0; attempt < 3; attempt++) {
      if (attempt > 0) await delay(100 * 3 ** (attempt - 1)).catch(() => {});
      if (this.#session.current !== session || this.#ctx.closing) break;
      let link: PeerLink;
      try {
        link = await this.#links.linkTo(m.to, false);
      } catch (error) {
        const e = asError(error);
        const code = e instanceof ClientError ? e.code : "";
        if (code === "USER_OFFLINE") return { ok: false, reason: `${m.to} is offline` };
        // A dial of the session before, joined as it ended: this session dials afresh.
        if (code === "NOT_LOGGED_IN") continue;
        if (code === "PEER_UNREACHABLE") {
          unreachable = true;
          reason = `${m.to} cannot be reached directly`;
          continue;
        }
        return { ok: false, reason: e.message };
      }
      // The row of a fresh message is committed once the frame is on its way (see send()).
      const outcome = await this.sendOnLink(link, frame, {
        handed: () => session.store.writeQueued(),
      });
      if (outcome === "ack") return { ok: true };
      if (outcome === "busy") return { ok: false, reason: `${m.to} is busy in another chat` };
      if (outcome === "timeout") {
        // A live link that does not answer: hand the message to the server; the receiver drops
        // it as a duplicate should the direct copy arrive after all.
        return { ok: false, reason: `${m.to} did not acknowledge in time` };
      }
      reason = `${m.to} disconnected`;
      unreachable = true;
    }
    if (unreachable && !this.#ended(session)) {
      // The directory may still think they are online: let the server check.
      this.#session.reportUnreachable(m.to);
    }
    return { ok: false, reason };
  }

  /**
   * Sends one chat frame and waits for the peer's answer or the link's end.
   * @param options.handed called once the frame is handed to the socket (sealed and its write
   * begun), before anything else: what it does overlaps the frame's way to the peer and back.
   * @param options.encoded the frame as `encodeMessage` made it, when the caller has it already
   * (the same group message goes to every member).
   */
  async sendOnLink(
    link: PeerLink,
    frame: OutgoingMessage & { id: string },
    options: { handed?: () => void; encoded?: Uint8Array } = {},
  ): Promise<LinkAnswer> {
    // One promise settled by whichever comes first: the answer, the deadline, the link's end
    // (or a write that failed: the link is going).
    const answer = Promise.withResolvers<LinkAnswer>();
    // Keyed by peer too: a group message has one id and goes to every member at once.
    const key = ackKey(link.user, frame.id);
    this.#acks.set(key, { resolve: answer.resolve, by: Date.now() + this.#ackTimeoutMs });
    this.#watchAcks();
    const forget = onDropped(link, answer.resolve);
    try {
      // The write is not awaited on its own: the answer comes after it anyway, and a wait for
      // each write was one more turn per copy (31 per group message). A write that fails
      // settles the answer as "dropped".
      const written = options.encoded ? link.fc.sendEncoded(options.encoded) : link.fc.send(frame);
      written.catch(() => answer.resolve("dropped"));
      options.handed?.();
      return await answer.promise;
    } catch {
      return "dropped";
    } finally {
      forget();
      // (Its own: a later send of the same frame may wait there now.)
      if (this.#acks.get(key)?.resolve === answer.resolve) this.#acks.delete(key);
    }
  }

  /**
   * While acks are awaited, one timer tells those past their deadline "timeout" (a timer set
   * and cleared per frame sent cost more than the frame's encryption: 31 per group message).
   */
  #watchAcks(): void {
    if (this.#ackTimer !== undefined || this.#ctx.signal.aborted) return;
    const step = Math.max(10, Math.min(250, Math.floor(this.#ackTimeoutMs / 10)));
    const stop = () => {
      clearInterval(this.#ackTimer);
      this.#ackTimer = undefined;
      this.#ctx.signal.removeEventListener("abort", stop);
    };
    this.#ackTimer = setInterval(() => {
      if (this.#acks.size === 0) return stop();
      const now = Date.now();
      for (const waiting of this.#acks.values()) if (now >= waiting.by) waiting.resolve("timeout");
    }, step);
    this.#ctx.signal.addEventListener("abort", stop);
  }

  /**
   * Sends again what is still owed, in the order it was written (after a login, when the server
   * is back, or a while after a message could not be sent): every 1:1 message in the outbox, and
   * every group copy to a member linked now.
   */
  flushOutbox(session: Session): void {
    this.#flushDirect(session);
    for (const member of session.store.membersOwed()) void this.kickGroup(session, member);
  }

  /** The 1:1 messages in the outbox (to `user` only, if given) not on their way already. */
  #flushDirect(session: Session, user?: string): void {
    // (Lines a session that ended still holds are this session's to send: its work on them
    // stops without sending, and this session's queues do not wait for it.)
    const inFlight = this.#sendsOf(session).inFlight;
    for (const entry of session.store.outbox()) {
      if (inFlight.has(entry.id)) continue;
      if (user !== undefined && entry.chat.toLowerCase() !== user.toLowerCase()) continue;
      void this.#enqueue(session, {
        id: entry.id,
        to: entry.chat,
        ts: entry.ts,
        text: entry.text,
      }).catch(() => {});
    }
  }

  /** A link to `user` came up: whatever waits for them goes now, 1:1 and group alike. */
  onLinkUp(user: string): void {
    const session = this.#session.current;
    if (!session) return;
    this.#flushDirect(session, user);
    if (session.store.pendingCopies(user, 1).length > 0) void this.kickGroup(session, user);
  }

  // ---- group copies --------------------------------------------------------------------------

  /**
   * Stores a group message with a copy owed to each of `members()` (one transaction), then sends
   * the copies. Resolves once each member's copy was acked or has to wait for them.
   * @param members the other members, asked in the same turn as the message is stored (after
   * it was signed): a member learned of meanwhile is owed it, one who left is not.
   * @returns "delivered" when every member has it, else "queued".
   */
  async sendGroup(
    session: Session,
    group: string,
    members: () => string[],
    text: string,
  ): Promise<"delivered" | "queued"> {
    const id = crypto.randomUUID();
    // Numbered and signed one at a time (the number and the time of the one before are signed).
    const stored = this.#groupSends.then(async () => {
      const { seq, prevTs } = session.store.nextGroupSeq(group);
      const ts = Math.max(Date.now(), prevTs ?? 0); // each author's times never go back
      const author = session.user;
      const statement = groupMessageStatement({ group, author, id, seq, ts, prevTs, text });
      const sig = await session.identity.sign(statement);
      // (Not before the signature: a state that came meanwhile has owed my earlier messages to
      // a newcomer already, and this one is not stored yet.)
      const to = members();
      session.store.addGroupMessage(
        { id, chat: groupChat(group), sender: author, ts, text, outgoing: true, mark: "" },
        group,
        to,
        { seq, prevTs, sig },
      );
      // In the same turn as the commit: a line that reads the store from now on finds it there.
      const copy: PendingCopy = {
        msgId: id,
        group,
        seq,
        ts,
        text,
        sig,
        ...(prevTs !== undefined ? { prevTs } : {}),
      };
      const owed = this.#sendsOf(session).owed;
      for (const member of to) owed.get(member.toLowerCase())?.push(copy);
      return { ts, to };
    });
    this.#groupSends = stored.catch(() => {});
    const { ts, to } = await stored;
    this.#ctx.emit({ type: "sent", id, to: groupHandle(group), ts, text, group });
    if (to.length > 0) this.#unacked.set(id, to.length);
    try {
      await Promise.all(to.map((member) => this.kickGroup(session, member, { known: true })));
    } finally {
      this.#unacked.delete(id);
    }
    const status = session.store.copyStatus(id);
    if (status.pending.length > 0) this.groupStatus(session, id, group);
    return status.pending.length === 0 ? "delivered" : "queued";
  }

  /**
   * Sends the group copies owed to `member`, oldest first (by number within each group), in
   * the member's line, while its link is open. Resolves when the line has stopped: nothing
   * owed, no link (the copies wait for it), or no ack yet (tried again shortly).
   */
  kickGroup(session: Session, member: string, options: { known?: boolean } = {}): Promise<void> {
    const key = member.toLowerCase();
    const sends = this.#sendsOf(session);
    // Owed more than the copies of my new messages (`known`: added to `owed` already): the line
    // reads the store again.
    if (!options.known) sends.owed.delete(key);
    // Never fails: callers start lines without waiting. A line stopped by an error (its store
    // closed by a logout meanwhile, say) leaves its copies owed, as a lost link does.
    return sends.groupLines.kick(key, () => this.#groupLine(session, member), {
      go: () => !this.#ended(session) && !this.#ctx.closing,
      start: (loop) => this.serial(session, member, loop),
    });
  }

  async #groupLine(session: Session, member: string): Promise<void> {
    const key = member.toLowerCase();
    const owed = this.#sendsOf(session).owed;
    // Copies are read a batch at a time; a batch shorter than asked for was all that was owed
    // then: it becomes the member's entry in `owed`, where the copies of my new messages are
    // added (anything owed otherwise comes with a kick that drops the entry).
    let batch: PendingCopy[] = [];
    for (let sent = 0; sent < 10_000; sent++) {
      if (this.#session.current !== session || this.#ctx.closing) return;
      const link = this.#links.open(member);
      if (!link) {
        // Away: the copies wait for the link (the group room dials them), in the store only.
        owed.delete(key);
        return;
      }
      if (batch.length === 0) {
        const known = owed.get(key);
        if (known) batch = known;
        else {
          batch = session.store.pendingCopies(member, LINE_BATCH);
          if (batch.length < LINE_BATCH) owed.set(key, batch);
        }
      }
      const copy = batch.shift();
      if (!copy) return;
      if (!this.#host.isGroupMember(copy.group, member)) {
        // I left, or they did: the copy is owed no more.
        for (const id of session.store.dropCopies(copy.group, member)) {
          this.groupStatus(session, id, copy.group);
        }
        continue;
      }
      const answer = await this.sendOnLink(link, { type: "group_msg", id: copy.msgId }, {
        encoded: encoded(copy),
      });
      if (answer === "ack") {
        // Committed with the other acks of ≈ 50 ms, or at once with the last copy of a message
        // being sent, then said: once per copy (a copy sent again after a lost ack is acked
        // again), and never before it would survive a kill -9. The line goes on meanwhile.
        const settled = session.store.settleCopySoon(copy.msgId, member);
        const unacked = this.#unacked.get(copy.msgId);
        if (unacked !== undefined) this.#unacked.set(copy.msgId, unacked - 1);
        if (unacked === 1) session.store.writeQueued();
        const told = settled.then((first) => {
          if (!first) return;
          this.#ctx.emit({
            type: "delivered",
            id: copy.msgId,
            to: member,
            ms: Date.now() - copy.ts,
            group: copy.group,
          });
        });
        // (Committed just now: said before the status that says the message is complete.)
        if (unacked === 1) await told;
        else this.#ctx.track(told);
        this.#statusSoon(session, copy.msgId, copy.group, unacked === 1);
        continue;
      }
      // Not acked: still owed, so the store knows better than `owed` now.
      owed.delete(key);
      // busy: they do not count me (yet), or left; their state follows, then we try again.
      // timeout: a live link that does not answer (if it dies, its return brings us back).
      // dropped: the link's return brings us back.
      if (answer !== "dropped") {
        const wait = answer === "busy" ? GROUP_BUSY_RETRY_MS : GROUP_SILENT_RETRY_MS;
        this.#ctx.track(
          delay(wait, this.#ctx.signal).then(() => this.kickGroup(session, member), () => {}),
        );
      }
      return;
    }
  }

  /**
   * {@link groupStatus} for the acks of a while ({@link STATUS_EVERY_MS}) together, and at once
   * for the last copy of a message being sent: listing who has a message at every one of 31
   * acks made the sender's work per message grow with the square of the group.
   */
  #statusSoon(session: Session, msgId: string, group: string, last: boolean): void {
    if (last) {
      this.#statusDue.delete(msgId);
      this.groupStatus(session, msgId, group);
      return;
    }
    if (this.#statusDue.size === 0) {
      this.#ctx.track(
        delay(STATUS_EVERY_MS, this.#ctx.signal).then(() => {
          const due = [...this.#statusDue];
          this.#statusDue.clear();
          if (this.#session.current !== session) return;
          for (const [id, g] of due) this.groupStatus(session, id, g);
        }, () => this.#statusDue.clear()),
      );
    }
    this.#statusDue.set(msgId, group);
  }

  /** Says who has my group message `msgId` and who it still waits for. */
  groupStatus(session: Session, msgId: string, group: string): void {
    const status = session.store.copyStatus(msgId);
    this.#ctx.emit({
      type: "group_status",
      id: msgId,
      group,
      mark: groupMarkOf(status),
      have: status.have,
      pending: status.pending,
    });
  }

  /** The messages this room owns on a peer link: chat lines and the answers to ours. */
  async onPeerMessage(
    link: PeerLink,
    m: Extract<PeerMessage, { type: "msg" | "ack" | "busy" }>,
  ): Promise<void> {
    switch (m.type) {
      case "msg":
        return await this.#receive(link, m);
      case "ack":
      case "busy":
        this.#acks.get(ackKey(link.user, m.id))?.resolve(m.type);
        return;
    }
  }

  async #receive(link: PeerLink, m: Extract<PeerMessage, { type: "msg" }>): Promise<void> {
    const session = this.#session.current;
    if (!session) return;
    const chat = this.#host.chatWith?.toLowerCase();
    // (In a group, a message from someone else is shown as a notice instead.)
    if (
      chat !== undefined && chat !== link.user.toLowerCase() &&
      !session.store.hasMessage(link.user, m.id)
    ) {
      // Busy in another chat: as in the original, the message waits on the server and we are
      // told there is mail, instead of it cutting into this conversation.
      await link.fc.send({ type: "busy", id: m.id }).catch(() => {});
      return;
    }
    const seen = `${link.user.toLowerCase()}\n${m.id}`;
    const duplicate = this.#seen.has(seen) || !session.store.addMessage({
      id: m.id,
      chat: link.user,
      sender: link.user,
      ts: m.ts,
      text: m.text,
      outgoing: false,
      mark: "**",
    });
    // Acknowledge after the message is stored, also a duplicate (our first ack may be lost).
    await link.fc.send({ type: "ack", id: m.id }).catch(() => {});
    if (duplicate) return;
    this.#seen.add(seen);
    if (this.#seen.size > SEEN_IDS) this.#seen.delete(this.#seen.values().next().value!);
    this.#ctx.emit({
      type: "message",
      id: m.id,
      from: link.user,
      ts: m.ts,
      text: m.text,
      inChat: this.#host.chatWith?.toLowerCase() === link.user.toLowerCase(),
      via: "direct",
    });
  }

  /** A message acked, stored or refused: it no longer holds back the ones after it. */
  #settled(session: Session, m: Outgoing): void {
    const sends = this.#sendsOf(session);
    const key = m.to.toLowerCase();
    const unsent = sends.unsent.get(key);
    unsent?.delete(m.id);
    if (unsent?.size === 0) sends.unsent.delete(key);
    sends.underWay.delete(m.id);
    this.#notIdle(sends, key, m.id);
    sends.toldQueued.delete(m.id);
    sends.retryWait = RETRY_FIRST_MS;
  }

  /** Whether a message to `key` written before `place` is not on its way. */
  #waitsBehind(sends: Sends, key: string, place: number): boolean {
    const idle = sends.idle.get(key);
    if (idle === undefined) return false;
    const earliest: number | undefined = idle.fresh.values().next().value;
    if (earliest !== undefined && earliest < place) return true;
    for (const at of idle.held.values()) if (at < place) return true;
    return false;
  }

  #idleOf(sends: Sends, key: string): Idle {
    let idle = sends.idle.get(key);
    if (idle === undefined) {
      idle = { fresh: new Map(), held: new Map() };
      sends.idle.set(key, idle);
    }
    return idle;
  }

  /** Message `id` to `key` is on its way, or settled. */
  #notIdle(sends: Sends, key: string, id: string): void {
    const idle = sends.idle.get(key);
    if (idle === undefined) return;
    idle.fresh.delete(id);
    idle.held.delete(id);
    if (idle.fresh.size === 0 && idle.held.size === 0) sends.idle.delete(key);
  }

  /** What `session` sends (see {@link Sends}). */
  #sendsOf(session: Session): Sends {
    let sends = this.#sends.get(session);
    if (sends === undefined) {
      sends = {
        queues: new Map(),
        inFlight: new Set(),
        unsent: new Map(),
        underWay: new Set(),
        idle: new Map(),
        written: 0,
        mailing: new Map(),
        toldQueued: new Set(),
        retryWait: RETRY_FIRST_MS,
        retryTimer: undefined,
        groupLines: new KickLines(),
        owed: new Map(),
      };
      this.#sends.set(session, sends);
    }
    return sends;
  }

  /**
   * Whether `session` is over: logged out (another login may have come since). Its work then
   * stops and says nothing: what it was sending stays in the outbox, and the next login sends
   * it, so `not_delivered` (or `queued`) would not be true.
   */
  #ended(session: Session): boolean {
    return this.#session.current !== session;
  }

  #finish(session: Session, id: string, mark: DeliveryMark): void {
    if (this.#session.current === session) session.store.setMark(id, mark);
  }
}

/**
 * The line itself, on the outcome of one that went from the outbox (no `stored` promise: not
 * sent fresh in this run, so no `sent` event showed it): a front end can say which line it was.
 */
function outboxLine(m: Outgoing): { ts?: number; text?: string } {
  return m.stored === undefined ? { ts: m.ts, text: m.text } : {};
}
