/**
 * confab: the Confab messenger client. Talks to the server for accounts and presence, and to
 * other users directly, peer to peer.
 *
 *   deno run -A client.ts [peer port] [--server HOST:PORT] [--home DIR] [--json] [--verbose]
 */
import { join } from "./lib/util/paths.ts";
import { parseOrExit } from "./lib/cli/args.ts";
import { formatSize, parsePort, parseServers } from "./lib/cli/lines.ts";
import { NameBook, runApp } from "./lib/client/app.ts";
import {
  ClientError,
  ConfabClient,
  DEFAULT_KEEP_FREE,
  DEFAULT_MAX_FILE_SIZE,
  DEFAULT_MAX_PARTIAL,
} from "./lib/client/client.ts";
import {
  type FrontEnd,
  JsonFrontEnd,
  type Notify,
  PlainFrontEnd,
  TtyFrontEnd,
} from "./lib/client/terminal.ts";
import { asError } from "./lib/net/framed_connection.ts";
import { MAIN_HELP } from "./lib/client/commands.ts";
import { parseFingerprint } from "./lib/crypto/fingerprint.ts";

/** Parses `4G`, `500M`, `64K` or a plain number of bytes. */
function parseSize(value: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMG]i?B?)?$/i.exec(value.trim());
  if (!m) throw new RangeError(`"${value}" is not a size (try 500M or 4G)`);
  const unit = (m[2] ?? "").toUpperCase()[0];
  const factor = unit === "K" ? 1024 : unit === "M" ? 1024 ** 2 : unit === "G" ? 1024 ** 3 : 1;
  return Math.floor(Number(m[1]) * factor);
}

/** Parses a whole number from `min` to `max`. */
function count(value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new RangeError(`${min} to ${max}`);
  return n;
}

function defaultHome(): string {
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE") ?? ".";
  return join(home, ".confab");
}

const parsed = parseOrExit({
  name: "confab",
  description: "Confab messenger client: chat with your contacts directly, peer to peer.\n" +
    "Commands are typed (or piped) on stdin; see the list after the options.",
  argument: {
    name: "port",
    description: "peer port to listen on (same as --port)",
    parse: parsePort,
  },
  options: [
    {
      flags: "-p, --port <port>",
      description: "peer port to listen on (default: any free port)",
      parse: parsePort,
    },
    {
      flags: "-s, --server <host:port,...>",
      description: "the Confab server; several addresses of one service, comma-separated: the " +
        "client uses the first that answers and re-attaches to another when it is lost",
      parse: parseServers,
      default: [{ host: "127.0.0.1", port: 4242 }],
      defaultText: "127.0.0.1:4242",
    },
    {
      flags: "--home <dir>",
      description: "where your keys and history live",
      default: defaultHome(),
      defaultText: "~/.confab",
    },
    { flags: "--json", description: "one JSON object per event on stdout, for scripts" },
    {
      flags: "-v, --verbose",
      description: "technical detail too: addresses, links, low-level errors",
    },
    {
      flags: "--notify <how>",
      description: "on a message for a chat that is not open",
      choices: ["bell", "title", "both", "none"],
      default: "bell",
    },
    {
      flags: "--accept-server-key <fingerprint>",
      description: "accept and pin a changed server key once, only if it has this fingerprint " +
        "(the one the server prints at start-up)",
      parse: parseFingerprint,
    },
    {
      flags: "--announce-port <port>",
      description: "the peer port to announce, when a port forwarder sits in front of --port",
      parse: (v) => parsePort(v, "--announce-port", 1),
    },
    {
      flags: "--peer-timeout <seconds>",
      description: "a silent peer is gone after this many seconds",
      parse: (v) => {
        const n = Number(v);
        if (!Number.isFinite(n) || n < 1 || n > 300) throw new RangeError("1 to 300 seconds");
        return n;
      },
      default: 3,
    },
    {
      flags: "--max-file-size <size>",
      description: "refuse larger files (500M, 4G, or bytes)",
      parse: parseSize,
      default: DEFAULT_MAX_FILE_SIZE,
      defaultText: formatSize(DEFAULT_MAX_FILE_SIZE),
    },
    {
      flags: "--auto-accept <who>",
      description: "file offers taken without asking: from contacts, or none",
      choices: ["ask", "contacts", "none"],
      default: "ask",
    },
    {
      flags: "--max-partial <size>",
      description: "most bytes held aside by files being received",
      parse: parseSize,
      default: DEFAULT_MAX_PARTIAL,
      defaultText: formatSize(DEFAULT_MAX_PARTIAL),
    },
    {
      flags: "--keep-free <size>",
      description: "refuse a file that would leave less free disk space",
      parse: parseSize,
      default: DEFAULT_KEEP_FREE,
      defaultText: formatSize(DEFAULT_KEEP_FREE),
    },
    {
      flags: "--offer-timeout <seconds>",
      description: "a file offer you leave unanswered is declined then",
      parse: (v) => count(v, 1, 3600),
      default: 300,
    },
    {
      flags: "--punch <on|off>",
      description: "try to turn relayed links into direct ones (hole punching)",
      parse: (v) => {
        if (v !== "on" && v !== "off") throw new RangeError(`on or off, not "${v}"`);
        return v === "on";
      },
      default: true,
      defaultText: "on",
    },
    {
      flags: "--max-peer-conns <n>",
      description: "connections held at once on the peer port",
      parse: (v) => count(v, 1, 10_000),
      default: 256,
    },
    {
      flags: "--max-peer-conns-per-address <n>",
      description: "connections held at once on the peer port from one address",
      parse: (v) => count(v, 1, 10_000),
      default: 32,
    },
    {
      flags: "--history <n>",
      description: "messages shown when a chat opens",
      parse: (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 10_000) throw new RangeError("0 to 10000");
        return n;
      },
      default: 50,
    },
  ],
  helpWidth: 100,
  helpAfter: `\nCommands:\n\n${MAIN_HELP}`,
}, Deno.args);

