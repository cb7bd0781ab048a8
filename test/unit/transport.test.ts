import t from "tap";
import { loadComponent } from "../../src/component/loader.ts";
import type { NodeEntry } from "../../src/membership/table.ts";
import { DirectTransport } from "../../src/transport/direct.ts";
import { TransportStack } from "../../src/transport/stack.ts";
import { LOCAL_PEER, type Transport } from "../../src/transport/transport.ts";
import { Kind, decodeEnvelope, encodeEnvelope, encodeResponse, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { rejection, thrown } from "../lib/expect-error.ts";
import { examplePath, startContainer } from "../lib/fixture-components.ts";

/** A transport that routes only the ids it is given, and records what it carried. */
class FakeTransport implements Transport {
  readonly carried: { to: string; frame: Uint8Array }[] = [];
  closed = 0;
  constructor(
    readonly name: string,
    private readonly routes: Set<string>,
    private readonly onDeliver?: (to: string, frame: Uint8Array) => void,
  ) {}
  deliver(to: string, frame: Uint8Array): string | false {
    if (!this.routes.has(to)) return false;
    this.carried.push({ to, frame });
    this.onDeliver?.(to, frame);
    return this.name;
  }
  async close(): Promise<void> {
    this.closed++;
  }
}

const frame = encodeEnvelope(envelope({ id: 5, method: "a.B/C", to: "x" }));

t.test("transport - direct: attaching an id twice is ALREADY_EXISTS", async (t) => {
  const direct = new DirectTransport();
  direct.attach("node-1", () => {});
  const err = thrown(() => direct.attach("node-1", () => {}));
  t.equal(err.code, "ALREADY_EXISTS");
  direct.attach("", () => {});
  t.equal(thrown(() => direct.attach("", () => {})).code, "ALREADY_EXISTS", "also the process's own empty id");
});

t.test("transport - direct: delivers decoded envelopes to the endpoint with that id", async (t) => {
  const direct = new DirectTransport();
  const got: Envelope[] = [];
  direct.attach("x", (env) => got.push(env));
  t.equal(direct.deliver("x", frame), "local", "delivered on the process's own link");
  t.equal(got.length, 1);
  t.equal(got[0]?.id, 5);
  t.equal(got[0]?.method, "a.B/C");
  t.equal(direct.deliver("y", frame), false, "no such endpoint: punt");
  t.ok(direct.has("x"));
  t.notOk(direct.has("y"));
});

t.test("transport - direct: a frame that does not decode is counted and dropped", async (t) => {
  const direct = new DirectTransport();
  const got: Envelope[] = [];
  direct.attach("x", (env) => got.push(env));
  t.equal(direct.deliver("x", new Uint8Array([0xff, 0xff, 0xff])), "local", "routed, though not handed over");
  t.equal(direct.deliver("x", encodeEnvelope(envelope({ version: 99 }))), "local");
  t.equal(direct.dropped, 2);
  t.equal(got.length, 0);
});

t.test("transport - direct: dispatch hands over an envelope by its `to`; detach and close remove endpoints", async (t) => {
  const direct = new DirectTransport();
  const got: Envelope[] = [];
  direct.attach("x", (env) => got.push(env));
  t.equal(direct.dispatch(envelope({ to: "x", id: 9 }), LOCAL_PEER), true);
  t.equal(direct.dispatch(envelope({ to: "nobody" }), LOCAL_PEER), false);
  t.same(
    got.map((e) => e.id),
    [9],
  );
  direct.detach("x");
  t.equal(direct.deliver("x", frame), false);
  t.doesNotThrow(() => direct.attach("x", () => {}), "a detached id can be attached again");
  await direct.close();
  t.notOk(direct.has("x"));
});

t.test("transport - stack: a transport without a route punts to the next", async (t) => {
  const first = new FakeTransport("first", new Set(["a"]));
  const second = new FakeTransport("second", new Set(["a", "b"]));
  const stack = new TransportStack([first, second]);
  t.equal(stack.name, "first+second");
  t.equal(stack.deliver("a", frame), "first", "the link of the transport that took it");
  t.equal(stack.deliver("b", frame), "second");
  t.same(
    first.carried.map((c) => c.to),
    ["a"],
    "the first takes what it can route",
  );
  t.same(
    second.carried.map((c) => c.to),
    ["b"],
    "and only what it punts reaches the second",
  );
  t.equal(second.carried[0]?.frame, frame, "the same frame, untouched");
});

t.test("transport - stack: when every transport punts, send is UNAVAILABLE and deliver false", async (t) => {
  const stack = new TransportStack([new FakeTransport("a", new Set()), new FakeTransport("b", new Set())]);
  t.equal(stack.deliver("nowhere", frame), false);
  const err = thrown(() => stack.send("nowhere", frame));
  t.equal(err.code, "UNAVAILABLE");
  t.equal(err.details.to, "nowhere");
  t.equal(thrown(() => new TransportStack([]).send("x", frame)).code, "UNAVAILABLE", "an empty stack routes nothing");
});

t.test("transport - stack: push adds a transport at the bottom", async (t) => {
  const top = new FakeTransport("top", new Set(["x"]));
  const stack = new TransportStack([top]);
  const bottom = new FakeTransport("bottom", new Set(["x", "y"]));
  stack.push(bottom);
  stack.send("x", frame);
  stack.send("y", frame);
  t.equal(top.carried.length, 1);
  t.same(
    bottom.carried.map((c) => c.to),
    ["y"],
  );
  t.equal(stack.name, "top+bottom", "the name lists every transport, the pushed one too");
  const err = thrown(() => stack.send("nowhere", frame));
  t.equal(err.code, "UNAVAILABLE");
  t.match(err.message, /top\+bottom/, "the error names every transport tried");
});

t.test("transport - stack: a transport that has a route but fails throws; the next is not tried", async (t) => {
  const full = new FakeTransport("full", new Set(["x"]), () => {
    throw new NodeBinError("RESOURCE_EXHAUSTED", "send buffer full");
  });
  const next = new FakeTransport("next", new Set(["x"]));
  const stack = new TransportStack([full, next]);
  t.equal(thrown(() => stack.send("x", frame)).code, "RESOURCE_EXHAUSTED");
  t.equal(next.carried.length, 0);
});

t.test("transport - stack: close closes every transport", async (t) => {
  const a = new FakeTransport("a", new Set());
  const b = new FakeTransport("b", new Set());
  await new TransportStack([a, b]).close();
  t.same([a.closed, b.closed], [1, 1]);
});

t.test("transport - container: calls to a node outside the process punt to an added transport", async (t) => {
  const greeter = await loadComponent(examplePath("greeter"));
  const c = await startContainer([]);
  t.teardown(() => c.close());
  const remote: NodeEntry = {
    id: "greeter-remote",
    component: "greeter",
    version: "0.0.0",
    host: "elsewhere",
    network: "",
    endpoints: ["tcp://10.0.0.9:7401"],
    methods: [...greeter.schema.methods.values()].map((m) => ({ name: m.fullName, mode: m.mode })),
    schema: greeter.schema.id,
    load: { queued: 0, capacity: 10 },
  };
  c.table.upsert(remote, greeter.schema);
  // The "network": answers every request itself, through the container's local dispatch.
  const wire = new FakeTransport("wire", new Set(["greeter-remote"]), (_to, bytes) => {
    const request = decodeEnvelope(bytes);
    if (request instanceof NodeBinError) throw request;
    const reply = encodeMessage(greeter.schema.methods.get(request.method)!.responseType, { message: "from afar" }, "reply");
    queueMicrotask(() => {
      const answer = decodeEnvelope(encodeResponse(request, "greeter-remote", reply));
      if (!(answer instanceof NodeBinError)) c.direct.dispatch(answer, { kind: "network", link: "wire" }); // the link it left on
    });
  });
  c.addTransport(wire);
  t.same(await c.caller.call("demo.Greeter/Hello", { name: "Ada" }), { message: "from afar" });
  t.equal(wire.carried.length, 1, "the direct transport punted it");
  const sent = decodeEnvelope(wire.carried[0]!.frame) as Envelope;
  t.equal(sent.kind, Kind.REQUEST);
  t.equal(sent.from, c.caller.id, "the answer will find its way back");
});

t.test("transport - container: a node nobody can route to is UNAVAILABLE at the caller", async (t) => {
  const greeter = await loadComponent(examplePath("greeter"));
  const c = await startContainer([]);
  t.teardown(() => c.close());
  c.table.upsert(
    {
      id: "greeter-gone",
      component: "greeter",
      version: "0.0.0",
      host: "elsewhere",
      network: "",
      endpoints: [],
      methods: [{ name: "demo.Greeter/Hello", mode: 0 }],
      schema: greeter.schema.id,
      load: { queued: 0, capacity: 0 },
    },
    greeter.schema,
  );
  const err = await rejection(c.caller.call("demo.Greeter/Hello", { name: "Ada" }));
  t.equal(err.code, "UNAVAILABLE");
  t.equal(err.details.to, "greeter-gone");
  t.equal(c.caller.inFlight, 0, "the failed call is not left in flight");
});
