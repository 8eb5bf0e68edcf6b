/**
 * `deno task cluster`: a local PostgreSQL (a throwaway cluster in a temporary directory, run as
 * a non-root user as PostgreSQL requires) and three server instances on consecutive ports over
 * it, with one server key; prints how to point clients at them. Ctrl-C stops everything and
 * removes the directory.
 *
 *   deno task cluster [--port 4242] [--instances 3] [--host 127.0.0.1]
 */
import { join, resolve } from "node:path";
import { Command } from "commander";
import { intOption } from "../lib/cli/options.ts";
import { startLocalPostgres } from "./local_postgres.ts";

const ROOT = resolve(import.meta.dirname ?? ".", "..");

const opts = new Command()
  .name("deno task cluster")
  .description("PostgreSQL and several Confab server instances over it, to try a cluster")
  .option("--port <n>", "port of the first instance; the others follow", intOption(1, 65530), 4242)
  .option("--instances <n>", "how many instances", intOption(1, 16), 3)
  .option("--host <address>", "address the instances listen on", "127.0.0.1")
  .parse(["deno", "cluster.ts", ...Deno.args])
  .opts<{ port: number; instances: number; host: string }>();

const say = (line: string) => console.log(`[cluster] ${line}`);

say("starting PostgreSQL (a throwaway cluster in a temporary directory)...");
await using pg = await startLocalPostgres();
const url = await pg.createDatabase("confab");
const keyFile = join(pg.dir, "server-key.json");
say(`PostgreSQL ${url} (data in ${pg.dir})`);

const instances: Deno.ChildProcess[] = [];
const ready: Promise<string>[] = [];
for (let i = 0; i < opts.instances; i++) {
  const port = opts.port + i;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "server.ts"),
      "--port",
      String(port),
      "--host",
      opts.host,
      "--data",
      join(pg.dir, `instance-${i + 1}`),
      "--store",
      url,
      "--key",
      keyFile,
      // The next port is the next instance's, not this one's NAT probe: any free port for that.
      "--probe-port",
      "0",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  instances.push(child);
  const listening = Promise.withResolvers<string>();
  ready.push(listening.promise);
  for (const stream of [child.stdout, child.stderr]) {
    void (async () => {
      let rest = "";
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        let nl: number;
        while ((nl = rest.indexOf("\n")) >= 0) {
          const line = rest.slice(0, nl);
          rest = rest.slice(nl + 1);
          console.log(`[${i + 1}] ${line}`);
          if (line.startsWith("confab server listening")) listening.resolve(line);
        }
      }
    })();
  }
  // The first makes the key file; the others start once it exists.
  if (i === 0) await Promise.race([listening.promise, child.status]);
}
const statuses = Promise.race(instances.map((c, i) => c.status.then((s) => ({ i, s }))));
const started = await Promise.race([Promise.all(ready), statuses]);
if (!Array.isArray(started)) {
  say(`instance ${started.i + 1} exited (${started.s.code}) before listening; see its lines above`);
  await stopAll();
  Deno.exit(1);
}

const addresses = instances.map((_, i) => `${opts.host}:${opts.port + i}`).join(",");
say(`${opts.instances} instances are up over one database, with one server key.`);
say(`point clients at all of them (each re-attaches to another if its instance goes):`);
say(`  deno task client --server ${addresses}`);
say(`kill one (kill -9 <pid>) and watch its users move; Ctrl-C stops everything.`);
say(`instance pids: ${instances.map((c) => c.pid).join(" ")}`);

async function stopAll(): Promise<void> {
  for (const child of instances) {
    try {
      child.kill("SIGTERM");
    } catch { /* gone already */ }
  }
  await Promise.all(instances.map((c) => c.status));
}

const stop = Promise.withResolvers<void>();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => stop.resolve());
}
await stop.promise;
say("stopping the instances and PostgreSQL...");
await stopAll();
say("bye");
