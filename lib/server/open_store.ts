/**
 * Picks and opens the server's store: the SQLite file in the data directory (the default).
 */
import { SqliteStore } from "./sqlite_store.ts";
import type { ServerStore } from "./store.ts";

export interface StoreChoice {
  /** The data directory (server key; the SQLite file when no other store is named). */
  dataDir: string;
}

/** Opens the store chosen by `choice`, migrated to this build's schema. */
export function openStore(choice: StoreChoice): Promise<ServerStore> {
  try {
    return Promise.resolve(new SqliteStore(choice.dataDir));
  } catch (error) {
    return Promise.reject(error);
  }
}
