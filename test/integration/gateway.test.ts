// Gateways between networks (issue 14): network a is one governor serving `near`, network b
// another (not seeded with a) serving `far`; a gateway process joins both (both legs on
// loopback, each with a discovery port of its own), all with one cluster key. A client of
// network a calls far's methods through the gateway: SYNC, nested (far calls near back),
// ASYNC, STREAM with cancellation, errors from the far node, deadlines; the gateway's record
// carries the remote tier; two gateways share the load; killing one fails its calls in
// flight with a code within their deadlines, and the other serves on.
import t from "tap";
import { Client } from "../../src/client/client.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { fixturePath } from "../lib/fixture-components.ts";
import { startGovernor, testHost, type GovernorProcess, type TestHost } from "../lib/governor.ts";
import { clusterKeyFile, privateRuntime, startNodeBin, testPort, type DevProcess } from "../lib/processes.ts";
import { until } from "../lib/until.ts";

interface Where {
  text: string;
  nodeId: string;
  host: string;
  meta: Record<string, string>;
  deadline: number;
  from: string;
}

const CASE = { timeout: 120_000 };

const freePort = () => testPort();

let key: string;
let hostA: TestHost;
let hostB: TestHost;
let govB: GovernorProcess;
let client: Client;

/** Starts a gateway `name` between a and b; both legs on loopback with discovery ports of their own. */
function startGateway(name: string): Promise<DevProcess & { ports: [number, number] }> {
  const ports: [number, number] = [freePort(), freePort()];
  const args = ["gateway", "--host", name, "--network", "a", "--seed", hostA.seed, "--listen", "127.0.0.1", "--discovery-port", String(ports[0]), "--remote-network", "b", "--remote-seed", hostB.seed, "--remote-listen", "127.0.0.1", "--remote-discovery-port", String(ports[1])];
  return startNodeBin(t, args, { ...privateRuntime(t), NODEBIN_CLUSTER_KEY_FILE: key, NODEBIN_LOG: "info" }, /gateway ready: (\S+ <-> \S+)/).then((p) => ({ ...p, ports }));
}

/** far's proxies in the client's table (network b, at a gateway's host), by gateway host. */
function proxies(): Map<string, string> {
  return new Map(client.nodes().filter((n) => n.component === "far" && n.network === "b").map((n) => [n.host, n.id]));
}

let gw1: DevProcess & { ports: [number, number] };

t.before(async () => {
  key = clusterKeyFile(t);
  hostA = testHost(t, [{ from: fixturePath("components-gateway/near") }]);
  hostB = testHost(t, [{ from: fixturePath("components-gateway/far") }]);
  hostA.env.NODEBIN_HOST = "host-a";
  hostB.env.NODEBIN_HOST = "host-b";
  for (const h of [hostA, hostB]) h.env.NODEBIN_CLUSTER_KEY_FILE = key;
  [, govB] = await Promise.all([startGovernor(t, hostA, ["--network", "a"]), startGovernor(t, hostB, ["--network", "b"])]);
  gw1 = await startGateway("gw1");
  t.match(gw1.readyLine, /gateway ready: a <-> b \(a: gw1~a at tcp:\/\/127\.0\.0\.1:\d+; b: gw1~b at tcp:\/\/127\.0\.0\.1:\d+\)/);
  client = await Client.connect({ endpoint: `tcp://${hostA.seed}`, host: "host-a", clusterKeyFile: key });
  t.teardown(() => client.close());
  await until(() => proxies().has("gw1~a"), 60_000, "far visible in network a through gw1");
});

t.test("gateway - network a sees far as a proxy of network b at the gateway's host; network b never sees its own nodes twice", CASE, async (t) => {
  const proxy = client.nodes().find((n) => n.component === "far")!;
  t.equal(proxy.network, "b", "the proxy says network b");
  t.equal(proxy.host, "gw1~a", "at the gateway's host of network a");
  t.ok(proxy.endpoints.some((e) => e.startsWith("tcp://127.0.0.1:")), "with a tcp endpoint");
  t.ok(proxy.methods.some((m) => m.name === "far.Far/Count"), "with far's methods");
  t.notOk(client.nodes().some((n) => n.component === "near" && n.network !== "a"), "near appears in network a as its own node only");
  const b = await Client.connect({ endpoint: `tcp://${hostB.seed}`, host: "host-b", clusterKeyFile: key });
  t.teardown(() => b.close());
  await until(() => b.nodes().some((n) => n.component === "near"), 30_000, "near visible in network b");
  t.same(
    b.nodes().filter((n) => n.component === "far").map((n) => n.network),
    ["b"],
    "network b has far's own node only (the gateway never advertises a network's nodes back to it)",
  );
});

