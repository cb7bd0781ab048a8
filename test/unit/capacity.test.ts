// Capacity per tier (src/membership/capacity.ts): what a host record may say
// of its capacity, bounded; the tiers summed from the summaries an agent
// holds; where a capacity request goes (capacityTarget); the gossip body and
// pull reply carrying it; and the governor's routing of requests
// (ElasticLoop.capacityWanted) over fake host summaries.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import type { Logger } from "../../src/component/context.ts";
import { ElasticLoop, MAX_VISITED } from "../../src/governor/elastic.ts";
import type { CodeFetch, UnmetDemand } from "../../src/governor/ports.ts";
import type { RollingDeploy } from "../../src/governor/roll.ts";
import { GovernorConfig } from "../../src/governor/settings.ts";
import { GovernorState } from "../../src/governor/state.ts";
import type { Supervisor } from "../../src/governor/supervisor.ts";
import { MAX_COMPONENT_LOADS, MAX_REMOTES, capacityTarget, codeSources, freeSlots, sanitizeCapacity, sanitizeRemotes, tiersOf, type HostCapacity, type HostSummary } from "../../src/membership/capacity.ts";
import { decodeExtras, encodeNodes } from "../../src/membership/gossip-codec.ts";
import { Gossip } from "../../src/membership/gossip.ts";
import { MembershipTable } from "../../src/membership/table.ts";
import { ManualClock } from "../../src/platform/clock.ts";
import { nodebinRoot } from "../../src/wire/envelope.ts";
import { NODEBIN_PROTO_DIR, loadProtoFiles } from "../../src/wire/proto.ts";
import type { CapacityRequest } from "../../src/wire/control.ts";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function cap(slots: number, used: number, components: Partial<HostCapacity["components"][number]>[] = []): HostCapacity {
  return { slots, used, provider: false, components: components.map((c) => ({ name: "slow", hash: "", nodes: 0, queued: 0, capacity: 0, max: 0, ...c })) };
}

function host(id: string, network: string, capacity?: HostCapacity, remotes: HostSummary["remotes"] = []): HostSummary {
  return { host: id, network, endpoint: `tcp://10.0.0.${id.replace(/\D/g, "") || 9}:7400`, ...(capacity ? { capacity } : {}), remotes, role: remotes.length ? "gateway" : capacity ? "governor" : "agent" };
}

const request = (over: Partial<CapacityRequest> = {}): CapacityRequest => ({ component: "slow", method: "gov.Slow/Work", fromHost: "h1", visited: [], ...over });

t.test("capacity - a record's capacity is read bounded: components, names and numbers", async (t) => {
  const many = Array.from({ length: MAX_COMPONENT_LOADS + 50 }, (_, i) => ({ name: `c${i}`, nodes: 1 }));
  const read = sanitizeCapacity({ slots: 4, used: -3, components: [...many, { name: "x".repeat(300) }], provider: "yes" })!;
  t.equal(read.components.length, MAX_COMPONENT_LOADS, "at most MAX_COMPONENT_LOADS components");
  t.equal(read.used, 0, "a negative count reads as 0");
  t.equal(read.provider, false, "only true is true");
  t.equal(sanitizeCapacity({ slots: 2 ** 40 })!.slots, 0xffffffff, "numbers are unsigned 32-bit");
  t.equal(sanitizeCapacity(undefined), undefined);
  t.equal(sanitizeCapacity("garbage"), undefined);
  const remotes = sanitizeRemotes([...Array.from({ length: MAX_REMOTES + 3 }, (_, i) => ({ network: `n${i}`, free: 1, components: ["a", 7, "b"] })), null]);
  t.equal(remotes.length, MAX_REMOTES, "at most MAX_REMOTES remote networks");
  t.same(remotes[0]!.components, ["a", "b"], "names that are no strings are dropped");
  t.same(sanitizeRemotes({ not: "a list" }), []);
  t.equal(freeSlots(cap(2, 5)), 0, "more used than slots is no free slot");
});

