/**
 * The store backends the conformance tests run against. `storeTest()` registers one test per
 * backend, each with a fresh, empty database, so a behaviour implemented in one backend and
 * missing in another fails by name.
 */
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { connectSql, PostgresStore } from "../../lib/server/postgres_store.ts";
import { SQLITE_FILE, SqliteStore } from "../../lib/server/sqlite_store.ts";
import { type LocalPostgres, startLocalPostgres } from "../../scripts/local_postgres.ts";
import type { ServerStore } from "../../lib/server/store.ts";
import { tempDir } from "./temp_dir.ts";

/** A fresh database of one backend; `open()` opens it (again), keeping what is in it. */
export interface StoreFixture extends AsyncDisposable {
  backend: string;
  /** Opens the store; `leaseMs` applies to a shared store (PostgreSQL). */
  open(options?: { leaseMs?: number }): Promise<ServerStore>;
}

export interface StoreBackend {
  name: string;
  /** Makes a fresh, empty database for one test. */
  fresh(): Promise<StoreFixture>;
}

/** SQLite in a temporary data directory, removed afterwards. */
export const sqliteBackend: StoreBackend = {
  name: "sqlite",
  async fresh() {
    const dir = await tempDir("confab-store-test-");
    return {
      backend: "sqlite",
      open: () => Promise.resolve(new SqliteStore(dir.path)),
      [Symbol.asyncDispose]: () => dir[Symbol.asyncDispose](),
    };
  },
};

/**
 * The environment variable through which `scripts/with_postgres.ts` hands a whole test run one
 * throwaway cluster (the URL of its `postgres` database), so that test files need not each make
 * and start their own (seconds of initdb apiece).
 */
export const SHARED_POSTGRES_ENV = "CONFAB_TEST_POSTGRES";

let ownPostgres: Promise<LocalPostgres> | undefined;
let ownOnly = false;
let databases = 0;
/** Names this module's databases apart from those of other test files in a shared cluster. */
const RUN_ID = crypto.randomUUID().replaceAll("-", "").slice(0, 12);

/**
 * Makes this file's databases live in a cluster of its own even when the run shares one: for
 * files whose tests stop and start their cluster. Call it at the top of the file.
 */
export function useOwnPostgres(): void {
  ownOnly = true;
}

/**
 * This test process's own throwaway cluster, started at first use (fsync off: it is thrown
 * away) and stopped when the process ends. Tests that stop and start it need
 * {@link useOwnPostgres} too, so that their databases are in it.
 */
export function testPostgres(): Promise<LocalPostgres> {
  ownPostgres ??= startLocalPostgres({ fast: true });
  return ownPostgres;
}

/** Where this process makes its databases: in the run's shared cluster, or in its own. */
export interface DatabaseHost {
  createDatabase(name: string): Promise<string>;
}

/**
 * The cluster this process makes its databases in: the run's shared one when there is one and
 * the file did not ask for its own, else its own (started now if need be).
 */
export function postgresHost(): Promise<DatabaseHost> {
  const shared = Deno.env.get(SHARED_POSTGRES_ENV);
  if (!shared || ownOnly) return testPostgres();
  return Promise.resolve({
    async createDatabase(name: string) {
      const sql = connectSql(shared, { maxConnections: 1 });
      try {
        await sql.unsafe(`CREATE DATABASE "${name}"`);
      } finally {
        await sql.end({ timeout: 5 });
      }
      const url = new URL(shared);
      url.pathname = `/${name}`;
      return url.href;
    },
  });
}

/**
 * A fresh database; resolves to its URL. Named apart from every other test file's, as they may
 * share one cluster.
 */
export async function freshDatabase(): Promise<string> {
  const host = await postgresHost();
  return await host.createDatabase(`confab_test_${RUN_ID}_${++databases}`);
}

let reusedDatabase: Promise<string> | undefined;

/**
 * One database of this process, made at first use and emptied at each call (every table, the
 * schema's version kept, so servers need not migrate it again): cheaper than a fresh database
 * for each of a file's tests, which run one after another. Whoever used it before must have
 * stopped (its servers killed) by the next call.
 */
export async function cleanDatabase(): Promise<string> {
  reusedDatabase ??= freshDatabase();
  const url = await reusedDatabase;
  const sql = connectSql(url, { maxConnections: 1 });
  try {
    const tables = await sql<{ name: string }[]>`
      SELECT tablename AS name FROM pg_tables
      WHERE schemaname = 'public' AND tablename <> 'confab_schema'`;
    if (tables.length > 0) {
      const list = tables.map((t) => `"${t.name}"`).join(", ");
      await sql.unsafe(`TRUNCATE ${list} RESTART IDENTITY CASCADE`);
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
  return url;
}

/**
 * Stops this process's own cluster now (rather than when the process ends); a later
 * `testPostgres()` starts another. A shared cluster is left alone: the run throws it away.
 */
export async function stopTestPostgres(): Promise<void> {
  const pg = ownPostgres;
  ownPostgres = undefined;
  reusedDatabase = undefined;
  const running = await pg?.catch(() => undefined); // a cluster that did not start: nothing to stop
  await running?.[Symbol.asyncDispose]();
}

/** PostgreSQL: a fresh database in the test run's or the test process's throwaway cluster. */
export const postgresBackend: StoreBackend = {
  name: "postgres",
  async fresh() {
    const url = await freshDatabase();
    return {
      backend: "postgres",
      open: (options = {}) => PostgresStore.open(url, { maxConnections: 4, ...options }),
      [Symbol.asyncDispose]: () => Promise.resolve(),
    };
  },
};

export const STORE_BACKENDS: readonly StoreBackend[] = [sqliteBackend, postgresBackend];

/**
 * Registers `fn` as one test per backend: `"<backend>: <name>"`. The fixture is disposed after
 * the test, whatever happens; stores the test opened must be closed by the test.
 */
export function storeTest(name: string, fn: (fixture: StoreFixture) => Promise<void>): void {
  for (const backend of STORE_BACKENDS) {
    Deno.test(`${backend.name}: ${name}`, async () => {
      await using fixture = await backend.fresh();
      await fn(fixture);
    });
  }
}

/**
 * Takes out of a current SQLite database what migrations 5 and later added, so a test can turn
 * it into what an older build left behind (then set `user_version` to that build's).
 */
export function undoMigrationsFrom5(db: DatabaseSync): void {
  db.exec("DROP INDEX sessions_by_user");
  db.exec("ALTER TABLE sessions DROP COLUMN client_key");
  db.exec("ALTER TABLE sessions DROP COLUMN replaced_at");
  db.exec("ALTER TABLE users DROP COLUMN kdf");
  db.exec("ALTER TABLE receipts DROP COLUMN rejected"); // migration 15
  db.exec("ALTER TABLE receipts DROP COLUMN sig"); // migration 8
  db.exec("DROP TABLE relay_usage"); // the relay usage
}

/**
 * Turns the SQLite file in `dataDir` into what a build before migration 3 left behind: no mail
 * key columns, `user_version` 2.
 */
export function makeVersion2File(dataDir: string): void {
  const db = new DatabaseSync(join(dataDir, SQLITE_FILE));
  try {
    undoMigrationsFrom5(db);
    db.exec("ALTER TABLE users DROP COLUMN mail_key");
    db.exec("ALTER TABLE users DROP COLUMN mail_key_sig");
    db.exec("PRAGMA user_version = 2");
  } finally {
    db.close();
  }
}
