/**
 * Fixtures for tests with several users: a crowd of clients who all have each other as
 * contacts, and waits for group membership and for the full mesh of direct links.
 */
import { type Event, TestClient, type TestServer } from "./processes.ts";

/**
 * Users who all have each other as contacts, logged in: on one server, or each on the instance
 * a deployment puts them on.
 */
export async function crowd(
  where: TestServer | { at(user: string): TestServer },
  names: string[],
  options: Record<string, Parameters<typeof TestClient.start>[2]> = {},
): Promise<TestClient[]> {
  const clients: TestClient[] = [];
  try {
    for (const name of names) {
      const server = "at" in where ? where.at(name) : where;
      const c = await TestClient.start(name, server, options[name]);
      clients.push(c);
      await enter(c, name);
    }
    for (const c of clients) {
      for (const other of names) {
        if (other === c.proc.name) continue;
        await c.send(`contacts add ${other}`);
        await c.event("contact_added", { user: other });
      }
    }
  } catch (error) {
    await disposeAll(clients);
    throw error;
  }
  return clients;
}

/**
 * Signs `name` up (or logs in, with `first` "in"), again if the server's answer did not come in
 * time (on a loaded machine the password hash alone can take seconds, and a server just
 * restarted may not answer yet); an account made by a try whose answer was lost is logged in.
 */
export async function enter(
  c: TestClient,
  name: string,
  first: "signup" | "in" = "signup",
  password = "secret-pw",
): Promise<void> {
  let command = first;
  for (let attempt = 0; attempt < 5; attempt++) {
    const from = c.proc.out.lines.length;
    await c.send(`${command} ${name} ${password}`);
    const line = await c.proc.out.findFrom(
      from,
      (l) => l.includes('"type":"logged_in"') || l.includes('"type":"error"'),
      `the outcome of ${command} ${name}`,
      60_000,
    );
    const e = JSON.parse(line) as Event;
    if (e.type === "logged_in") return;
    if (e.code === "USER_EXISTS") command = "in";
    else if (e.code !== "SERVER_UNREACHABLE") throw new Error(`${name}: ${e.code}: ${e.message}`);
  }
  throw new Error(`${name} could not ${first === "in" ? "log in" : "sign up"}`);
}

export async function disposeAll(clients: TestClient[]): Promise<void> {
  for (const c of clients) await c[Symbol.asyncDispose]();
}

/** Waits until every client has a direct link to every other (the full mesh). */
export async function meshed(clients: TestClient[]): Promise<void> {
  for (const c of clients) {
    for (const other of clients) {
      if (other === c) continue;
      await c.proc.out.find(
        (l) => l.includes(`"type":"link_up","user":"${other.proc.name}"`),
        `link to ${other.proc.name}`,
      );
    }
  }
}

/** Waits until the latest membership `client` saw for `group` is exactly `members`. */
export async function membersAre(
  client: TestClient,
  group: string,
  members: string[],
): Promise<void> {
  const want = JSON.stringify([...members].sort());
  const isMembership = (e: Event) =>
    ["group_opened", "group_invited", "group_members", "group_rejoined"].includes(e.type) &&
    e.group === group;
  const current = () => {
    const last = client.events().filter(isMembership).at(-1);
    return last && JSON.stringify([...(last.members as string[])].sort());
  };
  const deadline = Date.now() + 15_000;
  while (current() !== want) {
    await client.proc.out.findFrom(
      client.proc.out.lines.length,
      (l) => l.includes(`"group":"${group}"`) && l.includes('"members"'),
      `members ${want} in ${group} (now: ${current()})`,
      Math.max(1, deadline - Date.now()),
    );
  }
}

/**
 * The first client opens a chat with the second and adds the rest: a group of all of them,
 * every member seeing everyone, and every direct link up. Returns the group id.
 */
export async function groupOf(clients: TestClient[]): Promise<string> {
  const [first, second, ...rest] = clients;
  await first!.send(`chat ${second!.proc.name}`);
  await first!.event("chat_opened", { with: second!.proc.name, online: true });
  for (const c of rest) await first!.send(`/a ${c.proc.name}`);
  const group = String((await first!.event("group_opened")).group);
  const names = clients.map((c) => c.proc.name);
  for (const c of clients) await membersAre(c, group, names);
  await meshed(clients);
  return group;
}
