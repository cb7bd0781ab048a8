/**
 * The ZeroMQ PUB/SUB side of node-bin: what BROADCAST messages ride (see the
 * README, "Broadcast"). This module knows the sockets and the wire form; who
 * forwards what to whom is the host's relay (membership/broadcast-relay.ts),
 * and what a process does with what it receives is container/broadcast.ts.
 *
 * Wire form. One ZeroMQ message of ONE frame per batch of envelopes of one
 * method (a batch):
 *   from a publisher to its host's relay:   topic | envelopes
 *   from a relay onwards (stamped):         topic | stamp | envelopes
 * - topic: the method's full name and a NUL ("demo.Board/Post\0"), first in
 *   the frame: SUB sockets match prefixes of it, and the terminator keeps
 *   "demo.Board/Post" from matching "demo.Board/PostAll".
 * - stamp: who relayed it first (the origin: one relay's lifetime) and the
 *   sequence number of its first envelope on that topic, so a subscriber
 *   counts what it missed per origin and topic (GapCounter): version (1
 *   byte), seq (8 bytes, big-endian), origin length (2), origin (UTF-8).
 * - envelopes: each a 4-byte big-endian length and a nodebin.Envelope (mode
 *   BROADCAST, kind REQUEST), decoded by the receiving process only: the
 *   relay checks the framing and forwards bytes.
 * Why one frame: libzmq (4.3.5) aborts the process (session_base.cpp:233,
 * clean_pipes) when a peer's connection ends while a multipart message to
 * it is half written, which a subscriber that stalled and then went away
 * causes at will; single-frame messages never leave one half written. The
 * whole message is then one frame, so ZMQ_MAXMSGSIZE bounds it in libzmq.
 *
 * Sockets (all waiting through zmq-io.ts, so they work under Deno too):
 * - TopicPublisher: a PUB connected to the host relay's XSUB (ipc), with a
 *   bounded send queue; same-topic envelopes queued together leave as one message.
 * - TopicSubscriber: a SUB connected to an XPUB (the host relay's, over ipc; or,
 *   for a relay, another host's network XPUB over tcp with CurveZMQ).
 * - BoundPubSub: an XPUB or XSUB bound by a relay, through the ZAP gate
 *   (zap.ts): connections bounded, and with a cluster key only CurveZMQ
 *   clients whose key derives from the ring get in (tcp).
 *
 * Bounds: every socket's high-water mark (messages), the largest frame
 * (ZMQ_MAXMSGSIZE: a peer sending more is disconnected by libzmq), the
 * largest message and most frames (checked on receipt: past them a message
 * is dropped whole and counted), each send queue (past it, dropped and
 * counted), connections per bound socket (the gate).
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import * as zmq from "zeromq";
import { Fifo } from "../component/fifo.ts";
import { NodeBinError } from "../wire/errors.ts";
import { enterGate, type GateEntry } from "./zap.ts";
import { advertisedEndpoint, peerKindOf, type WireSecurity } from "./zmq.ts";
import { io, type Message, type RawSocket } from "./zmq-io.ts";

const KiB = 1024;
/**
 * The bounds of the broadcast wire. A stalled subscriber costs its relay at
 * most highWaterMark messages (each at most maxMessageBytes, typically one
 * batch of small envelopes) per connection, and libzmq drops for that
 * connection alone past it (README "Broadcast").
 */
export const BROADCAST_LIMITS = {
  /** Messages queued per socket and connection before ZeroMQ drops (SNDHWM / RCVHWM). */
  highWaterMark: 1000,
  /** Largest envelope a broadcast may be (checked at the sender: RESOURCE_EXHAUSTED). */
  maxEnvelopeBytes: 256 * KiB,
  /** Envelopes a publisher puts in one message, and bytes (one larger envelope still goes, alone). */
  maxBatch: 32,
  maxBatchBytes: 64 * KiB,
  /**
   * Envelopes accepted in one message, and bytes, on receipt (past them it is
   * dropped whole; a message past maxMessageBytes never even arrives: it is
   * ZMQ_MAXMSGSIZE, so libzmq drops the connection that sent it).
   */
  maxEnvelopes: 64,
  maxMessageBytes: 320 * KiB,
  /** Longest topic (method name + NUL). */
  maxTopicBytes: 512,
  /** Messages queued per socket beyond ZeroMQ's own before they are dropped. */
  queueLimit: 10_000,
  /** Connections one bound socket holds (the gate; the rest are refused in their handshake). */
  maxConnections: 2048,
};
export type BroadcastLimits = typeof BROADCAST_LIMITS;

