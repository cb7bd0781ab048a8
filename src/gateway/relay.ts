/**
 * The relay of one side of a gateway: what the proxies of that side (the
 * near side) do with the requests their network sends them. Each goes on
 * into the far network through the far side's relay caller, routed by
 * method name as any call is there (retries, re-routing, the deadline), and
 * only to that network's own nodes (scope "network": never to a proxy, so
 * no chain or loop forms):
 * - SYNC: the far answer's value, or its error, back to the near caller
 *   unchanged (`origin` names the far node; an error the relay itself makes
 *   names this side);
 * - ASYNC: the far node's acceptance relayed (the near caller learns that a
 *   node of the far network queued it, or why none did);
 * - STREAM: consumed on the far side with credit (the caller's stream API:
 *   at most `window` items buffered here) and produced on the near side
 *   against the near consumer's CREDIT, ended by its CANCEL (acknowledged,
 *   as a node does), its deadline, the far stream's end or error, or the
 *   near connection closing; every end ends the other half.
 * The remaining deadline and the meta go with every request; a relayed
 * request never outlives its deadline (the far caller's timer, and for
 * streams one of our own). Bounded: calls in flight and streams open per
 * side (RESOURCE_EXHAUSTED past them, unhandled: a caller may try another
 * gateway).
 */
import type { Logger } from "../component/context.ts";
import { MAX_WINDOW } from "../component/node.ts";
import { networkLabel } from "../membership/network-name.ts";
import { systemClock, type Clock, type Timer } from "../platform/clock.ts";
import type { RoutingCaller } from "../routing/caller.ts";
import type { ConsumerStream } from "../routing/stream.ts";
import type { Peer } from "../transport/transport.ts";
import { Kind, Plane, encodeEnvelope, encodeResponse, envelope, type Envelope } from "../wire/envelope.ts";
import { NodeBinError, UNHANDLED_DETAIL } from "../wire/errors.ts";
import { Mode } from "../wire/schema.ts";

export interface RelayLimits {
  /** SYNC and ASYNC requests relayed and not yet answered (default 4096). */
  calls: number;
  /** STREAM calls relayed and open (default 256). */
  streams: number;
}

export const DEFAULT_RELAY_LIMITS: RelayLimits = { calls: 4096, streams: 256 };

/** A relayed request's time when it came with none (deadlineMs 0): the callers' default. */
const DEFAULT_TIMEOUT_MS = 30_000;
/** setTimeout's ceiling, and so the longest a relayed request may be given. */
const MAX_TIMEOUT_MS = 2_147_483_647;

export interface RelayOptions {
  /** This side's process id: the origin of the errors the relay itself makes. */
  id: string;
  /** The far network's name (for messages). */
  farNetwork: string;
  /** The far side's relay caller (its router sees no proxy as a node of its own). */
  far: RoutingCaller;
  /** Sends a frame to an endpoint of the near side by id: answers to requests that came with no way back (the process itself). */
  nearSend(to: string, frame: Uint8Array): void;
  limits?: Partial<RelayLimits>;
  log: Logger;
  clock?: Clock;
}

/** One relayed STREAM, from its request to its end. */
interface RelayedStream {
  readonly key: string;
  readonly proxy: string;
  readonly env: Envelope;
  readonly peer: Peer;
  readonly far: ConsumerStream<Uint8Array>;
  /** Items the near consumer takes before it must grant more. */
  credit: number;
  sent: number;
  timer: Timer | undefined;
  /** Wakes the pump waiting for credit (or to see the end). */
  wake: (() => void) | undefined;
  over: boolean;
}

/** What the relay of a side did, for Ping-like reports and tests. */
export interface RelayStats {
  /** Calls and streams in flight now. */
  calls: number;
  streams: number;
  /** Requests relayed since start (calls and streams). */
  relayed: number;
  /** Refused at the bounds. */
  refused: number;
  /** CREDIT and CANCEL frames for no open stream of their connection: dropped. */
  streamFramesDropped: number;
}

export class Relay {
  private readonly limits: RelayLimits;
  private readonly clock: Clock;
  private calls = 0;
  private readonly streams = new Map<string, RelayedStream>();
  private relayed = 0;
  private refused = 0;
  private streamFramesDropped = 0;
  private closed = false;

  constructor(private readonly options: RelayOptions) {
    this.limits = { ...DEFAULT_RELAY_LIMITS, ...options.limits };
    this.clock = options.clock ?? systemClock;
  }

  stats(): RelayStats {
    return { calls: this.calls, streams: this.streams.size, relayed: this.relayed, refused: this.refused, streamFramesDropped: this.streamFramesDropped };
  }

