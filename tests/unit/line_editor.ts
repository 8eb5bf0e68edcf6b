/**
 * Unit tests for the terminal input pieces without a terminal: lib/cli/keys.ts (bytes to keys,
 * sequences split across reads, bracketed pastes), lib/cli/line_editor.ts (editing, history,
 * the sideways-scrolling view) and lib/cli/text.ts (visible escapes, widths).
 */
import assert from "node:assert/strict";
import { type Key, KeyDecoder, MAX_PASTE } from "../../lib/cli/keys.ts";
import { LineEditor } from "../../lib/cli/line_editor.ts";
import { Screen, TerminalWriter } from "../../lib/cli/screen.ts";
import { displayWidth, fitWidth, visible } from "../../lib/cli/text.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

function decode(...chunks: string[]): Key[] {
  const d = new KeyDecoder();
  return chunks.flatMap((c) => d.feed(bytes(c)));
}

Deno.test("KeyDecoder reads text, control keys and escape sequences", () => {
  assert.deepEqual(decode("hé\r\x03\x04\x7f\t\x1b[A\x1b[1;5C\x1b[3~\x1bb\x1b\x7f\x1bOH"), [
    { kind: "text", text: "hé" },
    { kind: "key", name: "enter" },
    { kind: "key", name: "ctrl-c" },
    { kind: "key", name: "ctrl-d" },
    { kind: "key", name: "backspace" },
    { kind: "key", name: "tab" },
    { kind: "key", name: "up" },
    { kind: "key", name: "ctrl-right" },
    { kind: "key", name: "delete" },
    { kind: "key", name: "alt-b" },
    { kind: "key", name: "alt-backspace" },
    { kind: "key", name: "home" },
  ]);
});

Deno.test("KeyDecoder completes a sequence or a character split across reads", () => {
  assert.deepEqual(decode("\x1b", "[", "D"), [{ kind: "key", name: "left" }]);
  const e = bytes("é");
  const d = new KeyDecoder();
  assert.deepEqual(d.feed(e.subarray(0, 1)), []);
  assert.deepEqual(d.feed(e.subarray(1)), [{ kind: "text", text: "é" }]);
  // A lone ESC is the Escape key once nothing follows.
  const lone = new KeyDecoder();
  assert.deepEqual(lone.feed(bytes("\x1b")), []);
  assert.ok(lone.waiting);
  assert.deepEqual(lone.flush(), [{ kind: "key", name: "escape" }]);
});

Deno.test("KeyDecoder reads the terminal's cursor position report, 0-based", () => {
  assert.deepEqual(decode("a\x1b[12;", "40Rb"), [
    { kind: "text", text: "a" },
    { kind: "cursor", row: 11, column: 39 },
    { kind: "text", text: "b" },
  ]);
});

Deno.test("Screen erases every row a narrower terminal rewrapped its rows onto", async () => {
  let out = "";
  const writer = new TerminalWriter({
    write: (p) => {
      out += new TextDecoder().decode(p);
      return Promise.resolve(p.length);
    },
  });
  const screen = new Screen(writer, () => 80);
  screen.setRows(() => ({
    status: "s".repeat(50),
    prompt: "> ",
    input: { text: "x".repeat(70), cursorColumn: 70 },
  }));
  screen.flush();
  assert.equal(screen.cursorColumn, 72);
  const redraw = async () => {
    out = "";
    screen.flush();
    await writer.drain();
    return out.slice(0, out.indexOf("\x1b[J") + 3);
  };
  // As drawn: the status row above the input row.
  assert.equal(await redraw(), "\r\x1b[1A\x1b[J");
  // Rewrapped to 30 columns: the cursor is 2 rows down its line, the status row took 2 rows.
  screen.rewrapped(30);
  assert.equal(await redraw(), "\r\x1b[4A\x1b[J");
  // Held: nothing is drawn until released.
  screen.hold(true);
  screen.print("news");
  out = "";
  screen.flush();
  await writer.drain();
  assert.equal(out, "");
  screen.hold(false);
  screen.flush();
  await writer.drain();
  assert.match(out, /news\r\n/);
  // The draws it had scheduled come and go.
  await new Promise((r) => setTimeout(r, 0));
  await writer.drain();
});

