/**
 * ZeroMQ transports: a listener (ROUTER, bound: where a process's nodes are
 * reached from outside) and a connector (one DEALER per remote endpoint,
 * reused: how a process reaches nodes elsewhere). Every frame is one encoded
 * Envelope. The only module that touches zeromq, and the one place that knows
 * how a socket waits under each runtime (`io` below: native on Node, polling
 * under Deno).
 *
 * zeromq.js allows one send in flight per socket, so each socket has a writer
 * that queues outgoing frames and pumps them in order; a queue past its limit
 * fails the send at once with RESOURCE_EXHAUSTED instead of growing.
 *
 * Batching: one ZeroMQ message carries one envelope per frame after the
 * routing id, and a writer puts every envelope queued for the same peer into
 * one message (up to MAX_BATCH frames / MAX_BATCH_BYTES). zeromq.js costs a
 * native call and a promise per message on each side, whatever the message
 * holds, so with many calls in flight most of that cost is shared; with one
 * call in flight nothing waits and every message holds one envelope, as
 * before. Receivers take every frame of a message.
 */
import { existsSync } from "node:fs";
import { setImmediate as nextTurn } from "node:timers/promises";
import * as zmq from "zeromq";
import { Fifo } from "../component/fifo.ts";
import { isDeno } from "../platform/platform.ts";
import { Kind, Plane, decodeEnvelope, encodeResponse, envelope, type Envelope } from "../wire/envelope.ts";
import { Mode } from "../wire/schema.ts";
import { NodeBinError, UNHANDLED_DETAIL } from "../wire/errors.ts";
import type { LocalDispatch, Peer, PeerKind, Transport } from "./transport.ts";

/** Which end of a connection a socket is: a bound ROUTER, or a DEALER connecting out. */
export type SocketRole = "listen" | "connect";

/**
 * ZeroMQ socket options to add to a socket before it binds or connects: the
 * hook a security provider uses (CurveZMQ keys, a ZAP domain). Given the
 * socket's role and the address it binds or connects to.
 */
export type SocketOptionsHook = (role: SocketRole, address: string) => Record<string, unknown>;

export interface ZmqOptions {
  /** Frames queued per socket beyond ZeroMQ's own buffers before sends fail (default 10 000). */
  queueLimit?: number;
  /** ZeroMQ high-water marks, in messages (default 10 000). */
  highWaterMark?: number;
  /** Largest frame accepted; a peer that sends a larger one is disconnected by ZeroMQ (default 16 MiB). */
  maxMessageBytes?: number;
  /** Called for frames that could not be handled, for counting and logs. */
  onDrop?: (reason: string) => void;
  /** Extra options for every socket (see SocketOptionsHook). Applied last: they win over the defaults. */
  socketOptions?: SocketOptionsHook;
  /**
   * The address a listener advertises in place of a wildcard it bound
   * ("0.0.0.0", "::"): `tcp://0.0.0.0:0` binds every interface and is
   * advertised as `tcp://ADVERTISE:PORT`.
   */
  advertise?: string;
}

/**
 * The kind of peer behind an address: an ipc socket lives in the private
 * runtime directory (the host's own processes); tcp is the network.
 */
export function peerKindOf(address: string): PeerKind {
  return address.startsWith("ipc://") ? "host" : "network";
}

/** `tcp://0.0.0.0:7400` as advertised at `advertise`; anything else unchanged. */
export function advertisedEndpoint(bound: string, advertise: string | undefined): string {
  if (!advertise) return bound;
  const m = /^tcp:\/\/(0\.0\.0\.0|\[::\]|\*|::):(\d+)$/.exec(bound);
  if (!m) return bound;
  return `tcp://${advertise.includes(":") ? `[${advertise}]` : advertise}:${m[2]}`;
}

const DEFAULTS = { queueLimit: 10_000, highWaterMark: 10_000, maxMessageBytes: 16 * 1024 * 1024 };
/**
 * Most envelopes in one ZeroMQ message, and most bytes (one envelope larger
 * than that still goes, alone). Smaller batches keep several in flight, so
 * that both processes work at once instead of taking turns: with 64 calls in
 * flight, 32 per message gave 72-77k calls/s against 52-54k with 256 and
 * 50k with 8 (bench/zmq.ts, two processes on 2 vCPUs).
 */
