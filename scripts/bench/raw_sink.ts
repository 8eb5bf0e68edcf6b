/**
 * The receiving end of the raw file copy the `file` item compares Confab with: plain Deno TCP,
 * no encryption, no hashing. Accepts connections one after another; on each, reads frames
 * (4-byte big-endian length, then that many bytes; length 0 ends the file) and writes their
 * bytes to OUTFILE (truncated first), then answers one byte and prints
 * `{"bytes":N,"ms":T}` (T: first byte to last write). Prints `{"port":N}` once it listens;
 * exits when its stdin ends.
 *
 *   deno run --allow-net --allow-write scripts/bench/raw_sink.ts OUTFILE
 */
const out = Deno.args[0];
if (!out) {
  console.error("usage: raw_sink.ts OUTFILE");
  Deno.exit(2);
}

/** Read buffer: room for several 64 KiB frames per read. */
const BUFFER = 1024 * 1024;

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, data: Uint8Array) {
  let offset = 0;
  while (offset < data.length) offset += await w.write(data.subarray(offset));
}

async function receive(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  using file = await Deno.open(out!, { write: true, create: true, truncate: true });
  const buffer = new Uint8Array(BUFFER);
  const view = new DataView(buffer.buffer);
  let start = 0; // first unparsed byte
  let end = 0; // end of the bytes read
  let bytes = 0;
  let first = 0;
  for (;;) {
    // A frame header, then its body, may straddle reads: parse what is complete.
    while (end - start >= 4) {
      const length = view.getUint32(start);
      if (length === 0) {
        const ms = performance.now() - first;
        await writeAll(conn, new Uint8Array([1]));
        console.log(JSON.stringify({ bytes, ms }));
        return;
      }
      if (length > BUFFER - 4) throw new Error(`frame of ${length} bytes`);
      if (end - start < 4 + length) break;
      await writeAll(file, buffer.subarray(start + 4, start + 4 + length));
      bytes += length;
      start += 4 + length;
    }
    if (BUFFER - end < 4 + 65_536 + 4) {
      buffer.copyWithin(0, start, end);
      end -= start;
      start = 0;
    }
    const n = await conn.read(buffer.subarray(end));
    if (n === null) throw new Error("the sender closed the connection before the end frame");
    if (first === 0) first = performance.now();
    end += n;
  }
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
console.log(JSON.stringify({ port: listener.addr.port }));

async function serve(): Promise<void> {
  for (;;) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch {
      return; // closed
    }
    try {
      await receive(conn);
    } catch (error) {
      console.log(JSON.stringify({ error: (error as Error).message }));
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }
}

void serve();
for await (const _ of Deno.stdin.readable) { /* wait for the end of stdin */ }
Deno.exit(0);
