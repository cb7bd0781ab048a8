/**
 * The governor's shared state: its children and components, the live
 * settings and host capacity, the strategies, the clock, and the queries
 * every module asks of them. governor.ts makes one and passes it to each
 * module (supervisor, settings, roll, elastic, api); nothing here touches a
 * socket or a process.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../component/context.ts";
import { consoleLogger } from "../container/log.ts";
import type { Clock } from "../platform/clock.ts";
import type { PingReply } from "../wire/control.ts";
import type { ProcessHandle } from "./ports.ts";
import { DEFAULT_SETTINGS, type Settings } from "./settings.ts";
import type { ChildView, StrategyKinds } from "./strategy.ts";

type Phase = ChildView["phase"];

/** One child process as the governor tracks it. */
export interface Child {
  pid: number;
  component: string;
  hash: string;
  phase: Phase;
  startedAt: number;
  /** When it registered (epoch ms); 0 before. */
  readyAt: number;
  lastPongAt: number;
  missedPongs: number;
  /** Pings it answered (status: how many times it was found alive). */
  pongs: number;
  restarts: number;
  log: string;
  /** Absent for an adopted child (a previous governor spawned it: no exit event comes). */
  proc?: ProcessHandle;
  /**
   * Its container id: chosen by the governor at spawn (`--id`), or recorded
   * for an adopted child. The host agent takes a lease naming this child's pid
   * only from this container (Supervisor.checkLease).
   */
  container?: string;
  endpoint?: string;
  node?: string;
  /** Its last pong. */
  stats?: PingReply;
  /** Set when the governor ended it on purpose (drained, stopped, zombie-killed): its exit is not a crash. */
  ending?: "drain" | "zombie" | "stop";
  zombie?: boolean;
  /**
   * Drained to make room on a full host for a component with no node: it
   * still holds its slot until it exited (the elastic loop gives up waiting
   * after ROOM_WAIT_MS), so that the host never runs more processes than its
   * capacity and what it makes room for, and nothing else, gets the slot.
   */
  makingRoomFor?: { component: string; since: number };
  pinging?: boolean;
  waiters: Array<(ok: boolean) => void>;
}

/** One component of the components directory. */
export interface ComponentState {
  name: string;
  /** Content hash on disk. */
  hash: string;
  /** Limits the children reported from the manifest (undefined until one did). */
  manifest?: { min: number; max: number };
  desired: number;
  startFailures: number;
  backoffUntil: number;
  restarts: number;
  /** Children found silent past zombieAfterMs (absent: none yet). */
  zombies?: number;
  capacityRequests: number;
  failed?: string;
  /** A hash whose code failed to start during a roll: not retried until the code changes again. */
  badHash?: string;
  deployError?: string;
  /** Why it runs fewer nodes than it wants, when the elastic loop could not start one this round (status). */
  waiting?: string;
  rolling: boolean;
  /** `governor roll`: children started before this (epoch ms) are replaced too, whatever code they run. */
  rollBefore?: number;
  removed: boolean;
  /**
   * Not in the components directory: its code was fetched from another host
   * (code-share.ts), verified by its hash, and its children run it from
   * `root` (a components directory of its own, holding only it). Its min is
   * 0: spilled capacity shrinks back to no node when idle. The scanner never
   * reports it removed; the directory gaining a component of this name wins.
   */
  fetched?: { from: string; root: string };
}

export interface GovernorStateOptions {
  clock: Clock;
  host: string;
  componentsDir: string;
  /** The host capacity to start with (the settings module keeps it current). */
  capacity: number;
}

export class GovernorState {
  readonly clock: Clock;
  readonly host: string;
  readonly componentsDir: string;
  readonly children = new Map<number, Child>();
  readonly components = new Map<string, ComponentState>();
  /** Children started held (a roll's new nodes) until their state is imported. */
  readonly held = new Set<number>();
  /** The settings object strategies read live (mutated in place). */
  readonly settings: Settings = { ...DEFAULT_SETTINGS };
  /** Most container processes on this host. */
  capacity: number;
  /** A provider plugin runs here: this governor may launch hosts (gossiped with its capacity). */
  provider = false;
  /** Set once the plugins are loaded (before any child is started or adopted). */
  strategies!: StrategyKinds;
  /** The governor's own logger (the logging strategy's, once loaded). */
  log: Logger;
  /** Set when stop() began: resolves when the governor stopped. */
  stopping: Promise<void> | undefined;
  /** Whether the current stop leaves the children running (then their record is kept). */
  keepChildren = false;
  /** Registers the host agent refused on the governor's word (Supervisor.checkLease), and the last reason. */
  leasesRefused = 0;
  lastLeaseRefused: string | undefined;

  constructor(options: GovernorStateOptions) {
    this.clock = options.clock;
    this.host = options.host;
    this.componentsDir = options.componentsDir;
    this.capacity = options.capacity;
    this.log = consoleLogger("governor");
  }

  /** The logger of one source: the logging strategy's once loaded, the console's before. */
  logger(source: string): Logger {
    return this.strategies ? this.strategies.logging.logger(source) : consoleLogger(source);
  }

  childrenOf(name: string): Child[] {
    return [...this.children.values()].filter((c) => c.component === name);
  }

  /** Children not on their way out. */
  live(): Child[] {
    return [...this.children.values()].filter((c) => !c.ending);
  }

  /**
   * The host's slots in use: live children, and those draining to make room
   * for a component with no node (until they exited: the slot is promised).
   * Other draining children no longer count, as everywhere in the governor.
   */
  used(): number {
    let n = 0;
    for (const c of this.children.values()) if (!c.ending || c.makingRoomFor) n++;
    return n;
  }

  /** A deploy is writing the components directory (all of it, or component `name`): leave it alone. */
  locked(name?: string): boolean {
    const dir = this.componentsDir;
    return existsSync(join(dir, ".deploy.lock")) || (name !== undefined && existsSync(join(dir, name, ".deploying")));
  }
}

/** A child as the strategies see it. */
export function viewOf(c: Child, now: number): ChildView {
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
