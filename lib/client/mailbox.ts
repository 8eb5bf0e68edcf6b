/**
 * The client's mailbox room: who has left me messages on the server (`hanging`), fetching and
 * opening them (`show`: stored first, confirmed after, so a crash in between loses nothing),
 * and read receipts for what I left for others.
 */
import type { ServerMessage } from "../protocol/messages.ts";
import {
  type BurstPlace,
  type MailKey,
  MailOpener,
  MailRejected,
  type OpenedMail,
} from "../peer/sealed_mail.ts";
import { receiptStatement, verifySignature } from "../crypto/ed25519.ts";
import { batchReceiptStatement, receiptRoot, rootOfProof } from "../crypto/receipt_tree.ts";
import { type ClientContext, ClientError } from "./context.ts";
import type { ServerSession, Session } from "./server_session.ts";

type MailBatch = Extract<ServerMessage, { type: "mail_batch" }>;
type Receipts = Extract<ServerMessage, { type: "receipts" }>;

export interface MailboxEntry {
  from: string;
  count: number;
  newest: number;
}

/** What the mailbox room needs to know of the windows the user has open. */
export interface MailboxHost {
  /** The 1:1 chat partner whose window is open, if any. */
  readonly chatWith: string | undefined;
}

/** Bursts whose last shown message number is remembered, to see one come out of order. */
const BURSTS_REMEMBERED = 1024;

export class Mailbox {
  readonly #ctx: ClientContext;
  readonly #session: ServerSession;
  readonly #host: MailboxHost;
  /** The receipt pushes being handled, in order (see onReceipts). */
  #receipts: Promise<void> = Promise.resolve();
  /** Opens mail sealed to my mail key; keeps each burst's key once checked. */
  #opener: { mailKey: MailKey; user: string; opener: MailOpener } | undefined;
  /** Per burst, the number of the last message of it shown here. */
  readonly #lastShown = new Map<string, number>();

  constructor(ctx: ClientContext, session: ServerSession, host: MailboxHost) {
    this.#ctx = ctx;
    this.#session = session;
    this.#host = host;
  }

  /** Who has pending messages for me on the server. */
  async hanging(): Promise<MailboxEntry[]> {
    const entries = await this.#senders();
    this.#ctx.emit({ type: "hanging", entries });
    return entries;
  }

  /**
   * Shows what every sender left, one sender after another in the order `hanging` lists them
   * (each as `show` does it, with its own `shown`). When nobody left anything, says so with an
   * empty `hanging`. One sender's failure (say, a key that no longer matches its pin) does not
   * keep the others' messages back: it is thrown once every sender had its turn.
   */
  async showAll(): Promise<number> {
    const senders = await this.#senders();
    if (senders.length === 0) this.#ctx.emit({ type: "hanging", entries: [] });
    let shown = 0;
    let failure: unknown;
    for (const { from } of senders) {
      try {
        shown += await this.show(from);
      } catch (error) {
        failure ??= error;
      }
    }
    if (failure !== undefined) throw failure;
    return shown;
  }

