/**
 * The governor: one per host. It holds the host's discovery endpoint (as the
 * host agent: leases of the host's containers, gossip with other hosts) while
 * never appearing as a node itself, and it keeps the components of its
 * components directory running as child processes, one node each:
 *
 * - supervision: every child is pinged on the control plane; one that stops
 *   answering is a zombie (the zombie strategy decides: by default kill and
 *   respawn); one that crashes is respawned with exponential backoff; a
 *   component that keeps failing at start is marked failed with its last error;
 * - elasticity: the lifecycle strategy grows a component under sustained
 *   queue wait or on a capacity request from the network, and shrinks idle
 *   ones, within the component's min/max and the host's capacity, all of which
 *   change live (`node-bin governor set`, the config file);
 * - hot deploy: the components directory is watched; a changed component
 *   rolls node by node (new node started held, old node drained, its state
 *   handed over, old node exits), a removed one drains, an added one starts;
 * - recycling: children are detached and recorded; a new governor adopts the
 *   live ones instead of starting duplicates.
 *
 * The model: each component has a `desired` node count, kept within
 * [min, max] and the host's capacity; reconcile() starts or drains children
 * until the live count matches it. Strategies move `desired`; crashes do not
 * (so a crashed child is replaced).
 */
import type { ChildProcess } from "node:child_process";
import { availableParallelism, cpus } from "node:os";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../component/context.ts";
import { Container } from "../container/container.ts";
import { consoleLogger } from "../container/log.ts";
import { DEFAULT_DISCOVERY_PORT } from "../container/process.ts";
import { HostAgent, type GossipLayer } from "../membership/agent.ts";
import { Gossip } from "../membership/gossip.ts";
import { pullReplyData } from "../membership/table.ts";
import { claimIpc, discoveryIpc, ipcOwner, releaseIpc } from "../transport/runtime-dir.ts";
import { ZmqConnector, ZmqListener } from "../transport/zmq.ts";
import { CONTROL_SCHEMA, PULL, DRAIN, GOVERNOR_CAPACITY, GOVERNOR_SET, GOVERNOR_STATUS, GOVERNOR_STOP, IMPORT_STATE, PING, REQUEST_CAPACITY, YIELD_AGENT } from "../wire/control.ts";
import { Plane } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { ChildrenFile, lastError, pidAlive, spawnChild, type ChildRecord } from "./children.ts";
import { loadPlugins } from "./plugins.ts";
import { ComponentScanner, type ComponentChange } from "./scan.ts";
import type { ChildView, ComponentView, GovernorSettings, StrategyKinds } from "./strategy.ts";

/** Governor tunables beyond the strategies' (all changeable live). */
export interface SupervisionSettings {
  /** Ping period (ms; default 1000). */
  pingMs: number;
  /** A child silent this long is a zombie (ms; default 3000: detected within about 4 s). */
  zombieAfterMs: number;
  /** A child not registered this long after its spawn failed to start (ms; default 30 000). */
  startTimeoutMs: number;
}

export type Settings = GovernorSettings & SupervisionSettings;

export const DEFAULT_SETTINGS: Settings = {
  idleMs: 60_000,
  queueWaitMs: 200,
  queueLength: 32,
  sustainMs: 1000,
  pingMs: 1000,
  zombieAfterMs: 3000,
  startTimeoutMs: 30_000,
};

/** `node-bin governor set KEY VALUE` keys and the setting each changes. */
export const SETTING_KEYS: Record<string, keyof Settings> = {
  "idle-ms": "idleMs",
  "queue-wait-ms": "queueWaitMs",
  "queue-length": "queueLength",
  "sustain-ms": "sustainMs",
  "ping-ms": "pingMs",
  "zombie-after-ms": "zombieAfterMs",
  "start-timeout-ms": "startTimeoutMs",
};

export interface GovernorOptions {
  componentsDir: string;
  host: string;
  network: string;
  listen: string;
  discoveryPort?: number;
  seeds: string[];
  runtimeDir: string;
  /** Most container processes on this host (default 2 x CPU count). */
  capacity?: number;
  /** JSON config file re-read when it changes (see README, "Governor config"). */
  configFile?: string;
  /** Directory of strategy plugins (default: none; built-ins only). */
  pluginsDir?: string;
  /** Settings given on the command line (over the config file's). */
  settings?: Partial<Settings>;
  /** How the governor starts its children (default: this program again). */
  command?: { command: string; args: string[] };
  makeGossip?: (self: { host: string; endpoint: string; network: string; incarnation: number }, seeds: string[]) => GossipLayer;
}

/** Consecutive failed starts after which a component is marked failed (until its code changes). */
const MAX_START_FAILURES = 5;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** A child up this long proves the component starts: its crash counter resets. */
const STABLE_MS = 10_000;
const TICK_MS = 250;
/** How long a drained child lingers before it is told to exit: a renewal period plus a client's refresh period. */
const DRAIN_GRACE_MS = 2000;

type Phase = ChildView["phase"];

interface Child {
  pid: number;
  component: string;
  hash: string;
  phase: Phase;
  startedAt: number;
  /** When it registered (epoch ms); 0 before. */
  readyAt: number;
  lastPongAt: number;
  missedPongs: number;
  restarts: number;
  log: string;
  proc?: ChildProcess;
  container?: string;
  endpoint?: string;
  node?: string;
  stats?: PingStats;
  /** Set when the governor ended it on purpose (drained, stopped, zombie-killed): its exit is not a crash. */
  ending?: "drain" | "zombie" | "stop";
  zombie?: boolean;
  pinging?: boolean;
  waiters: Array<(ok: boolean) => void>;
}

interface PingStats {
  phase: string;
  handled: number;
  queued: number;
  capacity: number;
  queueWaitMs: number;
  idleMs: number;
  rssBytes: number;
  node: string;
  min: number;
  max: number;
}

interface ComponentState {
  name: string;
  /** Content hash on disk. */
  hash: string;
  /** Limits the children reported from the manifest (undefined until one did). */
  manifest?: { min: number; max: number };
  desired: number;
  startFailures: number;
  backoffUntil: number;
  restarts: number;
  capacityRequests: number;
  failed?: string;
  /** A hash whose code failed to start during a roll: not retried until the code changes again. */
  badHash?: string;
  deployError?: string;
  rolling: boolean;
  removed: boolean;
}

