import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { BUILTIN_PLUGINS, loadPlugins } from "../../src/governor/plugins.ts";
import zombiePlugin from "../../src/governor/plugins/zombie.ts";
import loggingPlugin from "../../src/governor/plugins/logging.ts";
import { PLUGIN_KINDS, STRATEGY_KINDS, type ChildView, type GovernorSettings } from "../../src/governor/strategy.ts";
import { rejection } from "../lib/expect-error.ts";
import { recordingLoggers } from "../lib/recording-logger.ts";

const settings = (): GovernorSettings => ({ idleMs: 60_000, queueWaitMs: 200, queueLength: 32, sustainMs: 1_000 });

/** A fresh temp dir holding `files` (name → source), removed at teardown. */
function pluginDir(t: Test, files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-plugins-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, source] of Object.entries(files)) writeFileSync(join(dir, name), source);
  return dir;
}

const recorder = `
export default {
  kind: "lifecycle",
  name: "recorder",
  create(options, settings) {
    return { name: "recorder", options, settings, decide() { return [{ action: "grow", component: "x", reason: "always" }]; } };
  },
};
`;

t.test("plugins - the built-ins load in start-up order when there is no plugins directory", async (t) => {
  t.same(
    BUILTIN_PLUGINS.map((p) => [p.kind, p.name]),
    [
      ["security", "curve"],
      ["loader", "default-loader"],
      ["discovery", "gossip"],
      ["metrics", "prometheus"],
      ["logging", "default-logging"],
      ["lifecycle", "default-lifecycle"],
      ["zombie", "default-zombie"],
      ["provider", "command"],
    ],
  );
  const { strategies, loaded } = await loadPlugins({ settings: settings() });
  t.same(loaded, [
    { kind: "logging", name: "default-logging", source: "built-in" },
    { kind: "lifecycle", name: "default-lifecycle", source: "built-in" },
    { kind: "zombie", name: "default-zombie", source: "built-in" },
  ]);
  t.same(loaded.map((p) => p.kind), STRATEGY_KINDS, "the governor's strategies");
  t.same(PLUGIN_KINDS.slice(0, 2), ["security", "loader"], "every process starts the security provider first, the loader second");
  t.equal(strategies.lifecycle.name, "default-lifecycle");
  t.equal(strategies.zombie.name, "default-zombie");
  t.equal(strategies.logging.name, "default-logging");
  t.equal(typeof strategies.logging.logger("governor").info, "function");

  const missing = await loadPlugins({ dir: join(tmpdir(), "nodebin-no-such-plugins-dir-" + process.pid), settings: settings() });
  t.same(missing.loaded.map((p) => p.source), ["built-in", "built-in", "built-in"], "a missing directory is fine");
});

t.test("plugins - built-ins get their config options", async (t) => {
  const live = settings();
  const { strategies } = await loadPlugins({ settings: live, config: { "default-lifecycle": { sustainMs: 0 } } });
  const ready: ChildView = { pid: 1, component: "c", phase: "ready", startedAt: 0, lastPongAt: 0, missedPongs: 0, handled: 0, queued: 0, capacity: 10, queueWaitMs: 500, idleMs: 0, restarts: 0 };
  const decisions = strategies.lifecycle.decide({ capacity: 4, used: 1, now: 0 }, [{ name: "c", min: 1, max: 2, children: [ready], capacityRequests: 0 }]);
  t.equal(decisions[0]?.action, "grow", "sustainMs 0 from the config: grows on the first round");

  const bad = await rejection(loadPlugins({ settings: live, config: { "default-lifecycle": { sustainMs: "soon" } } }));
  t.equal(bad.code, "INVALID_ARGUMENT");
  t.match(bad.message, /default-lifecycle.*sustainMs/);
});

t.test("plugins - a user plugin replaces the built-in of its kind and receives its options and the settings", async (t) => {
  const dir = pluginDir(t, { "recorder.mjs": recorder, "notes.txt": "not a plugin", "types.d.ts": "export {};" });
  mkdirSync(join(dir, "sub.mjs"));
  const live = settings();
  const { strategies, loaded } = await loadPlugins({ dir, settings: live, config: { recorder: { threshold: 7 } } });
  t.same(loaded[1], { kind: "lifecycle", name: "recorder", source: join(dir, "recorder.mjs") });
  t.equal(loaded[0]?.source, "built-in");
  t.equal(loaded[2]?.source, "built-in");
  const lifecycle = strategies.lifecycle as unknown as { name: string; options: unknown; settings: unknown };
  t.equal(lifecycle.name, "recorder");
  t.same(lifecycle.options, { threshold: 7 });
  t.equal(lifecycle.settings, live, "the very settings object (live)");
  t.same(strategies.lifecycle.decide({ capacity: 1, used: 0, now: 0 }, []), [{ action: "grow", component: "x", reason: "always" }]);
});

