/**
 * The single-file distribution: scripts/bundle.ts builds both bundles into a temporary
 * directory, and each bundle then runs as a real process, as a user would run it.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { CLIENT_PERMISSIONS, SERVER_PERMISSIONS } from "../scripts/permissions.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BUNDLE_SCRIPT = fileURLToPath(new URL("../scripts/bundle.ts", import.meta.url));
const DEADLINE_MS = 60_000;
const decoder = new TextDecoder();

/** Runs a Deno subcommand to the end and returns its exit code and output. */
async function deno(
  args: string[],
  options: { cwd: string },
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: options.cwd,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(DEADLINE_MS),
  }).output();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

/**
 * Settles like `promise`, or rejects once `signal` aborts first. The abort listener is removed
 * either way, so a deadline that passes later leaves no rejection behind.
 */
function deadline<T>(promise: Promise<T>, signal: AbortSignal, what: string): Promise<T> {
  let onAbort = () => {};
  const timeout = new Promise<never>((_, reject) => {
    onAbort = () => reject(new Error(`timed out after ${DEADLINE_MS} ms waiting for ${what}`));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([promise, timeout])
    .finally(() => signal.removeEventListener("abort", onAbort));
}

/** Collects a process's output line by line and lets a test wait for a line to appear. */
class LineCollector {
  readonly lines: string[] = [];
  /** Settles once the stream has ended (it always drains the stream to its end). */
  readonly done: Promise<void>;
  #ended = false;
  #listeners = new Set<() => void>();

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = this.#pump(stream);
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    let partial = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (partial + chunk).split("\n");
      partial = parts.pop() ?? "";
      this.lines.push(...parts.map((line) => line.replace(/\r$/, "")));
      for (const listener of this.#listeners) listener();
    }
    if (partial !== "") this.lines.push(partial);
    this.#ended = true;
    for (const listener of this.#listeners) listener();
  }

  /** Resolves with the first line matching `pattern`; rejects if the output ends first. */
  waitFor(pattern: RegExp, signal: AbortSignal): Promise<RegExpMatchArray> {
    let listener = () => {};
    const found = new Promise<RegExpMatchArray>((resolve, reject) => {
      listener = () => {
        for (const line of this.lines) {
          const match = line.match(pattern);
          if (match) return resolve(match);
        }
        if (this.#ended) reject(new Error(`output ended without a line matching ${pattern}`));
      };
      this.#listeners.add(listener);
      listener();
    });
    return deadline(found, signal, `a line matching ${pattern}`)
      .catch((error: Error) => {
        throw new Error(`${error.message}; output so far:\n${this.lines.join("\n")}`);
      })
      .finally(() => this.#listeners.delete(listener));
  }
}

Deno.test("scripts/bundle.ts builds bundles of server.ts and client.ts that run", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "confab-bundle-test-" });
  try {
    await t.step("bundle.ts --out-dir writes confab-server.js and confab.js", async () => {
      const { code, stdout, stderr } = await deno(
        ["run", "--allow-all", BUNDLE_SCRIPT, "--out-dir", dir],
        { cwd: ROOT },
      );
      assert.equal(code, 0, `bundle.ts failed:\n${stdout}${stderr}`);
      assert.match(stdout, /confab-server\.js \(\d+(\.\d)? (B|KiB|MiB)\)/);
      assert.match(stdout, /confab\.js \(\d+(\.\d)? (B|KiB|MiB)\)/);
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

    for (const file of ["confab-server.js", "confab.js"]) {
      await t.step(`${file} --help prints usage and exits 0`, async () => {
        const { code, stdout, stderr } = await deno(["run", "-A", `${dir}/${file}`, "--help"], {
          cwd: dir,
        });
        assert.equal(code, 0, `${file} --help exited ${code}:\n${stdout}${stderr}`);
        assert.match(stdout, /Usage:/);
      });
    }

    await t.step("confab-server.js listens, accepts a connection and exits 0 on esc", async () => {
      const signal = AbortSignal.timeout(DEADLINE_MS);
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${dir}/confab-server.js`, "--port", "0", "--data", `${dir}/data`],
        cwd: dir,
        env: { NO_COLOR: "1" },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const stdin = child.stdin.getWriter();
      const stdout = new LineCollector(child.stdout);
      const stderr = new LineCollector(child.stderr);
      let exited = false;
      try {
        const [, port] = await stdout.waitFor(
          /^confab server listening on 127\.0\.0\.1:(\d+)\b/,
          signal,
        );
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
        conn.close();

        await stdin.write(new TextEncoder().encode("esc\n"));
        await stdin.close();
        const status = await deadline(child.status, signal, "the server to exit after esc")
          .catch((error: Error) => {
            throw new Error(`${error.message}; output so far:\n${stdout.lines.join("\n")}`);
          });
        exited = true;
        await Promise.all([stdout.done, stderr.done]);
        assert.equal(
          status.code,
          0,
          `server exited ${status.code}:\n${stdout.lines.join("\n")}\n${stderr.lines.join("\n")}`,
        );
      } finally {
        if (!exited) {
          try {
            child.kill("SIGKILL");
          } catch {
            // it exited on its own
          }
          await child.status;
        }
        await stdin.close().catch(() => {}); // already closed on the happy path
        await Promise.all([stdout.done, stderr.done]);
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
