/**
 * A component node: one running instance of a component. It owns one inbound
 * FIFO queue and handles exactly one message at a time, in arrival order,
 * awaiting a handler's promise before it takes the next message. Responses to
 * its own nested calls bypass the queue (the handler waiting for them holds
 * the node). Every request gets a reply or a coded error, except ASYNC ones,
 * whose acceptance is acknowledged and whose failures are logged.
 *
 * Inbound interceptors wrap each message from its deadline check to its
 * encoded reply; the per-message logging (ASYNC failures included) is one of
 * them, installed by default. With none, a message costs what it did before
 * there were any.
 *
 * STREAM requests: the handler returns an AsyncIterable (an async generator),
 * pulled one item at a time and only while the consumer's credit lasts (the
 * opening window of the request, then CREDIT frames); each item is checked
 * against the method's item type and sent back on the request's connection
 * as a STREAM_ITEM, and the stream ends with a STREAM_END (with an error, or
 * without). A stream holds its node from its first pull to its end: the
 * queue waits behind it, as behind any handler. It ends early when its
 * consumer cancels (CANCEL, acknowledged at once with a STREAM_END),
 * grants no credit for limits.streamIdleMs, when the call's deadline
 * passes, when the connection it came on closes, or when the node drains;
 * the generator is then returned (its `finally` blocks run) before the
 * next message is taken. CREDIT and CANCEL frames are matched to a stream by
 * the connection they came on, their `from` and their id: a peer can touch
 * only its own streams, and frames for no open stream are counted and dropped.
 */
import type { PeerKind } from "../wire/control.ts";
import { Kind, Plane, encodeEnvelope, encodeResponse, envelope, type Envelope } from "../wire/envelope.ts";
import { NodeBinError, UNHANDLED_DETAIL } from "../wire/errors.ts";
import { decodeMessage, encodeMessage } from "../wire/message.ts";
import { Mode, modeName, type MethodSchema } from "../wire/schema.ts";
import type { BroadcastOptions, Broadcaster, CallOptions, Caller, CallStream, Context, Handler, Logger, NodeContext, StreamOptions } from "./context.ts";
import { Fifo } from "./fifo.ts";
import { chainFor, composeInterceptors, loggingInterceptor, type InboundCall, type InboundInterceptor } from "./interceptor.ts";
import type { Component } from "./loader.ts";

/** Sends an encoded envelope to endpoint `to`. Throws NodeBinError when it cannot. */
export type Outbox = (to: string, frame: Uint8Array) => void;

export interface NodeOptions {
  id: string;
  component: Component;
  /** Makes this node's nested calls; its id must be the node's id so answers come back here. */
  caller: Caller;
  outbox: Outbox;
  /** Sends this node's broadcasts (ctx.broadcast); without it they are refused (UNAVAILABLE). */
  broadcast?: Broadcaster;
  log: Logger;
  /** Queue limit; default the manifest's limits.queue. */
  queueLimit?: number;
  /**
   * Start held: messages are accepted and queued but not handled until
   * resume() (or importState on a hand-over). A rolling deploy starts the new
   * node held, so nothing runs before its predecessor's state arrives.
   */
  hold?: boolean;
  /**
   * Links around every request message this node handles, the first
   * outermost (see interceptor.ts): they run when the message's turn comes,
   * around its deadline check, decoding, handler and reply encoding. A
   * refusal is answered to the caller with its code (an ASYNC message's is
   * counted and seen by the links outside it) and no handler runs; the node
   * goes on to its next message. Default [loggingInterceptor(log)]; a list
   * given replaces it (include loggingInterceptor to keep that logging);
   * [] is none at all, at no cost.
   */
  interceptors?: readonly InboundInterceptor[];
}

export interface NodeStats {
  queued: number;
  capacity: number;
  handled: number;
  failed: number;
  /** Refused without running the handler: at arrival (node not serving, queue full, no such method), or by an inbound interceptor. */
  rejected: number;
  /** Messages that arrived but could not be answered (no route back, malformed). */
  dropped: number;
  /** Age of the oldest queued message (ms); 0 when the queue is empty. */
  queueWaitMs: number;
  /** STREAM calls open now: the one running and those queued. */
  streams: number;
  /** STREAM requests refused for a connection past MAX_STREAMS_PER_CONNECTION (also in `rejected`). */
  streamsRefused: number;
  /** CREDIT and CANCEL frames that matched no open stream of their connection (late, or forged): dropped. */
  streamFramesDropped: number;
  /** Time since the node last took or finished a message (ms). */
  idleMs: number;
  phase: "starting" | "holding" | "serving" | "draining" | "closed";
}

interface Pending {
  env: Envelope;
  method: MethodSchema;
  handler: Handler;
  deadline: number;
  /** When it was queued (epoch ms). */
  arrived: number;
  /** Back on the connection the request came in on (see receive()). */
  replyTo: ReplyPath | undefined;
  /** The kind of peer it came from (Origin.kind), and its connection (Origin.via). */
  peerKind: PeerKind;
  peerVia: string | undefined;
  /** A STREAM request's state, from its arrival on. */
  stream?: ProducerStream;
}

/** Most items a consumer may have granted and not yet received: a larger grant is clamped to it. Bounds what one stream puts in flight. */
export const MAX_WINDOW = 4096;
/** STREAM calls one connection may have open (running or queued) at one node; past it, RESOURCE_EXHAUSTED. */
export const MAX_STREAMS_PER_CONNECTION = 64;
/** The connection of frames from this very process (Origin.connection undefined). */
const LOCAL_CONNECTION = "local";

