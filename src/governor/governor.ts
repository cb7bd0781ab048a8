/**
 * The governor: one per host. It holds the host's discovery endpoint (as the
 * host agent: leases of the host's containers, gossip with other hosts) while
 * never appearing as a node itself, and it keeps the components of its
 * components directory running as child processes, one node each:
 *
 * - supervision (supervisor.ts): every child is pinged on the control plane;
 *   one that stops answering is a zombie (the zombie strategy decides: by
 *   default kill and respawn); one that crashes is respawned with exponential
 *   backoff; a component that keeps failing at start is marked failed with its
 *   last error;
 * - elasticity (elastic.ts): the lifecycle strategy grows a component under
 *   sustained queue wait or on a capacity request from the network, and
 *   shrinks idle ones, within the component's min/max and the host's capacity,
 *   all of which change live (`node-bin governor set`, the config file:
 *   settings.ts);
 * - hot deploy (roll.ts): the components directory is watched; a changed
 *   component rolls node by node (new node started held, old node drained, its
 *   state handed over, old node exits), a removed one drains, an added one
 *   starts;
 * - recycling (supervisor.ts): children are detached and recorded; a new
 *   governor adopts the live ones instead of starting duplicates;
 * - its control API at the governor socket (api.ts).
 *
 * This file is the Governor itself: its public API, and the process wiring
 * (Container, ZeroMQ listeners and connector, HostAgent and gossip) from
 * which it hands the modules the narrow interfaces of ports.ts. The modules
 * share one GovernorState (state.ts).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { NodeBinProcess } from "../container/compose.ts";
import type { Container } from "../container/container.ts";
import type { GossipSelf } from "../container/host-role.ts";
import { consoleLogger } from "../container/log.ts";
import type { GossipLayer } from "../membership/agent.ts";
import { systemClock, type Clock } from "../platform/clock.ts";
import { DEFAULT_DISCOVERY_PORT } from "../transport/runtime-dir.ts";
import { PING } from "../wire/control.ts";
import type { SecurityProvider } from "../security/provider.ts";
import { NodeBinError } from "../wire/errors.ts";
import { processView, type GovernorView, type ProcessView } from "../metrics/sources.ts";
import { GovernorApi } from "./api.ts";
import { pidAlive, spawnChild } from "./children.ts";
import { GatewayChildren } from "./gateways.ts";
import { ElasticLoop } from "./elastic.ts";
import { LaunchedHostsFile, ProviderLoop, UnmetForwarder } from "./provider.ts";
import { REQUEST_CAPACITY, type CapacityRequest } from "../wire/control.ts";
import { tiersOf } from "../membership/capacity.ts";
import { FETCH_COMPONENT, HOST_ONLY } from "../wire/control.ts";
import { CodeShare } from "./code-share.ts";
import { Mode } from "../wire/schema.ts";
import { PluginHost, loadPlugins, type LoadedPlugin } from "./plugins.ts";
import type { PluginContext } from "./strategy.ts";
import type { ControlCall, SendControl, ServeControl } from "./ports.ts";
import { RollingDeploy } from "./roll.ts";
import { ComponentScanner } from "./scan.ts";
import { GovernorConfig, defaultCapacity, type Settings } from "./settings.ts";
import { GovernorState } from "./state.ts";
import { Supervisor } from "./supervisor.ts";

export { DEFAULT_SETTINGS, SETTING_KEYS, parseConfig, type ConfigFile, type Settings, type SupervisionSettings } from "./settings.ts";

export interface GovernorOptions {
  componentsDir: string;
  host: string;
  network: string;
  /** Address the discovery port binds (default: every interface) and the one it is advertised at (see advertiseAddress()). */
  bind?: string;
  advertise?: string;
  /** The security provider (default: none) and the arguments that give each child the same (--cluster-key FILE, --insecure). */
  security?: { provider: SecurityProvider; childArgs: string[] };
  discoveryPort?: number;
  seeds: string[];
  runtimeDir: string;
  /** Most container processes on this host (default 2 x CPU count). */
  capacity?: number;
  /** JSON config file re-read when it changes (see README, "Governor config"). */
  configFile?: string;
  /** Directory of plugins (default: none; built-ins only). */
  pluginsDir?: string;
  /**
   * The plugin host the caller started the first kinds from (security,
   * loader, discovery: before the process binds anything) and its context;
   * the governor starts its strategies from it. Default: one for pluginsDir.
   */
  pluginHost?: { host: PluginHost; context: PluginContext };
  /** Settings given on the command line (over the config file's). */
  settings?: Partial<Settings>;
  /** How the governor starts its children (default: this program again). */
  command?: { command: string; args: string[] };
  makeGossip?: (self: GossipSelf, seeds: string[]) => GossipLayer | undefined;
  /** The time every part of the governor reads and waits on (default: the system clock). */
  clock?: Clock;
  /** More arguments for every child it starts: what its plugins need of them (the metrics plugin's `--metrics-calls`). */
  childArgs?: string[];
  /** The built-in provider's commands from the command line (`--provider-command`, `--provider-release-command`: shell lines), over governor.json's. */
  provider?: { command?: string; releaseCommand?: string };
}

