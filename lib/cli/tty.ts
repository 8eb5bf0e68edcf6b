/**
 * An interactive terminal for a program that prints while the user types (the client, the
 * server's console): raw mode, keys read and decoded as they come, a line editor, and the
 * screen's status and input rows redrawn below whatever is printed. Ctrl-Z suspends and `fg`
 * restores raw mode and the rows; a resize redraws them. What the keys mean beyond editing is
 * up to the program (see {@link LineTerminalHooks}).
 */
import { type Key, KeyDecoder } from "./keys.ts";
import { LineEditor } from "./line_editor.ts";
import { Screen, TerminalWriter } from "./screen.ts";

export interface LineTerminalHooks {
  /** The prompt, as it is to be drawn (styled if need be). */
  prompt(): string;
  /** The status row, or undefined for none. */
  status?(): string | undefined;
  /** Enter: a line is done. */
  submit(line: string): void;
  /** Ctrl-C; `hadText`: the line had text (now cleared). */
  interrupt(hadText: boolean): void;
  /** Ctrl-D on an empty line. */
  eof(): void;
  /** Tab. */
  complete?(): void;
  /** Any key, before it is applied. */
  key?(key: Key): void;
  /** The terminal is gone (stdin ended: hung up). */
  hangup(): void;
}

const PASTE_ON = "\x1b[?2004h";
const PASTE_OFF = "\x1b[?2004l";
/** A lone ESC is the Escape key once no more bytes follow for this long. */
const ESC_WAIT_MS = 50;
/** Asks the terminal where the cursor is (it answers `\x1b[<row>;<column>R`). */
const ASK_CURSOR = "\x1b[6n";
/** How long drawing waits for that answer after a resize (some terminals never answer). */
const CURSOR_WAIT_MS = 300;

/** The terminal's width; 80 once it cannot be asked (hung up). */
function columns(): number {
  try {
    return Deno.consoleSize().columns;
  } catch {
    return 80;
  }
}

/** True when stdin and stdout are both a terminal (else: plain lines). */
export function isInteractive(): boolean {
  return Deno.stdin.isTerminal() && Deno.stdout.isTerminal();
}

/** Lines the user entered, handed in order to one reader; it ends when {@link end} is called. */
export class LineQueue {
  readonly #queue: string[] = [];
  #waiting: ((line: string | undefined) => void) | undefined;
  #ended = false;

  push(line: string): void {
    const w = this.#waiting;
    this.#waiting = undefined;
    if (w) w(line);
    else this.#queue.push(line);
  }

  /** No more lines: the reader gets those queued, then the end. */
  end(): void {
    this.#ended = true;
    const w = this.#waiting;
    this.#waiting = undefined;
    w?.(undefined);
  }

