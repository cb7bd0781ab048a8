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
import type { Plane } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { Mode } from "../wire/schema.ts";
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

/**
 * The node's per-message logging as an inbound link; ComponentNode installs
 * it when no interceptors are given. At error level, the failures of ASYNC
 * messages, which no caller hears of (field code); with `perMessage`, one
 * debug line per message with its duration and outcome code (fields:
 * method, from, code, ms), which costs a promise per message: the container
 * asks for it when the log level is debug. The outcome passes through
 * unchanged. `now` (ms) times the message.
 */
export function loggingInterceptor(log: Logger, options: { perMessage?: boolean; now?: () => number } = {}): InboundInterceptor {
  const now = options.now ?? monotonicNow;
  const link: Interceptor<InboundCall> = (next) => async (call) => {
    const start = now();
    try {
      const reply = await next(call);
      if (options.perMessage) {
        const ms = now() - start;
        log.debug(`${call.method} from ${call.from}: OK in ${ms.toFixed(2)} ms`, { method: call.method, from: call.from, code: "OK", ms });
      }
      return reply;
    } catch (err) {
      const error = NodeBinError.from(err);
      if (options.perMessage) {
        const ms = now() - start;
        log.debug(`${call.method} from ${call.from}: ${error.code} in ${ms.toFixed(2)} ms`, { method: call.method, from: call.from, code: error.code, ms });
      }
      if (call.mode === Mode.ASYNC) log.error(`${call.method} failed: ${error}`, { code: error.code });
      throw error;
    }
  };
  // Without the per-message line only ASYNC failures are logged: SYNC and the others skip the link.
  return options.perMessage ? link : forModes([Mode.ASYNC], link);
}

/**
 * Logging of failed outgoing calls, at debug level, as an outbound link
 * (fields: method, to, code, ms). The caller still gets the error; this
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
      log.debug(`call ${call.method} to ${call.to || "a control endpoint"} failed after ${ms.toFixed(2)} ms: ${error}`, { method: call.method, to: call.to, code: error.code, ms });
      throw error;
    }
  };
}