/** One STREAM call at its producer, from its arrival to its end. */
interface ProducerStream {
  readonly key: string;
  readonly connection: string;
  readonly env: Envelope;
  readonly replyTo: ReplyPath | undefined;
  /** Items the consumer takes before it must grant more. */
  credit: number;
  /** Items sent so far. */
  sent: number;
  /** Its end, once decided: null for a normal end, else the error it ended with. */
  outcome: NodeBinError | null | undefined;
  /** Whether the handler was called (a stream ended before that never ran: its refusal is unhandled). */
  started: boolean;
  /** Wakes the stream waiting for credit (or to see its end). */
  wake: (() => void) | undefined;
  idleTimer: ReturnType<typeof setTimeout> | undefined;
  deadlineTimer: ReturnType<typeof setTimeout> | undefined;
}

/** Where a stream's CREDIT and CANCEL frames find it: its connection, its id, and the `from` its request claimed (last: it may hold anything). */
function streamKey(connection: string, id: number, from: string): string {
  return `${connection}\u0000${id}\u0000${from}`;
}

/** setTimeout's ceiling: a longer wait would fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * Sends a frame back on the connection a request came in on. Given by the
 * transport that carried the request; absent for in-process requests, whose
 * answers go through the outbox to their `from`.
 */
export type ReplyPath = (frame: Uint8Array) => void;

/**
 * Where an envelope came from, as the transport knows it (transport Peer
 * satisfies it): the way back to its connection, the outbound link an
 * answer came back on, and the kind of peer (default "local": this process).
 */
export interface Origin {
  readonly reply?: ReplyPath;
  readonly link?: string;
  readonly kind?: PeerKind;
  /** The connection, as logs name the peer (transport Peer.via). */
  readonly via?: string;
  /** The connection itself, a key unique in the process (transport Peer.connection): what a peer's streams are tied to. */
  readonly connection?: string;
}

type NodeStatus = "new" | "serving" | "draining" | "closed";

// A burst of synchronous handlers yields to the event loop after this many, so
// that I/O and timers of the same process keep running.
const YIELD_EVERY = 256;

export class ComponentNode {
  readonly id: string;
  readonly component: Component;
  private readonly caller: Caller;
  private readonly outbox: Outbox;
  private readonly broadcaster: Broadcaster | undefined;
  private readonly log: Logger;
  private readonly interceptors: readonly InboundInterceptor[];
  private readonly chains: readonly InboundInterceptor[][];
  private readonly queue = new Fifo<Pending>();
  private readonly capacity: number;
  private status: NodeStatus = "new";
  private running = false;
  /**
   * The drain is scheduled but has not taken the head of the queue yet: that
   * message is about to be handled, not waiting, and does not count against
   * the queue limit (several envelopes of one ZeroMQ message arrive before it starts).
   */
  private starting = false;
  private idle: (() => void) | undefined;
  /** What whenIdle() hands out while the node finishes its queue (one promise for every waiter). */
  private idling: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  /** suspend() finished: the node waits, state intact, for close() or reopen(). */
  private suspended = false;
  private readonly nodeContext: NodeContext;
  private readonly stats = { handled: 0, failed: 0, rejected: 0, dropped: 0, streamsRefused: 0, streamFramesDropped: 0 };
  /** Open STREAM calls by streamKey, and by connection (for the per-connection bound and connectionClosed). */
  private readonly streams = new Map<string, ProducerStream>();
  private readonly streamsOf = new Map<string, Set<ProducerStream>>();
  /** Stream timers running (deadline, idle): for tests that check nothing outlives a stream. */
  private streamTimers = 0;
  private held: boolean;
  private lastActivity = Date.now();
  /** The cross-message environment of this node (ctx.state). */
  state: Record<string, unknown> = {};

  constructor(options: NodeOptions) {
    this.id = options.id;
    this.component = options.component;
    this.caller = options.caller;
    this.outbox = options.outbox;
    this.broadcaster = options.broadcast;
    this.log = options.log;
    this.interceptors = options.interceptors ? [...options.interceptors] : [loggingInterceptor(options.log)];
    // One chain per mode, built once: a mode no link wants takes the plain path.
    this.chains = [Mode.SYNC, Mode.ASYNC, Mode.STREAM, Mode.BROADCAST].map((mode) => chainFor(this.interceptors, mode));
    this.capacity = options.queueLimit ?? options.component.manifest.limits.queue;
    this.nodeContext = new LifecycleContext(this);
    this.held = options.hold ?? false;
  }

  /** Runs the component's init hook, then serves. Throws what init throws (as INTERNAL). */
  async start(): Promise<void> {
    if (this.status !== "new") throw new NodeBinError("FAILED_PRECONDITION", `node ${this.id} was already started`);
    try {
      await this.component.hooks.init?.(this.nodeContext);
    } catch (err) {
      this.status = "closed";
      throw new NodeBinError("INTERNAL", `${this.component.name}: init failed: ${(err as Error)?.message ?? String(err)}`, { origin: this.id, cause: err });
    }
    this.status = "serving";
  }

  getStats(): NodeStats {
    const now = Date.now();
    const head = this.queue.peek();
    const phase = this.status === "new" ? "starting" : this.status === "serving" && this.held ? "holding" : this.status;
    return {
      queued: this.queue.length,
      capacity: this.capacity,
      ...this.stats,
      queueWaitMs: head ? Math.max(0, now - head.arrived) : 0,
      streams: this.streams.size,
      idleMs: this.running ? 0 : Math.max(0, now - this.lastActivity),
      phase,
    };
  }

  /** Whether the node is held (see NodeOptions.hold). */
  get isHeld(): boolean {
    return this.held;
  }

  /** Lets a held node handle its queue. */
  resume(): void {
    if (!this.held) return;
    this.held = false;
    this.kick();
  }

  private kick(): void {
    if (this.running || this.held || this.queue.length === 0) return;
    this.running = true;
    this.starting = true;
    queueMicrotask(() => void this.drain());
  }

