import t from "tap";
import { loadComponent } from "../../src/component/loader.ts";
import type { MethodSchema } from "../../src/wire/schema.ts";
import { MembershipTable, type NodeEntry } from "../../src/membership/table.ts";
import { MAX_ATTEMPTS, RoutingCaller, type CallerConfig, type Sender } from "../../src/routing/caller.ts";
import { UNHANDLED_DETAIL, isUnhandled } from "../../src/wire/errors.ts";
import { Router } from "../../src/routing/router.ts";
import { decodeEnvelope, encodeResponse, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError, type Code } from "../../src/wire/errors.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { Mode } from "../../src/wire/schema.ts";
import { rejection, thrown } from "../lib/expect-error.ts";
import { examplePath } from "../lib/fixture-components.ts";
import { seededRandom } from "../lib/seeded-random.ts";

const greeter = await loadComponent(examplePath("greeter"));
const HELLO = greeter.schema.methods.get("demo.Greeter/Hello")!;

/** A greeter node in this process; `queued` orders the first pick (the less loaded wins). */
function node(id: string, queued = 0): NodeEntry {
  return {
    id,
    component: "greeter",
    version: "1",
    host: "h1",
    network: "",
    endpoints: [],
    methods: [...greeter.schema.methods.values()].map((m) => ({ name: m.fullName, mode: m.mode })),
    schema: greeter.schema.id,
    load: { queued, capacity: 10 },
  };
}

/** What a fake node answers to one request: a reply, an error, or nothing at all. */
type Answer = { value?: Uint8Array; error?: NodeBinError } | "silent";
/** Per node: its answer to the n-th request it receives (n from 0). */
type Script = (n: number, env: Envelope) => Answer;

const ok: Script = () => ({ value: encodeMessage(HELLO.responseType, { message: "hi" }, "reply") });
const refuse =
  (code: Code, unhandled = true): Script =>
  () => ({ error: new NodeBinError(code, `refused (${code})`, { details: unhandled ? { [UNHANDLED_DETAIL]: "true" } : {} }) });
const draining = refuse("UNAVAILABLE");
const full = refuse("RESOURCE_EXHAUSTED");
/** Refuses with `first` for its first `times` requests, then behaves as `then`. */
const refusesFirst =
  (times: number, first: Script, then: Script = ok): Script =>
  (n, env) =>
    n < times ? first(n, env) : then(n - times, env);

/**
 * A table of nodes, a router and a caller whose fake sender decodes each
 * frame and answers it (a turn of the event loop later, as a network would)
 * from the script of the node it went to.
 */
function setup(nodes: Record<string, Script>, config: Partial<CallerConfig> = {}, load: Record<string, number> = {}) {
  const table = new MembershipTable();
  const scripts = new Map(Object.entries(nodes));
  for (const id of scripts.keys()) table.upsert(node(id, load[id] ?? 0), greeter.schema);
  const router = new Router(table, { inProcess: () => true, host: "h1", network: "" }, { random: seededRandom(7) });
  const sent: { to: string; env: Envelope; at: number }[] = [];
  const received = new Map<string, number>();
  const sender: Sender = {
    send(to, frame) {
      const env = decodeEnvelope(frame);
      if (env instanceof NodeBinError) throw env;
      sent.push({ to, env, at: Date.now() });
      const n = received.get(to) ?? 0;
      received.set(to, n + 1);
      const script = scripts.get(to);
      if (!script) throw new NodeBinError("UNAVAILABLE", `no node ${to}`);
      const answer = script(n, env);
      if (answer === "silent") return;
      setImmediate(() => {
        const error = answer.error?.toWire();
        if (error) error.origin ||= to; // as the runtime fills it in
        const reply = decodeEnvelope(encodeResponse(env, to, answer.value, error));
        if (reply instanceof NodeBinError) throw reply;
        caller.handleResponse(reply);
      });
    },
  };
  const caller = new RoutingCaller({ id: "me", router, sender, ...config });
  /** Adds a node to the table (as a pull or gossip would). */
  const add = (id: string, script: Script) => {
    scripts.set(id, script);
    table.upsert(node(id), greeter.schema);
  };
  return { caller, sent, table, router, add, tos: () => sent.map((s) => s.to) };
}

