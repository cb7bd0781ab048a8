/**
 * ZeroMQ transports: a listener (ROUTER, bound: where a process's nodes are
 * reached from outside) and a connector (one DEALER per remote endpoint,
 * reused: how a process reaches nodes elsewhere). Every frame is one encoded
 * Envelope. With zap.ts (the connection gate) and zmq-io.ts (how a socket
 * waits under each runtime: native on Node, polling under Deno), the only
 * modules that touch zeromq.
 *
 * Bounds: each frame (maxFrameBytes, enforced by libzmq), the envelopes and
 * bytes of one message (maxFrames, maxMessageBytes: past them a message is
 * dropped whole), a listener's connections (maxConnections, at the gate), and
 * each socket's send queue (queueLimit). Every refusal is counted (DropCounter).
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
import * as zmq from "zeromq";
import { Fifo } from "../component/fifo.ts";
import { Kind, Plane, decodeEnvelope, encodeResponse, envelope, partialEnvelope, type Envelope } from "../wire/envelope.ts";
import { Mode } from "../wire/schema.ts";
import { NodeBinError, UNHANDLED_DETAIL } from "../wire/errors.ts";
import type { LocalDispatch, Peer, PeerKind, Transport } from "./transport.ts";
import { enterGate, type GateEntry } from "./zap.ts";
import { io, type Message, type RawSocket } from "./zmq-io.ts";

/** Which end of a connection a socket is: a bound ROUTER, or a DEALER connecting out. */
export type SocketRole = "listen" | "connect";

/**
 * ZeroMQ socket options to add to a socket before it binds or connects: the
 * hook a security provider uses (CurveZMQ keys, a ZAP domain). Given the
 * socket's role and the address it binds or connects to.
 */
export type SocketOptionsHook = (role: SocketRole, address: string) => Record<string, unknown>;

/** What the connection gate decides about one tcp connection (see WireSecurity.admit). */
export type ZapVerdict = { ok: true; user: string } | { ok: false; reason: string };

/** One way to connect securely: the socket options of one key of a keyring. */
export interface ConnectSecurity {
  /** Public id of the key (for messages). */
  keyId: string;
  options: Record<string, unknown>;
}

/**
 * What a security provider (security/provider.ts) applies to tcp sockets;
 * ipc sockets are the private runtime directory's and carry none of it.
 */
export interface WireSecurity {
  /** Options of a listener's socket (CurveZMQ server keys). */
  listenOptions(): Record<string, unknown>;
  /**
   * Ways to connect, in order of preference: a connection whose handshake
   * fails is made again with the next (a peer still serving under an older
   * key of the ring, during a rotation); when every one failed, calls over it
   * end UNAUTHENTICATED.
   */
  connect(): ConnectSecurity[];
  /** Whether a connection to a listener is admitted: its ZAP mechanism ("NULL", "CURVE", ...), credentials (a CURVE client key) and address. */
  admit(mechanism: string, credentials: Uint8Array[], address: string): ZapVerdict;
  describe(): string;
}

