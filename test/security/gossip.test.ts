// Gossip contents and what they may cost, attacked from raw ZeroMQ sockets on loopback against real
// containers acting as host agents (issue 11, findings 5 and 7): forged records for a live host, a
// tombstone forged while a host is silent, and a flood of SYNs each naming another endpoint.
import { existsSync, readdirSync } from "node:fs";
import t from "tap";
import * as zmq from "zeromq";
import { Client } from "../../src/client/client.ts";
import { columns, encode, encodeNodes, type Digest } from "../../src/membership/gossip-codec.ts";
import type { NodeEntry } from "../../src/membership/table.ts";
import { GOSSIP, oneWayControlFrame } from "../../src/wire/control.ts";
import { EXAMPLES, privateRuntime, startContainer, testPort, type DevProcess } from "../lib/processes.ts";

type Teardown = Parameters<typeof privateRuntime>[0];

/** A host of its own on loopback: a private runtime directory, a host id, a discovery port. */
function host(tt: Teardown, name: string) {
  const port = testPort();
  return { env: { ...privateRuntime(tt), NODEBIN_HOST: name }, name, port, discovery: `tcp://127.0.0.1:${port}` };
}
type Host = ReturnType<typeof host>;

function container(tt: Teardown, h: Host, component: string, seed?: Host): Promise<DevProcess> {
  return startContainer(tt, ["--component", component, "--components", EXAMPLES, "--listen", "127.0.0.1", "--discovery-port", String(h.port), ...(seed ? ["--seed", `127.0.0.1:${seed.port}`] : [])], h.env);
}

const nodeOf = (readyLine: string) => /container ready: (\S+)/.exec(readyLine)![1]!;

/** A raw DEALER on loopback, closed at teardown. */
function raw(tt: Teardown, endpoint: string): zmq.Dealer {
  const d = new zmq.Dealer({ linger: 0, receiveTimeout: 10_000, sendHighWaterMark: 100_000, receiveHighWaterMark: 100_000 });
  d.connect(endpoint);
  tt.teardown(() => d.close());
  return d;
}

/** A gossip message in the GOSSIP control envelope any peer may send (built with the real codecs). */
const gossipFrame = (payload: Uint8Array) => oneWayControlFrame(GOSSIP, { payload }, "mallory-process");

const MALLORY = { host: "mallory", endpoint: "tcp://127.0.0.1:9", incarnation: 1 };

function syn(sender: { host: string; endpoint: string; incarnation: number }, digests: Digest[] = []): Uint8Array {
  return encode(sender, { syn: { full: false, rangeFirst: "", rangeLast: "", digests: columns(digests) } });
}

/** A client that pulls `h`'s table when asked (its host id is nobody's: every node is remote to it). */
async function observer(tt: Teardown, h: Host): Promise<Client> {
  const client = await Client.connect({ endpoint: h.discovery, host: "observer", refreshMs: 0 });
  tt.teardown(() => client.close());
  return client;
}

/** Pulls again; the node ids of the table. */
async function nodeIds(client: Client): Promise<string[]> {
  await client.refresh();
  return client.nodes().map((n) => n.id);
}

/** Pulls until `check` holds (each pull is a round trip to the agent: no sleeps); rejects after `ms` with what the table held. */
async function until(client: Client, check: (ids: string[]) => boolean, ms: number, what: string): Promise<number> {
  const started = Date.now();
  for (;;) {
    const ids = await nodeIds(client);
    if (check(ids)) return Date.now() - started;
    if (Date.now() - started > ms) throw new Error(`${what}: not within ${ms} ms (table: ${ids.join(" ")})`);
  }
}

/** Two hosts, A (greeter) and R (counter, seeded with A); resolves once A's table holds R's node. */
async function twoHosts(tt: Teardown) {
  const a = host(tt, "host-a");
  const r = host(tt, "host-r");
  const greeter = await container(tt, a, "greeter");
  const counter = await container(tt, r, "counter", a);
  const watch = await observer(tt, a);
  const counterNode = nodeOf(counter.readyLine);
  await until(watch, (ids) => ids.includes(counterNode), 30_000, "A learns R's node");
  const real = watch.nodes().find((n) => n.id === counterNode)!;
  const schema = watch.table.schema(real.schema)!;
  return { a, r, greeter, counter, watch, counterNode, real, schemas: [{ id: schema.id, json: schema.json }] };
}