interface Overrides {
  capacity?: number;
  settings: Partial<Settings>;
  components: Record<string, { min?: number; max?: number }>;
}

interface ConfigFile {
  capacity?: number;
  components?: Record<string, { min?: number; max?: number }>;
  plugins?: Record<string, Record<string, unknown>>;
  [setting: string]: unknown;
}

export class Governor {
  readonly container: Container;
  readonly socket: string;
  readonly stateDir: string;
  private readonly options: GovernorOptions;
  private log: Logger;
  private strategies!: StrategyKinds;
  private readonly connector: ZmqConnector;
  private discovery: ZmqListener | undefined;
  private control: ZmqListener | undefined;
  private agent: HostAgent | undefined;
  private scanner: ComponentScanner | undefined;
  private readonly children = new Map<number, Child>();
  private readonly components = new Map<string, ComponentState>();
  private readonly childrenFile: ChildrenFile;
  /** The settings object strategies read live (mutated in place). */
  readonly settings: Settings = { ...DEFAULT_SETTINGS };
  private capacity: number;
  private config: ConfigFile = {};
  private configMtime = 0;
  private overrides: Overrides = { settings: {}, components: {} };
  private tickTimer: ReturnType<typeof setInterval> | undefined;
  private pingTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly startedAt = Date.now();
  private stopping: Promise<void> | undefined;
  private readonly stopped: Promise<{ keepChildren: boolean }>;
  private resolveStopped!: (v: { keepChildren: boolean }) => void;
  plugins: { kind: string; name: string; source: string }[] = [];

  private constructor(options: GovernorOptions) {
    this.options = options;
    this.log = consoleLogger("governor");
    this.capacity = options.capacity ?? defaultCapacity();
    const port = options.discoveryPort ?? DEFAULT_DISCOVERY_PORT;
    this.socket = `ipc://${join(options.runtimeDir, `governor-${port}.sock`)}`;
    this.stateDir = join(options.runtimeDir, `governor-${port}`);
    mkdirSync(join(this.stateDir, "logs"), { recursive: true, mode: 0o700 });
    this.childrenFile = new ChildrenFile(join(this.stateDir, "children.json"));
    this.container = new Container({ id: `governor@${options.host}-${process.pid}`, host: options.host, network: options.network, logger: (s) => this.logger(s) });
    const endpointOf = (to: string) => this.container.table.get(to)?.endpoints.find((e) => e.startsWith("ipc://")) ?? this.container.table.get(to)?.endpoints[0];
    this.connector = new ZmqConnector(
      endpointOf,
      (env) => this.container.direct.dispatch(env),
      (lost) => this.container.failCallsVia(lost, endpointOf),
    );
    this.stopped = new Promise((r) => (this.resolveStopped = r));
  }

  get discoveryPort(): number {
    return this.options.discoveryPort ?? DEFAULT_DISCOVERY_PORT;
  }

  private logger(source: string): Logger {
    return this.strategies ? this.strategies.logging.logger(source) : consoleLogger(source);
  }

  /**
   * Starts the governor: claims the governor socket (a second governor for the
   * same discovery port is refused with ALREADY_EXISTS), loads plugins and
   * config, takes the discovery endpoint (asking a container that took it over
   * while no governor ran to give it back), adopts live children of a previous
   * governor, then starts the components directory's components.
   */
  static async start(options: GovernorOptions): Promise<Governor> {
    const g = new Governor(options);
    try {
      await g.begin();
    } catch (err) {
      await g.shutdownSockets();
      throw err;
    }
    return g;
  }

  private async begin(): Promise<void> {
    const owner = ipcOwner(this.socket);
    if (owner !== undefined && owner !== process.pid) {
      throw new NodeBinError("ALREADY_EXISTS", `a governor (pid ${owner}) already runs for discovery port ${this.discoveryPort} (socket ${this.socket}); stop it with \`node-bin governor stop\``, { details: { pid: String(owner) } });
    }
    this.loadOverrides();
    this.readConfig(true);
    const loaded = await loadPlugins({ ...(this.options.pluginsDir ? { dir: this.options.pluginsDir } : {}), config: this.config.plugins ?? {}, settings: this.settings });
    this.strategies = loaded.strategies;
    this.plugins = loaded.loaded;
    this.log = this.logger("governor");
    for (const p of this.plugins) this.log.debug(`plugin ${p.kind}: ${p.name} (${p.source})`);

    this.container.addTransport(this.connector);
    claimIpc(this.socket);
    this.control = await ZmqListener.bind([this.socket], (env) => this.container.direct.dispatch(env));
    this.container.addTransport(this.control);
    this.serveGovernor();
    // Adopt first (over the children's own ipc endpoints), so that the table
    // this governor serves from its first moment has their nodes in it.
    const leases = await this.adopt();
    await this.takeDiscovery(leases);

    this.scanner = new ComponentScanner({
      dir: this.options.componentsDir,
      onChange: (changes) => this.onComponentsChanged(changes),
      onError: (err) => this.log.warn(`components directory: ${err.message}`),
    });
    const first = this.scanner.start();
    for (const [name, hash] of first.components) this.addComponentState(name, hash);
    this.log.info(
      `governing ${this.options.componentsDir} on ${this.options.host}: capacity ${this.capacity}, ${this.components.size} component(s)` +
        (this.children.size ? `, adopted ${this.children.size} running child(ren)` : ""),
    );
    this.tickTimer = setInterval(() => this.tick(), TICK_MS);
    this.schedulePings();
    this.tick();
  }

