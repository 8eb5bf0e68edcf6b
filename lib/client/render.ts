/**
 * Turns client events into the lines a person reads. Pure apart from remembering the text of
 * messages in flight (so `delivered` can show what was delivered).
 */
import { styleText } from "node:util";
import { clock } from "../util/time.ts";
import type { ClientEvent } from "./events.ts";

type Style = Parameters<typeof styleText>[0];

export interface RenderOptions {
  color: boolean;
}

/** How long an unacknowledged message waits before it is shown as "sending". */
export const SHOW_PENDING_AFTER_MS = 750;

export class Renderer {
  readonly #color: boolean;
  readonly #inFlight = new Map<string, { ts: number; text: string; shown: boolean }>();

  constructor(options: RenderOptions) {
    this.#color = options.color;
  }

  paint(style: Style, text: string): string {
    return this.#color ? styleText(style, text) : text;
  }

  /** The text for an event, or undefined when it shows nothing (yet). */
  render(e: ClientEvent): string | undefined {
    const dim = (t: string) => this.paint("dim", t);
    switch (e.type) {
      case "ready":
        return dim(`listening for peers on port ${e.peerPort}; server ${e.server}`) +
          `\ntype help for commands`;
      case "info":
        return dim(`${e.text}…`);
      case "signed_up":
        return this.paint("green", `account ${e.user} created`);
      case "logged_in":
        return this.paint("green", `logged in as ${e.user} on ${e.server}`) +
          dim(" (contacts, chat <user>, help)");
      case "logged_out":
        return e.savedLocally
          ? this.paint(
            "yellow",
            `logged out ${e.user} (server unreachable: the logout time is saved and sent at the next login)`,
          )
          : `logged out ${e.user}`;
      case "contacts":
        if (e.contacts.length === 0) return "no contacts yet; add one: contacts add <user>";
        return e.contacts.map((c) =>
          `  ${c.user}  ${c.online ? this.paint("green", "online") : dim("offline")}`
        ).join("\n");
      case "contact_added":
        return `${e.user} added to your contacts`;
      case "contact_removed":
        return `${e.user} removed from your contacts`;
      case "presence":
        return dim(`${e.user} is ${e.online ? "online" : "offline"}`);
      case "chat_opened": {
        const lines = e.history.map((h) => {
          const mine = h.from.toLowerCase() !== e.with.toLowerCase();
          const who = mine ? "you" : h.from;
          return dim(`[${clock(h.ts)}] ${who}: ${h.text}${mine && h.mark ? ` ${h.mark}` : ""}`);
        });
        if (lines.length > 0) lines.unshift(dim(`— earlier with ${e.with} —`));
        lines.push(
          this.paint("green", `chatting with ${e.with} directly at ${e.address}`) +
            dim(" (/q leaves, /h helps)"),
        );
        return lines.join("\n");
      }
      case "chat_closed":
        return dim(`left the chat with ${e.with}`);
      case "message":
        if (e.inChat) {
          return `${dim(`[${clock(e.ts)}]`)} ${this.paint("cyan", e.from)}: ${e.text}`;
        }
        return this.paint("yellow", `✉ [${clock(e.ts)}] ${e.from}: ${e.text}`) +
          dim(`  (chat ${e.from} to answer)`);
      case "sent":
        this.#inFlight.set(e.id, { ts: e.ts, text: e.text, shown: false });
        return undefined;
      case "delivered": {
        const m = this.#inFlight.get(e.id);
        this.#inFlight.delete(e.id);
        if (!m) return undefined;
        if (m.shown) return dim(`  ↳ delivered to ${e.to} **`);
        return this.#own(m.ts, m.text) + dim(" **");
      }
      case "not_delivered": {
        const m = this.#inFlight.get(e.id);
        this.#inFlight.delete(e.id);
        const what = m ? (m.shown ? "  ↳" : this.#own(m.ts, m.text)) : "a message";
        return `${what} ${this.paint("red", `✗ not delivered to ${e.to}: ${e.reason}`)}`;
      }
      case "peer_joined":
        return dim(`${e.user} is in the chat with you`);
      case "peer_left":
        return dim(`${e.user} left the chat`);
      case "link_up":
        return dim(
          `${e.outbound ? "connected to" : "connection from"} ${e.user} directly at ${e.address}`,
        );
      case "link_down":
        return dim(`direct link to ${e.user} closed (${e.reason})`);
      case "key_changed":
        return this.paint(
          ["red", "bold"],
          `WARNING: ${e.user}'s identity key has changed since you last talked. ` +
            `If ${e.user} did not reinstall, someone may be impersonating them.`,
        );
      case "server_lost":
        return this.paint(
          "yellow",
          `lost the server (${e.reason}); chats go on, reconnecting in the background`,
        );
      case "server_back":
        return this.paint("green", "reconnected to the server");
      case "server_closing":
        return this.paint("yellow", `the server is going away: ${e.reason}`);
      case "error":
        return this.paint("red", `error: ${e.message}`);
      case "help":
        return e.text;
      case "bye":
        return dim("bye");
    }
  }

  /** Messages sent more than `ageMs` ago and still unacknowledged, marked as shown. */
  takeSlow(now: number, ageMs = SHOW_PENDING_AFTER_MS): string[] {
    const lines: string[] = [];
    for (const m of this.#inFlight.values()) {
      if (!m.shown && now - m.ts >= ageMs) {
        m.shown = true;
        lines.push(this.#own(m.ts, m.text) + this.paint("dim", " (sending…)"));
      }
    }
    return lines;
  }

  get pending(): number {
    return this.#inFlight.size;
  }

  #own(ts: number, text: string): string {
    return `${this.paint("dim", `[${clock(ts)}]`)} ${this.paint("green", "you")}: ${text}`;
  }
}
