/**
 * A nudge to the garbage collector for bulk transfers. Every file chunk passes through buffers
 * that WebCrypto and the socket layer allocate outside the JS heap; V8 only collects them once
 * tens of MiB have piled up, which would let a transfer's memory grow well past its working
 * set. Asking for a young-generation collection every few MiB keeps it flat. Where the runtime
 * does not offer the hook, this does nothing.
 */
import v8 from "node:v8";
import vm from "node:vm";

type Collect = (options?: { type?: "minor" | "major"; execution?: "sync" }) => void;

let collect: Collect | null | undefined;

function hook(): Collect | null {
  if (collect !== undefined) return collect;
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc") as unknown;
    collect = typeof gc === "function" ? gc as Collect : null;
  } catch {
    collect = null;
  }
  return collect;
}

/**
 * Memory held outside the JS heap (array buffers) above which {@link collectGarbageIfHeld}
 * collects. V8 on its own waits for about 64 MiB more before it collects them.
 */
const EXTERNAL_LIMIT = 32 * 1024 * 1024;

/**
 * Collects garbage only when array buffers outside the heap add up to more than ≈ 32 MiB (a
 * collection is a full one here: tens of ms). Reading the figure costs ≈ 15 µs: call it every
 * MiB or so of a transfer, not per chunk.
 */
export function collectGarbageIfHeld(): void {
  if (Deno.memoryUsage().external > EXTERNAL_LIMIT) collectGarbage();
}

/** Collects garbage now (a full collection: tens of ms; see {@link collectGarbageIfHeld}). */
export function collectGarbage(): void {
  try {
    hook()?.({ type: "minor" });
  } catch {
    // A hint only.
  }
}
