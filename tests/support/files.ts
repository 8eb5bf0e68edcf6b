/** Files for transfer tests: their SHA-256, streamed so memory stays flat at any size. */
import { createHash } from "node:crypto";

/** The SHA-256 of the file at `path`, as lower-case hex. */
export async function sha256Of(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  const buffer = new Uint8Array(1024 * 1024);
  for (;;) {
    const n = await file.read(buffer);
    if (n === null) break;
    hash.update(buffer.subarray(0, n));
  }
  return hash.digest("hex");
}
