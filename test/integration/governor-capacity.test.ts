// Capacity requests: a caller whose call found every node full
// (RESOURCE_EXHAUSTED) and that may wait (capacityWaitMs: no room within it) asks the full
// node's process for capacity; the process hands it to its governor, which
// grows the component, or, with no free slot on its host, passes it to the
// host of its network with the most free slots (known from the governors'
// gossiped capacity, src/membership/capacity.ts). Two governors on loopback
// stand for two hosts (their own host ids, runtime dirs and discovery ports,
// seeded with each other).
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { Client } from "../../src/client/client.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { example, startGovernor, testHost, type GovernorStatus, type TestHost } from "../lib/governor.ts";
import { fixturePath } from "../lib/fixture-components.ts";
import { EXAMPLES, runCli } from "../lib/processes.ts";

/** The slow fixture with a queue of 2 (so a few callers fill a node) and max 4. */
function smallQueueSlow(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-slow-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const src = join(dir, "slow");
  cpSync(fixturePath("governor/slow"), src, { recursive: true });
  const index = join(src, "index.js");
  writeFileSync(index, readFileSync(index, "utf8").replace("limits: { queue: 1000, min: 1, max: 2 }", "limits: { queue: 2, min: 1, max: 4 }"));
  return src;
}

// Growth only on capacity requests: queue-wait growth is pushed out of reach.
const noQueueGrowth = ["--queue-wait-ms", "600000", "--queue-length", "100000", "--sustain-ms", "600000"];

async function burst(client: Client, n: number, ms: number): Promise<{ ok: number; failures: string[]; pids: Set<number> }> {
  const pids = new Set<number>();
  const failures: string[] = [];
  let ok = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      try {
        const r = (await client.call("gov.Slow/Work", { ms }, { timeoutMs: 40_000, capacityWaitMs: 200 })) as { pid: number };
        pids.add(r.pid);
        ok++;
      } catch (err) {
        failures.push(NodeBinError.from(err).toString());
      }
    }),
  );
  return { ok, failures, pids };
}

t.test("capacity - callers that find every node full get a new node on this host", async (t) => {
  const host = testHost(t, [{ from: smallQueueSlow(t) }]);
  const gov = await startGovernor(t, host, noQueueGrowth);
  await gov.until((s) => s.components[0]?.children[0]?.phase === "ready", 20_000, "slow serving");
  const client = await Client.connect({ endpoint: `tcp://${host.seed}`, host: host.env.NODEBIN_HOST! });
  t.teardown(() => client.close());

  // Without capacityWaitMs a full node is an immediate RESOURCE_EXHAUSTED.
  const hold = Array.from({ length: 3 }, () => client.call("gov.Slow/Work", { ms: 4000 }, { timeoutMs: 30_000 }).catch(() => undefined));
  // The node's pong says its queue (2) is full: one call runs, two wait.
  await gov.until((s) => s.components[0]!.children[0]!.queued >= 2, 10_000, "the node's queue full");
  const refused = await client.call("gov.Slow/Work", { ms: 1 }, { timeoutMs: 10_000 }).then(
    () => undefined,
    (e: unknown) => NodeBinError.from(e),
  );
  t.equal(refused?.code, "RESOURCE_EXHAUSTED", "no capacity wait: refused at once");
  await Promise.all(hold);

  const started = Date.now();
  const r = await burst(client, 8, 1500);
  t.same(r.failures, [], "every call that waited for capacity was served");
  t.equal(r.ok, 8);
  t.ok(r.pids.size >= 2, `served by ${r.pids.size} processes: the governor grew the component`);
  t.comment(`8 calls of 1.5 s against one node with queue 2: done in ${Date.now() - started} ms with ${r.pids.size} nodes`);
  t.ok((await gov.component("slow"))!.running >= 2, "status shows the growth");
});

