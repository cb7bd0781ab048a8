import { join } from "node:path";
import t from "tap";
import { GOSSIP_PROTOCOL, columns, encode, encodeNodes, type Digest } from "../../src/membership/gossip-codec.ts";
import { fanoutFor, gossipPlan } from "../../src/membership/gossip-plan.ts";
import { Gossip, type GossipChange, type GossipOptions } from "../../src/membership/gossip.ts";
import { MAX_INCARNATION_AHEAD_MS } from "../../src/membership/gossip-state.ts";
import type { NodeEntry } from "../../src/membership/table.ts";
import { NODEBIN_PROTO_DIR, loadProtoFiles } from "../../src/wire/proto.ts";
import { seededRandom } from "../lib/seeded-random.ts";

const gossipRoot = loadProtoFiles([join(NODEBIN_PROTO_DIR, "nodebin", "gossip.proto")]);
const GossipMessage = gossipRoot.lookupType("nodebin.GossipMessage");

// ---- an in-memory network with a simulated clock ----

interface SimHost {
  host: string;
  endpoint: string;
  gossip: Gossip;
  up: boolean;
  /** Changes this host's view saw, with the time. */
  changes: (GossipChange & { at: number })[];
  /** Bumped on restart: ticks of an older instance stop. */
  generation: number;
}

/** A min-heap of timed events, in time order then insertion order. */
class Events {
  private readonly heap: { at: number; seq: number; run: () => void }[] = [];
  private seq = 0;
  push(at: number, run: () => void): void {
    const heap = this.heap;
    heap.push({ at, seq: this.seq++, run });
    for (let i = heap.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (!earlier(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }
  peek(): number {
    return this.heap[0]?.at ?? Infinity;
  }
  pop(): { at: number; run: () => void } {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        let m = i;
        if (l < heap.length && earlier(heap[l]!, heap[m]!)) m = l;
        if (l + 1 < heap.length && earlier(heap[l + 1]!, heap[m]!)) m = l + 1;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m]!, heap[i]!];
        i = m;
      }
    }
    return top;
  }
}
const earlier = (a: { at: number; seq: number }, b: { at: number; seq: number }) => a.at < b.at || (a.at === b.at && a.seq < b.seq);

/**
 * Gossip instances wired by a bus: each host ticks every nextDelayMs() from
 * a random phase, messages arrive 1-5 ms later, stopped hosts neither send
 * nor receive, and links can be cut. Connections as in the agent: a SYN goes
 * out on the sender's own connection to the endpoint and arrives on the
 * target's listener (no link); replies go back on the same connection, so
 * the initiator gets them with the link it dialed, and its replies reach the
 * target's listener again.
 */
class Network {
  now = 0;
  readonly hosts = new Map<string, SimHost>();
  private readonly byEndpoint = new Map<string, SimHost>();
  private readonly events = new Events();
  private readonly random: () => number;
  private readonly cut = new Set<string>();

  constructor(seed: number) {
    this.random = seededRandom(seed);
  }

  add(host: string, seeds: string[], options: Partial<GossipOptions> = {}): SimHost {
    const endpoint = `tcp://${host}:7400`;
    const sim: SimHost = { host, endpoint, gossip: undefined as unknown as Gossip, up: true, changes: [], generation: 0 };
    this.hosts.set(host, sim);
    this.byEndpoint.set(endpoint, sim);
    this.start(sim, seeds, options, 1_700_000_000_000 + this.now);
    return sim;
  }

  /** A new agent on the same host and endpoint: a new incarnation. */
  restart(host: string, seeds: string[], options: Partial<GossipOptions> = {}): SimHost {
    const sim = this.hosts.get(host)!;
    sim.up = true;
    sim.generation++;
    this.start(sim, seeds, options, 1_700_000_000_000 + this.now);
    return sim;
  }

  private start(sim: SimHost, seeds: string[], options: Partial<GossipOptions>, incarnation: number): void {
    sim.gossip = new Gossip({
      self: { host: sim.host, endpoint: sim.endpoint, network: "", incarnation },
      seeds,
      now: () => this.now,
      random: seededRandom(this.hosts.size * 7919 + sim.generation),
      ...options,
    });
    sim.gossip.onChange((change) => sim.changes.push({ ...change, at: this.now }));
    sim.gossip.setLocalNodes(...nodesOf(sim.host));
    const generation = sim.generation;
    const tick = () => {
      if (!sim.up || sim.generation !== generation) return;
      this.send(sim, sim.gossip.tick());
      this.events.push(this.now + sim.gossip.nextDelayMs(), tick);
    };
    this.events.push(this.now + this.random() * sim.gossip.nextDelayMs(), tick);
  }

  stop(host: string): void {
    this.hosts.get(host)!.up = false;
  }

  /** Cuts every link between the two groups. */
  partition(a: string[], b: string[]): void {
    for (const x of a) for (const y of b) this.cut.add(`${x}|${y}`).add(`${y}|${x}`);
  }

  heal(): void {
    this.cut.clear();
  }

  /** What a host's tick() returned: each SYN over its own connection to the endpoint. */
  send(from: SimHost, out: { endpoint: string; bytes: Uint8Array }[]): void {
    for (const { endpoint, bytes } of out) {
      const to = this.byEndpoint.get(endpoint);
      if (to) this.deliver(from, to, bytes, undefined, endpoint);
    }
  }

  /**
   * One message of an exchange whose initiator dialed `dialed`: it arrives at
   * `to` with `link` (to's own connection) or on to's listener (undefined);
   * its replies travel back on the same connection.
   */
  private deliver(from: SimHost, to: SimHost, bytes: Uint8Array, link: string | undefined, dialed: string): void {
    this.events.push(this.now + 1 + this.random() * 4, () => {
      if (!to.up || !from.up || this.cut.has(`${from.host}|${to.host}`)) return;
      for (const reply of to.gossip.receive(bytes, link)) this.deliver(to, from, reply.bytes, link === undefined ? dialed : undefined, dialed);
    });
  }

