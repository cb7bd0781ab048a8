/**
 * RoutingCaller: makes calls from one endpoint (a node, a client, a process)
 * and matches the answers that come back to it. Every call ends: with the
 * reply, with the callee's coded error, or with DEADLINE_EXCEEDED from a timer
 * of its own when nothing came back in time.
 */
import type { Caller, CallerOptions, Scope } from "../component/context.ts";
import { Kind, Plane, encodeEnvelope, envelope, type Envelope } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { decodeMessage, encodeMessage } from "../wire/message.ts";
import { Mode, modeName, type MethodSchema } from "../wire/schema.ts";
import type { Router } from "./router.ts";

export const DEFAULT_TIMEOUT_MS = 30_000;
// setTimeout's ceiling (a longer timeout would fire at once), and so the longest
// timeout a call may have; it also fits Envelope.deadline_ms (uint32).
const MAX_TIMEOUT_MS = 2_147_483_647;

/** Sends an encoded envelope to endpoint `to`; throws NodeBinError when it cannot. */
export interface Sender {
  /** `via`: the network endpoint of the process to send to, when `to` alone does not say. */
  send(to: string, frame: Uint8Array, via?: string): void;
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

interface PendingCall {
  resolve(value: unknown): void;
  reject(error: NodeBinError): void;
  method: MethodSchema;
  mode: Mode;
  to: string;
  via: string | undefined;
  timer: ReturnType<typeof setTimeout>;
}

export class RoutingCaller implements Caller {
  readonly id: string;
  private readonly router: Router;
  private readonly sender: Sender;
  private readonly defaultTimeoutMs: number;
  private readonly settleMs: number;
  private readonly pending = new Map<number, PendingCall>();
  private nextId = 1;
  private closed = false;

  constructor(config: CallerConfig) {
    this.id = config.id;
    this.router = config.router;
    this.sender = config.sender;
    this.defaultTimeoutMs = config.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.settleMs = config.settleMs ?? 0;
  }

  /** Calls in flight. */
  get inFlight(): number {
    return this.pending.size;
  }

  call(method: string, request: unknown, options?: CallerOptions): Promise<unknown> {
    return this.routed(Mode.SYNC, method, request, options);
  }

  send(method: string, request: unknown, options?: CallerOptions): Promise<void> {
    return this.routed(Mode.ASYNC, method, request, options) as Promise<void>;
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
      const value = encodeMessage(schema.requestType, request, `request of ${schema.fullName}`);
      const node = this.router.pick(route, (options?.scope ?? "any") as Scope);
      return this.invoke(schema, mode, node.id, undefined, Plane.APPLICATION, value, options);
    } catch (err) {
      return Promise.reject(NodeBinError.from(err));
    }
  }

  /** Waits for the table to change (within settleMs and the call's own time), then routes again. */
  private async awaitMembership(mode: Mode, method: string, request: unknown, options: CallerOptions | undefined, notFound: NodeBinError, until?: number): Promise<unknown> {
    const now = Date.now();
    until ??= Math.min(now + this.settleMs, now + (options?.timeoutMs ?? this.defaultTimeoutMs), options?.deadline ?? Infinity);
    if (now >= until) throw notFound;
    await this.router.table.nextChange(until - now);
    return this.routed(mode, method, request, options, until);
  }

  /** Calls `call.method` at endpoint `call.to` (no node selection). */
  callEndpoint(call: DirectCall): Promise<unknown> {
    try {
      const value = encodeMessage(call.method.requestType, call.request, `request of ${call.method.fullName}`);
      return this.invoke(call.method, call.method.mode, call.to, call.via, call.plane ?? Plane.APPLICATION, value, call.options);
    } catch (err) {
      return Promise.reject(NodeBinError.from(err));
    }
  }

  private invoke(method: MethodSchema, mode: Mode, to: string, via: string | undefined, plane: Plane, value: Uint8Array, options: CallerOptions | undefined): Promise<unknown> {
    if (this.closed) return Promise.reject(new NodeBinError("CANCELLED", `caller ${this.id} is closed`));
    const now = Date.now();
    const timeoutMs = options?.timeoutMs ?? this.defaultTimeoutMs;
    if (!(timeoutMs > 0 && timeoutMs <= MAX_TIMEOUT_MS)) {
      return Promise.reject(new NodeBinError("INVALID_ARGUMENT", `timeoutMs must be a number of ms from 1 to ${MAX_TIMEOUT_MS} (about 24.8 days), got ${timeoutMs}`));
    }
    const deadline = Math.min(now + timeoutMs, options?.deadline ?? Infinity);
    const budget = Math.ceil(deadline - now);
    if (budget <= 0) {
      return Promise.reject(new NodeBinError("DEADLINE_EXCEEDED", `${method.fullName}: the caller's deadline had already passed`, { details: { method: method.fullName } }));
    }
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
      const timer = setTimeout(() => this.expire(id), budget);
      this.pending.set(id, { resolve, reject, method, mode, to, via, timer });
      this.router.started(to);
      try {
        this.sender.send(to, frame, via);
      } catch (err) {
        this.settle(id)?.reject(NodeBinError.from(err, "UNAVAILABLE"));
      }
    });
  }

  handleResponse(env: Envelope): void {
    const call = this.settle(env.id);
    if (!call) return; // late (after its deadline) or not ours: nothing waits for it
    if (env.error) {
      call.reject(NodeBinError.fromWire(env.error));
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

  /** Fails every call waiting on an endpoint `predicate` picks (its peer is gone) with UNAVAILABLE. */
  failCallsTo(predicate: (to: string, via: string | undefined) => boolean, reason: string): void {
    for (const [id, call] of this.pending) {
      if (predicate(call.to, call.via)) this.settle(id)?.reject(new NodeBinError("UNAVAILABLE", `${call.method.fullName}: ${reason}`, { details: { to: call.to } }));
    }
  }

  /** Fails every call in flight with CANCELLED and refuses new ones. */
  close(): void {
    this.closed = true;
    for (const [id, call] of this.pending) this.settle(id)?.reject(new NodeBinError("CANCELLED", `${call.method.fullName}: caller ${this.id} closed`));
  }

  private expire(id: number): void {
    const call = this.settle(id);
    call?.reject(new NodeBinError("DEADLINE_EXCEEDED", `${call.method.fullName}: no answer from ${call.to || "the endpoint"} within the deadline`, { details: { method: call.method.fullName, to: call.to } }));
  }

  private settle(id: number): PendingCall | undefined {
    const call = this.pending.get(id);
    if (!call) return undefined;
    this.pending.delete(id);
    clearTimeout(call.timer);
    this.router.ended(call.to);
    return call;
  }

  private allocateId(): number {
    // Ids wrap at 2^32; skip any still in flight (only possible after billions of calls).
    do {
      this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    } while (this.pending.has(this.nextId));
    return this.nextId;
  }
}

function wrongMode(method: MethodSchema, used: Mode): NodeBinError {
  const how = method.mode === Mode.ASYNC ? "send it (ctx.send, client.send, `node-bin client send`)" : method.mode === Mode.SYNC ? "call it (ctx.call, client.call, `node-bin client call`)" : `${modeName(method.mode)} calls are not served yet`;
  return new NodeBinError("INVALID_ARGUMENT", `${method.fullName} is ${modeName(method.mode)}, not ${modeName(used)}: ${how}`, {
    details: { method: method.fullName, mode: modeName(method.mode) },
  });
}