  /**
   * An application frame for proxy `proxy`, which serves the methods
   * `serves` says (its far component's). Never throws.
   */
  receive(proxy: string, serves: (method: string) => boolean, env: Envelope, peer: Peer): void {
    if (env.kind === Kind.CREDIT || env.kind === Kind.CANCEL) return this.streamControl(env, peer);
    // Answers: a proxy makes no calls of its own.
    if (env.kind !== Kind.REQUEST) return;
    if (this.closed) return this.answer(proxy, env, peer, undefined, this.refusal("UNAVAILABLE", `gateway side ${this.options.id} is closing`));
    if (env.plane !== Plane.APPLICATION) return this.answer(proxy, env, peer, undefined, new NodeBinError("UNIMPLEMENTED", `proxy ${proxy} serves no control method ${env.method}`, { origin: this.options.id }));
    if (!serves(env.method)) {
      return this.answer(proxy, env, peer, undefined, new NodeBinError("NOT_FOUND", `proxy ${proxy} does not serve ${env.method}`, { origin: this.options.id, details: { method: env.method } }));
    }
    if (env.mode === Mode.STREAM) return this.openStream(proxy, env, peer);
    if (env.mode !== Mode.SYNC && env.mode !== Mode.ASYNC) {
      return this.answer(proxy, env, peer, undefined, new NodeBinError("INVALID_ARGUMENT", `${env.method}: a gateway relays SYNC, ASYNC and STREAM requests (broadcasts stay in their network)`, { origin: this.options.id, details: { method: env.method } }));
    }
    if (this.calls >= this.limits.calls) {
      this.refused++;
      return this.answer(proxy, env, peer, undefined, this.refusal("RESOURCE_EXHAUSTED", `gateway side ${this.options.id}: ${this.limits.calls} relayed calls in flight already`, { limit: "relayedCalls" }));
    }
    this.calls++;
    this.relayed++;
    const mode = env.mode;
    this.options.far.callEncoded(mode, env.method, env.value, this.farOptions(env)).then(
      (value) => {
        this.calls--;
        this.answer(proxy, env, peer, mode === Mode.SYNC ? value : undefined, undefined);
      },
      (err: unknown) => {
        this.calls--;
        this.answer(proxy, env, peer, undefined, this.relayError(err, env.method));
      },
    );
  }

  /** The near connection `connection` closed: the streams it opened end (untold: nobody is there), and so do their far halves. */
  connectionClosed(connection: string): void {
    for (const s of [...this.streams.values()]) {
      if ((s.peer.connection ?? "local") !== connection) continue;
      this.endStream(s, new NodeBinError("UNAVAILABLE", `${s.env.method}: the consumer's connection closed`, { origin: this.options.id }), false);
    }
  }

  /** Refuses new requests and ends every open stream (UNAVAILABLE, told). Calls in flight end with the far caller (closed with its process). */
  close(): void {
    this.closed = true;
    for (const s of [...this.streams.values()]) this.endStream(s, new NodeBinError("UNAVAILABLE", `${s.env.method}: the gateway closed after ${s.sent} item(s)`, { origin: this.options.id }), true);
  }

  /** The options of the far call: the time left, the meta, only the far network's own nodes. */
  private farOptions(env: Envelope): { timeoutMs: number; meta: Record<string, string>; scope: "network" } {
    const timeoutMs = env.deadlineMs > 0 ? Math.min(env.deadlineMs, MAX_TIMEOUT_MS) : DEFAULT_TIMEOUT_MS;
    return { timeoutMs, meta: env.meta, scope: "network" };
  }

  /** A refusal before anything was relayed: unhandled, so the caller may send it elsewhere (another gateway). */
  private refusal(code: "UNAVAILABLE" | "RESOURCE_EXHAUSTED", message: string, details: Record<string, string> = {}): NodeBinError {
    return new NodeBinError(code, message, { origin: this.options.id, details: { ...details, [UNHANDLED_DETAIL]: "true" } });
  }

  /**
   * A far call's error as the near caller gets it: a far node's unchanged
   * (its origin names it); the far side's own routing finding no node of the
   * method (it left that network) an unhandled UNAVAILABLE, so the near caller
   * may try another gateway; any other error the relay made names this side.
   */
  private relayError(err: unknown, method: string): NodeBinError {
    const e = NodeBinError.from(err);
    if (e.origin) return e;
    if (e.code === "NOT_FOUND") return this.refusal("UNAVAILABLE", `network ${networkLabel(this.options.farNetwork)} has no node serving ${method} now`, { method });
    return new NodeBinError(e.code, e.message, { details: e.details, origin: this.options.id });
  }

  /** Answers a SYNC or ASYNC request (or refuses any request) on the connection it came in on. */
  private answer(proxy: string, env: Envelope, peer: Peer, value: Uint8Array | undefined, error: NodeBinError | undefined): void {
    try {
      this.sendNear(peer, env.from, encodeResponse(env, proxy, value, error?.toWire()));
    } catch (err) {
      this.options.log.debug(`cannot answer ${env.from} for ${env.method}: ${NodeBinError.from(err)}`);
    }
  }

  private sendNear(peer: Peer, to: string, frame: Uint8Array): void {
    if (peer.reply) peer.reply(frame);
    else this.options.nearSend(to, frame);
  }

