/**
 * An echo bot for Confab (see docs/scripting.md): runs `client.ts --json` as a child process,
 * logs in (signing up on the first run), adds CONTACT, opens a chat with it and sends back
 * every message CONTACT writes in that chat. The client's events are copied to stderr.
 *
 *   deno run -A scripts/echo_bot.ts HOST:PORT HOME USER PASSWORD CONTACT
 */
import { fileURLToPath } from "node:url";

const [server, home, user, password, contact] = Deno.args;
if (!server || !home || !user || !password || !contact) {
  console.error("usage: echo_bot.ts HOST:PORT HOME USER PASSWORD CONTACT");
  Deno.exit(2);
}
const clientTs = fileURLToPath(new URL("../client.ts", import.meta.url));
// --max-file-size 0: a bot has no use for files; offers of non-empty files are refused.
const flags = ["--json", "--server", server, "--home", home, "--max-file-size", "0"];
const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", clientTs, ...flags],
  stdin: "piped",
  stdout: "piped",
}).spawn();
const stdin = child.stdin.getWriter();
/** Writes one command line to the client (which may have exited already). */
const send = (line: string) => stdin.write(new TextEncoder().encode(line + "\n")).catch(() => {});

type Event = {
  type: string;
  code?: string;
  user?: string;
  online?: boolean;
  mutual?: boolean;
  state?: string;
  from?: string;
  text?: string;
  inChat?: boolean;
  group?: string;
};
const isContact = (name?: string) => name?.toLowerCase() === contact.toLowerCase();
let loggedIn = false;
/** Whether the client reads our lines as commands ("none") or as messages (the rest). */
let chat: "none" | "opening" | "open" | "leaving" = "none";

/** In a chat every line is a message: keep it one line and keep it from reading as a command. */
function chatLine(text: string): string {
  const line = text.replaceAll(/[\r\n]+/g, " ");
  // `//text` sends `/text`, `\\text` sends `\text`.
  if (line.startsWith("/") || line.startsWith("\\")) return line[0] + line;
  // `share <path>` in a chat shares a file, and has no escape: a leading space keeps it text.
  return /^share\s/.test(line) ? ` ${line}` : line;
}

async function onEvent(e: Event): Promise<void> {
  if (e.type === "ready") await send(`in ${user} ${password}`);
  if (e.type === "logged_in") {
    loggedIn = true;
    await send(`contacts add ${contact}`);
  }
  // A chat opens once we are mutual contacts (our request accepted, or theirs) and they are on.
  const canOpen = (e.type === "contact_added" && e.mutual === true) ||
    (e.type === "contact_update" && e.state === "accepted") ||
    (e.type === "presence" && e.online);
  if (canOpen && isContact(e.user) && chat === "none") {
    chat = "opening";
    await send(`chat ${contact}`);
  }
  if (e.type === "chat_opened") chat = "open";
  if (e.type === "chat_closed") chat = "none";
  if (e.type === "group_opened") {
    chat = "leaving"; // added to a group: this bot only talks 1:1, so it leaves the group
    await send("/q");
  }
  if (e.type === "group_closed" && chat === "leaving") {
    chat = "opening";
    await send(`chat ${contact}`);
  }
  if (e.type === "message" && e.inChat && !e.group && chat === "open" && isContact(e.from)) {
    await send(chatLine(e.text ?? ""));
  }
  if (e.type === "logged_out") await send("quit"); // e.g. the user logged in elsewhere
  if (e.type !== "error") return;
  if (chat === "opening") chat = "none"; // e.g. SERVER_UNREACHABLE: try again on its presence
  if (e.code === "NO_IDENTITY") await send(`signup ${user} ${password}`); // the first run
  else if (!loggedIn) await send("quit");
}

let rest = "";
for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
  const lines = (rest + chunk).split("\n");
  rest = lines.pop() ?? "";
  for (const line of lines) {
    console.error(line);
    await onEvent(JSON.parse(line));
  }
}
const { code } = await child.status;
Deno.exit(loggedIn ? code : 1);
