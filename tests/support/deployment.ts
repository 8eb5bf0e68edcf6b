/**
 * A deployment for end-to-end scenarios: one `server.ts` over SQLite (the embedded default), or
 * several instances over one PostgreSQL database sharing one key file, as a cluster runs them.
 * A scenario written once against a {@link Deployment} runs under both with
 * `deployments.test()`; `at(user)` puts alice on the first instance and bob on the second, so
 * everything between them crosses instances.
 */
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { connectSql } from "../../lib/server/postgres_store.ts";
import { SQLITE_FILE } from "../../lib/server/sqlite_store.ts";
import { startServer, type TestServer } from "./processes.ts";
import { runScenes, SCENE_SUFFIX, SHARED_ARGS } from "./shared_server.ts";
import { cleanDatabase, postgresHost, stopTestPostgres } from "./store_backends.ts";

export type Backend = "sqlite" | "postgres";

export interface DeploymentOptions {
  /** Instances (PostgreSQL only; SQLite is always one): default 2. */
  instances?: number;
  /** Arguments for every instance. */
  args?: string[];
  /** Instance `i` listens on `hosts[i]`, every one on the first one's port. */
  hosts?: string[];
}

/** What `start()` may add for this start only. */
export interface StartOptions {
  args?: string[];
  env?: Record<string, string>;
}

/**
 * The pool each PostgreSQL instance of a test deployment keeps (the product's default is 10). A
 * scenario's few users never need more at once, and each connection is a PostgreSQL backend
 * whose start and end cost ≈ 35 ms of CPU on our machines (docs/architecture.md): with the
 * default an instance opened about five in a scenario.
 */
const SMALL_POOL = ["--store-connections", "2"];

/** Where users are put when nobody said: alice first, bob second, the others in turn. */
const FIRST_PLACES: Record<string, number> = { alice: 0, bob: 1 };

export class Deployment implements AsyncDisposable {
  readonly backend: Backend;
  /** The PostgreSQL database's URL (PostgreSQL only). */
  readonly url: string | undefined;
  /** The service key file every instance is given (PostgreSQL only). */
  readonly keyFile: string | undefined;
  readonly #options: DeploymentOptions;
  readonly #dirs: string[];
  readonly #keyDir: string | undefined;
  readonly #ports: number[] = [];
  readonly #running: (TestServer | undefined)[];
  readonly #places = new Map<string, number>();
  #disposed: Promise<void> | undefined;

  private constructor(
    backend: Backend,
    dirs: string[],
    store: { url: string; keyDir: string } | undefined,
    options: DeploymentOptions,
  ) {
    this.backend = backend;
    this.#dirs = dirs;
    this.url = store?.url;
    this.#keyDir = store?.keyDir;
    this.keyFile = store && join(store.keyDir, "service-key.json");
    this.#options = options;
    this.#running = dirs.map(() => undefined);
  }

  /**
   * Makes a deployment of `backend` (PostgreSQL: a clean database in the test process's
   * throwaway cluster, or the test run's) and starts its instances unless `start` is false.
   */
  static async create(
    backend: Backend,
    options: DeploymentOptions & { start?: boolean } = {},
  ): Promise<Deployment> {
    const count = backend === "sqlite" ? 1 : options.instances ?? 2;
    const dirs: string[] = [];
    for (let i = 0; i < count; i++) {
      dirs.push(await Deno.makeTempDir({ prefix: `confab-srv${i}-` }));
    }
    const store = backend === "postgres"
      ? {
        url: await cleanDatabase(),
        keyDir: await Deno.makeTempDir({ prefix: "confab-key-" }),
      }
      : undefined;
    const deployment = new Deployment(backend, dirs, store, options);
    if (options.start ?? true) {
      try {
        await deployment.start();
      } catch (error) {
        await deployment[Symbol.asyncDispose]();
        throw error;
      }
    }
    return deployment;
  }

  /** How many instances: 1 over SQLite. */
  get size(): number {
    return this.#dirs.length;
  }

  /** Each instance's data dir (over SQLite, the store is in the first). */
  get dataDirs(): readonly string[] {
    return this.#dirs;
  }

