/**
 * The control-plane plugins: small objects a process consults for decisions
 * it should not hard-code. The governor's strategies are three kinds:
 * - `lifecycle`: when to grow or shrink a component above its minimum;
 * - `zombie`: what to do with a child that stopped answering pings;
 * - `logging`: where the governor's own log lines go.
 *
 * A plugin module (a file in the governor's plugins directory, or one of the
 * built-in modules in ./plugins/) default-exports a PluginModule. The built-in
 * defaults are written as plugins themselves, so a user's plugin replaces one
 * by declaring the same kind. The governor keeps the invariants no plugin can
 * break: never above a component's max or the host's capacity, never below a
 * component's min, one change at a time per component.
 */
import type { Logger } from "../component/context.ts";
import type { LoadResult } from "../component/loader.ts";
import type { GossipSelf } from "../container/host-role.ts";
import type { GossipLayer } from "../membership/agent.ts";
import type { MetricsPlugin } from "../metrics/plugin.ts";
import type { SecurityProvider } from "../security/provider.ts";

/** What the governor knows about one child process (one container, one node). */
export interface ChildView {
  /** Process id. */
  pid: number;
  component: string;
  /** starting: spawned, not yet registered; holding: waiting for state; ready: serving; draining: finishing its queue before it exits. */
  phase: "starting" | "holding" | "ready" | "draining";
  /** When it was spawned or adopted (epoch ms). */
  startedAt: number;
  /** Last answered ping (epoch ms); 0 before the first. */
  lastPongAt: number;
  /** Pings in a row without an answer. */
  missedPongs: number;
  /** From its last pong: */
  handled: number;
  queued: number;
  /** Queue limit of its node. */
  capacity: number;
  /** Age of the oldest message waiting in its queue (ms); 0 when empty. */
  queueWaitMs: number;
  /** Time since its node last took or finished a message (ms). */
  idleMs: number;
  /** Times this slot was respawned after a crash or a zombie kill. */
  restarts: number;
}

export interface ComponentView {
  name: string;
  /** Effective limits (manifest, then config file, then `governor set`). */
  min: number;
  max: number;
  children: ChildView[];
  /** Capacity requests from the network since the last decision round (callers that found every node full). */
  capacityRequests: number;
  /** Set when the component cannot be started (last error). */
  failed?: string;
}

export interface HostView {
  /** Most container processes this host runs (all components together). */
  capacity: number;
  /**
   * Slots in use: container processes running or starting now, plus one held
   * for each component that has no node yet (it starts before any component
   * grows, so growth cannot have its slot).
   */
  used: number;
  now: number;
}

export type LifecycleDecision =
  | { action: "grow"; component: string; reason: string }
  | { action: "shrink"; component: string; pid: number; reason: string };

/**
 * Decides elasticity. Called every decision round (default 250 ms) with the
 * current view; returns the changes it wants. The governor applies them within
 * the invariants (it ignores a grow at max or at host capacity, a shrink at
 * min, and any change to a component that has a child starting or draining).
 */
export interface LifecycleStrategy {
  readonly name: string;
  decide(host: HostView, components: readonly ComponentView[]): LifecycleDecision[];
}

export interface ZombieActions {
  /** SIGKILL the child (the governor then removes it from the table at once). */
  kill(): void;
  /** Start a replacement child for the same component. */
  respawn(): void;
  log: Logger;
}

/** Decides what happens to a child that missed its pongs (called once per zombie). */
export interface ZombieStrategy {
  readonly name: string;
  onZombie(child: ChildView, actions: ZombieActions): void | Promise<void>;
}

export interface LoggingStrategy {
  readonly name: string;
  /** The logger of one source ("governor", "governor/greeter", ...). */
  logger(source: string): Logger;
}

export interface StrategyKinds {
  lifecycle: LifecycleStrategy;
  zombie: ZombieStrategy;
  logging: LoggingStrategy;
}

/** The component loader: what turns a components directory into components (component/loader.ts is the built-in). */
export interface ComponentLoader {
  readonly name: string;
  load(dir: string): Promise<LoadResult>;
}

/**
 * Discovery: how a host's agent learns the other hosts. The built-in
 * ("gossip") answers undefined: the agent's own push-pull gossip. A plugin
 * may return a GossipLayer of its own (static membership, a registry).
 */