  run(ms: number): void {
    const until = this.now + ms;
    while (this.events.peek() <= until) {
      const event = this.events.pop();
      this.now = event.at;
      event.run();
    }
    this.now = until;
  }

  /** Runs in steps until `done()`; returns the time it took, or undefined after `limitMs`. */
  runUntil(done: () => boolean, limitMs: number, stepMs = 100): number | undefined {
    const start = this.now;
    while (this.now - start < limitMs) {
      this.run(stepMs);
      if (done()) return this.now - start;
    }
    return undefined;
  }

  up(): SimHost[] {
    return [...this.hosts.values()].filter((h) => h.up);
  }

  /** Every up host holds every other up host's current record. */
  converged(among: SimHost[] = this.up()): boolean {
    for (const a of among) {
      for (const b of among) {
        if (a === b) continue;
        const held = a.gossip.known(b.host);
        const own = b.gossip.known(b.host)!;
        if (!held || held.incarnation !== own.incarnation || held.version !== own.version) return false;
      }
    }
    return true;
  }

  /** Sum of a counter over hosts. */
  total(counter: string, hosts: SimHost[] = [...this.hosts.values()]): number {
    return hosts.reduce((sum, h) => sum + (h.gossip.stats()[counter] ?? 0), 0);
  }
}

const SCHEMA = { id: "schema-greeter", json: JSON.stringify({ nested: { demo: { nested: { Greeter: { methods: { Hello: { requestType: "R", responseType: "R" } } }, R: { fields: { name: { type: "string", id: 1 } } } } } } }) };

function node(host: string, id = `greeter-${host}`): NodeEntry {
  return {
    id,
    component: "greeter",
    version: "1.0.0",
    host,
    network: "",
    endpoints: [`tcp://${host}:7500`],
    methods: [{ name: "demo.Greeter/Hello", mode: 0 }],
    schema: SCHEMA.id,
    load: { queued: 0, capacity: 100 },
  };
}

function nodesOf(host: string): [NodeEntry[], { id: string; json: string }[]] {
  return [[node(host)], [SCHEMA]];
}

const names = (n: number) => Array.from({ length: n }, (_, i) => `h${String(i).padStart(3, "0")}`);
const endpointOf = (host: string) => `tcp://${host}:7400`;

/** n hosts, each seeded with the previous one's address only (the first with its own). */
function chain(n: number, seed: number, options: Partial<GossipOptions> = {}): Network {
  const net = new Network(seed);
  const hosts = names(n);
  hosts.forEach((host, i) => net.add(host, [endpointOf(hosts[Math.max(0, i - 1)]!)], options));
  return net;
}

// ---- convergence ----

t.test("gossip - hosts seeded along a chain all learn each other, with their nodes", async (t) => {
  const net = chain(12, 1);
  const took = net.runUntil(() => net.converged(), 60_000);
  t.ok(took !== undefined && took <= 10_000, `converged in ${took} ms`);
  for (const sim of net.hosts.values()) {
    const views = sim.gossip.hosts();
    t.same(views.map((v) => v.host), names(12).filter((h) => h !== sim.host), `${sim.host} holds every other host`);
    const other = views[0]!;
    t.same(other.nodes, [node(other.host)], "with its nodes");
    t.same(other.schemas, [SCHEMA], "and their schemas");
    t.equal(other.endpoint, endpointOf(other.host));
    t.equal(sim.changes.filter((c) => c.type === "added").length, 11, "one 'added' per host");
  }
  t.equal(net.total("hostsRemoved"), 0, "no host was ever taken for dead");
});

t.test("gossip - convergence from single seeds takes O(log N) rounds, not O(N)", async (t) => {
  for (const n of [30, 100]) {
    const net = chain(n, n);
    const took = net.runUntil(() => net.converged(), 120_000, 500);
    t.ok(took !== undefined && took <= 20_000, `${n} hosts converged in ${took} ms`);
    t.equal(net.total("hostsRemoved"), 0, `${n} hosts: no false removal`);
  }
});

t.test("gossip - a node list change reaches every host as one 'updated'", async (t) => {
  const net = chain(10, 2);
  net.runUntil(() => net.converged(), 60_000);
  const changer = net.hosts.get("h004")!;
  const before = net.now;
  changer.gossip.setLocalNodes([node("h004"), node("h004", "greeter-h004-b")], [SCHEMA]);
  const took = net.runUntil(() => net.converged(), 30_000);
  t.ok(took !== undefined && took <= 5000, `spread in ${took} ms`);
  for (const sim of net.hosts.values()) {
    if (sim === changer) continue;
    const updates = sim.changes.filter((c) => c.type === "updated" && c.at > before);
    t.equal(updates.length, 1, `${sim.host}: one update`);
    t.same(
      updates[0]?.host.nodes.map((n) => n.id),
      ["greeter-h004", "greeter-h004-b"],
    );
  }
});

// ---- deltas ----

t.test("gossip - once converged, an idle cluster exchanges digests but no node records", async (t) => {
  const net = chain(20, 3);
  net.runUntil(() => net.converged(), 60_000);
  net.run(5000);
  const records = net.total("recordsSent");
  const bytes = net.total("bytesSent");
  const digests = net.total("digestsSent");
  net.run(30_000);
  t.equal(net.total("recordsSent"), records, "no record sent in 30 s");
  t.ok(net.total("digestsSent") > digests + 20 * 30, "digests keep flowing (heartbeats)");
  t.ok(net.total("bytesSent") > bytes, "bytes keep flowing");
  t.equal(net.total("hostsRemoved"), 0);
});

// ---- failure detection ----

