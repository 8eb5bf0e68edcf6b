/**
 * The NAT lab's own housekeeping: namespaces left behind by a test process that was killed
 * before its `finally` ran are deleted by the next lab, and nobody else's are touched.
 */
import assert from "node:assert/strict";
import { canBuildLab, sweepStaleLabs } from "../support/nat_lab.ts";

const ignore = !canBuildLab();

async function ip(...args: string[]): Promise<string> {
  const out = await new Deno.Command("ip", { args, stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

const namespaces = async () => (await ip("netns", "list")).split("\n").map((l) => l.split(" ")[0]);

Deno.test({
  name: "sweepStaleLabs() deletes the lab namespaces of a dead process and keeps a live one's",
  ignore,
  async fn() {
    // A process that has exited: its pid names a lab nobody will tear down.
    const dead = new Deno.Command("true").spawn();
    await dead.status;
    const live = new Deno.Command("sleep", { args: ["60"] }).spawn();
    const stale = `cnl${dead.pid}x1-pub`;
    const kept = `cnl${live.pid}x1-pub`;
    try {
      await ip("netns", "add", stale);
      await ip("netns", "add", kept);
      // A NAT test running beside this one may sweep the stale namespace first: what counts
      // is that it is gone afterwards, and that the live process's namespace stays.
      const swept = await sweepStaleLabs();
      assert.ok(!swept.includes(kept));
      const left = await namespaces();
      assert.ok(!left.includes(stale), `${stale} is still there`);
      assert.ok(left.includes(kept), `${kept} was deleted`);
    } finally {
      live.kill("SIGKILL");
      await live.status;
      for (const ns of [stale, kept]) await ip("netns", "del", ns).catch(() => {});
    }
  },
});
