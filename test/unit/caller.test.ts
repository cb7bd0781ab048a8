import t from "tap";
import { loadComponent } from "../../src/component/loader.ts";
import { MembershipTable } from "../../src/membership/table.ts";
import { ManualClock, type Clock } from "../../src/platform/clock.ts";
import { RoutingCaller, type Sender } from "../../src/routing/caller.ts";
import { Router } from "../../src/routing/router.ts";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, encodeResponse, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { Mode } from "../../src/wire/schema.ts";
import { rejection } from "../lib/expect-error.ts";
import { examplePath } from "../lib/fixture-components.ts";

const greeter = await loadComponent(examplePath("greeter"));
const HELLO = greeter.schema.methods.get("demo.Greeter/Hello")!;

/** A caller whose sender records every request instead of delivering it; the test answers by hand. */
function setup(options: { defaultTimeoutMs?: number; settleMs?: number; clock?: Clock; send?: (to: string, frame: Uint8Array) => void } = {}) {
  const table = new MembershipTable();
  table.upsert(
    {
      id: "greeter-1",
      component: "greeter",
      version: "1",
      host: "h1",
      network: "",
      endpoints: [],
      methods: [...greeter.schema.methods.values()].map((m) => ({ name: m.fullName, mode: m.mode })),
      schema: greeter.schema.id,
      load: { queued: 0, capacity: 10 },
    },
    greeter.schema,
  );
  const router = new Router(table, { inProcess: () => true, host: "h1", network: "" }, options.clock ? { clock: options.clock } : {});
  const sent: { to: string; env: Envelope }[] = [];
  const sender: Sender = {
    send(to, frame) {
      options.send?.(to, frame);
      const env = decodeEnvelope(frame);
      if (env instanceof NodeBinError) throw env;
      sent.push({ to, env });
    },
  };
  const caller = new RoutingCaller({
    id: "me",
    router,
    sender,
    ...(options.defaultTimeoutMs ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
    ...(options.settleMs ? { settleMs: options.settleMs } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  /** Answers the request `sent[i]` as the node would. */
  const answer = (i: number, value?: Uint8Array, error?: NodeBinError) => {
    const reply = decodeEnvelope(encodeResponse(sent[i]!.env, "greeter-1", value, error?.toWire()));
    if (reply instanceof NodeBinError) throw reply;
    caller.handleResponse(reply);
  };
  return { caller, sent, answer, router };
}

const helloReply = (message: string) => encodeMessage(HELLO.responseType, { message }, "reply");

t.test("caller - a call sends one REQUEST envelope to the picked node", async (t) => {
  const { caller, sent, answer } = setup();
  const before = Date.now();
  const reply = caller.call("demo.Greeter/Hello", { name: "Ada" }, { timeoutMs: 5000, meta: { via: "t" }, state: new Uint8Array([7]) });
  t.equal(sent.length, 1);
  const { to, env } = sent[0]!;
  t.equal(to, "greeter-1");
  t.match(env, { kind: Kind.REQUEST, plane: Plane.APPLICATION, mode: Mode.SYNC, from: "me", to: "greeter-1", method: "demo.Greeter/Hello" });
  t.same({ ...env.meta }, { via: "t" });
  t.same(Array.from(env.state), [7]);
  t.ok(env.deadlineMs <= 5000 && env.deadlineMs > 5000 - (Date.now() - before) - 1, `deadlineMs is the time left (${env.deadlineMs})`);
  t.equal(caller.inFlight, 1);
  answer(0, helloReply("hi"));
  t.same(await reply, { message: "hi" });
  t.equal(caller.inFlight, 0);
});

t.test("caller - concurrent calls get distinct ids and each its own answer", async (t) => {
  const { caller, sent, answer } = setup();
  const calls = ["a", "b", "c"].map((name) => caller.call("demo.Greeter/Hello", { name }));
  t.equal(new Set(sent.map((s) => s.env.id)).size, 3);
  answer(2, helloReply("third"));
  answer(0, helloReply("first"));
  answer(1, helloReply("second"));
  t.same(await Promise.all(calls), [{ message: "first" }, { message: "second" }, { message: "third" }]);
});

t.test("caller - an error response rejects with the callee's code, details and origin", async (t) => {
  const { caller, answer } = setup();
  const call = caller.call("demo.Greeter/Hello", { name: "x" });
  answer(0, undefined, new NodeBinError("PERMISSION_DENIED", "no", { details: { why: "because" }, origin: "greeter-1" }));
  const err = await rejection(call);
  t.equal(err.code, "PERMISSION_DENIED");
  t.same(err.details, { why: "because" });
  t.equal(err.origin, "greeter-1");
});

t.test("caller - a reply that does not decode is INTERNAL from the responder", async (t) => {
  const { caller, answer } = setup();
  const call = caller.call("demo.Greeter/Hello", { name: "x" });
  answer(0, new Uint8Array([0x0f])); // field 1 with wire type 7, which does not exist
  const err = await rejection(call);
  t.equal(err.code, "INTERNAL");
  t.equal(err.origin, "greeter-1");
});

t.test("caller - send resolves on the node's acceptance", async (t) => {
  const { caller, sent, answer } = setup();
  const sending = caller.send("demo.Greeter/Sign", { name: "x" });
  t.equal(sent[0]?.env.mode, Mode.ASYNC);
  answer(0);
  t.equal(await sending, undefined);
});

t.test("caller - responses nobody waits for are dropped", async (t) => {
  const { caller } = setup();
  t.doesNotThrow(() => caller.handleResponse(envelope({ id: 12345, kind: Kind.RESPONSE })));
  t.equal(caller.inFlight, 0);
});

t.test("caller - no answer within timeoutMs is DEADLINE_EXCEEDED; a late answer is ignored", async (t) => {
  const { caller, sent, answer } = setup();
  const began = Date.now();
  const err = await rejection(caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 40 }));
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.same(err.details, { method: "demo.Greeter/Hello", to: "greeter-1" });
  t.ok(Date.now() - began >= 39, "not before the deadline");
  t.equal(caller.inFlight, 0);
  t.doesNotThrow(() => answer(0, helloReply("too late")));
  t.equal(sent.length, 1);
});

t.test("caller - the default timeout applies when none is given", async (t) => {
  const { caller, sent } = setup({ defaultTimeoutMs: 30 });
  const err = await rejection(caller.call("demo.Greeter/Hello", { name: "x" }));
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.ok(sent[0]!.env.deadlineMs <= 30);
  const { caller: standard, sent: sentStandard } = setup();
  void standard.call("demo.Greeter/Hello", { name: "x" }).catch(() => {});
  t.ok(sentStandard[0]!.env.deadlineMs > 29_000 && sentStandard[0]!.env.deadlineMs <= 30_000, "30 s by default");
  standard.close();
});

t.test("caller - an inherited deadline shortens the timeout; a passed one fails without sending", async (t) => {
  const { caller, sent } = setup();
  void caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 60_000, deadline: Date.now() + 1000 }).catch(() => {});
  t.ok(sent[0]!.env.deadlineMs <= 1000, `deadlineMs ${sent[0]!.env.deadlineMs} <= 1000`);
  const err = await rejection(caller.call("demo.Greeter/Hello", { name: "x" }, { deadline: Date.now() - 5 }));
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.equal(sent.length, 1, "nothing more sent");
  caller.close();
});