Deno.test("KeyDecoder turns a bracketed paste into one key, whatever the reads", () => {
  const text = "line one\r\nline \x1b[two\ttab";
  assert.deepEqual(decode(`a\x1b[200~${text}\x1b[201~b`), [
    { kind: "text", text: "a" },
    { kind: "paste", text },
    { kind: "text", text: "b" },
  ]);
  // Split inside the end marker and byte by byte.
  const whole = `\x1b[200~${text}\x1b[201~`;
  assert.deepEqual(decode(...whole.split("")), [{ kind: "paste", text }]);
  assert.deepEqual(decode(whole.slice(0, -3), whole.slice(-3)), [{ kind: "paste", text }]);
});

Deno.test("KeyDecoder keeps at most MAX_PASTE characters of a paste", () => {
  const d = new KeyDecoder();
  const keys = [
    ...d.feed(bytes("\x1b[200~" + "x".repeat(MAX_PASTE))),
    ...d.feed(bytes("y".repeat(1000) + "\x1b[201~")),
  ];
  assert.equal(keys.length, 1);
  assert.equal((keys[0] as { text: string }).text.length, MAX_PASTE);
  assert.ok(d.pasteCut);
});

function type(editor: LineEditor, ...keys: (string | Key)[]) {
  return keys.flatMap((k) =>
    editor.handle(
      typeof k === "string"
        ? (k.startsWith("@") ? { kind: "key", name: k.slice(1) } : {
          kind: "text",
          text: k,
        })
        : k,
    )
  );
}

Deno.test("LineEditor edits like a shell: Emacs keys, words, kill and yank", () => {
  const e = new LineEditor();
  type(e, "hello world", "@ctrl-a", "@ctrl-d", "@ctrl-e", "@backspace");
  assert.equal(e.text, "ello worl");
  type(e, "@ctrl-w");
  assert.equal(e.text, "ello ");
  type(e, "@ctrl-y", "@ctrl-y");
  assert.equal(e.text, "ello worlworl");
  type(e, "@alt-b", "@ctrl-k");
  assert.equal(e.text, "ello ");
  type(e, "@home", "@ctrl-f", "X", "@ctrl-u");
  assert.equal(e.text, "llo ");
  assert.equal(e.cursor, 0);
});

Deno.test("LineEditor submits on Enter, keeps history, and brings back the draft", () => {
  const e = new LineEditor();
  assert.deepEqual(type(e, "one", "@enter"), [{ kind: "submit", line: "one" }]);
  e.addHistory("one");
  type(e, "two", "@enter");
  e.addHistory("two");
  type(e, "draft", "@up");
  assert.equal(e.text, "two");
  type(e, "@up", "@up");
  assert.equal(e.text, "one");
  type(e, "@down", "@down");
  assert.equal(e.text, "draft");
});

Deno.test("LineEditor reports Ctrl-C, Ctrl-D on an empty line, Ctrl-Z, Ctrl-L and Tab", () => {
  const e = new LineEditor();
  assert.deepEqual(type(e, "x", "@ctrl-c"), [{ kind: "interrupt", hadText: true }]);
  assert.equal(e.text, "");
  assert.deepEqual(type(e, "@ctrl-c"), [{ kind: "interrupt", hadText: false }]);
  assert.deepEqual(type(e, "@ctrl-d"), [{ kind: "eof" }]);
  assert.deepEqual(type(e, "@ctrl-z", "@ctrl-l", "@tab"), [
    { kind: "suspend" },
    { kind: "clear-screen" },
    { kind: "complete" },
  ]);
});

Deno.test("LineEditor takes a paste's lines as entered lines and drops control characters", () => {
  const e = new LineEditor();
  const actions = type(e, { kind: "paste", text: "one\r\ntwo\x1b[2J\nthr\tee" });
  assert.deepEqual(actions, [{ kind: "submit", line: "one" }, { kind: "submit", line: "two[2J" }]);
  assert.equal(e.text, "thr    ee");
});

