/**
 * The host's broadcast relay: one per host, run by its agent (the governor,
 * or a container or dev standing in; host-role.ts starts it when the process
 * becomes the agent and stops it when it yields). See the README,
 * "Broadcast", for the topology and why.
 *
 *   host's publishers --PUB--> [XSUB ipc] relay [XPUB ipc] --SUB--> host's subscribing nodes
 *                                           [XPUB tcp] --SUB--> other hosts' relays
 *   other hosts' relays [XPUB tcp] --SUB (one per host)--> relay
 *
 * Forwarding (RelayCore, pure, so the rules are tested without sockets):
 * - a message from a publisher of this host is stamped (this relay's origin,
 *   the topic's sequence) and goes to the host's subscribers and to the other
 *   hosts;
 * - a message from another host goes to the host's subscribers only, never
 *   back to the network: every relay subscribes to every other directly, so
 *   one hop reaches the whole network and nothing loops (a message that
 *   comes back with this relay's own origin is dropped and counted);
 * - subscriptions flow the other way: a topic a subscriber of this host asks
 *   for is asked of the host's publishers (through the XSUB) and of every
 *   other host's relay (through the SUBs); a topic another host asks for,
 *   of the host's publishers only. So a message is sent only where someone
 *   subscribed to its method.
 * The relay never decodes an envelope: it checks the frames' form and bounds
 * and forwards bytes. The XPUBs' high-water mark drops for one slow
 * subscriber alone; the stamps let that subscriber count what it missed.
 */
import type { Logger } from "../component/context.ts";
import { NodeBinError } from "../wire/errors.ts";
import {
  BROADCAST_LIMITS,
  BoundPubSub,
  TopicSubscriber,
  encodeBatch,
  readBatch,
  readSubscription,
  stampBatch,
  subscriptionMessage,
  type BroadcastCounter,
  type BroadcastLimits,
  type CountDrop,
  type RelayEndpoints,
} from "../transport/pubsub.ts";
import type { WireSecurity } from "../transport/zmq.ts";

/** Where the relay's forwarding goes: its sockets, or a test's record. Each send returns false when it was dropped. */
export interface RelayPorts {
  /** A stamped batch to the host's subscribers (the local XPUB). */
  toLocal(frame: Buffer): boolean;
  /** A stamped batch to the other hosts' relays (the network XPUB). */
  toNetwork(frame: Buffer): boolean;
  /** A subscription message to the host's publishers (the XSUB). */
  toPublishers(subscription: Buffer): boolean;
  /** Subscribes (or unsubscribes) every other host's relay to `topic` (the SUBs). */
  toPeers(topic: Buffer, on: boolean): void;
}

interface TopicState {
  topic: Buffer;
  /** A subscriber of this host asked for it (the local XPUB passed its first subscription). */
  local: boolean;
  /** Another host's relay asked for it (the network XPUB). */
  network: boolean;
  /** The sequence number of the next envelope published on this host for it. */
  seq: number;
}

/** Most topics a relay keeps subscriptions for (past it a new subscription is ignored and counted). */
export const MAX_TOPICS = 4096;
/** Most other hosts a relay subscribes to. */
export const MAX_PEERS = 1024;

/**
 * The forwarding rules, without sockets. Not re-entrant; never throws on
 * what comes from a socket (malformed input is dropped and counted).
 */
export class RelayCore {
  private readonly topics = new Map<string, TopicState>();

  constructor(
    /** This relay's origin id: in every stamp it makes. */
    readonly origin: string,
    private readonly ports: RelayPorts,
    private readonly count: CountDrop,
    private readonly limits: BroadcastLimits = BROADCAST_LIMITS,
    private readonly maxTopics = MAX_TOPICS,
  ) {}

