/**
 * Turns client events into the lines a person reads. Pure apart from remembering the text of
 * messages in flight (so `delivered` can show what was delivered). Every text that came from
 * the network (messages, names, file names, error texts) is made visible first: control
 * characters, ESC and bidi controls are shown as escapes, never sent to the terminal.
 */
import { clock, dateTime, sameDay } from "../util/time.ts";
import type { ClientEvent } from "./events.ts";
import { groupHandle } from "../peer/group_state.ts";
import { displayWidth, fitWidth, visible } from "../cli/text.ts";
import { type Style, styled } from "../cli/style.ts";

/** Where the user is when an event comes: what notices say depends on it. */
export interface Where {
  /** The user logged in. */
  me?: string;
  /** The user in the open 1:1 chat. */
  chatWith?: string;
  /** The handle (`#3f1c2a`) of the open group. */
  group?: string;
}

export interface RenderOptions {
  color: boolean;
  /** Technical detail too: addresses, link changes, the reasons behind errors. */
  verbose?: boolean;
  /** Where the user is now (default: no chat open). */
  where?: () => Where;
  /** The time now, for "is this from today" (tests fix it). */
  now?: () => number;
}

/** Colours for names, picked by a hash of the name so each person keeps theirs. */
const NAME_COLORS: Style[] = ["cyan", "magenta", "blue", "yellow", "redBright", "cyanBright"];

/** A stable small hash of a name (case-insensitive). */
function nameHash(name: string): number {
  let h = 0;
  for (const ch of name.toLowerCase()) h = (h * 31 + ch.codePointAt(0)!) >>> 0;
  return h;
}

/** Every string in an event made visible (see the module comment); `help` is our own text. */
export function cleanEvent(event: ClientEvent): ClientEvent {
  if (event.type === "help") return event;
  return clean(event) as ClientEvent;
}

function clean(value: unknown): unknown {
  if (typeof value === "string") return visible(value);
  if (Array.isArray(value)) return value.map(clean);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = clean(v);
    return out;
  }
  return value;
}

/** Rows of cells as aligned columns, two spaces apart, indented by two. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => widths[i] = Math.max(widths[i] ?? 0, displayWidth(cell)));
  }
  return rows.map((row) =>
    "  " +
    row.map((cell, i) =>
      i === row.length - 1 ? cell : cell + " ".repeat(widths[i]! - displayWidth(cell))
    ).join("  ")
  ).join("\n");
}

/** Names sorted the same way on every client (case-insensitive). */
export function sortNames(names: readonly string[]): string[] {
  return [...names].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
}

/** How long an unacknowledged message waits before it is shown as "sending". */
export const SHOW_PENDING_AFTER_MS = 750;

function mib(bytes: number): string {
  return bytes >= 1024 * 1024
    ? `${(bytes / 1024 / 1024).toFixed(1)} MiB`
    : `${(bytes / 1024).toFixed(1)} KiB`;
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  return mib(bytes);
}

/** A text progress bar: `[██████░░░░]`. */
export function bar(fraction: number, width = 20): string {
  const full = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `[${"█".repeat(full)}${"░".repeat(width - full)}]`;
}

export class Renderer {
  readonly #color: boolean;
  readonly #verbose: boolean;
  readonly #where: () => Where;
  readonly #now: () => number;
  /** Transfers in progress, for the status line (terminal) or step lines (plain). */
  readonly #transfers = new Map<string, { line: string; step: number }>();
  readonly #inFlight = new Map<string, { ts: number; text: string; shown: boolean }>();
  /** Group messages shown as still waiting for someone (their completion is shown too). */
  readonly #groupWaiting = new Set<string>();
  /**
   * Who was last said to be online or offline: the same again is no news (after the server
   * was away, every contact re-attaching is pushed as online, though never said offline).
   */
  readonly #presence = new Map<string, boolean>();

  constructor(options: RenderOptions) {
    this.#color = options.color;
    this.#verbose = options.verbose ?? false;
    this.#where = options.where ?? (() => ({}));
    this.#now = options.now ?? Date.now;
  }

