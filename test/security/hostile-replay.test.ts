// The security review's sequence replayed by a hostile peer against a live governor for 20 s in
// CI (NODEBIN_SOAK=1: 10 minutes; NODEBIN_RELIABILITY_SECONDS=N: N seconds, 60 was the CI length
// before), from plain ZeroMQ sockets on loopback, while
// legitimate callers keep calling through the network: every call must succeed, no child may
// be killed or replaced, the governor's and the children's memory must stay flat, and every
// attack must have been refused or dropped (issue 11, "Done when").
import { join } from "node:path";
import t from "tap";
import * as zmq from "zeromq";
import {
  DEREGISTER,
  DRAIN,
  GOSSIP,
  GOVERNOR_SET,
  GOVERNOR_STATUS,
  GOVERNOR_STOP,
  IMPORT_STATE,
  PING,
  REGISTER,
  REQUEST_CAPACITY,
  YIELD_AGENT,
} from "../../src/wire/control.ts";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { Mode } from "../../src/wire/schema.ts";
import { example, hostClient, startGovernor, testHost, type GovernorStatus } from "../lib/governor.ts";
import { MiB, rssOf, runLoad, soakSeconds } from "../lib/load.ts";
import { runCli } from "../lib/processes.ts";

const SECONDS = soakSeconds(20, 600);
const PERMISSION_DENIED = 7;
const utf8 = new TextEncoder();

interface Method {
  schema: { fullName: string; requestType: Parameters<typeof encodeMessage>[0] };
}

function controlFrame(method: Method, request: unknown, fields: Partial<Envelope> = {}): Uint8Array {
  return encodeEnvelope(
    envelope({ id: 1, plane: Plane.CONTROL, mode: Mode.SYNC, kind: Kind.REQUEST, from: "attacker", to: "", method: method.schema.fullName, value: encodeMessage(method.schema.requestType, request, "attack"), deadlineMs: 5000, ...fields }),
  );
}

function helloFrame(fields: Partial<Envelope>, name = "x"): Uint8Array {
  const bytes = utf8.encode(name);
  return encodeEnvelope(envelope({ id: 1, plane: Plane.APPLICATION, mode: Mode.SYNC, kind: Kind.REQUEST, method: "demo.Greeter/Hello", value: new Uint8Array([0x0a, bytes.length, ...bytes]), deadlineMs: 5000, ...fields }));
}

/** A `from` whose bytes invalidUtf8() replaces: "\x01\x01\x01" becomes C3 28 FF (no UTF-8). */
const MARK = "\x01\x01\x01";
function invalidUtf8(frame: Uint8Array): Uint8Array {
  const out = frame.slice();
  for (let i = 0; i + 2 < out.length; i++) {
    if (out[i] === 1 && out[i + 1] === 1 && out[i + 2] === 1) {
      out.set([0xc3, 0x28, 0xff], i);
      return out;
    }
  }
  throw new Error("marker not found");
}

/** A DEALER the attacker keeps for one target; answers are read and thrown away (counted by kind). */
class Line {
  readonly socket = new zmq.Dealer({ linger: 0, sendTimeout: 0 });
  denied = 0;
  answers = 0;
  private readonly reading: Promise<void>;
  constructor(endpoint: string) {
    this.socket.connect(endpoint);
    this.reading = (async () => {
      try {
        for await (const frames of this.socket) {
          for (const f of frames) {
            const env = decodeEnvelope(f);
            if (env instanceof NodeBinError) continue;
            this.answers++;
            if (env.error?.code === PERMISSION_DENIED) this.denied++;
          }
        }
      } catch {
        // closed
      }
    })();
  }
  send(message: Uint8Array | Uint8Array[]): void {
    // A full pipe drops the attack (sendTimeout 0): the attacker never waits on its target.
    this.socket.send(message).catch(() => {});
  }
  async close(): Promise<void> {
    this.socket.close();
    await this.reading;
  }
}

const childrenOf = (s: GovernorStatus) =>
  s.components
    .flatMap((c) => c.children.map((k) => ({ component: c.name, pid: k.pid, node: k.node, phase: k.phase, restarts: k.restarts })))
    .sort((a, b) => a.pid - b.pid);

