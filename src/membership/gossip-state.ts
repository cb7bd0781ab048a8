/**
 * What one host's gossip holds, and the rules by which what arrives changes
 * it: the host records (self included) and the tombstones of dead hosts, the
 * sorted ring of their ids that SYN ranges walk, the schemas the records use
 * (counted by reference), the views handed out and their change events, and
 * the merge rules for an incoming record or digest. Pure, like the protocol
 * (gossip.ts) that owns one: it decides what to send and when; this decides
 * what a record or heartbeat that came in means for the view.
 *
 * WHO MAY CHANGE WHAT (the trust rule; until cluster keys sign records, a
 * host's identity is its discovery endpoint):
 *
 * - FIRST-HAND: a message that came back on a connection this agent opened
 *   itself, to endpoint E (Peer.link = E: an ACK answering our SYN), from a
 *   sender that says it is host H at E, where E may be H's (mayBind: we hold
 *   H nowhere else, or only as a tombstone, or only from relays and never
 *   heard it first-hand). Such a message speaks for H's own record, and only
 *   for H's: whatever it says of H (incarnation, up or down; version; nodes;
 *   heartbeat; endpoint E) replaces what we hold, revives H from a tombstone
 *   at once, and counts as a heartbeat. What it says of other hosts is
 *   second-hand.
 * - SECOND-HAND: everything else: records and digests relayed by a third
 *   host, and every message that arrived on a listener (there anyone may have
 *   connected and claimed any host and endpoint; such a claim is at most a
 *   reason to probe the endpoint it names, a few per round, see gossip.ts).
 *   Second-hand information may add a host we hold nothing of; revive a
 *   tombstone with a newer incarnation or a heartbeat clearly past the
 *   tombstone's; raise a heartbeat of the same incarnation within
 *   HEARTBEAT_SLACK + HEARTBEAT_RATE per base period of the last first-hand
 *   one; and replace the record of a host NOT heard first-hand within the last
 *   DIRECT_ROUNDS rounds with a newer version or incarnation. It may never:
 *   change anything but the heartbeat of a host heard first-hand within those
 *   rounds, move a live host to another endpoint, or take a host out (a
 *   digest flagged dead is never taken: only our own failure detector buries
 *   a host, and every first-hand message is a heartbeat for it, so a host
 *   whose own agent answers us is never buried). A tombstone revived by a
 *   newer incarnation may come back elsewhere: that is a new agent.
 * - ALWAYS: no incarnation beyond MAX_INCARNATION_AHEAD_MS past our clock is
 *   taken, first- or second-hand (an incarnation is an agent's start time in
 *   ms; one "from the future" would outbid every real restart of its host).
 *   What others hold of us never changes our incarnation or heartbeat; a
 *   newer version of our own incarnation is outbid by at most MAX_SELF_OUTBID.
 * Each refusal is counted (incarnationRefused, relayRefused, endpointRefused,
 * heartbeatRefused, selfRefused, staleIgnored).
 *
 * What this leaves open: a relay can still lie about hosts we do not hear
 * first-hand (in a cluster larger than fanout + 1, most of them at any time;
 * in any cluster, a host in the round after we learnt of it, or one silent for
 * DIRECT_ROUNDS) until we hear them ourselves, which puts it right at once;
 * and a host id is bound to the first endpoint that answered for it
 * first-hand while that binding lives. Signed records (cluster keys) close
 * both.
 */
import { PhiAccrualDetector, type PhiParameters } from "./failure-detector.ts";
import type { HostCapacity, RemoteNetwork } from "./capacity.ts";
import { bodyDecodes, decodeBroadcast, decodeExtras, decodeNodes, recordBytes, type Digest, type Incoming, type WireRecord } from "./gossip-codec.ts";
import type { GossipPlan } from "./gossip-plan.ts";
import type { NodeEntry } from "./table.ts";

