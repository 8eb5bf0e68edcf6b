/**
 * A server in the test's own process, for the few tests that must reach into it: they wrap one
 * of its `server.store` methods to hold a request between two steps, or to fail as a network
 * database that is away for a moment does, which a server process cannot be made to do cheaply.
 * Everything else goes over real sockets, as with a server process.
 */
import { ConfabServer, type ServerOptions } from "../../lib/server/server.ts";
import { TEST_PASSWORD_COST } from "./accounts.ts";
import { tempDir } from "./temp_dir.ts";

/** A server running in this process, stopped (and its data dir removed) on dispose. */
export interface InProcessServer extends AsyncDisposable {
  server: ConfabServer;
  port: number;
  /** Every line the server logged so far. */
  log: string[];
}

/** Starts a server in this process on a free port, with a fresh data directory. */
export async function inProcessServer(
  options: Partial<ServerOptions> = {},
): Promise<InProcessServer> {
  const dir = await tempDir("confab-in-process-");
  const log: string[] = [];
  try {
    const server = await ConfabServer.start({
      dataDir: dir.path,
      port: 0,
      probePort: -1,
      passwordCost: TEST_PASSWORD_COST,
      maxSignupsPerHour: 0,
      log: (line) => log.push(line),
      ...options,
    });
    return {
      server,
      port: server.addr.port,
      log,
      async [Symbol.asyncDispose]() {
        try {
          await server.close();
        } finally {
          await dir[Symbol.asyncDispose]();
        }
      },
    };
  } catch (error) {
    await dir[Symbol.asyncDispose]();
    throw error;
  }
}

/**
 * An error as a network store throws while its database is away (`isStoreUnavailable` is true
 * of it): what a wrapped store method rejects with to simulate that.
 */
export function storeUnavailable(): Error {
  return Object.assign(new Error("connection closed (simulated: the database is away)"), {
    code: "CONNECTION_CLOSED",
  });
}

/** Waits until `done()` holds, checking every 10 ms; fails after `ms` with `what`. */
export async function until(done: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms / 1000} s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
