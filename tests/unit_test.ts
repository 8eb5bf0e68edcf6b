/**
 * The unit tests: every file in tests/unit/ (no server, client or other program started), loaded
 * into this one test module so that they share one runtime. Deno gives each test module a
 * runtime of its own, which costs ≈ 0.34 CPU-s here even for an empty module: as 36 modules these
 * tests took 19.5-21.3 CPU-s in `deno task test`, as one 5.0-5.4 (docs/architecture.md, "The test
 * suite's time"). A failure still names the file and line it comes from.
 *
 * Their files are not named `*_test.ts`, so that `deno test` does not also run each of them on
 * its own; run one with `deno test -A tests/unit/noise.ts`. A file added to tests/unit/ is
 * imported here, or the test below fails.
 */
import assert from "node:assert/strict";
import "./unit/accounts.ts";
import "./unit/bench_report.ts";
import "./unit/build_tool.ts";
import "./unit/bulk_frames.ts";
import "./unit/chacha_small.ts";
import "./unit/checkpointer.ts";
import "./unit/cli_lines.ts";
import "./unit/client_store.ts";
import "./unit/commands.ts";
import "./unit/console.ts";
import "./unit/docs.ts";
import "./unit/ed25519.ts";
import "./unit/file_hash.ts";
import "./unit/file_names.ts";
import "./unit/fingerprint.ts";
import "./unit/frame.ts";
import "./unit/framed_connection.ts";
import "./unit/group_catchup.ts";
import "./unit/group_state.ts";
import "./unit/identity.ts";
import "./unit/kick_lines.ts";
import "./unit/line_editor.ts";
import "./unit/messages.ts";
import "./unit/noise.ts";
import "./unit/peer_link.ts";
import "./unit/permissions.ts";
import "./unit/receipt_tree.ts";
import "./unit/reconnect_waits.ts";
import "./unit/render.ts";
import "./unit/schema.ts";
import "./unit/sealed_mail.ts";
import "./unit/sha256_small.ts";
import "./unit/soak.ts";
import "./unit/sqlite_store.ts";
import "./unit/time.ts";
import "./unit/transport.ts";

Deno.test("this module imports every file of tests/unit/", async () => {
  const source = await Deno.readTextFile(new URL(import.meta.url));
  const imported = new Set(
    [...source.matchAll(/^import "\.\/unit\/([^"]+)";$/gm)].map((m) => m[1]),
  );
  const files: string[] = [];
  for await (const entry of Deno.readDir(new URL("./unit/", import.meta.url))) {
    if (entry.isFile && entry.name.endsWith(".ts")) files.push(entry.name);
  }
  assert.deepEqual(
    files.filter((f) => !imported.has(f)).sort(),
    [],
    "add these to tests/unit_test.ts",
  );
});
