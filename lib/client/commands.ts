/**
 * The client's command language, parsed without side effects. Outside a chat: the original
 * assignment's commands (`signup`, `in`, `out`, ...). Inside a chat: a line is a message, and
 * every command works with a `/` (or `\`) in front: `/q` leaves, `/show alice`, `/chat bob`,
 * `//text` sends a line that starts with `/`. The `/` forms work outside a chat too.
 */
import { parsePort } from "../cli/lines.ts";

export type Command =
  | { kind: "help" }
  | { kind: "quit" }
  | { kind: "clear" }
  | { kind: "signup"; user: string; password?: string; serverPort?: number }
  | { kind: "login"; user: string; password?: string; serverPort?: number }
  | { kind: "logout" }
  /** `password [<current> <new>]`: asked for (without echo) when not on the line. */
  | { kind: "password"; current?: string; next?: string }
  | { kind: "contacts" }
  | { kind: "contact_add"; user: string }
  | { kind: "contact_remove"; user: string }
  | { kind: "chat"; user: string }
  | { kind: "hanging" }
  | { kind: "fingerprint"; user?: string }
  | { kind: "trust"; user: string }
  | { kind: "show"; user?: string }
  | { kind: "say"; text: string }
  | { kind: "leave_chat" }
  | { kind: "close_window" }
  | { kind: "online_contacts" }
  | { kind: "add_to_chat"; user: string }
  | { kind: "groups" }
  /** `target` left out: the chat or group open now (`/history` alone, in a chat). */
  | { kind: "history"; target?: string; limit?: number }
  | { kind: "search"; words: string[] }
  /** `path`: as typed (quotes, `\ ` and `~` undone); `raw`: the text exactly as typed. */
  | { kind: "share"; path: string; raw: string }
  /** `accept [<n>]` / `/y [<n>]`, `decline [<n>]` / `/n [<n>]`: answer file offer `n`. */
  | { kind: "answer_offer"; accept: boolean; offer?: number }
  | { kind: "offers" }
  | { kind: "empty" }
  | { kind: "invalid"; message: string };

/** Where the user is, which decides what help shows and how notices name commands. */
export type Place = "logged_out" | "idle" | "chat";

const LOGGED_OUT_HELP = `before logging in:
  signup <user> [<password>]              create an account (and log in)
  in [<server port>] <user> [<password>]  log in (asks for the password if left out)
  clear                                   clear the screen (also Ctrl-L)
  help                                    this help
  quit                                    exit (also Ctrl-D, or Ctrl-C twice)`;

const IDLE_HELP = `logged in:
  contacts                     your contacts, with who is online, and contact requests
  contacts add <user>          ask <user> to be your contact (or accept their request)
  contacts accept <user>       accept <user>'s contact request (same as add)
  contacts remove <user>       end a contact, both ways (or withdraw your request)
  contacts decline <user>      turn down <user>'s contact request (same as remove)
  chat <user>                  chat with a contact, directly peer to peer
  chat #<group>                open the window of a group you are in
  groups                       the groups you are in and were in
  history <user|#group> [<n>]  the last n messages of a chat (default: --history)
  search <words>               find messages containing all the words
  hanging                      who left you messages while you were away or busy
  show [<user>]                read the messages <user> left you (everyone's, without <user>)
  fingerprint [<user>]         your number, or the safety number shared with <user>
  trust <user>                 accept <user>'s new key (after comparing safety numbers)
  password                     change your password (asks for the current one and the new)
  offers                       files offered to you, waiting for your answer
  accept [<n>]                 receive offered file <n> (also /y; n may be left out if one waits)
  decline [<n>]                refuse offered file <n> (also /n)
  out                          log out
  clear                        clear the screen (also Ctrl-L)
  help                         this help
  quit                         log out and exit (also Ctrl-D, or Ctrl-C twice)
every command also works with a / in front (/contacts), as it does inside a chat`;