  /** A message from a publisher of this host (the XSUB): one frame, an unstamped batch. */
  fromPublisher(parts: Buffer[]): void {
    const frame = parts.length === 1 ? parts[0] : undefined;
    const batch = readBatch(frame, false, this.limits);
    if (!batch) {
      this.count("broadcastMalformed", `dropped a message of ${parts.length} frame(s) from a publisher: not a batch (topic | envelopes) within the bounds`);
      return;
    }
    const state = this.topics.get(Buffer.from(batch.topic.buffer, batch.topic.byteOffset, batch.topic.length).toString("latin1"));
    // Nobody asked for it (any more): publishers filter by subscriptions, so this is a race with an unsubscription.
    if (!state || (!state.local && !state.network)) return;
    const n = batch.envelopes.length;
    const stamped = stampBatch(frame!, batch, this.origin, state.seq);
    state.seq += n;
    if (state.local && !this.ports.toLocal(stamped)) this.count("broadcastDropped", "the local subscribers' send queue is full", n);
    if (state.network && !this.ports.toNetwork(stamped)) this.count("broadcastDropped", "the network send queue is full", n);
  }

  /** A message from another host's relay (one of the SUBs): a stamped batch. To this host's subscribers only. */
  fromPeer(frame: Buffer, peer = "another host"): void {
    const batch = readBatch(frame, true, this.limits);
    if (!batch) {
      this.count("broadcastMalformed", `dropped a message from ${peer}: not a batch (topic | stamp | envelopes) within the bounds`);
      return;
    }
    if (batch.stamp!.origin === this.origin) {
      this.count("broadcastLooped", `dropped a message from ${peer} that this relay sent: broadcasts take one hop`, batch.envelopes.length);
      return;
    }
    const state = this.topics.get(Buffer.from(batch.topic.buffer, batch.topic.byteOffset, batch.topic.length).toString("latin1"));
    if (!state?.local) return; // no subscriber here any more (a race with an unsubscription)
    // Forwarded as it came: the origin's stamp is what the host's subscribers count gaps by.
    if (!this.ports.toLocal(frame)) this.count("broadcastDropped", "the local subscribers' send queue is full", batch.envelopes.length);
  }

  /** A subscription message from the local XPUB (a subscriber of this host asked for a topic, or its last one left). */
  localSubscription(parts: Buffer[]): void {
    this.subscription(parts, "local");
  }

  /** A subscription message from the network XPUB (another host's relay). */
  networkSubscription(parts: Buffer[]): void {
    this.subscription(parts, "network");
  }

  /** The topics this host's subscribers asked for (what a new SUB to another host subscribes to). */
  localTopics(): Buffer[] {
    return [...this.topics.values()].filter((s) => s.local).map((s) => s.topic);
  }

  /** Topics with a subscription. */
  get size(): number {
    return this.topics.size;
  }

  private subscription(parts: Buffer[], side: "local" | "network"): void {
    const sub = readSubscription(parts, this.limits.maxTopicBytes);
    if (!sub) {
      // A raw SUB's empty or partial prefix, or anything else that is not "1"/"0" + a method topic.
      this.count("broadcastMalformed", `ignored a ${side} subscription message that names no method topic`);
      return;
    }
    const key = sub.topic.toString("latin1");
    let state = this.topics.get(key);
    if (sub.on) {
      if (!state) {
        if (this.topics.size >= this.maxTopics) {
          this.count("broadcastRefusedTopics", `ignored a subscription to ${sub.topic.subarray(0, -1).toString()}: the relay holds ${this.maxTopics} topics`);
          return;
        }
        this.topics.set(key, (state = { topic: sub.topic, local: false, network: false, seq: 0 }));
      }
      if (state[side]) return;
      const first = !state.local && !state.network;
      state[side] = true;
      if (first) this.upstream(state.topic, true);
      if (side === "local") this.ports.toPeers(state.topic, true);
      return;
    }
    if (!state?.[side]) return;
    state[side] = false;
    if (side === "local") this.ports.toPeers(state.topic, false);
    if (!state.local && !state.network) {
      this.topics.delete(key);
      this.upstream(state.topic, false);
    }
  }

