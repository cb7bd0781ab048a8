import t from "tap";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope, nodebinRoot } from "../../src/wire/envelope.ts";
import { CODE_NAMES, NodeBinError, codeFromNumber, codeNumber, isCode, type Code } from "../../src/wire/errors.ts";
import { MODE_NAMES, Mode } from "../../src/wire/schema.ts";

const ALL_CODES = CODE_NAMES.filter((c): c is Code => c !== "OK");

t.test("errors - code numbers are gRPC's, as nodebin.Code in envelope.proto numbers them", async (t) => {
  const values = nodebinRoot.lookupEnum("nodebin.Code").values;
  t.equal(Object.keys(values).length, CODE_NAMES.length, "as many codes in the proto as in CODE_NAMES");
  for (const [name, number] of Object.entries(values)) t.equal(CODE_NAMES[number], name, `${name} is ${number}`);
  t.equal(codeNumber("NOT_FOUND"), 5);
  t.equal(codeNumber("UNAUTHENTICATED"), 16);
});

t.test("errors - Plane, Kind and Mode constants match their proto enums", async (t) => {
  t.same(nodebinRoot.lookupEnum("nodebin.Plane").values, Plane);
  t.same(nodebinRoot.lookupEnum("nodebin.Kind").values, Kind);
  t.same(nodebinRoot.lookupEnum("nodebin.Mode").values, Mode);
  t.same(Object.keys(nodebinRoot.lookupEnum("nodebin.Mode").values), MODE_NAMES);
});

t.test("errors - codeNumber and codeFromNumber are inverse for every code", async (t) => {
  for (const code of ALL_CODES) t.equal(codeFromNumber(codeNumber(code)), code, code);
});

t.test("errors - codeFromNumber maps OK and unknown numbers to UNKNOWN", async (t) => {
  for (const n of [0, 17, 99, -1, 1.5, Number.NaN]) t.equal(codeFromNumber(n), "UNKNOWN", String(n));
});

t.test("errors - isCode accepts error codes only", async (t) => {
  for (const code of ALL_CODES) t.ok(isCode(code), code);
  for (const value of ["OK", "not_found", "NOTFOUND", "", "toString", 5, null, undefined, {}]) t.notOk(isCode(value), String(value));
});

t.test("errors - a NodeBinError carries code, message, details, origin and cause", async (t) => {
  const cause = new Error("root");
  const err = new NodeBinError("NOT_FOUND", "no such thing", { details: { field: "x" }, origin: "node-1", cause });
  t.ok(err instanceof Error);
  t.equal(err.name, "NodeBinError");
  t.equal(err.code, "NOT_FOUND");
  t.equal(err.message, "no such thing");
  t.same(err.details, { field: "x" });
  t.equal(err.origin, "node-1");
  t.equal(err.cause, cause);
  t.equal(String(err), "NOT_FOUND: no such thing");

  const bare = new NodeBinError("INTERNAL", "m");
  t.same(bare.details, {});
  t.equal(bare.origin, "");
  t.notOk("cause" in bare, "no cause property when none was given");
});

t.test("errors - from() passes a NodeBinError through and wraps anything else", async (t) => {
  const original = new NodeBinError("PERMISSION_DENIED", "no");
  t.equal(NodeBinError.from(original), original, "same object");
  t.equal(NodeBinError.from(original, "UNAVAILABLE").code, "PERMISSION_DENIED", "fallback does not override a code");

  const thrown = new TypeError("bad type");
  const wrapped = NodeBinError.from(thrown);
  t.equal(wrapped.code, "INTERNAL");
  t.equal(wrapped.message, "bad type");
  t.equal(wrapped.cause, thrown);
  t.equal(NodeBinError.from(thrown, "UNAVAILABLE").code, "UNAVAILABLE");

  t.equal(NodeBinError.from("a string").message, "a string");
  t.equal(NodeBinError.from(undefined).code, "INTERNAL");
  t.equal(NodeBinError.from(42).message, "42");
});

t.test("errors - toWire and fromWire round trip through an encoded envelope for every code", async (t) => {
  for (const code of ALL_CODES) {
    const err = new NodeBinError(code, `it was ${code}`, { details: { field: "a.b", suggestions: "x,y" }, origin: "node-7" });
    const frame = encodeEnvelope(envelope({ kind: Kind.RESPONSE, error: err.toWire() }));
    const env = decodeEnvelope(frame);
    if (env instanceof NodeBinError) throw env;
    const back = NodeBinError.fromWire(env.error!);
    t.equal(back.code, code);
    t.equal(back.message, `it was ${code}`);
    t.same(back.details, { field: "a.b", suggestions: "x,y" });
    t.equal(back.origin, "node-7");
  }
});

t.test("errors - fromWire copies details and maps unknown numbers to UNKNOWN", async (t) => {
  const wire = { code: 77, message: "from the future", details: { a: "1" }, origin: "far" };
  const err = NodeBinError.fromWire(wire);
  t.equal(err.code, "UNKNOWN");
  wire.details.a = "changed";
  t.equal(err.details.a, "1", "details are a copy");
  t.same(new NodeBinError("CANCELLED", "c").toWire(), { code: 1, message: "c", details: {}, origin: "" });
});
