/**
 * A throwaway PostgreSQL cluster in a temporary directory, for tests and `deno task cluster`:
 * `initdb`, then `postgres` on a free port, listening on 127.0.0.1 and on a socket inside the
 * directory. PostgreSQL refuses to run as root; as root it runs as a dedicated system user
 * (`confab-pg`, made when missing). Stopped and removed on dispose; a cluster left behind by a
 * process that died is stopped and removed by the next one that starts.
 */
import { join } from "node:path";

/** The system user the clusters run as when we are root. */
export const PG_USER = "confab-pg";
/** The database role the clusters are made with (trust authentication, loopback only). */
export const PG_ROLE = "confab";
const DIR_PREFIX = "confab-pg-";
const OWNER_FILE = "owner.pid";

/** Where the PostgreSQL server programs are: Debian's versioned directory (newest), or PATH. */
export function findPgBin(): string {
  const complete = (dir: string) =>
    ["initdb", "pg_ctl", "postgres", "createdb"].every((p) => isFile(join(dir, p)));
  let best: { version: number; dir: string } | undefined;
  try {
    for (const entry of Deno.readDirSync("/usr/lib/postgresql")) {
      const dir = join("/usr/lib/postgresql", entry.name, "bin");
      const version = Number(entry.name);
      if (complete(dir) && (!best || version > best.version)) best = { version, dir };
    }
  } catch { /* no Debian packages */ }
  if (best) return best.dir;
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir && complete(dir)) return dir;
  }
  throw new Error(
    "PostgreSQL is not installed (no initdb, pg_ctl, postgres, createdb found): " +
      "apt-get install postgresql",
  );
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function isRoot(): boolean {
  return Deno.uid() === 0;
}

async function run(cmd: string, args: string[], what: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${what} failed (exit ${out.code}): ${text.trim()}`);
  return text;
}

/** Runs a PostgreSQL program as the cluster's user. */
function asPgUser(bin: string, args: string[], what: string): Promise<string> {
  return isRoot()
    ? run("runuser", ["-u", PG_USER, "--", bin, ...args], what)
    : run(bin, args, what);
}

async function ensurePgUser(): Promise<void> {
  if (!isRoot()) return;
  const known = await new Deno.Command("id", {
    args: ["-u", PG_USER],
    stdout: "null",
    stderr: "null",
  })
    .output();
  if (known.success) return;
  await run(
    "useradd",
    [
      "--system",
      "--no-create-home",
      "--home-dir",
      "/nonexistent",
      "--shell",
      "/usr/sbin/nologin",
      PG_USER,
    ],
    `making the system user ${PG_USER}`,
  ).catch(async (error) => {
    // Another process made it at the same moment.
    const again = await new Deno.Command("id", {
      args: ["-u", PG_USER],
      stdout: "null",
      stderr: "null",
    })
      .output();
    if (!again.success) throw error;
  });
}

function isAlive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT"); // harmless; fails when there is no such process
    return true;
  } catch {
    return false;
  }
}

/** Stops and removes clusters whose owning process is gone (a test run that was killed). */
async function sweepOrphans(bin: string): Promise<void> {
  const tmp = Deno.env.get("TMPDIR") ?? "/tmp";
  for (const entry of Deno.readDirSync(tmp)) {
    if (!entry.isDirectory || !entry.name.startsWith(DIR_PREFIX)) continue;
    const dir = join(tmp, entry.name);
    let owner: number;
    try {
      owner = Number(Deno.readTextFileSync(join(dir, OWNER_FILE)));
    } catch {
      continue; // being made right now, or not ours
    }
    if (!owner || isAlive(owner)) continue;
    await asPgUser(
      join(bin, "pg_ctl"),
      ["-D", join(dir, "data"), "-m", "immediate", "-w", "stop"],
      "stop",
    )
      .catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** A free TCP port on 127.0.0.1 (the OS picks it; we let it go again). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

export interface LocalPostgres extends AsyncDisposable {
  dir: string;
  port: number;
  /** `postgres://confab@127.0.0.1:PORT/DB` for a database (default `postgres`). */
  url(database?: string): string;
  /** Creates a database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Stops the server: "fast" (clean) or "immediate" (as a crash). */
  stop(mode?: "fast" | "immediate"): Promise<void>;
  /** Starts it again on the same port, with the same data. */
  start(): Promise<void>;
  /** The server's log so far. */
  log(): string;
}

