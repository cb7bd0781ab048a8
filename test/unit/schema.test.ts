import t from "tap";
import { loadProtoFiles } from "../../src/wire/proto.ts";
import { MODE_NAMES, Mode, Schema, modeName } from "../../src/wire/schema.ts";
import { thrown } from "../lib/expect-error.ts";
import { fixturePath } from "../lib/fixture-components.ts";

function schemaOf(rel: string, own = true): Schema {
  const file = fixturePath(rel);
  const root = loadProtoFiles([file]);
  return own ? Schema.fromRoot(root, [file]) : Schema.fromRoot(root);
}

t.test("schema - modes come from (nodebin.mode), streams default to STREAM, others to SYNC", async (t) => {
  const schema = schemaOf("protos/modes.proto");
  const modes = Object.fromEntries([...schema.methods.values()].map((m) => [m.name, modeName(m.mode)]));
  t.same(modes, { Plain: "SYNC", Sync: "SYNC", Async: "ASYNC", Streamed: "STREAM", Stream: "STREAM", Broadcast: "BROADCAST", Numbered: "ASYNC" });
});

t.test("schema - a method knows its full name, service, name and resolved types", async (t) => {
  const method = schemaOf("protos/modes.proto").methods.get("modes.Modes/Async");
  t.ok(method);
  t.equal(method?.fullName, "modes.Modes/Async");
  t.equal(method?.service, "modes.Modes");
  t.equal(method?.name, "Async");
  t.equal(method?.mode, Mode.ASYNC);
  t.equal(method?.requestType.fullName, ".nodebin.Empty");
  t.equal(method?.responseType.fullName, ".nodebin.Empty");
});

t.test("schema - services in nested packages are found", async (t) => {
  t.same([...schemaOf("protos/nested-service.proto").methods.keys()], ["outer.inner.Deep/Ping"]);
});

t.test("schema - only services of the given files are the schema's own", async (t) => {
  t.same([...schemaOf("protos/imports-service.proto").methods.keys()], ["importer.Own/Pull"]);
  const all = [...schemaOf("protos/imports-service.proto", false).methods.keys()].sort();
  t.ok(all.includes("importer.Own/Pull") && all.includes("nodebin.Control/Pull"), "without files, imported services count too");
});

t.test("schema - an unknown (nodebin.mode) is INVALID_ARGUMENT naming the file and method", async (t) => {
  for (const dir of ["unknown-mode", "unknown-mode-number"]) {
    const file = fixturePath(`components-bad/${dir}/service.proto`);
    const err = thrown(() => Schema.fromRoot(loadProtoFiles([file]), [file]));
    t.equal(err.code, "INVALID_ARGUMENT", dir);
    t.equal(err.details.file, file);
    t.match(err.details.method, /\.Greeter\/Hello$/);
    t.ok(err.message.includes(file), "the message names the file");
  }
});

t.test("schema - a streamed request, or a streamed reply in another mode, is INVALID_ARGUMENT", async (t) => {
  for (const dir of ["stream-request", "stream-wrong-mode"]) {
    const file = fixturePath(`components-bad/${dir}/service.proto`);
    const err = thrown(() => Schema.fromRoot(loadProtoFiles([file]), [file]));
    t.equal(err.code, "INVALID_ARGUMENT", dir);
    t.equal(err.details.file, file);
  }
});

t.test("schema - equal protos give equal ids, different protos different ones", async (t) => {
  const a = schemaOf("protos/modes.proto");
  const b = schemaOf("protos/modes.proto");
  const c = schemaOf("protos/nested-service.proto");
  t.match(a.id, /^[0-9a-f]{16}$/);
  t.equal(a.id, b.id);
  t.not(a.id, c.id);
});

t.test("schema - fromJSON rebuilds the same schema: id, methods, modes and types", async (t) => {
  const original = schemaOf("protos/modes.proto");
  const copy = Schema.fromJSON(original.json);
  t.equal(copy.id, original.id);
  t.equal(copy.json, original.json);
  t.same([...copy.methods.keys()].sort(), [...original.methods.keys()].sort());
  for (const [name, method] of original.methods) {
    const other = copy.methods.get(name)!;
    t.equal(other.mode, method.mode, `${name} mode`);
    t.equal(other.requestType.fullName, method.requestType.fullName);
    t.not(other.requestType, method.requestType, "types of its own root");
  }
});

t.test("schema - fromJSON refuses what is not a schema with INVALID_ARGUMENT", async (t) => {
  t.equal(thrown(() => Schema.fromJSON("{not json")).code, "INVALID_ARGUMENT");
  t.equal(thrown(() => Schema.fromJSON('{"nested": {"x": {"fields": {"a": {"type": "string"}}, "methods": 5}}}')).code, "INVALID_ARGUMENT");
});

t.test("schema - modeName names known modes and numbers unknown ones", async (t) => {
  t.same(MODE_NAMES.map((_, i) => modeName(i)), ["SYNC", "ASYNC", "STREAM", "BROADCAST"]);
  t.equal(modeName(9), "MODE_9");
});