const MAX_BATCH = 32;
const MAX_BATCH_BYTES = 256 * 1024;

type Message = (Buffer | Uint8Array)[];

/** The part of a zeromq.js socket the strategies below use. */
interface RawSocket extends AsyncIterable<Buffer[]> {
  readonly closed: boolean;
  send(message: Message): Promise<void>;
  receive(): Promise<Buffer[]>;
}

/**
 * How sockets wait for messages and for room to send: the one place that
 * differs between runtimes, chosen once at load.
 */
interface SocketIo {
  /** Options every socket gets on top of its own. */
  readonly options: { receiveTimeout?: number; sendTimeout?: number };
  /** The messages a socket receives, until it is closed. */
  messages(socket: RawSocket): AsyncIterable<Buffer[]>;
  /**
   * Sends one message. `waits`: the socket is meant to wait while its peer's
   * pipe is full (a DEALER); otherwise (the ROUTER, sendTimeout 0) a full pipe
   * fails the send at once with EAGAIN, under every runtime.
   */
  send(socket: RawSocket, message: Message, waits: boolean): Promise<void>;
}

/** Node: zeromq.js's own waiting (libuv polls each socket's fd). Unchanged behaviour and cost. */
const nativeIo: SocketIo = {
  options: {},
  messages: (socket) => socket,
  send: (socket, message) => socket.send(message),
};

/**
 * Deno 2.9: zeromq.js's native waiting does not work. Deno's `uv_poll_start`
 * shim stops after its first callback (denoland/deno#36317) and ZeroMQ's fd is
 * edge-triggered, so the first wake-up that finds no message leaves a
 * `receive()` (or a blocking `send()`) pending forever; an expiring
 * `receiveTimeout` crashes the process (Deno's `uv_timer_init` clears
 * `handle->data`). Non-blocking calls work, so every socket gets
 * `receiveTimeout: 0` and `sendTimeout: 0` and never reaches the native
 * poller: a receive loop retries EAGAIN after a backoff (event-loop turns for
 * at least 3 ms, then sleeps of 1 ms doubling to 10 ms), back to the fastest
 * pace after every message received or sent on the socket; a send that must
 * wait (a DEALER whose peer's pipe is full) retries the same way. Cost: a
 * message that arrives during a sleep waits for its end (up to 10 ms after a
 * quiet spell), and an idle process wakes about 100 times a second.
 *
 * Socket events (`socket.events`: the connector watches "disconnect") come
 * through a separate monitor socket whose fd is signalled only when a monitor
 * message arrives, and every `receive()` of the observer starts a new poll, so
 * the shim's one-shot callback suffices: the events fire under Deno 2.9
 * (checked: connect, disconnect on a peer's exit and on a heartbeat timeout),
 * and a call in flight to a peer that dies fails with UNAVAILABLE as on Node.
 * Were a spurious wake-up ever to stall an observer, its socket would get no
 * more events: a dead peer would then still leave the membership table when
 * its lease runs out (its connection is pruned), and calls in flight to it
 * would end at their deadline (DEADLINE_EXCEEDED) instead of at once.
 */
const pollingIo: SocketIo = {
  options: { receiveTimeout: 0, sendTimeout: 0 },
  async *messages(socket) {
    const backoff = new Backoff();
    receivers.set(socket, backoff);
    try {
      while (!socket.closed) {
        let parts: Buffer[];
        try {
          parts = await socket.receive();
        } catch (err) {
          if (socket.closed) return;
          if ((err as { code?: string }).code !== "EAGAIN") throw err;
          await backoff.wait();
          continue;
        }
        backoff.reset();
        yield parts;
      }
    } finally {
      receivers.delete(socket);
    }
  },
  async send(socket, message, waits) {
    let backoff: Backoff | undefined;
    for (;;) {
      try {
        await socket.send(message);
        // What was sent is mostly a request, or an answer to a caller that
        // will send again: look for the next message at once.
        receivers.get(socket)?.wake();
        return;
      } catch (err) {
        if (!waits || socket.closed || (err as { code?: string }).code !== "EAGAIN") throw err;
      }
      await (backoff ??= new Backoff()).wait();
    }
  },
};

