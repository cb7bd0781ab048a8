/**
 * The plugin host: picks the governor's strategy of each kind (a user plugin
 * from the plugins directory, else the built-in default) and creates them in
 * start-up order (logging, lifecycle, zombie; PLUGIN_KINDS). Every problem is
 * a NodeBinError INVALID_ARGUMENT naming the file (or "built-in").
 */
import { readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { NodeBinError } from "../wire/errors.ts";
import defaultLifecycle from "./plugins/lifecycle.ts";
import defaultLogging from "./plugins/logging.ts";
import defaultZombie from "./plugins/zombie.ts";
import { PLUGIN_KINDS, type GovernorSettings, type PluginKind, type PluginModule, type StrategyKinds } from "./strategy.ts";

export const BUILTIN_PLUGINS: PluginModule[] = [defaultLogging, defaultLifecycle, defaultZombie];

/** The method each kind of strategy must have. */
const STRATEGY_METHOD: { readonly [K in PluginKind]: keyof StrategyKinds[K] & string } = {
  logging: "logger",
  lifecycle: "decide",
  zombie: "onZombie",
};

const PLUGIN_EXTENSIONS = [".js", ".mjs", ".cjs", ".ts"];
const BUILT_IN = "built-in";

export interface LoadPluginsOptions {
  /** The plugins directory; a missing one is fine (no user plugins). */
  dir?: string;
  /** Options per plugin name (the config file's `plugins` section). */
  config?: Record<string, Record<string, unknown>>;
  /** The governor's live settings, handed to every plugin's create. */
  settings: GovernorSettings;
}

export interface LoadedPlugin {
  kind: PluginKind;
  name: string;
  /** "built-in" or the plugin file's path. */
  source: string;
}

export interface LoadedPlugins {
  strategies: StrategyKinds;
  /** In creation order. */
  loaded: LoadedPlugin[];
}

interface Candidate {
  module: PluginModule;
  source: string;
}

export async function loadPlugins(options: LoadPluginsOptions): Promise<LoadedPlugins> {
  const { config = {}, settings } = options;
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new NodeBinError("INVALID_ARGUMENT", `plugin config must be an object of options per plugin name, got ${describe(config)}`);
  }

  const chosen = new Map<PluginKind, Candidate>();
  for (const module of BUILTIN_PLUGINS) chosen.set(module.kind, { module, source: BUILT_IN });

  const user = new Map<PluginKind, Candidate>();
  for (const file of options.dir === undefined ? [] : pluginFiles(options.dir)) {
    const module = await importPlugin(file);
    const other = user.get(module.kind);
    if (other) {
      throw new NodeBinError("INVALID_ARGUMENT", `${other.source} and ${file} are both ${module.kind} plugins ("${other.module.name}" and "${module.name}"): keep one`, {
        details: { file, other: other.source },
      });
    }
    user.set(module.kind, { module, source: file });
  }
  for (const [kind, candidate] of user) chosen.set(kind, candidate);

  const byName = new Map<string, Candidate>();
  for (const candidate of chosen.values()) {
    const same = byName.get(candidate.module.name);
    if (same) {
      throw new NodeBinError(
        "INVALID_ARGUMENT",
        `${same.source} and ${candidate.source} both name their plugin "${candidate.module.name}": plugin names must differ (they key the plugin options)`,
        { details: { file: candidate.source, other: same.source } },
      );
    }
    byName.set(candidate.module.name, candidate);
  }

  const strategies: Partial<StrategyKinds> = {};
  const loaded: LoadedPlugin[] = [];
  for (const kind of PLUGIN_KINDS) {
    const candidate = chosen.get(kind)!;
    await createInto(strategies, kind, candidate, config, settings);
    loaded.push({ kind, name: candidate.module.name, source: candidate.source });
  }

  const unused = Object.keys(config).filter((name) => !byName.has(name));
  if (unused.length > 0) {
    strategies.logging!.logger("governor").warn(
      `plugin options for ${unused.map((n) => `"${n}"`).join(", ")} ignored: no loaded plugin has that name (loaded: ${loaded.map((p) => p.name).join(", ")})`,
    );
  }
  return { strategies: strategies as StrategyKinds, loaded };
}

