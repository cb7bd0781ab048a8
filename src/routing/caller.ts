/**
 * RoutingCaller: makes calls from one endpoint (a node, a client, a process)
 * and matches the answers that come back to it. Every call ends: with the
 * reply, with the callee's coded error, or with DEADLINE_EXCEEDED from a timer
 * of its own when nothing came back in time.
 *
 * A routed call that a node refused before handling it (the error carries
 * details.unhandled = "true") is sent again, so a retry never runs a handler
 * twice: UNAVAILABLE (the node is draining, starting, shutting down) goes to
 * another node; RESOURCE_EXHAUSTED (its queue is full) is retried, nodes
 * with room first, within the call's capacityWaitMs. Retries keep the call's
 * first deadline, and its retry state exists only from the first refusal on.
 *
 * Outbound interceptors wrap each call once, between node selection and the
 * send: retries happen below them (as gRPC's do), so a link sees the call's
 * final outcome. Time is read from the configured Clock only.
 */
import type { Caller, CallerOptions, Scope } from "../component/context.ts";
import { composeInterceptors, type OutboundCall, type OutboundInterceptor } from "../component/interceptor.ts";
import type { NodeEntry } from "../membership/table.ts";
import { systemClock, type Clock, type Timer } from "../platform/clock.ts";
import { Kind, Plane, encodeEnvelope, envelope, type Envelope } from "../wire/envelope.ts";
import { NodeBinError, isUnhandled } from "../wire/errors.ts";
import { decodeMessage, encodeMessage } from "../wire/message.ts";
import { Mode, modeName, type MethodSchema } from "../wire/schema.ts";
import type { Router } from "./router.ts";
import { ConsumerStream, DEFAULT_WINDOW } from "./stream.ts";
import { LOCAL_LINK } from "../transport/transport.ts";

export const DEFAULT_TIMEOUT_MS = 30_000;
// setTimeout's ceiling (a longer timeout would fire at once on the system
// clock), and so the longest timeout a call may have; it also fits
// Envelope.deadline_ms (uint32).
const MAX_TIMEOUT_MS = 2_147_483_647;
/** The control headers of every request a RoutingCaller sends (it sets none): one shared, frozen object. */
const NO_CONTROL: Readonly<Record<string, string>> = Object.freeze({});

/** The most times one routed call is sent while nodes refuse it as UNAVAILABLE (the first send included). */
export const MAX_ATTEMPTS = 16;
/** The largest window a stream may ask for (the producer clamps credit to the same: component/node.ts MAX_WINDOW). */
export const MAX_STREAM_WINDOW = 4096;
/** How long a consumer leaving a stream waits for its producer to acknowledge the CANCEL (never past the deadline). */
const CANCEL_ACK_MS = 1000;
/** The wait after a round in which every candidate refused: doubling from the first to the most, never past the deadline. */
const BACKOFF_FIRST_MS = 20;
const BACKOFF_MAX_MS = 500;

/** Sends an encoded envelope to endpoint `to`; throws NodeBinError when it cannot. */
export interface Sender {
  /**
   * `via`: the network endpoint of the process to send to, when `to` alone
   * does not say. Returns the link the frame left on (transport Peer.link):
   * the answer is accepted only from that link.
   */
  send(to: string, frame: Uint8Array, via?: string): string | void;
}

export interface CallerConfig {
  /** Endpoint id answers come back to. */
  id: string;
  router: Router;
  sender: Sender;
  defaultTimeoutMs?: number;
  /**
   * How long a call for a method no node serves waits for the membership
   * table to change before it fails with NOT_FOUND (default 0: at once). Lets
   * a call made while the network is still assembling find its node.
   */
  settleMs?: number;
  /**
   * The table may be stale: refresh it. Called (not awaited, errors
   * ignored) once per retry round in which every node refused a call,
   * before the caller waits for the table to change. The client library
   * pulls the table again.
   */
  onStale?: () => Promise<void>;
  /**
   * Sends a capacity request for `method` to the process of `node`, which
   * answered RESOURCE_EXHAUSTED to a call that may wait for room
   * (capacityWaitMs). Fire and forget: a throw is ignored.
   */
  requestCapacity?: (node: NodeEntry, method: MethodSchema, scope: Scope) => void;
  /** What deadlines, backoffs and settle waits are timed by (default systemClock); tests pass a ManualClock. */
  clock?: Clock;
  /**
   * Links around every call this caller makes (call, send, callEndpoint),
   * the first outermost; see component/interceptor.ts. A refusal fails the
   * call with its code and nothing is sent. Calls refused before a target
   * is known (closed caller, unknown method, wrong mode, bad timeout or a
   * deadline already passed) never reach them. Default none, at no cost.
   */
  interceptors?: readonly OutboundInterceptor[];
}

/** One call to an explicit endpoint, bypassing node selection (control plane, tests). */
export interface DirectCall {
  method: MethodSchema;
  /** Endpoint id; "" is the receiving process's own control endpoint. */
  to: string;
  /** Network endpoint of the process to send to (needed when `to` is "" and the process is remote). */
  via?: string;
  plane?: Plane;
  request: unknown;
  options?: CallerOptions;
}

