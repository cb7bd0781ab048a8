import t from "tap";
import lifecyclePlugin from "../../src/governor/plugins/lifecycle.ts";
import type { ChildView, ComponentView, GovernorSettings, HostView, LifecycleStrategy } from "../../src/governor/strategy.ts";

const settings = (): GovernorSettings => ({ idleMs: 60_000, queueWaitMs: 200, queueLength: 32, sustainMs: 1_000 });

const child = (pid: number, over: Partial<ChildView> = {}): ChildView => ({
  pid,
  component: "greeter",
  phase: "ready",
  startedAt: 0,
  lastPongAt: 0,
  missedPongs: 0,
  handled: 0,
  queued: 0,
  capacity: 100,
  queueWaitMs: 0,
  idleMs: 0,
  restarts: 0,
  ...over,
});

const component = (children: ChildView[], over: Partial<ComponentView> = {}): ComponentView => ({
  name: "greeter",
  min: 1,
  max: 4,
  children,
  capacityRequests: 0,
  ...over,
});

const host = (now: number, over: Partial<HostView> = {}): HostView => ({ capacity: 16, used: 2, now, ...over });

const busy = (pids = [1, 2]) => pids.map((pid) => child(pid, { queueWaitMs: 350 }));

async function create(s: GovernorSettings = settings(), options: Record<string, unknown> = {}): Promise<LifecycleStrategy> {
  return lifecyclePlugin.create(options, s);
}

t.test("lifecycle - the module is the default-lifecycle plugin", async (t) => {
  t.equal(lifecyclePlugin.kind, "lifecycle");
  t.equal(lifecyclePlugin.name, "default-lifecycle");
  t.equal((await create()).name, "default-lifecycle");
});

t.test("lifecycle - grows only after the queue wait held on every ready node for sustainMs", async (t) => {
  const s = await create();
  t.same(s.decide(host(10_000), [component(busy())]), [], "condition starts holding");
  t.same(s.decide(host(10_500), [component(busy())]), [], "held 500 ms");
  t.same(s.decide(host(10_999), [component(busy())]), [], "held 999 ms");
  const grown = s.decide(host(11_000), [component(busy())]);
  t.same(grown, [{ action: "grow", component: "greeter", reason: "queue wait 350 ms > 200 ms for 1000 ms on all 2 nodes" }]);
});

t.test("lifecycle - queue length alone also counts, and the reason says so", async (t) => {
  const s = await create();
  const long = () => [child(1, { queued: 40 }), child(2, { queued: 50 })];
  s.decide(host(0), [component(long())]);
  t.same(s.decide(host(1_000), [component(long())]), [{ action: "grow", component: "greeter", reason: "queue length 40 > 32 for 1000 ms on all 2 nodes" }]);
  const mixed = () => [child(1, { queued: 40 }), child(2, { queueWaitMs: 300 })];
  const m = await create();
  m.decide(host(0), [component(mixed())]);
  const [d] = m.decide(host(1_000), [component(mixed())]);
  t.equal(d?.action, "grow");
  t.match(d?.reason, /queue wait > 200 ms or queue length > 32 for 1000 ms on all 2 nodes/);
});

t.test("lifecycle - one node under its limits means no grow", async (t) => {
  const s = await create();
  const some = () => [child(1, { queueWaitMs: 500 }), child(2, { queueWaitMs: 100, queued: 3 })];
  s.decide(host(0), [component(some())]);
  t.same(s.decide(host(5_000), [component(some())]), []);
});

t.test("lifecycle - a break resets the sustain clock", async (t) => {
  const s = await create();
  s.decide(host(0), [component(busy())]);
  s.decide(host(800), [component(busy())]);
  t.same(s.decide(host(900), [component([child(1, { queueWaitMs: 350 }), child(2, { queueWaitMs: 50 })])]), [], "the break");
  t.same(s.decide(host(1_000), [component(busy())]), [], "holds again from 1000");
  t.same(s.decide(host(1_900), [component(busy())]), [], "900 ms since the break");
  t.equal(s.decide(host(2_000), [component(busy())])[0]?.action, "grow", "1000 ms since the break");
});

t.test("lifecycle - a change in the set of ready nodes resets the clock; after a grow the next one needs its own sustain", async (t) => {
  const s = await create();
  s.decide(host(0), [component(busy([1, 2]))]);
  t.same(s.decide(host(900), [component(busy([1, 3]))]), [], "node 2 replaced by node 3");
  t.same(s.decide(host(1_800), [component(busy([1, 3]))]), []);
  t.equal(s.decide(host(1_900), [component(busy([1, 3]))])[0]?.action, "grow");
  t.same(s.decide(host(2_000), [component([...busy([1, 3]), child(4, { phase: "starting" })])]), [], "starting: nothing");
  t.same(s.decide(host(2_500), [component(busy([1, 3, 4]))]), [], "new node ready: clock restarts");
  t.same(s.decide(host(3_400), [component(busy([1, 3, 4]))]), []);
  const [d] = s.decide(host(3_500), [component(busy([1, 3, 4]))]);
  t.equal(d?.reason, "queue wait 350 ms > 200 ms for 1000 ms on all 3 nodes");
});

