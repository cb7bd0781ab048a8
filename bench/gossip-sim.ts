/**
 * Gossip at scale, simulated in one process: N Gossip instances on an
 * in-memory network with a simulated clock (each message 1-5 ms late), each
 * host seeded with the address of a single other host (a chain). For each
 * size it prints the plan (period, fanout, digests per SYN), how long the
 * cluster takes to converge (every host holds every other's current record),
 * the bytes each host sends per second once converged (mean and max over
 * hosts, against the budget), and how long a stopped host takes to leave
 * every other view (max over observers), beside the bound gossipPlan states.
 * Prints; asserts nothing.
 *
 *   node --import ./bin/register.mjs bench/gossip-sim.ts            # 3, 10, 100, 1000 hosts
 *   node --import ./bin/register.mjs bench/gossip-sim.ts --quick    # 3, 10, 100 (seconds)
 *   node --import ./bin/register.mjs bench/gossip-sim.ts 30 300     # other sizes
 *   node --import ./bin/register.mjs bench/gossip-sim.ts --detect-max 100 --json 10 100 1000
 *
 * --detect-max N skips the departure-detection step for sizes above N (it is
 * about 60% of the simulated time at 1000 hosts). --json adds one line
 * `{"rows":[...]}` after the table, for bench/run.ts.
 *
 * Run time: a few seconds up to 100 hosts; the 1000-host row simulates about
 * 140 s of a cluster of 1000 complete Gossip instances in one process (some
 * 9000 messages per simulated second, a million host records held), which
 * takes 2 to 4 minutes of CPU: the price of measuring convergence and
 * detection at that size rather than extrapolating them.
 */
import { gossipPlan } from "../src/membership/gossip-plan.ts";
import { Gossip, type GossipOptions } from "../src/membership/gossip.ts";
import type { NodeEntry } from "../src/membership/table.ts";

/** mulberry32: seeded, so that every run prints the same table. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface SimHost {
  host: string;
  endpoint: string;
  gossip: Gossip;
  up: boolean;
}

/** A min-heap of timed events. */
class Events {
  private readonly heap: { at: number; seq: number; run: () => void }[] = [];
  private seq = 0;
  push(at: number, run: () => void): void {
    const heap = this.heap;
    heap.push({ at, seq: this.seq++, run });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }
  peek(): number {
    return this.heap[0]?.at ?? Infinity;
  }
  pop(): { at: number; run: () => void } | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && before(heap[l]!, heap[m]!)) m = l;
        if (r < heap.length && before(heap[r]!, heap[m]!)) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m]!, heap[i]!];
        i = m;
      }
    }
    return top;
  }
}
const before = (a: { at: number; seq: number }, b: { at: number; seq: number }) => a.at < b.at || (a.at === b.at && a.seq < b.seq);

class Simulation {
  now = 0;
  readonly hosts: SimHost[] = [];
  private readonly byEndpoint = new Map<string, SimHost>();
  private readonly events = new Events();
  private readonly random: () => number;

  constructor(seed: number) {
    this.random = seededRandom(seed);
  }

  add(host: string, seeds: string[], options: Partial<GossipOptions> = {}): SimHost {
    const endpoint = `tcp://${host}:7400`;
    const gossip = new Gossip({ self: { host, endpoint, network: "", incarnation: 1_700_000_000_000 + this.now }, seeds, now: () => this.now, random: seededRandom(this.hosts.length + 1), ...options });
    const sim: SimHost = { host, endpoint, gossip, up: true };
    this.hosts.push(sim);
    this.byEndpoint.set(endpoint, sim);
    this.events.push(this.now + this.random() * gossip.nextDelayMs(), () => this.tick(sim));
    return sim;
  }

  private tick(sim: SimHost): void {
    if (!sim.up) return;
    this.send(sim, sim.gossip.tick());
    this.events.push(this.now + sim.gossip.nextDelayMs(), () => this.tick(sim));
  }

  private send(from: SimHost, out: { endpoint: string; bytes: Uint8Array }[]): void {
    for (const { endpoint, bytes } of out) {
      const to = this.byEndpoint.get(endpoint);
      if (!to) continue;
      this.events.push(this.now + 1 + this.random() * 4, () => {
        if (to.up && from.up) this.send(to, to.gossip.receive(bytes, from.endpoint));
      });
    }
  }

