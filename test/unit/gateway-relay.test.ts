// The relay of a gateway side (src/gateway/relay.ts) against a far caller made for the test:
// bounds on calls and streams in flight, errors as the near caller gets them, and a relayed
// stream's credit, cancel and deadline.
import t from "tap";
import { ManualClock } from "../../src/platform/clock.ts";
import type { RoutingCaller } from "../../src/routing/caller.ts";
import type { ConsumerStream } from "../../src/routing/stream.ts";
import { Relay } from "../../src/gateway/relay.ts";
import type { Peer } from "../../src/transport/transport.ts";
import { Kind, Plane, decodeEnvelope, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError, isUnhandled } from "../../src/wire/errors.ts";
import { Mode } from "../../src/wire/schema.ts";
import { silentLogger } from "../lib/recording-logger.ts";

/** A far stream whose items the test pushes; it records next() calls and whether it was returned. */
class FarStream {
  ended = false;
  returned = false;
  pulls = 0;
  private items: Uint8Array[] = [];
  private waiter: ((r: IteratorResult<Uint8Array>) => void) | undefined;
  private fail: ((e: NodeBinError) => void) | undefined;
  push(bytes: Uint8Array): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w({ value: bytes, done: false });
    } else this.items.push(bytes);
  }
  error(e: NodeBinError): void {
    this.ended = true;
    this.fail?.(e);
  }
  next(): Promise<IteratorResult<Uint8Array>> {
    this.pulls++;
    const item = this.items.shift();
    if (item) return Promise.resolve({ value: item, done: false });
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.fail = reject;
    });
  }
  async return(): Promise<IteratorResult<Uint8Array>> {
    this.returned = true;
    this.ended = true;
    this.waiter?.({ value: undefined, done: true });
    return { value: undefined, done: true };
  }
}

function harness(limits: { calls?: number; streams?: number } = {}) {
  const calls: { mode: Mode; method: string; options: { timeoutMs: number; meta: Record<string, string>; scope: string }; resolve(v: Uint8Array): void; reject(e: NodeBinError): void }[] = [];
  const streams: FarStream[] = [];
  const far = {
    callEncoded(mode: Mode, method: string, _value: Uint8Array, options: { timeoutMs: number; meta: Record<string, string>; scope: string }) {
      return new Promise<Uint8Array>((resolve, reject) => calls.push({ mode, method, options, resolve, reject }));
    },
    streamEncoded() {
      const s = new FarStream();
      streams.push(s);
      return s as unknown as ConsumerStream<Uint8Array>;
    },
  } as unknown as RoutingCaller;
  const clock = new ManualClock(1000);
  const sent: Envelope[] = [];
  const relay = new Relay({ id: "gateway@gw~a", farNetwork: "b", far, nearSend: () => {}, limits, log: silentLogger, clock });
  const peer = (connection = "c1"): Peer => ({
    kind: "network",
    connection,
    reply: (frame) => {
      const env = decodeEnvelope(frame);
      if (env instanceof NodeBinError) throw env;
      sent.push(env);
    },
  });
  let id = 1;
  const request = (mode: Mode, fields: Partial<Envelope> = {}) => envelope({ id: id++, plane: Plane.APPLICATION, mode, kind: Kind.REQUEST, from: "client-1", to: "far~x@gw~a", method: "far.Far/M", deadlineMs: 5000, ...fields });
  const serves = (m: string) => m === "far.Far/M";
  return { relay, calls, streams, sent, peer, request, serves, clock };
}

const tick = () => new Promise((r) => setImmediate(r));

t.test("gateway relay - SYNC: the far answer's value back unchanged; the deadline left, the meta and scope network go along", async (t) => {
  const h = harness();
  h.relay.receive("far~x@gw~a", h.serves, h.request(Mode.SYNC, { deadlineMs: 1234, meta: { k: "v" } }), h.peer());
  t.equal(h.calls.length, 1);
  t.same(h.calls[0]!.options, { timeoutMs: 1234, meta: { k: "v" }, scope: "network" });
  h.calls[0]!.resolve(new Uint8Array([1, 2, 3]));
  await tick();
  t.equal(h.sent[0]!.kind, Kind.RESPONSE);
  t.same([...h.sent[0]!.value], [1, 2, 3]);
  t.equal(h.sent[0]!.from, "far~x@gw~a", "answered from the proxy");
  t.equal(h.relay.stats().calls, 0);
});

t.test("gateway relay - errors: a far node's unchanged (its origin); the far side finding no node an unhandled UNAVAILABLE; the relay's own name this side", async (t) => {
  const h = harness();
  for (let i = 0; i < 3; i++) h.relay.receive("p", h.serves, h.request(Mode.SYNC), h.peer());
  h.calls[0]!.reject(new NodeBinError("INTERNAL", "boom", { origin: "far-1" }));
  h.calls[1]!.reject(new NodeBinError("NOT_FOUND", "no node"));
  h.calls[2]!.reject(new NodeBinError("DEADLINE_EXCEEDED", "no answer"));
  await tick();
  const errors = h.sent.map((e) => NodeBinError.fromWire(e.error!));
  t.same([errors[0]!.code, errors[0]!.origin], ["INTERNAL", "far-1"]);
  t.same([errors[1]!.code, isUnhandled(errors[1]!), errors[1]!.origin], ["UNAVAILABLE", true, "gateway@gw~a"], "another gateway may be tried");
  t.same([errors[2]!.code, errors[2]!.origin], ["DEADLINE_EXCEEDED", "gateway@gw~a"]);
});

