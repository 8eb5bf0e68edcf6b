/**
 * The baseline for holding connections: a bare Deno TCP server that accepts sockets and keeps
 * one read pending on each (into a 1 KiB buffer, so it notices a peer going away), and does
 * nothing else. Prints `{"port":N}` once it listens; exits when its stdin ends.
 *
 *   deno run --allow-net scripts/bench/raw_server.ts
 */
const READ_BUFFER = 1024;

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
console.log(JSON.stringify({ port: listener.addr.port, pid: Deno.pid }));

async function hold(conn: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(READ_BUFFER);
  try {
    while ((await conn.read(buffer)) !== null) { /* the load generator sends nothing */ }
  } catch { /* reset */ }
  try {
    conn.close();
  } catch { /* closed */ }
}

async function accept(): Promise<void> {
  let backoff = 10;
  for (;;) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
      backoff = 10;
    } catch (error) {
      if (error instanceof Deno.errors.BadResource) return;
      // EMFILE and friends: back off and keep accepting, as the real server does.
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 1000);
      continue;
    }
    void hold(conn);
  }
}

void accept();
for await (const _ of Deno.stdin.readable) { /* wait for the end of stdin */ }
Deno.exit(0);
