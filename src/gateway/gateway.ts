/**
 * A gateway: joins two networks. It is two NodeBinProcess sides in one OS
 * process, one per network, each its own host in its network's gossip
 * (host id `<name>~<network>`, a discovery port of its own on its leg's
 * listen address, a runtime subdirectory of its own for ipc), with one
 * security provider, or one per leg when the two networks are under
 * different cluster keys (the gateway then bridges two trust domains: a
 * member of either may call the other's components through it, and only
 * through its proxies). Gossip never crosses:
 * each side gossips only in its own network. What crosses is what each side
 * advertises of the other:
 * - one proxy entry per component of the far network (gateway/proxies.ts),
 *   attached in this side's direct transport with the relay as its handler
 *   (gateway/relay.ts);
 * - the far network summed up as a remote tier (`remotes` in this side's
 *   host record: hosts, slots, free slots, components), refreshed about
 *   once a second, and only when it changed;
 * and capacity requests, carried over into the far network
 * (capacityTarget over the far side's host summaries).
 *
 * Losing a leg: the far side's nodes leave its table as its gossip declares
 * their hosts gone, and with them this side's proxies; calls in flight on
 * the lost leg fail with the far caller's errors (a dropped connection:
 * UNAVAILABLE) or at their deadline. When the leg comes back, so do they.
 * Several gateways between the same two networks each advertise their own
 * proxies: callers spread their calls over them by load, and retry a refusal
 * of one on another.
 */
import { join } from "node:path";
import type { Logger } from "../component/context.ts";
import { NodeBinProcess } from "../container/compose.ts";
import { capacityTarget, freeSlots } from "../membership/capacity.ts";
import { networkLabel } from "../membership/network-name.ts";
import { LOCAL, type NodeEntry } from "../membership/table.ts";
import type { RoutingCaller } from "../routing/caller.ts";
import { Router } from "../routing/router.ts";
import type { SecurityProvider } from "../security/provider.ts";
import type { Peer } from "../transport/transport.ts";
import { DEFAULT_DISCOVERY_PORT, ensureRuntimeDir } from "../transport/runtime-dir.ts";
import { REQUEST_CAPACITY, type CapacityRequest } from "../wire/control.ts";
import { Kind, Plane, type Envelope } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { crossRequest, legHosts, proxyEntries, remoteSummary, sameLoad, sameProxy } from "./proxies.ts";
import { Relay, type RelayLimits, type RelayStats } from "./relay.ts";

/** One network a gateway joins. */
export interface GatewayLeg {
  /** Its name ("" is the default network). */
  network: string;
  /** Discovery endpoints of hosts of that network ("tcp://10.0.0.5:7400"). */
  seeds: string[];
  /** Address this leg's tcp sockets bind. */
  bind: string;
  /** Address they are advertised at (default: see advertiseAddress()). */
  advertise?: string;
  /** This leg's discovery port (default 7400; another when it shares its address with a governor). */
  discoveryPort?: number;
  /**
   * This leg's own security provider (its network's cluster key), when the
   * two networks are under different keys; default GatewayOptions.security.
   * The gateway closes it.
   */
  security?: SecurityProvider;
}

export interface GatewayOptions {
  /** The gateway's name: its sides are hosts `<name>~<network>`. */
  name: string;
  legs: readonly [GatewayLeg, GatewayLeg];
  /** The private runtime directory: each side takes a subdirectory of it. */
  runtimeDir: string;
  /** The legs' provider, unless a leg has its own (the gateway closes it). */
  security: SecurityProvider;
  logger: (source: string) => Logger;
  /** Bounds on what each side relays at once. */
  limits?: Partial<RelayLimits>;
  /** How often proxies' load, the remote tiers and the legs' states are refreshed (default 1000 ms). */
  refreshMs?: number;
  /** Told of every leg's state change (the CLI logs it; tests wait on it). */
  onLeg?: (event: LegEvent) => void;
}

/** A leg reached some hosts of its network, or lost the last of them. */
export interface LegEvent {
  network: string;
  up: boolean;
  hosts: string[];
}

