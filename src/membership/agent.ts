/**
 * The host agent: the discovery endpoint of one host, served by whichever
 * process holds the host's discovery port (a container today, the governor
 * later). It keeps
 * - the leases of the containers on this host (Register over ipc, renewed;
 *   a lease that runs out takes its nodes out of the table),
 * - the gossip with other hosts' agents (their nodes come in, ours go out),
 * and it writes both into the hosting process's membership table, which it
 * serves to containers and clients through nodebin.Control/Pull.
 */
import type { Logger } from "../component/context.ts";
import { DEREGISTER, GOSSIP, REGISTER, oneWayControlFrame, type ControlContext, type ControlService, type RegisterReply, type RegisterRequest } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import { roleOf, type HostCapacity, type HostSummary, type RemoteNetwork } from "./capacity.ts";
import type { HostExtras } from "./gossip-codec.ts";
import { LOCAL, type MembershipTable, type NodeEntry } from "./table.ts";

/** What the agent needs of the process hosting it (a Container satisfies it). */
export interface AgentHost {
  readonly id: string;
  readonly table: MembershipTable;
  readonly control: ControlService;
  /** Sends a frame to the process at a network endpoint. */
  sendVia(endpoint: string, frame: Uint8Array): void;
}

/** The gossip layer as the agent uses it (see gossip.ts). */
export interface GossipLayer {
  setLocalNodes(nodes: NodeEntry[], schemas: { id: string; json: string }[]): void;
  /** What this host's record says it can take and reaches (a layer that gossips no capacity leaves it out). */
  setExtras?(extras: HostExtras): void;
  /** The SYNs of a round, each to its endpoint (over this process's own connection to it). */
  tick(): { endpoint: string; bytes: Uint8Array }[];
  /**
   * One message, with `link`: the endpoint of this process's own connection
   * it came back on, undefined when it came in on a listener. Returns the
   * replies, for the connection it came in on.
   */
  receive(bytes: Uint8Array, link?: string): { endpoint: string; bytes: Uint8Array }[];
  /** Endpoints the gossip no longer needs a connection to (idle, or beyond its bound). */
  idleConnections(): string[];
  nextDelayMs(): number;
  /** `host.broadcast`: the host's broadcast relay endpoint, when its record names one (a layer that knows none leaves it out). */
  onChange(
    listener: (event: {
      type: "added" | "updated" | "removed";
      host: { host: string; nodes: NodeEntry[]; schemas: { id: string; json: string }[]; broadcast?: string; endpoint?: string; network?: string; capacity?: HostCapacity; remotes?: RemoteNetwork[] };
    }) => void,
  ): () => void;
  stats(): Record<string, number>;
}

export interface AgentOptions {
  /** This host's id. */
  host: string;
  /** This agent's discovery endpoint, as other hosts reach it ("tcp://10.0.0.5:7400"). */
  endpoint: string;
  /** Its network's name ("" = default). */
  network?: string;
  gossip?: GossipLayer;
  /**
   * Closes this process's outbound connection to an endpoint (the
   * connector's disconnect): how the connections gossip dials stay bounded.
   * Without it they stay open until the process closes.
   */
  disconnect?(endpoint: string): void;
  log: Logger;
  /** How often expired leases are swept (default 250 ms). */
  sweepMs?: number;
  /** Told when a container registers for the first time and when its lease ends (the governor tracks its children by it). */
  onLease?(event: { type: "registered"; container: string; pid: number; nodes: NodeEntry[] } | { type: "left"; container: string; why: string }): void;
  /**
   * Checks a Register before it is taken: a NodeBinError refuses it (answered
   * to the registering process, nothing changed). The governor uses it to hold
   * a lease's pid and container id to the children it spawned or adopted.
   */
  checkLease?(request: RegisterRequest): NodeBinError | undefined;
}

interface Lease {
  nodes: NodeEntry[];
  expires: number;
  seeds: string[];
}

