import { hostname } from "node:os";
import t from "tap";
import { loadComponents } from "../../src/component/loader.ts";
import { Container } from "../../src/container/container.ts";
import { PULL } from "../../src/wire/control.ts";
import { Plane } from "../../src/wire/envelope.ts";
import { Mode } from "../../src/wire/schema.ts";
import { rejection } from "../lib/expect-error.ts";
import { gatedHandler } from "../lib/gated-handler.ts";
import { examplePath, loadFixture, startContainer, withHandlers } from "../lib/fixture-components.ts";
import { recordingLoggers, silentLogger } from "../lib/recording-logger.ts";

const { components: examples } = await loadComponents(examplePath(""));
const greeter = examples.find((c) => c.name === "greeter")!;
const probe = await loadFixture("components-probe/probe");

t.test("container - the examples answer: SYNC, ASYNC and nested calls carrying meta", async (t) => {
  const c = await startContainer(examples);
  t.teardown(() => c.close());
  t.same(await c.caller.call("demo.Greeter/Hello", { name: "Ada" }), { message: "Hello, Ada!" });
  t.same(await c.caller.call("demo.Greeter/Hello", { name: "Ada", language: "es" }), { message: "Hola, Ada!" });
  const first = (await c.caller.call("demo.Welcome/Visit", { name: "Grace" }, { meta: { via: "unit-test" } })) as { greeting: string; visitor: unknown; via: string };
  t.equal(first.greeting, "Hello, Grace!");
  t.equal(String(first.visitor), "1");
  t.equal(first.via, "unit-test", "meta reached the welcome handler");
  const second = (await c.caller.call("demo.Welcome/Visit", { name: "Linus" })) as { visitor: unknown; via: string };
  t.equal(String(second.visitor), "2", "the counter kept count across nested calls");
  t.equal(second.via, "");
  t.same(await c.caller.call("demo.Greeter/Guests", {}), { names: ["Grace", "Linus"] }, "the nested ctx.send arrived");
});

t.test("container - meta given to a call travels through nested calls", async (t) => {
  const mirror = await loadFixture("components-probe/mirror");
  const c = await startContainer([probe, mirror]);
  t.teardown(() => c.close());
  const reply = (await c.caller.call("probe.Probe/Nested", { text: "m", meta: { added: "inner" } }, { meta: { trace: "t-1" } })) as { inner: { meta: Record<string, string> } };
  t.same(reply.inner.meta, { trace: "t-1", added: "inner" }, "the handler's meta, merged with its own call's meta");
});

t.test("container - ids: given or host-pid; the caller is '<id>/caller'; nodes are '<component>-<hex>'", async (t) => {
  const named = new Container({ id: "box", logger: () => silentLogger });
  t.equal(named.caller.id, "box/caller");
  t.equal(named.host, hostname());
  const [node] = await named.addComponent(greeter);
  t.match(node!.id, /^greeter-[0-9a-f]{6}$/);
  await named.close();
  const unnamed = new Container({ host: "h1", logger: () => silentLogger });
  t.equal(unnamed.id, `h1-${process.pid}`);
  await unnamed.close();
});

t.test("container - addComponent announces each node in the table", async (t) => {
  const c = new Container({ id: "box", host: "h1", network: "n1", endpoints: ["tcp://h1:7401"], logger: () => silentLogger });
  t.teardown(() => c.close());
  const nodes = await c.addComponent(greeter, 2);
  t.equal(nodes.length, 2);
  t.not(nodes[0]!.id, nodes[1]!.id);
  t.same(
    c.localNodes().map((n) => n.id),
    nodes.map((n) => n.id),
  );
  const entry = c.table.get(nodes[0]!.id)!;
  t.match(entry, { component: "greeter", version: "0.0.0", host: "h1", network: "n1", endpoints: ["tcp://h1:7401"], schema: greeter.schema.id, load: { queued: 0, capacity: 1000 } });
  t.same(
    [...entry.methods].sort((a, b) => a.name.localeCompare(b.name)),
    [
      { name: "demo.Greeter/Guests", mode: Mode.SYNC },
      { name: "demo.Greeter/Hello", mode: Mode.SYNC },
      { name: "demo.Greeter/Sign", mode: Mode.ASYNC },
    ],
  );
  t.equal(c.table.routes().get("demo.Greeter/Hello")?.nodes.length, 2);
  for (let i = 0; i < 10; i++) t.same(await c.caller.call("demo.Greeter/Hello", { name: "x" }), { message: "Hello, x!" });
  t.equal(nodes[0]!.getStats().handled + nodes[1]!.getStats().handled, 10, "every call served by one of them");
});

