import t from "tap";
import { PhiAccrualDetector, phi, phiZ, type PhiParameters } from "../../src/membership/failure-detector.ts";

const params: PhiParameters = { threshold: 8, minStdDevMs: 100, minFailMs: 0, maxFailMs: 1e9, minSamples: 0 };

/** A detector fed `intervals` from time 0; returns it and the time of the last arrival. */
function fed(intervals: number[], first = 1000): { detector: PhiAccrualDetector; at: number } {
  const detector = new PhiAccrualDetector(0, first);
  let at = 0;
  for (const interval of intervals) detector.heartbeat((at += interval));
  return { detector, at };
}

t.test("failure-detector - phi grows with the silence and is about 0 well before the mean", async (t) => {
  t.ok(phi(0, 1000, 100) < 1e-6);
  t.ok(phi(1000, 1000, 100) > 0.2 && phi(1000, 1000, 100) < 0.4, "at the mean: -log10(1/2)");
  let previous = 0;
  for (let elapsed = 0; elapsed <= 3000; elapsed += 100) {
    const value = phi(elapsed, 1000, 200);
    t.ok(value >= previous, `monotone at ${elapsed}`);
    previous = value;
  }
  t.equal(phi(1e6, 1000, 100), Infinity, "hopeless silence");
});

t.test("failure-detector - phiZ inverts phi: phi(mean + z sd) = threshold", async (t) => {
  for (const threshold of [1, 3, 5, 8, 10, 12]) {
    const z = phiZ(threshold);
    t.ok(Math.abs(phi(1000 + z * 100, 1000, 100) - threshold) < 1e-6, `threshold ${threshold}: z = ${z.toFixed(3)}`);
  }
  t.ok(Math.abs(phiZ(8) - 5.226) < 0.001);
});

t.test("failure-detector - learns the interval statistics and judges by them", async (t) => {
  const regular = fed(Array(50).fill(1000));
  t.ok(Math.abs(regular.detector.mean() - 1000) < 20);
  t.ok(regular.detector.stdDev() < 100, "the bootstrap samples weigh little once real ones come");
  const jittery = fed(Array.from({ length: 50 }, (_, i) => (i % 2 ? 400 : 1600)));
  t.ok(jittery.detector.stdDev() > 500);
  t.ok(jittery.detector.failAfterMs(params) > regular.detector.failAfterMs(params) + 2000, "irregular heartbeats earn more patience");
  const { detector, at } = regular;
  const after = detector.failAfterMs(params);
  t.notOk(detector.isDead(at + after - 1, params));
  t.ok(detector.isDead(at + after + 1, params));
});

t.test("failure-detector - minFailMs, maxFailMs and minSamples bound the verdict", async (t) => {
  const { detector, at } = fed(Array(20).fill(1000));
  const bounded = { ...params, minFailMs: 5000, maxFailMs: 8000 };
  t.notOk(detector.isDead(at + 4999, bounded), "never before minFailMs, however high phi");
  t.ok(detector.phi(at + 4999, { minStdDevMs: 100 }) > 8);
  t.ok(detector.phi(at + 4999, { minStdDevMs: 100, minMeanMs: 4950 }) < 8, "a floor on the mean: a history of faster heartbeats is not trusted");
  t.ok(detector.isDead(at + 5000, bounded));
  const lenient = { ...params, minStdDevMs: 1e6, minFailMs: 1000, maxFailMs: 8000 };
  t.notOk(detector.isDead(at + 7999, lenient));
  t.ok(detector.isDead(at + 8000, lenient), "always at maxFailMs, whatever phi says");
  const young = fed([1000, 1000]);
  const guarded = { ...params, minFailMs: 1000, maxFailMs: 8000, minSamples: 8 };
  t.notOk(young.detector.isDead(young.at + 7999, guarded), "too few intervals: only maxFailMs applies");
  t.ok(young.detector.isDead(young.at + 8000, guarded));
  t.equal(young.detector.failAfterMs(guarded), 8000);
});

t.test("failure-detector - works from the first heartbeat on its prior, and forgets old samples", async (t) => {
  const fresh = new PhiAccrualDetector(0, 2000, 500);
  t.equal(fresh.mean(), 2000);
  t.equal(fresh.stdDev(), 500);
  t.notOk(fresh.isDead(2000, params));
  t.ok(fresh.isDead(2000 + 10 * 500, params));
  const detector = new PhiAccrualDetector(0, 1000, 250, 10);
  let at = 0;
  for (let i = 0; i < 10; i++) detector.heartbeat((at += 5000));
  t.ok(Math.abs(detector.mean() - 5000) < 500, "the prior fades as intervals come");
  for (let i = 0; i < 60; i++) detector.heartbeat((at += 100));
  t.ok(Math.abs(detector.mean() - 100) < 1, "about the last 10 intervals count, with a window of 10");
  // Exponentially weighted: the old 5 s intervals fade (to ~11 ms of deviation after 60 fast ones), not drop out.
  t.ok(detector.stdDev() < 25, "the old, slow intervals have faded from the deviation");
  for (let i = 0; i < 60; i++) detector.heartbeat((at += 100));
  t.ok(detector.stdDev() < 1, "and keep fading");
  detector.heartbeat(at);
  t.equal(detector.observed, 130, "arrivals at the same instant count once");
});
