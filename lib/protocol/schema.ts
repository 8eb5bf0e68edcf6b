/**
 * A small schema language for the wire messages: strings, numbers, booleans, literals, choices,
 * arrays, strict objects and unions by a discriminator, each checked in one direct pass with no
 * allocation on success. It replaces a general-purpose validation library that cost every
 * server and client start ~50 ms of CPU (loading it and building ~120 schemas); building these
 * schemas costs well under a millisecond.
 *
 * Every check that matters for hostile input is here: JSON types, string lengths (UTF-16 code
 * units) and allowed characters, whole numbers and their ranges, array lengths (checked before
 * the elements are), and objects without a single field the schema does not name (own keys,
 * `__proto__` included). Messages name the failing field and read like
 * `Too small: expected number to be >=1`.
 */

/** What failed, and where: field names and array indices from the checked value down. */
export interface Issue {
  path: (string | number)[];
  message: string;
}

/** A value that did not fit a schema; `issues[0]` is the first problem found. */
export class SchemaError extends Error {
  readonly issues: Issue[];

  constructor(issues: Issue[]) {
    const first = issues[0];
    super(first ? `${first.path.join(".") || "value"}: ${first.message}` : "invalid");
    this.name = "SchemaError";
    this.issues = issues;
  }
}

export type ParseResult<T> = { success: true; data: T } | { success: false; error: SchemaError };

/** The type of the values a schema accepts. */
export type Infer<S> = S extends Schema<infer T> ? T : never;

/** The JSON-ish name of what `value` is, for messages. */
function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  return typeof value;
}

function issue(message: string): Issue {
  return { path: [], message };
}

function wrongType(expected: string, value: unknown): Issue {
  return issue(`Invalid input: expected ${expected}, received ${kindOf(value)}`);
}

/** Quotes a value for a message, cut short: messages may echo hostile input. */
function quote(value: unknown): string {
  const text = typeof value === "string" ? JSON.stringify(value.slice(0, 40)) : String(value);
  return typeof value === "string" && value.length > 40 ? `${text.slice(0, -1)}…"` : text;
}

/** A check of one kind of value. */
export abstract class Schema<T> {
  /** The accepted type, for {@link Infer} only. */
  declare readonly "~type": T;

  /** `undefined` when `value` fits; otherwise the first problem, its path relative to here. */
  abstract check(value: unknown): Issue | undefined;

  /** Checks `value`; on success `data` is `value` itself, now typed. */
  safeParse(value: unknown): ParseResult<T> {
    const found = this.check(value);
    return found === undefined
      ? { success: true, data: value as T }
      : { success: false, error: new SchemaError([found]) };
  }

  /** The same check, or the field may be left out (`undefined`). */
  optional(): OptionalSchema<T> {
    return new OptionalSchema(this);
  }
}

/** A field that may be absent. */
export class OptionalSchema<T> extends Schema<T | undefined> {
  declare readonly "~optional": true;
  readonly inner: Schema<T>;

  constructor(inner: Schema<T>) {
    super();
    this.inner = inner;
  }

  check(value: unknown): Issue | undefined {
    return value === undefined ? undefined : this.inner.check(value);
  }
}

type StringRule = (s: string) => string | undefined;

/** A string; rules are checked in the order they were added (put lengths before patterns). */
export class StringSchema extends Schema<string> {
  readonly #rules: readonly StringRule[];

  constructor(rules: readonly StringRule[] = []) {
    super();
    this.#rules = rules;
  }

  #with(rule: StringRule): StringSchema {
    return new StringSchema([...this.#rules, rule]);
  }

  /** At least `n` UTF-16 code units. */
  min(n: number): StringSchema {
    return this.#with((s) =>
      s.length < n ? `Too small: expected string to have >=${n} characters` : undefined
    );
  }

  /** At most `n` UTF-16 code units. */
  max(n: number): StringSchema {
    return this.#with((s) =>
      s.length > n ? `Too big: expected string to have <=${n} characters` : undefined
    );
  }

  /** Exactly `n` UTF-16 code units. */
  length(n: number): StringSchema {
    return this.#with((s) =>
      s.length === n
        ? undefined
        : `Too ${s.length < n ? "small" : "big"}: expected string to have exactly ${n} characters`
    );
  }

  /** Matches `pattern` (anchor it, and never give it the `g` or `y` flag). */
  regex(pattern: RegExp, message = `Invalid string: must match pattern ${pattern}`): StringSchema {
    return this.#with((s) => pattern.test(s) ? undefined : message);
  }

  /** An RFC 9562 UUID (versions 1-8), or the nil or max UUID, in either case. */
  uuid(): StringSchema {
    return this.regex(UUID, "Invalid UUID");
  }

  check(value: unknown): Issue | undefined {
    if (typeof value !== "string") return wrongType("string", value);
    for (const rule of this.#rules) {
      const message = rule(value);
      if (message !== undefined) return issue(message);
    }
    return undefined;
  }
}

