/**
 * The seeded group chaos run (tests/support/group_chaos.ts) as a test: a server kill, a member
 * killed and restarted (a sender killed while it is away, so it catches up from the other
 * members), a member frozen past the peer timeout and concurrent adds while
 * everyone re-attaches, under three steady senders. One seed per run, drawn at random unless
 * CONFAB_GROUP_CHAOS_SEEDS names them (`7`, `1,5,9` or `1-20`); a failure names its seed, which
 * replays the same schedule. `deno task group-chaos` runs many seeds in a row.
 */
import assert from "node:assert/strict";
import { runGroupChaos } from "./support/group_chaos.ts";

/** The seeds to run: from the environment, or one at random. */
export function chaosSeeds(spec = Deno.env.get("CONFAB_GROUP_CHAOS_SEEDS")): number[] {
  if (!spec) return [Math.floor(Math.random() * 1_000_000)];
  return spec.split(",").flatMap((part) => {
    const [from, to] = part.split("-").map((n) => Number(n.trim()));
    if (!Number.isInteger(from) || (to !== undefined && !Number.isInteger(to))) {
      throw new RangeError(`CONFAB_GROUP_CHAOS_SEEDS: "${part}" is not a seed or a range`);
    }
    return to === undefined ? [from!] : Array.from({ length: to - from! + 1 }, (_, i) => from! + i);
  });
}

for (const seed of chaosSeeds()) {
  Deno.test(`group chaos, seed ${seed}: every member has every message once and in order, the same member list, nobody expelled`, async () => {
    const report = await runGroupChaos({ seed });
    assert.ok(report.sent > 50, `only ${report.sent} messages were sent`);
    assert.deepEqual(
      report.problems,
      [],
      `seed ${seed} (replay: CONFAB_GROUP_CHAOS_SEEDS=${seed}):\n  ` +
        report.timeline.join("\n  "),
    );
  });
}
