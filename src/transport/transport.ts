/**
 * The Transport interface: a way to deliver an encoded Envelope to an
 * endpoint (a component node, a client, or a process's own control endpoint)
 * by its id. Transports are stacked (TransportStack): one that has no route to
 * an endpoint punts, and the next one tries.
 */
import type { PeerKind } from "../wire/control.ts";
import type { Envelope } from "../wire/envelope.ts";

export type { PeerKind };

/**
 * Who sent an envelope, as the transport that carried it knows (never as the
 * envelope claims): the kind of peer, and the way back on the very
 * connection it came in on.
 */
export interface Peer {
  readonly kind: PeerKind;
  /**
   * Sends a frame back on the connection the envelope came in on (undefined
   * for the direct transport: the process itself). Throws as deliver() does.
   * An answer sent this way cannot be diverted by a `from` another peer claimed.
   */
  readonly reply?: (frame: Uint8Array) => void;
  /**
   * The outbound link the envelope came back on: the endpoint of the
   * connector's DEALER ("tcp://10.0.0.5:7400"), or LOCAL_LINK for the
   * process itself. A caller accepts an answer only from the link its request
   * left on (deliver()'s result), so an answer forged on any other connection
   * can never settle a call. Undefined for a listener's peers: answers are
   * never accepted from those.
   */
  readonly link?: string;
  /**
   * The connection, as log lines and errors name the peer: "tcp peer #12 (a
   * member: cluster key 3c64...)", "ipc peer #3", "the connection to
   * tcp://10.0.0.5:7400". What the transport knows, never what the envelope
   * claims. (zeromq.js tells a listener neither the peer's address nor its
   * ZAP user per message: a connection is told apart by its number.)
   */
  readonly via?: string;
  /**
   * The connection itself, as a key unique in this process while the
   * connection lives: what a stream the peer opened is tied to (its credit
   * and CANCEL frames must come on the same connection, and the stream ends
   * when the connection closes: ZmqOptions.onConnectionClosed). Undefined
   * for the process itself.
   */
  readonly connection?: string;
}

/** The link of the process itself: frames between its own endpoints (the direct transport). */
export const LOCAL_LINK = "local";

/** The process itself (the direct transport). */
export const LOCAL_PEER: Peer = { kind: "local", link: LOCAL_LINK };

/** Receives the envelopes addressed to one local endpoint, with their sender as the transport knows it. Must not throw. */
export type Inbox = (env: Envelope, peer: Peer) => void;

export interface Transport {
  /** "direct", "zmq", ... for logs and errors. */
  readonly name: string;
  /**
   * Delivers `frame` (an encoded Envelope) to endpoint `to`, without blocking.
   * Returns the link it left on (see Peer.link: its answer must come back
   * on the same), or false when this transport has no route to `to` (the
   * stack then asks the next one). Throws NodeBinError when it has a route
   * but cannot deliver now: RESOURCE_EXHAUSTED when its buffers are full,
   * UNAVAILABLE when the peer is gone.
   */
  deliver(to: string, frame: Uint8Array): string | false;
  /**
   * Delivers `frame` to the process at network endpoint `endpoint` (e.g.
   * "tcp://10.0.0.5:7400"), whatever endpoint ids it hosts: how a process
   * reaches another host's discovery agent before it knows any of its ids.
   * Only transports that reach endpoints by address implement it. Throws as
   * deliver() does; returns the link (the endpoint).
   */
  deliverVia?(endpoint: string, frame: Uint8Array): string;
  /** Releases sockets and timers. Idempotent. */
  close(): Promise<void>;
}

/**
 * Where envelopes that arrive from outside the process go: the local endpoint
 * registry (DirectTransport.dispatch), told which kind of peer sent them.
 * Network transports take one. Returns false when no local endpoint has the
 * envelope's `to` id.
 */
export type LocalDispatch = (env: Envelope, peer: Peer) => boolean;