  private upstream(topic: Buffer, on: boolean): void {
    if (!this.ports.toPublishers(subscriptionMessage(topic, on))) this.count("broadcastDropped", "a subscription to the host's publishers was not sent: queue full");
  }
}

export interface RelayOptions {
  /** This relay's origin id: unique per relay lifetime (the host id and the agent's incarnation). */
  origin: string;
  /** The host's relay endpoints (ipc, in the runtime directory). */
  endpoints: RelayEndpoints;
  /** Where the network XPUB binds: "tcp://ADDRESS:0" (a port the OS picks). */
  networkBind: string;
  /** The address it is advertised at, in place of a wildcard it bound. */
  advertise?: string;
  /** CurveZMQ and the cluster key's ZAP check for the tcp sockets. */
  security?: WireSecurity;
  limits?: Partial<BroadcastLimits>;
  log: Logger;
  maxPeers?: number;
  maxTopics?: number;
}

/** A relay with its sockets: the local XSUB and XPUB (ipc), the network XPUB (tcp), one SUB per other host. */
export class BroadcastRelay {
  readonly core: RelayCore;
  private readonly peers = new Map<string, TopicSubscriber>();
  private readonly counters: Partial<Record<BroadcastCounter, number>> = {};
  private readonly limits: BroadcastLimits;
  private readonly count: CountDrop;
  private xsub!: BoundPubSub;
  private localXpub!: BoundPubSub;
  private networkXpub!: BoundPubSub;
  /** The agent process's own broadcasts, per topic, until the end of the turn (see publish). */
  private readonly pending = new Map<string, { topic: Buffer; envelopes: Uint8Array[]; bytes: number }>();
  private flushing = false;
  private closed = false;

  private constructor(private readonly options: RelayOptions) {
    this.limits = { ...BROADCAST_LIMITS, ...options.limits };
    this.count = (counter, reason, n = 1) => {
      const total = (this.counters[counter] = (this.counters[counter] ?? 0) + n);
      // Bounds that refuse are worth a line (powers of two: a flood writes ~log2(n) lines); drops are routine.
      const bound = counter === "broadcastRefusedTopics" || counter === "broadcastRefusedPeers" || counter === "broadcastLooped" || counter === "broadcastConnectionsRefused" || counter === "broadcastUnauthenticated";
      if (bound && (total & (total - 1)) === 0) options.log.warn(`broadcast relay: ${reason} (${counter}: ${total} so far)`);
      else options.log.debug(`broadcast relay: ${reason}`, { [counter]: total });
    };
    this.core = new RelayCore(
      options.origin,
      {
        toLocal: (m) => this.localXpub.send(m),
        toNetwork: (m) => this.networkXpub.send(m),
        toPublishers: (s) => this.xsub.send(s),
        toPeers: (topic, on) => {
          for (const sub of this.peers.values()) on ? sub.subscribe(topic) : sub.unsubscribe(topic);
        },
      },
      this.count,
      this.limits,
      options.maxTopics ?? MAX_TOPICS,
    );
  }

  /** Binds the relay's three sockets. Throws UNAVAILABLE when one cannot be bound (the others are closed). */
  static async start(options: RelayOptions): Promise<BroadcastRelay> {
    const relay = new BroadcastRelay(options);
    const common = { limits: relay.limits, count: relay.count };
    const bound: BoundPubSub[] = [];
    try {
      bound.push((relay.xsub = await BoundPubSub.bind("xsub", options.endpoints.publish, (parts) => relay.core.fromPublisher(parts), common)));
      bound.push((relay.localXpub = await BoundPubSub.bind("xpub", options.endpoints.subscribe, (parts) => relay.core.localSubscription(parts), common)));
      bound.push(
        (relay.networkXpub = await BoundPubSub.bind("xpub", options.networkBind, (parts) => relay.core.networkSubscription(parts), {
          ...common,
          ...(options.security ? { security: options.security } : {}),
          ...(options.advertise ? { advertise: options.advertise } : {}),
        })),
      );
    } catch (err) {
      await Promise.all(bound.map((b) => b.close()));
      throw err;
    }
    return relay;
  }