t.test("plugins - `export const plugin`, async create and .cjs files work; unconfigured plugins get {}", async (t) => {
  const dir = pluginDir(t, {
    "a-zombie.mjs": `export const plugin = { kind: "zombie", name: "gentle", async create(options) { return { name: "gentle", options, onZombie() {} }; } };`,
    "b-logging.cjs": `module.exports = { kind: "logging", name: "quiet", create: () => ({ name: "quiet", logger: () => ({ debug() {}, info() {}, warn() {}, error() {} }) }) };`,
  });
  const { strategies, loaded } = await loadPlugins({ dir, settings: settings() });
  t.same(
    loaded.map((p) => [p.name, p.source]),
    [
      ["quiet", join(dir, "b-logging.cjs")],
      ["default-lifecycle", "built-in"],
      ["gentle", join(dir, "a-zombie.mjs")],
    ],
  );
  t.same((strategies.zombie as unknown as { options: unknown }).options, {});
});

t.test("plugins - every kind of bad plugin file is an INVALID_ARGUMENT naming the file", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["syntax.mjs", "export default {", /cannot load plugin/],
    ["throws.mjs", `throw new Error("boom at import");`, /cannot load plugin: boom at import/],
    ["nothing.mjs", `export const other = 1;`, /exports no plugin/],
    ["number.mjs", `export default 42;`, /must be an object/],
    ["kind.mjs", `export default { kind: "scheduler", name: "x", create() {} };`, /"kind" must be one of security, loader, discovery, metrics, logging, lifecycle, zombie, provider, got "scheduler"/],
    ["nokind.mjs", `export default { name: "x", create() {} };`, /"kind" must be one of/],
    ["name.mjs", `export default { kind: "zombie", name: "", create() {} };`, /"name" must be a non-empty string/],
    ["noname.mjs", `export default { kind: "zombie", create() {} };`, /"name" must be a non-empty string, got nothing/],
    ["create.mjs", `export default { kind: "zombie", name: "z", create: "yes" };`, /"create" must be a function/],
    ["method.mjs", `export default { kind: "lifecycle", name: "l", create: () => ({ name: "l", decides() {} }) };`, /create\(\) must return a lifecycle plugin with a decide\(\) method/],
    ["null.mjs", `export default { kind: "logging", name: "l", create: () => null };`, /create\(\) must return a logging plugin with a logger\(\) method, got null/],
    ["nozombie.mjs", `export default { kind: "zombie", name: "z", create: async () => ({ name: "z" }) };`, /onZombie\(\) method/],
    ["fails.mjs", `export default { kind: "zombie", name: "z", create() { throw new Error("no such option"); } };`, /plugin "z" failed to start: no such option/],
  ];
  for (const [name, source, pattern] of cases) {
    const dir = pluginDir(t, { [name]: source });
    const file = join(dir, name);
    const err = await rejection(loadPlugins({ dir, settings: settings() }));
    t.equal(err.code, "INVALID_ARGUMENT", name);
    t.ok(err.message.startsWith(`${file}: `), `${name}: the message names the file (${err.message})`);
    t.match(err.message, pattern, name);
    t.equal(err.details.file, file, `${name}: details.file`);
  }
});

t.test("plugins - two user plugins of one kind, or two plugins of one name, are an error naming both", async (t) => {
  const dir = pluginDir(t, { "one.mjs": recorder, "two.mjs": recorder.replace('name: "recorder"', 'name: "other"') });
  const err = await rejection(loadPlugins({ dir, settings: settings() }));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.match(err.message, join(dir, "one.mjs"));
  t.match(err.message, join(dir, "two.mjs"));
  t.match(err.message, /both lifecycle plugins/);

  const clash = pluginDir(t, { "z.mjs": `export default { kind: "zombie", name: "default-lifecycle", create: () => ({ name: "z", onZombie() {} }) };` });
  const named = await rejection(loadPlugins({ dir: clash, settings: settings() }));
  t.match(named.message, /built-in and .*z\.mjs both name their plugin "default-lifecycle"/);
});

