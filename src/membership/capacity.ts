/**
 * Capacity per tier, known rather than guessed: every governor gossips what
 * its host can still take (process slots, slots used, and each component's
 * nodes and load, in its record's GossipBody.capacity), and every gateway
 * gossips a summary of each network it reaches (GossipBody.remotes). From
 * those, any agent knows three tiers:
 *
 * - this host: its own slots;
 * - this network: the sum over the hosts of its network;
 * - remote networks: what the gateways of this network say of theirs (the
 *   same network summed up by two gateways is one network: the larger
 *   figures are taken, never their sum).
 *
 * and where a capacity request goes when this host is full: the host of this
 * network with the most free slots, else a gateway to a remote network with
 * free slots (capacityTarget). Everything here is pure: the records come from
 * hostile peers, so what is read of them is bounded (sanitize*).
 */
import type { CapacityRequest, ComponentLoad, HostCapacity, HostSummary, RemoteNetwork } from "../wire/control.ts";

export type { ComponentLoad, HostCapacity, HostSummary, RemoteNetwork } from "../wire/control.ts";

/** Bounds on what one record may make an agent hold or weigh. */
export const MAX_COMPONENT_LOADS = 256;
export const MAX_REMOTES = 16;
export const MAX_REMOTE_COMPONENTS = 1024;
const MAX_NAME = 256;
const U32 = 0xffffffff;

/** Free slots of a host: its capacity less what is used (never below 0). */
export function freeSlots(capacity: HostCapacity | undefined): number {
  return capacity ? Math.max(0, capacity.slots - capacity.used) : 0;
}

function u32(v: unknown): number {
  const n = typeof v === "number" ? v : typeof v === "string" ? Number(v) : Number.NaN;
  return Number.isFinite(n) && n > 0 ? Math.min(U32, Math.floor(n)) : 0;
}

function name(v: unknown): string {
  return typeof v === "string" && v.length <= MAX_NAME ? v : "";
}

/**
 * A host's capacity as a record says it, bounded: at most
 * MAX_COMPONENT_LOADS components (the rest ignored), names of sane length,
 * numbers as unsigned 32-bit. Undefined when the record says none.
 */
export function sanitizeCapacity(raw: unknown): HostCapacity | undefined {
  if (!raw || typeof raw !== "object") return undefined;
  const r = raw as Record<string, unknown>;
  const components: ComponentLoad[] = [];
  for (const c of Array.isArray(r.components) ? r.components.slice(0, MAX_COMPONENT_LOADS) : []) {
    if (!c || typeof c !== "object") continue;
    const x = c as Record<string, unknown>;
    const n = name(x.name);
    if (!n) continue;
    components.push({ name: n, hash: name(x.hash), nodes: u32(x.nodes), queued: u32(x.queued), capacity: u32(x.capacity), max: u32(x.max) });
  }
  return { slots: u32(r.slots), used: u32(r.used), components, provider: r.provider === true };
}

/** A gateway's remote networks as its record says them, bounded (MAX_REMOTES, MAX_REMOTE_COMPONENTS each). */
export function sanitizeRemotes(raw: unknown): RemoteNetwork[] {
  if (!Array.isArray(raw)) return [];
  const out: RemoteNetwork[] = [];
  for (const x of raw.slice(0, MAX_REMOTES)) {
    if (!x || typeof x !== "object") continue;
    const r = x as Record<string, unknown>;
    const components = Array.isArray(r.components) ? r.components.slice(0, MAX_REMOTE_COMPONENTS).map(name).filter(Boolean) : [];
    out.push({ network: name(r.network), hosts: u32(r.hosts), slots: u32(r.slots), free: u32(r.free), components });
  }
  return out;
}

/** What a host record's role is, from what it carries: a governor gossips its capacity, a gateway its remote networks. */
export function roleOf(summary: Pick<HostSummary, "capacity" | "remotes">): string {
  if (summary.remotes.length > 0) return "gateway";
  return summary.capacity ? "governor" : "agent";
}

/** One tier summed up. */
export interface TierTotals {
  /** Hosts counted (those that gossip a capacity: governors). */
  hosts: number;
  slots: number;
  used: number;
  free: number;
  /** Per component: its nodes and load over the tier. */
  components: Record<string, { nodes: number; queued: number; capacity: number }>;
}

/** A remote network as this network's gateways know it. */
export interface RemoteTier {
  network: string;
  /** The gateways of this network that reach it (their host ids). */
  gateways: string[];
  hosts: number;
  slots: number;
  free: number;
  components: string[];
}

/** The three tiers as one agent sees them. */
export interface Tiers {
  host: TierTotals & { id: string };
  network: TierTotals & { name: string };
  remotes: RemoteTier[];
}

