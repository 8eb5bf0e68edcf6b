/**
 * The client's and the server's permissions are written once (scripts/permissions.ts); deno.json
 * cannot import them, so this checks that its `client` and `server` tasks grant exactly those.
 */
import assert from "node:assert/strict";
import { CLIENT_PERMISSIONS, SERVER_PERMISSIONS, taskCommand } from "../../scripts/permissions.ts";
import { clientArgs } from "../../scripts/bench/support.ts";

const config = JSON.parse(
  await Deno.readTextFile(new URL("../../deno.json", import.meta.url)),
) as { tasks: Record<string, string> };

Deno.test("deno.json's client task grants exactly CLIENT_PERMISSIONS", () => {
  assert.equal(config.tasks.client, taskCommand("client.ts", CLIENT_PERMISSIONS));
});

Deno.test("deno.json's server task grants exactly SERVER_PERMISSIONS", () => {
  assert.equal(config.tasks.server, taskCommand("server.ts", SERVER_PERMISSIONS));
});

Deno.test("the bench and the soak run client.ts with CLIENT_PERMISSIONS", () => {
  const args = clientArgs(4242, "/tmp/home");
  assert.deepEqual(args.slice(0, args.indexOf("client.ts")), ["run", ...CLIENT_PERMISSIONS]);
});
