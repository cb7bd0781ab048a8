/**
 * Host-to-host gossip and failure detection: how each host's discovery agent
 * learns every other host's nodes, and forgets the hosts that stop. Pure:
 * no sockets, timers or clock; time and randomness are passed in, bytes go
 * in and out, so that a network of these can be simulated deterministically
 * (test/unit/gossip.test.ts, bench/gossip-sim.ts). The agent (agent.ts) wires
 * it to ZeroMQ: it calls tick() every nextDelayMs(), and receive() for each
 * message, and sends what they return.
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
 * idle cluster sends no node lists.
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
import { join } from "node:path";
import { NODEBIN_PROTO_DIR, loadProtoFiles } from "../wire/proto.ts";
import { NodeBinError } from "../wire/errors.ts";
import { PhiAccrualDetector, phiZ, type PhiParameters } from "./failure-detector.ts";
import type { NodeEntry } from "./table.ts";

/** The gossip protocol version this build speaks; messages of others are ignored (counted as `incompatible`). */
export const GOSSIP_PROTOCOL = 1;

const gossipRoot = loadProtoFiles([join(NODEBIN_PROTO_DIR, "nodebin", "gossip.proto")]);
const MessageType = gossipRoot.lookupType("nodebin.GossipMessage");
const BodyType = gossipRoot.lookupType("nodebin.GossipBody");
const NodeEntryType = gossipRoot.lookupType("nodebin.NodeEntry");

export interface GossipOptions {
  /** This host: its id, discovery endpoint, network, and incarnation (its agent's start time, ms). */
  self: { host: string; endpoint: string; network: string; incarnation: number };
  /** Discovery endpoints to start from; our own endpoint among them is ignored. */
  seeds: string[];
  /** The clock, ms. */
  now: () => number;
  /** Uniform in [0, 1); default Math.random. */
  random?: () => number;
  /** Round period when the budget allows it (default 1000 ms). */
  basePeriodMs?: number;
  /** Coordination bytes this host may send per second (default 16384). */
  budgetBytesPerSecond?: number;
  /** phi at which a host is declared dead (default 8). */
  phiThreshold?: number;
  /** Silence below which no host is declared dead (default 3000 ms). */
  minFailMs?: number;
  /** Silence at which a host is dead whatever phi says (default: 2x the planned phi timeout, see gossipPlan). */
  maxFailMs?: number;
  /** Floor on the heartbeat interval deviation (default: the planned deviation, see gossipPlan). */
  minStdDevMs?: number;
  /** How long a dead host's tombstone is kept (default one hour). */
  tombstoneMs?: number;
  /** Chance per round of contacting a seed we do not know yet, once we know 2 peers (default 0.1). */
  seedProbability?: number;
}

/** A message to send. */
export interface Outgoing {
  endpoint: string;
  bytes: Uint8Array;
}

/** A remote host as the view holds it. */
export interface HostView {
  host: string;
  endpoint: string;
  network: string;
  incarnation: number;
  /** Its record's version (bumped by the host when its nodes change). */
  version: number;
  nodes: NodeEntry[];
  schemas: { id: string; json: string }[];
}

/** A change of the view; `removed` carries the host's last known view. */
export interface GossipChange {
  type: "added" | "updated" | "removed";
  host: HostView;
}

/**
 * What the gossip does at a given cluster size, and the failure-detection
 * bound that follows. With N hosts (self included), period P, fanout F:
 *
 *   k  digests per SYN   = (budget/2 * P/1000 / 2F - header) / digestBytes   (P grows if k < 8)
 *   r  share of the hosts one SYN covers          = min(1, k / N)
 *   m  messages per round that carry a given host = 2 F r   (F SYNs in, F ACKs back)
 *   p  chance per round that one of them brings a newer heartbeat
 *                         = 1 when F >= N - 1 (every host hears every other directly)
 *                         = 1 - exp(-0.55 m) otherwise (relayed: about half the copies are stale)
 *   mu expected interval between heartbeat increases          = P / p
 *   sd its deviation      = mu/4 when direct (one every round, as sent)
 *                         = mu when relayed (as memoryless arrivals: the copies come
 *                           by random paths, and the gaps have an exponential tail)
 *   mu and sd are also the detector's floors on the mean and deviation it
 *   measures, so that a history from when the cluster was smaller, or a young
 *   or lucky one, is not trusted to be more frequent or regular than that.
 *   T  phi timeout        = mu + z(threshold) sd                 (z(8) = 5.23)
 *   maxFail               = max(minFailMs, 2 T)                  (the detector's hard cap)
 *   D  time for a stopped host's last heartbeat to reach every observer
 *                         = 0 when F >= N - 1 (it sends it to all), else ceil(2 ln N) mu
 *   bound: a host that stops is removed from every other host's view within
 *                           D + maxFail + P       (the last P: dead hosts are found at ticks)
 *
 * The 0.55 was fitted to bench/gossip-sim.ts (10 to 1000 hosts), where the
 * longest gap seen between heartbeat increases stays under T / 1.4. The
 * detector itself judges by the intervals it measures; the plan seeds it,
 * floors its deviation and caps it. At the defaults with 3 hosts: F = 2 = N - 1, p = 1,
 * mu = 1000, sd = 250, T = 2306, maxFail = 4613, D = 0: a stopped host is
 * gone from both other views within 5613 ms (in practice 3000-4000 ms after
 * its last round: minFailMs, then the next tick).
 */