function totals(hosts: readonly HostSummary[]): TierTotals {
  const t: TierTotals = { hosts: 0, slots: 0, used: 0, free: 0, components: {} };
  for (const h of hosts) {
    if (!h.capacity) continue;
    t.hosts++;
    t.slots += h.capacity.slots;
    t.used += Math.min(h.capacity.used, h.capacity.slots);
    t.free += freeSlots(h.capacity);
    for (const c of h.capacity.components) {
      const o = (t.components[c.name] ??= { nodes: 0, queued: 0, capacity: 0 });
      o.nodes += c.nodes;
      o.queued += c.queued;
      o.capacity += c.capacity;
    }
  }
  return t;
}

/** The tiers seen from host `self` of network `network`, over the summaries an agent holds (its own among them). */
export function tiersOf(self: string, network: string, hosts: readonly HostSummary[]): Tiers {
  const mine = hosts.filter((h) => h.host === self);
  const local = hosts.filter((h) => h.network === network);
  const remotes = new Map<string, RemoteTier>();
  for (const gw of local) {
    for (const r of gw.remotes) {
      if (!r.network || r.network === network) continue;
      const t = remotes.get(r.network);
      if (!t) {
        remotes.set(r.network, { network: r.network, gateways: [gw.host], hosts: r.hosts, slots: r.slots, free: r.free, components: [...r.components] });
        continue;
      }
      // Two gateways summing up the same network: the larger figures (one may lag), never the sum.
      t.gateways.push(gw.host);
      t.hosts = Math.max(t.hosts, r.hosts);
      t.slots = Math.max(t.slots, r.slots);
      t.free = Math.max(t.free, r.free);
      t.components = [...new Set([...t.components, ...r.components])];
    }
  }
  return {
    host: { id: self, ...totals(mine) },
    network: { name: network, ...totals(local) },
    remotes: [...remotes.values()].sort((a, b) => a.network.localeCompare(b.network)),
  };
}

/** Where a capacity request goes next (see capacityTarget). */
export type CapacityTarget =
  | { tier: "network"; host: HostSummary }
  | { tier: "remote"; host: HostSummary; network: string };

/**
 * Where a capacity request this host cannot serve goes next, by the seed's
 * order of tiers: the host of this network with the most free slots (among
 * those not yet visited, and where the component may still grow: below its
 * max there; a host with the component's code first when free slots tie);
 * else, when the request's scope allows (any), a gateway of this network to
 * the remote network with the most free slots that the request has not come
 * through. Gateways with equal figures share the requests (`random`).
 * Undefined: nowhere has room (or the scope forbids looking further).
 */
export function capacityTarget(
  request: Pick<CapacityRequest, "component" | "visited" | "scope" | "networks">,
  self: { host: string; network: string },
  hosts: readonly HostSummary[],
  random: () => number = Math.random,
): CapacityTarget | undefined {
  const scope = request.scope || "any";
  if (scope === "host" || scope === "process") return undefined;
  const visited = new Set([...request.visited, self.host]);
  const through = new Set([...(request.networks ?? []), self.network]);
  const peers = hosts.filter((h) => h.network === self.network && !visited.has(h.host) && h.endpoint);
  const roomy = peers.filter((h) => {
    if (freeSlots(h.capacity) === 0) return false;
    const load = h.capacity!.components.find((c) => c.name === request.component);
    return !load || !load.max || load.nodes < load.max;
  });
  const hasCode = (h: HostSummary) => Number(Boolean(h.capacity!.components.find((c) => c.name === request.component && c.hash)));
  roomy.sort((a, b) => freeSlots(b.capacity) - freeSlots(a.capacity) || hasCode(b) - hasCode(a) || a.host.localeCompare(b.host));
  if (roomy[0]) return { tier: "network", host: roomy[0] };
  if (scope !== "any") return undefined;
  let best: { host: HostSummary; network: string; free: number }[] = [];
  for (const gw of peers) {
    for (const r of gw.remotes) {
      if (!r.network || through.has(r.network) || r.free === 0) continue;
      if (!best[0] || r.free > best[0].free) best = [{ host: gw, network: r.network, free: r.free }];
      else if (r.free === best[0].free) best.push({ host: gw, network: r.network, free: r.free });
    }
  }
  if (best.length === 0) return undefined;
  const pick = best[Math.min(best.length - 1, Math.floor(random() * best.length))]!;
  return { tier: "remote", host: pick.host, network: pick.network };
}

/** Hosts of `network` whose code of `component` has content hash `hash`: where a host without it fetches it. */
export function codeSources(component: string, hash: string, network: string, hosts: readonly HostSummary[], except?: string): HostSummary[] {
  return hosts.filter((h) => h.host !== except && h.network === network && h.endpoint && h.capacity?.components.some((c) => c.name === component && c.hash === hash));
}
