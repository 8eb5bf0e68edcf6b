/**
 * Turns the bytes a terminal in raw mode sends into keys: text, named keys (`enter`, `left`,
 * `ctrl-c`...) and bracketed pastes. Pure and incremental: a sequence split across reads is
 * completed by the next read, so a paste of any size costs one pass over its bytes.
 */

/** A key press, a run of typed text, or a whole paste. */
export type Key =
  | { kind: "text"; text: string }
  | { kind: "paste"; text: string }
  | { kind: "key"; name: string }
  /** The terminal's answer to a cursor position request (`\x1b[6n`), 0-based. */
  | { kind: "cursor"; row: number; column: number };

/** Terminals end a paste with this once asked to mark pastes (`\x1b[?2004h`). */
const PASTE_END = "\x1b[201~";

/** The longest paste kept; the rest is dropped (and the paste marked as cut). */
export const MAX_PASTE = 1024 * 1024;

const CSI_KEYS: Record<string, string> = {
  A: "up",
  B: "down",
  C: "right",
  D: "left",
  H: "home",
  F: "end",
  Z: "shift-tab",
  "1~": "home",
  "7~": "home",
  "4~": "end",
  "8~": "end",
  "3~": "delete",
  "5~": "pageup",
  "6~": "pagedown",
  "2~": "insert",
};

/** Named keys for the C0 control bytes a terminal sends (the rest are `ctrl-<letter>`). */
function controlKey(code: number): string {
  switch (code) {
    case 0x0d:
    case 0x0a:
      return "enter";
    case 0x09:
      return "tab";
    case 0x7f:
    case 0x08:
      return "backspace";
    case 0x00:
      return "ctrl-space";
    case 0x1c:
      return "ctrl-backslash";
    case 0x1d:
      return "ctrl-]";
    case 0x1e:
      return "ctrl-^";
    case 0x1f:
      return "ctrl-_";
    default:
      return `ctrl-${String.fromCharCode(code + 0x60)}`;
  }
}

export class KeyDecoder {
  readonly #decoder = new TextDecoder();
  #pending = "";
  #paste: string[] | undefined;
  #pasteSize = 0;
  #pasteCut = false;

  /** True while a bracketed paste has started and not ended yet. */
  get inPaste(): boolean {
    return this.#paste !== undefined;
  }

  /** True when the input ended on a lone ESC (call {@link flush} if no more bytes come soon). */
  get waiting(): boolean {
    return this.#pending.length > 0;
  }

  /** Decodes the next bytes; an incomplete sequence at the end waits for more. */
  feed(bytes: Uint8Array): Key[] {
    return this.#decode(this.#pending + this.#decoder.decode(bytes, { stream: true }), false);
  }

  /** A lone ESC that waited long enough is the Escape key. */
  flush(): Key[] {
    return this.#decode(this.#pending, true);
  }

  #decode(input: string, final: boolean): Key[] {
    this.#pending = "";
    const keys: Key[] = [];
    let text = "";
    const pushText = () => {
      if (text) keys.push({ kind: "text", text });
      text = "";
    };
    let i = 0;
    while (i < input.length) {
      if (this.#paste) {
        const end = input.indexOf(PASTE_END, i);
        if (end < 0) {
          // Keep a tail that may be the start of the end marker.
          const keep = this.#partialMarker(input, i);
          this.#addPaste(input.slice(i, input.length - keep));
          this.#pending = input.slice(input.length - keep);
          return keys;
        }
        this.#addPaste(input.slice(i, end));
        keys.push({ kind: "paste", text: this.#takePaste() });
        i = end + PASTE_END.length;
        continue;
      }
      const code = input.charCodeAt(i);
      if (code === 0x1b) {
        const seq = this.#escape(input, i, final);
        if (seq === "incomplete") {
          pushText();
          this.#pending = input.slice(i);
          return keys;
        }
        pushText();
        if (seq.name === "paste-start") {
          this.#paste = [];
          this.#pasteSize = 0;
          this.#pasteCut = false;
        } else if (seq.cursor) keys.push({ kind: "cursor", ...seq.cursor });
        else if (seq.name !== "") keys.push({ kind: "key", name: seq.name });
        i += seq.length;
        continue;
      }
      if (code < 0x20 || code === 0x7f) {
        pushText();
        // A CR LF pair (a paste without brackets) is one Enter.
        if (code === 0x0d && input.charCodeAt(i + 1) === 0x0a) i++;
        keys.push({ kind: "key", name: controlKey(code) });
        i++;
        continue;
      }
      text += input[i];
      i++;
    }
    pushText();
    return keys;
  }

  /** How many characters at the end of `input` (from `from`) could begin the paste end marker. */
  #partialMarker(input: string, from: number): number {
    for (let n = Math.min(PASTE_END.length - 1, input.length - from); n > 0; n--) {
      if (PASTE_END.startsWith(input.slice(input.length - n))) return n;
    }
    return 0;
  }