  /**
   * Entry point for every envelope addressed to this node. Never throws.
   * `origin.reply`: the way back to the connection it came in on. Answers go
   * there, never to where the claimed `from` was last seen, so a peer cannot
   * divert another's answers, and two peers claiming one `from` each get
   * their own. `origin.link`: for an answer, the link it came back on.
   */
  receive(env: Envelope, origin?: Origin): void {
    if (env.kind === Kind.RESPONSE || env.kind === Kind.STREAM_ITEM || env.kind === Kind.STREAM_END) {
      // Answers to this node's own calls and streams.
      this.caller.handleResponse(env, origin?.link);
      return;
    }
    if (env.kind === Kind.CREDIT || env.kind === Kind.CANCEL) {
      this.streamControl(env, origin?.connection ?? LOCAL_CONNECTION);
      return;
    }
    const replyTo = origin?.reply;
    if (env.kind !== Kind.REQUEST) {
      this.stats.dropped++;
      return;
    }
    const now = Date.now();
    const connection = origin?.connection ?? LOCAL_CONNECTION;
    const error = this.admit(env, connection);
    if (error) {
      this.stats.rejected++;
      this.reply(env, undefined, error, replyTo);
      return;
    }
    const method = this.component.schema.methods.get(env.method)!;
    const pending: Pending = { env, method, handler: this.component.handlers.get(env.method)!, deadline: env.deadlineMs > 0 ? now + env.deadlineMs : Infinity, arrived: now, replyTo, peerKind: origin?.kind ?? "local", peerVia: origin?.via };
    if (env.mode === Mode.STREAM) pending.stream = this.openStream(env, connection, replyTo);
    this.queue.push(pending);
    this.lastActivity = now;
    if (env.mode === Mode.ASYNC) this.reply(env, undefined, undefined, replyTo); // acceptance
    if (!this.running && !this.held) {
      this.running = true;
      this.starting = true;
      queueMicrotask(() => void this.drain());
    }
  }

  /**
   * Takes one BROADCAST message from the process's broadcast subscriber
   * (container/broadcast.ts): queued like an ASYNC message and handled in
   * its turn, through the interceptors, but answered never, not even a
   * refusal: that is returned (not serving, queue full, no such method),
   * for the process to count. Never throws.
   */
  receiveBroadcast(env: Envelope, origin?: Origin): NodeBinError | undefined {
    if (env.kind !== Kind.REQUEST || env.mode !== Mode.BROADCAST) return this.error("INVALID_ARGUMENT", `${env.method}: not a BROADCAST request`);
    const error = this.admit(env, LOCAL_CONNECTION, true);
    if (error) {
      this.stats.rejected++;
      return error;
    }
    const now = Date.now();
    this.queue.push({ env, method: this.component.schema.methods.get(env.method)!, handler: this.component.handlers.get(env.method)!, deadline: env.deadlineMs > 0 ? now + env.deadlineMs : Infinity, arrived: now, replyTo: undefined, peerKind: origin?.kind ?? "local", peerVia: origin?.via });
    this.lastActivity = now;
    this.kick();
    return undefined;
  }

  /** Why a request cannot be queued, or undefined when it can (`broadcast`: it came from the process's broadcast subscriber). */
  private admit(env: Envelope, connection: string, broadcast = false): NodeBinError | undefined {
    if (this.status !== "serving") return this.error("UNAVAILABLE", `node ${this.id} is ${this.status === "new" ? "starting" : "shutting down"}`, { [UNHANDLED_DETAIL]: "true" });
    if (env.plane !== Plane.APPLICATION) return this.error("UNIMPLEMENTED", `node ${this.id} serves no control method ${env.method}`);
    const method = this.component.schema.methods.get(env.method);
    if (!method || !this.component.handlers.has(env.method)) {
      return this.error("NOT_FOUND", `node ${this.id} (${this.component.name}) does not serve ${env.method}`, { method: env.method });
    }
    if (env.mode !== method.mode) {
      return this.error("INVALID_ARGUMENT", `${env.method} is ${modeName(method.mode)}, but was called as ${modeName(env.mode)}`, { method: env.method, mode: modeName(method.mode) });
    }
    // A broadcast reaches a node through its process's subscriber (receiveBroadcast), never point to point.
    if (method.mode === Mode.BROADCAST && !broadcast) {
      return this.error("INVALID_ARGUMENT", `${env.method} is BROADCAST: broadcast it (ctx.broadcast, client.broadcast, \`node-bin client broadcast\`); nodes take broadcasts from their host's relay, not point to point`, { method: env.method, mode: "BROADCAST" });
    }
    if (method.mode !== Mode.SYNC && method.mode !== Mode.ASYNC && method.mode !== Mode.STREAM && method.mode !== Mode.BROADCAST) {
      return this.error("UNIMPLEMENTED", `${env.method} is ${modeName(method.mode)}; this version of node-bin serves SYNC and ASYNC methods only`, { method: env.method });
    }
    if (this.queue.length - (this.starting ? 1 : 0) >= this.capacity) {
      return this.error("RESOURCE_EXHAUSTED", `node ${this.id} queue is full (${this.capacity} messages)`, { queued: String(this.queue.length), capacity: String(this.capacity), [UNHANDLED_DETAIL]: "true" });
    }
    if (method.mode === Mode.STREAM) {
      if (this.streams.has(streamKey(connection, env.id, env.from))) {
        return this.error("ALREADY_EXISTS", `${env.method}: stream id ${env.id} of ${JSON.stringify(env.from)} is already open on this connection`, { method: env.method });
      }
      if ((this.streamsOf.get(connection)?.size ?? 0) >= MAX_STREAMS_PER_CONNECTION) {
        this.stats.streamsRefused++;
        return this.error("RESOURCE_EXHAUSTED", `node ${this.id}: ${MAX_STREAMS_PER_CONNECTION} streams are open on this connection already`, { limit: "streamsPerConnection", [UNHANDLED_DETAIL]: "true" });
      }
    }
    return undefined;
  }

