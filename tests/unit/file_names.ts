/**
 * Unit tests for lib/peer/file_names.ts: cleaning hostile file names from the wire, and
 * numbering a name that is taken.
 */
import assert from "node:assert/strict";
import { numberedName, sanitizeFileName } from "../../lib/peer/file_names.ts";

const bytes = (text: string) => new TextEncoder().encode(text).length;

/** What every cleaned name must be, whatever came in. */
function assertSafe(name: string): void {
  assert.ok(name.length > 0, "not empty");
  assert.notEqual(name, ".");
  assert.notEqual(name, "..");
  assert.ok(!name.startsWith("."), `no leading dot: ${JSON.stringify(name)}`);
  assert.ok(!/[/\\]/.test(name), `no separator: ${JSON.stringify(name)}`);
  // deno-lint-ignore no-control-regex
  assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(name), `no control: ${JSON.stringify(name)}`);
  assert.ok(bytes(name) <= 200, `at most 200 bytes: ${bytes(name)}`);
  assert.ok(name.isWellFormed(), "no lone surrogate");
}

Deno.test("sanitizeFileName() keeps only the last path segment", () => {
  assert.equal(sanitizeFileName("../../etc/passwd"), "passwd");
  assert.equal(sanitizeFileName("/etc/passwd"), "passwd");
  assert.equal(sanitizeFileName("a/b"), "b");
  assert.equal(sanitizeFileName("..\\..\\windows\\win.ini"), "win.ini");
  assert.equal(sanitizeFileName("dir/"), "dir");
});

Deno.test("sanitizeFileName() never gives an empty name, `.` or `..`", () => {
  for (const raw of ["", ".", "..", "...", "/", "//", "../..", " ", " . ", "\u0000"]) {
    const name = sanitizeFileName(raw);
    assertSafe(name);
    assert.ok(name === "file" || name === "_", `${JSON.stringify(raw)} → ${name}`);
  }
  assert.equal(sanitizeFileName(".."), "file");
  assert.equal(sanitizeFileName("."), "file");
});

Deno.test("sanitizeFileName() drops leading dots (no hidden files) and trailing dots and spaces", () => {
  assert.equal(sanitizeFileName(".bashrc"), "bashrc");
  assert.equal(sanitizeFileName("...secret"), "secret");
  assert.equal(sanitizeFileName("  name.txt  "), "name.txt");
  assert.equal(sanitizeFileName("name.txt..."), "name.txt");
});

Deno.test("sanitizeFileName() replaces NUL and control characters", () => {
  assert.equal(sanitizeFileName("evil\u0000name.txt"), "evil_name.txt");
  assert.equal(sanitizeFileName("bell\u0007.txt"), "bell_.txt");
  assert.equal(sanitizeFileName("line\nbreak\r.txt"), "line_break_.txt");
  assert.equal(sanitizeFileName("esc\u001b[31mred.txt"), "esc_[31mred.txt");
  assert.equal(sanitizeFileName("del\u007f\u0085.txt"), "del__.txt");
  assert.equal(sanitizeFileName("sep\u2028\u2029.txt"), "sep__.txt");
  for (let c = 0; c < 0x20; c++) assertSafe(sanitizeFileName(`x${String.fromCharCode(c)}y`));
});

Deno.test("sanitizeFileName() replaces characters Windows forbids", () => {
  assert.equal(sanitizeFileName('a<b>c:d"e|f?g*h.txt'), "a_b_c_d_e_f_g_h.txt");
});

Deno.test("sanitizeFileName() prefixes Windows reserved device names", () => {
  assert.equal(sanitizeFileName("CON"), "_CON");
  assert.equal(sanitizeFileName("con.txt"), "_con.txt");
  assert.equal(sanitizeFileName("nul"), "_nul");
  assert.equal(sanitizeFileName("Aux.tar.gz"), "_Aux.tar.gz");
  assert.equal(sanitizeFileName("COM1"), "_COM1");
  assert.equal(sanitizeFileName("lpt9.log"), "_lpt9.log");
  assert.equal(sanitizeFileName("COM¹"), "_COM¹");
  assert.equal(sanitizeFileName("CON .txt"), "_CON .txt");
  assert.equal(sanitizeFileName("CONOUT$"), "_CONOUT$");
  // Only the whole name: these are ordinary.
  assert.equal(sanitizeFileName("console.txt"), "console.txt");
  assert.equal(sanitizeFileName("com10"), "com10");
  assert.equal(sanitizeFileName("icon.png"), "icon.png");
});

