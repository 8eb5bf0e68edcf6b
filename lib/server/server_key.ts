/**
 * The server's long-term static X25519 key for the Noise handshake, made at first start in
 * the data dir (owner-only) and loaded on every later start. Clients pin its public half.
 */
import { join } from "node:path";
import {
  exportPrivateKey,
  generateKeyPair,
  type KeyPair,
  keyPairFromPrivateKey,
} from "../crypto/noise.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";

export const SERVER_KEY_FILE = "server-key.json";

/** Loads the server key from `dataDir`, creating it on first use. */
export async function loadOrCreateServerKey(dataDir: string): Promise<KeyPair> {
  const path = join(dataDir, SERVER_KEY_FILE);
  try {
    const data = JSON.parse(await Deno.readTextFile(path)) as { privateKey?: unknown };
    if (typeof data.privateKey !== "string") throw new SyntaxError("no privateKey field");
    return await keyPairFromPrivateKey(fromBase64Url(data.privateKey));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new Error(
        `cannot read the server key ${path}: ${(error as Error).message} ` +
          `(restore it from a backup; deleting it makes every client refuse this server)`,
        { cause: error },
      );
    }
  }
  const pair = await generateKeyPair();
  const body = JSON.stringify({
    algorithm: "X25519",
    publicKey: toBase64Url(pair.publicKey),
    privateKey: toBase64Url(await exportPrivateKey(pair)),
  });
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, body + "\n", { mode: 0o600 });
  await Deno.rename(tmp, path);
  return pair;
}