t.test("container - a node whose init fails is not added; the others stay up", async (t) => {
  const c = await startContainer([greeter]);
  t.teardown(() => c.close());
  const broken = withHandlers(probe, {}, { hooks: { init: () => Promise.reject(new Error("no config")) } });
  const err = await rejection(c.addComponent(broken));
  t.equal(err.code, "INTERNAL");
  t.match(err.message, /no config/);
  t.equal(c.localNodes().length, 1);
  t.notOk(c.table.routes().has("probe.Probe/Echo"), "not in the table");
  t.same(await c.caller.call("demo.Greeter/Hello", { name: "x" }), { message: "Hello, x!" });
});

t.test("container - removeNode takes a node out of the table, drains it and detaches it", async (t) => {
  const gated = gatedHandler();
  const c = await startContainer([withHandlers(probe, { "probe.Probe/Echo": gated.handler })]);
  t.teardown(() => c.close());
  const node = c.localNodes()[0]!;
  const inFlight = c.caller.call("probe.Probe/Echo", { text: "last" });
  await gated.entered("last");
  const removing = c.removeNode(node.id);
  t.notOk(c.table.get(node.id), "out of the table at once");
  t.equal((await rejection(c.caller.call("probe.Probe/Echo", { text: "new" }))).code, "NOT_FOUND", "new calls find no node");
  gated.release("last");
  t.match(await inFlight, { text: "last" }, "the message it was handling is answered");
  await removing;
  t.notOk(c.direct.has(node.id), "detached");
  t.same(c.localNodes(), []);
  await t.resolves(c.removeNode("nobody"), "removing an unknown id is a no-op");
});

t.test("container - close drains every node, then cancels the process's calls; it is idempotent", async (t) => {
  const gated = gatedHandler();
  const c = await startContainer([withHandlers(probe, { "probe.Probe/Echo": gated.handler }), greeter]);
  const inFlight = c.caller.call("probe.Probe/Echo", { text: "during close" });
  await gated.entered("during close");
  const closing = c.close();
  gated.release("during close");
  t.match(await inFlight, { text: "during close" }, "a call in a node's hands is still answered");
  await closing;
  await t.resolves(c.close(), "closing again is fine");
  t.same(c.localNodes(), []);
  t.equal((await rejection(c.caller.call("demo.Greeter/Hello", { name: "x" }))).code, "CANCELLED", "its caller refuses new calls");
  t.equal((await rejection(c.caller.callEndpoint({ method: PULL.schema, to: "", plane: Plane.CONTROL, request: {} }))).code, "CANCELLED", "its caller refuses calls");
});

t.test("container - close fails the process's calls still waiting for an answer with CANCELLED", async (t) => {
  const c = await startContainer([]);
  c.direct.attach("black-hole", () => {});
  const waiting = c.caller.callEndpoint({ method: PULL.schema, to: "black-hole", plane: Plane.CONTROL, request: {} });
  await c.close();
  t.equal((await rejection(waiting)).code, "CANCELLED");
});

t.test("container - nodes log through the container's logger factory, by node id", async (t) => {
  const { lines, logger } = recordingLoggers();
  const c = await startContainer([probe], logger);
  t.teardown(() => c.close());
  await c.caller.send("probe.Probe/FailLater", { message: "logged, not returned" });
  await c.caller.call("probe.Probe/Log", {});
  const line = lines.find((l) => l.message.includes("logged, not returned"));
  t.ok(line, "the ASYNC failure was logged");
  t.equal(line?.source, c.localNodes()[0]!.id);
});
