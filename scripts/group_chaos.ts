/**
 * `deno task group-chaos [--seeds N] [--from S] [--kill-unshown]`: the seeded group chaos run
 * (tests/support/group_chaos.ts) for N seeds in a row from S (defaults: 20 from 1), one line per
 * seed; stops at the first failing seed, with its schedule and what went wrong. Run it under
 * the suite lock on a shared machine: each seed runs a server and six clients for ~30 s.
 * `--kill-unshown` kills the victim at a moment its store holds one of the author's messages it
 * has not shown yet.
 */
import { parseArgs } from "node:util";
import { runGroupChaos } from "../tests/support/group_chaos.ts";

const { values } = parseArgs({
  options: {
    seeds: { type: "string", default: "20" },
    from: { type: "string", default: "1" },
    verbose: { type: "boolean", default: false },
    "kill-unshown": { type: "boolean", default: false },
  },
});
const count = Number(values.seeds);
const from = Number(values.from);
if (!Number.isInteger(count) || count < 1 || !Number.isInteger(from)) {
  console.error(
    "usage: deno task group-chaos [--seeds N] [--from SEED] [--kill-unshown] [--verbose]",
  );
  Deno.exit(2);
}
let worstConverge = 0;
let worstSettle = 0;
for (let seed = from; seed < from + count; seed++) {
  const started = Date.now();
  const report = await runGroupChaos({
    seed,
    killUnshown: values["kill-unshown"],
    log: values.verbose ? (line) => console.log(`  ${line}`) : undefined,
  });
  worstConverge = Math.max(worstConverge, report.convergeMs);
  worstSettle = Math.max(worstSettle, report.settleMs);
  const ok = report.problems.length === 0;
  console.log(
    `seed ${seed}: ${ok ? "ok" : "FAILED"} — ${report.sent} messages, ${report.copies} copies ` +
      `checked, member lists equal ${report.convergeMs} ms after the mesh, all copies in place ` +
      `${report.settleMs} ms after sending stopped (${
        ((Date.now() - started) / 1000).toFixed(0)
      } s)`,
  );
  if (!ok) {
    console.log(`  ${report.timeline.join("\n  ")}`);
    console.log(`  problems:\n    ${report.problems.join("\n    ")}`);
    Deno.exit(1);
  }
}
console.log(
  `${count} seeds in a row passed (${from}–${from + count - 1}); worst: member lists equal ` +
    `${worstConverge} ms after the mesh, copies in place ${worstSettle} ms after sending stopped`,
);
