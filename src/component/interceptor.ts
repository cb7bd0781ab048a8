/**
 * Interceptors: the seam every call passes through, on both of its sides (the
 * connect-es / gRPC model, `(next) => async (call) => ...`). Outbound links
 * wrap each call a RoutingCaller makes; inbound links wrap each message a
 * ComponentNode handles. Authorization, metrics, tracing and per-call logging
 * are links of these chains, not code inside the call path.
 *
 * The contract, the same on both sides:
 * - Awaiting `next(call)` gives the outcome: it resolves with the reply
 *   (undefined for an ASYNC method) or rejects with a NodeBinError, never
 *   with anything else.
 * - A link refuses a call by throwing a NodeBinError: its code is what the
 *   caller gets. Anything else a link throws (or rejects with) becomes
 *   INTERNAL, so a link can neither crash a node nor leave a caller waiting.
 * - A link that never settles holds its call as a handler would: an
 *   outbound call still ends at its deadline; a node waits for it, as for
 *   a handler that never returns.
 * - The first link of a list is the outermost. A link is applied anew for
 *   each call: state shared across calls belongs outside it.
 *
 * This module lives in the component layer so that both the node (inbound)
 * and the routing layer (outbound) can import it.
 */
import type { PeerKind } from "../wire/control.ts";
import type { Plane } from "../wire/envelope.ts";
import { NodeBinError, type Code } from "../wire/errors.ts";
import { Mode, modeName } from "../wire/schema.ts";
import type { Logger } from "./context.ts";

/** What both sides see of a call; the runtime fills it in and links read it. */
export interface CallInfo {
  /** Full method name ("pkg.Service/Method"). */
  readonly method: string;
  readonly mode: Mode;
  readonly plane: Plane;
  /** Id of the calling endpoint. */
  readonly from: string;
  /** Id of the endpoint called: the node picked (outbound), this node (inbound); "" is a process's control endpoint. */
  readonly to: string;
  /** The envelope's control headers (runtime to runtime); empty on requests a RoutingCaller sends. */
  readonly control: Readonly<Record<string, string>>;
  /** Absolute deadline (epoch ms); Infinity when the caller set none (inbound only: outbound calls always have one). */
  readonly deadline: number;
}

/**
 * A call leaving a RoutingCaller, as its outbound links see it. What the
 * innermost link passes to `next` is what is sent: its `request` and `meta`
 * (method, mode, target and deadline are the call's own; changing them in a
 * copy has no effect).
 */
export interface OutboundCall extends CallInfo {
  /** The request as the caller passed it (encoded after the chain, so a bad one rejects `next` with INVALID_ARGUMENT). */
  readonly request: unknown;
  /** Metadata for the callee: this call's own copy, which links may add to before calling `next`. */
  readonly meta: Record<string, string>;
}

/** A message entering a ComponentNode, as its inbound links see it (before its request is decoded). */
export interface InboundCall extends CallInfo {
  /** The caller's metadata, as the handler will see it in ctx.meta. */
  readonly meta: Readonly<Record<string, string>>;
  /**
   * The kind of peer the message came from, as the transport that carried
   * it knows (never as the envelope claims): "local" (this process: the
   * direct transport), "host" (ipc in the private runtime directory),
   * "network" (tcp).
   */
  readonly peerKind: PeerKind;
  /** The connection it came on, as logs name it ("tcp peer #12 (a member ...)"): transport Peer.via. */
  readonly peerVia?: string;
}

/** The rest of the chain below a link: resolves with the reply, rejects with a NodeBinError. */
export type Next<C> = (call: C) => Promise<unknown>;

/** One link: given the rest of the chain, the function that handles a call in its place. */
export type Interceptor<C> = (next: Next<C>) => Next<C>;

/** A link around every request a RoutingCaller sends (call, send, callEndpoint). */
export type OutboundInterceptor = Interceptor<OutboundCall>;

/**
 * A link around the request messages a ComponentNode handles: every one, or,
 * when the link says `modes`, only those of the methods with these modes.
 * Messages of the other modes do not pass through it at all: a node whose
 * chain for a mode is empty handles those messages with no promise or
 * closure added (the in-process fast path).
 */
export type InboundInterceptor = Interceptor<InboundCall> & { readonly modes?: readonly Mode[] };

