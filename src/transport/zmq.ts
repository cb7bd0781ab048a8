/**
 * ZeroMQ transports: a listener (ROUTER, bound: where a process's nodes are
 * reached from outside) and a connector (one DEALER per remote endpoint,
 * reused: how a process reaches nodes elsewhere). Every frame is one encoded
 * Envelope. The only module that touches zeromq: under Deno its native wait
 * does not work (see shared notes), and this is where that will be handled.
 *
 * zeromq.js allows one send in flight per socket, so each socket has a writer
 * that queues outgoing frames and pumps them in order; a queue past its limit
 * fails the send at once with RESOURCE_EXHAUSTED instead of growing.
 */
import { existsSync } from "node:fs";
import * as zmq from "zeromq";
import { Fifo } from "../component/fifo.ts";
import { Kind, decodeEnvelope, encodeResponse, envelope, type Envelope } from "../wire/envelope.ts";
import { NodeBinError, UNHANDLED_DETAIL } from "../wire/errors.ts";
import type { LocalDispatch, Transport } from "./transport.ts";

export interface ZmqOptions {
  /** Frames queued per socket beyond ZeroMQ's own buffers before sends fail (default 10 000). */
  queueLimit?: number;
  /** ZeroMQ high-water marks, in messages (default 10 000). */
  highWaterMark?: number;
  /** Largest frame accepted; a peer that sends a larger one is disconnected by ZeroMQ (default 16 MiB). */
  maxMessageBytes?: number;
  /** Called for frames that could not be handled, for counting and logs. */
  onDrop?: (reason: string) => void;
}

const DEFAULTS = { queueLimit: 10_000, highWaterMark: 10_000, maxMessageBytes: 16 * 1024 * 1024 };
// Reply routes remembered by a listener: beyond this the oldest are forgotten,
// so that a flood of made-up sender ids cannot grow memory without bound.
const MAX_PEERS = 65_536;

type Message = (Buffer | Uint8Array)[];

/** Queues outgoing messages of one socket and sends them one at a time, in order. */
class Writer {
  private readonly queue = new Fifo<Message>();
  private pumping = false;

  constructor(
    private readonly socket: zmq.Socket & { send(msg: Message): Promise<void> },
    private readonly limit: number,
    private readonly label: string,
    private readonly onError: (err: unknown) => void,
  ) {}

  push(message: Message): void {
    if (this.queue.length >= this.limit) {
      throw new NodeBinError("RESOURCE_EXHAUSTED", `send queue to ${this.label} is full (${this.limit} messages)`, { details: { queued: String(this.queue.length) } });
    }
    this.queue.push(message);
    if (!this.pumping) void this.pump();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    for (let message = this.queue.shift(); message; message = this.queue.shift()) {
      if (this.socket.closed) break;
      try {
        await this.socket.send(message);
      } catch (err) {
        this.onError(err);
      }
    }
    this.pumping = false;
  }
}

/** A bound ROUTER: frames in go to `dispatch`; answers go back to whoever sent from that id. */
export class ZmqListener implements Transport {
  readonly name = "zmq-listen";
  private readonly socket: zmq.Router;
  private readonly writer: Writer;
  private readonly peers = new Map<string, Buffer>();
  private readonly onDrop: (reason: string) => void;
  private readonly done: Promise<void>;
  /** The endpoints actually bound (tcp port 0 resolved). */
  readonly endpoints: string[];

  private constructor(socket: zmq.Router, endpoints: string[], private readonly dispatch: LocalDispatch, options: ZmqOptions) {
    this.socket = socket;
    this.endpoints = endpoints;
    this.onDrop = options.onDrop ?? (() => {});
    this.writer = new Writer(socket as never, options.queueLimit ?? DEFAULTS.queueLimit, "listener peers", (err) => this.onDrop(`send failed: ${(err as Error).message}`));
    this.done = this.receiveLoop();
  }

  /** Binds a ROUTER at each address. Throws UNAVAILABLE naming the address that could not be bound. */
  static async bind(addresses: string[], dispatch: LocalDispatch, options: ZmqOptions = {}): Promise<ZmqListener> {
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
    return new ZmqListener(socket, bound, dispatch, options);
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const parts of this.socket) {
        const [rid, frame] = parts;
        if (parts.length !== 2 || !rid || !frame) {
          this.onDrop(`malformed message of ${parts.length} parts`);
          continue;
        }
        this.receive(rid, frame);
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
    if (env.from) this.remember(env.from, rid);
    if (!this.dispatch(env)) {
      this.onDrop(`no endpoint ${JSON.stringify(env.to)} here`);
      if (env.kind === Kind.REQUEST && env.from) {
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

  private remember(id: string, rid: Buffer): void {
    const known = this.peers.get(id);
    if (known && known.equals(rid)) return;
    this.peers.delete(id);
    this.peers.set(id, rid);
    if (this.peers.size > MAX_PEERS) this.peers.delete(this.peers.keys().next().value!);
  }

  deliver(to: string, frame: Uint8Array): boolean {
    const rid = this.peers.get(to);
    if (!rid) return false;
    this.writer.push([rid, frame]);
    return true;
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
    const writer = new Writer(socket as never, this.options.queueLimit ?? DEFAULTS.queueLimit, endpoint, (err) => onDrop(`send to ${endpoint} failed: ${(err as Error).message}`));
    conn = { socket, writer, done: this.receiveLoop(socket, onDrop) };
    this.sockets.set(endpoint, conn);
    return conn;
  }

  private async receiveLoop(socket: zmq.Dealer, onDrop: (reason: string) => void): Promise<void> {
    try {
      for await (const [frame] of socket) {
        const env = frame ? decodeEnvelope(frame) : new NodeBinError("INVALID_ARGUMENT", "empty message");
        if (env instanceof NodeBinError) onDrop(env.message);
        else if (!this.dispatch(env)) onDrop(`no local endpoint ${JSON.stringify(env.to)}`);
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