/** Stops `victim` once converged; returns when each other host removed it (ms after the stop). */
function detection(net: Network, victim: string, limitMs: number): Map<string, number> {
  net.runUntil(() => net.converged(), 60_000);
  net.run(10_000); // some history for the detectors
  const stoppedAt = net.now;
  net.stop(victim);
  const observers = net.up();
  net.runUntil(() => observers.every((h) => !h.gossip.known(victim)), limitMs);
  const removedAfter = new Map<string, number>();
  for (const h of observers) {
    const change = h.changes.find((c) => c.type === "removed" && c.host.host === victim);
    if (change) removedAfter.set(h.host, change.at - stoppedAt);
  }
  return removedAfter;
}

t.test("gossip - a stopped host leaves every view within the stated bound (3 hosts, defaults)", async (t) => {
  const net = chain(3, 4);
  const plan = gossipPlan({}, 3, 4, endpointOf("h000").length);
  t.equal(plan.fanout, 2);
  t.equal(Math.round(plan.detectionBoundMs), 5613, "D + maxFail + P = 0 + 4613 + 1000");
  const removed = detection(net, "h001", 60_000);
  t.equal(removed.size, 2, "both other hosts removed it");
  for (const [host, after] of removed) {
    t.ok(after <= plan.detectionBoundMs, `${host} removed it after ${Math.round(after)} ms <= ${Math.round(plan.detectionBoundMs)}`);
    t.ok(after >= plan.minFailMs - plan.periodMs, `${host}: not before minFailMs after its last heartbeat`);
    t.same(net.hosts.get(host)!.gossip.hosts().map((v) => v.host), [host === "h000" ? "h002" : "h000"], "its nodes left with it");
  }
  t.equal(net.total("hostsRemoved", net.up()), 2, "nothing else removed");
});

t.test("gossip - a stopped host leaves every view within the stated bound (30 hosts, tuned)", async (t) => {
  const options = { phiThreshold: 5, minFailMs: 2000 };
  const net = chain(30, 5, options);
  const plan = gossipPlan(options, 30, 4, endpointOf("h000").length);
  const removed = detection(net, "h017", 2 * plan.detectionBoundMs);
  t.equal(removed.size, 29, "every other host removed it");
  const worst = Math.max(...removed.values());
  t.ok(worst <= plan.detectionBoundMs, `last removal after ${Math.round(worst)} ms <= bound ${Math.round(plan.detectionBoundMs)}`);
  t.equal(net.total("hostsRemoved", net.up()), 29, "no false removal");
});

t.test("gossip - a host cut off then reconnected is re-added (same incarnation)", async (t) => {
  const net = chain(6, 6);
  net.runUntil(() => net.converged(), 60_000);
  const others = names(6).filter((h) => h !== "h002");
  net.partition(["h002"], others);
  net.runUntil(() => others.every((h) => !net.hosts.get(h)!.gossip.known("h002")), 60_000);
  t.same(net.hosts.get("h002")!.gossip.hosts(), [], "it removed everyone too");
  const incarnation = net.hosts.get("h002")!.gossip.known("h002")!.incarnation;
  net.heal();
  const took = net.runUntil(() => net.converged(), 60_000);
  t.ok(took !== undefined && took <= 10_000, `back in every view after ${took} ms`);
  for (const h of others) {
    const sim = net.hosts.get(h)!;
    t.equal(sim.gossip.known("h002")?.incarnation, incarnation, `${h}: same incarnation`);
    t.same(
      sim.changes.filter((c) => c.host.host === "h002").map((c) => c.type),
      ["added", "removed", "added"],
    );
  }
});

t.test("gossip - a restarted agent (new incarnation) supersedes its old record, before or after its death", async (t) => {
  const net = chain(5, 7);
  net.runUntil(() => net.converged(), 60_000);
  const old = net.hosts.get("h003")!.gossip.known("h003")!;
  // Restarted at once: the old record is still alive everywhere, the new one replaces it.
  net.stop("h003");
  net.run(500);
  net.restart("h003", [endpointOf("h000")]);
  net.runUntil(() => net.converged(), 30_000);
  const fresh = net.hosts.get("h003")!.gossip.known("h003")!;
  t.ok(fresh.incarnation > old.incarnation);
  for (const h of ["h000", "h001", "h002", "h004"]) {
    const sim = net.hosts.get(h)!;
    t.equal(sim.gossip.known("h003")?.incarnation, fresh.incarnation, `${h} holds the new incarnation`);
    t.same(sim.changes.filter((c) => c.host.host === "h003").map((c) => c.type), ["added", "updated"], `${h}: updated, never removed`);
  }
  // Restarted long after: removed first, then added again.
  net.stop("h003");
  net.runUntil(() => net.up().every((h) => !h.gossip.known("h003")), 30_000);
  net.run(5000);
  net.restart("h003", [endpointOf("h001")]);
  const took = net.runUntil(() => net.converged(), 30_000);
  t.ok(took !== undefined && took <= 5000, `re-added in ${took} ms`);
  t.same(net.hosts.get("h000")!.changes.filter((c) => c.host.host === "h003").map((c) => c.type), ["added", "updated", "removed", "added"]);
});