t.test("caller - bad timeouts, wrong modes, unknown methods and bad requests fail before sending", async (t) => {
  const { caller, sent } = setup();
  for (const timeoutMs of [0, -1, Number.NaN, Infinity]) t.equal((await rejection(caller.call("demo.Greeter/Hello", {}, { timeoutMs }))).code, "INVALID_ARGUMENT", `timeoutMs ${timeoutMs}`);
  t.equal((await rejection(caller.call("demo.Greeter/Sign", {}))).code, "INVALID_ARGUMENT", "call on ASYNC");
  t.equal((await rejection(caller.send("demo.Greeter/Hello", {}))).code, "INVALID_ARGUMENT", "send on SYNC");
  t.equal((await rejection(caller.call("demo.Greeter/Nope", {}))).code, "NOT_FOUND");
  const bad = await rejection(caller.call("demo.Greeter/Hello", { name: ["x"] }));
  t.equal(bad.code, "INVALID_ARGUMENT");
  t.equal(bad.details.field, "name");
  t.equal(sent.length, 0);
  t.equal(caller.inFlight, 0);
});

t.test("caller - a sender failure rejects the call: its NodeBinError code, else UNAVAILABLE", async (t) => {
  const full = setup({
    send() {
      throw new NodeBinError("RESOURCE_EXHAUSTED", "buffer full");
    },
  });
  t.equal((await rejection(full.caller.call("demo.Greeter/Hello", { name: "x" }))).code, "RESOURCE_EXHAUSTED");
  t.equal(full.caller.inFlight, 0);
  const broken = setup({
    send() {
      throw new Error("socket closed");
    },
  });
  const err = await rejection(broken.caller.call("demo.Greeter/Hello", { name: "x" }));
  t.equal(err.code, "UNAVAILABLE");
  t.equal(err.message, "socket closed");
});