  async *lines(): AsyncIterable<string> {
    for (;;) {
      const queued = this.#queue.shift();
      if (queued !== undefined) {
        yield queued;
        continue;
      }
      if (this.#ended) return;
      const line = await new Promise<string | undefined>((resolve) => this.#waiting = resolve);
      if (line === undefined) return;
      yield line;
    }
  }
}

export class LineTerminal {
  readonly writer = new TerminalWriter(Deno.stdout);
  readonly screen = new Screen(this.writer, columns);
  readonly editor = new LineEditor();
  readonly #decoder = new KeyDecoder();
  readonly #hooks: LineTerminalHooks;
  #escTimer: ReturnType<typeof setTimeout> | undefined;
  #closed: Promise<void> | undefined;
  readonly #onResize = () => this.#resized();
  /** Whether the terminal rewraps lines when it gets narrower (learnt at a resize). */
  #rewraps: boolean | undefined;
  /** Cursor positions asked for after resizes and not answered yet. */
  #asked = 0;
  #askTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #onContinue = () => this.#resume();

  /** Takes over the terminal: raw mode, bracketed pastes, the rows drawn. */
  constructor(hooks: LineTerminalHooks, options: { start?: string } = {}) {
    this.#hooks = hooks;
    this.#raw(true);
    this.writer.write(PASTE_ON + (options.start ?? ""));
    for (const [signal, listener] of this.#signals()) {
      try {
        Deno.addSignalListener(signal, listener);
      } catch { /* not on this platform */ }
    }
    this.screen.setRows(() => {
      const prompt = hooks.prompt();
      return {
        status: hooks.status?.(),
        prompt,
        input: this.editor.view(this.screen.inputColumns(prompt)),
      };
    });
    void this.#readInput();
  }

  #signals(): [Deno.Signal, () => void][] {
    return [["SIGWINCH", this.#onResize], ["SIGCONT", this.#onContinue]];
  }

  #raw(on: boolean): void {
    try {
      Deno.stdin.setRaw(on);
    } catch { /* not a terminal any more */ }
  }

  async #readInput(): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      let n: number | null;
      try {
        n = await Deno.stdin.read(buf);
      } catch {
        n = null;
      }
      if (this.#closed) return;
      if (n === null) {
        this.#hooks.hangup();
        return;
      }
      clearTimeout(this.#escTimer);
      this.#keys(this.#decoder.feed(buf.subarray(0, n)));
      if (this.#decoder.waiting) {
        this.#escTimer = setTimeout(() => this.#keys(this.#decoder.flush()), ESC_WAIT_MS);
      }
    }
  }

  /**
   * A resize. A terminal that got narrower than the input row either rewraps it onto more rows
   * (most do; the cursor then sits on a lower row) or cuts it (xterm): erasing the rows as
   * drawn would leave a stale part of them above in the first case. Where the cursor now is
   * tells which, once; until the terminal answers, nothing is drawn. Until it is known, a status
   * row wider than the terminal is taken as rewrapped.
   */
  #resized(): void {
    const width = columns();
    const column = this.screen.cursorColumn;
    if (this.#rewraps === undefined && column !== undefined && column >= width) {
      this.#asked++;
      this.screen.hold(true);
      this.writer.write(ASK_CURSOR);
      clearTimeout(this.#askTimer);
      this.#askTimer = setTimeout(() => this.#answered(undefined), CURSOR_WAIT_MS);
      return;
    }
    // The input row fits, so the cursor cannot tell; a status row wider than the terminal now
    // took two rows or more where it rewraps, as most terminals do: erase them as such (where
    // it cuts instead, a row of older output goes from view, not a stale row left on it).
    const status = this.screen.statusWidth;
    if (this.#rewraps ?? (status !== undefined && status >= width)) this.screen.rewrapped(width);
    this.refresh();
  }

  /** The terminal said where the cursor is (undefined: it did not say in time). */
  #answered(cursorColumn: number | undefined): void {
    if (cursorColumn !== undefined) {
      if (this.#asked === 0 || --this.#asked > 0) return; // a later answer is coming
      const width = columns();
      const drawn = this.screen.cursorColumn;
      // Cut: the cursor stays at the last column. Rewrapped: it moves on with its text.
      if (drawn !== undefined && drawn >= width && drawn % width !== width - 1) {
        this.#rewraps = cursorColumn === drawn % width;
      }
      if (this.#rewraps) this.screen.rewrapped(width);
    }
    this.#asked = 0;
    clearTimeout(this.#askTimer);
    this.screen.hold(false);
  }

  /** Applies keys: editing in the editor, the rest through the hooks; one redraw at the end. */
  #keys(keys: Key[]): void {
    const hooks = this.#hooks;
    for (const key of keys) {
      if (key.kind === "cursor") {
        this.#answered(key.column);
        continue;
      }
      hooks.key?.(key);
      for (const action of this.editor.handle(key)) {
        switch (action.kind) {
          case "submit":
            hooks.submit(action.line);
            break;
          case "interrupt":
            hooks.interrupt(action.hadText);
            break;
          case "eof":
            hooks.eof();
            break;
          case "suspend":
            void this.#suspend();
            break;
          case "clear-screen":
            this.screen.clear();
            break;
          case "complete":
            hooks.complete?.();
            break;
        }
      }
    }
    this.refresh();
  }

  async #suspend(): Promise<void> {
    if (Deno.build.os === "windows") return;
    this.screen.hide();
    this.writer.write(PASTE_OFF);
    await this.writer.drain();
    this.#raw(false);
    Deno.kill(Deno.pid, "SIGTSTP");
    // Running again (fg): SIGCONT does the same; both are harmless twice.
    this.#resume();
  }

  #resume(): void {
    if (this.#closed) return;
    this.#raw(true);
    this.writer.write(PASTE_ON);
    this.screen.show();
  }

  /** Prints above the rows, keeping what the user has typed. */
  print(text: string): void {
    this.screen.print(text);
  }

  /** Redraws the rows soon (once per turn of the event loop at most). */
  refresh(): void {
    if (!this.#closed) this.screen.update();
  }

  /** Restores the terminal: the rows go, output stays, cooked mode. Idempotent. */
  close(options: { end?: string } = {}): Promise<void> {
    this.#closed ??= (async () => {
      clearTimeout(this.#escTimer);
      clearTimeout(this.#askTimer);
      for (const [signal, listener] of this.#signals()) {
        try {
          Deno.removeSignalListener(signal, listener);
        } catch { /* never added */ }
      }
      this.screen.hide();
      this.writer.write(PASTE_OFF + (options.end ?? ""));
      await this.writer.drain();
      this.#raw(false);
    })();
    return this.#closed;
  }
}