Deno.test("sanitizeFileName() removes right-to-left overrides and other bidi controls", () => {
  // Shown as "invoiceexe.pdf" by a bidi-aware display: the extension would lie.
  const spoof = sanitizeFileName("invoice\u202Efdp.exe");
  assert.equal(spoof, "invoice_fdp.exe");
  for (const ch of ["\u202A", "\u202B", "\u202C", "\u202D", "\u202E", "\u2066", "\u2069"]) {
    assert.ok(
      !sanitizeFileName(`a${ch}b.txt`).includes(ch),
      `U+${ch.codePointAt(0)!.toString(16)}`,
    );
  }
  for (const ch of ["\u200E", "\u200F", "\u061C"]) {
    assert.equal(sanitizeFileName(`a${ch}b.txt`), "a_b.txt");
  }
});

Deno.test("sanitizeFileName() keeps unicode names, normalised to NFC", () => {
  assert.equal(sanitizeFileName("résumé 日本語 😀.pdf"), "résumé 日本語 😀.pdf");
  assert.equal(sanitizeFileName("Ελληνικά.txt"), "Ελληνικά.txt");
  const decomposed = "e\u0301te\u0301.txt"; // é as e + combining acute
  assert.equal(sanitizeFileName(decomposed), "\u00e9t\u00e9.txt");
  assert.equal(sanitizeFileName("a\u00a0b.txt"), "a\u00a0b.txt");
});

Deno.test("sanitizeFileName() makes a lone surrogate the replacement character it becomes on disk", () => {
  const name = sanitizeFileName("a\ud800b.txt");
  assert.equal(name, "a\ufffdb.txt");
  assertSafe(name);
});

Deno.test("sanitizeFileName() cuts long names to 200 bytes, keeping the extension", () => {
  const ascii = sanitizeFileName("x".repeat(10_000) + ".txt");
  assert.equal(bytes(ascii), 200);
  assert.ok(ascii.endsWith("x.txt"));

  // Multi-byte characters are never split.
  const cjk = sanitizeFileName("日".repeat(1_000) + ".tar.gz");
  assert.ok(bytes(cjk) <= 200 && bytes(cjk) > 190, String(bytes(cjk)));
  assert.ok(cjk.endsWith("日.gz"));
  assert.equal(cjk.replace(/日/g, ""), ".gz");

  const emoji = sanitizeFileName("😀".repeat(100) + ".png");
  assert.ok(bytes(emoji) <= 200 && emoji.endsWith("😀.png"));
  assertSafe(emoji);

  // An "extension" too long to be one is cut along with the rest.
  const noExt = sanitizeFileName("a." + "b".repeat(300));
  assert.equal(bytes(noExt), 200);
  assert.ok(noExt.startsWith("a.b"));

  // The cut never leaves a trailing space or dot before the extension.
  assert.equal(sanitizeFileName("a" + " ".repeat(300) + "b.txt"), "a.txt");
  assert.equal(bytes(sanitizeFileName("y".repeat(200))), 200);
  assert.equal(sanitizeFileName("y".repeat(200)), "y".repeat(200));
});

Deno.test("sanitizeFileName() output is always safe, whatever the input", () => {
  const alphabet = ["a", ".", "/", "\\", " ", "\u0000", "\u0007", "\u202e", "é", "😀", "\ud800"];
  let seed = 42;
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 2_000; i++) {
    const length = Math.floor(random() * 300);
    let raw = "";
    for (let j = 0; j < length; j++) raw += alphabet[Math.floor(random() * alphabet.length)];
    assertSafe(sanitizeFileName(raw));
  }
});

Deno.test("numberedName() puts the number before the extension", () => {
  assert.equal(numberedName("existing.txt", 1), "existing (1).txt");
  assert.equal(numberedName("photo.jpeg", 12), "photo (12).jpeg");
  assert.equal(numberedName("archive.tar.gz", 2), "archive.tar (2).gz");
  assert.equal(numberedName("README", 3), "README (3)");
  assert.equal(numberedName("日本語.txt", 1), "日本語 (1).txt");
});

Deno.test("numberedName() keeps a long name within 200 bytes", () => {
  const long = sanitizeFileName("z".repeat(500) + ".txt");
  const numbered = numberedName(long, 9_999);
  assert.equal(bytes(numbered), 200);
  assert.ok(numbered.endsWith("z (9999).txt"));
  const longExt = numberedName("a." + "b".repeat(197), 1);
  assert.ok(bytes(longExt) <= 200 && longExt.endsWith(" (1)"), longExt);
  const cjk = numberedName(sanitizeFileName("日".repeat(100) + ".md"), 5);
  assert.ok(bytes(cjk) <= 200 && cjk.endsWith("日 (5).md"), cjk);
});
