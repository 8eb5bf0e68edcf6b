/**
 * Several `server.ts` instances over one throwaway PostgreSQL database, with one key file, as a
 * deployment runs them: each its own data dir and port.
 */
import { join } from "node:path";
import { startServer, type TestClient, type TestServer } from "./processes.ts";
import { freshDatabase } from "./store_backends.ts";

export interface TestCluster extends AsyncDisposable {
  url: string;
  keyFile: string;
  servers: TestServer[];
  /** The instances' addresses, comma-separated, for `--server`. */
  addresses: string;
  /** Starts instance `i` again (after it was killed), on its port, with its data dir. */
  restart(i: number): Promise<TestServer>;
}

/**
 * Starts `count` instances sharing a fresh database and one server key. With `hosts`, instance
 * `i` listens on `hosts[i]`, every one on the port the first was given (one port behind a name
 * with several addresses).
 */
export async function startCluster(
  count = 2,
  args: string[] = [],
  hosts?: string[],
): Promise<TestCluster> {
  const url = await freshDatabase();
  const keyDir = await Deno.makeTempDir({ prefix: "confab-key-" });
  const keyFile = join(keyDir, "service-key.json");
  const dirs: string[] = [];
  const servers: TestServer[] = [];
  const start = async (i: number, port = 0) => {
    dirs[i] ??= await Deno.makeTempDir({ prefix: `confab-srv${i}-` });
    return await startServer({
      dataDir: dirs[i],
      port,
      host: hosts?.[i],
      args: ["--store", url, "--key", keyFile, ...(hosts ? ["--probe-port", "0"] : []), ...args],
    });
  };
  try {
    for (let i = 0; i < count; i++) {
      servers.push(await start(i, hosts && i > 0 ? servers[0]!.port : 0));
    }
  } catch (error) {
    for (const s of servers) await s[Symbol.asyncDispose]();
    throw error;
  }
  return {
    url,
    keyFile,
    servers,
    get addresses() {
      return servers.map((s) => s.address).join(",");
    },
    async restart(i: number) {
      await servers[i]![Symbol.asyncDispose]();
      servers[i] = await start(i, servers[i]!.port);
      return servers[i]!;
    },
    async [Symbol.asyncDispose]() {
      for (const s of servers) await s[Symbol.asyncDispose]();
      for (const dir of [keyDir, ...dirs]) {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    },
  };
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
