/**
 * `server.ts migrate --from DIR --to postgres://…`: copies a SQLite server's whole state into
 * PostgreSQL, so an installation that grew moves to several instances without losing accounts
 * or waiting mail. Idempotent (rows already there are kept, so it can run again after an
 * interruption) and checked: every table's rows are counted on both sides.
 */
import { join } from "../util/paths.ts";
import { DatabaseSync } from "node:sqlite";
import { connectSql, PostgresStore, redactUrl } from "./postgres_store.ts";
import { SQLITE_FILE, SqliteStore } from "./sqlite_store.ts";

/**
 * The tables copied, parents first (foreign keys), with their columns, the identity column
 * whose sequence must follow the copied numbers, and the columns SQLite keeps as 0/1 that are
 * BOOLEAN in PostgreSQL. A table the source has and this list lacks stops the copy: add it
 * here when adding server state.
 */
export const COPIED_TABLES: readonly {
  name: string;
  columns: string[];
  identity?: string;
  booleans?: string[];
}[] = [
  {
    name: "users",
    columns: [
      "name_key",
      "name",
      "salt",
      "hash",
      "kdf",
      "public_key",
      "mail_key",
      "mail_key_sig",
      "created_at",
    ],
  },
  { name: "contacts", columns: ["owner", "contact", "added_at"] },
  {
    name: "registry",
    columns: ["seq", "user", "host", "port", "login_at", "logout_at"],
    identity: "seq",
  },
  { name: "sessions", columns: ["token_hash", "user", "created_at", "client_key", "replaced_at"] },
  {
    name: "mail",
    columns: ["seq", "recipient", "sender", "msg_id", "ts", "body", "stored_at"],
    identity: "seq",
  },
  {
    name: "receipts",
    columns: ["sender", "msg_id", "reader", "read_at", "sig", "rejected"],
    booleans: ["rejected"],
  },
  { name: "mail_read", columns: ["recipient", "sender", "msg_id", "read_at"] },
  { name: "relay_usage", columns: ["pair", "day", "bytes"] },
];

/** SQLite's own bookkeeping tables, never copied. */
const SQLITE_INTERNAL = new Set(["sqlite_sequence", "sqlite_stat1"]);
const BATCH = 1000;

export interface TableCount {
  table: string;
  source: number;
  target: number;
}

/**
 * Copies everything from the SQLite data dir `fromDir` into the database at `toUrl` (schema
 * created or brought up to date first). Resolves to the per-table counts, checked.
 * @throws {Error} with a line a person can act on (missing source, unknown table, a count that
 * does not add up).
 */
export async function migrateToPostgres(
  fromDir: string,
  toUrl: string,
  log: (line: string) => void = () => {},
): Promise<TableCount[]> {
  const file = join(fromDir, SQLITE_FILE);
  try {
    Deno.statSync(file);
  } catch {
    throw new Error(`no Confab server database in ${fromDir} (looked for ${file}); check --from`);
  }
  // Brings the file to this build's schema (as starting the server would), then reads it.
  await new SqliteStore(fromDir).close();
  const source = new DatabaseSync(file, { readOnly: true });
  // The schema in PostgreSQL, made or migrated the same way a server would.
  await (await PostgresStore.open(toUrl)).close();
  const sql = connectSql(toUrl, { maxConnections: 2 });
  try {
    const tables = (source.prepare(
      "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    ).all() as { name: string }[]).map((t) => t.name).filter((n) => !SQLITE_INTERNAL.has(n));
    const known = new Set(COPIED_TABLES.map((t) => t.name));
    const unknown = tables.filter((t) => !known.has(t));
    if (unknown.length > 0) {
      throw new Error(
        `the SQLite database has tables this build cannot copy (${unknown.join(", ")}): ` +
          `use the migrate of the build that made them`,
      );
    }
    const counts: TableCount[] = [];
    for (const table of COPIED_TABLES) {
      if (!tables.includes(table.name)) continue;
      const cols = table.columns.map((c) => `"${c}"`).join(", ");
      const total = (source.prepare(`SELECT count(*) AS n FROM "${table.name}"`).get() as {
        n: number;
      }).n;
      const rows = source.prepare(`SELECT ${cols} FROM "${table.name}"`).iterate();
      // deno-lint-ignore no-explicit-any
      let batch: Record<string, any>[] = [];
      let copied = 0;
      const flush = async () => {
        if (batch.length === 0) return;
        await sql`INSERT INTO ${sql(table.name)} ${
          sql(batch, table.columns)
        } ON CONFLICT DO NOTHING`;
        copied += batch.length;
        batch = [];
      };
      for (const row of rows) {
        const copy: Record<string, unknown> = { ...row };
        for (const c of table.booleans ?? []) copy[c] = Boolean(copy[c]);
        batch.push(copy);
        if (batch.length >= BATCH) await flush();
      }
      await flush();
      if (table.identity) {
        // New rows numbered after the copied ones.
        await sql.unsafe(
          `SELECT setval(pg_get_serial_sequence('${table.name}', '${table.identity}'),
                  greatest((SELECT max("${table.identity}") FROM "${table.name}"), 1))`,
        );
      }
      const [target] = await sql<{ n: number }[]>`SELECT count(*) AS n FROM ${sql(table.name)}`;
      counts.push({ table: table.name, source: total, target: target!.n });
      log(`${table.name}: ${total} in SQLite, ${target!.n} in PostgreSQL (${copied} read)`);
    }
    const short = counts.filter((c) => c.target < c.source);
    if (short.length > 0) {
      throw new Error(
        `the copy is incomplete: ${
          short.map((c) => `${c.table} ${c.target} of ${c.source}`).join(", ")
        } (run migrate again; rows already copied are kept)`,
      );
    }
    log(`copied ${fromDir} into ${redactUrl(toUrl)}; start the servers with --store`);
    return counts;
  } finally {
    source.close();
    await sql.end({ timeout: 5 });
  }
}
