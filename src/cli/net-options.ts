/** Network flags shared by the subcommands that join or reach a network: seeds, host id, listen address. */
import { hostname, networkInterfaces } from "node:os";
import { DEFAULT_DISCOVERY_PORT } from "../container/process.ts";
import { UsageError } from "./output.ts";

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

/** The host id: --host, else $NODEBIN_HOST, else the machine's host name. */
export function hostId(flag: unknown, env: Record<string, string | undefined> = process.env): string {
  return typeof flag === "string" && flag ? flag : env.NODEBIN_HOST || hostname();
}

/** The address to listen on and advertise: --listen, else this host's first non-internal IPv4, else 127.0.0.1. */
export function listenAddress(flag: unknown): string {
  if (typeof flag === "string" && flag) {
    if (flag === "0.0.0.0" || flag === "::") throw new UsageError("--listen needs an address others can reach this host at, not a wildcard");
    return flag;
  }
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return "127.0.0.1";
}

/** A whole number flag within bounds. Throws UsageError. */
export function intFlag(value: unknown, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag} takes a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return n;
}
