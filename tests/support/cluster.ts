/**
 * Several `server.ts` instances over one throwaway PostgreSQL database, with one key file, as a
 * deployment runs them: each its own data dir and port.
 */
import type { TestClient } from "./processes.ts";
import { Deployment } from "./deployment.ts";

/** Instances over one PostgreSQL database, as tests of the cluster itself use them. */
export type TestCluster = Deployment;

/**
 * Starts `count` instances sharing a clean database and one server key. With `hosts`, instance
 * `i` listens on `hosts[i]`, every one on the port the first was given (one port behind a name
 * with several addresses).
 */
export async function startCluster(
  count = 2,
  args: string[] = [],
  hosts?: string[],
): Promise<TestCluster> {
  return await Deployment.create("postgres", { instances: count, args, hosts });
}

/** Signs both up and makes each the other's contact. */
export async function signUpAsContacts(x: TestClient, y: TestClient): Promise<void> {
  await x.signup(x.proc.name);
  await y.signup(y.proc.name);
  for (const [from, to] of [[x, y], [y, x]] as const) {
    await from.send(`contacts add ${to.proc.name}`);
    await from.event("contact_added", { user: to.proc.name });
  }
}

/** Both open a chat with each other, the other being online. */
export async function chatting(x: TestClient, y: TestClient): Promise<void> {
  for (const [from, to] of [[x, y], [y, x]] as const) {
    await from.send(`chat ${to.proc.name}`);
    await from.event("chat_opened", { with: to.proc.name, online: true });
  }
}

/** Leaves the chat window and logs out. */
export async function leaveAndLogOut(client: TestClient): Promise<void> {
  await client.send("/q");
  await client.event("chat_closed");
  await client.send("out");
  await client.event("logged_out");
}
