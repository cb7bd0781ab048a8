/**
 * A container process: exactly one component node in its own process, its
 * ROUTER bound on ipc (same-host peers) and tcp (the network), DEALERs to the
 * peers it calls, and its host's membership:
 * - if the host's discovery port is free, this process becomes the host agent
 *   (HostAgent: leases of the host's containers, gossip with other hosts);
 * - otherwise it registers its node with the agent over ipc, renews the lease,
 *   and pulls the agent's table whenever its version moves. When the agent
 *   stops answering, it tries to take the port over itself.
 */
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { deserialize, serialize } from "node:v8";
import { join } from "node:path";
import type { Logger } from "../component/context.ts";
import type { Component } from "../component/loader.ts";
import { HostAgent, type GossipLayer } from "../membership/agent.ts";
import { Gossip } from "../membership/gossip.ts";
import { LOCAL, reachableEndpoint } from "../membership/table.ts";
import { ZmqConnector, ZmqListener } from "../transport/zmq.ts";
import { DEFAULT_DISCOVERY_PORT, discoveryIpc } from "../transport/runtime-dir.ts";
import { CONTROL_SCHEMA, DEREGISTER, DRAIN, GOVERNOR_CAPACITY, IMPORT_STATE, PING, PULL, REGISTER, REQUEST_CAPACITY, YIELD_AGENT } from "../wire/control.ts";
import type { ComponentNode } from "../component/node.ts";
import { Plane } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { Container } from "./container.ts";

export { DEFAULT_DISCOVERY_PORT };

const CapacityRequest = CONTROL_SCHEMA.root.lookupType("nodebin.CapacityRequest");

export interface ContainerProcessOptions {
  component: Component;
  /** This host's id (default: the machine's host name). */
  host: string;
  network: string;
  /** The address to listen on and advertise (an IP of this host). */
  listen: string;
  discoveryPort?: number;
  /** Discovery endpoints of other hosts ("tcp://10.0.0.5:7400"). */
  seeds: string[];
  /** Private runtime directory (ipc sockets). */
  runtimeDir: string;
  logger: (source: string) => Logger;
  /** Lease length and renewal period at the host agent (default 3000 / 1000 ms). */
  leaseMs?: number;
  renewMs?: number;
  /** How long a call for a method nobody serves waits for membership to settle (default 2000 ms). */
  settleMs?: number;
  /**
   * The governor's private control socket, when a governor started this
   * process: capacity requests for this node's component go there.
   */
  governor?: string;
  /** Start the node held: it queues messages but handles none until its predecessor's state arrives (ImportState) or holdMs passes. */
  hold?: boolean;
  /** Longest a held node waits for its state (default 30 000 ms); then it serves with empty state and says so. */
  holdMs?: number;
  /** Makes the gossip layer when this process becomes the host agent (default: Gossip with its defaults). */
  makeGossip?: (self: { host: string; endpoint: string; network: string; incarnation: number }, seeds: string[]) => GossipLayer;
}

type Role = "agent" | "member";

export class ContainerProcess {
  readonly container: Container;
  private readonly log: Logger;
  private readonly connector: ZmqConnector;
  private nodeListener: ZmqListener | undefined;
  private discoveryListener: ZmqListener | undefined;
  private agent: HostAgent | undefined;
  private renewTimer: ReturnType<typeof setTimeout> | undefined;
  private holdTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly startedAt = Date.now();
  private pulledVersion = 0;
  private readonly nodeEndpoints = new Set<string>();
  private closing = false;
  role: Role = "member";
  dropped = 0;

  private constructor(private readonly options: ContainerProcessOptions) {
    const id = `${options.component.name}@${options.host}-${process.pid}-${randomBytes(2).toString("hex")}`;
    // settleMs: a node starting with its peers finds them once they registered.
    this.container = new Container({ id, host: options.host, network: options.network, logger: options.logger, settleMs: options.settleMs ?? 2000 });
    this.log = options.logger(id);
    const endpointOf = (to: string) => {
      const entry = this.container.table.get(to);
      return entry && reachableEndpoint(entry, options.host);
    };
    this.connector = new ZmqConnector(
      endpointOf,
      (env) => this.container.direct.dispatch(env),
      (lost) => this.container.failCallsVia(lost, endpointOf),
      { onDrop: (reason) => this.drop(reason) },
    );
  }