  private async drain(): Promise<void> {
    this.starting = false;
    let sinceYield = 0;
    for (let item = this.queue.shift(); item; item = this.queue.shift()) {
      const chain = this.chains[item.env.mode];
      const pending = item.stream ? this.handleStream(item, item.stream, chain) : chain && chain.length > 0 ? this.handleIntercepted(item, chain) : this.handle(item);
      if (pending) await pending;
      // A promise that settles in microtasks (an async handler or link that
      // awaits nothing) yields no more than a synchronous handler: count both.
      if (++sinceYield >= YIELD_EVERY) {
        sinceYield = 0;
        await new Promise<void>((r) => setImmediate(r));
      }
    }
    this.running = false;
    this.lastActivity = Date.now();
    this.idle?.();
  }

  /** Handles one message without interceptors; returns a promise only when the handler is asynchronous. */
  private handle(item: Pending): Promise<void> | undefined {
    const { env, method } = item;
    if (Date.now() >= item.deadline) {
      this.fail(item, this.expired(env), false);
      return undefined;
    }
    let result: unknown;
    try {
      const request = decodeMessage(method.requestType, env.value, `request of ${env.method}`);
      result = item.handler(request, new MessageContext(this, env, item.deadline));
    } catch (err) {
      this.fail(item, err, false);
      return undefined;
    }
    if (result !== null && typeof (result as PromiseLike<unknown>)?.then === "function") {
      return Promise.resolve(result).then(
        (value) => this.succeed(item, value, undefined),
        (err: unknown) => this.fail(item, err, false),
      );
    }
    this.succeed(item, result, undefined);
    return undefined;
  }

  /**
   * Handles one message through the interceptors. The innermost `next` does
   * what handle() does up to the encoded reply, so the links see every
   * outcome the caller will get; it runs at most once per message, and only
   * while the chain has not settled. Never rejects, and resolves only once
   * the handler (if it ran) has ended too: whatever the links do, the message
   * is answered (or, ASYNC, counted) and the node still handles one message
   * at a time.
   */
  private handleIntercepted(item: Pending, chain: readonly InboundInterceptor[]): Promise<void> {
    const { env, method } = item;
    let handling: Promise<unknown> | undefined;
    let running = false;
    let settled = false;
    let replied: unknown;
    let encoded: Uint8Array | undefined;
    const done = (value: unknown): unknown => {
      running = false;
      if (env.mode === Mode.SYNC) {
        encoded = this.encodeReply(item, value);
        replied = value;
      }
      return value;
    };
    const failed = (err: unknown): never => {
      running = false;
      throw this.coded(err);
    };
    const run = (): Promise<unknown> => {
      running = true;
      try {
        if (Date.now() >= item.deadline) throw this.expired(env);
        const request = decodeMessage(method.requestType, env.value, `request of ${env.method}`);
        const result = item.handler(request, new MessageContext(this, env, item.deadline));
        if (result !== null && typeof (result as PromiseLike<unknown>)?.then === "function") return Promise.resolve(result).then(done, failed);
        return Promise.resolve(done(result));
      } catch (err) {
        running = false;
        return Promise.reject(this.coded(err));
      }
    };
    const terminal = (): Promise<unknown> => {
      if (handling || settled) return Promise.reject(this.error("INTERNAL", `${env.method}: an inbound interceptor called next ${settled ? "after its message was answered" : "more than once"}`));
      handling = run();
      // A link may drop the promise of next(); its failure is the outcome, never an unhandled rejection.
      handling.catch(ignore);
      return handling;
    };
    // A link that answered without awaiting next: the handler still holds the node until it ends.
    const handlerEnded = () => (running ? handling!.then(ignore, ignore) : undefined);
    const call: InboundCall = { method: env.method, mode: env.mode, plane: env.plane, from: env.from, to: this.id, control: env.control, deadline: item.deadline, meta: env.meta, peerKind: item.peerKind, ...(item.peerVia ? { peerVia: item.peerVia } : {}) };
    return composeInterceptors(chain, terminal)(call).then(
      (value) => {
        settled = true;
        // A link may answer in the handler's place (or replace its reply): that value is encoded here.
        this.succeed(item, value, encoded !== undefined && value === replied ? encoded : undefined);
        return handlerEnded();
      },
      (err: unknown) => {
        settled = true;
        this.fail(item, err, handling === undefined);
        return handlerEnded();
      },
    );
  }

  /** Registers a STREAM request that was just admitted (see streamControl). */
  private openStream(env: Envelope, connection: string, replyTo: ReplyPath | undefined): ProducerStream {
    const stream: ProducerStream = {
      key: streamKey(connection, env.id, env.from),
      connection,
      env,
      replyTo,
      credit: Math.min(env.credit, MAX_WINDOW),
      sent: 0,
      outcome: undefined,
      started: false,
      wake: undefined,
      idleTimer: undefined,
      deadlineTimer: undefined,
    };
    this.streams.set(stream.key, stream);
    let of = this.streamsOf.get(connection);
    if (!of) this.streamsOf.set(connection, (of = new Set()));
    of.add(stream);
    return stream;
  }

  /**
   * A consumer's CREDIT or CANCEL. Found by the connection it came on, its
   * id and its `from`, so a frame can reach only a stream its own connection
   * opened; one that matches none (the stream ended, or it was never there)
   * is counted and dropped. A CANCEL is acknowledged at once with a
   * STREAM_END (CANCELLED), so the consumer knows its CANCEL arrived before it
   * lets its connection go; the generator is returned when its current pull
   * (if any) ends.
   */
  private streamControl(env: Envelope, connection: string): void {
    const stream = this.streams.get(streamKey(connection, env.id, env.from));
    if (!stream || stream.outcome !== undefined) {
      this.stats.streamFramesDropped++;
      return;
    }
    if (env.kind === Kind.CANCEL) {
      this.endStream(stream, this.error("CANCELLED", `${env.method}: cancelled by the consumer after ${stream.sent} item(s)`), true);
      return;
    }
    stream.credit = Math.min(stream.credit + env.credit, MAX_WINDOW);
    if (stream.credit > 0) stream.wake?.();
  }

