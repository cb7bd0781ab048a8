import t from "tap";
import type { Context } from "../../src/component/context.ts";
import { loggingInterceptor, outboundLoggingInterceptor, type InboundCall, type InboundInterceptor, type OutboundCall, type OutboundInterceptor } from "../../src/component/interceptor.ts";
import type { Component } from "../../src/component/loader.ts";
import { ComponentNode } from "../../src/component/node.ts";
import { MembershipTable } from "../../src/membership/table.ts";
import { ManualClock, type Clock } from "../../src/platform/clock.ts";
import { RoutingCaller, type Sender } from "../../src/routing/caller.ts";
import { Router } from "../../src/routing/router.ts";
import { DirectTransport } from "../../src/transport/direct.ts";
import { Kind, Plane } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { Mode } from "../../src/wire/schema.ts";
import { deferred } from "../lib/deferred.ts";
import { gatedHandler } from "../lib/gated-handler.ts";
import { rejection } from "../lib/expect-error.ts";
import { loadFixture, withHandlers } from "../lib/fixture-components.ts";
import { recordingLoggers } from "../lib/recording-logger.ts";

const probe = await loadFixture("components-probe/probe");
const ECHO = probe.schema.methods.get("probe.Probe/Echo")!;

interface WireOptions {
  component?: Component;
  outbound?: OutboundInterceptor[];
  /** Absent: the node's default chain. */
  inbound?: InboundInterceptor[];
  clock?: Clock;
}

/**
 * A real RoutingCaller ("client-1") and a real ComponentNode ("node-1") of the
 * probe, wired through a DirectTransport (every frame encoded and decoded),
 * the node listed in the caller's membership table.
 */
async function wire(options: WireOptions = {}) {
  const component = options.component ?? probe;
  const { lines, logger } = recordingLoggers();
  const direct = new DirectTransport();
  const table = new MembershipTable();
  const clock = options.clock ? { clock: options.clock } : {};
  const router = new Router(table, { inProcess: () => true, host: "h1", network: "" }, clock);
  let sends = 0;
  const sender: Sender = {
    send(to, frame) {
      sends++;
      if (!direct.deliver(to, frame)) throw new NodeBinError("UNAVAILABLE", `no endpoint ${to}`);
    },
  };
  const client = new RoutingCaller({ id: "client-1", router, sender, ...clock, ...(options.outbound ? { interceptors: options.outbound } : {}) });
  const node = new ComponentNode({
    id: "node-1",
    component,
    caller: new RoutingCaller({ id: "node-1", router, sender, ...clock }),
    outbox: (to, frame) => void direct.deliver(to, frame),
    log: logger("node-1"),
    ...(options.inbound ? { interceptors: options.inbound } : {}),
  });
  await node.start();
  direct.attach("node-1", (env) => node.receive(env));
  direct.attach("client-1", (env) => {
    if (env.kind === Kind.RESPONSE) client.handleResponse(env);
  });
  table.upsert(
    {
      id: "node-1",
      component: component.name,
      version: "1",
      host: "h1",
      network: "",
      endpoints: [],
      methods: [...component.handlers.keys()].map((name) => ({ name, mode: component.schema.methods.get(name)!.mode })),
      schema: component.schema.id,
      load: { queued: 0, capacity: 50 },
    },
    component.schema,
  );
  return { client, node, lines, logger, requestsSent: () => sends };
}

/** A probe whose Echo counts its runs. */
function countingProbe() {
  const runs: string[] = [];
  const component = withHandlers(probe, {
    "probe.Probe/Echo": (request: { text: string }, ctx: Context) => {
      runs.push(request.text);
      return { text: request.text, meta: { ...ctx.meta } };
    },
  });
  return { runs, component };
}

const refuse = (code: NodeBinError["code"]) => () => {
  throw new NodeBinError(code, "refused by a test interceptor");
};