/**
 * What the broadcast sockets drop, by reason (counted by the process, shown
 * in its Ping's `refused` and `governor status`).
 */
export type BroadcastCounter =
  | "broadcastMissed" // envelopes a subscriber never got (gaps in the origin's sequence)
  | "broadcastRefused" // arrived, but a node did not take it (queue full, not serving)
  | "broadcastMalformed" // a message or frame that is not the wire form (dropped whole)
  | "broadcastDropped" // a message not sent on (a send queue or pipe full)
  | "broadcastLooped" // a relayed message that came back to its origin
  | "broadcastRefusedTopics" // subscriptions past the relay's bound on topics
  | "broadcastRefusedPeers" // hosts past the relay's bound on peers
  | "broadcastUnauthenticated" // a tcp connection to the relay without a key of the ring (refused in its handshake)
  | "broadcastConnectionsRefused"; // a connection to a relay socket past its bound

export type CountDrop = (counter: BroadcastCounter, reason: string, n?: number) => void;

/** The relay's two ipc endpoints on a host: where its publishers connect (XSUB) and where its subscribers do (XPUB). */
export interface RelayEndpoints {
  publish: string;
  subscribe: string;
}

/** Where the host relay of discovery port `port` listens, in the runtime directory (beside the discovery socket). */
export function relayEndpoints(runtimeDir: string, port: number): RelayEndpoints {
  return { publish: `ipc://${join(runtimeDir, `broadcast-in-${port}.sock`)}`, subscribe: `ipc://${join(runtimeDir, `broadcast-out-${port}.sock`)}` };
}

// ------------------------------------------------------------------ wire form

const encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The topic of `method` ("demo.Board/Post" -> "demo.Board/Post\0"). */
export function topicOf(method: string): Buffer {
  return Buffer.from(`${method}\0`, "utf8");
}

/**
 * The method a topic frame names, or undefined when it is no topic of ours:
 * 3 to maxTopicBytes bytes, UTF-8, one NUL at the end and none before, a "/"
 * between service and method.
 */
export function methodOfTopic(topic: Uint8Array | undefined, maxTopicBytes = BROADCAST_LIMITS.maxTopicBytes): string | undefined {
  if (!topic || topic.length < 4 || topic.length > maxTopicBytes || topic[topic.length - 1] !== 0) return undefined;
  if (topic.indexOf(0) !== topic.length - 1) return undefined;
  let method: string;
  try {
    method = utf8.decode(topic.subarray(0, topic.length - 1));
  } catch {
    return undefined;
  }
  const slash = method.indexOf("/");
  return slash > 0 && slash < method.length - 1 ? method : undefined;
}

/** Who relayed a message first and the sequence number of its first envelope on its topic. */
export interface Stamp {
  origin: string;
  seq: number;
}

const STAMP_VERSION = 1;
/** Longest origin id in a stamp. */
export const MAX_ORIGIN_BYTES = 300;
const MAX_SEQ_HI = 0x1f_ffff; // seq < 2^53

/** The stamp's bytes: version (1), seq (8, big-endian), origin length (2), origin (UTF-8). */
export function encodeStamp(origin: string, seq: number): Buffer {
  const id = encoder.encode(origin);
  if (id.length === 0 || id.length > MAX_ORIGIN_BYTES) throw new NodeBinError("INVALID_ARGUMENT", `a broadcast origin is 1 to ${MAX_ORIGIN_BYTES} bytes`);
  const stamp = Buffer.allocUnsafe(11 + id.length);
  stamp[0] = STAMP_VERSION;
  stamp.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 1);
  stamp.writeUInt32BE(seq >>> 0, 5);
  stamp.writeUInt16BE(id.length, 9);
  stamp.set(id, 11);
  return stamp;
}