  /**
   * Ends a stream (once): `error` null is its normal end. `tell`: the
   * consumer gets a STREAM_END saying so (not when its connection is gone).
   * A stream that is waiting (for credit, or for its turn) sees its end at
   * once; one whose generator is computing an item, when that pull ends.
   */
  private endStream(stream: ProducerStream, error: NodeBinError | null, tell: boolean): void {
    if (stream.outcome !== undefined) return;
    stream.outcome = error;
    this.clearStreamTimers(stream);
    if (tell) this.sendStreamFrame(stream, Kind.STREAM_END, undefined, error ?? undefined);
    stream.wake?.();
  }

  private clearStreamTimers(stream: ProducerStream): void {
    if (stream.idleTimer !== undefined) {
      clearTimeout(stream.idleTimer);
      stream.idleTimer = undefined;
      this.streamTimers--;
    }
    if (stream.deadlineTimer !== undefined) {
      clearTimeout(stream.deadlineTimer);
      stream.deadlineTimer = undefined;
      this.streamTimers--;
    }
  }

  /** Sends a STREAM_ITEM or STREAM_END of `stream` back on its connection. Returns false (and ends the stream, untold) when it cannot. */
  private sendStreamFrame(stream: ProducerStream, kind: Kind, value: Uint8Array | undefined, error: NodeBinError | undefined): boolean {
    const { env } = stream;
    try {
      const frame = encodeEnvelope(
        envelope({ id: env.id, plane: env.plane, mode: Mode.STREAM, kind, from: this.id, to: env.from, method: env.method, state: env.state, ...(value ? { value } : {}), ...(error ? { error: error.toWire() } : {}) }),
      );
      if (stream.replyTo) stream.replyTo(frame);
      else this.outbox(env.from, frame);
      return true;
    } catch (err) {
      this.stats.dropped++;
      const e = NodeBinError.from(err, "UNAVAILABLE");
      this.log.debug(`cannot send ${kind === Kind.STREAM_ITEM ? "an item" : "the end"} of ${env.method} to ${env.from}: ${e}`);
      if (stream.outcome === undefined) {
        stream.outcome = e;
        this.clearStreamTimers(stream);
      }
      return false;
    }
  }

  /** Takes a stream out of the tables (it ended and its generator was returned). */
  private releaseStream(stream: ProducerStream): void {
    this.clearStreamTimers(stream);
    stream.wake = undefined;
    this.streams.delete(stream.key);
    const of = this.streamsOf.get(stream.connection);
    of?.delete(stream);
    if (of?.size === 0) this.streamsOf.delete(stream.connection);
  }

  /**
   * The connection `connection` (transport Peer.connection) closed: its
   * streams end, untold (nobody is there to hear), and their generators are
   * returned. What ZmqOptions.onConnectionClosed and a connector's lost
   * connection lead to.
   */
  connectionClosed(connection: string): void {
    const of = this.streamsOf.get(connection);
    if (!of) return;
    for (const stream of [...of]) this.endStream(stream, this.error("UNAVAILABLE", `${stream.env.method}: the consumer's connection closed`), false);
  }

  /** Ends every open stream: the node stops serving (a drain, a hand-over). Those not started are refused as unhandled, so their consumers re-route them. */
  private endStreams(): void {
    for (const stream of [...this.streams.values()]) {
      const unhandled: Record<string, string> = stream.started ? {} : { [UNHANDLED_DETAIL]: "true" };
      this.endStream(stream, this.error("UNAVAILABLE", `node ${this.id} stopped serving ${stream.started ? `mid-stream, after ${stream.sent} item(s)` : "before the stream started"}`, unhandled), true);
    }
  }

  /** Stream state held now, for tests: nothing of a stream may outlive it. */
  get streamResources(): { streams: number; connections: number; timers: number } {
    return { streams: this.streams.size, connections: this.streamsOf.size, timers: this.streamTimers };
  }

  /**
   * Handles a STREAM request, through the interceptors when its mode has
   * any: they see the stream as one call, which resolves at its normal end
   * and rejects with the error it ended with. Never rejects; resolves once
   * the generator was returned.
   */
  private handleStream(item: Pending, stream: ProducerStream, chain: readonly InboundInterceptor[] | undefined): Promise<void> {
    if (!chain || chain.length === 0) return this.runStream(item, stream).then(ignore);
    let running: Promise<NodeBinError | null> | undefined;
    const terminal = (): Promise<unknown> => {
      if (running) return Promise.reject(this.error("INTERNAL", `${item.env.method}: an inbound interceptor called next more than once`));
      running = this.runStream(item, stream);
      const outcome = running.then((error) => {
        if (error) throw error;
        return undefined;
      });
      outcome.catch(ignore);
      return outcome;
    };
    const { env } = item;
    const call: InboundCall = { method: env.method, mode: env.mode, plane: env.plane, from: env.from, to: this.id, control: env.control, deadline: item.deadline, meta: env.meta, peerKind: item.peerKind, ...(item.peerVia ? { peerVia: item.peerVia } : {}) };
    return composeInterceptors(chain, terminal)(call).then(
      () => running?.then(ignore),
      (err: unknown) => {
        if (running) return running.then(ignore);
        // A link refused the stream: no handler ran.
        this.stats.rejected++;
        this.endStream(stream, this.coded(err), true);
        this.releaseStream(stream);
        return undefined;
      },
    );
  }