t.test("caller - callEndpoint calls an explicit endpoint on the plane given", async (t) => {
  const { caller, sent, answer } = setup();
  const call = caller.callEndpoint({ method: HELLO, to: "", plane: Plane.CONTROL, request: { name: "x" } });
  t.equal(sent[0]?.to, "");
  t.equal(sent[0]?.env.plane, Plane.CONTROL);
  t.equal(sent[0]?.env.mode, Mode.SYNC);
  answer(0, helloReply("direct"));
  t.same(await call, { message: "direct" });
  const bad = await rejection(caller.callEndpoint({ method: HELLO, to: "x", request: { name: 1 } }));
  t.equal(bad.details.field, "name");
});

t.test("caller - failCallsTo fails only the calls to matching endpoints, with UNAVAILABLE", async (t) => {
  const { caller, sent, answer } = setup();
  const a = caller.callEndpoint({ method: HELLO, to: "peer-a", request: {} });
  const b = caller.callEndpoint({ method: HELLO, to: "peer-b", request: {} });
  caller.failCallsTo((to) => to === "peer-a", "peer gone");
  const err = await rejection(a);
  t.equal(err.code, "UNAVAILABLE");
  t.equal(err.details.to, "peer-a");
  t.equal(caller.inFlight, 1);
  answer(1, helloReply("b lives"));
  t.same(await b, { message: "b lives" });
  t.equal(sent.length, 2);
});

t.test("caller - close cancels calls in flight and refuses new ones", async (t) => {
  const { caller, sent } = setup();
  const pending = caller.call("demo.Greeter/Hello", { name: "x" });
  caller.close();
  t.equal((await rejection(pending)).code, "CANCELLED");
  t.equal((await rejection(caller.call("demo.Greeter/Hello", { name: "y" }))).code, "CANCELLED");
  t.equal(sent.length, 1, "nothing sent after close");
});

t.test("caller - the longest timeout setTimeout can keep is accepted and sent as is", async (t) => {
  const { caller, sent, answer } = setup();
  const call = caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 2 ** 31 - 1 });
  await new Promise<void>((r) => setImmediate(r));
  t.equal(caller.inFlight, 1, "still waiting after a turn of the event loop");
  t.equal(sent[0]!.env.deadlineMs, 2 ** 31 - 1);
  answer(0, helloReply("patient"));
  t.same(await call, { message: "patient" });
});

t.test("caller - a timeout beyond it is INVALID_ARGUMENT: never wrapped in deadline_ms, never fired at once", async (t) => {
  const { caller, sent } = setup();
  for (const timeoutMs of [2 ** 31, 3_000_000_000, 2 ** 32, 2 ** 32 + 1000]) {
    t.equal((await rejection(caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs }))).code, "INVALID_ARGUMENT", `timeoutMs ${timeoutMs}`);
  }
  t.equal(sent.length, 0, "nothing sent");
});

t.test("caller - an envelope built by hand round trips through handleResponse", async (t) => {
  const { caller, sent } = setup();
  const call = caller.call("demo.Greeter/Hello", { name: "x" });
  const response = decodeEnvelope(
    encodeEnvelope(envelope({ id: sent[0]!.env.id, kind: Kind.RESPONSE, from: "greeter-1", to: "me", method: "demo.Greeter/Hello", value: helloReply("by hand") })),
  );
  caller.handleResponse(response as Envelope);
  t.same(await call, { message: "by hand" });
});

/** Whether `promise` has settled, read after the microtasks queued so far ran. */
function settledFlag(promise: Promise<unknown>): () => boolean {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  return () => settled;
}

t.test("caller - on a ManualClock a silent node's call is pending at 2,999 ms and DEADLINE_EXCEEDED at 3,000 ms", async (t) => {
  const clock = new ManualClock();
  const { caller, sent } = setup({ clock });
  const start = clock.now();
  const call = caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 3000 });
  const settled = settledFlag(call);
  t.equal(sent.length, 1, "sent, and never answered");
  t.equal(sent[0]!.env.deadlineMs, 3000);
  await clock.advance(2999);
  t.notOk(settled(), "still pending at 2,999 ms");
  t.equal(caller.inFlight, 1);
  await clock.advance(1);
  t.ok(settled(), "ended at 3,000 ms");
  const err = await rejection(call);
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.same(err.details, { method: "demo.Greeter/Hello", to: "greeter-1" });
  t.equal(clock.now() - start, 3000, "at 3,000 ms, by the clock");
  t.equal(caller.inFlight, 0);
  t.equal(clock.timers, 0, "no timer left behind");
});

