/**
 * The client's input and output: a line editor on a terminal (incoming lines are printed
 * above the input line, which survives them; a status line shows unread chats and server
 * trouble), plain lines when stdin/stdout are pipes, or one JSON object per event with
 * `--json`.
 */
import { readLines } from "../cli/lines.ts";
import { KeyDecoder } from "../cli/keys.ts";
import { LineEditor } from "../cli/line_editor.ts";
import { type Rows, Screen, TerminalWriter } from "../cli/screen.ts";
import { Activity } from "./activity.ts";
import type { ClientEvent } from "./events.ts";
import { Renderer, type Where } from "./render.ts";

/** What a front end needs to know about the client to show it well. */
export interface FrontContext {
  /** The prompt for where the user is now. */
  prompt(): string;
  /** Which chat is open. */
  where(): Where;
  /** What stays on screen for a line the user entered; undefined for a chat message. */
  echo(line: string): string | undefined;
  /** The line as it may be kept in up-arrow history. */
  historyLine(line: string): string;
  /** Words that may complete `word`, given the line before it. */
  complete(before: string, word: string): string[];
}

/** The user cancelled a question (Ctrl-C at a password prompt). */
export class CancelledError extends Error {
  override name = "CancelledError";
}

export interface FrontEnd extends AsyncDisposable {
  /** Learns about the client (prompt, open chat, completion). */
  bind(context: FrontContext): void;
  /** Input lines, until the user's input ends. */
  lines(): AsyncIterable<string>;
  /** Shows an event. */
  show(event: ClientEvent): void;
  /** Shows a line of text (not an event). */
  print(text: string): void;
  /**
   * Asks for a secret without echo; undefined when there is no terminal to ask on.
   * @throws {CancelledError} when the user cancels (Ctrl-C).
   */
  askSecret(question: string): Promise<string | undefined>;
  /** Clears the screen (a terminal only). */
  clear(): void;
}

export function useColor(): boolean {
  const noColor = Deno.env.get("NO_COLOR");
  return Deno.stdout.isTerminal() && (noColor === undefined || noColor === "");
}

export interface TextOptions {
  /** Technical detail too (addresses, link changes). */
  verbose?: boolean;
}

/** Plain lines in, text lines out: for pipes, scripts and tests. */
export class PlainFrontEnd implements FrontEnd {
  readonly #renderer: Renderer;
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #write: (text: string) => void;
  #context: FrontContext | undefined;

  constructor(write: (text: string) => void = (t) => console.log(t), options: TextOptions = {}) {
    this.#write = write;
    this.#renderer = new Renderer({
      color: false,
      verbose: options.verbose,
      where: () => this.#context?.where() ?? {},
    });
    this.#timer = setInterval(() => {
      for (const line of this.#renderer.takeSlow(Date.now())) this.#write(line);
    }, 250);
  }

  bind(context: FrontContext): void {
    this.#context = context;
  }

  lines(): AsyncIterable<string> {
    return readLines(Deno.stdin.readable);
  }

  show(event: ClientEvent): void {
    const text = this.#renderer.render(event);
    if (text !== undefined) this.#write(text);
  }

  print(text: string): void {
    this.#write(text);
  }

  askSecret(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }

  clear(): void {}

  [Symbol.asyncDispose](): Promise<void> {
    clearInterval(this.#timer);
    return Promise.resolve();
  }
}

/** One JSON object per line on stdout for every event; commands come in on stdin. */
export class JsonFrontEnd implements FrontEnd {
  bind(): void {}

  lines(): AsyncIterable<string> {
    return readLines(Deno.stdin.readable);
  }

  show(event: ClientEvent): void {
    console.log(JSON.stringify({ ...event, time: Date.now() }));
  }

  print(text: string): void {
    this.show({ type: "help", text });
  }

  askSecret(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }

  clear(): void {}

  [Symbol.asyncDispose](): Promise<void> {
    return Promise.resolve();
  }
}

/** How a terminal tells the user about a message for a window that is not open. */
export type Notify = "bell" | "title" | "both" | "none";

export interface TtyOptions extends TextOptions {
  notify?: Notify;
  /** Called when the user asks to quit with keys (Ctrl-C twice, Ctrl-D outside a chat). */
  onQuit?: () => void;
}

const PASTE_ON = "\x1b[?2004h";
const PASTE_OFF = "\x1b[?2004l";
const TITLE_PUSH = "\x1b[22;0t";
const TITLE_POP = "\x1b[23;0t";
/** A lone ESC is the Escape key once no more bytes follow for this long. */
const ESC_WAIT_MS = 50;

