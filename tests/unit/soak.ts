/**
 * Unit tests for the soak's parts that decide its verdict: the seeded schedule (a seed replays
 * the same faults), the checker (each kind of failure is found in crafted data; a clean run
 * passes) and the proxy that cuts the network without closing anything.
 */
import assert from "node:assert/strict";
import type { Logged, SoakEvent } from "../../scripts/soak/actor.ts";
import {
  check,
  type CheckInput,
  type HistoryRow,
  type UserData,
} from "../../scripts/soak/checker.ts";
import { CutProxy } from "../../scripts/soak/proxy.ts";
import { makeSchedule, Rng, type ScheduleOptions } from "../../scripts/soak/schedule.ts";

const SCHEDULE: ScheduleOptions = {
  chaosMs: 60_000,
  meanGapMs: 4_000,
  killable: ["alice", "bob", "carol"],
  freezable: ["alice", "bob", "carol"],
  cuttable: "alice",
  mailboxOf: "carol",
  fileFrom: "alice",
  peerTimeoutMs: 3_000,
};

Deno.test("makeSchedule() gives the same faults for the same seed and others for another", () => {
  assert.deepEqual(makeSchedule(42, SCHEDULE), makeSchedule(42, SCHEDULE));
  assert.notDeepEqual(makeSchedule(42, SCHEDULE), makeSchedule(43, SCHEDULE));
  assert.deepEqual(new Rng(7).bytes(9), new Rng(7).bytes(9));
});

Deno.test("makeSchedule() has every kind of fault, never two at once on one target", () => {
  for (let seed = 0; seed < 200; seed++) {
    const faults = makeSchedule(seed, SCHEDULE);
    const kinds = faults.map((f) => f.kind);
    for (const kind of ["kill-server", "kill-client", "freeze-client", "cut"] as const) {
      assert.ok(kinds.includes(kind), `seed ${seed} has no ${kind}`);
    }
    assert.equal(kinds.filter((k) => k === "fill-mailbox").length, 1, `seed ${seed}`);
    assert.equal(kinds.filter((k) => k === "send-file").length, 1, `seed ${seed}`);
    for (const f of faults) {
      const first = faults.find((g) => g.kind === f.kind) === f;
      assert.ok(f.atMs >= 0, `seed ${seed}`);
      assert.ok(f.atMs < SCHEDULE.chaosMs || first, `seed ${seed}: a repeat after the window`);
      if (f.kind === "freeze-client" || f.kind === "cut") {
        assert.ok(f.forMs > SCHEDULE.peerTimeoutMs, `seed ${seed}: past the peer timeout`);
      }
    }
    const byTarget = Map.groupBy(faults, (f) => f.target ?? "server");
    for (const [target, list] of byTarget) {
      for (let i = 1; i < list.length; i++) {
        const before = list[i - 1]!;
        assert.ok(
          list[i]!.atMs >= before.atMs + before.forMs,
          `seed ${seed}: two faults at once on ${target}`,
        );
      }
    }
  }
});

// ---- the checker ----------------------------------------------------------------------------

let clock = 1_000;
const log = (e: SoakEvent, at = clock++): Logged => ({ inc: 1, at, e });

function row(fields: Partial<HistoryRow> & Pick<HistoryRow, "id" | "chat" | "sender">): HistoryRow {
  return { seq: clock++, ts: 500, text: "", outgoing: false, mark: "**", ...fields };
}

/** Alice sends bob `soak alice 0..n-1`; each arrives directly, in order, once. */
function cleanPair(n: number): { alice: UserData; bob: UserData } {
  const alice: UserData = { name: "alice", log: [], history: [], downloads: [] };
  const bob: UserData = { name: "bob", log: [], history: [], downloads: [] };
  for (let i = 0; i < n; i++) {
    const id = `a${i}`;
    const text = `soak alice ${i}`;
    alice.history.push(row({ id, chat: "bob", sender: "alice", text, outgoing: true }));
    alice.log.push(log({ type: "sent", id, to: "bob", text }));
    alice.log.push(log({ type: "delivered", id, to: "bob" }));
    bob.history.push(row({ id, chat: "alice", sender: "alice", text }));
    bob.log.push(log({ type: "message", id, from: "alice", text, via: "direct", ts: 500 }));
  }
  return { alice, bob };
}

