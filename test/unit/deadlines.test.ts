import t from "tap";
import { loadComponents } from "../../src/component/loader.ts";
import { RoutingCaller } from "../../src/routing/caller.ts";
import { rejection } from "../lib/expect-error.ts";
import { gatedHandler } from "../lib/gated-handler.ts";
import { fixturePath, loadFixture, startContainer, withHandlers } from "../lib/fixture-components.ts";
import { until } from "../lib/until.ts";

const probe = await loadFixture("components-probe/probe");
const mirror = await loadFixture("components-probe/mirror");

// Timers may fire a little late on a loaded machine; a deadline must never fire early.
const SLACK_MS = 500;

t.test("deadlines - a per-call timeoutMs shorter than a slow handler is DEADLINE_EXCEEDED at the caller", async (t) => {
  const gated = gatedHandler();
  const c = await startContainer([withHandlers(probe, { "probe.Probe/Echo": gated.handler })]);
  t.teardown(() => c.close());
  const began = Date.now();
  const err = await rejection(c.caller.call("probe.Probe/Echo", { text: "slow" }, { timeoutMs: 80 }));
  const took = Date.now() - began;
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.equal(err.details.method, "probe.Probe/Echo");
  t.equal(err.details.to, c.localNodes()[0]!.id);
  t.ok(took >= 79, `not before the deadline (${took} ms)`);
  t.ok(took < 80 + SLACK_MS, `soon after it (${took} ms)`);
  t.same(gated.events, ["start slow"], "the handler was still running");
  t.equal(c.caller.inFlight, 0, "the call is no longer in flight");
  gated.release("slow");
});

t.test("deadlines - a message that waits in the queue past its deadline is never handled", async (t) => {
  const gated = gatedHandler();
  const c = await startContainer([withHandlers(probe, { "probe.Probe/Echo": gated.handler })]);
  t.teardown(() => c.close());
  const node = c.localNodes()[0]!;
  const first = c.caller.call("probe.Probe/Echo", { text: "first" });
  await gated.entered("first");
  const lateCall = rejection(c.caller.call("probe.Probe/Echo", { text: "late" }, { timeoutMs: 30 }));
  // The envelope carries the time left, not an instant, so the node times the 30 ms from when the
  // message reached it, on its own clock; and the caller's timer may fire a little before 30 ms of
  // Date.now() have passed (Node arms timers from the event loop's cached time, stale on a loaded
  // machine). So "first" is let go only once the node's deadline has surely passed as well.
  await until(() => node.getStats().queued === 1, 5000, "the late message queued behind the first", { everyMs: 1 });
  const queuedBy = Date.now();
  const late = await lateCall;
  t.equal(late.code, "DEADLINE_EXCEEDED", "the caller gave up");
  await until(() => Date.now() > queuedBy + 30, 1000, "the late message's deadline passed at the node", { everyMs: 1 });
  // Should the late message be handled after all, it must not hold the node: the events below say so.
  gated.release("late");
  gated.release("first");
  gated.release("after");
  await first;
  t.match(await c.caller.call("probe.Probe/Echo", { text: "after" }), { text: "after" });
  t.same(gated.events, ["start first", "end first", "start after", "end after"], "the late message never reached the handler");
  t.match(c.localNodes()[0]!.getStats(), { handled: 2, failed: 1 }, "the node counted it as failed");
});

