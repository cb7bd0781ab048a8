// Capacity spilling to a host that lacks the component's code (issue 14): two governors on
// loopback stand for two hosts (their own host ids, runtime dirs and discovery ports), A with the
// greeter in its components directory, B without. A capacity request for the greeter at B makes B
// fetch the code from A (sealed with the cluster key, verified by its hash), run a node of it, and
// shrink it back to none when idle; the next scan of B's directory does not remove it. Without a
// cluster key the fetch is refused and nothing is written.
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import * as zmq from "zeromq";
import { Client } from "../../src/client/client.ts";
import { hashComponent } from "../../src/governor/scan.ts";
import { GOVERNOR_CAPACITY, PULL, oneWayControlFrame, type HostSummary } from "../../src/wire/control.ts";
import { example, startGovernor, testHost, type GovernorProcess, type TestHost } from "../lib/governor.ts";
import { clusterKeyFile, runCli } from "../lib/processes.ts";

const CASE = { timeout: 180_000 };

/** Asks governor `host` for capacity for `component`, as its children do (one-way, at its private socket). */
async function askCapacity(t: { teardown(fn: () => unknown): void }, host: TestHost, component: string, method: string): Promise<void> {
  const d = new zmq.Dealer({ linger: 1000, sendTimeout: 3000 });
  t.teardown(() => d.close());
  d.connect(`ipc://${join(host.env.NODEBIN_RUNTIME_DIR!, `governor-${host.port}.sock`)}`);
  await d.send(oneWayControlFrame(GOVERNOR_CAPACITY, { component, method, fromHost: host.env.NODEBIN_HOST!, visited: [] }, "test"));
}

