/**
 * Unit tests for lib/protocol/schema.ts, the checks every wire message goes through: what each
 * kind accepts, where a failure is reported, and that hostile shapes cost little to refuse.
 */
import assert from "node:assert/strict";
import * as s from "../../lib/protocol/schema.ts";

function problem(schema: s.Schema<unknown>, value: unknown): s.Issue {
  const result = schema.safeParse(value);
  assert.equal(result.success, false, JSON.stringify(value));
  return (result as { error: s.SchemaError }).error.issues[0]!;
}

Deno.test("safeParse() returns the very value it checked, typed", () => {
  const value = { type: "a", n: 1 };
  const result = s.object({ type: s.literal("a"), n: s.number() }).safeParse(value);
  assert.ok(result.success);
  assert.equal(result.data, value);
});

Deno.test("strings: type, lengths in UTF-16 units, patterns, in the order given", () => {
  const name = s.string().min(2).max(4).regex(/^[a-z]+$/, "lower case only");
  for (const ok of ["ab", "abcd"]) assert.equal(name.safeParse(ok).success, true, ok);
  assert.equal(problem(name, 5).message, "Invalid input: expected string, received number");
  assert.equal(problem(name, "a").message, "Too small: expected string to have >=2 characters");
  assert.equal(problem(name, "abcde").message, "Too big: expected string to have <=4 characters");
  assert.equal(problem(name, "AB").message, "lower case only");
  assert.equal(s.string().max(1).safeParse("😀").success, false, "an emoji is two units");
  assert.match(problem(s.string().length(3), "ab").message, /exactly 3/);
});

Deno.test("uuid() takes RFC 9562 versions 1-8 and the nil and max UUIDs, in either case", () => {
  const id = s.string().uuid();
  for (
    const ok of [
      "6f9619ff-8b86-4011-b42d-00c04fc964ff",
      "6F9619FF-8B86-7011-A42D-00C04FC964FF",
      "00000000-0000-0000-0000-000000000000",
      "ffffffff-ffff-ffff-ffff-ffffffffffff",
    ]
  ) assert.equal(id.safeParse(ok).success, true, ok);
  for (
    const bad of [
      "6f9619ff-8b86-0011-b42d-00c04fc964ff", // version 0
      "6f9619ff-8b86-4011-742d-00c04fc964ff", // variant 0
      "6f9619ff8b864011b42d00c04fc964ff",
      "{6f9619ff-8b86-4011-b42d-00c04fc964ff}",
    ]
  ) assert.equal(id.safeParse(bad).success, false, bad);
});

Deno.test("numbers: finite, whole within the safe range when int(), bounds inclusive", () => {
  const n = s.number().int().min(1).max(10);
  for (const ok of [1, 10]) assert.equal(n.safeParse(ok).success, true);
  for (const bad of [0, 11, 1.5, NaN, Infinity, "5", 2 ** 53]) {
    assert.equal(n.safeParse(bad).success, false, String(bad));
  }
  assert.equal(s.number().int().safeParse(2 ** 53).success, false, "beyond the safe integers");
  assert.equal(problem(n, 0).message, "Too small: expected number to be >=1");
});

Deno.test("literals, choices and booleans take exactly their values", () => {
  assert.equal(s.literal("a").safeParse("b").success, false);
  assert.equal(s.oneOf(["x", "y"]).safeParse("y").success, true);
  assert.equal(
    problem(s.oneOf(["x", "y"]), "z").message,
    'Invalid option: expected one of "x"|"y"',
  );
  assert.equal(s.boolean().safeParse(0).success, false);
});

Deno.test("objects refuse fields they do not name, own __proto__ included, and missing ones", () => {
  const o = s.object({ a: s.number(), b: s.string().optional() });
  assert.equal(o.safeParse({ a: 1 }).success, true);
  assert.equal(o.safeParse({ a: 1, b: undefined }).success, true);
  assert.deepEqual(problem(o, { a: 1, c: 2 }), { path: [], message: 'Unrecognized key: "c"' });
  assert.deepEqual(problem(o, JSON.parse('{"a":1,"__proto__":{"x":1}}')), {
    path: [],
    message: 'Unrecognized key: "__proto__"',
  });
  assert.deepEqual(problem(o, {}).path, ["a"]);
  assert.deepEqual(problem(o, { a: 1, b: null }).path, ["b"]);
  for (const bad of [null, [], "x"]) assert.equal(o.safeParse(bad).success, false);
  const inherited = Object.create({ a: 1 });
  assert.deepEqual(problem(o, inherited).path, ["a"], "inherited fields do not count");
});

Deno.test("an object with many unknown fields gets a short message", () => {
  const many = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, i]));
  const { message } = problem(s.object({}), many);
  assert.equal(message, 'Unrecognized keys: "k0", "k1", "k2" and 9997 more');
});

Deno.test("arrays check their length before any element, and name a bad element by index", () => {
  let checked = 0;
  class Counting extends s.Schema<number> {
    check(_value: unknown) {
      checked++;
      return undefined;
    }
  }
  const list = s.array(new Counting()).min(1).max(3);
  assert.equal(problem(list, [1, 2, 3, 4]).message, "Too big: expected array to have <=3 items");
  assert.equal(problem(list, []).message, "Too small: expected array to have >=1 items");
  assert.equal(checked, 0, "a refused length costs no element checks");
  const nested = s.object({ items: s.array(s.object({ n: s.number() })) });
  assert.deepEqual(problem(nested, { items: [{ n: 1 }, { n: "2" }] }).path, ["items", 1, "n"]);
});

Deno.test("unions choose by their discriminator and refuse an unknown or missing one", () => {
  const u = s.union("type", [
    s.object({ type: s.literal("a"), n: s.number() }),
    s.object({ type: s.literal("b") }),
  ]);
  assert.equal(u.has("a"), true);
  assert.equal(u.has("c"), false);
  assert.equal(u.safeParse({ type: "a", n: 1 }).success, true);
  assert.deepEqual(problem(u, { type: "a" }).path, ["n"]);
  assert.deepEqual(problem(u, { type: "c" }).path, ["type"]);
  assert.deepEqual(problem(u, {}).path, ["type"]);
  assert.equal(u.has("toString"), false);
  assert.deepEqual(problem(u, { type: "constructor" }).path, ["type"]);
});

Deno.test("a union refuses options without a literal discriminator, or two with the same", () => {
  assert.throws(() => s.union("type", [s.object({ type: s.string() })]), TypeError);
  const a = s.object({ type: s.literal("a") });
  assert.throws(() => s.union("type", [a, a]), TypeError);
});
