import t from "tap";
import { consoleLogger, escapeControl, logLevelFromEnv } from "../../src/container/log.ts";
import { DefaultLogging } from "../../src/governor/plugins/logging.ts";

t.test("log - lines at or above the level are written as 'time level [source] message {fields}'", async (t) => {
  const lines: string[] = [];
  const log = consoleLogger("node-1", "info", (l) => lines.push(l));
  log.debug("hidden");
  log.info("shown", { n: 1, big: 2n });
  log.warn("careful");
  log.error("broken", {});
  t.equal(lines.length, 3);
  t.match(lines[0], /^\d{4}-\d\d-\d\dT[\d:.]+Z info  \[node-1\] shown \{"n":1,"big":"2"\}\n$/);
  t.match(lines[1], / warn  \[node-1\] careful\n$/);
  t.match(lines[2], / error \[node-1\] broken\n$/, "empty fields are left out");
});

t.test("log - silent writes nothing; debug writes everything", async (t) => {
  const silent: string[] = [];
  const s = consoleLogger("x", "silent", (l) => silent.push(l));
  s.error("no");
  t.same(silent, []);
  const all: string[] = [];
  const d = consoleLogger("x", "debug", (l) => all.push(l));
  d.debug("a");
  d.info("b");
  t.equal(all.length, 2);
});

t.test("log - fields that cannot be serialized do not break logging", async (t) => {
  const lines: string[] = [];
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  consoleLogger("x", "info", (l) => lines.push(l)).info("cyclic", cyclic);
  t.match(lines[0], /cyclic \[unserializable\]/);
});

t.test("log - NODEBIN_LOG picks the level, case-insensitively; anything else is info", async (t) => {
  t.equal(logLevelFromEnv({ NODEBIN_LOG: "debug" }), "debug");
  t.equal(logLevelFromEnv({ NODEBIN_LOG: "WARN" }), "warn");
  t.equal(logLevelFromEnv({ NODEBIN_LOG: "silent" }), "silent");
  t.equal(logLevelFromEnv({ NODEBIN_LOG: "loud" }), "info");
  t.equal(logLevelFromEnv({}), "info");
});

t.test("log - a forged id cannot add a line: control characters in source, message and fields are escaped, readably", async (t) => {
  const lines: string[] = [];
  const log = consoleLogger("agent\r\n2024-01-01T00:00:00.000Z info  [governor]", "info", (l) => lines.push(l));
  const forged = "x\nFAKE LINE";
  log.warn(`container ${forged} registered`, { container: forged, note: "a\u2028b\u0085c\u001b[31mred\u007f" });
  t.equal(lines.length, 1, "one call, one write");
  const line = lines[0]!;
  t.equal(line.indexOf("\n"), line.length - 1, "the only newline ends the line");
  t.notMatch(line, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029]/, "no raw control character is left");
  t.match(line, "[agent\\r\\n2024-01-01T00:00:00.000Z info  [governor]]", "the source is escaped");
  t.match(line, "container x\\nFAKE LINE registered", "a newline shows as \\n");
  t.match(line, '"note":"a\\u2028b\\u0085c\\u001b[31mred\\u007f"', "the rest as \\u escapes");
  const fields = JSON.parse(line.slice(line.indexOf("{")));
  t.same(fields, { container: forged, note: "a\u2028b\u0085c\u001b[31mred\u007f" }, "fields are still valid JSON, with the original values");
});

t.test("log - escapeControl escapes C0, DEL, C1, the line separators and bidi controls, and nothing else", async (t) => {
  t.equal(escapeControl("tab\there\r\n"), "tab\\there\\r\\n");
  t.equal(escapeControl("\u0000\u0007\u001b\u001f\u007f\u0080\u009f"), "\\u0000\\u0007\\u001b\\u001f\\u007f\\u0080\\u009f");
  t.equal(escapeControl("line\u2028para\u2029"), "line\\u2028para\\u2029");
  t.equal(escapeControl("\u202eevil\u2066"), "\\u202eevil\\u2066", "bidi overrides and isolates");
  const plain = "ünïcødé ✓ 日本 😀 back\\slash \u00a0nbsp";
  t.equal(escapeControl(plain), plain, "printable text, non-ASCII included, is left alone");
  for (let c = 0; c < 0x20; c++) t.notMatch(escapeControl(`a${String.fromCharCode(c)}b`), /[\u0000-\u001f]/, `U+${c.toString(16).padStart(4, "0")} escaped`);
});

t.test("log - the governor's logging plugin writes through the same escaping sink", async (t) => {
  const written: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    written.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    new DefaultLogging("info").logger("discovery").info("container x\nFAKE LINE registered", { id: "y\rz" });
  } finally {
    process.stderr.write = write;
  }
  t.equal(written.length, 1);
  t.match(written[0], / info  \[discovery\] container x\\nFAKE LINE registered \{"id":"y\\rz"\}\n$/);
  t.equal(written[0]!.split("\n").length, 2, "one line");
});