/**
 * Bounds on what Register can make the agent hold: nodes per lease (a
 * container serves one node; dev serves one per component) and leases per
 * host. Past them a Register is RESOURCE_EXHAUSTED and nothing changes.
 * Schemas come with their nodes and leave with their last one (table.ts).
 */
export const MAX_NODES_PER_LEASE = 256;
export const MAX_LEASES = 4096;

/** How often at most a change of its nodes' load alone moves a host's gossip record (as the governor's capacity: elastic.ts ANNOUNCE_LOAD_MS). */
export const LOAD_GOSSIP_MS = 1000;

const LEASE = "lease:";
const REMOTE = "host:";

export class HostAgent {
  private readonly leases = new Map<string, Lease>();
  private readonly gossip: GossipLayer | undefined;
  private sweepTimer: ReturnType<typeof setInterval> | undefined;
  private gossipTimer: ReturnType<typeof setTimeout> | undefined;
  private offTable: (() => void) | undefined;
  private loadTimer: ReturnType<typeof setTimeout> | undefined;
  private offGossip: (() => void) | undefined;
  private closed = false;
  /** Seeds learnt from the containers that registered (a taking-over agent needs them). */
  readonly seeds = new Set<string>();

  constructor(
    private readonly process: AgentHost,
    private readonly options: AgentOptions,
  ) {
    this.gossip = options.gossip;
  }

  /** Serves Register, Deregister and Gossip, and starts the lease sweep and gossip rounds. */
  start(): void {
    const table = this.process.table;
    const control = this.process.control;
    control.serve(REGISTER, (request) => this.lease(request));
    control.serve(DEREGISTER, ({ container }) => {
      this.drop(container, "deregistered");
      return {};
    });
    control.serve(GOSSIP, ({ payload }, { peer }) => this.receiveGossip(payload, peer));
    this.sweepTimer = setInterval(() => this.sweep(), this.options.sweepMs ?? 250);
    this.sweepTimer.unref?.();
    if (this.gossip) {
      this.offGossip = this.gossip.onChange(({ type, host }) => {
        if (host.host === this.options.host) return;
        table.setSource(REMOTE + host.host, type === "removed" ? [] : host.nodes, host.schemas);
        const remotes = host.remotes ?? [];
        table.setHost(host.host, type === "removed" ? undefined : { host: host.host, network: host.network ?? "", endpoint: host.endpoint ?? "", ...(host.capacity ? { capacity: host.capacity } : {}), remotes, role: roleOf({ capacity: host.capacity, remotes }) });
        if (type === "removed") this.options.log.warn(`host ${host.host} is gone: its nodes left the table`);
      });
      // Our own nodes change when a lease or the hosting process's nodes do: gossiped at once. Their
      // load (queue, limit) changes with every lease renewal of a busy node: gossiped at most once a
      // LOAD_GOSSIP_MS. Without that, other hosts kept the load a node had when it joined, and power
      // of two choices between two hosts' nodes (or two gateways' proxies) kept losing to whichever
      // had joined while busy.
      let lastShape = "";
      let lastLoad = "";
      let loadAt = 0;
      const publish = () => {
        if (this.closed) return;
        const nodes = this.hostNodes();
        const shape = nodes.map((n) => `${n.id}:${n.schema}`).sort().join(",");
        const load = nodes.map((n) => `${n.id}:${n.load.queued}/${n.load.capacity}`).sort().join(",");
        if (shape === lastShape) {
          if (load === lastLoad) return;
          const wait = loadAt + LOAD_GOSSIP_MS - Date.now();
          if (wait > 0) {
            this.loadTimer ??= setTimeout(() => {
              this.loadTimer = undefined;
              publish();
            }, wait);
            this.loadTimer.unref?.();
            return;
          }
        }
        lastShape = shape;
        lastLoad = load;
        loadAt = Date.now();
        const schemas = [...new Set(nodes.map((n) => n.schema))].map((id) => ({ id, json: table.schema(id)!.json }));
        this.gossip!.setLocalNodes(nodes, schemas);
      };
      this.offTable = table.onChange(publish);
      // The nodes the process had before it became the agent: else they would wait for the next change of
      // the table, which a host whose agent serves the only node (and whose peers do likewise) never sees.
      publish();
      this.round();
    }
    this.setExtras(this.extras);
  }

