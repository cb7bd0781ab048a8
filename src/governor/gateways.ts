/**
 * Gateways a governor runs (governor.json `gateways`): each a supervised
 * child process, `node-bin gateway ...`, whose near leg is the governor's own
 * network (its seeds: the governor's discovery endpoint and seeds; its
 * listen and advertise addresses; a discovery port of its own) and whose
 * far leg is what the entry says. A gateway that dies is started again with
 * backoff (doubling from 1 s to 30 s; reset after a minute up); the
 * governor's stop stops it (also a stop that keeps the containers: a
 * gateway holds no state, and the next governor starts its own, which takes
 * the same discovery ports); `governor status` lists it.
 *
 * Read at start: a change of the entries needs a governor restart.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import type { Logger } from "../component/context.ts";
import { networkLabel, parseNetworkName } from "../membership/network-name.ts";
import { NodeBinError } from "../wire/errors.ts";
import { lastError, selfCommand } from "./children.ts";

/** One entry of governor.json's `gateways`. */
export interface GatewaySpec {
  /** The gateway's name (its legs are hosts <name>~<network>); default `<governor host>-gw<index>`. */
  name?: string;
  /** The near network (default: the governor's). */
  network?: string;
  /** The near leg's discovery port (default: the governor's + 1 + the entry's index). */
  discoveryPort?: number;
  remoteNetwork: string;
  /** Discovery endpoints ("ip[:port]") of hosts of the remote network. */
  remoteSeeds: string[];
  /** Address the remote leg binds (an address of this host on the remote network). */
  remoteListen?: string;
  remoteAdvertise?: string;
  remoteDiscoveryPort?: number;
  /** The remote network's own cluster key file, when it is under another key than the governor's (resolved against the config file's directory). */
  remoteClusterKey?: string;
}

const KEYS = new Set(["name", "network", "discoveryPort", "remoteNetwork", "remoteSeeds", "remoteListen", "remoteAdvertise", "remoteDiscoveryPort", "remoteClusterKey"]);
export const MAX_GATEWAYS = 16;

/** Checks governor.json's `gateways`. Throws INVALID_ARGUMENT naming the file and field. */
export function parseGateways(value: unknown, file: string): GatewaySpec[] {
  const bad = (where: string, what: string) => new NodeBinError("INVALID_ARGUMENT", `${file}: gateways${where} ${what}`, { details: { file, field: `gateways${where}` } });
  if (!Array.isArray(value)) throw bad("", "must be an array of {remoteNetwork, remoteSeeds, remoteListen, ...}");
  if (value.length > MAX_GATEWAYS) throw bad("", `holds at most ${MAX_GATEWAYS} gateways`);
  const names = /^[^\s\p{Cc}]{1,64}$/u;
  return value.map((raw, i): GatewaySpec => {
    const at = `[${i}]`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw bad(at, "must be an object");
    const g = raw as Record<string, unknown>;
    for (const k of Object.keys(g)) if (!KEYS.has(k)) throw bad(`${at}.${k}`, `is not a gateway setting (known: ${[...KEYS].join(", ")})`);
    const text = (k: string, required = false): string | undefined => {
      const v = g[k];
      if (v === undefined && !required) return undefined;
      if (typeof v !== "string" || !names.test(v)) throw bad(`${at}.${k}`, "must be a name or address: 1 to 64 characters, no spaces");
      return v;
    };
    const port = (k: string): number | undefined => {
      const v = g[k];
      if (v === undefined) return undefined;
      if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > 65535) throw bad(`${at}.${k}`, "must be a port number (1 to 65535)");
      return v;
    };
    const seeds = g.remoteSeeds;
    if (!Array.isArray(seeds) || seeds.length === 0 || seeds.length > 64 || !seeds.every((s) => typeof s === "string" && names.test(s))) throw bad(`${at}.remoteSeeds`, "must be a list of ip[:port] (1 to 64)");
    const network = (k: "network" | "remoteNetwork"): string | undefined => {
      if (g[k] === undefined) return undefined;
      const name = parseNetworkName(g[k]);
      if (name === undefined) throw bad(`${at}.${k}`, "must be a network name: 1 to 64 letters, digits, '.', '_' or '-' (\"default\" is the default network)");
      return name;
    };
    if (g.remoteNetwork === undefined) throw bad(`${at}.remoteNetwork`, "is required: the network the gateway joins to this one");
    const spec: GatewaySpec = { remoteNetwork: network("remoteNetwork")!, remoteSeeds: seeds as string[] };
    const near = network("network");
    if (near !== undefined) spec.network = near;
    for (const k of ["name", "remoteListen", "remoteAdvertise"] as const) {
      const v = text(k);
      if (v !== undefined) spec[k] = v;
    }
    for (const k of ["discoveryPort", "remoteDiscoveryPort"] as const) {
      const v = port(k);
      if (v !== undefined) spec[k] = v;
    }
    if (g.remoteClusterKey !== undefined) {
      if (typeof g.remoteClusterKey !== "string" || g.remoteClusterKey.length === 0 || g.remoteClusterKey.length > 4096 || /\p{Cc}/u.test(g.remoteClusterKey)) throw bad(`${at}.remoteClusterKey`, "must be the path of a cluster key file");
      spec.remoteClusterKey = isAbsolute(g.remoteClusterKey) ? g.remoteClusterKey : join(dirname(resolve(file)), g.remoteClusterKey);
    }
    return spec;
  });
}