  private openStream(proxy: string, env: Envelope, peer: Peer): void {
    const key = streamKey(peer.connection ?? "local", env.id, env.from);
    if (this.streams.has(key)) {
      return this.answer(proxy, env, peer, undefined, new NodeBinError("ALREADY_EXISTS", `${env.method}: stream id ${env.id} of ${JSON.stringify(env.from)} is already open on this connection`, { origin: this.options.id }));
    }
    if (this.streams.size >= this.limits.streams) {
      this.refused++;
      return this.answer(proxy, env, peer, undefined, this.refusal("RESOURCE_EXHAUSTED", `gateway side ${this.options.id}: ${this.limits.streams} relayed streams open already`, { limit: "relayedStreams" }));
    }
    this.relayed++;
    const options = this.farOptions(env);
    // The far window is the near consumer's: what waits here is at most what it may take.
    const window = Math.max(1, Math.min(env.credit || 1, MAX_WINDOW));
    const far = this.options.far.streamEncoded(env.method, env.value, { ...options, window });
    const s: RelayedStream = { key, proxy, env, peer, far, credit: Math.min(env.credit, MAX_WINDOW), sent: 0, timer: undefined, wake: undefined, over: false };
    this.streams.set(key, s);
    s.timer = this.clock.after(options.timeoutMs, () => {
      s.timer = undefined;
      this.endStream(s, new NodeBinError("DEADLINE_EXCEEDED", `${env.method}: the call's deadline passed after ${s.sent} item(s) (it covers the whole stream)`, { origin: this.options.id, details: { limit: "deadline", method: env.method } }), true);
    });
    void this.pump(s);
  }

  /** Moves items from the far stream to the near consumer while it has credit, until either end. Never rejects. */
  private async pump(s: RelayedStream): Promise<void> {
    while (!s.over) {
      if (s.credit <= 0) {
        await new Promise<void>((resolve) => (s.wake = resolve));
        s.wake = undefined;
        continue;
      }
      let step: IteratorResult<Uint8Array>;
      try {
        step = await s.far.next();
      } catch (err) {
        this.endStream(s, this.relayError(err, s.env.method), true);
        return;
      }
      if (s.over) return;
      if (step.done) {
        this.endStream(s, null, true);
        return;
      }
      if (!this.sendStreamFrame(s, Kind.STREAM_ITEM, step.value, undefined)) {
        this.endStream(s, new NodeBinError("UNAVAILABLE", `${s.env.method}: the consumer cannot be reached`, { origin: this.options.id }), false);
        return;
      }
      s.credit--;
      s.sent++;
    }
  }

  /** A near consumer's CREDIT or CANCEL, for a stream its own connection opened (else counted and dropped). */
  private streamControl(env: Envelope, peer: Peer): void {
    const s = this.streams.get(streamKey(peer.connection ?? "local", env.id, env.from));
    if (!s || s.over) {
      this.streamFramesDropped++;
      return;
    }
    if (env.kind === Kind.CANCEL) {
      this.endStream(s, new NodeBinError("CANCELLED", `${env.method}: cancelled by the consumer after ${s.sent} item(s)`, { origin: this.options.id }), true);
      return;
    }
    s.credit = Math.min(s.credit + env.credit, MAX_WINDOW);
    if (s.credit > 0) s.wake?.();
  }

  /**
   * Ends a relayed stream once: `error` null is its normal end. `tell`: the
   * near consumer gets a STREAM_END saying so. The far half is cancelled
   * when it is still open (its producer's generator is returned).
   */
  private endStream(s: RelayedStream, error: NodeBinError | null, tell: boolean): void {
    if (s.over) return;
    s.over = true;
    s.timer?.cancel();
    s.timer = undefined;
    this.streams.delete(s.key);
    if (tell) this.sendStreamFrame(s, Kind.STREAM_END, undefined, error ?? undefined);
    s.wake?.();
    if (!s.far.ended) void s.far.return();
  }

  private sendStreamFrame(s: RelayedStream, kind: Kind, value: Uint8Array | undefined, error: NodeBinError | undefined): boolean {
    const { env } = s;
    try {
      const frame = encodeEnvelope(
        envelope({ id: env.id, plane: env.plane, mode: Mode.STREAM, kind, from: s.proxy, to: env.from, method: env.method, state: env.state, ...(value ? { value } : {}), ...(error ? { error: error.toWire() } : {}) }),
      );
      this.sendNear(s.peer, env.from, frame);
      return true;
    } catch (err) {
      this.options.log.debug(`cannot send ${kind === Kind.STREAM_ITEM ? "an item" : "the end"} of ${env.method} to ${env.from}: ${NodeBinError.from(err)}`);
      return false;
    }
  }
}

/** Where a stream's CREDIT and CANCEL frames find it: its connection, its id, and the `from` its request claimed (as component/node.ts keys its streams). */
function streamKey(connection: string, id: number, from: string): string {
  return `${connection}\u0000${id}\u0000${from}`;
}
