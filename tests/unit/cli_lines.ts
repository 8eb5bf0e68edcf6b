/**
 * Unit tests for lib/cli/lines.ts: splitting a byte stream (or a file read piece by piece) into
 * lines, and parsing port and HOST:PORT arguments.
 */
import assert from "node:assert/strict";
import {
  formatSize,
  parseHostPort,
  parsePort,
  parseSize,
  readFileLines,
  readLines,
} from "../../lib/cli/lines.ts";

const enc = new TextEncoder();

/** A byte stream delivering exactly these chunks. */
function streamOf(...chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  return ReadableStream.from(chunks.map((c) => typeof c === "string" ? enc.encode(c) : c));
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of readLines(stream)) lines.push(line);
  return lines;
}

// ---- readLines -----------------------------------------------------------------------------

Deno.test("readLines() splits on LF and drops the line ending", async () => {
  assert.deepEqual(await collect(streamOf("one\ntwo\nthree\n")), ["one", "two", "three"]);
});

Deno.test("readLines() drops the CR of CRLF line endings", async () => {
  assert.deepEqual(await collect(streamOf("one\r\ntwo\r\n")), ["one", "two"]);
});

Deno.test("readLines() yields a last line that has no line ending", async () => {
  assert.deepEqual(await collect(streamOf("one\ntwo")), ["one", "two"]);
  assert.deepEqual(await collect(streamOf("only\r")), ["only"]);
  assert.deepEqual(await collect(streamOf("a\nb")), ["a", "b"]);
  assert.deepEqual(await collect(streamOf("x")), ["x"]);
});

Deno.test("readLines() keeps empty lines but adds none after a final newline", async () => {
  assert.deepEqual(await collect(streamOf("a\n\nb\n")), ["a", "", "b"]);
  assert.deepEqual(await collect(streamOf("\n")), [""]);
  assert.deepEqual(await collect(streamOf("\r\n\r\n")), ["", ""]);
});

Deno.test("readLines() yields nothing for an empty stream", async () => {
  assert.deepEqual(await collect(streamOf()), []);
  assert.deepEqual(await collect(streamOf("", new Uint8Array(0))), []);
});

Deno.test("readLines() joins a line split across chunks", async () => {
  assert.deepEqual(await collect(streamOf("hel", "lo wo", "rld\nbye", "\n")), [
    "hello world",
    "bye",
  ]);
});

Deno.test("readLines() handles a CRLF split between chunks", async () => {
  assert.deepEqual(await collect(streamOf("one\r", "\ntwo\r", "\n")), ["one", "two"]);
});

Deno.test("readLines() yields several lines from one chunk", async () => {
  const text = Array.from({ length: 500 }, (_, i) => `line ${i}`).join("\n");
  const lines = await collect(streamOf(text));
  assert.equal(lines.length, 500);
  assert.equal(lines[0], "line 0");
  assert.equal(lines[499], "line 499");
});

Deno.test("readLines() decodes a multi-byte character split across chunks", async () => {
  const bytes = enc.encode("caffè 😀\n");
  // Feed it one byte at a time: every multi-byte sequence is cut somewhere.
  const chunks = [...bytes].map((b) => Uint8Array.of(b));
  assert.deepEqual(await collect(streamOf(...chunks)), ["caffè 😀"]);
});

Deno.test("readLines() strips only one trailing CR and keeps CRs inside a line", async () => {
  assert.deepEqual(await collect(streamOf("a\rb\n")), ["a\rb"]);
  assert.deepEqual(await collect(streamOf("a\r\r\n")), ["a\r"]);
});

Deno.test("readLines() keeps spaces and tabs as typed", async () => {
  assert.deepEqual(await collect(streamOf("  /msg bob  hi \t\n")), ["  /msg bob  hi \t"]);
});

/** A file whose reads return exactly these chunks (each fits the caller's buffer), then EOF. */
function fileOf(...chunks: (string | Uint8Array)[]) {
  const queue = chunks.map((c) => typeof c === "string" ? enc.encode(c) : c);
  return {
    read(buffer: Uint8Array): Promise<number | null> {
      const chunk = queue.shift();
      if (chunk === undefined) return Promise.resolve(null);
      buffer.set(chunk);
      return Promise.resolve(chunk.length);
    },
  };
}

async function collectFile(file: ReturnType<typeof fileOf>): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of readFileLines(file)) lines.push(line);
  return lines;
}

Deno.test("readFileLines() splits reads into lines as readLines() does", async () => {
  assert.deepEqual(await collectFile(fileOf("a\r\nb", "c\n\nd")), ["a", "bc", "", "d"]);
  assert.deepEqual(await collectFile(fileOf()), []);
  assert.deepEqual(await collectFile(fileOf("x\n")), ["x"]);
});