/** What the governor gives every gateway it runs. */
export interface GatewayChildrenOptions {
  host: string;
  network: string;
  /** The governor's discovery port, bind and advertise addresses, and seeds: the near leg's seeds are the governor itself and them. */
  discoveryPort: number;
  bind: string;
  advertise: string;
  seeds: string[];
  /** --cluster-key FILE / --insecure, as the governor's children get them. */
  securityArgs: string[];
  runtimeDir: string;
  logDir: string;
  log: Logger;
  command?: { command: string; args: string[] };
}

/** A gateway as `governor status` lists it. */
export interface GatewayStatus {
  name: string;
  network: string;
  remoteNetwork: string;
  discoveryPort: number;
  pid: number | null;
  state: "starting" | "running" | "restarting" | "stopped";
  restarts: number;
  log: string;
  lastError?: string;
}

interface Running {
  spec: GatewaySpec;
  name: string;
  discoveryPort: number;
  log: string;
  child: ChildProcess | undefined;
  state: GatewayStatus["state"];
  restarts: number;
  backoffMs: number;
  startedAt: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  exited: Promise<void> | undefined;
}

const FIRST_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30_000;
/** Up this long: its next death starts the backoff again from the first. */
const HEALTHY_MS = 60_000;

export class GatewayChildren {
  private readonly running: Running[];
  private stopping = false;

  constructor(
    specs: readonly GatewaySpec[],
    private readonly options: GatewayChildrenOptions,
  ) {
    this.running = specs.map((spec, i) => {
      const name = spec.name ?? `${options.host}-gw${i}`;
      return { spec, name, discoveryPort: spec.discoveryPort ?? options.discoveryPort + 1 + i, log: join(options.logDir, `gateway-${name.replace(/[^A-Za-z0-9_.-]/g, "_")}.log`), child: undefined, state: "starting", restarts: 0, backoffMs: FIRST_BACKOFF_MS, startedAt: 0, timer: undefined, exited: undefined };
    });
  }