/**
 * How far past our own clock an incarnation may be (24 h): an incarnation is
 * its agent's start time in ms, so anything later is a forgery or a clock set
 * absurdly wrong. Generous on purpose: a host whose clock is a time zone off
 * must still be able to join; what this stops is an incarnation that
 * outbids every restart for years (2^53 - 1).
 */
export const MAX_INCARNATION_AHEAD_MS = 24 * 3_600_000;
/** Rounds after a first-hand message during which second-hand news may not change that host's record. */
export const DIRECT_ROUNDS = 2;
/**
 * A relayed heartbeat may pass the last first-hand one (or the one its record
 * came with) by this much plus HEARTBEAT_RATE per base period since: room
 * for copies that lag, none for a jump that would make every real heartbeat
 * look old (a heartbeat of 2^32 - 1 would have had its host declared dead).
 */
export const HEARTBEAT_SLACK = 64;
export const HEARTBEAT_RATE = 4;
/** The most a version of our own incarnation held elsewhere may be ahead of ours for us to outbid it. */
export const MAX_SELF_OUTBID = 1000;
const U32_MAX = 0xffffffff;

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
  /** Its broadcast relay's network endpoint, when its record names one (see gossip.proto GossipBody). */
  broadcast?: string;
  /** What it can take, when its record says (a governor's; see membership/capacity.ts). */
  capacity?: HostCapacity;
  /** The networks it reaches (a gateway's record; empty for any other host). */
  remotes: RemoteNetwork[];
}

/** A change of the view; `removed` carries the host's last known view. */
export interface GossipChange {
  type: "added" | "updated" | "removed";
  host: HostView;
}

/** What this host holds about one host (itself included). */
export interface HostState extends WireRecord {
  // body: the encoded nodebin.GossipBody, relayed as is.
  /** When its incarnation or version last changed here: recent changes ride in every SYN. */
  changedAt: number;
  /** Estimated encoded size of its record, schemas excluded. */
  recordBytes: number;
  /** Undefined for self. */
  detector: PhiAccrualDetector | undefined;
  /** The stamp of the last SYN that listed it (see ack in gossip.ts). */
  listed: number;
  view: HostView | undefined;
  /** When it was last heard first-hand (see the trust rule above); undefined: only ever through relays. */
  verifiedAt: number | undefined;
  /** The heartbeat of that first-hand message: the same one again is no new heartbeat. */
  directHeartbeat: number | undefined;
  /** The heartbeat relayed ones are bounded from (the last first-hand one, or the one its record came with) and when it was taken. */
  anchorHeartbeat: number;
  anchorAt: number;
}

/** A dead host's last record, kept so that stale digests relayed by others cannot bring it back. */
export interface Tombstone {
  state: HostState;
  removedAt: number;
  /** Heartbeats the host may have sent after the last we saw: a relayed heartbeat must pass last + margin to revive it. */
  margin: number;
}

/**
 * Where a message came from, as far as the receiver can tell: `direct` is the
 * host it speaks for first-hand (its sender, when it came back on our own
 * connection to the endpoint bound to it), else undefined.
 */
export interface Origin {
  message: Incoming;
  /** The endpoint of our own connection it came back on; undefined when it arrived on a listener. */
  link: string | undefined;
  direct: string | undefined;
}

/** The counters the store advances: a part of the gossip's (see Gossip.stats()), shared with it. */
export type StoreCounters = Record<
  | "recordsReceived"
  | "badRecords"
  | "conflicts"
  | "selfRefuted"
  | "hostsAdded"
  | "hostsUpdated"
  | "hostsRemoved"
  | "revived"
  | "refuted"
  | "staleIgnored"
  | "incarnationRefused"
  | "relayRefused"
  | "endpointRefused"
  | "heartbeatRefused"
  | "selfRefused"
  | "listenerErrors",
  number
>;

/**
 * The hosts one gossip holds. Not re-entrant: listeners must not call back
 * into it. Nothing here throws on what a peer sends (records whose schemas or
 * body do not resolve are counted as `badRecords` and dropped).
 */
