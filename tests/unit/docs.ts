// The docs must describe the wire and the event stream as the code has them: the protocol version,
// every message type (docs/protocol.md) and every --json event type (docs/scripting.md).
import assert from "node:assert/strict";
import * as messages from "../../lib/protocol/messages.ts";
import { LiteralSchema, ObjectSchema } from "../../lib/protocol/schema.ts";

const doc = await Deno.readTextFile(new URL("../../docs/protocol.md", import.meta.url));

/** The `type` literal of a message schema (a strict object whose `type` is one literal), if any. */
function messageType(schema: unknown): string | undefined {
  if (!(schema instanceof ObjectSchema)) return undefined;
  const type = (schema.shape as Record<string, unknown>).type;
  return type instanceof LiteralSchema && typeof type.value === "string" ? type.value : undefined;
}

Deno.test("docs/protocol.md states the protocol version the code speaks", () => {
  const stated = doc.match(/^Protocol version \*\*(\d+)\*\*/m);
  assert(stated, "docs/protocol.md must start by stating the protocol version");
  assert.deepEqual(Number(stated[1]), messages.PROTOCOL_VERSION);
});

Deno.test("docs/protocol.md describes every message type of lib/protocol/messages.ts", () => {
  const types = new Set(Object.values(messages).map(messageType).filter((t) => t !== undefined));
  assert(types.size > 30, `found only ${types.size} message types: the schema walk is broken`);
  const missing = [...types].filter((t) => !doc.includes(`\`${t}\``)).sort();
  assert.deepEqual(missing, [], `message types not described in docs/protocol.md: ${missing}`);
});

Deno.test("docs/scripting.md describes every --json event type of lib/client/events.ts", async () => {
  const source = await Deno.readTextFile(new URL("../../lib/client/events.ts", import.meta.url));
  const union = source.slice(
    source.indexOf("export type ClientEvent ="),
    source.indexOf("export type EventSink"),
  );
  const types = new Set([...union.matchAll(/type: "([a-z_]+)"/g)].map((m) => m[1]));
  assert(types.size > 30, `found only ${types.size} event types: the source walk is broken`);
  const scripting = await Deno.readTextFile(new URL("../../docs/scripting.md", import.meta.url));
  const missing = [...types].filter((t) => !scripting.includes(`\`${t}\``)).sort();
  assert.deepEqual(missing, [], `event types not described in docs/scripting.md: ${missing}`);
});