const CHAT_HELP = `in a chat:
  <text>                        send a message
  /q                            leave the chat or the group (also Ctrl-D)
  /b                            back to the main prompt (a group's window closes; you stay in it)
  /u                            your contacts who are online
  /a <user>                     add an online contact: the chat becomes a group
  /s <path>                     send a file to everyone in the chat, directly
  /y [<n>], /n [<n>]            accept or decline offered file <n> (/offers lists them)
  /chat <user|#group>           switch to another chat
  /show [<user>]                read the messages <user> left you (everyone's, without <user>)
  /hanging                      who left you messages
  /contacts                     your contacts (/contacts add <user> adds one)
  /history [<chat> [<n>]]       the last n messages of a chat (this one, without <chat>)
  /search <words>               find messages containing all the words
  /groups                       the groups you are in and were in
  /clear                        clear the screen (also Ctrl-L)
  /h                            this help
  //text                        send a message that starts with /
every command works with \\ instead of / too (\\q, \\a <user>)`;

/** The help for where the user is. */
export function helpFor(place: Place): string {
  return place === "logged_out" ? LOGGED_OUT_HELP : place === "idle" ? IDLE_HELP : CHAT_HELP;
}

/** Every help, for `--help`. */
export const MAIN_HELP = `${LOGGED_OUT_HELP}\n\n${IDLE_HELP}\n\n${CHAT_HELP}`;

/** The command names offered by Tab, for where the user is. */
export function commandNames(place: Place): string[] {
  if (place === "logged_out") return ["signup", "in", "clear", "help", "quit"];
  const idle = [
    "contacts",
    "chat",
    "groups",
    "history",
    "search",
    "hanging",
    "show",
    "fingerprint",
    "trust",
    "password",
    "offers",
    "accept",
    "decline",
    "out",
    "clear",
    "help",
    "quit",
  ];
  if (place === "idle") return idle;
  return [
    "/q",
    "/b",
    "/u",
    "/a",
    "/s",
    "/y",
    "/n",
    "/h",
    ...idle.filter((c) => c !== "quit").map((c) => `/${c}`),
  ];
}

/** Parses one input line. `inChat` selects the chat command set. */
export function parseCommand(line: string, inChat: boolean): Command {
  if (inChat) return parseChatLine(line);
  const trimmed = line.trim();
  if (trimmed.startsWith("//") || trimmed.startsWith("\\\\")) {
    return {
      kind: "invalid",
      message: "you are not in a chat: open one with chat <user>, then type your message",
    };
  }
  if (/^[/\\]\S/.test(trimmed)) return parseSlash(trimmed.slice(1), false);
  return parseWords(trimmed, false);
}

function parseChatLine(line: string): Command {
  // `share <path>`, as in the original, shares a file; the rest of the line is the path.
  const share = /^share\s+(.+)$/.exec(line);
  if (share) return shareCommand(share[1]!);
  if (line.startsWith("//") || line.startsWith("\\\\")) return { kind: "say", text: line.slice(1) };
  if (line.startsWith("/") || line.startsWith("\\")) return parseSlash(line.slice(1), true);
  if (line.trim().length === 0) return { kind: "empty" };
  return { kind: "say", text: line };
}

/** A `/command`: the chat's own (q, u, a, s, h) and every other command. */
function parseSlash(rest: string, inChat: boolean): Command {
  const body = rest.trimStart();
  const [verb = "", ...args] = body.split(/\s+/).filter((w) => w.length > 0);
  if (verb === "") {
    return { kind: "invalid", message: "a command after the / please; /h lists them" };
  }
  switch (verb) {
    case "q":
    case "quit":
    case "leave":
      if (args.length > 0) return usage("/q");
      if (inChat) return { kind: "leave_chat" };
      return verb === "quit" ? { kind: "quit" } : {
        kind: "invalid",
        message: "you are not in a chat (quit exits the program)",
      };
    case "b":
    case "back":
      if (args.length > 0) return usage("/b");
      return inChat
        ? { kind: "close_window" }
        : { kind: "invalid", message: "you are not in a chat" };
    case "u":
    case "online":
      return args.length === 0 ? { kind: "online_contacts" } : usage("/u");
    case "a":
    case "add":
      return args.length === 1 ? { kind: "add_to_chat", user: args[0]! } : usage("/a <user>");
    case "s":
    case "share": {
      const path = body.slice(verb.length).trim();
      return path
        ? shareCommand(path)
        : usage("/s <path> (a file to send to everyone in the chat)");
    }
    case "y":
      return answerCommand(args, true, "/y [<n>]");
    case "n":
      return answerCommand(args, false, "/n [<n>]");
    case "h":
    case "help":
    case "?":
      return { kind: "help" };
    case "exit":
      return { kind: "quit" };
    case "history":
      if (inChat && args.length === 0) return { kind: "history" };
  }
  const command = parseWords(body, true);
  if (command.kind === "invalid" && command.message.startsWith("unknown command")) {
    return {
      kind: "invalid",
      message: `unknown command "/${verb.slice(0, 40)}"; ${
        inChat ? "/h lists them, /q leaves the chat" : "type help"
      }`,
    };
  }
  return command;
}

