/**
 * A container: one process hosting component nodes, with the local endpoint
 * registry (direct transport) at the top of a transport stack, a membership
 * table, a router, and the process's own control endpoint (Envelope.to
 * empty). Dev mode runs every component in one container; production runs one
 * node per container process.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { BroadcastOptions, Broadcaster, Logger } from "../component/context.ts";
import type { Component } from "../component/loader.ts";
import { ComponentNode } from "../component/node.ts";
import { loggingInterceptor, outboundLoggingInterceptor, type InboundInterceptor, type OutboundInterceptor } from "../component/interceptor.ts";
import type { Clock } from "../platform/clock.ts";
import { MembershipTable, type NodeEntry } from "../membership/table.ts";
import { RoutingCaller } from "../routing/caller.ts";
import { Router } from "../routing/router.ts";
import { DirectTransport } from "../transport/direct.ts";
import { TransportStack } from "../transport/stack.ts";
import type { Peer, Transport } from "../transport/transport.ts";
import { EncodedReply, PULL, REQUEST_CAPACITY, oneWayControlFrame, readReply, type ControlMethod } from "../wire/control.ts";
import { Kind, Plane, encodeResponse, type Envelope } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { ControlServer } from "./control-server.ts";
import { consoleLogger, logLevelFromEnv } from "./log.ts";

export interface ContainerOptions {
  /** Container id (default "<host>-<pid>"). */
  id?: string;
  /**
   * Its host id. Default: the machine's host name, which is no identity on a
   * network (two machines may share it) but is all an in-process container
   * needs; every process that joins a network is built by NodeBinProcess,
   * which is given the host's id (hostId() in cli/net-options.ts).
   */
  host?: string;
  network?: string;
  /** Endpoints at which this process's nodes can be reached from outside (advertised in the table). */
  endpoints?: string[];
  /** Makes the logger of each node and of the container itself. */
  logger?: (source: string) => Logger;
  defaultTimeoutMs?: number;
  /** How long calls for a method nobody serves wait for the table to change (see CallerConfig.settleMs). */
  settleMs?: number;
  /** The table may be stale: refresh it (see CallerConfig.onStale). */
  onStale?: () => Promise<void>;
  /** The time callers and routers read and wait on (default: the system clock). */
  clock?: Clock;
  /**
   * Links around every call leaving this process's callers (outbound) and
   * every message entering its nodes (inbound), after the built-in logging
   * link (component/interceptor.ts).
   */
  interceptors?: { outbound?: readonly OutboundInterceptor[]; inbound?: readonly InboundInterceptor[] };
}

/** Where a control request goes: the process at a network endpoint (`via`), or the process of endpoint id `to`. */
export interface ControlTarget {
  via?: string;
  to?: string;
}

export class Container {
  readonly id: string;
  readonly host: string;
  /** Its network ("" = default). A client's is the network it pulls its table from (adoptNetwork). */
  get network(): string {
    return this.locality.network;
  }
  private readonly locality: { inProcess(id: string): boolean; host: string; network: string };
  readonly direct = new DirectTransport();
  readonly stack: TransportStack;
  readonly table = new MembershipTable();
  readonly router: Router;
  /** Calls made by the process itself (not by a node): what in-process users and benchmarks call through. */
  readonly caller: RoutingCaller;
  private readonly nodes = new Map<string, ComponentNode>();
  private readonly callers: RoutingCaller[] = [];
  private retiredForeignAnswers = 0;
  private readonly log: Logger;
  private readonly makeLogger: (source: string) => Logger;
  private readonly defaultTimeoutMs: number | undefined;
  private readonly settleMs: number | undefined;
  private readonly onStale: (() => Promise<void>) | undefined;
  private readonly clock: Clock | undefined;
  private readonly outbound: readonly OutboundInterceptor[];
  private readonly inbound: readonly InboundInterceptor[];
  /** NODEBIN_LOG=debug: a log line per message and per failed call (a promise per message: only then). */
  private readonly debugLog = logLevelFromEnv() === "debug";
  endpoints: string[];
  /** Where this process's broadcasts go (set by NodeBinProcess: container/broadcast.ts); unset, they are refused. */
  broadcaster: Broadcaster | undefined;
  private closed = false;
  /** The process's control endpoint: what it serves to whom (see control-server.ts). */
  readonly control: ControlServer;