/** Where one side can be reached, and what it relays. */
export interface SideView {
  network: string;
  host: string;
  /** Its discovery endpoints (the host record's endpoint among them) and its proxies' endpoints. */
  discovery: string[];
  endpoints: string[];
  /** Proxies it advertises (components of the other network). */
  proxies: string[];
  up: boolean;
  relay: RelayStats;
}


/** One side: its process, its relay caller (for the requests the other side relays here), its relay (for those its proxies take). */
class Side {
  readonly network: string;
  readonly host: string;
  relay!: Relay;
  /** The proxies advertised now, by id, with the methods they serve. */
  readonly proxies = new Map<string, { entry: NodeEntry; methods: Set<string> }>();
  remotesKey = "";
  up: boolean | undefined;

  constructor(
    readonly proc: NodeBinProcess,
    readonly caller: RoutingCaller,
    leg: GatewayLeg,
  ) {
    this.network = leg.network;
    this.host = proc.container.host;
  }

  get table() {
    return this.proc.container.table;
  }
}

/** A shared provider that its sides do not close: the gateway closes it once. */
function borrowed(p: SecurityProvider): SecurityProvider {
  return {
    name: p.name,
    get keyring() {
      return p.keyring;
    },
    get sealRing() {
      return p.sealRing;
    },
    wire: p.wire,
    describe: () => p.describe(),
    close() {},
  };
}

/** The gateway's providers, each once. */
function closeProviders(options: GatewayOptions): void {
  for (const p of new Set([options.security, ...options.legs.map((l) => l.security ?? options.security)])) p.close();
}

export class Gateway {
  private readonly sides: [Side, Side];
  private readonly log: Logger;
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly offs: (() => void)[] = [];
  private pending = new Set<Side>();
  private scheduled: ReturnType<typeof setTimeout> | undefined;
  private closed = false;

  private constructor(
    private readonly options: GatewayOptions,
    sides: [Side, Side],
  ) {
    this.sides = sides;
    this.log = options.logger(`gateway ${options.name}`);
  }

  /**
   * Starts both sides: binds their endpoints and discovery ports and joins
   * each to its network through its seeds. Throws UNAVAILABLE when a leg's
   * discovery port is taken (give it another with --discovery-port), and
   * what NodeBinProcess.create throws.
   */
  static async start(options: GatewayOptions): Promise<Gateway> {
    const [a, b] = options.legs;
    if (a.network === b.network) throw new NodeBinError("INVALID_ARGUMENT", `a gateway joins two networks; both legs name network ${networkLabel(a.network)}`);
    const made: Side[] = [];
    let started: Gateway | undefined;
    try {
      for (const leg of options.legs) made.push(await Gateway.side(options, leg, () => started));
      const gateway = (started = new Gateway(options, made as [Side, Side]));
      gateway.wire();
      for (const side of made) await side.proc.host!.claim();
      gateway.refreshAll();
      gateway.timer = setInterval(() => gateway.refreshAll(), options.refreshMs ?? 1000);
      gateway.timer.unref?.();
      return gateway;
    } catch (err) {
      for (const side of made) await side.proc.close();
      closeProviders(options);
      throw err;
    }
  }

  private static async side(options: GatewayOptions, leg: GatewayLeg, gateway: () => Gateway | undefined): Promise<Side> {
    const port = leg.discoveryPort ?? DEFAULT_DISCOVERY_PORT;
    const label = networkLabel(leg.network);
    const host = `${options.name}~${label}`;
    // Its own ipc sockets (discovery, relay, node endpoints): never those of the other side, or of a governor of this host.
    const runtimeDir = ensureRuntimeDir({ NODEBIN_RUNTIME_DIR: join(options.runtimeDir, `gateway-${label.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 32)}-${port}`) });
    let side: Side | undefined;
    const proc = await NodeBinProcess.create({
      id: `gateway@${host}`,
      host,
      network: leg.network,
      runtimeDir,
      logger: options.logger,
      bind: leg.bind,
      ...(leg.advertise ? { advertise: leg.advertise } : {}),
      security: borrowed(leg.security ?? options.security),
      nodeEndpoints: true,
      pruneConnections: true,
      hostRole: { seeds: leg.seeds, discoveryPort: port },
      onCapacity: (request) => {
        const g = gateway();
        if (g && side) g.capacity(side, request);
      },
    });
    const c = proc.container;
    // Its router counts nothing of this process as its own: the proxies here are the other network's, never a target of a relayed call.
    const router = new Router(c.table, { inProcess: () => false, host, network: leg.network });
    side = new Side(proc, c.addCaller(`gateway@${host}/relay`, router), leg);
    return side;
  }