t.test("gossip - a stale digest relayed by a slower host does not bring a dead host back", async (t) => {
  const net = new Network(8);
  const slow = { minFailMs: 40_000, maxFailMs: 40_000 };
  net.add("fast", [endpointOf("slow1")]);
  net.add("slow1", [endpointOf("fast")], slow);
  net.add("slow2", [endpointOf("fast")], slow);
  net.add("victim", [endpointOf("fast")], slow);
  net.runUntil(() => net.converged(), 30_000);
  net.run(10_000);
  net.stop("victim");
  const fast = net.hosts.get("fast")!;
  net.runUntil(() => !fast.gossip.known("victim"), 30_000);
  t.notOk(fast.gossip.known("victim"), "the fast host removed it");
  net.run(20_000);
  t.ok(net.hosts.get("slow1")!.gossip.known("victim"), "the slow hosts still hold it and gossip it");
  t.notOk(fast.gossip.known("victim"), "still removed");
  t.same(fast.changes.filter((c) => c.host.host === "victim").map((c) => c.type), ["added", "removed"], "never re-added");
  t.equal(fast.gossip.stats().tombstones, 1);
  t.equal(fast.gossip.stats().revived, 0);
  t.ok(fast.gossip.stats().staleIgnored! > 0, `stale copies came and were ignored (${fast.gossip.stats().staleIgnored})`);
});

t.test("gossip - a partition heals", async (t) => {
  const net = chain(8, 9);
  net.runUntil(() => net.converged(), 60_000);
  const [left, right] = [names(8).slice(0, 4), names(8).slice(4)];
  net.partition(left, right);
  const split = net.runUntil(() => net.up().every((h) => h.gossip.hosts().length === 3), 60_000);
  t.ok(split !== undefined, `each side removed the other after ${split} ms`);
  t.ok(net.converged(left.map((h) => net.hosts.get(h)!)) && net.converged(right.map((h) => net.hosts.get(h)!)), "each side still whole");
  net.heal();
  const took = net.runUntil(() => net.converged(), 60_000);
  t.ok(took !== undefined && took <= 15_000, `whole again after ${took} ms`);
});

// ---- robustness ----

t.test("gossip - garbage never throws: random bytes, truncated and corrupted messages", async (t) => {
  const net = chain(3, 10);
  net.runUntil(() => net.converged(), 30_000);
  const target = net.hosts.get("h000")!.gossip;
  // Real messages to corrupt: a SYN, and the ACK it gets.
  const syn = net.hosts.get("h001")!.gossip.tick().find((o) => o.endpoint === endpointOf("h000"))!.bytes;
  const ack = target.receive(syn)[0]!.bytes;
  const random = seededRandom(42);
  const samples: Uint8Array[] = [new Uint8Array(0), new Uint8Array([0xff]), new Uint8Array(100).fill(0xff)];
  for (let i = 0; i < 2000; i++) samples.push(Uint8Array.from({ length: Math.floor(random() * 300) }, () => Math.floor(random() * 256)));
  for (const real of [syn, ack]) {
    for (let cut = 0; cut < real.length; cut += Math.max(1, Math.floor(real.length / 50))) samples.push(real.slice(0, cut));
    for (let i = 0; i < 1000; i++) {
      const copy = Uint8Array.from(real); // not slice(): on a Buffer it is a view
      for (let flips = 1 + Math.floor(random() * 3); flips > 0; flips--) copy[Math.floor(random() * copy.length)] ^= 1 << Math.floor(random() * 8);
      samples.push(copy);
    }
  }
  // Well-formed protobuf of the wrong shape, or telling lies.
  const lie = (fields: object) => GossipMessage.encode({ protocol: GOSSIP_PROTOCOL, host: "liar", endpoint: "tcp://liar:7400", incarnation: 1, ...fields }).finish();
  samples.push(
    GossipMessage.encode({ protocol: 99, host: "future", syn: {} }).finish(),
    lie({ syn: { digests: { hosts: ["a", "b"], incarnations: [1], versions: [1, 1], heartbeats: [1, 1] } } }),
    lie({ syn: { digests: { hosts: ["a"], incarnations: [1], versions: [1], heartbeats: [1], dead: [7] } } }),
    lie({ syn: { rangeFirst: "a" } }),
    lie({ syn: { digests: { hosts: [""], incarnations: [1], versions: [1], heartbeats: [1] } } }),
    lie({ syn: { digests: { hosts: ["x"], incarnations: ["18446744073709551615"], versions: [1], heartbeats: [1] } } }),
    lie({ ack: { records: [{ host: "ghost", endpoint: "tcp://ghost:1", incarnation: 5, version: 1, schemas: ["missing"], body: new Uint8Array([1, 2, 3]) }] } }),
    lie({ ack: { records: [{ host: "ghost", endpoint: "tcp://ghost:1", incarnation: 5, version: 1, body: new Uint8Array([0x0a, 0x05, 1]) }] } }),
    lie({ ack: { records: [{ host: "ghost", incarnation: 5, version: 1 }] } }),
    lie({ ack2: { records: [{ host: "ghost" }], schemas: [{ id: "", json: "" }] } }),
    lie({}),
  );
  let replies = 0;
  for (const bytes of samples) {
    t.doesNotThrow(() => (replies += target.receive(bytes).length));
    t.doesNotThrow(() => target.receive(bytes, "tcp://somewhere:1"));
  }
  for (const bytes of [undefined, null, "text", 42, {}] as unknown as Uint8Array[]) t.doesNotThrow(() => target.receive(bytes, 42 as unknown as string));
  const stats = target.stats();
  t.ok(stats.malformed! > 1500, `malformed counted (${stats.malformed})`);
  t.ok(stats.incompatible! >= 1, "another protocol version is told apart");
  t.ok(stats.badRecords! >= 2, "records whose body or schema is missing are refused");
  t.equal(stats.internalErrors, 0, "nothing reached a code path by surprise");
  t.notOk(target.known("ghost"), "no bad record entered the view");
  t.ok(replies > 0, "some corrupted SYNs still parse and get an answer");
  net.run(5000);
  t.ok(net.converged(), "the host still gossips normally");
  t.same(target.hosts().map((v) => v.host).sort(), ["h001", "h002"].concat(target.known("liar") ? ["liar"] : []).sort());
});