t.test("capacity - a host at its process limit passes the request to another host's governor", async (t) => {
  const slow = smallQueueSlow(t);
  const a: TestHost = testHost(t, [{ from: slow }]);
  const b: TestHost = testHost(t, [{ from: slow }]);
  a.env.NODEBIN_HOST = "host-a";
  a.env.NODEBIN_LOG = "info"; // its forwarding is logged at info
  b.env.NODEBIN_HOST = "host-b";
  const govA = await startGovernor(t, a, [...noQueueGrowth, "--capacity", "1", "--seed", b.seed]);
  const govB = await startGovernor(t, b, [...noQueueGrowth, "--capacity", "4", "--seed", a.seed]);
  await govA.until((s) => s.components[0]?.children[0]?.phase === "ready", 20_000, "slow serving on A");
  await govB.until((s) => s.components[0]?.children[0]?.phase === "ready", 20_000, "slow serving on B");
  const client = await Client.connect({ endpoint: `tcp://${a.seed}`, host: "host-a" });
  t.teardown(() => client.close());
  // Wait until host A's table has B's node (gossip).
  const seen = Date.now();
  while (client.nodes().length < 2 && Date.now() - seen < 20_000) await client.refresh().then(() => new Promise((r) => setTimeout(r, 200)));
  t.equal(client.nodes().length, 2, "A's table holds both hosts' nodes");

  const r = await burst(client, 12, 1500);
  t.same(r.failures, [], "every call was served");
  t.equal((await govA.component("slow"))!.running, 1, "host A stayed at its limit of 1 process");
  const onB = await govB.component("slow");
  t.ok(onB!.running >= 2, `host B grew to ${onB!.running} nodes`);
  t.match(govA.stderr(), /capacity wanted for slow: no room here, asked host host-b/, "A passed the request to B");
});

