import t from "tap";
import { loadComponents } from "../../src/component/loader.ts";
import type { Container } from "../../src/container/container.ts";
import { rejection } from "../lib/expect-error.ts";
import { examplePath, loadFixture, startContainer } from "../lib/fixture-components.ts";

const { components: examples } = await loadComponents(examplePath(""));
const probe = await loadFixture("components-probe/probe");
const typed = await loadFixture("components-typed/typed");

let c: Container;
t.before(async () => {
  c = await startContainer([...examples, probe, typed]);
});
t.teardown(() => c.close());

t.test("call errors - an unknown service is NOT_FOUND with suggestions", async (t) => {
  const err = await rejection(c.caller.call("demo.Greter/Hello", { name: "x" }));
  t.equal(err.code, "NOT_FOUND");
  t.equal(err.details.method, "demo.Greter/Hello");
  t.equal(err.details.suggestions?.split(",")[0], "demo.Greeter/Hello");
});

t.test("call errors - an unknown method is NOT_FOUND with suggestions", async (t) => {
  const err = await rejection(c.caller.call("demo.Greeter/Helo", { name: "x" }));
  t.equal(err.code, "NOT_FOUND");
  t.equal(err.details.suggestions?.split(",")[0], "demo.Greeter/Hello", "nearest first");
  const lower = await rejection(c.caller.call("demo.Counter/get", { key: "x" }));
  t.equal(lower.details.suggestions?.split(",")[0], "demo.Counter/Get", "a case difference is nearest");
  const many = await rejection(c.caller.call("probe.Probe/Lo", {}));
  t.ok(many.details.suggestions!.split(",").length <= 3, "at most three suggestions");
});

t.test("call errors - a name nothing resembles is NOT_FOUND with no suggestions", async (t) => {
  for (const method of ["demo.Greeter/Xyzzyplugh", "zzz.Nothing/Here", "nonsense", ""]) {
    const err = await rejection(c.caller.call(method, {}));
    t.equal(err.code, "NOT_FOUND", JSON.stringify(method));
    t.equal(err.details.suggestions, "", JSON.stringify(method));
  }
});

t.test("call errors - short method names resolve when only one package has them", async (t) => {
  for (const method of ["Greeter/Hello", "Greeter.Hello", "demo.Greeter.Hello", ".demo.Greeter/Hello"]) {
    t.same(await c.caller.call(method, { name: "Ada" }), { message: "Hello, Ada!" }, method);
  }
});

t.test("call errors - a wrong field type is INVALID_ARGUMENT naming the field, before anything is sent", async (t) => {
  const cases: [unknown, string][] = [
    [{ name: 5 }, "name"],
    [{ a: { b: 5 } }, "a.b"],
    [{ xs: [1, "two", 3] }, "xs[1]"],
    [{ counts: { ok: 1, bad: "x" } }, 'counts["bad"]'],
    [{ color: "BLUE" }, "color"],
    [{ i32: 2 ** 31 }, "i32"],
    [{ i32: -(2 ** 31) - 1 }, "i32"],
    [{ u64: "-1" }, "u64"],
    [{ nmae: "typo" }, "nmae"],
  ];
  const node = c.localNodes().find((n) => n.component.name === "typed")!;
  const handled = node.getStats().handled;
  for (const [request, field] of cases) {
    const err = await rejection(c.caller.call("typed.Typed/Check", request));
    t.equal(err.code, "INVALID_ARGUMENT", field);
    t.equal(err.details.field, field, `details.field is ${field}`);
  }
  t.equal(node.getStats().handled, handled, "no request reached the node");
});

t.test("call errors - 64-bit integers as decimal strings and enums by name are accepted", async (t) => {
  const reply = (await c.caller.call("typed.Typed/Check", { i64: "-9007199254740993", u64: "18446744073709551615", color: "GREEN", i32: "-2147483648" })) as { json: string };
  t.match(JSON.parse(reply.json), { i64: "-9007199254740993", u64: "18446744073709551615", color: "GREEN", i32: -2147483648 }, "the handler got them exactly");
});

t.test("call errors - a handler throw is INTERNAL with its message; the node serves the next call", async (t) => {
  const err = await rejection(c.caller.call("demo.Greeter/Hello", { name: "" }));
  t.equal(err.code, "INTERNAL");
  t.equal(err.message, "name is required");
  t.match(err.origin, /^greeter-/, "origin is the node");
  t.same(await c.caller.call("demo.Greeter/Hello", { name: "Ada", language: "fr" }), { message: "Bonjour, Ada!" });
});

t.test("call errors - a NodeBinError thrown by a handler reaches the caller with its code and details", async (t) => {
  const err = await rejection(c.caller.call("probe.Probe/Fail", { message: "go away", code: "PERMISSION_DENIED" }));
  t.equal(err.code, "PERMISSION_DENIED");
  t.equal(err.message, "go away");
  t.same(err.details, { reason: "asked" });
  t.match(err.origin, /^probe-/);
});

t.test("call errors - a handler's invalid reply is INTERNAL, not the caller's INVALID_ARGUMENT", async (t) => {
  const err = await rejection(c.caller.call("probe.Probe/BadReply", {}));
  t.equal(err.code, "INTERNAL");
  t.equal(err.details.field, "text");
});

t.test("call errors - an error from a nested call reaches the outer caller through the handler", async (t) => {
  // probe.Probe/Nested sends {text}, a field demo.HelloRequest does not have.
  const err = await rejection(c.caller.call("probe.Probe/Nested", { method: "demo.Greeter/Hello", text: "x" }));
  t.equal(err.code, "INVALID_ARGUMENT", "the nested call's error keeps its code");
  t.equal(err.details.field, "text");
  t.match(err.origin, /^probe-/, "raised in the probe node, where the nested call was made");
  const missing = await rejection(c.caller.call("probe.Probe/Nested", { method: "demo.Nope/Nothing" }));
  t.equal(missing.code, "NOT_FOUND");
});
