/**
 * Host-to-host gossip and failure detection: how each host's discovery agent
 * learns every other host's nodes, and forgets the hosts that stop. Pure:
 * no sockets, timers or clock; time and randomness are passed in, bytes go
 * in and out, so that a network of these can be simulated deterministically
 * (test/unit/gossip.test.ts, bench/gossip-sim.ts). The agent (agent.ts) wires
 * it to ZeroMQ: it calls tick() every nextDelayMs() and sends the SYNs it
 * returns to their endpoints (its own outbound connections), closes what
 * idleConnections() names, and for each message that arrives calls
 * receive() with the connection it came on, and sends the replies back on
 * that same connection, never to an endpoint a message names (a claimed
 * endpoint is no route: answering there let any peer make us open sockets
 * without end). The plan (period, fanout, digests
 * per SYN, detector parameters) is gossip-plan.ts; the wire form,
 * gossip-codec.ts; what is held (records, tombstones, the ring, schemas,
 * views) and how an incoming record or digest changes it, gossip-state.ts.
 * This file is the protocol: rounds, targets, SYN / ACK / ACK2, the budget.
 *
 * Protocol: Scuttlebutt-style anti-entropy, push-pull with deltas, in three
 * messages as Cassandra's (proto/nodebin/gossip.proto):
 *   A -> B  SYN   digests {host, incarnation, version, heartbeat}
 *   B -> A  ACK   records A lacks or has older; B's newer heartbeats;
 *                 requests for the records A has newer
 *   A -> B  ACK2  the requested records
 * Each host owns one record (its nodes and schemas) that only it changes:
 * `version` when its nodes change, `heartbeat` every round, `incarnation`
 * when its agent restarts (a higher one supersedes the old record). Record
 * bodies travel only when a version is newer, heartbeats only in digests: an
 * idle cluster sends no node lists. So the ACK to A's SYN comes back on A's
 * own connection to B's endpoint: what it says of B is B's first-hand word,
 * and only that may override what relays said of B (the trust rule, in
 * gossip-state.ts). A message that arrives on a listener (a SYN, an ACK2) is
 * second-hand for every host in it, its sender included; when it claims to be
 * a host we hold as dead, or hold only from relays at another endpoint, the
 * endpoint is probed with a SYN of ours (a few per round), whose answer
 * settles it first-hand: a live host's tombstone is refuted within a round
 * of it speaking to us.
 *
 * Failure detection: phi accrual (failure-detector.ts) on the intervals
 * between increases of each host's heartbeat as seen here. A dead host leaves
 * the view with its nodes and leaves a tombstone (its last record), so that a
 * stale digest relayed by a third host cannot bring it back; it comes back
 * with a new incarnation, by speaking to us itself, or with a heartbeat
 * clearly past anything it could have sent before it was declared dead.
 *
 * Coordination volume: SYN digests are what grows with the cluster (about
 * 12 bytes plus the host id each; N per SYN if sent whole). The scheme is a
 * ROTATING RANGE: a SYN carries at most k digests, k chosen so that a round
 * (fanout SYNs sent and about as many ACKs answered) spends half the budget;
 * when the host knows more hosts than k, each SYN covers the next slice of the
 * sorted host ids (range [first, last]; absence inside it means "I lack it")
 * plus the sender itself, the receiver, and hosts whose records changed in
 * the last few rounds (so changes spread in O(log N) rounds at any size).
 * The period stays at basePeriodMs unless even MIN_DIGESTS per SYN would not
 * fit the budget; then it grows. A token bucket (one second of budget) trims
 * messages when a host is asked more than planned, records first (they may
 * use only what is left beyond one round of planned digests, so a host
 * catching up never starves the heartbeats). What grows with N instead is
 * the interval at which an observer hears each host's heartbeat, hence the
 * detection time: see gossipPlan() for the bound. Record bodies are relayed
 * as opaque bytes; a schema's JSON travels with the records that use it,
 * except to a host that listed it as held (it does while its view changes).
 */
