/**
 * Unit tests for lib/cli/args.ts: every way of giving an option, the help text, and the one-line
 * errors for a bad command line; and that the README describes every flag of the entry points.
 */
import assert from "node:assert/strict";
import { type CommandSpec, parseCommandLine } from "../../lib/cli/args.ts";

const COMMAND: CommandSpec = {
  name: "tool",
  description: "A tool that does things.\nSecond line.",
  argument: {
    name: "port",
    description: "port to use",
    parse: (v) => {
      if (!/^\d+$/.test(v)) throw new RangeError(`not a port: "${v}"`);
      return Number(v);
    },
  },
  options: [
    { flags: "-p, --port <port>", description: "port", parse: Number, default: 4242 },
    { flags: "--home <dir>", description: "where", default: "/x", defaultText: "~/x" },
    { flags: "-v, --verbose", description: "say more" },
    { flags: "-q, --quiet", description: "say less" },
    { flags: "--notify <how>", description: "how", choices: ["bell", "none"], default: "bell" },
    { flags: "--max-file-size <size>", description: "most bytes", parse: Number },
  ],
};

function run(...args: string[]) {
  const parsed = parseCommandLine(COMMAND, args);
  assert.equal(parsed.kind, "run", JSON.stringify(parsed));
  return parsed as { kind: "run"; options: Record<string, unknown>; argument: unknown };
}

function error(...args: string[]): string {
  const parsed = parseCommandLine(COMMAND, args);
  assert.equal(parsed.kind, "error", JSON.stringify(parsed));
  return (parsed as { message: string }).message;
}

Deno.test("parseCommandLine() gives defaults, and camelCase keys for long flags", () => {
  assert.deepEqual(run().options, { port: 4242, home: "/x", notify: "bell" });
  assert.equal(run("--max-file-size", "7").options.maxFileSize, 7);
  assert.equal(run().argument, undefined);
});

Deno.test("parseCommandLine() reads -p 5, -p5, --port 5 and --port=5 alike", () => {
  for (const args of [["-p", "5"], ["-p5"], ["--port", "5"], ["--port=5"]]) {
    assert.equal(run(...args).options.port, 5, args.join(" "));
  }
});

Deno.test("parseCommandLine() reads switches alone and together, and a value after them", () => {
  assert.deepEqual(
    [run("-v").options.verbose, run("--quiet").options.quiet],
    [true, true],
  );
  const both = run("-vq").options;
  assert.deepEqual([both.verbose, both.quiet], [true, true]);
  const withValue = run("-vp7").options;
  assert.deepEqual([withValue.verbose, withValue.port], [true, 7]);
});

Deno.test("parseCommandLine() takes the last of a repeated option and the argument anywhere", () => {
  const parsed = run("9", "--port", "1", "--port", "2");
  assert.equal(parsed.options.port, 2);
  assert.equal(parsed.argument, 9);
});

Deno.test("parseCommandLine() takes a value that starts with a dash as the option's value", () => {
  assert.equal(run("--home", "-dir").options.home, "-dir");
});

Deno.test("parseCommandLine() reads everything after -- as arguments", () => {
  assert.equal(run("--", "5").argument, 5);
  assert.match(error("--", "-v"), /command-argument value '-v' is invalid for argument 'port'/);
});

Deno.test("parseCommandLine() names an unknown option, and suggests a close one", () => {
  assert.equal(error("--bogus"), "unknown option '--bogus'");
  assert.equal(error("-x"), "unknown option '-x'");
  assert.equal(error("-vx"), "unknown option '-x'");
  assert.equal(error("--verbos"), "unknown option '--verbos'\n(Did you mean --verbose?)");
  assert.equal(error("--verbose=1"), "unknown option '--verbose=1'\n(Did you mean --verbose?)");
});

Deno.test("parseCommandLine() says which option lacks its value", () => {
  assert.equal(error("--home"), "option '--home <dir>' argument missing");
  assert.equal(error("-p"), "option '-p, --port <port>' argument missing");
});