t.test("gateway relay - bounded: past its calls in flight RESOURCE_EXHAUSTED (unhandled), room again once one ends; unknown methods and broadcasts refused", async (t) => {
  const h = harness({ calls: 2 });
  for (let i = 0; i < 3; i++) h.relay.receive("p", h.serves, h.request(Mode.ASYNC), h.peer());
  t.equal(h.calls.length, 2, "two relayed");
  const refused = NodeBinError.fromWire(h.sent[0]!.error!);
  t.equal(refused.code, "RESOURCE_EXHAUSTED");
  t.ok(isUnhandled(refused), "unhandled: the caller may send it elsewhere");
  h.calls[0]!.resolve(new Uint8Array());
  await tick();
  t.equal(h.sent[1]!.error, null, "the ASYNC acceptance relayed");
  h.relay.receive("p", h.serves, h.request(Mode.ASYNC), h.peer());
  t.equal(h.calls.length, 3, "room again");
  h.relay.receive("p", h.serves, h.request(Mode.SYNC, { method: "other.S/M" }), h.peer());
  t.equal(NodeBinError.fromWire(h.sent.at(-1)!.error!).code, "NOT_FOUND", "a method the proxy does not serve");
  h.relay.receive("p", h.serves, h.request(Mode.BROADCAST), h.peer());
  t.equal(NodeBinError.fromWire(h.sent.at(-1)!.error!).code, "INVALID_ARGUMENT", "broadcasts do not cross");
  h.relay.receive("p", h.serves, h.request(Mode.SYNC, { plane: Plane.CONTROL }), h.peer());
  t.equal(NodeBinError.fromWire(h.sent.at(-1)!.error!).code, "UNIMPLEMENTED");
});

t.test("gateway relay - a stream: items only against the near consumer's credit, CREDIT releases more, CANCEL ends the far half and is acknowledged", async (t) => {
  const h = harness();
  const peer = h.peer();
  const req = h.request(Mode.STREAM, { credit: 2 });
  h.relay.receive("p", h.serves, req, peer);
  const far = h.streams[0]!;
  for (let i = 1; i <= 5; i++) far.push(new Uint8Array([i]));
  await tick();
  t.same(h.sent.map((e) => [e.kind, e.value[0]]), [[Kind.STREAM_ITEM, 1], [Kind.STREAM_ITEM, 2]], "two items for a credit of 2");
  h.relay.receive("p", h.serves, envelope({ id: req.id, kind: Kind.CREDIT, mode: Mode.STREAM, from: "client-1", method: req.method, credit: 1 }), peer);
  await tick();
  t.equal(h.sent.length, 3, "one more for a credit of 1");
  // A CREDIT from another connection touches nothing.
  h.relay.receive("p", h.serves, envelope({ id: req.id, kind: Kind.CREDIT, mode: Mode.STREAM, from: "client-1", method: req.method, credit: 10 }), h.peer("c2"));
  await tick();
  t.equal(h.sent.length, 3);
  t.equal(h.relay.stats().streamFramesDropped, 1, "counted and dropped");
  h.relay.receive("p", h.serves, envelope({ id: req.id, kind: Kind.CANCEL, mode: Mode.STREAM, from: "client-1", method: req.method }), peer);
  await tick();
  const end = h.sent.at(-1)!;
  t.equal(end.kind, Kind.STREAM_END);
  t.equal(NodeBinError.fromWire(end.error!).code, "CANCELLED", "the cancel acknowledged");
  t.ok(far.returned, "the far half cancelled");
  t.equal(h.relay.stats().streams, 0, "nothing of it left");
});

t.test("gateway relay - a stream ends at its deadline (far half cancelled), at the far error, and with its near connection", async (t) => {
  const h = harness();
  h.relay.receive("p", h.serves, h.request(Mode.STREAM, { credit: 4, deadlineMs: 500 }), h.peer());
  await h.clock.advance(500);
  await tick();
  const end = h.sent.at(-1)!;
  t.same([end.kind, NodeBinError.fromWire(end.error!).code, NodeBinError.fromWire(end.error!).details.limit], [Kind.STREAM_END, "DEADLINE_EXCEEDED", "deadline"]);
  t.ok(h.streams[0]!.returned, "far half cancelled at the deadline");

  h.relay.receive("p", h.serves, h.request(Mode.STREAM, { credit: 4 }), h.peer());
  await tick();
  h.streams[1]!.error(new NodeBinError("ABORTED", "far failed", { origin: "far-1" }));
  await tick();
  const failed = NodeBinError.fromWire(h.sent.at(-1)!.error!);
  t.same([failed.code, failed.origin], ["ABORTED", "far-1"], "the far error, its origin kept");

  h.relay.receive("p", h.serves, h.request(Mode.STREAM, { credit: 4 }), h.peer("c9"));
  await tick();
  const before = h.sent.length;
  h.relay.connectionClosed("c9");
  t.ok(h.streams[2]!.returned, "its near connection closed: the far half cancelled");
  t.equal(h.sent.length, before, "nobody told: nobody is there");
  t.equal(h.relay.stats().streams, 0);
});

t.test("gateway relay - bounded: past its open streams RESOURCE_EXHAUSTED (unhandled)", async (t) => {
  const h = harness({ streams: 1 });
  h.relay.receive("p", h.serves, h.request(Mode.STREAM, { credit: 1 }), h.peer());
  h.relay.receive("p", h.serves, h.request(Mode.STREAM, { credit: 1 }), h.peer());
  const refused = NodeBinError.fromWire(h.sent.at(-1)!.error!);
  t.same([refused.code, isUnhandled(refused)], ["RESOURCE_EXHAUSTED", true]);
  h.relay.close();
  t.equal(NodeBinError.fromWire(h.sent.at(-1)!.error!).code, "UNAVAILABLE", "closing ends the open stream, told");
});
