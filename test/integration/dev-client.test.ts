// node-bin dev as a real child process, driven by `node-bin client` as a user would.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { EXAMPLES, privateRuntime, runCli, startDev, type DevProcess } from "../lib/processes.ts";
import { sideBySide } from "../lib/side-by-side.ts";

/** Writes a components directory of the given files ({"shout/shout.proto": "..."}), removed at teardown. */
function componentsDir(tt: { teardown(fn: () => unknown): void }, files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-components-"));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, ".."), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

const SHOUT = {
  "shout/shout.proto": `syntax = "proto3";
package acme;
import "nodebin/options.proto";
service Shouter {
  rpc Shout (Words) returns (Words);
  rpc Slow (Pause) returns (nodebin.Empty);
}
message Words { string text = 1; repeated string tags = 2; }
message Pause { int32 ms = 1; }
`,
  "shout/index.ts": `interface Words { text: string; tags: string[] }
export function Shout(request: Words): Words {
  return { text: request.text.toUpperCase() + "!", tags: [...request.tags, "shouted"] };
}
export async function Slow(request: { ms: number }, ctx: { log: { warn(m: string): void } }): Promise<void> {
  ctx.log.warn(\`slow: waiting \${request.ms} ms\`);
  await new Promise((resolve) => setTimeout(resolve, request.ms));
}
`,
};

/**
 * One `node-bin dev` of the examples shared by the tests that only read from it (no state they
 * check is written by another of them, none stops it): started by the first that asks, stopped
 * at the file's end.
 */
let examples: Promise<{ dev: DevProcess; env: Record<string, string> }> | undefined;
const examplesDev = () =>
  (examples ??= (async () => {
    const env = privateRuntime(t);
    return { dev: await startDev(t, ["--components", EXAMPLES], env), env };
  })());

const errorOf = (stderr: string) => (JSON.parse(stderr.trim().split("\n").pop()!) as { error: { code: string; details: Record<string, string> } }).error;

t.test("dev - serves the examples; client call prints the reply as JSON", async (t) => {
  const { env } = await examplesDev();
  const hello = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":"Ada"}'], env);
  t.equal(hello.code, 0, hello.stderr);
  t.same(JSON.parse(hello.stdout), { message: "Hello, Ada!" });

  // Other spellings of the method name, and --json's one-line output.
  const french = await runCli(["client", "call", "Greeter.Hello", '{"name":"Ada","language":"fr"}', "--json"], env);
  t.equal(french.code, 0, french.stderr);
  t.equal(french.stdout.trim().split("\n").length, 1);
  t.same(JSON.parse(french.stdout), { message: "Bonjour, Ada!" });
});

t.test("dev - nested calls carry metadata; ASYNC send is accepted and then handled", async (t) => {
  const env = privateRuntime(t);
  await startDev(t, ["--components", EXAMPLES], env);
  const first = await runCli(["client", "call", "demo.Welcome/Visit", '{"name":"Bob"}', "--meta", "via=cli", "--json"], env);
  t.equal(first.code, 0, first.stderr);
  t.same(JSON.parse(first.stdout), { greeting: "Hello, Bob!", visitor: "1", via: "cli" });
  const second = await runCli(["client", "call", "demo.Welcome/Visit", '{"name":"Cy"}', "--json"], env);
  t.equal(JSON.parse(second.stdout).visitor, "2", "the counter kept its state between messages");

  const sent = await runCli(["client", "send", "demo.Greeter/Sign", '{"name":"Dee"}', "--json"], env);
  t.equal(sent.code, 0, sent.stderr);
  t.same(JSON.parse(sent.stdout), { accepted: true });
  // One node handles one message at a time, in order: Guests runs after Sign.
  const guests = await runCli(["client", "call", "demo.Greeter/Guests", "--json"], env);
  t.same(JSON.parse(guests.stdout).names, ["Bob", "Cy", "Dee"]);
});

t.test("dev - every bad input gets a coded error and a matching exit status; dev keeps serving", async (t) => {
  const { dev, env } = await examplesDev();
  const cases: { name: string; args: string[]; code: string; exit: number; field?: string; input?: string }[] = [
    { name: "unknown method", args: ["call", "demo.Greeter/Helo", "{}"], code: "NOT_FOUND", exit: 5 },
    { name: "unknown service", args: ["call", "demo.Nope/Hello", "{}"], code: "NOT_FOUND", exit: 5 },
    { name: "wrong field type", args: ["call", "demo.Greeter/Hello", '{"name":5}'], code: "INVALID_ARGUMENT", exit: 3, field: "name" },
    { name: "unknown field", args: ["call", "demo.Greeter/Hello", '{"nmae":"x"}'], code: "INVALID_ARGUMENT", exit: 3, field: "nmae" },
    { name: "int32 out of range", args: ["call", "demo.Counter/Add", '{"key":"k","by":99999999999}'], code: "INVALID_ARGUMENT", exit: 3, field: "by" },
    { name: "invalid JSON", args: ["call", "demo.Greeter/Hello", "{name"], code: "INVALID_ARGUMENT", exit: 3 },
    { name: "JSON that is not an object", args: ["call", "demo.Greeter/Hello", "[1]"], code: "INVALID_ARGUMENT", exit: 3 },
    { name: "call on an ASYNC method", args: ["call", "demo.Greeter/Sign", '{"name":"x"}'], code: "INVALID_ARGUMENT", exit: 3 },
    { name: "send to a SYNC method", args: ["send", "demo.Greeter/Hello", '{"name":"x"}'], code: "INVALID_ARGUMENT", exit: 3 },
    { name: "handler that throws", args: ["call", "demo.Greeter/Hello", "{}"], code: "INTERNAL", exit: 13 },
    { name: "request from stdin", args: ["call", "demo.Greeter/Hello", "-"], code: "INVALID_ARGUMENT", exit: 3, input: '{"name": true}', field: "name" },
  ];
  const runs = await sideBySide(cases, (c) => runCli(["client", ...c.args, "--json"], env, c.input === undefined ? { timeoutMs: 60_000 } : { input: c.input, timeoutMs: 60_000 }));
  for (const [i, c] of cases.entries()) {
    const r = runs[i]!;
    t.equal(r.code, c.exit, `${c.name}: exit status`);
    const error = errorOf(r.stderr);
    t.equal(error.code, c.code, `${c.name}: code`);
    if (c.field) t.equal(error.details.field, c.field, `${c.name}: names the field`);
  }
  const [unknown, usage] = await Promise.all([runCli(["client", "call", "demo.Greeter/Helo", "{}", "--json"], env, { timeoutMs: 60_000 }), runCli(["client", "call", "demo.Greeter/Hello", "--timeout", "soon"], env, { timeoutMs: 60_000 })]);
  t.match(errorOf(unknown.stderr).details.suggestions, /demo\.Greeter\/Hello/, "NOT_FOUND lists close matches");

  t.equal(usage.code, 64, "a usage error exits 64");

  const still = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":"Eve"}', "--json"], env);
  t.equal(still.code, 0, "dev keeps serving after all that");
  t.same(JSON.parse(still.stdout), { message: "Hello, Eve!" });
  t.equal(dev.child.exitCode, null, "dev is still running");
});

t.test("client - list shows services, methods, modes and request fields; nodes shows every node", async (t) => {
  const { dev, env } = await examplesDev();
  const [list, human, nodes] = await Promise.all([runCli(["client", "list", "--json"], env, { timeoutMs: 60_000 }), runCli(["client", "list"], env, { timeoutMs: 60_000 }), runCli(["client", "nodes", "--json"], env, { timeoutMs: 60_000 })]);
  t.equal(list.code, 0, list.stderr);
  const services = JSON.parse(list.stdout) as { name: string; nodes: number; methods: { name: string; mode: string; requestFields: { name: string; type: string }[] }[] }[];
  t.same(services.map((s) => s.name), ["demo.Board", "demo.Counter", "demo.Greeter", "demo.Ticker", "demo.Welcome"]);
  const greeter = services.find((s) => s.name === "demo.Greeter")!;
  t.same(greeter.methods.map((m) => [m.name, m.mode]), [["Guests", "SYNC"], ["Hello", "SYNC"], ["Sign", "ASYNC"]]);
  t.same(greeter.methods.find((m) => m.name === "Hello")!.requestFields.map((f) => [f.name, f.type]), [["name", "string"], ["language", "string"]]);

  const ticker = services.find((s) => s.name === "demo.Ticker")!;
  t.same(ticker.methods.map((m) => [m.name, m.mode]), [["Count", "STREAM"], ["Stats", "SYNC"]]);

  t.match(human.stdout, /Sign\s+ASYNC/);
  t.match(human.stdout, /Count\s+STREAM/);
  t.match(human.stdout, /Post\s+BROADCAST/);

  const entries = JSON.parse(nodes.stdout) as { component: string; endpoints: string[] }[];
  t.same(entries.map((n) => n.component).sort(), ["board", "counter", "greeter", "ticker", "welcome"]);
  t.ok(entries.every((n) => n.endpoints[0] === dev.endpoint), "every node is reached at dev's endpoint");
});

t.test("dev - a component a new user writes is picked up without touching the runtime", async (t) => {
  const env = privateRuntime(t);
  const dir = componentsDir(t, SHOUT);
  const dev = await startDev(t, ["--components", dir], env);
  const r = await runCli(["client", "call", "acme.Shouter/Shout", '{"text":"hey","tags":["a"]}', "--json"], env);
  t.equal(r.code, 0, r.stderr);
  t.same(JSON.parse(r.stdout), { text: "HEY!", tags: ["a", "shouted"] });

  // A deadline shorter than the handler: DEADLINE_EXCEEDED, well before the handler is done.
  // Timed from the handler's start (its log line) where dev printed it before the caller ended: the
  // client's own start-up (seconds on a loaded machine) is not what is measured; else from the spawn.
  let from = Date.now();
  const running = runCli(["client", "call", "acme.Shouter/Slow", '{"ms":3000}', "--timeout", "300", "--json"], env);
  let ended = false;
  void dev.waitForStderr(/slow: waiting 3000 ms/, 10_000).then(
    () => void (ended || (from = Date.now())),
    () => {},
  );
  const slow = await running;
  ended = true;
  t.equal(slow.code, 4, slow.stderr);
  t.equal(errorOf(slow.stderr).code, "DEADLINE_EXCEEDED");
  t.ok(Date.now() - from < 2900, `the caller did not wait for the slow handler (${Date.now() - from} ms after it started)`);
});

t.test("dev - a broken component is reported by file and problem; the others serve", async (t) => {
  const env = privateRuntime(t);
  const dir = componentsDir(t, {
    "good/good.proto": `syntax = "proto3";\npackage ok;\nservice Good { rpc Ping (P) returns (P); }\nmessage P { string s = 1; }\n`,
    "good/index.js": `export const Ping = (p) => p;\n`,
    "broken/broken.proto": `syntax = "proto3";\npackage bad;\nservice Broken { rpc Go (M) returns (M); rpc Stop (M) returns (M); }\nmessage M {}\n`,
    "broken/index.js": `export function Go() { return {}; }\n`,
  });
  const dev = await startDev(t, ["--components", dir], env);
  t.match(dev.stderr(), /broken[\\/]index\.js.*Stop/, "the error names the module and the method without a handler");
  const r = await runCli(["client", "call", "ok.Good/Ping", '{"s":"x"}', "--json"], env);
  t.same(JSON.parse(r.stdout), { s: "x" });
  const missing = await runCli(["client", "call", "bad.Broken/Go", "{}", "--json"], env);
  t.equal(errorOf(missing.stderr).code, "NOT_FOUND");
});

t.test("client - with no dev running: UNAVAILABLE at once, not at the deadline", async (t) => {
  const env = privateRuntime(t);
  const badJson = await runCli(["client", "call", "demo.Greeter/Hello", "{oops", "--json"], env);
  t.equal(errorOf(badJson.stderr).code, "INVALID_ARGUMENT", "the request is checked before connecting");
  const started = Date.now();
  const r = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":"x"}', "--json"], env);
  t.equal(r.code, 14);
  t.equal(errorOf(r.stderr).code, "UNAVAILABLE");
  t.ok(Date.now() - started < 5000, "did not wait for a timeout");
});

t.test("dev - refuses a second dev at the same endpoint; SIGTERM exits 0 and cleans up", async (t) => {
  const env = privateRuntime(t);
  const dev = await startDev(t, ["--components", EXAMPLES], env);
  const second = await runCli(["dev", "--components", EXAMPLES], env);
  t.equal(second.code, 6, "ALREADY_EXISTS");
  t.match(second.stderr, /ALREADY_EXISTS/);
  t.equal(await dev.stop(), 0, "graceful exit");
  t.notOk(existsSync(join(env.NODEBIN_RUNTIME_DIR!, "dev.sock.pid")), "owner file removed");
  t.notOk(existsSync(join(env.NODEBIN_RUNTIME_DIR!, "dev.sock")), "socket removed");
});

t.test("dev - an explicit ipc endpoint is guarded too: no second dev steals it; a stale one fails at once", async (t) => {
  const env = privateRuntime(t);
  const endpoint = `ipc://${join(env.NODEBIN_RUNTIME_DIR!, "mine.sock")}`;
  const dev = await startDev(t, ["--components", EXAMPLES, "--endpoint", endpoint], env);
  const second = await runCli(["dev", "--components", EXAMPLES, "--endpoint", endpoint], env);
  t.equal(second.code, 6, "ALREADY_EXISTS");
  const ok = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":"x"}', "--endpoint", endpoint, "--json"], env);
  t.equal(ok.code, 0, "the first dev still serves its socket");
  dev.child.kill("SIGKILL");
  await dev.stop();
  t.ok(existsSync(join(env.NODEBIN_RUNTIME_DIR!, "mine.sock")), "a killed dev leaves its socket behind");
  const started = Date.now();
  const stale = await runCli(["client", "list", "--endpoint", endpoint, "--json"], env);
  t.equal(stale.code, 14, "UNAVAILABLE");
  t.ok(Date.now() - started < 4000, "at once, not after the connect timeout");
});

t.test("dev - serves at an explicit tcp endpoint too", async (t) => {
  const env = privateRuntime(t);
  const dev = await startDev(t, ["--components", EXAMPLES, "--endpoint", "tcp://127.0.0.1:0"], env);
  t.match(dev.endpoint, /^tcp:\/\/127\.0\.0\.1:\d+$/, "port 0 resolved to the bound port");
  const r = await runCli(["client", "call", "demo.Counter/Add", '{"key":"a","by":2}', "--endpoint", dev.endpoint, "--json"], env);
  t.equal(r.code, 0, r.stderr);
  t.same(JSON.parse(r.stdout), { key: "a", count: "2" });
});

t.test("client - dev killed mid-call: UNAVAILABLE at once, not at the deadline", async (t) => {
  const env = privateRuntime(t);
  const dev = await startDev(t, ["--components", componentsDir(t, SHOUT)], env);
  const started = Date.now();
  const call = runCli(["client", "call", "acme.Shouter/Slow", '{"ms":20000}', "--timeout", "25000", "--json"], env);
  await dev.waitForStderr(/slow: waiting 20000 ms/);
  dev.child.kill("SIGKILL");
  const r = await call;
  t.equal(r.code, 14, r.stderr);
  t.equal(errorOf(r.stderr).code, "UNAVAILABLE");
  t.ok(Date.now() - started < 15_000, "failed well before its 25 s deadline");
});

