/**
 * The gossip plan: how the round period, fanout, digests per SYN and the
 * failure detector's parameters follow from the cluster size and the byte
 * budget, and the detection bound that results. Pure arithmetic, no state:
 * the Gossip class (gossip.ts) asks for a new plan when its view changes
 * size; bench/gossip-sim.ts prints it beside what it measures.
 */
import { phiZ } from "./failure-detector.ts";

/** The options gossipPlan depends on (a part of GossipOptions). */
export interface PlanOptions {
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

/** Round period when the budget allows it, unless basePeriodMs says otherwise. */
export const DEFAULT_PERIOD_MS = 1000;
/** Coordination bytes a host may send per second, unless budgetBytesPerSecond says otherwise. */
export const DEFAULT_BUDGET = 16384;
/** phi at which a host is declared dead, unless phiThreshold says otherwise. */
export const DEFAULT_THRESHOLD = 8;
const DEFAULT_MIN_FAIL_MS = 3000;
/** Share of the budget the plan spends on SYNs and ACKs; the rest absorbs hosts asked more than average, records and probes. */
export const HEADROOM = 0.5;
/** Share of relayed heartbeat copies that are newer than what the observer holds (fitted, see gossipPlan). */
const FRESH_SHARE = 0.55;
/** Fewest digests per SYN before the period grows instead. */
const MIN_DIGESTS = 8;
/** Digest cost beyond its id: string tag and length, incarnation (~6 bytes), version, heartbeat. */
export const DIGEST_OVERHEAD = 12;

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
