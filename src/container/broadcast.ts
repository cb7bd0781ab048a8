/**
 * A process's part in BROADCAST (README "Broadcast"): how its broadcasts
 * leave it, and how those of the network reach its nodes.
 *
 * - Joined to a host (a container, a joined dev, the governor): a broadcast
 *   goes to the host's relay (membership/broadcast-relay.ts), through a PUB
 *   connected to the relay's ipc XSUB, or straight into the relay when this
 *   process runs it (the host agent). The process's nodes that serve
 *   BROADCAST methods get them through one SUB connected to the relay's ipc
 *   XPUB, subscribed to exactly those methods' topics (kept in step with the
 *   table). A member never connects across hosts: the relay does.
 * - A closed world (dev alone): a broadcast reaches every node of the method
 *   in this process, its envelope encoded and decoded as on the wire.
 *
 * Either way a node takes a broadcast as a message in its queue, like an
 * ASYNC one: handled one at a time, through the inbound interceptors,
 * answered never. What is lost on the way is counted: gaps in the origin's
 * sequence (broadcastMissed), messages a node did not take because its queue
 * was full or it was not serving (broadcastRefused), frames that are not the
 * wire form (broadcastMalformed), messages not sent (broadcastDropped).
 */
import type { Logger } from "../component/context.ts";
import type { ComponentNode, Origin } from "../component/node.ts";
import type { BroadcastRelay } from "../membership/broadcast-relay.ts";
import { LOCAL } from "../membership/table.ts";
import { wrongMode } from "../routing/caller.ts";
import { BROADCAST_LIMITS, GapCounter, TopicPublisher, TopicSubscriber, readBatch, topicOf, type BroadcastCounter, type BroadcastLimits, type RelayEndpoints } from "../transport/pubsub.ts";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope, type Envelope } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { decodeMessage, encodeMessage } from "../wire/message.ts";
import { Mode, type MethodSchema } from "../wire/schema.ts";
import type { Container } from "./container.ts";

export interface BroadcastOptions {
  container: Container;
  /**
   * The host's relay, when the process is joined to its host: its ipc
   * endpoints, and the relay itself while this process runs it. Without it
   * the process is a closed world.
   */
  host?: { endpoints: RelayEndpoints; relay(): BroadcastRelay | undefined };
  log: Logger;
  limits?: Partial<BroadcastLimits>;
}

/** What a broadcast carries besides its request: the caller's metadata. */
export interface BroadcastOptionsOfCall {
  meta?: Record<string, string>;
}

export class ProcessBroadcast {
  private readonly container: Container;
  private readonly publisher: TopicPublisher | undefined;
  private subscriber: TopicSubscriber | undefined;
  /** Topics subscribed, by method. */
  private readonly subscribed = new Map<string, Buffer>();
  /** The nodes of this process that take each BROADCAST method (rebuilt when the table changes). */
  private receivers: Map<string, ComponentNode[]> | undefined;
  private readonly gaps = new GapCounter();
  private readonly limits: BroadcastLimits;
  private readonly counters: Partial<Record<BroadcastCounter, number>> = {};
  private readonly offTable: () => void;
  private closed = false;

  constructor(private readonly options: BroadcastOptions) {
    this.container = options.container;
    this.limits = { ...BROADCAST_LIMITS, ...options.limits };
    // Connected at once, not at the first broadcast: the relay's subscriptions reach a PUB only after it
    // connected, and until they have, the PUB sends nothing (a late joiner's loss, not the first broadcast's).
    if (options.host) this.publisher = new TopicPublisher(options.host.endpoints.publish, { count: this.count, ...(options.limits ? { limits: options.limits } : {}) });
    this.offTable = this.container.table.onChange(() => {
      this.receivers = undefined;
      this.resubscribe();
    });
    this.resubscribe();
  }

  private readonly count = (counter: BroadcastCounter, reason: string, n = 1): void => {
    const total = (this.counters[counter] = (this.counters[counter] ?? 0) + n);
    // Losses are worth a line each time their total passes a power of two (a flood writes ~log2(n) lines); the rest at debug.
    const crossed = Math.floor(Math.log2(total)) > Math.floor(Math.log2(Math.max(1, total - n))) || total === n;
    if ((counter === "broadcastMissed" || counter === "broadcastRefused") && crossed) this.options.log.warn(`${reason} (${counter}: ${total} so far)`);
    else this.options.log.debug(reason, { [counter]: total });
  };