/**
 * A terminal in raw mode with our own line editor (see the module comment). Keys: Enter,
 * the Emacs editing keys, up/down for history, Tab to complete, bracketed paste; Ctrl-C clears
 * the line (twice on an empty line quits), Ctrl-D on an empty line leaves the chat (outside one
 * it quits), Ctrl-Z suspends, Ctrl-L clears the screen.
 */
export class TtyFrontEnd implements FrontEnd {
  readonly #writer = new TerminalWriter(Deno.stdout);
  readonly #screen = new Screen(this.#writer, () => Deno.consoleSize().columns);
  readonly #editor = new LineEditor();
  readonly #decoder = new KeyDecoder();
  readonly #renderer: Renderer;
  readonly #activity = new Activity();
  readonly #options: TtyOptions;
  readonly #timer: ReturnType<typeof setInterval>;
  #context: FrontContext | undefined;
  #queue: string[] = [];
  #waiting: ((line: string | undefined) => void) | undefined;
  #secret:
    | { question: string; resolve: (s: string) => void; reject: (e: Error) => void; draft: string }
    | undefined;
  #ended = false;
  #closed: Promise<void> | undefined;
  #armedQuit = false;
  #escTimer: ReturnType<typeof setTimeout> | undefined;
  #titleShown = false;
  readonly #onResize = () => this.#refresh();
  readonly #onContinue = () => this.#resume();