t.test("interceptors - an outbound link sees method, mode, ids, meta, deadline and outcome, and times the call", async (t) => {
  const clock = new ManualClock();
  const entered = deferred();
  const component = withHandlers(probe, {
    "probe.Probe/Echo": async (request: { text: string }, ctx: Context) => {
      if (request.text === "fail") throw new NodeBinError("FAILED_PRECONDITION", "asked to fail");
      entered.resolve();
      await clock.sleep(250);
      return { text: request.text, meta: { ...ctx.meta } };
    },
  });
  const seen: { call: OutboundCall; meta: Record<string, string>; outcome: unknown; ms: number }[] = [];
  const timing: OutboundInterceptor = (next) => async (call) => {
    const start = clock.now();
    call.meta.trace = "t-1";
    const meta = { ...call.meta };
    try {
      const reply = await next(call);
      seen.push({ call, meta, outcome: reply, ms: clock.now() - start });
      return reply;
    } catch (err) {
      seen.push({ call, meta, outcome: err, ms: clock.now() - start });
      throw err;
    }
  };
  const { client } = await wire({ component, outbound: [timing], clock });
  const callerMeta = { user: "ada" };
  const began = clock.now();
  const reply = client.call("probe.Probe/Echo", { text: "hi" }, { meta: callerMeta, timeoutMs: 5000 });
  await entered.promise;
  await clock.advance(250);
  t.match(await reply, { text: "hi", meta: { user: "ada", trace: "t-1" } }, "the meta a link added reached the handler");
  t.same(callerMeta, { user: "ada" }, "the caller's own meta object is not touched");
  t.equal(seen.length, 1);
  const [first] = seen;
  t.match(first?.call, { method: "probe.Probe/Echo", mode: Mode.SYNC, plane: Plane.APPLICATION, from: "client-1", to: "node-1", deadline: began + 5000 });
  t.same(first?.meta, { user: "ada", trace: "t-1" });
  t.match(first?.outcome, { text: "hi" }, "the reply value");
  t.equal(first?.ms, 250, "timed by the clock the handler waited on");

  const failed = await rejection(client.call("probe.Probe/Echo", { text: "fail" }));
  t.equal(failed.code, "FAILED_PRECONDITION");
  const second = seen[1]?.outcome;
  t.ok(second instanceof NodeBinError, "a failure is seen as a NodeBinError");
  t.equal(second instanceof NodeBinError ? second.code : undefined, "FAILED_PRECONDITION");
});

t.test("interceptors - an outbound refusal fails call, send and callEndpoint with its code; nothing is sent", async (t) => {
  const { runs, component } = countingProbe();
  const { client, node, requestsSent } = await wire({ component, outbound: [(_next) => refuse("PERMISSION_DENIED")] });
  t.equal((await rejection(client.call("probe.Probe/Echo", { text: "x" }))).code, "PERMISSION_DENIED", "call");
  t.equal((await rejection(client.send("probe.Probe/Record", { tag: "x" }))).code, "PERMISSION_DENIED", "send");
  t.equal((await rejection(client.callEndpoint({ method: ECHO, to: "node-1", request: { text: "x" } }))).code, "PERMISSION_DENIED", "callEndpoint");
  t.equal(requestsSent(), 0, "no frame left the caller");
  t.same(runs, [], "no handler ran");
  t.match(node.getStats(), { handled: 0, failed: 0, rejected: 0 }, "the node never saw them");
  t.equal(client.inFlight, 0);
});