/** `interceptor`, limited to messages of methods with these modes (see InboundInterceptor). */
export function forModes(modes: readonly Mode[], interceptor: Interceptor<InboundCall>): InboundInterceptor {
  return Object.assign((next: Next<InboundCall>) => interceptor(next), { modes });
}

/** The links of `interceptors` that see messages of `mode`, in order. */
export function chainFor(interceptors: readonly InboundInterceptor[], mode: Mode): InboundInterceptor[] {
  return interceptors.filter((i) => !i.modes || i.modes.includes(mode));
}

/**
 * `terminal` wrapped in `interceptors` (the first outermost). Each link is
 * guarded: a throw of anything but a NodeBinError (synchronous or not) comes
 * out of it as INTERNAL, so every link awaiting `next` sees a NodeBinError,
 * and so does the runtime. `terminal` is the runtime's own and keeps that
 * contract itself (never throws, rejects with NodeBinErrors only). Meant for
 * the runtime's call sites, once per call: it allocates, so they skip it
 * when the list is empty.
 */
export function composeInterceptors<C>(interceptors: readonly Interceptor<C>[], terminal: Next<C>): Next<C> {
  let next = terminal;
  for (let i = interceptors.length - 1; i >= 0; i--) next = guarded(interceptors[i]!, next);
  return next;
}

function guarded<C>(interceptor: Interceptor<C>, inner: Next<C>): Next<C> {
  return (call) => {
    try {
      return Promise.resolve(interceptor(inner)(call)).then(undefined, rethrowCoded);
    } catch (err) {
      return Promise.reject(NodeBinError.from(err));
    }
  };
}

function rethrowCoded(err: unknown): never {
  throw NodeBinError.from(err);
}

/** Milliseconds from a monotonic origin: web-standard, so the component layer stays runtime-free. */
const monotonicNow = (): number => globalThis.performance.now();

/** What the runtime knows of a message's caller. */
export interface MessagePeer {
  /** The `from` id its envelope claims: a label, never a route (answers go back on the connection). */
  readonly id: string;
  /** The kind of peer its transport saw (InboundCall.peerKind). */
  readonly kind: PeerKind;
  /** Its connection, when it came over one (InboundCall.peerVia). */
  readonly via?: string;
}

/** One message, as the per-message hooks see it. */
export interface MessageEvent {
  /** Full method name ("pkg.Service/Method"). */
  readonly method: string;
  readonly mode: Mode;
  /** The node handling it. */
  readonly node: string;
  readonly peer: MessagePeer;
}

/** A message's outcome: how long it took from its start, and its code. */
export interface MessageOutcome extends MessageEvent {
  /** From the start hook to the outcome, in ms (monotonic clock): deadline check, decoding, handler, reply encoding, and the links inside the hooks' one. */
  readonly durationMs: number;
  /** "OK", or the error's code. */
  readonly code: Code | "OK";
}

/** A message that failed, with the error its caller gets (an ASYNC message's caller hears of none). */
export interface MessageFailure extends MessageOutcome {
  readonly code: Code;
  readonly error: NodeBinError;
}

/**
 * Per-message hooks: called around each message a node handles, when its
 * turn comes (start) and when it ends, answered or handled (end) or failed
 * (error): refused by a link inside this one, past its deadline while
 * queued, undecodable, thrown by its handler, or with a reply that does not
 * fit. Exactly one of end and error follows each start. Hooks observe:
 * what they return is ignored and what they throw is swallowed, so a hook
 * can neither change an outcome nor break a node (a link that must refuse
 * calls is an interceptor of its own). They run synchronously on the
 * node's path: keep them cheap.
 */
export interface MessageHooks {
  start?(event: MessageEvent): void;
  end?(event: MessageOutcome): void;
  error?(event: MessageFailure): void;
}

/**
 * `hooks` as an inbound link (see MessageHooks). With `modes`, only
 * messages of methods with these modes pass through it (the others pay
 * nothing); `now` (ms, monotonic) times them. The outcome passes through
 * unchanged.
 */
