// BROADCAST with real processes on one host: in dev mode a broadcast reaches
// every in-process node of the method; under a governor, every node of the
// method in its own process (through the host's relay), from a client and
// from a handler (ctx.broadcast); wrong verbs are refused naming the right
// one. With a cluster key, a raw ZeroMQ peer without it neither receives nor
// injects anything at the relay's tcp socket, while one with the key does
// receive (so the refusal is the key's doing). Each node's own record
// (demo.Board/Read, a SYNC call) is what the tests read back.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import * as zmq from "zeromq";
import { Client } from "../../src/client/client.ts";
import { loadSecurity } from "../../src/security/provider.ts";
import { GOVERNOR_STATUS } from "../../src/wire/control.ts";
import { readBatch, topicOf } from "../../src/transport/pubsub.ts";
import { denoUnusable, startDeno } from "../lib/deno.ts";
import { example, startGovernor, testHost, type GovernorProcess } from "../lib/governor.ts";
import { EXAMPLES, clusterKeyFile, privateRuntime, runCli, startDev } from "../lib/processes.ts";
import { sideBySide } from "../lib/side-by-side.ts";

const POST = "demo.Board/Post";
const READ = "demo.Board/Read";

/**
 * Calls Read until `count` distinct nodes have answered and `ok` holds for
 * what each last said it received (routing spreads the calls over the
 * nodes); fails after `ms`. Returns received per node.
 */