const opts = parsed.options as {
  port?: number;
  server: { host: string; port: number }[];
  home: string;
  json?: boolean;
  verbose?: boolean;
  notify: Notify;
  acceptServerKey?: string;
  announcePort?: number;
  peerTimeout: number;
  maxFileSize: number;
  autoAccept: "ask" | "contacts" | "none";
  maxPartial: number;
  keepFree: number;
  offerTimeout: number;
  history: number;
  punch: boolean;
  maxPeerConns: number;
  maxPeerConnsPerAddress: number;
};
const peerPort = (parsed.argument as number | undefined) ?? opts.port ?? 0;

let quit: (graceMs?: number) => Promise<never> = () => Deno.exit(0);
const ui: FrontEnd = opts.json
  ? new JsonFrontEnd()
  : Deno.stdin.isTerminal() && Deno.stdout.isTerminal()
  ? new TtyFrontEnd({ verbose: opts.verbose, notify: opts.notify, onQuit: () => void quit() })
  : new PlainFrontEnd(undefined, { verbose: opts.verbose });
const names = new NameBook();

const client = new ConfabClient({
  home: opts.home,
  server: opts.server,
  peerPort,
  historyLines: opts.history,
  acceptServerKey: opts.acceptServerKey,
  peerTimeoutMs: opts.peerTimeout * 1000,
  maxFileSize: opts.maxFileSize,
  autoAccept: opts.autoAccept,
  maxPartialBytes: opts.maxPartial,
  keepFreeBytes: opts.keepFree,
  offerTimeoutMs: opts.offerTimeout * 1000,
  announcePort: opts.announcePort,
  punch: opts.punch,
  maxPeerConnections: opts.maxPeerConns,
  maxPeerConnectionsPerAddress: opts.maxPeerConnsPerAddress,
}, (event) => {
  names.observe(event);
  ui.show(event);
});

try {
  client.start();
} catch (error) {
  const message = error instanceof ClientError ? error.message : asError(error).message;
  if (opts.json) ui.show({ type: "error", code: "START_FAILED", message });
  else console.error(`confab: ${message}`);
  await ui[Symbol.asyncDispose]();
  Deno.exit(1);
}

/**
 * How long a quit waits for the logout and the links to close (a peer that stopped reading can
 * hold a link's last frame forever); after that it closes the local store and exits anyway.
 * Asked for by a signal or keys: promptly. At the end of input (a script): more patiently.
 */
const QUIT_GRACE_MS = 5_000;
const END_OF_INPUT_GRACE_MS = 20_000;

let quitting: Promise<never> | undefined;
/** Logs out, restores the terminal and exits 0: `quit`, Ctrl-C twice, SIGINT/SIGTERM/SIGHUP. */
quit = (graceMs = QUIT_GRACE_MS) => {
  quitting ??= (async () => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const closed = await Promise.race([
      client.close().then(() => true, () => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), graceMs)),
    ]);
    clearTimeout(timer);
    if (!closed) client.closeNow();
    await ui[Symbol.asyncDispose]();
    Deno.exit(0);
  })();
  return quitting;
};
/** A signal during a quit (a second Ctrl-C, an impatient supervisor): exit at once. */
function onSignal(): void {
  if (quitting === undefined) {
    void quit();
    return;
  }
  client.closeNow();
  void Promise.resolve(ui[Symbol.asyncDispose]()).finally(() => Deno.exit(0));
}
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  try {
    Deno.addSignalListener(signal, onSignal);
  } catch {
    // Not on Windows (SIGINT still works there).
  }
}

await runApp(client, ui, names);
await quit(END_OF_INPUT_GRACE_MS);