  async #senders(): Promise<MailboxEntry[]> {
    this.#session.require();
    const reply = await this.#session.request<Extract<ServerMessage, { type: "hanging_list" }>>({
      type: "hanging",
    });
    return reply.entries;
  }

  /**
   * Fetches the pending messages from `user`, stores them, and only then confirms them to the
   * server (which deletes them and tells the sender they were read). A crash in between shows
   * them again next time; the local store drops the duplicates by id. The next batch is asked
   * for as soon as one arrives, and a batch's confirm is answered while the next is opened: the
   * server and this client work side by side instead of in turns.
   */
  async show(user: string): Promise<number> {
    const session = this.#session.require();
    this.#session.checkName(user);
    const mailKey = session.mailKey;
    if (!mailKey) {
      throw new ClientError(
        "NO_MAIL_KEY",
        `no mail key on this device: messages sealed to you cannot be opened here`,
      );
    }
    // The sender's identity key, checked against the pin: it must have signed each message.
    const sender = await this.#session.lookup(user);
    const fetch = (after?: string) =>
      this.#session.request<MailBatch>({
        type: "show",
        from: sender.user,
        ...(after === undefined ? {} : { after }),
      });
    let shown = 0;
    /** The next batch, asked for before this one is opened, so the server reads it meanwhile. */
    let ahead: Promise<MailBatch> | undefined;
    /** The previous batch's confirm, answered while this one is opened. */
    let confirming: Promise<unknown> | undefined;
    for (let round = 0; round < 10_000; round++) {
      const batch = await (ahead ?? fetch());
      const cursor = ahead !== undefined;
      ahead = undefined;
      const last = batch.messages.at(-1);
      if (batch.more && last) {
        ahead = fetch(last.msgId);
        ahead.catch(() => {}); // awaited next round, or dropped with this show's failure
      }
      const opened = await this.#showBatch(session, mailKey, sender, batch);
      shown += opened.shown;
      if (batch.messages.length === 0 && !cursor) break;
      if (batch.messages.length > 0) {
        if (Deno.env.get("CONFAB_FAULT") === "crash-before-mail-confirm") {
          Deno.kill(Deno.pid, "SIGKILL"); // tests: die between storing and confirming
        }
        const receipt = await this.#receipt(session, batch.from, opened.read);
        await confirming;
        confirming = this.#session.request({
          type: "mail_confirm",
          from: batch.from,
          msgIds: batch.messages.map((m) => m.msgId),
          ...(opened.rejected.length > 0 ? { rejected: opened.rejected } : {}),
          ...(receipt ? { receipt } : {}),
        });
        confirming.catch(() => {}); // awaited before the next confirm or at the end
      }
      if (!batch.more && !cursor) break;
      if (!batch.more) {
        // The last batch of a run fetched ahead: once it is confirmed, one plain look for
        // anything stored meanwhile (or that the cursor did not reach) ends the show.
        await confirming;
      }
    }
    await confirming;
    this.#ctx.emit({ type: "shown", from: user, count: shown });
    return shown;
  }

  /**
   * Opens a batch, stores it in one commit and shows what is new. Shown once, whatever the
   * timing: a message already in history (it came directly, or a crash before the confirm
   * brought this batch back, or the server delivered an old one again) is confirmed but not
   * shown again.
   * @returns the ids refused (forged, undecryptable), the ids read, and how many were shown.
   */
  async #showBatch(
    session: Session,
    mailKey: MailKey,
    sender: { publicKey: string },
    batch: MailBatch,
  ): Promise<{ rejected: string[]; read: string[]; shown: number }> {
    const rejected: string[] = [];
    const opened: { msgId: string; ts: number; text: string; place?: BurstPlace }[] = [];
    // Opened all at once (the signature checks overlap), then taken in order.
    const opener = this.#openerOf(session.user, mailKey);
    const opening = batch.messages.map((m) =>
      opener.open(m.sealed, { from: batch.from, msgId: m.msgId, ts: m.ts }, sender.publicKey)
    );
    for (const p of opening) p.catch(() => {}); // each is awaited below
    for (const [i, m] of batch.messages.entries()) {
      let mail: OpenedMail;
      try {
        mail = await opening[i]!;
      } catch (error) {
        if (!(error instanceof MailRejected)) throw error;
        rejected.push(m.msgId);
        this.#ctx.emit({
          type: "error",
          code: "MAIL_REJECTED",
          message: `a message said to be from ${batch.from} was discarded: ${error.message}`,
        });
        continue;
      }
      opened.push({ msgId: m.msgId, ts: m.ts, text: mail.text, place: mail.place });
    }
    // The batch in one commit, before any of it is shown or confirmed.
    const fresh = session.store.addMessages(opened.map((m) => ({
      id: m.msgId,
      chat: batch.from,
      sender: batch.from,
      ts: m.ts,
      text: m.text,
      outgoing: false,
      mark: "**",
    })));
    let shown = 0;
    const inChat = this.#host.chatWith?.toLowerCase() === batch.from.toLowerCase();
    for (const [i, m] of opened.entries()) {
      if (!fresh[i]) continue;
      if (m.place) this.#checkOrder(batch.from, m.place);
      shown++;
      this.#ctx.emit({
        type: "message",
        id: m.msgId,
        from: batch.from,
        ts: m.ts,
        text: m.text,
        inChat,
        via: "server",
      });
    }
    return { rejected, read: opened.map((m) => m.msgId), shown };
  }

  /**
   * One receipt for the messages read, signed by this device's identity key over the root of
   * their ids' hash tree: the sender believes a receipt only with that signature (and the
   * message's path to the root), never on the server's word.
   */
  async #receipt(
    session: Session,
    from: string,
    read: string[],
  ): Promise<{ readAt: number; sig: string } | undefined> {
    if (read.length === 0) return undefined;
    const readAt = Date.now();
    const sig = await session.identity.sign(batchReceiptStatement({
      sender: from,
      reader: session.user,
      readAt,
      root: receiptRoot(read),
    }));
    return { readAt, sig };
  }

  #openerOf(user: string, mailKey: MailKey): MailOpener {
    if (this.#opener?.mailKey !== mailKey || this.#opener.user !== user) {
      this.#opener = { mailKey, user, opener: new MailOpener({ user, mailKey }) };
      this.#lastShown.clear();
    }
    return this.#opener.opener;
  }

  /**
   * The sender numbered a burst's messages in the order they were written, and the server
   * keeps that order: a message numbered below one of its burst shown before was held back
   * or moved by the server. It is shown all the same (it is genuine), and the reader told.
   */
  #checkOrder(from: string, place: BurstPlace): void {
    const last = this.#lastShown.get(place.burst);
    if (last !== undefined && place.seq <= last) {
      this.#ctx.emit({
        type: "error",
        code: "MAIL_OUT_OF_ORDER",
        message: `a message from ${from} came out of the order it was written (number ` +
          `${place.seq} of its burst after number ${last}): the server reordered it`,
      });
      return;
    }
    if (last === undefined && this.#lastShown.size >= BURSTS_REMEMBERED) this.#lastShown.clear();
    this.#lastShown.set(place.burst, place.seq);
  }

  /**
   * Read receipts from the server: our `*` messages were read; they become `**`. Only a receipt
   * signed by the reader's identity key (the key pinned for them) for a message we sent them is
   * believed: the server cannot mark a message read by itself. The others are refused (and
   * acknowledged, so the server forgets them). The push's notices of refused mail are taken
   * first (see #onRejected).
   */
  onReceipts(push: Receipts): Promise<void> {
    // One push at a time: the same receipts pushed twice (after the confirm, and by the event
    // that tells every instance) are then all marked by the first and said once, together.
    const run = this.#receipts.then(() => this.#onReceipts(push));
    this.#receipts = run.catch(() => {});
    return run;
  }

  /**
   * Notices that a reader's client refused our messages (`receipts.rejected`): the server
   * deleted them unread. Each becomes `!` and is told once (`mail_rejected`); a message read
   * already (`**`, signed by the reader) stays read. Only the server's word: it could have
   * dropped the message anyway, so believing it grants it nothing.
   */
  #onRejected(session: Session, rejected: NonNullable<Receipts["rejected"]>): void {
    for (const r of rejected) {
      const marked = session.store.markNotDelivered(r.msgId, r.reader);
      if (marked.status !== "marked") continue;
      this.#ctx.emit({
        type: "mail_rejected",
        id: r.msgId,
        to: r.reader,
        ts: marked.ts,
        text: marked.text,
        at: r.at,
      });
    }
  }

  async #onReceipts(push: Receipts): Promise<void> {
    const session = this.#session.current;
    if (!session) return;
    const { items } = push;
    this.#onRejected(session, push.rejected ?? []);
    const byReader = new Map<string, { reader: string; ids: string[]; readAt: number }>();
    const refused = new Map<string, number>();
    // A batch's signature is checked once for all its receipts.
    const batches = new Map<string, Promise<boolean>>();
    for (const item of items) {
      const key = await this.#session.keyOf(item.reader);
      let signed = false;
      if (item.sig !== undefined && key !== undefined && item.proof !== undefined) {
        const root = rootOfProof(item.msgId, item.proof);
        const at = `${key}\n${item.reader.toLowerCase()}\n${item.readAt}\n${root}\n${item.sig}`;
        let check = batches.get(at);
        if (check === undefined && root !== undefined) {
          check = verifySignature(
            key,
            item.sig,
            batchReceiptStatement({
              sender: session.user,
              reader: item.reader,
              readAt: item.readAt,
              root,
            }),
          );
          batches.set(at, check);
        }
        signed = check !== undefined && await check;
      } else if (item.sig !== undefined && key !== undefined) {
        signed = await verifySignature(
          key,
          item.sig,
          receiptStatement({
            sender: session.user,
            reader: item.reader,
            msgId: item.msgId,
            readAt: item.readAt,
          }),
        );
      }
      const marked = signed ? session.store.markRead(item.msgId, item.reader) : "unknown";
      if (marked === "unknown") {
        refused.set(item.reader, (refused.get(item.reader) ?? 0) + 1);
        continue;
      }
      // Told before (the receipt of a copy resent across a server crash): said once.
      if (marked === "already") continue;
      const entry = byReader.get(item.reader.toLowerCase()) ??
        { reader: item.reader, ids: [], readAt: 0 };
      entry.ids.push(item.msgId);
      entry.readAt = Math.max(entry.readAt, item.readAt);
      byReader.set(item.reader.toLowerCase(), entry);
    }
    for (const { reader, ids, readAt } of byReader.values()) {
      this.#ctx.emit({ type: "read", by: reader, ids, readAt });
    }
    for (const [reader, count] of refused) {
      this.#ctx.emit({
        type: "error",
        code: "RECEIPT_REJECTED",
        message: `${count} read receipt${count === 1 ? "" : "s"} said to be from ${reader} ` +
          `refused: not signed by ${reader}, or for a message not sent to them; those ` +
          `messages stay marked *`,
      });
    }
    const msgIds = [...items, ...push.rejected ?? []].map((i) => i.msgId);
    if (msgIds.length > 0) this.#session.tell({ type: "receipts_ack", msgIds });
  }
}
