import t from "tap";
import { loadComponent } from "../../src/component/loader.ts";
import { Container } from "../../src/container/container.ts";
import { examplePath, loadFixture, startContainer } from "../lib/fixture-components.ts";
import { silentLogger } from "../lib/recording-logger.ts";

const counter = await loadComponent(examplePath("counter"));
const greeter = await loadComponent(examplePath("greeter"));
const probe = await loadFixture("components-probe/probe");

const count = (reply: unknown) => String((reply as { count: unknown }).count);

t.test("state - ctx.state persists across messages of one node", async (t) => {
  const c = await startContainer([counter, greeter]);
  t.teardown(() => c.close());
  t.equal(count(await c.caller.call("demo.Counter/Add", { key: "a" })), "1");
  t.equal(count(await c.caller.call("demo.Counter/Add", { key: "a", by: 5 })), "6");
  t.equal(count(await c.caller.call("demo.Counter/Add", { key: "b" })), "1");
  t.equal(count(await c.caller.call("demo.Counter/Get", { key: "a" })), "6");
  await c.caller.send("demo.Greeter/Sign", { name: "Ada" });
  await c.caller.send("demo.Greeter/Sign", { name: "Grace" });
  t.same(await c.caller.call("demo.Greeter/Guests", {}), { names: ["Ada", "Grace"] }, "ASYNC and SYNC methods share it");
});

t.test("state - nodes of one component do not share state", async (t) => {
  const c = new Container({ id: "two", logger: () => silentLogger });
  t.teardown(() => c.close());
  const [a, b] = await c.addComponent(counter, 2);
  a!.state = { counts: { k: 3 } };
  t.same(b!.state, {}, "the other node's state is its own");
});

t.test("state - exportState and importState hooks move the counter to another node", async (t) => {
  const from = await startContainer([counter]);
  const to = await startContainer([counter]);
  t.teardown(async () => {
    await from.close();
    await to.close();
  });
  await from.caller.call("demo.Counter/Add", { key: "visits", by: 41 });
  await from.caller.call("demo.Counter/Add", { key: "visits" });
  const source = from.localNodes()[0]!;
  const snapshot = (await source.exportState()) as { counts: Record<string, number> };
  t.same(snapshot, { counts: { visits: 42 } }, "the hook's snapshot");
  t.not(snapshot.counts, (source.state as { counts: object }).counts, "a copy, not the live object");

  const target = to.localNodes()[0]!;
  await target.importState(snapshot);
  snapshot.counts.visits = 0;
  t.equal(count(await to.caller.call("demo.Counter/Get", { key: "visits" })), "42", "the importState hook took it over (and copied it)");
  t.equal(count(await to.caller.call("demo.Counter/Add", { key: "visits" })), "43");
  t.equal(count(await from.caller.call("demo.Counter/Get", { key: "visits" })), "42", "the source kept its own");
});

t.test("state - without hooks, ctx.state itself is exported and imported", async (t) => {
  const from = await startContainer([greeter]);
  const to = await startContainer([greeter]);
  t.teardown(async () => {
    await from.close();
    await to.close();
  });
  await from.caller.send("demo.Greeter/Sign", { name: "Ada" });
  const source = from.localNodes()[0]!;
  const snapshot = await source.exportState();
  t.equal(snapshot, source.state, "the state object itself");
  await to.localNodes()[0]!.importState(structuredClone(snapshot));
  t.same(await to.caller.call("demo.Greeter/Guests", {}), { names: ["Ada"] });
});

t.test("state - the init hook runs before the first message and the shutdown hook after the last", async (t) => {
  const c = await startContainer([probe]);
  const node = c.localNodes()[0]!;
  t.equal(node.state.initialized, true, "init ran when the node was added");
  await c.caller.send("probe.Probe/Record", { tag: "last" });
  t.notOk(node.state.shutDown);
  await c.close();
  t.equal(node.state.shutDown, true, "shutdown ran on close");
  t.same(node.state.tags, ["last"], "after the queued message was handled");
});