/**
 * How long a poller keeps trying at every event-loop turn after it last found
 * (or sent) something. Longer than one hop of a call that met a sleeping
 * poller (a "1 ms" sleep takes about 2 ms under Deno): with 1 ms, two Deno
 * processes calling each other one call at a time locked into ~3 ms per call,
 * with 2-3 ms they get back to ~0.5 ms.
 */
const SPIN_MS = 3;
/** ... and at least this many turns, however long they take (a busy host may not run this process for a while). */
const SPIN_TURNS = 16;
/** The longest sleep between two attempts of an idle poller. */
const MAX_SLEEP_MS = 10;

/** The receive loop's backoff of each socket, for sends to wake. */
const receivers = new WeakMap<RawSocket, Backoff>();

/**
 * The waits between non-blocking attempts: event-loop turns (at least
 * SPIN_TURNS, for at least SPIN_MS), then sleeps of 1 ms doubling to
 * MAX_SLEEP_MS.
 */
class Backoff {
  private turns = 0;
  private sleeps = 0;
  private since = 0;
  private wakeSleeper: (() => void) | undefined;

  /** Back to the fastest pace (after a message). */
  reset(): void {
    this.turns = 0;
    this.sleeps = 0;
  }

  /** Back to the fastest pace, ending a sleep in progress. */
  wake(): void {
    this.reset();
    const sleeper = this.wakeSleeper;
    this.wakeSleeper = undefined;
    sleeper?.();
  }

  wait(): Promise<unknown> {
    if (this.turns === 0) this.since = performance.now();
    if (this.turns < SPIN_TURNS || (this.sleeps === 0 && performance.now() - this.since < SPIN_MS)) {
      this.turns++;
      return nextTurn();
    }
    const ms = Math.min(MAX_SLEEP_MS, 2 ** this.sleeps++);
    return new Promise<void>((resolve) => {
      this.wakeSleeper = resolve;
      void tick(ms).then(resolve);
    });
  }
}

/**
 * Sleeps shared by every poller of the process: those that sleep at the same
 * time for the same length wait on one timer, so an idle process wakes about
 * 100 times a second however many sockets it has.
 */
const ticks = new Map<number, Promise<void>>();
function tick(ms: number): Promise<void> {
  let pending = ticks.get(ms);
  if (!pending) {
    pending = new Promise<void>((resolve) =>
      setTimeout(() => {
        ticks.delete(ms);
        resolve();
      }, ms),
    );
    ticks.set(ms, pending);
  }
  return pending;
}

const io: SocketIo = isDeno ? pollingIo : nativeIo;

/** Queues outgoing messages of one socket and sends them one at a time, in order. */
class Writer {
  private readonly queue = new Fifo<Message>();
  private pumping = false;

  constructor(
    private readonly socket: RawSocket,
    private readonly limit: number,
    private readonly label: string,
    private readonly onError: (err: unknown) => void,
    /** The socket waits while its peer's pipe is full (DEALER), instead of failing the send (ROUTER). */
    private readonly waits: boolean,
  ) {}

  /** Queues one envelope: `[frame]` for a DEALER, `[routing id, frame]` for a ROUTER. */
  push(message: Message): void {
    if (this.queue.length >= this.limit) {
      throw new NodeBinError("RESOURCE_EXHAUSTED", `send queue to ${this.label} is full (${this.limit} messages)`, { details: { queued: String(this.queue.length) } });
    }
    this.queue.push(message);
    if (!this.pumping) {
      this.pumping = true;
      // Start after the current run of synchronous code and microtasks: the
      // envelopes it queues (answers of a batch of requests, the next calls of
      // many callers woken together) leave in one message.
      queueMicrotask(() => void this.pump());
    }
  }

