/**
 * confab: the Confab messenger client. Talks to the server for accounts and presence, and to
 * other users directly, peer to peer.
 *
 *   deno run -A client.ts [peer port] [--server HOST:PORT] [--home DIR] [--json] [--verbose]
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { join } from "node:path";
import { parsePort, parseServers } from "./lib/cli/lines.ts";
import { NameBook, runApp } from "./lib/client/app.ts";
import { ClientError, ConfabClient } from "./lib/client/client.ts";
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

function wrap<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (error) {
      throw new InvalidArgumentError(asError(error).message);
    }
  };
}

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

const DEFAULT_MAX_FILE = 4 * 1024 ** 3;

const program = new Command()
  .name("confab")
  .description(
    "Confab messenger client: chat with your contacts directly, peer to peer.\n" +
      "Commands are typed (or piped) on stdin; see the list after the options.",
  )
  .argument("[port]", "peer port to listen on (same as --port)", wrap(parsePort))
  .addOption(
    new Option("-p, --port <port>", "peer port to listen on (default: any free port)")
      .argParser(wrap(parsePort)),
  )
  .addOption(
    new Option(
      "-s, --server <host:port,...>",
      "the Confab server; several addresses of one service, comma-separated: the client uses " +
        "the first that answers and re-attaches to another when it is lost",
    )
      .argParser(wrap(parseServers))
      .default([{ host: "127.0.0.1", port: 4242 }], "127.0.0.1:4242"),
  )
  .addOption(
    new Option("--home <dir>", "where your keys and history live")
      .default(defaultHome(), "~/.confab"),
  )
  .option("--json", "one JSON object per event on stdout, for scripts")
  .option("-v, --verbose", "technical detail too: addresses, links, low-level errors")
  .addOption(
    new Option("--notify <how>", "on a message for a chat that is not open")
      .choices(["bell", "title", "both", "none"])
      .default("bell"),
  )
  .option(
    "--accept-server-key <fingerprint>",
    "accept and pin a changed server key once, only if it has this fingerprint (the one the " +
      "server prints at start-up)",
    wrap(parseFingerprint),
  )
  .option(
    "--announce-port <port>",
    "the peer port to announce, when a port forwarder sits in front of --port",
    wrap((v) => {
      const n = parsePort(v, "--announce-port");
      if (n === 0) throw new RangeError("--announce-port must be a port from 1 to 65535");
      return n;
    }),
  )
  .addOption(
    new Option("--peer-timeout <seconds>", "a silent peer is gone after this many seconds")
      .argParser(wrap((v) => {
        const n = Number(v);
        if (!Number.isFinite(n) || n < 1 || n > 300) throw new RangeError("1 to 300 seconds");
        return n;
      }))
      .default(3),
  )
  .addOption(
    new Option("--max-file-size <size>", "refuse larger files (500M, 4G, or bytes)")
      .argParser(wrap(parseSize))
      .default(DEFAULT_MAX_FILE, "4G"),
  )
  .addOption(
    new Option("--auto-accept <who>", "file offers taken without asking: from contacts, or none")
      .choices(["ask", "contacts", "none"])
      .default("ask"),
  )
  .addOption(
    new Option("--max-partial <size>", "most bytes held aside by files being received")
      .argParser(wrap(parseSize))
      .default(8 * 1024 ** 3, "8G"),
  )
  .addOption(
    new Option("--keep-free <size>", "refuse a file that would leave less free disk space")
      .argParser(wrap(parseSize))
      .default(256 * 1024 ** 2, "256M"),
  )
  .addOption(
    new Option("--offer-timeout <seconds>", "a file offer you leave unanswered is declined then")
      .argParser(wrap((v) => count(v, 1, 3600)))
      .default(300),
  )
  .addOption(
    new Option("--punch <on|off>", "try to turn relayed links into direct ones (hole punching)")
      .argParser(wrap((v) => {
        if (v !== "on" && v !== "off") throw new RangeError(`on or off, not "${v}"`);
        return v === "on";
      }))
      .default(true, "on"),
  )
  .addOption(
    new Option("--max-peer-conns <n>", "connections held at once on the peer port")
      .argParser(wrap((v) => count(v, 1, 10_000)))
      .default(256),
  )
  .addOption(
    new Option(
      "--max-peer-conns-per-address <n>",
      "connections held at once on the peer port from one address",
    )
      .argParser(wrap((v) => count(v, 1, 10_000)))
      .default(32),
  )
  .addOption(
    new Option("--history <n>", "messages shown when a chat opens")
      .argParser(wrap((v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 10_000) throw new RangeError("0 to 10000");
        return n;
      }))
      .default(50),
  )
  .configureHelp({ helpWidth: 100 })
  .addHelpText("after", `\nCommands:\n\n${MAIN_HELP}`)
  .showHelpAfterError("(run confab --help for usage)")
  .parse(["deno", "client.ts", ...Deno.args]);

const opts = program.opts<{
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
}>();
const peerPort = (program.processedArgs[0] as number | undefined) ?? opts.port ?? 0;

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
