/**
 * The input line of a terminal program, without any terminal: the text being typed, the
 * cursor, history (up/down), the Emacs keys people expect (Ctrl-A/E/U/K/W/Y, Alt-B/F), and a
 * one-row view that scrolls sideways, so a line of any length costs the same to draw.
 */
import type { Key } from "./keys.ts";
import { charWidth, UNSAFE_RANGES } from "./text.ts";

/** What a key asks of the program around the editor. */
export type EditorAction =
  /** Enter: the line is done (already cleared from the editor). */
  | { kind: "submit"; line: string }
  /** Ctrl-C: the line was cleared; `hadText`: there was something to clear. */
  | { kind: "interrupt"; hadText: boolean }
  /** Ctrl-D on an empty line. */
  | { kind: "eof" }
  /** Ctrl-Z. */
  | { kind: "suspend" }
  /** Ctrl-L. */
  | { kind: "clear-screen" }
  /** Tab. */
  | { kind: "complete" };

const HISTORY_SIZE = 500;
/** What typing or pasting cannot put in the line (tabs and line breaks are handled first). */
const UNTYPABLE = new RegExp(`[${UNSAFE_RANGES}]`, "g");

export class LineEditor {
  #text = "";
  #cursor = 0;
  /** The first character shown when the line is wider than the screen. */
  #offset = 0;
  readonly #history: string[] = [];
  /** Where up/down is in the history; `#history.length` is the line being typed. */
  #historyAt = 0;
  #draft = "";
  #killed = "";
  /** Typing is not shown (a password). */
  secret = false;

  get text(): string {
    return this.#text;
  }

  get cursor(): number {
    return this.#cursor;
  }

  /** Replaces the line, the cursor at `cursor` (default: the end). */
  setLine(text: string, cursor = text.length): void {
    this.#text = text;
    this.#cursor = Math.max(0, Math.min(cursor, text.length));
    this.#offset = 0; // a new line is shown from its start when it fits
  }

  /** Remembers a line for up-arrow (a repeat of the last one is kept once). */
  addHistory(line: string): void {
    if (line.trim() === "") return;
    if (this.#history[this.#history.length - 1] !== line) this.#history.push(line);
    if (this.#history.length > HISTORY_SIZE) this.#history.shift();
    this.#historyAt = this.#history.length;
  }

  get historyLines(): readonly string[] {
    return this.#history;
  }

  /**
   * Inserts text at the cursor. Tabs become spaces; other control characters are dropped
   * (the terminal's own keys never reach here as text).
   */
  insert(text: string): void {
    const clean = text.replaceAll("\t", "    ").replace(UNTYPABLE, "");
    if (!clean) return;
    this.#text = this.#text.slice(0, this.#cursor) + clean + this.#text.slice(this.#cursor);
    this.#cursor += clean.length;
  }

  /** Applies one key; returns what the program around it has to do. */
  handle(key: Key): EditorAction[] {
    if (key.kind === "text") {
      this.insert(key.text);
      return [];
    }
    if (key.kind === "paste") return this.#paste(key.text);
    if (key.kind === "cursor") return [];
    return this.#named(key.name);
  }

  /** A paste: each line break ends a line (as if Enter was pressed), the rest is inserted. */
  #paste(text: string): EditorAction[] {
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    const actions: EditorAction[] = [];
    for (let i = 0; i < lines.length; i++) {
      this.insert(lines[i]!);
      if (i < lines.length - 1) actions.push(this.#submit());
    }
    return actions;
  }

  #submit(): EditorAction {
    const line = this.#text;
    this.#text = "";
    this.#cursor = 0;
    this.#offset = 0;
    this.#historyAt = this.#history.length;
    this.#draft = "";
    return { kind: "submit", line };
  }

  #named(name: string): EditorAction[] {
    const t = this.#text;
    switch (name) {
      case "enter":
      case "ctrl-j":
      case "ctrl-m":
        return [this.#submit()];
      case "ctrl-c": {
        const hadText = t.length > 0;
        this.setLine("");
        this.#historyAt = this.#history.length;
        return [{ kind: "interrupt", hadText }];
      }
      case "ctrl-d":
        if (t.length === 0) return [{ kind: "eof" }];
        this.#deleteRange(this.#cursor, this.#nextChar(this.#cursor));
        return [];
      case "ctrl-z":
        return [{ kind: "suspend" }];
      case "ctrl-l":
        return [{ kind: "clear-screen" }];
      case "tab":
        return [{ kind: "complete" }];
      case "backspace":
      case "ctrl-h":
        this.#deleteRange(this.#prevChar(this.#cursor), this.#cursor);
        return [];
      case "delete":
        this.#deleteRange(this.#cursor, this.#nextChar(this.#cursor));
        return [];
      case "left":
      case "ctrl-b":
        this.#cursor = this.#prevChar(this.#cursor);
        return [];
      case "right":
      case "ctrl-f":
        this.#cursor = this.#nextChar(this.#cursor);
        return [];
      case "home":
      case "ctrl-a":
        this.#cursor = 0;
        return [];
      case "end":
      case "ctrl-e":
        this.#cursor = t.length;
        return [];
      case "alt-b":
      case "ctrl-left":
      case "alt-left":
        this.#cursor = this.#wordStart(this.#cursor);
        return [];
      case "alt-f":
      case "ctrl-right":
      case "alt-right":
        this.#cursor = this.#wordEnd(this.#cursor);
        return [];
      case "ctrl-u":
        this.#kill(0, this.#cursor);
        return [];
      case "ctrl-k":
        this.#kill(this.#cursor, t.length);
        return [];
      case "ctrl-w":
      case "alt-backspace":
        this.#kill(this.#wordStart(this.#cursor), this.#cursor);
        return [];
      case "alt-d":
        this.#kill(this.#cursor, this.#wordEnd(this.#cursor));
        return [];
      case "ctrl-y":
        this.insert(this.#killed);
        return [];
      case "ctrl-t": {
        // Swaps the two characters before the cursor (at the end) or around it.
        if (t.length < 2 || this.#cursor === 0) return [];
        const at = this.#cursor === t.length ? this.#prevChar(this.#cursor) : this.#cursor;
        const before = this.#prevChar(at);
        const after = this.#nextChar(at);
        this.#text = t.slice(0, before) + t.slice(at, after) + t.slice(before, at) + t.slice(after);
        this.#cursor = after;
        return [];
      }
      case "up":
      case "ctrl-p":
        this.#recall(-1);
        return [];
      case "down":
      case "ctrl-n":
        this.#recall(1);
        return [];
      default:
        return [];
    }
  }

  #recall(step: number): void {
    if (this.secret) return;
    const at = this.#historyAt + step;
    if (at < 0 || at > this.#history.length) return;
    if (this.#historyAt === this.#history.length) this.#draft = this.#text;
    this.#historyAt = at;
    this.setLine(at === this.#history.length ? this.#draft : this.#history[at]!);
  }

  #kill(from: number, to: number): void {
    if (to <= from) return;
    this.#killed = this.#text.slice(from, to);
    this.#deleteRange(from, to);
  }

  #deleteRange(from: number, to: number): void {
    if (to <= from) return;
    this.#text = this.#text.slice(0, from) + this.#text.slice(to);
    this.#cursor = from;
  }

  #prevChar(i: number): number {
    if (i <= 0) return 0;
    const low = this.#text.charCodeAt(i - 1);
    return low >= 0xdc00 && low <= 0xdfff && i >= 2 ? i - 2 : i - 1;
  }

  #nextChar(i: number): number {
    if (i >= this.#text.length) return this.#text.length;
    const high = this.#text.charCodeAt(i);
    return high >= 0xd800 && high <= 0xdbff ? i + 2 : i + 1;
  }

  #wordStart(i: number): number {
    const t = this.#text;
    while (i > 0 && /\s/.test(t[i - 1]!)) i--;
    while (i > 0 && !/\s/.test(t[i - 1]!)) i--;
    return i;
  }

  #wordEnd(i: number): number {
    const t = this.#text;
    while (i < t.length && /\s/.test(t[i]!)) i++;
    while (i < t.length && !/\s/.test(t[i]!)) i++;
    return i;
  }