  /** A name in its own colour (on a terminal with colour). */
  name(user: string): string {
    if (!this.#color) return user;
    return this.paint(NAME_COLORS[nameHash(user) % NAME_COLORS.length]!, user);
  }

  /** `[HH:MM:SS]`, with the date in front when it is not from today. */
  stamp(ts: number): string {
    return `[${this.#when(ts)}]`;
  }

  /** `HH:MM:SS`, or the date and time when it is not from today. */
  #when(ts: number): string {
    return sameDay(ts, this.#now()) ? clock(ts) : dateTime(ts);
  }

  /** True while a chat or a group's window is open (commands then start with `/`). */
  #inAChat(): boolean {
    const w = this.#where();
    return w.chatWith !== undefined || w.group !== undefined;
  }

  /** A command as it works where the user is: with a `/` inside a chat. */
  #cmd(text: string): string {
    return this.#inAChat() ? `/${text}` : text;
  }

  /**
   * The commands an error text suggests (`(contacts add bob)`, `: chat <user>`), in the form
   * that works where the user is.
   */
  #hints(text: string): string {
    if (!this.#inAChat()) return text;
    return text.replace(
      /(^|\(|: )(contacts|chat|show|accept|decline|groups) (?=[\w<#])/g,
      "$1/$2 ",
    );
  }

  /** Technical detail in brackets, only with --verbose. */
  #detail(text: string): string {
    return this.#verbose && text ? this.paint("dim", ` (${text})`) : "";
  }

  paint(style: Style | readonly Style[], text: string): string {
    // `color` is the caller's decision (useColor() checks the TTY and NO_COLOR).
    return this.#color ? styled(style, text) : text;
  }

  /** The text for an event, or undefined when it shows nothing (yet). */
  render(event: ClientEvent): string | undefined {
    const e = cleanEvent(event);
    const dim = (t: string) => this.paint("dim", t);
    const who = (u: string) => this.name(u);
    switch (e.type) {
      case "ready":
        return dim(`listening for peers on port ${e.peerPort}; server ${e.server}`) +
          `\ntype help for commands`;
      case "info":
        return dim(`${this.#plain(e.text)}…`);
      case "signed_up":
        return this.paint("green", `account ${e.user} created`);
      case "logged_in":
        return this.paint("green", `logged in as ${e.user} on ${e.server}`) +
          dim(" (contacts, chat <user>, help)");
      case "logged_out":
        this.#presence.clear();
        return e.savedLocally
          ? this.paint(
            "yellow",
            `logged out ${e.user} (server unreachable: the logout time is saved and sent at the next login)`,
          )
          : `logged out ${e.user}`;
      case "contacts": {
        const rows = [
          ...sortNames(e.contacts.map((c) => c.user)).map((user) => {
            const online = e.contacts.find((c) => c.user === user)!.online;
            return [who(user), online ? this.paint("green", "online") : dim("offline")];
          }),
          ...sortNames(e.requests).map((user) => [
            who(user),
            this.paint(
              "yellow",
              `asks to be your contact (${this.#cmd(`contacts add ${user}`)} accepts)`,
            ),
          ]),
          ...sortNames(e.requested).map((user) => [who(user), dim("request sent, not answered")]),
        ];
        return rows.length === 0
          ? `no contacts yet; add one: ${this.#cmd("contacts add <user>")} (they must accept)`
          : table(rows);
      }
      case "password_changed":
        return `password changed: log in as ${who(e.user)} with the new one from now on`;
      case "contact_added":
        return e.mutual
          ? `${who(e.user)} and you are contacts now`
          : `contact request sent to ${who(e.user)}: you can chat once they accept`;
      case "contact_removed":
        this.#presence.delete(e.user.toLowerCase());
        return e.state === "declined"
          ? `declined ${who(e.user)}'s contact request`
          : e.state === "withdrawn"
          ? `withdrew your contact request to ${who(e.user)}`
          : `${who(e.user)} removed from your contacts`;
      case "contact_update":
        if (e.state === "removed") this.#presence.delete(e.user.toLowerCase());
        switch (e.state) {
          case "request":
            return this.paint(
              "yellow",
              `${who(e.user)} asks to be your contact: ${this.#cmd(`contacts add ${e.user}`)} ` +
                `accepts, ${this.#cmd(`contacts remove ${e.user}`)} declines`,
            );
          case "accepted":
            return this.paint("green", `${who(e.user)} accepted: you are contacts now`);
          case "declined":
            return `${who(e.user)} declined your contact request`;
          case "removed":
            return `${who(e.user)} removed you from their contacts`;
        }
        break;
      case "presence": {
        const key = e.user.toLowerCase();
        if (this.#presence.get(key) === e.online) return undefined;
        this.#presence.set(key, e.online);
        return dim(`${e.user} is ${e.online ? "online" : "offline"}`);
      }
      case "chat_opened": {
        const lines = e.history.map((h) => {
          const mine = h.from.toLowerCase() !== e.with.toLowerCase();
          return dim(
            `${this.stamp(h.ts)} ${mine ? "you" : h.from}: ${h.text}${
              mine && h.mark ? ` ${h.mark}` : ""
            }`,
          );
        });
        if (lines.length > 0) lines.unshift(dim(`— earlier with ${e.with} —`));
        lines.push(
          this.paint(
            "green",
            !e.online
              ? `chatting with ${e.with} (offline: messages wait on the server)`
              : e.path === "relayed"
              ? `chatting with ${e.with}, relayed through the server`
              : `chatting with ${e.with}, directly`,
          ) + this.#detail(e.online ? e.address : "") + dim(" (/q leaves, /h helps)"),
        );
        return lines.join("\n");
      }
      case "chat_closed":
        return e.reason === undefined
          ? dim(`left the chat with ${e.with}`)
          : `closed the chat with ${e.with}: ${e.reason}`;
      case "message":
        if (e.via === "server" && this.#where().group !== undefined) {
          // Mail read in a group's window: its sender may be a member, and the line must not
          // pass for one of the group's.
          return `✉ ${dim(this.stamp(e.ts))} ${who(e.from)}: ${e.text}`;
        }
        if (e.inChat || e.via === "server") {
          return `${dim(this.stamp(e.ts))} ${who(e.from)}: ${e.text}`;
        }
        if (e.group !== undefined) {
          const handle = groupHandle(e.group);
          return this.paint("yellow", `✉ ${this.stamp(e.ts)} ${handle} ${e.from}: ${e.text}`) +
            dim(`  (${this.#cmd(`chat ${handle}`)} to answer)`);
        }
        return this.paint("yellow", `✉ ${this.stamp(e.ts)} ${e.from}: ${e.text}`) +
          dim(`  (${this.#cmd(`chat ${e.from}`)} to answer)`);
      case "sent":
        // A group message is shown at once; only members it could not reach are reported.
        if (e.group !== undefined) return this.#own(e.ts, e.text);
        this.#inFlight.set(e.id, { ts: e.ts, text: e.text, shown: false });
        return undefined;
      case "delivered": {
        if (e.group !== undefined) return undefined;
        const m = this.#inFlight.get(e.id);
        this.#inFlight.delete(e.id);
        if (!m) return this.#fromOutbox(e, dim(" ** (sent from the outbox)"));
        if (m.shown) return dim(`  ↳ delivered to ${e.to} **`);
        return this.#own(m.ts, m.text) + dim(" **");
      }
      case "stored": {
        const m = this.#inFlight.get(e.id);
        this.#inFlight.delete(e.id);
        const why = dim(` (${e.reason}: it waits on the server)`);
        const told = dim(`  ↳ stored on the server for ${e.to} *`) + why;
        if (!m) return this.#fromOutbox(e, " *" + why) ?? told;
        return m.shown ? told : this.#own(m.ts, m.text) + " *" + why;
      }
      case "queued": {
        const m = this.#inFlight.get(e.id);
        this.#inFlight.delete(e.id);
        const later = this.paint("yellow", `(not sent yet: ${e.reason})`);
        if (!m) return this.#fromOutbox(e, ` ${later}`) ?? `  ↳ ${later}`;
        return `${m.shown ? "  ↳" : this.#own(m.ts, m.text)} ${later}`;
      }
      case "read":
        return dim(
          `${e.by} read ${
            e.ids.length === 1 ? "your message" : `${e.ids.length} of your messages`
          } ` +
            `at ${this.#when(e.readAt)} (* → **)`,
        );
      case "mail_rejected":
        return this.paint(
          "red",
          `✗ ${e.to} could not open your message of ${this.#when(e.ts)} ` +
            `('${
              fitWidth(e.text.replace(/\s+/g, " "), 24)
            }'); it was not delivered — send it again`,
        );
      case "mail_notice":
        return this.paint(
          "yellow",
          `✉ ${e.count} pending message${e.count === 1 ? "" : "s"} from ${e.from}`,
        ) + dim(` — ${this.#cmd(`show ${e.from}`)} to read`);
      case "mail_summary":
        if (e.entries.length === 0) return undefined; // no server sends one; nothing to say
        return this.paint(
          "yellow",
          "✉ pending messages: " +
            e.entries.map((x) => `${x.count} from ${x.from} (newest ${this.stamp(x.newest)})`).join(
              ", ",
            ),
        ) + dim(
          e.entries.length === 1
            ? ` — ${this.#cmd(`show ${e.entries[0]!.from}`)} to read`
            : ` — ${this.#cmd("show")} to read them all, ${
              this.#cmd(`show ${e.entries[0]!.from}`)
            } one sender's`,
        );
      case "hanging":
        if (e.entries.length === 0) return "no pending messages";
        return table(e.entries.map((x) => [
          who(x.from),
          `${x.count} message${x.count === 1 ? "" : "s"}`,
          `newest ${this.stamp(x.newest)}`,
        ]));
      case "shown":
        return e.count === 0
          ? `no pending messages from ${e.from}`
          : dim(`— ${e.count} message${e.count === 1 ? "" : "s"} from ${e.from} shown —`);
      case "online_contacts":
        return e.contacts.length === 0
          ? "none of your contacts is online"
          : `online: ${sortNames(e.contacts).map(who).join(", ")}` +
            dim("  (/a <user> adds one to this chat)");
      case "group_opened": {
        // As in a 1:1 chat's history: `you` for my own lines, and marks on those only (another
        // member's line carries the mark of its arrival, which says nothing to the reader).
        const me = this.#where().me?.toLowerCase();
        const lines = e.history.map((h) => {
          const mine = h.from.toLowerCase() === me;
          return dim(
            `${this.stamp(h.ts)} ${mine ? "you" : h.from}: ${h.text}${
              mine && h.mark ? ` ${h.mark}` : ""
            }`,
          );
        });
        if (lines.length > 0) lines.unshift(dim(`— earlier in ${e.handle} —`));
        const by = e.by.toLowerCase() === me ? "you" : e.by;
        lines.push(
          this.paint("green", `group ${e.handle}: ${sortNames(e.members).join(", ")}`) +
            dim(` (opened by ${by}; /a adds, /u lists who is online, /q leaves)`),
        );
        return lines.join("\n");
      }
      case "group_invited":
        return this.paint(
          "yellow",
          `✉ ${e.by} added you to group ${e.handle} (${sortNames(e.members).join(", ")})`,
        ) + dim(` — ${this.#cmd(`chat ${e.handle}`)} to enter`);
      case "group_members": {
        const parts: string[] = [];
        for (const u of e.joined) parts.push(`${u} joined`);
        for (const u of e.left) parts.push(`${u} left`);
        return this.paint("magenta", `${e.handle}: ${parts.join("; ")}`) +
          dim(` (now ${sortNames(e.members).join(", ")})`);
      }
      case "group_window_closed":
        return dim(`closed the window of ${e.handle}; you stay in the group (chat ${e.handle})`);
      case "group_rejoined":
        return dim(`back in group ${e.handle} (${e.members.join(", ")}); chat ${e.handle} enters`);
      case "group_presence": {
        if (e.here) return dim(`${e.handle}: ${e.user} is back`);
        // As for link_down: the low-level text (`Connection reset by peer (os error 104)`) only
        // with --verbose.
        const reason = e.reason ?? "link closed";
        const why = this.#verbose
          ? reason
          : reason === "closed" || reason === "link closed"
          ? "connection closed"
          : "connection lost";
        return dim(`${e.handle}: ${e.user} is away (${why}); messages wait for them`);
      }
      case "group_gap":
        return this.paint(
          "yellow",
          `${e.handle}: ${e.missing ?? "some"} earlier message(s) from ${e.author} could not be ` +
            `found; the later ones are shown without them (they follow if they come)`,
        );
      case "group_relay_refused":
        return this.paint(
          "red",
          `${e.handle}: refused a message ${e.from} passed on as ${e.author}'s (${e.reason})`,
        );
      case "group_status":
        if (e.pending.length > 0 && !this.#groupWaiting.has(e.id)) {
          this.#groupWaiting.add(e.id);
          return dim(
            `  ↳ ${e.mark}: waiting for ${e.pending.join(", ")} (it reaches them when back)`,
          );
        }
        if (e.pending.length === 0 && this.#groupWaiting.delete(e.id)) {
          return dim(`  ↳ ${e.mark === "**" ? "everyone has it now **" : `${e.mark}`}`);
        }
        return undefined;
      case "group_closed":
        return this.paint("magenta", `group ${e.handle} closed for you: ${e.reason}`);
      case "groups":
        if (e.groups.length === 0) return "no groups yet; in a chat, /a <user> makes one";
        return table(e.groups.map((g) => [
          g.handle,
          sortNames(g.members).join(", "),
          g.active ? this.paint("green", "active") : dim("left"),
        ]));
      case "history":
        if (e.entries.length === 0) return `no messages with ${e.chat} yet`;
        return e.entries.map((h) =>
          `${dim(this.stamp(h.ts))} ${h.outgoing ? "you" : who(h.from)}: ${h.text}${
            h.outgoing && h.mark ? ` ${h.mark}` : ""
          }`
        ).join("\n");
      case "search_results":
        if (e.results.length === 0) return `nothing found for "${e.query}"`;
        return e.results.map((r) => {
          const where = r.chat.startsWith("#") ? `in ${r.chat}` : `with ${r.chat}`;
          const mine = this.#where().me?.toLowerCase() === r.from.toLowerCase();
          return `${dim(`${this.stamp(r.ts)} ${where},`)} ${mine ? "you" : who(r.from)}: ${r.text}`;
        }).join("\n");
      case "transfer_offered": {
        if (e.direction === "out") {
          return dim(
            `offered ${e.name} (${size(e.size)}) to ${e.peer}; waiting for them to accept`,
          );
        }
        const where = e.group ? ` in #${e.group.slice(0, 6)}` : "";
        const left = e.expiresAt !== undefined ? e.expiresAt - this.#now() : undefined;
        const minutes = left === undefined
          ? ""
          : left < 90_000
          ? `; it expires in ${Math.max(1, Math.round(left / 1000))} s`
          : `; it expires in ${Math.round(left / 60_000)} min`;
        return this.paint(
          "yellow",
          `${e.peer}${where} offers ${e.name} (${size(e.size)})`,
        ) + ` — accept: /y ${e.offer}, decline: /n ${e.offer}${minutes}`;
      }
      case "offers":
        if (e.offers.length === 0) return "no file offer waits for your answer";
        return e.offers.map((o) => `${o.offer}: ${o.name} (${size(o.size)}) from ${o.peer}`).join(
          "\n",
        ) + dim("\naccept with /y <n>, decline with /n <n>");
      case "transfer_declined":
        return dim(
          `not receiving ${e.name} (${size(e.size)}) from ${e.peer}: ${this.#plain(e.reason)}`,
        );
      case "transfer_started": {
        const resume = e.offset > 0
          ? ` — resuming at ${Math.floor((e.offset / Math.max(1, e.size)) * 100)}%`
          : "";
        this.#transfers.set(e.fid, { line: "", step: 0 });
        return e.direction === "out"
          ? dim(`sending ${e.name} (${size(e.size)}) to ${e.peer}${resume}`)
          : dim(`receiving ${e.name} (${size(e.size)}) from ${e.peer}${resume}`);
      }
      case "transfer_progress": {
        const t = this.#transfers.get(e.fid) ?? { line: "", step: 0 };
        const fraction = e.size > 0 ? e.bytes / e.size : 1;
        const arrow = e.direction === "out" ? `↑ ${e.name} → ${e.peer}` : `↓ ${e.name} ← ${e.peer}`;
        const via = e.path === "relayed" ? " (relayed)" : "";
        t.line = `${arrow} ${bar(fraction)} ${Math.floor(fraction * 100)}% ` +
          `${mib(e.bytes)}/${mib(e.size)} ${mib(e.rate)}/s` +
          (e.eta !== null ? ` ETA ${e.eta}s` : "") + via;
        this.#transfers.set(e.fid, t);
        // Without a terminal (no status line): one short line each quarter.
        const step = Math.floor(fraction * 4);
        if (step > t.step) {
          t.step = step;
          return dim(`${arrow} ${Math.floor(fraction * 100)}% (${mib(e.rate)}/s${via})`);
        }
        return undefined;
      }
      case "transfer_done":
        this.#transfers.delete(e.fid);
        return this.paint(
          "green",
          e.direction === "out"
            ? `✓ sent ${e.name} (${size(e.size)}) to ${e.peer}`
            : `✓ received ${e.name} (${size(e.size)}) from ${e.peer}: ${e.savedAs}`,
        ) + dim(
          ` sha256 ${e.sha256.slice(0, 16)}…` +
            (e.resumedFrom > 0 ? `, resumed: ${size(e.bytes)} sent this time` : ""),
        );
      case "transfer_failed":
        this.#transfers.delete(e.fid);
        return this.paint(
          "red",
          `✗ ${e.direction === "out" ? `sending ${e.name} to` : `receiving ${e.name} from`} ` +
            `${e.peer} failed: ${this.#plain(e.reason)}`,
        );
      case "not_delivered": {
        const m = this.#inFlight.get(e.id);
        this.#inFlight.delete(e.id);
        const failed = this.paint("red", `✗ not delivered to ${e.to}: ${e.reason}`);
        if (!m) return this.#fromOutbox(e, ` ${failed}`) ?? `a message ${failed}`;
        return `${m.shown ? "  ↳" : this.#own(m.ts, m.text)} ${failed}`;
      }
      case "peer_joined":
        // Said only in the chat with them; elsewhere it is not news.
        if (this.#inChatWith(e.user)) return dim(`${e.user} is in the chat with you`);
        return this.#verbose ? dim(`${e.user} opened a chat window with you`) : undefined;
      case "peer_left":
        if (this.#inChatWith(e.user)) return dim(`${e.user} left the chat`);
        return this.#verbose ? dim(`${e.user} closed the chat window with you`) : undefined;
      case "link_up":
        return this.#verbose
          ? dim(
            `${e.outbound ? "connected to" : "connection from"} ${e.user} ` +
              (e.path === "relayed" ? `relayed through the server` : `directly at ${e.address}`),
          )
          : undefined;
      case "link_path":
        // Said in the chat with them (the path is part of what the chat shows); else verbose.
        if (!this.#verbose && !this.#inChatWith(e.user)) return undefined;
        return this.paint(
          e.path === "direct" ? "green" : "yellow",
          e.path === "direct"
            ? `the link to ${e.user} is now direct: ${e.reason}`
            : `the link to ${e.user} is now relayed through the server: ${e.reason}`,
        ) + this.#detail(e.address);
      case "relay_notice":
        return this.paint("yellow", `relay limit: ${e.text}`);
      case "link_down":
        if (this.#verbose) return dim(`link to ${e.user} closed (${e.reason})`);
        if (!this.#inChatWith(e.user)) return undefined;
        // "closed": the stream ended without an error (the other side logged out or quit, or its
        // process ended); "lost" is for a reset, a failed write or a peer gone silent.
        return dim(
          (e.reason === "closed"
            ? `the connection to ${e.user} closed`
            : `lost the connection to ${e.user}`) +
            "; messages go through the server until it is back",
        );
      case "key_changed":
        return this.paint(
          ["red", "bold"],
          `WARNING: ${e.user}'s identity key has changed since you last talked. ` +
            `If ${e.user} did not reinstall, someone may be impersonating them. Compare ` +
            `safety numbers (fingerprint ${e.user}); accept the new key with: trust ${e.user}`,
        );
      case "key_trusted":
        return this.paint("green", `you now trust ${e.user}'s current key`) +
          dim(` (safety number ${e.safetyNumber})`);
      case "fingerprint":
        if (e.with === undefined) return `your number (${e.user}): ${e.number}`;
        // Rows of 6 groups (30 digits): easy to read out, and never cut mid-group by the
        // terminal (the number is 60 digits, the line before it wide).
        return `safety number for you and ${e.with}:\n${numberRows(e.number)}` +
          (e.changed
            ? "\n" + this.paint(["red", "bold"], `${e.with}'s key has CHANGED since you pinned it`)
            : dim(
              "\ncompare it with theirs in person or on a call; if it matches, you talk to them",
            ));
      case "server_lost":
        return this.paint(
          "yellow",
          "lost the connection to the server; chats go on, reconnecting in the background",
        ) + this.#detail(e.reason);
      case "server_back":
        return this.paint("green", `reconnected to the server (${e.server})`);
      case "server_closing":
        // A reason that names the server says it all ("the server is shutting down").
        return this.paint(
          "yellow",
          /\bserver\b/i.test(e.reason) ? e.reason : `the server is going away: ${e.reason}`,
        );
      case "error":
        return this.paint("red", `error: ${this.#hints(this.#plain(e.message))}`);
      case "help":
        return e.text;
      case "bye":
        return dim("bye");
    }
  }

  /** True when the open window is the 1:1 chat with `user`. */
  #inChatWith(user: string): boolean {
    return this.#where().chatWith?.toLowerCase() === user.toLowerCase();
  }

  /** An error text without the operating system's codes (kept with --verbose). */
  #plain(text: string): string {
    if (this.#verbose) return text;
    return text.replace(/ \(os error \d+\)/g, "")
      .replace(/(?<!server) at (?:\[[0-9a-fA-F:.]+\]|\d{1,3}(?:\.\d{1,3}){3}):\d+/g, "");
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

  /** One line for all transfers in progress (a terminal redraws it in place), or none. */
  statusLine(columns: number): string | undefined {
    const lines = [...this.#transfers.values()].map((t) => t.line).filter((l) => l);
    if (lines.length === 0) return undefined;
    return fitWidth(lines.join("  |  "), Math.max(11, columns - 1));
  }

  get pending(): number {
    return this.#inFlight.size;
  }

  /** A line from the outbox, as the outcome that tells of it: undefined without its text. */
  #fromOutbox(e: { ts?: number; text?: string }, outcome: string): string | undefined {
    return e.ts !== undefined && e.text !== undefined
      ? this.#own(e.ts, e.text) + outcome
      : undefined;
  }

  #own(ts: number, text: string): string {
    return `${this.paint("dim", this.stamp(ts))} ${this.paint("green", "you")}: ${visible(text)}`;
  }
}

/** A number of digit groups ("12345 67890 …") in indented rows of six groups. */
function numberRows(number: string): string {
  const groups = number.split(" ");
  const rows: string[] = [];
  for (let i = 0; i < groups.length; i += 6) rows.push(`  ${groups.slice(i, i + 6).join(" ")}`);
  return rows.join("\n");
}
