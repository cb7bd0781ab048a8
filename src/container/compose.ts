/**
 * One place assembles a node-bin process, whatever its role (nats.js's
 * `connect()` is the model): `dev`, `container`, `governor` and the client
 * library are all a NodeBinProcess, built from the same parts:
 * - the transport stack: the direct transport (this process's endpoints) on
 *   top, then the ZeroMQ listeners it binds and one connector for every peer
 *   it reaches, all made here with the same ZmqOptions (socket options hook
 *   included), so a new transport or socket option is wired once;
 * - the membership role: none (a closed dev world, or a client, which pulls
 *   its table itself), or the host role (host-role.ts: agent or member);
 * - the router and callers, and the control server (container.ts).
 * What differs between roles is data: which listeners, which role, which
 * control methods they add.
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import type { BroadcastOptions, Logger } from "../component/context.ts";
import { reachableEndpoint } from "../membership/table.ts";
import type { Clock } from "../platform/clock.ts";
import { hasIpc } from "../platform/platform.ts";
import { advertiseAddress, defaultBind, tcpEndpoint } from "../transport/addresses.ts";
import { claimIpc, ipcOwner, releaseIpc } from "../transport/runtime-dir.ts";
import { loadSecurity, type SecurityProvider } from "../security/provider.ts";
import { ZmqConnector, ZmqListener, wireLimitsFromEnv, type DropCounter, type ZmqOptions } from "../transport/zmq.ts";
import { BROADCAST, REQUEST_CAPACITY, type CapacityRequest, type ControlContext } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import { ProcessBroadcast } from "./broadcast.ts";
import { Container, type ContainerOptions } from "./container.ts";
import { HostRole, removeIpcFiles, type HostRoleOptions } from "./host-role.ts";
import { consoleLogger } from "./log.ts";

export interface ProcessOptions {
  /** Process id in the network (its control endpoint's `from`). */
  id: string;
  host: string;
  network?: string;
  /** Private runtime directory (ipc sockets). */
  runtimeDir: string;
  logger?: (source: string) => Logger;
  clock?: Clock;
  defaultTimeoutMs?: number;
  /** How long calls for a method nobody serves wait for the table to change. */
  settleMs?: number;
  /** The table may be stale: refresh it (see CallerConfig.onStale; the client pulls again). */
  onStale?: () => Promise<void>;
  /** Links around every call out of and every message into this process (see ContainerOptions.interceptors). */
  interceptors?: ContainerOptions["interceptors"];
  /** Address every tcp socket of this process binds (default: defaultBind(): every interface with a cluster key, else loopback). */
  bind?: string;
  /**
   * The security provider (security/provider.ts): CurveZMQ on every tcp
   * socket, the ZAP decision, the state seal. Default: none (plain tcp, the
   * host's own state key). The process closes it when it closes.
   */
  security?: SecurityProvider;
  /** Address its tcp endpoints are advertised at (default: see advertiseAddress()). */
  advertise?: string;
  /** ZeroMQ tuning and the socket-options hook, for every socket of the process. */
  zmq?: Omit<ZmqOptions, "onDrop" | "advertise">;
  /**
   * Give this process's nodes endpoints of their own, advertised in the
   * table: a private ipc socket for the host's processes and a tcp port
   * (chosen by the OS) for the network.
   */
  nodeEndpoints?: boolean;
  /**
   * Well-known endpoints of this process for the host's own tools (dev's
   * socket, the governor's): bound, with an owner file beside ipc ones, so a
   * second process is refused (ALREADY_EXISTS) instead of stealing the socket.
   * When the process has no node endpoints, its nodes are reached here.
   */
  localEndpoints?: string[];
  /**
   * Close the connection to a node endpoint once no node in the table has it
   * (a DEALER to a peer that left would reconnect forever). For processes
   * whose nodes call around (containers, joined dev): a governor's or a
   * client's own calls may still be waiting on a peer that just left the
   * table (a draining child answering its Drain), and closing the socket
   * would lose that answer.
   */
  pruneConnections?: boolean;
  /** Join the host's membership (see host-role.ts); `bind`/`advertise` come from above. */
  hostRole?: Omit<HostRoleOptions, "bind" | "advertise" | "runtimeDir" | "log" | "clock" | "disconnect" | "security">;
  /**
   * Where capacity requests that reach this process go (a caller found every
   * node here full): its governor. Without one they are logged and dropped.
   */
  onCapacity?: (request: CapacityRequest, ctx: ControlContext) => void;
}

