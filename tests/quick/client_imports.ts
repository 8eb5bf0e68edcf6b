/**
 * A client starts without Node's modules: importing node:crypto, node:path, node:util, node:net
 * or node:dns makes Deno load its Node compatibility scripts, ≈ 40 ms of CPU in every client
 * process (lib/crypto/node_crypto.ts). Only node:sqlite (its store; a few ms) may be imported
 * statically by anything client.ts loads; the others are imported where they are needed.
 */
import assert from "node:assert/strict";
import { runDeno } from "../support/processes.ts";

interface ModuleInfo {
  specifier: string;
  /** `code` is set for an import that runs (not for `import type`). */
  dependencies?: { specifier: string; code?: unknown; isDynamic?: boolean }[];
}

Deno.test("client.ts imports no Node module at start-up but node:sqlite", async () => {
  const { code, output } = await runDeno(["info", "--json", "client.ts"], 60_000);
  assert.equal(code, 0, output);
  const info = JSON.parse(output.slice(0, output.lastIndexOf("}") + 1)) as {
    modules: ModuleInfo[];
  };
  assert.ok(info.modules.length > 50, `deno info listed only ${info.modules.length} modules`);
  const found: string[] = [];
  for (const module of info.modules) {
    for (const dependency of module.dependencies ?? []) {
      if (!dependency.specifier.startsWith("node:") || dependency.isDynamic) continue;
      if (dependency.code === undefined) continue; // types only: nothing is loaded
      if (dependency.specifier === "node:sqlite") continue;
      found.push(
        `${
          module.specifier.replace(/^.*?\/(lib\/|client\.ts)/, "$1")
        } imports ${dependency.specifier}`,
      );
    }
  }
  assert.deepEqual(found, [], "import these where they are needed (await import(...))");
});
