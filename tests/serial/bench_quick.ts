/**
 * Keeps the benchmarks from rotting: `scripts/bench.ts --quick` runs every item, with its real
 * processes, into a temporary directory, and every item must report a number for every metric
 * it declares. Speed goals are not checked here: those are benchmarks, not tests.
 *
 * It lives in tests/serial/ under a name that `deno test`'s discovery (`*_test.ts`) does not
 * match, so the parallel suite never picks it up; `deno task test:serial` names it and runs it
 * after the parallel suite, alone: a bench shares the machine with nothing of ours. Its deadline
 * is the sum of the items' own limits, so a slow machine makes it slower, never red.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ITEMS } from "../../scripts/bench/items.ts";
import type { RunSummary } from "../../scripts/bench/report.ts";
import { runDeno } from "../support/processes.ts";

const DEADLINE_MS = ITEMS.reduce((sum, item) => sum + item.timeoutMs(true), 0) + 30_000;

Deno.test("bench --quick runs every item and reports a number for every metric", async () => {
  const out = await Deno.makeTempDir({ prefix: "confab-bench-test-" });
  try {
    const { code, output } = await runDeno(
      ["run", "--allow-all", "scripts/bench.ts", "--quick", "--out", out],
      DEADLINE_MS,
    );
    assert.equal(code, 0, `bench --quick exited ${code}:\n${output}`);
    assert.match(output, /item\s+metric\s+value\s+baseline\s+ratio\s+goal/);

    const run = JSON.parse(await Deno.readTextFile(join(out, "results.json"))) as RunSummary;
    assert.equal(run.mode, "quick");
    assert.deepEqual(run.items.map((i) => i.name), ITEMS.map((i) => i.name));
    for (const item of ITEMS) {
      const summary = run.items.find((i) => i.name === item.name)!;
      assert.equal(summary.error, undefined, `${item.name} failed: ${summary.error}`);
      for (const metric of item.metrics) {
        const row = run.results.find((r) => r.item === item.name && r.metric === metric);
        assert.ok(row, `${item.name} reported no "${metric}"`);
        assert.ok(
          Number.isFinite(row.value) && row.value >= 0,
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

    const report = await Deno.readTextFile(join(out, "REPORT.md"));
    for (const fact of ["nproc", "CPU", "memory", "Deno", run.date]) {
      assert.ok(report.includes(fact), `REPORT.md lacks ${fact}`);
    }
    for (const item of ITEMS) assert.ok(report.includes(`### ${item.name}`));
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
