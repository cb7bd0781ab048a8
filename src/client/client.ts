/**
 * The client library: a node-bin process with no nodes (compose.ts), serving
 * nothing. It connects to any node-bin process (by default the local
 * `node-bin dev`, else the local governor), pulls its membership table, and
 * calls nodes directly through the same routing code the containers use.
 */
import { existsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { CallOptions, CallStream, StreamOptions } from "../component/context.ts";
import { NodeBinProcess } from "../container/compose.ts";
import type { MembershipTable, NodeEntry } from "../membership/table.ts";
import { tiersOf, type HostSummary, type Tiers } from "../membership/capacity.ts";
import { loadSecurity, type SecurityProvider } from "../security/provider.ts";
import { devEndpoint, discoveryIpc, ipcOwner, ipcOwnerFile, readHostIdentity, runtimeDirPath } from "../transport/runtime-dir.ts";
import { BROADCAST, PULL, type ControlMethod } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import { encodeMessage, messageToJSON } from "../wire/message.ts";
import { Mode, modeName, type MethodSchema } from "../wire/schema.ts";
import { wrongMode } from "../routing/caller.ts";
export interface ClientOptions {
  /** A node-bin process to pull the table from (default: the local `node-bin dev`). */
  endpoint?: string;
  /** Default time allowed per call (default 30 000 ms). */
  timeoutMs?: number;
  /** Time allowed to reach the endpoint and pull its table (default 5 000 ms). */
  connectTimeoutMs?: number;
  /** This client's host id, to reach same-host nodes over ipc (default $NODEBIN_HOST, else the id this host's processes keep in the runtime directory, else the host name). */
  host?: string;
  /**
   * How often the table is pulled again in the background, so that nodes
   * that joined (a component grown by its governor, a rolled deploy) get
   * calls (default 1000 ms; 0: never). Cheap: unchanged tables are not resent.
   */
  refreshMs?: number;
  /**
   * The cluster key file (default $NODEBIN_CLUSTER_KEY_FILE): a keyed
   * network admits only clients that hold its key. Without the right one,
   * connect() fails UNAUTHENTICATED within a handshake.
   */
  clusterKeyFile?: string;
  /** A security provider to use instead (security/provider.ts); the client closes it. */
  security?: SecurityProvider;
}

export interface FieldInfo {
  name: string;
  type: string;
  repeated: boolean;
  map: boolean;
}

export interface MethodInfo {
  name: string;
  fullName: string;
  mode: string;
  requestType: string;
  responseType: string;
  requestFields: FieldInfo[];
}

export interface ServiceInfo {
  name: string;
  /** Nodes serving it. */
  nodes: number;
  methods: MethodInfo[];
}

export class Client {
  readonly endpoint: string;
  /** The host id this client runs on (decides ipc vs tcp). */
  readonly host: string;
  private readonly process: NodeBinProcess;
  private readonly connectTimeoutMs: number;
  private readonly refreshMs: number;
  private readonly timeoutMs: number;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private pulledVersion = 0;
  private closed = false;

  private constructor(endpoint: string, host: string, options: ClientOptions, proc: NodeBinProcess) {
    this.endpoint = endpoint;
    this.host = host;
    this.process = proc;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 5000;
    this.refreshMs = options.refreshMs ?? 1000;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** The membership table as last pulled. */
  get table(): MembershipTable {
    return this.process.container.table;
  }

  private get caller() {
    return this.process.container.caller;
  }

  /**
   * Connects and pulls the membership table. Throws UNAVAILABLE when nothing
   * answers at the endpoint in time.
   */
  static async connect(options: ClientOptions = {}): Promise<Client> {
    const endpoint = options.endpoint ?? defaultEndpoint();
    // libzmq would refuse anything else with a bare "Invalid argument".
    if (!/^tcp:\/\/(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):\d{1,5}$/.test(endpoint) && !/^ipc:\/\/\S+$/.test(endpoint)) {
      throw new NodeBinError("INVALID_ARGUMENT", `endpoint ${JSON.stringify(endpoint)} must be tcp://HOST:PORT or ipc://PATH`, { details: { endpoint } });
    }
    const host = options.host ?? (process.env.NODEBIN_HOST || localHostId());
    let client: Client | undefined;
    const keyFile = options.clusterKeyFile ?? (process.env.NODEBIN_CLUSTER_KEY_FILE || undefined);
    const security = options.security ?? loadSecurity({ runtimeDir: runtimeDirPath(), watchMs: 0, ...(keyFile ? { keyFile } : {}) });
    const proc = await NodeBinProcess.create({
      security,
      // Short: it travels in every request frame (zeromq.js copies frames up to 128 bytes, and zero-copies larger ones at a cost).
      id: `client-${randomBytes(6).toString("base64url")}`,
      host,
      runtimeDir: runtimeDirPath(),
      ...(options.timeoutMs ? { defaultTimeoutMs: options.timeoutMs } : {}),
      // A node refused as unhandled and no other is known: the table may be stale.
      onStale: () => client?.staleRefresh() ?? Promise.resolve(),
    });
    client = new Client(endpoint, host, options, proc);
    try {
      await client.refresh();
    } catch (err) {
      await client.close();
      throw err;
    }
    client.scheduleRefresh();
    return client;
  }

  private scheduleRefresh(): void {
    if (!this.refreshMs || this.closed) return;
    this.refreshTimer = setTimeout(() => {
      this.pull(true)
        .catch(() => {
          // The endpoint is away for now: calls to known nodes go on; the next round tries again.
        })
        .finally(() => this.scheduleRefresh());
    }, this.refreshMs);
    // A client's background refresh never keeps its process alive.
    this.refreshTimer.unref?.();
  }

  /** Pulls the membership table again. */
  refresh(): Promise<void> {
    return this.pull(false);
  }

  private stalePull: Promise<void> | undefined;

  /** One pull for however many calls found the table stale at once. */
  private staleRefresh(): Promise<void> {
    return (this.stalePull ??= this.pull(true).finally(() => (this.stalePull = undefined)));
  }

  private async pull(ifChanged: boolean): Promise<void> {
    const ipcPath = this.endpoint.startsWith("ipc://") ? this.endpoint.slice("ipc://".length) : undefined;
    // An ipc socket with no live owner (none yet, or left by a crashed process) would just swallow the pull.
    const ownerless = ipcPath !== undefined && (!existsSync(ipcPath) || (existsSync(ipcOwnerFile(this.endpoint)!) && ipcOwner(this.endpoint) === undefined) || (this.endpoint === devEndpoint() && ipcOwner(this.endpoint) === undefined));
    if (ownerless) {
      throw new NodeBinError("UNAVAILABLE", `nothing listens at ${this.endpoint}: start \`node-bin dev\` or \`node-bin governor\` (or pass --endpoint / --seed)`, { details: { endpoint: this.endpoint } });
    }
    let reply;
    try {
      reply = await this.process.container.callControl(PULL, { knownVersion: ifChanged ? this.pulledVersion : 0 }, { via: this.endpoint }, this.connectTimeoutMs);
    } catch (err) {
      const e = NodeBinError.from(err);
      if (e.code !== "DEADLINE_EXCEEDED") throw e;
      throw new NodeBinError("UNAVAILABLE", `no answer from ${this.endpoint} within ${this.connectTimeoutMs} ms: is node-bin running there?`, { details: { endpoint: this.endpoint }, cause: e });
    }
    this.pulledVersion = this.table.mergePull(reply, this.endpoint).version;
    if (reply.host) this.agent = { host: reply.host, network: reply.network ?? "" };
    this.process.container.adoptNetwork(reply.network ?? "");
  }

  /** The host and network of the process this client pulls its table from (undefined before the first pull, or from an older one). */
  agent: { host: string; network: string } | undefined;

  /** The hosts the answering agent knows, with their capacity (membership/capacity.ts; empty from a dev process). */
  hosts(): HostSummary[] {
    return this.table.hostSummaries();
  }

  /** The three tiers as the agent this client asks sees them: its host, its network, the remote networks its gateways reach. */
  tiers(): Tiers | undefined {
    if (!this.agent) return undefined;
    return tiersOf(this.agent.host, this.agent.network, this.hosts());
  }

  /**
   * Calls a control-plane method of the process at this client's endpoint
   * (the governor's Status, say): no node selection, no table refresh.
   */
  callControl<Req, Res>(method: ControlMethod<Req, Res>, request: Req, options?: { timeoutMs?: number }): Promise<Res> {
    return this.process.container.callControl(method, request, { via: this.endpoint }, options?.timeoutMs ?? this.connectTimeoutMs);
  }

  /** Calls a SYNC method; resolves with the decoded reply (a protobufjs message). */
  call(method: string, request: unknown, options?: CallOptions): Promise<unknown> {
    return this.withFreshTable(() => this.caller.call(method, request, options));
  }

  /** call(), with the reply in proto3 JSON form (64-bit integers as strings, enums by name). */
  async callJSON(method: string, request: unknown, options?: CallOptions): Promise<Record<string, unknown>> {
    const schema = await this.withFreshTable(async () => this.method(method));
    const reply = await this.caller.call(schema.fullName, request, options);
    return messageToJSON(schema.responseType, reply as never);
  }

  /** Sends to an ASYNC method; resolves once a node accepted it. */
  send(method: string, request: unknown, options?: CallOptions): Promise<void> {
    return this.withFreshTable(() => this.caller.send(method, request, options));
  }

  /**
   * Broadcasts to a BROADCAST method: one message to every node serving it,
   * on every host of the network (README "Broadcast"). Fire-and-forget, at
   * most once: it resolves once the process this client is connected to has
   * it on its way to the host's relay; nothing comes back from the nodes.
   * Rejects with NOT_FOUND (no node serves it), INVALID_ARGUMENT (not a
   * BROADCAST method: the message names the verb of its mode; or a request
   * that does not fit), RESOURCE_EXHAUSTED, or the connection's errors.
   */
  broadcast(method: string, request: unknown, options?: { meta?: Record<string, string>; timeoutMs?: number }): Promise<void> {
    return this.withFreshTable(async () => {
      const schema = this.method(method);
      if (schema.mode !== Mode.BROADCAST) throw wrongMode(schema, Mode.BROADCAST);
      const value = encodeMessage(schema.requestType, request, `request of ${schema.fullName}`);
      // The client holds no relay: the process it is connected to publishes it (a closed dev world: to its own nodes).
      await this.process.container.callControl(BROADCAST, { method: schema.fullName, value, meta: options?.meta ?? {} }, { via: this.endpoint }, options?.timeoutMs ?? this.timeoutMs);
    });
  }

  /**
   * Calls a STREAM method: `for await (const item of client.stream(...))`.
   * Nothing is sent before the first next(); `window` (default 16) items may
   * be in flight ahead of what the loop has taken, and `timeoutMs` covers the
   * whole stream. Leaving the loop cancels the producer. Errors (a wrong
   * mode, NOT_FOUND, the stream's own end) come out of next().
   */
  stream<Item = unknown>(method: string, request: unknown, options?: StreamOptions): CallStream<Item> {
    return this.caller.stream(method, request, options) as CallStream<Item>;
  }

  /** stream(), with each item in proto3 JSON form (as callJSON gives replies). */
  async streamJSON(method: string, request: unknown, options?: StreamOptions): Promise<CallStream<Record<string, unknown>>> {
    const schema = await this.withFreshTable(async () => this.method(method));
    const inner = this.caller.stream(schema.fullName, request, options);
    const mapped: CallStream<Record<string, unknown>> = {
      get received() {
        return inner.received;
      },
      async next() {
        const r = await inner.next();
        return r.done ? { value: undefined, done: true } : { value: messageToJSON(schema.responseType, r.value as never), done: false };
      },
      return: async () => {
        await inner.return();
        return { value: undefined, done: true };
      },
      throw: async (error?: unknown) => {
        await inner.return();
        throw error;
      },
      [Symbol.asyncIterator]() {
        return mapped;
      },
    };
    return mapped;
  }

  /** The schema of a method by any accepted spelling. Throws NOT_FOUND. */
  method(name: string): MethodSchema {
    return this.process.container.router.route(name).method;
  }

  /**
   * Runs `attempt`; when this client's own table knows no node for the method
   * (a NOT_FOUND raised here, not by a node), pulls the table again and tries
   * once more: the node may have joined since the last pull.
   */
  private withFreshTable<T>(attempt: () => Promise<T>): Promise<T> {
    return attempt().catch(async (err: unknown) => {
      if (!(err instanceof NodeBinError) || err.code !== "NOT_FOUND" || err.origin !== "") throw err;
      await this.refresh();
      return attempt();
    });
  }

  /** Services known from the table, with their methods and request fields. */
  services(): ServiceInfo[] {
    const byService = new Map<string, { methods: MethodInfo[]; nodes: Set<string> }>();
    for (const [fullName, route] of this.table.routes()) {
      const m = route.method;
      let s = byService.get(m.service);
      if (!s) byService.set(m.service, (s = { methods: [], nodes: new Set() }));
      for (const n of route.nodes) s.nodes.add(n.id);
      s.methods.push({
        name: m.name,
        fullName,
        mode: modeName(m.mode),
        requestType: m.requestType.fullName.slice(1),
        responseType: m.responseType.fullName.slice(1),
        requestFields: m.requestType.fieldsArray.map((f) => ({
          name: f.name,
          type: f.map ? `map<${(f as unknown as { keyType: string }).keyType}, ${f.type}>` : f.type,
          repeated: f.repeated,
          map: f.map,
        })),
      });
    }
    return [...byService]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, s]) => ({ name, nodes: s.nodes.size, methods: s.methods.sort((a, b) => a.name.localeCompare(b.name)) }));
  }

  /** Every node in the table. */
  nodes(): NodeEntry[] {
    return this.table.entries();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.refreshTimer);
    await this.process.close();
  }
}

/**
 * Where a client connects when told nothing: the local `node-bin dev` when
 * one runs, else the local governor's discovery socket (the host's agent,
 * default port) when it exists, else the dev socket (whose absence the
 * connect then reports).
 */
function defaultEndpoint(): string {
  const dev = devEndpoint();
  if (ipcOwner(dev) !== undefined) return dev;
  const discovery = discoveryIpc(runtimeDirPath());
  return existsSync(discovery.slice("ipc://".length)) ? discovery : dev;
}

/**
 * The id the node-bin processes of this host go by (kept in the runtime
 * directory, see hostIdentity), so that the client prefers their nodes and
 * reaches them over ipc. A client makes none: without one, no process of this
 * user runs here and no node is on "this host"; the host name then serves as
 * a label (as it does when the file is unreadable: the client only loses the
 * same-host preference, the processes themselves report the file).
 */
function localHostId(): string {
  try {
    return readHostIdentity(runtimeDirPath()) ?? hostname();
  } catch {
    return hostname();
  }
}