t.test("interceptors - an inbound refusal gets the caller its code, no handler runs, and the node serves the next message", async (t) => {
  const { runs, component } = countingProbe();
  const seen: InboundCall[] = [];
  const onlyAda: InboundInterceptor = (next) => async (call) => {
    seen.push(call);
    if (call.meta.user !== "ada") throw new NodeBinError("PERMISSION_DENIED", `not for ${call.meta.user ?? "anonymous"}`);
    return next(call);
  };
  const { client, node } = await wire({ component, inbound: [onlyAda] });
  const refused = client.call("probe.Probe/Echo", { text: "eve's" }, { meta: { user: "eve" }, timeoutMs: 5000 });
  const served = client.call("probe.Probe/Echo", { text: "ada's" }, { meta: { user: "ada" } });
  const err = await rejection(refused);
  t.equal(err.code, "PERMISSION_DENIED");
  t.equal(err.origin, "node-1");
  t.match(await served, { text: "ada's" }, "the next message is served");
  t.same(runs, ["ada's"], "the refused message never reached its handler");
  t.match(seen[0], { method: "probe.Probe/Echo", mode: Mode.SYNC, from: "client-1", to: "node-1", meta: { user: "eve" } });
  t.ok(seen[0]!.deadline > Date.now() && seen[0]!.deadline <= Date.now() + 5000, "the message's deadline");
  t.equal(typeof seen[0]!.control, "object");

  await client.send("probe.Probe/Record", { tag: "eve's" }, { meta: { user: "eve" } });
  t.same(await client.call("probe.Probe/Log", {}, { meta: { user: "ada" } }), { tags: [], initialized: true }, "an ASYNC refusal: accepted, never handled");
  t.match(node.getStats(), { rejected: 2, failed: 0, handled: 2 });
});

t.test("interceptors - a link throwing anything but a NodeBinError gives INTERNAL, on both sides", async (t) => {
  const { runs, component } = countingProbe();
  const codes: string[] = [];
  const watch: OutboundInterceptor = (next) => async (call) => {
    try {
      return await next(call);
    } catch (err) {
      codes.push(err instanceof NodeBinError ? err.code : "not a NodeBinError");
      throw err;
    }
  };
  const broken: OutboundInterceptor = (next) => async (call) => {
    if (call.meta.break === "sync") throw new TypeError("synchronous bug");
    if (call.meta.break === "string") return Promise.reject("a bare string");
    return next(call);
  };
  const notAsync: OutboundInterceptor = () => () => {
    throw new RangeError("thrown before any promise");
  };
  const { client } = await wire({ component, outbound: [watch, broken] });
  t.equal((await rejection(client.call("probe.Probe/Echo", { text: "x" }, { meta: { break: "sync" } }))).code, "INTERNAL");
  t.equal((await rejection(client.call("probe.Probe/Echo", { text: "x" }, { meta: { break: "string" } }))).code, "INTERNAL");
  t.same(codes, ["INTERNAL", "INTERNAL"], "the outer link saw NodeBinErrors");
  const plain = await wire({ component, outbound: [notAsync] });
  t.equal((await rejection(plain.client.call("probe.Probe/Echo", { text: "x" }))).code, "INTERNAL", "a synchronous throw");

  const inbound = await wire({
    component,
    inbound: [
      (next) => async (call) => {
        if (call.meta.break) throw new Error("inbound bug");
        return next(call);
      },
    ],
  });
  t.equal((await rejection(inbound.client.call("probe.Probe/Echo", { text: "x" }, { meta: { break: "yes" } }))).code, "INTERNAL");
  t.match(await inbound.client.call("probe.Probe/Echo", { text: "after" }), { text: "after" }, "the node keeps serving");
  t.same(runs, ["after"]);
});

t.test("interceptors - an inbound link calling next twice gets INTERNAL and the handler runs once", async (t) => {
  const { runs, component } = countingProbe();
  const twice: InboundInterceptor = (next) => async (call) => {
    await next(call);
    return next(call);
  };
  const { client } = await wire({ component, inbound: [twice] });
  t.equal((await rejection(client.call("probe.Probe/Echo", { text: "once" }))).code, "INTERNAL");
  t.same(runs, ["once"]);
});

t.test("interceptors - an inbound link that answers without awaiting next still holds the node until the handler ends", async (t) => {
  const gated = gatedHandler();
  const component = withHandlers(probe, { "probe.Probe/Echo": gated.handler });
  const hasty: InboundInterceptor = (next) => async (call) => {
    void next(call);
    return { text: "early" };
  };
  const { client } = await wire({ component, inbound: [hasty] });
  const first = client.call("probe.Probe/Echo", { text: "a" });
  const second = client.call("probe.Probe/Echo", { text: "b" });
  t.match(await first, { text: "early" }, "answered by the link");
  await gated.entered("a");
  gated.release("b");
  await new Promise<void>((r) => setImmediate(r));
  t.same(gated.events, ["start a"], "b waits for a's handler");
  gated.release("a");
  t.match(await second, { text: "early" });
  t.same(gated.events.slice(0, 3), ["start a", "end a", "start b"], "b's handler started only after a's ended");
});