  /**
   * Runs one stream: calls the handler, then pulls its iterator while the
   * consumer's credit lasts, sending each item (checked against the item
   * type) until the iterator is done, throws, or the stream ends otherwise
   * (see endStream). Returns the generator (its `finally` blocks run) when
   * it stops before its end, and resolves with the stream's outcome (null:
   * normal end); never rejects.
   */
  private async runStream(item: Pending, stream: ProducerStream): Promise<NodeBinError | null> {
    const { env, method } = item;
    let iterator: AsyncIterator<unknown> | Iterator<unknown> | undefined;
    let done = false;
    try {
      if (stream.outcome !== undefined) return stream.outcome; // cancelled, or refused, while queued
      stream.started = true;
      const now = Date.now();
      if (now >= item.deadline) {
        this.endStream(stream, this.expired(env), true);
        return stream.outcome!;
      }
      if (item.deadline !== Infinity) {
        this.streamTimers++;
        stream.deadlineTimer = setTimeout(() => {
          stream.deadlineTimer = undefined;
          this.streamTimers--;
          this.endStream(stream, this.error("DEADLINE_EXCEEDED", `${env.method}: the call's deadline passed after ${stream.sent} item(s) (it covers the whole stream)`, { limit: "deadline", method: env.method }), true);
        }, Math.min(item.deadline - now, MAX_TIMER_MS));
      }
      const request = decodeMessage(method.requestType, env.value, `request of ${env.method}`);
      let result = item.handler(request, new MessageContext(this, env, item.deadline));
      if (result !== null && typeof (result as PromiseLike<unknown>)?.then === "function") result = await result;
      iterator = iteratorOf(result, env.method);
      for (;;) {
        if (stream.outcome !== undefined) break;
        if (stream.credit <= 0) {
          await this.creditOrEnd(stream);
          continue;
        }
        const step = await iterator.next();
        if (step.done) done = true;
        if (stream.outcome !== undefined) break;
        if (step.done) {
          this.endStream(stream, null, true);
          break;
        }
        let bytes: Uint8Array;
        try {
          bytes = encodeMessage(method.responseType, step.value, `item ${stream.sent + 1} of ${env.method}`);
        } catch (err) {
          // The handler broke its own contract: INTERNAL, naming the field.
          const e = NodeBinError.from(err);
          this.endStream(stream, this.error("INTERNAL", `handler yielded an invalid ${e.message}`, e.details), true);
          break;
        }
        if (!this.sendStreamFrame(stream, Kind.STREAM_ITEM, bytes, undefined)) break;
        stream.credit--;
        stream.sent++;
      }
    } catch (err) {
      // The handler or its generator threw (a generator that threw is done), or returned no iterable.
      done = true;
      this.endStream(stream, this.coded(err), true);
    } finally {
      if (iterator && !done && typeof iterator.return === "function") {
        try {
          await iterator.return(undefined);
        } catch (err) {
          this.log.warn(`${env.method}: the generator threw while being returned: ${(err as Error)?.message ?? String(err)}`);
        }
      }
      this.releaseStream(stream);
      if (stream.started) {
        if (stream.outcome === null || stream.outcome?.code === "CANCELLED") this.stats.handled++;
        else this.stats.failed++;
      }
    }
    return stream.outcome ?? null;
  }

  /** Resolves when `stream` has credit again or has ended; past limits.streamIdleMs without credit it ends (DEADLINE_EXCEEDED). */
  private creditOrEnd(stream: ProducerStream): Promise<void> {
    return new Promise<void>((resolve) => {
      const idleMs = this.component.manifest.limits.streamIdleMs ?? 30_000;
      this.streamTimers++;
      stream.idleTimer = setTimeout(() => {
        stream.idleTimer = undefined;
        this.streamTimers--;
        this.endStream(
          stream,
          this.error("DEADLINE_EXCEEDED", `${stream.env.method}: the consumer granted no credit for ${idleMs} ms (limits.streamIdleMs of ${this.component.name}) after ${stream.sent} item(s)`, { limit: "streamIdleMs", method: stream.env.method }),
          true,
        );
      }, idleMs);
      stream.wake = () => {
        stream.wake = undefined;
        if (stream.idleTimer !== undefined) {
          clearTimeout(stream.idleTimer);
          stream.idleTimer = undefined;
          this.streamTimers--;
        }
        resolve();
      };
    });
  }

  /** Answers a message whose handler (or a link in its place) gave `value`; `encoded`: its reply, already encoded. */
  private succeed(item: Pending, value: unknown, encoded: Uint8Array | undefined): void {
    if (item.env.mode === Mode.ASYNC || item.env.mode === Mode.BROADCAST) {
      this.stats.handled++;
      return;
    }
    let bytes: Uint8Array;
    try {
      bytes = encoded ?? this.encodeReply(item, value);
    } catch (err) {
      this.fail(item, err, false);
      return;
    }
    this.stats.handled++;
    this.reply(item.env, bytes, undefined, item.replyTo);
  }

  /**
   * Answers a message that failed with its coded error (INTERNAL for anything
   * not a NodeBinError). An ASYNC message's failure is only counted: its caller
   * heard of it at acceptance, and logging is the interceptors' business.
   * `refused`: no handler ran (an inbound interceptor said no).
   */
  private fail(item: Pending, thrown: unknown, refused: boolean): void {
    if (refused) this.stats.rejected++;
    else this.stats.failed++;
    if (item.env.mode !== Mode.ASYNC && item.env.mode !== Mode.BROADCAST) this.reply(item.env, undefined, this.coded(thrown), item.replyTo);
  }

