/**
 * The server's listen backlog: a herd of clients coming back after a restart arrives faster
 * than the server accepts, and the kernel must hold them rather than drop their SYNs (sent again
 * only after 1, 3, 7 s). A real server process, stopped for the moment of the herd.
 */
import assert from "node:assert/strict";
import { startServer } from "../support/processes.ts";

const HERD = 1_200;
/** The kernel's cap on any backlog: below the herd, this machine cannot show the difference. */
const SOMAXCONN = Number(
  (await Deno.readTextFile("/proc/sys/net/core/somaxconn").catch(() => "0")).trim(),
);

Deno.test({
  name:
    "a server that cannot accept for a moment still has the kernel complete 1,200 connections (Deno's default backlog held 512)",
  ignore: !(SOMAXCONN >= HERD),
}, async () => {
  await using server = await startServer();
  const conns: Deno.TcpConn[] = [];
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), 15_000);
  server.proc.kill("SIGSTOP");
  try {
    const dials = await Promise.allSettled(
      Array.from(
        { length: HERD },
        () => Deno.connect({ hostname: "127.0.0.1", port: server.port, signal: deadline.signal }),
      ),
    );
    for (const dial of dials) if (dial.status === "fulfilled") conns.push(dial.value);
    assert.equal(conns.length, HERD, `${conns.length} of ${HERD} connected while it was stopped`);
  } finally {
    clearTimeout(timer);
    server.proc.kill("SIGCONT");
    for (const conn of conns) conn.close();
  }
});