  get discoveryPort(): number {
    return this.options.discoveryPort ?? DEFAULT_DISCOVERY_PORT;
  }

  /** The host agent's ipc endpoint, where the host's containers register. */
  get discoveryIpc(): string {
    return discoveryIpc(this.options.runtimeDir, this.discoveryPort);
  }

  /** Starts the node, binds its endpoints, joins the host. Throws what the component's init throws. */
  static async start(options: ContainerProcessOptions): Promise<ContainerProcess> {
    const p = new ContainerProcess(options);
    try {
      await p.startNode();
      await p.joinHost();
    } catch (err) {
      await p.close();
      throw err;
    }
    return p;
  }

  /**
   * Closes connections to node endpoints no node in the table has any more
   * (nodes that left): a DEALER to a dead peer would otherwise reconnect
   * forever. Only endpoints that belonged to nodes are pruned: the discovery
   * endpoints the agent gossips with never appear in entries.
   */
  private pruneConnections(): void {
    const used = new Set(this.container.table.entries().flatMap((e) => e.endpoints));
    for (const endpoint of this.nodeEndpoints) {
      if (used.has(endpoint)) continue;
      this.nodeEndpoints.delete(endpoint);
      this.connector.disconnect(endpoint);
    }
    for (const endpoint of used) this.nodeEndpoints.add(endpoint);
  }

  private async startNode(): Promise<void> {
    const { runtimeDir, listen } = this.options;
    const addresses = [`tcp://${listen}:0`];
    if (process.platform !== "win32") addresses.unshift(`ipc://${join(runtimeDir, `node-${process.pid}-${randomBytes(3).toString("hex")}.sock`)}`);
    this.nodeListener = await ZmqListener.bind(addresses, (env) => this.container.direct.dispatch(env), { onDrop: (r) => this.drop(r) });
    this.container.endpoints = this.nodeListener.endpoints;
    this.container.addTransport(this.nodeListener);
    this.container.addTransport(this.connector);
    this.container.table.onChange(() => this.pruneConnections());
    await this.container.addComponent(this.options.component, 1, this.options.hold ? { hold: true } : {});
    this.serveChildControl();
    if (this.options.hold) {
      this.holdTimer = setTimeout(() => {
        const node = this.node();
        if (!node?.isHeld) return;
        this.log.warn(`no state arrived within ${this.options.holdMs ?? 30_000} ms: serving with empty state`);
        node.resume();
      }, this.options.holdMs ?? 30_000);
    }
  }

  /** This process's node (undefined once it left). */
  private node(): ComponentNode | undefined {
    return this.container.localNodes()[0];
  }

