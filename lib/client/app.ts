/**
 * The interactive client: reads command lines from a front end, runs them on the client core,
 * and shows the outcome. One-line errors for everything expected; never a stack trace.
 */
import { asError } from "../net/framed_connection.ts";
import { MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH } from "../protocol/messages.ts";
import { ClientError, type ConfabClient } from "./client.ts";
import {
  type Command,
  commandNames,
  helpFor,
  lineForHistory,
  lineForScreen,
  parseCommand,
  type Place,
} from "./commands.ts";
import type { ClientEvent } from "./events.ts";
import { sortNames } from "./render.ts";
import { CancelledError, type FrontContext, type FrontEnd } from "./terminal.ts";
import { completePath } from "./paths.ts";

/** Where the user is: logged out, logged in outside a chat, or in a chat. */
export function placeOf(client: ConfabClient): Place {
  return !client.user ? "logged_out" : client.inChat ? "chat" : "idle";
}

/** The prompt for where the user is: `confab> `, `alice> `, `alice → bob> `. */
export function promptFor(client: ConfabClient): string {
  const user = client.user;
  if (!user) return "confab> ";
  const label = client.chatLabel;
  if (label) return `${user} → ${label}> `;
  return `${user}> `;
}

/** Names seen in events, for Tab: contacts (and people who wrote), kept up to date. */
export class NameBook {
  readonly #names = new Map<string, string>();

  observe(e: ClientEvent): void {
    switch (e.type) {
      case "contacts":
        for (const c of e.contacts) this.add(c.user);
        for (const user of e.requests) this.add(user);
        return;
      case "contact_added":
      case "presence":
        return this.add(e.user);
      case "contact_removed":
        this.#names.delete(e.user.toLowerCase());
        return;
      case "chat_opened":
        return this.add(e.with);
      case "message":
        return this.add(e.from);
      case "mail_summary":
        for (const entry of e.entries) this.add(entry.from);
        return;
      case "logged_out":
        this.#names.clear();
        return;
    }
  }

  add(name: string): void {
    this.#names.set(name.toLowerCase(), name);
  }