async function createInto<K extends PluginKind>(
  strategies: Partial<StrategyKinds>,
  kind: K,
  candidate: Candidate,
  config: Record<string, unknown>,
  settings: GovernorSettings,
): Promise<void> {
  const { module, source } = candidate;
  const label = source === BUILT_IN ? `built-in plugin "${module.name}"` : `${source}: plugin "${module.name}"`;
  const pluginOptions = Object.hasOwn(config, module.name) ? config[module.name] : {};
  if (typeof pluginOptions !== "object" || pluginOptions === null || Array.isArray(pluginOptions)) {
    throw fail(source, `${label}: its options must be an object, got ${describe(pluginOptions)}`);
  }
  let strategy: unknown;
  try {
    strategy = await module.create(pluginOptions as Record<string, unknown>, settings);
  } catch (err) {
    throw fail(source, `${label} failed to start: ${err instanceof Error ? err.message : String(err)}`, err);
  }
  const method = STRATEGY_METHOD[kind];
  if (typeof strategy !== "object" || strategy === null || typeof (strategy as Record<string, unknown>)[method] !== "function") {
    throw fail(source, `${label}: create() must return a ${kind} strategy with a ${method}() method, got ${describe(strategy)}`);
  }
  strategies[kind] = strategy as StrategyKinds[K];
}

/** The plugin files of `dir`, sorted; [] when it does not exist. */
function pluginFiles(dir: string): string[] {
  dir = resolve(dir);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return [];
    const problem = code === "ENOTDIR" ? "not a directory" : `cannot read the plugins directory: ${(err as Error).message}`;
    throw fail(dir, problem, err);
  }
  return names
    .filter((n) => PLUGIN_EXTENSIONS.some((ext) => n.endsWith(ext)) && !/\.d\.[cm]?ts$/.test(n))
    .sort()
    .map((n) => join(dir, n))
    .filter((file) => {
      try {
        return statSync(file).isFile();
      } catch (err) {
        throw fail(file, `cannot read: ${(err as Error).message}`, err);
      }
    });
}

/** Imports one plugin file and checks the shape of what it exports. */
async function importPlugin(file: string): Promise<PluginModule> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint =
      e?.code === "ERR_UNKNOWN_FILE_EXTENSION" ? " (this runtime cannot import TypeScript by itself: run through bin/node-bin, or use Node >= 22.6 or Deno)" : "";
    throw fail(file, `cannot load plugin: ${e?.message ?? String(err)}${hint}`, err);
  }
  const exported = mod.default !== undefined ? mod.default : mod.plugin;
  if (exported === undefined) throw fail(file, "exports no plugin: default-export (or export as `plugin`) an object { kind, name, create }");
  if (typeof exported !== "object" || exported === null) throw fail(file, `the exported plugin must be an object { kind, name, create }, got ${describe(exported)}`);
  const p = exported as Record<string, unknown>;
  if (!(PLUGIN_KINDS as readonly unknown[]).includes(p.kind)) {
    throw fail(file, `plugin "kind" must be one of ${PLUGIN_KINDS.join(", ")}, got ${describe(p.kind)}`);
  }
  if (typeof p.name !== "string" || p.name.trim() === "") throw fail(file, `plugin "name" must be a non-empty string, got ${describe(p.name)}`);
  if (typeof p.create !== "function") throw fail(file, `plugin "create" must be a function, got ${describe(p.create)}`);
  return exported as PluginModule;
}

function fail(file: string, problem: string, cause?: unknown): NodeBinError {
  const message = file === BUILT_IN || problem.startsWith(`${file}:`) ? problem : `${file}: ${problem}`;
  return new NodeBinError("INVALID_ARGUMENT", message, { details: { file }, ...(cause === undefined ? {} : { cause }) });
}

function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "an array";
  if (typeof value === "function") return "a function";
  return typeof value === "object" ? "an object" : `${typeof value} ${String(value)}`;
}