t.test("capacity - the gossip body carries capacity and remotes; an old body carries neither; garbage says nothing", async (t) => {
  const body = encodeNodes([], "tcp://10.0.0.5:41234", { capacity: cap(4, 1, [{ name: "slow", hash: "abc", nodes: 1, max: 4 }]), remotes: [{ network: "b", hosts: 2, slots: 8, free: 6, components: ["greeter"] }] });
  const read = decodeExtras(body);
  t.same(read.capacity, cap(4, 1, [{ name: "slow", hash: "abc", nodes: 1, max: 4 }]));
  t.same(read.remotes, [{ network: "b", hosts: 2, slots: 8, free: 6, components: ["greeter"] }]);
  t.same(decodeExtras(encodeNodes([])), { remotes: [] }, "a body from before capacity: none");
  t.same(decodeExtras(new Uint8Array([0xff, 0xff, 0xff])), { remotes: [] }, "never throws");
  const flood = { capacity: { slots: 1, components: Array.from({ length: 5000 }, (_, i) => ({ name: `c${i}` })) } };
  const Body = loadProtoFiles([join(NODEBIN_PROTO_DIR, "nodebin", "gossip.proto")]).lookupType("nodebin.GossipBody");
  t.equal(decodeExtras(Body.encode(Body.fromObject(flood)).finish()).capacity!.components.length, MAX_COMPONENT_LOADS, "a hostile record's 5000 components are read as MAX_COMPONENT_LOADS");
});

t.test("capacity - the same extras again do not bump the record's version; a change does", async (t) => {
  let now = 1000;
  const g = new Gossip({ self: { host: "h1", endpoint: "tcp://10.0.0.1:7400", network: "a", incarnation: 1 }, seeds: [], now: () => now });
  g.setLocalNodes([], []);
  const v0 = g.known("h1")!.version;
  g.setExtras({ capacity: cap(4, 1) });
  const v1 = g.known("h1")!.version;
  t.ok(v1 > v0, "new extras: a new version");
  now += 250;
  g.setExtras({ capacity: cap(4, 1) });
  t.equal(g.known("h1")!.version, v1, "the same again: no new version (the governor sets them every round)");
  g.setExtras({ capacity: cap(4, 2) });
  t.ok(g.known("h1")!.version > v1, "a slot taken: a new version");
});

t.test("capacity - tiers: this host, this network summed, remote networks from gateways (one network once)", async (t) => {
  const hosts = [
    host("h1", "a", cap(2, 2, [{ name: "slow", nodes: 2, queued: 5, capacity: 4 }])),
    host("h2", "a", cap(4, 1, [{ name: "slow", nodes: 1, queued: 0, capacity: 2 }])),
    host("h3", "b", cap(8, 0)), // another network's host (say, a pulled table): not this network's
    host("g1", "a", undefined, [{ network: "b", hosts: 2, slots: 16, free: 10, components: ["greeter"] }]),
    host("g2", "a", undefined, [{ network: "b", hosts: 2, slots: 16, free: 12, components: ["counter"] }, { network: "a", hosts: 9, slots: 9, free: 9, components: [] }]),
  ];
  const tiers = tiersOf("h1", "a", hosts);
  t.same({ hosts: tiers.host.hosts, slots: tiers.host.slots, free: tiers.host.free }, { hosts: 1, slots: 2, free: 0 });
  t.same({ hosts: tiers.network.hosts, slots: tiers.network.slots, free: tiers.network.free }, { hosts: 2, slots: 6, free: 3 }, "governors of network a only");
  t.same(tiers.network.components.slow, { nodes: 3, queued: 5, capacity: 6 });
  t.equal(tiers.remotes.length, 1, "network b once, though two gateways reach it; a gateway's claim of our own network is ignored");
  t.same(tiers.remotes[0], { network: "b", gateways: ["g1", "g2"], hosts: 2, slots: 16, free: 12, components: ["greeter", "counter"] }, "the larger figures, never their sum");
});

