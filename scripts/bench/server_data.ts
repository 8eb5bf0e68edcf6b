/**
 * Prepares a server data dir with many users who are already logged in once: accounts,
 * session tokens and contacts go straight into the SQLite file through the server's own store
 * (`lib/server/sqlite_store.ts`), before the server starts. Password logins cost ~80 ms of scrypt
 * each; a session token is what a client re-attaches with (`resume`), and that is the path
 * the load generators then take over the real protocol.
 */
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { DEFAULT_PASSWORD_COST, hashPassword, kdfOf } from "../../lib/server/accounts.ts";
import { SqliteStore } from "../../lib/server/sqlite_store.ts";
import { benchUser, contactOf } from "./loadgen_protocol.ts";

export interface PreparedData {
  dataDir: string;
  /** One session token per line; line `i` belongs to `benchUser(i)`. */
  tokensFile: string;
  users: number;
}

/**
 * The scrypt parameters the bench's servers give new hashes: `$CONFAB_PASSWORD_COST` (the test
 * suite's cheap one) when set, as server.ts takes it, else the default.
 */
export function serverKdf(): string {
  const cost = Deno.env.get("CONFAB_PASSWORD_COST");
  return kdfOf(cost ? Number(cost) : DEFAULT_PASSWORD_COST);
}

/**
 * Creates `users` accounts (one shared salt/hash, made with the servers' parameters: only the
 * login item logs in with the password), a session token for each, and one contact each (`i`
 * has `i + 1`), so lookups return addresses and logins send presence, as between real contacts.
 */
export async function prepareServerData(dir: string, users: number): Promise<PreparedData> {
  const dataDir = join(dir, "server");
  const password = await hashPassword("bench-password", serverKdf());
  const tokens: string[] = [];
  {
    await using store = new SqliteStore(dataDir);
    for (let i = 0; i < users; i++) {
      // Keys of the right shape; nobody in the bench checks the signature or seals mail.
      const created = await store.createUser({
        name: benchUser(i),
        ...password,
        publicKey: randomBytes(32).toString("base64url"),
        mailKey: randomBytes(32).toString("base64url"),
        mailKeySig: randomBytes(64).toString("base64url"),
      });
      if (!created) throw new Error(`${benchUser(i)} exists already in ${dataDir}`);
    }
    for (let i = 0; i < users; i++) {
      const token = randomBytes(32).toString("base64url");
      tokens.push(token);
      await store.saveSession(
        new Uint8Array(createHash("sha256").update(token).digest()),
        benchUser(i),
      );
      if (users > 1) {
        // Mutual contacts: presence and addresses go only between those.
        await store.addContact(benchUser(i), benchUser(contactOf(i, users)));
        await store.addContact(benchUser(contactOf(i, users)), benchUser(i));
      }
    }
  }
  const tokensFile = join(dir, "tokens.txt");
  await Deno.writeTextFile(tokensFile, tokens.join("\n"));
  return { dataDir, tokensFile, users };
}
