/**
 * Picks and opens the server's store: PostgreSQL when a `postgres://` URL is given (`--store` or
 * `CONFAB_STORE`), else the SQLite file in the data directory (the default).
 */
import { SqliteStore } from "./sqlite_store.ts";
import type { ServerStore } from "./store.ts";

export interface StoreChoice {
  /** The data directory (server key; the SQLite file when no database URL is given). */
  dataDir: string;
  /** A `postgres://user:password@host:port/database` URL: share that database. */
  url?: string;
  /** Connections to that database at most (the pool; default 10). */
  connections?: number;
}

/**
 * Opens the store chosen by `choice`, migrated to this build's schema.
 * @throws {StoreUnavailableError} when the database cannot be reached or used.
 */
export async function openStore(choice: StoreChoice): Promise<ServerStore> {
  if (choice.url) {
    const { PostgresStore } = await import("./postgres_store.ts");
    return await PostgresStore.open(choice.url, { maxConnections: choice.connections });
  }
  return new SqliteStore(choice.dataDir);
}