Deno.test("readFileLines() decodes a multi-byte character split across reads", async () => {
  const bytes = enc.encode("caffè 😀\n😀");
  const chunks = [...bytes].map((b) => Uint8Array.of(b));
  assert.deepEqual(await collectFile(fileOf(...chunks)), ["caffè 😀", "😀"]);
});

Deno.test("readFileLines() ends a cut-off character with a replacement, not a hang", async () => {
  assert.deepEqual(await collectFile(fileOf("ok\n", Uint8Array.of(0xf0, 0x9f))), ["ok", "\ufffd"]);
});

Deno.test("readLines() cancels the stream when the reader stops early", async () => {
  const cancelled = Promise.withResolvers<unknown>();
  let pulls = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulls++;
      controller.enqueue(enc.encode(`line ${pulls}\n`));
    },
    cancel(reason) {
      cancelled.resolve(reason);
    },
  });
  for await (const line of readLines(stream)) {
    assert.equal(line, "line 1");
    break;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("the source was not cancelled within 2 s")), 2000);
  });
  try {
    await Promise.race([cancelled.promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
});

// ---- parsePort -----------------------------------------------------------------------------

Deno.test("parsePort() accepts integers from 0 to 65535", () => {
  assert.equal(parsePort("0"), 0);
  assert.equal(parsePort("1"), 1);
  assert.equal(parsePort("4242"), 4242);
  assert.equal(parsePort("65535"), 65535);
  assert.equal(parsePort("08080"), 8080);
});

Deno.test("parsePort() rejects anything else with a RangeError", () => {
  const bad = [
    "",
    "65536",
    "99999",
    "123456",
    "-1",
    "+80",
    "1.5",
    "1e3",
    "0x10",
    " 80",
    "80 ",
    "eighty",
    "８０",
  ];
  for (const value of bad) {
    assert.throws(() => parsePort(value), RangeError, JSON.stringify(value));
  }
});

Deno.test("parsePort() names the argument and the bad value in its message", () => {
  assert.throws(
    () => parsePort("nope", "--peer-port"),
    (e: unknown) =>
      e instanceof RangeError && e.message.includes("--peer-port") &&
      e.message.includes('"nope"') &&
      e.message.includes("0 to 65535"),
  );
  assert.throws(() => parsePort("x"), /^RangeError: port must be/);
});

// ---- parseHostPort -------------------------------------------------------------------------

Deno.test("parseHostPort() splits HOST:PORT", () => {
  assert.deepEqual(parseHostPort("example.com:4242", 1), { host: "example.com", port: 4242 });
  assert.deepEqual(parseHostPort("10.0.0.7:1", 1), { host: "10.0.0.7", port: 1 });
});

Deno.test("parseHostPort() uses the default port for a bare host", () => {
  assert.deepEqual(parseHostPort("example.com", 4242), { host: "example.com", port: 4242 });
  assert.deepEqual(parseHostPort("127.0.0.1", 9), { host: "127.0.0.1", port: 9 });
});

Deno.test("parseHostPort() uses 127.0.0.1 for :PORT", () => {
  assert.deepEqual(parseHostPort(":5000", 1), { host: "127.0.0.1", port: 5000 });
});

Deno.test("parseHostPort() reads bracketed IPv6 with and without a port", () => {
  assert.deepEqual(parseHostPort("[::1]:4242", 1), { host: "::1", port: 4242 });
  assert.deepEqual(parseHostPort("[::1]", 4242), { host: "::1", port: 4242 });
  assert.deepEqual(parseHostPort("[fe80::1%eth0]:7", 1), { host: "fe80::1%eth0", port: 7 });
});

Deno.test("parseHostPort() rejects a bad port with a RangeError", () => {
  for (
    const value of [
      "host:",
      "host:port",
      "host:65536",
      "host:-1",
      "host:0",
      "[::1]:",
      "[::1]:0",
      "[::1]:99999",
      "[::1]:x",
    ]
  ) {
    assert.throws(() => parseHostPort(value, 1), RangeError, value);
  }
});

Deno.test("formatSize() writes a size as parseSize() reads it, in the largest whole unit", () => {
  assert.equal(formatSize(4 * 1024 ** 2), "4M");
  assert.equal(formatSize(2 * 1024 ** 3), "2G");
  assert.equal(formatSize(256 * 1024 ** 2), "256M");
  assert.equal(formatSize(1536), "1536");
  assert.equal(formatSize(0), "0");
  for (const n of [1, 1024, 1536, 8 * 1024 ** 3, 3 * 1024 ** 2 + 1024]) {
    assert.equal(parseSize(formatSize(n)), n, String(n));
  }
});
