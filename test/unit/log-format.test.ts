// The json log format: one JSON object per line (time, level, source, msg and
// the fields), escaped so that no peer-chosen string can forge a line; the
// --log-format flag and NODEBIN_LOG_FORMAT; error reports as log lines; the
// per-message hooks' lines in it; the governor's logging plugin's option.
import t from "tap";
import { loggingHooks, type MessageFailure, type MessageOutcome } from "../../src/component/interceptor.ts";
import { consoleLogger, jsonLogger, logFormatFromEnv, parseLogFormat } from "../../src/container/log.ts";
import { applyLogFormat, logFormatArg, roleOutput } from "../../src/cli/log-options.ts";
import { reportError, UsageError, type Output } from "../../src/cli/output.ts";
import { loadPlugins } from "../../src/governor/plugins.ts";
import { DefaultLogging } from "../../src/governor/plugins/logging.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { Mode } from "../../src/wire/schema.ts";

/** A JSON logger of `source` whose lines land in `lines`, each checked to be one whole line. */
function capture(source: string, level: Parameters<typeof jsonLogger>[1] = "debug") {
  const lines: string[] = [];
  const log = jsonLogger(source, level, (l) => void lines.push(l));
  const objects = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, lines, objects };
}

/** Any character escapeControl would escape, raw. */
const RAW_UNSAFE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

t.test("log-format - json: one object per line with time, level, source, msg and the fields", async (t) => {
  const { log, lines, objects } = capture("greeter-1a2b3c");
  const before = Date.now();
  log.info("greeter started", { version: "1.0.0", nodes: 2, nested: { ok: true } });
  log.warn("no fields");
  t.equal(lines.length, 2, "one write per line");
  for (const line of lines) t.equal(line.indexOf("\n"), line.length - 1, "ends with its only newline");
  const [first, second] = objects();
  t.same(Object.keys(first!).sort(), ["level", "msg", "nested", "nodes", "source", "time", "version"]);
  t.match(first, { level: "info", source: "greeter-1a2b3c", msg: "greeter started", version: "1.0.0", nodes: 2, nested: { ok: true } });
  t.match(first!.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, "ISO-8601 time");
  t.ok(Date.parse(first!.time as string) >= before - 1 && Date.parse(first!.time as string) <= Date.now() + 1, "the time of the call");
  t.same(second, { level: "warn", time: second!.time, source: "greeter-1a2b3c", msg: "no fields" });
});

t.test("log-format - json: lines below the level are not written; silent writes nothing", async (t) => {
  const warn = capture("x", "warn");
  warn.log.debug("a");
  warn.log.info("b");
  warn.log.warn("c");
  warn.log.error("d");
  t.same(
    warn.objects().map((o) => [o.level, o.msg]),
    [
      ["warn", "c"],
      ["error", "d"],
    ],
  );
  const silent = capture("x", "silent");
  silent.log.error("never");
  t.same(silent.lines, []);
});

t.test("log-format - json: a forged id cannot add a line; control characters stay escaped and the values survive", async (t) => {
  const forgedSource = 'agent\r\n{"level":"error","source":"governor","msg":"forged"}';
  const { log, lines, objects } = capture(forgedSource);
  const forged = "x\nFAKE LINE";
  const note = "a\u2028b\u2029c\u0085d\u001b[31mred\u007f\u202eevil\u2066";
  log.warn(`container ${forged} registered ${note}`, { container: forged, note, tab: "a\tb" });
  t.equal(lines.length, 1, "one call, one write");
  const line = lines[0]!;
  t.equal(line.split("\n").length, 2, "the only newline ends the line");
  t.notMatch(line.slice(0, -1), RAW_UNSAFE, "no raw control, separator or bidi character is left");
  t.match(line, "\\u2028", "line separators written as \\u escapes");
  t.match(line, "\\u0085", "C1 controls too");
  t.match(line, "\\u202e", "and bidi overrides");
  const [o] = objects();
  t.equal(o!.source, forgedSource, "the source, as it was");
  t.equal(o!.msg, `container ${forged} registered ${note}`, "the message, as it was");
  t.same({ container: o!.container, note: o!.note, tab: o!.tab }, { container: forged, note, tab: "a\tb" }, "the fields, as they were");
  t.equal(o!.level, "warn", "the forged level inside the source did not become the line's");
});