export class HostStore {
  /** This host's own record (no detector). */
  readonly self: HostState;
  private readonly counters: StoreCounters;
  private readonly alive = new Map<string, HostState>();
  private readonly dead = new Map<string, Tombstone>();
  private readonly schemaStore = new Map<string, { json: string; refs: number }>();
  private readonly listeners = new Set<(event: GossipChange) => void>();
  /** Every host id held (alive, self, tombstones), sorted: the ring SYN ranges walk. Kept sorted on insert. */
  private readonly sorted: string[] = [];
  private ringChars = 0;
  /** Bumped on every membership change (see generation). */
  private changeCount = 0;
  // Derived from records, rebuilt lazily after membership changes.
  private derivedDirty = true;
  private alivePeers: HostState[] = [];
  private aliveEndpoints = new Set<string>();
  /** The base round period: relayed heartbeats may not run ahead faster than HEARTBEAT_RATE per this. */
  private readonly basePeriodMs: number;
  /** The last plan's expected heartbeat interval: the prior of new detectors. */
  private priorIntervalMs: number;
  private priorStdDevMs: number | undefined;
  private detectorParams: PhiParameters | undefined;
  /** How long after a first-hand message relays may not change that host's record (DIRECT_ROUNDS of the plan's period). */
  private directWindowMs: number;
  /** Records that changed here (new, new version or incarnation, revived), in time order: the hot ones ride in every SYN. */
  private readonly changes: { host: string; at: number }[] = [];
  /** No detector's deadline is before this: detection scans the view only once it passes. */
  private earliestDeadline = -Infinity;

  /**
   * A store holding only `self` (version 1, no nodes). `counters` is the
   * gossip's, advanced in place; `basePeriodMs` is the round period the plan
   * starts from (and the prior expected interval until adoptPlan() gives one).
   */
  constructor(self: { host: string; endpoint: string; network: string; incarnation: number }, now: number, counters: StoreCounters, basePeriodMs: number) {
    this.counters = counters;
    this.basePeriodMs = basePeriodMs;
    this.priorIntervalMs = basePeriodMs;
    this.directWindowMs = DIRECT_ROUNDS * basePeriodMs;
    this.self = this.makeState({ ...self, network: self.network ?? "", version: 1, heartbeat: 0, schemaIds: [], body: new Uint8Array(0) }, now);
    this.self.detector = undefined;
    this.alive.set(self.host, this.self);
    this.ringInsert(self.host);
  }

  /** Alive hosts (self included) by id. */
  get records(): ReadonlyMap<string, HostState> {
    return this.alive;
  }

  /** Tombstones of dead hosts by id. */
  get tombs(): ReadonlyMap<string, Tombstone> {
    return this.dead;
  }

  /** Every host id held (alive, self, tombstones), sorted. */
  get ring(): readonly string[] {
    return this.sorted;
  }

  /** Mean length of the ring's host ids: what a digest's id costs on the wire. */
  get idBytes(): number {
    return this.ringChars / this.sorted.length;
  }

  /** Changes whenever hosts are added, removed or forgotten: a plan made before is stale. */
  get generation(): number {
    return this.changeCount;
  }

  /** Takes the detector parameters and priors of a new plan (the gossip makes one per generation). */
  adoptPlan(plan: GossipPlan, threshold: number): void {
    this.priorIntervalMs = plan.expectedIntervalMs;
    this.earliestDeadline = -Infinity; // new parameters: every deadline may have moved
    this.priorStdDevMs = plan.stdDevMs;
    this.directWindowMs = DIRECT_ROUNDS * plan.periodMs;
    // One object per plan: detectors cache their verdict per parameters object.
    this.detectorParams = {
      threshold,
      minStdDevMs: plan.minStdDevMs,
      minMeanMs: plan.expectedIntervalMs,
      minFailMs: plan.minFailMs,
      maxFailMs: plan.maxFailMs,
    };
  }