  private other(side: Side): Side {
    return side === this.sides[0] ? this.sides[1] : this.sides[0];
  }

  private wire(): void {
    for (const near of this.sides) {
      const far = this.other(near);
      near.relay = new Relay({
        id: near.proc.container.id,
        farNetwork: far.network,
        far: far.caller,
        nearSend: (to, frame) => near.proc.container.stack.send(to, frame),
        ...(this.options.limits ? { limits: this.options.limits } : {}),
        log: this.options.logger(near.proc.container.id),
      });
      this.offs.push(near.proc.container.onConnectionClosed((connection) => near.relay.connectionClosed(connection)));
      // The far table changed: this side's proxies follow (soon, once for a burst of changes).
      this.offs.push(far.table.onChange(() => this.schedule(near)));
    }
  }

  private schedule(near: Side): void {
    if (this.closed) return;
    this.pending.add(near);
    this.scheduled ??= setTimeout(() => {
      this.scheduled = undefined;
      const sides = [...this.pending];
      this.pending.clear();
      for (const side of sides) this.refresh(side, false);
    }, 20);
  }

  private refreshAll(): void {
    if (this.closed) return;
    for (const side of this.sides) this.legState(side);
    for (const side of this.sides) this.refresh(side, true);
  }

  /**
   * Brings side `near`'s proxies and remote tier up to date with the far
   * side's table. `load`: the proxies' load too (a change of the table, which
   * the leg's agent gossips at most once a second, as any host's nodes' load).
   */
  private refresh(near: Side, load: boolean): void {
    if (this.closed) return;
    const far = this.other(near);
    const entries = proxyEntries(far.table.entries(), far.network, { host: near.host, endpoints: near.proc.endpoints });
    const changed = entries.length !== near.proxies.size || entries.some((e) => !near.proxies.has(e.id) || !sameProxy(near.proxies.get(e.id)!.entry, e));
    if (changed) this.setProxies(near, far, entries, true);
    else if (load && entries.some((e) => !sameLoad(near.proxies.get(e.id)!.entry, e))) this.setProxies(near, far, entries, false);
    const remote = remoteSummary(far.host, far.network, far.table.hostSummaries(), far.table.entries());
    const key = JSON.stringify(remote);
    if (key !== near.remotesKey) {
      near.remotesKey = key;
      near.proc.host!.setExtras({ remotes: [remote] });
    }
  }

  /** Advertises `entries` as side `near`'s proxies (one change of its table); `told`: logged (a change of what it relays, not of load alone). */
  private setProxies(near: Side, far: Side, entries: NodeEntry[], told: boolean): void {
    const c = near.proc.container;
    const schemas = new Map<string, string>();
    const kept: NodeEntry[] = [];
    for (const e of entries) {
      const schema = far.table.schema(e.schema);
      if (!schema) continue;
      schemas.set(schema.id, schema.json);
      kept.push(e);
    }
    const ids = new Set(kept.map((e) => e.id));
    for (const id of [...near.proxies.keys()]) {
      if (ids.has(id)) continue;
      near.proxies.delete(id);
      c.direct.detach(id);
    }
    for (const e of kept) {
      const had = near.proxies.has(e.id);
      near.proxies.set(e.id, { entry: e, methods: new Set(e.methods.map((m) => m.name)) });
      if (!had) c.direct.attach(e.id, (env, peer) => this.proxyInbox(near, e.id, env, peer));
    }
    // One change of the table for the whole set: the agent gossips it once.
    c.table.setSource(LOCAL, kept, [...schemas].map(([id, json]) => ({ id, json })));
    if (!told) return;
    const names = [...new Set(kept.map((e) => e.component))].sort();
    this.log.info(`network ${networkLabel(near.network)} sees ${kept.length} component(s) of network ${networkLabel(far.network)} through this gateway${names.length ? `: ${names.join(", ")}` : ""}`);
  }

