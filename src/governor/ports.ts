/**
 * The narrow interfaces through which the governor's modules (supervisor,
 * roll, elastic, api) reach the rest of the process: control calls to a
 * child, one-way control messages, serving a control method, the host
 * agent, the membership table, and processes. governor.ts builds the real
 * ones from its Container, listeners and HostAgent; tests pass fakes. No
 * module holds a Container, a listener or the agent itself.
 */
import type { ControlMethod, NodeEntry, PingReply } from "../wire/control.ts";
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

/** Where capacity requests the governor cannot serve go on to. */
export interface CapacityPeers {
  /** The network's nodes as this process's table knows them. */
  entries(): readonly Pick<NodeEntry, "id" | "host" | "component">[];
  send: SendControl;
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
}