  /**
   * Broadcasts `request` to `method` from endpoint `from`: to every node of
   * the method, on every host. Fire-and-forget: returns once the message is
   * queued for the relay (or, in a closed world, in the nodes' queues).
   * Throws NOT_FOUND for a method no node serves (with suggestions),
   * INVALID_ARGUMENT for a method that is not BROADCAST (naming its verb) or
   * a request that does not fit its type, RESOURCE_EXHAUSTED when the message
   * is too large or the queue to the relay is full.
   */
  send(from: string, method: string, request: unknown, options?: BroadcastOptionsOfCall): void {
    const schema = this.schemaOf(method);
    const value = encodeMessage(schema.requestType, request, `request of ${schema.fullName}`);
    this.publishValue(schema.fullName, value, options?.meta ?? {}, from);
  }

  /**
   * Broadcasts a request already encoded (what a client hands this process:
   * nodebin.Control/Broadcast), checked against the method's type first.
   * Throws as send() does.
   */
  publish(from: string, method: string, value: Uint8Array, meta: Record<string, string>): void {
    const schema = this.schemaOf(method);
    decodeMessage(schema.requestType, value, `request of ${schema.fullName}`);
    this.publishValue(schema.fullName, value, meta, from);
  }

  /** The schema of a BROADCAST method. Throws NOT_FOUND, or INVALID_ARGUMENT naming the verb of another mode. */
  schemaOf(method: string): MethodSchema {
    const schema = this.container.router.route(method).method;
    if (schema.mode !== Mode.BROADCAST) throw wrongMode(schema, Mode.BROADCAST);
    return schema;
  }

  private publishValue(method: string, value: Uint8Array, meta: Record<string, string>, from: string): void {
    if (this.closed) throw new NodeBinError("UNAVAILABLE", "the process is closing: no broadcast is sent");
    const frame = encodeEnvelope(envelope({ plane: Plane.APPLICATION, mode: Mode.BROADCAST, kind: Kind.REQUEST, from, to: "", method, value, meta }));
    const relay = this.options.host?.relay();
    if (relay) relay.publish(topicOf(method), frame);
    else if (this.publisher) this.publisher.publish(topicOf(method), frame);
    else this.deliverHere(frame);
  }

  /** A closed world: the envelope goes to this process's nodes of the method, decoded from its bytes as a subscriber would. */
  private deliverHere(frame: Uint8Array): void {
    const env = decodeEnvelope(frame);
    if (env instanceof NodeBinError) throw env; // built by this process: cannot happen
    void this.deliver(env, { kind: "local" }, false);
  }