t.test("gateway - a SYNC call from network a is served by network b's node, with its meta and deadline", CASE, async (t) => {
  const started = Date.now();
  const r = (await client.call("far.Far/Where", { text: "hi" }, { timeoutMs: 10_000, meta: { trace: "t-1" } })) as Where;
  t.equal(r.text, "hi");
  t.equal(r.host, "host-b", "answered on network b's host");
  t.match(r.nodeId, /^far-/, "by far's node");
  t.notOk(client.nodes().some((n) => n.id === r.nodeId), "a node network a does not know: only the gateway's proxy is in its table");
  t.equal(r.from, "gateway@gw1~b/relay", "relayed by the gateway's side in network b");
  t.equal(r.meta.trace, "t-1", "the meta went along");
  t.ok(r.deadline > started && r.deadline <= started + 10_000 + 50, `the deadline went along (${r.deadline - started} ms after the call)`);
});

t.test("gateway - a nested call: far's handler calls near, of network a, back through the gateway", CASE, async (t) => {
  const r = (await client.call("far.Far/Ask", { name: "Ada" }, { timeoutMs: 15_000 })) as { greeting: string; nearNode: string; farNode: string };
  t.equal(r.greeting, "hello, Ada");
  t.ok(client.nodes().some((n) => n.id === r.nearNode && n.network === "a" && n.host === "host-a"), `near's node ${r.nearNode} of network a answered far's call`);
  t.match(r.farNode, /^far-/);
});

t.test("gateway - ASYNC: the far node's acceptance is relayed, and the message handled there", CASE, async (t) => {
  const text = `note-${Date.now()}`;
  await client.send("far.Far/Note", { text }, { timeoutMs: 10_000 });
  await until(async () => ((await client.call("far.Far/Notes", {}, { timeoutMs: 5000 })) as { texts: string[] }).texts.includes(text), 10_000, "the note kept on network b");
  t.pass("the note reached far's node");
});

t.test("gateway - a STREAM through the gateway: items with credit, and a cancel ends the far generator", CASE, async (t) => {
  const all: number[] = [];
  for await (const item of client.stream<{ n: number }>("far.Far/Count", { count: 20 }, { timeoutMs: 15_000, window: 4 })) all.push(item.n);
  t.same(all, Array.from({ length: 20 }, (_, i) => i + 1), "20 items in order through a window of 4");

  const stats = async () => (await client.call("far.Far/Stats", {}, { timeoutMs: 5000 })) as { computed: number; started: number; finalized: number };
  const before = await stats();
  const taken: number[] = [];
  const endless = client.stream<{ n: number }>("far.Far/Count", { count: 0, intervalMs: 5 }, { timeoutMs: 20_000, window: 2 });
  for await (const item of endless) {
    taken.push(item.n);
    if (taken.length === 5) break;
  }
  t.same(taken, [1, 2, 3, 4, 5]);
  const after = await until(async () => {
    const s = await stats();
    return s.finalized === s.started && s.started === before.started + 1 ? s : undefined;
  }, 10_000, "the far generator returned");
  t.ok(after.computed - before.computed <= 5 + 2 + 2 + 2, `the far generator computed ${after.computed - before.computed} items for 5 taken (window 2 here and at the gateway)`);

  // Its deadline ends it too, far half included.
  const started = Date.now();
  const err = await (async () => {
    try {
      for await (const _ of client.stream("far.Far/Count", { count: 0, intervalMs: 20 }, { timeoutMs: 600 })) void _;
    } catch (e) {
      return NodeBinError.from(e);
    }
    return undefined;
  })();
  t.equal(err?.code, "DEADLINE_EXCEEDED", "the stream's deadline ends it");
  t.ok(Date.now() - started < 600 + 500, `within its deadline (${Date.now() - started} ms)`);
  await until(async () => {
    const s = await stats();
    return s.finalized === s.started;
  }, 10_000, "the far generator returned after the deadline");
});

t.test("gateway - an error from the far node comes back with its code, and its origin names that node", CASE, async (t) => {
  const where = (await client.call("far.Far/Where", { text: "who" })) as Where;
  const err = await client.call("far.Far/Fail", { message: "boom" }, { timeoutMs: 10_000 }).then(
    () => undefined,
    (e: unknown) => NodeBinError.from(e),
  );
  t.equal(err?.code, "INTERNAL");
  t.equal(err?.message, "boom");
  t.equal(err?.origin, where.nodeId, "origin: the far node");
});

t.test("gateway - a deadline shorter than the far handler's time ends DEADLINE_EXCEEDED within it", CASE, async (t) => {
  const started = Date.now();
  const err = await client.call("far.Far/Where", { text: "slow", sleepMs: 3000 }, { timeoutMs: 500 }).then(
    () => undefined,
    (e: unknown) => NodeBinError.from(e),
  );
  const took = Date.now() - started;
  t.equal(err?.code, "DEADLINE_EXCEEDED");
  t.ok(took < 500 + 300, `ended in ${took} ms`);
  // The far handler still holds its node for 3 s: wait for it, so the next test starts from an idle node.
  await until(async () => ((await client.call("far.Far/Where", { text: "after" }, { timeoutMs: 10_000 })) as Where).text === "after", 15_000, "far free again");
});

