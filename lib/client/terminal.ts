/**
 * The client's input and output: a readline prompt on a terminal (incoming lines are printed
 * above the prompt and the half-typed line survives), plain lines when stdin/stdout are pipes,
 * or one JSON object per event with `--json`.
 */
import * as readline from "node:readline";
import process from "node:process";
import { readLines } from "../cli/lines.ts";
import type { ClientEvent } from "./events.ts";
import { Renderer } from "./render.ts";

export interface FrontEnd extends AsyncDisposable {
  /** Input lines, until the user's input ends. */
  lines(): AsyncIterable<string>;
  /** Shows an event. */
  show(event: ClientEvent): void;
  /** Shows a line of text (not an event). */
  print(text: string): void;
  /** Asks for a secret without echo; undefined when there is no terminal to ask on. */
  askSecret(question: string): Promise<string | undefined>;
  setPrompt(prompt: string): void;
  /** Shows the prompt again once a command has finished. */
  ready(): void;
}

export function useColor(): boolean {
  const noColor = Deno.env.get("NO_COLOR");
  return Deno.stdout.isTerminal() && (noColor === undefined || noColor === "");
}

/** Plain lines in, text lines out: for pipes, scripts and tests. */
export class PlainFrontEnd implements FrontEnd {
  readonly #renderer = new Renderer({ color: false });
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #write: (text: string) => void;

  constructor(write: (text: string) => void = (t) => console.log(t)) {
    this.#write = write;
    this.#timer = setInterval(() => {
      for (const line of this.#renderer.takeSlow(Date.now())) this.#write(line);
    }, 250);
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

  setPrompt(): void {}
  ready(): void {}

  [Symbol.asyncDispose](): Promise<void> {
    clearInterval(this.#timer);
    return Promise.resolve();
  }
}

/** One JSON object per line on stdout for every event; commands come in on stdin. */
export class JsonFrontEnd implements FrontEnd {
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

  setPrompt(): void {}
  ready(): void {}

  [Symbol.asyncDispose](): Promise<void> {
    return Promise.resolve();
  }
}

/** A terminal: prompt, colours (unless NO_COLOR), output above the half-typed line. */
export class TtyFrontEnd implements FrontEnd {
  readonly #rl: readline.Interface;
  readonly #renderer = new Renderer({ color: useColor() });
  readonly #timer: ReturnType<typeof setInterval>;
  #muted = false;
  #busy = false;
  #queue: string[] = [];
  /** The last thing printed was the transfer status line (redrawn in place). */
  #statusShown = false;
  #waiting: ((line: string | undefined) => void) | undefined;
  #ended = false;

  constructor() {
    this.#rl = readline.createInterface({
      input: process.stdin,
      output: process.stdout,
      terminal: true,
      historySize: 200,
    });
    // Swallow echo while a password is typed.
    const rl = this.#rl as unknown as { _writeToOutput(s: string): void };
    const write = rl._writeToOutput.bind(rl);
    rl._writeToOutput = (s: string) => {
      if (!this.#muted) write(s);
    };
    this.#rl.on("line", (line) => {
      if (this.#waiting) {
        const w = this.#waiting;
        this.#waiting = undefined;
        w(line);
      } else this.#queue.push(line);
    });
    this.#rl.on("close", () => {
      this.#ended = true;
      this.#waiting?.(undefined);
    });
    this.#timer = setInterval(() => {
      for (const line of this.#renderer.takeSlow(Date.now())) this.print(line);
    }, 250);
  }

  async *lines(): AsyncIterable<string> {
    this.#rl.prompt();
    for (;;) {
      const queued = this.#queue.shift();
      if (queued !== undefined) {
        this.#busy = true;
        yield queued;
        continue;
      }
      if (this.#ended) return;
      const line = await new Promise<string | undefined>((resolve) => this.#waiting = resolve);
      if (line === undefined) return;
      this.#busy = true;
      yield line;
    }
  }

  show(event: ClientEvent): void {
    const text = this.#renderer.render(event);
    if (event.type === "transfer_progress") {
      // On a terminal, progress is one status line redrawn in place, not a line per step.
      const status = this.#renderer.statusLine(process.stdout.columns ?? 80);
      if (status !== undefined) this.#printAbove(status, true);
      return;
    }
    if (text !== undefined) this.print(text);
  }

  /** Prints above the prompt, keeping what the user has typed so far (also when it wraps). */
  print(text: string): void {
    this.#printAbove(text, false);
  }

  #printAbove(text: string, status: boolean): void {
    const out = process.stdout;
    if (this.#busy || this.#muted) {
      if (!status) out.write(text + "\n");
      return;
    }
    const rows = this.#rl.getCursorPos().rows + (this.#statusShown ? 1 : 0);
    this.#statusShown = status;
    readline.moveCursor(out, 0, -rows);
    readline.cursorTo(out, 0);
    readline.clearScreenDown(out);
    out.write(text + "\n");
    // readline remembers which row of a wrapped input the cursor was on and would move up
    // that far on redraw, over the text just printed; the input now starts on a fresh row.
    (this.#rl as unknown as { prevRows: number }).prevRows = 0;
    this.#rl.prompt(true);
  }

  askSecret(question: string): Promise<string | undefined> {
    return new Promise((resolve) => {
      process.stdout.write(question);
      this.#muted = true;
      this.#waiting = (line) => {
        this.#muted = false;
        process.stdout.write("\n");
        resolve(line);
      };
    });
  }

  setPrompt(prompt: string): void {
    this.#rl.setPrompt(this.#renderer.paint("bold", prompt));
  }

  ready(): void {
    this.#busy = false;
    this.#rl.prompt();
  }

  [Symbol.asyncDispose](): Promise<void> {
    clearInterval(this.#timer);
    this.#rl.close();
    return Promise.resolve();
  }
}
