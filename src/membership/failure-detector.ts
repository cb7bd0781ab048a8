/**
 * Phi-accrual failure detection (Hayashibara et al., "The phi accrual failure
 * detector", 2004), in Akka's variant: the intervals between heartbeat
 * arrivals are taken as normally distributed with the mean and standard
 * deviation of the recent ones (exponentially weighted here), and
 *
 *   phi(t) = -log10(P(the next heartbeat comes later than t after the last))
 *
 * grows with the silence t. A host is suspected dead when phi reaches a
 * threshold (8: a chance of 1e-8 that a live host would stay this quiet).
 * Around it, guards: below `minFailMs` of silence nothing is dead (short
 * pauses of a live process); at `maxFailMs` everything is, so that detection
 * time has a hard bound whatever the history says; and before
 * `minSamples` intervals have been seen, only that bound applies.
 *
 * Pure: time is passed in; nothing here reads a clock.
 */

/** The parameters a detector is judged with; they may change between calls. */
export interface PhiParameters {
  /** phi at which a host is declared dead. */
  threshold: number;
  /** Floor on the standard deviation, so a very regular history does not make phi hair-triggered. */
  minStdDevMs: number;
  /**
   * Floor on the mean interval (default 0): when heartbeats are known to
   * arrive less often than the history says (the cluster grew, so each
   * host's heartbeat reaches us less often), the history is not trusted.
   */
  minMeanMs?: number;
  /** Silence below which nothing is declared dead. */
  minFailMs: number;
  /** Silence at which a host is dead whatever phi says (>= minFailMs). */
  maxFailMs: number;
  /**
   * Intervals to observe before phi is trusted (default 2): until then only
   * maxFailMs declares a host dead. A host just learnt of, through a record
   * relayed while the cluster forms, has no history worth judging by.
   */
  minSamples?: number;
}

/** Intervals that count (Akka keeps up to 1000; fewer adapt faster to a changed cluster). */
const DEFAULT_WINDOW = 50;
const DEFAULT_MIN_SAMPLES = 2;

/**
 * phi for a silence of `elapsed` ms given the interval statistics, with the
 * logistic approximation of the normal CDF that Akka uses (no erf needed).
 * Infinity when the silence is hopeless.
 */
export function phi(elapsed: number, mean: number, stdDev: number): number {
  const y = (elapsed - mean) / stdDev;
  const e = Math.exp(-y * (1.5976 + 0.070566 * y * y));
  return elapsed > mean ? -Math.log10(e / (1 + e)) : -Math.log10(1 - 1 / (1 + e));
}

/**
 * The z for which phi(mean + z * stdDev) = threshold: the number of standard
 * deviations past the mean at which a host is declared dead (5.23 at 8, 5.80
 * at 10, 4.12 at 5). Solves the cubic of the logistic approximation by bisection.
 */
export function phiZ(threshold: number): number {
  let z = zMemo.get(threshold);
  if (z === undefined) {
    z = solveZ(threshold);
    if (zMemo.size < 64) zMemo.set(threshold, z);
  }
  return z;
}

/** phiZ of the thresholds in use (a pure function's results: sharing them is harmless). */
const zMemo = new Map<number, number>();

function solveZ(threshold: number): number {
  const p = 10 ** -threshold;
  const target = -Math.log(p / (1 - p)); // y (1.5976 + 0.070566 y^2) at the threshold
  let lo = 0;
  let hi = 64;
  for (let i = 0; i < 100; i++) {
    const mid = (lo + hi) / 2;
    if (mid * (1.5976 + 0.070566 * mid * mid) < target) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/**
 * The failure detector of one monitored host: fed the times at which its
 * heartbeat was seen to increase, it says how suspicious its silence is.
 */
export class PhiAccrualDetector {
  // Exponentially weighted mean and variance of the intervals: no per-sample
  // storage or allocation (a host's view of a large cluster holds one
  // detector per host). The weight of a new interval is 1/(n+2) for the n-th
  // (a plain mean, the prior counting as two samples) until it reaches
  // 2/(window+1): about the last `window` intervals count.
  private readonly alpha: number;
  private average: number;
  private variance: number;
  /** Intervals observed (the prior excluded). */
  observed = 0;
  /** When the last heartbeat increase arrived (ms). */
  lastArrival: number;
  // failAfterMs for the last parameters it was asked with, until the next heartbeat.
  private cachedFor: PhiParameters | undefined;
  private cachedAfter = 0;

  /**
   * Starts watching at `now` (counted as an arrival). `firstIntervalMs` and
   * `firstStdDevMs` (default a quarter of it, as Akka's bootstrap) are the
   * statistics expected before any interval has been seen, so the detector
   * works from the first heartbeat; real intervals take over as they come.
   */
  constructor(now: number, firstIntervalMs: number, firstStdDevMs = firstIntervalMs / 4, window = DEFAULT_WINDOW) {
    this.alpha = 2 / (Math.max(1, window) + 1);
    this.lastArrival = now;
    this.average = firstIntervalMs;
    this.variance = firstStdDevMs * firstStdDevMs;
  }

  /** A heartbeat increase arrived at `now`. Arrivals at the same instant count once. */
  heartbeat(now: number): void {
    const interval = now - this.lastArrival;
    if (interval <= 0) return;
    const weight = Math.max(this.alpha, 1 / (this.observed + 3));
    const diff = interval - this.average;
    const increment = weight * diff;
    this.average += increment;
    this.variance = (1 - weight) * (this.variance + diff * increment);
    this.observed++;
    this.lastArrival = now;
    this.cachedFor = undefined;
  }

  /** Mean interval (ms). */
  mean(): number {
    return this.average;
  }

  /** Standard deviation of the intervals (ms). */
  stdDev(): number {
    return Math.sqrt(Math.max(0, this.variance));
  }

  /** phi of the current silence; the floors of `params` apply to the statistics. */
  phi(now: number, params: Pick<PhiParameters, "minStdDevMs" | "minMeanMs">): number {
    return phi(now - this.lastArrival, Math.max(this.mean(), params.minMeanMs ?? 0), Math.max(this.stdDev(), params.minStdDevMs, 1e-3));
  }

  /**
   * The silence after which this host is declared dead under `params`:
   * max(mean, minMeanMs) + z(threshold) * max(stdDev, minStdDevMs), clamped to [minFailMs, maxFailMs]
   * (maxFailMs until minSamples intervals have been seen).
   */
  failAfterMs(params: PhiParameters): number {
    if (params === this.cachedFor) return this.cachedAfter;
    let after = params.maxFailMs;
    if (this.observed >= (params.minSamples ?? DEFAULT_MIN_SAMPLES)) {
      const std = Math.max(this.stdDev(), params.minStdDevMs, 1e-3);
      const t = Math.max(this.mean(), params.minMeanMs ?? 0) + phiZ(params.threshold) * std;
      after = Math.min(params.maxFailMs, Math.max(params.minFailMs, t));
    }
    this.cachedFor = params;
    this.cachedAfter = after;
    return after;
  }

  /**
   * Whether the host is dead at `now`: silent maxFailMs, or silent minFailMs
   * with phi at the threshold once minSamples intervals have been seen. (phi
   * grows with the silence, so this is the silence reaching failAfterMs,
   * which is computed once per heartbeat for the same `params` object.)
   */
  isDead(now: number, params: PhiParameters): boolean {
    return now - this.lastArrival >= this.failAfterMs(params);
  }
}