  /**
   * Hands `env` to every node of its method here. `wait`: a node whose queue
   * is full is waited for (the promise returned), instead of refusing it:
   * what the relay sends is then held in the subscriber's buffers, and past
   * them dropped by the relay for this process alone (counted as missed on
   * arrival of the next). Without it (a closed world: the sender is this
   * process), a full queue refuses at once. A node not serving refuses at
   * once either way (counted).
   */
  private deliver(env: Envelope, origin: Origin, wait: boolean): Promise<void> | undefined {
    const nodes = this.receiversOf(env.method);
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[i]!;
      const refused = node.receiveBroadcast(env, origin);
      if (!refused) continue;
      if (wait && refused.code === "RESOURCE_EXHAUSTED") return this.whenRoom(node).then(() => this.deliverFrom(env, origin, nodes, i));
      this.count("broadcastRefused", `${node.id} did not take a broadcast of ${env.method}: ${refused.code}: ${refused.message}`);
    }
    return undefined;
  }

  /** deliver(), from the i-th node on, after a wait for that node's room. */
  private async deliverFrom(env: Envelope, origin: Origin, nodes: ComponentNode[], from: number): Promise<void> {
    for (let i = from; i < nodes.length; i++) {
      const node = nodes[i]!;
      for (;;) {
        const refused = node.receiveBroadcast(env, origin);
        if (!refused) break;
        if (refused.code !== "RESOURCE_EXHAUSTED" || this.closed) {
          this.count("broadcastRefused", `${node.id} did not take a broadcast of ${env.method}: ${refused.code}: ${refused.message}`);
          break;
        }
        await this.whenRoom(node);
      }
    }
  }

  /** Resolves once `node` has room in its queue (or this closes). Polled: only a subscriber held up by a full queue waits here. */
  private async whenRoom(node: ComponentNode): Promise<void> {
    for (let wait = 1; !this.closed; wait = Math.min(wait * 2, 20)) {
      const { queued, capacity, phase } = node.getStats();
      if (queued < capacity || phase === "closed" || phase === "draining") return;
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  private receiversOf(method: string): ComponentNode[] {
    if (!this.receivers) {
      this.receivers = new Map();
      for (const node of this.container.localNodes()) {
        for (const [name, m] of node.component.schema.methods) {
          if (m.mode !== Mode.BROADCAST || !node.component.handlers.has(name)) continue;
          const list = this.receivers.get(name);
          if (list) list.push(node);
          else this.receivers.set(name, [node]);
        }
      }
    }
    return this.receivers.get(method) ?? [];
  }

  /** Subscribes the SUB to the BROADCAST methods this process's nodes serve now, and to no others. */
  private resubscribe(): void {
    const host = this.options.host;
    if (!host || this.closed) return;
    const wanted = new Set<string>();
    for (const entry of this.container.table.sourceEntries(LOCAL)) for (const m of entry.methods) if (m.mode === Mode.BROADCAST) wanted.add(m.name);
    for (const [method, topic] of this.subscribed) {
      if (wanted.has(method)) continue;
      this.subscribed.delete(method);
      this.subscriber?.unsubscribe(topic);
    }
    for (const method of wanted) {
      if (this.subscribed.has(method)) continue;
      const topic = topicOf(method);
      this.subscribed.set(method, topic);
      this.subscriber ??= new TopicSubscriber(host.endpoints.subscribe, (frame) => this.receive(frame), { count: this.count, ...(this.options.limits ? { limits: this.options.limits } : {}) });
      this.subscriber.subscribe(topic);
    }
  }

  /** One message from the relay: a stamped batch. Returns a promise while a node's full queue holds it up (see deliver). */
  private receive(frame: Buffer): Promise<void> | undefined {
    const batch = readBatch(frame, true, this.limits);
    if (!batch) {
      this.count("broadcastMalformed", `dropped a broadcast message that is no batch (topic | stamp | envelopes) within the bounds`);
      return;
    }
    const { method, stamp } = batch as { method: string; stamp: NonNullable<typeof batch.stamp> };
    const missed = this.gaps.observe(stamp.origin, method, stamp.seq, batch.envelopes.length);
    if (missed > 0) this.count("broadcastMissed", `missed ${missed} broadcast(s) of ${method} from ${stamp.origin} (dropped on the way: a subscriber too slow, or a link cut)`, missed);
    // A relay's messages are the network's: whoever published them, on this host or another.
    const origin: Origin = { kind: "network", via: `broadcast relayed by ${stamp.origin}` };
    return this.deliverBatch(batch.envelopes, 0, method, origin);
  }

  private deliverBatch(envelopes: Uint8Array[], from: number, method: string, origin: Origin): Promise<void> | undefined {
    for (let i = from; i < envelopes.length; i++) {
      const env = decodeEnvelope(envelopes[i]!);
      if (env instanceof NodeBinError) {
        this.count("broadcastMalformed", `dropped a broadcast frame of ${method}: ${env.message}`);
        continue;
      }
      if (env.method !== method || env.mode !== Mode.BROADCAST || env.kind !== Kind.REQUEST || env.plane !== Plane.APPLICATION) {
        this.count("broadcastMalformed", `dropped a frame under topic ${method} that is no BROADCAST request of it (${JSON.stringify(env.method)})`);
        continue;
      }
      const held = this.deliver(env, origin, true);
      if (held) return held.then(() => this.deliverBatch(envelopes, i + 1, method, origin));
    }
    return undefined;
  }

  /** What was lost or refused since start, by reason (in the process's `refused`). */
  refused(): Record<string, number> {
    return { ...this.counters } as Record<string, number>;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.offTable();
    this.publisher?.close();
    await this.subscriber?.close();
  }
}