export interface DiscoveryStrategy {
  readonly name: string;
  makeGossip(self: GossipSelf, seeds: string[]): GossipLayer | undefined;
}

/**
 * A host provider (kind `provider`): how the governor gets a new host for its
 * network when every host is full under sustained unmet demand, and gives one
 * back when it has idled (governor/provider.ts decides when; the plugin only
 * does it). The built-in ("command", ./plugins/provider-command.ts) runs a
 * user's commands; a plugin may call a cloud API itself. Started only when
 * configured (a provider command, or a user's plugin of this kind).
 */
export interface HostProvider {
  readonly name: string;
  /**
   * Starts a host that will join `network` from `seeds` (discovery endpoints,
   * "ip:port"). Resolves once the request is made (the host may still be
   * booting), with the new host's id when the provider knows it (else the
   * first new host to join the network's gossip is taken as it). Rejects
   * (a NodeBinError, say UNAVAILABLE or DEADLINE_EXCEEDED) when it failed.
   */
  launch(request: { seeds: string[]; network: string; reason: string }): Promise<{ host?: string }>;
  /** Gives host `host` back (it idled past the provider's idle time). Absent: launched hosts are never released. Rejects when it failed. */
  release?(request: { host: string; network: string; reason: string }): Promise<void>;
  /** Ends whatever it still runs (the governor stops): a command still running is killed by its pid. */
  close?(): void | Promise<void>;
}

/**
 * Every kind of control-plane plugin, by what it creates. A plugin replaces
 * the built-in of its kind. Every process starts the kinds it needs in the
 * order of PLUGIN_KINDS: the security provider first (nothing binds or
 * connects before it), then the component loader, then the rest.
 */
export interface PluginKinds extends StrategyKinds {
  security: SecurityProvider;
  loader: ComponentLoader;
  discovery: DiscoveryStrategy;
  /** Metrics (src/metrics/plugin.ts): started by a role that serves /metrics or counts calls for its governor. */
  metrics: MetricsPlugin;
  /** A host provider (governor/provider.ts): started by a governor configured with one. */
  provider: HostProvider;
}

export type PluginKind = keyof PluginKinds;
/** The start-up order. */
export const PLUGIN_KINDS: readonly PluginKind[] = ["security", "loader", "discovery", "metrics", "logging", "lifecycle", "zombie", "provider"];
/** The governor's strategies: the kinds that need its settings, started once it holds its socket. */
export const STRATEGY_KINDS: readonly (keyof StrategyKinds)[] = ["logging", "lifecycle", "zombie"];

/** Which process a plugin is created in, and what it may need of it. */
export interface PluginContext {
  role: "governor" | "container" | "dev" | "client" | "gateway";
  /** The private runtime directory. */
  runtimeDir: string;
  /** The cluster key file given to the process (--cluster-key, $NODEBIN_CLUSTER_KEY_FILE, cluster.key beside node-bin). */
  clusterKeyFile?: string;
  /** Where a plugin may write its lines before the logging plugin started. */
  log: Logger;
  /** The host id, once known (the metrics plugin labels its series with it). */
  host?: string;
  /** The node-bin version. */
  version?: string;
}

/**
 * What a plugin module default-exports (or exports as `plugin`). `create` gets
 * the plugin's options from the governor's config file (`plugins.<name>`,
 * default {}), the governor's live settings (defaults outside a governor) and
 * the context of the process; it may be async.
 */
export interface PluginModule<K extends PluginKind = PluginKind> {
  kind: K;
  name: string;
  create(options: Record<string, unknown>, settings: GovernorSettings, context?: PluginContext): PluginKinds[K] | Promise<PluginKinds[K]>;
}

/** The governor's tunables a plugin may read (all changeable live). */
export interface GovernorSettings {
  /** Scale down a node idle this long (ms; default 60 000). */
  idleMs: number;
  /** Grow when the queue wait of every ready node of a component exceeds this (ms; default 200). */
  queueWaitMs: number;
  /** ... or its queue length exceeds this (default 32). */
  queueLength: number;
  /** ... for this long without a break (ms; default 1 000). */
  sustainMs: number;
}
