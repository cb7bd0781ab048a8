import protobuf from "protobufjs";
import t from "tap";
import { NodeBinError } from "../../src/wire/errors.ts";
import { checkMessage, closest, decodeMessage, editDistance, encodeMessage, messageToJSON } from "../../src/wire/message.ts";
import { loadProtoFiles } from "../../src/wire/proto.ts";
import { thrown } from "../lib/expect-error.ts";
import { fixturePath } from "../lib/fixture-components.ts";

const root = loadProtoFiles([fixturePath("protos/types.proto")]);
const All = root.lookupType("types.All");

/** Encodes then decodes `value` as types.All, in its proto3 JSON form. */
function roundTrip(value: unknown): Record<string, unknown> {
  return messageToJSON(All, decodeMessage(All, encodeMessage(All, value, "test"), "test"));
}

/** The field path of the INVALID_ARGUMENT that encoding `value` throws. */
function badField(value: unknown): string | undefined {
  const err = thrown(() => encodeMessage(All, value, "request of types.Test/Call"));
  if (err.code !== "INVALID_ARGUMENT") throw new Error(`expected INVALID_ARGUMENT, got ${err.code}`);
  return err.details.field;
}

t.test("message - a value using every kind of field round trips", async (t) => {
  const json = roundTrip({
    s: "text",
    flag: true,
    data: new Uint8Array([1, 2, 3]),
    d: 1.5,
    f: 0.25,
    i32: -5,
    u32: 4294967295,
    s32: -2147483648,
    i64: "-9223372036854775808",
    u64: "18446744073709551615",
    f64: 12n,
    color: "GREEN",
    a: { b: "inner", n: 2 },
    xs: [1, 2, 3],
    items: [{ b: "x" }, { n: 4 }],
    counts: { a: 1, b: 2 },
    names: { "1": "one", "-5": "minus five" },
    flags: { true: { b: "yes" } },
    right: 9,
    snakeCaseField: "camel",
    next: { s: "nested" },
  });
  t.match(json, {
    s: "text",
    flag: true,
    data: "AQID",
    d: 1.5,
    f: 0.25,
    i32: -5,
    u32: 4294967295,
    s32: -2147483648,
    i64: "-9223372036854775808",
    u64: "18446744073709551615",
    f64: "12",
    color: "GREEN",
    a: { b: "inner", n: 2 },
    xs: [1, 2, 3],
    items: [{ b: "x", n: 0 }, { b: "", n: 4 }],
    counts: { a: 1, b: 2 },
    names: { "1": "one", "-5": "minus five" },
    flags: { true: { b: "yes" } },
    right: 9,
    snakeCaseField: "camel",
    next: { s: "nested" },
  });
});

t.test("message - a wrong scalar type is INVALID_ARGUMENT naming the field and the type", async (t) => {
  const err = thrown(() => encodeMessage(All, { s: 5 }, "request of types.Test/Call"));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.equal(err.details.field, "s");
  t.equal(err.details.type, "types.All");
  t.ok(err.message.includes("request of types.Test/Call"), "the message says what was being encoded");
  t.equal(badField({ flag: "true" }), "flag");
  t.equal(badField({ d: "abc" }), "d");
  t.equal(badField({ s: { nested: true } }), "s", "an object for a string field (protobufjs would store [object Object])");
  t.equal(badField({ data: 12 }), "data");
  t.equal(badField({ data: "not base64!" }), "data");
  t.equal(badField({ i32: 1.5 }), "i32");
  t.equal(badField({ i32: "12.5" }), "i32");
  t.equal(badField({ i32: 3n }), "i32", "bigint is for 64-bit fields only");
});