export class Governor {
  readonly container: Container;
  readonly socket: string;
  readonly stateDir: string;
  plugins: LoadedPlugin[] = [];
  private pluginHost: PluginHost | undefined;
  private readonly options: GovernorOptions;
  private readonly clock: Clock;
  private readonly state: GovernorState;
  private readonly config: GovernorConfig;
  private readonly supervisor: Supervisor;
  private readonly deploy: RollingDeploy;
  private readonly elastic: ElasticLoop;
  /** Component code shared with other hosts: served (FetchComponent) and fetched (the elastic loop's CodeFetch). */
  private readonly code: CodeShare;
  private readonly api: GovernorApi;
  /** New hosts on demand (provider.ts), when a provider plugin is configured; else unmet demand is handed to the network's deciding governor. */
  private providerLoop: ProviderLoop | undefined;
  private readonly forwarder: UnmetForwarder;
  private scanner: ComponentScanner | undefined;
  /** The gateways governor.json names, run as children (gateways.ts). */
  private gateways: GatewayChildren | undefined;
  private readonly startedAt: number;
  private readonly stopped: Promise<{ keepChildren: boolean }>;
  private resolveStopped!: (v: { keepChildren: boolean }) => void;

  get discoveryPort(): number {
    return this.options.discoveryPort ?? DEFAULT_DISCOVERY_PORT;
  }

  /** The settings object strategies read live (mutated in place). */
  get settings(): Settings {
    return this.state.settings;
  }

  private get log() {
    return this.state.log;
  }

  /**
   * Starts the governor: claims the governor socket (a second governor for the
   * same discovery port is refused with ALREADY_EXISTS), loads plugins and
   * config, takes the discovery endpoint (asking a container that took it over
   * while no governor ran to give it back), adopts live children of a previous
   * governor, then starts the components directory's components.
   */
  static async start(options: GovernorOptions): Promise<Governor> {
    const socket = `ipc://${join(options.runtimeDir, `governor-${options.discoveryPort ?? DEFAULT_DISCOVERY_PORT}.sock`)}`;
    const late: { governor?: Governor } = {};
    const proc = await Governor.process(options, socket, late);
    const g = (late.governor = new Governor(options, proc, socket));
    try {
      await g.begin();
    } catch (err) {
      await g.shutdownSockets();
      throw err;
    }
    return g;
  }

  /** Changes one setting live (`node-bin governor set`). Throws INVALID_ARGUMENT / NOT_FOUND. */
  set(key: string, component: string, value: number): void {
    this.config.set(key, component, value);
  }

  /** The status report (`node-bin governor status --json`). */
  status(): Record<string, unknown> {
    return this.api.status();
  }

