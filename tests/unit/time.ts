/** Unit tests for lib/util/time.ts: the HH:MM:SS clock format and the abortable delay. */
import assert from "node:assert/strict";
import { clock, delay } from "../../lib/util/time.ts";

/** Milliseconds for a local wall-clock time, so the tests hold in any time zone. */
const local = (h: number, m: number, s: number, ms = 0) =>
  new Date(2024, 2, 15, h, m, s, ms).getTime();

Deno.test("clock() formats local time as HH:MM:SS with zero padding", () => {
  assert.equal(clock(local(3, 4, 5)), "03:04:05");
  assert.equal(clock(local(14, 30, 59)), "14:30:59");
});

Deno.test("clock() covers midnight and the last second of the day", () => {
  assert.equal(clock(local(0, 0, 0)), "00:00:00");
  assert.equal(clock(local(23, 59, 59)), "23:59:59");
});

Deno.test("clock() drops milliseconds rather than rounding them up", () => {
  assert.equal(clock(local(9, 59, 59, 999)), "09:59:59");
});

Deno.test("clock() always gives eight characters in HH:MM:SS form", () => {
  for (let h = 0; h < 24; h += 5) {
    for (let m = 0; m < 60; m += 13) {
      const text = clock(local(h, m, (h * m) % 60));
      assert.match(text, /^([01]\d|2[0-3]):[0-5]\d:[0-5]\d$/);
      assert.equal(text.slice(0, 2), String(h).padStart(2, "0"));
    }
  }
});

Deno.test("delay() resolves after the given time", async () => {
  const start = performance.now();
  await delay(20);
  assert.ok(performance.now() - start >= 15, "resolved too early");
});

Deno.test("delay() rejects at once with the reason of an already aborted signal", async () => {
  const reason = new Error("stop");
  await assert.rejects(delay(60_000, AbortSignal.abort(reason)), (e) => e === reason);
});

Deno.test("delay() rejects when aborted and clears its timer", async () => {
  // With the op sanitizer on, a timer left running after the abort fails this test.
  const controller = new AbortController();
  const pending = delay(60_000, controller.signal);
  const reason = new Error("cancelled");
  controller.abort(reason);
  await assert.rejects(pending, (e) => e === reason);
});