t.test("log-format - json: a field named like a key of the line cannot pass for it", async (t) => {
  const { log, objects } = capture("real-source");
  log.error("the message", { source: "fake", level: "debug", msg: "fake msg", time: 0, other: 1 });
  const [o] = objects();
  t.match(o, { source: "real-source", level: "error", msg: "the message", _source: "fake", _level: "debug", _msg: "fake msg", _time: 0, other: 1 });
  t.match(o!.time, /Z$/);
});

t.test("log-format - json: fields that do not serialize plainly do not break logging", async (t) => {
  const { log, lines, objects } = capture("x");
  const cyclic: Record<string, unknown> = { name: "loop" };
  cyclic.self = cyclic;
  log.info("cyclic", cyclic);
  log.info("bigint", { big: 2n ** 70n });
  log.info("undefined and functions", { gone: undefined, fn: () => 1, kept: null });
  t.equal(lines.length, 3);
  const [a, b, c] = objects();
  t.match(a, { msg: "cyclic", name: "loop", self: { name: "loop", self: "[Circular]" } });
  t.equal(typeof b!.big, "number", "a bigint is written as a number");
  t.same(c, { level: "info", time: c!.time, source: "x", msg: "undefined and functions", kept: null });
});

t.test("log-format - consoleLogger writes the format it is given; NODEBIN_LOG_FORMAT picks it, json or text", async (t) => {
  const text: string[] = [];
  consoleLogger("src", "info", (l) => void text.push(l), "text").info("hi", { a: 1 });
  t.match(text[0], /^\S+Z info  \[src\] hi \{"a":1\}\n$/, "text: the human-readable line");
  const json: string[] = [];
  consoleLogger("src", "info", (l) => void json.push(l), "json").info("hi", { a: 1 });
  t.match(JSON.parse(json[0]!), { level: "info", source: "src", msg: "hi", a: 1 });
  t.equal(logFormatFromEnv({ NODEBIN_LOG_FORMAT: "json" }), "json");
  t.equal(logFormatFromEnv({ NODEBIN_LOG_FORMAT: "JSON" }), "json", "case-insensitive");
  t.equal(logFormatFromEnv({ NODEBIN_LOG_FORMAT: "text" }), "text");
  t.equal(logFormatFromEnv({ NODEBIN_LOG_FORMAT: "xml" }), "text", "anything else is the default");
  t.equal(logFormatFromEnv({}), "text");
  t.equal(parseLogFormat("yaml"), undefined);
  t.equal(parseLogFormat(1), undefined);
});

t.test("log-format - --log-format sets NODEBIN_LOG_FORMAT for the process (and so for what it starts); other values are usage errors", async (t) => {
  t.equal(logFormatArg(["--component", "x", "--log-format", "json"]), "json");
  t.equal(logFormatArg(["--log-format=json"]), "json");
  t.equal(logFormatArg(["--log-format", "text", "--log-format", "json"]), "json", "the last one counts");
  t.equal(logFormatArg(["call", "m", "--", "--log-format", "json"]), undefined, "not after --");
  t.equal(logFormatArg(["--log-format"]), "", "given without a value");

  const env: Record<string, string | undefined> = {};
  t.equal(applyLogFormat(["--log-format", "json"], env), "json");
  t.equal(env.NODEBIN_LOG_FORMAT, "json", "in the environment: loggers made later and child processes read it");
  t.equal(applyLogFormat([], env), "json", "without the flag, the environment stands");
  t.equal(applyLogFormat(["--log-format=TEXT"], env), "text");
  t.equal(env.NODEBIN_LOG_FORMAT, "text");
  for (const bad of [["--log-format", "xml"], ["--log-format"]]) {
    const err = t.throws(() => applyLogFormat(bad, env)) as unknown;
    t.ok(err instanceof UsageError, `${bad.join(" ")}: a usage error`);
    t.match((err as Error).message, /--log-format takes text or json/);
  }
  t.equal(env.NODEBIN_LOG_FORMAT, "text", "a refused value changes nothing");
});