  /** What a governor asks of its children: Ping, Drain, ImportState, YieldAgent; and capacity requests from callers. */
  private serveChildControl(): void {
    const c = this.container;
    c.serveControl(PING, () => {
      const node = this.node();
      const s = node?.getStats();
      return {
        pid: process.pid,
        container: c.id,
        node: node?.id ?? "",
        component: this.options.component.name,
        version: this.options.component.manifest.version,
        phase: s?.phase ?? "closed",
        handled: s?.handled ?? 0,
        failed: s?.failed ?? 0,
        rejected: s?.rejected ?? 0,
        queued: s?.queued ?? 0,
        capacity: s?.capacity ?? 0,
        queueWaitMs: s?.queueWaitMs ?? 0,
        idleMs: s?.idleMs ?? 0,
        uptimeMs: Date.now() - this.startedAt,
        rssBytes: process.memoryUsage().rss,
        endpoints: c.endpoints,
        role: this.role,
        min: this.options.component.manifest.limits.min,
        max: this.options.component.manifest.limits.max,
      };
    });
    c.serveControl(DRAIN, async (request) => {
      const { exportState } = request as unknown as { exportState: boolean };
      const node = this.node();
      if (!node) throw new NodeBinError("FAILED_PRECONDITION", `${c.id} has no node left to drain`);
      // Out of the table first (the agent hears it with the next renewal, sent now), then
      // refuse new messages as unhandled (callers re-route), finish the queue, hand over.
      c.table.remove(node.id);
      this.renewNow();
      this.log.info(`draining ${node.id}${exportState ? " for a hand-over" : ""}`);
      const snapshot = exportState ? await node.handOff() : await node.close();
      let state = new Uint8Array();
      if (exportState && snapshot !== undefined) {
        try {
          state = serialize(snapshot);
        } catch (err) {
          throw new NodeBinError("INTERNAL", `${node.component.name}: the exported state cannot be transferred (${(err as Error).message}); return plain data from exportState`, { cause: err });
        }
      }
      return { state, handled: node.getStats().handled };
    });
    c.serveControl(IMPORT_STATE, async (request) => {
      const { state } = request as unknown as { state: Uint8Array };
      const node = this.node();
      if (!node) throw new NodeBinError("FAILED_PRECONDITION", `${c.id} has no node`);
      // Importing into a node already serving would overwrite what it did since.
      if (!node.isHeld) throw new NodeBinError("FAILED_PRECONDITION", `${node.id} is not held (it serves already): state not imported`);
      clearTimeout(this.holdTimer);
      if (state.length) {
        let snapshot: unknown;
        try {
          snapshot = deserialize(state);
        } catch (err) {
          throw new NodeBinError("INVALID_ARGUMENT", `state cannot be read: ${(err as Error).message}`);
        }
        await node.importState(snapshot);
      }
      node.resume();
      this.log.info(`${node.id} took over ${state.length} bytes of state and serves`);
      return {};
    });
    c.serveControl(YIELD_AGENT, () => {
      // Answer first (through the listener about to close), then give the role back.
      if (this.role === "agent") setTimeout(() => void this.yieldAgent(), 20);
      return {};
    });
    c.serveControl(REQUEST_CAPACITY, (request) => {
      const wanted = CapacityRequest.toObject(request, { arrays: true, defaults: true });
      if (!this.options.governor) {
        this.log.debug(`capacity wanted for ${wanted.component as string}, but no governor runs this process`);
        return;
      }
      try {
        c.sendControl(GOVERNOR_CAPACITY, wanted, { via: this.options.governor });
      } catch (err) {
        this.log.debug(`capacity request not passed to the governor: ${NodeBinError.from(err)}`);
      }
    });
  }

