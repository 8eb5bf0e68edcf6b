/**
 * The chaos soak's quick run, as CI runs it: `scripts/soak.ts --quick` with a fresh seed each
 * time, real server and clients under kills, freezes, a network cut and a mailbox fill; the
 * checker's verdict decides. It runs in the parallel suite like any end-to-end test (its
 * deadlines hold with the suite and two CPU hogs beside it), listed in `deno task
 * test:parallel` among the long files, so that its half minute of faults overlaps the rest.
 *
 * A red run prints the seed and the checker's problems: `deno task soak --quick --seed N`
 * replays the same schedule.
 */
import assert from "node:assert/strict";
import { runDeno } from "./support/processes.ts";

/** The quick run takes under a minute idle; this holds with two CPU hogs beside it. */
const DEADLINE_MS = 300_000;

Deno.test("soak --quick: nothing lost, duplicated, shown twice or reordered under faults", async () => {
  const { code, output } = await runDeno(
    ["run", "--allow-all", "scripts/soak.ts", "--quick"],
    DEADLINE_MS,
  );
  assert.equal(code, 0, `soak --quick exited ${code}:\n${output}`);
  assert.match(output, /soak PASSED \(seed \d+\)/);
  assert.match(output, /lost 0, duplicated in a history 0, shown twice 0, out of order 0/);
  assert.match(output, /group scenario on/);
  assert.match(output, /group: missing at a member 0, filed as 1:1 0/);
  assert.match(output, /file: (identical|failed, reported)/);
  assert.match(output, /databases intact: (\d+) of \1\b/);
  // The run's schedule and figures (the seed replays its faults): CI logs keep them.
  console.log(output.trim());
});