t.test("log-format - with the json format a role reports its error as one log line, with code, details and origin", async (t) => {
  const lines: string[] = [];
  const output: Output = { json: false, out: () => t.fail("nothing on stdout"), err: () => t.fail("no text on stderr"), log: jsonLogger("client", "info", (l) => void lines.push(l)) };
  const status = reportError(output, new NodeBinError("NOT_FOUND", "no method\nFAKE", { details: { method: "demo.X/Y" }, origin: "greeter-1" }));
  t.equal(status, 5, "the exit status of the code, as in text");
  t.equal(lines.length, 1);
  t.match(JSON.parse(lines[0]!), { level: "error", source: "client", msg: "error: NOT_FOUND: no method\nFAKE", code: "NOT_FOUND", details: { method: "demo.X/Y" }, origin: "greeter-1" });
  const usage = reportError(output, new UsageError("Unknown option `--sed`"), "run `node-bin dev --help` for usage");
  t.equal(usage, 64);
  t.match(JSON.parse(lines[1]!), { level: "error", msg: "error: Unknown option `--sed`", exit: 64, usage: "run `node-bin dev --help` for usage" });

  t.ok(roleOutput("dev", false, { NODEBIN_LOG_FORMAT: "json" }).log, "json format: errors go through a logger");
  t.notOk(roleOutput("dev", false, {}).log, "text format: the usual text");
  t.notOk(roleOutput("client", true, { NODEBIN_LOG_FORMAT: "json" }).log, "client --json keeps its own error object");
});

t.test("log-format - the per-message hooks' lines in json: hook, method, mode, peer, code and durationMs", async (t) => {
  const { log, objects } = capture("greeter-1");
  const hooks = loggingHooks(log, { perMessage: true });
  const event = { method: "demo.Greeter/Hello", mode: Mode.SYNC, node: "greeter-1", peer: { id: "client-x/caller", kind: "network" as const } };
  hooks.start!(event);
  hooks.end!({ ...event, durationMs: 1.23456789, code: "OK" } satisfies MessageOutcome);
  const error = new NodeBinError("INTERNAL", "name is required");
  hooks.error!({ ...event, durationMs: 0.5, code: "INTERNAL", error } satisfies MessageFailure);
  hooks.error!({ ...event, method: "demo.Greeter/Sign", mode: Mode.ASYNC, durationMs: 2, code: "INTERNAL", error } satisfies MessageFailure);
  const [start, end, failed, asyncFailed] = objects();
  const peer = { id: "client-x/caller", kind: "network" };
  t.match(start, { level: "debug", source: "greeter-1", hook: "start", method: "demo.Greeter/Hello", mode: "SYNC", peer });
  t.notOk("code" in start! || "durationMs" in start!, "a start has no outcome yet");
  t.match(end, { level: "debug", hook: "end", method: "demo.Greeter/Hello", code: "OK", durationMs: 1.235, peer }, "duration rounded to the microsecond");
  t.match(failed, { level: "debug", hook: "error", code: "INTERNAL", durationMs: 0.5, error: "name is required", peer }, "a SYNC failure: its caller hears of it, debug");
  t.match(asyncFailed, { level: "error", hook: "error", method: "demo.Greeter/Sign", mode: "ASYNC", code: "INTERNAL", peer }, "an ASYNC failure: nobody else hears of it, error");

  const quiet = capture("greeter-1");
  const errorsOnly = loggingHooks(quiet.log);
  t.notOk(errorsOnly.start || errorsOnly.end, "without perMessage, no start or end hook at all");
  errorsOnly.error!({ ...event, durationMs: 0.5, code: "INTERNAL", error });
  errorsOnly.error!({ ...event, mode: Mode.ASYNC, durationMs: 0.5, code: "INTERNAL", error });
  t.same(
    quiet.objects().map((o) => [o.level, o.mode]),
    [["error", "ASYNC"]],
    "only the ASYNC failure",
  );
});

t.test("log-format - the governor's logging plugin takes format (and level) as options; another value is refused", async (t) => {
  const settings = { idleMs: 60_000, queueWaitMs: 200, queueLength: 32, sustainMs: 1000 };
  const json = (await loadPlugins({ settings, config: { "default-logging": { format: "json", level: "warn" } } })).strategies.logging as DefaultLogging;
  t.equal(json.name, "default-logging");
  t.equal(json.format, "json");
  t.equal(json.level, "warn");
  const byEnv = (await loadPlugins({ settings })).strategies.logging as DefaultLogging;
  t.equal(byEnv.format, undefined, "no option: NODEBIN_LOG_FORMAT (--log-format) decides when a logger is made");
  const err = await loadPlugins({ settings, config: { "default-logging": { format: "xml" } } }).then(
    () => undefined,
    (e: unknown) => e as NodeBinError,
  );
  t.equal(err?.code, "INVALID_ARGUMENT");
  t.match(err?.message, /built-in plugin "default-logging" failed to start: .*"format" must be one of text, json/);
  t.equal(new DefaultLogging(undefined, "text").format, "text");
});
