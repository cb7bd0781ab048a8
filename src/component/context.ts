/**
 * What a component author writes against: the handler signature, the context
 * a handler receives, the lifecycle hooks, and the Caller that nested calls go
 * through (implemented by the routing layer and passed in, so this layer
 * never reaches up).
 */
import type { Envelope } from "../wire/envelope.ts";

/** Where a call may be served: this process, this host, this network, or anywhere reachable. */
export type Scope = "process" | "host" | "network" | "any";

export interface CallOptions {
  /** Time allowed for the call, in ms. Default 30 000; inside a handler, never beyond the handler's own deadline. */
  timeoutMs?: number;
  /** Where the call may be served (default "any"). */
  scope?: Scope;
  /** Metadata for the callee, merged over what the calling handler received. */
  meta?: Record<string, string>;
  /**
   * When every node is full (RESOURCE_EXHAUSTED), ask the network for
   * capacity and wait up to this long for room before failing; default 0:
   * fail at once. Never beyond the call's deadline.
   */
  capacityWaitMs?: number;
}

/** The options of a STREAM call. */
export interface StreamOptions extends CallOptions {
  /**
   * Items the producer may send ahead of what this consumer has taken
   * (default 16, at most 4096): the producer's generator is pulled only
   * while it has credit, so a consumer that takes n items has made it
   * compute at most n + window. timeoutMs covers the whole stream.
   */
  window?: number;
}

/**
 * A STREAM call, as its consumer reads it: `for await (const item of
 * stream)`. Nothing is sent before the first next(). Items come in the
 * order the producer yielded them; the loop ends at the producer's normal
 * end and throws the error the stream ended with (after the items sent
 * before it). Leaving the loop (return()) cancels the stream: the producer's
 * generator is returned; return() resolves once the producer acknowledged
 * (or after at most a second).
 */
export interface CallStream<Item = unknown> extends AsyncIterableIterator<Item> {
  /** Items received so far. */
  readonly received: number;
}

/** CallOptions as the runtime passes them on: with an absolute deadline and the full metadata. */
export interface CallerOptions extends StreamOptions {
  /** Absolute deadline (epoch ms) inherited from the calling handler. */
  deadline?: number;
  /** Pass-through state for the callee to echo back. */
  state?: Uint8Array;
}

/** Makes calls from one endpoint (a node or a client); answers come back to its id. */
export interface Caller {
  readonly id: string;
  /** A SYNC call: resolves with the reply, rejects with a NodeBinError. */
  call(method: string, request: unknown, options?: CallerOptions): Promise<unknown>;
  /** An ASYNC call: resolves once the serving node's queue accepted the message. */
  send(method: string, request: unknown, options?: CallerOptions): Promise<void>;
  /** A STREAM call (see CallStream); errors, a wrong mode included, come out of its first next(). */
  stream(method: string, request: unknown, options?: CallerOptions): CallStream;
  /**
   * Hands a RESPONSE, STREAM_ITEM or STREAM_END addressed to this caller to
   * the call or stream waiting for it; unknown ids, and answers on another
   * link than their request left on (`link`, see transport Peer.link), are
   * dropped.
   */
  handleResponse(env: Envelope, link?: string): void;
}

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** What every hook and handler can use. */
export interface NodeContext<State = Record<string, unknown>> {
  /** Id of the node running this code. */
  readonly nodeId: string;
  /** Persists across the messages this node handles; what state transfer moves. Assignable. */
  state: State;
  readonly log: Logger;
  /** Calls a SYNC method anywhere on the network; see CallOptions. */
  call<Reply = any>(method: string, request: unknown, options?: CallOptions): Promise<Reply>;
  /** Sends to an ASYNC method; resolves once a node accepted it. */
  send(method: string, request: unknown, options?: CallOptions): Promise<void>;
  /** Calls a STREAM method: `for await (const item of ctx.stream(...))`; see StreamOptions and CallStream. */
  stream<Item = any>(method: string, request: unknown, options?: StreamOptions): CallStream<Item>;
  /**
   * Broadcasts to a BROADCAST method: one message to every node serving it,
   * on every host (this node too, if it serves it). Fire-and-forget, at most
   * once, no reply: resolves once the message is on its way (queued for the
   * host's relay), rejects with NOT_FOUND, INVALID_ARGUMENT (not a BROADCAST
   * method, or a bad request) or RESOURCE_EXHAUSTED (see README "Broadcast").
   */
  broadcast(method: string, request: unknown, options?: BroadcastOptions): Promise<void>;
}

/** The options of a broadcast. */
export interface BroadcastOptions {
  /** Metadata for the receivers, merged over what the calling handler received. */
  meta?: Record<string, string>;
}

/**
 * Sends a broadcast from endpoint `from` (the process's broadcast sender,
 * passed down to its nodes). Throws as NodeContext.broadcast rejects.
 */
export type Broadcaster = (from: string, method: string, request: unknown, options?: BroadcastOptions) => void;

/** The context of one message. */
export interface Context<State = Record<string, unknown>> extends NodeContext<State> {
  /** Full name of the method being served ("pkg.Service/Method"). */
  readonly method: string;
  /** The caller's metadata; nested calls carry it on. */
  readonly meta: Readonly<Record<string, string>>;
  /** Absolute deadline of this message (epoch ms); Infinity when the caller set none. */
  readonly deadline: number;
  /** Id of the calling endpoint. */
  readonly from: string;
}

export type Handler = (request: any, ctx: Context<any>) => unknown;

/** Optional lifecycle hooks a component module may export. */
export interface Hooks {
  /** Before the node takes its first message. A throw fails the node's start. */
  init?(ctx: NodeContext<any>): unknown;
  /** After the node took its last message. */
  shutdown?(ctx: NodeContext<any>): unknown;
  /** The snapshot of the node's state to hand over (default: ctx.state itself). */
  exportState?(ctx: NodeContext<any>): unknown;
  /** Takes over a snapshot from another node (default: ctx.state = snapshot). */
  importState?(snapshot: unknown, ctx: NodeContext<any>): unknown;
}

export const HOOK_NAMES = ["init", "shutdown", "exportState", "importState"] as const;