/** A STREAM call from its first send to its end. */
interface OpenStream {
  /** The id of its current send (a retry gets a new one). */
  id: number;
  stream: ConsumerStream;
  method: MethodSchema;
  to: string;
  via: string | undefined;
  /** The link the request left on: items are taken from it only, and credit and CANCEL go back on it. */
  link: string | undefined;
  /** The encoded request, kept for retries. */
  value: Uint8Array;
  meta: Record<string, string>;
  options: CallerOptions | undefined;
  deadline: number;
  start: number;
  /** When its current send left (a retry's is later than start). */
  sentAt: number;
  timer: Timer | undefined;
  /** While the consumer waits for the producer to acknowledge its CANCEL. */
  ackTimer: Timer | undefined;
  /** Nodes that refused it in this round, and how many sends it had. */
  tried: Set<string>;
  attempts: number;
  /** When it may ask for capacity again (see capacityRequestEvery). */
  nextCapacityRequest?: number;
}

interface PendingCall {
  resolve(value: unknown): void;
  reject(error: NodeBinError): void;
  method: MethodSchema;
  mode: Mode;
  to: string;
  via: string | undefined;
  /** The link the request left on (Sender.send): its answer must come back on it. */
  link: string | undefined;
  timer: Timer;
  /** For the first send of a routed call (what a retry needs), else undefined: its errors pass straight through. */
  value: Uint8Array | undefined;
  options: CallerOptions | undefined;
  /** When the call was made and its absolute deadline (epoch ms). */
  start: number;
  deadline: number;
  /** Resolve with the answer's encoded value, unread (callEncoded). */
  raw: boolean;
}

export class RoutingCaller implements Caller {
  readonly id: string;
  private readonly router: Router;
  private readonly sender: Sender;
  private readonly defaultTimeoutMs: number;
  private readonly settleMs: number;
  private readonly onStale: (() => Promise<void>) | undefined;
  private readonly requestCapacity: ((node: NodeEntry, method: MethodSchema, scope: Scope) => void) | undefined;
  private readonly clock: Clock;
  private readonly interceptors: readonly OutboundInterceptor[];
  private readonly pending = new Map<number, PendingCall>();
  /** Streams open now, by the id of their current send (ids are shared with `pending`). */
  private readonly streams = new Map<number, OpenStream>();
  /** Calls between sends, after a refusal; and the wake-ups of those waiting, which close() calls. */
  private retrying = 0;
  private readonly waiting = new Set<() => void>();
  private nextId = 1;
  private closed = false;
  /** Answers dropped for coming from another link or endpoint than their call went to (forged, or very confused). */
  foreignAnswers = 0;
  /** STREAM_ITEM and STREAM_END frames for no open stream (late, or forged): dropped. */
  unknownStreamFrames = 0;

  constructor(config: CallerConfig) {
    this.id = config.id;
    this.router = config.router;
    this.sender = config.sender;
    this.defaultTimeoutMs = config.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.settleMs = config.settleMs ?? 0;
    this.onStale = config.onStale;
    this.requestCapacity = config.requestCapacity;
    this.clock = config.clock ?? systemClock;
    this.interceptors = config.interceptors ? [...config.interceptors] : [];
  }

  /** Calls in flight (including those between a refusal and their next send). */
  get inFlight(): number {
    return this.pending.size + this.streams.size + this.retrying;
  }

  call(method: string, request: unknown, options?: CallerOptions): Promise<unknown> {
    return this.routed(Mode.SYNC, method, request, options);
  }

  send(method: string, request: unknown, options?: CallerOptions): Promise<void> {
    return this.routed(Mode.ASYNC, method, request, options) as Promise<void>;
  }

