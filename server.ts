/**
 * confab-server: accounts, contacts, presence and the directory for Confab clients.
 *
 *   deno run -A server.ts [port] [--host ADDR] [--data DIR] [--store postgres://…] [--key FILE]
 *   deno run -A server.ts migrate --from DIR --to postgres://…
 */
import { parseOrExit } from "./lib/cli/args.ts";
import { intOption } from "./lib/cli/options.ts";
import { DEFAULT_PASSWORD_COST, PASSWORD_COST_RANGE } from "./lib/server/accounts.ts";
import { formatSize, parseHostPort, parsePort, parseSize } from "./lib/cli/lines.ts";
import { DEFAULT_RELAY_LIMITS } from "./lib/server/relay.ts";
import { logLine, openConsole, runConsole } from "./lib/server/console.ts";
import { ConfabServer, DEFAULT_SERVER_WRITE_QUEUE } from "./lib/server/server.ts";
import { asError } from "./lib/net/framed_connection.ts";
import { keyFingerprint } from "./lib/crypto/fingerprint.ts";
import { describeFix, ownerOnlyDir } from "./lib/util/owner_only.ts";

if (Deno.args[0] === "migrate") {
  const m = parseOrExit({
    name: "confab-server migrate",
    description: "Copy a SQLite server's whole state (accounts, contacts, registry, sessions, " +
      "waiting mail, receipts) into PostgreSQL. Stop the server first. Safe to run again: rows " +
      "already copied are kept; every table is counted on both sides.",
    options: [
      {
        flags: "--from <dir>",
        description: "the SQLite server's data directory (its --data)",
        required: true,
      },
      {
        flags: "--to <url>",
        description: "the PostgreSQL database: postgres://user:password@host:port/db " +
          "(default: $CONFAB_STORE)",
      },
    ],
  }, Deno.args.slice(1)).options as { from: string; to?: string };
  const to = m.to ?? Deno.env.get("CONFAB_STORE");
  if (!to) {
    console.error("confab-server migrate: say where to: --to postgres://user:pw@host:port/db");
    Deno.exit(1);
  }
  try {
    const { migrateToPostgres } = await import("./lib/server/migrate.ts");
    await migrateToPostgres(m.from, to, (line) => console.log(line));
  } catch (error) {
    console.error(`confab-server migrate: ${asError(error).message}`);
    Deno.exit(1);
  }
  Deno.exit(0);
}

function sizeOption(value: string): number {
  const n = parseSize(value);
  if (n < 1) throw new RangeError("must be at least 1 byte");
  return n;
}

/** The smallest `--max-write-queue`: one frame of the largest size (1 MiB). */
const MIN_WRITE_QUEUE = 1024 * 1024;

function onOff(value: string): boolean {
  if (value === "on") return true;
  if (value === "off") return false;
  throw new RangeError(`must be on or off, got "${value}"`);
}

