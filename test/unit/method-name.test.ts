import t from "tap";
import { resolveMethodName } from "../../src/routing/method-name.ts";
import { thrown } from "../lib/expect-error.ts";

const KNOWN = ["demo.Greeter/Hello", "demo.Greeter/Sign", "demo.Counter/Add", "demo.Counter/Get", "other.Greeter/Hello", "solo.Unique/Ping"];

t.test("method name - full names resolve as they are", async (t) => {
  for (const name of KNOWN) t.equal(resolveMethodName(name, KNOWN), name);
});

t.test("method name - dotted, leading-dot and package-less forms resolve", async (t) => {
  t.equal(resolveMethodName("demo.Counter.Add", KNOWN), "demo.Counter/Add");
  t.equal(resolveMethodName(".demo.Counter/Add", KNOWN), "demo.Counter/Add");
  t.equal(resolveMethodName("  demo.Counter/Add  ", KNOWN), "demo.Counter/Add", "surrounding spaces are ignored");
  t.equal(resolveMethodName("Counter/Add", KNOWN), "demo.Counter/Add");
  t.equal(resolveMethodName("Counter.Add", KNOWN), "demo.Counter/Add");
  t.equal(resolveMethodName("Unique.Ping", KNOWN), "solo.Unique/Ping");
});

t.test("method name - a package-less name two packages share is NOT_FOUND listing both", async (t) => {
  const err = thrown(() => resolveMethodName("Greeter/Hello", KNOWN));
  t.equal(err.code, "NOT_FOUND");
  t.equal(err.details.method, "Greeter/Hello");
  t.same(err.details.suggestions?.split(",").sort(), ["demo.Greeter/Hello", "other.Greeter/Hello"]);
});

t.test("method name - a typo is NOT_FOUND with the nearest names first, at most three", async (t) => {
  const err = thrown(() => resolveMethodName("demo.Counter/Ad", KNOWN));
  t.equal(err.code, "NOT_FOUND");
  const suggestions = err.details.suggestions!.split(",");
  t.equal(suggestions[0], "demo.Counter/Add");
  t.ok(suggestions.length <= 3);
  t.equal(thrown(() => resolveMethodName("dmeo.Greeter/Sing", KNOWN)).details.suggestions?.split(",")[0], "demo.Greeter/Sign");
  t.equal(thrown(() => resolveMethodName("Counter/Ad", KNOWN)).details.suggestions?.split(",")[0], "demo.Counter/Add", "typos in package-less names too");
});

t.test("method name - a name with no likely match is NOT_FOUND without suggestions", async (t) => {
  for (const asked of ["zzz.Qqq/Xxxxxxxx", "Qwerty", "", "a b/c"]) {
    const err = thrown(() => resolveMethodName(asked, KNOWN));
    t.equal(err.code, "NOT_FOUND", JSON.stringify(asked));
    t.equal(err.details.method, asked);
    t.equal(err.details.suggestions, "", `${JSON.stringify(asked)}: no suggestions`);
  }
});

t.test("method name - a service without a method name suggests that service's methods", async (t) => {
  for (const asked of ["demo.Greeter/", "demo.Greeter", "Greeter"]) {
    const err = thrown(() => resolveMethodName(asked, KNOWN));
    t.equal(err.code, "NOT_FOUND", asked);
    t.ok(err.details.suggestions, `${asked}: some suggestions`);
    for (const s of err.details.suggestions!.split(",")) t.match(s, /^demo\.Greeter\//);
  }
});

t.test("method name - a bare method name, or a typo of one, suggests the full names", async (t) => {
  for (const asked of ["Hello", "Helo"]) {
    const err = thrown(() => resolveMethodName(asked, KNOWN));
    t.equal(err.code, "NOT_FOUND", asked);
    t.match(err.details.suggestions, /demo\.Greeter\/Hello/, asked);
  }
});

t.test("method name - suggestions are typos, not guesses: a misspelt method suggests only near names", async (t) => {
  const err = thrown(() => resolveMethodName("demo.Greeter/Helo", ["demo.Greeter/Hello", "demo.Greeter/Sign"]));
  t.equal(err.details.suggestions, "demo.Greeter/Hello");
});

t.test("method name - with nothing known, every name is NOT_FOUND", async (t) => {
  const err = thrown(() => resolveMethodName("demo.Greeter/Hello", []));
  t.equal(err.code, "NOT_FOUND");
  t.equal(err.details.suggestions, "");
});