  private proxyInbox(near: Side, id: string, env: Envelope, peer: Peer): void {
    // Control requests addressed to a proxy (a capacity request) are its process's business, as a node's are.
    if (env.plane === Plane.CONTROL && env.kind === Kind.REQUEST) return near.proc.container.control.handle(env, peer);
    const proxy = near.proxies.get(id);
    near.relay.receive(id, (method) => proxy?.methods.has(method) ?? false, env, peer);
  }

  /** Whether the side reaches hosts of its network: logged (and told) when it changes. */
  private legState(side: Side): void {
    const hosts = legHosts(side.host, side.network, side.table.hostSummaries()).map((h) => h.host).sort();
    const up = hosts.length > 0;
    if (up === side.up) return;
    const first = side.up === undefined;
    side.up = up;
    const name = networkLabel(side.network);
    if (up) this.log.info(`leg ${name}: up, ${hosts.length} host(s): ${hosts.slice(0, 8).join(", ")}${hosts.length > 8 ? ", ..." : ""}`);
    else if (first) this.log.info(`leg ${name}: waiting for a host of network ${name} to answer`);
    else this.log.warn(`leg ${name}: down, no host of network ${name} answers (its components leave network ${networkLabel(this.other(side).network)}'s view until it is back)`);
    this.options.onLeg?.({ network: side.network, up, hosts });
  }

  /**
   * A capacity request that reached side `from` (a full proxy's, or one a
   * governor of its network passed to this gateway): carried over into the
   * other network, to the host capacityTarget picks there, or dropped when it
   * may not cross (scope, loop) or nowhere there has room.
   */
  private capacity(from: Side, request: CapacityRequest): void {
    const to = this.other(from);
    const crossing = crossRequest(request, from.network, to.network);
    if (!crossing) {
      this.log.debug(`capacity request for ${request.component} not carried into network ${networkLabel(to.network)} (scope ${request.scope || "any"}, came through ${(request.networks ?? []).map(networkLabel).join(", ") || "no gateway"})`);
      return;
    }
    const target = capacityTarget(crossing, { host: to.host, network: to.network }, to.table.hostSummaries());
    if (!target) {
      this.log.info(`capacity wanted for ${request.component} from network ${networkLabel(from.network)}, but no host of network ${networkLabel(to.network)} has room`);
      return;
    }
    try {
      to.proc.container.sendControl(REQUEST_CAPACITY, crossing, { via: target.host.endpoint });
      this.log.info(`capacity wanted for ${request.component} from network ${networkLabel(from.network)}: asked host ${target.host.host} of network ${networkLabel(to.network)}${target.tier === "network" ? ` (${freeSlots(target.host.capacity)} free slots)` : ` (a gateway to network ${networkLabel(target.network)})`}`);
    } catch (err) {
      this.log.debug(`capacity request to ${target.host.host} not sent: ${NodeBinError.from(err)}`);
    }
  }

  /** Both sides: where they are reached, what they advertise, what they relay. */
  describe(): [SideView, SideView] {
    return this.sides.map((s) => ({
      network: s.network,
      host: s.host,
      discovery: s.proc.host!.discoveryEndpoints,
      endpoints: s.proc.endpoints,
      proxies: [...s.proxies.keys()],
      up: s.up === true,
      relay: s.relay.stats(),
    })) as [SideView, SideView];
  }

  /** Leaves both networks: relayed streams end (told), then each side closes (its calls in flight fail CANCELLED). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    clearTimeout(this.scheduled);
    for (const off of this.offs.splice(0)) off();
    for (const side of this.sides) side.relay.close();
    await Promise.all(this.sides.map((s) => s.proc.close()));
    closeProviders(this.options);
  }
}