/** The stamp at `at` in `frame` and where it ends, or undefined when there is none (another version, a bad length, not UTF-8, seq past 2^53). */
function readStamp(frame: Uint8Array, at: number): { stamp: Stamp; end: number } | undefined {
  if (frame.length < at + 12 || frame[at] !== STAMP_VERSION) return undefined;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const hi = view.getUint32(at + 1);
  const length = view.getUint16(at + 9);
  const end = at + 11 + length;
  if (hi > MAX_SEQ_HI || length === 0 || length > MAX_ORIGIN_BYTES || end > frame.length) return undefined;
  let origin: string;
  try {
    origin = utf8.decode(frame.subarray(at + 11, end));
  } catch {
    return undefined;
  }
  return { stamp: { origin, seq: hi * 0x1_0000_0000 + view.getUint32(at + 5) }, end };
}

/** A stamp on its own (a test's, a tool's): its bytes as encodeStamp made them, or undefined. */
export function decodeStamp(bytes: Uint8Array | undefined): Stamp | undefined {
  const read = bytes && readStamp(bytes, 0);
  return read && read.end === bytes.length ? read.stamp : undefined;
}

/** The frame of a batch: topic | envelopes (each a 4-byte length and its bytes). What a publisher sends its relay. */
export function encodeBatch(topic: Uint8Array, envelopes: readonly Uint8Array[]): Buffer {
  let size = topic.length;
  for (const e of envelopes) size += 4 + e.length;
  const frame = Buffer.allocUnsafe(size);
  frame.set(topic, 0);
  let at = topic.length;
  for (const e of envelopes) {
    frame.writeUInt32BE(e.length, at);
    frame.set(e, at + 4);
    at += 4 + e.length;
  }
  return frame;
}

/** A batch as read from a frame: views into it, nothing copied. */
export interface Batch {
  method: string;
  /** The topic (method and NUL). */
  topic: Uint8Array;
  /** The stamp, when the frame was read as stamped. */
  stamp: Stamp | undefined;
  /** Where the envelopes start in the frame. */
  body: number;
  envelopes: Uint8Array[];
}

/**
 * Reads a batch frame (`stamped`: as a relay sends it, else as a publisher
 * does), or undefined when it is not one within the bounds: the topic of a
 * method, the stamp, then 1 to maxEnvelopes envelopes whose lengths add up to
 * the frame exactly, all of it at most maxMessageBytes.
 */
