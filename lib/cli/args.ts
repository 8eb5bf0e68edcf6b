/**
 * Command lines of the entry points: options, one optional argument, `--help`. It reads and
 * prints them the way the usual Node.js option library does (`-p 5`, `-p5`, `--port 5`,
 * `--port=5`, `-vq`, `--`; the same help layout and error lines), at a fraction of the start-up
 * cost: loading that library took ~25 ms of CPU on every server and client start.
 */

/** One option, in the order `--help` lists it. */
export interface OptionSpec {
  /** `-p, --port <port>` (takes a value) or `--json` (a switch). */
  flags: string;
  description: string;
  /** Turns the text into the value; a thrown error's message says what is wrong with it. */
  parse?: (value: string) => unknown;
  /** The only values allowed (checked before `parse`). */
  choices?: readonly string[];
  /** The value when the option is not given. */
  default?: unknown;
  /** How `--help` shows the default (otherwise as JSON). */
  defaultText?: string;
  /** The option must be given. */
  required?: boolean;
}

/** A command: its name, what it does, its optional argument and its options. */
export interface CommandSpec {
  /** As in `confab-server migrate`: shown in usage and error lines. */
  name: string;
  description: string;
  argument?: { name: string; description: string; parse: (value: string) => unknown };
  options: readonly OptionSpec[];
  /** Columns the help is wrapped to (default 80). */
  helpWidth?: number;
  /** Text printed after the help. */
  helpAfter?: string;
}

/** What a command line asked for. */
export type Parsed =
  | {
    kind: "run";
    /** By the camelCase of each long flag (`--max-file-size` → `maxFileSize`). */
    options: Record<string, unknown>;
    /** The parsed argument, when one was given. */
    argument: unknown;
  }
  | { kind: "help"; text: string }
  | { kind: "error"; message: string };

interface Flag {
  spec: OptionSpec;
  short?: string;
  long: string;
  key: string;
  /** `<port>` when the option takes a value. */
  value?: string;
}

const HELP: OptionSpec = { flags: "-h, --help", description: "display help for command" };

function flagOf(spec: OptionSpec): Flag {
  const m = /^(?:(-[A-Za-z]), )?(--[a-z][a-z0-9-]*)(?: (<[^>]+>))?$/.exec(spec.flags);
  if (!m) throw new TypeError(`bad option flags "${spec.flags}"`);
  const key = m[2]!.slice(2).replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  return { spec, short: m[1], long: m[2]!, key, value: m[3] };
}

/** Reads `args` as `command` describes them; never exits, never prints. */
export function parseCommandLine(command: CommandSpec, args: readonly string[]): Parsed {
  const flags = [...command.options, HELP].map(flagOf);
  const options: Record<string, unknown> = {};
  for (const flag of flags) {
    if (flag.spec.default !== undefined) options[flag.key] = flag.spec.default;
  }
  const positional: string[] = [];
  const fail = (message: string): Parsed => ({ kind: "error", message });

  /** Sets `flag` from `text`; a message when the text will not do. */
  const take = (flag: Flag, text: string): string | undefined => {
    const { choices, parse } = flag.spec;
    if (choices && !choices.includes(text)) {
      return `option '${flag.spec.flags}' argument '${text}' is invalid. ` +
        `Allowed choices are ${choices.join(", ")}.`;
    }
    try {
      options[flag.key] = parse ? parse(text) : text;
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      return `option '${flag.spec.flags}' argument '${text}' is invalid. ${reason}`;
    }
    return undefined;
  };

  // `--help` wins wherever it is, as long as it comes before a `--`.
  const end = args.indexOf("--");
  const named = end < 0 ? args : args.slice(0, end);
  if (named.includes("--help") || named.includes("-h")) {
    return { kind: "help", text: helpText(command, flags) };
  }

  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq < 0 ? arg : arg.slice(0, eq);
      const flag = flags.find((f) => f.long === name);
      if (!flag || (flag.value === undefined && eq >= 0)) {
        return fail(`unknown option '${arg}'${suggestion(arg, flags)}`);
      }
      if (flag.value === undefined) {
        options[flag.key] = true;
        continue;
      }
      const text = eq >= 0 ? arg.slice(eq + 1) : args[++i];
      if (text === undefined) return fail(`option '${flag.spec.flags}' argument missing`);
      const problem = take(flag, text);
      if (problem) return fail(problem);
      continue;
    }
    if (arg.startsWith("-") && arg.length > 1) {
      // -v, -vq (switches together), -p 5, -p5.
      for (let j = 1; j < arg.length; j++) {
        const flag = flags.find((f) => f.short === `-${arg[j]}`);
        if (!flag) return fail(`unknown option '-${arg[j]}'`);
        if (flag.value === undefined) {
          options[flag.key] = true;
          continue;
        }
        const text = j + 1 < arg.length ? arg.slice(j + 1) : args[++i];
        if (text === undefined) return fail(`option '${flag.spec.flags}' argument missing`);
        const problem = take(flag, text);
        if (problem) return fail(problem);
        break;
      }
      continue;
    }
    positional.push(arg);
  }

  if (options.help === true) return { kind: "help", text: helpText(command, flags) }; // -vh
  const expected = command.argument ? 1 : 0;
  if (positional.length > expected) {
    return fail(
      `too many arguments. Expected ${expected} argument${expected === 1 ? "" : "s"} ` +
        `but got ${positional.length}.`,
    );
  }
  for (const flag of flags) {
    if (flag.spec.required && options[flag.key] === undefined) {
      return fail(`required option '${flag.spec.flags}' not specified`);
    }
  }
  let argument: unknown;
  if (command.argument && positional[0] !== undefined) {
    try {
      argument = command.argument.parse(positional[0]);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      return fail(
        `command-argument value '${positional[0]}' is invalid for argument ` +
          `'${command.argument.name}'. ${reason}`,
      );
    }
  }
  return { kind: "run", options, argument };
}