  /** Replaces this host's own nodes (`body`, encoded) and schemas; bumps its version. */
  setLocal(body: Uint8Array, jsons: Map<string, string>, now: number): void {
    const ids = [...jsons.keys()];
    this.retain(ids, jsons);
    this.release(this.self.schemaIds);
    Object.assign(this.self, { version: this.self.version + 1, body, schemaIds: ids, changedAt: now, view: undefined });
    this.self.recordBytes = recordBytes(this.self);
  }

  // ---- the trust rule's questions ----

  /**
   * Whether an incarnation is within MAX_INCARNATION_AHEAD_MS of our clock;
   * counts a refusal. Our own incarnation is a reading of the same clock, so
   * it counts as one too (a simulation whose clock starts at 0 still works).
   */
  incarnationAllowed(incarnation: number, now: number): boolean {
    if (incarnation <= Math.max(now, this.self.incarnation) + MAX_INCARNATION_AHEAD_MS) return true;
    this.counters.incarnationRefused++;
    return false;
  }

  /** Whether `local` was heard first-hand within the direct window: relays may not change its record now. */
  heardRecently(local: HostState, now: number): boolean {
    return local.verifiedAt !== undefined && now - local.verifiedAt < this.directWindowMs;
  }

  /**
   * Whether a message from `host`, on our own connection to `endpoint`, may
   * speak for it first-hand: we hold it at that endpoint, or not at all, or
   * only as a tombstone (the host at the old endpoint stopped answering), or
   * only from relays (never heard first-hand: a squatter's record loses to the
   * host itself). A host heard first-hand at another endpoint keeps it;
   * counted (`endpointRefused`).
   */
  mayBind(host: string, endpoint: string): boolean {
    const local = this.alive.get(host);
    if (!local || local === this.self || local.endpoint === endpoint || local.verifiedAt === undefined) return local !== this.self;
    this.counters.endpointRefused++;
    return false;
  }

  // ---- merging ----

  /**
   * A record from a peer: add, replace or only take its heartbeat, by the
   * trust rule (file header): first-hand when `origin.direct` is its host and
   * it names the endpoint we reached that host at.
   */
  merge(record: WireRecord, origin: Origin, now: number): void {
    this.counters.recordsReceived++;
    if (record.host === this.self.host) {
      this.checkSelf(record, now);
      return;
    }
    if (!this.incarnationAllowed(record.incarnation, now)) return;
    const direct = origin.direct === record.host && record.endpoint === origin.link;
    const local = this.alive.get(record.host);
    if (local) {
      if (direct) this.mergeDirect(local, record, origin.message, now);
      else this.mergeRelayed(local, record, origin.message, now);
      return;
    }
    const tomb = this.dead.get(record.host);
    if (tomb && !direct && !mayRevive(tomb, record)) {
      this.counters.staleIgnored++;
      return;
    }
    const jsons = this.resolveSchemas(record, origin.message);
    if (!jsons) return;
    this.retain(record.schemaIds, jsons);
    if (tomb) {
      this.dead.delete(record.host);
      this.release(tomb.state.schemaIds);
      this.counters.revived++;
      if (direct) this.counters.refuted++;
    }
    const state = this.makeState(record, now);
    if (direct) this.heardDirect(state, record.heartbeat, record.endpoint, now);
    this.changed(state, now);
    this.earliestDeadline = Math.min(this.earliestDeadline, now + (this.detectorParams?.minFailMs ?? 0));
    this.alive.set(state.host, state);
    if (!tomb) this.ringInsert(state.host);
    this.membershipChanged();
    this.counters.hostsAdded++;
    this.emit("added", state);
  }

  /** The host's own word: the same record is a heartbeat; anything else it says of itself replaces what we hold. */
  private mergeDirect(local: HostState, record: WireRecord, message: Incoming, now: number): void {
    if (record.incarnation === local.incarnation && record.version === local.version && record.endpoint === local.endpoint) {
      this.heardDirect(local, record.heartbeat, record.endpoint, now);
      return;
    }
    this.replace(local, record, message, now, true);
  }