t.test("gossip - seeds: our own endpoint is ignored, and an alias of ours is found and dropped", async (t) => {
  const net = new Network(11);
  const alone = net.add("solo", [endpointOf("solo")]);
  net.run(5000);
  t.equal(alone.gossip.stats().messagesSent, 0, "nothing sent to our own endpoint");
  // An alias: another name for our endpoint, found when our own SYN comes back.
  const gossip = new Gossip({ self: { host: "me", endpoint: "tcp://10.0.0.1:7400", network: "", incarnation: 1 }, seeds: ["tcp://me.local:7400"], now: () => 0, random: seededRandom(1) });
  const [syn] = gossip.tick();
  t.equal(syn?.endpoint, "tcp://me.local:7400");
  // It arrives on our own listener: answered, so that the answer comes back on the connection to the alias.
  const [echo] = gossip.receive(syn!.bytes);
  t.ok(echo, "our own SYN is answered with an empty ACK");
  t.same(gossip.receive(echo!.bytes, "tcp://me.local:7400"), [], "which, back on our connection to the alias, is not answered");
  t.equal(gossip.stats().selfMessages, 2);
  t.same(gossip.tick(), [], "the alias is not contacted again");
});

t.test("gossip - another agent with our host id and a newer incarnation is counted as a conflict", async (t) => {
  const clock = { now: 0 };
  const make = (incarnation: number, endpoint: string) => new Gossip({ self: { host: "same", endpoint, network: "", incarnation }, seeds: [], now: () => clock.now, random: seededRandom(incarnation) });
  const old = make(1, "tcp://a:7400");
  const other = new Gossip({ self: { host: "other", endpoint: "tcp://o:7400", network: "", incarnation: 1 }, seeds: ["tcp://b:7400"], now: () => clock.now, random: seededRandom(3) });
  const newer = make(2, "tcp://b:7400");
  // other learns the newer "same" (its SYN to b, b's answer on other's connection), then tells the old one about it.
  for (const { bytes } of other.tick()) for (const reply of newer.receive(bytes)) for (const r of other.receive(reply.bytes, "tcp://b:7400")) newer.receive(r.bytes);
  t.equal(other.known("same")?.incarnation, 2);
  const syn = other.tick();
  for (const { bytes } of syn) old.receive(bytes);
  const direct = GossipMessage.encode({ protocol: GOSSIP_PROTOCOL, host: "same", endpoint: "tcp://b:7400", incarnation: 2, syn: {} }).finish();
  t.same(old.receive(direct, "tcp://b:7400"), []);
  t.ok(old.stats().conflicts! >= 1);
});

t.test("gossip - an agent restarted with the same incarnation outbids its own stale record", async (t) => {
  const net = chain(3, 12);
  net.runUntil(() => net.converged(), 30_000);
  net.hosts.get("h001")!.gossip.setLocalNodes([node("h001"), node("h001", "extra")], [SCHEMA]);
  net.runUntil(() => net.converged(), 30_000);
  const stale = net.hosts.get("h000")!.gossip.known("h001")!;
  // Same host, same incarnation (a clock that gave the same start time), version back at 1.
  const sim = net.hosts.get("h001")!;
  sim.generation++;
  sim.gossip = new Gossip({ self: { host: "h001", endpoint: sim.endpoint, network: "", incarnation: stale.incarnation }, seeds: [endpointOf("h000")], now: () => net.now, random: seededRandom(5) });
  sim.gossip.setLocalNodes(...nodesOf("h001"));
  const tick = () => {
    if (sim.gossip.known("h001")) net.send(sim, sim.gossip.tick());
  };
  for (let i = 0; i < 10; i++) {
    tick();
    net.run(1000);
  }
  t.ok(sim.gossip.stats().selfRefuted! >= 1, "it saw a newer version of its own record");
  t.ok(sim.gossip.known("h001")!.version > stale.version, "and outbid it");
  t.same(
    net.hosts.get("h000")!.gossip.hosts().find((v) => v.host === "h001")?.nodes.map((n) => n.id),
    ["greeter-h001"],
    "the others hold its current nodes",
  );
});

// ---- trust: what a message may change depends on the connection it came on ----

/** A host's record as a peer would relay it, built by hand with the real codec. */
function record(host: string, fields: { incarnation: number; version?: number; heartbeat?: number; endpoint?: string; nodes?: NodeEntry[] }) {
  return {
    host,
    endpoint: fields.endpoint ?? endpointOf(host),
    network: "",
    incarnation: fields.incarnation,
    version: fields.version ?? 1,
    heartbeat: fields.heartbeat ?? 0,
    schemas: [SCHEMA.id],
    body: encodeNodes(fields.nodes ?? [node(host)]),
  };
}

const ATTACKER = { host: "mallory", endpoint: "tcp://mallory:7400", incarnation: 1 };

/** An ACK carrying `records`, from `sender` (by default a made-up host). */
function forgedAck(records: object[], sender: { host: string; endpoint: string; incarnation: number } = ATTACKER, digests: Digest[] = []): Uint8Array {
  return encode(sender, { ack: { records, schemas: [SCHEMA], digests: columns(digests), requests: [] } });
}

/** A SYN from `sender` listing `digests`. */
function forgedSyn(sender: { host: string; endpoint: string; incarnation: number }, digests: Digest[] = []): Uint8Array {
  return encode(sender, { syn: { full: false, rangeFirst: "", rangeLast: "", digests: columns(digests) } });
}