function input(users: UserData[], more: Partial<CheckInput> = {}): CheckInput {
  return {
    seed: 1,
    scenario: { pairs: [["alice", "bob"]] },
    users,
    databases: [{ path: "a.sqlite", integrity: "ok" }],
    serverLeft: { mail: 0, receipts: 0 },
    lastFaultEndAt: 0,
    settled: true,
    ...more,
  };
}

Deno.test("check() passes a run where every message arrived once, in order", () => {
  const { alice, bob } = cleanPair(5);
  const result = check(input([alice, bob]));
  assert.deepEqual(result.problems, []);
  assert.equal(result.ok, true);
  assert.equal(result.figures.sent, 5);
  assert.equal(result.figures.delivered, 5);
});

Deno.test("check() finds a lost message, also one a `sent` event names but history lacks", () => {
  const { alice, bob } = cleanPair(3);
  bob.history.splice(1, 1);
  alice.log.push(log({ type: "sent", id: "ghost", to: "bob", text: "soak alice 9" }));
  const result = check(input([alice, bob]));
  assert.equal(result.ok, false);
  assert.equal(result.figures.lost, 1);
  assert.equal(result.figures.lostAtSender, 1);
  assert.match(result.problems.join("\n"), /lost: 1\n.*"soak alice 1"/);
});

Deno.test("check() finds a duplicate row, a message shown twice and one out of order", () => {
  const { alice, bob } = cleanPair(4);
  bob.history.push(row({ id: "other", chat: "alice", sender: "alice", text: "soak alice 2" }));
  bob.log.push(
    log({ type: "message", id: "a3", from: "alice", text: "soak alice 3", via: "direct" }),
  );
  // Swap the order in which 1 and 2 were shown.
  const shown = bob.log.filter((l) => l.e.type === "message");
  [shown[1]!.e, shown[2]!.e] = [shown[2]!.e, shown[1]!.e];
  const f = check(input([alice, bob])).figures;
  assert.equal(f.duplicatedInHistory, 1);
  assert.equal(f.shownTwice, 1);
  assert.equal(f.outOfOrder, 1);
});

Deno.test("check() takes mail read after later direct messages as in order (two paths)", () => {
  const { alice, bob } = cleanPair(3);
  const first = bob.log.find((l) => l.e.id === "a0")!;
  bob.log.splice(bob.log.indexOf(first), 1);
  bob.log.push(log({ ...first.e, via: "server" }));
  const result = check(input([alice, bob]));
  assert.equal(result.ok, true);
  assert.equal(result.figures.shownFromMail, 1);
});

Deno.test("check() finds a refusal nobody was told of, and one delivered all the same", () => {
  const { alice, bob } = cleanPair(2);
  alice.history[0]!.mark = "!";
  alice.history[1]!.mark = "!";
  alice.log.push(log({ type: "not_delivered", id: "a1", to: "bob", reason: "mailbox full" }));
  bob.history.splice(1, 1);
  const f = check(input([alice, bob])).figures;
  assert.equal(f.refused, 2);
  assert.equal(f.refusedSilently, 1);
  assert.equal(f.refusedYetDelivered, 1);
  assert.equal(f.lost, 0, "refused and told is not lost");
});

Deno.test("check() finds messages left in the outbox or unread at the end", () => {
  const { alice, bob } = cleanPair(2);
  alice.history[0]!.mark = "";
  alice.history[1]!.mark = "*";
  const result = check(input([alice, bob], { settled: false }));
  assert.equal(result.figures.unresolved, 2);
  assert.match(result.problems.join("\n"), /not settled/);
});

