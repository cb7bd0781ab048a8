import t, { type Test } from "tap";
import type { Context } from "../../src/component/context.ts";
import { rejection } from "../lib/expect-error.ts";
import { gatedHandler } from "../lib/gated-handler.ts";
import { loadFixture, startContainer, withHandlers } from "../lib/fixture-components.ts";

const probe = await loadFixture("components-probe/probe");
const mirror = await loadFixture("components-probe/mirror");
const tiny = await loadFixture("components-limits/tiny-queue");

/** Asserts that the start/end events show one handler at a time, in `order`. */
function assertSerial(t: Test, events: string[], order: string[]) {
  t.same(
    events,
    order.flatMap((k) => [`start ${k}`, `end ${k}`]),
    "each start follows the previous end, in arrival order",
  );
}

t.test("queue - five overlapping async calls are handled one at a time in arrival order", async (t) => {
  const gated = gatedHandler();
  const c = await startContainer([withHandlers(probe, { "probe.Probe/Echo": gated.handler })]);
  t.teardown(() => c.close());
  const keys = ["a", "b", "c", "d", "e"];
  const calls = keys.map((text) => c.caller.call("probe.Probe/Echo", { text }));
  await gated.entered("a");
  // Release everything at once, last first: a node that ran handlers side by side would now interleave them.
  for (const key of [...keys].reverse()) gated.release(key);
  const replies = (await Promise.all(calls)) as { text: string }[];
  t.same(
    replies.map((r) => r.text),
    keys,
    "each caller got its own answer",
  );
  assertSerial(t, gated.events, keys);
});

t.test("queue - a handler awaiting a nested call holds its node; the next message waits", async (t) => {
  const events: string[] = [];
  const component = withHandlers(probe, {
    "probe.Probe/Echo": async (request: { text: string }, ctx: Context) => {
      events.push(`start ${request.text}`);
      await ctx.call("mirror.Mirror/Echo", { text: request.text });
      await ctx.call("mirror.Mirror/Echo", { text: request.text });
      events.push(`end ${request.text}`);
      return { text: request.text };
    },
  });
  const c = await startContainer([component, mirror]);
  t.teardown(() => c.close());
  const keys = ["1", "2", "3", "4", "5"];
  await Promise.all(keys.map((text) => c.caller.call("probe.Probe/Echo", { text })));
  assertSerial(t, events, keys);
});

t.test("queue - synchronous and asynchronous handlers interleave in arrival order", async (t) => {
  const events: string[] = [];
  const component = withHandlers(probe, {
    "probe.Probe/Echo": async (request: { text: string }) => {
      events.push(`start ${request.text}`);
      await new Promise<void>((r) => setImmediate(r));
      events.push(`end ${request.text}`);
      return {};
    },
    "probe.Probe/Log": (_: unknown) => {
      events.push("start log", "end log");
      return {};
    },
  });
  const c = await startContainer([component]);
  t.teardown(() => c.close());
  await Promise.all([
    c.caller.call("probe.Probe/Echo", { text: "x" }),
    c.caller.call("probe.Probe/Log", {}),
    c.caller.call("probe.Probe/Echo", { text: "y" }),
    c.caller.call("probe.Probe/Log", {}),
  ]);
  assertSerial(t, events, ["x", "log", "y", "log"]);
});

t.test("queue - a full queue (manifest limits.queue) is RESOURCE_EXHAUSTED at the caller", async (t) => {
  t.equal(tiny.manifest.limits.queue, 2, "the fixture's manifest sets the limit");
  const gated = gatedHandler();
  const c = await startContainer([withHandlers(tiny, { "tiny.Tiny/Work": gated.handler })]);
  t.teardown(() => c.close());
  const running = c.caller.call("tiny.Tiny/Work", { name: "running" });
  await gated.entered("running");
  const waiting = [c.caller.call("tiny.Tiny/Work", { name: "w1" }), c.caller.call("tiny.Tiny/Work", { name: "w2" })];
  const err = await rejection(c.caller.call("tiny.Tiny/Work", { name: "one too many" }));
  t.equal(err.code, "RESOURCE_EXHAUSTED");
  t.equal(err.details.capacity, "2");
  t.match(err.origin, /^tiny-queue-/, "the node said so");
  for (const key of ["running", "w1", "w2"]) gated.release(key);
  const answered = (await Promise.all([running, ...waiting])) as { name: string }[];
  t.same(
    answered.map((j) => j.name),
    ["running", "w1", "w2"],
    "the accepted ones are all answered",
  );
  t.notOk(gated.events.includes("start one too many"), "the refused one never ran");
  gated.release("room again");
  t.same(await c.caller.call("tiny.Tiny/Work", { name: "room again" }), { name: "room again" }, "room again once the queue drained");
});