  /** A relayed record: a heartbeat within bounds; a newer version or incarnation only for a host not heard first-hand lately, at the endpoint we hold. */
  private mergeRelayed(local: HostState, record: WireRecord, message: Incoming, now: number): void {
    if (record.incarnation < local.incarnation) return;
    const sameIncarnation = record.incarnation === local.incarnation;
    if (sameIncarnation) this.heardRelayed(local, record, now);
    if (sameIncarnation && record.version <= local.version) return;
    if (this.heardRecently(local, now)) {
      this.counters.relayRefused++;
      return;
    }
    if (record.endpoint !== local.endpoint) {
      this.counters.endpointRefused++;
      return;
    }
    this.replace(local, record, message, now, false);
  }

  private replace(local: HostState, record: WireRecord, message: Incoming, now: number, direct: boolean): void {
    const jsons = this.resolveSchemas(record, message);
    if (!jsons) return;
    const restarted = record.incarnation !== local.incarnation;
    this.retain(record.schemaIds, jsons);
    this.release(local.schemaIds);
    Object.assign(local, {
      endpoint: record.endpoint,
      network: record.network,
      incarnation: record.incarnation,
      version: record.version,
      // First-hand, the host's own heartbeat stands even below a relayed one (relays may have run it up).
      heartbeat: restarted || direct ? record.heartbeat : Math.max(local.heartbeat, record.heartbeat),
      schemaIds: record.schemaIds,
      body: record.body,
      view: undefined,
    });
    this.changed(local, now);
    local.recordBytes = recordBytes(local);
    if (restarted) {
      local.detector = new PhiAccrualDetector(now, this.priorIntervalMs, this.priorStdDevMs);
      local.directHeartbeat = undefined;
      local.anchorHeartbeat = record.heartbeat;
      local.anchorAt = now;
      this.earliestDeadline = Math.min(this.earliestDeadline, now + (this.detectorParams?.minFailMs ?? 0));
    }
    if (direct) this.heardDirect(local, record.heartbeat, record.endpoint, now);
    this.membershipChanged();
    this.counters.hostsUpdated++;
    this.emit("updated", local);
  }

  /** A heartbeat digest from an ACK (first-hand for the host `origin.direct` names). */
  applyDigest(d: Digest, origin: Origin, now: number): void {
    if (d.dead) return;
    const local = this.alive.get(d.host);
    if (local === this.self) return this.checkSelf(d, now);
    if (!this.incarnationAllowed(d.incarnation, now)) return;
    const link = origin.direct === d.host ? origin.link : undefined;
    if (local) return this.heartbeat(local, d, now, link);
    const tomb = this.dead.get(d.host);
    if (tomb && (link !== undefined || mayRevive(tomb, d)) && d.incarnation === tomb.state.incarnation && d.version === tomb.state.version) this.revive(tomb, d.heartbeat, now, link);
  }

  /**
   * A heartbeat of `local` in a digest: the host's own (`link`: the endpoint
   * we reached it at) when first-hand, else relayed (see heardRelayed).
   */
  heartbeat(local: HostState, d: { incarnation: number; version: number; heartbeat: number }, now: number, link: string | undefined): void {
    if (link !== undefined) {
      // The host itself at the same record: alive now. (Another incarnation or version: its record is on the way.)
      if (d.incarnation === local.incarnation && d.version === local.version) this.heardDirect(local, d.heartbeat, link, now);
    } else this.heardRelayed(local, d, now);
  }