export function readBatch(frame: Uint8Array | undefined, stamped: boolean, limits: BroadcastLimits = BROADCAST_LIMITS): Batch | undefined {
  if (!frame || frame.length > limits.maxMessageBytes) return undefined;
  const nul = frame.subarray(0, limits.maxTopicBytes).indexOf(0);
  if (nul < 0) return undefined;
  const topic = frame.subarray(0, nul + 1);
  const method = methodOfTopic(topic, limits.maxTopicBytes);
  if (method === undefined) return undefined;
  let at = nul + 1;
  let stamp: Stamp | undefined;
  if (stamped) {
    const read = readStamp(frame, at);
    if (!read) return undefined;
    stamp = read.stamp;
    at = read.end;
  }
  const body = at;
  const envelopes: Uint8Array[] = [];
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  while (at < frame.length) {
    if (at + 4 > frame.length || envelopes.length >= limits.maxEnvelopes) return undefined;
    const length = view.getUint32(at);
    if (at + 4 + length > frame.length) return undefined;
    envelopes.push(frame.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return envelopes.length > 0 ? { method, topic, stamp, body, envelopes } : undefined;
}

/** `batch` (read from `frame`, unstamped) with `stamp` after its topic: what a relay sends on. */
export function stampBatch(frame: Uint8Array, batch: Batch, origin: string, seq: number): Buffer {
  return Buffer.concat([batch.topic, encodeStamp(origin, seq), frame.subarray(batch.body)]);
}

/**
 * A subscription message as an XPUB hands it over: 1 (subscribe) or 0
 * (unsubscribe), then the topic. Undefined for anything else (another
 * length of message, another first byte, a topic that is not one of ours).
 */
export function readSubscription(parts: Buffer[], maxTopicBytes = BROADCAST_LIMITS.maxTopicBytes): { on: boolean; topic: Buffer } | undefined {
  const frame = parts.length === 1 ? parts[0] : undefined;
  if (!frame || (frame[0] !== 0 && frame[0] !== 1)) return undefined;
  const topic = frame.subarray(1);
  if (methodOfTopic(topic, maxTopicBytes) === undefined) return undefined;
  return { on: frame[0] === 1, topic: Buffer.from(topic) };
}

/** The subscription message for `topic` (what an XSUB sends upstream). */
export function subscriptionMessage(topic: Uint8Array, on: boolean): Buffer {
  const frame = Buffer.allocUnsafe(topic.length + 1);
  frame[0] = on ? 1 : 0;
  frame.set(topic, 1);
  return frame;
}

/**
 * Counts, per origin and topic, the envelopes a subscriber never got: the
 * sequence of a message is its first envelope's, and it carries
 * (frames) envelopes, so the next should start where it ended; what it skips
 * is missed. The first message seen of an (origin, topic) sets the start (a
 * late joiner misses what came before it subscribed, by design). A sequence
 * that goes back (a relay restarted under the same origin, which it does not
 * do) starts over. Bounded: at most `maxEntries` (origin, topic) pairs, the
 * least recently seen forgotten first (one forgotten starts over).
 */
export class GapCounter {
  private readonly next = new Map<string, number>();
  constructor(private readonly maxEntries = 4096) {}

  /** Takes one message: returns how many envelopes it shows were missed before it. */
  observe(origin: string, topic: string, seq: number, count: number): number {
    const key = `${origin}\n${topic}`;
    const expected = this.next.get(key);
    // Re-inserted so that the Map's order is least recently seen first.
    if (expected !== undefined) this.next.delete(key);
    else if (this.next.size >= this.maxEntries) this.next.delete(this.next.keys().next().value!);
    this.next.set(key, seq + count);
    return expected !== undefined && seq > expected ? seq - expected : 0;
  }

  get size(): number {
    return this.next.size;
  }
}

// -------------------------------------------------------------------- sockets

/** A socket that sends (zeromq.js allows one send in flight per socket). */
type Sendable = { readonly closed: boolean; send(message: Message): Promise<void> };

/**
 * Sends the messages of one socket one at a time, in order, from a bounded
 * queue: a full queue drops the message (the caller counts it), it never
 * grows. A PUB or XPUB never waits for its peers (ZeroMQ drops per peer at
 * its high-water mark), so the queue only holds what was sent in one turn.
 */
class SerialSender<T> {
  private readonly queue = new Fifo<T>();
  private pumping = false;
  constructor(
    private readonly socket: Sendable,
    private readonly limit: number,
    private readonly onError: (err: unknown, item: T) => void,
    /** The message of the item at the head of the queue, taking along those behind it it merges with (a publisher's batches). */
    private readonly messageOf: (first: T, queue: Fifo<T>) => Message,
  ) {}

  /** Queues an item; false (nothing queued) when the queue is full or the socket closed. */
  push(item: T): boolean {
    if (this.socket.closed || this.queue.length >= this.limit) return false;
    this.queue.push(item);
    if (!this.pumping) {
      this.pumping = true;
      // After the current run of code: what it queues for one topic leaves as one message.
      queueMicrotask(() => void this.pump());
    }
    return true;
  }

  get length(): number {
    return this.queue.length;
  }

  private async pump(): Promise<void> {
    for (let item = this.queue.shift(); item !== undefined; item = this.queue.shift()) {
      if (this.socket.closed) break;
      try {
        await io.send(this.socket as unknown as RawSocket, this.messageOf(item, this.queue), false);
      } catch (err) {
        this.onError(err, item);
      }
    }
    // Closed: what is left is dropped with the socket.
    while (this.queue.shift() !== undefined);
    this.pumping = false;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a === b || (a.length === b.length && Buffer.compare(a, b) === 0);
}

/** Options every broadcast socket takes. */
export interface PubSubOptions {
  limits?: Partial<BroadcastLimits>;
  /** CurveZMQ and the ZAP decision, for tcp sockets (ipc ones never use it). */
  security?: WireSecurity;
  /** Where a bound tcp socket is advertised in place of a wildcard it bound (see advertisedEndpoint). */
  advertise?: string;
  /** Counts what is dropped. */
  count?: CountDrop;
}

function limitsOf(options: PubSubOptions): BroadcastLimits {
  return { ...BROADCAST_LIMITS, ...options.limits };
}

/**
 * The runtime's socket options (zmq-io.ts) a socket that only sends, or only
 * receives, can take: zeromq.js refuses an option its socket type lacks
 * (a PUB has no receiveTimeout, a SUB no sendTimeout), and the socket it
 * half made then crashes the process when it is collected.
 */
function ioOptionsFor(direction: "send" | "receive"): { receiveTimeout?: number; sendTimeout?: number } {
  const { receiveTimeout, sendTimeout } = io.options;
  if (direction === "send") return sendTimeout === undefined ? {} : { sendTimeout };
  return receiveTimeout === undefined ? {} : { receiveTimeout };
}

interface Queued {
  topic: Buffer;
  frame: Uint8Array;
}

/**
 * A PUB connected to the host relay's XSUB: how a process's broadcasts leave
 * it. `publish` never waits: envelopes queued in one turn for one topic
 * leave as one message; a full queue, or the relay's pipe at its high-water
 * mark (ZMQ_XPUB_NODROP: the send fails instead of vanishing), drops the
 * message and counts it. Nothing is sent for a topic no subscriber of the
 * host has asked for (the PUB filters by the subscriptions its XSUB passes
 * on); the relay reconnects by itself when the host agent changes.
 */
export class TopicPublisher {
  private readonly socket: zmq.Publisher;
  private readonly sender: SerialSender<Queued>;
  private readonly limits: BroadcastLimits;
  private readonly count: CountDrop;

  constructor(
    readonly endpoint: string,
    options: PubSubOptions = {},
  ) {
    this.limits = limitsOf(options);
    this.count = options.count ?? (() => {});
    this.socket = new zmq.Publisher({
      linger: 0,
      sendHighWaterMark: this.limits.highWaterMark,
      noDrop: true,
      ...ioOptionsFor("send"),
      sendTimeout: 0,
    });
    this.socket.connect(endpoint);
    const { maxBatch, maxBatchBytes } = this.limits;
    this.sender = new SerialSender<Queued>(
      this.socket,
      this.limits.queueLimit,
      (err) => this.count("broadcastDropped", `broadcast to ${endpoint} not sent: ${(err as Error).message}`),
      (first, queue) => {
        // Envelopes of the same topic queued behind the first join it, in one frame.
        const envelopes = [first.frame];
        let bytes = first.frame.length;
        for (let next = queue.peek(); next && envelopes.length < maxBatch && bytes + next.frame.length <= maxBatchBytes && sameBytes(next.topic, first.topic); next = queue.peek()) {
          envelopes.push(next.frame);
          bytes += next.frame.length;
          queue.shift();
        }
        return [encodeBatch(first.topic, envelopes)];
      },
    );
  }

  /**
   * Queues one envelope for `topic`. Throws RESOURCE_EXHAUSTED when the
   * envelope is past maxEnvelopeBytes or the send queue is full.
   */
  publish(topic: Buffer, frame: Uint8Array): void {
    if (frame.length > this.limits.maxEnvelopeBytes) {
      throw new NodeBinError("RESOURCE_EXHAUSTED", `a broadcast message is at most ${this.limits.maxEnvelopeBytes} bytes, this one is ${frame.length}`, { details: { bytes: String(frame.length), max: String(this.limits.maxEnvelopeBytes) } });
    }
    if (!this.sender.push({ topic, frame })) {
      this.count("broadcastDropped", `broadcast queue to ${this.endpoint} full`);
      throw new NodeBinError("RESOURCE_EXHAUSTED", `the broadcast queue to the host relay is full (${this.limits.queueLimit} messages)`, { details: { queued: String(this.sender.length) } });
    }
  }

  close(): void {
    if (!this.socket.closed) this.socket.close();
  }
}

/**
 * A SUB connected to one XPUB: the host relay's (ipc), or another host's
 * network XPUB (tcp, with the security provider's CurveZMQ keys: with a
 * keyring, a handshake that fails is tried again with the next key).
 * Single-frame messages go to `onMessage` (the caller reads the batch);
 * anything else is dropped and counted. While a promise `onMessage`
 * returned is pending, nothing more is read: the socket's own buffer fills,
 * then the relay's pipe to it, and the relay drops for this subscriber alone
 * (how a process that cannot take more makes itself a slow subscriber
 * instead of dropping what it already has). Subscriptions are kept and made
 * again on every new socket; ZeroMQ makes them again on every reconnection.
 */
export class TopicSubscriber {
  private socket: zmq.Subscriber;
  private readonly topics = new Map<string, Buffer>();
  private readonly limits: BroadcastLimits;
  private readonly count: CountDrop;
  private readonly ways: { keyId: string; options: Record<string, unknown> }[];
  private attempt = 0;
  private retry: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  private loops: Promise<void>[] = [];

  constructor(
    readonly endpoint: string,
    private readonly onMessage: (frame: Buffer) => void | Promise<void>,
    options: PubSubOptions = {},
  ) {
    this.limits = limitsOf(options);
    this.count = options.count ?? (() => {});
    this.ways = peerKindOf(endpoint) === "network" ? (options.security?.connect() ?? []) : [];
    this.socket = this.open();
  }

  private open(): zmq.Subscriber {
    const socket = new zmq.Subscriber({
      linger: 0,
      receiveHighWaterMark: this.limits.highWaterMark,
      maxMessageSize: this.limits.maxMessageBytes,
      // ZeroMQ-level heartbeats notice a relay that vanished without closing (killed host, cut link).
      heartbeatInterval: 1000,
      heartbeatTimeout: 3000,
      ...ioOptionsFor("receive"),
      ...this.ways[this.attempt % Math.max(1, this.ways.length)]?.options,
    });
    if (this.ways.length > 1) {
      // Another key of the ring may be the one the peer serves under (a rotation): the next socket tries it.
      const rotate = () => {
        if (this.closed || this.retry || socket !== this.socket) return;
        this.retry = setTimeout(() => {
          this.retry = undefined;
          if (this.closed || socket !== this.socket) return;
          this.attempt++;
          socket.close();
          this.socket = this.open();
        }, 500);
      };
      socket.events.on("handshake:error:auth", rotate);
      socket.events.on("handshake:error:protocol", rotate);
      socket.events.on("handshake:error:other", rotate);
    }
    for (const topic of this.topics.values()) socket.subscribe(topic);
    socket.connect(this.endpoint);
    this.loops.push(this.receiveLoop(socket));
    return socket;
  }

  subscribe(topic: Buffer): void {
    const key = topic.toString("latin1");
    if (this.topics.has(key)) return;
    this.topics.set(key, topic);
    if (!this.socket.closed) this.socket.subscribe(topic);
  }

  unsubscribe(topic: Buffer): void {
    const key = topic.toString("latin1");
    if (!this.topics.delete(key)) return;
    if (!this.socket.closed) this.socket.unsubscribe(topic);
  }

  /** The topics it is subscribed to. */
  get subscribed(): number {
    return this.topics.size;
  }

  private async receiveLoop(socket: zmq.Subscriber): Promise<void> {
    try {
      for await (const parts of io.messages(socket as unknown as RawSocket)) {
        const frame = parts.length === 1 ? parts[0] : undefined;
        if (!frame) {
          this.count("broadcastMalformed", `dropped a broadcast message of ${parts.length} frames from ${this.endpoint}: a batch is one frame`);
        } else {
          try {
            const busy = this.onMessage(frame);
            if (busy) await busy;
          } catch (err) {
            this.count("broadcastMalformed", `a broadcast message from ${this.endpoint} failed: ${(err as Error).message}`);
          }
        }
        // Frames are external memory: let them go now, not at the next message (see zmq.ts releaseMessage).
        parts.length = 0;
      }
    } catch (err) {
      if (!socket.closed) this.count("broadcastMalformed", `receive from ${this.endpoint} failed: ${(err as Error).message}`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    if (!this.socket.closed) this.socket.close();
    await Promise.all(this.loops);
  }
}

/**
 * An XPUB or XSUB a relay binds. An XPUB sends messages to its subscribers
 * (ZeroMQ filters by topic and drops per subscriber at SNDHWM) and hands
 * over their subscriptions; an XSUB receives what its publishers send and
 * sends subscriptions to them. Every connection passes the ZAP gate (the
 * bound on connections; with a security provider on tcp, the cluster key).
 * Received messages go to `onMessage` as they came (the relay checks them).
 */
export class BoundPubSub {
  /** The endpoint as others reach it (tcp port 0 resolved, a wildcard replaced by the advertised address). */
  readonly endpoint: string;
  private readonly sender: SerialSender<Buffer>;
  private readonly done: Promise<void>;

  private constructor(
    readonly kind: "xpub" | "xsub",
    private readonly socket: zmq.XPublisher | zmq.XSubscriber,
    readonly bound: string,
    private readonly gate: GateEntry,
    onMessage: (parts: Buffer[]) => void,
    options: PubSubOptions,
  ) {
    const endpoint = advertisedEndpoint(bound, options.advertise);
    this.endpoint = endpoint;
    const limits = limitsOf(options);
    const count = options.count ?? (() => {});
    this.sender = new SerialSender<Buffer>(socket, limits.queueLimit, (err) => count("broadcastDropped", `send on ${endpoint} failed: ${(err as Error).message}`), (frame) => [frame]);
    this.done = (async () => {
      try {
        for await (const parts of io.messages(socket as unknown as RawSocket)) {
          try {
            onMessage(parts);
          } catch (err) {
            count("broadcastMalformed", `a message on ${endpoint} failed: ${(err as Error).message}`);
          }
          parts.length = 0;
        }
      } catch (err) {
        if (!socket.closed) count("broadcastMalformed", `receive on ${endpoint} failed: ${(err as Error).message}`);
      }
    })();
  }

  /**
   * Binds an XPUB or XSUB at `address` (ipc, or tcp with port 0 for one the
   * OS picks). An XPUB takes only subscription-sized messages from its peers
   * and an XSUB batches up to maxMessageBytes (ZMQ_MAXMSGSIZE: a peer that
   * sends more is disconnected by libzmq). Throws UNAVAILABLE when the
   * address cannot be bound.
   */
  static async bind(kind: "xpub" | "xsub", address: string, onMessage: (parts: Buffer[]) => void, options: PubSubOptions = {}): Promise<BoundPubSub> {
    const limits = limitsOf(options);
    const count = options.count ?? (() => {});
    const security = peerKindOf(address) === "network" ? options.security : undefined;
    const gate = await enterGate({
      max: limits.maxConnections,
      onRefused: (from, live) => count("broadcastConnectionsRefused", `refused a connection${from ? ` from ${from}` : ""} to ${address}: ${live} of ${limits.maxConnections} connections open`),
      ...(security
        ? {
            admit: (mechanism: string, credentials: Uint8Array[], from: string) => security.admit(mechanism, credentials, from),
            onUnauthenticated: (from: string, reason: string) => count("broadcastUnauthenticated", `refused a connection${from ? ` from ${from}` : ""} to ${address}: ${reason}`),
          }
        : {}),
    });
    const common = {
      linger: 0,
      zapDomain: gate.domain,
      handshakeInterval: 10_000,
      ...io.options,
      ...security?.listenOptions(),
    };
    const socket =
      kind === "xpub"
        ? new zmq.XPublisher({ ...common, sendHighWaterMark: limits.highWaterMark, receiveHighWaterMark: limits.highWaterMark, maxMessageSize: limits.maxTopicBytes + 16 })
        : new zmq.XSubscriber({ ...common, receiveHighWaterMark: limits.highWaterMark, sendHighWaterMark: limits.highWaterMark, maxMessageSize: limits.maxMessageBytes });
    gate.watch(socket);
    try {
      await socket.bind(address);
    } catch (err) {
      socket.close();
      gate.release();
      throw new NodeBinError("UNAVAILABLE", `cannot bind the broadcast socket at ${address}: ${(err as Error).message}`, { details: { endpoint: address }, cause: err });
    }
    return new BoundPubSub(kind, socket, socket.lastEndpoint ?? address, gate, onMessage, options);
  }

  /** Queues a single-frame message; false when it was dropped (queue full, socket closed). */
  send(frame: Buffer): boolean {
    return this.sender.push(frame);
  }

  async close(): Promise<void> {
    if (!this.socket.closed) this.socket.close();
    await this.done;
    this.gate.release();
    // libzmq leaves an ipc socket file behind.
    if (this.bound.startsWith("ipc://")) rmSync(this.bound.slice("ipc://".length), { force: true });
  }
}
