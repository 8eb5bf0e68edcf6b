/**
 * The checkpointer: the write-ahead log folded back into the database on a worker thread, with
 * nothing left for the writer's thread to do, and writes going on meanwhile.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { Checkpointer } from "../../lib/util/checkpointer.ts";
import { Database } from "../../lib/util/sqlite.ts";

const SCHEMA = ["CREATE TABLE t (id INTEGER PRIMARY KEY, text TEXT NOT NULL) STRICT"];

Deno.test("Checkpointer folds the log into the database on its worker, while the writer goes on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "confab-checkpointer-" });
  const path = join(dir, "db.sqlite");
  try {
    using db = new Database(path, SCHEMA);
    const insert = db.sql("INSERT INTO t (text) VALUES (?)");
    for (let i = 0; i < 500; i++) insert.run("x".repeat(1000));
    const before = (await Deno.stat(path)).size;
    let done = 0;
    using checkpointer = new Checkpointer(path, { onDone: () => done++ });
    assert.equal(checkpointer.start(), true);
    assert.equal(checkpointer.running, true);
    assert.equal(checkpointer.start(), true, "one at a time: a second start joins the first");
    // The writer is not held up by it.
    for (let i = 0; i < 10; i++) insert.run("during");
    await checkpointer.idle();
    assert.equal(checkpointer.running, false);
    assert.equal(done, 1, "its caller is told on its own thread");
    assert.equal(checkpointer.started, true, "the worker stays for the next one");
    // The rows are in the database file itself now, written by the worker alone.
    assert.ok((await Deno.stat(path)).size > before + 400 * 1000, "the database file grew");
    // Nothing lost on the way.
    const reader = new DatabaseSync(path, { readOnly: true });
    try {
      const n = reader.prepare("SELECT count(*) AS n FROM t").get() as { n: number };
      assert.equal(n.n, 510);
    } finally {
      reader.close();
    }
    // A second round folds what was written meanwhile.
    assert.equal(checkpointer.start(), true);
    await checkpointer.idle();
    checkpointer.close();
    assert.equal(checkpointer.start(), false, "closed: the caller checkpoints on its own");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Checkpointer gives up on a database it cannot open, and says so to its caller", async () => {
  const dir = await Deno.makeTempDir({ prefix: "confab-checkpointer-" });
  try {
    using checkpointer = new Checkpointer(join(dir, "missing", "db.sqlite"));
    assert.equal(checkpointer.start(), true);
    await checkpointer.idle();
    assert.equal(checkpointer.start(), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Polls `ready` every 10 ms until it holds, or fails after `ms`. */
async function until(ready: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`not ${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("Database with checkpointOffThread folds a small log itself and a grown one on its worker", async () => {
  const dir = await Deno.makeTempDir({ prefix: "confab-checkpointer-" });
  const path = join(dir, "db.sqlite");
  try {
    using db = new Database(path, SCHEMA, { checkpointOffThread: true, checkpointEveryMs: 20 });
    assert.equal(db.checkpointsOffThread, true);
    const insert = db.sql("INSERT INTO t (text) VALUES (?)");
    insert.run("a few pages");
    // A timer round over a log of a few pages: this thread folds it, no worker is started. A
    // write after a checkpoint that folded everything starts the log over, which bumps the
    // checkpoint sequence in its header.
    const log = () => {
      const bytes = Deno.readFileSync(`${path}-wal`);
      return { size: bytes.length, seq: new DataView(bytes.buffer).getUint32(12) };
    };
    const first = log().seq;
    await until(() => {
      insert.run("another");
      return log().seq !== first;
    }, "folded on this thread");
    assert.ok(log().size < 1024 * 1024);
    assert.equal(db.checkpointWorkerStarted, false, "no worker for a small log");
    // Past 1 MiB of log, the next round hands it to the worker.
    db.transaction(() => {
      for (let i = 0; i < 1500; i++) insert.run("x".repeat(1000));
    });
    await until(() => db.checkpointWorkerStarted, "handed to the worker");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