  constructor(options: TtyOptions = {}) {
    this.#options = options;
    this.#renderer = new Renderer({
      color: useColor(),
      verbose: options.verbose,
      where: () => this.#context?.where() ?? {},
    });
    this.#timer = setInterval(() => {
      for (const line of this.#renderer.takeSlow(Date.now())) this.print(line);
    }, 250);
    this.#raw(true);
    this.#writer.write(PASTE_ON);
    if (this.#notifies("title")) this.#writer.write(TITLE_PUSH);
    for (const [signal, listener] of this.#signals()) {
      try {
        Deno.addSignalListener(signal, listener);
      } catch { /* not on this platform */ }
    }
    this.#screen.setRows(() => this.#rows());
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

  #notifies(kind: "bell" | "title"): boolean {
    const n = this.#options.notify ?? "bell";
    return n === kind || n === "both";
  }

  bind(context: FrontContext): void {
    this.#context = context;
    this.#refresh();
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
        // The terminal is gone (hung up): there is nobody left to type.
        this.#end();
        this.#options.onQuit?.();
        return;
      }
      clearTimeout(this.#escTimer);
      this.#keys(this.#decoder.feed(buf.subarray(0, n)));
      if (this.#decoder.waiting) {
        this.#escTimer = setTimeout(() => this.#keys(this.#decoder.flush()), ESC_WAIT_MS);
      }
    }
  }

  #keys(keys: ReturnType<KeyDecoder["feed"]>): void {
    for (const key of keys) {
      const quitKey = key.kind === "key" && key.name === "ctrl-c";
      if (!quitKey) this.#armedQuit = false;
      for (const action of this.#editor.handle(key)) {
        switch (action.kind) {
          case "submit":
            this.#submit(action.line);
            break;
          case "interrupt":
            this.#interrupt(action.hadText);
            break;
          case "eof":
            this.#eof();
            break;
          case "suspend":
            void this.#suspend();
            break;
          case "clear-screen":
            this.#screen.clear();
            break;
          case "complete":
            this.#complete();
            break;
        }
      }
    }
    this.#refresh();
  }

  #submit(line: string): void {
    const secret = this.#secret;
    if (secret) {
      this.#endSecret();
      secret.resolve(line);
      return;
    }
    const echo = this.#context ? this.#context.echo(line) : line;
    if (echo !== undefined) this.#screen.print(this.#prompt() + echo);
    this.#editor.addHistory(this.#context ? this.#context.historyLine(line) : line);
    if (this.#waiting) {
      const w = this.#waiting;
      this.#waiting = undefined;
      w(line);
    } else this.#queue.push(line);
  }

  #interrupt(hadText: boolean): void {
    const secret = this.#secret;
    if (secret) {
      this.#endSecret();
      secret.reject(new CancelledError("cancelled"));
      return;
    }
    if (hadText) return;
    if (this.#armedQuit) {
      this.#options.onQuit?.();
      return;
    }
    this.#armedQuit = true;
    this.print(this.#renderer.paint("dim", "(Ctrl-C again to quit; Ctrl-D or quit also do)"));
  }

  #eof(): void {
    const secret = this.#secret;
    if (secret) {
      this.#endSecret();
      secret.reject(new CancelledError("cancelled"));
      return;
    }
    if (this.#context?.where().chatWith !== undefined || this.#context?.where().group) {
      this.#submitQuietly("/q");
      return;
    }
    this.#options.onQuit?.();
  }

  /** Runs a line as if typed, without showing it. */
  #submitQuietly(line: string): void {
    if (this.#waiting) {
      const w = this.#waiting;
      this.#waiting = undefined;
      w(line);
    } else this.#queue.push(line);
  }

  #complete(): void {
    if (!this.#context || this.#secret) return;
    const { start, word } = this.#editor.wordAtCursor();
    const before = this.#editor.text.slice(0, start);
    const lower = word.toLowerCase();
    const matches = [...new Set(this.#context.complete(before, word))]
      .filter((o) => o.toLowerCase().startsWith(lower));
    if (matches.length === 0) {
      if (this.#notifies("bell")) this.#screen.command("\x07");
      return;
    }
    if (matches.length === 1) {
      const only = matches[0]!;
      this.#editor.replaceBeforeCursor(start, only.endsWith("/") ? only : `${only} `);
      return;
    }
    let common = matches[0]!;
    for (const m of matches) {
      while (!m.toLowerCase().startsWith(common.toLowerCase())) common = common.slice(0, -1);
    }
    if (common.length > word.length) this.#editor.replaceBeforeCursor(start, common);
    else this.print(this.#renderer.paint("dim", matches.sort().join("  ")));
  }

  async #suspend(): Promise<void> {
    if (Deno.build.os === "windows") return;
    this.#screen.hide();
    this.#writer.write(PASTE_OFF);
    await this.#writer.drain();
    this.#raw(false);
    Deno.kill(Deno.pid, "SIGTSTP");
    // Running again (fg): SIGCONT does the same; both are harmless twice.
    this.#resume();
  }

  #resume(): void {
    if (this.#closed) return;
    this.#raw(true);
    this.#writer.write(PASTE_ON);
    this.#screen.show();
  }

  #prompt(): string {
    if (this.#secret) return this.#secret.question;
    return this.#context?.prompt() ?? "confab> ";
  }

  /** Redraws the status and input rows soon (once per turn of the event loop at most). */
  #refresh(): void {
    if (!this.#closed) this.#screen.update();
  }

  /** The status and input rows for the state now. */
  #rows(): Rows {
    const transfers = this.#renderer.statusLine(this.#screen.columns - 1);
    const status = [this.#activity.status(), transfers].filter((s) => s).join("  ");
    const prompt = this.#prompt();
    return {
      status: status ? this.#renderer.paint("inverse", status) : undefined,
      prompt: this.#renderer.paint("bold", prompt),
      input: this.#editor.view(this.#screen.inputColumns(prompt)),
    };
  }

  #alert(): void {
    if (this.#notifies("bell")) this.#screen.command("\x07");
    this.#title();
  }

  #title(): void {
    if (!this.#notifies("title")) return;
    const n = this.#activity.total;
    if (n === 0 && !this.#titleShown) return;
    this.#titleShown = n > 0;
    this.#screen.command(`\x1b]0;${n > 0 ? `confab (${n} unread)` : "confab"}\x07`);
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

  #end(): void {
    this.#ended = true;
    const w = this.#waiting;
    this.#waiting = undefined;
    w?.(undefined);
  }

  show(event: ClientEvent): void {
    const alert = this.#activity.observe(event);
    const text = this.#renderer.render(event);
    // Progress is the status line redrawn in place, not a line per step.
    if (text !== undefined && event.type !== "transfer_progress") this.#screen.print(text);
    if (alert) this.#alert();
    else if (this.#titleShown) this.#title();
    this.#refresh();
  }

  /** Prints above the input line, keeping what the user has typed so far. */
  print(text: string): void {
    this.#screen.print(text);
    this.#refresh();
  }

  askSecret(question: string): Promise<string | undefined> {
    this.#secret?.reject(new CancelledError("cancelled"));
    return new Promise((resolve, reject) => {
      this.#secret = { question, resolve, reject, draft: this.#editor.text };
      this.#editor.setLine("");
      this.#editor.secret = true;
      this.#refresh();
    });
  }

  #endSecret(): void {
    const secret = this.#secret;
    if (!secret) return;
    this.#secret = undefined;
    this.#editor.secret = false;
    this.#editor.setLine(secret.draft);
    this.#refresh();
  }

  clear(): void {
    this.#screen.clear();
  }

  /** Restores the terminal: leaves the output, drops the input row. Idempotent. */
  [Symbol.asyncDispose](): Promise<void> {
    this.#closed ??= (async () => {
      clearInterval(this.#timer);
      clearTimeout(this.#escTimer);
      for (const [signal, listener] of this.#signals()) {
        try {
          Deno.removeSignalListener(signal, listener);
        } catch { /* never added */ }
      }
      this.#end();
      this.#screen.hide();
      this.#writer.write(PASTE_OFF + (this.#notifies("title") ? TITLE_POP : ""));
      await this.#writer.drain();
      this.#raw(false);
    })();
    return this.#closed;
  }
}