export class NodeBinProcess {
  readonly container: Container;
  readonly connector: ZmqConnector;
  /** The host role, when the process joins its host (else undefined). */
  readonly host: HostRole | undefined;
  readonly bind: string;
  readonly advertise: string;
  readonly security: SecurityProvider;
  /** The process's broadcasts: what it sends, and what its nodes receive (container/broadcast.ts). */
  readonly broadcasts: ProcessBroadcast;
  /** Frames and connections this process's ZeroMQ sockets dropped or refused, by reason. */
  private readonly drops: Partial<Record<DropCounter, number>> = {};
  private readonly listeners: ZmqListener[] = [];
  private readonly claimed: string[] = [];
  /** The local endpoints as bound (a tcp port 0 resolved). */
  localEndpoints: string[] = [];
  private readonly seenEndpoints = new Set<string>();
  private readonly log: Logger;
  private readonly zmq: ZmqOptions;
  private closed = false;

  private constructor(private readonly options: ProcessOptions) {
    const makeLogger = options.logger ?? ((source: string) => consoleLogger(source));
    this.log = makeLogger(options.id);
    this.security = options.security ?? loadSecurity({ runtimeDir: options.runtimeDir });
    this.bind = options.bind ?? defaultBind(this.security.wire !== undefined);
    this.advertise = advertiseAddress(this.bind, options.advertise);
    const containerOptions: ContainerOptions = {
      id: options.id,
      host: options.host,
      network: options.network ?? "",
      logger: makeLogger,
      ...(options.defaultTimeoutMs ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
      ...(options.settleMs ? { settleMs: options.settleMs } : {}),
      ...(options.onStale ? { onStale: options.onStale } : {}),
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.interceptors ? { interceptors: options.interceptors } : {}),
    };
    this.container = new Container(containerOptions);
    // The wire bounds: NODEBIN_MAX_* from the environment (every role the same), then what the caller set.
    this.zmq = {
      ...wireLimitsFromEnv(process.env),
      ...options.zmq,
      ...(this.security.wire ? { security: this.security.wire } : {}),
      advertise: this.advertise,
      onDrop: (reason, counter) => this.drop(reason, counter),
      onConnectionClosed: (connection) => this.container.connectionClosed(connection),
    };
    const endpointOf = (to: string): string | undefined => {
      const entry = this.container.table.get(to);
      return entry && reachableEndpoint(entry, options.host);
    };
    this.connector = new ZmqConnector(endpointOf, (env, peer) => this.container.direct.dispatch(env, peer), (lost, error) => this.container.failCallsVia(lost, endpointOf, error), this.zmq);
    this.container.addTransport(this.connector);
    if (options.pruneConnections) this.container.table.onChange(() => this.pruneConnections());
    this.container.control.serve(REQUEST_CAPACITY, (request, ctx) => {
      if (options.onCapacity) options.onCapacity(request, ctx);
      else this.log.debug(`capacity wanted for ${request.component}, but no governor runs this process`);
    });
    this.host = options.hostRole
      ? new HostRole(this.container, (addresses) => this.listen(addresses), {
          ...options.hostRole,
          bind: this.bind,
          advertise: this.advertise,
          runtimeDir: options.runtimeDir,
          log: this.log,
          // The agent closes the gossip connections it no longer needs (at most 64 kept, see gossip.ts).
          disconnect: (endpoint: string) => this.connector.disconnect(endpoint),
          ...(options.clock ? { clock: options.clock } : {}),
          ...(this.security.wire ? { security: this.security.wire } : {}),
        })
      : undefined;
    // Joined to its host: broadcasts go through the host's relay (this process's own while it is the agent);
    // else a closed world, where they reach this process's nodes only.
    const host = this.host;
    this.broadcasts = new ProcessBroadcast({ container: this.container, log: this.log, ...(host ? { host: { endpoints: host.relayEndpoints, relay: () => host.relay } } : {}) });
    this.container.broadcaster = (from, method, request, o) => this.broadcasts.send(from, method, request, o);
    this.container.control.serve(BROADCAST, (request, ctx) => {
      this.broadcasts.publish(ctx.env.from, request.method, request.value, request.meta);
      return {};
    });
  }

  /**
   * Broadcasts from this process itself (not from one of its nodes): see
   * ProcessBroadcast.send. Throws NOT_FOUND, INVALID_ARGUMENT,
   * RESOURCE_EXHAUSTED.
   */
  broadcast(method: string, request: unknown, options?: BroadcastOptions): void {
    this.broadcasts.send(this.options.id, method, request, options);
  }

  /**
   * Builds the process and binds its listeners (it does not join its host
   * yet: add nodes first, then `host.join()`). Throws ALREADY_EXISTS when a
   * live process owns one of the local endpoints, UNAVAILABLE when an
   * address cannot be bound.
   */
  static async create(options: ProcessOptions): Promise<NodeBinProcess> {
    const p = new NodeBinProcess(options);
    try {
      await p.bindEndpoints();
    } catch (err) {
      await p.close();
      throw err;
    }
    return p;
  }

