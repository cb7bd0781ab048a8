import t from "tap";
import { loadComponents } from "../../src/component/loader.ts";
import type protobuf from "protobufjs";
import type { Container } from "../../src/container/container.ts";
import { MembershipTable } from "../../src/membership/table.ts";
import { CONTROL_SCHEMA, PULL } from "../../src/wire/control.ts";
import { Plane, nodebinRoot } from "../../src/wire/envelope.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { rejection } from "../lib/expect-error.ts";
import { gatedHandler } from "../lib/gated-handler.ts";
import { examplePath, loadFixture, startContainer, withHandlers } from "../lib/fixture-components.ts";

const PullReply = nodebinRoot.lookupType("nodebin.MembershipPullReply");
const { components: examples } = await loadComponents(examplePath(""));
const probe = await loadFixture("components-probe/probe");

/** A membership pull from the container's own control endpoint: a decoded nodebin.MembershipPullReply. */
async function pull(c: Container): Promise<protobuf.Message> {
  return (await c.caller.callEndpoint({ method: CONTROL_SCHEMA.methods.get("nodebin.Control/Pull")!, to: "", plane: Plane.CONTROL, request: {} })) as protobuf.Message;
}

t.test("control - the control schema serves nodebin.Control/Pull, SYNC", async (t) => {
  t.same(
    [...CONTROL_SCHEMA.methods.keys()],
    [
      ...["Pull", "Register", "Deregister", "Gossip", "Ping", "Drain", "ImportState", "YieldAgent", "RequestCapacity"].map((m) => `nodebin.Control/${m}`),
      ...["Status", "Set", "Stop", "RequestCapacity"].map((m) => `nodebin.Governor/${m}`),
    ],
  );
  t.equal(PULL, CONTROL_SCHEMA.methods.get("nodebin.Control/Pull"));
  t.equal(PULL.mode, 0);
  t.equal(PULL.responseType, PullReply);
});

t.test("control - a pull returns the membership table; merged into a fresh table it reproduces nodes and schemas", async (t) => {
  const c = await startContainer(examples);
  t.teardown(() => c.close());
  await c.addComponent(examples.find((x) => x.name === "greeter")!);
  const reply = await pull(c);
  t.ok(reply instanceof PullReply.ctor, "a decoded nodebin.MembershipPullReply");
  const decoded = reply as unknown as { nodes: { id: string }[]; schemas: { id: string }[] };
  t.equal(decoded.nodes.length, 4, "three components, greeter twice");
  t.equal(decoded.schemas.length, 3, "each schema sent once");

  const fresh = new MembershipTable();
  fresh.mergePull(reply);
  const byId = (entries: { id: string }[]) => [...entries].sort((a, b) => a.id.localeCompare(b.id));
  t.same(byId(fresh.entries()), byId(c.table.entries()), "the same nodes, field for field");
  t.same([...fresh.routes().keys()].sort(), [...c.table.routes().keys()].sort(), "the same methods");
  for (const [name, route] of c.table.routes()) {
    const copy = fresh.routes().get(name)!;
    t.equal(copy.method.mode, route.method.mode, `${name}: mode`);
    t.same(
      copy.nodes.map((n) => n.id).sort(),
      route.nodes.map((n) => n.id).sort(),
      `${name}: nodes`,
    );
    t.not(copy.method.requestType, route.method.requestType, `${name}: types rebuilt from the schema JSON`);
  }
  const hello = fresh.routes().get("demo.Greeter/Hello")!.method;
  t.ok(encodeMessage(hello.requestType, { name: "Ada" }, "test").length > 0, "the pulled schema can encode requests");
});

t.test("control - a pull reports the current queue length of each node", async (t) => {
  const gated = gatedHandler();
  const c = await startContainer([withHandlers(probe, { "probe.Probe/Echo": gated.handler })]);
  t.teardown(() => c.close());
  const calls = ["a", "b", "c"].map((text) => c.caller.call("probe.Probe/Echo", { text }));
  await gated.entered("a");
  const fresh = new MembershipTable();
  fresh.mergePull(await pull(c));
  t.same(fresh.entries()[0]?.load, { queued: 2, capacity: 50 });
  for (const key of ["a", "b", "c"]) gated.release(key);
  await Promise.all(calls);
});

t.test("control - an application-plane request to the control endpoint is INVALID_ARGUMENT", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  const err = await rejection(c.caller.callEndpoint({ method: probe.schema.methods.get("probe.Probe/Echo")!, to: "", request: { text: "x" } }));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.equal(err.origin, c.id);
});

t.test("control - an unknown control method is UNIMPLEMENTED", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  const err = await rejection(c.caller.callEndpoint({ method: probe.schema.methods.get("probe.Probe/Echo")!, to: "", plane: Plane.CONTROL, request: {} }));
  t.equal(err.code, "UNIMPLEMENTED");
});

t.test("control - a request to the container's own caller endpoint is UNIMPLEMENTED", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  const err = await rejection(c.caller.callEndpoint({ method: PULL, to: c.caller.id, plane: Plane.CONTROL, request: {} }));
  t.equal(err.code, "UNIMPLEMENTED");
  t.equal(err.origin, c.caller.id);
});