t.test("retry - isUnhandled reads details.unhandled", async (t) => {
  t.equal(UNHANDLED_DETAIL, "unhandled");
  t.ok(isUnhandled(new NodeBinError("UNAVAILABLE", "x", { details: { unhandled: "true" } })));
  t.notOk(isUnhandled(new NodeBinError("UNAVAILABLE", "x")));
  t.notOk(isUnhandled(new NodeBinError("UNAVAILABLE", "x", { details: { unhandled: "false" } })));
});

t.test("retry - Router.pick skips excluded nodes; NOT_FOUND when none is left", async (t) => {
  const { router } = setup({ a: ok, b: ok });
  const route = router.route("demo.Greeter/Hello");
  for (let i = 0; i < 10; i++) t.equal(router.pick(route, "any", new Set(["a"])).id, "b");
  t.equal(router.pick(route, "any", new Set()).id.length, 1, "an empty set excludes nothing");
  const err = thrown(() => router.pick(route, "any", new Set(["a", "b"])));
  t.equal(err.code, "NOT_FOUND");
  t.match(err.message, /2 excluded/);
  const single = setup({ only: ok }).router;
  t.equal(thrown(() => single.pick(single.route("demo.Greeter/Hello"), "any", new Set(["only"]))).code, "NOT_FOUND", "the single-node shortcut honours it too");
  t.equal(thrown(() => router.pick(route, "galaxy" as never, new Set(["a", "b"]))).code, "INVALID_ARGUMENT", "an unknown scope is still INVALID_ARGUMENT");
});

t.test("retry - a call refused by a draining node is sent to the other node", async (t) => {
  const { caller, tos } = setup({ a: draining, b: ok }, {}, { b: 5 });
  t.same(await caller.call("demo.Greeter/Hello", { name: "x" }), { message: "hi" });
  t.same(tos(), ["a", "b"]);
  t.equal(caller.inFlight, 0);
});

t.test("retry - a send (ASYNC) is re-routed the same way", async (t) => {
  const { caller, sent, tos } = setup({ a: draining, b: ok }, {}, { b: 5 });
  t.equal(await caller.send("demo.Greeter/Sign", { name: "x" }), undefined);
  t.same(tos(), ["a", "b"]);
  t.equal(sent[1]!.env.mode, Mode.ASYNC);
});

t.test("retry - while it waits between sends the call counts as in flight", async (t) => {
  const { caller, add } = setup({ a: draining });
  const call = caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 2000 });
  await new Promise((r) => setTimeout(r, 5));
  t.equal(caller.inFlight, 1);
  add("b", ok);
  await call;
  t.equal(caller.inFlight, 0);
});

t.test("retry - every node refuses, then a new node appears in the table: the call succeeds there", async (t) => {
  const { caller, add, tos } = setup({ a: draining, b: draining });
  const began = Date.now();
  const call = caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 5000 });
  setTimeout(() => add("c", ok), 60);
  t.same(await call, { message: "hi" });
  t.equal(tos().at(-1), "c");
  t.ok(Date.now() - began < 1000, "woken by the table change, not at the deadline");
  t.ok(tos().length < MAX_ATTEMPTS);
});

t.test("retry - onStale is called when every node refused, and a rejecting onStale does no harm", async (t) => {
  let stale = 0;
  const env = setup(
    { a: draining },
    {
      onStale: async () => {
        stale++;
        if (stale === 1) throw new Error("pull failed");
        env.add("fresh", ok); // the refreshed table brings a new node
      },
    },
  );
  t.same(await env.caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 5000 }), { message: "hi" });
  t.equal(stale, 2, "once per round: the first failed, the second brought the node");
  t.same(env.tos(), ["a", "a", "fresh"], "the refused node was asked again after the backoff, then the new one");
});