export interface GossipPlan {
  /** Cluster size the plan is for (alive hosts, self included). */
  hosts: number;
  periodMs: number;
  fanout: number;
  /** Digests a SYN may carry (k). */
  digestsPerSyn: number;
  /** r: share of the hosts one SYN covers. */
  coverage: number;
  /** p: chance per round to hear a newer heartbeat of a given host. */
  hearProbability: number;
  expectedIntervalMs: number;
  stdDevMs: number;
  minStdDevMs: number;
  /** T: silence at which phi reaches the threshold for the planned interval statistics. */
  failAfterMs: number;
  minFailMs: number;
  maxFailMs: number;
  /** D: time for a stopped host's last heartbeat to reach every observer. */
  disseminationMs: number;
  /** D + maxFail + P: a host that stops is removed from every view within this. */
  detectionBoundMs: number;
}

/** The options gossipPlan depends on. */
export type PlanOptions = Pick<GossipOptions, "basePeriodMs" | "budgetBytesPerSecond" | "phiThreshold" | "minFailMs" | "maxFailMs" | "minStdDevMs">;

const DEFAULT_PERIOD_MS = 1000;
const DEFAULT_BUDGET = 16384;
const DEFAULT_THRESHOLD = 8;
const DEFAULT_MIN_FAIL_MS = 3000;
const DEFAULT_TOMBSTONE_MS = 3_600_000;
const DEFAULT_SEED_PROBABILITY = 0.1;
/** Share of the budget the plan spends on SYNs and ACKs; the rest absorbs hosts asked more than average, records and probes. */
const HEADROOM = 0.5;
/** Share of relayed heartbeat copies that are newer than what the observer holds (fitted, see gossipPlan). */
const FRESH_SHARE = 0.55;
/** Fewest digests per SYN before the period grows instead. */
const MIN_DIGESTS = 8;
/** Digest cost beyond its id: string tag and length, incarnation (~6 bytes), version, heartbeat. */
const DIGEST_OVERHEAD = 12;
/** Largest message sent, unless a single record is larger. */
const MAX_SEND_BYTES = 256 * 1024;
/** Largest message accepted. */
const MAX_RECEIVE_BYTES = 8 * 1024 * 1024;
const MAX_ID_LENGTH = 256;
const MAX_ENDPOINT_LENGTH = 1024;
const MAX_ENTRIES = 100_000;
/** Most schema ids a SYN or ACK lists as held (beyond that, none are listed and their JSON comes along). */
const MAX_HELD_SCHEMAS = 256;

/** Fanout for a cluster of `hosts` (self included): 2, then 1 + ceil(log10 N), never more than the peers. */
export function fanoutFor(hosts: number): number {
  return Math.max(0, Math.min(hosts - 1, Math.max(2, Math.ceil(Math.log10(hosts)) + 1)));
}

/**
 * The plan (period, fanout, digests per SYN) and failure-detection bound for
 * a cluster of `hosts` (self included). `idBytes` is the mean host id length,
 * `endpointBytes` this host's endpoint length (they size the digests).
 */
export function gossipPlan(options: PlanOptions, hosts: number, idBytes = 16, endpointBytes = 24): GossipPlan {
  const n = Math.max(1, hosts);
  const budget = options.budgetBytesPerSecond ?? DEFAULT_BUDGET;
  const base = options.basePeriodMs ?? DEFAULT_PERIOD_MS;
  const threshold = options.phiThreshold ?? DEFAULT_THRESHOLD;
  const minFailMs = options.minFailMs ?? DEFAULT_MIN_FAIL_MS;
  const fanout = fanoutFor(n);
  const f = Math.max(1, fanout);
  const digestBytes = idBytes + DIGEST_OVERHEAD;
  const headerBytes = 3 * idBytes + endpointBytes + 40;
  let periodMs = base;
  let k = Math.floor(((HEADROOM * budget * periodMs) / 1000 / (2 * f) - headerBytes) / digestBytes);
  if (k < MIN_DIGESTS) {
    k = MIN_DIGESTS;
    periodMs = Math.ceil(((2 * f * (headerBytes + k * digestBytes)) / (HEADROOM * budget)) * 1000);
  }
  const coverage = Math.min(1, k / n);
  const direct = fanout >= n - 1;
  const hearProbability = direct ? 1 : 1 - Math.exp(-FRESH_SHARE * 2 * f * coverage);
  const expectedIntervalMs = periodMs / hearProbability;
  const modelStdDev = direct ? expectedIntervalMs / 4 : expectedIntervalMs;
  const minStdDevMs = options.minStdDevMs ?? modelStdDev;
  const stdDevMs = Math.max(minStdDevMs, modelStdDev);
  const failAfterMs = expectedIntervalMs + phiZ(threshold) * stdDevMs;
  const maxFailMs = Math.max(minFailMs, options.maxFailMs ?? 2 * failAfterMs);
  const disseminationMs = direct ? 0 : Math.ceil(2 * Math.log(n)) * expectedIntervalMs;
  return {
    hosts: n,
    periodMs,
    fanout,
    digestsPerSyn: k,
    coverage,
    hearProbability,
    expectedIntervalMs,
    stdDevMs,
    minStdDevMs,
    failAfterMs,
    minFailMs,
    maxFailMs,
    disseminationMs,
    detectionBoundMs: disseminationMs + maxFailMs + periodMs,
  };
}

/** What this host holds about one host (itself included). */
interface HostState {
  host: string;
  endpoint: string;
  network: string;
  incarnation: number;
  version: number;
  heartbeat: number;
  schemaIds: string[];
  /** Encoded nodebin.GossipBody, relayed as is. */
  body: Uint8Array;
  /** When its incarnation or version last changed here: recent changes ride in every SYN. */
  changedAt: number;
  /** Estimated encoded size of its record, schemas excluded. */
  recordBytes: number;
  /** Undefined for self. */
  detector: PhiAccrualDetector | undefined;
  /** The stamp of the last SYN that listed it (see ack). */
  listed: number;
  view: HostView | undefined;
}