/** Waits until the host summaries governor `host` serves say `other` has `component` at `hash` (what B's elastic loop reads). */
async function untilKnown(host: TestHost, other: string, component: string, hash: string, ms: number): Promise<void> {
  const client = await Client.connect({ endpoint: `ipc://${join(host.env.NODEBIN_RUNTIME_DIR!, `governor-${host.port}.sock`)}`, connectTimeoutMs: 3000 });
  try {
    const end = Date.now() + ms;
    let last: HostSummary[] = [];
    while (Date.now() < end) {
      last = (await client.callControl(PULL, { knownVersion: 0 }, { timeoutMs: 3000 })).hosts ?? [];
      if (last.some((h) => h.host === other && h.capacity?.components.some((c) => c.name === component && c.hash === hash))) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${host.env.NODEBIN_HOST} did not learn that ${other} has ${component} at ${hash.slice(0, 12)} within ${ms} ms; it knows ${JSON.stringify(last.map((h) => [h.host, h.capacity?.components.map((c) => `${c.name}@${c.hash.slice(0, 12)}`)]))}`);
  } finally {
    await client.close();
  }
}

async function twoHosts(t: Parameters<typeof testHost>[0], key: string | undefined, bArgs: string[] = []): Promise<{ a: TestHost; b: TestHost; govA: GovernorProcess; govB: GovernorProcess; hash: string }> {
  const a = testHost(t, [example("greeter")]);
  const b = testHost(t, [example("counter")]);
  a.env.NODEBIN_HOST = "host-a";
  b.env.NODEBIN_HOST = "host-b";
  b.env.NODEBIN_LOG = "info";
  if (key) a.env.NODEBIN_CLUSTER_KEY_FILE = b.env.NODEBIN_CLUSTER_KEY_FILE = key;
  const govA = await startGovernor(t, a, ["--seed", b.seed]);
  const govB = await startGovernor(t, b, ["--seed", a.seed, ...bArgs]);
  await govA.until((s) => s.components.find((c) => c.name === "greeter")?.children[0]?.phase === "ready", 30_000, "greeter serving on A");
  await govB.until((s) => s.components.find((c) => c.name === "counter")?.children[0]?.phase === "ready", 30_000, "counter serving on B");
  return { a, b, govA, govB, hash: hashComponent(join(a.components, "greeter")).hash };
}

t.test("code spill - a host without the code fetches it from one that has it, runs it, and shrinks it back to none when idle", CASE, async (t) => {
  const key = clusterKeyFile(t);
  const { b, govB, hash } = await twoHosts(t, key, ["--idle-ms", "8000"]);
  await untilKnown(b, "host-a", "greeter", hash, 30_000);
  await askCapacity(t, b, "greeter", "demo.Greeter/Hello");

  const spilled = await govB.until((s) => {
    const c = s.components.find((x) => x.name === "greeter");
    return c?.children.find((k) => k.phase === "ready") ? c : undefined;
  }, 60_000, "greeter fetched and serving on B");
  t.equal((spilled as unknown as { source?: string }).source, "fetched from host-a", "B's status says where its code came from");
  t.equal(spilled.min, 0, "min 0: spilled capacity");
  t.equal(spilled.hash, hash.slice(0, 12), "the version A runs");
  const fetchedDir = join(b.env.NODEBIN_RUNTIME_DIR!, `governor-${b.port}`, "fetched");
  t.same(readdirSync(fetchedDir), [`greeter@${hash}`], "one verified version in B's fetched directory");
  t.equal(hashComponent(join(fetchedDir, `greeter@${hash}`, "greeter")).hash, hash, "it hashes as A's");
  t.notOk(existsSync(join(b.components, "greeter")), "B's components directory is untouched");

  // The node on B registered with B's agent: the network's table has it, on host-b.
  const node = spilled.children.find((k) => k.phase === "ready")!.node;
  const client = await Client.connect({ endpoint: `ipc://${join(b.env.NODEBIN_RUNTIME_DIR!, `governor-${b.port}.sock`)}`, connectTimeoutMs: 3000 });
  const rows = (await client.callControl(PULL, { knownVersion: 0 }, { timeoutMs: 3000 }).finally(() => client.close())).nodes;
  t.ok(rows.some((r) => r.id === node && r.component === "greeter" && r.host === "host-b"), `B's greeter node ${node} is in B's table: ${JSON.stringify(rows.map((r) => [r.id, r.host]))}`);
  const text = await runCli(["governor", "status", "--discovery-port", String(b.port)], b.env);
  t.match(text.stdout, /greeter \(fetched from host-a\): /, "the text status says so too");

  // Idle: it shrinks back to no node, and stays known (the directory scans do not remove it).
  const shrunk = await govB.until((s) => {
    const c = s.components.find((x) => x.name === "greeter");
    return c && c.running === 0 && c.children.length === 0 ? c : undefined;
  }, 60_000, "greeter on B shrunk to none");
  t.equal(shrunk.desired, 0, "and wants none");
  const later = await govB.until((s) => (s.components.find((x) => x.name === "counter")?.children[0]?.pongs ?? 0) >= 4 ? s : undefined, 30_000, "a few more rounds (scans run every 2 s)");
  t.ok(later.components.some((c) => c.name === "greeter"), "still known after later scans of B's directory");
  t.equal((await govB.component("counter"))?.running, 1, "B's own component is as it was");
});

t.test("code spill - without a cluster key the fetch is refused (FAILED_PRECONDITION) and nothing is written", CASE, async (t) => {
  const { b, govB, hash } = await twoHosts(t, undefined);
  // Without a key the hosts still gossip over loopback what they run (and its hash): the code is what is refused.
  await untilKnown(b, "host-a", "greeter", hash, 30_000);
  await askCapacity(t, b, "greeter", "demo.Greeter/Hello");
  const end = Date.now() + 30_000;
  const refusal = /greeter: its code could not be fetched \(FAILED_PRECONDITION: /;
  while (!refusal.test(govB.stderr()) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  t.match(govB.stderr(), refusal, "B says why it does not run the greeter");
  t.notOk(existsSync(join(b.env.NODEBIN_RUNTIME_DIR!, `governor-${b.port}`, "fetched")), "nothing written");
  const s = await govB.status();
  t.same(s.components.map((c) => c.name), ["counter"], "B runs only its own component");
});