function usage(text: string): Command {
  return { kind: "invalid", message: `usage: ${text}` };
}

/**
 * A count or a number as a person types it: digits only (not `0x10`, `1e3` or `1.0`, which
 * `Number()` reads as 16, 1000 and 1) and at most 9 of them, so it stays the number typed;
 * undefined otherwise.
 */
function wholeNumber(text: string): number | undefined {
  return /^\d{1,9}$/.test(text) ? Number(text) : undefined;
}

function answerCommand(args: string[], accept: boolean, form: string): Command {
  if (args.length > 1) return usage(form);
  if (args[0] === undefined) return { kind: "answer_offer", accept };
  const offer = wholeNumber(args[0]);
  if (offer === undefined || offer < 1) {
    return { kind: "invalid", message: `usage: ${form} (<n>: the number shown with the offer)` };
  }
  return { kind: "answer_offer", accept, offer };
}

function shareCommand(raw: string): Command {
  const path = parsePath(raw.trim());
  if (path === "") return usage("/s <path> (a file to send to everyone in the chat)");
  return { kind: "share", path, raw: raw.trim() };
}

/** A command given as words (`contacts add bob`); `slashed`: it came as `/contacts add bob`. */
function parseWords(text: string, slashed: boolean): Command {
  const words = text.split(/\s+/).filter((w) => w.length > 0);
  const [verb, ...args] = words;
  if (verb === undefined) return { kind: "empty" };
  const p = slashed ? "/" : "";
  switch (verb) {
    case "help":
    case "?":
      return { kind: "help" };
    case "quit":
    case "exit":
      return { kind: "quit" };
    case "clear":
    case "cls":
      return { kind: "clear" };
    case "signup": {
      if (args.length < 1 || args.length > 2) return usage(`${p}signup <user> [<password>]`);
      return { kind: "signup", user: args[0]!, password: args[1] };
    }
    case "in":
    case "login": {
      let rest = args;
      let serverPort: number | undefined;
      // `in 4242 alice secret`: a leading number is the server port, as in the original.
      if (rest.length >= 2 && /^\d+$/.test(rest[0]!)) {
        try {
          serverPort = parsePort(rest[0]!, "server port", 1); // (0 is no server's port)
        } catch (error) {
          return { kind: "invalid", message: (error as Error).message };
        }
        rest = rest.slice(1);
      }
      if (rest.length < 1 || rest.length > 2) {
        return usage(`${p}in [<server port>] <user> [<password>]`);
      }
      return { kind: "login", user: rest[0]!, password: rest[1], serverPort };
    }
    case "out":
    case "logout":
      return args.length === 0 ? { kind: "logout" } : usage(`${p}out`);
    case "password":
    case "passwd":
      if (args.length === 0) return { kind: "password" };
      return args.length === 2
        ? { kind: "password", current: args[0]!, next: args[1]! }
        : usage(`${p}password (or, for scripts, ${p}password <current> <new>)`);
    case "contacts":
    case "contact": {
      if (args.length === 0) return { kind: "contacts" };
      const [sub, user, ...extra] = args;
      const adds = ["add", "accept"], removes = ["remove", "rm", "decline"];
      if (sub && user && extra.length === 0) {
        if (adds.includes(sub)) return { kind: "contact_add", user };
        if (removes.includes(sub)) return { kind: "contact_remove", user };
      }
      return usage(
        `${p}contacts | ${p}contacts add|accept <user> | ${p}contacts remove|decline <user>`,
      );
    }
    case "chat":
      return args.length === 1 ? { kind: "chat", user: args[0]! } : usage(`${p}chat <user|#group>`);
    case "groups":
      return args.length === 0 ? { kind: "groups" } : usage(`${p}groups`);
    case "history": {
      if (args.length < 1 || args.length > 2) return usage(`${p}history <user|#group> [<n>]`);
      if (args[1] === undefined) return { kind: "history", target: args[0]! };
      const n = wholeNumber(args[1]);
      if (n === undefined || n < 1 || n > 10_000) {
        return { kind: "invalid", message: "history: <n> must be a number from 1 to 10000" };
      }
      return { kind: "history", target: args[0]!, limit: n };
    }
    case "search": {
      // Control characters separate words, as in the index (a NUL also ends its query early).
      // deno-lint-ignore no-control-regex
      const words = args.flatMap((w) => w.split(/[\u0000-\u001f\u007f]+/)).filter((w) => w);
      return words.length > 0 ? { kind: "search", words } : usage(`${p}search <words>`);
    }
    case "hanging":
      return args.length === 0 ? { kind: "hanging" } : usage(`${p}hanging`);
    case "show":
      if (args.length > 1) return usage(`${p}show [<user>]`);
      return args[0] === undefined ? { kind: "show" } : { kind: "show", user: args[0] };
    case "fingerprint":
      if (args.length > 1) return usage(`${p}fingerprint [<user>]`);
      return args[0] === undefined
        ? { kind: "fingerprint" }
        : { kind: "fingerprint", user: args[0] };
    case "trust":
      return args.length === 1 ? { kind: "trust", user: args[0]! } : usage(`${p}trust <user>`);
    case "share":
      return args.length > 0 ? shareCommand(text.slice(verb.length)) : usage(`${p}share <path>`);
    case "offers":
      return args.length === 0 ? { kind: "offers" } : usage(`${p}offers`);
    case "accept":
      return answerCommand(args, true, `${p}accept [<n>]`);
    case "decline":
      return answerCommand(args, false, `${p}decline [<n>]`);
    default:
      return { kind: "invalid", message: `unknown command "${verb.slice(0, 40)}"; type help` };
  }
}

