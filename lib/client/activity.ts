/**
 * What the terminal's status line says, kept from the client's events: unread messages per
 * chat (`[alice 3, #cf8d5b 1]`), and the state of the server connection when it is not simply
 * "connected". Pure: events in, text out.
 */
import { visible } from "../cli/text.ts";
import { groupHandle } from "../peer/group_state.ts";
import type { ClientEvent } from "./events.ts";

/** The connection to the server, as the user should know it. */
export type ServerState = "logged_out" | "connected" | "unreachable" | "key_refused";

export class Activity {
  /** Messages shown as notices (another window was open), per chat, in arrival order. */
  readonly #notices = new Map<string, number>();
  /** Messages waiting in the mailbox on the server, per sender. */
  readonly #mail = new Map<string, number>();
  #server: ServerState = "logged_out";

  get server(): ServerState {
    return this.#server;
  }

  /**
   * Takes an event into account.
   * @returns true when it is news the user should be alerted to (bell, title): a message or
   *   an invitation for a window that is not open.
   */
  observe(e: ClientEvent): boolean {
    switch (e.type) {
      case "message":
        if (e.inChat || e.via === "server") return false;
        this.#bump(this.#notices, e.group !== undefined ? groupHandle(e.group) : e.from, 1);
        return true;
      case "group_invited":
        this.#bump(this.#notices, e.handle, 1);
        return true;
      case "mail_notice":
        this.#set(this.#mail, e.from, e.count);
        return true;
      case "mail_summary":
      case "hanging":
        this.#mail.clear();
        for (const entry of e.entries) this.#set(this.#mail, entry.from, entry.count);
        return false;
      case "shown":
        this.#set(this.#mail, e.from, 0);
        return false;
      case "chat_opened":
        this.#set(this.#notices, e.with, 0);
        return false;
      case "group_opened":
        this.#set(this.#notices, e.handle, 0);
        return false;
      case "group_closed":
        this.#set(this.#notices, e.handle, 0);
        return false;
      case "logged_in":
      case "server_back":
        this.#server = "connected";
        return false;
      case "server_lost":
        if (this.#server !== "logged_out") this.#server = "unreachable";
        return false;
      case "error":
        if (e.code === "SERVER_KEY_CHANGED" && this.#server !== "logged_out") {
          this.#server = "key_refused";
        }
        return false;
      case "logged_out":
        this.#server = "logged_out";
        this.#notices.clear();
        this.#mail.clear();
        return false;
      default:
        return false;
    }
  }

  /** Unread counts per chat, most recent activity last: `alice 3, #cf8d5b 1`. */
  unread(): string {
    const counts = new Map<string, number>();
    for (const [chat, n] of this.#notices) counts.set(chat, n);
    for (const [from, n] of this.#mail) {
      const key = [...counts.keys()].find((k) => k.toLowerCase() === from.toLowerCase()) ?? from;
      counts.set(key, (counts.get(key) ?? 0) + n);
    }
    return [...counts].map(([chat, n]) => `${visible(chat)} ${n}`).join(", ");
  }

  /** The total of unread messages, for the terminal title. */
  get total(): number {
    let n = 0;
    for (const v of this.#notices.values()) n += v;
    for (const v of this.#mail.values()) n += v;
    return n;
  }

  /** The status line: unread counts and server trouble; undefined when there is nothing. */
  status(): string | undefined {
    const parts: string[] = [];
    const unread = this.unread();
    if (unread) parts.push(`[${unread}]`);
    if (this.#server === "unreachable") parts.push("server unreachable, reconnecting…");
    if (this.#server === "key_refused") {
      parts.push("server key refused (see the warning above), retrying…");
    }
    return parts.length > 0 ? parts.join("  ") : undefined;
  }

  #bump(map: Map<string, number>, key: string, n: number): void {
    const existing = [...map.keys()].find((k) => k.toLowerCase() === key.toLowerCase()) ?? key;
    const value = (map.get(existing) ?? 0) + n;
    map.delete(existing); // re-inserted last: the most recent activity goes to the end
    map.set(existing, value);
  }

  #set(map: Map<string, number>, key: string, n: number): void {
    const existing = [...map.keys()].find((k) => k.toLowerCase() === key.toLowerCase()) ?? key;
    if (n <= 0) map.delete(existing);
    else map.set(existing, n);
  }
}