  constructor(options: ContainerOptions = {}) {
    this.host = options.host ?? hostname();
    this.id = options.id ?? `${this.host}-${process.pid}`;
    this.locality = { inProcess: (id) => this.direct.has(id), host: this.host, network: options.network ?? "" };
    this.endpoints = options.endpoints ?? [];
    this.makeLogger = options.logger ?? ((source) => consoleLogger(source));
    this.log = this.makeLogger(this.id);
    this.defaultTimeoutMs = options.defaultTimeoutMs;
    this.settleMs = options.settleMs;
    this.onStale = options.onStale;
    this.clock = options.clock;
    this.outbound = options.interceptors?.outbound ?? [];
    this.inbound = options.interceptors?.inbound ?? [];
    this.stack = new TransportStack([this.direct]);
    this.control = new ControlServer(this.id, (request, value, from, error) => this.reply(request, value, error, from), this.log);
    this.router = new Router(this.table, this.locality, this.clock ? { clock: this.clock } : {});
    this.caller = this.newCaller(`${this.id}/caller`);
    this.direct.attach(this.caller.id, (env, peer) => this.answerOnly(this.caller, env, peer));
    this.direct.attach("", (env, peer) => this.control.handle(env, peer));
    this.control.serve(PULL, ({ knownVersion }) => {
      this.refreshLoad();
      return new EncodedReply(this.table.encodePull(knownVersion, { host: this.host, network: this.network }));
    });
  }

  /**
   * Brings the advertised load of this process's nodes up to date (their queue
   * lengths), before it is sent anywhere: routers elsewhere pick by it.
   */
  refreshLoad(): void {
    for (const node of this.nodes.values()) {
      const entry = this.table.get(node.id);
      if (entry) entry.load.queued = node.getStats().queued;
    }
  }

  /**
   * Takes the network of the agent whose table this process pulls (a
   * client): its nodes are then "this network" to its router, and scope
   * "network" means that network.
   */
  adoptNetwork(network: string): void {
    this.locality.network = network;
  }

  /** Adds a transport below the ones already stacked (frames the others cannot route go to it). */
  addTransport(transport: Transport): void {
    this.stack.push(transport);
  }

  /** Takes a transport out of the stack and closes it. */
  async removeTransport(transport: Transport): Promise<void> {
    this.stack.remove(transport);
    await transport.close();
  }

  /**
   * Starts `count` nodes of `component` and announces them in the table.
   * Throws INTERNAL when a node's init hook fails (the others stay up).
   */
  async addComponent(component: Component, count = 1, options: { hold?: boolean } = {}): Promise<ComponentNode[]> {
    const started: ComponentNode[] = [];
    for (let i = 0; i < count; i++) {
      const id = `${component.name}-${randomBytes(3).toString("hex")}`;
      const caller = this.newCaller(id);
      const log = this.makeLogger(id);
      const interceptors = [loggingInterceptor(log, { perMessage: this.debugLog }), ...this.inbound];
      const node = new ComponentNode({ id, component, caller, outbox: (to, frame) => this.stack.send(to, frame), broadcast: (from, method, request, o) => this.broadcast(from, method, request, o), log, interceptors, ...(options.hold ? { hold: true } : {}) });
      await node.start();
      // Control-plane requests addressed to a node (a capacity request, say) are its process's business.
      this.direct.attach(id, (env, peer) => (env.plane === Plane.CONTROL && env.kind === Kind.REQUEST ? this.control.handle(env, peer) : node.receive(env, peer)));
      this.nodes.set(id, node);
      this.table.upsert(this.entryOf(node), component.schema);
      started.push(node);
    }
    return started;
  }

  /**
   * Broadcasts from endpoint `from` of this process (a node's ctx.broadcast,
   * or the process's own): see container/broadcast.ts. Throws UNAVAILABLE
   * when the process has no broadcaster, else what it throws.
   */
  broadcast(from: string, method: string, request: unknown, options?: BroadcastOptions): void {
    if (!this.broadcaster) throw new NodeBinError("UNAVAILABLE", `process ${this.id} does not broadcast`);
    this.broadcaster(from, method, request, options);
  }

