/**
 * What one side of a gateway advertises in its network about the other
 * (pure: the gateway's sides call these over their tables):
 * - proxy entries: one per component (and schema) of the far network, with
 *   the far network's name, this side's host and tcp endpoint, the
 *   component's methods and its load summed over its far nodes. Only the far
 *   network's own nodes count: entries of another network in the far table
 *   are some gateway's proxies (this one's included), and relaying them
 *   would make chains and loops;
 * - the far network summed up as a remote tier (RemoteNetwork, in this
 *   side's gossip record), from the far table's host summaries;
 * - a capacity request carried over into the far network.
 */
import { MAX_REMOTE_COMPONENTS, tiersOf, type HostSummary, type RemoteNetwork } from "../membership/capacity.ts";
import type { NodeEntry } from "../membership/table.ts";
import type { CapacityRequest, MethodEntry } from "../wire/control.ts";

/** The most proxies one side advertises (components x schemas of the far network); the rest are left out, and counted. */
export const MAX_PROXIES = 1024;

/** Where one side of the gateway is, as its proxy entries say. */
export interface ProxySide {
  /** This side's host id in its network. */
  host: string;
  /** The endpoints this side's proxies are reached at (its node endpoints). */
  endpoints: string[];
}

/** The proxy id of a far component with schema `schema` at side host `host`: stable while the far component keeps its schema. */
export function proxyId(component: string, schema: string, host: string): string {
  return `${component}~${schema.slice(0, 12)}@${host}`;
}

/**
 * The proxy entries side `near` advertises for the far network `farNetwork`,
 * from the far side's table entries: one per (component, schema) served by
 * nodes of that network, sorted by id, at most MAX_PROXIES.
 */
export function proxyEntries(far: readonly NodeEntry[], farNetwork: string, near: ProxySide): NodeEntry[] {
  const groups = new Map<string, NodeEntry[]>();
  for (const e of far) {
    if (e.network !== farNetwork) continue;
    const key = `${e.component}\u0000${e.schema}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = []));
    g.push(e);
  }
  const out: NodeEntry[] = [];
  for (const nodes of groups.values()) {
    const first = nodes[0]!;
    const methods = new Map<string, MethodEntry>();
    let queued = 0;
    let capacity = 0;
    for (const n of nodes) {
      for (const m of n.methods) if (!methods.has(m.name)) methods.set(m.name, { name: m.name, mode: m.mode });
      queued += n.load.queued;
      capacity += n.load.capacity;
    }
    out.push({
      id: proxyId(first.component, first.schema, near.host),
      component: first.component,
      version: first.version,
      host: near.host,
      network: farNetwork,
      endpoints: [...near.endpoints],
      methods: [...methods.values()].sort((a, b) => a.name.localeCompare(b.name)),
      schema: first.schema,
      load: { queued: Math.min(queued, 0xffffffff), capacity: Math.min(capacity, 0xffffffff) },
    });
  }
  out.sort((a, b) => a.id.localeCompare(b.id));
  return out.slice(0, MAX_PROXIES);
}

/** Whether two proxy entries advertise the same load. */
export function sameLoad(a: NodeEntry, b: NodeEntry): boolean {
  return a.load.queued === b.load.queued && a.load.capacity === b.load.capacity;
}

/** Whether two proxy entries differ in anything but their load (what changes what the gateway relays). */
export function sameProxy(a: NodeEntry, b: NodeEntry): boolean {
  return a.schema === b.schema && a.version === b.version && a.endpoints.join(" ") === b.endpoints.join(" ") && a.methods.map((m) => `${m.name}:${m.mode}`).join(",") === b.methods.map((m) => `${m.name}:${m.mode}`).join(",");
}

/**
 * The far network summed up for the near side's record: its hosts, slots and
 * free slots (tiersOf over the far side's host summaries: the governors of
 * that network), and the components it serves (its own nodes' and those its
 * governors run), at most MAX_REMOTE_COMPONENTS.
 */
export function remoteSummary(farSelf: string, farNetwork: string, hosts: readonly HostSummary[], far: readonly NodeEntry[]): RemoteNetwork {
  const tier = tiersOf(farSelf, farNetwork, hosts).network;
  const components = new Set(Object.keys(tier.components));
  for (const e of far) if (e.network === farNetwork && e.host !== farSelf) components.add(e.component);
  return { network: farNetwork, hosts: tier.hosts, slots: tier.slots, free: tier.free, components: [...components].sort().slice(0, MAX_REMOTE_COMPONENTS) };
}

/** The hosts of network `network` other than `self` in a table's summaries: who a leg reaches. */
export function legHosts(self: string, network: string, hosts: readonly HostSummary[]): HostSummary[] {
  return hosts.filter((h) => h.network === network && h.host !== self);
}

/** Bounds on a request's trail: past them a gateway drops it (as governors do, governor/elastic.ts). */
export const MAX_CROSS_NETWORKS = 16;
export const MAX_CROSS_VISITED = 1024;

/**
 * A capacity request leaving network `leaving` for network `entering`
 * through a gateway: its visited hosts reset (they were the other
 * network's), the network it leaves appended to `networks`, its scope kept.
 * Undefined when it may not cross: a scope narrower than "any" ("network"
 * never crosses), a request that came through `entering` already (a loop),
 * or one past the bounds of its trail.
 */
export function crossRequest(request: CapacityRequest, leaving: string, entering: string): CapacityRequest | undefined {
  const scope = request.scope || "any";
  if (scope !== "any") return undefined;
  const networks = request.networks ?? [];
  if (networks.length >= MAX_CROSS_NETWORKS || request.visited.length > MAX_CROSS_VISITED || !request.component) return undefined;
  if (networks.includes(entering) || leaving === entering) return undefined;
  return { ...request, visited: [], networks: [...networks, leaving], scope: request.scope ?? "" };
}