  /**
   * The host spoke first-hand, at `endpoint`: alive at once (a new heartbeat
   * value, whichever way it moved, is a heartbeat), its heartbeat as it says,
   * bound to that endpoint.
   */
  private heardDirect(local: HostState, heartbeat: number, endpoint: string, now: number): void {
    local.verifiedAt = now;
    local.anchorHeartbeat = heartbeat;
    local.anchorAt = now;
    if (local.endpoint !== endpoint) {
      // Same record, new place (mayBind allowed it): the host answers there.
      local.endpoint = endpoint;
      local.view = undefined;
      this.membershipChanged();
      this.counters.hostsUpdated++;
      this.emit("updated", local);
    }
    if (heartbeat === local.directHeartbeat) return; // the same round of the host, seen twice
    local.directHeartbeat = heartbeat;
    local.heartbeat = heartbeat;
    this.arrival(local, now);
  }

  /** A relayed heartbeat of the same incarnation: taken when newer and within the bound (see HEARTBEAT_SLACK). */
  private heardRelayed(local: HostState, d: { incarnation: number; heartbeat: number }, now: number): void {
    if (d.incarnation !== local.incarnation || d.heartbeat <= local.heartbeat) return;
    const bound = local.anchorHeartbeat + HEARTBEAT_SLACK + ((now - local.anchorAt) * HEARTBEAT_RATE) / this.basePeriodMs;
    if (d.heartbeat > bound) {
      this.counters.heartbeatRefused++;
      return;
    }
    local.heartbeat = d.heartbeat;
    this.arrival(local, now);
  }

  /** The failure detector's signal. */
  private arrival(local: HostState, now: number): void {
    if (!local.detector) return;
    local.detector.heartbeat(now);
    if (this.detectorParams) this.earliestDeadline = Math.min(this.earliestDeadline, now + local.detector.failAfterMs(this.detectorParams));
  }

  /**
   * A dead host is back with the record its tombstone holds: no need to fetch
   * it again. `link`: it said so itself, from there (the tombstone is refuted).
   */
  revive(tomb: Tombstone, heartbeat: number, now: number, link?: string): void {
    const state = tomb.state;
    this.dead.delete(state.host);
    state.heartbeat = Math.max(state.heartbeat, heartbeat);
    state.anchorHeartbeat = state.heartbeat;
    state.anchorAt = now;
    state.detector = new PhiAccrualDetector(now, this.priorIntervalMs, this.priorStdDevMs);
    this.changed(state, now);
    this.earliestDeadline = Math.min(this.earliestDeadline, now + (this.detectorParams?.minFailMs ?? 0));
    this.alive.set(state.host, state);
    if (link !== undefined) {
      this.counters.refuted++;
      state.endpoint = link;
      state.view = undefined;
      this.heardDirect(state, heartbeat, link, now);
    }
    this.membershipChanged();
    this.counters.revived++;
    this.counters.hostsAdded++;
    this.emit("added", state);
  }

  /**
   * Someone holds a record of ours. A newer version of our own incarnation
   * means we restarted with the same incarnation: outbid it, by a bounded
   * step (`selfRefused` past it: a peer may make us bump our version, never
   * run it to the end of its range). A newer incarnation is another agent
   * using our host id, or a forgery: counted (`conflicts`). Their heartbeats
   * of us are never taken: ours is ours.
   */
  checkSelf(d: { incarnation: number; version: number }, now: number): void {
    if (d.incarnation > this.self.incarnation) {
      this.counters.conflicts++;
      return;
    }
    if (d.incarnation < this.self.incarnation || d.version <= this.self.version) return;
    if (d.version - this.self.version > MAX_SELF_OUTBID || d.version >= U32_MAX) {
      this.counters.selfRefused++;
      return;
    }
    this.self.version = d.version + 1;
    this.self.changedAt = now;
    this.self.view = undefined;
    this.counters.selfRefuted++;
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
    if (!bodyDecodes(record.body)) {
      this.counters.badRecords++;
      return undefined;
    }
    return jsons;
  }

  // ---- failure detection ----