t.test("gossip - trust: a forged record for a live host, with incarnation 2^53-1 or a plausible one, changes nothing, and the host stays", async (t) => {
  const net = chain(3, 21);
  net.runUntil(() => net.converged(), 30_000);
  net.run(3000); // every host has heard every other first-hand (3 hosts: each dials both others every round)
  const target = net.hosts.get("h000")!;
  const real = target.gossip.known("h001")!;
  const evil = [node("h001", "evil-node")];
  // On a listener (anyone may have connected), and on our own connection to the attacker's endpoint.
  for (const link of [undefined, ATTACKER.endpoint]) {
    target.gossip.receive(forgedAck([record("h001", { incarnation: Number.MAX_SAFE_INTEGER, version: 99, nodes: evil })]), link);
    target.gossip.receive(forgedAck([record("h001", { incarnation: net.now + 60_000 + 1_700_000_000_000, version: 99, nodes: evil })]), link);
    target.gossip.receive(forgedAck([record("h001", { incarnation: real.incarnation, version: real.version + 5, nodes: evil })]), link);
  }
  const stats = target.gossip.stats();
  t.ok(stats.incarnationRefused! >= 2, `the incarnation from the future refused (${stats.incarnationRefused})`);
  t.ok(stats.relayRefused! >= 4, `relayed records for a host heard first-hand refused (${stats.relayRefused})`);
  t.same(target.gossip.known("h001"), { ...real, heartbeat: target.gossip.known("h001")!.heartbeat }, "its record is the real one");
  t.same(target.gossip.hosts().find((v) => v.host === "h001")?.nodes.map((n) => n.id), ["greeter-h001"], "with its real nodes");
  net.run(20_000);
  t.same(target.changes.filter((c) => c.host.host === "h001").map((c) => c.type), ["added"], "never updated, never removed");
  t.ok(net.converged(), "the cluster is whole");
});

t.test("gossip - trust: an incarnation past the bound is refused even for an unknown host", async (t) => {
  const now = 1_700_000_000_000;
  const gossip = new Gossip({ self: { host: "me", endpoint: endpointOf("me"), network: "", incarnation: now }, seeds: [], now: () => now, random: seededRandom(2) });
  gossip.receive(forgedAck([record("far", { incarnation: now + MAX_INCARNATION_AHEAD_MS + 1 })]));
  t.notOk(gossip.known("far"), "not taken");
  t.equal(gossip.stats().incarnationRefused, 1);
  gossip.receive(forgedAck([record("far", { incarnation: now + MAX_INCARNATION_AHEAD_MS })]));
  t.ok(gossip.known("far"), "one at the bound is (a clock a day ahead must still join)");
});

t.test("gossip - trust: relays may add a host and update it, never move it to another endpoint; the host's own word does", async (t) => {
  let now = 1_700_000_000_000;
  const gossip = new Gossip({ self: { host: "me", endpoint: endpointOf("me"), network: "", incarnation: now }, seeds: [], now: () => now, random: seededRandom(3) });
  gossip.receive(forgedAck([record("far", { incarnation: now, heartbeat: 3 })]));
  t.equal(gossip.known("far")?.version, 1, "an unknown host is added from a relay");
  gossip.receive(forgedAck([record("far", { incarnation: now, version: 2, endpoint: "tcp://elsewhere:1" })]));
  t.equal(gossip.known("far")?.version, 1, "not moved by a relay");
  t.equal(gossip.stats().endpointRefused, 1);
  gossip.receive(forgedAck([record("far", { incarnation: now, version: 2 })]));
  t.equal(gossip.known("far")?.version, 2, "a newer version at the same endpoint is taken (the host is not heard first-hand)");
  t.equal(gossip.hosts()[0]?.endpoint, endpointOf("far"));
  // The host itself, answering on our connection to its endpoint: a lower version of its own stands.
  now += 10;
  const far = { host: "far", endpoint: endpointOf("far"), incarnation: now - 10 };
  gossip.receive(forgedAck([record("far", { incarnation: far.incarnation, version: 1, heartbeat: 9 })], far), endpointOf("far"));
  t.same(gossip.known("far"), { incarnation: far.incarnation, version: 1, heartbeat: 9 }, "first-hand, its own record replaces a relay's");
  // Now heard first-hand: relays may not change it.
  gossip.receive(forgedAck([record("far", { incarnation: far.incarnation, version: 7 })]));
  t.equal(gossip.known("far")?.version, 1);
  t.equal(gossip.stats().relayRefused, 1);
  // A squatter: another process answering for "far" on our connection to its own endpoint.
  gossip.receive(forgedAck([record("far", { incarnation: now, version: 3, endpoint: "tcp://squat:1" })], { host: "far", endpoint: "tcp://squat:1", incarnation: now }), "tcp://squat:1");
  t.equal(gossip.hosts()[0]?.endpoint, endpointOf("far"), "a host heard first-hand keeps its endpoint");
  t.equal(gossip.stats().endpointRefused, 2);
});

t.test("gossip - trust: a record squatting a host id loses to the host itself, probed at the endpoint it claims", async (t) => {
  let now = 1_700_000_000_000;
  const me = new Gossip({ self: { host: "me", endpoint: endpointOf("me"), network: "", incarnation: now }, seeds: [], now: () => now, random: seededRandom(4) });
  const real = new Gossip({ self: { host: "real", endpoint: endpointOf("real"), network: "", incarnation: now }, seeds: [], now: () => now, random: seededRandom(5) });
  real.setLocalNodes(...nodesOf("real"));
  // Before "real" speaks, a relay makes us hold it at an endpoint nobody answers.
  me.receive(forgedAck([record("real", { incarnation: now + 3_600_000, version: 50, endpoint: "tcp://nowhere:1", nodes: [node("real", "evil")] })]));
  t.equal(me.hosts()[0]?.endpoint, "tcp://nowhere:1");
  // "real" speaks to us (its SYN, on our listener): its claimed endpoint is probed in our next round.
  now += 1000;
  me.receive(forgedSyn({ host: "real", endpoint: endpointOf("real"), incarnation: now - 1000 }));
  const probe = me.tick().find((o) => o.endpoint === endpointOf("real"));
  t.ok(probe, "our next round probes it");
  t.equal(me.stats().claimProbes, 1);
  for (const reply of real.receive(probe!.bytes)) me.receive(reply.bytes, endpointOf("real"));
  const view = me.hosts().find((v) => v.host === "real");
  t.equal(view?.endpoint, endpointOf("real"), "the host is held where it answered");
  t.equal(view?.incarnation, now - 1000, "with its own incarnation, below the squatter's");
  t.same(view?.nodes.map((n) => n.id), ["greeter-real"], "and its own nodes");
});

