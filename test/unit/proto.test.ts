import { join } from "node:path";
import t from "tap";
import { NODEBIN_PROTO_DIR, loadNodebinProtos, loadProtoFiles } from "../../src/wire/proto.ts";
import { thrown } from "../lib/expect-error.ts";
import { fixturePath } from "../lib/fixture-components.ts";

t.test("proto - a file importing nodebin/options.proto resolves it from the project's proto dir", async (t) => {
  const root = loadProtoFiles([fixturePath("protos/modes.proto")]);
  t.ok(root.lookupService("modes.Modes"));
  t.ok(root.lookupType("nodebin.Empty"), "the imported file's types are in the root");
  t.ok(root.lookupType("google.protobuf.MethodOptions"), "descriptor.proto came from protobufjs's bundled JSON");
});

t.test("proto - well-known google/protobuf imports need no file on disk", async (t) => {
  const root = loadProtoFiles([fixturePath("protos/uses-google.proto")]);
  t.equal(root.lookupType("usesgoogle.Stamped").fields.at!.resolvedType?.fullName, ".google.protobuf.Timestamp");
});

t.test("proto - a missing file is INVALID_ARGUMENT naming it", async (t) => {
  const file = fixturePath("protos/does-not-exist.proto");
  const err = thrown(() => loadProtoFiles([file]));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.equal(err.details.file, file);
  t.ok(err.message.includes(file), "the message names the file");
});

t.test("proto - an unparsable file is INVALID_ARGUMENT naming it", async (t) => {
  const file = fixturePath("protos/broken.proto");
  const err = thrown(() => loadProtoFiles([file]));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.equal(err.details.file, file);
  t.ok(err.message.includes("broken.proto"), "the message names the file");
  t.match(err.message, /line \d+/, "and the line");
});

t.test("proto - a reference to an unknown type is INVALID_ARGUMENT naming the file", async (t) => {
  const file = fixturePath("protos/unknown-type.proto");
  const err = thrown(() => loadProtoFiles([file]));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.ok(err.details.file?.includes(file), "details.file names it");
  t.ok(err.message.includes(file), "the message names the file");
  t.match(err.message, /Missing/, "and the missing type");
});

t.test("proto - an import that resolves nowhere is INVALID_ARGUMENT naming the missing import", async (t) => {
  const file = fixturePath("components-bad/missing-import/service.proto");
  const err = thrown(() => loadProtoFiles([file]));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.match(err.details.file, /nowhere[/\\]gone\.proto$/);
  t.ok(err.message.includes("gone.proto"));
});

t.test("proto - imports are searched in the importing file's directory, then importDirs", async (t) => {
  const dir = fixturePath("components-forms/manifest-proto");
  const file = join(dir, "protos", "chosen.proto");
  const err = thrown(() => loadProtoFiles([file]));
  t.equal(err.code, "INVALID_ARGUMENT", "protos/shared.proto is not beside protos/chosen.proto");
  const root = loadProtoFiles([file], { importDirs: [dir] });
  t.ok(root.lookupType("shared.Msg"), "found through importDirs");
});

t.test("proto - loadProtoFiles gives a fresh root for each load", async (t) => {
  const file = fixturePath("protos/modes.proto");
  const a = loadProtoFiles([file]);
  const b = loadProtoFiles([file]);
  t.not(a, b);
  t.not(a.lookupType("nodebin.Empty"), b.lookupType("nodebin.Empty"));
});

t.test("proto - loadNodebinProtos holds the envelope, control and option types", async (t) => {
  const root = loadNodebinProtos();
  for (const name of ["nodebin.Envelope", "nodebin.Error", "nodebin.MembershipPullReply", "nodebin.NodeEntry", "nodebin.Empty"]) t.ok(root.lookupType(name), name);
  t.ok(root.lookupService("nodebin.Control"));
  t.ok(root.lookupEnum("nodebin.Mode"));
  t.match(NODEBIN_PROTO_DIR, /proto[/\\]$/);
});
