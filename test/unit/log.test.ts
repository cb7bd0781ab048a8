import t from "tap";
import { consoleLogger, logLevelFromEnv } from "../../src/container/log.ts";

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