export interface ZmqOptions {
  /** Frames queued per socket beyond ZeroMQ's own buffers before sends fail (default 10 000). */
  queueLimit?: number;
  /** ZeroMQ high-water marks, in messages (default 10 000). */
  highWaterMark?: number;
  /** Largest frame (one envelope) accepted; a peer that sends a larger one is disconnected by ZeroMQ (ZMQ_MAXMSGSIZE; default 16 MiB). */
  maxFrameBytes?: number;
  /** Most envelopes (frames) in one ZeroMQ message; a message with more is dropped whole (default 64; a writer sends at most MAX_BATCH). */
  maxFrames?: number;
  /** Most bytes in one ZeroMQ message, all frames together; a larger one is dropped whole (default 32 MiB). */
  maxMessageBytes?: number;
  /** Most connections a listener holds at once; one past it is refused in its handshake (default 2048; see zap.ts). */
  maxConnections?: number;
  /** Called for frames that could not be handled, for counting (by `counter`) and logs. */
  onDrop?: (reason: string, counter: DropCounter) => void;
  /** Authentication and encryption of tcp sockets (none: plain tcp). */
  security?: WireSecurity;
  /**
   * Hears of a listener's connection (Peer.connection) that closed, as
   * libzmq reports it (ZMQ_ROUTER_NOTIFY: the peer's process exited, its
   * socket closed, or its heartbeats stopped), or that lost frames sent to
   * it (its pipe full, or gone): the streams it opened end.
   */
  onConnectionClosed?: (connection: string) => void;
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

/**
 * What a transport drops or refuses, by reason: the counters a process
 * reports (Ping's `refused`, the governor's status). Every bound past which
 * input is refused has one.
 */
export type DropCounter =
  | "undecodable" // a frame that is no envelope
  | "tooManyFrames" // a message past maxFrames
  | "messageTooLarge" // a message past maxMessageBytes
  | "connectionsRefused" // a connection past maxConnections
  | "unauthenticated" // a connection without a key of the ring (refused in its handshake)
  | "answerAtListener" // an answer sprayed at a listener: answers come back on the connector
  | "noEndpoint" // an envelope for an endpoint id this process does not have
  | "sendFailed"; // an outgoing frame lost (peer gone, pipe full)

const MiB = 1024 * 1024;
export const WIRE_DEFAULTS = { queueLimit: 10_000, highWaterMark: 10_000, maxFrameBytes: 16 * MiB, maxFrames: 64, maxMessageBytes: 32 * MiB, maxConnections: 2048 };
const DEFAULTS = WIRE_DEFAULTS;

/**
 * The wire bounds set in the environment (NODEBIN_MAX_FRAME_BYTES,
 * NODEBIN_MAX_FRAMES, NODEBIN_MAX_MESSAGE_BYTES, NODEBIN_MAX_CONNECTIONS),
 * each a positive integer. Throws INVALID_ARGUMENT naming a variable that is
 * set to anything else.
 */
export function wireLimitsFromEnv(env: Record<string, string | undefined>): Pick<ZmqOptions, "maxFrameBytes" | "maxFrames" | "maxMessageBytes" | "maxConnections"> {
  const out: Pick<ZmqOptions, "maxFrameBytes" | "maxFrames" | "maxMessageBytes" | "maxConnections"> = {};
  const names = { maxFrameBytes: "NODEBIN_MAX_FRAME_BYTES", maxFrames: "NODEBIN_MAX_FRAMES", maxMessageBytes: "NODEBIN_MAX_MESSAGE_BYTES", maxConnections: "NODEBIN_MAX_CONNECTIONS" } as const;
  for (const [key, name] of Object.entries(names) as [keyof typeof names, string][]) {
    const raw = env[name];
    if (raw === undefined || raw === "") continue;
    if (!/^[1-9][0-9]{0,15}$/.test(raw) || !Number.isSafeInteger(Number(raw))) {
      throw new NodeBinError("INVALID_ARGUMENT", `${name} must be a positive integer, got ${JSON.stringify(raw)}`, { details: { variable: name } });
    }
    out[key] = Number(raw);
  }
  return out;
}

/**
 * Whether a received message is within the bounds: the counter to drop it
 * under, or undefined. libzmq hands a message over only once it has every
 * frame, and bounds only each frame (ZMQ_MAXMSGSIZE): what a peer sent is in
 * memory already, so a message past the bounds is dropped whole, unread, and
 * its frames released at once (see releaseMessage).
 */
function overBounds(parts: Buffer[], first: number, maxFrames: number, maxBytes: number): DropCounter | undefined {
  if (parts.length - first > maxFrames) return "tooManyFrames";
  let bytes = 0;
  for (let i = first; i < parts.length; i++) bytes += parts[i]!.length;
  return bytes > maxBytes ? "messageTooLarge" : undefined;
}

/**
 * Empties a received message's array once its frames are handled. A
 * suspended async iterator keeps the last value it yielded reachable until
 * the next message comes, and zeromq.js's frames are external memory: without
 * this, one large message (hundreds of MiB from a hostile peer) stays in the
 * process until that socket's next message.
 */
function releaseMessage(parts: Buffer[]): void {
  parts.length = 0;
}
/**
 * Most envelopes in one ZeroMQ message, and most bytes (one envelope larger
 * than that still goes, alone). Smaller batches keep several in flight, so
 * that both processes work at once instead of taking turns: with 64 calls in
 * flight, 32 per message gave 72-77k calls/s against 52-54k with 256 and
 * 50k with 8 (bench/zmq.ts, two processes on 2 vCPUs).
 */
const MAX_BATCH = 32;
const MAX_BATCH_BYTES = 256 * 1024;

/** Listeners made in this process so far (see ZmqListener.connectionKey). */
let listenerSerial = 0;


/** Queues outgoing messages of one socket and sends them one at a time, in order. */
class Writer {
  private readonly queue = new Fifo<Message>();
  private pumping = false;

