// Several hosts as network namespaces on one bridge, each seeded with one
// other host, a client on a host of its own: membership spreads by gossip,
// calls cross hosts, a dead or cut-off host leaves every table within the
// stated bound, and a restored host rejoins. Skips where netns is not permitted.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { createNetwork, netnsUnavailable, waitForLine, type NetnsHost } from "../lib/netns.ts";
import { BIN, EXAMPLES, clusterKeyFile } from "../lib/processes.ts";

const skip = (await netnsUnavailable()) ?? false;
// The bound this test holds the system to: a node on a host that stopped
// answering is gone from every table within this time (see README, "Failure detection").
const REMOVAL_BOUND_MS = 15_000;

interface NodeRow {
  id: string;
  component: string;
  host: string;
}

function envFor(t: { teardown(fn: () => unknown): void }, host: NetnsHost, key: string): NodeJS.ProcessEnv {
  const dir = mkdtempSync(join(tmpdir(), `nodebin-${host.name}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Hosts that reach each other need the cluster key (without one, tcp binds loopback only).
  return { NODEBIN_RUNTIME_DIR: dir, NODEBIN_HOST: host.name, NODEBIN_LOG: "warn", NODEBIN_CLUSTER_KEY_FILE: key };
}

async function container(host: NetnsHost, env: NodeJS.ProcessEnv, component: string, seed?: NetnsHost) {
  const child = host.spawn(process.execPath, [BIN, "container", "--component", component, "--components", EXAMPLES, "--listen", host.address, ...(seed ? ["--seed", seed.address] : [])], { env });
  await waitForLine(child, /container ready: /, 30_000);
  return child;
}

t.test("multihost - hosts seeded in a chain learn each other; calls cross hosts; dead and cut-off hosts leave the tables; a restored one rejoins", { skip, timeout: 240_000 }, async (t) => {
  const net = await createNetwork(t, 4);
  const [h1, h2, h3, h4] = net.hosts as [NetnsHost, NetnsHost, NetnsHost, NetnsHost];
  const key = clusterKeyFile(t);
  const env = new Map(net.hosts.map((h) => [h, envFor(t, h, key)]));
  const cli = (from: NetnsHost, args: string[], timeoutMs = 20_000) => from.exec(process.execPath, [BIN, "client", ...args], { env: env.get(from)!, timeoutMs });
  const nodesSeenBy = async (seedHost: NetnsHost): Promise<NodeRow[]> => {
    const r = await cli(h4, ["nodes", "--seed", seedHost.address, "--json", "--timeout", "3000"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as NodeRow[]) : [];
  };
  /** Polls until every host in `seeds` shows a table `ok` accepts; returns the time it took. */
  const until = async (seeds: NetnsHost[], ok: (rows: NodeRow[]) => boolean, ms: number, what: string) => {
    const started = Date.now();
    for (;;) {
      const tables = await Promise.all(seeds.map(nodesSeenBy));
      if (tables.every(ok)) return Date.now() - started;
      if (Date.now() - started > ms) throw new Error(`${what}: not within ${ms} ms; tables: ${JSON.stringify(tables.map((rows) => rows.map((r) => `${r.component}@${r.host}`)))}`);
    }
  };
  const summary = (rows: NodeRow[]) => rows.map((r) => `${r.component}@${r.host}`).sort().join(" ");

  // h1 has no seed; h2 knows only h1; h3 knows only h2.
  const g1 = await container(h1, env.get(h1)!, "greeter");
  await container(h2, env.get(h2)!, "counter", h1);
  await container(h3, env.get(h3)!, "welcome", h2);
  await container(h3, env.get(h3)!, "greeter", h2);
  const all = "counter@h2 greeter@h1 greeter@h3 welcome@h3";
  const converged = await until([h1, h2, h3], (rows) => summary(rows) === all, 30_000, "convergence");
  t.pass(`every host learnt every other's nodes (${converged} ms)`);

  // welcome on h3 calls a greeter (its own host's first) and the counter on h2.
  const visit = await cli(h4, ["call", "demo.Welcome/Visit", '{"name":"Ada"}', "--seed", h1.address, "--json"]);
  t.equal(visit.code, 0, visit.stderr);
  t.same(JSON.parse(visit.stdout), { greeting: "Hello, Ada!", visitor: "1", via: "" });

  // h1's node dies: it leaves the other tables within the bound; greetings go to h3's greeter.
  g1.kill("SIGKILL");
  const removed = await until([h2, h3], (rows) => summary(rows) === "counter@h2 greeter@h3 welcome@h3", REMOVAL_BOUND_MS, "removal of h1's node");
  t.pass(`h1's dead node left every table in ${removed} ms (bound ${REMOVAL_BOUND_MS} ms)`);
  for (let i = 0; i < 5; i++) {
    const hello = await cli(h4, ["call", "demo.Greeter/Hello", `{"name":"n${i}"}`, "--seed", h2.address, "--json", "--timeout", "5000"]);
    t.equal(hello.code, 0, `call ${i} served by a survivor: ${hello.stderr}`);
  }

  // h2 is cut off: its node leaves h3's table; calls needing it fail with a code within their deadline.
  await h2.cut();
  const cutStarted = Date.now();
  const during = await cli(h4, ["call", "demo.Welcome/Visit", '{"name":"Bo"}', "--seed", h3.address, "--json", "--timeout", "4000"], 15_000);
  t.not(during.code, 0, "a call needing the cut-off host fails");
  t.match(during.stderr, /"code":"(UNAVAILABLE|DEADLINE_EXCEEDED|NOT_FOUND)"/, "with a code");
  t.ok(Date.now() - cutStarted < 4000 + 5000, "not past its deadline (plus process start-up)");
  const cutOff = await until([h3], (rows) => summary(rows) === "greeter@h3 welcome@h3", REMOVAL_BOUND_MS, "removal of cut-off h2");
  t.pass(`the cut-off host's node left h3's table in ${cutOff} ms`);

  // The link comes back: h2 rejoins and its node is called again.
  await h2.restore();
  const rejoined = await until([h3, h2], (rows) => summary(rows) === "counter@h2 greeter@h3 welcome@h3", 30_000, "rejoin of h2");
  t.pass(`h2 rejoined in ${rejoined} ms`);
  const after = await cli(h4, ["call", "demo.Welcome/Visit", '{"name":"Cy"}', "--seed", h3.address, "--json"]);
  t.equal(after.code, 0, after.stderr);
  // At least 2: state kept (a fresh counter would say 1). It may be 3: the Add of the call that failed
  // during the cut can still run when the link returns (TCP retransmits bytes already written, and the
  // relative deadline cannot tell they are late). Calls are maybe-once across a cut link; see README.
  const visitor = Number((JSON.parse(after.stdout) as { visitor: string }).visitor);
  t.ok(visitor === 2 || visitor === 3, `the counter on h2 kept its state through the cut (visitor ${visitor})`);
});