Deno.test("LineEditor.view() scrolls a long line sideways and costs a row, not the line", () => {
  const e = new LineEditor();
  const long = "abcdefghij".repeat(10_000);
  type(e, { kind: "paste", text: long });
  const started = performance.now();
  for (let i = 0; i < 1000; i++) e.view(60);
  assert.ok(performance.now() - started < 500, "a view of a 100k line is cheap");
  const v = e.view(60);
  assert.ok(displayWidth(v.text) <= 60);
  assert.ok(long.endsWith(v.text));
  assert.equal(v.cursorColumn, v.text.length);
  type(e, "@home");
  assert.equal(e.view(60).cursorColumn, 0);
  assert.ok(long.startsWith(e.view(60).text));
  // Wide characters count twice.
  const w = new LineEditor();
  type(w, "日本語");
  assert.deepEqual(w.view(20), { text: "日本語", cursorColumn: 6 });
});

Deno.test("emoji shown as emoji by default take two columns, and the cursor goes after them", () => {
  // Each is East Asian Wide: a terminal (tmux, xterm, VTE) draws it two columns wide.
  assert.equal(displayWidth("🚀✅⚡☕⌚🟥🀄🈁"), 16);
  assert.equal(displayWidth("❤"), 1, "text presentation by default: one column");
  const e = new LineEditor();
  type(e, "go 🚀");
  assert.deepEqual(e.view(20), { text: "go 🚀", cursorColumn: 5 });
  type(e, "@home", "@right", "@right", "@right", "@right");
  assert.equal(e.view(20).cursorColumn, 5);
});

Deno.test("marks drawn on the character before them take no column, in every script", () => {
  // As tmux draws them: Thai tone mark, Arabic and Hebrew points, Devanagari virama and vowel
  // sign, a decomposed Hangul syllable, an enclosing circle, a word joiner.
  assert.equal(displayWidth("ก่า"), 2);
  assert.equal(displayWidth("بَ"), 1);
  assert.equal(displayWidth("שָׁ"), 1);
  assert.equal(displayWidth("नमस्ते"), 4);
  assert.equal(displayWidth("\u1100\u1161"), 2);
  assert.equal(displayWidth("a\u20dd\u2060b"), 2);
  const e = new LineEditor();
  type(e, "สวัสดีครับ");
  assert.deepEqual(e.view(40), { text: "สวัสดีครับ", cursorColumn: 7 });
});

Deno.test("LineEditor.view() shows a line brought back from history after a long one", () => {
  const e = new LineEditor();
  e.addHistory("chat bob");
  type(e, "x".repeat(200));
  assert.equal(e.view(40).cursorColumn, 29, "scrolled to the end of the long line");
  type(e, "@up");
  assert.equal(e.text, "chat bob");
  assert.deepEqual(e.view(40), { text: "chat bob", cursorColumn: 8 });
  // Words killed back past the part shown: the text before the cursor shows again.
  type(e, "@down", "@ctrl-a", "@ctrl-k", `${"word ".repeat(40)}end`);
  assert.equal(e.view(40).cursorColumn, 29);
  type(e, ...Array(10).fill("@ctrl-w"));
  const v = e.view(40);
  assert.equal(v.cursorColumn, 29);
  assert.ok(v.text.endsWith(" word word "), v.text);
});

Deno.test("LineEditor in secret mode shows nothing and keeps no history to recall", () => {
  const e = new LineEditor();
  e.addHistory("chat bob");
  e.secret = true;
  type(e, "hunter22", "@up");
  assert.deepEqual(e.view(40), { text: "", cursorColumn: 0 });
  assert.equal(e.text, "hunter22");
});

Deno.test("visible() shows controls, ESC, C1 and bidi controls as escapes and keeps the rest", () => {
  assert.equal(
    visible("a\x1b[31mb\x07\r\n\t\x00\x7f\x9b"),
    "a\\e[31mb\\x07\\r\\n\\t\\x00\\x7f\\x9b",
  );
  assert.equal(visible("\u202Eabc\u2066\u200F"), "\\u{202e}abc\\u{2066}\\u{200f}");
  assert.equal(visible("héllo 日本 🙂 \\e"), "héllo 日本 🙂 \\e");
});

Deno.test("displayWidth() and fitWidth() count columns, colour escapes take none", () => {
  assert.equal(displayWidth("\x1b[1mabc\x1b[22m"), 3);
  assert.equal(displayWidth("日本"), 4);
  assert.equal(fitWidth("abcdef", 4), "abc…");
  assert.equal(fitWidth("abc", 4), "abc");
  assert.equal(fitWidth("\x1b[1mabcdef\x1b[22m", 4), "\x1b[1mabc…\x1b[0m");
});