export function hooksInterceptor(hooks: MessageHooks, options: { modes?: readonly Mode[]; now?: () => number } = {}): InboundInterceptor {
  const now = options.now ?? monotonicNow;
  const { start, end, error } = hooks;
  const link: Interceptor<InboundCall> = (next) => async (call) => {
    const event: MessageEvent = { method: call.method, mode: call.mode, node: call.to, peer: { id: call.from, kind: call.peerKind, ...(call.peerVia ? { via: call.peerVia } : {}) } };
    const began = now();
    if (start) observe(() => start.call(hooks, event));
    try {
      const reply = await next(call);
      if (end) observe(() => end.call(hooks, { ...event, durationMs: now() - began, code: "OK" }));
      return reply;
    } catch (err) {
      const e = NodeBinError.from(err);
      if (error) observe(() => error.call(hooks, { ...event, durationMs: now() - began, code: e.code, error: e }));
      throw e;
    }
  };
  return options.modes ? forModes(options.modes, link) : link;
}

function observe(hook: () => unknown): void {
  try {
    hook();
  } catch {
    // Hooks observe; a failing one must not change the message's outcome.
  }
}

/**
 * The per-message logging as hooks, every line with the fields hook
 * ("start", "end", "error"), method, mode (its name) and peer ({id, kind});
 * end and error lines add durationMs and code, error lines the error's
 * message. A failed ASYNC or BROADCAST message (no caller hears of it) is logged at
 * error level always; with `perMessage`, every start, end and other
 * failure at debug level.
 */
export function loggingHooks(log: Logger, options: { perMessage?: boolean } = {}): MessageHooks {
  const fields = (hook: string, e: MessageEvent) => ({ hook, method: e.method, mode: modeName(e.mode), peer: { id: e.peer.id, kind: e.peer.kind, ...(e.peer.via ? { via: e.peer.via } : {}) } });
  const who = (e: MessageEvent) => `${e.method} from ${e.peer.id || "?"} (${e.peer.kind})`;
  const error = (e: MessageFailure) => {
    const line = `${who(e)}: ${e.code} after ${e.durationMs.toFixed(2)} ms: ${e.error.message}`;
    const f = { ...fields("error", e), code: e.code, durationMs: roundMs(e.durationMs), error: e.error.message };
    if (e.mode === Mode.ASYNC || e.mode === Mode.BROADCAST) log.error(line, f);
    else if (options.perMessage) log.debug(line, f);
  };
  if (!options.perMessage) return { error };
  return {
    start: (e) => log.debug(`${who(e)}: start`, fields("start", e)),
    end: (e) => log.debug(`${who(e)}: OK in ${e.durationMs.toFixed(2)} ms`, { ...fields("end", e), code: e.code, durationMs: roundMs(e.durationMs) }),
    error,
  };
}

/** Milliseconds to the microsecond: what a log line needs of a monotonic reading. */
const roundMs = (ms: number): number => Math.round(ms * 1000) / 1000;

/**
 * The node's per-message logging (loggingHooks) as an inbound link;
 * ComponentNode installs it when no interceptors are given. Without
 * `perMessage` it sees ASYNC and BROADCAST messages only, whose failures it logs (SYNC
 * messages skip the link: no promise added); with it, every message, which
 * costs a promise per message: the container asks for it when the log level
 * is debug. `now` (ms) times the messages.
 */
export function loggingInterceptor(log: Logger, options: { perMessage?: boolean; now?: () => number } = {}): InboundInterceptor {
  return hooksInterceptor(loggingHooks(log, options), { ...(options.perMessage ? {} : { modes: [Mode.ASYNC, Mode.BROADCAST] }), ...(options.now ? { now: options.now } : {}) });
}

/**
 * Logging of failed outgoing calls, at debug level, as an outbound link
 * (fields: method, to, code, durationMs, as the inbound hooks' lines). The caller still gets the error; this
 * only leaves a trace for who follows a call that went wrong. `now` (ms)
 * times the call.
 */
export function outboundLoggingInterceptor(log: Logger, now: () => number = monotonicNow): OutboundInterceptor {
  return (next) => async (call) => {
    const start = now();
    try {
      return await next(call);
    } catch (err) {
      const error = NodeBinError.from(err);
      const ms = now() - start;
      log.debug(`call ${call.method} to ${call.to || "a control endpoint"} failed after ${ms.toFixed(2)} ms: ${error}`, { method: call.method, to: call.to, code: error.code, durationMs: roundMs(ms) });
      throw error;
    }
  };
}
