/**
 * The one line the build scripts (scripts/bundle.ts, scripts/compile.ts) report a failed Deno
 * command in, from Deno's real output of each kind (captured from Deno 2.9 with NO_COLOR=1).
 */
import assert from "node:assert/strict";
import { firstErrorLine, formatSize, stripAnsi } from "../../scripts/build_tool.ts";

Deno.test("firstErrorLine() picks the first type error, with where it is", () => {
  const output = [
    "Check bt/a.ts",
    "TS2322 [ERROR]: Type 'number' is not assignable to type 'string'.",
    "const x: string = 1; console.log(x);",
    "      ^",
    "    at file:///tmp/bt/a.ts:1:7",
    "",
    "error: Type checking failed.",
    "",
    "Stack backtrace:",
    "   0: <unknown>",
  ].join("\n");
  assert.equal(
    firstErrorLine(output),
    "TS2322 [ERROR]: Type 'number' is not assignable to type 'string'. (at file:///tmp/bt/a.ts:1:7)",
  );
});

Deno.test("firstErrorLine() takes an error: line without its prefix, and esbuild's [ERROR]", () => {
  const bundle = [
    'error: Module not found "file:///tmp/bt/nope.ts".',
    "    at file:///tmp/bt/b.ts:1:8",
    "error: bundling failed",
    "",
    "Stack backtrace:",
    "   0: <unknown>",
  ].join("\n");
  assert.equal(
    firstErrorLine(bundle),
    'Module not found "file:///tmp/bt/nope.ts". (at file:///tmp/bt/b.ts:1:8)',
  );
  assert.equal(
    firstErrorLine('✘ [ERROR] Could not resolve "./nope.ts"\n\n    client.ts:1:7:\n'),
    '✘ [ERROR] Could not resolve "./nope.ts"',
  );
});

Deno.test("firstErrorLine() adds the root cause when the error only names the failed step", () => {
  const several = [
    "error: Writing deno compile executable to temporary file 'dist/confab.tmp'",
    "",
    "Caused by:",
    "    0: Could not create the file",
    "    1: Permission denied (os error 13)",
    "",
    "Stack backtrace:",
    "   0: <unknown>",
  ].join("\n");
  assert.equal(
    firstErrorLine(several),
    "Writing deno compile executable to temporary file 'dist/confab.tmp': " +
      "Permission denied (os error 13)",
  );
  const one = "error: Setting up base binary\n\nCaused by:\n    connection refused\n";
  assert.equal(firstErrorLine(one), "Setting up base binary: connection refused");
});

Deno.test("firstErrorLine() without an error line gives the first line that says something", () => {
  assert.equal(firstErrorLine("\n⚠ a warning\nsomething broke\n"), "something broke");
  assert.equal(firstErrorLine(""), "no error output");
});

Deno.test("formatSize() and stripAnsi()", () => {
  assert.equal(formatSize(512), "512 B");
  assert.equal(formatSize(937_984), "916.0 KiB");
  assert.equal(formatSize(89_443_942), "85.3 MiB");
  assert.equal(stripAnsi("\x1b[1m\x1b[31merror\x1b[0m: x"), "error: x");
});
