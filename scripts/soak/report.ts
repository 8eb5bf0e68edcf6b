/**
 * The soak's figures as text: the summary printed at the end of a run, and the generated block
 * "soak" of bench/REPORT.md (under "Soak"; the bench and hand-written text keep it).
 */
import { ROOT } from "../bench/support.ts";
import { loadAverage, machineFacts, markdownTable } from "../bench/report.ts";
import { setBlock } from "../bench/report_blocks.ts";
import type { SoakResult } from "./run.ts";

/** How often the file was shared, and how many of those shares began sending. */
function fileTries(f: SoakResult["figures"]): string {
  return `shared ${f.fileShares} ${f.fileShares === 1 ? "time" : "times"}, ${f.fileStarts} began`;
}

/** One line per figure, for the end of a run. */
export function summaryLines(r: SoakResult): string[] {
  const f = r.figures;
  const kinds = [...new Set(r.happened.map((h) => h.trim().split(/\s+/)[2]))];
  return [
    `${r.clients} clients, ${(r.wallMs / 1000).toFixed(0)} s in all, ` +
    `${r.messagesPerSecond.toFixed(1)} numbered messages/s while faults came`,
    `faults: ${r.happened.length} (${kinds.join(", ")})`,
    `sent ${f.sent}: delivered ** ${f.delivered}, stored * ${f.stored}, refused ! ${f.refused} ` +
    `(${f.refusedSilently} without telling the sender); ${f.shownFromMail} shown from the mailbox`,
    `lost ${f.lost + f.lostAtSender}, duplicated in a history ${f.duplicatedInHistory}, ` +
    `shown twice ${f.shownTwice}, out of order ${f.outOfOrder}, unresolved ${f.unresolved}`,
    `group: missing at a member ${f.groupMissing}, filed as 1:1 ${f.groupMisfiled}, ` +
    `refused and told ${f.groupRefused}`,
    `file: ${f.file} (${fileTries(f)}), corrupt files ${f.filesCorrupt}`,
    `last delivery ${(f.lastDeliveryAfterFaultMs / 1000).toFixed(1)} s after the last fault; ` +
    `settled in ${(r.settleMs / 1000).toFixed(1)} s`,
    `databases intact: ${f.databases - f.databasesBroken} of ${f.databases}`,
  ];
}

/** Replaces (or adds, under "## Soak" at the end) the soak's block of the REPORT.md at `path`. */
export async function writeSoakSection(
  path: string,
  r: SoakResult,
  run: { groups: boolean; minutes: number; groupChaos?: string },
): Promise<void> {
  const before = await Deno.readTextFile(path).catch(() => "# Confab benchmarks\n");
  const m = await machineFacts(ROOT);
  const f = r.figures;
  const section = [
    `\`deno task soak\` on ${new Date().toISOString()}: ${run.minutes} minutes of faults, ` +
    `seed ${f.seed} (\`deno task soak --seed ${f.seed}\` replays the schedule), group ` +
    `scenario ${run.groups ? "on" : "off"}. Verdict: **${r.ok ? "passed" : "FAILED"}**. ` +
    `Machine: ${m.nproc} × ${m.cpuModel}, Deno ${m.deno}, commit ${m.commit}, load average ` +
    `${await loadAverage()} at the end.`,
    "",
    markdownTable(["figure", "value"], [
      ["clients", `${r.clients} (and one server), real processes`],
      ["faults", String(r.happened.length)],
      ["numbered messages sent", String(f.sent)],
      ["acknowledged `**` / `*` (marks at the end)", `${f.delivered} / ${f.stored}`],
      ["shown from the mailbox (the rest came directly)", String(f.shownFromMail)],
      ["refused `!`", `${f.refused} (${f.refusedSilently} without telling the sender)`],
      ["lost", String(f.lost + f.lostAtSender)],
      ["duplicated in any history", String(f.duplicatedInHistory)],
      ["shown twice", String(f.shownTwice)],
      ["out of order per sender", String(f.outOfOrder)],
      ["unresolved at the end", String(f.unresolved)],
      ["group members missing a message", String(f.groupMissing)],
      ["group messages filed as 1:1", String(f.groupMisfiled)],
      ["file", `${f.file}, ${fileTries(f)}, ${f.filesCorrupt} corrupt`],
      ["last delivery after the last fault", `${(f.lastDeliveryAfterFaultMs / 1000).toFixed(1)} s`],
      ["settled after the last fault", `${(r.settleMs / 1000).toFixed(1)} s`],
      [
        "databases intact (`PRAGMA integrity_check`)",
        `${f.databases - f.databasesBroken} of ${f.databases}`,
      ],
      ["wall time", `${(r.wallMs / 1000).toFixed(0)} s`],
    ]),
    "",
    ...(run.groupChaos
      ? [`Then the seeded group chaos run with the same seed: ${run.groupChaos}.`, ""]
      : []),
    "Faults as they happened (time after the faults began):",
    "",
    "```",
    ...r.happened,
    "```",
    "",
    ...(r.ok ? [] : ["Problems:", "", "```", ...r.problems, "```", ""]),
  ];
  await Deno.writeTextFile(path, setBlock(before, "soak", section.join("\n"), "## Soak"));
}
