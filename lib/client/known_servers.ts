/**
 * Servers this home has talked to, with the static key each presented the first time (trust
 * on first use, like SSH's known_hosts). A server that later presents another key is refused
 * until the user accepts the new key deliberately.
 */
import { join } from "../util/paths.ts";

export interface PinnedServer {
  key: string;
  firstSeen: number;
}

export class KnownServers {
  readonly path: string;

  constructor(home: string) {
    this.path = join(home, "known_servers.json");
  }

  async #read(): Promise<Record<string, PinnedServer>> {
    try {
      const data = JSON.parse(await Deno.readTextFile(this.path));
      return typeof data === "object" && data !== null ? data : {};
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return {};
      throw new Error(`cannot read ${this.path}: ${(error as Error).message}`, { cause: error });
    }
  }

  async get(address: string): Promise<PinnedServer | undefined> {
    return (await this.#read())[address];
  }

  /** Pins (or re-pins) `address` to `key`; written atomically, owner-only. */
  async pin(address: string, key: string, now = Date.now()): Promise<void> {
    const all = await this.#read();
    all[address] = { key, firstSeen: now };
    await Deno.mkdir(join(this.path, ".."), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${crypto.randomUUID()}.tmp`;
    // Sync: the async write loads web streams, ~3 ms of CPU for a few bytes.
    Deno.writeTextFileSync(tmp, JSON.stringify(all, null, 2) + "\n", { mode: 0o600 });
    await Deno.rename(tmp, this.path);
  }
}
