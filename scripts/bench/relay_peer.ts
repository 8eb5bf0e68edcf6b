/**
 * A bench peer for the `relay` item: one `ConfabClient` in this process (so round trips are
 * timed here, to the microsecond), driven by JSON commands on stdin, one per line, each
 * answered by one JSON line on stdout. It runs wherever it is started — inside a namespace of
 * the NAT lab (`ip netns exec`), or on loopback.
 *
 *   deno run -A scripts/bench/relay_peer.ts --server HOST:PORT --home DIR [--punch off]
 *     [--announce-port N]
 *
 * Commands: `{"do":"signup","user":u}`, `{"do":"add","user":u}`, `{"do":"open","user":u}`
 * (answers the path), `{"do":"path","user":u,"path":p,"ms":n}` (waits until the link has that
 * path), `{"do":"rtt","n":n}` (n round trips in the open chat; answers them in ms),
 * `{"do":"file","bytes":n}` (shares a file of n bytes in the open chat; answers the seconds
 * until the other side confirmed it), `{"do":"quit"}`.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ConfabClient } from "../../lib/client/client.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { readLines } from "../../lib/cli/lines.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    server: { type: "string" },
    home: { type: "string" },
    punch: { type: "string", default: "on" },
    "announce-port": { type: "string" },
  },
}).values;
const [host, port] = String(args.server).split(":") as [string, string];
const PASSWORD = "bench-password";

const events: ClientEvent[] = [];
let wake: (() => void) | undefined;
const client = new ConfabClient({
  home: String(args.home),
  server: { host, port: Number(port) },
  punch: args.punch !== "off",
  historyLines: 0,
  // A bench peer: files from its contacts are taken without asking.
  autoAccept: "contacts",
  ...(args["announce-port"] ? { announcePort: Number(args["announce-port"]) } : {}),
}, (event) => {
  events.push(event);
  if (events.length > 10_000) events.splice(0, 5_000);
  wake?.();
});
client.start();

/** Waits for an event passing `test` (seen from `from` on), or throws after `ms`. */
async function until(test: (e: ClientEvent) => boolean, ms: number, what: string) {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = events.find(test);
    if (found) return found;
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no ${what} within ${ms} ms`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, left);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

function reply(value: unknown): void {
  console.log(JSON.stringify(value));
}

async function handle(command: Record<string, unknown>): Promise<unknown> {
  switch (command.do) {
    case "signup":
      await client.signup(String(command.user), PASSWORD);
      return { ok: true };
    case "add":
      await client.addContact(String(command.user));
      return { ok: true };
    case "open": {
      events.length = 0;
      await client.openChat(String(command.user));
      const opened = await until((e) => e.type === "chat_opened", 30_000, "chat_opened");
      return { path: opened.type === "chat_opened" ? opened.path ?? "offline" : "?" };
    }
    case "path": {
      const started = performance.now();
      await until(
        (e) => e.type === "link_path" && e.user === command.user && e.path === command.path,
        Number(command.ms ?? 30_000),
        `link_path ${command.path}`,
      );
      return { ms: performance.now() - started };
    }
    case "rtt": {
      const times: number[] = [];
      for (let i = 0; i < Number(command.n); i++) {
        const text = `message ${i} `.padEnd(100, "abcdefghijklmnopqrstuvwxyz");
        const t0 = performance.now();
        const outcome = await client.send(text);
        if (outcome !== "delivered") throw new Error(`message ${i} was ${outcome}`);
        times.push(performance.now() - t0);
      }
      return { times };
    }
    case "file": {
      const path = join(String(args.home), `bench-${Date.now()}.bin`);
      const bytes = Number(command.bytes);
      {
        using file = await Deno.open(path, { write: true, create: true, truncate: true });
        const block = new Uint8Array(1024 * 1024);
        // Random, so nothing on the way could compress it (64 KiB per call at most).
        for (let i = 0; i < block.length; i += 65536) {
          crypto.getRandomValues(block.subarray(i, i + 65536));
        }
        for (let at = 0; at < bytes; at += block.length) {
          const chunk = block.subarray(0, Math.min(block.length, bytes - at));
          let offset = 0;
          while (offset < chunk.length) offset += await file.write(chunk.subarray(offset));
        }
      }
      events.length = 0;
      const t0 = performance.now();
      await client.share(path);
      const done = events.find((e) => e.type === "transfer_done");
      const failed = events.find((e) => e.type === "transfer_failed");
      if (!done) throw new Error(`the file did not arrive: ${JSON.stringify(failed)}`);
      await Deno.remove(path);
      return { seconds: (performance.now() - t0) / 1000 };
    }
    case "quit":
      await client.close();
      reply({ ok: true });
      Deno.exit(0);
  }
  throw new Error(`unknown command ${JSON.stringify(command)}`);
}

reply({ ready: true, peerPort: client.peerPort });
for await (const line of readLines(Deno.stdin.readable)) {
  if (line.trim() === "") continue;
  try {
    reply(await handle(JSON.parse(line)));
  } catch (error) {
    reply({ error: error instanceof Error ? error.message : String(error) });
  }
}
await client.close();