  constructor(
    private readonly socket: RawSocket,
    private readonly limit: number,
    private readonly label: string,
    /** Hears of a message lost to its peer (`message`: its first envelope, for a ROUTER with the routing id first). */
    private readonly onError: (err: unknown, message: Message) => void,
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
        this.onError(err, message);
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
  private readonly onDrop: (reason: string, counter: DropCounter) => void;
  private readonly done: Promise<void>;
  private readonly maxFrames: number;
  private readonly maxMessageBytes: number;
  /** Connection numbers by routing id (see connectionName). */
  private readonly connectionNumbers = new Map<string, number>();
  private connectionCount = 0;
  private readonly maxNames: number;
  /** Whether every connection passed a security provider's ZAP check (a keyed tcp listener). */
  private readonly keyed: boolean;
  /** Tells this listener's connections from every other's in Peer.connection. */
  private readonly serial = ++listenerSerial;
  private readonly onConnectionClosed: ((connection: string) => void) | undefined;
  /** The endpoints as others reach them: tcp port 0 resolved, a wildcard address replaced by the advertised one. */
  readonly endpoints: string[];
  /** The endpoints actually bound (a wildcard stays a wildcard). */
  readonly bound: string[];

  private constructor(socket: zmq.Router, bound: string[], peer: PeerKind, private readonly dispatch: LocalDispatch, options: ZmqOptions, private readonly gate: GateEntry) {
    this.socket = socket;
    this.peer = peer;
    this.bound = bound;
    this.endpoints = bound.map((e) => advertisedEndpoint(e, options.advertise));
    this.onDrop = options.onDrop ?? (() => {});
    this.maxFrames = options.maxFrames ?? DEFAULTS.maxFrames;
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULTS.maxMessageBytes;
    this.maxNames = 4 * (options.maxConnections ?? DEFAULTS.maxConnections);
    this.keyed = peer === "network" && options.security !== undefined;
    this.onConnectionClosed = options.onConnectionClosed;
    this.writer = new Writer(
      socket,
      options.queueLimit ?? DEFAULTS.queueLimit,
      "listener peers",
      (err, message) => {
        this.onDrop(`send failed: ${(err as Error).message}`, "sendFailed");
        // Frames of a stream were lost (the peer gone, or its pipe full): the stream cannot go on in order.
        if (message.length === 2) this.onConnectionClosed?.(this.connectionKey(message[0]! as Buffer));
      },
      false,
    );
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
    const onDrop = options.onDrop ?? (() => {});
    const maxConnections = options.maxConnections ?? DEFAULTS.maxConnections;
    // tcp is the network: with a security provider, every connection must prove a cluster key (ipc is the runtime directory's).
    const security = peer === "network" ? options.security : undefined;
    const gate = await enterGate({
      max: maxConnections,
      onRefused: (address, live) => onDrop(`refused a connection${address ? ` from ${address}` : ""} to ${addresses.join(" ")}: ${live} of ${maxConnections} connections open`, "connectionsRefused"),
      ...(security
        ? {
            admit: (mechanism: string, credentials: Uint8Array[], address: string) => security.admit(mechanism, credentials, address),
            onUnauthenticated: (address: string, reason: string) => onDrop(`refused a connection${address ? ` from ${address}` : ""} to ${addresses.join(" ")}: ${reason}`, "unauthenticated"),
          }
        : {}),
    });
    const socket = new zmq.Router({
      mandatory: true, // unknown peer: an error we count, not a silent drop
      // One writer serves every peer: a peer whose pipe is full must not stall
      // the answers to all the others. Its answer is dropped and counted (its
      // caller ends at its deadline); a DEALER, with one peer, waits instead.
      sendTimeout: 0,
      linger: 0,
      sendHighWaterMark: hwm,
      receiveHighWaterMark: hwm,
      maxMessageSize: options.maxFrameBytes ?? DEFAULTS.maxFrameBytes,
      // Every connection passes the gate (zap.ts: the bound on connections).
      zapDomain: gate.domain,
      // A connection that has not finished its handshake within this is closed (libzmq's default is 30 s).
      handshakeInterval: 10_000,
      // Heartbeats of its own: a peer that stops answering them (its host vanished, its process is
      // stopped) is disconnected after 6 s, and the streams it consumes here end (ZMQ_ROUTER_NOTIFY)
      // instead of holding their nodes until the idle limit. (The peers' heartbeat TTL would do it
      // from their side, but libzmq does not time a ROUTER's connections out by it.)
      heartbeatInterval: 2000,
      heartbeatTimeout: 6000,
      ...io.options,
      ...security?.listenOptions(),
      ...options.socketOptions?.("listen", addresses[0]!),
    });
    gate.watch(socket);
    // ZMQ_ROUTER_NOTIFY (97) = ZMQ_NOTIFY_DISCONNECT (2): libzmq hands over [routing id, empty frame]
    // when a connection closes, so the streams a peer opened end with it (see receive()). A draft
    // option of libzmq 4.3; without it, a dead consumer's stream ends at its idle limit instead.
    try {
      (socket as unknown as { setInt32Option(option: number, value: number): void }).setInt32Option(97, 2);
    } catch {
      // not built with draft options
    }
    const bound: string[] = [];
    for (const address of addresses) {
      try {
        await socket.bind(address);
        bound.push(socket.lastEndpoint ?? address);
      } catch (err) {
        socket.close();
        gate.release();
        throw new NodeBinError("UNAVAILABLE", `cannot listen at ${address}: ${(err as Error).message}`, { details: { endpoint: address }, cause: err });
      }
    }
    return new ZmqListener(socket, bound, peer, dispatch, options, gate);
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const parts of io.messages(this.socket)) {
        const rid = parts[0];
        if (parts.length < 2 || !rid) {
          this.onDrop(`malformed message of ${parts.length} parts`, "undecodable");
          continue;
        }
        const over = overBounds(parts, 1, this.maxFrames, this.maxMessageBytes);
        if (over) {
          this.refuseMessage(rid, parts, over);
        } else {
          // One envelope per frame after the routing id (see "Batching" above).
          for (let i = 1; i < parts.length; i++) this.receive(rid, parts[i]!);
        }
        releaseMessage(parts);
      }
    } catch (err) {
      if (!this.socket.closed) this.onDrop(`receive failed: ${(err as Error).message}`, "undecodable");
    }
  }

