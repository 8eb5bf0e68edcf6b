/** Reads text lines from a byte stream (stdin), whether or not it is a terminal. */

/** Yields each line of `stream` without its line ending; the last line may lack one. */
export function readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  return splitLines(stream.pipeThrough(new TextDecoderStream()));
}

/**
 * Yields each line read from `file` (stdin), as {@link readLines} does, without web streams:
 * loading them costs a process ~4 ms of CPU, which servers and clients reading stdin need not
 * spend.
 */
export function readFileLines(
  file: { read(buffer: Uint8Array): Promise<number | null> },
): AsyncGenerator<string> {
  return splitLines(decodeAll(file));
}

async function* decodeAll(
  file: { read(buffer: Uint8Array): Promise<number | null> },
): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(64 * 1024);
  for (let n = await file.read(buffer); n !== null; n = await file.read(buffer)) {
    yield decoder.decode(buffer.subarray(0, n), { stream: true });
  }
  const rest = decoder.decode();
  if (rest.length > 0) yield rest;
}

async function* splitLines(texts: AsyncIterable<string>): AsyncGenerator<string> {
  let rest = "";
  for await (const text of texts) {
    rest += text;
    let nl: number;
    while ((nl = rest.indexOf("\n")) >= 0) {
      yield rest.slice(0, nl).replace(/\r$/, "");
      rest = rest.slice(nl + 1);
    }
  }
  if (rest.length > 0) yield rest.replace(/\r$/, "");
}

/**
 * Parses a TCP port argument: an integer from `min` to 65535 (0, the default minimum, means any
 * free port to listen on; a port to connect to starts at 1).
 */
export function parsePort(value: string, what = "port", min = 0): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) < min || Number(value) > 65535) {
    throw new RangeError(`${what} must be a number from ${min} to 65535, got "${value}"`);
  }
  return Number(value);
}

/** Splits `HOST:PORT,HOST:PORT,...` (each as `parseHostPort` reads it, port 4242 by default). */
export function parseServers(value: string): { host: string; port: number }[] {
  const parts = value.split(",").map((p) => p.trim()).filter((p) => p !== "");
  if (parts.length === 0) throw new RangeError("--server needs at least one HOST:PORT");
  if (parts.length > 16) throw new RangeError("--server takes at most 16 addresses");
  return parts.map((p) => parseHostPort(p, 4242));
}

/**
 * Splits `HOST:PORT` (or `[v6]:PORT`, or a bare host with `defaultPort`): an address to connect
 * to, so its port is from 1 to 65535.
 */
export function parseHostPort(value: string, defaultPort: number): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(value);
  if (v6) return { host: v6[1]!, port: v6[2] ? parsePort(v6[2], "port", 1) : defaultPort };
  const i = value.lastIndexOf(":");
  if (i < 0) return { host: value, port: defaultPort };
  return {
    host: value.slice(0, i) || "127.0.0.1",
    port: parsePort(value.slice(i + 1), "port", 1),
  };
}

/**
 * A size as a person types it, in the largest unit that divides it whole (what
 * {@link parseSize} reads back): 4194304 is "4M", 2147483648 "2G", 1536 "1536".
 */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [["G", 1024 ** 3], ["M", 1024 ** 2], ["K", 1024]] as const) {
    if (bytes > 0 && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return String(bytes);
}

/**
 * Parses a size in bytes: a whole number, optionally followed by K, M or G (binary: KiB, MiB,
 * GiB; `B`/`iB` after the letter is allowed): "4M", "512KiB", "1048576".
 */
export function parseSize(value: string, what = "size"): number {
  const m = /^(\d+)\s*(?:([KMG])(?:i?B)?|B)?$/i.exec(value.trim());
  if (!m) throw new RangeError(`${what} must be a number of bytes like 4M or 512K, got "${value}"`);
  const unit = { K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[(m[2] ?? "").toUpperCase()] ?? 1;
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n)) throw new RangeError(`${what} is too large: "${value}"`);
  return n;
}