t.test("retry - a node that refused while starting is asked again after a backoff", async (t) => {
  const { caller, sent } = setup({ a: refusesFirst(1, draining) });
  t.same(await caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 3000 }), { message: "hi" });
  t.same(
    sent.map((s) => s.to),
    ["a", "a"],
  );
  t.ok(sent[1]!.at - sent[0]!.at >= 15, `backed off (${sent[1]!.at - sent[0]!.at} ms)`);
  t.ok(sent[1]!.env.deadlineMs < sent[0]!.env.deadlineMs, `the retry carries the remaining budget (${sent[0]!.env.deadlineMs} then ${sent[1]!.env.deadlineMs})`);
  t.equal(sent[0]!.env.deadlineMs, 3000);
  t.ok(sent[1]!.env.deadlineMs <= 3000 - 15);
  t.equal(sent[1]!.env.method, sent[0]!.env.method);
  t.same(Array.from(sent[1]!.env.value), Array.from(sent[0]!.env.value), "the same request");
  t.not(sent[1]!.env.id, sent[0]!.env.id, "a new envelope id");
});

t.test("retry - handled errors are not retried", async (t) => {
  for (const [name, script, code] of [
    ["UNAVAILABLE without the detail", refuse("UNAVAILABLE", false), "UNAVAILABLE"],
    ["INTERNAL", refuse("INTERNAL", false), "INTERNAL"],
    ["INTERNAL even marked unhandled", refuse("INTERNAL"), "INTERNAL"],
    ["DEADLINE_EXCEEDED", refuse("DEADLINE_EXCEEDED", false), "DEADLINE_EXCEEDED"],
  ] as const) {
    const { caller, tos } = setup({ a: script, b: ok }, {}, { b: 5 });
    t.equal((await rejection(caller.call("demo.Greeter/Hello", { name: "x" }))).code, code, name);
    t.same(tos(), ["a"], `${name}: one send`);
  }
});

t.test("retry - a sender failure (not an unhandled refusal) is not retried", async (t) => {
  const unreachable: Script = () => {
    throw new NodeBinError("UNAVAILABLE", "socket closed");
  };
  const { caller, tos } = setup({ a: unreachable, b: ok }, {}, { b: 5 });
  t.equal((await rejection(caller.call("demo.Greeter/Hello", { name: "x" }))).code, "UNAVAILABLE");
  t.same(tos(), ["a"]);
});

t.test("retry - when attempts run out the call fails with the last refusal", async (t) => {
  const { caller, sent } = setup({ a: draining, b: draining, c: draining, d: draining });
  const err = await rejection(caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 10_000 }));
  t.equal(err.code, "UNAVAILABLE");
  t.equal(err.details[UNHANDLED_DETAIL], "true");
  t.equal(sent.length, MAX_ATTEMPTS, `${MAX_ATTEMPTS} sends`);
  t.equal(err.origin, sent.at(-1)!.to, "the error of the last send");
  t.equal(caller.inFlight, 0);
  // every round asks each node once
  for (let round = 0; round < MAX_ATTEMPTS / 4; round++) t.equal(new Set(sent.slice(round * 4, round * 4 + 4).map((s) => s.to)).size, 4, `round ${round}`);
});

t.test("retry - the deadline is kept while nodes keep refusing", async (t) => {
  const { caller, sent } = setup({ a: draining, b: draining });
  const began = Date.now();
  const err = await rejection(caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 250 }));
  const took = Date.now() - began;
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.equal(err.details.refused, "UNAVAILABLE");
  t.ok(took >= 240 && took < 400, `rejected near its deadline (${took} ms)`);
  t.ok(sent.length < MAX_ATTEMPTS);
  for (let i = 1; i < sent.length; i++) t.ok(sent[i]!.env.deadlineMs <= sent[i - 1]!.env.deadlineMs, "budgets only shrink");
  t.equal(caller.inFlight, 0);
});

