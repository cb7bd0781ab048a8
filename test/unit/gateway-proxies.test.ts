// The pure parts of a gateway (src/gateway/proxies.ts): the proxy entries one side advertises
// from the other side's table, the remote tier it gossips, and capacity requests crossing.
import t from "tap";
import type { HostSummary } from "../../src/membership/capacity.ts";
import type { NodeEntry } from "../../src/membership/table.ts";
import { MAX_PROXIES, crossRequest, legHosts, proxyEntries, proxyId, remoteSummary, sameProxy } from "../../src/gateway/proxies.ts";
import { Mode } from "../../src/wire/schema.ts";

function node(id: string, component: string, fields: Partial<NodeEntry> = {}): NodeEntry {
  return {
    id,
    component,
    version: "1.0.0",
    host: "host-b",
    network: "b",
    endpoints: [`tcp://10.0.0.2:${5000 + id.length}`],
    methods: [{ name: `${component}.S/M`, mode: Mode.SYNC }],
    schema: `schema-of-${component}-0123456789`,
    load: { queued: 1, capacity: 10 },
    ...fields,
  };
}

const near = { host: "gw~a", endpoints: ["tcp://10.0.1.9:4100"] };

t.test("gateway proxies - one per far component, with the far network, this side's host and endpoints, its methods and its load summed", async (t) => {
  const far = [
    node("far-1", "far", { host: "host-b" }),
    node("far-2", "far", { host: "host-b2", load: { queued: 3, capacity: 10 }, methods: [{ name: "far.S/M", mode: Mode.SYNC }, { name: "far.S/Count", mode: Mode.STREAM }] }),
    node("other-1", "other"),
  ];
  const proxies = proxyEntries(far, "b", near);
  t.same(proxies.map((p) => p.id), [proxyId("far", far[0]!.schema, "gw~a"), proxyId("other", far[2]!.schema, "gw~a")].sort());
  const p = proxies.find((x) => x.component === "far")!;
  t.equal(p.network, "b", "the far network");
  t.equal(p.host, "gw~a", "this side's host");
  t.same(p.endpoints, near.endpoints, "this side's endpoints, never the far node's");
  t.same(p.methods.map((m) => m.name), ["far.S/Count", "far.S/M"], "the union of the far nodes' methods");
  t.same(p.load, { queued: 4, capacity: 20 }, "load summed over the far nodes");
  t.equal(p.schema, far[0]!.schema, "the far component's schema");
});

t.test("gateway proxies - entries of another network in the far table (some gateway's proxies, this one's included) are never relayed: no chains, no loops", async (t) => {
  const far = [node("far-1", "far"), node("near~x@gw~b", "near", { network: "a", host: "gw~b" }), node("c-1", "cee", { network: "c", host: "gw2~b" })];
  t.same(proxyEntries(far, "b", near).map((p) => p.component), ["far"]);
  t.same(proxyEntries([], "b", near), [], "nothing far: no proxies");
});

t.test("gateway proxies - two schemas of one component (a rolling deploy) are two proxies, each with its own schema; ids are stable", async (t) => {
  const far = [node("far-1", "far", { schema: "aaaaaaaaaaaaaaaa-old" }), node("far-2", "far", { schema: "bbbbbbbbbbbbbbbb-new" })];
  const proxies = proxyEntries(far, "b", near);
  t.equal(proxies.length, 2);
  t.same(new Set(proxies.map((p) => p.schema)), new Set(["aaaaaaaaaaaaaaaa-old", "bbbbbbbbbbbbbbbb-new"]));
  t.same(proxyEntries([...far].reverse(), "b", near).map((p) => p.id), proxies.map((p) => p.id), "the same ids whatever the order");
  t.ok(sameProxy(proxies[0]!, { ...proxies[0]!, load: { queued: 99, capacity: 1 } }), "load alone is no change");
  t.notOk(sameProxy(proxies[0]!, { ...proxies[0]!, methods: [] }), "methods are");
});

t.test("gateway proxies - bounded: at most MAX_PROXIES", async (t) => {
  const far = Array.from({ length: MAX_PROXIES + 10 }, (_, i) => node(`n-${i}`, `c${i}`));
  t.equal(proxyEntries(far, "b", near).length, MAX_PROXIES);
});

function summary(host: string, network: string, fields: Partial<HostSummary> = {}): HostSummary {
  return { host, network, endpoint: `tcp://${host}:7400`, remotes: [], role: "governor", ...fields };
}

t.test("gateway proxies - the remote tier: the far network's governors summed up, and its components", async (t) => {
  const hosts = [
    summary("gw~b", "b", { role: "agent" }),
    summary("host-b", "b", { capacity: { slots: 4, used: 1, provider: false, components: [{ name: "far", hash: "h", nodes: 1, queued: 0, capacity: 10, max: 4 }] } }),
    summary("host-b2", "b", { capacity: { slots: 8, used: 8, provider: false, components: [{ name: "idle", hash: "", nodes: 0, queued: 0, capacity: 0, max: 2 }] } }),
    summary("host-c", "c", { capacity: { slots: 100, used: 0, provider: false, components: [] } }),
  ];
  const r = remoteSummary("gw~b", "b", hosts, [node("far-1", "far"), node("x@gw~b", "near", { network: "a" }), node("sole-1", "sole", { host: "host-b3" })]);
  t.same(r, { network: "b", hosts: 2, slots: 12, free: 3, components: ["far", "idle", "sole"] }, "hosts and slots of network b's governors only; components they run or serve");
  t.same(legHosts("gw~b", "b", hosts).map((h) => h.host), ["host-b", "host-b2"], "the leg reaches network b's other hosts");
  t.same(legHosts("gw~b", "b", [summary("gw~b", "b")]), [], "alone in its network: the leg is down");
});

t.test("gateway proxies - a capacity request crosses with its visited hosts reset, the network it leaves appended and its scope kept; narrower scopes and loops do not cross", async (t) => {
  const request = { component: "far", method: "far.S/M", fromHost: "host-a", visited: ["host-a", "host-a2"], scope: "any", networks: [] as string[] };
  t.same(crossRequest(request, "a", "b"), { ...request, visited: [], networks: ["a"], scope: "any" });
  t.same(crossRequest({ ...request, scope: "" }, "a", "b")?.networks, ["a"], "an empty scope is any");
  t.equal(crossRequest({ ...request, scope: "network" }, "a", "b"), undefined, "network scope never crosses");
  t.equal(crossRequest({ ...request, scope: "host" }, "a", "b"), undefined);
  t.equal(crossRequest({ ...request, networks: ["b"] }, "c", "b"), undefined, "a request that came through b is not sent back into it");
  t.equal(crossRequest({ ...request, networks: Array.from({ length: 16 }, (_, i) => `n${i}`) }, "a", "b"), undefined, "past the bound on its trail");
  t.equal(crossRequest({ ...request, component: "" }, "a", "b"), undefined, "no component: nothing to grow");
});