  private extras: HostExtras = {};

  /**
   * What this host can take (its governor's capacity) and reaches (a
   * gateway's remote networks): into its gossip record, and into the table's
   * host summaries, where pulls and capacity routing read it.
   */
  setExtras(extras: HostExtras): void {
    this.extras = extras;
    if (this.closed) return;
    try {
      this.gossip?.setExtras?.(extras);
    } catch (err) {
      this.options.log.warn(`capacity not gossiped: ${NodeBinError.from(err)}`);
    }
    const remotes = extras.remotes ?? [];
    const summary: HostSummary = { host: this.options.host, network: this.options.network ?? "", endpoint: this.options.endpoint, ...(extras.capacity ? { capacity: extras.capacity } : {}), remotes, role: roleOf({ capacity: extras.capacity, remotes }) };
    this.process.table.setHost(this.options.host, summary);
  }

  /**
   * The nodes of this host: the hosting process's own and those leased by
   * other containers. Read from the table's lease sources, not from `leases`:
   * the table tells of a new lease (and gossip publishes it) while Register
   * is still storing it.
   */
  hostNodes(): NodeEntry[] {
    const table = this.process.table;
    const leased = table.sourceNames().filter((source) => source.startsWith(LEASE));
    return [...table.sourceEntries(LOCAL), ...leased.flatMap((source) => table.sourceEntries(source))];
  }