t.test("retry - an inherited deadline bounds the retries too", async (t) => {
  const { caller } = setup({ a: draining });
  const began = Date.now();
  const err = await rejection(caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 60_000, deadline: Date.now() + 120 }));
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.ok(Date.now() - began < 300, "not later");
});

t.test("retry - a retried send that gets no answer ends at the first deadline", async (t) => {
  const { caller, tos } = setup({ a: draining, b: () => "silent" }, {}, { b: 5 });
  const began = Date.now();
  const err = await rejection(caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 150 }));
  const took = Date.now() - began;
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.same(tos(), ["a", "b"]);
  t.ok(took >= 140 && took < 300, `at the first deadline (${took} ms)`);
});

t.test("retry - close cancels a call waiting between sends", async (t) => {
  const { caller } = setup({ a: draining });
  const call = caller.call("demo.Greeter/Hello", { name: "x" }, { timeoutMs: 10_000 });
  await new Promise((r) => setTimeout(r, 10));
  const began = Date.now();
  caller.close();
  t.equal((await rejection(call)).code, "CANCELLED");
  t.ok(Date.now() - began < 100, "at once");
  t.equal(caller.inFlight, 0);
});

t.test("retry - RESOURCE_EXHAUSTED without capacityWaitMs fails at once", async (t) => {
  const asked: string[] = [];
  const { caller, tos } = setup({ a: full, b: ok }, { requestCapacity: (n) => asked.push(n.id) }, { b: 5 });
  const err = await rejection(caller.call("demo.Greeter/Hello", { name: "x" }));
  t.equal(err.code, "RESOURCE_EXHAUSTED");
  t.same(tos(), ["a"]);
  t.same(asked, [], "no capacity asked for");
  const zero = setup({ a: full }, { requestCapacity: (n) => asked.push(n.id) });
  t.equal((await rejection(zero.caller.call("demo.Greeter/Hello", { name: "x" }, { capacityWaitMs: 0 }))).code, "RESOURCE_EXHAUSTED");
  t.same(zero.tos(), ["a"]);
});

t.test("retry - with capacityWaitMs a full node that has room within it takes the call, and no capacity is asked for", async (t) => {
  const asked: { node: NodeEntry; method: MethodSchema }[] = [];
  const { caller, tos } = setup({ a: refusesFirst(3, full) }, { requestCapacity: (node, method) => asked.push({ node, method }) });
  t.same(await caller.call("demo.Greeter/Hello", { name: "x" }, { capacityWaitMs: 2000, timeoutMs: 5000 }), { message: "hi" });
  t.same(tos(), ["a", "a", "a", "a"], "the full node itself is asked again");
  t.equal(asked.length, 0, "room came within the capacity wait: nothing asked");
});

t.test("retry - no room within capacityWaitMs: capacity is asked for, with the call's scope, and the call waits on", async (t) => {
  const asked: { node: NodeEntry; method: MethodSchema; scope: string; at: number }[] = [];
  const began = Date.now();
  const { caller } = setup({ a: refusesFirst(12, full) }, { requestCapacity: (node, method, scope) => asked.push({ node, method, scope, at: Date.now() - began }) });
  t.same(await caller.call("demo.Greeter/Hello", { name: "x" }, { capacityWaitMs: 30, timeoutMs: 10_000, scope: "network" }), { message: "hi" });
  t.ok(asked.length >= 1, `asked (${asked.length} times)`);
  t.ok(asked[0]!.at >= 29, `not before the capacity wait ended (${asked[0]!.at} ms)`);
  t.equal(asked[0]!.node.id, "a");
  t.equal(asked[0]!.method.fullName, "demo.Greeter/Hello");
  t.equal(asked[0]!.scope, "network");
});