t.test("capacity - a busy node's queue reaches another host's table through gossip, and so does its end", async (t) => {
  // What callers on other hosts weigh their choice by (power of two choices on the advertised queue):
  // gossiped at most once a second, never frozen at what it was when the node joined.
  const slow = smallQueueSlow(t);
  const a: TestHost = testHost(t, [{ from: slow }]);
  const b: TestHost = testHost(t, [example("greeter")]);
  a.env.NODEBIN_HOST = "host-a";
  b.env.NODEBIN_HOST = "host-b";
  const govA = await startGovernor(t, a, [...noQueueGrowth, "--seed", b.seed]);
  await startGovernor(t, b, [...noQueueGrowth, "--seed", a.seed]);
  await govA.until((s) => s.components[0]?.children[0]?.phase === "ready", 20_000, "slow serving on A");
  const onA = await Client.connect({ endpoint: `tcp://${a.seed}`, host: "host-a" });
  const onB = await Client.connect({ endpoint: `tcp://${b.seed}`, host: "host-b" });
  t.teardown(() => Promise.all([onA.close(), onB.close()]));
  const queuedSeenOnB = async (ok: (q: number) => boolean, what: string) => {
    const end = Date.now() + 20_000;
    for (;;) {
      await onB.refresh();
      const n = onB.nodes().find((n) => n.component === "slow" && n.host === "host-a");
      if (n && ok(n.load.queued)) return n.load.queued;
      if (Date.now() > end) throw new Error(`host B's table: ${what} not within 20 s (last: ${JSON.stringify(n?.load)})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  t.equal(await queuedSeenOnB((q) => q === 0, "the idle node"), 0, "host B sees A's node idle");
  // Three calls of 6 s on a node that runs one at a time: two wait in its queue.
  const held = Array.from({ length: 3 }, () => onA.call("gov.Slow/Work", { ms: 6000 }, { timeoutMs: 30_000, scope: "host" }));
  const busy = await queuedSeenOnB((q) => q >= 1, "a queue");
  t.ok(busy >= 1, `host B sees A's node with ${busy} queued`);
  await Promise.all(held);
  t.equal(await queuedSeenOnB((q) => q === 0, "the queue drained"), 0, "and idle again once the calls ended");
});

t.test("capacity - on a full host a new component is started: the most idle extra node drains to make room, and status says why it waits", async (t) => {
  const host = testHost(t, [example("greeter"), example("welcome")]);
  // No idle shrink and no load growth during the test: only what the test sets moves the counts.
  const gov = await startGovernor(t, host, [...noQueueGrowth, "--capacity", "3", "--idle-ms", "600000"]);
  const cli = (...args: string[]) => runCli(["governor", ...args, "--discovery-port", String(host.port)], host.env);
  const processes = (s: GovernorStatus) => s.components.reduce((n, c) => n + c.children.length, 0);
  let most = 0;
  const watch = (s: GovernorStatus) => {
    most = Math.max(most, processes(s));
    return s;
  };
  const ready = (s: GovernorStatus, name: string) => s.components.find((c) => c.name === name)?.children.filter((k) => k.phase === "ready").length ?? 0;
  await gov.until((s) => ready(watch(s), "greeter") === 1 && ready(s, "welcome") === 1, 30_000, "greeter and welcome serving");

  // greeter grown to 2 by its min: 3/3 in use, every component at its min.
  const set = await cli("set", "component", "greeter", "min", "2");
  t.equal(set.code, 0, set.stderr);
  await gov.until((s) => ready(watch(s), "greeter") === 2 && s.used === 3, 30_000, "greeter at 2 nodes");

  const deployed = await runCli(["deploy", join(EXAMPLES, "counter"), "--components", host.components], host.env);
  t.equal(deployed.code, 0, deployed.stderr);
  const waiting = await gov.until((s) => watch(s).components.find((c) => c.name === "counter" && c.waiting)?.waiting, 20_000, "counter waiting");
  t.match(waiting, /^waiting for capacity: 3\/3 in use \(no component runs above its min/, "with every component at its min it waits, and says why");
  t.equal((await gov.component("counter"))!.running, 0, "not started");
  const text = await cli("status");
  t.equal(text.code, 0, text.stderr);
  t.match(text.stdout, /counter: 0 running[^\n]*\n\s+waiting for capacity: 3\/3 in use/, "`governor status` prints the reason under the component");

  // greeter's min back to 1: its second node is now above the min, and the most idle of them makes room.
  const before = watch(await gov.status());
  const greeters = before.components.find((c) => c.name === "greeter")!.children;
  const idlest = [...greeters].sort((a, b) => (b.idleMs ?? 0) - (a.idleMs ?? 0))[0]!;
  const other = greeters.find((k) => k.pid !== idlest.pid)!;
  const welcomePid = before.components.find((c) => c.name === "welcome")!.children[0]!.pid;
  const lowered = await cli("set", "component", "greeter", "min", "1");
  t.equal(lowered.code, 0, lowered.stderr);
  const started = Date.now();
  const draining = await gov.until((s) => watch(s).components.find((c) => c.name === "counter")?.waiting?.match(/drains to make room/)?.input, 10_000, "counter waiting for the drain");
  t.equal(draining, `waiting for capacity: 3/3 in use (greeter pid ${idlest.pid} drains to make room)`, "the most idle greeter node drains for counter");
  const after = await gov.until((s) => (ready(watch(s), "counter") === 1 ? s : undefined), 30_000, "counter serving");
  t.comment(`counter serving ${Date.now() - started} ms after the slot could be made`);
  const g = after.components.find((c) => c.name === "greeter")!;
  t.same(
    g.children.map((k) => k.pid),
    [other.pid],
    "the idlest greeter node left, the other serves on",
  );
  t.same(
    after.components.find((c) => c.name === "welcome")!.children.map((k) => k.pid),
    [welcomePid],
    "welcome (at its min) was left alone",
  );
  t.equal(after.used, 3, "3/3 in use");
  t.equal(after.components.find((c) => c.name === "counter")!.waiting, undefined, "nothing waits");
  t.ok(most <= 3, `never more than 3 processes (at most ${most} seen)`);

  const client = await Client.connect({ endpoint: `tcp://${host.seed}`, host: host.env.NODEBIN_HOST! });
  t.teardown(() => client.close());
  const added = (await client.call("demo.Counter/Add", { key: "k", by: 2 }, { timeoutMs: 10_000 })) as { count: number | string };
  t.equal(Number(added.count), 2, "the new component serves");
});