  /** The hosts whose detector's deadline has passed at `now` under the current plan's parameters (adoptPlan() must have run). */
  expired(now: number): HostState[] {
    const params = this.detectorParams!;
    const dead: HostState[] = [];
    // Scanning a large view every round costs more than the rest of the round: only
    // when some deadline may have passed (deadlines move only with heartbeats and plans).
    if (now >= this.earliestDeadline) {
      let earliest = Infinity;
      for (const state of this.alive.values()) {
        if (!state.detector) continue;
        const deadline = state.detector.lastArrival + state.detector.failAfterMs(params);
        if (now >= deadline) dead.push(state);
        else earliest = Math.min(earliest, deadline);
      }
      this.earliestDeadline = earliest;
    }
    return dead;
  }

  /** A host declared dead: it leaves the view (event `removed`) and leaves a tombstone with `margin` (see Tombstone). */
  bury(state: HostState, now: number, margin: number): void {
    this.alive.delete(state.host);
    this.dead.set(state.host, { state, removedAt: now, margin });
    this.membershipChanged();
    this.counters.hostsRemoved++;
    this.emit("removed", state);
  }

  /** Forgets the tombstones older than `keepMs`, their schemas and their place in the ring. */
  expireTombs(now: number, keepMs: number): void {
    for (const tomb of [...this.dead.values()]) {
      if (now - tomb.removedAt < keepMs) continue;
      this.dead.delete(tomb.state.host);
      this.release(tomb.state.schemaIds);
      this.ringDelete(tomb.state.host);
      this.membershipChanged();
    }
  }

  // ---- what the protocol reads ----

  /** The digests of `hosts`, in their order: alive ones and self, or tombstones flagged dead; unknown ones are left out. */
  digests(hosts: string[]): Digest[] {
    const digests: Digest[] = [];
    for (const host of hosts) {
      const alive = this.alive.get(host);
      const state = alive ?? this.dead.get(host)?.state;
      if (state) digests.push({ host, incarnation: state.incarnation, version: state.version, heartbeat: state.heartbeat, dead: !alive });
    }
    return digests;
  }