t.test("message - nested, repeated and map fields are named by their path", async (t) => {
  t.equal(badField({ a: { b: 5 } }), "a.b");
  t.equal(badField({ a: "not a message" }), "a");
  t.equal(badField({ xs: [1, "x", 3] }), "xs[1]");
  t.equal(badField({ xs: 1 }), "xs", "a repeated field needs an array");
  t.equal(badField({ items: [{ b: "ok" }, { n: "many" }] }), "items[1].n");
  t.equal(badField({ next: { next: { a: { b: false } } } }), "next.next.a.b");
  t.equal(badField({ counts: { a: 1, b: "two" } }), 'counts["b"]');
  t.equal(badField({ counts: [1] }), "counts", "a map needs an object");
  t.equal(badField({ names: { abc: "x" } }), 'names["abc"]', "an int32 map key must be an integer");
  t.equal(badField({ flags: { yes: {} } }), 'flags["yes"]', "a bool map key must be true or false");
  t.equal(badField({ flags: { false: { n: "x" } } }), 'flags["false"].n');
});

t.test("message - enums take known names and integers", async (t) => {
  t.equal(roundTrip({ color: "GREEN" }).color, "GREEN");
  t.equal(roundTrip({ color: 1 }).color, "GREEN");
  t.doesNotThrow(() => encodeMessage(All, { color: 7 }, "test"), "proto3 enums are open: unknown numbers travel");
  const err = thrown(() => encodeMessage(All, { color: "BLUE" }, "test"));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.equal(err.details.field, "color");
  t.equal(badField({ color: "green" }), "color", "names are case-sensitive");
  t.equal(badField({ color: 1.5 }), "color");
  t.equal(badField({ color: true }), "color");
});

t.test("message - 32-bit integers are range-checked", async (t) => {
  t.equal(roundTrip({ i32: 2147483647 }).i32, 2147483647);
  t.equal(roundTrip({ i32: "-2147483648" }).i32, -2147483648, "decimal strings accepted");
  t.equal(badField({ i32: 2147483648 }), "i32");
  t.equal(badField({ i32: -2147483649 }), "i32");
  t.equal(badField({ s32: "2147483648" }), "s32");
  t.equal(badField({ u32: -1 }), "u32");
  t.equal(badField({ u32: 4294967296 }), "u32");
  t.equal(badField({ xs: [0, 2 ** 31] }), "xs[1]");
});

t.test("message - 64-bit integers accept decimal strings, bigint, safe numbers and Long", async (t) => {
  t.equal(roundTrip({ i64: "9223372036854775807" }).i64, "9223372036854775807");
  t.equal(roundTrip({ i64: -42 }).i64, "-42");
  t.equal(roundTrip({ u64: 2n ** 64n - 1n }).u64, "18446744073709551615");
  const Long = protobuf.util.Long as unknown as { fromString(value: string, unsigned: boolean): object };
  t.equal(roundTrip({ f64: Long.fromString("123456789012345", true) }).f64, "123456789012345");
  t.equal(badField({ i64: "9223372036854775808" }), "i64");
  t.equal(badField({ i64: -(2n ** 63n) - 1n }), "i64");
  t.equal(badField({ u64: "-1" }), "u64");
  t.equal(badField({ u64: 2 ** 64 }), "u64", "an unsafe number would lose precision");
  t.equal(badField({ i64: "12abc" }), "i64");
  t.equal(badField({ i64: 1.5 }), "i64");
});

t.test("message - bytes accept Uint8Array and base64; doubles accept numeric strings", async (t) => {
  t.equal(roundTrip({ data: "AQID" }).data, "AQID");
  t.equal(roundTrip({ data: Buffer.from([255]) }).data, "/w==");
  t.ok(Number.isNaN(roundTrip({ d: "NaN" }).d), "NaN");
  t.equal(roundTrip({ d: "-Infinity" }).d, -Infinity);
  t.equal(roundTrip({ d: "1e5" }).d, 100000);
});

t.test("message - an unknown field is refused, with a did-you-mean", async (t) => {
  const typo = thrown(() => encodeMessage(All, { ss: "x" }, "test"));
  t.equal(typo.code, "INVALID_ARGUMENT");
  t.equal(typo.details.field, "ss");
  t.match(typo.message, /did you mean 's'/);
  const snake = thrown(() => encodeMessage(All, { snake_case_field: "x" }, "test"));
  t.equal(snake.details.field, "snake_case_field");
  t.match(snake.message, /did you mean 'snakeCaseField'/, "snake_case points at the lowerCamelCase name");
  t.equal(badField({ a: { zzz: 1 } }), "a.zzz");
});

