/**
 * The governor's settings and config: the tunables and their defaults, the
 * config file (checked by parseConfig, re-read when it changes), the
 * overrides `node-bin governor set` persists in the state directory, and what
 * they add up to: the live settings object, the host capacity and each
 * component's effective limits. Precedence for every setting: default <
 * config file < command line < `governor set`.
 */
import { availableParallelism, cpus } from "node:os";
import { readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { NodeBinError } from "../wire/errors.ts";
import { parseGateways, type GatewaySpec } from "./gateways.ts";
import type { ComponentState, GovernorState } from "./state.ts";
import type { GovernorSettings } from "./strategy.ts";

/** Governor tunables beyond the strategies' (all changeable live). */
export interface SupervisionSettings {
  /** Ping period (ms; default 1000). */
  pingMs: number;
  /** A child silent this long is a zombie (ms; default 3000: detected within about 4 s). */
  zombieAfterMs: number;
  /** A child not registered this long after its spawn failed to start (ms; default 30 000). */
  startTimeoutMs: number;
  /**
   * Most nodes one Register may lease (default 64). A container has one node
   * and a joined `node-bin dev` one per component: anything past this is a
   * process making the host agent hold table entries for it, refused with
   * RESOURCE_EXHAUSTED.
   */
  maxLeaseNodes: number;
}

/**
 * The provider loop's guard rails (governor/provider.ts; used only when a
 * provider plugin runs): flags `--provider-max-hosts` ..., governor.json keys
 * of the same names, `governor set provider-max-hosts N` ...
 */
export interface ProviderSettings {
  /** Most launched hosts alive at once (default 4). */
  providerMaxHosts: number;
  /** No launch or release this long after a launch or release (ms; default 60 000). */
  providerCooldownMs: number;
  /** Every host full and capacity requests unmet for this long before a launch (ms; default 10 000). */
  providerSustainMs: number;
  /** A launched host running no node this long is released (ms; default 120 000). */
  providerIdleMs: number;
}

export type Settings = GovernorSettings & SupervisionSettings & ProviderSettings;

export const DEFAULT_SETTINGS: Settings = {
  idleMs: 60_000,
  queueWaitMs: 200,
  queueLength: 32,
  sustainMs: 1000,
  pingMs: 1000,
  zombieAfterMs: 3000,
  startTimeoutMs: 30_000,
  maxLeaseNodes: 64,
  providerMaxHosts: 4,
  providerCooldownMs: 60_000,
  providerSustainMs: 10_000,
  providerIdleMs: 120_000,
};

/** `node-bin governor set KEY VALUE` keys and the setting each changes. */
export const SETTING_KEYS: Record<string, keyof Settings> = {
  "idle-ms": "idleMs",
  "queue-wait-ms": "queueWaitMs",
  "queue-length": "queueLength",
  "sustain-ms": "sustainMs",
  "ping-ms": "pingMs",
  "zombie-after-ms": "zombieAfterMs",
  "start-timeout-ms": "startTimeoutMs",
  "max-lease-nodes": "maxLeaseNodes",
  "provider-max-hosts": "providerMaxHosts",
  "provider-cooldown-ms": "providerCooldownMs",
  "provider-sustain-ms": "providerSustainMs",
  "provider-idle-ms": "providerIdleMs",
};

/** The governor's config file, as parseConfig checked it. */
export interface ConfigFile {
  capacity?: number;
  components?: Record<string, { min?: number; max?: number }>;
  plugins?: Record<string, Record<string, unknown>>;
  /** The built-in provider's commands (plugins/provider-command.ts): a shell line, or a program and its arguments. Read at start. */
  providerCommand?: string | string[];
  providerReleaseCommand?: string | string[];
  /** Gateways the governor runs as children (governor/gateways.ts). Read at start. */
  gateways?: GatewaySpec[];
  [setting: string]: unknown;
}

interface Overrides {
  capacity?: number;
  settings: Partial<Settings>;
  components: Record<string, { min?: number; max?: number }>;
}

/** Two per CPU. */
export function defaultCapacity(): number {
  return 2 * (typeof availableParallelism === "function" ? availableParallelism() : cpus().length);
}

export interface GovernorConfigOptions {
  /** JSON config file re-read when it changes. */
  configFile?: string;
  /** Settings given on the command line (over the config file's). */
  settings?: Partial<Settings>;
  /** Capacity given on the command line. */
  capacity?: number;
  /** The governor's state directory (where the `governor set` overrides are kept). */
  stateDir: string;
}

/**
 * Keeps `state.settings` and `state.capacity` current from the config file,
 * the command line and the overrides, and answers each component's limits.
 */
export class GovernorConfig {
  private config: ConfigFile = {};
  private configMtime = 0;
  private overrides: Overrides = { settings: {}, components: {} };

  constructor(
    private readonly state: GovernorState,
    private readonly options: GovernorConfigOptions,
  ) {}

  /** The config file's `plugins` section (options per plugin name). */
  get plugins(): Record<string, Record<string, unknown>> {
    return this.config.plugins ?? {};
  }

  /** The config file's gateways (as read at start: a change needs a restart). */
  get gateways(): GatewaySpec[] {
    return this.config.gateways ?? [];
  }

  /** The config file's provider commands (as read at start: a change needs a restart). */
  get providerCommands(): { command?: string | string[]; releaseCommand?: string | string[] } {
    const { providerCommand, providerReleaseCommand } = this.config;
    return { ...(providerCommand !== undefined ? { command: providerCommand } : {}), ...(providerReleaseCommand !== undefined ? { releaseCommand: providerReleaseCommand } : {}) };
  }

  /** Effective limits: manifest, then config file, then `governor set` (min 0 is kept at 1: see README; code fetched from another host: min 0 unless set). */
  limits(comp: ComponentState): { min: number; max: number } {
    const fromConfig = this.config.components?.[comp.name] ?? {};
    const fromSet = this.overrides.components[comp.name] ?? {};
    let min = fromSet.min ?? fromConfig.min ?? comp.manifest?.min ?? 1;
    const max = fromSet.max ?? fromConfig.max ?? comp.manifest?.max ?? 16;
    // Code fetched from another host is spilled capacity: none of it is kept running when idle (only `governor set` pins a min).
    if (comp.fetched) min = fromSet.min ?? 0;
    min = Math.max(comp.fetched ? 0 : 1, Math.min(min, max));
    return { min, max: Math.max(max, 1) };
  }

  /** Changes one setting live (`node-bin governor set`). Throws INVALID_ARGUMENT / NOT_FOUND. */
  set(key: string, component: string, value: number): void {
    if (!Number.isInteger(value) || value < 0) throw new NodeBinError("INVALID_ARGUMENT", `${key} must be a whole number >= 0, got ${value}`);
    if (key === "capacity") {
      if (value < 1) throw new NodeBinError("INVALID_ARGUMENT", "capacity must be at least 1");
      this.overrides.capacity = value;
    } else if (key === "min" || key === "max") {
      if (!this.state.components.has(component)) {
        throw new NodeBinError("NOT_FOUND", `no component ${JSON.stringify(component)} (known: ${[...this.state.components.keys()].join(", ") || "none"})`);
      }
      if (key === "max" && value < 1) throw new NodeBinError("INVALID_ARGUMENT", "max must be at least 1");
      (this.overrides.components[component] ??= {})[key] = value;
    } else if (SETTING_KEYS[key]) {
      if (value < 1) throw new NodeBinError("INVALID_ARGUMENT", `${key} must be at least 1`);
      this.overrides.settings[SETTING_KEYS[key]] = value;
    } else {
      throw new NodeBinError("INVALID_ARGUMENT", `unknown setting ${JSON.stringify(key)}; known: capacity, min, max (with a component), ${Object.keys(SETTING_KEYS).join(", ")}`);
    }
    this.applySettings();
    this.saveOverrides();
    this.state.log.info(`set ${component ? `${component} ` : ""}${key} = ${value}`);
  }

  private applySettings(): void {
    const fromConfig: Partial<Settings> = {};
    for (const key of Object.keys(DEFAULT_SETTINGS) as (keyof Settings)[]) {
      const v = this.config[key];
      if (typeof v === "number") fromConfig[key] = v;
    }
    Object.assign(this.state.settings, DEFAULT_SETTINGS, fromConfig, this.options.settings ?? {}, this.overrides.settings);
    // Precedence as for every setting: default < config file < command line < `governor set`.
    this.state.capacity = this.overrides.capacity ?? this.options.capacity ?? this.config.capacity ?? defaultCapacity();
  }

  /**
   * Reads the config file when it changed (a bad file is reported and the
   * previous config kept). `first`: at start-up, where a bad file throws
   * INVALID_ARGUMENT instead, and the settings are applied even without one.
   */
  readConfig(first: boolean): void {
    const file = this.options.configFile;
    if (!file) {
      if (first) this.applySettings();
      return;
    }
    let mtime = 0;
    try {
      mtime = statSync(file).mtimeMs;
    } catch {
      if (first) this.applySettings();
      if (this.configMtime !== 0) {
        this.configMtime = 0;
        this.config = {};
        this.applySettings();
        this.state.log.info(`config file ${file} removed: back to defaults`);
      }
      return;
    }
    if (mtime === this.configMtime) return;
    this.configMtime = mtime;
    try {
      this.config = parseConfig(readFileSync(file, "utf8"), file);
      this.applySettings();
      if (!first) this.state.log.info(`config file ${file} re-read`);
    } catch (err) {
      if (first) throw err;
      this.state.log.error(`${(err as Error).message}; keeping the previous config`);
    }
  }

  private get overridesFile(): string {
    return join(this.options.stateDir, "settings.json");
  }

  /** Loads the overrides a previous governor persisted (none is fine). */
  loadOverrides(): void {
    try {
      const o = JSON.parse(readFileSync(this.overridesFile, "utf8")) as Overrides;
      this.overrides = { settings: o.settings ?? {}, components: o.components ?? {}, ...(o.capacity ? { capacity: o.capacity } : {}) };
    } catch {
      // none yet
    }
  }

  private saveOverrides(): void {
    try {
      writeFileSync(this.overridesFile, `${JSON.stringify(this.overrides, null, 2)}\n`, { mode: 0o600 });
    } catch (err) {
      this.state.log.warn(`cannot save settings to ${this.overridesFile}: ${(err as Error).message}`);
    }
  }

  /** Deletes the persisted overrides (a full stop forgets the live settings). */
  forgetOverrides(): void {
    rmSync(this.overridesFile, { force: true });
  }
}

/** Parses and checks the governor's config file. Throws INVALID_ARGUMENT naming the file and field. */
export function parseConfig(text: string, file: string): ConfigFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new NodeBinError("INVALID_ARGUMENT", `${file}: not JSON (${(err as Error).message})`, { details: { file } });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new NodeBinError("INVALID_ARGUMENT", `${file}: must be a JSON object`, { details: { file } });
  const config = parsed as ConfigFile;
  const wholeNumber = (v: unknown, where: string, min: number) => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) throw new NodeBinError("INVALID_ARGUMENT", `${file}: ${where} must be a whole number >= ${min}`, { details: { file, field: where } });
  };
  for (const [key, value] of Object.entries(config)) {
    if (key === "capacity") wholeNumber(value, key, 1);
    else if (key in DEFAULT_SETTINGS) wholeNumber(value, key, 1);
    else if (key === "components") {
      if (typeof value !== "object" || value === null) throw new NodeBinError("INVALID_ARGUMENT", `${file}: components must be an object of {min, max}`, { details: { file } });
      for (const [name, limits] of Object.entries(value as Record<string, unknown>)) {
        if (typeof limits !== "object" || limits === null) throw new NodeBinError("INVALID_ARGUMENT", `${file}: components.${name} must be an object`, { details: { file } });
        for (const [k, v] of Object.entries(limits)) {
          if (k !== "min" && k !== "max") throw new NodeBinError("INVALID_ARGUMENT", `${file}: components.${name}.${k} is not a limit (min, max)`, { details: { file } });
          wholeNumber(v, `components.${name}.${k}`, k === "max" ? 1 : 0);
        }
      }
    } else if (key === "providerCommand" || key === "providerReleaseCommand") {
      const line = typeof value === "string" ? value.trim() !== "" : Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === "string") && value[0] !== "";
      if (!line) throw new NodeBinError("INVALID_ARGUMENT", `${file}: ${key} must be a shell command line (a string) or a program with its arguments (an array of strings)`, { details: { file, field: key } });
    } else if (key === "plugins") {
      if (typeof value !== "object" || value === null) throw new NodeBinError("INVALID_ARGUMENT", `${file}: plugins must be an object of plugin name -> options`, { details: { file } });
    } else if (key === "gateways") {
      // Kept as parsed: names normalised ("default" is ""), key paths resolved against the file's directory.
      config.gateways = parseGateways(value, file);
    } else {
      throw new NodeBinError("INVALID_ARGUMENT", `${file}: unknown key ${JSON.stringify(key)} (known: capacity, components, gateways, plugins, providerCommand, providerReleaseCommand, ${Object.keys(DEFAULT_SETTINGS).join(", ")})`, { details: { file } });
    }
  }
  return config;
}
