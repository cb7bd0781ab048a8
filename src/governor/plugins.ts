/**
 * The plugin host. A control-plane plugin is a module of one kind (security,
 * loader, discovery, metrics, logging, lifecycle, zombie, provider: strategy.ts PLUGIN_KINDS)
 * that replaces the built-in of its kind. It is found in a plugins directory
 * either as a component-like directory (an index module whose default export,
 * or `plugin` export, is the PluginModule; optionally a `manifest` export
 * naming its kind, and .proto files with a `handlers` export: a control-plane
 * service served at the governor's private socket, see PluginService) or, in
 * short, as a single module file. `--loader PATH` names a loader plugin
 * outside any directory.
 *
 * Every process starts the kinds it needs, in start-up order, one step at a
 * time (PluginHost.start): the security provider first, before anything binds
 * or connects; then the component loader; then discovery; the governor then
 * starts its strategies once it holds its socket. A failure at any step is one
 * INVALID_ARGUMENT naming the step, the plugin and its file. The built-ins are
 * written as plugins themselves (./plugins/), so nothing about them is special.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { INDEX_FILES, loadComponent, type Component } from "../component/loader.ts";
import { NodeBinError } from "../wire/errors.ts";
import defaultDiscovery from "./plugins/discovery.ts";
import defaultLifecycle from "./plugins/lifecycle.ts";
import defaultLoader from "./plugins/loader.ts";
import defaultMetrics from "./plugins/metrics.ts";
import defaultLogging from "./plugins/logging.ts";
import defaultSecurity from "./plugins/security.ts";
import defaultZombie from "./plugins/zombie.ts";
import defaultProvider from "./plugins/provider-command.ts";
import { PLUGIN_KINDS, STRATEGY_KINDS, type GovernorSettings, type PluginContext, type PluginKind, type PluginKinds, type PluginModule, type StrategyKinds } from "./strategy.ts";

export const BUILTIN_PLUGINS: PluginModule[] = [defaultSecurity, defaultLoader, defaultDiscovery, defaultMetrics, defaultLogging, defaultLifecycle, defaultZombie, defaultProvider];

/** The method each kind of plugin must have (how a created plugin is checked). */
const REQUIRED_METHOD: { readonly [K in PluginKind]: keyof PluginKinds[K] & string } = {
  security: "describe",
  loader: "load",
  discovery: "makeGossip",
  metrics: "collect",
  logging: "logger",
  lifecycle: "decide",
  zombie: "onZombie",
  provider: "launch",
};

const PLUGIN_EXTENSIONS = [".js", ".mjs", ".cjs", ".ts"];
const BUILT_IN = "built-in";
const DEFAULT_SETTINGS: GovernorSettings = { idleMs: 60_000, queueWaitMs: 200, queueLength: 32, sustainMs: 1_000 };

export interface LoadedPlugin {
  kind: PluginKind;
  name: string;
  /** "built-in" or the plugin's file or directory. */
  source: string;
  /** Its control-plane service, when it serves one: the service names. */
  services?: string[];
}

/** A plugin's control-plane service: its .proto's methods with the handlers its module exports. */
export interface PluginService {
  plugin: string;
  component: Component;
  /** What the plugin's create() returned: handed to each handler as `ctx.plugin`. */
  instance: unknown;
}

interface Candidate {
  module: PluginModule;
  source: string;
  /** A directory plugin with .proto files. */
  serviceDir?: string;
}

export interface PluginHostOptions {
  /** Plugins directories; a missing one is fine (no user plugins). */
  dirs?: string[];
  /** A loader plugin module (--loader PATH): it is the loader, whatever the directories hold. */
  loader?: string;
}

export class PluginHost {
  /** Started so far, in the order they started. */
  readonly loaded: LoadedPlugin[] = [];
  readonly services: PluginService[] = [];
  private readonly started = new Map<PluginKind, unknown>();

  private constructor(private readonly chosen: Map<PluginKind, Candidate>) {}

