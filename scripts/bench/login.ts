/**
 * login: password logins per second on one server, each the whole path a client takes (TCP,
 * hello, Noise XX handshake, `login` with the password, scrypt on the server, the welcome),
 * beside the raw scrypt rate of this machine in the same run: `hashPassword` from
 * `lib/server/accounts.ts` (the server's own parameters), two at a time as the server runs
 * them. The ratio says how much of a login's cost is anything but the hash.
 */
import { openServerLink } from "../../lib/client/server_link.ts";
import { generateKeyPair } from "../../lib/crypto/noise.ts";
import { hashPassword } from "../../lib/server/accounts.ts";
import { benchUser } from "./loadgen_protocol.ts";
import { prepareServerData, serverKdf } from "./server_data.ts";
import { cpuSeconds, percentile, startServer } from "./support.ts";
import type { BenchContext, BenchItem, ItemOutcome } from "./types.ts";

/** Logins under way at once (the server hashes two at a time and queues up to 64). */
const CONCURRENCY = 8;
/** Hashes at once for the raw rate: as many as the server runs. */
const RAW_CONCURRENCY = 2;

async function run(ctx: BenchContext): Promise<ItemOutcome> {
  const seconds = ctx.quick ? 0.5 : 15;
  const users = CONCURRENCY * 4;
  const kdf = serverKdf();
  const dir = await ctx.tempDir("confab-bench-login-");
  const data = await prepareServerData(dir, users);
  const server = await startServer(ctx.spawn, {
    dataDir: data.dataDir,
    name: "server",
    signal: ctx.signal,
  });
  const staticKeyPair = await generateKeyPair();

  ctx.log(`  password logins for ${seconds} s, ${CONCURRENCY} at a time`);
  const latencies: number[] = [];
  const failures: string[] = [];
  const cpu0 = await cpuSeconds(server.proc.pid);
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  await Promise.all(Array.from({ length: CONCURRENCY }, async (_, worker) => {
    for (let k = 0; performance.now() < until && !ctx.signal.aborted; k++) {
      const user = benchUser((worker + k * CONCURRENCY) % users);
      const started = performance.now();
      try {
        const { fc } = await openServerLink({
          host: "127.0.0.1",
          port: server.port,
          staticKeyPair,
          signal: ctx.signal,
        });
        try {
          await fc.request({ type: "login", user, password: "bench-password", peerPort: 1 }, {
            timeoutMs: 30_000,
          });
        } finally {
          await fc.close();
        }
        latencies.push(performance.now() - started);
      } catch (error) {
        failures.push(error instanceof Error ? error.message : String(error));
      }
    }
  }));
  const loginMs = performance.now() - t0;
  const serverCpu = await cpuSeconds(server.proc.pid) - cpu0;
  if (latencies.length === 0) throw new Error(`no login succeeded: ${failures.at(-1)}`);
  await server.proc.stop();

  ctx.log(`  raw scrypt for ${seconds} s, ${RAW_CONCURRENCY} at a time`);
  let hashes = 0;
  // This process does nothing else meanwhile: its CPU is the hashes' (scrypt's threads included).
  const rawCpu0 = await cpuSeconds(Deno.pid);
  const r0 = performance.now();
  const rawUntil = r0 + seconds * 1000;
  await Promise.all(Array.from({ length: RAW_CONCURRENCY }, async () => {
    while (performance.now() < rawUntil && !ctx.signal.aborted) {
      await hashPassword("bench-password", kdf);
      hashes++;
    }
  }));
  const rawMs = performance.now() - r0;
  const rawCpuMs = (await cpuSeconds(Deno.pid) - rawCpu0) * 1000 / Math.max(1, hashes);
  const loginCpuMs = serverCpu * 1000 / latencies.length;

  const rate = latencies.length / (loginMs / 1000);
  const rawRate = hashes / (rawMs / 1000);
  latencies.sort((a, b) => a - b);
  const baselineName = `raw scrypt, ${RAW_CONCURRENCY} at a time (the server's parameters)`;
  return {
    measurements: [
      { metric: "login rate", value: rate, unit: "/s", baseline: rawRate, baselineName },
      { metric: "login p50", value: percentile(latencies, 0.5), unit: "ms" },
      { metric: "login p99", value: percentile(latencies, 0.99), unit: "ms" },
    ],
    params: { seconds, concurrency: CONCURRENCY, users, kdf },
    notes: [
      `${latencies.length} password logins in ${(loginMs / 1000).toFixed(1)} s ` +
      `(${rate.toFixed(2)}/s; raw scrypt ${rawRate.toFixed(2)}/s), ` +
      `${CONCURRENCY} under way at once from this process (${users} users, the same password), ` +
      `each on a new connection: TCP, hello, Noise XX, login (scrypt on the server), welcome, ` +
      `then the connection closed; ${failures.length} failed${
        failures.length > 0 ? ` (last: ${failures.at(-1)})` : ""
      }. Server CPU: ${serverCpu.toFixed(1)} s, ${loginCpuMs.toFixed(1)} ms per login (the ` +
      `hash included).`,
      `Baseline: hashPassword() (lib/server/accounts.ts, ${kdf}) in this process, ` +
      `${RAW_CONCURRENCY} at a time, for ${seconds} s: ${hashes} hashes, ` +
      `${(rawMs / Math.max(1, hashes) * RAW_CONCURRENCY).toFixed(0)} ms each, ` +
      `${rawCpuMs.toFixed(1)} ms of CPU each. A login's CPU beyond its hash: ` +
      `${(loginCpuMs - rawCpuMs).toFixed(1)} ms (${(100 * loginCpuMs / rawCpuMs).toFixed(0)} % ` +
      `of the hash's CPU in all).`,
    ],
  };
}

export const login: BenchItem = {
  name: "login",
  title: "password logins per second (scrypt) beside the raw scrypt rate",
  metrics: ["login rate", "login p50", "login p99"],
  timeoutMs: (quick) => quick ? 45_000 : 120_000,
  run,
};
