/**
 * Makes sure nothing the bench started outlives it, however the bench ends (even by SIGKILL,
 * which runs no cleanup): the bench tells this process each child's pid (`+PID`, and `-PID`
 * when it is gone) and each temporary directory (`+DIR`, `-DIR`); when stdin ends, every pid
 * still listed gets SIGKILL and every directory still listed is removed. (`server.ts` keeps
 * serving when its stdin ends, by design, so it needs this.)
 *
 *   deno run --allow-run --allow-write scripts/bench/reaper.ts
 */
import { readLines } from "../../lib/cli/lines.ts";

const pids = new Set<number>();
const dirs = new Set<string>();
for await (const line of readLines(Deno.stdin.readable)) {
  const add = line.startsWith("+");
  const what = line.slice(1);
  if ((!add && !line.startsWith("-")) || what === "") continue;
  if (/^\d+$/.test(what)) {
    if (add) pids.add(Number(what));
    else pids.delete(Number(what));
  } else if (add) dirs.add(what);
  else dirs.delete(what);
}
for (const pid of pids) {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* already gone */ }
}
for (const dir of dirs) {
  // Give the killed processes a moment to let go of their files.
  await new Promise((r) => setTimeout(r, 100));
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
