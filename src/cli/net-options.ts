/** Network flags shared by the subcommands that join or reach a network: seeds, host id, bind and advertise addresses. */
import { existsSync } from "node:fs";
import { isIP } from "node:net";
import { join, resolve } from "node:path";
import { PluginHost } from "../governor/plugins.ts";
import type { PluginContext } from "../governor/strategy.ts";
import type { SecurityProvider } from "../security/provider.ts";
import { parseNetworkName } from "../membership/network-name.ts";
import { defaultBind, isLoopback, isWildcard } from "../transport/addresses.ts";
import { entryDir } from "./components-dir.ts";
import { DEFAULT_DISCOVERY_PORT, ensureRuntimeDir, hostIdentity } from "../transport/runtime-dir.ts";
import { UsageError } from "./output.ts";

/** The --listen and --advertise options, worded once for every subcommand that binds. */
export const LISTEN_HELP = "address tcp sockets bind (default: every interface, 0.0.0.0, with a cluster key; 127.0.0.1 without one, and any other address then needs --insecure)";
export const ADVERTISE_HELP = "address other hosts reach this one at (default: the --listen address if it names one, else this host's first non-loopback IPv4, else 127.0.0.1)";

/**
 * Discovery endpoints from --seed values: "ip[:port]" items, comma-separated
 * and/or repeated ("10.0.0.5", "10.0.0.6:7401", "[::1]:7400"). Throws UsageError.
 */
export function parseSeeds(values: unknown, defaultPort = DEFAULT_DISCOVERY_PORT): string[] {
  const items = (values === undefined ? [] : [values].flat()).flatMap((v) => String(v).split(",")).map((s) => s.trim()).filter(Boolean);
  return items.map((item) => {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+))(?::(\d{1,5}))?$/.exec(item);
    const port = m?.[3] === undefined ? defaultPort : Number(m[3]);
    if (!m || !(port > 0 && port < 65536)) throw new UsageError(`--seed takes ip[:port], got ${JSON.stringify(item)}`);
    return m[1] ? `tcp://[${m[1]}]:${port}` : `tcp://${m[2]}:${port}`;
  });
}

/**
 * The host id: --host, else $NODEBIN_HOST, else the id this host keeps in its
 * runtime directory (made there by the first process that needs it: see
 * hostIdentity; the machine's host name alone is no identity, two machines
 * may share it). Throws as ensureRuntimeDir and hostIdentity do.
 */
export function hostId(flag: unknown, env: Record<string, string | undefined> = process.env): string {
  if (typeof flag === "string" && flag) return flag;
  return env.NODEBIN_HOST || hostIdentity(ensureRuntimeDir(env));
}

/**
 * The address to bind: --listen (an IP, or a wildcard), else defaultBind()
 * (every interface with a cluster key, loopback without). Without a key, an
 * address other than loopback needs `insecure` (--insecure). Throws UsageError.
 */
export function bindAddress(flag: unknown, keyed = false, insecure = false): string {
  if (flag === undefined || flag === "") return defaultBind(keyed);
  const value = String(flag);
  if (!isIP(value) && value !== "*") throw new UsageError(`--listen takes an IP address of this host (or 0.0.0.0 for every interface), got ${JSON.stringify(value)}`);
  const bind = value === "*" ? "0.0.0.0" : value;
  if (!keyed && !insecure && !isLoopback(bind)) {
    throw new UsageError(
      `--listen ${bind} without a cluster key would serve plain tcp to the network: give --cluster-key FILE (make one with \`node-bin keygen FILE\`), or --insecure to do it anyway`,
    );
  }
  return bind;
}

export const CLUSTER_KEY_HELP = "cluster key file: CurveZMQ on every tcp socket, only its holders may join or call (default: $NODEBIN_CLUSTER_KEY_FILE, else cluster.key beside node-bin; make one with `node-bin keygen FILE`)";
export const PLUGINS_HELP = "plugins directory: control-plane plugins (security, loader, discovery, logging, lifecycle, zombie), each replacing the built-in of its kind (default: $NODEBIN_PLUGINS_DIR)";
export const LOADER_HELP = "a component loader plugin module, instead of the built-in loader";
export const INSECURE_HELP = "without a cluster key, allow a --listen address other than loopback (plain tcp: anyone who reaches it can call and join)";

/** The cluster key file: --cluster-key, else $NODEBIN_CLUSTER_KEY_FILE, else cluster.key beside the entry point if there is one. */
export function keyFileFrom(flag: unknown, env: Record<string, string | undefined> = process.env): string | undefined {
  if (typeof flag === "string" && flag) return resolve(flag);
  if (env.NODEBIN_CLUSTER_KEY_FILE) return resolve(env.NODEBIN_CLUSTER_KEY_FILE);
  const dir = entryDir();
  const beside = dir && join(dir, "cluster.key");
  return beside && existsSync(beside) ? beside : undefined;
}

