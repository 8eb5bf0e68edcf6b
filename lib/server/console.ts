/**
 * The server's operator console on stdin: `help`, `list`, `esc`, as in the original
 * assignment. Lines are read whether or not stdin is a terminal; when stdin ends the server
 * keeps running, so it can run as a service.
 */
import { readLines } from "../cli/lines.ts";
import { clock } from "../util/time.ts";
import type { ConfabServer } from "./server.ts";

export const CONSOLE_HELP = [
  "help   show this help",
  "list   users online now: username*login time*peer port",
  "registry [user]  latest login of every user, or every login of one user:",
  "                 username*login*logout*port (logout - while online)",
  "esc    tell clients the server is going away, close and exit",
].join("\n");

/** Formats the `list` output: one `username*HH:MM:SS*port` line per online user. */
export function formatList(server: ConfabServer): string {
  const users = server.online();
  if (users.length === 0) return "no users online";
  return users.map((u) => `${u.user}*${clock(u.loginAt)}*${u.peerPort}`).join("\n");
}

/** Formats the `registry` output: `username*login*logout*port`, logout `-` while online. */
export async function formatRegistry(server: ConfabServer, user?: string): Promise<string> {
  const rows = await server.store.registry(user);
  if (rows.length === 0) return user ? `no logins recorded for ${user}` : "no logins recorded";
  return rows.map((r) =>
    `${r.user}*${clock(r.loginAt)}*${r.logoutAt === null ? "-" : clock(r.logoutAt)}*${r.port}`
  ).join("\n");
}

/**
 * Runs console commands from `input` until `esc`. Resolves when `esc` was typed (the caller
 * shuts down) and never when the input simply ends.
 */
export async function runConsole(
  server: ConfabServer,
  input: ReadableStream<Uint8Array>,
  print: (text: string) => void,
): Promise<void> {
  for await (const raw of readLines(input)) {
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
      print(formatList(server));
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