/** R's node as an attacker forges it: a copy of the real entry (anyone may pull it) that points elsewhere. */
function forgedNode(real: NodeEntry): NodeEntry {
  return { ...real, id: "counter-forged", endpoints: ["tcp://127.0.0.1:9"] };
}

function forgedRecord(host: string, endpoint: string, incarnation: number, nodes: NodeEntry[], heartbeat = 5) {
  return { host, endpoint, network: "", incarnation, version: 99, heartbeat, schemas: [...new Set(nodes.map((n) => n.schema))], body: encodeNodes(nodes) };
}

t.test("gossip - forged ACKs and SYNs for a live host (incarnation 2^53-1, an hour ahead, heartbeat 2^32-1, a dead flag) do not replace it; it stays in the tables", async (t) => {
  const { a, r, watch, counterNode, real, schemas } = await twoHosts(t);
  const fake = forgedNode(real);
  const rEndpoint = `tcp://127.0.0.1:${r.port}`;
  const toA = raw(t, a.discovery);
  // The reported attack: one ACK from a made-up host, with incarnation 2^53 - 1.
  const reported = gossipFrame(encode(MALLORY, { ack: { records: [forgedRecord(r.name, rEndpoint, Number.MAX_SAFE_INTEGER, [fake])], schemas } }));
  const plausible = [
    // Within the incarnation bound, claiming to come from R itself.
    encode({ host: r.name, endpoint: rEndpoint, incarnation: Date.now() + 3_600_000 }, { ack: { records: [forgedRecord(r.name, rEndpoint, Date.now() + 3_600_000, [fake])], schemas } }),
    // SYNs holding R dead, or with a heartbeat that would make every real one look old.
    ...[true, false].map((dead) => syn(MALLORY, [{ host: r.name, incarnation: Date.now() - 1000, version: 1, heartbeat: 0xffffffff, dead }])),
  ].map(gossipFrame);
  let sent = 0;
  const bad = new Set<string>();
  /** Sends `messages` over and over for `ms` (none: only watches), pulling A's table between rounds of them. */
  const attackFor = async (ms: number, messages: Uint8Array[]) => {
    const started = Date.now();
    while (Date.now() - started < ms) {
      for (const m of messages) await toA.send(m);
      sent += messages.length;
      const ids = await nodeIds(watch);
      if (!ids.includes(counterNode) || ids.includes(fake.id)) bad.add(ids.join(" "));
    }
  };
  // From the moment A learnt of R: an incarnation past the bound is refused even before A has heard R first-hand.
  await attackFor(3000, [reported]);
  t.same([...bad], [], `A's table held R's real node, never the forged one, through ${sent} copies of the reported ACK`);
  // Now that A has heard R first-hand (its rounds are 1 s), plausible forgeries are refused too; for longer than
  // the detection bound (5.6 s), so that ignored real heartbeats would have had R buried.
  await attackFor(8000, [reported, ...plausible]);
  t.same([...bad], [], `and through ${sent} forged messages in all`);
  // The old failure: once the attacker stopped, R stayed out of every table for the tombstone's hour.
  await attackFor(6000, []);
  t.same([...bad], [], "and for 6 s after the attacker stopped");
  const reply = (await watch.call("demo.Counter/Add", { key: "k", by: 2 }, { timeoutMs: 5000 })) as { count: unknown };
  t.equal(String(reply.count), "2", "a call reaches R's real node");
});