t.test("retry - with capacityWaitMs another node with room is preferred", async (t) => {
  const { caller, tos } = setup({ a: full, b: ok }, { requestCapacity: () => {} }, { b: 5 });
  t.same(await caller.call("demo.Greeter/Hello", { name: "x" }, { capacityWaitMs: 1000 }), { message: "hi" });
  t.same(tos(), ["a", "b"]);
});

t.test("retry - a throwing requestCapacity is ignored", async (t) => {
  const { caller } = setup(
    { a: refusesFirst(1, full) },
    {
      requestCapacity: () => {
        throw new Error("no governor");
      },
    },
  );
  t.same(await caller.call("demo.Greeter/Hello", { name: "x" }, { capacityWaitMs: 1000 }), { message: "hi" });
});

t.test("retry - past capacityWaitMs the call asks for capacity now and then and waits to its deadline", async (t) => {
  const at: number[] = [];
  const began = Date.now();
  const { caller, sent } = setup({ a: full }, { requestCapacity: () => at.push(Date.now() - began) });
  const err = await rejection(caller.call("demo.Greeter/Hello", { name: "x" }, { capacityWaitMs: 100, timeoutMs: 700 }));
  const took = Date.now() - began;
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.equal(err.details.refused, "RESOURCE_EXHAUSTED", "naming the last refusal");
  t.ok(took >= 690 && took < 1500, `at the deadline (${took} ms)`);
  t.ok(at.length >= 2 && at.length <= 4, `capacity asked for every 250 ms from the end of the wait (${at.join(", ")} ms)`);
  t.ok(at[0]! >= 99, `first at the end of the capacity wait (${at[0]} ms)`);
  t.ok(sent.length >= 3, `retried with a backoff (${sent.length} sends)`);
  t.equal(caller.inFlight, 0);
});

t.test("retry - the deadline cuts a longer capacity wait short", async (t) => {
  const { caller } = setup({ a: full });
  const began = Date.now();
  const err = await rejection(caller.call("demo.Greeter/Hello", { name: "x" }, { capacityWaitMs: 60_000, timeoutMs: 150 }));
  t.equal(err.code, "DEADLINE_EXCEEDED");
  t.equal(err.details.refused, "RESOURCE_EXHAUSTED");
  t.ok(Date.now() - began < 300);
});

t.test("retry - a node added during the capacity wait takes the call", async (t) => {
  const { caller, add, tos } = setup({ a: full }, { requestCapacity: () => setTimeout(() => add("grown", ok), 30) });
  const began = Date.now();
  t.same(await caller.call("demo.Greeter/Hello", { name: "x" }, { capacityWaitMs: 20 }), { message: "hi" });
  t.equal(tos().at(-1), "grown");
  t.ok(Date.now() - began < 1000);
});

t.test("retry - capacityWaitMs must be a finite number, 0 or more", async (t) => {
  const { caller, sent } = setup({ a: ok });
  for (const capacityWaitMs of [-1, Number.NaN, Infinity, "5" as unknown as number]) {
    t.equal((await rejection(caller.call("demo.Greeter/Hello", { name: "x" }, { capacityWaitMs }))).code, "INVALID_ARGUMENT", `capacityWaitMs ${String(capacityWaitMs)}`);
  }
  t.equal(sent.length, 0, "nothing sent");
  t.same(await caller.call("demo.Greeter/Hello", { name: "x" }, { capacityWaitMs: 0 }), { message: "hi" });
});

t.test("retry - callEndpoint is never re-routed", async (t) => {
  const { caller, tos } = setup({ a: draining, b: ok });
  t.equal((await rejection(caller.callEndpoint({ method: HELLO, to: "a", request: { name: "x" } }))).code, "UNAVAILABLE");
  t.same(tos(), ["a"]);
});
