/**
 * The governor's strategy plugins: small objects the governor consults for
 * decisions it should not hard-code. Three kinds:
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

export type PluginKind = keyof StrategyKinds;
export const PLUGIN_KINDS: readonly PluginKind[] = ["logging", "lifecycle", "zombie"];

/**
 * What a plugin file default-exports. `create` gets the plugin's options from
 * the governor's config file (`plugins.<name>`, default {}) and the governor's
 * settings; it may be async.
 */
export interface PluginModule<K extends PluginKind = PluginKind> {
  kind: K;
  name: string;
  create(options: Record<string, unknown>, settings: GovernorSettings): StrategyKinds[K] | Promise<StrategyKinds[K]>;
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
