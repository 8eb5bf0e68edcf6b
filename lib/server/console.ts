/**
 * The server's operator console: `help`, `list`, `registry`, `esc`, as in the original
 * assignment. On a terminal it has a prompt and prints log lines above the line being typed
 * (never through it); otherwise it reads plain lines from stdin, and when stdin ends the
 * server keeps running, so it can run as a service.
 */
import { styled } from "../cli/style.ts";
import { readFileLines } from "../cli/lines.ts";
import { isInteractive, LineQueue, LineTerminal } from "../cli/tty.ts";
import { clock, dateTime } from "../util/time.ts";
import { visible } from "../cli/text.ts";
import { formatBytes } from "./relay.ts";
import type { ConfabServer } from "./server.ts";

export const CONSOLE_HELP = [
  "help             show this help",
  "list             users online now: username*login time*peer port, then relayed",
  "                 links: relay alice<->bob*since*bytes",
  "                 (*instance too, with several instances sharing the store)",
  "registry [user]  latest login of every user, or every login of one user:",
  "                 username*login*logout*port (logout - while online)",
  "esc              tell clients the server is going away, close and exit",
].join("\n");

const COMMANDS = ["help", "list", "registry", "esc"];

/**
 * Formats the `list` output: one `username*HH:MM:SS*port` line per online user (with several
 * instances sharing the store, everyone in the cluster, with `*instance` added), then the
 * links this instance relays.
 */
export async function formatList(server: ConfabServer): Promise<string> {
  const users = await server.store.onlineUsers();
  const where = server.store.shared ? (u: { instance: string }) => `*${u.instance}` : () => "";
  const lines = users.length === 0
    ? ["no users online"]
    : users.map((u) => `${u.user}*${clock(u.loginAt)}*${u.peerPort}${where(u)}`);
  // Links the server relays (peers that cannot reach each other directly).
  for (const link of server.relayedLinks()) {
    lines.push(`relay ${link.a}<->${link.b}*${clock(link.since)}*${formatBytes(link.bytes)}`);
  }
  return lines.join("\n");
}

/**
 * Formats the `registry` output: `username*login*logout*port` with dates
 * (`YYYY-MM-DD HH:MM:SS`, local time), logout `-` while online.
 */
export async function formatRegistry(server: ConfabServer, user?: string): Promise<string> {
  const rows = await server.store.registry(user);
  if (rows.length === 0) return user ? `no logins recorded for ${user}` : "no logins recorded";
  return rows.map((r) =>
    `${r.user}*${dateTime(r.loginAt)}*${r.logoutAt === null ? "-" : dateTime(r.logoutAt)}*${r.port}`
  ).join("\n");
}

/**
 * A log line as the console shows it: local time first, as the clients show theirs. Text that
 * came from clients (a reported error, say) is made visible, never sent raw to the terminal.
 */
export function logLine(text: string, at = Date.now()): string {
  return `[${clock(at)}] ${visible(text)}`;
}

/** Where the console reads commands and prints: a terminal or plain lines. */
export interface ConsoleIO {
  /** Command lines, until stdin ends. */
  lines(): AsyncIterable<string>;
  /** Prints above the prompt (on a terminal). */
  print(text: string): void;
  /** Gives the terminal back as it was. Idempotent. */
  close(): Promise<void>;
}

/** Plain lines in, plain lines out (stdin piped, `/dev/null`, a service). */
class PlainConsole implements ConsoleIO {
  lines(): AsyncIterable<string> {
    return readFileLines(Deno.stdin);
  }

  print(text: string): void {
    console.log(text);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A prompt on a terminal; log lines go above it. Ctrl-C on an empty line stops the server. */
class TtyConsole implements ConsoleIO {
  readonly #tty: LineTerminal;
  readonly #input = new LineQueue();

  constructor(prompt: string, onInterrupt: () => void) {
    const color = Deno.env.get("NO_COLOR") === undefined || Deno.env.get("NO_COLOR") === "";
    const shown = color ? styled("bold", prompt) : prompt;
    this.#tty = new LineTerminal({
      prompt: () => shown,
      submit: (line) => {
        this.#tty.print(prompt + line);
        this.#tty.editor.addHistory(line);
        this.#input.push(line);
      },
      interrupt: (hadText) => {
        if (!hadText) onInterrupt();
      },
      eof: () => this.print("(esc stops the server, after telling the clients; so does Ctrl-C)"),
      complete: () => {
        const editor = this.#tty.editor;
        const { start, word } = editor.wordAtCursor();
        if (start !== 0) return;
        const matches = COMMANDS.filter((c) => c.startsWith(word));
        if (matches.length === 1) editor.replaceBeforeCursor(0, `${matches[0]} `);
        else if (matches.length > 1) this.print(matches.join("  "));
      },
      hangup: () => this.#input.end(),
    });
  }

  lines(): AsyncIterable<string> {
    return this.#input.lines();
  }

  print(text: string): void {
    this.#tty.print(text);
  }

  close(): Promise<void> {
    this.#input.end();
    return this.#tty.close();
  }
}

/**
 * The console for this process: a prompt when stdin and stdout are a terminal, plain lines
 * otherwise. `onInterrupt`: Ctrl-C on an empty line (the terminal no longer sends SIGINT).
 */
export function openConsole(onInterrupt: () => void): ConsoleIO {
  return isInteractive() ? new TtyConsole("confab-server> ", onInterrupt) : new PlainConsole();
}

/**
 * Runs console commands until `esc`. Resolves when `esc` was typed (the caller shuts down)
 * and never when the input simply ends.
 */
export async function runConsole(server: ConfabServer, io: ConsoleIO): Promise<void> {
  const print = (text: string) => io.print(text);
  for await (const raw of io.lines()) {
    const line = raw.trim();
    if (line === "") continue;
    if (line === "esc") return;
    try {
      await runCommand(server, line, print);
    } catch (error) {
      // The store may be unreachable for a moment (a database restarting): say so, carry on.
      print(`${line.split(" ")[0]} failed: ${(error as Error).message}`);
    }
  }
  await new Promise<never>(() => {}); // stdin ended: keep serving until a signal comes
}

async function runCommand(
  server: ConfabServer,
  line: string,
  print: (text: string) => void,
): Promise<void> {
  switch (line) {
    case "help":
      print(CONSOLE_HELP);
      break;
    case "list":
      print(await formatList(server));
      break;
    case "registry":
      print(await formatRegistry(server));
      break;
    default:
      if (line.startsWith("registry ")) {
        print(await formatRegistry(server, line.slice(9).trim()));
        break;
      }
      print(`unknown command "${line.slice(0, 40)}"; type help`);
  }
}