t.test("lifecycle - a capacity request grows at once", async (t) => {
  const s = await create();
  const [d] = s.decide(host(0), [component([child(1)], { capacityRequests: 3 })]);
  t.equal(d?.action, "grow");
  t.equal(d?.component, "greeter");
  t.match(d?.reason, /3 capacity requests/);
  const [zero] = (await create()).decide(host(0), [component([], { min: 0, capacityRequests: 1 })]);
  t.equal(zero?.action, "grow", "also from zero nodes");
  t.same((await create()).decide(host(0), [component([], { min: 0 })]), [], "no nodes and no requests: nothing");
});

t.test("lifecycle - no grow at max, at host capacity, or while a node is starting, holding or draining", async (t) => {
  const s = await create(settings(), { sustainMs: 0 });
  t.same(s.decide(host(0), [component(busy(), { max: 2, capacityRequests: 5 })]), [], "at max");
  t.same(s.decide(host(0, { used: 16 }), [component(busy(), { capacityRequests: 5 })]), [], "at host capacity");
  for (const phase of ["starting", "holding", "draining"] as const) {
    t.same(s.decide(host(0), [component([...busy(), child(9, { phase })], { capacityRequests: 5 })]), [], phase);
  }
  t.same(s.decide(host(0), [component(busy(), { failed: "cannot start", capacityRequests: 5 })]), [], "failed component");
  t.equal(s.decide(host(0), [component(busy())]).length, 1, "otherwise it grows");
});

t.test("lifecycle - grows of one round stay within the host's capacity", async (t) => {
  const s = await create();
  const a = component([child(1)], { name: "a", capacityRequests: 1 });
  const b = component([child(2)], { name: "b", capacityRequests: 1 });
  const c = component([child(3)], { name: "c", capacityRequests: 1 });
  t.same(
    s.decide(host(0, { capacity: 5, used: 3 }), [a, b, c]).map((d) => d.component),
    ["a", "b"],
  );
});

t.test("lifecycle - shrinks the most idle node, one per component, never below min", async (t) => {
  const s = await create();
  const idle = [child(1, { idleMs: 61_000 }), child(2, { idleMs: 90_000 }), child(3, { idleMs: 5_000 })];
  t.same(s.decide(host(0), [component(idle, { min: 1 })]), [{ action: "shrink", component: "greeter", pid: 2, reason: "idle 90000 ms > 60000 ms" }]);
  t.same(s.decide(host(0), [component(idle.slice(0, 1), { min: 1 })]), [], "at min");
  t.same(s.decide(host(0), [component(idle.slice(0, 2), { min: 2 })]), [], "at min (2)");
  t.same(s.decide(host(0), [component([child(1, { idleMs: 60_000 }), child(2, { idleMs: 59_000 })], { min: 0 })]), [], "not idle long enough");
  t.same(s.decide(host(0), [component([...idle, child(9, { phase: "draining" })], { min: 1 })]), [], "not while one drains");
  const two = s.decide(host(0), [component(idle, { name: "a", min: 0 }), component([child(7, { idleMs: 61_000 })], { name: "b", min: 0 })]);
  t.same(
    two.map((d) => [d.component, d.action === "shrink" ? d.pid : 0, d.reason]),
    [
      ["a", 2, "idle 90000 ms > 60000 ms"],
      ["b", 7, "idle 61000 ms > 60000 ms"],
    ],
  );
});

t.test("lifecycle - settings are read live from the object the governor mutates", async (t) => {
  const live = settings();
  const s = await create(live);
  const waiting = () => [child(1, { queueWaitMs: 150 })];
  s.decide(host(0), [component(waiting())]);
  t.same(s.decide(host(5_000), [component(waiting())]), [], "150 ms is under 200 ms");
  live.queueWaitMs = 100;
  live.sustainMs = 500;
  t.same(s.decide(host(5_100), [component(waiting())]), [], "now over: the clock starts");
  t.same(s.decide(host(5_600), [component(waiting())]), [{ action: "grow", component: "greeter", reason: "queue wait 150 ms > 100 ms for 500 ms on all 1 node" }]);

  const idle = [child(1, { idleMs: 30_000 }), child(2)];
  t.same(s.decide(host(6_000), [component(idle)]), []);
  live.idleMs = 20_000;
  t.same(s.decide(host(6_000), [component(idle)]), [{ action: "shrink", component: "greeter", pid: 1, reason: "idle 30000 ms > 20000 ms" }]);
});

t.test("lifecycle - options pin thresholds over the settings", async (t) => {
  const live = settings();
  const s = await create(live, { queueWaitMs: 1_000, idleMs: 10 });
  const waiting = () => [child(1, { queueWaitMs: 500 }), child(2, { idleMs: 11 })];
  s.decide(host(0), [component(waiting())]);
  t.same(s.decide(host(5_000), [component(waiting())]), [{ action: "shrink", component: "greeter", pid: 2, reason: "idle 11 ms > 10 ms" }]);
  live.queueWaitMs = 1;
  live.idleMs = 1;
  t.same(s.decide(host(6_000), [component(waiting())])[0]?.reason, "idle 11 ms > 10 ms", "pinned values ignore the live settings");
});

t.test("lifecycle - bad options throw naming the option", async (t) => {
  for (const [options, pattern] of [
    [{ queueWaitMs: "200" }, /queueWaitMs.*non-negative finite number.*"200"/],
    [{ queueLength: -1 }, /queueLength/],
    [{ sustainMs: Number.NaN }, /sustainMs/],
    [{ idleMs: Infinity }, /idleMs/],
    [{ idleMS: 5 }, /unknown option "idleMS"/],
  ] as const) {
    t.throws(() => lifecyclePlugin.create(options, settings()), pattern, JSON.stringify(options));
  }
});