Deno.test("parseCommandLine() quotes a refused value with the parser's reason or the choices", () => {
  const spec: CommandSpec = {
    ...COMMAND,
    options: [{
      flags: "--size <n>",
      description: "size",
      parse: () => {
        throw new RangeError("must be small");
      },
    }, ...COMMAND.options],
  };
  const parsed = parseCommandLine(spec, ["--size", "big"]);
  assert.deepEqual(parsed, {
    kind: "error",
    message: "option '--size <n>' argument 'big' is invalid. must be small",
  });
  assert.equal(
    error("--notify", "loud"),
    "option '--notify <how>' argument 'loud' is invalid. Allowed choices are bell, none.",
  );
  assert.equal(
    error("x"),
    "command-argument value 'x' is invalid for argument 'port'. not a port: \"x\"",
  );
});

Deno.test("parseCommandLine() refuses a second argument and a missing required option", () => {
  assert.equal(error("1", "2"), "too many arguments. Expected 1 argument but got 2.");
  const none: CommandSpec = {
    name: "t",
    description: "d",
    options: [{ flags: "--from <dir>", description: "from", required: true }],
  };
  assert.deepEqual(parseCommandLine(none, ["--from", "a", "b"]), {
    kind: "error",
    message: "too many arguments. Expected 0 arguments but got 1.",
  });
  assert.deepEqual(parseCommandLine(none, []), {
    kind: "error",
    message: "required option '--from <dir>' not specified",
  });
});

Deno.test("parseCommandLine() answers --help and -h anywhere before --, with every option", () => {
  for (const args of [["--help"], ["-h"], ["--port", "x", "--help"], ["-vh"]]) {
    const parsed = parseCommandLine(COMMAND, args);
    assert.equal(parsed.kind, "help", args.join(" "));
  }
  assert.equal(parseCommandLine(COMMAND, ["--", "--help"]).kind, "error");
  const help = parseCommandLine(COMMAND, ["--help"]) as { text: string };
  assert.equal(
    help.text,
    [
      "Usage: tool [options] [port]",
      "",
      "A tool that does things.",
      "Second line.",
      "",
      "Arguments:",
      "  port                    port to use",
      "",
      "Options:",
      "  -p, --port <port>       port (default: 4242)",
      "  --home <dir>            where (default: ~/x)",
      "  -v, --verbose           say more",
      "  -q, --quiet             say less",
      '  --notify <how>          how (choices: "bell", "none", default: "bell")',
      "  --max-file-size <size>  most bytes",
      "  -h, --help              display help for command",
    ].join("\n"),
  );
});

Deno.test("parseCommandLine() wraps long descriptions under their column", () => {
  const help = parseCommandLine({
    name: "t",
    description: "d",
    helpWidth: 50,
    options: [{ flags: "--a <x>", description: "one two three four five six seven eight nine" }],
  }, ["-h"]) as { text: string };
  assert.deepEqual(help.text.split("\n").slice(-3), [
    "  --a <x>     one two three four five six seven",
    "              eight nine",
    "  -h, --help  display help for command",
  ]);
});

async function helpOf(entry: string): Promise<string> {
  const { code, stdout } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", entry, "--help"],
    cwd: new URL("../..", import.meta.url),
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 0);
  return new TextDecoder().decode(stdout);
}

Deno.test("the README names every flag of server.ts and client.ts", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const help = (await helpOf("server.ts")) + (await helpOf("client.ts"));
  const offered = new Set([...help.matchAll(/(--[a-z][a-z-]*)/g)].map((m) => m[1]!));
  const missing = [...offered].filter((flag) =>
    flag !== "--help" && !new RegExp(`${flag}(?![a-z-])`).test(readme)
  );
  assert.ok(offered.size > 30, `found only ${offered.size} flags: the help walk is broken`);
  assert.deepEqual(missing, [], "flags the README does not describe");
});

Deno.test("server --help shows sizes and switches as they are typed (4M, on), not as numbers", async () => {
  const help = (await helpOf("server.ts")).replace(/\s+/g, " ");
  assert.match(help, /--relay <on\|off> .*?\(default: on\)/);
  assert.match(help, /--relay-rate <bytes> .*?\(default: 4M\)/);
  assert.match(help, /--relay-daily <bytes> .*?\(default: 2G\)/);
  assert.match(help, /--max-write-queue <bytes> .*?\(default: 8M\)/);
  assert.doesNotMatch(help, /default: (true|false|\d{7,})\)/, "a switch or a size in bytes");
});