async function readBoards(client: Client, count: number, ok: (received: number[]) => boolean, ms: number, what: string): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  const end = Date.now() + ms;
  while (!(seen.size >= count && ok([...seen.values()]))) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}; nodes said ${JSON.stringify(Object.fromEntries(seen))}`);
    const r = (await client.call(READ, { last: 1 })) as { node: string; received: { toString(): string } };
    seen.set(r.node, Number(r.received.toString()));
  }
  return seen;
}

/** Broadcasts probes until every one of `count` nodes has received at least one: a subscriber misses what was sent before it subscribed. */
async function warmUp(client: Client, count: number): Promise<Map<string, number>> {
  let i = 0;
  const end = Date.now() + 20_000;
  for (;;) {
    await client.broadcast(POST, { text: `warm-${i++}` });
    try {
      return await readBoards(client, count, (r) => r.every((n) => n > 0), 300, "warm");
    } catch (err) {
      if (Date.now() > end) throw err;
    }
  }
}

/** Each node's count once every one of them got `n` more than `base` said (it never gets more: nothing else is sent meanwhile). */
async function allGot(client: Client, base: Map<string, number>, n: number, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  const last = new Map<string, number>();
  while ([...base.keys()].some((node) => last.get(node) !== base.get(node)! + n)) {
    if (Date.now() > end) throw new Error(`not every node got ${n} within ${ms} ms: ${JSON.stringify({ base: Object.fromEntries(base), last: Object.fromEntries(last) })}`);
    const r = (await client.call(READ, { last: 1 })) as { node: string; received: { toString(): string } };
    last.set(r.node, Number(r.received.toString()));
  }
}

function boardHost(t: Parameters<typeof testHost>[0], nodes: number, env: Record<string, string> = {}) {
  const host = testHost(t, [example("board")]);
  Object.assign(host.env, env);
  writeFileSync(join(host.root, "governor.json"), JSON.stringify({ components: { board: { min: nodes } } }));
  return host;
}

async function boardsReady(gov: GovernorProcess, nodes: number) {
  return gov.until((s) => s.components.find((c) => c.name === "board")?.children.filter((k) => k.phase === "ready").length === nodes && s, 60_000, `${nodes} board nodes serving`);
}

t.test("broadcast - dev mode: every in-process node of the method gets each broadcast; wrong verbs name the right one; list shows the mode", async (t) => {
  const env = privateRuntime(t);
  const dev = await startDev(t, ["--components", EXAMPLES, "--instances", "3"], env);
  const client = await Client.connect({ endpoint: dev.endpoint });
  t.teardown(() => client.close());
  const cli = await runCli(["client", "broadcast", POST, '{"text":"from the cli","author":"ada"}'], env);
  t.equal(cli.code, 0, cli.stderr);
  t.equal(cli.stdout.trim(), "published");
  const json = await runCli(["client", "broadcast", POST, '{"text":"json"}', "--json"], env);
  t.same(JSON.parse(json.stdout), { published: true });
  await client.broadcast(POST, { text: "from the library" });
  const announce = await runCli(["client", "call", "demo.Board/Announce", '{"text":"from a handler"}'], env);
  t.equal(announce.code, 0, announce.stderr);
  // In-process: no subscription to wait for; all four are in every node's queue once they were accepted.
  const seen = await readBoards(client, 3, (r) => r.every((n) => n === 4), 10_000, "each of three nodes got all four");
  t.same([...seen.values()], [4, 4, 4]);
  const notes = (await client.call(READ, { last: 10 })) as { notes: { text: string }[] };
  t.same(notes.notes.map((n) => n.text), ["from the cli", "json", "from the library", "from a handler"], "in the order they were sent, from one sender");

  // Refused or read-only, each a client process of its own: side by side (nothing is delivered by any of them, checked below).
  const [call, send, onSync, onAsync, unknown, bad, list, listJsonRun] = await sideBySide(
    [
      ["client", "call", POST, "{}"],
      ["client", "send", POST, "{}"],
      ["client", "broadcast", READ, "{}"],
      ["client", "broadcast", "demo.Greeter/Sign", '{"name":"x"}'],
      ["client", "broadcast", "demo.Board/Pots", "{}"],
      ["client", "broadcast", POST, '{"text":5}'],
      ["client", "list"],
      ["client", "list", "--json"],
    ],
    (args) => runCli(args, env, { timeoutMs: 60_000 }),
  );
  t.equal(call!.code, 3, "call on a BROADCAST method is INVALID_ARGUMENT");
  t.match(call!.stderr, /demo\.Board\/Post is BROADCAST, not SYNC: broadcast it \(ctx\.broadcast, client\.broadcast, `node-bin client broadcast`\)/);
  t.equal(send!.code, 3, "send too");
  t.equal(onSync!.code, 3, "broadcast on a SYNC method is INVALID_ARGUMENT");
  t.match(onSync!.stderr, /demo\.Board\/Read is SYNC, not BROADCAST: call it/);
  t.match(onAsync!.stderr, /is ASYNC, not BROADCAST: send it/);
  t.equal(unknown!.code, 5, "an unknown method is NOT_FOUND");
  t.match(unknown!.stderr, /did you mean demo\.Board\/Post/);
  t.equal(bad!.code, 3, "a request that does not fit is INVALID_ARGUMENT");
  t.match(list!.stdout, /Post\s+BROADCAST demo\.Note/);
  const listJson = JSON.parse(listJsonRun!.stdout) as { name: string; methods: { name: string; mode: string }[] }[];
  t.same(listJson.find((s) => s.name === "demo.Board")!.methods.map((m) => [m.name, m.mode]), [["Announce", "SYNC"], ["Post", "BROADCAST"], ["Read", "SYNC"]]);
  t.same((await readBoards(client, 3, () => true, 5000, "read")).size, 3);
  t.same([...(await readBoards(client, 3, (r) => r.every((n) => n === 4), 5000, "nothing more arrived")).values()], [4, 4, 4], "the refused ones reached nobody");
});

t.test("broadcast - a governor: every node of the method, each in its own process, gets each broadcast, from a client and from a handler", async (t) => {
  const host = boardHost(t, 3);
  const gov = await startGovernor(t, host);
  await boardsReady(gov, 3);
  const client = await Client.connect({ endpoint: `tcp://${host.seed}`, host: host.env.NODEBIN_HOST! });
  t.teardown(() => client.close());
  const base = await warmUp(client, 3);
  const n = 200;
  for (let i = 0; i < n; i += 20) await Promise.all(Array.from({ length: 20 }, (_, k) => client.broadcast(POST, { text: `m${i + k}` })));
  await allGot(client, base, n);
  t.pass(`each of the 3 nodes got all ${n}`);
  const announce = await runCli(["client", "call", "demo.Board/Announce", '{"text":"from a handler"}', "--endpoint", `tcp://${host.seed}`], host.env);
  t.equal(announce.code, 0, announce.stderr);
  await allGot(client, base, n + 1);
  t.pass("a handler's ctx.broadcast (a member process, through the host's relay) reached every node, its own included");
  const cli = await runCli(["client", "broadcast", POST, '{"text":"cli"}', "--endpoint", `tcp://${host.seed}`], host.env);
  t.equal(cli.code, 0, cli.stderr);
  await allGot(client, base, n + 2);
  const s = await gov.status();
  const children = s.components.find((c) => c.name === "board")!.children;
  t.same(children.map((k) => k.refused.broadcastMissed ?? 0), [0, 0, 0], "nothing missed (Ping's refused, in governor status)");
  t.equal((s as unknown as { agent: Record<string, number> }).agent.broadcastTopics, 1, "the relay holds one topic: demo.Board/Post");
});

