/**
 * End to end with real processes: a signup is reported as it ended. A server slow to hash the
 * password (a busy machine, or a line of signups ahead) is waited for, and a signup whose
 * answer was lost on the way is finished by typing it again: the client kept its keys, and the
 * server knows the same signup when it sees it.
 */
import assert from "node:assert/strict";
import { startServer, TestClient } from "./support/processes.ts";
import { join } from "node:path";
import { delay } from "../lib/util/time.ts";
import { RecordingProxy } from "./support/proxy.ts";

/** Signs `user` up and out again: the control connection is up and idle afterwards. */
async function warmUp(client: TestClient, user: string): Promise<void> {
  await client.signup(user);
  await client.send("out");
  await client.event("logged_out", { user });
}

Deno.test("a signup the server answers after 12 s is reported done and logged in, not as a failure", async () => {
  await using server = await startServer();
  await using client = await TestClient.start("client", server);
  await warmUp(client, "wendy");
  // The server stops for longer than a request's usual 10 s before it reads the signup: a
  // busy machine hashing other passwords looks like this from the client.
  server.proc.kill("SIGSTOP");
  try {
    await client.send("signup alice secret-pw");
    await client.event("info", { text: `creating account alice on ${server.address}` });
    await delay(12_000);
  } finally {
    server.proc.kill("SIGCONT");
  }
  const outcome = await client.proc.out.waitFor(
    (l) => l.includes('"type":"logged_in"') || l.includes('"type":"error"'),
    "the outcome of the signup",
    60_000,
  );
  assert.match(outcome, /"type":"logged_in","user":"alice"/);
});

Deno.test("a signup whose answer was lost is finished by typing it again, and its keys log in later", async () => {
  await using server = await startServer();
  await using proxy = new RecordingProxy(server.port);
  await using client = await TestClient.start("client", { port: proxy.port });
  await warmUp(client, "wendy");

  proxy.holdDown = true;
  await client.send("signup alice secret-pw");
  await server.proc.out.find((l) => l.includes("signup: alice "), "the account made");
  proxy.cutAll();
  const lost = await client.event("error", { code: "SERVER_UNREACHABLE" });
  assert.match(String(lost.message), /may have been made; type the same signup again/);
  proxy.holdDown = false;

  // A wrong password does not finish it, and does not lose the keys either.
  await client.send("signup alice wrong-password");
  await client.event("error", { code: "USER_EXISTS" });
  await client.signup("alice");
  await client.send("out");
  await client.event("logged_out", { user: "alice" });
  await client.login("alice");
});

Deno.test("a client killed between moving its two keys in place after a signup logs in with both", async () => {
  await using server = await startServer();
  await using client = await TestClient.start("client", server);
  await warmUp(client, "wendy");
  // A signup moves the keys it made in signup-pending/ into the user's folder once the server
  // made the account, one file after the other: a kill -9 between the two leaves one of them
  // behind, whichever the client moves last.
  const cases: [user: string, left: string][] = [["alice", "mail-key.json"], [
    "bob",
    "identity.json",
  ]];
  for (const [user, left] of cases) {
    await warmUp(client, user);
    const dir = join(client.home, user);
    await Deno.mkdir(join(dir, "signup-pending"), { mode: 0o700 });
    await Deno.rename(join(dir, left), join(dir, "signup-pending", left));
    await client.login(user);
    // The mail key is there: mail sealed to it can be opened.
    await client.send("show wendy");
    await client.event("shown", { from: "wendy", count: 0 });
    assert.ok((await Deno.stat(join(dir, left))).isFile);
    await client.send("out");
    await client.event("logged_out", { user });
  }
});