t.test("caller - a deadline makes its node a suspect only if the node answered nothing since the call left", async (t) => {
  const clock = new ManualClock();
  const { caller, answer, router } = setup({ clock });
  const suspected: string[] = [];
  const suspect = router.suspect.bind(router);
  router.suspect = (id, ms) => {
    suspected.push(id);
    suspect(id, ms);
  };
  // A slow call and a quick one to the same node: the node answers the quick one after the slow one
  // left, so it is alive; the slow one's deadline blames nobody.
  const slow = caller.call("demo.Greeter/Hello", { name: "slow" }, { timeoutMs: 1000 });
  await clock.advance(10);
  const quick = caller.call("demo.Greeter/Hello", { name: "quick" }, { timeoutMs: 5000 });
  await clock.advance(10);
  answer(1, helloReply("quick"));
  t.same(await quick, { message: "quick" });
  await clock.advance(1000);
  t.equal((await rejection(slow)).code, "DEADLINE_EXCEEDED");
  t.same(suspected, [], "a node that answered since: not a suspect");

  // Silent since this call left (its last answer came before): a suspect.
  const silent = caller.call("demo.Greeter/Hello", { name: "silent" }, { timeoutMs: 1000 });
  await clock.advance(1000);
  t.equal((await rejection(silent)).code, "DEADLINE_EXCEEDED");
  t.same(suspected, ["greeter-1"], "silent since the call left: a suspect");

  // An error answer is an answer too.
  const failing = caller.call("demo.Greeter/Hello", { name: "failing" }, { timeoutMs: 1000 });
  const late = caller.call("demo.Greeter/Hello", { name: "late" }, { timeoutMs: 500 });
  await clock.advance(100);
  answer(3, undefined, new NodeBinError("INTERNAL", "boom", { origin: "greeter-1" }));
  t.equal((await rejection(failing)).code, "INTERNAL");
  await clock.advance(400);
  t.equal((await rejection(late)).code, "DEADLINE_EXCEEDED");
  t.same(suspected, ["greeter-1"], "a node that answered with an error since: not a suspect again");
});

t.test("caller - an answer before the deadline cancels its timer on the clock", async (t) => {
  const clock = new ManualClock();
  const { caller, answer } = setup({ clock });
  const call = caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 3000 });
  t.equal(clock.timers, 1);
  answer(0, helloReply("in time"));
  t.same(await call, { message: "in time" });
  t.equal(clock.timers, 0);
});

t.test("caller - the settle wait for an unknown method runs on the clock", async (t) => {
  const clock = new ManualClock();
  const { caller, sent } = setup({ clock, settleMs: 1000 });
  const call = caller.call("demo.Greeter/Nope", {});
  const settled = settledFlag(call);
  await clock.advance(999);
  t.notOk(settled(), "still waiting for the table at 999 ms");
  await clock.advance(1);
  t.ok(settled(), "given up at 1,000 ms");
  t.equal((await rejection(call)).code, "NOT_FOUND");
  t.equal(sent.length, 0);
});

t.test("caller - an answer is taken only on the link its request left on; one sprayed on another link is dropped and counted", async (t) => {
  const sent: Envelope[] = [];
  const table = new MembershipTable();
  table.upsert(
    { id: "greeter-1", component: "greeter", version: "1", host: "h1", network: "", endpoints: ["tcp://10.0.0.1:1"], methods: [{ name: HELLO.fullName, mode: HELLO.mode }], schema: greeter.schema.id, load: { queued: 0, capacity: 10 } },
    greeter.schema,
  );
  const router = new Router(table, { inProcess: () => false, host: "h1", network: "" });
  const caller = new RoutingCaller({
    id: "me",
    router,
    sender: {
      send(_to, frame) {
        sent.push(decodeEnvelope(frame) as Envelope);
        return "tcp://10.0.0.1:1"; // the connector's link to the node's endpoint
      },
    },
  });
  const reply = caller.call("demo.Greeter/Hello", { name: "Ada" }, { timeoutMs: 5000 });
  const forged = decodeEnvelope(encodeResponse(sent[0]!, "greeter-1", helloReply("forged"))) as Envelope;
  caller.handleResponse(forged, "tcp://6.6.6.6:1");
  caller.handleResponse(forged, undefined);
  t.equal(caller.foreignAnswers, 2, "both forged answers (another link, no link) dropped and counted");
  t.equal(caller.inFlight, 1, "the call still waits for its real answer");
  caller.handleResponse(decodeEnvelope(encodeResponse(sent[0]!, "greeter-1", helloReply("real"))) as Envelope, "tcp://10.0.0.1:1");
  t.same(await reply, { message: "real" });
});
