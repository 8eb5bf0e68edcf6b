/**
 * The client's delivery room: a message written to the outbox (the history row with an empty
 * mark) goes directly to the peer when a link can be had, otherwise sealed to the server's
 * mailbox, and stays in the outbox until one of them acknowledged it. Messages to one
 * recipient leave in the order they were written. Incoming chat messages are stored, then
 * acknowledged; duplicates are dropped by id.
 */
import { asError, type OutgoingMessage } from "../net/framed_connection.ts";
import type { PeerMessage } from "../protocol/messages.ts";
import type { PeerLink } from "../peer/peer_link.ts";
import { sealMail } from "../peer/sealed_mail.ts";
import { delay } from "../util/time.ts";
import type { DeliveryMark } from "./client_store.ts";
import { type ClientContext, ClientError } from "./context.ts";
import type { PeerLinks } from "./peer_links.ts";
import type { ServerSession, Session } from "./server_session.ts";

/** Ids of received messages remembered in memory to drop duplicates fast (the store has all). */
const SEEN_IDS = 10_000;

/**
 * `mail_send` requests a client keeps unanswered at once: enough for the server to commit a
 * burst together, few enough that none waits near its request timeout behind the others.
 */
const MAIL_IN_FLIGHT = 64;
/** Messages neither the peer nor the server could take are tried again after this, doubling. */
const RETRY_FIRST_MS = 2_000;
const RETRY_MAX_MS = 30_000;

/** How a send ended: `**`, `*`, still in the outbox, or refused for good. */
export type Outcome = "delivered" | "stored" | "queued" | "failed";

/** A message on its way out. */
export interface Outgoing {
  id: string;
  to: string;
  ts: number;
  text: string;
}

/** What the peer answered to a chat frame, or how the wait for it ended. */
export type LinkAnswer = "ack" | "busy" | "dropped" | "timeout";