  /**
   * A SYNC or ASYNC call whose request is encoded already (what a gateway
   * relays): routed by method name as call() and send() are (retries,
   * re-routing, the deadline, the capacity wait), but past the outbound
   * interceptors (they take requests as objects), and with no settle wait.
   * Resolves with the answer's value as it came, unread (empty for an ASYNC
   * acceptance); rejects as call() does.
   */
  callEncoded(mode: Mode, method: string, value: Uint8Array, options?: CallerOptions): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new NodeBinError("CANCELLED", `caller ${this.id} is closed`));
    try {
      const route = this.router.route(method);
      const schema = route.method;
      if (schema.mode !== mode || (mode !== Mode.SYNC && mode !== Mode.ASYNC)) throw wrongMode(schema, mode);
      const node = this.router.pick(route, (options?.scope ?? "any") as Scope);
      return this.invoke(schema, mode, node.id, undefined, Plane.APPLICATION, value, options, true, true) as Promise<Uint8Array>;
    } catch (err) {
      return Promise.reject(NodeBinError.from(err));
    }
  }

  private routed(mode: Mode, method: string, request: unknown, options: CallerOptions | undefined, settleUntil?: number): Promise<unknown> {
    if (this.closed) return Promise.reject(new NodeBinError("CANCELLED", `caller ${this.id} is closed`));
    try {
      let route;
      try {
        route = this.router.route(method);
      } catch (err) {
        if (this.settleMs > 0 && (err as NodeBinError).code === "NOT_FOUND") return this.awaitMembership(mode, method, request, options, err as NodeBinError, settleUntil);
        throw err;
      }
      const schema = route.method;
      if (schema.mode !== mode) throw wrongMode(schema, mode);
      if (this.interceptors.length > 0) {
        const node = this.router.pick(route, (options?.scope ?? "any") as Scope);
        return this.intercept(schema, mode, node.id, undefined, Plane.APPLICATION, request, options, true);
      }
      const value = encodeMessage(schema.requestType, request, `request of ${schema.fullName}`);
      const node = this.router.pick(route, (options?.scope ?? "any") as Scope);
      return this.invoke(schema, mode, node.id, undefined, Plane.APPLICATION, value, options, true);
    } catch (err) {
      return Promise.reject(NodeBinError.from(err));
    }
  }

  /**
   * A STREAM call (see CallStream and ConsumerStream): nothing is sent until
   * the first next(). The request goes to a node picked as for any call,
   * carrying the window as its opening credit and the deadline, which covers
   * the whole stream; credit follows as the consumer takes items, and
   * CANCEL when it leaves, both on the link the request left on (so to the
   * very connection the producer serves it on). A refusal before any item
   * that no handler ran (unhandled) is sent to another node, as a call's
   * would be. Outbound interceptors see the stream as one call, from its
   * request to its end.
   */
  stream(method: string, request: unknown, options?: CallerOptions): ConsumerStream {
    return this.openConsumer(method, request, undefined, options);
  }

  /**
   * A STREAM call whose request is encoded already (what a gateway relays),
   * as stream() is but past the outbound interceptors: its items come out
   * as they came, unread.
   */
  streamEncoded(method: string, value: Uint8Array, options?: CallerOptions): ConsumerStream<Uint8Array> {
    return this.openConsumer(method, undefined, value, options) as ConsumerStream<Uint8Array>;
  }

  private openConsumer(method: string, request: unknown, encoded: Uint8Array | undefined, options: CallerOptions | undefined): ConsumerStream {
    const window = options?.window ?? DEFAULT_WINDOW;
    let open: OpenStream | undefined;
    const stream: ConsumerStream = new ConsumerStream<unknown>(
      Number.isInteger(window) && window >= 1 && window <= MAX_STREAM_WINDOW ? window : DEFAULT_WINDOW,
      {
        start: () => {
          if (!(Number.isInteger(window) && window >= 1 && window <= MAX_STREAM_WINDOW)) {
            throw new NodeBinError("INVALID_ARGUMENT", `window must be a whole number of items from 1 to ${MAX_STREAM_WINDOW}, got ${window}`, { details: { field: "window" } });
          }
          return this.startStream(stream, method, request, options, (o) => (open = o), encoded);
        },
        grant: (n) => {
          if (open && this.streams.get(open.id) === open) this.sendStreamControl(open, Kind.CREDIT, n);
        },
        cancel: () => {
          if (!open || this.streams.get(open.id) !== open) return undefined;
          this.sendStreamControl(open, Kind.CANCEL, 0);
          const rec = open;
          return new Promise<void>((resolve) => {
            rec.ackTimer?.cancel();
            rec.ackTimer = this.clock.after(Math.max(1, Math.min(CANCEL_ACK_MS, rec.deadline - this.clock.now())), resolve);
          });
        },
        release: () => {
          if (open) this.releaseStream(open);
        },
      },
      encoded ? (bytes) => bytes : (bytes) => decodeMessage(open!.method.responseType, bytes, `item ${stream.received} of ${open!.method.fullName}`),
    );
    return stream;
  }

  /** Routes and sends a stream's request (its first next()); `opened` hears of its record. Rejects with why it cannot be sent. */
  private async startStream(stream: ConsumerStream, method: string, request: unknown, options: CallerOptions | undefined, opened: (open: OpenStream) => void, encoded?: Uint8Array): Promise<void> {
    if (this.closed) throw new NodeBinError("CANCELLED", `caller ${this.id} is closed`);
    let route;
    try {
      route = this.router.route(method);
    } catch (err) {
      if ((err as NodeBinError).code !== "NOT_FOUND" || (!this.onStale && this.settleMs <= 0)) throw err;
      // The table may be stale (a client's last pull), or still assembling: look once more.
      if (this.onStale) await this.onStale().catch(() => {});
      else await this.waitForChange(this.settleMs);
      route = this.router.route(method);
    }
    const schema = route.method;
    if (schema.mode !== Mode.STREAM) throw wrongMode(schema, Mode.STREAM);
    const now = this.clock.now();
    const deadline = this.deadlineOf(schema, options, now);
    if (typeof deadline !== "number") throw deadline;
    const scope = (options?.scope ?? "any") as Scope;
    const node = this.router.pick(route, scope);
    const rec: OpenStream = { id: 0, stream, method: schema, to: node.id, via: undefined, link: undefined, value: new Uint8Array(0), meta: { ...options?.meta }, options, deadline, start: now, sentAt: now, timer: undefined, ackTimer: undefined, tried: new Set(), attempts: 0 };
    opened(rec);
    if (this.interceptors.length === 0 || encoded) {
      rec.value = encoded ?? encodeMessage(schema.requestType, request, `request of ${schema.fullName}`);
      this.sendStream(rec);
      return;
    }
    const call: OutboundCall = { method: schema.fullName, mode: Mode.STREAM, plane: Plane.APPLICATION, from: this.id, to: node.id, control: NO_CONTROL, deadline, request, meta: { ...options?.meta } };
    // The links see the stream as one call: their next() settles at its end.
    const outcome = composeInterceptors(this.interceptors, (sent: OutboundCall) => {
      if (stream.ended) return Promise.reject(new NodeBinError("CANCELLED", `${schema.fullName}: the consumer left the stream`));
      try {
        rec.value = encodeMessage(schema.requestType, sent.request, `request of ${schema.fullName}`);
        rec.meta = sent.meta;
      } catch (err) {
        return Promise.reject(NodeBinError.from(err));
      }
      const ended = new Promise<unknown>((resolve, reject) => stream.onEnd((error) => (error ? reject(error) : resolve(undefined))));
      this.sendStream(rec);
      return ended;
    })(call);
    // A link that refused (or failed) before the stream ended ends it with that error.
    outcome.catch((err: unknown) => stream.endWith(NodeBinError.from(err)));
  }

  /** Sends a stream's request to rec.to under a new id (its first send, or a retry after an unhandled refusal). */
  private sendStream(rec: OpenStream): void {
    if (rec.stream.ended || this.closed) return;
    const now = this.clock.now();
    const budget = Math.ceil(rec.deadline - now);
    if (budget <= 0) return rec.stream.endWith(this.streamExpired(rec));
    rec.id = this.allocateId();
    rec.attempts++;
    const frame = encodeEnvelope(
      envelope({
        id: rec.id,
        plane: Plane.APPLICATION,
        mode: Mode.STREAM,
        kind: Kind.REQUEST,
        from: this.id,
        to: rec.to,
        method: rec.method.fullName,
        value: rec.value,
        meta: rec.meta,
        ...(rec.options?.state ? { state: rec.options.state } : {}),
        deadlineMs: budget,
        credit: rec.stream.window,
      }),
    );
    this.streams.set(rec.id, rec);
    this.router.started(rec.to);
    rec.sentAt = now;
    rec.timer ??= this.clock.after(budget, () => {
      rec.timer = undefined;
      this.router.expired(rec.to, rec.sentAt);
      rec.stream.endWith(this.streamExpired(rec), true);
    });
    try {
      rec.link = this.sender.send(rec.to, frame, rec.via) ?? undefined;
    } catch (err) {
      this.streamRefused(rec, NodeBinError.from(err, "UNAVAILABLE"));
    }
  }

  /** The error of a stream whose deadline passed: it names the limit (the call's deadline covers the whole stream). */
  private streamExpired(rec: OpenStream): NodeBinError {
    const timeoutMs = rec.options?.timeoutMs ?? this.defaultTimeoutMs;
    return new NodeBinError("DEADLINE_EXCEEDED", `${rec.method.fullName}: the call's deadline (timeoutMs ${timeoutMs}${rec.options?.deadline !== undefined ? ", or the calling handler's deadline" : ""}) passed after ${rec.stream.received} item(s); it covers the whole stream`, {
      details: { method: rec.method.fullName, to: rec.to, limit: "deadline" },
    });
  }

  /** A CREDIT (n items) or CANCEL for an open stream, on the link its request left on. */
  private sendStreamControl(rec: OpenStream, kind: Kind, credit: number): void {
    const frame = encodeEnvelope(envelope({ id: rec.id, plane: Plane.APPLICATION, mode: Mode.STREAM, kind, from: this.id, to: rec.to, method: rec.method.fullName, credit }));
    try {
      this.sender.send(rec.to, frame, rec.link !== undefined && rec.link !== LOCAL_LINK ? rec.link : rec.via);
    } catch {
      // The link is gone: the stream ends by the lost connection (failCallsTo) or its deadline.
    }
  }

  /** A STREAM_ITEM, STREAM_END or RESPONSE for stream `rec`, on the right link. */
  private handleStreamFrame(rec: OpenStream, env: Envelope): void {
    if (env.kind === Kind.STREAM_ITEM) return rec.stream.push(env.value);
    if (env.kind !== Kind.STREAM_END && env.kind !== Kind.RESPONSE) return;
    if (!env.error) return rec.stream.endWith(null);
    const err = NodeBinError.fromWire(env.error);
    // The producer timed the same deadline (from its receipt): one error for it, whichever side's timer fired first.
    if (err.code === "DEADLINE_EXCEEDED" && err.details.limit === "deadline") return rec.stream.endWith(this.streamExpired(rec));
    this.streamRefused(rec, err);
  }

  /**
   * A stream ended with `err` (a refusal, a send that failed, a lost
   * connection): sent to another node when nothing was received yet and
   * no handler ran (unhandled), else the stream's end.
   */
  private streamRefused(rec: OpenStream, err: NodeBinError): void {
    if (rec.stream.ended || rec.stream.received > 0 || !retryable(err, rec.options) || rec.attempts >= MAX_ATTEMPTS) return rec.stream.endWith(err);
    this.unlist(rec);
    rec.tried.add(rec.to);
    this.retrying++;
    void this.nextNode(rec, err).then(
      (node) => {
        this.retrying--;
        if (!node) return;
        rec.to = node.id;
        rec.link = undefined;
        this.sendStream(rec);
      },
      (e: unknown) => {
        this.retrying--;
        rec.stream.endWith(NodeBinError.from(e));
      },
    );
  }

  /** A node for a refused stream's next try (one that has not refused it in this round), waiting a backoff when all have; undefined when the stream ended meanwhile. Throws `last` (or DEADLINE_EXCEEDED) when time is up. */
  private async nextNode(rec: OpenStream, last: NodeBinError): Promise<NodeEntry | undefined> {
    const scope = (rec.options?.scope ?? "any") as Scope;
    const capacityWaitMs = rec.options?.capacityWaitMs ?? 0;
    const askFrom = rec.start + capacityWaitMs;
    let backoff = BACKOFF_FIRST_MS * 2 ** Math.min(5, Math.floor(rec.attempts / 4));
    for (;;) {
      if (rec.stream.ended) return undefined;
      if (this.closed) throw new NodeBinError("CANCELLED", `${rec.method.fullName}: caller ${this.id} closed`);
      const now = this.clock.now();
      if (now >= rec.deadline) throw this.outOfTime(rec.method, last, rec.to);
      // As for calls: no room within the capacity wait, then capacity is asked for (again every so often) and the wait goes on.
      if (last.code === "RESOURCE_EXHAUSTED" && now >= askFrom && now >= (rec.nextCapacityRequest ?? 0)) {
        rec.nextCapacityRequest = now + capacityRequestEvery(capacityWaitMs);
        this.askCapacity(rec.to, rec.method, scope);
      }
      const until = last.code === "RESOURCE_EXHAUSTED" ? Math.min(rec.deadline, Math.max(askFrom, rec.nextCapacityRequest ?? 0)) : rec.deadline;
      const node = this.pickUntried(rec.method.fullName, scope, rec.tried);
      if (node) return node;
      const woken = this.waitForChange(Math.max(1, Math.min(backoff, until - now)));
      this.staleHint();
      await woken;
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      rec.tried.clear();
    }
  }

  /** Takes a stream's current id out of the table (its answers are no longer taken). */
  private unlist(rec: OpenStream): void {
    if (this.streams.get(rec.id) !== rec) return;
    this.streams.delete(rec.id);
    this.router.ended(rec.to);
  }

  /** The stream is over on this side: its id, timers and router count go. */
  private releaseStream(rec: OpenStream): void {
    this.unlist(rec);
    rec.timer?.cancel();
    rec.timer = undefined;
    rec.ackTimer?.cancel();
    rec.ackTimer = undefined;
  }

  /** Stream state held now, for tests: nothing of a stream may outlive it. */
  get streamResources(): { streams: number; timers: number } {
    let timers = 0;
    for (const rec of this.streams.values()) timers += (rec.timer ? 1 : 0) + (rec.ackTimer ? 1 : 0);
    return { streams: this.streams.size, timers };
  }

  /** Waits for the table to change (within settleMs and the call's own time), then routes again. */
  private async awaitMembership(mode: Mode, method: string, request: unknown, options: CallerOptions | undefined, notFound: NodeBinError, until?: number): Promise<unknown> {
    const now = this.clock.now();
    until ??= Math.min(now + this.settleMs, now + (options?.timeoutMs ?? this.defaultTimeoutMs), options?.deadline ?? Infinity);
    if (now >= until) throw notFound;
    await this.waitForChange(until - now);
    return this.routed(mode, method, request, options, until);
  }

  /** Calls `call.method` at endpoint `call.to` (no node selection). */
  callEndpoint(call: DirectCall): Promise<unknown> {
    try {
      if (this.interceptors.length > 0) return this.intercept(call.method, call.method.mode, call.to, call.via, call.plane ?? Plane.APPLICATION, call.request, call.options, false);
      const value = encodeMessage(call.method.requestType, call.request, `request of ${call.method.fullName}`);
      return this.invoke(call.method, call.method.mode, call.to, call.via, call.plane ?? Plane.APPLICATION, value, call.options, false);
    } catch (err) {
      return Promise.reject(NodeBinError.from(err));
    }
  }

  /**
   * A call through the interceptors: they get its deadline fixed now, and
   * what the innermost passes on (request, meta) is encoded and sent by
   * invoke(), which keeps that same deadline. A timer of its own ends the
   * call at that deadline even if a link never settles.
   */
  private intercept(method: MethodSchema, mode: Mode, to: string, via: string | undefined, plane: Plane, request: unknown, options: CallerOptions | undefined, retry: boolean): Promise<unknown> {
    if (this.closed) return Promise.reject(new NodeBinError("CANCELLED", `caller ${this.id} is closed`));
    const now = this.clock.now();
    const deadline = this.deadlineOf(method, options, now);
    if (typeof deadline !== "number") return Promise.reject(deadline);
    const call: OutboundCall = { method: method.fullName, mode, plane, from: this.id, to, control: NO_CONTROL, deadline, request, meta: { ...options?.meta } };
    const outcome = composeInterceptors(this.interceptors, (sent: OutboundCall) => {
      try {
        const value = encodeMessage(method.requestType, sent.request, `request of ${method.fullName}`);
        return this.invoke(method, mode, to, via, plane, value, { ...options, meta: sent.meta, deadline }, retry);
      } catch (err) {
        // A bad request, or meta a link filled with something not a string.
        return Promise.reject(NodeBinError.from(err));
      }
    })(call);
    return new Promise<unknown>((resolve, reject) => {
      const timer = this.clock.after(Math.ceil(deadline - now), () => reject(noAnswer(method, to)));
      outcome.then(
        (value) => {
          timer.cancel();
          resolve(value);
        },
        (err: unknown) => {
          timer.cancel();
          reject(err);
        },
      );
    });
  }

  /**
   * The absolute deadline of a call made at `now`, or why it is refused before
   * anything is sent: INVALID_ARGUMENT for a bad timeoutMs or capacityWaitMs,
   * DEADLINE_EXCEEDED for a deadline already passed.
   */
  private deadlineOf(method: MethodSchema, options: CallerOptions | undefined, now: number): number | NodeBinError {
    const timeoutMs = options?.timeoutMs ?? this.defaultTimeoutMs;
    if (!(timeoutMs > 0 && timeoutMs <= MAX_TIMEOUT_MS)) {
      return new NodeBinError("INVALID_ARGUMENT", `timeoutMs must be a number of ms from 1 to ${MAX_TIMEOUT_MS} (about 24.8 days), got ${timeoutMs}`);
    }
    const capacityWaitMs = options?.capacityWaitMs;
    if (capacityWaitMs !== undefined && !(typeof capacityWaitMs === "number" && capacityWaitMs >= 0 && capacityWaitMs < Infinity)) {
      return new NodeBinError("INVALID_ARGUMENT", `capacityWaitMs must be a finite number of ms, 0 or more, got ${capacityWaitMs}`);
    }
    const deadline = Math.min(now + timeoutMs, options?.deadline ?? Infinity);
    if (Math.ceil(deadline - now) <= 0) {
      return new NodeBinError("DEADLINE_EXCEEDED", `${method.fullName}: the caller's deadline had already passed`, { details: { method: method.fullName } });
    }
    return deadline;
  }

  /** Sends one request; `retry`: a refusal of it (unhandled) is re-sent by reroute() instead of failing the call. */
  private invoke(method: MethodSchema, mode: Mode, to: string, via: string | undefined, plane: Plane, value: Uint8Array, options: CallerOptions | undefined, retry: boolean, raw = false): Promise<unknown> {
    if (this.closed) return Promise.reject(new NodeBinError("CANCELLED", `caller ${this.id} is closed`));
    const now = this.clock.now();
    const deadline = this.deadlineOf(method, options, now);
    if (typeof deadline !== "number") return Promise.reject(deadline);
    const budget = Math.ceil(deadline - now);
    const id = this.allocateId();
    const frame = encodeEnvelope(
      envelope({
        id,
        plane,
        mode,
        kind: Kind.REQUEST,
        from: this.id,
        to,
        method: method.fullName,
        value,
        meta: options?.meta ?? {},
        ...(options?.state ? { state: options.state } : {}),
        deadlineMs: budget,
      }),
    );
    return new Promise<unknown>((resolve, reject) => {
      const timer = this.clock.after(budget, () => this.expire(id));
      const call: PendingCall = { resolve, reject, method, mode, to, via, link: undefined, timer, value: retry ? value : undefined, options, start: now, deadline, raw };
      this.pending.set(id, call);
      this.router.started(to);
      try {
        call.link = this.sender.send(to, frame, via) ?? undefined;
      } catch (err) {
        const call = this.settle(id);
        if (call) this.fail(call, NodeBinError.from(err, "UNAVAILABLE"));
      }
    });
  }

  /**
   * Settles the call an answer is for. `link`: the link it came back on
   * (transport Peer.link). An answer is taken only for an id still pending,
   * on the link its request left on: an answer another connection sprays
   * with guessed ids (they are sequential) is dropped and counted, and the
   * call still gets its real answer. (A Sender that names no links, as in
   * unit tests, leaves calls open to any answer.)
   */
  handleResponse(env: Envelope, link?: string): void {
    if (env.kind !== Kind.RESPONSE || !this.pending.has(env.id)) {
      const open = this.streams.get(env.id);
      if (!open) {
        if (env.kind !== Kind.RESPONSE) this.unknownStreamFrames++;
        return; // late (after its deadline) or not ours: nothing waits for it
      }
      if (open.link !== undefined && link !== open.link) {
        this.foreignAnswers++;
        return;
      }
      this.router.answered(open.to);
      return this.handleStreamFrame(open, env);
    }
    const waiting = this.pending.get(env.id)!;
    if (waiting.link !== undefined && link !== waiting.link) {
      this.foreignAnswers++;
      return;
    }
    const call = this.settle(env.id)!;
    this.router.answered(call.to);
    if (env.error) {
      this.fail(call, NodeBinError.fromWire(env.error));
    } else if (call.raw) {
      call.resolve(env.value);
    } else if (call.mode === Mode.ASYNC) {
      call.resolve(undefined);
    } else {
      try {
        call.resolve(decodeMessage(call.method.responseType, env.value, `reply of ${call.method.fullName}`));
      } catch (err) {
        call.reject(new NodeBinError("INTERNAL", NodeBinError.from(err).message, { origin: env.from }));
      }
    }
  }

  /** Rejects a settled call with `err`, unless it is a routed call's first send and `err` a refusal worth sending again. */
  private fail(call: PendingCall, err: NodeBinError): void {
    if (call.value === undefined || !retryable(err, call.options)) return call.reject(err);
    this.retrying++;
    this.reroute(call, err).then(
      (value) => {
        this.retrying--;
        call.resolve(value);
      },
      (e: unknown) => {
        this.retrying--;
        call.reject(NodeBinError.from(e));
      },
    );
  }

  /**
   * The retries of a routed call after its first send was refused: sends it
   * again to nodes that have not refused it in this round (nearest and least
   * loaded first, as any call); when every candidate has refused, asks for a
   * fresh table (onStale) and waits for the table to change or a backoff to
   * pass, then starts a new round. Resolves with the reply; rejects with the
   * first error that is no refusal, the last refusal once MAX_ATTEMPTS sends
   * were refused as UNAVAILABLE or the capacity wait ended, or
   * DEADLINE_EXCEEDED at the deadline.
   */
  private async reroute(first: PendingCall, refusal: NodeBinError): Promise<unknown> {
    const { method, mode, deadline } = first;
    const value = first.value!;
    const scope: Scope = first.options?.scope ?? "any";
    const capacityWaitMs = first.options?.capacityWaitMs ?? 0;
    // The seed's "if no capacity within N ms, then request more": the call waits for room N ms,
    // then asks for capacity (again every capacityRequestEvery) and waits on to its deadline.
    const askFrom = first.start + capacityWaitMs;
    // Every later send carries what is left of the first deadline.
    const options: CallerOptions = { ...first.options, deadline };
    /** Nodes that refused in this round: not asked again until the next one. */
    const tried = new Set<string>([first.to]);
    let last = refusal;
    let lastTo = first.to;
    let unavailable = 0;
    let backoff = BACKOFF_FIRST_MS;
    let roundEnds = 0; // when waiting: the end of this round's backoff
    let nextCapacityRequest = 0;
    for (;;) {
      // The refusal just received: may the call go on?
      if (last.code === "RESOURCE_EXHAUSTED") {
        const now = this.clock.now();
        if (now >= deadline) throw this.outOfTime(method, last, lastTo);
        if (now >= askFrom && now >= nextCapacityRequest) {
          nextCapacityRequest = now + capacityRequestEvery(capacityWaitMs);
          this.askCapacity(lastTo, method, scope);
        }
      } else if (++unavailable >= MAX_ATTEMPTS) {
        throw last;
      }
      // The next node: one that has not refused in this round, else wait.
      let node: NodeEntry | undefined;
      for (;;) {
        if (this.closed) throw new NodeBinError("CANCELLED", `${method.fullName}: caller ${this.id} closed`);
        const now = this.clock.now();
        if (now >= deadline) throw this.outOfTime(method, last, lastTo);
        // Still no room once the capacity wait is over: more capacity is asked for (again every so often), and the call waits on.
        if (last.code === "RESOURCE_EXHAUSTED" && now >= askFrom && now >= nextCapacityRequest) {
          nextCapacityRequest = now + capacityRequestEvery(capacityWaitMs);
          this.askCapacity(lastTo, method, scope);
        }
        // A wait ends at the deadline, and at the next capacity request (the end of the capacity wait, first).
        const until = last.code === "RESOURCE_EXHAUSTED" ? Math.min(deadline, Math.max(askFrom, nextCapacityRequest)) : deadline;
        node = this.pickUntried(method.fullName, scope, tried);
        if (node) break;
        if (roundEnds === 0) {
          // Every candidate refused: a new round after a backoff, or sooner when the table changes.
          roundEnds = now + backoff;
          backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
          const woken = this.waitForChange(Math.max(1, Math.min(roundEnds, until) - now));
          this.staleHint();
          await woken;
        } else if (now >= roundEnds) {
          // Backoff over: everyone may be asked again (a full node may have room now, a starting one be ready).
          tried.clear();
          roundEnds = 0;
        } else {
          await this.waitForChange(Math.max(1, Math.min(roundEnds, until) - now));
        }
      }
      tried.add(node.id);
      try {
        return await this.invoke(method, mode, node.id, undefined, Plane.APPLICATION, value, options, false, first.raw);
      } catch (err) {
        const e = NodeBinError.from(err);
        if (!retryable(e, options)) throw e;
        last = e;
        lastTo = node.id;
      }
    }
  }

  /** A node serving `method` within `scope` and not in `tried`, if any (the method may no longer be served at all). */
  private pickUntried(method: string, scope: Scope, tried: ReadonlySet<string>): NodeEntry | undefined {
    try {
      return this.router.pick(this.router.route(method), scope, tried);
    } catch (err) {
      if (err instanceof NodeBinError && err.code === "NOT_FOUND") return undefined;
      throw err;
    }
  }

  /**
   * The error of a call whose deadline came while nodes refused it (full, or
   * unavailable): DEADLINE_EXCEEDED naming the last refusal.
   */
  private outOfTime(method: MethodSchema, last: NodeBinError, lastTo: string): NodeBinError {
    return new NodeBinError("DEADLINE_EXCEEDED", `${method.fullName}: no node took the call within the deadline (last refusal from ${lastTo}: ${last.code}: ${last.message})`, {
      details: { method: method.fullName, to: lastTo, refused: last.code },
    });
  }

  /** Resolves at the next change of the table, after `ms`, or at close(). */
  private waitForChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        timer.cancel();
        off();
        this.waiting.delete(done);
        resolve();
      };
      const timer = this.clock.after(ms, done);
      const off = this.router.table.onChange(done);
      this.waiting.add(done);
    });
  }

  private staleHint(): void {
    if (!this.onStale) return;
    try {
      this.onStale().catch(() => {});
    } catch {
      // a hint: its failure is not the call's
    }
  }

  private askCapacity(nodeId: string, method: MethodSchema, scope: Scope): void {
    const refused = this.router.table.get(nodeId);
    if (!refused || !this.requestCapacity) return;
    try {
      const node = this.router.capacityContact(refused, this.router.table.routes().get(method.fullName)) ?? refused;
      this.requestCapacity(node, method, scope);
    } catch {
      // fire and forget
    }
  }

  /** Fails every call waiting on an endpoint `predicate` picks (its peer is gone) with UNAVAILABLE, or `error`. */
  failCallsTo(predicate: (to: string, via: string | undefined) => boolean, reason: string, error?: NodeBinError): void {
    for (const [id, call] of this.pending) {
      if (!predicate(call.to, call.via)) continue;
      this.router.suspect(call.to);
      const failure = error
        ? new NodeBinError(error.code, `${call.method.fullName}: ${error.message}`, { details: { ...error.details, to: call.to } })
        : new NodeBinError("UNAVAILABLE", `${call.method.fullName}: ${reason}`, { details: { to: call.to } });
      const settled = this.settle(id);
      // A handshake that failed with one key of the ring is unhandled (nothing reached the peer): sent again.
      if (settled) this.fail(settled, failure);
    }
    for (const open of [...this.streams.values()]) {
      if (!predicate(open.to, open.via)) continue;
      this.router.suspect(open.to);
      this.streamRefused(
        open,
        error
          ? new NodeBinError(error.code, `${open.method.fullName}: ${error.message}`, { details: { ...error.details, to: open.to } })
          : new NodeBinError("UNAVAILABLE", `${open.method.fullName}: ${reason} after ${open.stream.received} item(s)`, { details: { to: open.to } }),
      );
    }
  }

  /** Fails every call in flight with CANCELLED and refuses new ones. */
  close(): void {
    this.closed = true;
    for (const wake of [...this.waiting]) wake();
    for (const [id, call] of this.pending) this.settle(id)?.reject(new NodeBinError("CANCELLED", `${call.method.fullName}: caller ${this.id} closed`));
    // The producers are told (CANCEL), so their generators are returned; nobody waits for their acknowledgement.
    for (const open of [...this.streams.values()]) open.stream.endWith(new NodeBinError("CANCELLED", `${open.method.fullName}: caller ${this.id} closed`), true);
  }

  private expire(id: number): void {
    const call = this.settle(id);
    if (call) this.router.expired(call.to, call.start);
    call?.reject(noAnswer(call.method, call.to));
  }

  private settle(id: number): PendingCall | undefined {
    const call = this.pending.get(id);
    if (!call) return undefined;
    this.pending.delete(id);
    call.timer.cancel();
    this.router.ended(call.to);
    return call;
  }

  private allocateId(): number {
    // Ids wrap at 2^32; skip any still in flight (only possible after billions of calls).
    do {
      this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    } while (this.pending.has(this.nextId) || this.streams.has(this.nextId));
    return this.nextId;
  }
}

