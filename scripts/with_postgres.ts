/**
 * Runs a command beside one throwaway PostgreSQL cluster (fsync off, in a temporary directory;
 * scripts/local_postgres.ts) and hands it the cluster's URL in `CONFAB_TEST_POSTGRES`, then
 * throws the cluster away and exits as the command did. `deno task test` runs the parallel tests
 * through it, so that the test files make their databases in one cluster instead of each
 * running initdb and a server of its own (tests/support/store_backends.ts).
 *
 *   deno run -A scripts/with_postgres.ts COMMAND [ARGS...]
 */
import { startLocalPostgres } from "./local_postgres.ts";

const [command, ...args] = Deno.args;
if (!command) {
  console.error("usage: deno run -A scripts/with_postgres.ts COMMAND [ARGS...]");
  Deno.exit(2);
}

let code: number;
{
  // Test files running at once each hold a few servers with a pool of connections apiece.
  await using pg = await startLocalPostgres({ fast: true, maxConnections: 400 });
  const child = new Deno.Command(command, {
    args,
    env: { CONFAB_TEST_POSTGRES: pg.url() },
    stdin: "inherit",
  }).spawn();
  // Ctrl-C reaches the command as well (one process group): wait for it to end, then clean up.
  const onInt = () => {};
  const onTerm = () => child.kill("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  code = (await child.status).code;
  Deno.removeSignalListener("SIGINT", onInt);
  Deno.removeSignalListener("SIGTERM", onTerm);
}
Deno.exit(code);