import { NodeBinError } from "../wire/errors.ts";
import { MAX_ENDPOINT_LENGTH, MAX_HELD_SCHEMAS, columns, encode, encodeNodes, pack, parse, validId, type HostExtras, type Incoming } from "./gossip-codec.ts";
import { DEFAULT_BUDGET, DEFAULT_PERIOD_MS, DEFAULT_THRESHOLD, DIGEST_OVERHEAD, HEADROOM, gossipPlan, type GossipPlan, type PlanOptions } from "./gossip-plan.ts";
import { HostStore, mayRevive, upperBound, type GossipChange, type HostState, type HostView, type Origin } from "./gossip-state.ts";
import type { NodeEntry } from "./table.ts";

/** The gossip's options; those of the plan (period, budget, detector) are PlanOptions'. */
export interface GossipOptions extends PlanOptions {
  /**
   * This host: its id, discovery endpoint, network, and incarnation (its
   * agent's start time, ms); `broadcast`: its broadcast relay's network
   * endpoint, advertised in its record's body (gossip.proto GossipBody).
   */
  self: { host: string; endpoint: string; network: string; incarnation: number; broadcast?: string };
  /** Discovery endpoints to start from; our own endpoint among them is ignored. */
  seeds: string[];
  /** The clock, ms. */
  now: () => number;
  /** Uniform in [0, 1); default Math.random. */
  random?: () => number;
  /** How long a dead host's tombstone is kept (default one hour). */
  tombstoneMs?: number;
  /** Chance per round of contacting a seed we do not know yet, once we know 2 peers (default 0.1). */
  seedProbability?: number;
}

/**
 * A message to send. tick()'s SYNs go to `endpoint` (over the agent's own
 * connection to it). receive()'s replies go back on the connection the
 * message came in on, whatever `endpoint` says: there it only names the peer
 * (the endpoint of our connection, or the one the sender claims), for logs
 * and simulations.
 */
export interface Outgoing {
  endpoint: string;
  bytes: Uint8Array;
}

/** The view and its change events are the store's (gossip-state.ts); the gossip hands them out. */
export type { GossipChange, HostView } from "./gossip-state.ts";

const DEFAULT_TOMBSTONE_MS = 3_600_000;
const DEFAULT_SEED_PROBABILITY = 0.1;
/** Endpoints claimed on a listener and waiting to be probed (more are dropped, counted): what a flood of claims can make us hold. */
const MAX_PENDING_PROBES = 16;
/** Probes of claimed endpoints per round: what a flood of claims can make us dial. */
const MAX_PROBES_PER_ROUND = 2;
/** Outbound connections kept (least recently used closed first) and rounds an unused one stays open. */
const MAX_CONNECTIONS = 64;
const IDLE_ROUNDS = 30;
/** Largest message sent, unless a single record is larger. */
const MAX_SEND_BYTES = 256 * 1024;

/** A SYN destination: an endpoint, and the host there when we know it. */
interface Target {
  endpoint: string;
  host?: string;
}

const COUNTERS = [
  "rounds",
  "bytesSent",
  "bytesReceived",
  "messagesSent",
  "messagesReceived",
  "synSent",
  "ackSent",
  "ack2Sent",
  "synReceived",
  "ackReceived",
  "ack2Received",
  "digestsSent",
  "recordsSent",
  "recordsReceived",
  "malformed",
  "incompatible",
  "badRecords",
  "conflicts",
  "selfRefuted",
  "selfRefused",
  "selfMessages",
  "hostsAdded",
  "hostsUpdated",
  "hostsRemoved",
  "revived",
  "refuted",
  "staleIgnored",
  "incarnationRefused",
  "relayRefused",
  "endpointRefused",
  "heartbeatRefused",
  "seedContacts",
  "deadProbes",
  "claimProbes",
  "probesDropped",
  "connectionsClosed",
  "budgetTrimmed",
  "internalErrors",
  "listenerErrors",
] as const;

/**
 * One host's gossip. Not thread-safe, not re-entrant (listeners must not call
 * back into it). The constructor throws INVALID_ARGUMENT for unusable options;
 * nothing else throws.
 */