  /** The network XPUB as other hosts reach it (what gossip advertises). */
  get networkEndpoint(): string {
    return this.networkXpub.endpoint;
  }

  /**
   * Another host's relay is at `endpoint` (from gossip), or gone (undefined):
   * a SUB connects to it, subscribed to this host's topics; a host that moved
   * gets a new one. A host whose record carries no broadcast endpoint (an
   * older node-bin) is not reached.
   */
  setPeer(host: string, endpoint: string | undefined): void {
    if (this.closed) return;
    const valid = endpoint !== undefined && /^tcp:\/\/\S{1,1000}$/.test(endpoint) && endpoint !== this.networkEndpoint ? endpoint : undefined;
    const current = this.peers.get(host);
    if (current?.endpoint === valid) return;
    if (current) {
      this.peers.delete(host);
      void current.close();
    }
    if (valid === undefined) return;
    if (this.peers.size >= (this.options.maxPeers ?? MAX_PEERS)) {
      this.count("broadcastRefusedPeers", `not subscribing to host ${host}: the relay subscribes to ${this.options.maxPeers ?? MAX_PEERS} hosts`);
      return;
    }
    const sub = new TopicSubscriber(valid, (parts) => this.core.fromPeer(parts, `host ${host}`), {
      limits: this.limits,
      count: this.count,
      ...(this.options.security ? { security: this.options.security } : {}),
    });
    for (const topic of this.core.localTopics()) sub.subscribe(topic);
    this.peers.set(host, sub);
  }

  /**
   * Publishes an envelope of this very process (the agent's own broadcasts,
   * and those clients hand it): into the forwarding as if it came from a
   * publisher of the host, without the ipc hop. Envelopes of one topic
   * published in one turn leave as one message. Throws RESOURCE_EXHAUSTED
   * for an envelope past the bound.
   */
  publish(topic: Buffer, frame: Uint8Array): void {
    if (frame.length > this.limits.maxEnvelopeBytes) {
      throw new NodeBinError("RESOURCE_EXHAUSTED", `a broadcast message is at most ${this.limits.maxEnvelopeBytes} bytes, this one is ${frame.length}`, { details: { bytes: String(frame.length), max: String(this.limits.maxEnvelopeBytes) } });
    }
    if (this.closed) throw new NodeBinError("UNAVAILABLE", "the broadcast relay is closed");
    const key = topic.toString("latin1");
    let batch = this.pending.get(key);
    if (batch && batch.bytes + frame.length > this.limits.maxBatchBytes) {
      this.flush(key);
      batch = undefined;
    }
    if (!batch) this.pending.set(key, (batch = { topic, envelopes: [], bytes: 0 }));
    batch.envelopes.push(frame);
    batch.bytes += frame.length;
    if (batch.envelopes.length >= this.limits.maxBatch) this.flush(key);
    else if (!this.flushing) {
      this.flushing = true;
      queueMicrotask(() => {
        this.flushing = false;
        for (const k of [...this.pending.keys()]) this.flush(k);
      });
    }
  }

  private flush(key: string): void {
    const batch = this.pending.get(key);
    if (!batch) return;
    this.pending.delete(key);
    this.core.fromPublisher([encodeBatch(batch.topic, batch.envelopes)]);
  }

  /** What the relay dropped or refused, by reason. */
  refused(): Record<string, number> {
    return { ...this.counters } as Record<string, number>;
  }

  /** Gauges: topics subscribed, other hosts subscribed to. */
  stats(): { broadcastTopics: number; broadcastPeers: number } {
    return { broadcastTopics: this.core.size, broadcastPeers: this.peers.size };
  }

  /** Closes every socket and removes the ipc files. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.pending.clear();
    const peers = [...this.peers.values()];
    this.peers.clear();
    await Promise.all([...peers.map((p) => p.close()), this.xsub.close(), this.localXpub.close(), this.networkXpub.close()]);
  }
}