  /** What the metrics plugin reads of the governor (metrics/sources.ts): its process, its host's capacity, components and children, live. */
  metricsView(): { process: ProcessView; governor: GovernorView } {
    const { state } = this;
    return {
      process: processView(this.process),
      governor: {
        capacity: () => ({ capacity: state.capacity, used: state.used() }),
        components: () => [...state.components.values()].filter((c) => !c.removed).map((c) => ({ name: c.name, desired: c.desired, restarts: c.restarts, zombies: c.zombies ?? 0 })),
        children: () => [...state.children.values()].map((c) => ({ component: c.component, pid: c.pid, phase: c.ending ? "draining" : c.phase, ...(c.stats ? { stats: c.stats } : {}) })),
        provider: () => this.providerLoop?.sample(),
      },
    };
  }

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
    return (this.state.stopping ??= this.doStop(options.keepChildren ?? false));
  }

  private async doStop(keepChildren: boolean): Promise<void> {
    this.state.keepChildren = keepChildren;
    this.elastic.stop();
    // Its rounds end and a provider command still running is killed (by its pid).
    const providerStopped = this.providerLoop?.stop();
    this.supervisor.stopPings();
    this.scanner?.close();
    // A gateway holds no state: stopped either way (the next governor starts its own on the same ports).
    await this.gateways?.stop();
    if (keepChildren) {
      this.supervisor.saveChildren();
      this.log.info(`stopping the governor only: ${this.state.children.size} child(ren) keep serving`);
    } else {
      this.log.info(`stopping ${this.state.children.size} child(ren) and the governor`);
      await this.supervisor.stopAll();
      this.config.forgetOverrides();
    }
    await providerStopped;
    await this.shutdownSockets();
    this.resolveStopped({ keepChildren });
  }

  // ===================================================================
  // PROCESS WIRING: the process itself is the shared composition
  // (container/compose.ts): the governor socket as its local endpoint, no
  // node endpoints, and the host role claimed (container/host-role.ts). Here
  // only the adapters the modules get instead (ports.ts) and the order of
  // start-up.
  // ===================================================================

  private readonly process: NodeBinProcess;

  private constructor(options: GovernorOptions, proc: NodeBinProcess, socket: string) {
    this.options = options;
    this.process = proc;
    this.container = proc.container;
    this.socket = socket;
    this.clock = options.clock ?? systemClock;
    this.startedAt = this.clock.now();
    this.state = new GovernorState({ clock: this.clock, host: options.host, componentsDir: options.componentsDir, capacity: options.capacity ?? defaultCapacity() });
    this.stateDir = join(options.runtimeDir, `governor-${this.discoveryPort}`);
    mkdirSync(join(this.stateDir, "logs"), { recursive: true, mode: 0o700 });
    this.stopped = new Promise((r) => (this.resolveStopped = r));

    this.config = new GovernorConfig(this.state, {
      stateDir: this.stateDir,
      ...(options.configFile ? { configFile: options.configFile } : {}),
      ...(options.settings ? { settings: options.settings } : {}),
      ...(options.capacity !== undefined ? { capacity: options.capacity } : {}),
    });
    this.supervisor = new Supervisor(
      this.state,
      {
        componentsDir: options.componentsDir,
        socket: this.socket,
        discoveryPort: this.discoveryPort,
        host: options.host,
        bind: proc.bind,
        advertise: proc.advertise,
        securityArgs: options.security?.childArgs ?? [],
        ...(options.childArgs ? { extraArgs: options.childArgs } : {}),
        network: options.network,
        seeds: options.seeds,
        runtimeDir: options.runtimeDir,
        stateDir: this.stateDir,
        ...(options.command ? { command: options.command } : {}),
      },
      {
        call: this.call,
        ping: (via, timeoutMs) => this.call(PING, {}, via, timeoutMs),
        spawn: spawnChild,
        kill: (pid, signal) => process.kill(pid, signal),
        pidAlive,
        evict: (container, why) => this.process.host?.hostAgent?.evict(container, why),
      },
    );
    this.deploy = new RollingDeploy(this.state, this.config, this.supervisor, this.call);
    this.code = new CodeShare({
      dir: join(this.stateDir, "fetched"),
      keyring: () => this.process.security.keyring,
      call: this.call,
      source: (name, hash) => this.componentSource(name, hash),
      install: (name, hash, root, from) => void this.deploy.addFetchedComponent(name, hash, { from, root }),
      inUse: (name) => new Set(this.state.childrenOf(name).map((c) => c.hash)),
      log: this.state.logger("governor/code"),
    });
    this.elastic = new ElasticLoop(this.state, this.config, this.supervisor, this.deploy, {
      network: options.network,
      hosts: () => this.container.table.hostSummaries(),
      sendVia: (method, request, via) => this.container.sendControl(method, request, { via }),
      announce: (capacity) => this.process.host?.setExtras({ capacity }),
    }, this.code, { unmet: (request, now) => this.unmet(request, now) });
    this.forwarder = new UnmetForwarder({
      host: options.host,
      network: options.network,
      hosts: () => this.container.table.hostSummaries(),
      forward: this.forwardCapacity,
      log: this.state.logger("governor/provider"),
    });
    this.api = new GovernorApi(
      this.state,
      this.config,
      this.elastic,
      {
        socket: this.socket,
        startedAt: this.startedAt,
        discovery: () => this.process.host?.discoveryEndpoints ?? [],
        agent: () => this.process.host?.stats() ?? {},
        refused: () => this.process.refused(),
        tiers: () => tiersOf(options.host, options.network, this.container.table.hostSummaries()),
        provider: () => this.providerLoop?.status() as Record<string, unknown> | undefined,
        gateways: () => this.gateways?.status() ?? [],
        plugins: () => this.plugins,
        pluginSchemas: () => this.pluginSchemas(),
      },
      (keepChildren) => this.stop({ keepChildren }),
      (components) => this.deploy.rollNow(components),
    );
  }

  /**
   * The governor's process: its socket bound (claimed: a second governor for
   * the same discovery port is refused with ALREADY_EXISTS), the host role
   * made but not yet claimed (begin() claims it after adopting children).
   */
  private static async process(options: GovernorOptions, socket: string, late: { governor?: Governor }): Promise<NodeBinProcess> {
    const port = options.discoveryPort ?? DEFAULT_DISCOVERY_PORT;
    try {
      return await NodeBinProcess.create({
        id: `governor@${options.host}-${process.pid}`,
        host: options.host,
        network: options.network,
        runtimeDir: options.runtimeDir,
        // Plugins decide how the governor logs; they load after the socket is held.
        logger: (s) => late.governor?.state.logger(s) ?? consoleLogger(s),
        ...(options.clock ? { clock: options.clock } : {}),
        ...(options.bind ? { bind: options.bind } : {}),
        ...(options.security ? { security: options.security.provider } : {}),
        ...(options.advertise ? { advertise: options.advertise } : {}),
        localEndpoints: [socket],
        hostRole: {
          seeds: options.seeds,
          discoveryPort: port,
          ...(options.makeGossip ? { makeGossip: options.makeGossip } : {}),
          onLease: (event) => {
            if (event.type === "registered") late.governor?.supervisor.onRegistered(event.pid, event.container, event.nodes);
          },
          // A lease naming a child must be that child's (its pid with its container id): see Supervisor.checkLease.
          checkLease: (request) => late.governor?.supervisor.checkLease(request),
        },
        // A capacity request that reached the governor's own process (from another host's governor).
        onCapacity: (wanted) => late.governor?.elastic.capacityWanted(wanted),
      });
    } catch (err) {
      const e = NodeBinError.from(err);
      if (e.code !== "ALREADY_EXISTS") throw e;
      throw new NodeBinError("ALREADY_EXISTS", `a governor (pid ${e.details.pid}) already runs for discovery port ${port} (socket ${socket}); stop it with \`node-bin governor stop\``, { details: e.details });
    }
  }

  /**
   * The directory of component `name` this governor may send at `hash`
   * (FetchComponent): its own (the components directory's), or code it
   * fetched. Undefined when it runs no such version; UNAVAILABLE while a
   * deploy writes it.
   */
  private componentSource(name: string, hash: string): string | undefined {
    const comp = this.state.components.get(name);
    if (!comp || comp.removed || comp.hash !== hash) return undefined;
    if (comp.fetched) return join(comp.fetched.root, name);
    if (this.state.locked(name)) throw new NodeBinError("UNAVAILABLE", `component ${name} is being deployed: ask again later`, { details: { component: name } });
    return join(this.options.componentsDir, name);
  }

  /**
   * New hosts on demand (provider.ts): started when a provider is configured
   * (a launch command for the built-in "command", from the flags, governor.json's
   * providerCommand or its plugin options; or a user's plugin of kind
   * provider). This host then gossips `provider: true`, and the provider loop
   * takes the elastic loop's unmet demand.
   */
  private async startProvider(host: PluginHost, context: PluginContext | undefined): Promise<void> {
    const chosen = host.chosenFor("provider");
    const config = this.config.plugins;
    const own = config[chosen.name] ?? {};
    const commands = { ...this.config.providerCommands, ...this.options.provider };
    if (chosen.source === "built-in" && commands.command === undefined && own.command === undefined) {
      if (commands.releaseCommand !== undefined) this.log.warn("a provider release command without a launch command: no provider runs (give --provider-command too)");
      return;
    }
    const options = chosen.source === "built-in" ? { ...config, [chosen.name]: { ...own, ...commands } } : config;
    const ctx = context ?? { role: "governor" as const, runtimeDir: this.options.runtimeDir, log: this.state.logger(`plugin/${chosen.name}`), host: this.options.host };
    const provider = await host.start("provider", ctx, options, this.state.settings);
    this.state.provider = true;
    this.providerLoop = new ProviderLoop({
      provider,
      clock: this.clock,
      host: this.options.host,
      network: this.options.network,
      hosts: () => this.container.table.hostSummaries(),
      seeds: () => this.providerSeeds(),
      settings: this.state.settings,
      log: this.state.logger("governor/provider"),
      forward: this.forwardCapacity,
      store: new LaunchedHostsFile(join(this.stateDir, "provider-hosts.json")),
    });
    this.providerLoop.start();
    const s = this.state.settings;
    this.log.info(`provider ${provider.name} (${chosen.source}): new hosts on demand, at most ${s.providerMaxHosts}, after ${s.providerSustainMs} ms of unmet demand on a full network; idle ones released after ${s.providerIdleMs} ms; cooldown ${s.providerCooldownMs} ms`);
  }

  /** A capacity request no host in reach had room for: the provider loop's, else handed to the network's deciding governor. */
  private unmet(request: CapacityRequest, now: number): void {
    (this.providerLoop ?? this.forwarder).unmet(request, now);
  }

  private readonly forwardCapacity = (request: CapacityRequest, endpoint: string): void => this.container.sendControl(REQUEST_CAPACITY, request, { via: endpoint });

  /**
   * NODEBIN_SEEDS for a launched host ("ip:port"): this host's advertised
   * discovery endpoint first (its gossip record's), then the ones it bound,
   * then its own seeds; never an unspecified address.
   */
  private providerSeeds(): string[] {
    const own = this.container.table.hostSummaries().find((h) => h.host === this.options.host)?.endpoint;
    const out: string[] = [];
    for (const e of [own, ...(this.process.host?.discoveryEndpoints ?? []), ...this.options.seeds]) {
      const m = e ? /^tcp:\/\/(.+:\d+)$/.exec(e) : null;
      if (!m || /^(0\.0\.0\.0|\[::\]|\*):/.test(m[1]!) || out.includes(m[1]!)) continue;
      out.push(m[1]!);
    }
    return out;
  }

  /** A control call to the process at `via`, its reply in plain form. */
  private readonly call: ControlCall = (method, request, via, timeoutMs) => this.container.callControl(method, request, { via }, timeoutMs);

  private readonly sendControl: SendControl = (method, request, to) => this.container.sendControl(method, request, { to });

  private readonly serve: ServeControl = (method, handler) => this.container.control.serve(method, (request) => handler(request));

  /**
   * Serves each plugin's control-plane service at the governor's private
   * socket: host-only, whatever the plugin says, and never in the
   * application network's tables. A handler gets the request and
   * `{ plugin }`, what the plugin's create() returned.
   */
  private servePlugins(host: PluginHost): void {
    for (const { plugin, component, instance } of host.services) {
      for (const schema of component.schema.methods.values()) {
        const handler = component.handlers.get(schema.fullName)!;
        const log = this.state.logger(`plugin/${plugin}`);
        this.container.control.serveOwn({ schema, oneWay: schema.mode === Mode.ASYNC }, (request) => handler(request, { plugin: instance, log } as never), HOST_ONLY);
      }
      this.log.info(`plugin ${plugin} serves ${[...new Set([...component.schema.methods.values()].map((m) => m.service))].join(", ")} at ${this.socket}`);
    }
  }

  /** The schemas of the plugins' services (for `node-bin governor call`): { plugin, json }. */
  pluginSchemas(): { plugin: string; json: string }[] {
    return this.pluginHost?.services.map((s) => ({ plugin: s.plugin, json: s.component.schema.json })) ?? [];
  }

  private async begin(): Promise<void> {
    this.config.loadOverrides();
    this.config.readConfig(true);
    const given = this.options.pluginHost;
    const host = given?.host ?? (await PluginHost.discover(this.options.pluginsDir ? { dirs: [this.options.pluginsDir] } : {}));
    const loaded = await loadPlugins({ host, ...(given ? { context: given.context } : {}), config: this.config.plugins, settings: this.state.settings });
    this.state.strategies = loaded.strategies;
    // Every plugin in the order it started: the ones started before the process (security, loader, discovery) first.
    this.plugins = host.loaded;
    this.pluginHost = host;
    this.state.log = this.state.logger("governor");
    for (const p of this.plugins) this.log.debug(`plugin ${p.kind}: ${p.name} (${p.source})`);
    this.servePlugins(host);

    this.api.serve(this.serve);
    this.serve(FETCH_COMPONENT, (request) => this.code.serve(request));
    // Adopt first (over the children's own ipc endpoints), so that the table
    // this governor serves from its first moment has their nodes in it.
    const leases = await this.supervisor.adopt();
    await this.process.host!.claim(leases);

    this.scanner = new ComponentScanner({
      dir: this.options.componentsDir,
      onChange: (changes) => this.deploy.onComponentsChanged(changes),
      onError: (err) => this.log.warn(`components directory: ${err.message}`),
    });
    const first = this.scanner.start();
    for (const [name, hash] of first.components) this.deploy.addComponentState(name, hash);
    // Adopted children running fetched code a previous governor had verified: known again (else nobody would shrink them).
    for (const child of this.state.children.values()) if (!this.state.components.has(child.component)) this.code.restore(child.component, child.hash);
    this.log.info(
      `governing ${this.options.componentsDir} on ${this.options.host}: capacity ${this.state.capacity}, ${this.state.components.size} component(s)` +
        (this.state.children.size ? `, adopted ${this.state.children.size} running child(ren)` : ""),
    );
    await this.startProvider(host, given?.context);
    this.startGateways();
    this.elastic.start();
    this.supervisor.startPings();
    this.elastic.tick();
  }

  /** Starts the gateways governor.json names: near leg this governor's network, seeded with this governor (gateways.ts). */
  private startGateways(): void {
    const specs = this.config.gateways;
    if (specs.length === 0) return;
    const o = this.options;
    this.gateways = new GatewayChildren(specs, {
      host: o.host,
      network: o.network,
      discoveryPort: this.discoveryPort,
      bind: this.process.bind,
      advertise: this.process.advertise,
      seeds: o.seeds,
      securityArgs: o.security?.childArgs ?? [],
      runtimeDir: o.runtimeDir,
      logDir: join(this.stateDir, "logs"),
      log: this.state.logger("governor/gateways"),
      ...(o.command ? { command: o.command } : {}),
    });
    this.gateways.start();
  }

  private async shutdownSockets(): Promise<void> {
    await this.gateways?.stop();
    this.elastic.stop();
    await this.providerLoop?.stop();
    this.supervisor.stopPings();
    await this.process.close();
  }
  // ====================================================== end of process wiring
}
