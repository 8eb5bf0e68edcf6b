/**
 * The interactive client: reads command lines from a front end, runs them on the client core,
 * and shows the outcome. One-line errors for everything expected; never a stack trace.
 */
import { asError } from "../net/framed_connection.ts";
import { ClientError, type ConfabClient } from "./client.ts";
import { CHAT_HELP, type Command, MAIN_HELP, parseCommand } from "./commands.ts";
import type { FrontEnd } from "./terminal.ts";

function promptFor(client: ConfabClient): string {
  const user = client.user;
  if (!user) return "confab> ";
  const label = client.chatLabel;
  if (label) return `${user} → ${label}> `;
  return `${user}> `;
}

/** Shows a failure as one line: the client's own message, or what went wrong unexpectedly. */
function showError(ui: FrontEnd, error: unknown): void {
  const e = asError(error);
  ui.show({
    type: "error",
    code: e instanceof ClientError ? e.code : "INTERNAL",
    message: e instanceof ClientError ? e.message : `unexpected: ${e.message}`,
  });
}

/** Runs commands until `quit` or the end of input, then closes the client. */
export async function runApp(client: ConfabClient, ui: FrontEnd): Promise<void> {
  ui.setPrompt(promptFor(client));
  for await (const line of ui.lines()) {
    const command = parseCommand(line, client.inChat);
    if (command.kind === "quit") break;
    try {
      await execute(client, ui, command);
    } catch (error) {
      showError(ui, error);
    }
    ui.setPrompt(promptFor(client));
    ui.ready();
  }
  await client.close();
}

async function password(ui: FrontEnd, given: string | undefined, verb: string): Promise<string> {
  if (given !== undefined) return given;
  const typed = await ui.askSecret("password: ");
  if (typed === undefined) {
    throw new ClientError(
      "PASSWORD_REQUIRED",
      `no terminal to ask for a password on: give it on the line (${verb} <user> <password>)`,
    );
  }
  return typed;
}

async function execute(client: ConfabClient, ui: FrontEnd, c: Command): Promise<void> {
  switch (c.kind) {
    case "empty":
    case "quit":
      return;
    case "help":
      return ui.show({ type: "help", text: MAIN_HELP });
    case "chat_help":
      return ui.show({ type: "help", text: CHAT_HELP });
    case "invalid":
      throw new ClientError("BAD_COMMAND", c.message);
    case "signup":
      return client.signup(c.user, await password(ui, c.password, "signup"), c.serverPort);
    case "login":
      return client.login(c.user, await password(ui, c.password, "in"), c.serverPort);
    case "logout":
      return client.logout();
    case "contacts":
      await client.contacts();
      return;
    case "contact_add":
      return client.addContact(c.user);
    case "contact_remove":
      return client.removeContact(c.user);
    case "chat":
      return client.openChat(c.user);
    case "hanging":
      await client.hanging();
      return;
    case "fingerprint":
      return client.fingerprint(c.user);
    case "trust":
      return client.trust(c.user);
    case "show":
      await client.show(c.user);
      return;
    case "online_contacts":
      await client.onlineContacts();
      return;
    case "add_to_chat":
      return client.addToChat(c.user);
    case "groups":
      return client.listGroups();
    case "history":
      return client.history(c.target, c.limit);
    case "search":
      return client.search(c.words);
    case "leave_chat":
      return client.leaveChat();
    case "share":
      // Not awaited: chatting goes on while files travel; progress comes as events.
      client.share(c.path).catch((error) => showError(ui, error));
      return;
    case "say":
      // Not awaited: the next line can be typed while this one waits for its ack.
      client.send(c.text).catch((error) => showError(ui, error));
      return;
  }
}