  /** The arguments of one gateway's `node-bin gateway` (what it is started with). */
  argsOf(r: Running): string[] {
    const o = this.options;
    const s = r.spec;
    const self = `${o.advertise.includes(":") ? `[${o.advertise}]` : o.advertise}:${o.discoveryPort}`;
    const network = s.network ?? o.network;
    return [
      "gateway",
      "--host", r.name,
      ...(network ? ["--network", network] : []),
      "--seed", [self, ...o.seeds.map((e) => e.replace(/^tcp:\/\//, ""))].join(","),
      "--listen", o.bind,
      "--advertise", o.advertise,
      "--discovery-port", String(r.discoveryPort),
      "--remote-network", networkLabel(s.remoteNetwork),
      "--remote-seed", s.remoteSeeds.join(","),
      ...(s.remoteListen ? ["--remote-listen", s.remoteListen] : []),
      ...(s.remoteAdvertise ? ["--remote-advertise", s.remoteAdvertise] : []),
      ...(s.remoteDiscoveryPort ? ["--remote-discovery-port", String(s.remoteDiscoveryPort)] : []),
      ...(s.remoteClusterKey ? ["--remote-cluster-key", s.remoteClusterKey] : []),
      ...o.securityArgs,
    ];
  }

  /** Starts every gateway (each restarted with backoff when it dies, until stop()). */
  start(): void {
    for (const r of this.running) this.spawn(r);
  }

  private spawn(r: Running): void {
    if (this.stopping) return;
    const { command, args } = this.options.command ?? selfCommand();
    let fd: number | undefined;
    try {
      fd = openSync(r.log, "a", 0o600);
      const child = spawn(command, [...args, ...this.argsOf(r)], { stdio: ["ignore", fd, fd], env: { ...process.env, NODEBIN_RUNTIME_DIR: this.options.runtimeDir } });
      r.child = child;
      r.state = "running";
      r.startedAt = Date.now();
      r.exited = new Promise((resolve) => child.once("exit", (code, signal) => {
        resolve();
        this.exited(r, code, signal);
      }));
      child.once("error", (err) => this.options.log.warn(`gateway ${r.name} to network ${r.spec.remoteNetwork}: cannot start: ${err.message}`));
      this.options.log.info(`gateway ${r.name} to network ${r.spec.remoteNetwork} started (pid ${child.pid}, log ${r.log})`);
    } catch (err) {
      this.options.log.warn(`gateway ${r.name}: cannot start: ${NodeBinError.from(err).message}`);
      this.retry(r);
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  private exited(r: Running, code: number | null, signal: NodeJS.Signals | null): void {
    r.child = undefined;
    if (this.stopping) {
      r.state = "stopped";
      return;
    }
    if (Date.now() - r.startedAt >= HEALTHY_MS) r.backoffMs = FIRST_BACKOFF_MS;
    const why = lastError(r.log);
    this.options.log.warn(`gateway ${r.name} to network ${r.spec.remoteNetwork} exited (${signal ?? `code ${code}`})${why ? `: ${why}` : ""}; starting it again in ${r.backoffMs} ms`);
    this.retry(r);
  }

  private retry(r: Running): void {
    r.state = "restarting";
    r.restarts++;
    const wait = r.backoffMs;
    r.backoffMs = Math.min(MAX_BACKOFF_MS, r.backoffMs * 2);
    r.timer = setTimeout(() => {
      r.timer = undefined;
      this.spawn(r);
    }, wait);
    r.timer.unref?.();
  }

  status(): GatewayStatus[] {
    return this.running.map((r) => {
      const why = r.restarts > 0 ? lastError(r.log) : undefined;
      return {
        name: r.name,
        network: r.spec.network ?? this.options.network,
        remoteNetwork: r.spec.remoteNetwork,
        discoveryPort: r.discoveryPort,
        pid: r.child?.pid ?? null,
        state: r.state,
        restarts: r.restarts,
        log: r.log,
        ...(why ? { lastError: why } : {}),
      };
    });
  }

  /** Stops every gateway: SIGTERM (it leaves both networks), SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.running.map(async (r) => {
        if (r.timer) clearTimeout(r.timer);
        r.state = "stopped";
        const child = r.child;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        child.kill("SIGTERM");
        const kill = setTimeout(() => child.kill("SIGKILL"), graceMs);
        await r.exited;
        clearTimeout(kill);
      }),
    );
  }
}
