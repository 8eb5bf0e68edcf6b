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
import type { ServerSession } from "./server_session.ts";

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
    this.#session.require();
    const reply = await this.#session.request<Extract<ServerMessage, { type: "hanging_list" }>>({
      type: "hanging",
    });
    this.#ctx.emit({ type: "hanging", entries: reply.entries });
    return reply.entries;
  }

  /**
   * Fetches the pending messages from `user`, stores them, and only then confirms them to the
   * server (which deletes them and tells the sender they were read). A crash in between shows
   * them again next time; the local store drops the duplicates by id.
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
    let shown = 0;
    for (let round = 0; round < 10_000; round++) {
      const batch = await this.#session.request<Extract<ServerMessage, { type: "mail_batch" }>>({
        type: "show",
        from: sender.user,
      });
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
      // The batch in one commit, before any of it is shown or confirmed. Shown once, whatever
      // the timing: a message already in history (it came directly, or a crash before the
      // confirm brought this batch back, or the server delivered an old one again) is
      // confirmed but not shown again.
      const fresh = session.store.addMessages(opened.map((m) => ({
        id: m.msgId,
        chat: batch.from,
        sender: batch.from,
        ts: m.ts,
        text: m.text,
        outgoing: false,
        mark: "**",
      })));
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
          inChat: this.#host.chatWith?.toLowerCase() === batch.from.toLowerCase(),
          via: "server",
        });
      }
      if (batch.messages.length === 0) break;
      if (Deno.env.get("CONFAB_FAULT") === "crash-before-mail-confirm") {
        Deno.kill(Deno.pid, "SIGKILL"); // tests: die between storing and confirming
      }
      // One receipt for the messages read, signed by this device's identity key over the root
      // of their ids' hash tree: the sender believes a receipt only with that signature (and
      // the message's path to the root), never on the server's word.
      const refused = new Set(rejected);
      const read = batch.messages.filter((m) => !refused.has(m.msgId)).map((m) => m.msgId);
      const readAt = Date.now();
      const receipt = read.length === 0 ? undefined : {
        readAt,
        sig: await session.identity.sign(batchReceiptStatement({
          sender: batch.from,
          reader: session.user,
          readAt,
          root: receiptRoot(read),
        })),
      };
      await this.#session.request({
        type: "mail_confirm",
        from: batch.from,
        msgIds: batch.messages.map((m) => m.msgId),
        ...(rejected.length > 0 ? { rejected } : {}),
        ...(receipt ? { receipt } : {}),
      });
      if (!batch.more) break;
    }
    this.#ctx.emit({ type: "shown", from: user, count: shown });
    return shown;
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
   * acknowledged, so the server forgets them).
   */
  onReceipts(
    items: { msgId: string; reader: string; readAt: number; sig?: string; proof?: string }[],
  ): Promise<void> {
    // One push at a time: the same receipts pushed twice (after the confirm, and by the event
    // that tells every instance) are then all marked by the first and said once, together.
    const run = this.#receipts.then(() => this.#onReceipts(items));
    this.#receipts = run.catch(() => {});
    return run;
  }

  async #onReceipts(
    items: { msgId: string; reader: string; readAt: number; sig?: string; proof?: string }[],
  ): Promise<void> {
    const session = this.#session.current;
    if (!session) return;
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
    this.#session.tell({ type: "receipts_ack", msgIds: items.map((i) => i.msgId) });
  }
}
