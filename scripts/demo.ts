/**
 * `deno task demo`: a server and three clients (user1, user2, user3) as in the original exam
 * script, with accounts made and contacts set (user1: user2; user2: user1, user3; user3:
 * user2). With tmux: one session, four panes, clients logged in. Without tmux: the server runs
 * here and the three client commands are printed to paste into three terminals.
 *
 *   deno task demo [--dir DIR] [--no-attach]
 */
import { join, resolve } from "node:path";
import { ConfabClient } from "../lib/client/client.ts";
import { delay } from "../lib/util/time.ts";

const ROOT = resolve(import.meta.dirname ?? ".", "..");
const SESSION = "confab-demo";
const PASSWORD = "demo-password";
const CONTACTS: Record<string, string[]> = {
  user1: ["user2"],
  user2: ["user1", "user3"],
  user3: ["user2"],
};

function argValue(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

async function waitForServer(port: number, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch (error) {
      if (Date.now() > until) throw new Error(`the demo server did not start: ${error}`);
      await delay(100);
    }
  }
}

async function hasTmux(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("tmux", {
      args: ["-V"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return success;
  } catch {
    return false;
  }
}

async function tmux(...args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command("tmux", { args, stderr: "piped" }).output();
  if (!success) throw new Error(`tmux ${args[0]}: ${new TextDecoder().decode(stderr).trim()}`);
}

/**
 * Signs the three users up (or logs them in) and sets their contacts, headless: everyone first
 * (a request to a name not yet taken is refused), then each one's adds (the second of a pair
 * accepts the first's request).
 */
async function prepareAccounts(port: number, dir: string): Promise<void> {
  const clients = new Map<string, ConfabClient>();
  try {
    for (const user of Object.keys(CONTACTS)) {
      const client = new ConfabClient(
        { home: join(dir, "homes", user), server: { host: "127.0.0.1", port } },
        () => {},
      );
      clients.set(user, client);
      client.start();
      try {
        await client.signup(user, PASSWORD);
      } catch {
        await client.login(user, PASSWORD); // made by an earlier demo run in the same dir
      }
    }
    for (const [user, contacts] of Object.entries(CONTACTS)) {
      for (const contact of contacts) {
        await clients.get(user)!.addContact(contact).catch((error) => {
          console.error(`demo: ${user} could not add ${contact}: ${error.message}`);
        });
      }
    }
  } finally {
    await Promise.all([...clients.values()].map((client) => client.close()));
  }
}

const dir = resolve(argValue("--dir") ?? join(ROOT, "confab-demo"));
const port = freePort();
const deno = Deno.execPath();
const serverCmd = `${deno} run -A ${join(ROOT, "server.ts")} --port ${port} --data ${
  join(dir, "server")
}`;
const clientCmd = (user: string) =>
  `${deno} run -A ${join(ROOT, "client.ts")} --server 127.0.0.1:${port} --home ${
    join(dir, "homes", user)
  }`;

if (await hasTmux()) {
  await tmux("kill-session", "-t", SESSION).catch(() => {});
  await tmux("new-session", "-d", "-s", SESSION, "-x", "200", "-y", "50", serverCmd);
  await waitForServer(port, 15_000);
  await prepareAccounts(port, dir);
  for (const user of Object.keys(CONTACTS)) {
    await tmux("split-window", "-t", SESSION, clientCmd(user));
    await tmux("select-layout", "-t", SESSION, "tiled");
  }
  // Log each client in as its user (the panes are 1, 2, 3 in creation order).
  await delay(1500);
  for (const [i, user] of Object.keys(CONTACTS).entries()) {
    await tmux("send-keys", "-t", `${SESSION}.${i + 1}`, `in ${user} ${PASSWORD}`, "Enter");
  }
  console.log(`demo running in tmux session "${SESSION}" (server on port ${port}, data in ${dir})`);
  console.log(`users user1, user2, user3 (password ${PASSWORD}); try: chat user2`);
  if (Deno.stdout.isTerminal() && !Deno.args.includes("--no-attach")) {
    await new Deno.Command("tmux", { args: ["attach", "-t", SESSION] }).spawn().status;
  } else {
    console.log(
      `attach with: tmux attach -t ${SESSION}; stop with: tmux kill-session -t ${SESSION}`,
    );
  }
} else {
  console.log("tmux is not installed: the server runs here; start the clients in three terminals:");
  const server = new Deno.Command(deno, {
    args: [
      "run",
      "-A",
      join(ROOT, "server.ts"),
      "--port",
      String(port),
      "--data",
      join(dir, "server"),
    ],
    stdin: "inherit",
  }).spawn();
  await waitForServer(port, 15_000);
  await prepareAccounts(port, dir);
  for (const user of Object.keys(CONTACTS)) {
    console.log(`  ${clientCmd(user)}\n      then type: in ${user} ${PASSWORD}`);
  }
  await server.status;
}