export class Gossip {
  private readonly options: GossipOptions;
  private readonly random: () => number;
  private readonly counters: Record<(typeof COUNTERS)[number], number>;
  /** The hosts held, the schemas, the views and the merge rules (gossip-state.ts). */
  private readonly store: HostStore;
  private readonly self: HostState;
  private readonly selfEndpoints = new Set<string>();
  private readonly seedsContacted = new Set<string>();
  /** The host that answered on our connection to an endpoint (seeds are endpoints; this says which are known). */
  private readonly endpointHosts = new Map<string, string>();
  /** Endpoints claimed on a listener by hosts we hold as dead, or only from relays elsewhere: probed a few per round. */
  private readonly probes = new Map<string, string>();
  /** Endpoints we dialed, by the round we last did, least recently first: what idleConnections() closes. */
  private readonly dialed = new Map<string, number>();
  private readonly tokens: { value: number; at: number };
  /** Last host id a SYN range covered: the next starts after it. */
  private cursor: string | undefined;
  private planCache: GossipPlan | undefined;
  /** The store's generation planCache was made for: a membership change makes it stale. */
  private planGeneration = -1;
  private hot: string[] | undefined;
  private stamp = 0;

  constructor(options: GossipOptions) {
    const { self } = options;
    if (!validId(self?.host)) throw new NodeBinError("INVALID_ARGUMENT", "gossip needs self.host: 1 to 256 characters", { details: { field: "self.host" } });
    if (typeof self.endpoint !== "string" || !self.endpoint || self.endpoint.length > MAX_ENDPOINT_LENGTH) throw new NodeBinError("INVALID_ARGUMENT", "gossip needs self.endpoint", { details: { field: "self.endpoint" } });
    if (!Number.isSafeInteger(self.incarnation) || self.incarnation < 0) throw new NodeBinError("INVALID_ARGUMENT", "self.incarnation must be a non-negative integer", { details: { field: "self.incarnation" } });
    for (const key of ["basePeriodMs", "budgetBytesPerSecond", "phiThreshold"] as const) {
      const value = options[key];
      if (value !== undefined && !(value > 0 && Number.isFinite(value))) throw new NodeBinError("INVALID_ARGUMENT", `${key} must be a positive number`, { details: { field: key } });
    }
    this.options = options;
    this.random = options.random ?? Math.random;
    this.counters = Object.fromEntries(COUNTERS.map((c) => [c, 0])) as Record<(typeof COUNTERS)[number], number>;
    const now = options.now();
    this.store = new HostStore(self, now, this.counters, options.basePeriodMs ?? DEFAULT_PERIOD_MS);
    this.self = this.store.self;
    // The relay's endpoint goes out with the very first record, nodes or none: a host without nodes may still publish.
    if (self.broadcast) this.store.setLocal(encodeNodes([], self.broadcast), new Map(), now);
    this.plan();
    this.tokens = { value: this.budget(), at: now };
  }

  /** Replaces this host's own nodes (bumps version). Throws INVALID_ARGUMENT when a node cannot be encoded. */
  setLocalNodes(nodes: NodeEntry[], schemas: { id: string; json: string }[]): void {
    this.localNodes = { nodes, schemas };
    this.publishLocal();
  }

  /**
   * Replaces what this host's record says it can take and reaches (its
   * governor's capacity, a gateway's remote networks); bumps its version when
   * that changed. Throws INVALID_ARGUMENT when it cannot be encoded.
   */
  setExtras(extras: HostExtras): void {
    this.extras = extras;
    this.publishLocal();
  }

  private localNodes: { nodes: NodeEntry[]; schemas: { id: string; json: string }[] } = { nodes: [], schemas: [] };
  private extras: HostExtras = {};

  private publishLocal(): void {
    const { nodes, schemas } = this.localNodes;
    const body = encodeNodes(nodes, this.options.self.broadcast, this.extras);
    // The same record again is no news: its version stays (extras are set every governor round).
    const same = body.length === this.self.body.length && body.every((b, i) => b === this.self.body[i]) && schemas.every((s) => this.self.schemaIds.includes(s.id)) && schemas.length === this.self.schemaIds.length;
    if (same && this.self.version > 1) return;
    this.store.setLocal(body, new Map(schemas.map((s) => [s.id, s.json])), this.options.now());
  }

