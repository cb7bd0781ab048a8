/**
 * What the metrics plugin reads, as narrow views of plain data (the way
 * governor/ports.ts hands modules what they need): a role gives the plugin
 * these, so the plugin knows no process, governor or socket, and a plugin
 * host can give it the same views later. processView() adapts the one
 * composition every role shares (container/compose.ts). Every function is
 * called at scrape time and must be cheap and never throw.
 */
import type { NodeBinProcess } from "../container/compose.ts";
import type { PingReply } from "../wire/control.ts";

/** One node of this process and its queue, now. */
export interface NodeSample {
  id: string;
  component: string;
  queued: number;
  capacity: number;
  /** Age of the oldest queued message (ms); 0 when the queue is empty. */
  queueWaitMs: number;
  /** Messages refused without running the handler (not serving, queue full, refused by a link), since start. */
  rejected: number;
}

/** A process as its /metrics shows it, whatever its role. */
export interface ProcessView {
  nodes(): NodeSample[];
  /** What its transport dropped or refused since start, by reason (NodeBinProcess.refused(): Ping's `refused`). */
  refused(): Record<string, number>;
  /** Its membership table: the nodes in it (its own and those it knows of) and the distinct hosts they run on. */
  membership(): { nodes: number; hosts: number };
  /** Its host agent's counters (leases, hosts, gossip bytes and messages) while it is the agent; {} otherwise. */
  agent(): Record<string, number>;
}

/** One child of a governor, with its last pong. */
export interface ChildSample {
  component: string;
  pid: number;
  /** starting | holding | ready | draining (the status report's phase). */
  phase: string;
  /** Its last Ping reply (absent before its first pong). */
  stats?: PingReply;
}

/** One component of a governor's components directory. */
export interface ComponentSample {
  name: string;
  /** Nodes it wants now. */
  desired: number;
  /** Children restarted (crashes, zombies replaced) since the governor started. */
  restarts: number;
  /** Children found silent past zombieAfterMs since the governor started. */
  zombies: number;
}

/** A governor's provider loop (governor/provider.ts): what it launched and released, and what its guard rails refused. */
export interface ProviderSample {
  /** Launched hosts alive now. */
  hosts: number;
  /** Capacity requests that reached it with no room anywhere in reach. */
  unmet: number;
  /** Launches by outcome: started, succeeded, failed. */
  launches: Record<string, number>;
  /** Releases by outcome: started, succeeded, failed, gone (left the gossip: forgotten). */
  releases: Record<string, number>;
  /** Decisions a guard rail refused, by action (launch, release) and reason (in-flight, max-hosts, cooldown, ...). */
  skipped: { action: string; reason: string; count: number }[];
}

/** A governor as its /metrics shows it, on top of its process's view: its host. */
export interface GovernorView {
  /** The host's process limit and the slots in use. */
  capacity(): { capacity: number; used: number };
  components(): ComponentSample[];
  children(): ChildSample[];
  /** Its provider loop, when a provider plugin runs (else undefined or absent). */
  provider?(): ProviderSample | undefined;
}

/** The view of one of the shared composition's processes (dev, container, governor), read live. */
export function processView(proc: NodeBinProcess): ProcessView {
  return {
    nodes: () =>
      proc.container.localNodes().map((node) => {
        const s = node.getStats();
        return { id: node.id, component: node.component.name, queued: s.queued, capacity: s.capacity, queueWaitMs: s.queueWaitMs, rejected: s.rejected };
      }),
    refused: () => proc.refused(),
    membership: () => {
      const entries = proc.container.table.entries();
      return { nodes: entries.length, hosts: new Set(entries.map((e) => e.host)).size };
    },
    agent: () => proc.host?.stats() ?? {},
  };
}
