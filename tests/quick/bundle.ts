/**
 * The single-file distribution: scripts/bundle.ts builds both bundles into a temporary
 * directory, and each bundle then runs as a real process, as a user would run it.
 */
import assert from "node:assert/strict";
import { CLIENT_PERMISSIONS, SERVER_PERMISSIONS } from "../../scripts/permissions.ts";
import { Proc, runDeno } from "../support/processes.ts";

const DEADLINE_MS = 60_000;

Deno.test("scripts/bundle.ts builds bundles of server.ts and client.ts that run", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "confab-bundle-test-" });
  try {
    await t.step("bundle.ts --out-dir writes confab-server.js and confab.js", async () => {
      const { code, output } = await runDeno(
        ["run", "--allow-all", "scripts/bundle.ts", "--out-dir", dir],
        DEADLINE_MS,
      );
      assert.equal(code, 0, `bundle.ts failed:\n${output}`);
      assert.match(output, /confab-server\.js \(\d+(\.\d)? (B|KiB|MiB)\)/);
      assert.match(output, /confab\.js \(\d+(\.\d)? (B|KiB|MiB)\)/);
      for (const file of ["confab-server.js", "confab.js"]) {
        assert.ok((await Deno.stat(`${dir}/${file}`)).size > 0, `${file} is empty`);
      }
      // Run directly (./confab.js), each asks for the permissions its task grants.
      for (
        const [file, permissions] of [
          ["confab-server.js", SERVER_PERMISSIONS],
          ["confab.js", CLIENT_PERMISSIONS],
        ] as const
      ) {
        const first = (await Deno.readTextFile(`${dir}/${file}`)).split("\n", 1)[0];
        assert.equal(first, `#!/usr/bin/env -S deno run ${permissions.join(" ")}`);
      }
    });

    // Outside the repository: a bundle needs no file of it.
    for (const file of ["confab-server.js", "confab.js"]) {
      await t.step(`${file} --help prints usage and exits 0`, async () => {
        const { code, output } = await runDeno(
          ["run", "-A", `${dir}/${file}`, "--help"],
          DEADLINE_MS,
          dir,
        );
        assert.equal(code, 0, `${file} --help exited ${code}:\n${output}`);
        assert.match(output, /Usage:/);
      });
    }

    await t.step("confab-server.js listens, accepts a connection and exits 0 on esc", async () => {
      await using server = new Proc(
        ["run", "-A", `${dir}/confab-server.js`, "--port", "0", "--data", `${dir}/data`],
        "bundled server",
        { cwd: dir },
      );
      const banner = await server.out.waitFor(
        (l) => /^confab server listening on 127\.0\.0\.1:\d+\b/.test(l),
        "the listening banner",
        DEADLINE_MS,
      );
      const port = Number(/:(\d+)\b/.exec(banner)![1]);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      await server.write("esc");
      await server.closeStdin();
      const status = await server.exited(DEADLINE_MS);
      await Promise.all([server.out.ended, server.err.ended]);
      assert.equal(
        status.code,
        0,
        `server exited ${status.code}:\n${server.out.lines.join("\n")}\n` +
          server.err.lines.join("\n"),
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
