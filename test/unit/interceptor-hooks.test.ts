// The per-message hooks (start, end, error) as an inbound link of a real
// ComponentNode: what each hook is told (method, node, peer, duration, code),
// in which order, for every way a message ends; and that hooks only observe.
import t from "tap";
import type { Caller } from "../../src/component/context.ts";
import { hooksInterceptor, type InboundInterceptor, type MessageEvent, type MessageFailure, type MessageHooks, type MessageOutcome } from "../../src/component/interceptor.ts";
import type { Component } from "../../src/component/loader.ts";
import { ComponentNode, type Origin } from "../../src/component/node.ts";
import { decodeEnvelope, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { Mode } from "../../src/wire/schema.ts";
import { deferred, type Deferred } from "../lib/deferred.ts";
import { loadFixture, withHandlers } from "../lib/fixture-components.ts";
import { silentLogger } from "../lib/recording-logger.ts";

const probe = await loadFixture("components-probe/probe");

type Seen = ["start", MessageEvent] | ["end", MessageOutcome] | ["error", MessageFailure];

/** Hooks that record what they are told; a clock that moves only when a handler moves it. */
function recording() {
  const seen: Seen[] = [];
  let clock = 1000;
  const hooks: MessageHooks = {
    start: (e) => void seen.push(["start", e]),
    end: (e) => void seen.push(["end", e]),
    error: (e) => void seen.push(["error", e]),
  };
  return { seen, hooks, now: () => clock, advance: (ms: number) => (clock += ms) };
}

/** A started node ("node-1") whose answers go back on each request's own reply path, decoded. */
async function nodeWith(component: Component, interceptors: InboundInterceptor[]) {
  const answers = new Map<number, Deferred<Envelope>>();
  const answer = (id: number) => {
    let d = answers.get(id);
    if (!d) answers.set(id, (d = deferred<Envelope>()));
    return d;
  };
  const caller: Caller = {
    id: "node-1",
    call: async () => ({}),
    send: async () => {},
    stream: () => {
      throw new Error("no streams here");
    },
    handleResponse() {},
  };
  const onFrame = (frame: Uint8Array) => {
    const env = decodeEnvelope(frame);
    if (env instanceof NodeBinError) throw env;
    answer(env.id).resolve(env);
  };
  const node = new ComponentNode({ id: "node-1", component, caller, outbox: (_to, frame) => onFrame(frame), log: silentLogger, interceptors });
  await node.start();
  let nextId = 1;
  /** Delivers a request as if it came from `from` through a transport that knows it as `kind`; resolves with its answer. */
  const request = (method: string, value: unknown, options: { from?: string; origin?: Origin; deadlineMs?: number } = {}) => {
    const schema = component.schema.methods.get(method)!;
    const id = nextId++;
    const origin = options.origin ?? { kind: "network", reply: onFrame };
    node.receive(
      envelope({ id, from: options.from ?? "client-1", to: "node-1", method, mode: schema.mode, value: encodeMessage(schema.requestType, value, "test"), deadlineMs: options.deadlineMs ?? 0 }),
      origin,
    );
    return answer(id).promise;
  };
  return { node, request };
}

t.test("hooks - a message that succeeds: start, then end with its duration, code OK, node and peer", async (t) => {
  const r = recording();
  const component = withHandlers(probe, {
    "probe.Probe/Echo": (req: { text: string }) => {
      r.advance(7);
      return { text: req.text };
    },
  });
  const { request } = await nodeWith(component, [hooksInterceptor(r.hooks, { now: r.now })]);
  const reply = await request("probe.Probe/Echo", { text: "hi" }, { from: "caller-9", origin: { kind: "host" } });
  t.notOk(reply.error, "answered");
  t.same(
    r.seen.map(([hook]) => hook),
    ["start", "end"],
  );
  const peer = { id: "caller-9", kind: "host" };
  t.same(r.seen[0]![1], { method: "probe.Probe/Echo", mode: Mode.SYNC, node: "node-1", peer });
  t.same(r.seen[1]![1], { method: "probe.Probe/Echo", mode: Mode.SYNC, node: "node-1", peer, durationMs: 7, code: "OK" });
});

t.test("hooks - failures: the handler's error, a refusal by an inner link, a deadline passed in the queue, a bad reply; each one error hook with its code", async (t) => {
  const r = recording();
  const component = withHandlers(probe, {
    "probe.Probe/Fail": (req: { message: string; code: string }) => {
      r.advance(3);
      if (req.code) throw new NodeBinError(req.code as "ABORTED", req.message);
      throw new Error(req.message);
    },
  });
  const refuseLog: InboundInterceptor = (next) => (call) => (call.method === "probe.Probe/Log" ? Promise.reject(new NodeBinError("PERMISSION_DENIED", "not you")) : next(call));
  const { request } = await nodeWith(component, [hooksInterceptor(r.hooks, { now: r.now }), refuseLog]);

  t.equal(NodeBinError.fromWire((await request("probe.Probe/Fail", { message: "boom" })).error!).code, "INTERNAL");
  t.equal(NodeBinError.fromWire((await request("probe.Probe/Fail", { message: "no", code: "ABORTED" })).error!).code, "ABORTED");
  t.equal(NodeBinError.fromWire((await request("probe.Probe/Log", {})).error!).code, "PERMISSION_DENIED");
  t.equal(NodeBinError.fromWire((await request("probe.Probe/BadReply", {})).error!).code, "INTERNAL");

  const outcomes = r.seen.filter(([hook]) => hook !== "start") as ["error", MessageFailure][];
  t.same(
    outcomes.map(([hook, e]) => [hook, e.method, e.code]),
    [
      ["error", "probe.Probe/Fail", "INTERNAL"],
      ["error", "probe.Probe/Fail", "ABORTED"],
      ["error", "probe.Probe/Log", "PERMISSION_DENIED"],
      ["error", "probe.Probe/BadReply", "INTERNAL"],
    ],
  );
  t.equal(r.seen.filter(([hook]) => hook === "start").length, 4, "one start before each");
  t.match(outcomes[0]![1], { durationMs: 3, peer: { id: "client-1", kind: "network" }, error: { message: /boom/ } }, "the error the caller got, timed");
  t.ok(outcomes.every(([, e]) => e.error instanceof NodeBinError && e.error.code === e.code));
});

t.test("hooks - a message whose deadline passed while queued ends in the error hook with DEADLINE_EXCEEDED", async (t) => {
  const r = recording();
  const component = withHandlers(probe, {
    "probe.Probe/Echo": (req: { text: string }) => {
      // Holds the node until the wall clock moved past the next message's 1 ms deadline (no timer involved).
      const until = Date.now() + 3;
      while (Date.now() < until);
      return { text: req.text };
    },
  });
  const { request } = await nodeWith(component, [hooksInterceptor(r.hooks, { now: r.now })]);
  const first = request("probe.Probe/Echo", { text: "holds the node" });
  const late = request("probe.Probe/Echo", { text: "expires" }, { deadlineMs: 1 });
  await first;
  t.equal(NodeBinError.fromWire((await late).error!).code, "DEADLINE_EXCEEDED");
  t.same(
    r.seen.map(([hook, e]) => [hook, "code" in e ? e.code : undefined]),
    [
      ["start", undefined],
      ["end", "OK"],
      ["start", undefined],
      ["error", "DEADLINE_EXCEEDED"],
    ],
  );
});

t.test("hooks - ASYNC messages: end after the handler, error when it throws; the caller heard only of acceptance", async (t) => {
  const r = recording();
  const { node, request } = await nodeWith(probe, [hooksInterceptor(r.hooks, { now: r.now })]);
  t.notOk((await request("probe.Probe/Record", { tag: "x" })).error, "accepted");
  t.notOk((await request("probe.Probe/FailLater", { message: "later" })).error, "accepted");
  await node.close();
  t.same(
    r.seen.map(([hook, e]) => [hook, e.method, e.mode, "code" in e ? e.code : undefined]),
    [
      ["start", "probe.Probe/Record", Mode.ASYNC, undefined],
      ["end", "probe.Probe/Record", Mode.ASYNC, "OK"],
      ["start", "probe.Probe/FailLater", Mode.ASYNC, undefined],
      ["error", "probe.Probe/FailLater", Mode.ASYNC, "INTERNAL"],
    ],
  );
});

t.test("hooks - without an origin the peer is this process (local); with modes, other modes skip the link", async (t) => {
  const r = recording();
  const { node, request } = await nodeWith(probe, [hooksInterceptor(r.hooks, { now: r.now, modes: [Mode.ASYNC] })]);
  await request("probe.Probe/Echo", { text: "sync: not seen" });
  await request("probe.Probe/Record", { tag: "async: seen" }, { origin: {} });
  await node.close();
  t.same(
    r.seen.map(([hook, e]) => [hook, e.method, e.peer.kind]),
    [
      ["start", "probe.Probe/Record", "local"],
      ["end", "probe.Probe/Record", "local"],
    ],
  );
});

t.test("hooks - hooks observe only: one that throws changes no outcome, and the next message is still seen", async (t) => {
  const r = recording();
  const throwing: MessageHooks = {
    start: () => {
      throw new Error("start hook broke");
    },
    end: () => {
      throw new NodeBinError("PERMISSION_DENIED", "a hook cannot refuse");
    },
    error: () => {
      throw new Error("error hook broke");
    },
  };
  const { request } = await nodeWith(probe, [hooksInterceptor(throwing), hooksInterceptor(r.hooks, { now: r.now })]);
  const ok = await request("probe.Probe/Echo", { text: "fine" });
  t.notOk(ok.error, "the reply stands");
  const failed = await request("probe.Probe/Fail", { message: "its own error", code: "ABORTED" });
  t.equal(NodeBinError.fromWire(failed.error!).code, "ABORTED", "the handler's code, not the hook's");
  t.same(
    r.seen.map(([hook]) => hook),
    ["start", "end", "start", "error"],
  );
});
