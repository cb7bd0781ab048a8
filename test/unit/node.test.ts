import t from "tap";
import type { Caller, CallerOptions, Context, Hooks } from "../../src/component/context.ts";
import type { Component } from "../../src/component/loader.ts";
import { ComponentNode } from "../../src/component/node.ts";
import { Kind, Plane, decodeEnvelope, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { decodeMessage, encodeMessage, messageToJSON } from "../../src/wire/message.ts";
import { Mode } from "../../src/wire/schema.ts";
import { deferred, type Deferred } from "../lib/deferred.ts";
import { gatedHandler } from "../lib/gated-handler.ts";
import { loadFixture, withHandlers } from "../lib/fixture-components.ts";
import { recordingLoggers } from "../lib/recording-logger.ts";

const probe = await loadFixture("components-probe/probe");

interface CallRecord {
  method: string;
  request: unknown;
  options: CallerOptions | undefined;
}

/**
 * A node with a fake caller and an outbox that decodes what the node sends,
 * so a test can await the answer to each request id.
 */
function harness(component: Component, queueLimit?: number, hold = false) {
  const { lines, logger } = recordingLoggers();
  const answers = new Map<number, Deferred<Envelope>>();
  const answer = (id: number) => {
    let d = answers.get(id);
    if (!d) answers.set(id, (d = deferred<Envelope>()));
    return d;
  };
  const responses: Envelope[] = [];
  const calls: CallRecord[] = [];
  const caller: Caller = {
    id: "node-1",
    async call(method, request, options) {
      calls.push({ method, request, options });
      return { text: "from fake caller" };
    },
    async send(method, request, options) {
      calls.push({ method, request, options });
    },
    stream() {
      throw new Error("the fake caller makes no streams");
    },
    handleResponse(env) {
      responses.push(env);
    },
  };
  const sent: { to: string; env: Envelope }[] = [];
  let outboxFails = false;
  const node = new ComponentNode({
    id: "node-1",
    component,
    caller,
    outbox(to, frame) {
      if (outboxFails) throw new NodeBinError("UNAVAILABLE", `no route to ${to}`);
      const env = decodeEnvelope(frame);
      if (env instanceof NodeBinError) throw env;
      sent.push({ to, env });
      answer(env.id).resolve(env);
    },
    log: logger("node-1"),
    ...(queueLimit ? { queueLimit } : {}),
    ...(hold ? { hold: true } : {}),
  });
  let nextId = 1;
  /** Delivers a request for `method` and returns its id. */
  const deliver = (method: string, request: unknown, fields: Partial<Envelope> = {}): number => {
    const schema = component.schema.methods.get(method);
    const id = nextId++;
    node.receive(
      envelope({
        id,
        from: "client-1",
        to: "node-1",
        method,
        mode: schema?.mode ?? Mode.SYNC,
        value: schema ? encodeMessage(schema.requestType, request, "test request") : new Uint8Array(0),
        ...fields,
      }),
    );
    return id;
  };
  /** The decoded reply (or error) to request `id`. */
  const result = async (id: number): Promise<{ error?: NodeBinError; value?: Record<string, unknown>; env: Envelope }> => {
    const env = await answer(id).promise;
    if (env.error) return { error: NodeBinError.fromWire(env.error), env };
    const schema = component.schema.methods.get(env.method)!;
    return { value: messageToJSON(schema.responseType, decodeMessage(schema.responseType, env.value, "test reply")), env };
  };
  const errorOf = async (id: number): Promise<NodeBinError> => {
    const r = await result(id);
    if (!r.error) throw new Error(`request ${id} succeeded with ${JSON.stringify(r.value)}`);
    return r.error;
  };
  return {
    node,
    deliver,
    result,
    errorOf,
    sent,
    responses,
    calls,
    lines,
    failOutbox() {
      outboxFails = true;
    },
  };
}

async function started(component: Component, queueLimit?: number, hold = false) {
  const h = harness(component, queueLimit, hold);
  await h.node.start();
  return h;
}

/** The probe with Echo replaced by a handler that waits for the test to release it. */
function gatedProbe() {
  const gated = gatedHandler((r: { text: string }) => r.text, (r: { text: string }) => ({ text: r.text }));
  return { ...gated, component: withHandlers(probe, { "probe.Probe/Echo": gated.handler }) };
}

t.test("node - requests before start are refused with UNAVAILABLE", async (t) => {
  const h = harness(probe);
  const err = await h.errorOf(h.deliver("probe.Probe/Echo", { text: "early" }));
  t.equal(err.code, "UNAVAILABLE");
  t.equal(err.origin, "node-1");
  t.equal(h.node.getStats().rejected, 1);
});

t.test("node - start twice is FAILED_PRECONDITION", async (t) => {
  const h = await started(probe);
  const err = await h.node.start().then(
    () => undefined,
    (e: unknown) => e as NodeBinError,
  );
  t.equal(err?.code, "FAILED_PRECONDITION");
});

t.test("node - the init hook runs before the first message and sees ctx.state", async (t) => {
  const h = await started(probe);
  t.equal(h.node.state.initialized, true);
  const r = await h.result(h.deliver("probe.Probe/Log", {}));
  t.equal(r.value?.initialized, true);
});

t.test("node - a failing init hook is INTERNAL and the node never serves", async (t) => {
  const hooks: Hooks = {
    init() {
      throw new Error("no database");
    },
  };
  const h = harness(withHandlers(probe, {}, { hooks }));
  const err = await h.node.start().then(
    () => undefined,
    (e: unknown) => e as NodeBinError,
  );
  t.equal(err?.code, "INTERNAL");
  t.match(err?.message, /no database/);
  t.equal(err?.origin, "node-1");
  t.equal((await h.errorOf(h.deliver("probe.Probe/Echo", { text: "x" }))).code, "UNAVAILABLE");
});

t.test("node - handles one message at a time in arrival order", async (t) => {
  const gated = gatedProbe();
  const events = gated.events;
  const h = await started(gated.component);
  const ids = ["a", "b", "c", "d", "e"].map((text) => h.deliver("probe.Probe/Echo", { text }));
  await gated.entered("a");
  t.same(events, ["start a"], "only the first has started");
  t.equal(h.node.getStats().queued, 4, "the other four wait in the queue");
  // Release in reverse order: the node must still not start b before a ended.
  for (const text of ["e", "d", "c", "b"]) gated.release(text);
  await Promise.resolve();
  t.same(events, ["start a"], "releasing later messages does not let them overtake");
  gated.release("a");
  const replies = await Promise.all(ids.map((id) => h.result(id)));
  t.same(
    replies.map((r) => r.value?.text),
    ["a", "b", "c", "d", "e"],
  );
  t.same(events, ["start a", "end a", "start b", "end b", "start c", "end c", "start d", "end d", "start e", "end e"]);
});

t.test("node - a method it does not serve is NOT_FOUND", async (t) => {
  const h = await started(probe);
  const err = await h.errorOf(h.deliver("probe.Probe/Nope", {}));
  t.equal(err.code, "NOT_FOUND");
  t.equal(err.details.method, "probe.Probe/Nope");
});

t.test("node - a request in the wrong mode is INVALID_ARGUMENT", async (t) => {
  const h = await started(probe);
  const asSync = await h.errorOf(h.deliver("probe.Probe/Record", { tag: "x" }, { mode: Mode.SYNC }));
  t.equal(asSync.code, "INVALID_ARGUMENT");
  t.equal(asSync.details.mode, "ASYNC");
  const asAsync = await h.errorOf(h.deliver("probe.Probe/Echo", { text: "x" }, { mode: Mode.ASYNC }));
  t.equal(asAsync.code, "INVALID_ARGUMENT");
  t.equal(asAsync.details.mode, "SYNC");
  t.same(h.node.state.tags, undefined, "no handler ran");
});

t.test("node - a BROADCAST request sent point to point is INVALID_ARGUMENT naming broadcast (broadcasts come through receiveBroadcast: test/unit/broadcast.test.ts)", async (t) => {
  const h = await started(probe);
  const err = await h.errorOf(h.deliver("probe.Probe/Shout", { tag: "x" }));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.match(err.message, /broadcast it/);
  t.equal(h.node.getStats().rejected, 1);
});

t.test("node - control-plane requests are UNIMPLEMENTED", async (t) => {
  const h = await started(probe);
  const err = await h.errorOf(h.deliver("probe.Probe/Echo", { text: "x" }, { plane: Plane.CONTROL }));
  t.equal(err.code, "UNIMPLEMENTED");
});

t.test("node - a request value that does not decode is INVALID_ARGUMENT and no handler runs", async (t) => {
  let ran = false;
  const h = await started(withHandlers(probe, { "probe.Probe/Echo": () => void (ran = true) }));
  const err = await h.errorOf(h.deliver("probe.Probe/Echo", {}, { value: new Uint8Array([0x0a, 0x09, 0x41]) }));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.equal(err.details.type, "probe.EchoRequest");
  t.notOk(ran);
});

t.test("node - a handler throw is INTERNAL with its message; the node keeps serving", async (t) => {
  const h = await started(probe);
  const failed = h.deliver("probe.Probe/Fail", { message: "kaboom" });
  const next = h.deliver("probe.Probe/Echo", { text: "still here" });
  const err = await h.errorOf(failed);
  t.equal(err.code, "INTERNAL");
  t.equal(err.message, "kaboom");
  t.equal(err.origin, "node-1");
  t.equal((await h.result(next)).value?.text, "still here");
  t.match(h.node.getStats(), { handled: 1, failed: 1 });
});

t.test("node - a rejected promise and a thrown non-Error are INTERNAL too", async (t) => {
  const h = await started(
    withHandlers(probe, {
      "probe.Probe/Echo": async () => {
        throw "a bare string";
      },
      "probe.Probe/Log": () => Promise.reject(new RangeError("out of range")),
    }),
  );
  const a = await h.errorOf(h.deliver("probe.Probe/Echo", {}));
  t.equal(a.code, "INTERNAL");
  t.equal(a.message, "a bare string");
  const b = await h.errorOf(h.deliver("probe.Probe/Log", {}));
  t.equal(b.code, "INTERNAL");
  t.equal(b.message, "out of range");
});

t.test("node - a handler throwing a NodeBinError keeps its code and details", async (t) => {
  const h = await started(probe);
  const err = await h.errorOf(h.deliver("probe.Probe/Fail", { message: "not you", code: "PERMISSION_DENIED" }));
  t.equal(err.code, "PERMISSION_DENIED");
  t.equal(err.message, "not you");
  t.same(err.details, { reason: "asked" });
  t.equal(err.origin, "node-1", "origin filled in");
});

t.test("node - a reply that does not match the response type is INTERNAL naming the field", async (t) => {
  const h = await started(probe);
  const err = await h.errorOf(h.deliver("probe.Probe/BadReply", {}));
  t.equal(err.code, "INTERNAL");
  t.equal(err.details.field, "text");
  t.match(h.node.getStats(), { handled: 0, failed: 1 });
});

t.test("node - a handler returning nothing replies with an empty message", async (t) => {
  const h = await started(withHandlers(probe, { "probe.Probe/Echo": () => undefined }));
  const r = await h.result(h.deliver("probe.Probe/Echo", { text: "x" }));
  t.notOk(r.error);
  t.equal(r.value?.text, "");
});

t.test("node - a full queue is RESOURCE_EXHAUSTED; the message being handled does not count", async (t) => {
  const gated = gatedProbe();
  const events = gated.events;
  const h = await started(gated.component, 2);
  const first = h.deliver("probe.Probe/Echo", { text: "a" });
  await gated.entered("a");
  const queued = [h.deliver("probe.Probe/Echo", { text: "b" }), h.deliver("probe.Probe/Echo", { text: "c" })];
  const err = await h.errorOf(h.deliver("probe.Probe/Echo", { text: "d" }));
  t.equal(err.code, "RESOURCE_EXHAUSTED");
  t.same(err.details, { queued: "2", capacity: "2", unhandled: "true" }, "refused before handling: a caller may send it elsewhere");
  t.match(h.node.getStats(), { queued: 2, capacity: 2, rejected: 1 });
  for (const text of ["a", "b", "c"]) gated.release(text);
  for (const id of [first, ...queued]) t.notOk((await h.result(id)).error, `request ${id} answered`);
  t.notOk(events.includes("start d"), "the refused message never ran");
});

t.test("node - the queue limit defaults to the manifest's limits.queue", async (t) => {
  t.equal(harness(probe).node.getStats().capacity, 50);
  t.equal(harness(withHandlers(probe, {}, { limits: { queue: 7 } })).node.getStats().capacity, 7);
});

t.test("node - a message whose deadline passes while queued is answered DEADLINE_EXCEEDED and never handled", async (t) => {
  const gated = gatedProbe();
  const events = gated.events;
  const h = await started(gated.component);
  const first = h.deliver("probe.Probe/Echo", { text: "slow" });
  await gated.entered("slow");
  const late = h.deliver("probe.Probe/Echo", { text: "late" }, { deadlineMs: 50 });
  const onTime = h.deliver("probe.Probe/Echo", { text: "on time" }, { deadlineMs: 60_000 });
  // Move the node's clock past the 50 ms deadline instead of waiting for it.
  const realNow = Date.now;
  Date.now = () => realNow() + 1000;
  t.teardown(() => void (Date.now = realNow));
  gated.release("slow");
  gated.release("on time");
  t.notOk((await h.result(first)).error);
  const err = await h.errorOf(late);
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.equal((await h.result(onTime)).value?.text, "on time");
  t.same(events, ["start slow", "end slow", "start on time", "end on time"], "the late message never reached its handler");
  t.match(h.node.getStats(), { handled: 2, failed: 1 });
});

t.test("node - ASYNC: accepted at once, handled later, failures logged not answered", async (t) => {
  const gated = gatedProbe();
  const events = gated.events;
  const h = await started(gated.component);
  h.deliver("probe.Probe/Echo", { text: "busy" });
  await gated.entered("busy");
  const record = h.deliver("probe.Probe/Record", { tag: "later" });
  const ack = await h.result(record);
  t.notOk(ack.error, "accepted");
  t.equal(ack.env.kind, Kind.RESPONSE);
  t.equal(ack.env.value.length, 0, "an acceptance carries no value");
  t.equal(h.node.state.tags, undefined, "accepted while the node is busy: the handler has not run yet");
  gated.release("busy");
  const failing = h.deliver("probe.Probe/FailLater", { message: "async boom" });
  t.notOk((await h.result(failing)).error, "a failing ASYNC message is still accepted");
  const log = await h.result(h.deliver("probe.Probe/Log", {}));
  t.same(log.value?.tags, ["later"], "the ASYNC handler ran");
  t.same(events, ["start busy", "end busy"], "after the busy one ended");
  t.equal(h.sent.filter((s) => s.env.id === failing).length, 1, "the failure was not sent to the caller");
  const logged = h.lines.find((l) => l.level === "error");
  t.ok(logged, "the failure was logged");
  t.match(logged?.message, /async boom/);
  t.equal(logged?.fields?.code, "INTERNAL");
});

t.test("node - responses to its own calls bypass the queue, even while a handler runs", async (t) => {
  const gated = gatedProbe();
  const events = gated.events;
  const h = await started(gated.component);
  h.deliver("probe.Probe/Echo", { text: "busy" });
  await gated.entered("busy");
  h.node.receive(envelope({ id: 99, kind: Kind.RESPONSE, from: "elsewhere", to: "node-1" }));
  t.same(
    h.responses.map((r) => r.id),
    [99],
    "handed to the caller synchronously",
  );
  t.same(events, ["start busy"], "while the handler was still running");
  gated.release("busy");
});

t.test("node - stream items go to the node's caller; credit and cancels for no open stream are dropped and counted", async (t) => {
  const h = await started(probe);
  h.node.receive(envelope({ id: 7, kind: Kind.STREAM_ITEM, method: "probe.Probe/Echo" }));
  t.same(
    h.responses.map((r) => r.id),
    [7],
    "an item answers one of the node's own streams",
  );
  h.node.receive(envelope({ kind: Kind.CANCEL, method: "probe.Probe/Echo" }));
  h.node.receive(envelope({ kind: Kind.CREDIT, credit: 5, method: "probe.Probe/Echo" }));
  t.equal(h.node.getStats().streamFramesDropped, 2);
  t.equal(h.sent.length, 0, "nothing answered");
});

t.test("node - an answer that cannot be sent is counted as dropped and logged", async (t) => {
  const h = await started(probe);
  h.failOutbox();
  h.deliver("probe.Probe/Nope", {});
  t.equal(h.node.getStats().dropped, 1);
  t.ok(h.lines.some((l) => l.level === "warn" && l.message.includes("client-1")), "the warning names the unreachable caller");
});

t.test("node - the context carries node id, method, meta, caller and deadline", async (t) => {
  const h = await started(probe);
  const before = Date.now();
  const r = await h.result(h.deliver("probe.Probe/Echo", { text: "ctx" }, { meta: { via: "test" }, deadlineMs: 5000 }));
  t.match(r.value, { nodeId: "node-1", method: "probe.Probe/Echo", meta: { via: "test" }, from: "client-1" });
  const deadline = r.value?.deadline as number;
  t.ok(deadline >= before + 5000 && deadline <= Date.now() + 5000, "deadline = receipt time + deadlineMs");
  const none = await h.result(h.deliver("probe.Probe/Echo", { text: "ctx" }));
  t.equal(none.value?.deadline, -1, "no deadlineMs: ctx.deadline is Infinity");
});

t.test("node - nested calls carry the handler's meta (merged) and deadline", async (t) => {
  const h = await started(probe);
  const r = await h.result(h.deliver("probe.Probe/Nested", { text: "in", meta: { extra: "1", via: "override" } }, { meta: { via: "outer", keep: "yes" }, deadlineMs: 5000 }));
  t.notOk(r.error);
  t.equal(h.calls.length, 1);
  const call = h.calls[0]!;
  t.equal(call.method, "mirror.Mirror/Echo");
  t.same(call.options?.meta, { via: "override", keep: "yes", extra: "1" }, "the call's own meta wins over what the handler received");
  t.equal(call.options?.deadline, r.value?.deadline, "the handler's own deadline is passed on");
});

t.test("node - hooks get a context without deadline or meta for their nested calls", async (t) => {
  let done: Promise<unknown> | undefined;
  const hooks: Hooks = {
    init(ctx) {
      done = ctx.call("mirror.Mirror/Echo", { text: "from init" });
    },
  };
  const h = await started(withHandlers(probe, {}, { hooks }));
  await done;
  t.equal(h.calls.length, 1);
  t.same(h.calls[0]?.options, {}, "no deadline, no meta");
});

t.test("node - ctx.state persists across messages and may be replaced", async (t) => {
  const h = await started(
    withHandlers(probe, {
      "probe.Probe/Echo": (request: { text: string }, ctx: Context) => {
        if (request.text === "reset") ctx.state = { tags: ["fresh"] };
        return { text: String(ctx.state.tags) };
      },
    }),
  );
  await h.result(h.deliver("probe.Probe/Record", { tag: "one" }));
  await h.result(h.deliver("probe.Probe/Record", { tag: "two" }));
  t.same((await h.result(h.deliver("probe.Probe/Log", {}))).value?.tags, ["one", "two"]);
  await h.result(h.deliver("probe.Probe/Echo", { text: "reset" }));
  t.same(h.node.state, { tags: ["fresh"] }, "assigning ctx.state replaces the node's state");
  await h.result(h.deliver("probe.Probe/Record", { tag: "three" }));
  t.same((await h.result(h.deliver("probe.Probe/Log", {}))).value?.tags, ["fresh", "three"]);
});

t.test("node - exportState and importState default to ctx.state itself", async (t) => {
  const a = await started(probe);
  await a.result(a.deliver("probe.Probe/Record", { tag: "moved" }));
  const snapshot = await a.node.exportState();
  t.equal(snapshot, a.node.state, "the state object itself");
  const b = await started(probe);
  await b.node.importState(snapshot);
  t.same((await b.result(b.deliver("probe.Probe/Log", {}))).value?.tags, ["moved"]);
  await b.node.importState(undefined);
  t.same(b.node.state, {}, "importing nothing leaves an empty state");
});

t.test("node - close drains the queue, refuses new messages, then runs the shutdown hook", async (t) => {
  const gated = gatedProbe();
  const events = gated.events;
  const h = await started(gated.component);
  const ids = ["a", "b"].map((text) => h.deliver("probe.Probe/Echo", { text }));
  await gated.entered("a");
  let closed = false;
  const closing = h.node.close().then(() => (closed = true));
  const refused = await h.errorOf(h.deliver("probe.Probe/Echo", { text: "too late" }));
  t.equal(refused.code, "UNAVAILABLE");
  t.notOk(h.node.state.shutDown, "shutdown waits for the queue");
  gated.release("a");
  gated.release("b");
  for (const id of ids) t.notOk((await h.result(id)).error, `queued request ${id} still answered`);
  await closing;
  t.ok(closed);
  t.equal(h.node.state.shutDown, true, "shutdown ran");
  t.same(events, ["start a", "end a", "start b", "end b"]);
  await h.node.close();
  t.equal((await h.errorOf(h.deliver("probe.Probe/Echo", { text: "after" }))).code, "UNAVAILABLE");
});

t.test("node - concurrent close calls all wait for the drain and the shutdown hook", async (t) => {
  const gated = gatedProbe();
  const h = await started(gated.component);
  const id = h.deliver("probe.Probe/Echo", { text: "held" });
  await gated.entered("held");
  let firstDone = false;
  let secondDone = false;
  const first = h.node.close().then(() => (firstDone = true));
  const second = h.node.close().then(() => (secondDone = true));
  await new Promise<void>((r) => setImmediate(r));
  t.notOk(firstDone || secondDone, "neither close resolved while a message is in the handler's hands");
  t.notOk(h.node.state.shutDown);
  gated.release("held");
  await Promise.all([first, second]);
  t.equal(h.node.state.shutDown, true, "both resolved after shutdown ran");
  t.notOk((await h.result(id)).error, "the held message was answered");
});

t.test("node - close before start does not run shutdown; a failing shutdown is logged", async (t) => {
  const never = harness(probe);
  await never.node.close();
  t.notOk(never.node.state.shutDown);
  const hooks: Hooks = {
    shutdown() {
      throw new Error("cannot flush");
    },
  };
  const h = await started(withHandlers(probe, {}, { hooks }));
  await h.node.close();
  t.ok(h.lines.some((l) => l.level === "error" && l.message.includes("cannot flush")));
});

t.test("node - a burst of synchronous handlers yields to the event loop", async (t) => {
  let immediateRan = false;
  const seen: boolean[] = [];
  const h = await started(
    withHandlers(
      probe,
      {
        "probe.Probe/Echo": () => {
          seen.push(immediateRan);
          return {};
        },
      },
      { limits: { queue: 1000 } },
    ),
  );
  setImmediate(() => (immediateRan = true));
  const ids = Array.from({ length: 600 }, () => h.deliver("probe.Probe/Echo", {}));
  await h.result(ids.at(-1)!);
  t.equal(seen.length, 600);
  t.equal(seen[0], false, "the first handlers ran before the immediate");
  t.equal(seen[599], true, "the immediate ran before the burst ended");
});

t.test("node - the answer goes to the request's sender with its id and method", async (t) => {
  const h = await started(probe);
  const id = h.deliver("probe.Probe/Echo", { text: "x" }, { from: "someone-else", state: new Uint8Array([4, 2]) });
  const r = await h.result(id);
  t.equal(h.sent[0]?.to, "someone-else");
  t.equal(r.env.from, "node-1");
  t.equal(r.env.method, "probe.Probe/Echo");
  t.same(Array.from(r.env.state), [4, 2], "pass-through state echoed");
});

t.test("node - suspend finishes the queue and hands out the snapshot without shutting down; reopen serves on with the state", async (t) => {
  const gated = gatedProbe();
  const h = await started(gated.component);
  await h.result(h.deliver("probe.Probe/Record", { tag: "kept" }));
  const ids = ["a", "b"].map((text) => h.deliver("probe.Probe/Echo", { text }));
  await gated.entered("a");
  let snapshot: unknown;
  const suspending = h.node.suspend().then((s) => (snapshot = s));
  const refused = await h.errorOf(h.deliver("probe.Probe/Echo", { text: "during" }));
  t.equal(refused.code, "UNAVAILABLE", "new messages are refused while it drains...");
  t.equal(refused.details.unhandled, "true", "...as unhandled (callers re-route them)");
  gated.release("a");
  gated.release("b");
  for (const id of ids) t.notOk((await h.result(id)).error, `queued request ${id} still answered`);
  await suspending;
  t.same(snapshot, { initialized: true, tags: ["kept"] }, "the snapshot, taken after the queue");
  t.ok(h.node.isSuspended, "suspended");
  t.notOk(h.node.state.shutDown, "the shutdown hook did not run");
  t.equal(h.node.getStats().phase, "draining");
  t.equal((await h.errorOf(h.deliver("probe.Probe/Echo", { text: "suspended" }))).details.unhandled, "true", "suspended, it refuses as unhandled");
  t.same(gated.events, ["start a", "end a", "start b", "end b"], "nothing ran while suspended");

  t.equal(h.node.reopen(), true, "reopened");
  t.notOk(h.node.isSuspended);
  t.equal(h.node.getStats().phase, "serving");
  await h.result(h.deliver("probe.Probe/Record", { tag: "after" }));
  t.same((await h.result(h.deliver("probe.Probe/Log", {}))).value?.tags, ["kept", "after"], "it serves with the state it had");
  t.equal(h.node.reopen(), false, "reopen on a serving node does nothing");
});

t.test("node - close after suspend runs the shutdown hook; reopen after close does nothing; suspend twice is FAILED_PRECONDITION", async (t) => {
  const h = await started(probe);
  await h.node.suspend();
  t.equal((await rejectionOf(h.node.suspend())).code, "FAILED_PRECONDITION", "a suspended node cannot be suspended again");
  await h.node.close();
  t.equal(h.node.state.shutDown, true, "shutdown ran on close");
  t.equal(h.node.reopen(), false, "a closed node does not reopen");
  t.equal(h.node.getStats().phase, "closed");
  t.equal((await rejectionOf(h.node.suspend())).code, "FAILED_PRECONDITION", "nor suspend");
});

t.test("node - an exportState that throws: suspend is INTERNAL and the node serves again", async (t) => {
  const hooks: Hooks = {
    exportState() {
      throw new Error("snapshot store offline");
    },
  };
  const h = await started(withHandlers(probe, {}, { hooks }));
  const err = await rejectionOf(h.node.suspend());
  t.equal(err.code, "INTERNAL");
  t.match(err.message, /exportState failed: snapshot store offline/);
  t.notOk(h.node.isSuspended);
  t.equal(h.node.getStats().phase, "serving", "serving again");
  t.notOk((await h.result(h.deliver("probe.Probe/Log", {}))).error, "and answering");
});

t.test("node - a held node that is closed gives its SYNC requests back unhandled and still handles accepted ASYNC ones", async (t) => {
  const seen: string[] = [];
  const h = await started(
    withHandlers(probe, {
      "probe.Probe/Echo": (request: { text: string }) => {
        seen.push(request.text);
        return { text: request.text };
      },
    }),
    undefined,
    true,
  );
  const sync = ["x", "y"].map((text) => h.deliver("probe.Probe/Echo", { text }));
  const accepted = h.deliver("probe.Probe/Record", { tag: "async" });
  t.notOk((await h.result(accepted)).error, "the ASYNC message was accepted while held");
  await h.node.close();
  for (const id of sync) {
    const err = await h.errorOf(id);
    t.equal(err.code, "UNAVAILABLE", `request ${id}: UNAVAILABLE`);
    t.equal(err.details.unhandled, "true", `request ${id}: unhandled, so its caller re-routes it`);
  }
  t.same(seen, [], "no SYNC handler ran without the state the node was held for");
  t.same(h.node.state.tags, ["async"], "the accepted ASYNC message was handled (its sender was told it would be)");
  t.equal(h.node.state.shutDown, true);
});

async function rejectionOf(promise: Promise<unknown>): Promise<NodeBinError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof NodeBinError) return err;
    throw err;
  }
  throw new Error("resolved instead of rejecting");
}