  get names(): string[] {
    return sortNames([...this.#names.values()]);
  }
}

/** What the front end needs to know about the client (see FrontContext). */
export function frontContext(client: ConfabClient, names: NameBook): FrontContext {
  return {
    prompt: () => promptFor(client),
    where: () => ({ me: client.user, chatWith: client.chatWith, group: client.groupHandle }),
    echo: (line) => {
      const command = parseCommand(line, client.inChat);
      // A message is shown once, as `you: …` when it is delivered.
      if (command.kind === "say") return undefined;
      return lineForScreen(line);
    },
    historyLine: lineForHistory,
    complete: (before, word) => {
      const words = before.trim().split(/\s+/).filter((w) => w);
      const place = placeOf(client);
      if (words.length === 0) return commandNames(place);
      const verb = words[0]!.replace(/^[/\\]/, "");
      if (verb === "s" || verb === "share") return completePath(word);
      if (place === "logged_out") return [];
      const groups = client.groupHandles;
      if (word.startsWith("#")) return groups;
      if (verb === "contacts" && words.length === 1) {
        return ["add", "remove", "accept", "decline"];
      }
      return [...names.names, ...(verb === "chat" || verb === "history" ? groups : [])];
    },
  };
}

/** Shows a failure as one line: the client's own message, or what went wrong unexpectedly. */
function showError(ui: FrontEnd, error: unknown): void {
  const e = asError(error);
  if (e instanceof CancelledError) {
    ui.print("cancelled");
    return;
  }
  ui.show({
    type: "error",
    code: e instanceof ClientError ? e.code : "INTERNAL",
    message: e instanceof ClientError ? e.message : `unexpected: ${e.message}`,
  });
}

/** Runs commands until `quit` or the end of input (the caller then closes the client). */
export async function runApp(
  client: ConfabClient,
  ui: FrontEnd,
  names: NameBook = new NameBook(),
): Promise<void> {
  ui.bind(frontContext(client, names));
  for await (const line of ui.lines()) {
    const command = parseCommand(line, client.inChat);
    if (command.kind === "quit") break;
    try {
      await execute(client, ui, command, names);
    } catch (error) {
      showError(ui, error);
    }
  }
}

function checkPassword(password: string): string {
  if (password.length < MIN_PASSWORD_LENGTH || password.length > MAX_PASSWORD_LENGTH) {
    throw new ClientError(
      "BAD_PASSWORD",
      `a password needs ${MIN_PASSWORD_LENGTH} to ${MAX_PASSWORD_LENGTH} characters`,
    );
  }
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(password)) {
    throw new ClientError("BAD_PASSWORD", "a password cannot contain control characters");
  }
  return password;
}

async function password(
  ui: FrontEnd,
  given: string | undefined,
  verb: "signup" | "in",
): Promise<string> {
  if (given !== undefined) return verb === "signup" ? checkPassword(given) : given;
  const typed = await ui.askSecret("password: ");
  if (typed === undefined) {
    throw new ClientError(
      "PASSWORD_REQUIRED",
      `no terminal to ask for a password on: give it on the line (${verb} <user> <password>)`,
    );
  }
  if (verb === "in") return typed;
  checkPassword(typed);
  const again = await ui.askSecret("the same password again: ");
  if (again !== typed) {
    throw new ClientError("BAD_PASSWORD", "the two passwords differ; nothing was created");
  }
  return typed;
}

/** The current and the new password of a `password` command: as given, or asked for. */
async function passwordChange(
  client: ConfabClient,
  ui: FrontEnd,
  c: Extract<Command, { kind: "password" }>,
): Promise<[current: string, next: string]> {
  if (!client.user) throw new ClientError("NOT_LOGGED_IN", "log in first: in <user> <password>");
  if (c.current !== undefined && c.next !== undefined) {
    return [possible(c.current), differs(c.current, checkPassword(c.next))];
  }
  const current = await ui.askSecret("current password: ");
  if (current === undefined) {
    throw new ClientError(
      "PASSWORD_REQUIRED",
      "no terminal to ask for passwords on: give them on the line (password <current> <new>)",
    );
  }
  return [possible(current), await askNew(ui, current)];
}

/** A current password no account can have is wrong, without asking the server. */
function possible(current: string): string {
  try {
    return checkPassword(current);
  } catch {
    throw new ClientError("LOGIN_FAILED", "the current password is wrong; nothing was changed");
  }
}

async function askNew(ui: FrontEnd, current: string): Promise<string> {
  const next = differs(current, checkPassword(await ui.askSecret("new password: ") ?? ""));
  if (await ui.askSecret("the same new password again: ") !== next) {
    throw new ClientError("BAD_PASSWORD", "the two new passwords differ; nothing was changed");
  }
  return next;
}

function differs(current: string, next: string): string {
  if (next === current) {
    throw new ClientError("BAD_PASSWORD", "the new password is the current one; nothing changed");
  }
  return next;
}

/** After logging in: the contact names for Tab, fetched without showing them. */
function learnContacts(client: ConfabClient, names: NameBook): void {
  client.contactNames().then((list) => list.forEach((n) => names.add(n)), () => {});
}

/** The file to share: the path as typed if such a file exists, else with quotes undone. */
async function sharePath(c: Extract<Command, { kind: "share" }>): Promise<string> {
  if (c.raw !== c.path) {
    try {
      await Deno.stat(c.raw);
      return c.raw;
    } catch { /* not a file by that exact name */ }
  }
  return c.path;
}

async function execute(
  client: ConfabClient,
  ui: FrontEnd,
  c: Command,
  names: NameBook,
): Promise<void> {
  switch (c.kind) {
    case "empty":
    case "quit":
      return;
    case "help":
      return ui.show({ type: "help", text: helpFor(placeOf(client)) });
    case "clear":
      return ui.clear();
    case "invalid":
      throw new ClientError("BAD_COMMAND", c.message);
    case "signup":
      await client.checkAccount(c.user, "signup");
      await client.signup(c.user, await password(ui, c.password, "signup"), c.serverPort);
      return learnContacts(client, names);
    case "login":
      await client.checkAccount(c.user, "in");
      await client.login(c.user, await password(ui, c.password, "in"), c.serverPort);
      return learnContacts(client, names);
    case "logout":
      return client.logout();
    case "password":
      return client.changePassword(...await passwordChange(client, ui, c));
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
      await (c.user === undefined ? client.showAll() : client.show(c.user));
      return;
    case "online_contacts":
      await client.onlineContacts();
      return;
    case "add_to_chat":
      return client.addToChat(c.user);
    case "groups":
      return client.listGroups();
    case "history":
      return client.history(c.target ?? client.chatWith ?? client.groupHandle ?? "", c.limit);
    case "search":
      return client.search(c.words);
    case "leave_chat":
      return client.leaveChat();
    case "close_window":
      return client.closeWindow();
    case "share": {
      const path = await sharePath(c);
      // Not awaited: chatting goes on while files travel; progress comes as events.
      client.share(path).catch((error) => showError(ui, error));
      return;
    }
    case "answer_offer":
      return await client.answerOffer(c.offer, c.accept);
    case "offers":
      return client.offers();
    case "say":
      // Not awaited: the next line can be typed while this one waits for its ack.
      client.send(c.text).catch((error) => showError(ui, error));
      return;
  }
}