  /** Runs events until `until` (simulated ms). */
  runUntil(until: number): void {
    while (this.events.peek() <= until) {
      const event = this.events.pop()!;
      this.now = event.at;
      event.run();
    }
    this.now = until;
  }

  /** Runs in `stepMs` steps until `done()` or `limitMs` more; returns the time taken or undefined. */
  runUntilTrue(done: () => boolean, stepMs: number, limitMs: number): number | undefined {
    const start = this.now;
    while (this.now - start < limitMs) {
      this.runUntil(this.now + stepMs);
      if (done()) return this.now - start;
    }
    return undefined;
  }

  /** Every up host holds every other up host's current record. */
  converged(): boolean {
    const up = this.hosts.filter((h) => h.up);
    if (up.some((h) => h.gossip.stats().hosts !== up.length - 1)) return false; // cheap first
    for (const a of up) {
      for (const b of up) {
        if (a === b) continue;
        const held = a.gossip.known(b.host);
        const own = b.gossip.known(b.host)!;
        if (!held || held.incarnation !== own.incarnation || held.version !== own.version) return false;
      }
    }
    return true;
  }
}

const SCHEMAS = Array.from({ length: 4 }, (_, i) => ({ id: `schema-${i}`, json: JSON.stringify({ nested: { demo: { nested: { [`Service${i}`]: { methods: { Hello: { requestType: "HelloRequest", responseType: "HelloReply" } } }, HelloRequest: { fields: { name: { type: "string", id: 1 } } }, HelloReply: { fields: { message: { type: "string", id: 1 } } } } } }, pad: "x".repeat(400) }) }));

/** One node per host, of one of four components. */
function nodesOf(host: string, i: number): { nodes: NodeEntry[]; schemas: { id: string; json: string }[] } {
  const schema = SCHEMAS[i % SCHEMAS.length]!;
  const component = `service${i % SCHEMAS.length}`;
  const node: NodeEntry = {
    id: `${component}-${host}`,
    component,
    version: "1.0.0",
    host,
    network: "",
    endpoints: [`tcp://${host}:7500`],
    methods: [{ name: `demo.Service${i % SCHEMAS.length}/Hello`, mode: 0 }],
    schema: schema.id,
    load: { queued: 0, capacity: 100 },
  };
  return { nodes: [node], schemas: [schema] };
}

interface Row {
  hosts: number;
  periodMs: number;
  fanout: number;
  digests: number;
  convergeMs: number | undefined;
  convergeMaxBps: number;
  meanBps: number;
  maxBps: number;
  maxRecvBps: number;
  idleRecords: number;
  detectMs: number | undefined;
  /** False when the detection step was skipped (--detect-max). */
  detected: boolean;
  boundMs: number;
  falseRemovals: number;
  realS: number;
}

function run(n: number, detect: boolean): Row {
  const started = performance.now();
  const sim = new Simulation(n);
  const names = Array.from({ length: n }, (_, i) => `host-${String(i).padStart(4, "0")}`);
  names.forEach((host, i) => {
    // A chain: each host knows one other's address (the first knows its own, which it ignores).
    const { gossip } = sim.add(host, [`tcp://${names[Math.max(0, i - 1)]}:7400`]);
    const { nodes, schemas } = nodesOf(host, i);
    gossip.setLocalNodes(nodes, schemas);
  });
  const plan = gossipPlan({}, n, names[0]!.length, `tcp://${names[0]}:7400`.length);
  const convergeMs = sim.runUntilTrue(() => sim.converged(), n >= 1000 ? 2000 : 250, 300_000);
  const convergeMaxBps = Math.max(...sim.hosts.map((h) => (h.gossip.stats().bytesSent! * 1000) / sim.now));

  // Steady state: bytes per host per second over a window, once converged.
  const windowMs = n >= 1000 ? 10_000 : 30_000;
  const before = sim.hosts.map((h) => h.gossip.stats());
  sim.runUntil(sim.now + windowMs);
  const after = sim.hosts.map((h) => h.gossip.stats());
  const rates = after.map((s, i) => ((s.bytesSent! - before[i]!.bytesSent!) * 1000) / windowMs);
  const recvRates = after.map((s, i) => ((s.bytesReceived! - before[i]!.bytesReceived!) * 1000) / windowMs);
  const idleRecords = after.reduce((sum, s, i) => sum + s.recordsSent! - before[i]!.recordsSent!, 0);

  // Detection: stop one host; time until no other host holds it.
  let detectMs: number | undefined;
  let removed = 0;
  let observers: SimHost[] = [];
  if (detect) {
    const victim = sim.hosts[Math.floor(n / 2)]!;
    victim.up = false;
    observers = sim.hosts.filter((h) => h.up);
    detectMs = sim.runUntilTrue(() => observers.every((h) => !h.gossip.known(victim.host)), 100, plan.detectionBoundMs * 2);
    removed = observers.reduce((sum, h) => sum + h.gossip.stats().hostsRemoved!, 0);
  }
  return {
    hosts: n,
    periodMs: plan.periodMs,
    fanout: plan.fanout,
    digests: Math.min(plan.digestsPerSyn, n),
    convergeMs,
    convergeMaxBps,
    meanBps: rates.reduce((a, b) => a + b, 0) / n,
    maxBps: Math.max(...rates),
    maxRecvBps: Math.max(...recvRates),
    idleRecords,
    detectMs,
    detected: detect,
    boundMs: plan.detectionBoundMs,
    falseRemovals: removed - observers.length,
    realS: (performance.now() - started) / 1000,
  };
}

