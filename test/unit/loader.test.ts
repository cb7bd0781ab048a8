import { readdirSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { loadComponent, loadComponents, type Component } from "../../src/component/loader.ts";
import { DEFAULT_LIMITS } from "../../src/component/manifest.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { Mode } from "../../src/wire/schema.ts";
import { rejection } from "../lib/expect-error.ts";
import { fixturePath, loadFixture } from "../lib/fixture-components.ts";

const handler = (c: Component, method: string) => {
  const fn = c.handlers.get(method);
  if (!fn) throw new Error(`${c.name} has no handler for ${method}`);
  return fn;
};

t.test("loader - the example components load: .ts and .js, modes, manifest exports", async (t) => {
  const { components, errors } = await loadComponents("examples/components");
  t.same(errors, []);
  const byName = new Map(components.map((c) => [c.name, c]));
  t.same([...byName.keys()], ["board", "counter", "greeter", "ticker", "welcome"], "sorted by directory");
  const greeter = byName.get("greeter")!;
  t.equal(greeter.schema.methods.get("demo.Greeter/Sign")?.mode, Mode.ASYNC);
  t.equal(greeter.schema.methods.get("demo.Greeter/Hello")?.mode, Mode.SYNC);
  t.same([...greeter.handlers.keys()].sort(), ["demo.Greeter/Guests", "demo.Greeter/Hello", "demo.Greeter/Sign"]);
  const counter = byName.get("counter")!;
  t.equal(counter.manifest.version, "1.0.0");
  t.equal(counter.manifest.limits.queue, 500);
  t.equal(typeof counter.hooks.exportState, "function");
  t.equal(typeof counter.hooks.importState, "function");
  t.equal(greeter.manifest.version, "0.0.0", "no manifest: default version");
});

t.test("loader - .ts, .js and .mjs modules all load", async (t) => {
  const { components, errors } = await loadComponents(fixturePath("components-probe"));
  t.same(errors, []);
  t.same(
    components.map((c) => c.name),
    ["mirror", "probe", "ring-a", "ring-b"],
  );
  const probe = components.find((c) => c.name === "probe")!;
  t.equal(probe.manifest.version, "1.2.3");
  t.equal(probe.manifest.limits.queue, 50);
  t.equal(probe.dir, fixturePath("components-probe/probe"), "dir is absolute");
  t.equal(typeof probe.hooks.init, "function");
  t.equal(typeof probe.hooks.shutdown, "function");
  t.notOk(probe.hooks.exportState, "hooks not exported stay absent");
});

t.test("loader - handler forms: named exports, a handlers object, a nested default export, CommonJS", async (t) => {
  const forms: [string, string, string][] = [
    ["named-ts", "namedts", "forms-named"],
    ["handlers-object", "handlersobject", "handlers-object"],
    ["default-nested", "defaultnested", "default-nested"],
    ["cjs", "cjs", "cjs"],
    ["package-json", "packagejson", "forms-from-package"],
  ];
  for (const [dir, pkg, name] of forms) {
    const c = await loadFixture(`components-forms/${dir}`);
    t.equal(c.name, name, `${dir}: name`);
    t.same([...c.handlers.keys()].sort(), [`${pkg}.Forms/Note`, `${pkg}.Forms/Ping`], `${dir}: one handler per method`);
    t.same(await handler(c, `${pkg}.Forms/Ping`)({ text: "hi" }, {} as never), { text: "hi", form: dir }, `${dir}: the right function is bound`);
  }
});

t.test("loader - constants beside named handler exports are ignored; manifest is not a handler", async (t) => {
  const c = await loadFixture("components-forms/named-ts");
  t.equal(c.manifest.version, "0.1.0");
  t.equal(c.handlers.size, 2);
  t.equal(typeof c.hooks.init, "function");
});

t.test("loader - hooks are picked up beside a handlers object and inside a default export", async (t) => {
  const object = await loadFixture("components-forms/handlers-object");
  t.same(Object.keys(object.hooks).sort(), ["exportState", "init"]);
  const state: Record<string, unknown> = {};
  await object.hooks.init!({ state } as never);
  t.same(state, { started: true }, "it is the module's init");
  const nested = await loadFixture("components-forms/default-nested");
  t.same(Object.keys(nested.hooks), ["shutdown"]);
});

t.test("loader - package.json gives name and version", async (t) => {
  const c = await loadFixture("components-forms/package-json");
  t.equal(c.name, "forms-from-package");
  t.equal(c.manifest.version, "2.3.4");
  t.same(c.manifest.limits, DEFAULT_LIMITS);
});

t.test("loader - 'Service.Method' and 'package.Service.Method' keys bind methods of the same name apart", async (t) => {
  const c = await loadFixture("components-forms/two-services");
  t.same(await handler(c, "two.Left/Ping")({ text: "x" }, {} as never), { text: "left x" });
  t.same(await handler(c, "two.Right/Ping")({ text: "x" }, {} as never), { text: "right x" });
});

t.test("loader - manifest.services serves only the services named", async (t) => {
  const c = await loadFixture("components-forms/services-filter");
  t.same([...c.handlers.keys()], ["filtered.Served/Ping"]);
  t.same(c.manifest.services, ["filtered.Served"]);
});

t.test("loader - manifest.proto names the .proto files; others in the directory are not read", async (t) => {
  const c = await loadFixture("components-forms/manifest-proto");
  t.same(c.manifest.proto, ["protos/chosen.proto"]);
  t.same([...c.schema.methods.keys()], ["chosen.Chosen/Ping"]);
  t.equal(c.schema.methods.get("chosen.Chosen/Ping")?.requestType.fullName, ".shared.Msg", "its import resolved through the component directory");
});

/** [fixture dir, the file the error must name (relative to the dir; "" for the dir itself), what the message must also say]. */
const BAD: [string, string, RegExp?][] = [
  ["no-proto", ""],
  ["manifest-missing-proto", "missing.proto"],
  ["unparsable-proto", "broken.proto"],
  ["unknown-type", "service.proto", /Nowhere/],
  ["missing-import", "nowhere/gone.proto"],
  ["method-without-handler", "index.mjs", /Goodbye/],
  ["handler-without-method", "index.mjs", /Helo.*did you mean Hello\?/],
  ["unknown-mode", "service.proto", /FANCY/],
  ["unknown-mode-number", "service.proto"],
  ["stream-request", "service.proto"],
  ["stream-wrong-mode", "service.proto"],
  ["no-index", ""],
  ["index-throws", "index.mjs", /refuses to load/],
  ["invalid-package-json", "package.json"],
  ["package-json-not-object", "package.json"],
  ["manifest-bad-name", "index.mjs"],
  ["manifest-bad-limits", "index.mjs", /limits\.queue/],
  ["manifest-bad-proto", "index.mjs", /proto/],
  ["manifest-not-object", "index.mjs"],
  ["manifest-unknown-service", "index.mjs", /mus\.Nope/],
  ["hook-not-function", "index.mjs", /init/],
  ["handler-not-function", "index.mjs", /Hello/],
  ["ambiguous-handler", "index.mjs", /ambiguous/],
  ["no-service", "messages.proto"],
];

t.test("loader - every fixture in components-bad is covered by a case", async (t) => {
  const dirs = readdirSync(fixturePath("components-bad")).sort();
  t.same(dirs, BAD.map(([dir]) => dir).sort());
});

for (const [dir, file, also] of BAD) {
  t.test(`loader - ${dir} is INVALID_ARGUMENT naming the file`, async (t) => {
    const base = fixturePath(`components-bad/${dir}`);
    const expected = file ? join(base, file) : base;
    const err = await rejection(loadComponent(base));
    t.equal(err.code, "INVALID_ARGUMENT");
    t.equal(err.details.file, expected, "details.file");
    t.ok(err.message.includes(expected), `the message names ${expected}`);
    if (also) t.match(err.message, also);
  });
}

t.test("loader - loadComponents puts each bad directory in errors and does not throw", async (t) => {
  const { components, errors } = await loadComponents(fixturePath("components-bad"));
  t.same(components, []);
  t.equal(errors.length, BAD.length);
  for (const err of errors) {
    t.ok(err instanceof NodeBinError);
    t.equal(err.code, "INVALID_ARGUMENT");
    t.ok(err.details.file?.startsWith(fixturePath("components-bad/")), `${err.details.file} is inside components-bad`);
  }
});

t.test("loader - a duplicate component name is ALREADY_EXISTS; the others still load", async (t) => {
  const { components, errors } = await loadComponents(fixturePath("components-dup"));
  t.same(
    components.map((c) => [c.name, c.dir]),
    [
      ["dup", fixturePath("components-dup/alpha")],
      ["gamma", fixturePath("components-dup/gamma")],
    ],
  );
  t.equal(errors.length, 1, "only beta fails: _private, .hidden and directories without a component are skipped");
  t.equal(errors[0]?.code, "ALREADY_EXISTS");
  t.equal(errors[0]?.details.file, fixturePath("components-dup/beta"));
  t.ok(errors[0]?.message.includes(fixturePath("components-dup/alpha")), "the message names the component holding the name");
});

t.test("loader - a components directory that does not exist is NOT_FOUND", async (t) => {
  const missing = fixturePath("no-such-components-dir");
  const err = await rejection(loadComponents(missing));
  t.equal(err.code, "NOT_FOUND");
  t.equal(err.details.file, missing);
  const notADir = await rejection(loadComponents(fixturePath("components-dup/notes.txt")));
  t.equal(notADir.code, "NOT_FOUND", "a file is not a components directory");
});

t.test("loader - loadComponent on a missing directory, or a file, is NOT_FOUND naming it", async (t) => {
  for (const path of [fixturePath("no-such-component"), fixturePath("protos/types.proto")]) {
    const err = await rejection(loadComponent(path));
    t.equal(err.code, "NOT_FOUND", path);
    t.equal(err.details.file, path);
  }
});