  /** The word the cursor is in or just after: its start, and the text up to the cursor. */
  wordAtCursor(): { start: number; word: string } {
    let start = this.#cursor;
    const t = this.#text;
    // A space after a backslash belongs to the word (`my\ file.txt`).
    while (start > 0 && (!/\s/.test(t[start - 1]!) || t[start - 2] === "\\")) start--;
    return { start, word: this.#text.slice(start, this.#cursor) };
  }

  /**
   * Replaces `text[start..cursor]` with `replacement` (completion), without what typing cannot
   * put in the line either.
   */
  replaceBeforeCursor(start: number, text: string): void {
    const replacement = text.replace(UNTYPABLE, "");
    this.#text = this.#text.slice(0, start) + replacement + this.#text.slice(this.#cursor);
    this.#cursor = start + replacement.length;
  }

  /**
   * The part of the line that fits in `columns` (the prompt excluded), scrolled so the cursor
   * shows, and the cursor's column in it. Costs about `columns` steps, however long the line.
   */
  view(columns: number): { text: string; cursorColumn: number } {
    if (this.secret) return { text: "", cursorColumn: 0 };
    const t = this.#text;
    const room = Math.max(1, columns - 1); // the last column is for the cursor
    // The cursor went left of what is shown: scroll from the start again (the whole line shows
    // when it fits; else the text before the cursor fills three quarters of the row, below).
    if (this.#offset > this.#cursor) this.#offset = 0;
    // Width from the offset to the cursor, but never walk more than a screen's worth.
    let width = 0;
    let i = this.#offset;
    if (this.#cursor - this.#offset <= 4 * room) {
      for (; i < this.#cursor; i = this.#nextChar(i)) width += charWidth(t.codePointAt(i)!);
    } else width = room + 1;
    if (width > room) {
      // Scroll: start where the text before the cursor fills about three quarters of a row.
      let start = this.#cursor;
      let w = 0;
      const target = Math.max(1, Math.floor(room * 3 / 4));
      while (start > 0) {
        const p = this.#prevChar(start);
        const cw = charWidth(t.codePointAt(p)!);
        if (w + cw > target) break;
        w += cw;
        start = p;
      }
      this.#offset = start;
      width = w;
    }
    let end = this.#cursor;
    let total = width;
    while (end < t.length) {
      const cw = charWidth(t.codePointAt(end)!);
      if (total + cw > columns) break;
      total += cw;
      end = this.#nextChar(end);
    }
    return { text: t.slice(this.#offset, end), cursorColumn: width };
  }
}