  /** A message past the bounds: dropped whole, counted, and its sender told once (RESOURCE_EXHAUSTED, id 0: no envelope of it was read). */
  private refuseMessage(rid: Buffer, parts: Buffer[], over: DropCounter): void {
    const frames = parts.length - 1;
    const bytes = parts.reduce((n, p, i) => (i ? n + p.length : n), 0);
    const why = over === "tooManyFrames" ? `${frames} envelopes in one message, more than ${this.maxFrames}` : `${bytes} bytes in one message, more than ${this.maxMessageBytes}`;
    this.onDrop(`dropped a message of ${frames} frames, ${bytes} bytes: ${why}`, over);
    this.answerPeer(rid, new NodeBinError("RESOURCE_EXHAUSTED", `message refused: ${why}`, { details: { frames: String(frames), bytes: String(bytes) } }));
  }

  private receive(rid: Buffer, frame: Buffer): void {
    if (frame.length === 0) {
      // A closed connection (ZMQ_ROUTER_NOTIFY), or a peer sending an empty frame, which can end only its own streams.
      this.onConnectionClosed?.(this.connectionKey(rid));
      return;
    }
    const env = decodeEnvelope(frame);
    if (env instanceof NodeBinError) {
      // Tell the connection itself, echoing what of the request could be read
      // (its id, for one): the sender can tell which request was refused. An
      // undecodable answer gets no answer.
      this.onDrop(env.message, "undecodable");
      const partial = partialEnvelope(frame);
      if (partial.kind === undefined || partial.kind === Kind.REQUEST) this.answerPeer(rid, env, envelope(partial));
      return;
    }
    if (env.kind === Kind.RESPONSE || env.kind === Kind.STREAM_ITEM || env.kind === Kind.STREAM_END) {
      this.onDrop(`an answer arrived at a listener (${JSON.stringify(env.method)} id ${env.id} from ${JSON.stringify(env.from)}): answers come back on the connections calls go out on`, "answerAtListener");
      return;
    }
    const peer: Peer = { kind: this.peer, reply: (answer) => this.writer.push([rid, answer]), via: this.connectionName(rid), connection: this.connectionKey(rid) };
    if (!this.dispatch(env, peer)) {
      this.onDrop(`no endpoint ${JSON.stringify(env.to)} here`, "noEndpoint");
      if (env.kind === Kind.REQUEST && (env.mode !== Mode.ASYNC || env.plane === Plane.APPLICATION)) {
        this.answerPeer(rid, new NodeBinError("NOT_FOUND", `no endpoint ${JSON.stringify(env.to)} at ${this.endpoints.join(", ")}; the membership table may be stale`, { details: { to: env.to } }), env);
      }
    }
  }