t.test("message - two members of one oneof are refused", async (t) => {
  t.equal(badField({ left: "l", right: 1 }), "choice");
  t.equal(badField({ a: {}, next: { left: "l", right: 1 } }), "next.choice");
  t.doesNotThrow(() => encodeMessage(All, { left: "l", right: null }, "test"), "null does not count as set");
});

t.test("message - null and undefined fields are skipped; a missing value is an empty message", async (t) => {
  t.doesNotThrow(() => encodeMessage(All, { s: null, a: undefined, xs: null }, "test"));
  t.equal(encodeMessage(All, undefined, "test").length, 0);
  t.equal(encodeMessage(All, null, "test").length, 0);
});

t.test("message - a non-object message is refused at the root", async (t) => {
  for (const value of ["x", 5, [], new Uint8Array(1), true]) {
    const problem = checkMessage(All, value);
    t.ok(problem, `${typeof value} refused`);
    t.equal(problem?.field, "");
  }
  t.equal(badField("x"), "");
});

t.test("message - a message built by protobufjs itself is trusted", async (t) => {
  const message = All.fromObject({ s: "built" });
  t.equal(checkMessage(All, message), undefined);
  t.equal(roundTrip(message).s, "built");
});

t.test("message - nesting deeper than 64 levels is refused", async (t) => {
  let value: Record<string, unknown> = { s: "bottom" };
  for (let i = 0; i < 70; i++) value = { next: value };
  const problem = checkMessage(All, value);
  t.ok(problem, "refused");
  t.match(problem?.field, /^next(\.next)+$/);
  let shallow: Record<string, unknown> = { s: "bottom" };
  for (let i = 0; i < 60; i++) shallow = { next: shallow };
  t.equal(checkMessage(All, shallow), undefined, "60 levels are fine");
});

t.test("message - decodeMessage refuses bytes that are not the type, with INVALID_ARGUMENT", async (t) => {
  const err = thrown(() => decodeMessage(All, new Uint8Array([0x0a, 0x05, 0x61]), "reply of x"));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.equal(err.details.type, "types.All");
  t.ok(err instanceof NodeBinError);
});

t.test("message - messageToJSON gives the proto3 JSON form with defaults", async (t) => {
  const json = messageToJSON(All, decodeMessage(All, new Uint8Array(0), "x"));
  t.match(json, { s: "", flag: false, data: "", i64: "0", color: "RED", xs: [], counts: {}, a: null });
});

t.test("message - editDistance is Levenshtein distance", async (t) => {
  t.equal(editDistance("kitten", "sitting"), 3);
  t.equal(editDistance("", "abc"), 3);
  t.equal(editDistance("abc", ""), 3);
  t.equal(editDistance("same", "same"), 0);
  t.equal(editDistance("Hello", "Helo"), 1);
  t.equal(editDistance("ab", "ba"), 2, "a transposition is two edits");
  t.equal(editDistance("flaw", "lawn"), editDistance("lawn", "flaw"), "symmetric");
});

t.test("message - closest picks the nearest likely typo, or nothing", async (t) => {
  t.equal(closest("Helo", ["Goodbye", "Hello", "Help me"]), "Hello");
  t.equal(closest("hello", ["Hello"]), "Hello", "case-insensitive");
  t.equal(closest("xyz", ["Hello", "World"]), undefined, "too far to be a typo");
  t.equal(closest("anything", []), undefined);
  t.equal(closest("ab", ["abcd"]), "abcd", "two edits are always close enough");
  t.equal(closest("ab", ["abcde"]), undefined);
  t.equal(closest("internationalisation", ["internationalization_x"]), "internationalization_x", "longer words allow a third of their length");
});

t.test("message - a Buffer value cut inside a string is INVALID_ARGUMENT, not a shorter string", async (t) => {
  const err = thrown(() => decodeMessage(All, Buffer.from([0x0a, 0x09, 0x41]), "test"));
  t.equal(err.code, "INVALID_ARGUMENT");
});

