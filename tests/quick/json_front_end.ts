/**
 * The `--json` front end's output (lib/client/terminal.ts `JsonFrontEnd`), in a real process:
 * the events of a turn go out together, yet each is one JSON line, in order, and none is lost
 * when the process exits in the same turn as it showed them.
 */
import assert from "node:assert/strict";
import { runDeno } from "../support/processes.ts";

/** Shows events in two turns (with a newline inside a text), then exits in the second turn. */
const SCRIPT = `
import { JsonFrontEnd } from "./lib/client/terminal.ts";
const ui = new JsonFrontEnd();
for (let i = 0; i < 1500; i++) ui.show({ type: "info", text: "first turn " + i + "\\nx" });
await new Promise((resolve) => setTimeout(resolve, 0));
for (let i = 0; i < 1500; i++) ui.show({ type: "info", text: "second turn " + i });
ui.show({ type: "info", text: "separators \u2028\u2029\x85 end" });
Deno.exit(0);
`;

Deno.test("JsonFrontEnd writes each event as one JSON line, in order, also when the process exits in the turn that showed them", async () => {
  const { code, output } = await runDeno(["eval", "--ext=ts", SCRIPT], 60_000);
  assert.equal(code, 0, output);
  // Lines as any line reader splits them (Python's splitlines() ends one at U+2028 and NEL too).
  const lines = output.split(/\r\n|[\n\r\u0085\u2028\u2029]/).filter((l) => l.startsWith("{"));
  const texts = lines.map((l) => (JSON.parse(l) as { text: string }).text);
  const expected = [
    ...Array.from({ length: 1500 }, (_, i) => `first turn ${i}\nx`),
    ...Array.from({ length: 1500 }, (_, i) => `second turn ${i}`),
    "separators \u2028\u2029\x85 end",
  ];
  assert.deepEqual(texts, expected);
});