t.test("gossip - trust: a relayed heartbeat far ahead is refused; the host's own heartbeat keeps it alive", async (t) => {
  const net = chain(3, 22);
  net.runUntil(() => net.converged(), 30_000);
  net.run(5000);
  const target = net.hosts.get("h000")!;
  const held = target.gossip.known("h001")!;
  const digest = (heartbeat: number): Digest => ({ host: "h001", incarnation: held.incarnation, version: held.version, heartbeat, dead: false });
  target.gossip.receive(forgedSyn(ATTACKER, [digest(0xffffffff)]));
  t.equal(target.gossip.stats().heartbeatRefused, 1, "2^32 - 1 is refused");
  t.ok(target.gossip.known("h001")!.heartbeat < 1000);
  // Within the bound a relay can run it up a little, but then the host's own (lower) heartbeats still count.
  target.gossip.receive(forgedSyn(ATTACKER, [digest(held.heartbeat + 60)]));
  for (let i = 0; i < 10; i++) {
    target.gossip.receive(forgedSyn(ATTACKER, [digest(target.gossip.known("h001")!.heartbeat + 60)]));
    net.run(1000);
  }
  t.ok(target.gossip.stats().heartbeatRefused! > 1, "repeated jumps stop at the bound");
  net.run(20_000);
  t.same(target.changes.filter((c) => c.host.host === "h001").map((c) => c.type), ["added"], "the host was never taken for dead");
});

t.test("gossip - trust: a dead host a relay brought back with a forged incarnation is put right by the host's own word at the next contact", async (t) => {
  const net = chain(3, 23);
  net.runUntil(() => net.converged(), 30_000);
  net.run(5000);
  const others = ["h000", "h001"];
  net.partition(["h002"], others);
  net.runUntil(() => others.every((h) => !net.hosts.get(h)!.gossip.known("h002")), 30_000);
  const h0 = net.hosts.get("h000")!.gossip;
  t.equal(h0.stats().tombstones, 1, "h000 holds a tombstone for h002");
  // A relay pushes the tombstone's incarnation past anything h002 can say (within the bound): second-hand, a dead host comes back with a newer incarnation.
  const incarnation = net.hosts.get("h002")!.gossip.known("h002")!.incarnation;
  h0.receive(forgedAck([record("h002", { incarnation: incarnation + 3_600_000, nodes: [node("h002", "evil")] })]));
  t.equal(h0.known("h002")?.incarnation, incarnation + 3_600_000, "a relay may bring a dead host back with a newer incarnation");
  // The link is back; h002 is a peer again at its own endpoint (relays cannot move it), so h000's next round dials it.
  net.heal();
  const h2 = net.hosts.get("h002")!.gossip;
  const before = h0.stats();
  const syn = h0.tick().find((o) => o.endpoint === endpointOf("h002"));
  t.ok(syn, "h000 dials h002 in its next round");
  for (const reply of h2.receive(syn!.bytes)) h0.receive(reply.bytes, endpointOf("h002"));
  t.equal(h0.known("h002")?.incarnation, incarnation, "h002's own word replaced the relay's incarnation at once");
  t.same(h0.hosts().find((v) => v.host === "h002")?.nodes.map((n) => n.id), ["greeter-h002"]);
  t.ok(h0.stats().hostsUpdated! > before.hostsUpdated!);
});

t.test("gossip - trust: a tombstone is refuted first-hand at once, by a probe of the endpoint a dead host's SYN claims", async (t) => {
  const net = chain(3, 24);
  net.runUntil(() => net.converged(), 30_000);
  net.run(5000);
  const others = ["h000", "h001"];
  net.partition(["h002"], others);
  net.runUntil(() => others.every((h) => !net.hosts.get(h)!.gossip.known("h002")), 30_000);
  const h0 = net.hosts.get("h000")!.gossip;
  const h2 = net.hosts.get("h002")!.gossip;
  // h002's heartbeat went on while it was cut off, but not past what h000 allows for: only its own word can revive it.
  const own = h2.known("h002")!;
  h0.receive(forgedSyn({ host: "h002", endpoint: endpointOf("h002"), incarnation: own.incarnation }, [{ host: "h002", ...own, dead: false }]));
  t.notOk(h0.known("h002"), "its SYN on h000's listener proves nothing by itself");
  const syn = h0.tick().find((o) => o.endpoint === endpointOf("h002"));
  t.ok(syn, "but h000 probes it in its very next round");
  for (const reply of h2.receive(syn!.bytes)) h0.receive(reply.bytes, endpointOf("h002"));
  t.ok(h0.known("h002"), "and its answer, first-hand, revives it");
  t.equal(h0.stats().refuted, 1, "the tombstone was refuted");
});

