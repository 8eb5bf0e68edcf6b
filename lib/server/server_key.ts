/**
 * The server's long-term static X25519 key for the Noise handshake, made at first start in
 * the data dir (owner-only) and loaded on every later start. Clients pin its public half.
 */
import { dirname, join } from "../util/paths.ts";
import {
  exportPrivateKey,
  generateKeyPair,
  type KeyPair,
  keyPairFromPrivateKey,
} from "../crypto/noise.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";

export const SERVER_KEY_FILE = "server-key.json";

/**
 * Loads the server key from `path` (default `<dataDir>/server-key.json`), creating it on first
 * use. Instances of one deployment are given the same file: clients pin the service once.
 * Creation is exclusive, so instances starting together end with one key.
 */
export async function loadOrCreateServerKey(dataDir: string, path?: string): Promise<KeyPair> {
  path ??= join(dataDir, SERVER_KEY_FILE);
  const existing = await readKey(path);
  if (existing) return existing;
  const pair = await generateKeyPair();
  const body = JSON.stringify({
    algorithm: "X25519",
    publicKey: toBase64Url(pair.publicKey),
    privateKey: toBase64Url(await exportPrivateKey(pair)),
  });
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  // Sync: the async write loads web streams, ~3 ms of CPU for a few bytes.
  Deno.writeTextFileSync(tmp, body + "\n", { mode: 0o600 });
  try {
    await Deno.link(tmp, path); // fails if another instance made it first: use theirs
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
  return (await readKey(path))!;
}

async function readKey(path: string): Promise<KeyPair | undefined> {
  try {
    const data = JSON.parse(await Deno.readTextFile(path)) as { privateKey?: unknown };
    if (typeof data.privateKey !== "string") throw new SyntaxError("no privateKey field");
    return await keyPairFromPrivateKey(fromBase64Url(data.privateKey));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new Error(
      `cannot read the server key ${path}: ${(error as Error).message} ` +
        `(restore it from a backup; deleting it makes every client refuse this server)`,
      { cause: error },
    );
  }
}