  /** The nodes of this process. */
  localNodes(): ComponentNode[] {
    return [...this.nodes.values()];
  }

  /**
   * Puts a node of this process back in the table after it was taken out
   * (a drain whose hand-over did not happen: it serves again). Does nothing
   * for a node this process does not hold.
   */
  announce(id: string): void {
    const node = this.nodes.get(id);
    if (node) this.table.upsert(this.entryOf(node), node.component.schema);
  }

  /** Stops a node gracefully: out of the table first, then drained, then detached. */
  async removeNode(id: string): Promise<void> {
    const node = this.nodes.get(id);
    if (!node) return;
    this.table.remove(id);
    await node.close();
    this.direct.detach(id);
    this.nodes.delete(id);
    const index = this.callers.findIndex((c) => c.id === id);
    if (index >= 0) {
      const caller = this.callers.splice(index, 1)[0]!;
      this.retiredForeignAnswers += caller.foreignAnswers;
      caller.close();
    }
  }

  /** Drains every node, fails what is still in flight, releases transports. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.nodes.keys()].map((id) => this.removeNode(id)));
    for (const caller of this.callers) caller.close();
    await this.stack.close();
  }

  /**
   * A caller of this process's own, answered at endpoint `id` (attached here
   * now), that routes with `router` (default the process's): its calls fail
   * with the others' when a connection drops (failCallsVia), and it closes
   * with the process. A gateway relays through one whose router counts no
   * endpoint of this process as a node of its own (gateway/relay.ts).
   * Throws ALREADY_EXISTS for an id in use.
   */
  addCaller(id: string, router: Router = this.router): RoutingCaller {
    const caller = this.newCaller(id, router);
    this.direct.attach(id, (env, peer) => this.answerOnly(caller, env, peer));
    return caller;
  }

  private newCaller(id: string, router: Router = this.router): RoutingCaller {
    const caller = new RoutingCaller({
      id,
      router,
      sender: this.stack,
      ...(this.defaultTimeoutMs ? { defaultTimeoutMs: this.defaultTimeoutMs } : {}),
      ...(this.settleMs ? { settleMs: this.settleMs } : {}),
      ...(this.onStale ? { onStale: this.onStale } : {}),
      ...(this.clock ? { clock: this.clock } : {}),
      interceptors: this.debugLog ? [outboundLoggingInterceptor(this.makeLogger(id)), ...this.outbound] : this.outbound,
      // A call that found every node full asks the full node's process for capacity (it tells its governor).
      requestCapacity: (node, method, scope) => this.sendControl(REQUEST_CAPACITY, { component: node.component, method: method.fullName, fromHost: this.host, visited: [], scope }, { to: node.id }),
    });
    this.callers.push(caller);
    return caller;
  }

  /** Sends a frame to the process at a network endpoint (its control endpoint, unless the frame says otherwise). */
  sendVia(endpoint: string, frame: Uint8Array): void {
    this.stack.send("", frame, endpoint);
  }

  /**
   * Sends a one-way (ASYNC) control request to the control endpoint of the
   * process at `target.via` (or of endpoint id `target.to` through the
   * table): nothing is answered, nothing waited for. Throws when it cannot be sent.
   */
  sendControl<Req>(method: ControlMethod<Req, void>, request: Req, target: ControlTarget): void {
    this.stack.send(target.to ?? "", oneWayControlFrame(method, request, this.id, target.to ?? ""), target.via);
  }

  /**
   * Calls a control method of the process at `target` (its network endpoint,
   * or the process of an endpoint id) from this process's own caller, and
   * resolves with the typed reply. Rejects with the callee's coded error, or
   * DEADLINE_EXCEEDED after `timeoutMs`.
   */
  async callControl<Req, Res>(method: ControlMethod<Req, Res>, request: Req, target: ControlTarget, timeoutMs: number): Promise<Res> {
    const reply = await this.caller.callEndpoint({
      method: method.schema,
      to: target.to ?? "",
      ...(target.via !== undefined ? { via: target.via } : {}),
      plane: Plane.CONTROL,
      request,
      options: { timeoutMs },
    });
    return readReply(method, reply);
  }

