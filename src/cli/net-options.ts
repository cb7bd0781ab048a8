/** Network flags shared by the subcommands that join or reach a network: seeds, host id, bind and advertise addresses. */
import { isIP } from "node:net";
import { defaultBind, isWildcard } from "../transport/addresses.ts";
import { DEFAULT_DISCOVERY_PORT, ensureRuntimeDir, hostIdentity } from "../transport/runtime-dir.ts";
import { UsageError } from "./output.ts";

/** The --listen and --advertise options, worded once for every subcommand that binds. */
export const LISTEN_HELP = "address tcp sockets bind (default: every interface, 0.0.0.0)";
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

/** The address to bind: --listen (an IP, or a wildcard), else defaultBind(). Throws UsageError. */
export function bindAddress(flag: unknown): string {
  if (flag === undefined || flag === "") return defaultBind();
  const value = String(flag);
  if (!isIP(value) && value !== "*") throw new UsageError(`--listen takes an IP address of this host (or 0.0.0.0 for every interface), got ${JSON.stringify(value)}`);
  return value === "*" ? "0.0.0.0" : value;
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
export function intFlag(value: unknown, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag} takes a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return n;
}