const args = process.argv.slice(2);
const quick = args.includes("--quick");
const json = args.includes("--json");
const detectMaxAt = args.indexOf("--detect-max");
const detectMax = detectMaxAt >= 0 ? Number(args[detectMaxAt + 1]) : Infinity;
const sizes = args.filter((_, i) => detectMaxAt < 0 || i !== detectMaxAt + 1).map(Number).filter((x) => x > 1);
const budget = 16384;
console.log(`gossip simulation: chain of single seeds, 1 node per host, defaults (budget ${budget} B/s per host, base period 1000 ms, phi 8, minFailMs 3000)`);
console.log("");
const header = ["hosts", "period ms", "fanout", "digests/SYN", "converge rounds", "converge s", "B/host/s converging (max)", "B/host/s mean", "B/host/s max", "recv B/s max", "records idle", "detect ms (max)", "bound ms", "false removals", "real s"];
const rows: string[][] = [header];
const print = (row: string[]) => console.log(row.map((cell, c) => cell.padStart(header[c]!.length)).join("  "));
print(header);
const results: Row[] = [];
for (const n of sizes.length ? sizes : quick ? [3, 10, 100] : [3, 10, 100, 1000]) {
  const r = run(n, n <= detectMax);
  results.push(r);
  const row = [
    r.hosts,
    r.periodMs,
    r.fanout,
    r.digests,
    r.convergeMs === undefined ? "no" : (r.convergeMs / r.periodMs).toFixed(1),
    r.convergeMs === undefined ? "no" : (r.convergeMs / 1000).toFixed(1),
    Math.round(r.convergeMaxBps),
    Math.round(r.meanBps),
    Math.round(r.maxBps),
    Math.round(r.maxRecvBps),
    r.idleRecords,
    !r.detected ? "skipped" : r.detectMs === undefined ? "not seen" : Math.round(r.detectMs),
    Math.round(r.boundMs),
    r.falseRemovals,
    r.realS.toFixed(1),
  ].map(String);
  rows.push(row);
  print(row);
}
console.log("");
console.log("converge: every host holds every other's current record (checked every 250 ms; 2 s at 1000 hosts).");
console.log("B/host/s: bytes each host sent per second (received is the same on average); converging = from start to convergence,");
console.log("mean/max = over 30 s once converged (10 s at 1000 hosts). records idle: node records sent in that window (deltas only: 0).");
console.log("detect: one host stops; time until the last other host removed it. bound: gossipPlan's D + maxFail + P.");
if (json) {
  const rounded = (x: number | undefined) => (x === undefined ? null : Math.round(x));
  const out = results.map((r) => ({ ...r, convergeMs: rounded(r.convergeMs), convergeMaxBps: rounded(r.convergeMaxBps), meanBps: rounded(r.meanBps), maxBps: rounded(r.maxBps), maxRecvBps: rounded(r.maxRecvBps), detectMs: rounded(r.detectMs), boundMs: rounded(r.boundMs), realS: Math.round(r.realS * 10) / 10 }));
  console.log(JSON.stringify({ rows: out }));
}
