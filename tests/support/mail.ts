/**
 * Fixtures of the offline-mail scenarios (tests/e2e_mail_test.ts, tests/e2e_mail_crash_test.ts):
 * users made with their contacts and homes, a client in a chat, mail sent and waited for.
 */
import type { Deployment } from "./deployment.ts";
import { type Event, TestClient } from "./processes.ts";

export type Homes = Record<string, string>;

/**
 * Signs users up, each with the given contacts, then quits them all. Returns their homes. One
 * client a user, kept running from its signup to its contacts (added once every account
 * exists), so that a scenario's setup starts each user's program once.
 */
export async function makeUsers(d: Deployment, contacts: Record<string, string[]>): Promise<Homes> {
  const homes: Homes = {};
  const clients: TestClient[] = [];
  try {
    for (const user of Object.keys(contacts)) {
      homes[user] = await Deno.makeTempDir({ prefix: `confab-${user}-` });
      const c = await TestClient.start(user, d.at(user), { home: homes[user] });
      clients.push(c);
      await c.signup(user);
    }
    // Contacts in a second pass: every account exists by now.
    for (const c of clients) {
      for (const contact of contacts[c.proc.name]!) {
        await c.send(`contacts add ${contact}`);
        await c.event("contact_added", { user: contact });
      }
    }
  } finally {
    for (const c of clients) await c[Symbol.asyncDispose]();
  }
  return homes;
}

/** Removes the users' homes. */
export async function removeHomes(homes: Homes): Promise<void> {
  for (const home of Object.values(homes)) await Deno.remove(home, { recursive: true });
}

/** Sends `texts` in a chat and waits for each to be stored on the server (`*`). */
export async function sendStored(client: TestClient, texts: string[]): Promise<Event[]> {
  const sent: Event[] = [];
  for (const text of texts) {
    await client.send(text);
    const s = await client.event("sent", { text });
    await client.event("stored", { id: s.id });
    sent.push(s);
  }
  return sent;
}

/** Signs users up (see makeUsers), then the server stops; for tests that start it again. */
export async function usersOnStoppedServer(
  d: Deployment,
  contacts: Record<string, string[]>,
): Promise<Homes> {
  const homes = await makeUsers(d, contacts);
  await d.killAll();
  return homes;
}

/** `user`'s client, from its home on its instance, logged in and in a chat with `peer`. */
export async function inChat(
  d: Deployment,
  homes: Homes,
  user: string,
  peer: string,
  match: { online?: boolean } = {},
): Promise<TestClient> {
  const client = await TestClient.start(user, d.at(user), { home: homes[user] });
  try {
    await client.login(user);
    await client.send(`chat ${peer}`);
    await client.event("chat_opened", { with: peer, ...match });
  } catch (error) {
    await client[Symbol.asyncDispose]();
    throw error;
  }
  return client;
}

/** `history <chat>` as `text` (and `mark`) strings, oldest first. */
export async function historyOf(
  client: TestClient,
  chat: string,
  marks = false,
): Promise<string[]> {
  await client.send(`history ${chat}`);
  const entries = (await client.event("history", { chat })).entries as Event[];
  return entries.map((h) => `${h.text}${marks ? h.mark : ""}`);
}

/** The answer to `hanging`. */
export async function hangingOf(client: TestClient): Promise<Event[]> {
  await client.send("hanging");
  return (await client.event("hanging")).entries as Event[];
}