t.test(`hostile replay - the review's attacks for ${SECONDS} s against a live governor while callers keep calling`, { timeout: (SECONDS + 120) * 1000 }, async (t) => {
  const host = testHost(t, [example("greeter"), example("counter"), example("welcome")]);
  const gov = await startGovernor(t, host, ["--seed", host.seed]);
  const ready = await gov.until((s) => s.components.length === 3 && s.components.every((c) => c.children.length === 1 && c.children[0]!.phase === "ready") && s, 45_000, "every component ready");
  const before = childrenOf(ready);

  // Where the attacks go: the governor's tcp discovery port, and every node's tcp endpoint.
  const listed = await runCli(["client", "--seed", host.seed, "nodes", "--json"], host.env);
  t.equal(listed.code, 0, listed.stderr);
  const rowsBefore = JSON.parse(listed.stdout) as { id: string; version: string; endpoints: string[] }[];
  const nodes = (JSON.parse(listed.stdout) as { id: string; component: string; endpoints: string[] }[]).map((n) => ({ ...n, tcp: n.endpoints.find((e) => e.startsWith("tcp://"))! }));
  t.equal(nodes.length, 3, "three nodes listed");
  const discovery = `tcp://${host.seed}`;
  const greeter = nodes.find((n) => n.component === "greeter")!;
  const welcome = nodes.find((n) => n.component === "welcome")!;

  // Legitimate callers: a nested call per visit (welcome calls the greeter), through the network.
  const client = await hostClient(t, host);
  let visits = 0;
  const load = runLoad(t, 4, async () => {
    const name = `Ada${visits++ % 1000}`;
    const reply = (await client.call("demo.Welcome/Visit", { name }, { timeoutMs: 5000 })) as { greeting?: string };
    if (reply.greeting !== `Hello, ${name}!`) throw new NodeBinError("INTERNAL", `wrong answer: ${JSON.stringify(reply)} for ${name}`);
  });
  await load.reach(50);
  const rss = () => ({ governor: rssOf(gov.child.pid!) ?? 0, children: before.map((c) => rssOf(c.pid) ?? 0) });
  const rssStart = rss();

  const atDiscovery = new Line(discovery);
  const atNodes = nodes.map((n) => ({ node: n, line: new Line(n.tcp) }));
  const fake = { id: greeter.id, component: "greeter", version: "6.6.6", host: "test-host", network: "", endpoints: ["tcp://127.0.0.1:1"], methods: [{ name: "demo.Greeter/Hello", mode: 0 }], schema: "x", load: { queued: 0, capacity: 1 } };
  const big = new Uint8Array(15 * MiB).fill(1);
  const sent: Record<string, number> = {};
  const count = (what: string, n = 1) => (sent[what] = (sent[what] ?? 0) + n);

  // Memory is sampled through the attack (see "Memory: flat" below).
  const started = Date.now();
  const end = started + SECONDS * 1000;
  const samples: { at: number; rss: ReturnType<typeof rss> }[] = [];
  let nextSample = started;
  let round = 0;
  while (Date.now() < end) {
    round++;
    if (Date.now() >= nextSample) {
      samples.push({ at: Date.now() - started, rss: rss() });
      nextSample += 1000;
    }
    // 1. The governor's management API over tcp.
    atDiscovery.send(controlFrame(GOVERNOR_STATUS, {}));
    atDiscovery.send(controlFrame(GOVERNOR_SET, { key: "capacity", component: "", value: 64 }));
    atDiscovery.send(controlFrame(GOVERNOR_STOP, { keepChildren: false }));
    count("governor API", 3);
    // 3, 4. Register (a real node id at the attacker's endpoint, a real child's pid, 600 s) and Deregister.
    atDiscovery.send(controlFrame(REGISTER, { nodes: [fake], schemas: [], leaseMs: 600_000, seeds: [], container: `evil-${round}`, pid: before[0]!.pid }));
    atDiscovery.send(controlFrame(DEREGISTER, { container: before[0]!.node }));
    // 6. YieldAgent at the agent; capacity requests asking for the whole host.
    atDiscovery.send(controlFrame(YIELD_AGENT, {}));
    atDiscovery.send(controlFrame(REQUEST_CAPACITY, { component: "counter", method: "demo.Counter/Add", fromHost: "evil", visited: [] }, { mode: Mode.ASYNC }));
    count("register/deregister/yield/capacity", 4);
    // 7. Gossip SYNs, each naming a different endpoint to answer at.
    atDiscovery.send(controlFrame(GOSSIP, { payload: utf8.encode(`garbage-${round}`) }, { mode: Mode.ASYNC, control: { endpoint: `tcp://127.0.0.1:${1024 + (round % 60000)}` } }));
    count("gossip");
    for (const { node, line } of atNodes) {
      // 6. Drain, ImportState and Ping at every node's tcp port, also addressed by id.
      line.send(controlFrame(DRAIN, { exportState: true }));
      line.send(controlFrame(DRAIN, { exportState: true }, { to: node.id }));
      line.send(controlFrame(IMPORT_STATE, { state: utf8.encode('{"count":666}') }, { to: node.id }));
      line.send(controlFrame(PING, {}, { from: greeter.id }));
      count("drain/import/ping", 4);
      // 2. Requests claiming the other nodes' ids (a hijack of their routes).
      for (const other of nodes) line.send(helloFrame({ from: other.id, to: node.id }));
      count("spoofed from", nodes.length);
      // 8. Forged answers with the ids the node's nested calls will use.
      line.send(Array.from({ length: 32 }, (_, i) => encodeEnvelope(envelope({ id: ((round * 32 + i) % 256) + 1, plane: Plane.APPLICATION, mode: Mode.SYNC, kind: Kind.RESPONSE, from: greeter.id, to: node.id, method: "demo.Greeter/Hello", value: new Uint8Array([0x0a, 6, ...utf8.encode("forged")]) }))));
      count("forged answers", 32);
      // 11. Invalid UTF-8 in a string field, and frames that are no envelope.
      line.send(invalidUtf8(helloFrame({ from: MARK, to: node.id })));
      line.send(new Uint8Array([0xff, 0xfe, 0xfd, round & 0xff]));
      count("bad frames", 2);
    }
    // 9. Now and then: 100 envelopes in one message, and a 45 MiB message of 15 MiB frames.
    if (round % 20 === 0) {
      atNodes[round % atNodes.length]!.line.send(Array.from({ length: 100 }, () => helloFrame({ from: "x", to: welcome.id })));
      count("100-envelope messages");
    }
    if (round % 100 === 0) {
      atNodes[round % atNodes.length]!.line.send([big, big, big]);
      count("45 MiB messages");
    }
    // 9. A burst of short-lived connections.
    if (round % 10 === 0) {
      const burst = Array.from({ length: 20 }, () => new Line(welcome.tcp));
      for (const b of burst) b.send(helloFrame({ from: "", to: welcome.id }));
      await new Promise((r) => setTimeout(r, 20));
      await Promise.all(burst.map((b) => b.close()));
      count("connections", burst.length);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  await load.stop();
  await atDiscovery.close();
  for (const { line } of atNodes) await line.close();

  // Calls: none lost, every answer right.
  t.same(load.failures.slice(0, 5), [], `${load.ok} legitimate calls during the attack, ${load.failures.length} failed`);
  t.ok(load.ok > SECONDS * 10, `callers kept working (${load.ok} calls in ${SECONDS} s)`);
  t.ok(atDiscovery.denied > 0, `the governor refused the host-only methods (${atDiscovery.denied} PERMISSION_DENIED)`);

  // Children: the same processes, none killed or replaced, none drained; the governor runs, capacity unchanged.
  const after = await gov.until((s) => s.components.every((c) => c.children.every((k) => (k.refused.answerAtListener ?? 0) > 0)) && s, 10_000, "every child's counters in the status");
  for (const c of after.components) {
    const k = c.children[0]!;
    t.ok(k.refused.answerAtListener && k.refused.undecodable, `${c.name}'s status counts what it dropped: ${JSON.stringify(k.refused)}`);
  }
  t.same(childrenOf(after), before, "the same children, none killed, restarted or drained");
  t.equal(gov.child.exitCode, null, "the governor still runs");
  t.not(after.capacity, 64, "capacity unchanged");
  const rows = JSON.parse((await runCli(["client", "--seed", host.seed, "nodes", "--json"], host.env)).stdout) as { id: string; version: string; endpoints: string[] }[];
  const brief = (rs: typeof rows) => rs.map((r) => `${r.id} ${r.version} ${r.endpoints.join(" ")}`).sort();
  t.same(brief(rows), brief(rowsBefore), "the same nodes at the same endpoints: none planted, none moved");
  t.ok(!rows.some((r) => r.endpoints.includes("tcp://127.0.0.1:1")), "no route to the attacker");
  const counter = await client.call("demo.Counter/Get", {});
  t.ok(!JSON.stringify(counter).includes("666"), "no state imported by the attacker");

  // Memory: flat. Sampled every second through the attack; a leak raises the floor. The attacked
  // children hold some garbage between V8's collections: the frames of a dropped 45 MiB message
  // are let go at once but freed only at the next GC, which V8 forces once its external memory
  // has grown ~64 MiB past the last one (and idle, may not run at all). So the peaks move with
  // GC timing, and the test is on the floor: per process, the lowest sample of the last third
  // within 96 MiB of the lowest of the first third (alone, floors move 2-10 MiB; with the whole
  // suite running beside it on 2 cores, V8 collects late and grows its heap: up to +53 MiB was
  // seen), and no sample more than 192 MiB over the start (V8's margin, two such messages, heap
  // growth under load). A leak of 2 MiB/s would fail it within 60 s (NODEBIN_RELIABILITY_SECONDS=60), one of
  // about 7 MiB/s within CI's 20 s; NODEBIN_SOAK=1 finds slower ones. The governor, not sent large
  // messages, must be back within 48 MiB once the attack stops.
  const mb = (n: number) => Math.round(n / MiB);
  const third = (SECONDS * 1000) / 3;
  const series: [string, (r: ReturnType<typeof rss>) => number][] = [["governor", (r) => r.governor], ...before.map((c, i): [string, (r: ReturnType<typeof rss>) => number] => [c.component, (r) => r.children[i]!])];
  const within = (from: number, to: number) => samples.filter((x) => x.at >= from && x.at < to);
  const floor = (pick: (r: ReturnType<typeof rss>) => number, from: number, to: number) => Math.min(...within(from, to).map((x) => pick(x.rss)));
  const peak = (pick: (r: ReturnType<typeof rss>) => number) => Math.max(...samples.map((x) => pick(x.rss)));
  const quietUntil = Date.now() + 30_000;
  while (rss().governor >= rssStart.governor + 48 * MiB && Date.now() < quietUntil) await new Promise((r) => setTimeout(r, 250));
  const rssAfter = rss();
  const figures: string[] = [];
  for (const [name, pick] of series) {
    const [first, last, top] = [floor(pick, 0, third), floor(pick, 2 * third, Infinity), peak(pick)];
    figures.push(`${name} ${mb(pick(rssStart))} MiB at the start, floor ${mb(first)} in the first third and ${mb(last)} in the last, peak ${mb(top)}, ${mb(pick(rssAfter))} after`);
    t.ok(last < first + 96 * MiB && top < pick(rssStart) + 192 * MiB, `${name}: memory flat (${figures.at(-1)})`);
  }
  t.ok(rssAfter.governor < rssStart.governor + 48 * MiB, `the governor's memory is back where it was (${mb(rssStart.governor)} -> ${mb(rssAfter.governor)} MiB)`);
  t.comment(`sent: ${Object.entries(sent).map(([k, v]) => `${k} ${v}`).join(", ")}`);
  t.comment(`memory: ${figures.join("; ")}`);
  t.comment(`calls: ${load.ok} in ${SECONDS} s, ${load.failures.length} failed, longest ${load.maxMs} ms`);
});
