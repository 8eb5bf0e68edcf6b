/**
 * The client's mailbox room: who has left me messages on the server (`hanging`), fetching and
 * opening them (`show`: stored first, confirmed after, so a crash in between loses nothing),
 * and read receipts for what I left for others.
 */
import type { ServerMessage } from "../protocol/messages.ts";
import { MailRejected, openMail } from "../peer/sealed_mail.ts";
import { receiptStatement, verifySignature } from "../crypto/ed25519.ts";
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

export class Mailbox {
  readonly #ctx: ClientContext;
  readonly #session: ServerSession;
  readonly #host: MailboxHost;
  /** The receipt pushes being handled, in order (see onReceipts). */
  #receipts: Promise<void> = Promise.resolve();

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
      const opened: { msgId: string; ts: number; text: string }[] = [];
      // Opened all at once (the signature checks overlap), then taken in order.
      const opening = batch.messages.map((m) =>
        openMail(m.sealed, { user: session.user, mailKey }, {
          from: batch.from,
          msgId: m.msgId,
          ts: m.ts,
        }, sender.publicKey)
      );
      for (const p of opening) p.catch(() => {}); // each is awaited below
      for (const [i, m] of batch.messages.entries()) {
        let text: string;
        try {
          text = (await opening[i]!).text;
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
        opened.push({ msgId: m.msgId, ts: m.ts, text });
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
      // A receipt for each message read, signed by this device's identity key: the sender
      // believes a receipt only with that signature, never on the server's word.
      const readAt = Date.now();
      const refused = new Set(rejected);
      const receipts = await Promise.all(
        batch.messages.filter((m) => !refused.has(m.msgId)).map(async (m) => ({
          msgId: m.msgId,
          readAt,
          sig: await session.identity.sign(
            receiptStatement({ sender: batch.from, reader: session.user, msgId: m.msgId, readAt }),
          ),
        })),
      );
      await this.#session.request({
        type: "mail_confirm",
        from: batch.from,
        msgIds: batch.messages.map((m) => m.msgId),
        ...(rejected.length > 0 ? { rejected } : {}),
        ...(receipts.length > 0 ? { receipts } : {}),
      });
      if (!batch.more) break;
    }
    this.#ctx.emit({ type: "shown", from: user, count: shown });
    return shown;
  }

  /**
   * Read receipts from the server: our `*` messages were read; they become `**`. Only a receipt
   * signed by the reader's identity key (the key pinned for them) for a message we sent them is
   * believed: the server cannot mark a message read by itself. The others are refused (and
   * acknowledged, so the server forgets them).
   */
  onReceipts(
    items: { msgId: string; reader: string; readAt: number; sig?: string }[],
  ): Promise<void> {
    // One push at a time: the same receipts pushed twice (after the confirm, and by the event
    // that tells every instance) are then all marked by the first and said once, together.
    const run = this.#receipts.then(() => this.#onReceipts(items));
    this.#receipts = run.catch(() => {});
    return run;
  }

  async #onReceipts(
    items: { msgId: string; reader: string; readAt: number; sig?: string }[],
  ): Promise<void> {
    const session = this.#session.current;
    if (!session) return;
    const byReader = new Map<string, { reader: string; ids: string[]; readAt: number }>();
    const refused = new Map<string, number>();
    for (const item of items) {
      const key = await this.#session.keyOf(item.reader);
      const signed = item.sig !== undefined && key !== undefined &&
        await verifySignature(
          key,
          item.sig,
          receiptStatement({
            sender: session.user,
            reader: item.reader,
            msgId: item.msgId,
            readAt: item.readAt,
          }),
        );
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
