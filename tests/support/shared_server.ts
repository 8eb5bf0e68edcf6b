/**
 * One server shared by the scenarios of a test file that leave it as they found it. Starting a
 * process is most of what this suite's tests cost (a server that starts and stops takes about
 * 180 ms of CPU), so such scenarios run as steps of one `Deno.test` against one real server:
 * the test starts it with `await using` and stops it at its end, and its sanitizers check
 * every op and resource then, once. (A server started in one `Deno.test` and used by the next
 * trips the op and resource sanitizers, so sharing goes through steps.)
 *
 * A shared scenario:
 * - names its users with `user("alice")`: the name with the scenario's own suffix, so that no
 *   scenario's contacts, mail, presence or throttles reach another's;
 * - neither kills, restarts, freezes nor `esc`s the server, needs flags of its own, reads whole
 *   tables nor counts on an empty database; a scenario that does keeps a `Deno.test` and a
 *   server of its own, as before;
 * - does not wait on the server's output: its lines are shared by every scenario (a wait
 *   consumes them in order and could match another scenario's line); a scenario that reads
 *   the server's log keeps its own server;
 * - fails few logins on purpose: the server lets one address (here 127.0.0.1, for every
 *   scenario) fail 20 logins before it slows it down; a scenario about that throttle keeps its
 *   own server.
 * The shared server lifts the per-address signup limit (`--max-signups-per-hour 0`): every
 * scenario's users sign up from 127.0.0.1. The scenarios that test that limit keep their own
 * server.
 *
 * ```ts
 * const shared = sharedServer("chat: scenarios on one server");
 * shared.test("a message arrives", async ({ server, user }) => {
 *   await using alice = await TestClient.start(user("alice"), server);
 *   …
 * });
 * ```
 */
import { startServer, type TestServer } from "./processes.ts";

/** What a shared scenario gets: the server, and its own names for users. */
export interface SharedScene {
  server: TestServer;
  /** This scenario's name for the user called `name` in it (`name` and a suffix of its own). */
  user(name: string): string;
}

/** Flags of a shared server: every scenario's users sign up from 127.0.0.1. */
export const SHARED_ARGS: readonly string[] = ["--max-signups-per-hour", "0"];

/** The ending {@link runScenes} gives a scenario's user names (`_3` in the third). */
export const SCENE_SUFFIX = /_\d+$/;

/**
 * Runs each of `scenes` as a step of `t`, in order, with `run`, giving the `i`th its own names
 * for users (`user("alice")` is `alice_i`).
 */
export async function runScenes<F>(
  t: Deno.TestContext,
  scenes: readonly { name: string; fn: F }[],
  run: (fn: F, user: (name: string) => string) => Promise<void>,
): Promise<void> {
  for (const [i, scene] of scenes.entries()) {
    const suffix = `_${i + 1}`;
    await t.step(scene.name, () => run(scene.fn, (name) => name + suffix));
  }
}

/** The scenarios of a file that share one server; add them with `test`. */
export interface SharedServer {
  test(name: string, fn: (scene: SharedScene) => Promise<void>): void;
}

/**
 * Registers a `Deno.test` called `title` that starts one server (`options` as for
 * {@link startServer}) and runs each scenario added with `test` as a step, in order.
 */
export function sharedServer(
  title: string,
  options: Parameters<typeof startServer>[0] = {},
): SharedServer {
  const scenarios: { name: string; fn: (scene: SharedScene) => Promise<void> }[] = [];
  Deno.test(title, async (t) => {
    await using server = await startServer({
      ...options,
      args: [...SHARED_ARGS, ...options.args ?? []],
    });
    await runScenes(t, scenarios, (fn, user) => fn({ server, user }));
  });
  return { test: (name, fn) => void scenarios.push({ name, fn }) };
}
