/**
 * A container: one process hosting component nodes, with the local endpoint
 * registry (direct transport) at the top of a transport stack, a membership
 * table, a router, and the process's own control endpoint (Envelope.to
 * empty). Dev mode runs every component in one container; production runs one
 * node per container process.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Logger } from "../component/context.ts";
import type { Component } from "../component/loader.ts";
import { ComponentNode } from "../component/node.ts";
import { MembershipTable, type NodeEntry } from "../membership/table.ts";
import { RoutingCaller } from "../routing/caller.ts";
import { Router } from "../routing/router.ts";
import { DirectTransport } from "../transport/direct.ts";
import { TransportStack } from "../transport/stack.ts";
import type { Transport } from "../transport/transport.ts";
import type protobuf from "protobufjs";
import { PULL, REQUEST_CAPACITY, oneWayControlFrame } from "../wire/control.ts";
import { Kind, Plane, encodeResponse, type Envelope } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { decodeMessage, encodeMessage } from "../wire/message.ts";
import { Mode, type MethodSchema } from "../wire/schema.ts";
import { consoleLogger } from "./log.ts";

export interface ContainerOptions {
  /** Container id (default "<host>-<pid>"). */
  id?: string;
  host?: string;
  network?: string;
  /** Endpoints at which this process's nodes can be reached from outside (advertised in the table). */
  endpoints?: string[];
  /** Makes the logger of each node and of the container itself. */
  logger?: (source: string) => Logger;
  defaultTimeoutMs?: number;
  /** How long calls for a method nobody serves wait for the table to change (see CallerConfig.settleMs). */
  settleMs?: number;
}


/**
 * Serves one control method at the process's control endpoint: gets the
 * decoded request and the envelope; returns (or resolves with) the reply, or
 * throws a NodeBinError. ASYNC control methods are one-way: nothing is answered.
 */
export type ControlHandler = (request: protobuf.Message, env: Envelope) => unknown;

export class Container {
  readonly id: string;
  readonly host: string;
  readonly network: string;
  readonly direct = new DirectTransport();
  readonly stack: TransportStack;
  readonly table = new MembershipTable();
  readonly router: Router;
  /** Calls made by the process itself (not by a node): what in-process users and benchmarks call through. */
  readonly caller: RoutingCaller;
  private readonly nodes = new Map<string, ComponentNode>();
  private readonly callers: RoutingCaller[] = [];
  private readonly log: Logger;
  private readonly makeLogger: (source: string) => Logger;
  private readonly defaultTimeoutMs: number | undefined;
  private readonly settleMs: number | undefined;
  endpoints: string[];
  private closed = false;
  private readonly controlHandlers = new Map<string, { method: MethodSchema; handler: ControlHandler }>();