/** How often a call still waiting for room asks for capacity again: its capacity wait, between 250 ms and 5 s. */
function capacityRequestEvery(capacityWaitMs: number): number {
  return Math.min(5000, Math.max(250, capacityWaitMs));
}

/** A refusal worth sending again: unhandled, and UNAVAILABLE, or RESOURCE_EXHAUSTED when the call may wait for capacity. */
function retryable(err: NodeBinError, options: CallerOptions | undefined): boolean {
  if (!isUnhandled(err)) return false;
  return err.code === "UNAVAILABLE" || (err.code === "RESOURCE_EXHAUSTED" && (options?.capacityWaitMs ?? 0) > 0);
}

/** The error of a call whose deadline came with no answer from `to`. */
function noAnswer(method: MethodSchema, to: string): NodeBinError {
  return new NodeBinError("DEADLINE_EXCEEDED", `${method.fullName}: no answer from ${to || "the endpoint"} within the deadline`, { details: { method: method.fullName, to } });
}

/** INVALID_ARGUMENT for a method used in another mode than its own, naming the verb its mode takes (the broadcast sender uses it too). */
export function wrongMode(method: MethodSchema, used: Mode): NodeBinError {
  const how =
    method.mode === Mode.BROADCAST
      ? "broadcast it (ctx.broadcast, client.broadcast, `node-bin client broadcast`)"
      : method.mode === Mode.ASYNC
      ? "send it (ctx.send, client.send, `node-bin client send`)"
      : method.mode === Mode.SYNC
        ? "call it (ctx.call, client.call, `node-bin client call`)"
        : method.mode === Mode.STREAM
          ? "stream it (ctx.stream, client.stream, `node-bin client stream`)"
          : `${modeName(method.mode)} calls are not served yet`;
  return new NodeBinError("INVALID_ARGUMENT", `${method.fullName} is ${modeName(method.mode)}, not ${modeName(used)}: ${how}`, {
    details: { method: method.fullName, mode: modeName(method.mode) },
  });
}