  /** One round: bumps own heartbeat, runs failure detection, returns the SYNs to send now. */
  tick(): Outgoing[] {
    try {
      const now = this.options.now();
      this.refill(now);
      this.self.heartbeat++;
      this.counters.rounds++;
      this.detect(now);
      const plan = this.plan();
      this.hot = undefined;
      const targets = this.targets(plan);
      for (const { endpoint } of targets) {
        this.dialed.delete(endpoint);
        this.dialed.set(endpoint, this.counters.rounds);
      }
      return targets.map((target) => this.syn(target, plan, now));
    } catch (err) {
      // A bug must not stop the rounds (the agent's timer keeps calling).
      this.counters.internalErrors++;
      return [];
    }
  }

  /**
   * Handles one gossip message; returns the replies (an ACK for a SYN, an
   * ACK2 for an ACK with requests), to be sent back on the connection it came
   * in on. `link`: the endpoint of our own outbound connection it came back
   * on (an answer to our SYN), undefined when it arrived on a listener (from
   * whoever connected). That, not what the message claims, decides what it
   * may change (gossip-state.ts). Malformed bytes: returns [] and counts them
   * (`malformed`); never throws.
   */
  receive(bytes: Uint8Array, link?: string): Outgoing[] {
    try {
      const now = this.options.now();
      this.refill(now);
      this.counters.messagesReceived++;
      this.counters.bytesReceived += bytes?.length ?? 0;
      const message = bytes instanceof Uint8Array ? parse(bytes) : undefined;
      if (message === "incompatible") {
        this.counters.incompatible++;
        return [];
      }
      if (!message) {
        this.counters.malformed++;
        return [];
      }
      if (typeof link !== "string" || !link) link = undefined;
      if (message.host === this.self.host) return this.fromSelf(message, link);
      const origin = this.originOf(message, link);
      const replyTo = link ?? message.endpoint;
      this.counters[`${message.kind}Received`]++;
      if (message.kind === "syn") return [this.ack(message, origin, replyTo, now)];
      for (const record of message.records) this.store.merge(record, origin, now);
      if (message.kind === "ack2") return [];
      for (const digest of message.digests) this.store.applyDigest(digest, origin, now);
      if (message.requests.length === 0) return [];
      const wanted = new Set(message.requests);
      const states = [...wanted].map((h) => this.store.records.get(h)).filter((s): s is HostState => s !== undefined);
      return states.length ? [this.ack2(states, replyTo, message.held)] : [];
    } catch {
      this.counters.internalErrors++;
      return [];
    }
  }

  /**
   * Endpoints to close now: those we have not dialed for IDLE_ROUNDS rounds,
   * and the least recently dialed beyond MAX_CONNECTIONS (never one dialed
   * this round: its answer may still be on the way). Forgotten once returned.
   */
  idleConnections(): string[] {
    const round = this.counters.rounds;
    const out: string[] = [];
    for (const [endpoint, last] of this.dialed) {
      if (last >= round || (round - last < IDLE_ROUNDS && this.dialed.size - out.length <= MAX_CONNECTIONS)) break;
      out.push(endpoint);
    }
    for (const endpoint of out) this.dialed.delete(endpoint);
    this.counters.connectionsClosed += out.length;
    return out;
  }

  /**
   * A message from our own host id. Ours, looped back (a seed that is us
   * under another name): on our own connection, that endpoint is never
   * contacted again; on a listener, our SYN is answered so that the answer
   * comes back on that connection and names it. Another incarnation: another
   * agent with our id, or a forgery (`conflicts`).
   */
  private fromSelf(message: Incoming, link: string | undefined): Outgoing[] {
    if (message.incarnation !== this.self.incarnation) {
      this.counters.conflicts++;
      return [];
    }
    this.counters.selfMessages++;
    if (link !== undefined) {
      this.selfEndpoints.add(link);
      return [];
    }
    if (message.kind !== "syn") return [];
    return [this.sent(message.endpoint, encode(this.self, { ack: {} }), "ackSent")];
  }

