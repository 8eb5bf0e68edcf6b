/**
 * `deno task soak`: the chaos soak. A real server and nine real clients chat (two 1:1 pairs, a
 * group of four, a file, a mailbox filled to its quota) while a seeded schedule kills (-9) and
 * restarts the server and clients, freezes clients past the peer timeout and cuts the network
 * between two of them; then the checker proves nothing was lost, duplicated, shown twice or
 * reordered, and every database is intact. With the group scenario on, a full run is followed by
 * the seeded group chaos run (`deno task group-chaos`) with the same seed.
 *
 *   deno task soak [--quick] [--seed N] [--minutes M] [--no-groups] [--out DIR] [--no-report]
 *
 * Exits 0 when the checker finds nothing wrong, 1 when it does (the seed replays the same
 * schedule), 2 on bad arguments.
 */
import { Command, InvalidArgumentError } from "commander";
import { join, resolve } from "node:path";
import { reapDir, ROOT, stopReaper } from "./bench/support.ts";
import { runSoak, type SoakResult } from "./soak/run.ts";
import { randomSeed } from "./soak/schedule.ts";
import { summaryLines, writeSoakSection } from "./soak/report.ts";
import { runGroupChaos } from "../tests/support/group_chaos.ts";

function integer(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

const program = new Command()
  .name("soak")
  .description("Confab chaos soak: real processes, seeded faults, a checker at the end.")
  .option("--quick", "a short run (under a minute), as CI runs it")
  .option(
    "--seed <n>",
    "the schedule's seed (default: a random one, printed)",
    integer(0, 2 ** 32 - 1),
  )
  .option("--minutes <m>", "how long faults keep coming in a full run", integer(1, 600), 10)
  .option("--no-groups", "no group of four (its members chat in two more pairs)")
  .option("--out <dir>", "keep the run's files (events, homes, databases) there")
  .option("--no-report", "do not write the soak section of bench/REPORT.md (full runs do)")
  .showHelpAfterError()
  // `deno task soak -- --quick` passes the `--` through: drop it.
  .parse(["deno", "soak.ts", ...Deno.args.filter((a) => a !== "--")]);

const opts = program.opts<{
  quick?: boolean;
  seed?: number;
  minutes: number;
  groups?: boolean;
  out?: string;
  report: boolean;
}>();
const quick = opts.quick === true;
const groups = opts.groups !== false;
const seed = opts.seed ?? randomSeed();
const outDir = opts.out ? resolve(opts.out) : await Deno.makeTempDir({ prefix: "confab-soak-" });
if (!opts.out) reapDir(outDir);
const chaosMs = quick ? 25_000 : opts.minutes * 60_000;

console.log(
  `soak: ${quick ? "quick" : "full"} run, seed ${seed}, faults for ${chaosMs / 1000} s, ` +
    `group scenario ${groups ? "on" : "off"}; files in ${outDir}`,
);
let result: SoakResult | undefined;
let failure: unknown;
try {
  result = await runSoak({
    seed,
    quick,
    chaosMs,
    groups,
    outDir,
    log: (line) => console.log(line),
  });
} catch (error) {
  failure = error;
}

let code = 1;
if (result) {
  console.log(`\nsoak ${result.ok ? "PASSED" : "FAILED"} (seed ${seed})`);
  for (const line of summaryLines(result)) console.log(`  ${line}`);
  if (!result.ok) {
    console.log("\nproblems:");
    for (const line of result.problems) console.log(`  ${line}`);
  }
  await Deno.writeTextFile(join(outDir, "summary.json"), JSON.stringify(result, null, 2) + "\n");
  code = result.ok ? 0 : 1;
} else {
  console.error(`\nsoak could not run (seed ${seed}): ${(failure as Error)?.stack ?? failure}`);
}
let groupChaos: string | undefined;
if (result && groups && !quick) {
  // Then the seeded group chaos run (`deno task group-chaos`) with the same seed: a group of four
  // under a server kill, a member kill and restart (and a sender killed while that member is
  // away, so it catches up from the others), a freeze and two adds while all re-attach.
  // (Not in the quick run: the suite runs it as a test of its own, beside the parallel tests.)
  const chaos = await runGroupChaos({ seed });
  const passed = chaos.problems.length === 0;
  groupChaos = `group chaos ${passed ? "PASSED" : "FAILED"} (seed ${seed}): ${chaos.sent} ` +
    `messages, ${chaos.copies} copies checked, member lists equal ${chaos.convergeMs} ms after ` +
    `the mesh, all copies in place ${chaos.settleMs} ms after sending stopped`;
  console.log(`\n${groupChaos}`);
  if (!passed) {
    for (const line of [...chaos.timeline, ...chaos.problems]) console.log(`  ${line}`);
    console.log(`replay: deno task group-chaos --seeds 1 --from ${seed}`);
    code = 1;
  }
}
if (result && !quick && opts.report) {
  const path = join(ROOT, "bench", "REPORT.md");
  await writeSoakSection(path, result, { groups, minutes: opts.minutes, groupChaos });
  console.log(`\nwrote the soak section of ${path}`);
}
if (code === 0 && !opts.out) {
  await Deno.remove(outDir, { recursive: true }).catch(() => {});
  reapDir(outDir, true);
} else {
  console.log(`\nthe run's files are in ${outDir}`);
  console.log(`replay: deno task soak${quick ? " --quick" : ""} --seed ${seed}`);
  reapDir(outDir, true); // kept for a look
}
await stopReaper();
Deno.exit(code);
