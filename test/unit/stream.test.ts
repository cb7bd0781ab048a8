// STREAM calls in one process (the direct transport, as in dev mode): the
// producer's node and the consumer's caller, flow control, every kind of end,
// and that nothing of a stream outlives it.
import t, { type Test } from "tap";
import type { Context, Handler } from "../../src/component/context.ts";
import type { Component } from "../../src/component/loader.ts";
import { MAX_STREAMS_PER_CONNECTION, type ComponentNode } from "../../src/component/node.ts";
import type { Container } from "../../src/container/container.ts";
import { forModes } from "../../src/component/interceptor.ts";
import { Container as ContainerClass } from "../../src/container/container.ts";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { Mode } from "../../src/wire/schema.ts";
import { deferred } from "../lib/deferred.ts";
import { rejection } from "../lib/expect-error.ts";
import { loadFixture, startContainer, withHandlers } from "../lib/fixture-components.ts";
import { silentLogger } from "../lib/recording-logger.ts";

const streamer = await loadFixture("components-stream/streamer");
const COUNT = "streamer.Streamer/Count";

interface Stats {
  computed: number;
  started: number;
  finalized: number;
}

const statsOf = async (c: Container) => (await c.caller.call("streamer.Streamer/Stats", {})) as Stats;

/** Every item of a stream, or the error it ended with (and the items before it). */
async function drain(stream: AsyncIterable<unknown>): Promise<{ items: unknown[]; error?: NodeBinError }> {
  const items: unknown[] = [];
  try {
    for await (const item of stream) items.push(item);
    return { items };
  } catch (err) {
    return { items, error: NodeBinError.from(err) };
  }
}