  /**
   * Finds the plugins of `options.dirs` (and --loader): imports each, checks
   * its shape, and picks one per kind (a user's over the built-in). Throws
   * INVALID_ARGUMENT naming the file: a plugin that cannot load, two of one
   * kind, two of one name.
   */
  static async discover(options: PluginHostOptions = {}): Promise<PluginHost> {
    const chosen = new Map<PluginKind, Candidate>();
    for (const module of BUILTIN_PLUGINS) chosen.set(module.kind, { module, source: BUILT_IN });
    const user = new Map<PluginKind, Candidate>();
    for (const dir of options.dirs ?? []) {
      for (const entry of pluginEntries(dir)) {
        const candidate = await importPlugin(entry);
        const other = user.get(candidate.module.kind);
        if (other) {
          throw new NodeBinError("INVALID_ARGUMENT", `${other.source} and ${entry} are both ${candidate.module.kind} plugins ("${other.module.name}" and "${candidate.module.name}"): keep one`, {
            details: { file: entry, other: other.source },
          });
        }
        user.set(candidate.module.kind, candidate);
      }
    }
    if (options.loader) {
      const file = resolve(options.loader);
      const candidate = await importPlugin(file);
      if (candidate.module.kind !== "loader") throw fail(file, `--loader names a ${candidate.module.kind} plugin ("${candidate.module.name}"), not a loader`);
      user.set("loader", candidate);
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
    return new PluginHost(chosen);
  }

  /** The names of the plugins chosen (started or not): what plugin options may be given for. */
  get names(): string[] {
    return [...this.chosen.values()].map((c) => c.module.name);
  }

  /** The plugin chosen for `kind` (started or not). */
  chosenFor(kind: PluginKind): { name: string; source: string } {
    const c = this.chosen.get(kind)!;
    return { name: c.module.name, source: c.source };
  }

  /**
   * Starts the plugin of `kind` (once: a second call returns the same) with
   * its options from `config` (by plugin name). Start `kind`s in PLUGIN_KINDS
   * order. Throws INVALID_ARGUMENT naming the start-up step, the plugin and its
   * source.
   */
  async start<K extends PluginKind>(kind: K, context: PluginContext, config: Record<string, unknown> = {}, settings: GovernorSettings = DEFAULT_SETTINGS): Promise<PluginKinds[K]> {
    if (this.started.has(kind)) return this.started.get(kind) as PluginKinds[K];
    return this.create(kind, context, config, settings, true);
  }

  /**
   * One more instance of the plugin of `kind`, for another context (a
   * gateway's second leg under a cluster key of its own): not kept, not
   * listed, its control-plane service not served; the caller closes it.
   * Throws as start().
   */
  another<K extends PluginKind>(kind: K, context: PluginContext, config: Record<string, unknown> = {}, settings: GovernorSettings = DEFAULT_SETTINGS): Promise<PluginKinds[K]> {
    return this.create(kind, context, config, settings, false);
  }

  private async create<K extends PluginKind>(kind: K, context: PluginContext, config: Record<string, unknown>, settings: GovernorSettings, keep: boolean): Promise<PluginKinds[K]> {
    const candidate = this.chosen.get(kind)!;
    const { module, source } = candidate;
    const step = `start-up step ${PLUGIN_KINDS.indexOf(kind) + 1} of ${PLUGIN_KINDS.length} (${kind})`;
    const label = `${step}: ${source === BUILT_IN ? "built-in " : ""}plugin "${module.name}"`;
    if (typeof config !== "object" || config === null || Array.isArray(config)) {
      throw new NodeBinError("INVALID_ARGUMENT", `plugin config must be an object of options per plugin name, got ${describe(config)}`);
    }
    const options = Object.hasOwn(config, module.name) ? config[module.name] : {};
    if (typeof options !== "object" || options === null || Array.isArray(options)) throw fail(source, `${label}: its options must be an object, got ${describe(options)}`);
    let instance: unknown;
    try {
      instance = await module.create(options as Record<string, unknown>, settings, context);
    } catch (err) {
      throw fail(source, `${label} failed to start: ${err instanceof Error ? err.message : String(err)}`, err);
    }
    const method = REQUIRED_METHOD[kind];
    if (typeof instance !== "object" || instance === null || typeof (instance as Record<string, unknown>)[method] !== "function") {
      throw fail(source, `${label}: create() must return a ${kind} plugin with a ${method}() method, got ${describe(instance)}`);
    }
    if (!keep) return instance as PluginKinds[K];
    const loaded: LoadedPlugin = { kind, name: module.name, source };
    if (candidate.serviceDir) {
      let component: Component;
      try {
        component = await loadComponent(candidate.serviceDir);
      } catch (err) {
        throw fail(source, `${label}: its control-plane service cannot load: ${NodeBinError.from(err).message}`, err);
      }
      this.services.push({ plugin: module.name, component, instance });
      loaded.services = [...new Set([...component.schema.methods.values()].map((m) => m.service))];
    }
    this.started.set(kind, instance);
    this.loaded.push(loaded);
    return instance as PluginKinds[K];
  }
}

export interface LoadPluginsOptions {
  /** The plugins directory; a missing one is fine (no user plugins). */
  dir?: string;
  /** Options per plugin name (the config file's `plugins` section). */
  config?: Record<string, Record<string, unknown>>;
  /** The governor's live settings, handed to every plugin's create. */
  settings: GovernorSettings;
  /** The host to start them from (the governor's, which started its earlier kinds already); default: one for `dir`. */
  host?: PluginHost;
  context?: PluginContext;
}

export interface LoadedPlugins {
  strategies: StrategyKinds;
  /** The governor's strategies, in creation order. */
  loaded: LoadedPlugin[];
}

/**
 * Starts the governor's strategies (logging, lifecycle, zombie) in start-up
 * order, and warns (through the logging plugin) about options for a plugin
 * name that is not loaded.
 */
export async function loadPlugins(options: LoadPluginsOptions): Promise<LoadedPlugins> {
  const { config = {}, settings } = options;
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new NodeBinError("INVALID_ARGUMENT", `plugin config must be an object of options per plugin name, got ${describe(config)}`);
  }
  const host = options.host ?? (await PluginHost.discover(options.dir === undefined ? {} : { dirs: [options.dir] }));
  const context: PluginContext = options.context ?? { role: "governor", runtimeDir: "", log: silent };
  const strategies: Partial<StrategyKinds> = {};
  const loaded: LoadedPlugin[] = [];
  for (const kind of STRATEGY_KINDS) {
    (strategies as Record<string, unknown>)[kind] = await host.start(kind, context, config, settings);
    loaded.push(host.loaded.find((p) => p.kind === kind)!);
  }
  const unused = Object.keys(config).filter((name) => !host.names.includes(name));
  if (unused.length > 0) {
    strategies.logging!.logger("governor").warn(`plugin options for ${unused.map((n) => `"${n}"`).join(", ")} ignored: no loaded plugin has that name (loaded: ${host.names.join(", ")})`);
  }
  return { strategies: strategies as StrategyKinds, loaded };
}