export interface NetSecurity {
  provider: SecurityProvider;
  /** The address tcp sockets bind. */
  bind: string;
  /** --insecure: plain tcp beyond loopback allowed. */
  insecure: boolean;
  /** The arguments that give a child process (a governor's container) the same network security (--insecure); the key goes with startPlugins' childArgs. */
  childArgs: string[];
  /** The line the process says about it at start. */
  notice: { level: "info" | "warn"; line: string };
}

/**
 * The role's plugins up to its security provider: the plugin host of
 * --plugins DIR (and --loader PATH), and its first start-up step, the security
 * provider, created with the cluster key (keyFileFrom). What the roles that
 * bind need next is netSecurity(). Throws what PluginHost throws.
 */
export async function startPlugins(
  o: { clusterKey?: unknown; plugins?: unknown; loader?: unknown },
  context: Omit<PluginContext, "clusterKeyFile">,
  defaultDir?: string,
): Promise<{ host: PluginHost; context: PluginContext; provider: SecurityProvider; childArgs: string[] }> {
  const dir = typeof o.plugins === "string" && o.plugins ? resolve(o.plugins) : defaultDir ?? (process.env.NODEBIN_PLUGINS_DIR ? resolve(process.env.NODEBIN_PLUGINS_DIR) : undefined);
  const loader = typeof o.loader === "string" && o.loader ? resolve(o.loader) : undefined;
  const host = await PluginHost.discover({ ...(dir ? { dirs: [dir] } : {}), ...(loader ? { loader } : {}) });
  const keyFile = keyFileFrom(o.clusterKey);
  const full: PluginContext = { ...context, ...(keyFile ? { clusterKeyFile: keyFile } : {}) };
  const provider = await host.start("security", full);
  // A governor's children find the same plugins, and the same key.
  const childArgs = [...(dir ? ["--plugins", dir] : []), ...(loader ? ["--loader", loader] : []), ...(keyFile ? ["--cluster-key", keyFile] : [])];
  return { host, context: full, provider, childArgs };
}

/**
 * The security of a role that binds, from its security provider: the bind
 * address (bindAddress: every interface when the provider secures tcp,
 * loopback otherwise unless --insecure) and what to say about it. Throws
 * UsageError.
 */
export function netSecurity(o: { insecure?: unknown; listen?: unknown }, provider: SecurityProvider): NetSecurity {
  const insecure = o.insecure === true;
  const keyed = provider.wire !== undefined;
  const bind = bindAddress(o.listen, keyed, insecure);
  const notice: NetSecurity["notice"] = keyed
    ? { level: "info", line: `tcp secured with ${provider.describe()}` }
    : isLoopback(bind)
      ? { level: "info", line: `no cluster key: tcp listens on ${bind} only (to join other hosts, make a key with \`node-bin keygen FILE\` and give it to every host with --cluster-key FILE)` }
      : { level: "warn", line: `insecure: listening on ${bind} with no cluster key: anyone who reaches this host can call its components and join its network` };
  return { provider, bind, insecure, childArgs: insecure && !keyed ? ["--insecure"] : [], notice };
}


/** The address to advertise, when --advertise is given. Throws UsageError for a wildcard or a non-address. */
export function advertiseFlag(flag: unknown): string | undefined {
  if (flag === undefined || flag === "") return undefined;
  const value = String(flag);
  if (isWildcard(value)) throw new UsageError("--advertise needs an address others can reach this host at, not a wildcard");
  if (!isIP(value)) throw new UsageError(`--advertise takes an IP address, got ${JSON.stringify(value)}`);
  return value;
}

/** A whole number flag within bounds. Throws UsageError. */
export const NETWORK_HELP = "network name: the hosts that reach each other directly and share one gossip domain (default: default)";

/**
 * --network NAME as the process's network: "default" (the default) is the
 * empty name every older process goes by, so `--network default` and no
 * flag are one network. A name is 1 to 64 letters, digits, '.', '_' or '-'.
 */
export function networkFlag(value: unknown, flag = "--network"): string {
  const network = parseNetworkName(value);
  if (network === undefined) throw new UsageError(`${flag} takes a name of 1 to 64 letters, digits, '.', '_' or '-', got ${JSON.stringify(value)}`);
  return network;
}

export function intFlag(value: unknown, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag} takes a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return n;
}