  /**
   * Gives the host agent role back (a governor came back and wants the
   * discovery endpoint): closes the discovery listener, forgets the leases and
   * remote hosts the agent kept, and registers with the new agent.
   */
  private async yieldAgent(): Promise<void> {
    if (this.role !== "agent" || this.closing) return;
    this.agent?.close();
    this.agent = undefined;
    const listener = this.discoveryListener;
    this.discoveryListener = undefined;
    this.role = "member";
    const table = this.container.table;
    for (const source of table.sourceNames()) if (source.startsWith("lease:") || source.startsWith("host:")) table.setSource(source, []);
    if (listener) {
      await this.container.removeTransport(listener);
      for (const e of listener.endpoints) if (e.startsWith("ipc://")) rmSync(e.slice("ipc://".length), { force: true });
    }
    this.log.info("gave the host agent role back");
    this.pulledVersion = 0;
    clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renew(), this.options.renewMs ?? 1000);
  }

  /** Renews the lease now (the node set changed), instead of at the next period. */
  private renewNow(): void {
    if (this.role !== "member" || this.closing) return;
    clearTimeout(this.renewTimer);
    void this.renew();
  }

  private async joinHost(): Promise<void> {
    if (await this.becomeAgent()) return;
    await this.renew();
  }

  /** Takes the host's discovery port if it is free. Resolves true when this process is now the agent. */
  private async becomeAgent(takeover = false): Promise<boolean> {
    const { listen, host, network, seeds } = this.options;
    const endpoint = `tcp://${listen}:${this.discoveryPort}`;
    // Bound in this order on one socket: the tcp port decides who is the agent;
    // the ipc path is only taken after it (binding ipc would steal the socket
    // file of a live agent).
    const addresses = process.platform === "win32" ? [endpoint] : [endpoint, this.discoveryIpc];
    let listener: ZmqListener;
    try {
      listener = await ZmqListener.bind(addresses, (env) => this.container.direct.dispatch(env), { onDrop: (r) => this.drop(r) });
    } catch {
      return false; // another process holds the port: it is the agent
    }
    this.discoveryListener = listener;
    this.container.addTransport(listener);
    this.container.table.setSource("agent", []); // our own table is now the host's
    const incarnation = Date.now();
    const self = { host, endpoint, network, incarnation };
    const gossip = this.options.makeGossip ? this.options.makeGossip(self, seeds) : new Gossip({ self, seeds, now: Date.now });
    this.agent = new HostAgent(this.container, { host, endpoint, log: this.log, gossip });
    this.agent.start();
    this.role = "agent";
    const says = `host agent for ${host} at ${listener.endpoints.join(" ")}${seeds.length ? `, seeds ${seeds.join(" ")}` : ""}`;
    // Taking over from an agent that stopped answering is worth an operator's attention.
    if (takeover) this.log.warn(`${says} (took over: the previous agent stopped answering)`);
    else this.log.info(says);
    return true;
  }

  /** One lease renewal (and a pull when the agent's table moved); schedules the next. */
  private async renew(): Promise<void> {
    if (this.closing || this.role === "agent") return;
    // One renewal at a time: a renewNow() during one asks for another right after.
    if (this.renewing) {
      this.renewAgain = true;
      return;
    }
    this.renewing = true;
    let again: boolean;
    try {
      await this.renewOnce();
    } finally {
      this.renewing = false;
      again = this.renewAgain;
      this.renewAgain = false;
    }
    if (this.closing || (this.role as Role) === "agent") return;
    clearTimeout(this.renewTimer);
    if (again) return this.renew();
    this.renewTimer = setTimeout(() => void this.renew(), this.options.renewMs ?? 1000);
  }

  private renewing = false;
  private renewAgain = false;

  private async renewOnce(): Promise<void> {
    const caller = this.container.caller;
    const leaseMs = this.options.leaseMs ?? 3000;
    const renewMs = this.options.renewMs ?? 1000;
    try {
      this.container.refreshLoad();
      const own = this.container.table.sourceEntries(LOCAL);
      const schemas = [...new Set(own.map((n) => n.schema))].map((id) => ({ id, json: this.container.table.schema(id)!.json }));
      const reply = (await caller.callEndpoint({
        method: REGISTER,
        to: "",
        via: this.discoveryIpc,
        plane: Plane.CONTROL,
        request: { nodes: own, schemas, leaseMs, seeds: this.options.seeds, container: this.container.id, pid: process.pid },
        options: { timeoutMs: renewMs },
      })) as { version: number };
      if (reply.version !== this.pulledVersion) {
        const pulled = await caller.callEndpoint({ method: PULL, to: "", via: this.discoveryIpc, plane: Plane.CONTROL, request: { knownVersion: this.pulledVersion }, options: { timeoutMs: renewMs } });
        this.pulledVersion = this.container.table.mergePull(pulled as never, undefined, "agent").version;
      }
    } catch (err) {
      this.log.debug(`host agent did not answer (${NodeBinError.from(err)}); trying to take over`);
      if (!this.closing) await this.becomeAgent(true);
    }
  }

  /** Where this process can be reached, and its role on the host. */
  describe(): { id: string; node: string; endpoints: string[]; role: Role; discovery?: string[] } {
    return {
      id: this.container.id,
      node: this.container.localNodes()[0]?.id ?? "",
      endpoints: this.container.endpoints,
      role: this.role,
      ...(this.discoveryListener ? { discovery: this.discoveryListener.endpoints } : {}),
    };
  }

  /**
   * Leaves cleanly: deregisters (so callers stop choosing this node), drains
   * the node (new messages get UNAVAILABLE, queued ones are finished), closes
   * every socket. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.renewTimer);
    clearTimeout(this.holdTimer);
    if (this.role === "member" && this.nodeListener) {
      try {
        await this.container.caller.callEndpoint({ method: DEREGISTER, to: "", via: this.discoveryIpc, plane: Plane.CONTROL, request: { container: this.container.id }, options: { timeoutMs: 1000 } });
      } catch {
        // The agent is gone too: our lease simply runs out.
      }
    }
    this.agent?.close();
    await this.container.close();
    for (const l of [this.nodeListener, this.discoveryListener]) {
      for (const e of l?.endpoints ?? []) if (e.startsWith("ipc://")) rmSync(e.slice("ipc://".length), { force: true });
    }
  }

  private drop(reason: string): void {
    this.dropped++;
    this.log.debug(`dropped a frame: ${reason}`, { dropped: this.dropped });
  }
}
