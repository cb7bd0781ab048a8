import t from "tap";
import { loadComponent, type Component } from "../../src/component/loader.ts";
import type { Container } from "../../src/container/container.ts";
import { Kind, Plane, encodeEnvelope, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { Mode } from "../../src/wire/schema.ts";
import { deferred } from "../lib/deferred.ts";
import { rejection } from "../lib/expect-error.ts";
import { gatedHandler } from "../lib/gated-handler.ts";
import { examplePath, loadFixture, startContainer, withHandlers } from "../lib/fixture-components.ts";

const probe = await loadFixture("components-probe/probe");
const greeter = await loadComponent(examplePath("greeter"));

/** Delivers a hand-built request to the only node of `component` and resolves with the envelope answering it. */
async function deliverByHand(c: Container, component: Component, fields: Partial<Envelope>): Promise<Envelope> {
  const node = c.localNodes().find((n) => n.component.name === component.name)!;
  const answer = deferred<Envelope>();
  c.direct.attach("hand", (env) => answer.resolve(env));
  try {
    const delivered = c.direct.deliver(node.id, encodeEnvelope(envelope({ id: 1, from: "hand", to: node.id, ...fields })));
    if (!delivered) throw new Error("not delivered");
    return await answer.promise;
  } finally {
    c.direct.detach("hand");
  }
}

t.test("modes - call() on an ASYNC method is INVALID_ARGUMENT", async (t) => {
  const c = await startContainer([greeter]);
  t.teardown(() => c.close());
  const err = await rejection(c.caller.call("demo.Greeter/Sign", { name: "Ada" }));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.same(err.details, { method: "demo.Greeter/Sign", mode: "ASYNC" });
  t.same(await c.caller.call("demo.Greeter/Guests", {}), { names: [] }, "nothing was signed");
});

t.test("modes - send() on a SYNC method is INVALID_ARGUMENT", async (t) => {
  const c = await startContainer([greeter]);
  t.teardown(() => c.close());
  const err = await rejection(c.caller.send("demo.Greeter/Hello", { name: "Ada" }));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.same(err.details, { method: "demo.Greeter/Hello", mode: "SYNC" });
});

t.test("modes - call() and send() on STREAM and BROADCAST methods are refused by the caller", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  for (const method of ["probe.Probe/Watch", "probe.Probe/Shout"]) {
    t.equal((await rejection(c.caller.call(method, { tag: "x" }))).code, "INVALID_ARGUMENT", `call ${method}`);
    t.equal((await rejection(c.caller.send(method, { tag: "x" }))).code, "INVALID_ARGUMENT", `send ${method}`);
  }
  const err = await rejection(c.caller.call("probe.Probe/Watch", { tag: "x" }));
  t.match(err.message, /stream it \(ctx\.stream, client\.stream, `node-bin client stream`\)/, "call on a STREAM method names the verb to use");
  t.same(err.details, { method: "probe.Probe/Watch", mode: "STREAM" });
});

t.test("modes - stream() on a SYNC or ASYNC method is INVALID_ARGUMENT naming the verb to use", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  const sync = await rejection(c.caller.stream("probe.Probe/Echo", { text: "x" }).next());
  t.equal(sync.code, "INVALID_ARGUMENT");
  t.match(sync.message, /call it/);
  const async = await rejection(c.caller.stream("probe.Probe/Record", { tag: "x" }).next());
  t.equal(async.code, "INVALID_ARGUMENT");
  t.match(async.message, /send it/);
  t.same(c.caller.streamResources, { streams: 0, timers: 0 }, "nothing held");
});

t.test("modes - send() resolves once the node accepted the message; the handler runs later", async (t) => {
  const gated = gatedHandler();
  const c = await startContainer([withHandlers(probe, { "probe.Probe/Echo": gated.handler })]);
  t.teardown(() => c.close());
  const node = c.localNodes()[0]!;
  const busy = c.caller.call("probe.Probe/Echo", { text: "busy" });
  await gated.entered("busy");
  const sent = await c.caller.send("probe.Probe/Record", { tag: "queued" });
  t.equal(sent, undefined, "resolves with nothing");
  t.equal(node.state.tags, undefined, "accepted, not yet handled: the node is busy");
  t.equal(node.getStats().queued, 1, "waiting in the queue");
  gated.release("busy");
  await busy;
  t.same(await c.caller.call("probe.Probe/Log", {}), { tags: ["queued"], initialized: true }, "then handled");
});

t.test("modes - a failing ASYNC handler does not fail the send", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  await t.resolves(c.caller.send("probe.Probe/FailLater", { message: "nobody hears this" }));
  t.same(await c.caller.call("probe.Probe/Log", {}), { tags: [], initialized: true }, "the node keeps serving");
  t.match(c.localNodes()[0]!.getStats(), { failed: 1 });
});

t.test("modes - a hand-built BROADCAST request sent point to point is INVALID_ARGUMENT at the node", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  const cases: [string, number][] = [["probe.Probe/Shout", Mode.BROADCAST]];
  for (const [method, mode] of cases) {
    const schema = probe.schema.methods.get(method)!;
    const answer = await deliverByHand(c, probe, { method, mode: mode as Mode, value: encodeMessage(schema.requestType, { tag: "x" }, "test") });
    t.equal(answer.kind, Kind.RESPONSE, method);
    t.equal(answer.id, 1);
    t.ok(answer.error, "an error");
    t.equal(NodeBinError.fromWire(answer.error!).code, "INVALID_ARGUMENT", method);
    t.match(answer.error!.message, /broadcast it/, "it names the verb");
  }
  t.match(c.localNodes()[0]!.getStats(), { rejected: 1, handled: 0 }, "no handler ran");
});

t.test("modes - a hand-built request in the wrong mode is INVALID_ARGUMENT at the node", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  const answer = await deliverByHand(c, probe, { method: "probe.Probe/Record", mode: Mode.SYNC });
  t.equal(NodeBinError.fromWire(answer.error!).code, "INVALID_ARGUMENT");
  t.equal(answer.error?.details.mode, "ASYNC");
  const plane = await deliverByHand(c, probe, { method: "probe.Probe/Echo", plane: Plane.CONTROL });
  t.equal(NodeBinError.fromWire(plane.error!).code, "UNIMPLEMENTED", "nodes serve no control-plane methods");
});