  /** Whether several instances share the store (what the console's `list` says differs). */
  get shared(): boolean {
    return this.backend === "postgres";
  }

  /** The running instances, in order. */
  get servers(): TestServer[] {
    return this.#running.map((s, i) => {
      if (!s) throw new Error(`instance ${i} is not running`);
      return s;
    });
  }

  /** The instances' addresses, comma-separated, for `--server`. */
  get addresses(): string {
    return this.servers.map((s) => s.address).join(",");
  }

  /**
   * Which instance `user` is on: alice the first, bob the second, others in turn. A shared
   * scenario's names (`alice_3`, see {@link Scenarios.shared}) are placed as the names they
   * stand for.
   */
  placeOf(user: string): number {
    let place = this.#places.get(user);
    if (place === undefined) {
      const first = FIRST_PLACES[user.replace(SCENE_SUFFIX, "")];
      place = (first ?? this.#places.size) % this.size;
      this.#places.set(user, place);
    }
    return place;
  }

  /** The instance `user` is on (see {@link placeOf}). */
  at(user: string): TestServer {
    const i = this.placeOf(user);
    const server = this.#running[i];
    if (!server) throw new Error(`instance ${i} (${user}'s) is not running`);
    return server;
  }

  /**
   * Starts every instance that is not running, each on its own port (once it has one) with its
   * data dir: the first start, or the server coming back after `kill()`/`esc()`.
   */
  async start(options: StartOptions = {}): Promise<void> {
    const { hosts } = this.#options;
    const startOne = async (i: number) => {
      if (this.#running[i]) return;
      this.#running[i] = await startServer({
        dataDir: this.#dirs[i],
        port: this.#ports[i] ?? (hosts && i > 0 ? this.#ports[0] : 0),
        host: hosts?.[i],
        env: options.env,
        args: [
          ...(this.url ? ["--store", this.url, "--key", this.keyFile!, ...SMALL_POOL] : []),
          ...(hosts ? ["--probe-port", "0"] : []),
          ...(this.#options.args ?? []),
          ...(options.args ?? []),
        ],
      });
      this.#ports[i] = this.#running[i]!.port;
    };
    const all = [...this.#dirs.keys()];
    // Instances on one port behind several addresses take the first one's port: it goes first.
    if (hosts && this.#ports[0] === undefined) await startOne(0);
    const results = await Promise.allSettled(all.map(startOne));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  /** Kills instance `i` outright (kill -9) and waits until it is gone. */
  async kill(i: number): Promise<void> {
    const server = this.#running[i];
    this.#running[i] = undefined;
    if (!server) return;
    server.proc.kill("SIGKILL");
    await server[Symbol.asyncDispose]();
  }

  /** Kills every instance outright: the server crashed. */
  async killAll(): Promise<void> {
    await Promise.all([...this.#dirs.keys()].map((i) => this.kill(i)));
  }

  /** Instance `i` again, on its port and with its data (after it was killed, or at once). */
  async restart(i: number, options: StartOptions = {}): Promise<TestServer> {
    await this.kill(i);
    await this.start(options);
    return this.#running[i]!;
  }

  /**
   * Every instance leaves with `esc` (telling its clients) and exits; resolves to their exit
   * statuses.
   */
  async esc(): Promise<Deno.CommandStatus[]> {
    const statuses = await Promise.all(this.servers.map((s) => s.esc()));
    await this.killAll();
    return statuses;
  }

  /**
   * The operator at the database, behind the servers' backs (a restored backup, a malicious
   * operator): runs one statement with `?` placeholders and returns its rows.
   */
  async sql(
    query: string,
    params: (string | number | null)[] = [],
  ): Promise<Record<string, unknown>[]> {
    if (!this.url) {
      const db = new DatabaseSync(join(this.#dirs[0]!, SQLITE_FILE));
      try {
        db.exec("PRAGMA busy_timeout = 10000");
        return db.prepare(query).all(...params) as Record<string, unknown>[];
      } finally {
        db.close();
      }
    }
    let n = 0;
    const sql = connectSql(this.url, { maxConnections: 1 });
    try {
      const rows = await sql.unsafe(query.replace(/\?/g, () => `$${++n}`), params);
      return [...rows] as Record<string, unknown>[];
    } finally {
      await sql.end({ timeout: 5 });
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#disposed ??= (async () => {
      await this.killAll();
      for (const dir of [...this.#dirs, ...(this.#keyDir ? [this.#keyDir] : [])]) {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    })();
    return this.#disposed;
  }
}

/** The two deployments every scenario runs under. */
export const DEPLOYMENTS: readonly { backend: Backend; label: string }[] = [
  { backend: "sqlite", label: "sqlite" },
  { backend: "postgres", label: "postgres, 2 instances" },
];

/** PostgreSQL tests registered in this file that have not run yet. */
let postgresTestsLeft = 0;
/** Whether a SQLite test has started the file's PostgreSQL cluster already. */
let warmedUp = false;

/** Registers scenarios that run under each deployment. */
export interface Scenarios {
  /**
   * Registers `fn` once per deployment: `"sqlite: <name>"` and `"postgres, 2 instances:
   * <name>"`, each with a deployment of its own, stopped afterwards whatever happens. The
   * file's PostgreSQL cluster is shared by its tests and stopped after the last of them (when
   * tests were filtered out, when the test process ends).
   */
  test(name: string, fn: (deployment: Deployment) => Promise<void>): void;
  /** The same, with deployments made with `options`. */
  with(options: DeploymentOptions & { start?: boolean }): Scenarios;
  /**
   * Scenarios that leave their deployment as they found it, sharing one per backend: two
   * `Deno.test`s called `"<label>: <title>"`, each of which makes one deployment and runs every
   * scenario added with `test` as a step, in order. The rules of tests/support/shared_server.ts
   * hold: a scenario names its users with `user("alice")` (`alice_3` in the third scenario;
   * placed on the instances as `alice`), neither kills, restarts nor `esc`s an instance, needs
   * flags of its own, reads the database nor waits on the servers' output. Sign-ups from one
   * address are not limited on a shared deployment.
   */
  shared(title: string): {
    test(name: string, fn: (d: Deployment, user: (name: string) => string) => Promise<void>): void;
  };
}

/** Runs `fn` with a deployment of `backend`, the file's PostgreSQL cluster kept as it needs. */
async function withDeployment(
  backend: Backend,
  options: DeploymentOptions & { start?: boolean },
  fn: (deployment: Deployment) => Promise<void>,
): Promise<void> {
  // The file's first SQLite test starts its PostgreSQL cluster beside the scenario (and waits
  // for it before it ends): seconds of initdb overlap the scenario's own waits.
  const warming = backend === "sqlite" && !warmedUp && postgresTestsLeft > 0
    ? postgresHost()
    : undefined;
  warmedUp ||= warming !== undefined;
  try {
    await using deployment = await Deployment.create(backend, options);
    await fn(deployment);
  } finally {
    await warming?.catch(() => {}); // a cluster that cannot start fails the PostgreSQL tests
    if (backend === "postgres" && --postgresTestsLeft === 0) await stopTestPostgres();
  }
}

function scenarios(options: DeploymentOptions & { start?: boolean }): Scenarios {
  return {
    test(name, fn) {
      for (const { backend, label } of DEPLOYMENTS) {
        if (backend === "postgres") postgresTestsLeft++;
        Deno.test(`${label}: ${name}`, () => withDeployment(backend, options, fn));
      }
    },
    with: (more) => scenarios({ ...options, ...more }),
    shared(title) {
      const scenes: {
        name: string;
        fn: (d: Deployment, user: (n: string) => string) => Promise<void>;
      }[] = [];
      const shared = { ...options, args: [...options.args ?? [], ...SHARED_ARGS] };
      for (const { backend, label } of DEPLOYMENTS) {
        if (backend === "postgres") postgresTestsLeft++;
        Deno.test(`${label}: ${title}`, (t) =>
          withDeployment(
            backend,
            shared,
            (deployment) => runScenes(t, scenes, (fn, user) => fn(deployment, user)),
          ));
      }
      return { test: (name, fn) => void scenes.push({ name, fn }) };
    },
  };
}

/** Scenarios written once, run under SQLite and under PostgreSQL with two instances. */
export const deployments: Scenarios = scenarios({});