/**
 * Reads the process's command line: prints the help and exits 0 for `--help`, prints the
 * problem and exits 1 for a bad command line.
 */
export function parseOrExit(
  command: CommandSpec,
  args: readonly string[],
): { options: Record<string, unknown>; argument: unknown } {
  const parsed = parseCommandLine(command, args);
  if (parsed.kind === "help") {
    console.log(parsed.text);
    Deno.exit(0);
  }
  if (parsed.kind === "error") {
    console.error(`error: ${parsed.message}\n(run ${command.name} --help for usage)`);
    Deno.exit(1);
  }
  return parsed;
}

/** `(Did you mean --json?)` for a long option that is one or two typos away from one of ours. */
function suggestion(arg: string, flags: readonly Flag[]): string {
  const word = arg.replace(/^--/, "");
  let best = 3;
  let similar: string[] = [];
  for (const flag of flags) {
    const candidate = flag.long.slice(2);
    const distance = editDistance(word, candidate);
    const length = Math.max(word.length, candidate.length);
    if ((length - distance) / length <= 0.4) continue;
    if (distance < best) {
      best = distance;
      similar = [candidate];
    } else if (distance === best) {
      similar.push(candidate);
    }
  }
  const named = similar.sort((a, b) => a.localeCompare(b)).map((c) => `--${c}`);
  if (named.length > 1) return `\n(Did you mean one of ${named.join(", ")}?)`;
  return named.length === 1 ? `\n(Did you mean ${named[0]}?)` : "";
}

/** Damerau-Levenshtein distance (adjacent swaps count one), capped past 3. */
function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 3) return Math.max(a.length, b.length);
  const d: number[][] = [];
  for (let i = 0; i <= a.length; i++) d[i] = [i];
  for (let j = 0; j <= b.length; j++) d[0]![j] = j;
  for (let j = 1; j <= b.length; j++) {
    for (let i = 1; i <= a.length; i++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      }
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

function helpText(command: CommandSpec, flags: readonly Flag[]): string {
  const width = command.helpWidth ?? 80;
  const argument = command.argument;
  const items = flags.map((flag) => [flag.spec.flags, describe(flag.spec)] as const);
  const terms = [...items.map(([term]) => term), ...(argument ? [argument.name] : [])];
  const termWidth = Math.max(...terms.map((term) => term.length));
  const item = (term: string, text: string) => {
    const lines = wrap(text, width - termWidth - 4);
    return `  ${term.padEnd(termWidth)}  ${lines.join(`\n  ${" ".repeat(termWidth + 2)}`)}`;
  };
  const out = [
    `Usage: ${command.name} [options]${argument ? ` [${argument.name}]` : ""}`,
    "",
    ...command.description.split("\n").flatMap((line) => wrap(line, width)),
    "",
  ];
  if (argument) out.push("Arguments:", item(argument.name, argument.description), "");
  out.push("Options:", ...items.map(([term, text]) => item(term, text)));
  return out.join("\n") + (command.helpAfter !== undefined ? `\n${command.helpAfter}` : "");
}

function describe(spec: OptionSpec): string {
  const extra: string[] = [];
  if (spec.choices) extra.push(`choices: ${spec.choices.map((c) => JSON.stringify(c)).join(", ")}`);
  if (spec.default !== undefined) {
    extra.push(`default: ${spec.defaultText ?? JSON.stringify(spec.default)}`);
  }
  return extra.length > 0 ? `${spec.description} (${extra.join(", ")})` : spec.description;
}

/** Splits `text` into lines of at most `width` columns, at spaces. */
function wrap(text: string, width: number): string[] {
  const words = text.match(/\s*\S+/g);
  if (!words) return [""];
  const lines: string[] = [];
  let line = words[0]!;
  for (const word of words.slice(1)) {
    if (line.length + word.length <= width) {
      line += word;
    } else {
      lines.push(line);
      line = word.trimStart();
    }
  }
  lines.push(line);
  return lines;
}