  /** The encoded reply; throws INTERNAL when `value` does not fit the response type. */
  private encodeReply(item: Pending, value: unknown): Uint8Array {
    try {
      return encodeMessage(item.method.responseType, value, `reply of ${item.env.method}`);
    } catch (err) {
      // The handler broke its own contract: the caller gets INTERNAL, not INVALID_ARGUMENT.
      const e = NodeBinError.from(err);
      throw this.error("INTERNAL", `handler returned an invalid ${e.message}`, e.details);
    }
  }

  private expired(env: Envelope): NodeBinError {
    return this.error("DEADLINE_EXCEEDED", `${env.method}: deadline passed while queued at ${this.id}`);
  }

  /** `thrown` as a NodeBinError (INTERNAL unless it is one), with this node as its origin when it has none. */
  private coded(thrown: unknown): NodeBinError {
    const error = NodeBinError.from(thrown, "INTERNAL");
    if (!error.origin) error.origin = this.id;
    return error;
  }

  private reply(request: Envelope, value: Uint8Array | undefined, error: NodeBinError | undefined, replyTo: ReplyPath | undefined): void {
    try {
      const frame = encodeResponse(request, this.id, value, error?.toWire());
      if (replyTo) replyTo(frame);
      else this.outbox(request.from, frame);
    } catch (err) {
      this.stats.dropped++;
      this.log.warn(`cannot answer ${request.from} for ${request.method}: ${NodeBinError.from(err)}`);
    }
  }

  private error(code: NodeBinError["code"], message: string, details?: Record<string, string>): NodeBinError {
    return new NodeBinError(code, message, { origin: this.id, ...(details ? { details } : {}) });
  }

  /** The snapshot state transfer hands to another node: exportState(), or state itself. */
  async exportState(): Promise<unknown> {
    return this.component.hooks.exportState ? await this.component.hooks.exportState(this.nodeContext) : this.state;
  }

  /** Takes over a snapshot from another node: importState(), or it becomes the state. */
  async importState(snapshot: unknown): Promise<void> {
    if (this.component.hooks.importState) await this.component.hooks.importState(snapshot, this.nodeContext);
    else this.state = (snapshot ?? {}) as Record<string, unknown>;
  }

  /**
   * Stops taking new messages (they get UNAVAILABLE, marked unhandled so
   * callers re-route), finishes what is queued (a held node is let go first),
   * then runs the shutdown hook. Idempotent.
   */
  close(): Promise<void> {
    return (this.closing ??= this.drainAndShutdown());
  }

  /**
   * close(), and the state snapshot taken after the last queued message and
   * before the shutdown hook: what a rolling deploy hands to the successor.
   */
  async handOff(): Promise<unknown> {
    let snapshot: unknown;
    let failure: unknown;
    this.beforeShutdown ??= async () => {
      try {
        snapshot = await this.exportState();
      } catch (err) {
        failure = err;
      }
    };
    await this.close();
    if (failure !== undefined) throw new NodeBinError("INTERNAL", `${this.component.name}: exportState failed: ${(failure as Error)?.message ?? String(failure)}`, { origin: this.id, cause: failure });
    return snapshot;
  }

  private beforeShutdown: (() => Promise<void>) | undefined;

  /**
   * The first phase of a two-phase hand-over: stops taking new messages
   * (they get UNAVAILABLE, marked unhandled, so callers re-route), finishes
   * what is queued (a held node is let go first), and resolves with the
   * state snapshot, without running the shutdown hook. The node then waits,
   * its state intact, for close() (the successor took the state) or
   * reopen() (it did not). Throws FAILED_PRECONDITION when the node does not
   * serve, and INTERNAL when exportState throws (the node serves again first).
   */
  async suspend(): Promise<unknown> {
    if (this.status !== "serving" || this.closing) throw this.error("FAILED_PRECONDITION", `node ${this.id} is ${this.status === "new" ? "starting" : this.status}: nothing to hand over`);
    this.status = "draining";
    this.endStreams();
    this.resume();
    await this.whenIdle();
    this.suspended = true;
    try {
      return await this.exportState();
    } catch (err) {
      this.reopen();
      throw new NodeBinError("INTERNAL", `${this.component.name}: exportState failed: ${(err as Error)?.message ?? String(err)}`, { origin: this.id, cause: err });
    }
  }

  /** Whether suspend() finished and neither close() nor reopen() came since. */
  get isSuspended(): boolean {
    return this.suspended;
  }

  /**
   * Serves again after suspend(): the hand-over did not happen, so the node
   * takes new messages with its state as it was. Returns false (and does
   * nothing) when the node is not suspended.
   */
  reopen(): boolean {
    if (!this.suspended || this.closing) return false;
    this.suspended = false;
    this.status = "serving";
    this.kick();
    return true;
  }

  /** Resolves once no message is being handled (at once when none is). */
  private whenIdle(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return (this.idling ??= new Promise<void>((resolve) => {
      this.idle = () => {
        this.idling = undefined;
        this.idle = undefined;
        resolve();
      };
    }));
  }

  /**
   * Refuses every queued SYNC request as unhandled (none of them ran: callers
   * re-route them). ASYNC ones stay queued: their senders were told they were
   * taken, so they are still handled.
   */
  private giveBackQueue(): void {
    const kept: Pending[] = [];
    for (let item = this.queue.shift(); item; item = this.queue.shift()) {
      if (item.env.mode !== Mode.SYNC) {
        kept.push(item);
        continue;
      }
      this.stats.rejected++;
      this.reply(item.env, undefined, this.error("UNAVAILABLE", `node ${this.id} stopped before it served (held for a state that did not come)`, { [UNHANDLED_DETAIL]: "true" }), item.replyTo);
    }
    for (const item of kept) this.queue.push(item);
  }