t.test("deadlines - nested calls inherit the handler's deadline (ctx.deadline)", async (t) => {
  const c = await startContainer([probe, mirror]);
  t.teardown(() => c.close());
  const before = Date.now();
  const reply = (await c.caller.call("probe.Probe/Nested", { text: "x", timeoutMs: 600_000 }, { timeoutMs: 2000 })) as { deadline: number; inner: { deadline: number; from: string } };
  const outer = reply.deadline;
  const inner = reply.inner.deadline;
  t.ok(outer >= before + 2000 && outer <= Date.now() + 2000, "the outer handler's deadline is its caller's");
  t.ok(inner <= outer + 2, `a longer timeoutMs does not extend it: inner ${inner} <= outer ${outer} (+2 ms: rounding up, and the clock ticking during delivery)`);
  t.ok(inner > outer - SLACK_MS, "the inner deadline is the outer one, not a fresh shorter one");
  t.equal(reply.inner.from, c.localNodes().find((n) => n.component.name === "probe")!.id, "the nested call came from the probe node");

  const shorter = (await c.caller.call("probe.Probe/Nested", { text: "x", timeoutMs: 300 }, { timeoutMs: 60_000 })) as { deadline: number; inner: { deadline: number } };
  t.ok(shorter.inner.deadline < shorter.deadline - 50_000, "a shorter timeoutMs inside a handler is kept");
});

t.test("deadlines - a nested call to the handler's own node ends with DEADLINE_EXCEEDED", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  const began = Date.now();
  const err = await rejection(c.caller.call("probe.Probe/Nested", { method: "probe.Probe/Echo", text: "me" }, { timeoutMs: 100 }));
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.ok(Date.now() - began < 100 + SLACK_MS);
});

t.test("deadlines - a call cycle A -> B -> A ends with DEADLINE_EXCEEDED instead of hanging", async (t) => {
  const { components, errors } = await loadComponents(fixturePath("components-probe"));
  t.same(errors, []);
  const c = await startContainer(components.filter((x) => x.name.startsWith("ring-")));
  const nodes = c.localNodes();
  t.equal(nodes.length, 2);
  const began = Date.now();
  const err = await rejection(c.caller.call("ringa.RingA/Go", { count: 0 }, { timeoutMs: 150 }));
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.ok(Date.now() - began < 150 + SLACK_MS, "at the caller's deadline");
  // Closing drains both nodes: it only completes because the nested calls, too, end at the deadline.
  const closing = Date.now();
  await c.close();
  t.ok(Date.now() - closing < 150 + SLACK_MS, `both nodes came free by the deadline (close took ${Date.now() - closing} ms)`);
  t.equal(c.localNodes().length, 0);
  for (const node of nodes) {
    const stats = node.getStats();
    t.equal(stats.handled, 0, `${node.component.name}: no call in the cycle succeeded`);
    t.ok(stats.failed >= 1, `${node.component.name}: its handler ended with an error`);
  }
});

t.test("deadlines - timeoutMs must be a positive finite number: INVALID_ARGUMENT", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  for (const timeoutMs of [0, -5, Number.NaN, Infinity]) {
    const err = await rejection(c.caller.call("probe.Probe/Echo", { text: "x" }, { timeoutMs }));
    t.equal(err.code, "INVALID_ARGUMENT", `timeoutMs ${timeoutMs}`);
  }
  t.equal(c.localNodes()[0]!.getStats().handled, 0, "nothing was sent");
});

t.test("deadlines - an inherited deadline that has already passed fails without sending", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  const err = await rejection(c.caller.call("probe.Probe/Echo", { text: "x" }, { deadline: Date.now() - 1 }));
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.equal(c.localNodes()[0]!.getStats().handled, 0, "the node never saw it");
});

t.test("deadlines - the container's defaultTimeoutMs applies to calls without timeoutMs", async (t) => {
  const gated = gatedHandler();
  const { Container } = await import("../../src/container/container.ts");
  const c = new Container({ id: "short", defaultTimeoutMs: 50, logger: () => ({ debug() {}, info() {}, warn() {}, error() {} }) });
  await c.addComponent(withHandlers(probe, { "probe.Probe/Echo": gated.handler }));
  t.teardown(() => c.close());
  t.ok(c.caller instanceof RoutingCaller);
  const began = Date.now();
  t.equal((await rejection(c.caller.call("probe.Probe/Echo", { text: "slow" }))).code, "DEADLINE_EXCEEDED");
  t.ok(Date.now() - began < 50 + SLACK_MS);
  gated.release("slow");
});
