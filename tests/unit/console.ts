/**
 * Unit tests for lib/server/console.ts: log lines in local time with anything a client sent
 * made visible (a client cannot send terminal commands to the operator's screen).
 */
import assert from "node:assert/strict";
import { logLine } from "../../lib/server/console.ts";

Deno.test("logLine() shows the local time and a client's escape sequences as visible escapes", () => {
  const at = new Date(2024, 0, 2, 13, 4, 5).getTime();
  assert.equal(
    logLine("login: alice from 127.0.0.1", at),
    "[13:04:05] login: alice from 127.0.0.1",
  );
  assert.equal(
    logLine("client 127.0.0.1 reported: X \x1b]0;owned\x07\x1b[2J\u202e", at),
    "[13:04:05] client 127.0.0.1 reported: X \\e]0;owned\\x07\\e[2J\\u{202e}",
  );
});
