/**
 * The narrow interfaces through which the governor's modules (supervisor,
 * roll, elastic, api) reach the rest of the process: control calls to a
 * child, one-way control messages, serving a control method, the host
 * agent, the membership table, and processes. governor.ts builds the real
 * ones from its Container, listeners and HostAgent; tests pass fakes. No
 * module holds a Container, a listener or the agent itself.
 */
import type { Tiers } from "../membership/capacity.ts";
import type { CapacityRequest, ControlMethod, HostCapacity, HostSummary, PingReply } from "../wire/control.ts";
import type { SpawnSpec } from "./children.ts";

/**
 * A control-plane request to the process at `via` (a child's ipc endpoint),
 * answered within `timeoutMs`. Rejects with a NodeBinError (DEADLINE_EXCEEDED,
 * UNAVAILABLE, or the error the process answered with).
 */
export type ControlCall = <Req, Res>(method: ControlMethod<Req, Res>, request: Req, via: string, timeoutMs: number) => Promise<Res>;

/** Sends a one-way control request to the process of node `to` (through the table). Throws when it cannot be sent. */
export type SendControl = <Req>(method: ControlMethod<Req, void>, request: Req, to: string) => void;

/**
 * Serves one control method at the governor's socket (replacing any handler
 * it had). The handler gets the decoded request and returns (or resolves
 * with) the reply, or throws a NodeBinError.
 */
export type ServeControl = <Req, Res>(method: ControlMethod<Req, Res>, handler: (request: Req) => Res | Promise<Res>) => void;

/** What the supervisor needs of a spawned process (a ChildProcess is one). */
export interface ProcessHandle {
  readonly pid?: number | undefined;
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
  on(event: "exit", listener: (code: number | null, signal: NodeJS.Signals | null) => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
}

/** The supervisor's side effects: the real ones are given by governor.ts. */
export interface SupervisorPorts {
  /** Control calls to a child (drain, pull). */
  call: ControlCall;
  /** Pings a child at its endpoint: its liveness and load. Rejects when it does not answer within `timeoutMs`. */
  ping(via: string, timeoutMs: number): Promise<PingReply>;
  /** Starts a child process (children.ts spawnChild). Throws when it cannot. */
  spawn(spec: SpawnSpec): ProcessHandle;
  /** Sends a signal to a pid (process.kill). Throws when the process is gone. */
  kill(pid: number, signal: NodeJS.Signals): void;
  /** True while a process with this pid exists. */
  pidAlive(pid: number): boolean;
  /** Ends a container's lease at the host agent: its nodes leave the table now. */
  evict(container: string, why: string): void;
}

/**
 * The rest of the network as the elastic loop sees it: the hosts its table
 * knows with their capacity (membership/capacity.ts), the way to hand a
 * capacity request on, and this host's own record.
 */
export interface CapacityPeers {
  /** This host's network ("" = default). */
  readonly network: string;
  /** The hosts this process knows with what they can take, its own among them (the table's host summaries). */
  hosts(): readonly HostSummary[];
  /** Sends a one-way control request to the process at a network endpoint (another host's agent, a gateway). Throws when it cannot be sent. */
  sendVia<Req>(method: ControlMethod<Req, void>, request: Req, via: string): void;
  /** Puts what this host can take into its gossip record (and its table's host summary). */
  announce(capacity: HostCapacity): void;
}

/** Capacity requests nowhere in reach had room for: the signal the provider plugin acts on (provider.ts). */
export interface UnmetDemand {
  unmet(request: CapacityRequest, now: number): void;
}

/** What only the process wiring knows, for the status report. */
export interface StatusSources {
  socket: string;
  /** When the governor started (epoch ms). */
  startedAt: number;
  /** The discovery endpoints bound (empty until bound). */
  discovery(): readonly string[];
  /** The host agent's leases and gossip counters. */
  agent(): Record<string, unknown>;
  plugins(): readonly { kind: string; name: string; source: string }[];
  /** The plugins' control-plane services: their schemas (protobufjs JSON), for `node-bin governor call`. */
  pluginSchemas(): { plugin: string; json: string }[];
  /** What the governor's own process dropped or refused, by reason (NodeBinProcess.refused). */
  refused(): Record<string, number>;
  /** Capacity per tier from the host summaries its agent holds (membership/capacity.ts tiersOf). */
  tiers?(): Tiers;
  /** The provider loop's status (governor/provider.ts), when a provider plugin runs. */
  provider?(): Record<string, unknown> | undefined;
  /** The gateways it runs (governor/gateways.ts), when governor.json names any. */
  gateways?(): readonly unknown[];
}

/** Component code this host lacks, fetched from a host that has it (src/governor/code-share.ts). */
export interface CodeFetch {
  /**
   * Fetches component `name` whose content hash (scan.ts hashComponent) is `hash` from one of
   * `sources` (hosts whose gossip says they have it: their discovery endpoints, tcp), verifies
   * and installs it, and makes the governor know it as a component it may run (min 0).
   * Resolves once it is in the governor's state.components; at most one fetch per name+hash in
   * flight (a second call joins the first). Rejects with a NodeBinError: FAILED_PRECONDITION
   * without a cluster key (code never travels unsealed), NOT_FOUND when no source has it,
   * DATA_LOSS when what came does not hash to `hash`, UNAUTHENTICATED when it does not open,
   * RESOURCE_EXHAUSTED past the size bounds, UNAVAILABLE / DEADLINE_EXCEEDED from the sources.
   */
  fetch(name: string, hash: string, sources: readonly { host: string; endpoint: string }[]): Promise<void>;
}