const silent: PluginContext["log"] = { debug() {}, info() {}, warn() {}, error() {} };

/** The plugins of `dir`, sorted: module files and directories with an index module; [] when it does not exist. */
function pluginEntries(dir: string): string[] {
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
  const out: string[] = [];
  for (const name of names.sort()) {
    if (/^[._]/.test(name) || name === "node_modules") continue;
    const path = join(dir, name);
    let st;
    try {
      st = statSync(path);
    } catch (err) {
      throw fail(path, `cannot read: ${(err as Error).message}`, err);
    }
    if (st.isDirectory()) {
      if (INDEX_FILES.some((f) => existsSync(join(path, f)))) out.push(path);
    } else if (st.isFile() && PLUGIN_EXTENSIONS.some((ext) => name.endsWith(ext)) && !/\.d\.[cm]?ts$/.test(name)) {
      out.push(path);
    }
  }
  return out;
}

/** Imports one plugin (a module file, or a directory's index module) and checks the shape of what it exports. */
async function importPlugin(path: string): Promise<Candidate> {
  let file = path;
  let serviceDir: string | undefined;
  if (existsSync(path) && statSync(path).isDirectory()) {
    const index = INDEX_FILES.find((f) => existsSync(join(path, f)));
    if (!index) throw fail(path, `a plugin directory needs an index module (${INDEX_FILES.join(", ")})`);
    file = join(path, index);
    if (readdirSync(path).some((f) => f.endsWith(".proto"))) serviceDir = path;
  }
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
  // A directory plugin may name its kind and name in a `manifest` export, as a component names its own.
  const manifest = typeof mod.manifest === "object" && mod.manifest !== null ? (mod.manifest as Record<string, unknown>) : {};
  const p = { ...manifest, ...(exported as Record<string, unknown>) };
  if (!(PLUGIN_KINDS as readonly unknown[]).includes(p.kind)) {
    throw fail(file, `plugin "kind" must be one of ${PLUGIN_KINDS.join(", ")}, got ${describe(p.kind)}`);
  }
  if (typeof p.name !== "string" || p.name.trim() === "") throw fail(file, `plugin "name" must be a non-empty string, got ${describe(p.name)}`);
  if (typeof p.create !== "function") throw fail(file, `plugin "create" must be a function, got ${describe(p.create)}`);
  if (serviceDir && typeof mod.handlers !== "object") throw fail(file, "a plugin with .proto files serves them: export `handlers`, an object of its methods' handlers");
  const module = p as unknown as PluginModule;
  return { module, source: path, ...(serviceDir ? { serviceDir } : {}) };
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