  private async pump(): Promise<void> {
    for (let message = this.queue.shift(); message; message = this.queue.shift()) {
      if (this.socket.closed) break;
      try {
        await io.send(this.socket, this.batch(message), this.waits);
      } catch (err) {
        // The whole batch is lost to the peer (gone, or its pipe full): its callers end at their deadlines or on the disconnect.
        this.onError(err);
      }
    }
    this.pumping = false;
  }

  /** `first` with the envelopes queued behind it for the same peer appended, as one message. */
  private batch(first: Message): Message {
    let next = this.queue.peek();
    if (!next) return first;
    const routed = first.length === 2;
    const rid = routed ? first[0]! : undefined;
    let bytes = first[first.length - 1]!.length;
    let frames = 1;
    let batch: Message | undefined;
    while (next && next.length === first.length && (!rid || sameId(rid, next[0]!))) {
      const frame = next[next.length - 1]!;
      if (frames >= MAX_BATCH || bytes + frame.length > MAX_BATCH_BYTES) break;
      (batch ??= [...first]).push(frame);
      frames++;
      bytes += frame.length;
      this.queue.shift();
      next = this.queue.peek();
    }
    return batch ?? first;
  }
}

function sameId(a: Buffer | Uint8Array, b: Buffer | Uint8Array): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * A bound ROUTER: requests in go to `dispatch`, each with the way back to the
 * connection it came on (Peer.reply: the message's routing id). A listener
 * routes nothing by id: it never learns where an endpoint id lives from the
 * `from` a peer claims, so a peer cannot divert answers or calls meant for
 * another. It takes no answers either: a process's calls go out through its
 * connector, and their answers come back on those DEALERs, so an answer that
 * arrives at a listener was sprayed there and is dropped (counted).
 * One listener binds addresses of one kind only (ipc, or tcp):
 * ZeroMQ does not tell which bound address a message came in on, and the
 * kind of peer decides what it may ask (wire/control.ts AUTHORITY).
 */
export class ZmqListener implements Transport {
  readonly name = "zmq-listen";
  /** The kind of peer every frame of this listener comes from. */
  readonly peer: PeerKind;
  private readonly socket: zmq.Router;
  private readonly writer: Writer;
  private readonly onDrop: (reason: string) => void;
  private readonly done: Promise<void>;
  /** The endpoints as others reach them: tcp port 0 resolved, a wildcard address replaced by the advertised one. */
  readonly endpoints: string[];
  /** The endpoints actually bound (a wildcard stays a wildcard). */
  readonly bound: string[];

  private constructor(socket: zmq.Router, bound: string[], peer: PeerKind, private readonly dispatch: LocalDispatch, options: ZmqOptions) {
    this.socket = socket;
    this.peer = peer;
    this.bound = bound;
    this.endpoints = bound.map((e) => advertisedEndpoint(e, options.advertise));
    this.onDrop = options.onDrop ?? (() => {});
    this.writer = new Writer(socket, options.queueLimit ?? DEFAULTS.queueLimit, "listener peers", (err) => this.onDrop(`send failed: ${(err as Error).message}`), false);
    this.done = this.receiveLoop();
  }

  /**
   * Binds a ROUTER at each address (all ipc, or all tcp). Throws UNAVAILABLE
   * naming the address that could not be bound, INVALID_ARGUMENT for a mix
   * of kinds.
   */
  static async bind(addresses: string[], dispatch: LocalDispatch, options: ZmqOptions = {}): Promise<ZmqListener> {
    const kinds = new Set(addresses.map(peerKindOf));
    if (kinds.size !== 1) throw new NodeBinError("INVALID_ARGUMENT", `a listener binds addresses of one kind (ipc or tcp), got ${addresses.join(" ") || "none"}`);
    const peer = peerKindOf(addresses[0]!);
    const hwm = options.highWaterMark ?? DEFAULTS.highWaterMark;
    const socket = new zmq.Router({
      mandatory: true, // unknown peer: an error we count, not a silent drop
      // One writer serves every peer: a peer whose pipe is full must not stall
      // the answers to all the others. Its answer is dropped and counted (its
      // caller ends at its deadline); a DEALER, with one peer, waits instead.
      sendTimeout: 0,
      linger: 0,
      sendHighWaterMark: hwm,
      receiveHighWaterMark: hwm,
      maxMessageSize: options.maxMessageBytes ?? DEFAULTS.maxMessageBytes,
      ...io.options,
      ...options.socketOptions?.("listen", addresses[0]!),
    });
    const bound: string[] = [];
    for (const address of addresses) {
      try {
        await socket.bind(address);
        bound.push(socket.lastEndpoint ?? address);
      } catch (err) {
        socket.close();
        throw new NodeBinError("UNAVAILABLE", `cannot listen at ${address}: ${(err as Error).message}`, { details: { endpoint: address }, cause: err });
      }
    }
    return new ZmqListener(socket, bound, peer, dispatch, options);
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const parts of io.messages(this.socket)) {
        const rid = parts[0];
        if (parts.length < 2 || !rid) {
          this.onDrop(`malformed message of ${parts.length} parts`);
          continue;
        }
        // One envelope per frame after the routing id (see "Batching" above).
        for (let i = 1; i < parts.length; i++) this.receive(rid, parts[i]!);
      }
    } catch (err) {
      if (!this.socket.closed) this.onDrop(`receive failed: ${(err as Error).message}`);
    }
  }

  private receive(rid: Buffer, frame: Buffer): void {
    const env = decodeEnvelope(frame);
    if (env instanceof NodeBinError) {
      // No trustworthy id to answer to: tell the connection itself, with id 0.
      this.onDrop(env.message);
      this.answerPeer(rid, env);
      return;
    }
    if (env.kind === Kind.RESPONSE || env.kind === Kind.STREAM_ITEM || env.kind === Kind.STREAM_END) {
      this.onDrop(`an answer arrived at a listener (${JSON.stringify(env.method)} id ${env.id} from ${JSON.stringify(env.from)}): answers come back on the connections calls go out on`);
      return;
    }
    const peer: Peer = { kind: this.peer, reply: (answer) => this.writer.push([rid, answer]) };
    if (!this.dispatch(env, peer)) {
      this.onDrop(`no endpoint ${JSON.stringify(env.to)} here`);
      if (env.kind === Kind.REQUEST && (env.mode !== Mode.ASYNC || env.plane === Plane.APPLICATION)) {
        this.answerPeer(rid, new NodeBinError("NOT_FOUND", `no endpoint ${JSON.stringify(env.to)} at ${this.endpoints.join(", ")}; the membership table may be stale`, { details: { to: env.to } }), env);
      }
    }
  }

  private answerPeer(rid: Buffer, error: NodeBinError, request?: Envelope): void {
    const frame = encodeResponse(request ?? envelope({}), "", undefined, error.toWire());
    try {
      this.writer.push([rid, frame]);
    } catch {
      // Send queue full: the error reply is dropped (already counted above).
    }
  }

  /** Whether close() ran (or the socket closed). */
  get closed(): boolean {
    return this.socket.closed;
  }

  /** A listener delivers nothing by endpoint id (see above): answers leave through Peer.reply. */
  deliver(_to: string, _frame: Uint8Array): boolean {
    return false;
  }

  async close(): Promise<void> {
    if (!this.socket.closed) this.socket.close();
    await this.done;
  }
}

