/**
 * Everything the client core reports to its front ends. The terminal renders these as text;
 * `--json` writes each as one JSON object per line on stdout (docs/scripting.md lists them).
 * Adding a field is fine; renaming or removing one breaks bots.
 */
import type { DeliveryMark } from "./client_store.ts";

/** How a peer link's bytes travel. */
export type LinkPath = "direct" | "relayed";

export type ClientEvent =
  /** The client started and listens for peers. */
  | { type: "ready"; peerPort: number; server: string }
  /** A progress line: what the client is doing now (connecting, looking someone up). */
  | { type: "info"; text: string }
  | { type: "signed_up"; user: string }
  | { type: "logged_in"; user: string; server: string; resumed: boolean }
  /** `savedLocally`: the server was unreachable; the logout time goes with the next login. */
  | { type: "logged_out"; user: string; savedLocally: boolean; at: number }
  /** `contacts`: mutual contacts, my unanswered requests, requests made to me. */
  | {
    type: "contacts";
    contacts: { user: string; online: boolean }[];
    requested: string[];
    requests: string[];
  }
  /** `contacts add`: `mutual` false: a request was sent; true: we are contacts now. */
  | { type: "contact_added"; user: string; mutual: boolean }
  /** `password`: the server took the new password; the next login needs it. */
  | { type: "password_changed"; user: string }
  /** `contacts remove`: a contact ended both ways, a request declined or withdrawn. */
  | { type: "contact_removed"; user: string; state: "removed" | "declined" | "withdrawn" }
  /**
   * Someone else's step: `request` (they ask to be my contact; at once, or at my next login),
   * `accepted` (my request), `declined` (my request), `removed` (we are no longer contacts).
   */
  | { type: "contact_update"; user: string; state: "request" | "accepted" | "declined" | "removed" }
  /** A contact came online or went offline. */
  | { type: "presence"; user: string; online: boolean }
  /**
   * You entered a chat; `history` is the recent past of it, oldest first. `online` false: the
   * other user is away and your messages wait on the server (`address` is empty then).
   */
  | {
    type: "chat_opened";
    with: string;
    online: boolean;
    address: string;
    /** How the link to them travels, when there is one. */
    path?: LinkPath;
    history: {
      id: string;
      from: string;
      ts: number;
      text: string;
      mark: DeliveryMark;
    }[];
  }
  /** The 1:1 chat window closed: I left it, or (`reason`) the contact ended. */
  | { type: "chat_closed"; with: string; reason?: string }
  /**
   * A message arrived. `inChat`: you are in a chat with its sender (else it is a notice).
   * `via`: "direct" over the peer link, "server" from your mailbox (`show`), or "member": a
   * group message its author could not give you, passed on by another member (`relayedBy`)
   * and checked against the author's signature.
   */
  | {
    type: "message";
    id: string;
    from: string;
    ts: number;
    text: string;
    inChat: boolean;
    via: "direct" | "server" | "member";
    /** Set for a group message: the group's id. */
    group?: string;
    /** Set for `via: "member"`: the member who passed it on. */
    relayedBy?: string;
  }
  /** Your message was handed to the link; `delivered` or `not_delivered` follows. */
  | { type: "sent"; id: string; to: string; ts: number; text: string; group?: string }
  /**
   * The peer acknowledged your message (shown `**`). The outcomes below carry the line's `ts`
   * and `text` when it went from the outbox (kept from an earlier run, or queued before), where
   * no `sent` announced it in this run.
   */
  | { type: "delivered"; id: string; to: string; ms: number; group?: string } & OutboxLine
  /** The peer could not take it (`reason`); the server stored it for them (shown `*`). */
  | { type: "stored"; id: string; to: string; reason: string } & OutboxLine
  /** Neither the peer nor the server could take it; it stays in the outbox and is retried. */
  | { type: "queued"; id: string; to: string; reason: string } & OutboxLine
  /** Refused for good (mailbox full, not a contact); shown `!` in history. */
  | { type: "not_delivered"; id: string; to: string; reason: string; group?: string } & OutboxLine
  /** `by` read your stored messages `ids` (they turn from `*` to `**`). */
  | { type: "read"; by: string; ids: string[]; readAt: number }
  /**
   * `to`'s client could not open (or verify) your stored message `id`, sent at `ts`: it was
   * deleted unread at `at`, so not delivered (it turns from `*` to `!`); send it again. Told once.
   */
  | { type: "mail_rejected"; id: string; to: string; ts: number; text: string; at: number }
  /** New mail for you waits on the server (you were busy in another chat, say). */
  | { type: "mail_notice"; from: string; count: number }
  /** At login: who has pending messages for you. */
  | { type: "mail_summary"; entries: { from: string; count: number; newest: number }[] }
  /** The answer to `hanging`. */
  | { type: "hanging"; entries: { from: string; count: number; newest: number }[] }
  /** `show` finished with one sender (`show` alone: one each); `count` new messages were shown. */
  | { type: "shown"; from: string; count: number }
  /** The other user opened or left the chat window with you. */
  | { type: "peer_joined"; user: string }
  | { type: "peer_left"; user: string }
  /**
   * A link to a user came up or went down. `path`: "direct" (a TCP connection between the
   * two) or "relayed" (through the server, which copies bytes it cannot read); `address` is
   * the other side's, or the server's for a relayed link.
   */
  | { type: "link_up"; user: string; address: string; outbound: boolean; path: LinkPath }
  | { type: "link_down"; user: string; reason: string }
  /**
   * The link to `user` moved to another path without ending: to "direct" once a hole punch
   * connected (the relay is released), or to "relayed" when the direct path was lost while
   * both stayed online. Messages in flight are neither lost nor repeated.
   */
  | { type: "link_path"; user: string; path: LinkPath; address: string; reason: string }
  /** A relay limit the server's operator set was hit on the relayed link with `user`. */
  | { type: "relay_notice"; user: string; limit: "rate" | "daily" | "links"; text: string }
  /**
   * A user's identity key differs from the one pinned at first contact: nothing is sent to or
   * accepted from them until `trust <user>`.
   */
  | { type: "key_changed"; user: string }
  /** You accepted a user's (new) key; `safetyNumber` is what you compared. */
  | { type: "key_trusted"; user: string; safetyNumber: string }
  /**
   * `fingerprint`: your own number; `fingerprint <user>`: the safety number you share with
   * `with` (compare it with them out of band). `changed`: their key is not the pinned one.
   */
  | { type: "fingerprint"; user: string; number: string; with?: string; changed?: boolean }
  | { type: "server_lost"; reason: string }
  | { type: "server_back"; resumed: boolean; server: string }
  | { type: "server_closing"; reason: string }
  /** `/u`: contacts online now. */
  | { type: "online_contacts"; contacts: string[] }
  /**
   * You are in a group's window: you made it (`/a` in a chat), were added while idle or while
   * chatting with the one who added you, or opened it (`chat #handle`).
   */
  | {
    type: "group_opened";
    group: string;
    handle: string;
    by: string;
    members: string[];
    history: { id: string; from: string; ts: number; text: string; mark: DeliveryMark }[];
  }
  /** You were added to a group while in another chat: `chat <handle>` enters it. */
  | { type: "group_invited"; group: string; handle: string; by: string; members: string[] }
  /**
   * Members joined or left. `reason`: "left" (they left with `/q`: the only way out of a
   * group); absent when only joined.
   */
  | {
    type: "group_members";
    group: string;
    handle: string;
    joined: string[];
    left: string[];
    reason?: "left";
    members: string[];
  }
  /**
   * After a login: you are still in this group (membership is stored) and rejoin it; links to
   * its members come up on their own.
   */
  | { type: "group_rejoined"; group: string; handle: string; members: string[] }
  /**
   * A member's link came up (`here`) or went down (crashed, frozen, cut off; `reason`). An
   * away member stays a member: your messages wait for them and reach them when they are back.
   */
  | {
    type: "group_presence";
    group: string;
    handle: string;
    user: string;
    here: boolean;
    reason?: string;
  }
  /**
   * Who has your group message `id` so far: `mark` is `**` when every member it is for has
   * it, else `n/m`; `pending`: members it still waits for (away; it reaches them when back).
   */
  | {
    type: "group_status";
    id: string;
    group: string;
    mark: DeliveryMark;
    have: string[];
    pending: string[];
  }
  /**
   * Messages of `author` that you missed could not be found within the bound (its author and
   * every member linked to you lack them, or are away): the later ones are shown without them.
   * `missing`: how many were skipped, when known. Should they come later, they are shown then.
   */
  | {
    type: "group_gap";
    group: string;
    handle: string;
    author: string;
    missing?: number;
  }
  /**
   * A member passed on a message that is not `author`'s as signed (a forgery, or a key that
   * changed): it was refused, neither stored nor shown.
   */
  | {
    type: "group_relay_refused";
    group: string;
    handle: string;
    from: string;
    author: string;
    id: string;
    reason: string;
  }
  /** `/b`: you closed the group's window and stay in the group (`chat <handle>` returns). */
  | { type: "group_window_closed"; group: string; handle: string }
  /** You are out of the group: you left, or everyone else did. */
  | { type: "group_closed"; group: string; handle: string; reason: string }
  /** `groups`: groups you are in (`active`) and were in. */
  | {
    type: "groups";
    groups: { id: string; handle: string; members: string[]; active: boolean; joinedAt: number }[];
  }
  /** `history <user|#group> [n]`: the last messages of a chat, oldest first. */
  | {
    type: "history";
    chat: string;
    entries: {
      id: string;
      from: string;
      ts: number;
      text: string;
      mark: DeliveryMark;
      outgoing: boolean;
    }[];
  }
  /** `search <words>`: matching messages, newest first; `chat` is a user or a group handle. */
  | {
    type: "search_results";
    query: string;
    results: {
      id: string;
      chat: string;
      from: string;
      ts: number;
      text: string;
      mark: DeliveryMark;
    }[];
  }
  /**
   * A file was offered. "out": you offered it to `peer` and wait for their answer. "in": `peer`
   * offers it to you and it waits for your answer (`accept <offer>` or `decline <offer>`) until
   * `expiresAt`. The file's SHA-256 comes with its last chunk: `transfer_done` carries it, once
   * checked.
   */
  | {
    type: "transfer_offered";
    fid: string;
    direction: "in" | "out";
    peer: string;
    name: string;
    size: number;
    offer?: number;
    expiresAt?: number;
    group?: string;
  }
  /** `offers`: the file offers waiting for your answer, oldest first. */
  | {
    type: "offers";
    offers: { offer: number; peer: string; name: string; size: number }[];
  }
  /**
   * An offer to you was declined: by you, by `--auto-accept none`, because nobody answered it
   * in time, because there was no room for it (`--max-partial`, `--keep-free`), or because the
   * sender cancelled or left. `offer`: its number, when it had waited for an answer.
   */
  | {
    type: "transfer_declined";
    fid: string;
    direction: "in";
    peer: string;
    name: string;
    size: number;
    offer?: number;
    reason: string;
  }
  /**
   * A file transfer started (`direction` "out": you send to `peer`; "in": you receive from
   * `peer`). `offset`: bytes skipped because an earlier, interrupted transfer had them.
   */
  | {
    type: "transfer_started";
    fid: string;
    direction: "in" | "out";
    peer: string;
    name: string;
    size: number;
    offset: number;
  }
  /** Progress, a few times a second: `bytes` done of `size`, `rate` B/s, `eta` seconds. */
  | {
    type: "transfer_progress";
    fid: string;
    direction: "in" | "out";
    peer: string;
    name: string;
    size: number;
    bytes: number;
    rate: number;
    eta: number | null;
    /** The path the link takes now (it may change during a transfer). */
    path?: LinkPath;
  }
  /**
   * Done and verified (SHA-256). `bytes`: what travelled this time (less than `size` after a
   * resume, from `resumedFrom`). `savedAs`: where a received file is.
   */
  | {
    type: "transfer_done";
    fid: string;
    direction: "in" | "out";
    peer: string;
    name: string;
    size: number;
    bytes: number;
    resumedFrom: number;
    sha256: string;
    savedAs?: string;
  }
  /** Failed; `kept`: the part received is kept aside, and sharing again resumes. */
  | {
    type: "transfer_failed";
    fid: string;
    direction: "in" | "out";
    peer: string;
    name: string;
    size: number;
    reason: string;
    bytes: number;
    kept: boolean;
  }
  | { type: "error"; code: string; message: string }
  | { type: "help"; text: string }
  | { type: "bye" };

export type EventSink = (event: ClientEvent) => void;

/** A 1:1 line's send time and text, on the outcome of one sent from the outbox. */
export interface OutboxLine {
  ts?: number;
  text?: string;
}