/** What the delivery room needs to know of the windows the user has open. */
export interface DeliveryHost {
  /** The 1:1 chat partner whose window is open, if any. */
  readonly chatWith: string | undefined;
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
  readonly #acks = new Map<string, { resolve: (answer: "ack" | "busy") => void }>();
  readonly #queues = new Map<string, Promise<void>>();
  readonly #inFlight = new Set<string>();
  readonly #seen = new Set<string>();
  #seq = 0;
  /** `mail_send` requests not answered yet, and the sends waiting for one of them to end. */
  #mailInFlight = 0;
  readonly #mailWaiting: (() => void)[] = [];
  /** Per recipient, the outcomes of their messages whose `mail_send` is not answered yet. */
  readonly #mailing = new Map<string, Set<Promise<Outcome>>>();
  /**
   * Per recipient, my messages not settled yet (acked, stored or refused), each with its place
   * in the order they were written; and those whose delivery is under way now. A message goes
   * only when every earlier one to the same recipient is under way (or settled).
   */
  readonly #unsent = new Map<string, Map<string, number>>();
  readonly #underWay = new Set<string>();
  #written = 0;
  /** The session the above belong to. */
  #for: Session | undefined;
  /** Ids already reported `queued` (said once, not at every try). */
  readonly #toldQueued = new Set<string>();
  #retryWait = RETRY_FIRST_MS;
  #retryTimer: Promise<void> | undefined;

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
    const message: Outgoing = { id: crypto.randomUUID(), to, ts: Date.now(), text };
    // Written before anything leaves: the history row with an empty mark is the outbox (a
    // burst of lines shares one commit).
    await session.store.addMessageSoon({
      id: message.id,
      chat: to,
      sender: session.user,
      ts: message.ts,
      text,
      outgoing: true,
      mark: "",
    });
    this.#ctx.emit({ type: "sent", id: message.id, to, ts: message.ts, text });
    return await this.#enqueue(session, message);
  }

  /**
   * Runs `task` after every earlier task for the same recipient: each link carries its
   * messages in the order they were written, 1:1 and group alike.
   */
  serial<T>(user: string, task: () => Promise<T>): Promise<T> {
    const key = user.toLowerCase();
    const previous = this.#queues.get(key) ?? Promise.resolve();
    const result = previous.then(task);
    const tail: Promise<void> = result.then(() => {}, () => {}).finally(() => {
      if (this.#queues.get(key) === tail) this.#queues.delete(key);
    });
    this.#queues.set(key, tail);
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
    this.#forSession(session);
    const key = message.to.toLowerCase();
    const unsent = this.#unsent.get(key) ?? new Map<string, number>();
    if (!unsent.has(message.id)) unsent.set(message.id, ++this.#written);
    this.#unsent.set(key, unsent);
    this.#inFlight.add(message.id);
    return this.serial(message.to, () => this.#deliver(session, message))
      .then((onItsWay) => onItsWay.outcome)
      .finally(() => this.#inFlight.delete(message.id));
  }

  /**
   * Puts one message on its way. Its order among the messages to the same recipient is kept
   * across paths: a direct try waits for the mailbox's answers to the ones before it, and once
   * one is left in the outbox (neither the peer nor the server took it) the next ones stay
   * there behind it, until they all go again in order.
   */
  async #deliver(session: Session, m: Outgoing): Promise<{ outcome: Promise<Outcome> }> {
    // Logged out meanwhile: stays in the outbox.
    if (this.#session.current !== session) return { outcome: Promise.resolve("queued") };
    const key = m.to.toLowerCase();
    const mailing = this.#mailing.get(key);
    if (mailing) await Promise.all(mailing);
    const unsent = this.#unsent.get(key);
    const place = unsent?.get(m.id) ?? Infinity;
    for (const [id, earlier] of unsent ?? []) {
      if (earlier < place && !this.#underWay.has(id)) {
        const why = `it waits behind an earlier message to ${m.to} that could not be sent yet`;
        return { outcome: Promise.resolve(this.#leaveQueued(session, m, why)) };
      }
    }
    this.#underWay.add(m.id);
    const direct = await this.#deliverDirect(session, m);
    if (direct.ok) {
      this.#settled(m);
      this.#finish(session, m.id, "**");
      this.#ctx.emit({ type: "delivered", id: m.id, to: m.to, ms: Date.now() - m.ts });
      return { outcome: Promise.resolve("delivered") };
    }
    let stored: Promise<void>;
    try {
      stored = (await this.#startMail(session, m.to, m)).answer;
    } catch (error) {
      return { outcome: Promise.resolve(this.#mailFailed(session, m, direct.reason, error)) };
    }
    const outcome = stored.then(() => {
      this.#settled(m);
      this.#finish(session, m.id, "*");
      this.#ctx.emit({ type: "stored", id: m.id, to: m.to, reason: direct.reason });
      return "stored" as const;
    }, (error) => this.#mailFailed(session, m, direct.reason, error));
    const set = this.#mailing.get(key) ?? new Set<Promise<Outcome>>();
    set.add(outcome);
    this.#mailing.set(key, set);
    void outcome.finally(() => {
      set.delete(outcome);
      if (set.size === 0 && this.#mailing.get(key) === set) this.#mailing.delete(key);
    });
    return { outcome };
  }

  /** What a message becomes when the mailbox did not take it either. */
  #mailFailed(session: Session, m: Outgoing, directReason: string, error: unknown): Outcome {
    const e = asError(error);
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
    this.#settled(m);
    this.#finish(session, m.id, "!");
    this.#ctx.emit({ type: "not_delivered", id: m.id, to: m.to, reason: e.message });
    return "failed";
  }

  /**
   * Leaves a message in the outbox, the messages after it to the same recipient with it, and
   * has them all tried again, in order, after a while (or when the server is back).
   */
  #leaveQueued(session: Session, m: Outgoing, reason: string): Outcome {
    this.#underWay.delete(m.id);
    if (!this.#toldQueued.has(m.id)) {
      this.#toldQueued.add(m.id);
      this.#ctx.emit({
        type: "queued",
        id: m.id,
        to: m.to,
        reason,
      });
    }
    this.#retryTimer ??= (async () => {
      try {
        await delay(this.#retryWait, this.#ctx.signal);
      } catch {
        return; // closing: the outbox keeps them for the next start
      } finally {
        this.#retryTimer = undefined;
      }
      this.#retryWait = Math.min(this.#retryWait * 2, RETRY_MAX_MS);
      if (this.#session.current === session) this.flushOutbox(session);
    })();
    this.#ctx.track(this.#retryTimer);
    return "queued";
  }

  /** Seals a message to `to`'s mail key and hands it to the server. */
  async mailTo(
    session: Session,
    to: string,
    m: { id: string; ts: number; text: string },
  ): Promise<void> {
    await (await this.#startMail(session, to, m)).answer;
  }

  /**
   * Seals a message and queues its `mail_send` on the control connection; resolves once it is
   * queued, with the promise of the server's answer (the message is stored once that settles).
   */
  async #startMail(
    session: Session,
    to: string,
    m: { id: string; ts: number; text: string },
  ): Promise<{ answer: Promise<void> }> {
    await this.#mailSlot();
    const recipient = await this.#session.mailKeyOf(to).catch((error) => {
      this.#mailDone();
      throw error;
    });
    let sealed: string;
    try {
      sealed = await sealMail(
        { from: session.user, to: recipient.user, msgId: m.id, ts: m.ts, text: m.text },
        session.identity,
        recipient.mailKey,
      );
    } catch (error) {
      this.#mailDone();
      throw error;
    }
    const answer = this.#session.request({
      type: "mail_send",
      to,
      msgId: m.id,
      ts: m.ts,
      sealed,
    }).then(() => {}).finally(() => this.#mailDone());
    answer.catch(() => {}); // the caller awaits it
    return { answer };
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
        if (code === "PEER_UNREACHABLE") {
          unreachable = true;
          reason = `${m.to} cannot be reached directly`;
          continue;
        }
        return { ok: false, reason: e.message };
      }
      const outcome = await this.sendOnLink(link, frame);
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
    if (unreachable) {
      // The directory may still think they are online: let the server check.
      this.#session.reportUnreachable(m.to);
    }
    return { ok: false, reason };
  }

  /** Sends one chat frame and waits for the peer's answer or the link's end. */
  async sendOnLink(
    link: PeerLink,
    frame: OutgoingMessage & { id: string },
  ): Promise<LinkAnswer> {
    const answer = Promise.withResolvers<"ack" | "busy">();
    // Keyed by peer too: a group message has one id and goes to every member at once.
    const key = ackKey(link.user, frame.id);
    this.#acks.set(key, { resolve: answer.resolve });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#ackTimeoutMs);
    });
    try {
      await link.fc.send(frame);
      return await Promise.race([
        answer.promise,
        timeout,
        link.fc.closed.then(() => "dropped" as const),
      ]);
    } catch {
      return "dropped";
    } finally {
      clearTimeout(timer);
      this.#acks.delete(key);
    }
  }

  /**
   * Sends again what is still in the outbox, in the order it was written (after a restart, when
   * the server is back, or a while after a message could not be sent).
   */
  flushOutbox(session: Session): void {
    this.#forSession(session);
    for (const entry of session.store.outbox()) {
      if (this.#inFlight.has(entry.id)) continue;
      void this.#enqueue(session, {
        id: entry.id,
        to: entry.chat,
        ts: entry.ts,
        text: entry.text,
      }).catch(() => {});
    }
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
  #settled(m: Outgoing): void {
    const key = m.to.toLowerCase();
    const unsent = this.#unsent.get(key);
    unsent?.delete(m.id);
    if (unsent?.size === 0) this.#unsent.delete(key);
    this.#underWay.delete(m.id);
    this.#toldQueued.delete(m.id);
    this.#retryWait = RETRY_FIRST_MS;
  }

  /** Forgets the order kept for another session (a logout, another user). */
  #forSession(session: Session): void {
    if (this.#for === session) return;
    this.#for = session;
    this.#unsent.clear();
    this.#underWay.clear();
    this.#toldQueued.clear();
  }

  #finish(session: Session, id: string, mark: DeliveryMark): void {
    if (this.#session.current === session) session.store.setMark(id, mark);
  }
}
