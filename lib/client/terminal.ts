/**
 * The client's input and output: a line editor on a terminal (incoming lines are printed
 * above the input line, which survives them; a status line shows unread chats and server
 * trouble), plain lines when stdin/stdout are pipes, or one JSON object per event with
 * `--json`.
 */
import { readFileLines } from "../cli/lines.ts";
import { LineQueue, LineTerminal } from "../cli/tty.ts";
import { Activity } from "./activity.ts";
import type { ClientEvent } from "./events.ts";
import { Renderer, type Where } from "./render.ts";
import { hasUnsafe } from "../cli/text.ts";

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
    return readFileLines(Deno.stdin);
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

/** `\u2028` for U+2028: the JSON escape of a character. */
function escapeSeparator(ch: string): string {
  return `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`;
}

/**
 * One JSON object per line on stdout for every event; commands come in on stdin. The lines of
 * one turn (a batch of shown mail is hundreds of events) go out in one write, in order, at the
 * end of that turn: a write per line was most of the cost of showing a message. Whatever is
 * held is written before the process exits.
 */
export class JsonFrontEnd implements FrontEnd {
  #held: string[] = [];
  readonly #encoder = new TextEncoder();
  readonly #flush = () => this.flush();

  constructor() {
    // Deno.exit() anywhere dispatches "unload" before the process ends (events may still come
    // after this front end is disposed, while the client closes).
    globalThis.addEventListener("unload", this.#flush);
  }

  bind(): void {}

  lines(): AsyncIterable<string> {
    return readFileLines(Deno.stdin);
  }

  show(event: ClientEvent): void {
    // JSON leaves the line and paragraph separators and NEL raw in strings, and line readers
    // (Python's splitlines(), editors, some log shippers) end a line there: escaped, a line is
    // always one object.
    const json = JSON.stringify({ ...event, time: Date.now() });
    this.#held.push(json.replace(/[\u0085\u2028\u2029]/g, escapeSeparator));
    if (this.#held.length === 1) queueMicrotask(this.#flush);
  }

  /**
   * Writes the lines held, each ending in a newline. A closed stdout is no error, as for
   * console.log.
   */
  flush(): void {
    if (this.#held.length === 0) return;
    let bytes = this.#encoder.encode(this.#held.join("\n") + "\n");
    this.#held = [];
    try {
      while (bytes.length > 0) bytes = bytes.subarray(Deno.stdout.writeSync(bytes));
    } catch {
      // The reader is gone (a broken pipe): nobody is left to read the events.
    }
  }

  print(text: string): void {
    this.show({ type: "help", text });
  }

  askSecret(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }

  clear(): void {}

  [Symbol.asyncDispose](): Promise<void> {
    this.flush();
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

const TITLE_PUSH = "\x1b[22;0t";
const TITLE_POP = "\x1b[23;0t";

/**
 * A terminal in raw mode with our own line editor (see the module comment). Keys: Enter,
 * the Emacs editing keys, up/down for history, Tab to complete, bracketed paste; Ctrl-C clears
 * the line (twice on an empty line quits), Ctrl-D on an empty line leaves the chat (outside one
 * it quits), Ctrl-Z suspends, Ctrl-L clears the screen.
 */
export class TtyFrontEnd implements FrontEnd {
  readonly #tty: LineTerminal;
  readonly #renderer: Renderer;
  readonly #activity = new Activity();
  readonly #options: TtyOptions;
  readonly #timer: ReturnType<typeof setInterval>;
  #context: FrontContext | undefined;
  readonly #input = new LineQueue();
  #secret:
    | { question: string; resolve: (s: string) => void; reject: (e: Error) => void; draft: string }
    | undefined;
  #closed: Promise<void> | undefined;
  #armedQuit = false;
  #titleShown = false;

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
    this.#tty = new LineTerminal({
      prompt: () => this.#renderer.paint("bold", this.#prompt()),
      status: () => this.#status(),
      submit: (line) => this.#submit(line),
      interrupt: (hadText) => this.#interrupt(hadText),
      eof: () => this.#eof(),
      complete: () => this.#complete(),
      key: (key) => {
        // Ctrl-C twice in a row on an empty line quits; any other key in between does not.
        if (key.kind !== "key" || key.name !== "ctrl-c") this.#armedQuit = false;
      },
      hangup: () => {
        // The terminal is gone: there is nobody left to type.
        this.#input.end();
        this.#options.onQuit?.();
      },
    }, { start: this.#notifies("title") ? TITLE_PUSH : "" });
  }

  #notifies(kind: "bell" | "title"): boolean {
    const n = this.#options.notify ?? "bell";
    return n === kind || n === "both";
  }

  bind(context: FrontContext): void {
    this.#context = context;
    this.#tty.refresh();
  }

  #submit(line: string): void {
    const secret = this.#secret;
    if (secret) {
      this.#endSecret();
      secret.resolve(line);
      return;
    }
    const echo = this.#context ? this.#context.echo(line) : line;
    if (echo !== undefined) this.#tty.print(this.#prompt() + echo);
    this.#tty.editor.addHistory(this.#context ? this.#context.historyLine(line) : line);
    this.#input.push(line);
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
    const where = this.#context?.where();
    if (where?.chatWith !== undefined || where?.group !== undefined) this.#input.push("/q");
    else this.#options.onQuit?.();
  }

  #complete(): void {
    if (!this.#context || this.#secret) return;
    const editor = this.#tty.editor;
    const { start, word } = editor.wordAtCursor();
    const lower = word.toLowerCase();
    // A word that cannot be typed (a file name with ESC, a control or a bidi control in it) is
    // not offered: it would put terminal commands on the input row and in the list of matches.
    const matches = [...new Set(this.#context.complete(editor.text.slice(0, start), word))]
      .filter((o) => o.toLowerCase().startsWith(lower) && !hasUnsafe(o));
    if (matches.length === 0) {
      if (this.#notifies("bell")) this.#tty.screen.command("\x07");
      return;
    }
    if (matches.length === 1) {
      const only = matches[0]!;
      editor.replaceBeforeCursor(start, only.endsWith("/") ? only : `${only} `);
      return;
    }
    let common = matches[0]!;
    for (const m of matches) {
      while (!m.toLowerCase().startsWith(common.toLowerCase())) common = common.slice(0, -1);
    }
    if (common.length > word.length) editor.replaceBeforeCursor(start, common);
    else this.print(this.#renderer.paint("dim", matches.sort().join("  ")));
  }

  #prompt(): string {
    if (this.#secret) return this.#secret.question;
    return this.#context?.prompt() ?? "confab> ";
  }

  /** The status row: unread chats, server trouble, transfers in progress. */
  #status(): string | undefined {
    const transfers = this.#renderer.statusLine(this.#tty.screen.columns - 1);
    const status = [this.#activity.status(), transfers].filter((s) => s).join("  ");
    return status ? this.#renderer.paint("inverse", status) : undefined;
  }

  #alert(): void {
    if (this.#notifies("bell")) this.#tty.screen.command("\x07");
    this.#title();
  }

  #title(): void {
    if (!this.#notifies("title")) return;
    const n = this.#activity.total;
    if (n === 0 && !this.#titleShown) return;
    this.#titleShown = n > 0;
    this.#tty.screen.command(`\x1b]0;${n > 0 ? `confab (${n} unread)` : "confab"}\x07`);
  }

  lines(): AsyncIterable<string> {
    return this.#input.lines();
  }

  show(event: ClientEvent): void {
    const alert = this.#activity.observe(event);
    const text = this.#renderer.render(event);
    // Progress is the status line redrawn in place, not a line per step.
    if (text !== undefined && event.type !== "transfer_progress") this.#tty.print(text);
    if (alert) this.#alert();
    else if (this.#titleShown) this.#title();
    this.#tty.refresh();
  }

  /** Prints above the input line, keeping what the user has typed so far. */
  print(text: string): void {
    this.#tty.print(text);
  }

  askSecret(question: string): Promise<string | undefined> {
    this.#secret?.reject(new CancelledError("cancelled"));
    return new Promise((resolve, reject) => {
      const editor = this.#tty.editor;
      this.#secret = { question, resolve, reject, draft: editor.text };
      editor.setLine("");
      editor.secret = true;
      this.#tty.refresh();
    });
  }

  #endSecret(): void {
    const secret = this.#secret;
    if (!secret) return;
    this.#secret = undefined;
    this.#tty.editor.secret = false;
    this.#tty.editor.setLine(secret.draft);
    this.#tty.refresh();
  }

  clear(): void {
    this.#tty.screen.clear();
  }

  /** Restores the terminal: leaves the output, drops the input row. Idempotent. */
  [Symbol.asyncDispose](): Promise<void> {
    this.#closed ??= (async () => {
      clearInterval(this.#timer);
      this.#input.end();
      await this.#tty.close({ end: this.#notifies("title") ? TITLE_POP : "" });
    })();
    return this.#closed;
  }
}