/**
 * Outbound DEALERs, one per remote endpoint, created on first use and reused.
 * `resolve` says which endpoint serves an endpoint id (from the membership
 * table); frames that come back go to `dispatch`. `onLost` hears of an
 * endpoint whose connection dropped, so that calls waiting on it fail now.
 */
export class ZmqConnector implements Transport {
  readonly name = "zmq-connect";
  private readonly sockets = new Map<string, { socket: zmq.Dealer; writer: Writer; done: Promise<void> }>();
  private readonly options: ZmqOptions;
  private closed = false;

  constructor(
    private readonly resolve: (to: string) => string | undefined,
    private readonly dispatch: LocalDispatch,
    private readonly onLost: (endpoint: string) => void = () => {},
    options: ZmqOptions = {},
  ) {
    this.options = options;
  }

  deliver(to: string, frame: Uint8Array): boolean {
    const endpoint = this.resolve(to);
    if (endpoint === undefined) return false;
    this.deliverVia(endpoint, frame);
    return true;
  }

  deliverVia(endpoint: string, frame: Uint8Array): void {
    if (this.closed) throw new NodeBinError("UNAVAILABLE", "connector is closed");
    this.connection(endpoint).writer.push([frame]);
  }

  /** Closes the connection to `endpoint` (a peer known to be gone), if open. */
  disconnect(endpoint: string): void {
    const conn = this.sockets.get(endpoint);
    if (!conn) return;
    this.sockets.delete(endpoint);
    if (!conn.socket.closed) conn.socket.close();
  }