const parsed = parseOrExit({
  name: "confab-server",
  description:
    "Confab rendezvous server: keeps accounts, contacts and presence; clients chat peer to peer.\n" +
    "Console commands on stdin: help, list, registry [user], esc.",
  argument: { name: "port", description: "port to listen on (same as --port)", parse: parsePort },
  options: [
    {
      flags: "-p, --port <port>",
      description: "port to listen on (0: any free port)",
      parse: parsePort,
      default: 4242,
    },
    {
      flags: "--host <address>",
      description: "address to listen on (0.0.0.0 for every interface)",
      default: "127.0.0.1",
    },
    {
      flags: "--data <dir>",
      description: "where the server keeps its key and SQLite database",
      default: "./confab-data",
    },
    {
      flags: "--store <url>",
      description: "share a PostgreSQL database with other instances: " +
        "postgres://user:password@host:port/db (default: $CONFAB_STORE; without either, " +
        "SQLite in --data)",
    },
    {
      flags: "--store-connections <n>",
      description: "with --store: connections to the database at most, per instance, " +
        "besides one that listens for the other instances' events (default: 10)",
      parse: intOption(1, 1000),
    },
    {
      flags: "--key <file>",
      description: "the server key (made at first start if missing); give every instance of a " +
        "deployment the same file (default: server-key.json in --data)",
    },
    {
      flags: "--max-connections <n>",
      description: "connections held at most",
      parse: intOption(1, 19_000),
      default: 15_000,
    },
    {
      flags: "--max-per-address <n>",
      description: "connections from one address at most (0: no limit)",
      parse: intOption(0, 19_000),
      default: 1000,
    },
    {
      flags: "--login-timeout <seconds>",
      description: "seconds a connection may stay without logging in",
      parse: intOption(1, 3600),
      default: 60,
    },
    {
      flags: "--max-pending <n>",
      description: "pending (offline) messages one user may have waiting",
      parse: intOption(1, 10_000_000),
      default: 10_000,
    },
    {
      flags: "--max-pending-mib <n>",
      description: "MiB of pending messages one user may have waiting",
      parse: intOption(1, 1_000_000),
      default: 256,
    },
    {
      flags: "--max-pending-per-sender <n>",
      description: "pending messages one sender may have waiting for one user",
      parse: intOption(1, 10_000_000),
      default: 1000,
    },
    {
      flags: "--max-pending-mib-per-sender <n>",
      description: "MiB of pending messages one sender may have waiting for one user",
      parse: intOption(1, 1_000_000),
      default: 32,
    },
    {
      flags: "--password-cost <log2N>",
      description: `scrypt cost of new password hashes, N=2^log2N (${PASSWORD_COST_RANGE.min}-` +
        `${PASSWORD_COST_RANGE.max}; default: $CONFAB_PASSWORD_COST, else ` +
        `${DEFAULT_PASSWORD_COST}, OWASP's minimum; weaker stored hashes are rehashed at the ` +
        "next login)",
      parse: intOption(PASSWORD_COST_RANGE.min, PASSWORD_COST_RANGE.max),
    },
    {
      flags: "--max-signups-per-hour <n>",
      description: "new accounts one address may create per hour (a burst of as many, then " +
        "spread out; 0: no limit)",
      parse: intOption(0, 1_000_000),
      default: 20,
    },
    {
      flags: "--relay <on|off>",
      description: "relay links between users who cannot reach each other directly",
      parse: onOff,
      default: true,
      defaultText: "on",
    },
    {
      flags: "--relay-links <n>",
      description: "relayed links at once at most",
      parse: intOption(0, 19_000),
      default: DEFAULT_RELAY_LIMITS.maxLinks,
    },
    {
      flags: "--relay-rate <bytes>",
      description: "bytes per second one relayed link may carry (e.g. 4M)",
      parse: sizeOption,
      default: DEFAULT_RELAY_LIMITS.bytesPerSecond,
      defaultText: formatSize(DEFAULT_RELAY_LIMITS.bytesPerSecond),
    },
    {
      flags: "--relay-daily <bytes>",
      description: "bytes one pair of users may relay per day (e.g. 2G)",
      parse: sizeOption,
      default: DEFAULT_RELAY_LIMITS.bytesPerDay,
      defaultText: formatSize(DEFAULT_RELAY_LIMITS.bytesPerDay),
    },
    {
      flags: "--relay-address <host:port>",
      description: "where clients reach this instance, for relay legs of peers on other " +
        "instances of a cluster (default: the address the asking client reached it at)",
      parse: (value) => parseHostPort(value, 4242),
    },
    {
      flags: "--probe-port <port>",
      description: "second port where clients check their NAT (default: port + 1; 0: any free " +
        "port)",
      parse: parsePort,
    },
    {
      flags: "--max-write-queue <bytes>",
      description: "bytes waiting to be written to one client at most (e.g. 8M); a client that " +
        "stops reading is dropped there, with an error and a log line (at least 1M, the largest " +
        "frame)",
      parse: (value) => {
        const n = parseSize(value);
        if (n < MIN_WRITE_QUEUE) throw new RangeError("must be at least 1M (the largest frame)");
        return n;
      },
      default: DEFAULT_SERVER_WRITE_QUEUE,
      defaultText: formatSize(DEFAULT_SERVER_WRITE_QUEUE),
    },
    { flags: "-q, --quiet", description: "do not log logins and logouts" },
  ],
}, Deno.args);

const opts = parsed.options as {
  port: number;
  host: string;
  data: string;
  store?: string;
  storeConnections?: number;
  key?: string;
  maxConnections: number;
  maxPerAddress: number;
  loginTimeout: number;
  maxPending: number;
  maxPendingMib: number;
  maxPendingPerSender: number;
  maxPendingMibPerSender: number;
  maxSignupsPerHour: number;
  passwordCost?: number;
  relay: boolean;
  relayLinks: number;
  relayRate: number;
  relayDaily: number;
  probePort?: number;
  relayAddress?: { host: string; port: number };
  maxWriteQueue: number;
  quiet?: boolean;
};
const port = (parsed.argument as number | undefined) ?? opts.port;
const storeUrl = opts.store ?? (Deno.env.get("CONFAB_STORE") || undefined);
if (opts.storeConnections !== undefined && !storeUrl) {
  console.error(
    "confab-server: --store-connections sizes a PostgreSQL store's pool: give --store " +
      "postgres://... (or CONFAB_STORE) as well, or leave it out for SQLite",
  );
  Deno.exit(1);
}
const passwordCost = opts.passwordCost ?? costFromEnv();