t.test("capacity - where a request goes: most free slots in the network, then a gateway, as the scope allows", async (t) => {
  const hosts = [
    host("h1", "a", cap(1, 1, [{ name: "slow", hash: "abc", nodes: 1 }])),
    host("h2", "a", cap(4, 3)),
    host("h5", "a", cap(4, 1)),
    host("h6", "a", cap(8, 1, [{ name: "slow", nodes: 2, max: 2 }])), // roomiest, but slow is at its max there
    host("g1", "a", undefined, [{ network: "b", hosts: 2, slots: 8, free: 3, components: ["slow"] }]),
  ];
  const self = { host: "h1", network: "a" };
  t.equal(capacityTarget(request(), self, hosts)?.host.host, "h5", "the host of this network with the most free slots where the component may grow");
  t.equal(capacityTarget(request({ visited: ["h5"] }), self, hosts)?.host.host, "h2", "visited hosts are skipped");
  t.equal(capacityTarget(request({ scope: "host" }), self, hosts), undefined, "scope host: only this host");
  const full = hosts.map((h) => (h.capacity ? { ...h, capacity: { ...h.capacity, used: h.capacity.slots } } : h));
  t.same(capacityTarget(request(), self, full), { tier: "remote", host: full[4], network: "b" }, "network full: through the gateway");
  t.equal(capacityTarget(request({ scope: "network" }), self, full), undefined, "scope network never crosses a gateway");
  t.equal(capacityTarget(request({ networks: ["b"] }), self, full), undefined, "never back into a network it came through");
  const tie = [host("h1", "a", cap(1, 1)), host("h2", "a", cap(4, 2)), host("h3", "a", cap(4, 2, [{ name: "slow", hash: "abc" }]))];
  t.equal(capacityTarget(request(), self, tie)?.host.host, "h3", "free slots tied: the host with the code first");
  const twoGateways = [host("h1", "a", cap(1, 1)), host("g1", "a", undefined, [{ network: "b", hosts: 1, slots: 4, free: 4, components: [] }]), host("g2", "a", undefined, [{ network: "b", hosts: 1, slots: 4, free: 4, components: [] }])];
  t.equal(capacityTarget(request(), self, twoGateways, () => 0)?.host.host, "g1");
  t.equal(capacityTarget(request(), self, twoGateways, () => 0.99)?.host.host, "g2", "gateways with equal figures share the requests");
  t.same(codeSources("slow", "abc", "a", hosts, "h9").map((h) => h.host), ["h1"], "where the code of that hash is");
});

t.test("capacity - a pull carries the host summaries and who answered; a pulled copy is bounded", async (t) => {
  const agent = new MembershipTable();
  agent.setHost("h1", host("h1", "a", cap(2, 1)));
  agent.setHost("g1", host("g1", "a", undefined, [{ network: "b", hosts: 1, slots: 2, free: 2, components: ["x"] }]));
  const Reply = nodebinRoot.lookupType("nodebin.MembershipPullReply");
  const decode = (bytes: Uint8Array) => Reply.toObject(Reply.decode(bytes), { defaults: true, arrays: true, longs: Number }) as never;
  const client = new MembershipTable();
  const reply = client.mergePull(decode(agent.encodePull(0, { host: "h1", network: "a" })));
  t.equal((reply as { host: string }).host, "h1");
  t.equal((reply as { network: string }).network, "a");
  t.same(client.hostSummaries().map((h) => [h.host, h.role, freeSlots(h.capacity), h.remotes.length]), [["h1", "governor", 1, 0], ["g1", "gateway", 0, 1]]);
  const unchanged = new MembershipTable();
  unchanged.mergePull(decode(agent.encodePull(agent.version)));
  t.equal(unchanged.hostSummaries().length, 2, "an unchanged table still brings the summaries (capacity moves, nodes did not)");
});

/** An elastic loop on a ManualClock whose peers are the given host summaries; what it sends on is recorded. */
function loop(t: Test, hosts: HostSummary[], options: { capacity?: number; code?: CodeFetch; components?: string[] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-capacity-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, "state", "logs"), { recursive: true });
  const clock = new ManualClock();
  const state = new GovernorState({ clock, host: "h1", componentsDir: dir, capacity: options.capacity ?? 1 });
  state.log = quiet;
  state.strategies = { logging: { name: "quiet", logger: () => quiet }, lifecycle: { name: "none", decide: () => [] }, zombie: { name: "none", onZombie() {} } };
  const config = new GovernorConfig(state, { stateDir: join(dir, "state"), capacity: options.capacity ?? 1 });
  config.readConfig(true);
  for (const name of options.components ?? []) state.components.set(name, { name, hash: `hash-${name}`, desired: 1, startFailures: 0, backoffUntil: 0, restarts: 0, capacityRequests: 0, rolling: false, removed: false });
  const sent: { request: CapacityRequest; via: string }[] = [];
  const unmet: CapacityRequest[] = [];
  const demand: UnmetDemand = { unmet: (r) => unmet.push(r) };
  const announced: HostCapacity[] = [];
  const elastic = new ElasticLoop(
    state,
    config,
    undefined as unknown as Supervisor, // capacityWanted and capacity() never reach the supervisor or the deploy
    undefined as unknown as RollingDeploy,
    { network: "a", hosts: () => hosts, sendVia: (_m, request, via) => sent.push({ request: request as CapacityRequest, via }), announce: (c) => announced.push(c) },
    options.code,
    demand,
    () => 0,
  );
  return { state, elastic, sent, unmet, announced };
}

