import t from "tap";
import { loadComponent } from "../../src/component/loader.ts";
import { MembershipTable, type NodeEntry } from "../../src/membership/table.ts";
import { ManualClock, type Clock } from "../../src/platform/clock.ts";
import { Router, SUSPECT_MS } from "../../src/routing/router.ts";
import { thrown } from "../lib/expect-error.ts";
import { examplePath } from "../lib/fixture-components.ts";
import { seededRandom } from "../lib/seeded-random.ts";

const greeter = await loadComponent(examplePath("greeter"));
const HELLO = "demo.Greeter/Hello";

/** A node of the greeter: in this process when its id starts with "local", otherwise on `host` / `network`. */
function node(id: string, host: string, network: string, load = { queued: 0, capacity: 10 }): NodeEntry {
  return { id, component: "greeter", version: "1", host, network, endpoints: [], methods: [{ name: HELLO, mode: 0 }], schema: greeter.schema.id, load };
}

function router(nodes: NodeEntry[], random: () => number = seededRandom(1), clock?: Clock) {
  const table = new MembershipTable();
  for (const n of nodes) table.upsert(n, greeter.schema);
  return new Router(table, { inProcess: (id) => id.startsWith("local"), host: "h1", network: "n1" }, { random, ...(clock ? { clock } : {}) });
}

const LOCAL = node("local-1", "h1", "n1");
const HOST = node("host-1", "h1", "n1");
const NETWORK = node("net-1", "h2", "n1");
const REMOTE = node("far-1", "h9", "n9");

t.test("router - route finds a method by full or short name, else NOT_FOUND", async (t) => {
  const r = router([LOCAL]);
  t.equal(r.route(HELLO).method.fullName, HELLO);
  t.equal(r.route("Greeter.Hello").method.fullName, HELLO);
  const err = thrown(() => r.route("demo.Greeter/Helo"));
  t.equal(err.code, "NOT_FOUND");
  t.equal(err.details.suggestions, HELLO);
});

t.test("router - the nearest tier wins: process, then host, then network, then anywhere", async (t) => {
  const all = router([REMOTE, NETWORK, HOST, LOCAL]);
  const route = all.route(HELLO);
  for (let i = 0; i < 20; i++) t.equal(all.pick(route).id, "local-1");
  const pickFrom = (nodes: NodeEntry[]) => {
    const r = router(nodes);
    return r.pick(r.route(HELLO)).id;
  };
  t.equal(pickFrom([REMOTE, NETWORK, HOST]), "host-1");
  t.equal(pickFrom([REMOTE, NETWORK]), "net-1");
  t.equal(pickFrom([REMOTE]), "far-1");
});

t.test("router - scope limits the tiers; nothing in scope is NOT_FOUND", async (t) => {
  const r = router([REMOTE, NETWORK]);
  const route = r.route(HELLO);
  t.equal(r.pick(route, "network").id, "net-1");
  for (const scope of ["process", "host"] as const) {
    const err = thrown(() => r.pick(route, scope));
    t.equal(err.code, "NOT_FOUND", scope);
    t.same(err.details, { method: HELLO, scope });
  }
  const single = router([REMOTE]);
  t.equal(thrown(() => single.pick(single.route(HELLO), "process")).code, "NOT_FOUND", "a single node outside scope too");
});

t.test("router - another network's node is remote even when this host or process advertises it (a gateway's proxy)", async (t) => {
  const proxyOnHost = node("proxy-1", "h1", "n9");
  const proxyInProcess = node("local-proxy", "h1", "n9");
  const r = router([proxyOnHost, proxyInProcess]);
  const route = r.route(HELLO);
  for (const scope of ["process", "host", "network"] as const) t.equal(thrown(() => r.pick(route, scope)).code, "NOT_FOUND", `out of scope "${scope}"`);
  t.ok(["proxy-1", "local-proxy"].includes(r.pick(route, "any").id), 'in scope "any"');
  const withNetwork = router([proxyInProcess, NETWORK]);
  for (let i = 0; i < 10; i++) t.equal(withNetwork.pick(withNetwork.route(HELLO)).id, "net-1", "a node of this network wins over the proxy");
});

t.test("router - a capacity request goes to the nearest node of this network serving the method: this host's governor decides first", async (t) => {
  const r = router([REMOTE, NETWORK, HOST]);
  const route = r.route(HELLO);
  t.equal(r.capacityContact(REMOTE, route)?.id, "host-1", "this host's node first");
  t.equal(r.capacityContact(NETWORK, route)?.id, "host-1", "this host's node before another host's that refused");
  t.equal(r.capacityContact(HOST, route)?.id, "host-1", "a refusing node as near as any is asked itself");
  const otherHost = node("net-2", "h3", "n1");
  const twoHosts = router([NETWORK, otherHost]);
  t.equal(twoHosts.capacityContact(otherHost, twoHosts.route(HELLO))?.id, "net-2", "between hosts of this network, the refusing one");
  const onlyNetwork = router([REMOTE, NETWORK]);
  t.equal(onlyNetwork.capacityContact(REMOTE, onlyNetwork.route(HELLO))?.id, "net-1");
  const onlyRemote = router([REMOTE]);
  t.equal(onlyRemote.capacityContact(REMOTE, onlyRemote.route(HELLO)), undefined, "no node of this network: none (the caller asks the refusing one)");
});