/** Resolves once the node has no message running (its stream was returned); bounded. */
async function idle(node: ComponentNode): Promise<void> {
  const until = Date.now() + 5000;
  while (node.getStats().streams > 0 || node.streamResources.timers > 0) {
    if (Date.now() > until) throw new Error(`the node still holds ${JSON.stringify(node.streamResources)}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Nothing of any stream is left, on either side. */
async function nothingHeld(t: Test, c: Container, what: string): Promise<void> {
  for (const node of c.localNodes()) {
    await idle(node);
    t.same(node.streamResources, { streams: 0, connections: 0, timers: 0 }, `${what}: the producer holds nothing`);
  }
  t.same(c.caller.streamResources, { streams: 0, timers: 0 }, `${what}: the consumer holds nothing`);
  t.equal(c.caller.inFlight, 0, `${what}: nothing in flight`);
}

t.test("stream - items arrive in order and the stream ends; nothing is held after", async (t) => {
  const c = await startContainer([streamer]);
  t.teardown(() => c.close());
  const { items, error } = await drain(c.caller.stream(COUNT, { count: 50, payload: "p" }, { window: 4 }));
  t.equal(error, undefined);
  t.same(
    items.map((i) => (i as { n: number }).n),
    Array.from({ length: 50 }, (_, i) => i + 1),
    "every item, in order",
  );
  t.match(items[0], { payload: "p" }, "decoded items");
  t.match(await statsOf(c), { computed: 50, started: 1, finalized: 1 });
  t.match(c.localNodes()[0]!.getStats(), { handled: 2, failed: 0 });
  await nothingHeld(t, c, "after a normal end");
});

t.test("stream - a method declared STREAM through (nodebin.mode) streams too", async (t) => {
  const c = await startContainer([streamer]);
  t.teardown(() => c.close());
  const { items } = await drain(c.caller.stream("streamer.Streamer/Tagged", { count: 3 }));
  t.equal(items.length, 3);
});

t.test("stream - lazy: a generator of 1,000,000 items read 3 at a time computes about 3 plus the window", async (t) => {
  for (const window of [1, 16, 256]) {
    const c = await startContainer([streamer]);
    let n = 0;
    for await (const _ of c.caller.stream(COUNT, { count: 1_000_000 }, { window })) if (++n === 3) break;
    const stats = await statsOf(c);
    t.ok(stats.computed <= 3 + window, `window ${window}: ${stats.computed} items computed (at most ${3 + window})`);
    t.ok(stats.computed >= 3, "at least those read");
    t.equal(stats.finalized, 1, "the generator was returned: its finally ran");
    await nothingHeld(t, c, `window ${window}, after the consumer left`);
    await c.close();
  }
});

t.test("stream - a consumer that takes nothing gets at most its window, and the producer waits (bounded memory)", async (t) => {
  const c = await startContainer([streamer]);
  t.teardown(() => c.close());
  const stream = c.caller.stream(COUNT, { count: 0 }, { window: 8 }) as AsyncIterableIterator<unknown> & { buffered: number };
  await stream.next();
  // The producer runs ahead of the consumer by its credit, then stops.
  const until = Date.now() + 2000;
  while (stream.buffered < 7 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 50));
  t.equal(stream.buffered, 7, "the window less the one taken");
  const node = c.localNodes()[0]!;
  t.equal(node.getStats().streams, 1, "the stream is open, waiting for credit");
  await stream.return!();
  await nothingHeld(t, c, "after return()");
});

t.test("stream - a stream holds its node: a call made meanwhile waits in the queue and is served once the stream ends", async (t) => {
  const gate = deferred<void>();
  const hold: Handler = async function* () {
    yield { n: 1 };
    await gate.promise;
    yield { n: 2 };
  };
  const c = await startContainer([withHandlers(streamer, { [COUNT]: hold })]);
  t.teardown(() => c.close());
  const stream = c.caller.stream(COUNT, {});
  t.match((await stream.next()).value, { n: 1 });
  let answered = false;
  const echo = c.caller.call("streamer.Streamer/Echo", { n: 7 }).then((r) => ((answered = true), r));
  await new Promise((r) => setTimeout(r, 30));
  const node = c.localNodes()[0]!;
  t.equal(answered, false, "the call waits behind the stream");
  t.equal(node.getStats().queued, 1, "queued");
  t.ok(node.getStats().queueWaitMs >= 20, `and its queue wait grows (${node.getStats().queueWaitMs} ms): what the governor grows a component by`);
  gate.resolve();
  t.match((await stream.next()).value, { n: 2 });
  t.equal((await stream.next()).done, true);
  t.match(await echo, { n: 7 }, "then served");
});

t.test("stream - leaving the loop returns the generator at once and the node serves its queue again", async (t) => {
  const c = await startContainer([streamer]);
  t.teardown(() => c.close());
  const stream = c.caller.stream(COUNT, { count: 0 }, { window: 2 });
  await stream.next();
  const echo = c.caller.call("streamer.Streamer/Echo", { n: 1 });
  await stream.return!();
  t.match(await echo, { n: 1 }, "the queued call is served");
  t.match(await statsOf(c), { finalized: 1 });
  await nothingHeld(t, c, "after the consumer left");
});

t.test("stream - a stream cancelled while queued never runs its handler", async (t) => {
  const gate = deferred<void>();
  let ran = 0;
  const c = await startContainer([
    withHandlers(streamer, {
      "streamer.Streamer/Echo": async (r: { n: number }) => {
        await gate.promise;
        return r;
      },
      [COUNT]: async function* () {
        ran++;
        yield { n: 1 };
      },
    }),
  ]);
  t.teardown(() => c.close());
  const busy = c.caller.call("streamer.Streamer/Echo", { n: 1 });
  const stream = c.caller.stream(COUNT, {});
  const first = stream.next();
  await new Promise((r) => setTimeout(r, 10));
  t.equal(c.localNodes()[0]!.getStats().queued, 1, "the stream waits for its turn");
  await stream.return!();
  t.same(await first, { value: undefined, done: true }, "the pending next() ends");
  gate.resolve();
  await busy;
  await nothingHeld(t, c, "after a cancel in the queue");
  t.equal(ran, 0, "its handler never ran");
});

t.test("stream - each item is checked: a bad one ends the stream with INTERNAL naming the field", async (t) => {
  const c = await startContainer([streamer]);
  t.teardown(() => c.close());
  const { items, error } = await drain(c.caller.stream(COUNT, { count: 10, badAt: 3 }));
  t.equal(items.length, 2, "the items before it arrive");
  t.equal(error?.code, "INTERNAL");
  t.equal(error?.details.field, "n");
  t.match(error?.message, /item 3 of streamer\.Streamer\/Count/);
  t.match(await statsOf(c), { finalized: 1 });
  await nothingHeld(t, c, "after a bad item");
});

t.test("stream - a generator that throws ends the stream with its error, after the items before it", async (t) => {
  const c = await startContainer([streamer]);
  t.teardown(() => c.close());
  const { items, error } = await drain(c.caller.stream(COUNT, { count: 10, failAt: 4 }));
  t.equal(items.length, 3);
  t.equal(error?.code, "ABORTED", "a NodeBinError keeps its code");
  t.same(error?.details, { at: "4" });
  t.match(c.localNodes()[0]!.getStats(), { failed: 1 });
  await nothingHeld(t, c, "after a throw");
});

t.test("stream - a handler that returns no iterable, or throws at once, is INTERNAL", async (t) => {
  const c = await startContainer([withHandlers(streamer, { [COUNT]: () => 42, "streamer.Streamer/Tagged": () => { throw new Error("boom"); } })]);
  t.teardown(() => c.close());
  const none = await drain(c.caller.stream(COUNT, {}));
  t.equal(none.error?.code, "INTERNAL");
  t.match(none.error?.message, /not an AsyncIterable/);
  const threw = await drain(c.caller.stream("streamer.Streamer/Tagged", {}));
  t.equal(threw.error?.code, "INTERNAL");
  t.match(threw.error?.message, /boom/);
  await nothingHeld(t, c, "after refused handlers");
});

t.test("stream - a plain Iterable and a function returning an AsyncIterable are handlers too", async (t) => {
  const c = await startContainer([
    withHandlers(streamer, {
      [COUNT]: () => [{ n: 1 }, { n: 2 }],
      "streamer.Streamer/Tagged": async (_r: unknown, ctx: Context) => ({
        async *[Symbol.asyncIterator]() {
          yield { n: 1, nodeId: ctx.nodeId };
        },
      }),
    }),
  ]);
  t.teardown(() => c.close());
  t.equal((await drain(c.caller.stream(COUNT, {}))).items.length, 2);
  t.equal((await drain(c.caller.stream("streamer.Streamer/Tagged", {}))).items.length, 1);
});

t.test("stream - the call's deadline covers the whole stream and the error names it; the generator is returned", async (t) => {
  const c = await startContainer([streamer]);
  t.teardown(() => c.close());
  const started = Date.now();
  const { items, error } = await drain(c.caller.stream(COUNT, { count: 0, intervalMs: 20 }, { timeoutMs: 200 }));
  t.equal(error?.code, "DEADLINE_EXCEEDED");
  t.equal(error?.details.limit, "deadline");
  t.match(error?.message, /deadline \(timeoutMs 200\)/);
  t.ok(items.length >= 3, `items until then (${items.length})`);
  t.ok(Date.now() - started < 1000, "ended at the deadline");
  await nothingHeld(t, c, "after the deadline");
  t.match(await statsOf(c), { finalized: 1 });
});

t.test("stream - a consumer that grants no credit for limits.streamIdleMs ends the stream (DEADLINE_EXCEEDED naming the limit)", async (t) => {
  const c = await startContainer([withHandlers(streamer, {}, { limits: { streamIdleMs: 100 } })]);
  t.teardown(() => c.close());
  const stream = c.caller.stream(COUNT, { count: 0 }, { window: 2 });
  await stream.next();
  const echo = c.caller.call("streamer.Streamer/Echo", { n: 3 });
  // The consumer takes nothing more: the producer, out of credit, waits 100 ms and ends the stream.
  t.match(await echo, { n: 3 }, "the node serves its queue once the idle stream ended");
  t.match(await statsOf(c), { finalized: 1 });
  const rest = await drain(stream);
  t.ok(rest.items.length >= 1 && rest.items.length <= 2, `the items already sent are still there (${rest.items.length}: the window, and the credit the first take granted)`);
  const err = rest.error!;
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.equal(err.details.limit, "streamIdleMs");
  t.match(err.message, /limits\.streamIdleMs/);
  await nothingHeld(t, c, "after the idle limit");
});

t.test("stream - ctx.stream inside a handler: the nested stream, its early end and its deadline", async (t) => {
  const c = await startContainer([streamer]);
  t.teardown(() => c.close());
  // Sum streams from the same component: a second node serves it (one node holds the other's call).
  await c.addComponent(streamer);
  t.same(await c.caller.call("streamer.Streamer/Sum", { count: 10 }), { sum: 55, items: 10 });
  t.same(await c.caller.call("streamer.Streamer/Sum", { count: 0, stopAfter: 4, window: 1 }), { sum: 10, items: 4 }, "a nested consumer that stops early");
  await nothingHeld(t, c, "after nested streams");
});

t.test("stream - the window is checked", async (t) => {
  const c = await startContainer([streamer]);
  t.teardown(() => c.close());
  for (const window of [0, -1, 1.5, 5000]) {
    const err = await rejection(c.caller.stream(COUNT, {}, { window }).next());
    t.equal(err.code, "INVALID_ARGUMENT", `window ${window}`);
  }
  await nothingHeld(t, c, "after refused windows");
});

/** A container whose only node is `component`'s, and a hand that speaks raw envelopes to it as connection `connection`. */
async function byHand(component: Component, connection = "hand-connection") {
  const c = await startContainer([component]);
  const node = c.localNodes()[0]!;
  const frames: Envelope[] = [];
  const reply = (frame: Uint8Array) => void frames.push(decodeEnvelope(frame) as Envelope);
  const send = (fields: Partial<Envelope>, conn = connection) => node.receive(envelope({ id: 1, from: "hand", to: node.id, method: COUNT, mode: Mode.STREAM, ...fields }), { reply, kind: "network", connection: conn });
  const request = (fields: Partial<Envelope> = {}, req: unknown = { count: 0 }, conn = connection) =>
    send({ kind: Kind.REQUEST, value: encodeMessage(component.schema.methods.get(COUNT)!.requestType, req, "test"), deadlineMs: 10_000, ...fields }, conn);
  const until = async (pred: () => boolean) => {
    const end = Date.now() + 3000;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out; frames: ${frames.map((f) => f.kind).join(",")}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  };
  return { c, node, frames, send, request, until };
}

t.test("stream - the producer sends only against credit, on the connection the request came on", async (t) => {
  const h = await byHand(streamer);
  t.teardown(() => h.c.close());
  h.request({ credit: 3 });
  await h.until(() => h.frames.length === 3);
  await new Promise((r) => setTimeout(r, 30));
  t.equal(h.frames.length, 3, "three items for a window of three, then it waits");
  t.same(
    h.frames.map((f) => [f.kind, f.id, f.to]),
    [
      [Kind.STREAM_ITEM, 1, "hand"],
      [Kind.STREAM_ITEM, 1, "hand"],
      [Kind.STREAM_ITEM, 1, "hand"],
    ],
  );
  h.send({ kind: Kind.CREDIT, credit: 2 });
  await h.until(() => h.frames.length === 5);
  h.send({ kind: Kind.CANCEL });
  await h.until(() => h.frames.length === 6);
  t.equal(h.frames[5]!.kind, Kind.STREAM_END, "a CANCEL is acknowledged with a STREAM_END");
  t.equal(NodeBinError.fromWire(h.frames[5]!.error!).code, "CANCELLED");
  await idle(h.node);
  t.same(h.node.streamResources, { streams: 0, connections: 0, timers: 0 });
});

t.test("stream - credit and CANCEL frames from another connection, or for unknown ids, are counted and dropped", async (t) => {
  const h = await byHand(streamer);
  t.teardown(() => h.c.close());
  h.request({ credit: 1 });
  await h.until(() => h.frames.length === 1);
  h.send({ kind: Kind.CANCEL }, "another-connection");
  h.send({ kind: Kind.CREDIT, credit: 100 }, "another-connection");
  h.send({ kind: Kind.CANCEL, id: 2 });
  h.send({ kind: Kind.CREDIT, credit: 5, from: "someone-else" });
  await new Promise((r) => setTimeout(r, 30));
  t.equal(h.node.getStats().streamFramesDropped, 4, "four frames matched no stream of theirs");
  t.equal(h.frames.length, 1, "the stream neither got credit nor ended");
  h.send({ kind: Kind.CANCEL });
  await h.until(() => h.frames.length === 2);
  await idle(h.node);
  h.send({ kind: Kind.CANCEL });
  t.equal(h.node.getStats().streamFramesDropped, 5, "a CANCEL after the end is dropped too");
});

t.test("stream - a closed connection ends its streams untold and returns their generators", async (t) => {
  const h = await byHand(streamer);
  t.teardown(() => h.c.close());
  h.request({ credit: 2 });
  await h.until(() => h.frames.length === 2);
  h.node.connectionClosed("some-other-connection");
  t.equal(h.node.getStats().streams, 1, "another connection's close changes nothing");
  h.node.connectionClosed("hand-connection");
  await idle(h.node);
  t.equal(h.frames.length, 2, "nothing sent to a closed connection");
  t.match(await statsOf(h.c), { finalized: 1 });
  t.same(h.node.streamResources, { streams: 0, connections: 0, timers: 0 });
});

t.test(`stream - at most ${MAX_STREAMS_PER_CONNECTION} streams per connection at a node; past it RESOURCE_EXHAUSTED, counted`, async (t) => {
  const h = await byHand(streamer);
  t.teardown(() => h.c.close());
  for (let id = 1; id <= MAX_STREAMS_PER_CONNECTION + 1; id++) h.request({ id, credit: 1 });
  await h.until(() => h.frames.some((f) => f.kind === Kind.RESPONSE));
  const refusal = h.frames.find((f) => f.kind === Kind.RESPONSE)!;
  t.equal(refusal.id, MAX_STREAMS_PER_CONNECTION + 1);
  t.equal(NodeBinError.fromWire(refusal.error!).code, "RESOURCE_EXHAUSTED");
  t.match(h.node.getStats(), { streamsRefused: 1, streams: MAX_STREAMS_PER_CONNECTION });
  h.request({ id: 1000, credit: 1 }, { count: 1 }, "second-connection");
  t.equal(h.node.getStats().streams, MAX_STREAMS_PER_CONNECTION + 1, "another connection has its own bound");
  h.request({ id: 1, credit: 1 });
  t.equal(h.node.getStats().streamsRefused, 1, "a duplicate id is refused, not counted as past the bound");
  h.node.connectionClosed("hand-connection");
  h.node.connectionClosed("second-connection");
  await idle(h.node);
  t.same(h.node.streamResources, { streams: 0, connections: 0, timers: 0 });
});

t.test("stream - a producer sending past its credit ends the consumer's stream (RESOURCE_EXHAUSTED), bounded", async (t) => {
  // A hostile producer, hand-made: it answers the request with more items than the window.
  const c = new ContainerClass({ id: "consumer", logger: () => silentLogger });
  t.teardown(() => c.close());
  await c.addComponent(streamer);
  const node = c.localNodes()[0]!;
  c.direct.detach(node.id);
  const Item = streamer.schema.methods.get(COUNT)!.responseType;
  c.direct.attach(node.id, (env) => {
    if (env.kind !== Kind.REQUEST) return;
    for (let n = 1; n <= 10; n++) c.direct.deliver(env.from, encodeEnvelope(envelope({ id: env.id, kind: Kind.STREAM_ITEM, mode: Mode.STREAM, from: node.id, to: env.from, method: COUNT, value: encodeMessage(Item, { n }, "x") })));
  });
  const stream = c.caller.stream(COUNT, {}, { window: 4 }) as AsyncIterableIterator<unknown> & { buffered: number };
  const { items, error } = await drain(stream);
  t.equal(error?.code, "RESOURCE_EXHAUSTED");
  t.equal(error?.details.limit, "window");
  t.ok(items.length <= 4, `no more than the window was kept (${items.length})`);
  t.same(c.caller.streamResources, { streams: 0, timers: 0 });
  c.direct.deliver(c.caller.id, encodeEnvelope(envelope({ id: 12345, kind: Kind.STREAM_ITEM, mode: Mode.STREAM, from: node.id, to: c.caller.id, method: COUNT })));
  c.direct.deliver(c.caller.id, encodeEnvelope(envelope({ id: 12346, kind: Kind.STREAM_END, mode: Mode.STREAM, from: node.id, to: c.caller.id, method: COUNT })));
  t.ok(c.caller.unknownStreamFrames >= 2, "items and ends for no open stream are counted and dropped");
  t.ok(c.streamRefusals.unknownStreamFrames >= 2, "and reported by the process");
});

t.test("stream - a node that drains ends its streams: a queued one is refused unhandled and goes to another node", async (t) => {
  const gate = deferred<void>();
  const c = await startContainer([
    withHandlers(streamer, {
      [COUNT]: async function* (_r: unknown, ctx: Context) {
        yield { n: 1, nodeId: ctx.nodeId };
        await gate.promise;
        yield { n: 2, nodeId: ctx.nodeId };
      },
    }),
  ]);
  t.teardown(() => c.close());
  const [first] = c.localNodes();
  const running = c.caller.stream(COUNT, {});
  t.match((await running.next()).value, { n: 1, nodeId: first!.id });
  const queued = c.caller.stream(COUNT, {});
  const queuedFirst = queued.next();
  await new Promise((r) => setTimeout(r, 10));
  const [second] = await c.addComponent(withHandlers(streamer, { [COUNT]: async function* (_r: unknown, ctx: Context) { yield { n: 1, nodeId: ctx.nodeId }; } }));
  const closing = c.removeNode(first!.id);
  const err = await rejection(running.next());
  t.equal(err.code, "UNAVAILABLE", "the running stream ends: the node stops serving");
  t.match(err.message, /mid-stream/);
  t.match((await queuedFirst).value, { nodeId: second!.id }, "the queued one was sent to the other node");
  gate.resolve();
  await closing;
  await drain(queued);
  await nothingHeld(t, c, "after the drain");
});

t.test("stream - inbound and outbound interceptors see a stream as one call, from its request to its end", async (t) => {
  const seen: string[] = [];
  const c = new ContainerClass({
    id: "intercepted",
    logger: () => silentLogger,
    interceptors: {
      inbound: [forModes([Mode.STREAM], (next) => async (call) => {
        seen.push(`in start ${call.method}`);
        try {
          await next(call);
          seen.push("in end OK");
        } catch (err) {
          seen.push(`in end ${(err as NodeBinError).code}`);
          throw err;
        }
      })],
      outbound: [(next) => async (call) => {
        seen.push(`out start ${call.mode}`);
        call.meta.trace = "t-1";
        try {
          return await next(call);
        } finally {
          seen.push("out end");
        }
      }],
    },
  });
  t.teardown(() => c.close());
  let meta: Record<string, string> = {};
  await c.addComponent(withHandlers(streamer, { [COUNT]: async function* (_r: unknown, ctx: Context) { meta = { ...ctx.meta }; yield { n: 1 }; yield { n: 2 }; } }));
  t.equal((await drain(c.caller.stream(COUNT, {}))).items.length, 2);
  t.same(meta, { trace: "t-1" }, "an outbound link's metadata reaches the handler");
  await nothingHeld(t, c, "after an intercepted stream");
  // The consumer's end (the STREAM_END) may come before or after its producer's generator was returned.
  t.same(seen.slice(0, 2), [`out start ${Mode.STREAM}`, `in start ${COUNT}`]);
  t.same(seen.slice(2).sort(), ["in end OK", "out end"]);
  seen.length = 0;
  const failed = await drain(c.caller.stream("streamer.Streamer/Tagged", { count: 3, failAt: 2 }));
  t.equal(failed.error?.code, "ABORTED");
  t.same(seen.slice(0, 2), [`out start ${Mode.STREAM}`, "in start streamer.Streamer/Tagged"]);
  t.same(seen.slice(2).sort(), ["in end ABORTED", "out end"]);
});

t.test("stream - closing the caller ends its streams (CANCELLED) and their producers' generators are returned", async (t) => {
  const c = await startContainer([streamer]);
  const stream = c.caller.stream(COUNT, { count: 0 }, { window: 2 });
  await stream.next();
  c.caller.close();
  t.equal((await drain(stream)).error?.code, "CANCELLED", "after the items already there");
  await idle(c.localNodes()[0]!);
  t.same(c.localNodes()[0]!.streamResources, { streams: 0, connections: 0, timers: 0 });
  await c.close();
});

t.test("stream - control-plane and broadcast-plane frames do not open streams", async (t) => {
  const h = await byHand(streamer);
  t.teardown(() => h.c.close());
  h.request({ plane: Plane.CONTROL, credit: 1 });
  await h.until(() => h.frames.length === 1);
  t.equal(h.frames[0]!.kind, Kind.RESPONSE);
  t.equal(NodeBinError.fromWire(h.frames[0]!.error!).code, "UNIMPLEMENTED");
  t.same(h.node.streamResources, { streams: 0, connections: 0, timers: 0 });
});

/** A container whose only node is replaced by a hand that answers streams as a test says: what a consumer sends and gets, frame by frame. */
async function fakeProducer(t: Test) {
  const c = new ContainerClass({ id: "consumer", logger: () => silentLogger });
  t.teardown(() => c.close());
  await c.addComponent(streamer);
  const node = c.localNodes()[0]!;
  c.direct.detach(node.id);
  const got: Envelope[] = [];
  c.direct.attach(node.id, (env) => void got.push(env));
  const Item = streamer.schema.methods.get(COUNT)!.responseType;
  const send = (request: Envelope, kind: Kind, fields: Partial<Envelope> = {}) => c.direct.deliver(request.from, encodeEnvelope(envelope({ id: request.id, kind, mode: Mode.STREAM, from: node.id, to: request.from, method: COUNT, ...fields })));
  const item = (request: Envelope, n: number) => send(request, Kind.STREAM_ITEM, { value: encodeMessage(Item, { n }, "x") });
  return { c, got, send, item };
}

t.test("stream - credit accounting: the request opens the window, and credit comes back every half window as items are taken", async (t) => {
  const p = await fakeProducer(t);
  const stream = p.c.caller.stream(COUNT, { count: 0 }, { window: 16 });
  const first = stream.next();
  const request = p.got[0]!;
  t.equal(request.kind, Kind.REQUEST);
  t.equal(request.credit, 16, "the opening window travels in the request");
  for (let n = 1; n <= 16; n++) p.item(request, n);
  await first;
  for (let i = 2; i <= 7; i++) await stream.next();
  t.equal(p.got.length, 1, "7 taken: no credit yet");
  await stream.next();
  t.same(
    p.got.slice(1).map((e) => [e.kind, e.credit, e.id]),
    [[Kind.CREDIT, 8, request.id]],
    "the 8th take grants 8",
  );
  for (let i = 9; i <= 16; i++) await stream.next();
  t.same(
    p.got.slice(1).map((e) => e.credit),
    [8, 8],
    "and the 16th another 8: what the producer sent against, never more",
  );
  const pending = stream.next();
  p.send(request, Kind.STREAM_END);
  t.same(await pending, { value: undefined, done: true });
  t.same(p.c.caller.streamResources, { streams: 0, timers: 0 });
});

t.test("stream - leaving a stream whose producer never acknowledges waits at most a second, then lets go", async (t) => {
  const p = await fakeProducer(t);
  const stream = p.c.caller.stream(COUNT, {}, { window: 2 });
  const first = stream.next();
  p.item(p.got[0]!, 1);
  await first;
  const started = Date.now();
  await stream.return!();
  const waited = Date.now() - started;
  t.equal(p.got.at(-1)!.kind, Kind.CANCEL, "the producer was told");
  t.ok(waited >= 900 && waited < 3000, `return() waited for the acknowledgement, bounded (${waited} ms)`);
  t.same(p.c.caller.streamResources, { streams: 0, timers: 0 }, "no timer or entry left");
  p.send(p.got[0]!, Kind.STREAM_END);
  t.equal(p.c.caller.unknownStreamFrames, 1, "a late end is counted and dropped");
});

t.test("stream - an acknowledged CANCEL ends return() at once", async (t) => {
  const p = await fakeProducer(t);
  const stream = p.c.caller.stream(COUNT, {}, { window: 2 });
  const first = stream.next();
  const request = p.got[0]!;
  p.item(request, 1);
  await first;
  const leaving = stream.return!();
  t.equal(p.got.at(-1)!.kind, Kind.CANCEL);
  p.send(request, Kind.STREAM_END, { error: new NodeBinError("CANCELLED", "ok").toWire() });
  const started = Date.now();
  await leaving;
  t.ok(Date.now() - started < 500, "no wait past the acknowledgement");
  t.same(p.c.caller.streamResources, { streams: 0, timers: 0 });
});

t.test("stream - items and ends from another link than the request left on are foreign: counted, dropped", async (t) => {
  const p = await fakeProducer(t);
  const stream = p.c.caller.stream(COUNT, {}, { window: 4 });
  const first = stream.next();
  const request = p.got[0]!;
  const Item = streamer.schema.methods.get(COUNT)!.responseType;
  const forged = envelope({ id: request.id, kind: Kind.STREAM_ITEM, mode: Mode.STREAM, from: request.to, to: request.from, method: COUNT, value: encodeMessage(Item, { n: 99 }, "x") });
  p.c.caller.handleResponse(forged, "tcp://10.9.9.9:1234");
  p.c.caller.handleResponse({ ...forged, kind: Kind.STREAM_END }, "tcp://10.9.9.9:1234");
  t.equal(p.c.caller.foreignAnswers, 2);
  p.item(request, 1);
  t.match((await first).value, { n: 1 }, "the real item, not the forged one");
  await stream.return!().catch(() => {});
});