/** `CONFAB_PASSWORD_COST`, checked like the option; one line and exit 1 when it is not valid. */
function costFromEnv(): number | undefined {
  const value = Deno.env.get("CONFAB_PASSWORD_COST");
  if (!value) return undefined;
  try {
    return intOption(PASSWORD_COST_RANGE.min, PASSWORD_COST_RANGE.max)(value);
  } catch (error) {
    console.error(`confab-server: CONFAB_PASSWORD_COST ${asError(error).message}`);
    Deno.exit(1);
  }
}
let stop: (why: string) => Promise<never> = () => Deno.exit(1);
// The console first, so every line (log lines too) is printed above its prompt.
const io = openConsole(() => void stop("Ctrl-C"));
const print = (text: string) => io.print(text);

let server: ConfabServer;
try {
  const fixed = ownerOnlyDir(opts.data);
  if (fixed) print(`notice: ${describeFix(fixed, "the data folder")}`);
  server = await ConfabServer.start({
    host: opts.host,
    port,
    dataDir: opts.data,
    storeUrl,
    storeConnections: opts.storeConnections,
    keyFile: opts.key,
    maxConnections: opts.maxConnections,
    maxPerAddress: opts.maxPerAddress,
    loginTimeoutMs: opts.loginTimeout * 1000,
    maxPending: opts.maxPending,
    maxPendingBytes: opts.maxPendingMib * 1024 * 1024,
    maxPendingPerSender: opts.maxPendingPerSender,
    maxPendingBytesPerSender: opts.maxPendingMibPerSender * 1024 * 1024,
    maxSignupsPerHour: opts.maxSignupsPerHour,
    passwordCost,
    helloTimeoutMs: Math.min(10, opts.loginTimeout) * 1000,
    relay: {
      enabled: opts.relay,
      maxLinks: opts.relayLinks,
      bytesPerSecond: opts.relayRate,
      bytesPerDay: opts.relayDaily,
    },
    probePort: opts.probePort,
    relayAddress: opts.relayAddress,
    maxWriteQueue: opts.maxWriteQueue,
    log: opts.quiet ? undefined : (line) => print(logLine(line)),
  });
} catch (error) {
  await io.close();
  if (error instanceof Deno.errors.AddrInUse) {
    console.error(
      `confab-server: cannot listen on ${opts.host}:${port}: address already in use ` +
        `(is another server running? try --port N)`,
    );
  } else if (error instanceof Deno.errors.PermissionDenied) {
    console.error(`confab-server: permission denied: ${asError(error).message}`);
  } else {
    console.error(`confab-server: cannot start: ${asError(error).message}`);
  }
  Deno.exit(1);
}

print(
  `confab server listening on ${server.addr.hostname}:${server.addr.port} ` +
    `(data: ${server.store.location}); type help for commands`,
);
print(`server key fingerprint: ${await keyFingerprint(server.publicKey)}`);
if (passwordCost !== undefined && passwordCost < DEFAULT_PASSWORD_COST) {
  print(
    `notice: passwords hashed at scrypt N=2^${passwordCost}, below the recommended ` +
      `2^${DEFAULT_PASSWORD_COST}: for tests and very small machines only`,
  );
}
print(
  server.probePort
    ? `NAT probe port ${server.probePort}` +
      (opts.relay ? "; relaying links between peers that cannot reach each other" : "")
    : "no NAT probe port: clients cannot tell symmetric NATs",
);

let stopping = false;
stop = async (why: string): Promise<never> => {
  if (!stopping) {
    stopping = true;
    print(`shutting down (${why}); telling ${server.online().length} online user(s)`);
    await server.close();
    print("bye");
    await io.close();
  }
  Deno.exit(0);
};

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  try {
    Deno.addSignalListener(signal, () => void stop(signal));
  } catch {
    // SIGTERM cannot be listened to on Windows; SIGINT (Ctrl-C) still works there.
  }
}

await runConsole(server, io);
await stop("esc");