t.test("message - bytes must be standard base64 that protobufjs can decode; the field is named", async (t) => {
  t.equal(badField({ data: "-_8A" }), "data", "URL-safe alphabet");
  t.equal(badField({ data: "A" }), "data", "impossible length");
  t.equal(badField({ data: "QQ=" }), "data", "padding that does not make a multiple of 4");
  t.same(roundTrip({ data: "AQID" }).data, "AQID");
  t.same(roundTrip({ data: "AQ==" }).data, "AQ==");
});

t.test("message - a float field refuses finite numbers beyond float32's range", async (t) => {
  t.equal(badField({ f: 1e300 }), "f");
  t.equal(badField({ f: "-1e39" }), "f");
  t.doesNotThrow(() => encodeMessage(All, { f: Infinity }, "test"), "infinities are floats");
  t.doesNotThrow(() => encodeMessage(All, { f: "NaN" }, "test"), "so is NaN");
  t.doesNotThrow(() => encodeMessage(All, { d: 1e300 }, "test"), "a double takes it");
});

/** `value` encoded as `type`, with the one occurrence of the ASCII `marker` replaced by `replacement` (same length). */
function forged(type: protobuf.Type, value: unknown, marker: string, replacement: number[]): Uint8Array {
  const out = Buffer.from(encodeMessage(type, value, "test"));
  const at = out.indexOf(marker);
  if (at < 0 || out.indexOf(marker, at + 1) >= 0 || marker.length !== replacement.length) throw new Error(`marker ${marker} must occur once and match the replacement's length`);
  out.set(replacement, at);
  return out;
}

const Tags = protobuf.parse('syntax = "proto3"; message Tags { repeated string tags = 1; map<string, string> labels = 2; }').root.lookupType("Tags");

t.test("message - decodeMessage refuses a string that is not UTF-8, naming its path: nested, repeated, map keys and values, oneofs", async (t) => {
  const m = "~~";
  const cases: [protobuf.Type, unknown, string][] = [
    [All, { s: `x${m}y` }, "s"],
    [All, { a: { b: m, n: 1 } }, "a.b"],
    [All, { items: [{ b: "fine" }, { n: 2 }, { b: m }] }, "items[2].b"],
    [All, { counts: { ok: 1, [`k${m}`]: 2 } }, "counts"],
    [All, { names: { 5: `value ${m} longer than eight bytes` } }, 'names["5"]'],
    [All, { flags: { true: { b: m } } }, 'flags["true"].b'],
    [All, { left: m }, "left"],
    [All, { next: { next: { s: m } } }, "next.next.s"],
    [All, { snakeCaseField: m }, "snakeCaseField"],
    [Tags, { tags: ["a", "b", m] }, "tags[2]"],
    [Tags, { labels: { env: m } }, 'labels["env"]'],
    [Tags, { labels: { [m]: "v" } }, "labels"],
  ];
  for (const [type, value, field] of cases) {
    const err = thrown(() => decodeMessage(type, forged(type, value, m, [0xc3, 0x28]), "request of types.Test/Call"));
    t.equal(err.code, "INVALID_ARGUMENT", `${field}: INVALID_ARGUMENT`);
    t.equal(err.details.field, field, `${field}: named`);
    t.equal(err.details.type, type.fullName.slice(1), `${field}: the type is named too`);
    t.match(err.message, /^request of types\.Test\/Call: .*not valid UTF-8/, `${field}: says what is wrong`);
  }
});

t.test("message - every kind of invalid UTF-8 is refused; valid text of every width decodes exactly", async (t) => {
  for (const bad of [[0xff], [0x80], [0xc0, 0xaf], [0xed, 0xbf, 0xbf], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xf0, 0x9f, 0x98]]) {
    const marker = "~".repeat(bad.length);
    const err = thrown(() => decodeMessage(All, forged(All, { s: marker }, marker, bad), "x"));
    t.equal(err.details.field, "s", `[${bad.map((b) => b.toString(16)).join(" ")}] refused`);
  }
  for (const text of ["", "plain", "ünïcødé", "日本語のテキスト", "emoji 😀 and 𝄞", "\uFEFFbom kept", "x".repeat(70_000)]) {
    t.equal(roundTrip({ s: text, a: { b: text } }).s, text, `${JSON.stringify(text.slice(0, 16))} round trips`);
  }
});
