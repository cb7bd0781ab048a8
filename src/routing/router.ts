/**
 * Node selection: for each call, the candidates are the nodes serving the
 * method, filtered by the caller's scope; the nearest tier with room wins
 * (this process, then this host, then this network, then anywhere), and
 * inside a tier the less loaded of two random picks (power of two choices on
 * advertised queue length plus this caller's own in-flight count).
 */
import type { Scope } from "../component/context.ts";
import type { MembershipTable, MethodRoute, NodeEntry } from "../membership/table.ts";
import { systemClock, type Clock } from "../platform/clock.ts";
import { NodeBinError } from "../wire/errors.ts";
import { resolveMethodName } from "./method-name.ts";

export interface Locality {
  /** True for nodes living in this very process. */
  inProcess(id: string): boolean;
  host: string;
  network: string;
}

const TIERS: readonly Scope[] = ["process", "host", "network", "any"];

/**
 * How long a node that let a call down without an answer (its deadline ran
 * out with the node silent since the call left, see Router.heard; its
 * connection dropped) is avoided while other nodes can serve: about
 * the time membership takes to remove a dead node (lease 3 s; a cut-off host,
 * about 5 s), so callers stop sending into the void before the tables catch up.
 */
export const SUSPECT_MS = 5000;
/** Nodes whose last answer a router remembers (see Router.heard); past it the longest-known is dropped. */
const HEARD_MAX = 1024;

/** How a Router draws and keeps time; pass the same clock as the RoutingCallers using it. */
export interface RouterOptions {
  /** Draws the two random picks (default Math.random); tests pass a seeded one. */
  random?: () => number;
  /** What suspicion is timed by (default systemClock); tests pass a ManualClock. */
  clock?: Clock;
}

export class Router {
  /** Calls this process has in flight, per node id. */
  private readonly inflight = new Map<string, number>();
  /** Nodes to avoid until the given time (the clock's ms); see SUSPECT_MS. */
  private readonly suspects = new Map<string, number>();
  /**
   * When each node last answered a call of this process (a response or a
   * stream frame; the clock's ms). A call whose deadline runs out makes its
   * node a suspect only if the node has been silent since the call left: one
   * that answers other calls is alive, and a handler slower than one call's
   * deadline is no reason to steer every call away from it for SUSPECT_MS
   * (with two nodes, onto the other one alone).
   */
  private readonly heard = new Map<string, number>();
  private readonly random: () => number;
  private readonly clock: Clock;

  constructor(
    readonly table: MembershipTable,
    private readonly locality: Locality,
    options: RouterOptions = {},
  ) {
    this.random = options.random ?? Math.random;
    this.clock = options.clock ?? systemClock;
  }

  /** The route for a method name as written by a person or handler. Throws NOT_FOUND. */
  route(method: string): MethodRoute {
    const routes = this.table.routes();
    const exact = routes.get(method);
    if (exact) return exact;
    return routes.get(resolveMethodName(method, routes.keys()))!;
  }

  /**
   * Picks the node for one call, never one whose id is in `exclude` (the
   * nodes that already refused this call). Throws NOT_FOUND when no node
   * within `scope` serves it, or when every one of them is excluded.
   */
  pick(route: MethodRoute, scope: Scope = "any", exclude?: ReadonlySet<string>): NodeEntry {
    let nodes = route.nodes;
    if (exclude && exclude.size > 0) nodes = nodes.filter((n) => !exclude.has(n.id));
    else if (nodes.length === 1 && scope === "any") return nodes[0]!;
    if (this.suspects.size > 0) {
      // Healthy nodes first; suspects only when no healthy node is in scope.
      const healthy = nodes.filter((n) => !this.isSuspect(n.id));
      if (healthy.length > 0 && healthy.length < nodes.length) {
        const chosen = this.choose(healthy, scope);
        if (chosen) return chosen;
      }
    }
    const chosen = this.choose(nodes, scope);
    if (chosen) return chosen;
    const excluded = route.nodes.length - nodes.length;
    throw new NodeBinError("NOT_FOUND", `no node within scope "${scope}" serves ${route.method.fullName} (${nodes.length} outside it${excluded ? `, ${excluded} excluded` : ""})`, {
      details: { method: route.method.fullName, scope },
    });
  }

