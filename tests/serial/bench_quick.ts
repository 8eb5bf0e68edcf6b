/**
 * Keeps the benchmarks from rotting: `scripts/bench.ts --quick` runs every item, with its real
 * processes, into a temporary directory, and every item must report a number for every metric
 * it declares. Speed goals are not checked here: those are benchmarks, not tests.
 *
 * It lives in tests/serial/ under a name that `deno test`'s discovery (`*_test.ts`) does not
 * match, so the parallel suite never picks it up; `deno task test:serial` names it and runs it
 * after the parallel suite, alone. The items run in three lanes at once, each lane one
 * `bench --quick` process taking its items in order: a quick item mostly waits on its processes
 * and keeps less than one core busy (two lanes left the two cores of our machines idle a quarter
 * of the time, measured with vmstat), so three lanes fill them. Each item
 * keeps its own limit, and each lane's deadline is the sum of its items' limits, so a slow
 * machine makes it slower, never red.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ITEMS } from "../../scripts/bench/items.ts";
import type { RunSummary } from "../../scripts/bench/report.ts";
import type { BenchItem } from "../../scripts/bench/types.ts";
import { runDeno } from "../support/processes.ts";

/**
 * The lanes, each in the order of ITEMS. They take about as long as each other: in two lanes
 * on an idle machine the items took cluster 6.8 s, relay 5.1, server-conns 4.8, group 3.5, file
 * 3.2, reattach 2.9, failover 2.7, chat-rtt 1.4, offline 1.3 and login 1.3. The group item reads
 * the chat-rtt item's figures as its baseline, so those two stay in one lane.
 */
const LANE_ITEMS = [
  ["cluster", "reattach", "offline"],
  ["relay", "file", "failover"],
  ["server-conns", "chat-rtt", "group", "login"],
];
const LANES: BenchItem[][] = LANE_ITEMS.map((names) => ITEMS.filter((i) => names.includes(i.name)));

/** Runs one lane's items with `bench --quick`; what it wrote, and its output. */
async function runLane(items: BenchItem[], out: string) {
  const deadlineMs = items.reduce((sum, item) => sum + item.timeoutMs(true), 0) + 30_000;
  const { code, output } = await runDeno(
    [
      "run",
      "--allow-all",
      "scripts/bench.ts",
      ...items.map((i) => i.name),
      "--quick",
      "--out",
      out,
    ],
    deadlineMs,
  );
  assert.equal(
    code,
    0,
    `bench --quick ${items.map((i) => i.name).join(" ")} exited ${code}:\n${output}`,
  );
  assert.match(output, /item\s+metric\s+value\s+baseline\s+ratio\s+goal/);
  const run = JSON.parse(await Deno.readTextFile(join(out, "results.json"))) as RunSummary;
  const report = await Deno.readTextFile(join(out, "REPORT.md"));
  return { run, report };
}

Deno.test("bench --quick runs every item and reports a number for every metric", async () => {
  assert.deepEqual(LANES.flat().map((i) => i.name).toSorted(), ITEMS.map((i) => i.name).toSorted());
  const out = await Deno.makeTempDir({ prefix: "confab-bench-test-" });
  try {
    const lanes = await Promise.all(LANES.map((items, n) => runLane(items, join(out, `lane${n}`))));
    for (const [n, { run, report }] of lanes.entries()) {
      const items = LANES[n]!;
      // What each lane took, item by item: the figures to balance the lanes by.
      const took = run.items.map((i) => `${i.name} ${i.seconds.toFixed(1)} s`).join(", ");
      console.log(`lane ${n + 1}: ${run.seconds.toFixed(1)} s (${took})`);
      assert.equal(run.mode, "quick");
      assert.deepEqual(run.items.map((i) => i.name), items.map((i) => i.name));
      for (const item of items) {
        const summary = run.items.find((i) => i.name === item.name)!;
        assert.equal(summary.error, undefined, `${item.name} failed: ${summary.error}`);
        for (const metric of item.metrics) {
          const row = run.results.find((r) => r.item === item.name && r.metric === metric);
          assert.ok(row, `${item.name} reported no "${metric}"`);
          // A net CPU figure (the idle use over as long taken out) is a difference of /proc
          // counts in 10 ms ticks: with a quick run's 20 messages and 250 ms idle windows the
          // ticks alone move it by about ±1 ms per member per message, below zero at times on a
          // loaded machine (CI run 92: -0.087). Every other figure is a count, a time or a rate.
          const net = metric.endsWith("CPU per member per message");
          assert.ok(
            Number.isFinite(row.value) && row.value >= (net ? -2 : 0),
            `${item.name} ${metric}: ${row.value}`,
          );
          if (row.baseline !== null) {
            assert.ok(
              Number.isFinite(row.baseline),
              `${item.name} ${metric} baseline: ${row.baseline}`,
            );
            assert.ok(row.ratio === null || Number.isFinite(row.ratio));
          }
          if (row.goal !== null) assert.equal(typeof row.pass, "boolean");
        }
      }
      for (const fact of ["nproc", "CPU", "memory", "Deno", run.date]) {
        assert.ok(report.includes(fact), `REPORT.md lacks ${fact}`);
      }
      for (const item of items) assert.ok(report.includes(`### ${item.name}`));
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