  /**
   * Who a message speaks for first-hand (see Origin): its sender, when it came
   * back on our connection to the endpoint it says is its own and that
   * endpoint may be its (HostStore.mayBind). On a listener it speaks for no
   * one, but a claim worth checking is noted for a probe.
   */
  private originOf(message: Incoming, link: string | undefined): Origin {
    if (link === undefined) {
      this.noteClaim(message);
      return { message, link, direct: undefined };
    }
    if (this.endpointHosts.size > 4 * this.store.records.size + 64) this.endpointHosts.clear(); // bounded: it is only a hint
    this.endpointHosts.set(link, message.host);
    const direct = link === message.endpoint && this.store.mayBind(message.host, link) ? message.host : undefined;
    return { message, link, direct };
  }

  /**
   * A listener's message claims to be host H at endpoint E. Worth a probe of E
   * (our SYN, whose answer comes back first-hand) when we hold H as dead, or
   * hold it only from relays and at another endpoint: then H itself may be
   * there. Not for hosts we hear first-hand (their binding stands), nor for
   * hosts we do not know (their record comes with the exchange, and we dial
   * them as peers).
   */
  private noteClaim(message: Incoming): void {
    const { host, endpoint } = message;
    if (!endpoint || endpoint === this.self.endpoint || this.selfEndpoints.has(endpoint) || this.probes.has(endpoint)) return;
    const alive = this.store.records.get(host);
    if (alive ? alive.endpoint === endpoint || alive.verifiedAt !== undefined : !this.store.tombs.has(host)) return;
    if (this.probes.size >= MAX_PENDING_PROBES) {
      this.counters.probesDropped++;
      return;
    }
    this.probes.set(endpoint, host);
  }

  /** Delay until the next tick() under the adaptive period. */
  nextDelayMs(): number {
    return this.plan().periodMs;
  }

  /** Alive remote hosts (not self) with their nodes, by host id. */
  hosts(): HostView[] {
    return this.store.hosts();
  }

  /**
   * What this host holds of `host` (self included) without decoding its
   * nodes: undefined when it is not alive here.
   */
  known(host: string): { incarnation: number; version: number; heartbeat: number } | undefined {
    return this.store.known(host);
  }

  /** Subscribe to view changes: a host added, updated (new version or incarnation), or removed as dead. Returns the unsubscribe function. */
  onChange(listener: (event: GossipChange) => void): () => void {
    return this.store.onChange(listener);
  }

  /** The plan for the current cluster size (period, fanout, digests per SYN, detection bound). */
  plan(): GossipPlan {
    if (this.planCache && this.planGeneration === this.store.generation) return this.planCache;
    this.planCache = gossipPlan(this.options, this.store.records.size, this.store.idBytes, this.self.endpoint.length);
    this.planGeneration = this.store.generation;
    this.store.adoptPlan(this.planCache, this.options.phiThreshold ?? DEFAULT_THRESHOLD);
    return this.planCache;
  }

  /**
   * Counters (bytes and messages sent and received by kind, digests and
   * records sent, malformed, hosts added / updated / removed / revived, the
   * trust rule's refusals: incarnationRefused, relayRefused, endpointRefused,
   * heartbeatRefused, selfRefused, staleIgnored; tombstones refuted
   * first-hand, claimProbes, connectionsClosed, ...) and gauges (hosts
   * alive, tombstones, periodMs, fanout, digestsPerSyn, tokens, connections
   * open, probes pending).
   */
  stats(): Record<string, number> {
    const plan = this.plan();
    return {
      ...this.counters,
      hosts: this.store.records.size - 1,
      tombstones: this.store.tombs.size,
      periodMs: plan.periodMs,
      fanout: plan.fanout,
      digestsPerSyn: plan.digestsPerSyn,
      tokens: Math.floor(this.tokens.value),
      connections: this.dialed.size,
      probesPending: this.probes.size,
    };
  }

  // ---- rounds ----

  private budget(): number {
    return this.options.budgetBytesPerSecond ?? DEFAULT_BUDGET;
  }

