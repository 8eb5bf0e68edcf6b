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

let sharedPostgres: Promise<LocalPostgres> | undefined;
let databases = 0;

/**
 * The throwaway PostgreSQL cluster of this test process, started at first use (fsync off: it
 * is thrown away) and stopped when the process ends.
 */
export function testPostgres(): Promise<LocalPostgres> {
  sharedPostgres ??= startLocalPostgres({ fast: true });
  return sharedPostgres;
}

/** A fresh database in this process's throwaway cluster; resolves to its URL. */
export async function freshDatabase(): Promise<string> {
  const pg = await testPostgres();
  return await pg.createDatabase(`confab_test_${++databases}`);
}

let reusedDatabase: Promise<string> | undefined;

/**
 * The database every throwaway cluster has from the start (`postgres`), emptied (every table,
 * the schema's version kept, so servers need not migrate it again): cheaper than a fresh
 * database for each of a file's tests, which run one after another. Whoever used it before
 * must have stopped (its servers killed) by the next call.
 */
export async function cleanDatabase(): Promise<string> {
  reusedDatabase ??= testPostgres().then((pg) => pg.url());
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
 * Stops this process's throwaway cluster now (rather than when the process ends); a later
 * `testPostgres()` starts another.
 */
export async function stopTestPostgres(): Promise<void> {
  const pg = sharedPostgres;
  sharedPostgres = undefined;
  reusedDatabase = undefined;
  const running = await pg?.catch(() => undefined); // a cluster that did not start: nothing to stop
  await running?.[Symbol.asyncDispose]();
}

/** PostgreSQL: a fresh database in the test process's throwaway cluster. */
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