t.test("interceptors - an inbound link may answer in the handler's place", async (t) => {
  const { runs, component } = countingProbe();
  const cache: InboundInterceptor = (next) => async (call) => (call.meta.cached ? { text: "from cache" } : next(call));
  const { client } = await wire({ component, inbound: [cache] });
  t.match(await client.call("probe.Probe/Echo", { text: "x" }, { meta: { cached: "1" } }), { text: "from cache" });
  t.same(runs, []);
  const bad: InboundInterceptor = () => async () => ({ text: 42 });
  const wrong = await wire({ component, inbound: [bad] });
  t.equal((await rejection(wrong.client.call("probe.Probe/Echo", { text: "x" }))).code, "INTERNAL", "a reply that does not fit the response type");
});

t.test("interceptors - a chain of two runs in order, the first outermost, on both sides", async (t) => {
  const events: string[] = [];
  const component = withHandlers(probe, {
    "probe.Probe/Echo": (request: { text: string }) => {
      events.push("handler");
      return { text: request.text };
    },
  });
  const outbound = (name: string): OutboundInterceptor => (next) => async (call) => {
    events.push(`${name} in`);
    const reply = await next(call);
    events.push(`${name} out`);
    return reply;
  };
  const inbound = (name: string): InboundInterceptor => (next) => async (call) => {
    events.push(`${name} in`);
    const reply = await next(call);
    events.push(`${name} out`);
    return reply;
  };
  const { client } = await wire({ component, outbound: [outbound("out-1"), outbound("out-2")], inbound: [inbound("in-1"), inbound("in-2")] });
  await client.call("probe.Probe/Echo", { text: "x" });
  t.same(events, ["out-1 in", "out-2 in", "in-1 in", "in-2 in", "handler", "in-2 out", "in-1 out", "out-2 out", "out-1 out"]);
});

t.test("interceptors - the default logging link logs ASYNC failures at error level, and SYNC messages skip it", async (t) => {
  const { client, node, lines } = await wire();
  await client.send("probe.Probe/FailLater", { message: "async boom" });
  await client.call("probe.Probe/Log", {});
  const errors = lines.filter((l) => l.level === "error");
  t.equal(errors.length, 1, "one ASYNC failure, one error line");
  t.equal(errors[0]?.fields?.code, "INTERNAL");
  t.same(lines.filter((l) => l.level === "debug" && l.source === "node-1"), [], "no per-message line unless asked for");
  t.match(node.getStats(), { failed: 1, handled: 1 });
  t.same(loggingInterceptor(recordingLoggers().logger("x")).modes, [1, 3], "limited to ASYNC and BROADCAST (no caller hears of their failures): the SYNC path has no link");
});

t.test("interceptors - the logging link with perMessage writes start, end and error lines per message, with duration, code and peer", async (t) => {
  const { lines, logger } = recordingLoggers();
  const { client, node } = await wire({ inbound: [loggingInterceptor(logger("node-1"), { perMessage: true })] });
  await client.send("probe.Probe/FailLater", { message: "async boom" });
  await client.call("probe.Probe/Log", {});
  const errors = lines.filter((l) => l.level === "error");
  t.equal(errors.length, 1, "one ASYNC failure, one error line");
  t.match(errors[0]?.fields, { hook: "error", method: "probe.Probe/FailLater", code: "INTERNAL", error: /async boom/, peer: { id: "client-1", kind: "local" } });
  const debug = lines.filter((l) => l.level === "debug" && l.source === "node-1");
  t.same(
    debug.map((l) => [l.fields?.hook, l.fields?.method, l.fields?.code]),
    [
      ["start", "probe.Probe/FailLater", undefined],
      ["start", "probe.Probe/Log", undefined],
      ["end", "probe.Probe/Log", "OK"],
    ],
  );
  t.ok([...debug, ...errors].every((l) => (l.fields?.peer as { kind?: string })?.kind === "local" && (l.fields?.peer as { id?: string })?.id === "client-1"), "each names its peer: the caller's id, in this process");
  const outcomes = [...debug, ...errors].filter((l) => l.fields?.hook !== "start");
  t.ok(outcomes.every((l) => typeof l.fields?.durationMs === "number" && (l.fields.durationMs as number) >= 0), "each outcome with its duration");
  t.match(node.getStats(), { failed: 1, handled: 1 });
});