t.test("capacity - a full governor passes a request on, naming itself visited and the code's hash", async (t) => {
  const hosts = [host("h1", "a", cap(1, 1)), host("h2", "a", cap(4, 0))];
  const { elastic, sent, state } = loop(t, hosts, { components: ["slow"] });
  // One child alive fills the single slot.
  state.children.set(7, { pid: 7, component: "slow", phase: "ready" } as never);
  elastic.capacityWanted(request());
  t.equal(sent.length, 1);
  t.equal(sent[0]!.via, hosts[1]!.endpoint, "to h2's discovery endpoint");
  t.same(sent[0]!.request.visited, ["h1"]);
  t.equal(sent[0]!.request.hash, "hash-slow", "the first governor that knows the code names its version");
  t.equal(state.components.get("slow")!.capacityRequests, 0, "not counted here: no room");
});

t.test("capacity - a governor with room grows; one without the code fetches it first; nowhere is unmet demand", async (t) => {
  const withRoom = loop(t, [host("h1", "a", cap(2, 0))], { capacity: 2, components: ["slow"] });
  withRoom.elastic.capacityWanted(request());
  t.equal(withRoom.state.components.get("slow")!.capacityRequests, 1, "room here: the lifecycle strategy is told");
  t.same(withRoom.sent, []);

  const fetched: { name: string; hash: string; from: string[] }[] = [];
  let finish!: () => void;
  const code: CodeFetch = {
    fetch(name, hash, sources) {
      fetched.push({ name, hash, from: sources.map((s) => s.host) });
      return new Promise<void>((resolve) => (finish = resolve));
    },
  };
  const lacking = loop(t, [host("h1", "a", cap(2, 0)), host("h3", "a", cap(1, 1, [{ name: "slow", hash: "abc", nodes: 1 }]))], { capacity: 2, code });
  lacking.elastic.capacityWanted(request({ hash: "abc", visited: ["h3"] }));
  lacking.elastic.capacityWanted(request({ hash: "abc", visited: ["h3"] }));
  t.same(fetched, [{ name: "slow", hash: "abc", from: ["h3"] }], "fetched once, from the host that has that hash");
  t.same(lacking.sent, [], "nothing passed on while the code comes");
  lacking.state.components.set("slow", { name: "slow", hash: "abc", desired: 0, startFailures: 0, backoffUntil: 0, restarts: 0, capacityRequests: 0, rolling: false, removed: false });
  finish();
  await new Promise((r) => setImmediate(r));
  t.equal(lacking.state.components.get("slow")!.desired, 1, "a node of the fetched code is wanted");

  const failing = loop(t, [host("h1", "a", cap(2, 0)), host("h3", "a", cap(1, 1, [{ name: "slow", hash: "abc", nodes: 1 }]))], {
    capacity: 2,
    code: { fetch: () => Promise.reject(new Error("sources gone")) },
  });
  failing.elastic.capacityWanted(request({ hash: "abc", visited: ["h3"] }));
  await new Promise((r) => setImmediate(r));
  t.equal(failing.unmet.length, 1, "the fetch failed and no other host has room: unmet");

  const nowhere = loop(t, [host("h1", "a", cap(1, 1))], { components: ["slow"] });
  nowhere.state.children.set(7, { pid: 7, component: "slow", phase: "ready" } as never);
  nowhere.elastic.capacityWanted(request());
  t.equal(nowhere.unmet.length, 1, "no room anywhere: the provider's signal");
  nowhere.elastic.capacityWanted(request({ visited: Array.from({ length: MAX_VISITED + 1 }, (_, i) => `x${i}`) }));
  t.equal(nowhere.unmet.length, 1, "a request with an absurd trail is dropped, not routed");
});

t.test("capacity - the governor announces its slots and components; load alone at most once a second", async (t) => {
  const { elastic, announced, state } = loop(t, [], { capacity: 3, components: ["slow"] });
  state.children.set(7, { pid: 7, component: "slow", phase: "ready", stats: { queued: 2, capacity: 10 } } as never);
  const tick = () => (elastic as unknown as { announce(): void }).announce();
  tick();
  t.same(announced.at(-1), { slots: 3, used: 1, provider: false, components: [{ name: "slow", hash: "hash-slow", nodes: 1, queued: 2, capacity: 10, max: 16 }] });
  tick();
  t.equal(announced.length, 1, "nothing changed: nothing announced");
  (state.children.get(7) as { stats: { queued: number } }).stats.queued = 5;
  tick();
  t.equal(announced.length, 1, "load moved within the second: not yet");
  (state.clock as ManualClock).advance(1000);
  tick();
  t.equal(announced.length, 2, "a second later: announced");
  state.capacity = 4;
  tick();
  t.equal(announced.length, 3, "slots changed: at once");
});
