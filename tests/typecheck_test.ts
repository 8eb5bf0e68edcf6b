/**
 * The type check of everything (`deno check server.ts client.ts scripts/ tests/`), as a test of
 * the parallel run: the test runs themselves skip type checking (`--no-check`), and `deno check`
 * keeps one core busy for a quarter of a minute, so in the parallel run it overlaps the
 * end-to-end tests' waits instead of holding up everything before them. A type error fails
 * `deno task test` all the same, with the checker's output.
 */
import assert from "node:assert/strict";
import { runDeno } from "./support/processes.ts";

/** About 20 s idle; a loaded machine takes several times that. */
const DEADLINE_MS = 300_000;

Deno.test("deno check passes on server.ts, client.ts, scripts/ and tests/", async () => {
  const { code, output } = await runDeno(
    ["check", "server.ts", "client.ts", "scripts/", "tests/"],
    DEADLINE_MS,
  );
  assert.equal(code, 0, `deno check exited ${code}:\n${output}`);
});