  /**
   * The name of the connection a routing id stands for: "tcp peer #N", with
   * "(a cluster member)" on a keyed listener (its ZAP gate admitted it). A
   * ROUTER gives each connection a routing id of its own, never reused while
   * the socket lives, so a number per routing id tells connections apart.
   * Bounded: the oldest names are forgotten past 4 x maxConnections (a
   * forgotten one gets a new number if it speaks again).
   */
  private connectionName(rid: Buffer): string {
    const key = rid.toString("latin1");
    let n = this.connectionNumbers.get(key);
    if (n === undefined) {
      n = ++this.connectionCount;
      this.connectionNumbers.set(key, n);
      if (this.connectionNumbers.size > this.maxNames) this.connectionNumbers.delete(this.connectionNumbers.keys().next().value!);
    }
    return `${this.peer === "network" ? "tcp" : "ipc"} peer #${n}${this.keyed ? " (a cluster member)" : ""}`;
  }

  /**
   * The connection a routing id stands for, unique in the process: libzmq
   * never gives a routing id to two live connections of one socket, and a
   * connection's streams end when it closes, before its id can be reused.
   */
  private connectionKey(rid: Buffer): string {
    return `zmq-listener-${this.serial}/${rid.toString("hex")}`;
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
  deliver(_to: string, _frame: Uint8Array): false {
    return false;
  }

  async close(): Promise<void> {
    if (!this.socket.closed) this.socket.close();
    await this.done;
    this.gate.release();
  }
}

/** One outbound DEALER and what goes with it. */
interface Connection {
  socket: zmq.Dealer;
  writer: Writer;
  done: Promise<void>;
  /** Frames sent before its handshake succeeded, while the ring has another key to try (see the "disconnect" handler). */
  unconfirmed?: Uint8Array[];
}

/**
 * Outbound DEALERs, one per remote endpoint, created on first use and reused.
 * `resolve` says which endpoint serves an endpoint id (from the membership
 * table); frames that come back go to `dispatch`. `onLost` hears of an
 * endpoint whose connection dropped, so that calls waiting on it fail now.
 */
export class ZmqConnector implements Transport {
  readonly name = "zmq-connect";
  private readonly sockets = new Map<string, Connection>();
  private readonly options: ZmqOptions;
  /** Per tcp endpoint, which of the security provider's ways to connect (keys) to use next (see connectionLost). */
  private readonly keyAttempt = new Map<string, number>();
  private closed = false;

  constructor(
    private readonly resolve: (to: string) => string | undefined,
    private readonly dispatch: LocalDispatch,
    /** Hears of a connection that dropped; `error` says why when it is not simply gone (a failed handshake). */
    private readonly onLost: (endpoint: string, error?: NodeBinError) => void = () => {},
    options: ZmqOptions = {},
  ) {
    this.options = options;
  }

  deliver(to: string, frame: Uint8Array): string | false {
    const endpoint = this.resolve(to);
    if (endpoint === undefined) return false;
    return this.deliverVia(endpoint, frame);
  }