t.test("interceptors - a coded ASYNC failure is logged with its code; a SYNC one is answered, not logged as an error", async (t) => {
  const component = withHandlers(probe, {
    "probe.Probe/Record": () => {
      throw new NodeBinError("FAILED_PRECONDITION", "not now");
    },
  });
  const { client, lines } = await wire({ component });
  await client.send("probe.Probe/Record", { tag: "x" });
  t.equal((await rejection(client.call("probe.Probe/Fail", { message: "no", code: "ABORTED" }))).code, "ABORTED");
  const errors = lines.filter((l) => l.level === "error");
  t.same(
    errors.map((l) => l.fields?.code),
    ["FAILED_PRECONDITION"],
  );
});

t.test("interceptors - an empty list installs none: ASYNC failures are only counted", async (t) => {
  const { client, node, lines } = await wire({ inbound: [] });
  await client.send("probe.Probe/FailLater", { message: "quiet" });
  await client.call("probe.Probe/Log", {});
  t.same(lines, []);
  t.match(node.getStats(), { failed: 1, handled: 1 });
});

t.test("interceptors - the logging link also sees refusals by links inside it", async (t) => {
  const { lines, logger } = recordingLoggers();
  const { client } = await wire({ inbound: [loggingInterceptor(logger("node-1"), { perMessage: true }), (_next) => refuse("PERMISSION_DENIED")] });
  await client.send("probe.Probe/Record", { tag: "x" });
  await rejection(client.call("probe.Probe/Log", {}));
  t.same(
    lines.filter((l) => l.level === "error").map((l) => l.fields?.code),
    ["PERMISSION_DENIED"],
    "the ASYNC refusal, logged",
  );
  t.same(
    lines.filter((l) => l.level === "debug").map((l) => [l.fields?.hook, l.fields?.code]),
    [
      ["start", undefined],
      ["start", undefined],
      ["error", "PERMISSION_DENIED"],
    ],
    "the SYNC refusal at debug level (the ASYNC one is the error line)",
  );
});

t.test("interceptors - the outbound logging link logs failed calls at debug level with their code", async (t) => {
  const { lines, logger } = recordingLoggers();
  const { client } = await wire({ outbound: [outboundLoggingInterceptor(logger("client-1"))], inbound: [] });
  await client.call("probe.Probe/Echo", { text: "fine" });
  t.same(lines, [], "a call that succeeded leaves no line");
  t.equal((await rejection(client.call("probe.Probe/Fail", { message: "no", code: "NOT_FOUND" }))).code, "NOT_FOUND");
  t.equal(lines.length, 1);
  t.equal(lines[0]?.level, "debug");
  t.match(lines[0]?.fields, { method: "probe.Probe/Fail", to: "node-1", code: "NOT_FOUND" });
});

t.test("interceptors - an outbound link that never settles still ends the call at its deadline", async (t) => {
  const clock = new ManualClock();
  const stuck: OutboundInterceptor = () => () => new Promise(() => {});
  const { client, requestsSent } = await wire({ outbound: [stuck], clock });
  const call = client.call("probe.Probe/Echo", { text: "x" }, { timeoutMs: 3000 });
  let settled = false;
  call.catch(() => {}).finally(() => (settled = true));
  await clock.advance(2999);
  t.notOk(settled);
  await clock.advance(1);
  t.equal((await rejection(call)).code, "DEADLINE_EXCEEDED");
  t.equal(requestsSent(), 0);
});