  private refill(now: number): void {
    const elapsed = now - this.tokens.at;
    if (elapsed > 0) this.tokens.value = Math.min(this.budget(), this.tokens.value + (elapsed * this.budget()) / 1000);
    this.tokens.at = Math.max(this.tokens.at, now);
  }

  /** Declares dead the hosts whose detectors say so (their tombstones allow for the rounds since their last heartbeat), forgets old tombstones. */
  private detect(now: number): void {
    const plan = this.plan();
    for (const state of this.store.expired(now)) {
      this.store.bury(state, now, Math.ceil((now - state.detector!.lastArrival) / plan.periodMs) + 1);
    }
    this.store.expireTombs(now, this.options.tombstoneMs ?? DEFAULT_TOMBSTONE_MS);
  }

  /**
   * This round's destinations: `fanout` random alive peers; seeds we do not
   * know as alive hosts: each once at first, then some every round while we
   * know fewer than 2 peers, else one now and then (so partitions heal); a
   * few endpoints claimed on our listener (see noteClaim); and now and then a
   * dead host, which answers if it was only cut off.
   */
  private targets(plan: GossipPlan): Target[] {
    const out: Target[] = [];
    const used = new Set<string>([this.self.endpoint]);
    const push = (target: Target) => {
      if (used.has(target.endpoint)) return;
      used.add(target.endpoint);
      out.push(target);
    };
    const peers = this.store.peers();
    const want = Math.min(plan.fanout, peers.length);
    if (want * 2 > peers.length) {
      for (const i of this.sample(peers.length, want)) push({ endpoint: peers[i]!.endpoint, host: peers[i]!.host });
    } else {
      const picked = new Set<number>();
      while (picked.size < want) picked.add(Math.floor(this.random() * peers.length));
      for (const i of picked) push({ endpoint: peers[i]!.endpoint, host: peers[i]!.host });
    }
    const unknown = this.options.seeds.filter((s) => typeof s === "string" && s && !used.has(s) && !this.selfEndpoints.has(s) && !this.isKnownEndpoint(s));
    if (unknown.length) {
      // A seed never contacted is contacted now: others may have found us first, but
      // the seed's side of the network may not know either of us (a chain of seeds).
      const fresh = unknown.filter((s) => !this.seedsContacted.has(s));
      const count = peers.length < 2 ? Math.max(2, plan.fanout) : this.random() < (this.options.seedProbability ?? DEFAULT_SEED_PROBABILITY) ? 1 : 0;
      const picked = [...fresh, ...this.sample(unknown.length, Math.min(unknown.length, count)).map((i) => unknown[i]!)];
      for (const seed of picked) {
        if (used.has(seed)) continue;
        this.seedsContacted.add(seed);
        this.counters.seedContacts++;
        push({ endpoint: seed });
      }
    }
    let probed = 0;
    for (const [endpoint, host] of this.probes) {
      if (probed >= MAX_PROBES_PER_ROUND) break;
      this.probes.delete(endpoint);
      if (used.has(endpoint)) continue;
      probed++;
      this.counters.claimProbes++;
      push({ endpoint, host });
    }
    if (this.store.tombs.size && this.random() < Math.min(1, this.store.tombs.size / (peers.length + 1))) {
      const tombs = [...this.store.tombs.values()];
      const tomb = tombs[Math.floor(this.random() * tombs.length)]!;
      if (!used.has(tomb.state.endpoint)) this.counters.deadProbes++;
      push({ endpoint: tomb.state.endpoint, host: tomb.state.host });
    }
    return out;
  }

  private isKnownEndpoint(endpoint: string): boolean {
    if (this.store.hasAliveEndpoint(endpoint)) return true;
    const host = this.endpointHosts.get(endpoint);
    return host !== undefined && this.store.records.has(host);
  }