export interface LocalPostgresOptions {
  /** Turn off fsync: much faster, loses data only if the machine itself goes down. */
  fast?: boolean;
  /** Connections the server accepts at once (default 200). */
  maxConnections?: number;
}

/** Makes and starts a cluster. */
export async function startLocalPostgres(
  options: LocalPostgresOptions = {},
): Promise<LocalPostgres> {
  const bin = findPgBin();
  await ensurePgUser();
  await sweepOrphans(bin);
  const dir = await Deno.makeTempDir({ prefix: DIR_PREFIX });
  await Deno.writeTextFile(join(dir, OWNER_FILE), String(Deno.pid));
  const data = join(dir, "data");
  const logFile = join(dir, "postgres.log");
  if (isRoot()) await run("chown", [PG_USER, dir], "chown");
  await asPgUser(
    join(bin, "initdb"),
    ["-D", data, "-A", "trust", "-U", PG_ROLE, "--no-sync", "-E", "UTF8", "--locale=C"],
    "initdb",
  );
  let port = 0;
  const settings = () =>
    [
      `-p ${port}`,
      `-k ${dir}`,
      "-c listen_addresses=127.0.0.1",
      `-c max_connections=${options.maxConnections ?? 200}`,
      ...(options.fast ? ["-c fsync=off", "-c full_page_writes=off"] : []),
    ].join(" ");
  const start = async () => {
    await asPgUser(join(bin, "pg_ctl"), [
      "-D",
      data,
      "-o",
      settings(),
      "-l",
      logFile,
      "-w",
      "-t",
      "60",
      "start",
    ], "pg_ctl start");
  };
  // A port taken between our check and postgres's bind: try another.
  for (let attempt = 1;; attempt++) {
    port = freePort();
    try {
      await start();
      break;
    } catch (error) {
      if (attempt >= 5) {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        throw error;
      }
    }
  }
  let stopped = false;
  const stop = async (mode: "fast" | "immediate" = "fast") => {
    await asPgUser(
      join(bin, "pg_ctl"),
      ["-D", data, "-m", mode, "-w", "-t", "60", "stop"],
      "pg_ctl stop",
    );
  };
  const url = (database = "postgres") => `postgres://${PG_ROLE}@127.0.0.1:${port}/${database}`;
  // Whatever happens to the tests, the cluster goes with the process.
  const onUnload = () => {
    if (stopped) return;
    try {
      const args = ["-D", data, "-m", "immediate", "-w", "stop"];
      new Deno.Command(isRoot() ? "runuser" : join(bin, "pg_ctl"), {
        args: isRoot() ? ["-u", PG_USER, "--", join(bin, "pg_ctl"), ...args] : args,
        stdout: "null",
        stderr: "null",
      }).outputSync();
      Deno.removeSync(dir, { recursive: true });
    } catch { /* best effort at exit */ }
  };
  globalThis.addEventListener("unload", onUnload);
  return {
    dir,
    port,
    url,
    async createDatabase(name: string) {
      await run(
        join(bin, "createdb"),
        ["-h", "127.0.0.1", "-p", String(port), "-U", PG_ROLE, name],
        `createdb ${name}`,
      );
      return url(name);
    },
    stop,
    start,
    log: () => {
      try {
        return Deno.readTextFileSync(logFile);
      } catch {
        return "";
      }
    },
    async [Symbol.asyncDispose]() {
      if (stopped) return;
      stopped = true;
      globalThis.removeEventListener("unload", onUnload);
      await stop("immediate").catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
