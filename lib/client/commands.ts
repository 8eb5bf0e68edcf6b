/**
 * The client's command language, parsed without side effects. Outside a chat: the original
 * assignment's commands (`signup`, `in`, `out`, ...). Inside a chat: a line is a message,
 * `/q` (or `\q`) leaves, `/h` helps, `//text` sends a line that starts with `/`.
 */
import { parsePort } from "../cli/lines.ts";

export type Command =
  | { kind: "help" }
  | { kind: "quit" }
  | { kind: "signup"; user: string; password?: string; serverPort?: number }
  | { kind: "login"; user: string; password?: string; serverPort?: number }
  | { kind: "logout" }
  | { kind: "contacts" }
  | { kind: "contact_add"; user: string }
  | { kind: "contact_remove"; user: string }
  | { kind: "chat"; user: string }
  | { kind: "hanging" }
  | { kind: "fingerprint"; user?: string }
  | { kind: "trust"; user: string }
  | { kind: "show"; user: string }
  | { kind: "say"; text: string }
  | { kind: "leave_chat" }
  | { kind: "online_contacts" }
  | { kind: "add_to_chat"; user: string }
  | { kind: "groups" }
  | { kind: "history"; target: string; limit?: number }
  | { kind: "search"; words: string[] }
  | { kind: "share"; path: string }
  | { kind: "chat_help" }
  | { kind: "empty" }
  | { kind: "invalid"; message: string };

export const MAIN_HELP = `commands:
  signup <user> [<password>]           create an account (and log in)
  in [<server port>] <user> [<password>] log in (the password is asked for when left out)
  contacts                             your contacts, with who is online
  contacts add <user>                  add a contact
  contacts remove <user>               remove a contact
  chat <user>                          chat with a contact, directly peer to peer
  chat #<group>                        open the window of a group you are in
  groups                               the groups you are in and were in
  history <user|#group> [<n>]          the last n messages of a chat (default: --history, 50)
  search <words>                       find messages containing all the words
  hanging                              who left you messages while you were away or busy
  show <user>                          read the messages <user> left you
  fingerprint [<user>]                 your number, or the safety number to compare with <user>
  trust <user>                         accept <user>'s new identity key (after comparing numbers)
  out                                  log out
  help                                 this help
  quit                                 log out and exit`;

export const CHAT_HELP = `in a chat:
  <text>        send a message
  /u  or \\u     your contacts who are online
  /a <user>     add an online contact: the chat becomes a group (\\a works too)
  /s <path>     send a file to everyone in the chat, directly (also: share <path>)
  /q  or \\q     leave the chat (in a group: leave the group; the others carry on)
  /h  or \\h     this help
  //text        send a message that starts with / (\\\\text for one that starts with \\)`;

/** Parses one input line. `inChat` selects the chat command set. */
export function parseCommand(line: string, inChat: boolean): Command {
  if (inChat) return parseChatLine(line);
  const words = line.trim().split(/\s+/).filter((w) => w.length > 0);
  const [verb, ...args] = words;
  if (verb === undefined) return { kind: "empty" };
  const usage = (text: string): Command => ({ kind: "invalid", message: `usage: ${text}` });
  switch (verb) {
    case "help":
    case "?":
      return { kind: "help" };
    case "quit":
    case "exit":
      return { kind: "quit" };
    case "signup": {
      if (args.length < 1 || args.length > 2) return usage("signup <user> [<password>]");
      return { kind: "signup", user: args[0]!, password: args[1] };
    }
    case "in": {
      let rest = args;
      let serverPort: number | undefined;
      // `in 4242 alice secret`: a leading number is the server port, as in the original.
      if (rest.length >= 2 && /^\d+$/.test(rest[0]!)) {
        try {
          serverPort = parsePort(rest[0]!, "server port");
        } catch (error) {
          return { kind: "invalid", message: (error as Error).message };
        }
        rest = rest.slice(1);
      }
      if (rest.length < 1 || rest.length > 2) {
        return usage("in [<server port>] <user> [<password>]");
      }
      return { kind: "login", user: rest[0]!, password: rest[1], serverPort };
    }
    case "out":
    case "logout":
      return args.length === 0 ? { kind: "logout" } : usage("out");
    case "contacts":
    case "contact": {
      if (args.length === 0) return { kind: "contacts" };
      const [sub, user, ...extra] = args;
      if ((sub === "add" || sub === "remove" || sub === "rm") && user && extra.length === 0) {
        return sub === "add" ? { kind: "contact_add", user } : { kind: "contact_remove", user };
      }
      return usage("contacts | contacts add <user> | contacts remove <user>");
    }
    case "chat":
      return args.length === 1 ? { kind: "chat", user: args[0]! } : usage("chat <user|#group>");
    case "groups":
      return args.length === 0 ? { kind: "groups" } : usage("groups");
    case "history": {
      if (args.length < 1 || args.length > 2) return usage("history <user|#group> [<n>]");
      if (args[1] === undefined) return { kind: "history", target: args[0]! };
      const n = Number(args[1]);
      if (!Number.isInteger(n) || n < 1 || n > 10_000) {
        return { kind: "invalid", message: "history: <n> must be a number from 1 to 10000" };
      }
      return { kind: "history", target: args[0]!, limit: n };
    }
    case "search":
      return args.length > 0 ? { kind: "search", words: args } : usage("search <words>");
    case "hanging":
      return args.length === 0 ? { kind: "hanging" } : usage("hanging");
    case "show":
      return args.length === 1 ? { kind: "show", user: args[0]! } : usage("show <user>");
    case "fingerprint":
      if (args.length > 1) return usage("fingerprint [<user>]");
      return args[0] === undefined
        ? { kind: "fingerprint" }
        : { kind: "fingerprint", user: args[0] };
    case "trust":
      return args.length === 1 ? { kind: "trust", user: args[0]! } : usage("trust <user>");
    default:
      return { kind: "invalid", message: `unknown command "${verb.slice(0, 40)}"; type help` };
  }
}

function parseChatLine(line: string): Command {
  // `share <path>`, as in the original, shares a file; the rest of the line is the path.
  const share = /^(?:[/\\](?:s|share)|share)\s+(.+)$/.exec(line);
  if (share) return { kind: "share", path: share[1]!.trim() };
  if (/^[/\\](s|share)$/.test(line.trim())) {
    return {
      kind: "invalid",
      message: "usage: /s <path> (a file to send to everyone in the chat)",
    };
  }
  if (line.startsWith("//") || line.startsWith("\\\\")) return { kind: "say", text: line.slice(1) };
  if (line.startsWith("/") || line.startsWith("\\")) {
    const cmd = line.slice(1).trim();
    const [verb, ...rest] = cmd.split(/\s+/);
    if (verb === "a" || verb === "add") {
      return rest.length === 1 && rest[0]
        ? { kind: "add_to_chat", user: rest[0] }
        : { kind: "invalid", message: "usage: /a <user>" };
    }
    switch (cmd) {
      case "u":
      case "online":
        return { kind: "online_contacts" };
      case "q":
      case "quit":
        return { kind: "leave_chat" };
      case "h":
      case "help":
        return { kind: "chat_help" };
      default:
        return {
          kind: "invalid",
          message: `unknown chat command "${line.slice(0, 20)}"; /h lists them, /q leaves`,
        };
    }
  }
  if (line.trim().length === 0) return { kind: "empty" };
  return { kind: "say", text: line };
}