const UUID =
  /^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}|00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)$/;

/** A finite number (JSON has no other), optionally whole and within bounds. */
export class NumberSchema extends Schema<number> {
  readonly #int: boolean;
  readonly #min: number;
  readonly #max: number;

  constructor(int = false, min = -Infinity, max = Infinity) {
    super();
    this.#int = int;
    this.#min = min;
    this.#max = max;
  }

  /** A whole number within ±(2^53 - 1). */
  int(): NumberSchema {
    return new NumberSchema(true, this.#min, this.#max);
  }

  /** At least `n`. */
  min(n: number): NumberSchema {
    return new NumberSchema(this.#int, n, this.#max);
  }

  /** At most `n`. */
  max(n: number): NumberSchema {
    return new NumberSchema(this.#int, this.#min, n);
  }

  check(value: unknown): Issue | undefined {
    if (typeof value !== "number" || !Number.isFinite(value)) return wrongType("number", value);
    if (this.#int && !Number.isSafeInteger(value)) {
      return issue("Invalid input: expected int, received number");
    }
    if (value < this.#min) return issue(`Too small: expected number to be >=${this.#min}`);
    if (value > this.#max) return issue(`Too big: expected number to be <=${this.#max}`);
    return undefined;
  }
}

/** `true` or `false`. */
export class BooleanSchema extends Schema<boolean> {
  check(value: unknown): Issue | undefined {
    return typeof value === "boolean" ? undefined : wrongType("boolean", value);
  }
}

/** Exactly one value: a message's `type`. */
export class LiteralSchema<T extends string | number | boolean> extends Schema<T> {
  readonly value: T;

  constructor(value: T) {
    super();
    this.value = value;
  }

  check(value: unknown): Issue | undefined {
    return value === this.value
      ? undefined
      : issue(`Invalid input: expected ${JSON.stringify(this.value)}`);
  }
}

/** One of a few strings. */
export class OneOfSchema<T extends string> extends Schema<T> {
  readonly values: readonly T[];
  readonly #set: ReadonlySet<unknown>;

  constructor(values: readonly T[]) {
    super();
    this.values = values;
    this.#set = new Set(values);
  }

  check(value: unknown): Issue | undefined {
    if (this.#set.has(value)) return undefined;
    const expected = this.values.map((v) => JSON.stringify(v)).join("|");
    return issue(`Invalid option: expected one of ${expected}`);
  }
}

/** An array whose length is checked before its elements. */
export class ArraySchema<T> extends Schema<T[]> {
  readonly item: Schema<T>;
  readonly #min: number;
  readonly #max: number;

  constructor(item: Schema<T>, min = 0, max = Infinity) {
    super();
    this.item = item;
    this.#min = min;
    this.#max = max;
  }

  /** At least `n` elements. */
  min(n: number): ArraySchema<T> {
    return new ArraySchema(this.item, n, this.#max);
  }

  /** At most `n` elements. */
  max(n: number): ArraySchema<T> {
    return new ArraySchema(this.item, this.#min, n);
  }

  check(value: unknown): Issue | undefined {
    if (!Array.isArray(value)) return wrongType("array", value);
    if (value.length < this.#min) {
      return issue(`Too small: expected array to have >=${this.#min} items`);
    }
    if (value.length > this.#max) {
      return issue(`Too big: expected array to have <=${this.#max} items`);
    }
    for (let i = 0; i < value.length; i++) {
      const found = this.item.check(value[i]);
      if (found !== undefined) {
        found.path.unshift(i);
        return found;
      }
    }
    return undefined;
  }
}

// deno-lint-ignore no-explicit-any
type AnySchema = Schema<any>;
/** The fields of an object schema. */
export type Shape = Record<string, AnySchema>;
type OptionalKeys<S extends Shape> = {
  [K in keyof S]: S[K] extends OptionalSchema<unknown> ? K : never;
}[keyof S];
type Flat<T> = { [K in keyof T]: T[K] } & unknown;
/** The object type a shape describes: optional fields may be left out. */
export type ObjectOf<S extends Shape> = Flat<
  & { [K in Exclude<keyof S, OptionalKeys<S>>]: Infer<S[K]> }
  & { [K in OptionalKeys<S>]?: Infer<S[K]> }
>;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** An object with exactly the fields of its shape: a field it does not name is refused. */
export class ObjectSchema<S extends Shape> extends Schema<ObjectOf<S>> {
  readonly shape: S;
  readonly #fields: readonly [string, AnySchema][];
  readonly #names: ReadonlySet<string>;

  constructor(shape: S) {
    super();
    this.shape = shape;
    this.#fields = Object.entries(shape);
    this.#names = new Set(Object.keys(shape));
  }

  check(value: unknown): Issue | undefined {
    if (!isPlainObject(value)) return wrongType("object", value);
    for (const [name, schema] of this.#fields) {
      const found = schema.check(Object.hasOwn(value, name) ? value[name] : undefined);
      if (found !== undefined) {
        found.path.unshift(name);
        return found;
      }
    }
    // Every own key, __proto__ (an own key after JSON.parse) included.
    const keys = Object.keys(value);
    let known = 0;
    while (known < keys.length && this.#names.has(keys[known]!)) known++;
    if (known === keys.length) return undefined;
    const extra = keys.filter((key) => !this.#names.has(key));
    const shown = extra.slice(0, 3).map(quote).join(", ");
    const more = extra.length > 3 ? ` and ${extra.length - 3} more` : "";
    return issue(`Unrecognized key${extra.length > 1 ? "s" : ""}: ${shown}${more}`);
  }
}

// deno-lint-ignore no-explicit-any
type AnyObject = ObjectSchema<any>;

/** One of several object schemas, chosen by the literal value of the field `key`. */
export class UnionSchema<O extends readonly AnyObject[]> extends Schema<Infer<O[number]>> {
  readonly key: string;
  readonly options: O;
  readonly #byValue: ReadonlyMap<unknown, AnyObject>;

  constructor(key: string, options: O) {
    super();
    this.key = key;
    this.options = options;
    const byValue = new Map<unknown, AnyObject>();
    for (const option of options) {
      const literal = option.shape[key];
      if (!(literal instanceof LiteralSchema)) {
        throw new TypeError(`every option of a union needs a literal "${key}"`);
      }
      if (byValue.has(literal.value)) {
        throw new TypeError(`two options with ${key} ${literal.value}`);
      }
      byValue.set(literal.value, option);
    }
    this.#byValue = byValue;
  }

  /** Whether some option has `value` as its discriminator. */
  has(value: unknown): boolean {
    return this.#byValue.has(value);
  }

  check(value: unknown): Issue | undefined {
    if (!isPlainObject(value)) return wrongType("object", value);
    const option = this.#byValue.get(Object.hasOwn(value, this.key) ? value[this.key] : undefined);
    if (option === undefined) {
      return { path: [this.key], message: "Invalid input: no such option" };
    }
    return option.check(value);
  }
}

/** A string (see {@link StringSchema} for its rules). */
export function string(): StringSchema {
  return new StringSchema();
}

/** A finite number (see {@link NumberSchema}). */
export function number(): NumberSchema {
  return new NumberSchema();
}

/** `true` or `false`. */
export function boolean(): BooleanSchema {
  return new BooleanSchema();
}

/** Exactly `value`. */
export function literal<const T extends string | number | boolean>(value: T): LiteralSchema<T> {
  return new LiteralSchema(value);
}

/** One of `values`. */
export function oneOf<const T extends string>(values: readonly T[]): OneOfSchema<T> {
  return new OneOfSchema(values);
}

/** An array of `item`s. */
export function array<T>(item: Schema<T>): ArraySchema<T> {
  return new ArraySchema(item);
}

/** An object with exactly these fields (a field that may be absent is `.optional()`). */
export function object<const S extends Shape>(shape: S): ObjectSchema<S> {
  return new ObjectSchema(shape);
}

/** One of `options`, chosen by their literal `key` field. */
export function union<const O extends readonly AnyObject[]>(
  key: string,
  options: O,
): UnionSchema<O> {
  return new UnionSchema(key, options);
}