t.test("gossip - trust: claims on a listener cost a bounded number of probes and connections; idle connections are given up", async (t) => {
  let now = 1_700_000_000_000;
  const gossip = new Gossip({ self: { host: "me", endpoint: endpointOf("me"), network: "", incarnation: now }, seeds: [], now: () => now, random: seededRandom(6) });
  // 200 dead hosts, each then claiming an endpoint of its own on our listener (and 1100 strangers doing the same).
  for (let i = 0; i < 200; i++) gossip.receive(forgedAck([record(`d${i}`, { incarnation: now })]));
  now += 60_000;
  for (let i = 0; i < 20; i++) gossip.tick();
  t.equal(gossip.hosts().length, 0, "all buried");
  let answered = 0;
  for (let i = 0; i < 1100; i++) {
    const host = i < 200 ? `d${i}` : `stranger-${i}`;
    answered += gossip.receive(forgedSyn({ host, endpoint: `tcp://10.9.${i >> 8}.${i & 255}:7400`, incarnation: now })).length;
  }
  t.equal(answered, 1100, "each SYN answered (on the connection it came in on)");
  const stats = gossip.stats();
  t.equal(stats.probesPending, 16, "16 claims wait to be probed");
  t.equal(stats.probesDropped, 200 - 16, "the other dead hosts' claims are dropped; strangers' are not even noted");
  const dialed = new Set<string>();
  for (let round = 0; round < 100; round++) {
    now += 1000;
    for (const { endpoint } of gossip.tick()) dialed.add(endpoint);
    gossip.idleConnections();
    t.ok(gossip.stats().connections! <= 64, "never more than 64 connections held");
  }
  t.ok([...dialed].filter((e) => e.startsWith("tcp://10.9.")).length <= 16, "only the noted claims were probed");
  t.ok(gossip.stats().connectionsClosed! > 0, "idle connections were given up");
});

t.test("gossip - trust: what others hold of us cannot run our version or heartbeat away", async (t) => {
  const now = 1_700_000_000_000;
  const gossip = new Gossip({ self: { host: "me", endpoint: endpointOf("me"), network: "", incarnation: now }, seeds: [], now: () => now, random: seededRandom(7) });
  const self = (version: number, heartbeat: number): Digest => ({ host: "me", incarnation: now, version, heartbeat, dead: false });
  gossip.receive(forgedSyn(ATTACKER, [self(0xffffffff, 0xffffffff)]));
  t.same(gossip.known("me"), { incarnation: now, version: 1, heartbeat: 0 }, "unchanged");
  t.equal(gossip.stats().selfRefused, 1);
  gossip.receive(forgedSyn(ATTACKER, [self(5, 100)]));
  t.same(gossip.known("me"), { incarnation: now, version: 6, heartbeat: 0 }, "a small step ahead is outbid (a restart with the same incarnation), the heartbeat stays ours");
  const [reply] = gossip.receive(forgedSyn(ATTACKER, [{ ...self(6, 0), dead: true }]));
  t.ok(reply, "a SYN that holds us dead is answered");
});

// ---- coordination volume ----

t.test("gossip - the plan: fanout grows with log N, digests per SYN fit the budget, the period grows only when they cannot", async (t) => {
  t.same([1, 2, 3, 10, 30, 100, 1000].map(fanoutFor), [0, 1, 2, 2, 3, 3, 4]);
  const plan = (n: number, budget?: number) => gossipPlan({ budgetBytesPerSecond: budget }, n, 9, 22);
  t.equal(plan(30).periodMs, 1000);
  t.ok(plan(30).digestsPerSyn >= 30, "30 hosts: whole digests");
  t.ok(plan(1000).digestsPerSyn < 100, "1000 hosts: a slice of the ring per SYN");
  t.equal(plan(1000).periodMs, 1000, "the default budget never needs a longer period");
  const tight = plan(100, 2048);
  t.ok(tight.periodMs > 1000, `a 2 KiB/s budget stretches the period to ${tight.periodMs} ms`);
  t.equal(tight.digestsPerSyn, 8);
  t.ok(plan(1000).detectionBoundMs > plan(100).detectionBoundMs, "the bound grows with the cluster");
  t.ok(gossipPlan({ phiThreshold: 12 }, 100).detectionBoundMs > gossipPlan({ phiThreshold: 8 }, 100).detectionBoundMs, "and with the threshold");
});

/** Bytes each host sent per second over `ms` from now: [mean, max]. */
function sendRates(net: Network, ms: number): [number, number] {
  const before = new Map([...net.hosts.values()].map((h) => [h.host, h.gossip.stats().bytesSent!]));
  net.run(ms);
  const rates = [...net.hosts.values()].map((h) => ((h.gossip.stats().bytesSent! - before.get(h.host)!) * 1000) / ms);
  return [rates.reduce((a, b) => a + b, 0) / rates.length, Math.max(...rates)];
}

t.test("gossip - bytes sent per host per second stay under the budget at 3, 30 and 300 hosts", async (t) => {
  const budget = 16384;
  for (const n of [3, 30, 300]) {
    const net = chain(n, 100 + n);
    const took = net.runUntil(() => net.converged(), 120_000, 1000);
    t.ok(took !== undefined, `${n} hosts converged in ${took} ms`);
    const whole = Math.max(...[...net.hosts.values()].map((h) => (h.gossip.stats().bytesSent! * 1000) / net.now));
    t.ok(whole < budget, `${n} hosts, while converging: max ${Math.round(whole)} B/s per host < ${budget}`);
    const [mean, max] = sendRates(net, 30_000);
    t.ok(max < budget, `${n} hosts, converged: mean ${Math.round(mean)}, max ${Math.round(max)} B/s per host < ${budget}`);
    t.equal(net.total("hostsRemoved"), 0, `${n} hosts: no false removal`);
  }
});

t.test("gossip - a tight budget is kept too: 2 KiB/s at 100 hosts", async (t) => {
  const budget = 2048;
  const net = chain(100, 7, { budgetBytesPerSecond: budget });
  const took = net.runUntil(() => net.converged(), 300_000, 1000);
  t.ok(took !== undefined, `converged in ${took} ms`);
  const [mean, max] = sendRates(net, 60_000);
  t.ok(max < budget, `mean ${Math.round(mean)}, max ${Math.round(max)} B/s per host < ${budget}`);
  t.ok(net.hosts.get("h000")!.gossip.nextDelayMs() > 1000, "by a longer period");
});
