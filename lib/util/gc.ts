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

/** Collects garbage now (a few ms to a few tens of ms: call it every few MiB, not per chunk). */
export function collectGarbage(): void {
  try {
    hook()?.({ type: "minor" });
  } catch {
    // A hint only.
  }
}