t.test("gateway - the gateway's host record carries the remote tier, and a pull from network a's governor shows it", CASE, async (t) => {
  const gw = await until(() => client.hosts().find((h) => h.host === "gw1~a" && h.remotes.some((r) => r.network === "b" && r.hosts === 1)), 15_000, "gw1~a's record with network b's summary");
  t.equal(gw.network, "a");
  t.equal(gw.role, "gateway");
  const remote = gw.remotes.find((r) => r.network === "b")!;
  const b = await govB.status();
  t.equal(remote.slots, b.capacity, "network b's slots: its governor's capacity");
  t.ok(remote.free <= remote.slots && remote.free > 0, `free slots ${remote.free}`);
  t.ok(remote.components.includes("far"), "network b's components");
  t.notOk(client.hosts().some((h) => h.network === "b"), "network a's agent knows no host of network b: gossip does not cross");
  const tiers = client.tiers();
  t.same(tiers?.remotes.map((r) => [r.network, r.gateways]), [["b", ["gw1~a"]]], "the client sees network b as a remote tier via gw1");
});

t.test("gateway - two gateways share the load; killing one fails its calls in flight with a code within their deadlines, and the other serves on", CASE, async (t) => {
  await startGateway("gw2");
  await until(() => proxies().size === 2 && proxies(), 60_000, "far visible through both gateways");
  // Callers choose between the two by load: the queue each proxy advertises (far's, gossiped at most
  // once a second on each hop) and their own calls in flight. One at a time, the calls split only once
  // both proxies advertise far's idle queue: earlier cases kept far busy, and gw1 may still say so.
  // And the client avoids gw1's proxy for 5 s (SUSPECT_MS) after the deadline case's call through it
  // went unanswered: while it is a suspect every call takes gw2, so the calls go on until both served.
  const idle = () => client.nodes().filter((n) => n.component === "far" && n.network === "b").every((n) => n.load.queued === 0);
  await until(() => idle(), 30_000, "both proxies advertise far's queue empty");
  const froms = new Set<string>();
  let sent = 0;
  await until(async () => {
    froms.add(((await client.call("far.Far/Where", { text: `${sent++}` }, { timeoutMs: 10_000 })) as Where).from);
    return froms.size === 2;
  }, 30_000, "calls through both gateways", { everyMs: 20, last: () => [...froms] });
  t.same([...froms].sort(), ["gateway@gw1~b/relay", "gateway@gw2~b/relay"], `both gateways relayed calls (${sent} calls)`);

  // Calls in flight through both, then gw1 dies. far handles one call at a time per node, so the calls
  // wait in its queue; those gw1 relays take 2 s each (gw2's 100 ms), far longer than it takes to see
  // them queued and kill gw1, so gw1 dies with its calls unanswered whatever order they reached far in.
  const timeoutMs = 12_000;
  const started = Date.now();
  const inFlight = Array.from({ length: 8 }, (_, i) =>
    client.call("far.Far/Where", { text: `flight-${i}`, sleepMs: 100, slowFrom: "gateway@gw1~b/relay", slowMs: 2000 }, { timeoutMs }).then(
      (r) => ({ ok: (r as Where).from, took: Date.now() - started }),
      (e: unknown) => ({ error: NodeBinError.from(e), took: Date.now() - started }),
    ),
  );
  // (Earlier cases may have grown far to more than one node: what counts is what waits on all of them.)
  await govB.until((s) => (s.components.find((c) => c.name === "far")?.children ?? []).reduce((n, k) => n + k.queued, 0) >= 2, 10_000, "calls queued at far");
  const killedAt = Date.now() - started;
  t.equal(await gw1.stop("SIGKILL"), null, `gw1 killed ${killedAt} ms after the calls were made`);
  const outcomes = await Promise.all(inFlight);
  for (const o of outcomes) t.ok(o.took <= timeoutMs + 500, `settled in ${o.took} ms, within the deadline: ${"ok" in o ? `served via ${o.ok}` : String(o.error)}`);
  const viaGw1 = outcomes.filter((o) => "ok" in o && o.ok === "gateway@gw1~b/relay");
  const failed = outcomes.filter((o) => "error" in o) as { error: NodeBinError }[];
  t.ok(failed.length > 0, `the calls through gw1 failed (${failed.length}; ${viaGw1.length} answered through gw1 before the kill)`);
  for (const f of failed) t.ok(["UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"].includes(f.error.code), `with a code: ${f.error.code}`);

  // gw2 serves on: calls succeed again through it, and gw1's proxy leaves network a's view.
  let streak = 0;
  await until(async () => {
    try {
      const r = (await client.call("far.Far/Where", { text: "after" }, { timeoutMs: 3000 })) as Where;
      streak = r.from === "gateway@gw2~b/relay" ? streak + 1 : 0;
    } catch {
      streak = 0;
    }
    return streak >= 5;
  }, 30_000, "5 calls in a row served through gw2");
  await until(() => !proxies().has("gw1~a"), 30_000, "gw1's proxy gone from network a's table");
  t.ok(proxies().has("gw2~a"), "gw2's proxy stays");
});