Deno.test("check() finds a group member missing a message, and a copy filed as 1:1", () => {
  const members = ["erin", "frank", "grace"];
  const [erin, frank, grace] = members.map((name): UserData => ({
    name,
    log: [],
    history: [],
    downloads: [],
  })) as [UserData, UserData, UserData];
  const chat = "g:group-1";
  for (let i = 0; i < 3; i++) {
    const id = `e${i}`;
    const text = `soak erin ${i}`;
    erin.history.push(row({ id, chat, sender: "erin", text, outgoing: true }));
    frank.history.push(row({ id, chat, sender: "erin", text }));
  }
  grace.history.push(row({ id: "e0", chat, sender: "erin", text: "soak erin 0" }));
  grace.history.push(
    row({ id: "e1", chat: "erin", sender: "erin", text: "[group #abcdef] soak erin 1" }),
  );
  const f = check(input([erin, frank, grace], {
    scenario: { pairs: [], group: { members } },
  })).figures;
  assert.equal(f.groupMissing, 1, "e2 at grace");
  assert.equal(f.groupMisfiled, 1, "e1 at grace");
  // Told the author: a refusal, not a loss.
  erin.log.push(log({ type: "not_delivered", id: "e2", to: "grace", reason: "gone" }));
  erin.history[2]!.mark = "!";
  const told = check(input([erin, frank, grace], { scenario: { pairs: [], group: { members } } }));
  assert.equal(told.figures.groupMissing, 0);
  assert.equal(told.figures.groupRefused, 1);
});

Deno.test("check() finds a corrupt download, a damaged database and mail nobody read", () => {
  const { alice, bob } = cleanPair(1);
  bob.downloads.push({ name: "payload.bin", sha256: "bad", size: 10 });
  // Shared twice: the first share failed before it began, the second began and failed.
  alice.log.push(log({ type: "transfer_failed", direction: "out", peer: "bob" }));
  alice.log.push(log({ type: "transfer_started", direction: "out", peer: "bob" }));
  alice.log.push(log({ type: "transfer_failed", direction: "out", peer: "bob" }));
  const result = check(input([alice, bob], {
    scenario: {
      pairs: [],
      file: { from: "alice", to: "bob", sha256: "good", size: 10, shares: 2 },
    },
    databases: [{ path: "x.sqlite", integrity: "row 3 missing from index" }],
    serverLeft: { mail: 2, receipts: 0 },
  }));
  assert.equal(result.figures.filesCorrupt, 1);
  assert.equal(result.figures.file, "failed, reported");
  assert.equal(result.figures.fileShares, 2);
  assert.equal(result.figures.fileStarts, 1);
  assert.equal(result.figures.databasesBroken, 1);
  assert.match(result.problems.join("\n"), /mail left on the server/);
});

Deno.test("check() measures the last delivery after the last fault", () => {
  const { alice, bob } = cleanPair(2);
  for (const l of bob.log) l.e.ts = 900;
  bob.log[1]!.at = 4_000;
  const f = check(input([alice, bob], { lastFaultEndAt: 1_000 })).figures;
  assert.equal(f.lastDeliveryAfterFaultMs, 3_000);
});

// ---- the proxy --------------------------------------------------------------------------------

/** Whether `read` settles within `ms`. */
async function settlesWithin(read: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((r) => timer = setTimeout(() => r(false), ms));
  try {
    return await Promise.race([read.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("CutProxy holds bytes while cut, closes nothing, and passes them on when healed", async () => {
  await using proxy = new CutProxy();
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  proxy.target = listener.addr.port;
  using dialer = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  using served = await listener.accept();
  const buffer = new Uint8Array(100);
  await dialer.write(new TextEncoder().encode("before"));
  const first = served.read(buffer);
  assert.ok(await settlesWithin(first, 15_000), "passes while not cut");
  assert.equal(new TextDecoder().decode(buffer.subarray(0, (await first)!)), "before");

  proxy.cut();
  await dialer.write(new TextEncoder().encode("during"));
  const held = served.read(buffer);
  assert.equal(await settlesWithin(held, 300), false, "nothing passes while cut");
  proxy.heal();
  assert.ok(await settlesWithin(held, 15_000), "passed on after the heal");
  assert.equal(new TextDecoder().decode(buffer.subarray(0, (await held)!)), "during");
});