/**
 * A path as a person types or drags it into a terminal: `"my file.txt"`, `'my file.txt'`,
 * `my\ file.txt`, `~/notes.txt`, `file:///home/me/a%20b.txt`. Quotes and backslash escapes
 * are undone as a shell would (not on Windows, where `\` separates folders), `~` is the home
 * folder.
 */
export function parsePath(raw: string, home = homeDir()): string {
  let text = raw.trim();
  if (/^file:\/\//i.test(text)) {
    try {
      return decodeURIComponent(new URL(text).pathname);
    } catch {
      return text;
    }
  }
  const windows = isWindows();
  let out = "";
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quote) {
      if (ch === quote) quote = undefined;
      else if (ch === "\\" && quote === '"' && /["\\$`]/.test(text[i + 1] ?? "")) out += text[++i];
      else out += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
    } else if (ch === "\\" && !windows && i + 1 < text.length) {
      out += text[++i];
    } else out += ch;
  }
  if (quote) out = text; // an unmatched quote: take the text as it is
  text = out;
  if (home && (text === "~" || text.startsWith("~/") || (windows && text.startsWith("~\\")))) {
    text = home + text.slice(1);
  }
  return text;
}

function homeDir(): string | undefined {
  try {
    return Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE");
  } catch {
    return undefined;
  }
}

function isWindows(): boolean {
  return Deno.build.os === "windows";
}

/**
 * The secret words of a `signup`/`in` line (the last word) or a `password` line (every word
 * after the verb): where they start and end, or undefined.
 */
function passwordSpan(line: string): { start: number; end: number } | undefined {
  const words = [...line.matchAll(/\S+/g)];
  const verb = words[0]?.[0].replace(/^[/\\]/, "");
  if (verb === "password" || verb === "passwd") {
    const [first, last] = [words[1], words.at(-1)!];
    return first && { start: first.index!, end: last.index! + last[0].length };
  }
  let at: number;
  if (verb === "signup") at = 2;
  else if (verb === "in" || verb === "login") at = words[1] && /^\d+$/.test(words[1][0]) ? 3 : 2;
  else return undefined;
  const word = words[at];
  if (!word || words.length !== at + 1) return undefined;
  return { start: word.index!, end: word.index! + word[0].length };
}

/**
 * The line as it may be kept for up-arrow: a password typed on a `signup`, `in` or `password`
 * line is left out (recalling the line then asks for it).
 */
export function lineForHistory(line: string): string {
  const span = passwordSpan(line);
  return span ? line.slice(0, span.start).trimEnd() : line;
}

/** The line as it may stay on screen: a password typed on the line is masked. */
export function lineForScreen(line: string): string {
  const span = passwordSpan(line);
  return span ? line.slice(0, span.start) + "******" + line.slice(span.end) : line;
}