t.test("gossip - a tombstone forged while a host is silent is refuted by its own heartbeat within a round of its return", async (t) => {
  const { a, r, counter, watch, counterNode, real, schemas } = await twoHosts(t);
  const fake = forgedNode(real);
  const rEndpoint = `tcp://127.0.0.1:${r.port}`;
  const toA = raw(t, a.discovery);
  const pid = counter.child.pid!;
  t.teardown(() => {
    try {
      process.kill(pid, "SIGCONT");
    } catch {
      // already gone
    }
  });
  // R falls silent. While A no longer hears it first-hand, a relay may speak for it: the attacker gives
  // it an incarnation an hour ahead (within the bound), then stops, and A buries that record.
  process.kill(pid, "SIGSTOP");
  const forged = gossipFrame(encode(MALLORY, { ack: { records: [forgedRecord(r.name, rEndpoint, Date.now() + 3_600_000, [fake])], schemas } }));
  let sawForged = false;
  const attackStarted = Date.now();
  while (Date.now() - attackStarted < 3000) {
    await toA.send(forged);
    if ((await nodeIds(watch)).includes(fake.id)) sawForged = true;
  }
  t.ok(sawForged, "the forged record took the silent host's place (second-hand may speak for a host not heard first-hand)");
  const buried = await until(watch, (ids) => !ids.includes(fake.id) && !ids.includes(counterNode), 20_000, "A buries the forged record");
  t.pass(`A buried it (${buried} ms): its tombstone holds the forged incarnation`);
  // R comes back: its own answers on A's connection to it refute the tombstone, whatever its incarnation.
  process.kill(pid, "SIGCONT");
  const back = await until(watch, (ids) => ids.includes(counterNode) && !ids.includes(fake.id), 10_000, "R back in A's table");
  t.ok(back <= 4000, `R's real node is back in A's table ${back} ms after it resumed (rounds of 1 s; bound 4 s)`);
  const reply = (await watch.call("demo.Counter/Add", { key: "k", by: 1 }, { timeoutMs: 5000 })) as { count: unknown };
  t.equal(String(reply.count), "1", "and calls reach it");
});

/** Open file descriptors of a process (each ZeroMQ socket holds at least one). */
const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

t.test(
  "gossip - 1,100 SYNs each naming another endpoint are answered on their own connection and open no sockets; the agent still registers a container and serves calls",
  { skip: existsSync("/proc/self/fd") ? false : "counts open files through /proc/PID/fd (Linux)" },
  async (t) => {
    const a = host(t, "host-a");
    const greeter = await container(t, a, "greeter");
    const pid = greeter.child.pid!;
    const flood = raw(t, a.discovery);
    // One warm-up exchange, so that the connection itself is open before counting.
    await flood.send(gossipFrame(syn({ host: "flood-warmup", endpoint: "tcp://127.0.0.1:1", incarnation: 1 })));
    await flood.receive();
    const before = fds(pid);
    const count = 1100;
    for (let i = 0; i < count; i++) {
      const endpoint = `tcp://127.${1 + (i >> 8)}.${i & 255}.1:${7400 + (i % 50)}`;
      await flood.send(gossipFrame(syn({ host: `flood-${i}`, endpoint, incarnation: Date.now() })));
    }
    let answers = 0;
    while (answers < count) {
      await flood.receive(); // throws after 10 s without one
      answers++;
    }
    t.equal(answers, count, "every SYN was answered on the connection it came in on");
    const after = fds(pid);
    t.ok(after - before <= 16, `the agent's open files went from ${before} to ${after} (a socket per claimed endpoint would be ${count} more)`);

    // It still works: a new container registers with it, and calls to both nodes succeed.
    const counter = await container(t, a, "counter");
    t.match(counter.readyLine, /\(member\)/, "a new container registered with the agent");
    const watch = await observer(t, a);
    await until(watch, (ids) => ids.includes(nodeOf(counter.readyLine)), 10_000, "the agent's table holds the new node");
    const hello = (await watch.call("demo.Greeter/Hello", { name: "Ada" }, { timeoutMs: 5000 })) as { message: string };
    t.equal(hello.message, "Hello, Ada!");
    const added = (await watch.call("demo.Counter/Add", { key: "k" }, { timeoutMs: 5000 })) as { count: unknown };
    t.equal(String(added.count), "1");
    t.ok(fds(pid) - before <= 32, `and its open files stay bounded (${fds(pid)})`);
  },
);