  private async drainAndShutdown(): Promise<void> {
    const wasServing = this.status === "serving" || this.suspended;
    this.suspended = false;
    this.status = "draining";
    // A stream is no queued message to finish: it could hold the drain until its deadline.
    this.endStreams();
    // A held node ran nothing of its queue and would run it without the state it waits for
    // (its hand-over failed, or it is stopped before one): it gives its SYNC requests back.
    if (this.held) this.giveBackQueue();
    this.resume();
    await this.whenIdle();
    this.status = "closed";
    if (!wasServing) return;
    await this.beforeShutdown?.();
    try {
      await this.component.hooks.shutdown?.(this.nodeContext);
    } catch (err) {
      this.log.error(`shutdown hook failed: ${(err as Error)?.message ?? String(err)}`);
    }
  }

  /** @internal nested calls of this node's handlers and hooks. */
  nestedCall(method: string, request: unknown, options: CallOptions | undefined, meta: Readonly<Record<string, string>> | undefined, deadline: number): Promise<unknown> {
    return this.caller.call(method, request, nestedOptions(options, meta, deadline));
  }

  /** @internal */
  nestedSend(method: string, request: unknown, options: CallOptions | undefined, meta: Readonly<Record<string, string>> | undefined, deadline: number): Promise<void> {
    return this.caller.send(method, request, nestedOptions(options, meta, deadline));
  }

  /** @internal */
  nestedStream(method: string, request: unknown, options: StreamOptions | undefined, meta: Readonly<Record<string, string>> | undefined, deadline: number): CallStream {
    return this.caller.stream(method, request, nestedOptions(options, meta, deadline));
  }

  /** @internal */
  nestedBroadcast(method: string, request: unknown, options: BroadcastOptions | undefined, meta: Readonly<Record<string, string>> | undefined): Promise<void> {
    try {
      if (!this.broadcaster) throw this.error("UNAVAILABLE", `node ${this.id} has no way to broadcast here`);
      const merged = meta && options?.meta ? { ...meta, ...options.meta } : (options?.meta ?? meta);
      this.broadcaster(this.id, method, request, merged ? { meta: { ...merged } } : {});
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(NodeBinError.from(err));
    }
  }

  /** @internal */
  get logger(): Logger {
    return this.log;
  }
}

function ignore(): void {}

/**
 * The iterator of what a STREAM handler returned: an AsyncIterable (an async
 * generator), or an Iterable. Throws INTERNAL for anything else.
 */
function iteratorOf(result: unknown, method: string): AsyncIterator<unknown> | Iterator<unknown> {
  const r = result as { [Symbol.asyncIterator]?: () => AsyncIterator<unknown>; [Symbol.iterator]?: () => Iterator<unknown> } | null | undefined;
  if (r !== null && r !== undefined && typeof r[Symbol.asyncIterator] === "function") return r[Symbol.asyncIterator]!();
  // A string is iterable, but no stream of messages.
  if (r !== null && typeof r === "object" && typeof r[Symbol.iterator] === "function") return r[Symbol.iterator]!();
  throw new NodeBinError("INTERNAL", `the handler of STREAM method ${method} returned ${r === null ? "null" : typeof r}, not an AsyncIterable (write it as an async generator: async function* ...)`, { details: { method } });
}

function nestedOptions<O extends CallOptions>(options: O | undefined, meta: Readonly<Record<string, string>> | undefined, deadline: number) {
  const merged = meta && options?.meta ? { ...meta, ...options.meta } : (options?.meta ?? meta);
  return { ...options, ...(merged ? { meta: merged } : {}), ...(deadline !== Infinity ? { deadline } : {}) };
}

/** Context of hooks: no message, no deadline. */
class LifecycleContext implements NodeContext {
  constructor(protected readonly node: ComponentNode) {}
  get nodeId(): string {
    return this.node.id;
  }
  get state(): Record<string, unknown> {
    return this.node.state;
  }
  set state(value: Record<string, unknown>) {
    this.node.state = value;
  }
  get log(): Logger {
    return this.node.logger;
  }
  call<Reply>(method: string, request: unknown, options?: CallOptions): Promise<Reply> {
    return this.node.nestedCall(method, request, options, undefined, Infinity) as Promise<Reply>;
  }
  send(method: string, request: unknown, options?: CallOptions): Promise<void> {
    return this.node.nestedSend(method, request, options, undefined, Infinity);
  }
  stream<Item>(method: string, request: unknown, options?: StreamOptions): CallStream<Item> {
    return this.node.nestedStream(method, request, options, undefined, Infinity) as CallStream<Item>;
  }
  broadcast(method: string, request: unknown, options?: BroadcastOptions): Promise<void> {
    return this.node.nestedBroadcast(method, request, options, undefined);
  }
}

/** Context of one message; cheap to create (one small object per message). */
class MessageContext extends LifecycleContext implements Context {
  constructor(
    node: ComponentNode,
    private readonly env: Envelope,
    readonly deadline: number,
  ) {
    super(node);
  }
  get method(): string {
    return this.env.method;
  }
  get meta(): Readonly<Record<string, string>> {
    return this.env.meta;
  }
  get from(): string {
    return this.env.from;
  }
  override call<Reply>(method: string, request: unknown, options?: CallOptions): Promise<Reply> {
    return this.node.nestedCall(method, request, options, this.env.meta, this.deadline) as Promise<Reply>;
  }
  override send(method: string, request: unknown, options?: CallOptions): Promise<void> {
    return this.node.nestedSend(method, request, options, this.env.meta, this.deadline);
  }
  override stream<Item>(method: string, request: unknown, options?: StreamOptions): CallStream<Item> {
    return this.node.nestedStream(method, request, options, this.env.meta, this.deadline) as CallStream<Item>;
  }
  override broadcast(method: string, request: unknown, options?: BroadcastOptions): Promise<void> {
    return this.node.nestedBroadcast(method, request, options, this.env.meta);
  }
}