interface Tombstone {
  state: HostState;
  removedAt: number;
  /** Heartbeats the host may have sent after the last we saw: a relayed heartbeat must pass last + margin to revive it. */
  margin: number;
}

interface Digest {
  host: string;
  incarnation: number;
  version: number;
  heartbeat: number;
  dead: boolean;
}

interface WireRecord {
  host: string;
  endpoint: string;
  network: string;
  incarnation: number;
  version: number;
  heartbeat: number;
  schemaIds: string[];
  body: Uint8Array;
}

/** A decoded, checked message. */
interface Incoming {
  host: string;
  endpoint: string;
  incarnation: number;
  kind: "syn" | "ack" | "ack2";
  full: boolean;
  first: string;
  last: string;
  digests: Digest[];
  records: WireRecord[];
  requests: string[];
  schemas: Map<string, string>;
  /** Schema ids the sender holds (GossipSyn.schemas, GossipAck.held_schemas): JSON it need not be sent. */
  held: Set<string> | undefined;
}

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
  "selfMessages",
  "hostsAdded",
  "hostsUpdated",
  "hostsRemoved",
  "revived",
  "staleIgnored",
  "seedContacts",
  "deadProbes",
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
  private readonly records = new Map<string, HostState>();
  private readonly tombs = new Map<string, Tombstone>();
  private readonly schemaStore = new Map<string, { json: string; refs: number }>();
  private readonly listeners = new Set<(event: GossipChange) => void>();
  private readonly counters: Record<(typeof COUNTERS)[number], number>;
  private readonly self: HostState;
  private readonly selfEndpoints = new Set<string>();
  private readonly seedsContacted = new Set<string>();
  /** The host that spoke from an endpoint (seeds are endpoints; this says which are known). */
  private readonly endpointHosts = new Map<string, string>();
  private readonly tokens: { value: number; at: number };
  /** Last host id a SYN range covered: the next starts after it. */
  private cursor: string | undefined;
  /** Every host id held (alive, self, tombstones), sorted: the ring SYN ranges walk. Kept sorted on insert. */
  private readonly ring: string[] = [];
  private ringChars = 0;
  // Derived from records, rebuilt lazily after membership changes.
  private derivedDirty = true;
  private peers: HostState[] = [];
  private aliveEndpoints = new Set<string>();
  private planCache: GossipPlan | undefined;
  /** The last plan's expected heartbeat interval: the prior of new detectors. */
  private priorIntervalMs: number;
  private priorStdDevMs: number | undefined;
  private detectorParams: PhiParameters | undefined;
  private hot: string[] | undefined;
  /** Records that changed here (new, new version or incarnation, revived), in time order: the hot ones ride in every SYN. */
  private readonly changes: { host: string; at: number }[] = [];
  /** No detector's deadline is before this: detection scans the view only once it passes. */
  private earliestDeadline = -Infinity;
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
    this.priorIntervalMs = options.basePeriodMs ?? DEFAULT_PERIOD_MS;
    this.self = this.makeState({ ...self, network: self.network ?? "", version: 1, heartbeat: 0, schemaIds: [], body: new Uint8Array(0) }, now);
    this.self.detector = undefined;
    this.records.set(self.host, this.self);
    this.ringInsert(self.host);
    this.priorIntervalMs = this.plan().expectedIntervalMs;
    this.tokens = { value: this.budget(), at: now };
  }

  /** Replaces this host's own nodes (bumps version). Throws INVALID_ARGUMENT when a node cannot be encoded. */
  setLocalNodes(nodes: NodeEntry[], schemas: { id: string; json: string }[]): void {
    let body: Uint8Array;
    try {
      body = BodyType.encode(BodyType.fromObject({ nodes })).finish();
    } catch (err) {
      throw new NodeBinError("INVALID_ARGUMENT", `cannot encode local nodes: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    const jsons = new Map(schemas.map((s) => [s.id, s.json]));
    const ids = [...jsons.keys()];
    this.retain(ids, jsons);
    this.release(this.self.schemaIds);
    Object.assign(this.self, { version: this.self.version + 1, body, schemaIds: ids, changedAt: this.options.now(), view: undefined });
    this.self.recordBytes = recordBytes(this.self);
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
      return this.targets(plan).map((target) => this.syn(target, plan, now));
    } catch (err) {
      // A bug must not stop the rounds (the agent's timer keeps calling).
      this.counters.internalErrors++;
      return [];
    }
  }

  /**
   * Handles one gossip message that arrived from `fromEndpoint`; returns the
   * replies to send (an ACK for a SYN, an ACK2 for an ACK with requests).
   * Malformed bytes: returns [] and counts them (`malformed`); never throws.
   */
  receive(bytes: Uint8Array, fromEndpoint: string): Outgoing[] {
    try {
      const now = this.options.now();
      this.refill(now);
      this.counters.messagesReceived++;
      this.counters.bytesReceived += bytes?.length ?? 0;
      const message = bytes instanceof Uint8Array && bytes.length <= MAX_RECEIVE_BYTES ? parse(bytes) : undefined;
      if (message === "incompatible") {
        this.counters.incompatible++;
        return [];
      }
      if (!message) {
        this.counters.malformed++;
        return [];
      }
      if (message.host === this.self.host) {
        // Our own message (a seed that is us under another name): never contact that endpoint again.
        if (message.incarnation === this.self.incarnation) {
          this.counters.selfMessages++;
          if (typeof fromEndpoint === "string") this.selfEndpoints.add(fromEndpoint);
        } else this.counters.conflicts++;
        return [];
      }
      // Replies go where the message came from; a transport that cannot tell uses the endpoint the sender gives.
      const replyTo = typeof fromEndpoint === "string" && fromEndpoint ? fromEndpoint : message.endpoint;
      if (this.endpointHosts.size > 4 * this.records.size + 64) this.endpointHosts.clear(); // bounded: it is only a hint
      if (replyTo) this.endpointHosts.set(replyTo, message.host);
      this.counters[`${message.kind}Received`]++;
      if (message.kind === "syn") return [this.ack(message, replyTo, now)];
      for (const record of message.records) this.merge(record, message, now);
      if (message.kind === "ack2") return [];
      for (const digest of message.digests) this.applyDigest(digest, message, now);
      if (message.requests.length === 0) return [];
      const wanted = new Set(message.requests);
      const states = [...wanted].map((h) => this.records.get(h)).filter((s): s is HostState => s !== undefined);
      return states.length ? [this.ack2(states, replyTo, message.held)] : [];
    } catch {
      this.counters.internalErrors++;
      return [];
    }
  }

  /** Delay until the next tick() under the adaptive period. */
  nextDelayMs(): number {
    return this.plan().periodMs;
  }

  /** Alive remote hosts (not self) with their nodes, by host id. */
  hosts(): HostView[] {
    return this.ring
      .map((h) => this.records.get(h))
      .filter((s): s is HostState => s !== undefined && s !== this.self)
      .map((s) => this.viewOf(s));
  }

  /**
   * What this host holds of `host` (self included) without decoding its
   * nodes: undefined when it is not alive here.
   */
  known(host: string): { incarnation: number; version: number; heartbeat: number } | undefined {
    const state = this.records.get(host);
    return state && { incarnation: state.incarnation, version: state.version, heartbeat: state.heartbeat };
  }

  /** Subscribe to view changes: a host added, updated (new version or incarnation), or removed as dead. Returns the unsubscribe function. */
  onChange(listener: (event: GossipChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The plan for the current cluster size (period, fanout, digests per SYN, detection bound). */
  plan(): GossipPlan {
    if (this.planCache) return this.planCache;
    this.planCache = gossipPlan(this.options, this.records.size, this.ringChars / this.ring.length, this.self.endpoint.length);
    this.priorIntervalMs = this.planCache.expectedIntervalMs;
    this.earliestDeadline = -Infinity; // new parameters: every deadline may have moved
    this.priorStdDevMs = this.planCache.stdDevMs;
    // One object per plan: detectors cache their verdict per parameters object.
    this.detectorParams = {
      threshold: this.options.phiThreshold ?? DEFAULT_THRESHOLD,
      minStdDevMs: this.planCache.minStdDevMs,
      minMeanMs: this.planCache.expectedIntervalMs,
      minFailMs: this.planCache.minFailMs,
      maxFailMs: this.planCache.maxFailMs,
    };
    return this.planCache;
  }

  /**
   * Counters (bytes and messages sent and received by kind, digests and
   * records sent, malformed, hosts added / updated / removed / revived, ...)
   * and gauges (hosts alive, tombstones, periodMs, fanout, digestsPerSyn, tokens).
   */
  stats(): Record<string, number> {
    const plan = this.plan();
    return {
      ...this.counters,
      hosts: this.records.size - 1,
      tombstones: this.tombs.size,
      periodMs: plan.periodMs,
      fanout: plan.fanout,
      digestsPerSyn: plan.digestsPerSyn,
      tokens: Math.floor(this.tokens.value),
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

  private detect(now: number): void {
    const plan = this.plan();
    const params = this.detectorParams!;
    const dead: HostState[] = [];
    // Scanning a large view every round costs more than the rest of the round: only
    // when some deadline may have passed (deadlines move only with heartbeats and plans).
    if (now >= this.earliestDeadline) {
      let earliest = Infinity;
      for (const state of this.records.values()) {
        if (!state.detector) continue;
        const deadline = state.detector.lastArrival + state.detector.failAfterMs(params);
        if (now >= deadline) dead.push(state);
        else earliest = Math.min(earliest, deadline);
      }
      this.earliestDeadline = earliest;
    }
    for (const state of dead) {
      this.records.delete(state.host);
      const margin = Math.ceil((now - state.detector!.lastArrival) / plan.periodMs) + 1;
      this.tombs.set(state.host, { state, removedAt: now, margin });
      this.membershipChanged();
      this.counters.hostsRemoved++;
      this.emit("removed", state);
    }
    const keep = this.options.tombstoneMs ?? DEFAULT_TOMBSTONE_MS;
    for (const tomb of [...this.tombs.values()]) {
      if (now - tomb.removedAt < keep) continue;
      this.tombs.delete(tomb.state.host);
      this.release(tomb.state.schemaIds);
      this.ringDelete(tomb.state.host);
      this.membershipChanged();
    }
  }

  /**
   * This round's destinations: `fanout` random alive peers; seeds we do not
   * know as alive hosts: each once at first, then some every round while we
   * know fewer than 2 peers, else one now and then (so partitions heal); and
   * now and then a dead host, which answers if it was only cut off.
   */
  private targets(plan: GossipPlan): Target[] {
    const out: Target[] = [];
    const used = new Set<string>([this.self.endpoint]);
    const push = (target: Target) => {
      if (used.has(target.endpoint)) return;
      used.add(target.endpoint);
      out.push(target);
    };
    this.refreshDerived();
    const peers = this.peers;
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
    if (this.tombs.size && this.random() < Math.min(1, this.tombs.size / (peers.length + 1))) {
      const tombs = [...this.tombs.values()];
      const tomb = tombs[Math.floor(this.random() * tombs.length)]!;
      if (!used.has(tomb.state.endpoint)) this.counters.deadProbes++;
      push({ endpoint: tomb.state.endpoint, host: tomb.state.host });
    }
    return out;
  }

  private isKnownEndpoint(endpoint: string): boolean {
    this.refreshDerived();
    if (this.aliveEndpoints.has(endpoint)) return true;
    const host = this.endpointHosts.get(endpoint);
    return host !== undefined && this.records.has(host);
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
    const ring = this.ring;
    const idBytes = this.ringChars / ring.length;
    const headerBytes = 3 * idBytes + this.self.endpoint.length + 40;
    let cap = plan.digestsPerSyn;
    const affordable = Math.floor((this.tokens.value - headerBytes) / (idBytes + DIGEST_OVERHEAD));
    if (affordable < cap) {
      cap = Math.max(1, affordable);
      this.counters.budgetTrimmed++;
    }
    const chosen = new Set<string>([this.self.host]);
    if (target.host && (this.records.has(target.host) || this.tombs.has(target.host))) chosen.add(target.host);
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
    const digests = this.columns([...chosen]);
    const bytes = this.encode({ syn: { full, rangeFirst: first, rangeLast: last, digests, schemas: this.heldSchemas(now) } });
    this.counters.digestsSent += chosen.size;
    return this.sent(target.endpoint, bytes, "synSent");
  }

  /** Hosts whose record changed within the last few rounds, most recent first (computed once per round). */
  private hotHosts(plan: GossipPlan, now: number): string[] {
    if (this.hot) return this.hot;
    const window = plan.periodMs * (Math.ceil(Math.log2(plan.hosts + 1)) + 2);
    let old = 0;
    while (old < this.changes.length && now - this.changes[old]!.at >= window) old++;
    if (old) this.changes.splice(0, old);
    const hot = new Set<string>();
    for (let i = this.changes.length - 1; i >= 0; i--) {
      const { host, at } = this.changes[i]!;
      const state = this.records.get(host);
      if (state && state !== this.self && state.changedAt === at) hot.add(host);
    }
    this.hot = [...hot];
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
    if (this.schemaStore.size === 0 || this.schemaStore.size > MAX_HELD_SCHEMAS || this.hotHosts(plan, now).length === 0) return [];
    return [...this.schemaStore.keys()];
  }

  private changed(state: HostState, now: number): void {
    state.changedAt = now;
    if (state !== this.self) this.changes.push({ host: state.host, at: now });
  }

  // ---- answering ----

  /** B's side: compare A's digests with ours; send what A lacks, ask for what A has newer. */
  private ack(message: Incoming, endpoint: string, now: number): Outgoing {
    const send: HostState[] = [];
    const fresher: HostState[] = [];
    const requests: string[] = [];
    // Hosts of ours the SYN lists are stamped (cheaper than a Set on large views).
    const stamp = ++this.stamp;
    for (const d of message.digests) {
      const local = this.records.get(d.host);
      if (local) {
        if (local.listed === stamp) continue;
        local.listed = stamp;
      }
      if (!local) {
        if (d.dead) continue;
        const tomb = this.tombs.get(d.host);
        if (tomb) {
          if (!mayRevive(tomb, d, message)) {
            this.counters.staleIgnored++;
            continue;
          }
          if (d.incarnation === tomb.state.incarnation && d.version === tomb.state.version) {
            this.revive(tomb, d.heartbeat, now);
            tomb.state.listed = stamp;
            continue;
          }
        }
        requests.push(d.host);
        continue;
      }
      if (!d.dead) {
        if (local === this.self) this.checkSelf(d, now);
        else this.adoptHeartbeat(local, d, now);
      }
      if (d.incarnation > local.incarnation || (d.incarnation === local.incarnation && d.version > local.version)) {
        if (!d.dead && local !== this.self) requests.push(d.host);
      } else if (d.incarnation < local.incarnation || d.version < local.version) send.push(local);
      else if (d.heartbeat < local.heartbeat) fresher.push(local);
    }
    // Hosts we hold inside the SYN's range that it does not list: it lacks them.
    const ring = this.ring;
    const absent = (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const local = this.records.get(ring[i]!);
        if (local && local.listed !== stamp) send.push(local);
      }
    };
    if (message.full) absent(0, ring.length);
    else if (message.first) {
      const from = lowerBound(ring, message.first);
      const to = upperBound(ring, message.last);
      if (message.first <= message.last) absent(from, to);
      else {
        absent(from, ring.length);
        absent(0, to);
      }
    }

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
    const { records, schemas } = this.pack(send, Math.min(room, this.recordRoom()), message.held);
    const heldSchemas = requests.length ? this.heldSchemas(now) : [];
    const bytes = this.encode({ ack: { records, digests: this.columns(digests.map((s) => s.host)), requests, schemas, heldSchemas } });
    this.counters.digestsSent += digests.length;
    return this.sent(endpoint, bytes, "ackSent");
  }

  private ack2(states: HostState[], endpoint: string, held: Set<string> | undefined): Outgoing {
    const { records, schemas } = this.pack(states, this.recordRoom(), held);
    return this.sent(endpoint, this.encode({ ack2: { records, schemas } }), "ack2Sent");
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

  /**
   * Records (with their schemas, each once) that fit in `room` bytes; one
   * that does not fit goes alone when there is any room, so that a record
   * larger than the room still goes (the bucket then runs a short debt).
   */
  private pack(states: HostState[], room: number, held: Set<string> | undefined) {
    const records: object[] = [];
    const schemas = new Map<string, string>();
    for (const state of states) {
      let cost = state.recordBytes;
      for (const id of state.schemaIds) if (!schemas.has(id) && !held?.has(id)) cost += id.length + (this.schemaStore.get(id)?.json.length ?? 0) + 8;
      if (cost > room && (records.length > 0 || room <= 0)) {
        this.counters.budgetTrimmed++;
        continue;
      }
      room -= cost;
      for (const id of state.schemaIds) {
        const json = this.schemaStore.get(id)?.json;
        if (json !== undefined && !held?.has(id)) schemas.set(id, json);
      }
      records.push({
        host: state.host,
        endpoint: state.endpoint,
        network: state.network,
        incarnation: state.incarnation,
        version: state.version,
        heartbeat: state.heartbeat,
        schemas: state.schemaIds,
        body: state.body,
      });
    }
    this.counters.recordsSent += records.length;
    return { records, schemas: [...schemas].map(([id, json]) => ({ id, json })) };
  }

  // ---- merging ----

  /** A record from a peer: add, replace (newer version or incarnation) or only take its heartbeat. */
  private merge(record: WireRecord, message: Incoming, now: number): void {
    this.counters.recordsReceived++;
    if (record.host === this.self.host) {
      this.checkSelf(record, now);
      return;
    }
    const local = this.records.get(record.host);
    if (local) {
      if (record.incarnation < local.incarnation) return;
      if (record.incarnation === local.incarnation) {
        this.adoptHeartbeat(local, record, now);
        if (record.version <= local.version) return;
      }
      const jsons = this.resolveSchemas(record, message);
      if (!jsons) return;
      const restarted = record.incarnation > local.incarnation;
      this.retain(record.schemaIds, jsons);
      this.release(local.schemaIds);
      Object.assign(local, {
        endpoint: record.endpoint,
        network: record.network,
        incarnation: record.incarnation,
        version: record.version,
        heartbeat: restarted ? record.heartbeat : Math.max(local.heartbeat, record.heartbeat),
        schemaIds: record.schemaIds,
        body: record.body,
        view: undefined,
      });
      this.changed(local, now);
      local.recordBytes = recordBytes(local);
      if (restarted) {
        local.detector = new PhiAccrualDetector(now, this.priorIntervalMs, this.priorStdDevMs);
        this.earliestDeadline = Math.min(this.earliestDeadline, now + (this.detectorParams?.minFailMs ?? 0));
      }
      this.membershipChanged();
      this.counters.hostsUpdated++;
      this.emit("updated", local);
      return;
    }
    const tomb = this.tombs.get(record.host);
    if (tomb && !mayRevive(tomb, record, message)) {
      this.counters.staleIgnored++;
      return;
    }
    const jsons = this.resolveSchemas(record, message);
    if (!jsons) return;
    this.retain(record.schemaIds, jsons);
    if (tomb) {
      this.tombs.delete(record.host);
      this.release(tomb.state.schemaIds);
      this.counters.revived++;
    }
    const state = this.makeState(record, now);
    this.changed(state, now);
    this.earliestDeadline = Math.min(this.earliestDeadline, now + (this.detectorParams?.minFailMs ?? 0));
    this.records.set(state.host, state);
    if (!tomb) this.ringInsert(state.host);
    this.membershipChanged();
    this.counters.hostsAdded++;
    this.emit("added", state);
  }

  /** A heartbeat digest from an ACK. */
  private applyDigest(d: Digest, message: Incoming, now: number): void {
    if (d.dead) return;
    const local = this.records.get(d.host);
    if (local === this.self) return this.checkSelf(d, now);
    if (local) return this.adoptHeartbeat(local, d, now);
    const tomb = this.tombs.get(d.host);
    if (tomb && mayRevive(tomb, d, message) && d.incarnation === tomb.state.incarnation && d.version === tomb.state.version) this.revive(tomb, d.heartbeat, now);
  }

  /** A newer heartbeat of the same incarnation: the failure detector's signal. */
  private adoptHeartbeat(local: HostState, d: { incarnation: number; heartbeat: number }, now: number): void {
    if (d.incarnation !== local.incarnation || d.heartbeat <= local.heartbeat) return;
    local.heartbeat = d.heartbeat;
    if (!local.detector) return;
    local.detector.heartbeat(now);
    if (this.detectorParams) this.earliestDeadline = Math.min(this.earliestDeadline, now + local.detector.failAfterMs(this.detectorParams));
  }

  /** A dead host is back with the record its tombstone holds: no need to fetch it again. */
  private revive(tomb: Tombstone, heartbeat: number, now: number): void {
    const state = tomb.state;
    this.tombs.delete(state.host);
    state.heartbeat = Math.max(state.heartbeat, heartbeat);
    state.detector = new PhiAccrualDetector(now, this.priorIntervalMs, this.priorStdDevMs);
    this.changed(state, now);
    this.earliestDeadline = Math.min(this.earliestDeadline, now + (this.detectorParams?.minFailMs ?? 0));
    this.records.set(state.host, state);
    this.membershipChanged();
    this.counters.revived++;
    this.counters.hostsAdded++;
    this.emit("added", state);
  }

  /**
   * Someone holds a record of ours. A newer version of our own incarnation
   * means we restarted with the same incarnation: outbid it. A newer
   * incarnation is another agent using our host id: counted (`conflicts`).
   */
  private checkSelf(d: { incarnation: number; version: number; heartbeat: number }, now: number): void {
    if (d.incarnation > this.self.incarnation) {
      this.counters.conflicts++;
      return;
    }
    if (d.incarnation < this.self.incarnation) return;
    if (d.version > this.self.version) {
      this.self.version = d.version + 1;
      this.self.changedAt = now;
      this.self.view = undefined;
      this.counters.selfRefuted++;
    }
    if (d.heartbeat > this.self.heartbeat) this.self.heartbeat = d.heartbeat;
  }

  /** The JSON of each schema a record names, from the message or our store; undefined (counted) if one is missing or its body does not decode. */
  private resolveSchemas(record: WireRecord, message: Incoming): Map<string, string> | undefined {
    const jsons = new Map<string, string>();
    for (const id of record.schemaIds) {
      const json = message.schemas.get(id) ?? this.schemaStore.get(id)?.json;
      if (json === undefined) {
        this.counters.badRecords++;
        return undefined;
      }
      jsons.set(id, json);
    }
    try {
      BodyType.decode(record.body);
    } catch {
      this.counters.badRecords++;
      return undefined;
    }
    return jsons;
  }

  // ---- state ----

  private makeState(r: Omit<WireRecord, "schemaIds" | "body"> & { schemaIds: string[]; body: Uint8Array }, now: number): HostState {
    const state: HostState = {
      host: r.host,
      endpoint: r.endpoint,
      network: r.network,
      incarnation: r.incarnation,
      version: r.version,
      heartbeat: r.heartbeat,
      schemaIds: r.schemaIds,
      body: r.body,
      changedAt: now,
      recordBytes: 0,
      detector: new PhiAccrualDetector(now, this.priorIntervalMs, this.priorStdDevMs),
      listed: 0,
      view: undefined,
    };
    state.recordBytes = recordBytes(state);
    return state;
  }

  private retain(ids: string[], jsons: Map<string, string>): void {
    for (const id of ids) {
      const entry = this.schemaStore.get(id);
      if (entry) entry.refs++;
      else this.schemaStore.set(id, { json: jsons.get(id) ?? "", refs: 1 });
    }
  }

  private release(ids: string[]): void {
    for (const id of ids) {
      const entry = this.schemaStore.get(id);
      if (entry && --entry.refs <= 0) this.schemaStore.delete(id);
    }
  }

  private membershipChanged(): void {
    this.planCache = undefined;
    this.derivedDirty = true;
  }

  private ringInsert(host: string): void {
    this.ring.splice(upperBound(this.ring, host), 0, host);
    this.ringChars += host.length;
  }

  private ringDelete(host: string): void {
    const i = upperBound(this.ring, host) - 1;
    if (this.ring[i] !== host) return;
    this.ring.splice(i, 1);
    this.ringChars -= host.length;
  }

  /** The alive peers and their endpoints, rebuilt at most once per change. */
  private refreshDerived(): void {
    if (!this.derivedDirty) return;
    this.derivedDirty = false;
    this.peers = [];
    this.aliveEndpoints = new Set();
    for (const state of this.records.values()) {
      if (state === this.self) continue;
      this.peers.push(state);
      this.aliveEndpoints.add(state.endpoint);
    }
  }

  private viewOf(state: HostState): HostView {
    if (state.view) return state.view;
    let nodes: NodeEntry[] = [];
    try {
      const body = BodyType.decode(state.body) as unknown as { nodes: unknown[] };
      nodes = body.nodes.map((n) => {
        const entry = NodeEntryType.toObject(n as never, { defaults: true, arrays: true }) as NodeEntry;
        entry.load ??= { queued: 0, capacity: 0 };
        return entry;
      });
    } catch {
      // Checked when merged; a record that got here decodes.
    }
    state.view = {
      host: state.host,
      endpoint: state.endpoint,
      network: state.network,
      incarnation: state.incarnation,
      version: state.version,
      nodes,
      schemas: state.schemaIds.map((id) => ({ id, json: this.schemaStore.get(id)?.json ?? "" })),
    };
    return state.view;
  }

  private emit(type: GossipChange["type"], state: HostState): void {
    if (this.listeners.size === 0) return;
    const host = this.viewOf(state);
    for (const listener of [...this.listeners]) {
      try {
        listener({ type, host });
      } catch {
        this.counters.listenerErrors++;
      }
    }
  }

  // ---- encoding ----

  /** Digest columns for `hosts` (alive ones, self, or tombstones flagged dead). */
  private columns(hosts: string[]) {
    const columns = { hosts: [] as string[], incarnations: [] as number[], versions: [] as number[], heartbeats: [] as number[], dead: [] as number[] };
    for (const host of hosts) {
      const alive = this.records.get(host);
      const state = alive ?? this.tombs.get(host)?.state;
      if (!state) continue;
      if (!alive) columns.dead.push(columns.hosts.length);
      columns.hosts.push(host);
      columns.incarnations.push(state.incarnation);
      columns.versions.push(state.version);
      columns.heartbeats.push(state.heartbeat);
    }
    return columns;
  }

  private encode(body: object): Uint8Array {
    return MessageType.encode({ protocol: GOSSIP_PROTOCOL, host: this.self.host, endpoint: this.self.endpoint, incarnation: this.self.incarnation, ...body }).finish();
  }

  private sent(endpoint: string, bytes: Uint8Array, kind: "synSent" | "ackSent" | "ack2Sent"): Outgoing {
    this.tokens.value -= bytes.length;
    this.counters.bytesSent += bytes.length;
    this.counters.messagesSent++;
    this.counters[kind]++;
    return { endpoint, bytes };
  }
}

/**
 * Whether a tombstoned host may come back on the strength of `d`: a newer
 * incarnation; its own word (the message comes from it); or a heartbeat past
 * what it can have sent before we declared it dead (stale copies relayed by
 * hosts that have not declared it dead yet stop there).
 */
function mayRevive(tomb: Tombstone, d: { host: string; incarnation: number; heartbeat: number }, message: Incoming): boolean {
  if (d.incarnation !== tomb.state.incarnation) return d.incarnation > tomb.state.incarnation;
  if (d.host === message.host) return true;
  return d.heartbeat > tomb.state.heartbeat + tomb.margin;
}

function recordBytes(state: HostState): number {
  return state.host.length + state.endpoint.length + state.network.length + state.body.length + state.schemaIds.reduce((sum, id) => sum + id.length + 2, 0) + 32;
}

/** Index of the first element of sorted `ring` not less than `key`. */
function lowerBound(ring: string[], key: string): number {
  let lo = 0;
  let hi = ring.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ring[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Index of the first element of sorted `ring` greater than `key`. */
function upperBound(ring: string[], key: string): number {
  let lo = 0;
  let hi = ring.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ring[mid]! <= key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// ---- decoding: any bytes in, a checked Incoming or nothing out ----

function validId(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_ID_LENGTH;
}

/** A uint64 as a safe integer, from protobufjs's number or Long. */
function u64(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  if (value === null || typeof value !== "object") return undefined;
  const { high, low } = value as { high?: unknown; low?: unknown };
  if (typeof high !== "number" || typeof low !== "number" || high < 0 || high > 0x1fffff) return undefined;
  return high * 4294967296 + (low >>> 0);
}

function u32(value: unknown): number | undefined {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 0xffffffff ? value : undefined;
}

/** Decodes and checks a message; "incompatible" for another protocol version; undefined when malformed. */
function parse(bytes: Uint8Array): Incoming | "incompatible" | undefined {
  let m: Record<string, unknown>;
  try {
    m = MessageType.decode(bytes) as unknown as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (m.protocol !== GOSSIP_PROTOCOL) return m.protocol === 0 || typeof m.protocol !== "number" ? undefined : "incompatible";
  const incarnation = u64(m.incarnation);
  const kind = m.body;
  if (!validId(m.host) || typeof m.endpoint !== "string" || m.endpoint.length > MAX_ENDPOINT_LENGTH || incarnation === undefined) return undefined;
  if (kind !== "syn" && kind !== "ack" && kind !== "ack2") return undefined;
  const body = m[kind] as Record<string, unknown>;
  const message: Incoming = { host: m.host, endpoint: m.endpoint, incarnation, kind, full: false, first: "", last: "", digests: [], records: [], requests: [], schemas: new Map(), held: undefined };
  if (kind === "syn") {
    const { full, rangeFirst, rangeLast } = body as { full: unknown; rangeFirst: unknown; rangeLast: unknown };
    if (typeof full !== "boolean" || typeof rangeFirst !== "string" || typeof rangeLast !== "string") return undefined;
    if (!full && (rangeFirst === "") !== (rangeLast === "")) return undefined;
    message.full = full;
    message.first = full ? "" : rangeFirst;
    message.last = full ? "" : rangeLast;
  }
  if (kind !== "ack2") {
    const held = (kind === "syn" ? body.schemas : body.heldSchemas) as unknown[];
    if (!Array.isArray(held) || held.length > MAX_HELD_SCHEMAS || !held.every(validId)) return undefined;
    if (held.length) message.held = new Set(held as string[]);
  }
  if (kind !== "ack2") {
    const digests = parseDigests(body.digests);
    if (!digests) return undefined;
    message.digests = digests;
  }
  if (kind !== "syn") {
    const records = body.records as unknown[];
    const schemas = body.schemas as { id: unknown; json: unknown }[];
    if (!Array.isArray(records) || records.length > MAX_ENTRIES || !Array.isArray(schemas) || schemas.length > MAX_ENTRIES) return undefined;
    for (const r of records) {
      const record = parseRecord(r as Record<string, unknown>);
      if (!record) return undefined;
      message.records.push(record);
    }
    for (const s of schemas) {
      if (!validId(s?.id) || typeof s.json !== "string") return undefined;
      message.schemas.set(s.id, s.json);
    }
  }
  if (kind === "ack") {
    const requests = body.requests as unknown[];
    if (!Array.isArray(requests) || requests.length > MAX_ENTRIES || !requests.every(validId)) return undefined;
    message.requests = requests as string[];
  }
  return message;
}

function parseDigests(value: unknown): Digest[] | undefined {
  if (value === null || value === undefined) return [];
  const { hosts, incarnations, versions, heartbeats, dead } = value as Record<string, unknown[]>;
  if (![hosts, incarnations, versions, heartbeats, dead].every(Array.isArray)) return undefined;
  const n = hosts!.length;
  if (n > MAX_ENTRIES || incarnations!.length !== n || versions!.length !== n || heartbeats!.length !== n) return undefined;
  const out: Digest[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const host = hosts![i];
    const incarnation = u64(incarnations![i]);
    const version = u32(versions![i]);
    const heartbeat = u32(heartbeats![i]);
    if (!validId(host) || incarnation === undefined || version === undefined || heartbeat === undefined) return undefined;
    out[i] = { host, incarnation, version, heartbeat, dead: false };
  }
  for (const index of dead!) {
    if (typeof index !== "number" || index >= n) return undefined;
    out[index]!.dead = true;
  }
  return out;
}

function parseRecord(r: Record<string, unknown> | null): WireRecord | undefined {
  if (!r) return undefined;
  const incarnation = u64(r.incarnation);
  const version = u32(r.version);
  const heartbeat = u32(r.heartbeat);
  const { host, endpoint, network, schemas, body } = r;
  if (!validId(host) || incarnation === undefined || version === undefined || heartbeat === undefined) return undefined;
  // A record without an endpoint would be a peer nobody can reach.
  if (typeof endpoint !== "string" || !endpoint || endpoint.length > MAX_ENDPOINT_LENGTH || typeof network !== "string" || network.length > MAX_ENDPOINT_LENGTH) return undefined;
  if (!Array.isArray(schemas) || schemas.length > MAX_ENTRIES || !schemas.every(validId) || !(body instanceof Uint8Array)) return undefined;
  // A copy: the decoded bytes share the whole message's buffer, which a kept record would pin.
  return { host, endpoint, network, incarnation, version, heartbeat, schemaIds: schemas as string[], body: new Uint8Array(body) };
}