  stats(): Record<string, number> {
    return { leases: this.leases.size, refusedSchemas: this.process.table.refusedSchemas, ...(this.gossip?.stats() ?? {}) };
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweepTimer);
    clearTimeout(this.gossipTimer);
    clearTimeout(this.loadTimer);
    this.offTable?.();
    this.offGossip?.();
    // The host summaries were this agent's view: a member learns them from its agent's pulls.
    this.process.table.setHosts([]);
  }

  /**
   * Takes or renews a container's lease on its nodes (what Register does; a
   * governor that adopts running children installs theirs before they renew,
   * so its table is never empty of them).
   */
  lease(request: RegisterRequest): RegisterReply {
    if (!request.container) throw new NodeBinError("INVALID_ARGUMENT", "Register needs the container's id", { details: { field: "container" } });
    if (!(request.leaseMs > 0)) throw new NodeBinError("INVALID_ARGUMENT", "Register needs lease_ms > 0", { details: { field: "leaseMs" } });
    // The hosting process itself (a renewal it sent just before it took over): its nodes are LOCAL already.
    if (request.container === this.process.id) return { version: this.process.table.version, host: this.options.host };
    const refused = this.options.checkLease?.(request);
    if (refused) {
      this.options.log.warn(`refused the lease of container ${JSON.stringify(request.container)} (pid ${request.pid}): ${refused.message}`);
      throw refused;
    }
    if (request.nodes.length > MAX_NODES_PER_LEASE) {
      throw new NodeBinError("RESOURCE_EXHAUSTED", `a lease holds at most ${MAX_NODES_PER_LEASE} nodes, container ${request.container} registered ${request.nodes.length}`, { details: { field: "nodes", max: String(MAX_NODES_PER_LEASE) } });
    }
    const isNew = !this.leases.has(request.container);
    if (isNew && this.leases.size >= MAX_LEASES) {
      throw new NodeBinError("RESOURCE_EXHAUSTED", `this host agent holds ${MAX_LEASES} leases already`, { details: { max: String(MAX_LEASES) } });
    }
    for (const node of request.nodes) node.load ??= { queued: 0, capacity: 0 };
    // Schemas are checked before anything changes (strict: a refused schema is the Register's answer).
    this.process.table.setSource(LEASE + request.container, request.nodes, request.schemas, true);
    this.leases.set(request.container, { nodes: request.nodes, expires: Date.now() + request.leaseMs, seeds: request.seeds.slice(0, 64) });
    for (const seed of request.seeds.slice(0, 64)) if (this.seeds.size < 1024) this.seeds.add(seed);
    if (isNew) {
      this.options.log.info(`container ${request.container} registered ${request.nodes.map((n) => n.id).join(", ") || "no nodes"}`);
      this.options.onLease?.({ type: "registered", container: request.container, pid: request.pid, nodes: request.nodes });
    }
    return { version: this.process.table.version, host: this.options.host };
  }

  private sweep(): void {
    const now = Date.now();
    for (const [container, lease] of this.leases) if (lease.expires <= now) this.drop(container, "lease expired");
  }

  /** Ends a container's lease now (its process died: callers must stop choosing its nodes at once). */
  evict(container: string, why: string): void {
    this.drop(container, why);
  }

  private drop(container: string, why: string): void {
    if (!this.leases.delete(container)) return;
    this.process.table.setSource(LEASE + container, []);
    this.options.log.info(`container ${container} left (${why})`);
    this.options.onLease?.({ type: "left", container, why });
  }

  private round(): void {
    if (this.closed || !this.gossip) return;
    try {
      this.send(this.gossip.tick());
      this.closeIdle(this.gossip.idleConnections());
    } catch (err) {
      this.options.log.warn(`gossip round failed: ${NodeBinError.from(err)}`);
    }
    this.gossipTimer = setTimeout(() => this.round(), this.gossip.nextDelayMs());
    this.gossipTimer.unref?.();
  }

  /** Sends a round's SYNs one-way to other agents' control endpoints, each over this process's own connection to it. */
  private send(messages: { endpoint: string; bytes: Uint8Array }[]): void {
    for (const { endpoint, bytes } of messages) {
      try {
        this.process.sendVia(endpoint, this.gossipFrame(bytes));
      } catch (err) {
        this.options.log.debug(`gossip to ${endpoint} not sent: ${NodeBinError.from(err)}`);
      }
    }
  }

  /**
   * One gossip message. What it may change depends on the connection it came
   * on (`peer.link`: ours, to the endpoint it names; else a listener's, which
   * anyone may have opened), and its replies go back on that very connection,
   * never to an endpoint the message names: an answer there would have a
   * stranger's claims open sockets in this process without end.
   */
  private receiveGossip(payload: Uint8Array, peer: ControlContext["peer"]): void {
    if (!this.gossip) return;
    const replies = this.gossip.receive(payload, peer.link);
    // No way back (the process itself): nothing to answer on.
    if (replies.length === 0 || !peer.reply) return;
    for (const { endpoint, bytes } of replies) {
      try {
        peer.reply(this.gossipFrame(bytes));
      } catch (err) {
        this.options.log.debug(`gossip reply to ${endpoint} not sent: ${NodeBinError.from(err)}`);
      }
    }
  }

  private gossipFrame(bytes: Uint8Array): Uint8Array {
    return oneWayControlFrame(GOSSIP, { payload: bytes }, this.process.id, "");
  }

  /**
   * Closes the connections gossip no longer needs (see
   * Gossip.idleConnections), unless a node in the table is reached there too
   * (its calls share the connection).
   */
  private closeIdle(endpoints: string[]): void {
    if (endpoints.length === 0 || !this.options.disconnect) return;
    const used = new Set(this.process.table.entries().flatMap((e) => e.endpoints));
    for (const endpoint of endpoints) if (!used.has(endpoint)) this.options.disconnect(endpoint);
  }
}