t.test("broadcast - with a cluster key, a raw ZeroMQ peer without it gets nothing and injects nothing at the relay; one with the key receives", async (t) => {
  const keyFile = clusterKeyFile(t);
  const host = boardHost(t, 1, { NODEBIN_CLUSTER_KEY_FILE: keyFile, NODEBIN_LOG: "info" });
  const gov = await startGovernor(t, host);
  await gov.waitForStderr(/broadcast relay at tcp:\/\/\S+/);
  const relayAt = /broadcast relay at (tcp:\/\/\S+)/.exec(gov.stderr())![1]!;
  await boardsReady(gov, 1);
  const client = await Client.connect({ endpoint: `tcp://${host.seed}`, host: host.env.NODEBIN_HOST!, clusterKeyFile: keyFile });
  t.teardown(() => client.close());

  // Without the key: a SUB that would read, and an XSUB that would subscribe and push a forged batch.
  const plain = new zmq.Subscriber({ linger: 0, receiveTimeout: 0 });
  plain.subscribe(topicOf(POST));
  plain.connect(relayAt);
  const forger = new zmq.XSubscriber({ linger: 0 });
  forger.connect(relayAt);
  await forger.send(Buffer.from("\x01forged.Topic/X\0"));
  await forger.send(Buffer.from("a forged batch"));
  // With it: the same SUB, given the client keys every member derives from the cluster key.
  const security = loadSecurity({ keyFile, runtimeDir: host.env.NODEBIN_RUNTIME_DIR!, watchMs: 0 });
  const keyed = new zmq.Subscriber({ linger: 0, ...security.wire!.connect()[0]!.options });
  keyed.subscribe(topicOf(POST));
  keyed.connect(relayAt);
  t.teardown(() => {
    plain.close();
    forger.close();
    keyed.close();
    security.close();
  });
  const refused = await gov.until((s) => ((s as unknown as { refused: Record<string, number> }).refused.broadcastUnauthenticated ?? 0) >= 2 && s, 15_000, "both keyless peers refused in their handshake");
  t.ok(refused, "the relay's tcp socket refused the keyless SUB and XSUB (broadcastUnauthenticated)");

  const base = await warmUp(client, 1);
  // The keyed SUB subscribed too: probes until it gets one (it is a late joiner like any other).
  let got: Buffer[] | undefined;
  const keyedFirst = keyed.receive().then((m) => (got = m));
  for (let i = 0; got === undefined; i++) {
    await client.broadcast(POST, { text: `probe-${i}` });
    await Promise.race([keyedFirst, new Promise((r) => setTimeout(r, 50))]);
  }
  t.ok(readBatch(got![0], true), "the peer with the key gets stamped batches");
  const afterProbes = await readBoards(client, 1, () => true, 5000, "count");
  for (let i = 0; i < 20; i++) await client.broadcast(POST, { text: `secret-${i}` });
  await allGot(client, afterProbes, 20);
  // Every broadcast was delivered and handled; had the keyless SUB been admitted it would hold them by now.
  const plainGot = await plain.receive().then(
    () => "a message",
    (err: { code?: string }) => err.code,
  );
  t.equal(plainGot, "EAGAIN", "the keyless SUB received nothing");
  const s = (await gov.status()) as unknown as { refused: Record<string, number>; agent: Record<string, number> };
  t.equal(s.refused.broadcastMalformed ?? 0, 0, "the forged batch never reached the relay");
  t.equal(s.agent.broadcastTopics, 1, "nor did the forged subscription add anything");
  t.ok(base.size === 1);
});

t.test("broadcast - under Deno: a Deno governor's relay and its Deno children (every socket polled) deliver a Node client's broadcasts", { skip: denoUnusable() }, async (t) => {
  const host = boardHost(t, 2);
  const gov = await startDeno(t, ["governor", "--components", host.components, "--listen", "127.0.0.1", "--discovery-port", String(host.port)], host.env, /governor ready: \S+ at (\S+)/);
  const client = await Client.connect({ endpoint: `tcp://${host.seed}`, host: host.env.NODEBIN_HOST! });
  t.teardown(() => client.close());
  const end = Date.now() + 60_000;
  while (client.nodes().filter((n) => n.component === "board").length < 2) {
    if (Date.now() > end) throw new Error(`two Deno board nodes not up within 60 s; governor stderr:\n${gov.stderr()}`);
    await client.refresh();
    await new Promise((r) => setTimeout(r, 200));
  }
  // Its children are killed at teardown by pid, should the governor not stop them itself.
  const socket = await Client.connect({ endpoint: `ipc://${join(host.env.NODEBIN_RUNTIME_DIR!, `governor-${host.port}.sock`)}`, connectTimeoutMs: 3000 });
  const status = JSON.parse((await socket.callControl(GOVERNOR_STATUS, {}, { timeoutMs: 3000 })).json) as { components: { children: { pid: number }[] }[] };
  await socket.close();
  for (const c of status.components) for (const k of c.children) host.pids.add(k.pid);
  const base = await warmUp(client, 2);
  for (let i = 0; i < 100; i += 10) await Promise.all(Array.from({ length: 10 }, (_, k) => client.broadcast(POST, { text: `d${i + k}` })));
  await allGot(client, base, 100);
  t.pass("both Deno nodes got all 100");
});
