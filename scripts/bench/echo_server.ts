/**
 * The baseline for a round trip: a bare Deno TCP server that echoes length-prefixed frames
 * (4-byte big-endian length, then the body), Nagle off, each frame written back in one write.
 * Prints `{"port":N}` once it listens; exits when its stdin ends.
 *
 *   deno run --allow-net scripts/bench/echo_server.ts
 */
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
console.log(JSON.stringify({ port: listener.addr.port, pid: Deno.pid }));

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await conn.write(data.subarray(offset));
}

async function echo(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const buffer = new Uint8Array(64 * 1024);
  let filled = 0;
  try {
    for (;;) {
      const n = await conn.read(buffer.subarray(filled));
      if (n === null) break;
      filled += n;
      let start = 0;
      while (filled - start >= 4) {
        const length = new DataView(buffer.buffer, start, 4).getUint32(0);
        if (4 + length > buffer.length) throw new RangeError(`frame of ${length} bytes`);
        if (filled - start < 4 + length) break;
        await writeAll(conn, buffer.slice(start, start + 4 + length));
        start += 4 + length;
      }
      buffer.copyWithin(0, start, filled);
      filled -= start;
    }
  } catch { /* reset */ }
  try {
    conn.close();
  } catch { /* closed */ }
}

void (async () => {
  for (;;) {
    try {
      void echo(await listener.accept());
    } catch (error) {
      if (error instanceof Deno.errors.BadResource) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
})();
for await (const _ of Deno.stdin.readable) { /* wait for the end of stdin */ }
Deno.exit(0);