  /**
   * The alive hosts (self included) a SYN's range covers, in ring order: all
   * when `full`; else the ids from `first` to `last`, wrapping past the end
   * when first > last; none when first is "" (a SYN that lists no range).
   */
  inRange(full: boolean, first: string, last: string): HostState[] {
    const ring = this.sorted;
    const out: HostState[] = [];
    const collect = (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const state = this.alive.get(ring[i]!);
        if (state) out.push(state);
      }
    };
    if (full) collect(0, ring.length);
    else if (first) {
      const from = lowerBound(ring, first);
      const to = upperBound(ring, last);
      if (first <= last) collect(from, to);
      else {
        collect(from, ring.length);
        collect(0, to);
      }
    }
    return out;
  }

  /** Hosts (not self) whose record changed within `windowMs` before `now`, most recent first; older changes are forgotten. */
  recentlyChanged(windowMs: number, now: number): string[] {
    let old = 0;
    while (old < this.changes.length && now - this.changes[old]!.at >= windowMs) old++;
    if (old) this.changes.splice(0, old);
    const hot = new Set<string>();
    for (let i = this.changes.length - 1; i >= 0; i--) {
      const { host, at } = this.changes[i]!;
      const state = this.alive.get(host);
      if (state && state !== this.self && state.changedAt === at) hot.add(host);
    }
    return [...hot];
  }

  /** How many schemas are held (those some record held here uses). */
  get schemaCount(): number {
    return this.schemaStore.size;
  }

  /** The ids of the schemas held. */
  schemaIds(): string[] {
    return [...this.schemaStore.keys()];
  }

  /** The JSON of a schema held, or undefined. */
  schemaJson(id: string): string | undefined {
    return this.schemaStore.get(id)?.json;
  }

  /** The alive peers (not self), rebuilt at most once per change. */
  peers(): HostState[] {
    this.refreshDerived();
    return this.alivePeers;
  }

  /** Whether an alive peer has `endpoint` as its discovery endpoint. */
  hasAliveEndpoint(endpoint: string): boolean {
    this.refreshDerived();
    return this.aliveEndpoints.has(endpoint);
  }

  // ---- views ----

  /** Alive remote hosts (not self) with their nodes, by host id. */
  hosts(): HostView[] {
    return this.sorted
      .map((h) => this.alive.get(h))
      .filter((s): s is HostState => s !== undefined && s !== this.self)
      .map((s) => this.viewOf(s));
  }

  /** What this host holds of `host` (self included) without decoding its nodes: undefined when it is not alive here. */
  known(host: string): { incarnation: number; version: number; heartbeat: number } | undefined {
    const state = this.alive.get(host);
    return state && { incarnation: state.incarnation, version: state.version, heartbeat: state.heartbeat };
  }

  /** Subscribe to view changes; returns the unsubscribe function. A listener that throws is counted (`listenerErrors`). */
  onChange(listener: (event: GossipChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // ---- state ----

  private makeState(r: WireRecord, now: number): HostState {
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
      verifiedAt: undefined,
      directHeartbeat: undefined,
      anchorHeartbeat: r.heartbeat,
      anchorAt: now,
    };
    state.recordBytes = recordBytes(state);
    return state;
  }

  private changed(state: HostState, now: number): void {
    state.changedAt = now;
    if (state !== this.self) this.changes.push({ host: state.host, at: now });
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
    this.changeCount++;
    this.derivedDirty = true;
  }

  private ringInsert(host: string): void {
    this.sorted.splice(upperBound(this.sorted, host), 0, host);
    this.ringChars += host.length;
  }

  private ringDelete(host: string): void {
    const i = upperBound(this.sorted, host) - 1;
    if (this.sorted[i] !== host) return;
    this.sorted.splice(i, 1);
    this.ringChars -= host.length;
  }

  /** The alive peers and their endpoints, rebuilt at most once per change. */
  private refreshDerived(): void {
    if (!this.derivedDirty) return;
    this.derivedDirty = false;
    this.alivePeers = [];
    this.aliveEndpoints = new Set();
    for (const state of this.alive.values()) {
      if (state === this.self) continue;
      this.alivePeers.push(state);
      this.aliveEndpoints.add(state.endpoint);
    }
  }

  private viewOf(state: HostState): HostView {
    if (state.view) return state.view;
    let nodes: NodeEntry[] = [];
    try {
      nodes = decodeNodes(state.body);
    } catch {
      // Checked when merged; a record that got here decodes.
    }
    const broadcast = decodeBroadcast(state.body);
    const { capacity, remotes } = decodeExtras(state.body);
    state.view = {
      host: state.host,
      endpoint: state.endpoint,
      network: state.network,
      incarnation: state.incarnation,
      version: state.version,
      nodes,
      schemas: state.schemaIds.map((id) => ({ id, json: this.schemaStore.get(id)?.json ?? "" })),
      ...(broadcast ? { broadcast } : {}),
      ...(capacity ? { capacity } : {}),
      remotes,
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
}

/**
 * Whether second-hand news `d` may bring a tombstoned host back: a newer
 * incarnation (within the bound, checked before), or a heartbeat past what it
 * can have sent before we declared it dead (stale copies relayed by hosts that
 * have not declared it dead yet stop there). What a message claims of its own
 * sender is no better: it may have come from anyone. The host's first-hand
 * word always revives it (the callers check that first).
 */
export function mayRevive(tomb: Tombstone, d: { incarnation: number; heartbeat: number }): boolean {
  if (d.incarnation !== tomb.state.incarnation) return d.incarnation > tomb.state.incarnation;
  return d.heartbeat > tomb.state.heartbeat + tomb.margin;
}

/** Index of the first element of sorted `ring` not less than `key`. */
export function lowerBound(ring: readonly string[], key: string): number {
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
export function upperBound(ring: readonly string[], key: string): number {
  let lo = 0;
  let hi = ring.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ring[mid]! <= key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
