/**
 * Preloaded into a bench process (`deno run --preload scripts/bench/loop_monitor.ts`): watches
 * its event loop with a timer every {@link TICK_MS} and prints each stall (the timer came at
 * least {@link STALL_FROM_MS} late: the thread was busy, paused by the collector, or waiting for
 * a core) on stderr as `#stall <wall-clock ms at its end> <ms late>`. With `--expose-gc` it
 * also forces one collection at once and prints `#gc-clock <wall-clock ms after it>`, so the
 * bench can put V8's --trace-gc times (ms since the isolate started) on the wall clock.
 */

/** The timer's period: ≈ 200 wake-ups a second, a few ms of CPU. */
const TICK_MS = 5;
/** Lateness reported as a stall. */
const STALL_FROM_MS = 4;

const wall = () => performance.timeOrigin + performance.now();
const encoder = new TextEncoder();

const collect = (globalThis as { gc?: () => void }).gc;
if (collect) {
  collect();
  Deno.stderr.writeSync(encoder.encode(`#gc-clock ${wall().toFixed(1)}\n`));
}

let last = performance.now();
const timer = setInterval(() => {
  const now = performance.now();
  const late = now - last - TICK_MS;
  last = now;
  if (late >= STALL_FROM_MS) {
    Deno.stderr.writeSync(
      encoder.encode(`#stall ${(performance.timeOrigin + now).toFixed(1)} ${late.toFixed(1)}\n`),
    );
  }
}, TICK_MS);
// The process ends when its own work does.
Deno.unrefTimer(timer);