  deliverVia(endpoint: string, frame: Uint8Array): string {
    if (this.closed) throw new NodeBinError("UNAVAILABLE", "connector is closed");
    const conn = this.connection(endpoint);
    conn.writer.push([frame]);
    // Kept until the handshake succeeds, to send again over the next key if it fails (the writer's limit bounds it).
    conn.unconfirmed?.push(frame);
    return endpoint;
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
    const ways = peerKindOf(endpoint) === "network" ? this.options.security?.connect() ?? [] : [];
    const attempt = ways.length ? (this.keyAttempt.get(endpoint) ?? 0) % ways.length : 0;
    const socket = new zmq.Dealer({
      linger: 0,
      sendHighWaterMark: hwm,
      receiveHighWaterMark: hwm,
      maxMessageSize: this.options.maxFrameBytes ?? DEFAULTS.maxFrameBytes,
      // ZeroMQ-level heartbeats notice a peer that vanished without closing (killed host, cut link).
      heartbeatInterval: 1000,
      heartbeatTimeout: 3000,
      ...io.options,
      ...ways[attempt]?.options,
      ...this.options.socketOptions?.("connect", endpoint),
    });
    // A handshake that fails (a key the peer does not accept, a peer under another key, plain tcp
    // against CurveZMQ or the reverse) is followed by a disconnect: the reason is kept for it.
    let handshakeError: string | undefined;
    const onHandshakeError = (why: string) => (event: { error: { code?: string; message: string; status?: number } }) => {
      handshakeError = `${why} (${event.error.status ?? event.error.code ?? event.error.message})`;
    };
    socket.events.on("handshake:error:auth", onHandshakeError("the peer refused this process's key"));
    socket.events.on("handshake:error:protocol", onHandshakeError(ways.length ? "the peer does not speak CurveZMQ" : "the peer requires a cluster key"));
    socket.events.on("handshake:error:other", onHandshakeError(ways.length ? "the peer serves under another cluster key" : "the handshake failed"));
    socket.events.on("handshake", () => {
      this.keyAttempt.delete(endpoint);
      if (conn) conn.unconfirmed = undefined;
    });
    socket.events.on("disconnect", () => {
      // The calls waiting on this peer are failed (UNAVAILABLE); their requests
      // must not arrive later. libzmq keeps a connecting socket's queue across
      // reconnects and would deliver them when the link returns, where a
      // relative deadline makes them look fresh. So the socket and its queue
      // go; the next send makes a new one.
      const current = this.sockets.get(endpoint)?.socket === socket;
      const unconfirmed = conn?.unconfirmed;
      if (current) this.disconnect(endpoint);
      if (handshakeError !== undefined && current && unconfirmed && attempt + 1 < ways.length && !this.closed) {
        // A peer still under another key of the ring (a rotation): nothing reached it, so what
        // was sent goes again, over a connection with the next key.
        this.keyAttempt.set(endpoint, attempt + 1);
        for (const frame of unconfirmed) this.deliverVia(endpoint, frame);
        return;
      }
      this.onLost(endpoint, handshakeError === undefined ? undefined : this.handshakeFailed(endpoint, handshakeError, ways, attempt));
    });
    socket.connect(endpoint);
    const onDrop = this.options.onDrop ?? (() => {});
    const writer = new Writer(socket, this.options.queueLimit ?? DEFAULTS.queueLimit, endpoint, (err) => onDrop(`send to ${endpoint} failed: ${(err as Error).message}`, "sendFailed"), true);
    // Answers to requests that came in over this DEALER go back over it.
    const peer: Peer = { kind: peerKindOf(endpoint), reply: (answer) => writer.push([answer]), link: endpoint, via: `the connection to ${endpoint}`, connection: endpoint };
    conn = { socket, writer, done: this.receiveLoop(socket, peer, onDrop), ...(attempt + 1 < ways.length ? { unconfirmed: [] } : {}) };
    this.sockets.set(endpoint, conn);
    return conn;
  }

  /** The error for calls over a connection whose handshake failed with the last key of the ring to try: UNAUTHENTICATED (not retried). */
  private handshakeFailed(endpoint: string, why: string, ways: ConnectSecurity[], attempt: number): NodeBinError {
    this.keyAttempt.delete(endpoint);
    const tried = ways.length > 1 ? ` with each of the ${ways.length} keys of the ring` : ways[attempt] ? ` with key ${ways[attempt]!.keyId}` : "";
    return new NodeBinError("UNAUTHENTICATED", `handshake with ${endpoint}${tried} failed: ${why}`, { details: { endpoint } });
  }

  private async receiveLoop(socket: zmq.Dealer, peer: Peer, onDrop: (reason: string, counter: DropCounter) => void): Promise<void> {
    const maxFrames = this.options.maxFrames ?? DEFAULTS.maxFrames;
    const maxBytes = this.options.maxMessageBytes ?? DEFAULTS.maxMessageBytes;
    try {
      for await (const frames of io.messages(socket)) {
        // The peer we called is bounded as any other: a message past the bounds is dropped whole.
        const over = overBounds(frames, 0, maxFrames, maxBytes);
        if (over) {
          onDrop(`dropped a message of ${frames.length} frames from ${peer.link}: past ${over === "tooManyFrames" ? `${maxFrames} envelopes` : `${maxBytes} bytes`}`, over);
        } else {
          for (const frame of frames) {
            const env = decodeEnvelope(frame);
            if (env instanceof NodeBinError) onDrop(env.message, "undecodable");
            else if (!this.dispatch(env, peer)) onDrop(`no local endpoint ${JSON.stringify(env.to)}`, "noEndpoint");
          }
        }
        releaseMessage(frames);
      }
    } catch (err) {
      if (!socket.closed) onDrop(`receive failed: ${(err as Error).message}`, "sendFailed");
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
