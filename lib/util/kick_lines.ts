/**
 * Lines of work, one per key, that a kick sets going: a key's rounds never overlap, and no kick
 * goes unanswered. A kick while a round runs makes the line go round once more after it (kicks
 * meanwhile count as one); a kick once the line has stopped starts it anew.
 *
 * A line leaves the map in the same turn as the check that ends it. (The delivery's group lines
 * used to leave it a few microtasks later, in a `.finally()`: a kick that came in between found
 * a line that would never run again, and the copies owed to that member waited for the next
 * kick, seconds or never. Seen as a group message whose ack a member never got.)
 */
export class KickLines {
  readonly #lines = new Map<string, { again: boolean; done: Promise<void> }>();

  /**
   * Kicks `key`'s line: starts it when none runs, else asks the one running for one more round.
   * @param round one round of the line's work.
   * @param options.go checked before each round: the line stops when it says no.
   * @param options.start runs the line's loop (in a queue of the caller's, say); default: now.
   * @returns when the line has stopped. Never rejects: a round that throws stops its line.
   */
  kick(
    key: string,
    round: () => Promise<void>,
    options: { go?: () => boolean; start?: (loop: () => Promise<void>) => Promise<void> } = {},
  ): Promise<void> {
    const running = this.#lines.get(key);
    if (running) {
      running.again = true;
      return running.done;
    }
    const line = { again: true, done: Promise.resolve() };
    const go = options.go ?? (() => true);
    const loop = async () => {
      try {
        while (line.again && go()) {
          line.again = false;
          await round();
        }
      } finally {
        if (this.#lines.get(key) === line) this.#lines.delete(key);
      }
    };
    // In the map before the loop can end: a loop that ends at once must find itself there.
    this.#lines.set(key, line);
    line.done = (options.start ?? ((f) => f()))(loop).catch(() => {});
    return line.done;
  }

  /** Whether `key`'s line is running (or waiting to start). */
  running(key: string): boolean {
    return this.#lines.has(key);
  }
}