  /**
   * Where a capacity request for a refused call goes: the nearest node of
   * this network serving the method (this process's, then this host's, then
   * another host's; the refusing node when it is as near as any), so that
   * this host's governor decides first, as the seed's order says: it grows
   * its own host, else passes the request on through this network, and only
   * then through a gateway (governor/elastic.ts). Asking the refusing node's
   * governor, when it is on another host or a far network's proxy, would skip
   * this host's or this network's free slots. Undefined when no node of this
   * network serves the method (then the refusing one is the only way).
   */
  capacityContact(refused: NodeEntry, route: MethodRoute | undefined): NodeEntry | undefined {
    let best = this.tierOf(refused) < 3 ? refused : undefined;
    for (const n of route?.nodes ?? []) {
      const tier = this.tierOf(n);
      if (tier < 3 && (!best || tier < this.tierOf(best))) best = n;
    }
    return best;
  }

  /** A node that let a call down without answering: avoided for `ms` while others can serve. */
  suspect(id: string, ms = SUSPECT_MS): void {
    if (id) this.suspects.set(id, this.clock.now() + ms);
  }

  /** A node answered a call of this process. */
  answered(id: string): void {
    if (this.heard.size >= HEARD_MAX && !this.heard.has(id)) this.heard.delete(this.heard.keys().next().value!);
    this.heard.set(id, this.clock.now());
  }

  /** A call to `id` that left at `sentAt` ran out of time with no answer: `id` is suspected unless it answered another call since. */
  expired(id: string, sentAt: number): void {
    const last = this.heard.get(id);
    if (last === undefined || last < sentAt) this.suspect(id);
  }

  private isSuspect(id: string): boolean {
    const until = this.suspects.get(id);
    if (until === undefined) return false;
    if (until > this.clock.now()) return true;
    this.suspects.delete(id);
    return false;
  }

  /** The nearest tier with room, power of two choices inside it; undefined when no node is in scope. */
  private choose(nodes: readonly NodeEntry[], scope: Scope): NodeEntry | undefined {
    const limit = TIERS.indexOf(scope);
    if (limit < 0) throw new NodeBinError("INVALID_ARGUMENT", `unknown scope ${JSON.stringify(scope)}; expected one of ${TIERS.join(", ")}`);
    let fallback: NodeEntry[] | undefined;
    for (let tier = 0; tier <= limit; tier++) {
      const candidates = nodes.filter((n) => this.tierOf(n) === tier);
      if (candidates.length === 0) continue;
      const roomy = candidates.filter((n) => !n.load.capacity || n.load.queued + this.inflightOf(n.id) < n.load.capacity);
      if (roomy.length) return this.leastLoaded(roomy);
      fallback ??= candidates;
    }
    // Every node in scope is full: pick one anyway; it answers RESOURCE_EXHAUSTED if still full.
    if (fallback) return this.leastLoaded(fallback);
    return undefined;
  }

  /** Bookkeeping of this process's in-flight calls, which weigh into the choice. */
  started(id: string): void {
    this.inflight.set(id, this.inflightOf(id) + 1);
  }

  ended(id: string): void {
    const n = this.inflightOf(id) - 1;
    if (n > 0) this.inflight.set(id, n);
    else this.inflight.delete(id);
  }

  private inflightOf(id: string): number {
    return this.inflight.get(id) ?? 0;
  }

  /**
   * A node's tier. Another network's node is remote whatever host advertises
   * it: a gateway side advertises the far network's components as proxies on
   * its own host (and in its own process), and counting them as this host's
   * would let a relay's "network" scope pick the other side's proxy, which
   * relays back: a loop between the two sides.
   */
  private tierOf(node: NodeEntry): number {
    if (node.network !== this.locality.network) return 3;
    if (this.locality.inProcess(node.id)) return 0;
    if (node.host === this.locality.host) return 1;
    return 2;
  }

  private leastLoaded(nodes: NodeEntry[]): NodeEntry {
    if (nodes.length === 1) return nodes[0]!;
    const i = Math.floor(this.random() * nodes.length);
    let j = Math.floor(this.random() * (nodes.length - 1));
    if (j >= i) j++;
    const a = nodes[i]!;
    const b = nodes[j]!;
    return a.load.queued + this.inflightOf(a.id) <= b.load.queued + this.inflightOf(b.id) ? a : b;
  }
}
