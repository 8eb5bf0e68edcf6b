/**
 * An echo bot for Confab (see docs/scripting.md): runs `client.ts --json` as a child process,
 * logs in (signing up on the first run), adds CONTACT, opens a chat with it and sends back
 * every message that arrives in that chat. The client's events are copied to stderr.
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
const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", clientTs, "--json", "--server", server, "--home", home],
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
  from?: string;
  text?: string;
  inChat?: boolean;
};
const isContact = (name?: string) => name?.toLowerCase() === contact.toLowerCase();
let loggedIn = false;
let chat: "none" | "opening" | "open" = "none";

/** In a chat every line is a message: keep it one line and keep it from reading as a command. */
function chatLine(text: string): string {
  const line = text.replaceAll(/[\r\n]+/g, " ");
  if (line.startsWith("/")) return `/${line}`; // `//text` sends `/text`
  return line.startsWith("\\") ? ` ${line}` : line; // `\` has no escape: a space keeps it text
}

async function onEvent(e: Event): Promise<void> {
  if (e.type === "ready") await send(`in ${user} ${password}`);
  if (e.type === "logged_in") {
    loggedIn = true;
    await send(`contacts add ${contact}`);
  }
  const canOpen = e.type === "contact_added" || (e.type === "presence" && e.online);
  if (canOpen && isContact(e.user) && chat === "none") {
    chat = "opening";
    await send(`chat ${contact}`);
  }
  if (e.type === "chat_opened") chat = "open";
  if (e.type === "message" && e.inChat && isContact(e.from)) await send(chatLine(e.text ?? ""));
  if (e.type !== "error") return;
  if (chat === "opening") chat = "none"; // e.g. USER_OFFLINE: try again on its presence event
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