  #addPaste(text: string): void {
    if (!text) return;
    const room = MAX_PASTE - this.#pasteSize;
    if (room <= 0) {
      this.#pasteCut = true;
      return;
    }
    const part = text.length > room ? text.slice(0, room) : text;
    if (part.length < text.length) this.#pasteCut = true;
    this.#paste!.push(part);
    this.#pasteSize += part.length;
  }

  #takePaste(): string {
    const text = this.#paste!.join("");
    this.#paste = undefined;
    this.#pasteSize = 0;
    return text;
  }

  /** True when the last paste was longer than {@link MAX_PASTE} and was cut. */
  get pasteCut(): boolean {
    return this.#pasteCut;
  }

  /** Reads an escape sequence at `i`: its key name ("" to ignore) and length. */
  #escape(
    input: string,
    i: number,
    final: boolean,
  ): { name: string; length: number; cursor?: { row: number; column: number } } | "incomplete" {
    const next = input[i + 1];
    if (next === undefined) return final ? { name: "escape", length: 1 } : "incomplete";
    if (next === "[") {
      // CSI: parameters 0x30-0x3f, intermediates 0x20-0x2f, one final byte 0x40-0x7e.
      let j = i + 2;
      while (j < input.length && input.charCodeAt(j) >= 0x20 && input.charCodeAt(j) <= 0x3f) j++;
      if (j >= input.length) {
        return final || j - i > 32 ? { name: "", length: j - i } : "incomplete";
      }
      const body = input.slice(i + 2, j + 1);
      const length = j + 1 - i;
      if (body === "200~") return { name: "paste-start", length };
      if (body === "201~") return { name: "", length }; // an end without a start
      const report = /^(\d{1,5});(\d{1,5})R$/.exec(body);
      if (report) {
        const cursor = { row: Number(report[1]) - 1, column: Number(report[2]) - 1 };
        return { name: "", length, cursor };
      }
      const mod = /^1;(\d)([A-H])$/.exec(body);
      if (mod) {
        const base = CSI_KEYS[mod[2]!];
        const prefix = mod[1] === "5" ? "ctrl-" : mod[1] === "3" ? "alt-" : "";
        return { name: base ? prefix + base : "", length };
      }
      return { name: CSI_KEYS[body] ?? "", length };
    }
    if (next === "O") {
      const key = input[i + 2];
      if (key === undefined) return final ? { name: "alt-O", length: 2 } : "incomplete";
      return { name: CSI_KEYS[key] ?? "", length: 3 };
    }
    const code = next.charCodeAt(0);
    if (code === 0x7f || code === 0x08) return { name: "alt-backspace", length: 2 };
    if (code === 0x1b) return { name: "escape", length: 1 };
    if (code < 0x20) return { name: `alt-${controlKey(code)}`, length: 2 };
    return { name: `alt-${next}`, length: 2 };
  }
}
