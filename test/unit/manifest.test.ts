import t from "tap";
import { DEFAULT_LIMITS, resolveManifest, type ManifestSources } from "../../src/component/manifest.ts";
import { thrown } from "../lib/expect-error.ts";

const MODULE = "/components/greeter/index.ts";

function resolve(exported: unknown, more: Partial<ManifestSources> = {}) {
  return resolveManifest({ dirName: "greeter", protoFiles: ["greeter.proto"], exported, moduleFile: MODULE, ...more });
}

t.test("manifest - defaults come from the directory", async (t) => {
  const m = resolve(undefined);
  t.same(m, { name: "greeter", version: "0.0.0", proto: ["greeter.proto"], limits: DEFAULT_LIMITS });
  t.notOk("services" in m, "no services filter unless given");
  t.not(m.limits, DEFAULT_LIMITS, "limits are a copy");
  t.same(resolve(null).name, "greeter", "a null manifest is no manifest");
});

t.test("manifest - package.json gives name (without its scope) and version", async (t) => {
  const m = resolve(undefined, { packageJson: { name: "@acme/greeter-pkg", version: "1.2.3" } });
  t.equal(m.name, "greeter-pkg");
  t.equal(m.version, "1.2.3");
  t.equal(resolve(undefined, { packageJson: { name: 5, version: {} } }).name, "greeter", "non-string package.json fields are ignored");
});

t.test("manifest - the exported manifest wins over package.json and the directory", async (t) => {
  const m = resolve({ name: "hello", version: "9.0.0", proto: "api/hello.proto", services: ["demo.Greeter"] }, { packageJson: { name: "pkg", version: "1.0.0" } });
  t.equal(m.name, "hello");
  t.equal(m.version, "9.0.0");
  t.same(m.proto, ["api/hello.proto"], "a single proto string becomes a list");
  t.same(m.services, ["demo.Greeter"]);
});

t.test("manifest - limits merge over the defaults and leave DEFAULT_LIMITS alone", async (t) => {
  const before = { ...DEFAULT_LIMITS };
  const m = resolve({ limits: { queue: 3, max: 4 } });
  t.same(m.limits, { ...before, queue: 3, max: 4 });
  t.same(DEFAULT_LIMITS, before);
  t.same(resolve({ limits: { min: 0 } }).limits.min, 0, "zero nodes minimum is allowed");
});

t.test("manifest - bad field types are INVALID_ARGUMENT naming the module file", async (t) => {
  const cases: [string, unknown, Partial<ManifestSources>?][] = [
    ["manifest not an object", "greeter"],
    ["name a number", { name: 42 }],
    ["name empty", { name: "" }],
    ["name with spaces", { name: "my greeter" }],
    ["name starting with a dot", { name: ".hidden" }],
    ["package.json name invalid", undefined, { packageJson: { name: "@acme/bad name" } }],
    ["directory name invalid", undefined, { dirName: "has space" }],
    ["version a number", { version: 1 }],
    ["proto a number", { proto: 5 }],
    ["proto list of numbers", { proto: [1, 2] }],
    ["services a string", { services: "demo.Greeter" }],
    ["limits null", { limits: null }],
    ["limits a number", { limits: 5 }],
    ["unknown limit", { limits: { queues: 5 } }],
    ["queue a string", { limits: { queue: "lots" } }],
    ["queue negative", { limits: { queue: -1 } }],
    ["queue fractional", { limits: { queue: 1.5 } }],
    ["queue zero", { limits: { queue: 0 } }],
    ["max below min", { limits: { min: 5, max: 2 } }],
  ];
  for (const [what, exported, more] of cases) {
    const err = thrown(() => resolve(exported, more));
    t.equal(err.code, "INVALID_ARGUMENT", what);
    t.equal(err.details.file, MODULE, `${what}: names the file`);
    t.ok(err.message.includes(MODULE), `${what}: the message names the file`);
  }
});
