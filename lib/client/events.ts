/**
 * Everything the client core reports to its front ends. The terminal renders these as text;
 * `--json` writes each as one JSON object per line on stdout (docs/scripting.md lists them).
 * Adding a field is fine; renaming or removing one breaks bots.
 */
import type { DeliveryMark } from "./client_store.ts";

export type ClientEvent =
  /** The client started and listens for peers. */
  | { type: "ready"; peerPort: number; server: string }
  /** A progress line: what the client is doing now (connecting, looking someone up). */
  | { type: "info"; text: string }
  | { type: "signed_up"; user: string }
  | { type: "logged_in"; user: string; server: string; resumed: boolean }
  /** `savedLocally`: the server was unreachable; the logout time goes with the next login. */
  | { type: "logged_out"; user: string; savedLocally: boolean }
  | { type: "contacts"; contacts: { user: string; online: boolean }[] }
  | { type: "contact_added"; user: string }
  | { type: "contact_removed"; user: string }
  /** A contact came online or went offline. */
  | { type: "presence"; user: string; online: boolean }
  /** You entered a chat; `history` is the recent past of it, oldest first. */
  | {
    type: "chat_opened";
    with: string;
    address: string;
    history: {
      id: string;
      from: string;
      ts: number;
      text: string;
      mark: DeliveryMark;
    }[];
  }
  | { type: "chat_closed"; with: string }
  /** A message arrived. `inChat`: you are in a chat with its sender (else it is a notice). */
  | { type: "message"; id: string; from: string; ts: number; text: string; inChat: boolean }
  /** Your message was handed to the link; `delivered` or `not_delivered` follows. */
  | { type: "sent"; id: string; to: string; ts: number; text: string }
  /** The peer acknowledged your message (shown `**`). */
  | { type: "delivered"; id: string; to: string; ms: number }
  | { type: "not_delivered"; id: string; to: string; reason: string }
  /** The other user opened or left the chat window with you. */
  | { type: "peer_joined"; user: string }
  | { type: "peer_left"; user: string }
  /** A direct link to a user came up or went down. */
  | { type: "link_up"; user: string; address: string; outbound: boolean }
  | { type: "link_down"; user: string; reason: string }
  /** A user's identity key differs from the one seen before. */
  | { type: "key_changed"; user: string }
  | { type: "server_lost"; reason: string }
  | { type: "server_back"; resumed: boolean }
  | { type: "server_closing"; reason: string }
  | { type: "error"; code: string; message: string }
  | { type: "help"; text: string }
  | { type: "bye" };

export type EventSink = (event: ClientEvent) => void;