  /** The endpoints this process's nodes are advertised at. */
  get endpoints(): string[] {
    return this.container.endpoints;
  }

  /** Binds a listener on `addresses` (one kind) with this process's socket options, into its dispatch, at the bottom of the stack. */
  async listen(addresses: string[]): Promise<ZmqListener> {
    const listener = await ZmqListener.bind(addresses, (env, peer) => this.container.direct.dispatch(env, peer), this.zmq);
    this.listeners.push(listener);
    return listener;
  }

  private async bindEndpoints(): Promise<void> {
    const { localEndpoints = [], nodeEndpoints, runtimeDir } = this.options;
    for (const endpoint of localEndpoints) {
      const other = ipcOwner(endpoint);
      if (other !== undefined && other !== process.pid) {
        throw new NodeBinError("ALREADY_EXISTS", `process ${other} already serves at ${endpoint}`, { details: { pid: String(other), endpoint } });
      }
    }
    const local: ZmqListener[] = [];
    for (const endpoint of localEndpoints) {
      const l = await this.listen([endpoint]);
      this.container.addTransport(l);
      claimIpc(endpoint);
      this.claimed.push(endpoint);
      local.push(l);
    }
    this.localEndpoints = local.flatMap((l) => l.endpoints);
    const nodes: ZmqListener[] = [];
    if (nodeEndpoints) {
      // One listener per kind: the kind of peer decides what it may ask.
      if (hasIpc) nodes.push(await this.listen([`ipc://${join(runtimeDir, `node-${process.pid}-${randomBytes(3).toString("hex")}.sock`)}`]));
      nodes.push(await this.listen([tcpEndpoint(this.bind, 0)]));
      for (const l of nodes) this.container.addTransport(l);
    }
    this.container.endpoints = (nodes.length ? nodes : local).flatMap((l) => l.endpoints);
  }

  /**
   * Closes connections to node endpoints no node in the table has any more
   * (nodes that left). Only endpoints that belonged to nodes are pruned: the
   * discovery endpoints an agent gossips with never appear in entries.
   */
  private pruneConnections(): void {
    const used = new Set(this.container.table.entries().flatMap((e) => e.endpoints));
    for (const endpoint of this.seenEndpoints) {
      if (used.has(endpoint)) continue;
      this.seenEndpoints.delete(endpoint);
      this.connector.disconnect(endpoint);
    }
    for (const endpoint of used) this.seenEndpoints.add(endpoint);
  }

  private drop(reason: string, counter: DropCounter): void {
    const n = (this.drops[counter] = (this.drops[counter] ?? 0) + 1);
    // A bound that refuses is worth a line (rate-limited by powers of two: a flood writes ~log2(n) lines);
    // everything else is routine (a peer that left, a stale table).
    const bound = counter === "tooManyFrames" || counter === "messageTooLarge" || counter === "connectionsRefused" || counter === "unauthenticated";
    if (bound && (n & (n - 1)) === 0) this.log.warn(`${reason} (${counter}: ${n} so far)`);
    else this.log.debug(`dropped: ${reason}`, { [counter]: n });
  }

  /** Everything dropped or refused since start, by reason (Ping's `refused`): the transport's counters and the callers' foreign answers. */
  refused(): Record<string, number> {
    const out: Record<string, number> = { ...this.drops };
    const foreign = this.container.foreignAnswers;
    if (foreign) out.foreignAnswers = foreign;
    // What broadcasts lost on the way here (broadcastMissed: gaps in an origin's sequence) and what the host's relay dropped, if it runs here.
    for (const [reason, n] of Object.entries({ ...this.host?.relay?.refused() })) out[reason] = n;
    for (const [reason, n] of Object.entries(this.broadcasts.refused())) out[reason] = (out[reason] ?? 0) + n;
    const { unknownStreamFrames, streamsRefused } = this.container.streamRefusals;
    if (unknownStreamFrames) out.unknownStreamFrames = unknownStreamFrames;
    if (streamsRefused) out.streamsRefused = streamsRefused;
    return out;
  }

  /** Frames dropped by this process's ZeroMQ sockets, all reasons together. */
  get dropped(): number {
    return Object.values(this.drops).reduce((n, v) => n + (v ?? 0), 0);
  }

  /**
   * Leaves cleanly: the host role first (a member deregisters, so callers
   * stop choosing its nodes), then the nodes drain (queued messages are
   * finished), then every socket closes and the ipc files go. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.host?.close();
    // The listeners still open, the host role's discovery ones included (they are bound through
    // listen()); not those it closed when it yielded: their socket paths are the new agent's now.
    const open = this.listeners.filter((l) => !l.closed);
    await this.broadcasts.close();
    await this.container.close();
    removeIpcFiles(open);
    for (const endpoint of this.claimed) releaseIpc(endpoint);
    this.security.close();
  }
}
