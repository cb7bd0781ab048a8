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
import { DEREGISTER, GOSSIP, REGISTER, oneWayControlFrame, type ControlService, type RegisterReply, type RegisterRequest } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
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
  tick(): { endpoint: string; bytes: Uint8Array }[];
  receive(bytes: Uint8Array, fromEndpoint: string): { endpoint: string; bytes: Uint8Array }[];
  nextDelayMs(): number;
  onChange(listener: (event: { type: "added" | "updated" | "removed"; host: { host: string; nodes: NodeEntry[]; schemas: { id: string; json: string }[] } }) => void): () => void;
  stats(): Record<string, number>;
}

export interface AgentOptions {
  /** This host's id. */
  host: string;
  /** This agent's discovery endpoint, as other hosts reach it ("tcp://10.0.0.5:7400"). */
  endpoint: string;
  gossip?: GossipLayer;
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

const LEASE = "lease:";
const REMOTE = "host:";

export class HostAgent {
  private readonly leases = new Map<string, Lease>();
  private readonly gossip: GossipLayer | undefined;
  private sweepTimer: ReturnType<typeof setInterval> | undefined;
  private gossipTimer: ReturnType<typeof setTimeout> | undefined;
  private offTable: (() => void) | undefined;
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
    control.serve(GOSSIP, ({ payload }, { env }) => {
      this.send(this.gossip?.receive(payload, env.control.endpoint ?? "") ?? []);
    });
    this.sweepTimer = setInterval(() => this.sweep(), this.options.sweepMs ?? 250);
    this.sweepTimer.unref?.();
    if (this.gossip) {
      this.offGossip = this.gossip.onChange(({ type, host }) => {
        if (host.host === this.options.host) return;
        table.setSource(REMOTE + host.host, type === "removed" ? [] : host.nodes, host.schemas);
        if (type === "removed") this.options.log.warn(`host ${host.host} is gone: its nodes left the table`);
      });
      // Our own nodes change when a lease or the hosting process's nodes do.
      let last = "";
      this.offTable = table.onChange(() => {
        const nodes = this.hostNodes();
        const key = nodes.map((n) => `${n.id}:${n.schema}`).sort().join(",");
        if (key === last) return;
        last = key;
        const schemas = [...new Set(nodes.map((n) => n.schema))].map((id) => ({ id, json: table.schema(id)!.json }));
        this.gossip!.setLocalNodes(nodes, schemas);
      });
      this.round();
    }
  }

  /** The nodes of this host: the hosting process's own and those leased by other containers. */
  hostNodes(): NodeEntry[] {
    const table = this.process.table;
    return [...table.sourceEntries(LOCAL), ...[...this.leases.keys()].flatMap((c) => table.sourceEntries(LEASE + c))];
  }

  stats(): Record<string, number> {
    return { leases: this.leases.size, ...(this.gossip?.stats() ?? {}) };
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweepTimer);
    clearTimeout(this.gossipTimer);
    this.offTable?.();
    this.offGossip?.();
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
    for (const node of request.nodes) node.load ??= { queued: 0, capacity: 0 };
    const isNew = !this.leases.has(request.container);
    this.leases.set(request.container, { nodes: request.nodes, expires: Date.now() + request.leaseMs, seeds: request.seeds });
    for (const seed of request.seeds) this.seeds.add(seed);
    this.process.table.setSource(LEASE + request.container, request.nodes, request.schemas);
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
    } catch (err) {
      this.options.log.warn(`gossip round failed: ${NodeBinError.from(err)}`);
    }
    this.gossipTimer = setTimeout(() => this.round(), this.gossip.nextDelayMs());
    this.gossipTimer.unref?.();
  }

  /** Sends gossip messages one-way to other agents' control endpoints. */
  private send(messages: { endpoint: string; bytes: Uint8Array }[]): void {
    for (const { endpoint, bytes } of messages) {
      const frame = oneWayControlFrame(GOSSIP, { payload: bytes }, this.process.id, "", { endpoint: this.options.endpoint });
      try {
        this.process.sendVia(endpoint, frame);
      } catch (err) {
        this.options.log.debug(`gossip to ${endpoint} not sent: ${NodeBinError.from(err)}`);
      }
    }
  }
}