  constructor(options: ContainerOptions = {}) {
    this.host = options.host ?? hostname();
    this.id = options.id ?? `${this.host}-${process.pid}`;
    this.network = options.network ?? "";
    this.endpoints = options.endpoints ?? [];
    this.makeLogger = options.logger ?? ((source) => consoleLogger(source));
    this.log = this.makeLogger(this.id);
    this.defaultTimeoutMs = options.defaultTimeoutMs;
    this.settleMs = options.settleMs;
    this.stack = new TransportStack([this.direct]);
    this.router = new Router(this.table, { inProcess: (id) => this.direct.has(id), host: this.host, network: this.network });
    this.caller = this.newCaller(`${this.id}/caller`);
    this.direct.attach(this.caller.id, (env) => this.answerOnly(this.caller, env));
    this.direct.attach("", (env) => this.control(env));
    this.serveControl(PULL, (request) => {
      this.refreshLoad();
      return this.table.encodePull((request as unknown as { knownVersion: number }).knownVersion);
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

  /** Serves a control method at this process's control endpoint (replacing any handler it had). */
  serveControl(method: MethodSchema, handler: ControlHandler): void {
    this.controlHandlers.set(method.fullName, { method, handler });
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
      const node = new ComponentNode({ id, component, caller, outbox: (to, frame) => this.stack.send(to, frame), log: this.makeLogger(id), ...(options.hold ? { hold: true } : {}) });
      await node.start();
      // Control-plane requests addressed to a node (a capacity request, say) are its process's business.
      this.direct.attach(id, (env) => (env.plane === Plane.CONTROL && env.kind === Kind.REQUEST ? this.control(env) : node.receive(env)));
      this.nodes.set(id, node);
      this.table.upsert(this.entryOf(node), component.schema);
      started.push(node);
    }
    return started;
  }

  /** The nodes of this process. */
  localNodes(): ComponentNode[] {
    return [...this.nodes.values()];
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
    if (index >= 0) this.callers.splice(index, 1)[0]!.close();
  }

  /** Drains every node, fails what is still in flight, releases transports. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.nodes.keys()].map((id) => this.removeNode(id)));
    this.caller.close();
    await this.stack.close();
  }

  private newCaller(id: string): RoutingCaller {
    const caller = new RoutingCaller({
      id,
      router: this.router,
      sender: this.stack,
      ...(this.defaultTimeoutMs ? { defaultTimeoutMs: this.defaultTimeoutMs } : {}),
      ...(this.settleMs ? { settleMs: this.settleMs } : {}),
      // A call that found every node full asks the full node's process for capacity (it tells its governor).
      requestCapacity: (node, method) => this.sendControl(REQUEST_CAPACITY, { component: node.component, method: method.fullName, fromHost: this.host }, { to: node.id }),
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
   * process at `endpoint` (or to endpoint id `to` through the table): nothing
   * is answered, nothing waited for. Throws when it cannot be sent.
   */
  sendControl(method: MethodSchema, request: unknown, target: { via?: string; to?: string }): void {
    this.stack.send(target.to ?? "", oneWayControlFrame(method, request, this.id, target.to ?? ""), target.via);
  }

  /**
   * Fails, with UNAVAILABLE, every call of this process waiting on the peer at
   * `endpoint` (its connection dropped): callers learn now, not at their deadline.
   */
  failCallsVia(endpoint: string, endpointOf: (to: string) => string | undefined): void {
    for (const caller of this.callers) caller.failCallsTo((to, via) => (via ?? endpointOf(to)) === endpoint, `connection to ${endpoint} lost`);
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
  private answerOnly(caller: RoutingCaller, env: Envelope): void {
    if (env.kind === Kind.RESPONSE) caller.handleResponse(env);
    else if (env.kind === Kind.REQUEST) this.reply(env, undefined, new NodeBinError("UNIMPLEMENTED", `${caller.id} serves no methods`, { origin: caller.id }));
  }

  /** The process's control endpoint: dispatches control requests to their handlers. */
  private control(env: Envelope): void {
    if (env.kind !== Kind.REQUEST) return;
    if (env.plane !== Plane.CONTROL) {
      this.reply(env, undefined, new NodeBinError("INVALID_ARGUMENT", `application request for ${env.method} has no node id; pull the membership table and address a node`, { origin: this.id }));
      return;
    }
    const served = this.controlHandlers.get(env.method);
    if (!served) {
      this.reply(env, undefined, new NodeBinError("UNIMPLEMENTED", `unknown control method ${env.method}`, { origin: this.id }));
      return;
    }
    const oneWay = served.method.mode === Mode.ASYNC;
    const fail = (err: unknown) => {
      const e = NodeBinError.from(err);
      if (!e.origin) e.origin = this.id;
      if (oneWay) this.log.debug(`control ${env.method} failed: ${e}`);
      else this.reply(env, undefined, e);
    };
    let result: unknown;
    try {
      result = served.handler(decodeMessage(served.method.requestType, env.value, `request of ${env.method}`), env);
    } catch (err) {
      fail(err);
      return;
    }
    const answer = (value: unknown) => {
      if (oneWay) return;
      try {
        this.reply(env, value instanceof Uint8Array ? value : encodeMessage(served.method.responseType, value, `reply of ${env.method}`), undefined);
      } catch (err) {
        fail(err);
      }
    };
    if (result instanceof Promise) result.then(answer, fail);
    else answer(result);
  }

  private reply(request: Envelope, value: Uint8Array | undefined, error: NodeBinError | undefined): void {
    try {
      this.stack.send(request.from, encodeResponse(request, this.id, value, error?.toWire()));
    } catch (err) {
      this.log.warn(`cannot answer ${request.from}: ${NodeBinError.from(err)}`);
    }
  }
}
