/**
 * Bind versus advertise (Consul's bind_addr / advertise_addr, Akka's
 * bind.hostname / canonical.hostname): a process binds its tcp sockets to one
 * address (by default every interface, so `--seed 127.0.0.1` reaches it on
 * its own host) and tells others another (by default the host's first
 * routable IPv4, so hosts elsewhere reach it).
 */
import { networkInterfaces } from "node:os";

/** Every IPv4 interface. */
const ALL_INTERFACES = "0.0.0.0";
const LOOPBACK = "127.0.0.1";

/**
 * The address tcp sockets bind when no --listen is given, the one place that
 * decides it: every interface with a cluster key (CurveZMQ guards every
 * connection), loopback only without one (secure by default: plain tcp is
 * not offered to the network unless asked for with --insecure).
 */
export function defaultBind(keyed = false): string {
  return keyed ? ALL_INTERFACES : LOOPBACK;
}

/** Whether `address` names only this host (127.0.0.0/8, ::1, localhost). */
export function isLoopback(address: string): boolean {
  return address.startsWith("127.") || address === "::1" || address === "localhost";
}

/** Whether `address` is a wildcard (binds every interface, names none). */
export function isWildcard(address: string): boolean {
  return address === "0.0.0.0" || address === "::" || address === "*";
}

/** The host's first non-internal IPv4 address, else 127.0.0.1. */
export function firstRoutableIPv4(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return "127.0.0.1";
}

/**
 * The address to advertise: `advertise` if given, else the bind address when
 * it names one interface, else the host's first routable IPv4.
 */
export function advertiseAddress(bind: string, advertise?: string): string {
  if (advertise) return advertise;
  return isWildcard(bind) ? firstRoutableIPv4() : bind;
}

/** `tcp://ADDRESS:PORT`, with brackets for IPv6. */
export function tcpEndpoint(address: string, port: number): string {
  return `tcp://${address.includes(":") ? `[${address}]` : address}:${port}`;
}

/**
 * Whether the tcp endpoint `endpoint` names a socket of this host at `port`:
 * a loopback address, one of this host's interfaces, or `also` (the
 * advertised address). How an agent recognises itself among its seeds.
 */
export function isOwnEndpoint(endpoint: string, port: number, also: string[] = []): boolean {
  const m = /^tcp:\/\/(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(endpoint);
  if (!m || Number(m[3]) !== port) return false;
  const host = (m[1] ?? m[2])!;
  if (host === "localhost" || host.startsWith("127.") || host === "::1" || also.includes(host)) return true;
  return Object.values(networkInterfaces()).some((list) => (list ?? []).some((a) => a.address === host));
}
