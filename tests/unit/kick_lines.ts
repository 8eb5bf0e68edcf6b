/**
 * KickLines: rounds of a key's line never overlap, kicks during a round count as one more round,
 * and a kick at any moment after a round is never lost.
 */
import assert from "node:assert/strict";
import { KickLines } from "../../lib/util/kick_lines.ts";

/** Resolves after `n` microtask hops. */
async function hops(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await Promise.resolve();
}

/** `promise`, or a failure naming `what` after `ms`. */
async function within<T>(promise: Promise<T>, what: string, ms = 2_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("KickLines: kicks during a round make one more round, never two at once", async () => {
  const lines = new KickLines();
  let rounds = 0;
  let inRound = 0;
  const gate = Promise.withResolvers<void>();
  const round = async () => {
    rounds++;
    inRound++;
    assert.equal(inRound, 1, "rounds of one key never overlap");
    if (rounds === 1) await gate.promise;
    inRound--;
  };
  const done = lines.kick("bob", round);
  await hops(3);
  assert.equal(lines.running("bob"), true);
  for (let i = 0; i < 3; i++) void lines.kick("bob", round);
  gate.resolve();
  await within(done, "the line stops");
  assert.equal(rounds, 2, "three kicks during the first round: one round more");
  assert.equal(lines.running("bob"), false);
});

Deno.test("KickLines: a kick any number of microtasks after a round ends is never lost", async () => {
  for (let after = 0; after <= 30; after++) {
    const lines = new KickLines();
    let rounds = 0;
    const second = Promise.withResolvers<void>();
    const round = () => {
      rounds++;
      if (rounds === 1) void hops(after).then(() => lines.kick("bob", round));
      if (rounds === 2) second.resolve();
      return Promise.resolve();
    };
    void lines.kick("bob", round);
    await within(second.promise, `a kick ${after} microtasks after the round`);
    await hops(40);
    assert.equal(lines.running("bob"), false, `stopped (${after})`);
  }
});

Deno.test("KickLines: a line stops when go() says no, or when a round throws, and starts again", async () => {
  const lines = new KickLines();
  let rounds = 0;
  await lines.kick("bob", () => Promise.resolve(void rounds++), { go: () => false });
  assert.equal(rounds, 0);
  await lines.kick("bob", () => Promise.reject(new Error("store closed")));
  assert.equal(lines.running("bob"), false);
  const queue: (() => Promise<void>)[] = [];
  const started = lines.kick("bob", () => Promise.resolve(void rounds++), {
    start: (loop) => {
      queue.push(loop);
      return Promise.resolve();
    },
  });
  assert.equal(lines.running("bob"), true, "waiting in the caller's queue");
  await started;
  await queue[0]!();
  assert.equal(rounds, 1);
  assert.equal(lines.running("bob"), false);
});