  /**
   * Stream frames that matched no open stream (STREAM_ITEM and STREAM_END at
   * this process's callers; CREDIT and CANCEL at its nodes), and STREAM
   * requests refused past a connection's bound: dropped and counted.
   */
  get streamRefusals(): { unknownStreamFrames: number; streamsRefused: number } {
    let unknownStreamFrames = this.callers.reduce((n, c) => n + c.unknownStreamFrames, 0);
    let streamsRefused = 0;
    for (const node of this.nodes.values()) {
      const stats = node.getStats();
      unknownStreamFrames += stats.streamFramesDropped;
      streamsRefused += stats.streamsRefused;
    }
    return { unknownStreamFrames, streamsRefused };
  }

  /** Answers this process's callers dropped for coming back on another link than their request left on (forged, or very confused). */
  get foreignAnswers(): number {
    return this.callers.reduce((n, c) => n + c.foreignAnswers, 0) + this.retiredForeignAnswers;
  }

  /**
   * Fails every call of this process waiting on the peer at `endpoint` (its
   * connection dropped): callers learn now, not at their deadline. With
   * UNAVAILABLE, or `error` when the transport knows better (a handshake
   * refused: UNAUTHENTICATED).
   */
  failCallsVia(endpoint: string, endpointOf: (to: string) => string | undefined, error?: NodeBinError): void {
    for (const caller of this.callers) caller.failCallsTo((to, via) => (via ?? endpointOf(to)) === endpoint, `connection to ${endpoint} lost`, error);
    // Streams that peer opened over that connection (a connector's Peer.connection is its endpoint) end too.
    this.connectionClosed(endpoint);
  }

  private readonly closedListeners = new Set<(connection: string) => void>();

  /** Calls `listener` with every connection that closes (see connectionClosed): endpoints other than nodes (a gateway's relays) end what it carried. Returns the unsubscribe function. */
  onConnectionClosed(listener: (connection: string) => void): () => void {
    this.closedListeners.add(listener);
    return () => this.closedListeners.delete(listener);
  }

  /**
   * A connection closed (transport Peer.connection; see
   * ZmqOptions.onConnectionClosed): the streams its peer opened at this
   * process's nodes end, and their generators are returned.
   */
  connectionClosed(connection: string): void {
    for (const listener of [...this.closedListeners]) listener(connection);
    for (const node of this.nodes.values()) node.connectionClosed(connection);
  }

  private entryOf(node: ComponentNode): NodeEntry {
    const stats = node.getStats();
    return {
      id: node.id,
      component: node.component.name,
      version: node.component.manifest.version,
      host: this.host,
      network: this.network,
      endpoints: this.endpoints,
      methods: [...node.component.handlers.keys()].map((name) => ({ name, mode: node.component.schema.methods.get(name)!.mode })),
      schema: node.component.schema.id,
      load: { queued: stats.queued, capacity: stats.capacity },
    };
  }

  /** An endpoint that only makes calls: anything but an answer gets UNIMPLEMENTED. */
  private answerOnly(caller: RoutingCaller, env: Envelope, peer: Peer): void {
    if (env.kind === Kind.RESPONSE || env.kind === Kind.STREAM_ITEM || env.kind === Kind.STREAM_END) caller.handleResponse(env, peer.link);
    else if (env.kind === Kind.REQUEST) this.reply(env, undefined, new NodeBinError("UNIMPLEMENTED", `${caller.id} serves no methods`, { origin: caller.id }), peer);
  }

  /** Answers a request: back on the connection it came in on when the transport knows it, else to its `from` through the stack. */
  private reply(request: Envelope, value: Uint8Array | undefined, error: NodeBinError | undefined, from: Peer): void {
    try {
      const frame = encodeResponse(request, this.id, value, error?.toWire());
      if (from.reply) from.reply(frame);
      else this.stack.send(request.from, frame);
    } catch (err) {
      this.log.warn(`cannot answer ${request.from}: ${NodeBinError.from(err)}`);
    }
  }
}