  /** `count` distinct indexes below `n`, at random. */
  private sample(n: number, count: number): number[] {
    const indexes = Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < count; i++) {
      const j = i + Math.floor(this.random() * (n - i));
      [indexes[i], indexes[j]] = [indexes[j]!, indexes[i]!];
    }
    return indexes.slice(0, count);
  }

  /**
   * A SYN for `target`: ourselves, the target (so it corrects what we hold of
   * it), recently changed hosts (at most a quarter), then the next slice of
   * the sorted ring from the cursor, or everything when it all fits.
   */
  private syn(target: Target, plan: GossipPlan, now: number): Outgoing {
    const ring = this.store.ring;
    const idBytes = this.store.idBytes;
    const headerBytes = 3 * idBytes + this.self.endpoint.length + 40;
    let cap = plan.digestsPerSyn;
    const affordable = Math.floor((this.tokens.value - headerBytes) / (idBytes + DIGEST_OVERHEAD));
    if (affordable < cap) {
      cap = Math.max(1, affordable);
      this.counters.budgetTrimmed++;
    }
    const chosen = new Set<string>([this.self.host]);
    if (target.host && (this.store.records.has(target.host) || this.store.tombs.has(target.host))) chosen.add(target.host);
    const hotLimit = Math.floor(cap / 4);
    for (const host of this.hotHosts(plan, now)) {
      if (chosen.size >= hotLimit) break;
      chosen.add(host);
    }
    let full = false;
    let first = "";
    let last = "";
    if (ring.length <= cap) {
      full = true;
      for (const host of ring) chosen.add(host);
    } else if (chosen.size < cap) {
      const start = this.cursor === undefined ? 0 : upperBound(ring, this.cursor) % ring.length;
      let covered = 0;
      while (chosen.size < cap && covered < ring.length) {
        const host = ring[(start + covered) % ring.length]!;
        chosen.add(host);
        last = host;
        covered++;
      }
      if (covered === ring.length) full = true;
      else if (covered > 0) {
        first = ring[start]!;
        this.cursor = last;
      }
      if (full) last = "";
    }
    const digests = this.digestColumns([...chosen]);
    const bytes = encode(this.self, { syn: { full, rangeFirst: first, rangeLast: last, digests, schemas: this.heldSchemas(now) } });
    this.counters.digestsSent += chosen.size;
    return this.sent(target.endpoint, bytes, "synSent");
  }

  /** Hosts whose record changed within the last few rounds, most recent first (computed once per round). */
  private hotHosts(plan: GossipPlan, now: number): string[] {
    this.hot ??= this.store.recentlyChanged(plan.periodMs * (Math.ceil(Math.log2(plan.hosts + 1)) + 2), now);
    return this.hot;
  }

  /**
   * The schema ids to list as held: while our view is changing (records are
   * flowing to us, and each would otherwise bring the JSON of its schemas
   * again), and while there are not too many. Else none: an idle cluster
   * sends no records, so the list would be wasted.
   */
  private heldSchemas(now: number): string[] {
    const plan = this.plan();
    const held = this.store.schemaCount;
    if (held === 0 || held > MAX_HELD_SCHEMAS || this.hotHosts(plan, now).length === 0) return [];
    return this.store.schemaIds();
  }

  // ---- answering ----

  /**
   * B's side: compare A's digests with ours; send what A lacks, ask for what
   * A has newer. The ACK goes back on A's own connection, so for A what it
   * says of us is our first-hand word: our record whenever A holds us
   * otherwise than we are (dead, another incarnation, an older version),
   * which refutes whatever A was told; else our heartbeat.
   */
  private ack(message: Incoming, origin: Origin, endpoint: string, now: number): Outgoing {
    const send: HostState[] = [];
    const fresher: HostState[] = [];
    const requests: string[] = [];
    // Hosts of ours the SYN lists are stamped (cheaper than a Set on large views).
    const stamp = ++this.stamp;
    for (const d of message.digests) {
      const local = this.store.records.get(d.host);
      if (local) {
        if (local.listed === stamp) continue;
        local.listed = stamp;
      }
      const link = origin.direct === d.host ? origin.link : undefined;
      if (local === this.self) {
        this.store.checkSelf(d, now);
        if (d.dead || d.incarnation !== this.self.incarnation || d.version < this.self.version) send.push(this.self);
        // Our heartbeat always: to A it is our first-hand heartbeat, even where relays ran A's copy of it up.
        else fresher.push(this.self);
        continue;
      }
      if (d.dead && !local) continue;
      if (!this.store.incarnationAllowed(d.incarnation, now)) continue;
      if (!local) {
        const tomb = this.store.tombs.get(d.host);
        if (tomb) {
          if (link === undefined && !mayRevive(tomb, d)) {
            this.counters.staleIgnored++;
            continue;
          }
          if (d.incarnation === tomb.state.incarnation && d.version === tomb.state.version) {
            this.store.revive(tomb, d.heartbeat, now, link);
            tomb.state.listed = stamp;
            continue;
          }
        }
        requests.push(d.host);
        continue;
      }
      if (!d.dead) this.store.heartbeat(local, d, now, link);
      const differs = d.incarnation !== local.incarnation || d.version !== local.version;
      if (link !== undefined && differs) requests.push(d.host); // the host's own word on itself: wanted, whichever way it differs
      else if (d.incarnation > local.incarnation || (d.incarnation === local.incarnation && d.version > local.version)) {
        // A relayed newer record; not asked for while its host is heard first-hand (it would be refused).
        if (!d.dead && !this.store.heardRecently(local, now)) requests.push(d.host);
      } else if (differs) send.push(local);
      else if (d.heartbeat < local.heartbeat) fresher.push(local);
    }
    // Hosts we hold inside the SYN's range that it does not list: it lacks them.
    for (const local of this.store.inRange(message.full, message.first, message.last)) if (local.listed !== stamp) send.push(local);

    let room = Math.min(MAX_SEND_BYTES, this.tokens.value) - 64 - requests.reduce((sum, h) => sum + h.length + 2, 0);
    const digests: HostState[] = [];
    for (const state of fresher) {
      const cost = state.host.length + DIGEST_OVERHEAD;
      if (cost > room) {
        this.counters.budgetTrimmed++;
        break;
      }
      digests.push(state);
      room -= cost;
    }
    const { records, schemas } = this.packRecords(send, Math.min(room, this.recordRoom()), message.held);
    const heldSchemas = requests.length ? this.heldSchemas(now) : [];
    const bytes = encode(this.self, { ack: { records, digests: this.digestColumns(digests.map((s) => s.host)), requests, schemas, heldSchemas } });
    this.counters.digestsSent += digests.length;
    return this.sent(endpoint, bytes, "ackSent");
  }

  private ack2(states: HostState[], endpoint: string, held: Set<string> | undefined): Outgoing {
    const { records, schemas } = this.packRecords(states, this.recordRoom(), held);
    return this.sent(endpoint, encode(this.self, { ack2: { records, schemas } }), "ack2Sent");
  }

  /**
   * Bytes records may take now: the tokens beyond one round of planned digest
   * traffic, so that records flowing (a host joining a large cluster) never
   * starve the heartbeats the failure detectors live on.
   */
  private recordRoom(): number {
    const plan = this.plan();
    const reserve = (HEADROOM * this.budget() * plan.periodMs) / 1000;
    return Math.min(MAX_SEND_BYTES, this.tokens.value - reserve) - 64;
  }

  /** The records of `states` that fit in `room` (see pack in gossip-codec.ts), counted. */
  private packRecords(states: HostState[], room: number, held: Set<string> | undefined) {
    const packed = pack(states, room, held, (id) => this.store.schemaJson(id));
    this.counters.budgetTrimmed += packed.trimmed;
    this.counters.recordsSent += packed.records.length;
    return packed;
  }

  // ---- encoding ----

  /** Digest columns for `hosts` (alive ones, self, or tombstones flagged dead). */
  private digestColumns(hosts: string[]) {
    return columns(this.store.digests(hosts));
  }

  private sent(endpoint: string, bytes: Uint8Array, kind: "synSent" | "ackSent" | "ack2Sent"): Outgoing {
    this.tokens.value -= bytes.length;
    this.counters.bytesSent += bytes.length;
    this.counters.messagesSent++;
    this.counters[kind]++;
    return { endpoint, bytes };
  }
}