  private connection(endpoint: string) {
    let conn = this.sockets.get(endpoint);
    if (conn) return conn;
    // An ipc peer whose socket file is gone has exited: libzmq would queue the
    // frame for a reconnect that never comes, and the caller would wait out its
    // deadline. The frame never left, so the caller may send it elsewhere.
    if (endpoint.startsWith("ipc://") && !existsSync(endpoint.slice("ipc://".length))) {
      throw new NodeBinError("UNAVAILABLE", `no process listens at ${endpoint} (it exited)`, { details: { endpoint, [UNHANDLED_DETAIL]: "true" } });
    }
    const hwm = this.options.highWaterMark ?? DEFAULTS.highWaterMark;
    const socket = new zmq.Dealer({
      linger: 0,
      sendHighWaterMark: hwm,
      receiveHighWaterMark: hwm,
      maxMessageSize: this.options.maxMessageBytes ?? DEFAULTS.maxMessageBytes,
      // ZeroMQ-level heartbeats notice a peer that vanished without closing (killed host, cut link).
      heartbeatInterval: 1000,
      heartbeatTimeout: 3000,
      ...io.options,
      ...this.options.socketOptions?.("connect", endpoint),
    });
    socket.events.on("disconnect", () => {
      // The calls waiting on this peer are failed (UNAVAILABLE); their requests
      // must not arrive later. libzmq keeps a connecting socket's queue across
      // reconnects and would deliver them when the link returns, where a
      // relative deadline makes them look fresh. So the socket and its queue
      // go; the next send makes a new one.
      if (this.sockets.get(endpoint)?.socket === socket) this.disconnect(endpoint);
      this.onLost(endpoint);
    });
    socket.connect(endpoint);
    const onDrop = this.options.onDrop ?? (() => {});
    const writer = new Writer(socket, this.options.queueLimit ?? DEFAULTS.queueLimit, endpoint, (err) => onDrop(`send to ${endpoint} failed: ${(err as Error).message}`), true);
    // Answers to requests that came in over this DEALER go back over it.
    const peer: Peer = { kind: peerKindOf(endpoint), reply: (answer) => writer.push([answer]) };
    conn = { socket, writer, done: this.receiveLoop(socket, peer, onDrop) };
    this.sockets.set(endpoint, conn);
    return conn;
  }

  private async receiveLoop(socket: zmq.Dealer, peer: Peer, onDrop: (reason: string) => void): Promise<void> {
    try {
      for await (const frames of io.messages(socket)) {
        for (const frame of frames) {
          const env = decodeEnvelope(frame);
          if (env instanceof NodeBinError) onDrop(env.message);
          else if (!this.dispatch(env, peer)) onDrop(`no local endpoint ${JSON.stringify(env.to)}`);
        }
      }
    } catch (err) {
      if (!socket.closed) onDrop(`receive failed: ${(err as Error).message}`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const conns = [...this.sockets.values()];
    this.sockets.clear();
    for (const { socket } of conns) if (!socket.closed) socket.close();
    await Promise.all(conns.map((c) => c.done));
  }
}