  /** Binds the discovery endpoint; a container holding it (it took over while no governor ran) is asked to yield. */
  private async takeDiscovery(leases: AdoptedLease[]): Promise<void> {
    const { listen, host, network, seeds } = this.options;
    const endpoint = `tcp://${listen}:${this.discoveryPort}`;
    const ipc = discoveryIpc(this.options.runtimeDir, this.discoveryPort);
    const addresses = process.platform === "win32" ? [endpoint] : [endpoint, ipc];
    let lastErr: unknown;
    for (let attempt = 0; attempt < 25; attempt++) {
      try {
        this.discovery = await ZmqListener.bind(addresses, (env) => this.container.direct.dispatch(env));
        break;
      } catch (err) {
        lastErr = err;
        // Held by a container acting as agent (or by something else entirely): ask, then try again.
        try {
          await this.container.caller.callEndpoint({ method: YIELD_AGENT, to: "", via: ipc, plane: Plane.CONTROL, request: {}, options: { timeoutMs: 500 } });
          if (attempt === 0) this.log.info(`a container held the discovery endpoint ${endpoint}: asked it to give it back`);
        } catch {
          // Nobody answered over ipc: wait and retry (the port may be in TIME_WAIT or held by another program).
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    if (!this.discovery) {
      throw new NodeBinError("UNAVAILABLE", `cannot bind the discovery endpoint ${endpoint}: ${(lastErr as Error)?.message ?? lastErr}; is another program using port ${this.discoveryPort}? (--discovery-port)`);
    }
    this.container.addTransport(this.discovery);
    const self = { host, endpoint, network, incarnation: Date.now() };
    const gossip = this.options.makeGossip ? this.options.makeGossip(self, seeds) : new Gossip({ self, seeds, now: Date.now });
    this.agent = new HostAgent(this.container, {
      host,
      endpoint,
      log: this.logger("governor/agent"),
      gossip,
      onLease: (event) => {
        if (event.type === "registered") this.onRegistered(event.pid, event.container, event.nodes);
      },
    });
    this.agent.start();
    for (const lease of leases) this.agent.lease(lease);
  }

  // ---------------------------------------------------------------- children

  private onRegistered(pid: number, container: string, nodes: { id: string; endpoints: string[] }[]): void {
    const child = this.children.get(pid);
    if (!child || !nodes.length) return;
    child.container = container;
    child.node = nodes[0]!.id;
    child.endpoint = nodes[0]!.endpoints.find((e) => e.startsWith("ipc://")) ?? nodes[0]!.endpoints[0];
    if (child.phase === "starting") {
      child.phase = this.held.has(child.pid) ? "holding" : "ready";
      child.readyAt = Date.now();
      child.lastPongAt = child.readyAt;
      this.log.info(`${child.component} pid ${child.pid} serves as ${child.node} (${child.readyAt - child.startedAt} ms after spawn)`);
      for (const w of child.waiters.splice(0)) w(true);
      this.saveChildren();
    }
  }

  /** Children started held (a roll's new nodes) until their state is imported. */
  private readonly held = new Set<number>();

  /** Starts one child of a component; resolves once it registered (true) or died first (false). */
  private spawn(comp: ComponentState, options: { hold?: boolean; restarts?: number } = {}): { child: Child; ready: Promise<boolean> } | undefined {
    const { options: o } = this;
    const args = [
      "--component",
      comp.name,
      "--components",
      o.componentsDir,
      "--governor",
      this.socket,
      "--discovery-port",
      String(this.discoveryPort),
      "--host",
      o.host,
      "--listen",
      o.listen,
      ...(o.network ? ["--network", o.network] : []),
      ...o.seeds.flatMap((s) => ["--seed", s.replace(/^tcp:\/\//, "")]),
      ...(options.hold ? ["--hold"] : []),
    ];
    const logFile = join(this.stateDir, "logs", `${comp.name}.log`);
    let proc: ChildProcess;
    try {
      proc = spawnChild({ component: comp.name, args, env: { ...process.env, NODEBIN_RUNTIME_DIR: o.runtimeDir }, logFile, ...(o.command ? { command: o.command } : {}) });
    } catch (err) {
      this.log.error(`cannot start ${comp.name}: ${(err as Error).message}`);
      return undefined;
    }
    if (!proc.pid) {
      this.log.error(`cannot start ${comp.name}: spawn gave no pid`);
      proc.on("error", () => {});
      return undefined;
    }
    const child: Child = {
      pid: proc.pid,
      component: comp.name,
      hash: comp.hash,
      phase: "starting",
      startedAt: Date.now(),
      readyAt: 0,
      lastPongAt: 0,
      missedPongs: 0,
      restarts: options.restarts ?? 0,
      log: logFile,
      proc,
      waiters: [],
    };
    if (options.hold) this.held.add(child.pid);
    proc.on("error", (err) => this.log.warn(`${comp.name} pid ${child.pid}: ${err.message}`));
    proc.on("exit", (code, signal) => this.onExit(child, code, signal));
    this.children.set(child.pid, child);
    const ready = new Promise<boolean>((resolve) => child.waiters.push(resolve));
    this.log.info(`starting ${comp.name} (pid ${child.pid}${options.hold ? ", held for state" : ""})`);
    this.saveChildren();
    return { child, ready };
  }

  private onExit(child: Child, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.children.get(child.pid) !== child) return;
    this.children.delete(child.pid);
    this.held.delete(child.pid);
    if (child.container) this.agent?.evict(child.container, `pid ${child.pid} exited`);
    // A killed child leaves its ipc socket file behind: remove it, so that a
    // caller whose table still names the node is refused at once (unhandled,
    // re-routed) instead of queueing for a listener that will never return.
    if (child.endpoint?.startsWith("ipc://")) rmSync(child.endpoint.slice("ipc://".length), { force: true });
    for (const w of child.waiters.splice(0)) w(false);
    this.saveChildren();
    const comp = this.components.get(child.component);
    const how = signal ? `signal ${signal}` : `code ${code}`;
    if (child.ending || this.stopping) {
      this.log.debug(`${child.component} pid ${child.pid} ended (${child.ending ?? "stop"}, ${how})`);
      return;
    }
    if (!comp) return;
    const error = lastError(child.log);
    const startedOk = child.readyAt > 0;
    if (startedOk && Date.now() - child.readyAt >= STABLE_MS) comp.startFailures = 0;
    else comp.startFailures++;
    comp.restarts++;
    const delay = Math.min(BACKOFF_BASE_MS * 2 ** Math.max(0, comp.startFailures - 1), BACKOFF_MAX_MS);
    comp.backoffUntil = Date.now() + delay;
    if (!startedOk && comp.startFailures >= MAX_START_FAILURES) {
      comp.failed = `failed to start ${comp.startFailures} times in a row; last: ${error ?? how}`;
      this.log.error(`${comp.name} is failed (not restarted until its code changes): ${comp.failed}`);
      return;
    }
    this.log.warn(`${child.component} pid ${child.pid} ${startedOk ? "crashed" : "failed to start"} (${how})${error ? `: ${error}` : ""}; restarting in ${delay} ms`);
  }

  /** Pings every registered child; silence past zombieAfterMs makes it a zombie. */
  private schedulePings(): void {
    this.pingTimer = setTimeout(() => {
      this.pingAll();
      if (!this.stopping) this.schedulePings();
    }, this.settings.pingMs);
  }

  private pingAll(): void {
    const now = Date.now();
    for (const child of this.children.values()) {
      if (child.phase === "starting") {
        if (now - child.startedAt > this.settings.startTimeoutMs && !child.ending) {
          this.log.warn(`${child.component} pid ${child.pid} did not register within ${this.settings.startTimeoutMs} ms: killing it`);
          this.kill(child, "SIGKILL");
        }
        continue;
      }
      if (!child.endpoint || child.pinging) {
        this.checkZombie(child, now);
        continue;
      }
      child.pinging = true;
      this.container.caller
        .callEndpoint({ method: PING, to: "", via: child.endpoint, plane: Plane.CONTROL, request: {}, options: { timeoutMs: this.settings.pingMs } })
        .then(
          (reply) => {
            const r = PingReply.toObject(reply as never, { longs: Number, defaults: true }) as PingStats & { pid: number };
            if (r.pid !== child.pid) return; // another process behind that endpoint: not our child
            child.lastPongAt = Date.now();
            child.missedPongs = 0;
            child.stats = r;
            const comp = this.components.get(child.component);
            if (comp && r.max > 0) comp.manifest = { min: r.min, max: r.max };
          },
          () => {
            child.missedPongs++;
          },
        )
        .finally(() => {
          child.pinging = false;
          this.checkZombie(child, Date.now());
        });
    }
  }

  private checkZombie(child: Child, now: number): void {
    if (child.zombie || child.ending || child.phase === "starting") return;
    // An adopted child has no exit event: a vanished pid is its exit.
    if (!child.proc && !pidAlive(child.pid)) {
      this.onExit(child, null, null);
      return;
    }
    const silentMs = now - (child.lastPongAt || child.readyAt || child.startedAt);
    if (silentMs <= this.settings.zombieAfterMs) return;
    child.zombie = true;
    const view = this.viewOf(child, now);
    const comp = this.components.get(child.component);
    let respawned = false;
    const actions = {
      kill: () => {
        child.ending = "zombie";
        this.kill(child, "SIGKILL");
      },
      respawn: () => {
        // The slot stays wanted: reconcile starts the replacement (the desired count is unchanged).
        respawned = true;
        if (comp) comp.restarts++;
      },
      log: this.logger(`governor/${child.component}`),
    };
    Promise.resolve()
      .then(() => this.strategies.zombie.onZombie(view, actions))
      .catch((err) => this.log.error(`zombie strategy failed for pid ${child.pid}: ${(err as Error).message}`))
      .finally(() => {
        if (!respawned && comp && child.ending === "zombie") comp.desired = Math.max(0, comp.desired - 1);
      });
  }

  private kill(child: Child, signal: NodeJS.Signals): void {
    try {
      process.kill(child.pid, signal);
    } catch {
      // gone already
    }
    if (signal === "SIGKILL" && child.container) this.agent?.evict(child.container, `pid ${child.pid} killed`);
    if (signal === "SIGKILL" && !child.proc) {
      // Adopted: no exit event will come.
      setTimeout(() => {
        if (!pidAlive(child.pid)) this.onExit(child, null, signal);
      }, 100);
    }
  }

  /**
   * Drains a child: out of the table, queue finished; with `exportState`,
   * resolves with its state. It is told to exit (SIGTERM) a grace period later.
   */
  private async drain(child: Child, exportState: boolean): Promise<Uint8Array | undefined> {
    child.ending = "drain";
    child.phase = "draining";
    let state: Uint8Array | undefined;
    if (child.endpoint) {
      try {
        const reply = (await this.container.caller.callEndpoint({ method: DRAIN, to: "", via: child.endpoint, plane: Plane.CONTROL, request: { exportState }, options: { timeoutMs: 60_000 } })) as { state: Uint8Array };
        state = reply.state;
      } catch (err) {
        this.log.warn(`${child.component} pid ${child.pid} did not drain cleanly: ${NodeBinError.from(err)}`);
      }
      // Drained, it still answers "unhandled" (callers re-route) while the
      // tables elsewhere catch up with its departure; a process that exited at
      // once would leave callers with stale tables sending into the void.
      setTimeout(() => this.kill(child, "SIGTERM"), DRAIN_GRACE_MS);
    } else {
      this.kill(child, "SIGTERM");
    }
    return state;
  }

  /** Resolves once the child exited (SIGKILL after `ms`). */
  private async awaitExit(child: Child, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.children.get(child.pid) === child && (child.proc ? child.proc.exitCode === null && child.proc.signalCode === null : pidAlive(child.pid))) {
      if (Date.now() > deadline) {
        this.kill(child, "SIGKILL");
        await new Promise((r) => setTimeout(r, 100));
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!child.proc && this.children.get(child.pid) === child) this.onExit(child, null, null);
  }

  /** Re-adopts the live children a previous governor recorded: pinged, they answer with their pid. */
  private async adopt(): Promise<AdoptedLease[]> {
    const records = this.childrenFile.read();
    const leases: AdoptedLease[] = [];
    await Promise.all(
      records.map(async (r) => {
        if (!r.endpoint || !pidAlive(r.pid)) return;
        try {
          const reply = PingReply.toObject((await this.container.caller.callEndpoint({ method: PING, to: "", via: r.endpoint, plane: Plane.CONTROL, request: {}, options: { timeoutMs: 1500 } })) as never, { longs: Number, defaults: true }) as PingStats & { pid: number; container: string };
          if (reply.pid !== r.pid) return;
          const now = Date.now();
          this.children.set(r.pid, {
            pid: r.pid,
            component: r.component,
            hash: r.hash,
            phase: reply.phase === "draining" ? "draining" : "ready",
            startedAt: r.startedAt,
            readyAt: now,
            lastPongAt: now,
            missedPongs: 0,
            restarts: r.restarts,
            log: r.log,
            container: reply.container,
            endpoint: r.endpoint,
            node: reply.node,
            stats: reply,
            waiters: [],
            ...(reply.phase === "draining" ? { ending: "drain" as const } : {}),
          });
          this.log.info(`adopted ${r.component} pid ${r.pid} (${reply.node})`);
          // Its node entry (with schema), from its own table, as a lease until it renews with us.
          try {
            const pulled = pullReplyData((await this.container.caller.callEndpoint({ method: PULL, to: "", via: r.endpoint, plane: Plane.CONTROL, request: {}, options: { timeoutMs: 1500 } })) as never);
            const nodes = pulled.nodes.filter((n) => n.id === reply.node);
            const schemas = pulled.schemas.filter((x) => nodes.some((n) => n.schema === x.id));
            if (nodes.length) leases.push({ container: reply.container, pid: r.pid, nodes, schemas, leaseMs: 3000, seeds: [] });
          } catch {
            // It registers itself within a renewal period anyway.
          }
        } catch {
          this.log.warn(`recorded child ${r.component} pid ${r.pid} does not answer at ${r.endpoint}: not adopted (left alone)`);
        }
      }),
    );
    this.saveChildren();
    return leases;
  }

  private saveChildren(): void {
    if (this.stopping && !this.keepChildren) return;
    const records: ChildRecord[] = [...this.children.values()].map((c) => ({
      pid: c.pid,
      component: c.component,
      hash: c.hash,
      ...(c.container ? { container: c.container } : {}),
      ...(c.endpoint ? { endpoint: c.endpoint } : {}),
      startedAt: c.startedAt,
      restarts: c.restarts,
      log: c.log,
    }));
    try {
      this.childrenFile.write(records);
    } catch (err) {
      this.log.warn(`cannot record children in ${this.childrenFile.path}: ${(err as Error).message}`);
    }
  }

  // -------------------------------------------------------------- components

  private addComponentState(name: string, hash: string): ComponentState {
    let comp = this.components.get(name);
    if (!comp) {
      comp = { name, hash, desired: 0, startFailures: 0, backoffUntil: 0, restarts: 0, capacityRequests: 0, rolling: false, removed: false };
      this.components.set(name, comp);
      comp.desired = this.limits(comp).min;
    }
    comp.hash = hash;
    comp.removed = false;
    return comp;
  }

  private onComponentsChanged(changes: ComponentChange[]): void {
    for (const change of changes) {
      if (change.type === "added") {
        const comp = this.addComponentState(change.name, change.hash ?? "");
        comp.failed = undefined;
        comp.startFailures = 0;
        this.log.info(`component ${change.name} added`);
      } else if (change.type === "removed") {
        const comp = this.components.get(change.name);
        if (!comp) continue;
        comp.removed = true;
        this.log.info(`component ${change.name} removed: draining its nodes`);
        for (const child of this.childrenOf(comp.name)) if (!child.ending) void this.drain(child, false);
      } else {
        const comp = this.components.get(change.name);
        if (!comp) continue;
        comp.hash = change.hash ?? comp.hash;
        // New code gets a fresh chance.
        comp.failed = undefined;
        comp.startFailures = 0;
        comp.backoffUntil = 0;
        comp.deployError = undefined;
        this.log.info(`component ${change.name} changed (${comp.hash.slice(0, 12)}): rolling its nodes`);
      }
    }
  }

  private childrenOf(name: string): Child[] {
    return [...this.children.values()].filter((c) => c.component === name);
  }

  /** Effective limits: manifest, then config file, then `governor set` (min 0 is kept at 1: see README). */
  private limits(comp: ComponentState): { min: number; max: number } {
    const fromConfig = this.config.components?.[comp.name] ?? {};
    const fromSet = this.overrides.components[comp.name] ?? {};
    let min = fromSet.min ?? fromConfig.min ?? comp.manifest?.min ?? 1;
    const max = fromSet.max ?? fromConfig.max ?? comp.manifest?.max ?? 16;
    min = Math.max(1, Math.min(min, max));
    return { min, max: Math.max(max, 1) };
  }

  private tick(): void {
    if (this.stopping) return;
    try {
      this.readConfig(false);
      // Silence is judged every round, not only when a ping returns: a zombie is
      // found within zombieAfterMs + one round of its last pong.
      const now = Date.now();
      for (const child of [...this.children.values()]) this.checkZombie(child, now);
      this.rollChanged();
      this.reconcile();
      this.elasticity();
    } catch (err) {
      this.log.error(`governor round failed: ${(err as Error).stack ?? err}`);
    }
  }

  private live(): Child[] {
    return [...this.children.values()].filter((c) => !c.ending);
  }

  private locked(name?: string): boolean {
    const dir = this.options.componentsDir;
    return existsSync(join(dir, ".deploy.lock")) || (name !== undefined && existsSync(join(dir, name, ".deploying")));
  }

  /** Brings each component's live child count to its desired count, within capacity. */
  private reconcile(): void {
    const now = Date.now();
    // Capacity lowered below what runs: the surplus drains, most idle first.
    // The host limit is hard: it wins over components' mins (first from
    // components above their min, then from the largest), but it never takes
    // a component's last node.
    let surplus = this.live().length - this.capacity;
    while (surplus > 0) {
      const liveOf = (c: ComponentState) => this.childrenOf(c.name).filter((x) => !x.ending).length;
      const candidates = [...this.components.values()].filter((c) => !c.rolling && liveOf(c) > 1);
      const comp = candidates.sort((a, b) => liveOf(b) - this.limits(b).min - (liveOf(a) - this.limits(a).min) || liveOf(b) - liveOf(a))[0];
      if (!comp) break;
      if (liveOf(comp) <= this.limits(comp).min) this.log.warn(`host capacity ${this.capacity} is below the components' minimums: ${comp.name} runs below its min ${this.limits(comp).min}`);
      comp.desired = liveOf(comp) - 1;
      const victim = this.mostIdle(comp.name);
      if (!victim) break;
      this.log.info(`host capacity ${this.capacity} is below ${this.live().length} running: draining ${victim.component} pid ${victim.pid}`);
      void this.drain(victim, false);
      surplus--;
    }
    for (const comp of this.components.values()) {
      if (comp.rolling || comp.removed) continue;
      const { min, max } = this.limits(comp);
      comp.desired = Math.min(Math.max(comp.desired, min), max);
      const live = this.childrenOf(comp.name).filter((c) => !c.ending);
      if (live.length > comp.desired) {
        const victim = this.mostIdle(comp.name);
        if (victim) {
          this.log.info(`${comp.name}: ${live.length} running, ${comp.desired} wanted (max ${max}): draining pid ${victim.pid}`);
          void this.drain(victim, false);
        }
        continue;
      }
      if (live.length >= comp.desired || comp.failed || now < comp.backoffUntil || comp.hash === comp.badHash) continue;
      if (this.live().length >= this.capacity) continue;
      if (this.locked(comp.name)) continue;
      // One start at a time per component after a failure; all at once while healthy.
      const starting = live.filter((c) => c.phase === "starting").length;
      if (comp.startFailures > 0 && starting > 0) continue;
      this.spawn(comp, { restarts: comp.restarts });
    }
  }

  private mostIdle(name: string): Child | undefined {
    const ready = this.childrenOf(name).filter((c) => !c.ending);
    // Starting children are cheapest to stop; then the most idle of the ready ones.
    return ready.sort((a, b) => rank(b) - rank(a))[0];
    function rank(c: Child): number {
      return c.phase === "starting" ? Number.MAX_SAFE_INTEGER : (c.stats?.idleMs ?? 0) - (c.stats?.queued ?? 0) * 1000;
    }
  }

  private elasticity(): void {
    const now = Date.now();
    const views: ComponentView[] = [...this.components.values()]
      .filter((c) => !c.removed)
      .map((c) => ({
        name: c.name,
        ...this.limits(c),
        children: this.childrenOf(c.name).map((x) => this.viewOf(x, now)),
        capacityRequests: c.capacityRequests,
        ...(c.failed ? { failed: c.failed } : {}),
      }));
    let decisions;
    try {
      decisions = this.strategies.lifecycle.decide({ capacity: this.capacity, used: this.live().length, now }, views);
    } catch (err) {
      this.log.error(`lifecycle strategy ${this.strategies.lifecycle.name} failed: ${(err as Error).message}`);
      return;
    }
    for (const c of this.components.values()) c.capacityRequests = 0;
    for (const d of decisions) {
      const comp = this.components.get(d.component);
      if (!comp || comp.rolling || comp.removed || comp.failed) continue;
      const { min, max } = this.limits(comp);
      const kids = this.childrenOf(comp.name);
      if (kids.some((k) => k.phase !== "ready")) continue; // one change at a time
      const live = kids.filter((k) => !k.ending).length;
      if (d.action === "grow") {
        if (live >= max || this.live().length >= this.capacity) continue;
        comp.desired = live + 1;
        this.log.info(`${comp.name}: growing to ${comp.desired} (${d.reason})`);
      } else {
        if (live <= min) continue;
        const child = this.children.get(d.pid);
        if (!child || child.component !== comp.name || child.ending) continue;
        comp.desired = live - 1;
        this.log.info(`${comp.name}: shrinking to ${comp.desired}, draining pid ${child.pid} (${d.reason})`);
        void this.drain(child, false);
      }
    }
  }

  private viewOf(c: Child, now: number): ChildView {
    return {
      pid: c.pid,
      component: c.component,
      phase: c.ending ? "draining" : c.phase,
      startedAt: c.startedAt,
      lastPongAt: c.lastPongAt,
      missedPongs: c.missedPongs,
      handled: c.stats?.handled ?? 0,
      queued: c.stats?.queued ?? 0,
      capacity: c.stats?.capacity ?? 0,
      queueWaitMs: c.stats?.queueWaitMs ?? 0,
      idleMs: c.stats?.idleMs ?? now - (c.readyAt || c.startedAt),
      restarts: c.restarts,
    };
  }

  /** Starts a roll for each component whose code on disk differs from what its children run. */
  private rollChanged(): void {
    for (const comp of this.components.values()) {
      if (comp.rolling || comp.removed || comp.hash === comp.badHash || this.locked(comp.name)) continue;
      const old = this.childrenOf(comp.name).filter((c) => !c.ending && c.hash !== comp.hash);
      if (!old.length) continue;
      if (old.some((c) => c.phase === "starting")) continue; // let it come up first
      comp.rolling = true;
      void this.roll(comp, comp.hash).finally(() => (comp.rolling = false));
    }
  }

  /**
   * Replaces the old children of a component, one at a time: a new child on
   * the new code starts held, the old one drains and hands over its state, the
   * new one imports it and serves, the old one exits. New code that fails to
   * start leaves the old children serving and is reported.
   */
  private async roll(comp: ComponentState, hash: string): Promise<void> {
    for (const old of this.childrenOf(comp.name).filter((c) => !c.ending && c.hash !== hash)) {
      if (comp.hash !== hash || this.stopping) return; // changed again: the next roll takes over
      const started = this.spawn(comp, { hold: true, restarts: old.restarts });
      if (!started) return;
      const ok = await started.ready;
      if (!ok) {
        comp.badHash = hash;
        comp.deployError = `new code failed to start; old nodes keep serving: ${lastError(started.child.log) ?? "see the log"}`;
        this.log.error(`${comp.name}: ${comp.deployError}`);
        return;
      }
      // Give the other processes a renewal period to see the new node before the old one refuses messages.
      await new Promise((r) => setTimeout(r, 1000));
      const state = await this.drain(old, true);
      try {
        await this.container.caller.callEndpoint({ method: IMPORT_STATE, to: "", via: started.child.endpoint!, plane: Plane.CONTROL, request: { state: state ?? new Uint8Array() }, options: { timeoutMs: 30_000 } });
        started.child.phase = "ready";
        this.held.delete(started.child.pid);
        this.log.info(`${comp.name}: pid ${old.pid} handed ${state?.length ?? 0} bytes of state to pid ${started.child.pid}`);
      } catch (err) {
        this.log.error(`${comp.name}: pid ${started.child.pid} did not take the state: ${NodeBinError.from(err)}`);
        started.child.phase = "ready";
      }
      await this.awaitExit(old, 15_000);
    }
    comp.deployError = undefined;
  }

  // -------------------------------------------------------- governor socket

  private serveGovernor(): void {
    const c = this.container;
    c.serveControl(GOVERNOR_STATUS, () => ({ json: JSON.stringify(this.status()) }));
    c.serveControl(GOVERNOR_SET, (request) => {
      const { key, component, value } = GovernorSetRequest.toObject(request, { longs: Number, defaults: true }) as { key: string; component: string; value: number };
      this.set(key, component, value);
      return { json: JSON.stringify(this.status()) };
    });
    c.serveControl(GOVERNOR_STOP, (request) => {
      const { keepChildren } = request as unknown as { keepChildren: boolean };
      setTimeout(() => void this.stop({ keepChildren }), 20);
      return {};
    });
    c.serveControl(GOVERNOR_CAPACITY, (request) => {
      this.capacityWanted(CapacityRequest.toObject(request, { arrays: true, defaults: true }) as CapacityWanted);
    });
    // Capacity requests sent to the governor's control endpoint itself (from another host) are handled the same way.
    c.serveControl(REQUEST_CAPACITY, (request) => {
      this.capacityWanted(CapacityRequest.toObject(request, { arrays: true, defaults: true }) as CapacityWanted);
    });
  }

  /**
   * A caller found every node of a component full. Grow here when this host
   * runs the component and has room; else pass it to a node on another host
   * (not yet visited) so that host's governor can grow it.
   */
  private capacityWanted(wanted: CapacityWanted): void {
    const comp = this.components.get(wanted.component);
    const room = comp && !comp.failed && !comp.removed && this.live().length < this.capacity && this.childrenOf(comp.name).filter((c) => !c.ending).length < this.limits(comp).max;
    if (room) {
      comp.capacityRequests++;
      this.log.debug(`capacity wanted for ${wanted.component} (from ${wanted.fromHost || "this host"})`);
      return;
    }
    const visited = new Set([...wanted.visited, this.options.host]);
    const entries = this.container.table.entries().filter((e) => !visited.has(e.host));
    // Prefer hosts that run the component (they have its code), then any other host.
    const target = entries.find((e) => e.component === wanted.component) ?? entries[0];
    if (!target) {
      this.log.info(`capacity wanted for ${wanted.component}, but no host has room (visited ${[...visited].join(", ")})`);
      return;
    }
    try {
      this.container.sendControl(REQUEST_CAPACITY, { ...wanted, visited: [...visited] }, { to: target.id });
      this.log.info(`capacity wanted for ${wanted.component}: no room here, asked host ${target.host}`);
    } catch (err) {
      this.log.debug(`capacity request to ${target.host} not sent: ${NodeBinError.from(err)}`);
    }
  }

  /** Changes one setting live (`node-bin governor set`). Throws INVALID_ARGUMENT / NOT_FOUND. */
  set(key: string, component: string, value: number): void {
    if (!Number.isInteger(value) || value < 0) throw new NodeBinError("INVALID_ARGUMENT", `${key} must be a whole number >= 0, got ${value}`);
    if (key === "capacity") {
      if (value < 1) throw new NodeBinError("INVALID_ARGUMENT", "capacity must be at least 1");
      this.overrides.capacity = value;
    } else if (key === "min" || key === "max") {
      if (!this.components.has(component)) {
        throw new NodeBinError("NOT_FOUND", `no component ${JSON.stringify(component)} (known: ${[...this.components.keys()].join(", ") || "none"})`);
      }
      if (key === "max" && value < 1) throw new NodeBinError("INVALID_ARGUMENT", "max must be at least 1");
      (this.overrides.components[component] ??= {})[key] = value;
    } else if (SETTING_KEYS[key]) {
      if (value < 1) throw new NodeBinError("INVALID_ARGUMENT", `${key} must be at least 1`);
      this.overrides.settings[SETTING_KEYS[key]] = value;
    } else {
      throw new NodeBinError("INVALID_ARGUMENT", `unknown setting ${JSON.stringify(key)}; known: capacity, min, max (with a component), ${Object.keys(SETTING_KEYS).join(", ")}`);
    }
    this.applySettings();
    this.saveOverrides();
    this.log.info(`set ${component ? `${component} ` : ""}${key} = ${value}`);
  }

  /** The status report (`node-bin governor status --json`). */
  status(): Record<string, unknown> {
    const now = Date.now();
    return {
      host: this.options.host,
      pid: process.pid,
      uptimeMs: now - this.startedAt,
      componentsDir: this.options.componentsDir,
      discovery: this.discovery?.endpoints ?? [],
      socket: this.socket,
      capacity: this.capacity,
      used: this.live().length,
      settings: { ...this.settings },
      plugins: this.plugins,
      // The host agent's leases and gossip counters (bytes sent and received, rounds, hosts known).
      agent: this.agent?.stats() ?? {},
      locked: this.locked(),
      components: [...this.components.values()]
        .filter((c) => !c.removed || this.childrenOf(c.name).length)
        .sort((a, b) => a.name.localeCompare(b.name))
        .map((c) => {
          const kids = this.childrenOf(c.name);
          return {
            name: c.name,
            hash: c.hash.slice(0, 12),
            ...this.limits(c),
            desired: c.desired,
            running: kids.filter((k) => !k.ending).length,
            queued: kids.reduce((n, k) => n + (k.stats?.queued ?? 0), 0),
            restarts: c.restarts,
            rolling: c.rolling,
            locked: this.locked(c.name),
            ...(c.removed ? { removed: true } : {}),
            ...(c.failed ? { failed: c.failed } : {}),
            ...(c.deployError ? { deployError: c.deployError } : {}),
            children: kids.map((k) => ({
              pid: k.pid,
              node: k.node ?? "",
              phase: k.ending ? "draining" : k.phase,
              uptimeMs: now - k.startedAt,
              handled: k.stats?.handled ?? 0,
              queued: k.stats?.queued ?? 0,
              idleMs: k.stats?.idleMs ?? null,
              lastPongMsAgo: k.lastPongAt ? now - k.lastPongAt : null,
              restarts: k.restarts,
              rssBytes: k.stats?.rssBytes ?? 0,
              code: k.hash.slice(0, 12),
              adopted: !k.proc,
              log: k.log,
            })),
          };
        }),
    };
  }

  // ---------------------------------------------------------- settings/config

  private applySettings(): void {
    const fromConfig: Partial<Settings> = {};
    for (const key of Object.keys(DEFAULT_SETTINGS) as (keyof Settings)[]) {
      const v = this.config[key];
      if (typeof v === "number") fromConfig[key] = v;
    }
    Object.assign(this.settings, DEFAULT_SETTINGS, fromConfig, this.options.settings ?? {}, this.overrides.settings);
    // Precedence as for every setting: default < config file < command line < `governor set`.
    this.capacity = this.overrides.capacity ?? this.options.capacity ?? this.config.capacity ?? defaultCapacity();
  }

  /** Reads the config file when it changed (a bad file is reported and the previous config kept). */
  private readConfig(first: boolean): void {
    const file = this.options.configFile;
    if (!file) {
      if (first) this.applySettings();
      return;
    }
    let mtime = 0;
    try {
      mtime = statSync(file).mtimeMs;
    } catch {
      if (first) this.applySettings();
      if (this.configMtime !== 0) {
        this.configMtime = 0;
        this.config = {};
        this.applySettings();
        this.log.info(`config file ${file} removed: back to defaults`);
      }
      return;
    }
    if (mtime === this.configMtime) return;
    this.configMtime = mtime;
    try {
      this.config = parseConfig(readFileSync(file, "utf8"), file);
      this.applySettings();
      if (!first) this.log.info(`config file ${file} re-read`);
    } catch (err) {
      if (first) throw err;
      this.log.error(`${(err as Error).message}; keeping the previous config`);
    }
  }

  private get overridesFile(): string {
    return join(this.stateDir, "settings.json");
  }

  private loadOverrides(): void {
    try {
      const o = JSON.parse(readFileSync(this.overridesFile, "utf8")) as Overrides;
      this.overrides = { settings: o.settings ?? {}, components: o.components ?? {}, ...(o.capacity ? { capacity: o.capacity } : {}) };
    } catch {
      // none yet
    }
  }

  private saveOverrides(): void {
    try {
      writeFileSync(this.overridesFile, `${JSON.stringify(this.overrides, null, 2)}\n`, { mode: 0o600 });
    } catch (err) {
      this.log.warn(`cannot save settings to ${this.overridesFile}: ${(err as Error).message}`);
    }
  }

  // ------------------------------------------------------------------ stop

  private keepChildren = false;

  /** Resolves when the governor stopped (by `governor stop`, a signal, or stop()). */
  whenStopped(): Promise<{ keepChildren: boolean }> {
    return this.stopped;
  }

  /**
   * Stops the governor. keepChildren: only the governor exits (children keep
   * serving; the next governor adopts them). Otherwise every child drains and
   * exits first, and the live settings are forgotten.
   */
  stop(options: { keepChildren?: boolean } = {}): Promise<void> {
    return (this.stopping ??= this.doStop(options.keepChildren ?? false));
  }

  private async doStop(keepChildren: boolean): Promise<void> {
    this.keepChildren = keepChildren;
    clearInterval(this.tickTimer);
    clearTimeout(this.pingTimer);
    this.scanner?.close();
    if (keepChildren) {
      this.saveChildren();
      this.log.info(`stopping the governor only: ${this.children.size} child(ren) keep serving`);
    } else {
      this.log.info(`stopping ${this.children.size} child(ren) and the governor`);
      const kids = [...this.children.values()];
      for (const k of kids) {
        k.ending ??= "stop";
        this.kill(k, "SIGTERM");
      }
      await Promise.all(kids.map((k) => this.awaitExit(k, 15_000)));
      rmSync(this.childrenFile.path, { force: true });
      rmSync(this.overridesFile, { force: true });
    }
    await this.shutdownSockets();
    this.resolveStopped({ keepChildren });
  }

  private async shutdownSockets(): Promise<void> {
    clearInterval(this.tickTimer);
    clearTimeout(this.pingTimer);
    this.agent?.close();
    await this.container.close();
    for (const l of [this.discovery, this.control]) {
      for (const e of l?.endpoints ?? []) if (e.startsWith("ipc://")) rmSync(e.slice("ipc://".length), { force: true });
    }
    if (ipcOwner(this.socket) === process.pid) releaseIpc(this.socket);
  }
}

type AdoptedLease = Parameters<HostAgent["lease"]>[0];

interface CapacityWanted {
  component: string;
  method: string;
  fromHost: string;
  visited: string[];
}

const PingReply = CONTROL_SCHEMA.root.lookupType("nodebin.PingReply");
const CapacityRequest = CONTROL_SCHEMA.root.lookupType("nodebin.CapacityRequest");
const GovernorSetRequest = CONTROL_SCHEMA.root.lookupType("nodebin.GovernorSetRequest");

function defaultCapacity(): number {
  return 2 * (typeof availableParallelism === "function" ? availableParallelism() : cpus().length);
}

/** Parses and checks the governor's config file. Throws INVALID_ARGUMENT naming the file and field. */
export function parseConfig(text: string, file: string): ConfigFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new NodeBinError("INVALID_ARGUMENT", `${file}: not JSON (${(err as Error).message})`, { details: { file } });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new NodeBinError("INVALID_ARGUMENT", `${file}: must be a JSON object`, { details: { file } });
  const config = parsed as ConfigFile;
  const wholeNumber = (v: unknown, where: string, min: number) => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) throw new NodeBinError("INVALID_ARGUMENT", `${file}: ${where} must be a whole number >= ${min}`, { details: { file, field: where } });
  };
  for (const [key, value] of Object.entries(config)) {
    if (key === "capacity") wholeNumber(value, key, 1);
    else if (key in DEFAULT_SETTINGS) wholeNumber(value, key, 1);
    else if (key === "components") {
      if (typeof value !== "object" || value === null) throw new NodeBinError("INVALID_ARGUMENT", `${file}: components must be an object of {min, max}`, { details: { file } });
      for (const [name, limits] of Object.entries(value as Record<string, unknown>)) {
        if (typeof limits !== "object" || limits === null) throw new NodeBinError("INVALID_ARGUMENT", `${file}: components.${name} must be an object`, { details: { file } });
        for (const [k, v] of Object.entries(limits)) {
          if (k !== "min" && k !== "max") throw new NodeBinError("INVALID_ARGUMENT", `${file}: components.${name}.${k} is not a limit (min, max)`, { details: { file } });
          wholeNumber(v, `components.${name}.${k}`, k === "max" ? 1 : 0);
        }
      }
    } else if (key === "plugins") {
      if (typeof value !== "object" || value === null) throw new NodeBinError("INVALID_ARGUMENT", `${file}: plugins must be an object of plugin name -> options`, { details: { file } });
    } else {
      throw new NodeBinError("INVALID_ARGUMENT", `${file}: unknown key ${JSON.stringify(key)} (known: capacity, components, plugins, ${Object.keys(DEFAULT_SETTINGS).join(", ")})`, { details: { file } });
    }
  }
  return config;
}
