/**
 * Peers whose writes back up: a receiver stops reading (SIGSTOP) while a file comes to it, and
 * the test goes on once the kernel says the sender's writes wait (its buffers are full, and
 * whatever the sender writes next waits in its own write queue).
 */
import { join } from "node:path";
import { befriend, DEADLINE_MS, type TestClient } from "./processes.ts";

/** Bytes the kernel holds unsent on `pid`'s TCP connections to `port` (ss's Send-Q). */
export async function unsentTo(pid: number, port: number): Promise<number> {
  const { stdout } = await new Deno.Command("ss", {
    args: ["-tnpH", "state", "established", `( dport = :${port} )`],
    stdout: "piped",
    stderr: "null",
  }).output();
  let bytes = 0;
  for (const line of new TextDecoder().decode(stdout).split("\n")) {
    if (line.includes(`pid=${pid},`)) bytes += Number(line.trim().split(/\s+/)[1] ?? 0);
  }
  return bytes;
}

/** Waits until `pid` has at least `bytes` unsent to `port`: its writes are backed up. */
export async function backedUp(pid: number, port: number, bytes: number): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  while (await unsentTo(pid, port) < bytes) {
    if (Date.now() > deadline) {
      throw new Error(`fewer than ${bytes} bytes waited to be sent (${await unsentTo(pid, port)})`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Signs `a` and `b` up, makes them contacts, and opens `a`'s chat with `b` (online). */
export async function pairInChat(a: TestClient, b: TestClient): Promise<void> {
  await a.signup(a.proc.name);
  await b.signup(b.proc.name);
  await befriend(a, b);
  await a.send(`chat ${b.proc.name}`);
  await a.event("chat_opened", { with: b.proc.name, online: true });
}

/**
 * `sender` (in a chat with `receiver`, or in a group with it) shares a 64 MiB file of random
 * bytes from `dir`; once it flows, `receiver` (taking files without asking) is frozen and the
 * sender's writes to it back up. Resumed with SIGCONT, or killed, by the caller.
 */
export async function stallReceiver(
  sender: TestClient,
  receiver: TestClient,
  dir: string,
): Promise<void> {
  const path = join(dir, "big.bin");
  {
    using file = await Deno.open(path, { write: true, create: true });
    const chunk = crypto.getRandomValues(new Uint8Array(65_536));
    for (let i = 0; i < 64 * 16; i++) await file.write(chunk);
  }
  await sender.send(`/s ${path}`);
  await receiver.event("transfer_started", { direction: "in" });
  receiver.proc.kill("SIGSTOP");
  const port = Number(receiver.events().find((e) => e.type === "ready")?.peerPort);
  await backedUp(sender.proc.pid, port, 1024 * 1024);
}