t.test("plugins - a plugins path that is not a readable directory is an error", async (t) => {
  const dir = pluginDir(t, { "file.mjs": recorder });
  const file = join(dir, "file.mjs");
  const err = await rejection(loadPlugins({ dir: file, settings: settings() }));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.match(err.message, `${file}: not a directory`);
});

t.test("plugins - options for a plugin that is not loaded are reported through the logging strategy", async (t) => {
  const lines: string[] = [];
  const dir = pluginDir(t, {
    "log.mjs": `export default { kind: "logging", name: "rec", create: (o) => ({ name: "rec", logger: (source) => ({ debug() {}, info() {}, error() {}, warn: (m) => o.lines.push(source + ": " + m) }) }) };`,
  });
  await loadPlugins({ dir, settings: settings(), config: { rec: { lines } as unknown as Record<string, unknown>, "default-lifecyle": { idleMs: 1 } } });
  t.equal(lines.length, 1);
  t.match(lines[0], /governor: plugin options for "default-lifecyle" ignored/);
});

t.test("plugins - the zombie default logs, kills and respawns", async (t) => {
  const { lines, logger } = recordingLoggers();
  const calls: string[] = [];
  const zombie = await zombiePlugin.create({}, settings());
  const now = Date.now();
  const child: ChildView = { pid: 4242, component: "greeter", phase: "ready", startedAt: now - 60_000, lastPongAt: now - 5_000, missedPongs: 3, handled: 9, queued: 1, capacity: 10, queueWaitMs: 0, idleMs: 0, restarts: 0 };
  await zombie.onZombie(child, { kill: () => calls.push("kill"), respawn: () => calls.push("respawn"), log: logger("governor/greeter") });
  t.same(calls, ["kill", "respawn"]);
  t.equal(lines.length, 1);
  t.equal(lines[0]?.level, "warn");
  t.equal(lines[0]?.source, "governor/greeter");
  t.match(lines[0]?.message, /^greeter pid 4242 is a zombie: no pong for \d+ ms \(missed 3\); killing it and starting a replacement$/);
  const ms = Number(/no pong for (\d+) ms/.exec(lines[0]!.message)?.[1]);
  t.ok(ms >= 5_000 && ms < 6_000, `silence measured from the last pong (${ms})`);

  const noRespawn = await zombiePlugin.create({ respawn: false }, settings());
  calls.length = 0;
  await noRespawn.onZombie({ ...child, lastPongAt: 0 }, { kill: () => calls.push("kill"), respawn: () => calls.push("respawn"), log: logger("governor") });
  t.same(calls, ["kill"], "respawn: false only kills");
  t.match(lines[1]?.message, /no pong for 60\d{3} ms \(missed 3\); killing it/, "never ponged: silence since start");
  t.notMatch(lines[1]?.message, /replacement/);

  t.throws(() => zombiePlugin.create({ respawn: "no" }, settings()), /"respawn" must be true or false/);
  t.throws(() => zombiePlugin.create({ respwan: false }, settings()), /unknown option "respwan"/);
});

t.test("plugins - the logging default: consoleLogger at the configured level, validated", async (t) => {
  const quiet = await loggingPlugin.create({ level: "silent" }, settings());
  t.equal(quiet.name, "default-logging");
  t.equal((quiet as unknown as { level: string }).level, "silent");
  t.equal((await loggingPlugin.create({ level: "WARN" }, settings()) as unknown as { level: string }).level, "warn", "case-insensitive like NODEBIN_LOG");
  t.equal((await loggingPlugin.create({}, settings()) as unknown as { level: unknown }).level, undefined, "no level: NODEBIN_LOG decides");
  const log = quiet.logger("governor");
  for (const m of ["debug", "info", "warn", "error"] as const) t.equal(typeof log[m], "function");
  log.error("not written at silent");
  t.throws(() => loggingPlugin.create({ level: "loud" }, settings()), /option "level" must be one of debug, info, warn, error, silent, got "loud"/);
  t.throws(() => loggingPlugin.create({ level: 3 }, settings()), /"level"/);
  const err = await rejection(loadPlugins({ settings: settings(), config: { "default-logging": { level: "loud" } } }));
  t.match(err.message, /built-in plugin "default-logging" failed to start: .*"level"/);
});
