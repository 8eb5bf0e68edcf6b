/**
 * The bottom of a terminal owned by a program that prints while the user types: an optional
 * status row and one input row. Output goes above them; they are redrawn below it. Every
 * change is drawn once per turn of the event loop, and written asynchronously: a terminal that
 * stops reading never blocks the program (its heartbeats, its peers).
 */
import { displayWidth, fitWidth } from "./text.ts";

/** Writes text to a terminal in order, one write in flight, never blocking the caller. */
export class TerminalWriter {
  readonly #out: { write(p: Uint8Array): Promise<number> };
  readonly #encoder = new TextEncoder();
  #queue: string[] = [];
  #queued = 0;
  #writing: Promise<void> | undefined;
  #failed = false;
  #dropped = false;
  /** Text waiting beyond this is dropped (a terminal that stopped reading). */
  readonly maxQueued: number;

  constructor(out: { write(p: Uint8Array): Promise<number> }, maxQueued = 8 * 1024 * 1024) {
    this.#out = out;
    this.maxQueued = maxQueued;
  }

  write(text: string): void {
    if (this.#failed || text === "") return;
    if (this.#queued + text.length > this.maxQueued) {
      if (!this.#dropped) {
        this.#dropped = true;
        this.#queue.push("\r\n[output dropped: the terminal is not reading]\r\n");
      }
      return;
    }
    this.#dropped = false;
    this.#queue.push(text);
    this.#queued += text.length;
    this.#writing ??= this.#pump().finally(() => (this.#writing = undefined));
  }

  async #pump(): Promise<void> {
    while (this.#queue.length > 0) {
      const text = this.#queue.join("");
      this.#queue = [];
      this.#queued = 0;
      let bytes = this.#encoder.encode(text);
      try {
        while (bytes.length > 0) bytes = bytes.subarray(await this.#out.write(bytes));
      } catch {
        // The terminal is gone (hung up): nothing more can be shown.
        this.#failed = true;
        this.#queue = [];
        return;
      }
    }
  }

  /** Resolves once everything written so far is out (or the terminal is gone). */
  async drain(): Promise<void> {
    while (this.#writing) await this.#writing;
  }
}

const CSI = "\x1b[";

/** What the rows at the bottom show. */
export interface Rows {
  /** The status row; none when undefined. */
  status?: string;
  prompt: string;
  /** The visible part of the input line and the cursor's column in it (LineEditor.view). */
  input: { text: string; cursorColumn: number };
}

/** Text above, status and input rows below; see the module comment. */
export class Screen {
  readonly #writer: TerminalWriter;
  readonly #columns: () => number;
  #above: string[] = [];
  #rows: () => Rows = () => ({ prompt: "", input: { text: "", cursorColumn: 0 } });
  /** Whether the status row is on screen now (the input row always is, unless hidden). */
  #statusDrawn = false;
  #drawn = false;
  #hidden = false;
  #scheduled = false;
  #extra = "";
  /** The cursor's column on the input row and the status row's width, as last drawn. */
  #cursorColumn = 0;
  #statusWidth = 0;
  /** The terminal rewrapped the rows drawn to this width (a resize): erase all their rows. */
  #wrappedTo: number | undefined;
  /** Drawing waits (see {@link hold}). */
  #held = false;

  constructor(writer: TerminalWriter, columns: () => number) {
    this.#writer = writer;
    this.#columns = columns;
  }

  get columns(): number {
    return Math.max(20, this.#columns());
  }

  /** Prints lines above the status and input rows. */
  print(text: string): void {
    this.#above.push(text);
    this.#schedule();
  }

  /** Sends terminal commands that print nothing (bell, title) with the next draw. */
  command(text: string): void {
    this.#extra += text;
    this.#schedule();
  }

  /**
   * Sets what the status and input rows show; it is asked when they are drawn, so they show
   * the state after everything that happened in this turn of the event loop.
   */
  setRows(rows: () => Rows): void {
    this.#rows = rows;
    this.#schedule();
  }

  /** Draws the rows again soon (the state they show changed). */
  update(): void {
    this.#schedule();
  }

  /** The widest the prompt is shown (a long one is cut). */
  get promptColumns(): number {
    return Math.max(10, Math.floor(this.columns / 2));
  }

  /** Room for the input text after `prompt`. */
  inputColumns(prompt: string): number {
    return Math.max(1, this.columns - 1 - Math.min(displayWidth(prompt), this.promptColumns));
  }

  /** The cursor's column on the input row, counted from its start; undefined when not drawn. */
  get cursorColumn(): number | undefined {
    return this.#drawn ? this.#cursorColumn : undefined;
  }

  /** The status row's width as drawn; undefined when it is not on screen. */
  get statusWidth(): number | undefined {
    return this.#drawn && this.#statusDrawn ? this.#statusWidth : undefined;
  }

  /**
   * The terminal was resized to `columns` and rewrapped the rows drawn (as most terminals do,
   * xterm excepted): the next redraw first erases every row they now take.
   */
  rewrapped(columns: number): void {
    this.#wrappedTo = Math.max(1, columns);
  }

  /** While held, nothing is drawn (it all comes at once when released). */
  hold(on: boolean): void {
    this.#held = on;
    if (!on) this.#schedule();
  }

  /** Draws everything pending now. */
  flush(): void {
    this.#scheduled = false;
    if (this.#held) return;
    let out = this.#erase();
    for (const text of this.#above) out += text.replaceAll(/\r?\n/g, "\r\n") + "\r\n";
    this.#above = [];
    out += this.#extra;
    this.#extra = "";
    if (!this.#hidden) {
      const cols = this.columns;
      const rows = this.#rows();
      if (rows.status !== undefined) {
        const status = fitWidth(rows.status, cols - 1);
        out += status + "\r\n";
        this.#statusDrawn = true;
        this.#statusWidth = displayWidth(status);
      }
      const prompt = fitWidth(rows.prompt, this.promptColumns);
      out += prompt + rows.input.text + `${CSI}K`;
      const column = displayWidth(prompt) + rows.input.cursorColumn;
      out += "\r" + (column > 0 ? `${CSI}${column}C` : "");
      this.#drawn = true;
      this.#cursorColumn = column;
    }
    this.#writer.write(out);
  }

  /** Removes the status and input rows (before the program stops or exits). */
  hide(): void {
    this.#hidden = true;
    this.#held = false;
    this.flush();
  }

  /** Draws the status and input rows again (after {@link hide}). */
  show(): void {
    this.#hidden = false;
    this.flush();
  }

  /** Clears the whole screen and draws the rows at the top. */
  clear(): void {
    this.flush(); // what was printed before goes too
    this.#writer.write(`${CSI}H${CSI}2J${CSI}3J`);
    this.#drawn = false;
    this.#statusDrawn = false;
    this.flush();
  }

  #erase(): string {
    const wrappedTo = this.#wrappedTo;
    this.#wrappedTo = undefined;
    if (!this.#drawn) return "";
    // The rows above the cursor's: the status row, and with a narrower terminal that rewrapped
    // them, each row the status row and the input row up to the cursor now take.
    let up = this.#statusDrawn ? 1 : 0;
    if (wrappedTo !== undefined) {
      up = Math.floor(this.#cursorColumn / wrappedTo) +
        (this.#statusDrawn ? Math.max(1, Math.ceil(this.#statusWidth / wrappedTo)) : 0);
    }
    this.#drawn = false;
    this.#statusDrawn = false;
    return `\r${up > 0 ? `${CSI}${up}A` : ""}${CSI}J`;
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setTimeout(() => {
      if (this.#scheduled) this.flush();
    }, 0);
  }
}
