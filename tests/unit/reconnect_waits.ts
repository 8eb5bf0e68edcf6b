/**
 * Unit tests for the client's re-attach schedule (`reconnectWaits` in lib/client/server_link.ts):
 * how thousands of clients that lost their server spread their attempts.
 */
import assert from "node:assert/strict";
import { RECONNECT_BACKOFF, reconnectWaits } from "../../lib/client/server_link.ts";
import { seededRandom as seeded } from "../support/group_chaos.ts";

/** The moments (ms after the loss) of a client's attempts within `ms`. */
function attemptsWithin(ms: number, afterClosing: boolean, random: () => number): number[] {
  const waits = reconnectWaits(afterClosing, random);
  const at: number[] = [];
  for (let t = waits.next().value; t < ms; t += waits.next().value) at.push(t);
  return at;
}

Deno.test("reconnectWaits() spreads the first attempts of clients told server_closing over a second", () => {
  const random = seeded(14);
  const firsts = Array.from({ length: 1000 }, () => attemptsWithin(60_000, true, random)[0]!);
  assert.ok(Math.max(...firsts) <= RECONNECT_BACKOFF.closingMs);
  // They all came within 250 ms: the restarted server met them at once.
  assert.ok(Math.max(...firsts) - Math.min(...firsts) > 0.9 * RECONNECT_BACKOFF.closingMs);
  // Evenly: no tenth of the window holds more than twice its share.
  const tenths = new Array(10).fill(0);
  for (const t of firsts) tenths[Math.min(9, Math.floor(t / RECONNECT_BACKOFF.closingMs * 10))]++;
  assert.ok(Math.max(...tenths) < 200, `first attempts per tenth: ${tenths}`);
  // After a loss the server did not announce (it may have been the link), the first try is quick.
  const lost = Array.from({ length: 1000 }, () => attemptsWithin(60_000, false, random)[0]!);
  assert.ok(Math.max(...lost) <= RECONNECT_BACKOFF.firstMs);
});

Deno.test("reconnectWaits() backs off: a server away for 10 s gets a few attempts per client, not dozens", () => {
  const random = seeded(10);
  const counts = Array.from({ length: 1000 }, () => attemptsWithin(10_000, true, random).length);
  const mean = counts.reduce((a, b) => a + b, 0) / counts.length;
  // Every 250-500 ms was 27 attempts each: 270,000 refused connections for 10,000 clients.
  assert.ok(mean <= 10, `mean attempts in 10 s: ${mean}`);
  assert.ok(Math.max(...counts) <= 20, `most attempts in 10 s: ${Math.max(...counts)}`);
});

Deno.test("reconnectWaits() waits anywhere in a window that doubles up to its cap", () => {
  const { baseMs, maxMs } = RECONNECT_BACKOFF;
  // The top of each window (random → just under 1), then its bottom (random → 0): full jitter.
  const high = reconnectWaits(false, () => 0.999_999);
  high.next();
  const tops = Array.from({ length: 8 }, () => Math.round(high.next().value));
  assert.deepEqual(tops, [baseMs, 2 * baseMs, 4 * baseMs, maxMs, maxMs, maxMs, maxMs, maxMs]);
  const low = reconnectWaits(false, () => 0);
  assert.deepEqual(Array.from({ length: 5 }, () => low.next().value), [0, 0, 0, 0, 0]);
});

Deno.test("reconnectWaits() keeps trying within its cap however long the server stays away", () => {
  const random = seeded(7);
  const at = attemptsWithin(600_000, false, random);
  const gaps = at.slice(1).map((t, i) => t - at[i]!);
  assert.ok(Math.max(...gaps) <= RECONNECT_BACKOFF.maxMs);
  assert.ok(at.length >= 600_000 / RECONNECT_BACKOFF.maxMs, `${at.length} attempts in 10 min`);
});