t.test("router - an unknown scope is INVALID_ARGUMENT", async (t) => {
  const r = router([LOCAL, HOST]);
  t.equal(thrown(() => r.pick(r.route(HELLO), "galaxy" as never)).code, "INVALID_ARGUMENT");
});

t.test("router - a full tier yields to the next tier with room", async (t) => {
  const fullLocal = node("local-full", "h1", "n1", { queued: 10, capacity: 10 });
  const r = router([fullLocal, HOST]);
  t.equal(r.pick(r.route(HELLO)).id, "host-1");
});

t.test("router - when every node in scope is full, the nearest full one is picked anyway", async (t) => {
  const fullLocal = node("local-full", "h1", "n1", { queued: 10, capacity: 10 });
  const fullHost = node("host-full", "h1", "n1", { queued: 10, capacity: 10 });
  const r = router([fullHost, fullLocal]);
  t.equal(r.pick(r.route(HELLO)).id, "local-full", "it will answer RESOURCE_EXHAUSTED if still full");
});

t.test("router - capacity 0 means no advertised limit", async (t) => {
  const unlimited = node("local-x", "h1", "n1", { queued: 500, capacity: 0 });
  const r = router([unlimited, HOST]);
  t.equal(r.pick(r.route(HELLO)).id, "local-x");
});

t.test("router - this process's in-flight calls count toward a node's load", async (t) => {
  const a = node("local-a", "h1", "n1", { queued: 0, capacity: 2 });
  const b = node("local-b", "h1", "n1", { queued: 0, capacity: 2 });
  const r = router([a, b]);
  const route = r.route(HELLO);
  r.started("local-a");
  r.started("local-a");
  for (let i = 0; i < 10; i++) t.equal(r.pick(route).id, "local-b", "local-a is full with our own calls");
  r.ended("local-a");
  r.ended("local-a");
  r.started("local-b");
  for (let i = 0; i < 10; i++) t.equal(r.pick(route).id, "local-a", "the less loaded of the two");
  r.ended("local-b");
  r.ended("local-b");
  r.started("local-b");
  const picked = new Set(Array.from({ length: 20 }, () => r.pick(route).id));
  t.same([...picked], ["local-a"], "ending more calls than started does not make a node look emptier than empty");
});

t.test("router - power of two choices: of two random picks the less loaded wins", async (t) => {
  const nodes = [0, 1, 2, 3].map((i) => node(`local-${i}`, "h1", "n1", { queued: i * 2, capacity: 100 }));
  // random() = 0 then 0.99: candidates 0 and the last of the others (3): 0 is less loaded.
  const picks = [0, 0.99];
  const r = router(nodes, () => picks.shift() ?? 0);
  t.equal(r.pick(r.route(HELLO)).id, "local-0");
  const reverse = [0.99, 0.5];
  const r2 = router(nodes, () => reverse.shift() ?? 0);
  t.equal(r2.pick(r2.route(HELLO)).id, "local-1", "candidates 3 and 1: 1 is less loaded");
  const spread = router(nodes, seededRandom(7));
  const counts = new Map<string, number>();
  for (let i = 0; i < 400; i++) {
    const id = spread.pick(spread.route(HELLO)).id;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  t.notOk(counts.has("local-3"), "the most loaded node is never the less loaded of two");
  t.ok((counts.get("local-0") ?? 0) > (counts.get("local-2") ?? 0), "lighter nodes are picked more often");
});

t.test("router - a suspect node (no answer, lost connection) is avoided while others can serve, then trusted again", async (t) => {
  const a = node("host-a", "h1", "n1");
  const b = node("host-b", "h1", "n1");
  const far = node("far-1", "h9", "n9");
  const r = router([a, b, far]);
  const route = r.route(HELLO);
  r.suspect("host-a", 60_000);
  for (let i = 0; i < 20; i++) t.equal(r.pick(route).id, "host-b", "the healthy node of the same tier");
  r.suspect("host-b", 60_000);
  for (let i = 0; i < 5; i++) t.equal(r.pick(route).id, "far-1", "a healthy node of a farther tier beats suspects");
  t.ok(["host-a", "host-b"].includes(r.pick(route, "host").id), "with only suspects in scope, a suspect still serves");
  r.suspect("far-1", 60_000);
  t.ok(["host-a", "host-b"].includes(r.pick(route).id), "all suspect: the usual choice among them");
  const clock = new ManualClock();
  const r2 = router([a, b], seededRandom(1), clock);
  r2.suspect("host-a", 1);
  await clock.advance(1);
  const seen = new Set(Array.from({ length: 40 }, () => r2.pick(r2.route(HELLO)).id));
  t.same([...seen].sort(), ["host-a", "host-b"], "suspicion expires");
});

t.test("router - a suspect is avoided until its suspicion period has passed on the clock", async (t) => {
  const clock = new ManualClock();
  const r = router([node("host-a", "h1", "n1"), node("host-b", "h1", "n1")], seededRandom(3), clock);
  const route = r.route(HELLO);
  const picks = () => new Set(Array.from({ length: 40 }, () => r.pick(route).id));
  t.same([...picks()].sort(), ["host-a", "host-b"], "both serve before");
  r.suspect("host-a");
  t.same([...picks()], ["host-b"], "avoided once suspected");
  await clock.advance(SUSPECT_MS - 1);
  t.same([...picks()], ["host-b"], `still avoided ${SUSPECT_MS - 1} ms later`);
  await clock.advance(1);
  t.same([...picks()].sort(), ["host-a", "host-b"], `trusted again at ${SUSPECT_MS} ms`);
});
