// Capacity spill across hosts and networks, then new hosts on demand (issue 14), on network
// namespace hosts: network a (h1, h2) and network b (h3, h4) on two bridges, a gateway host with
// a leg on each, its remote leg delayed (netem or the harness's tap forwarder: printed). Every
// governor has capacity 1. h1 runs the `where` component (a slow handler that names its host);
// h2 has an empty components directory; in network b, h3 has the code (and runs its one node
// of it) and h4 has none but a free slot: the choice here is "network b has the code", as code
// is fetched from a host of the same network. One load step from a client on h1 (callers with
// a capacity wait, scope any) spills to h2 (which fetches the code and starts a node), through
// the gateway to network b (h4 fetches from h3), and once everything is full h1's provider
// command asks for a fifth namespace host on bridge a, which runs `node-bin governor --seed
// $NODEBIN_SEEDS` with a runtime directory of its own and takes load. When the load stops, the
// release command removes it. The times from the load step are printed.
import type { ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { netnsUnavailable, waitForLine } from "../lib/netns.ts";
import { serveHostRequests } from "../lib/netns-host-requests.ts";
import { createTopology, type TopologyHost } from "../lib/netns-topology.ts";
import { WHERE, governor, hostFiles, nodes, privateDir, whereLoad, type HostFiles, type NodeRow } from "../lib/networks.ts";
import { until } from "../lib/until.ts";
import { BIN, clusterKeyFile } from "../lib/processes.ts";

const skip = (await netnsUnavailable()) ?? false;
const WORK_MS = 1500;
const CALL_TIMEOUT_MS = 30_000;
const CALLERS = 12;

interface Outcome {
  at: number;
  ms: number;
  host?: string;
  pid?: number;
  node?: string;
  code?: string;
  message?: string;
  origin?: string;
}

/** Every JSON line the load prints, as it comes. */
function outcomes(load: ChildProcess): Outcome[] {
  const seen: Outcome[] = [];
  let partial = "";
  load.stdout!.on("data", (chunk: string | Buffer) => {
    const lines = (partial + String(chunk)).split("\n");
    partial = lines.pop()!;
    for (const line of lines) if (line.startsWith("{")) seen.push(JSON.parse(line) as Outcome);
  });
  return seen;
}

t.test("networks spill netns - one load step on h1 spills to h2, then through the gateway to network b, then to a provider-launched host, released when the load stops", { skip, timeout: 235_000 }, async (t) => {
  const topo = await createTopology(t, { networks: { a: ["h1", "h2"], b: ["h3", "h4"] }, gateways: { gw: ["a", "b"] }, delays: [{ host: "gw", network: "b", ms: 20 }] });
  for (const d of topo.delays) t.comment(`delay: ${d.note}`);
  const [h1, h2, h3, h4, gw] = ["h1", "h2", "h3", "h4", "gw"].map((n) => topo.host(n)) as [TopologyHost, TopologyHost, TopologyHost, TopologyHost, TopologyHost];
  const key = clusterKeyFile(t);
  const files = new Map<TopologyHost, HostFiles>([h1, h2, h3, h4, gw].map((h) => [h, hostFiles(t, h, key, h === h1 || h === h3 ? [WHERE] : [])]));
  const f = (h: TopologyHost) => files.get(h)!;

  // The provider's hosts: made by the test's process on the script's request (netns-host-requests.ts), on bridge a.
  const provided = new Map<string, { host: TopologyHost; seeds: string }>();
  const requests = serveHostRequests(t, topo, {
    network: "a",
    start: async (host, env) => {
      const seeds = env.NODEBIN_SEEDS ?? "";
      const runtime = privateDir(t, `${host.name}-run`);
      const components = join(privateDir(t, `${host.name}-root`), "components");
      mkdirSync(components);
      // A governor as a user's provider script would start it; --idle-ms so that its spilled node goes idle within the test.
      const child = host.spawn(process.execPath, [BIN, "governor", "--components", components, "--seed", seeds, ...(env.NODEBIN_NETWORK ? ["--network", env.NODEBIN_NETWORK] : []), "--idle-ms", "3000"], {
        env: { NODEBIN_RUNTIME_DIR: runtime, NODEBIN_LOG: "warn", NODEBIN_CLUSTER_KEY_FILE: key },
      });
      const [, id] = await waitForLine(child, /governor ready: (\S+) at /, 60_000);
      provided.set(id!, { host, seeds });
      return id!;
    },
  });

  const provider = ["--provider-command", requests.provideCommand, "--provider-release-command", requests.releaseCommand, "--provider-max-hosts", "1", "--provider-cooldown-ms", "3000", "--provider-sustain-ms", "3000", "--provider-idle-ms", "15000"];
  const g1 = await governor(h1, f(h1), ["--capacity", "1", ...provider]);
  const g2 = await governor(h2, f(h2), ["--capacity", "1", "--seed", h1.address]);
  const g3 = await governor(h3, f(h3), ["--capacity", "1", "--network", "b"]);
  const g4 = await governor(h4, f(h4), ["--capacity", "1", "--network", "b", "--seed", h3.address]);
  const gateway = gw.spawn(process.execPath, [BIN, "gateway", "--remote-network", "b", "--seed", h1.address, "--listen", gw.addressOn("a"), "--remote-seed", h3.address, "--remote-listen", gw.addressOn("b")], { env: f(gw).env });
  t.comment((await waitForLine(gateway, /gateway ready: .*/, 60_000))[0]);
  const names = new Map([
    [g1.id, "h1"],
    [g2.id, "h2"],
    [g3.id, "h3"],
    [g4.id, "h4"],
  ]);

  let seen: NodeRow[] = [];
  await until(async () => {
    seen = await nodes(h1, f(h1));
    return seen.some((n) => n.component === "where" && n.host === g1.id) && seen.some((n) => n.component === "where" && n.network === "b");
  }, 60_000, "h1 sees its own where node and network b's", { everyMs: 200, last: () => seen.map((n) => `${n.component}@${n.host}/${n.network ?? ""}`) });
  t.pass("h1's table has where on h1 and where in network b (through the gateway)");

  // The load step.
  const load = whereLoad(h1, f(h1), CALLERS, WORK_MS, 200, CALL_TIMEOUT_MS);
  const served = outcomes(load);
  await waitForLine(load, /^ready$/, 30_000);
  const step = Date.now();
  const firstOn = (pred: (o: Outcome) => boolean) => served.find((o) => o.host !== undefined && pred(o));
  const describe = () => {
    const by = new Map<string, number>();
    for (const o of served) by.set(o.host !== undefined ? (names.get(o.host) ?? o.host) : `error ${o.code}`, (by.get(o.host !== undefined ? (names.get(o.host) ?? o.host) : `error ${o.code}`) ?? 0) + 1);
    return Object.fromEntries(by);
  };
  const since = (o: Outcome) => o.at - step;

  const onH2 = await until(async () => firstOn((o) => o.host === g2.id), 90_000, "a call served on h2", { everyMs: 200, last: describe });
  const inB = await until(async () => firstOn((o) => o.host === g3.id || o.host === g4.id), 90_000, "a call served in network b", { everyMs: 200, last: describe });
  const onH4 = await until(async () => firstOn((o) => o.host === g4.id), 90_000, "a call served on h4 (a node started in network b for this load)", { everyMs: 200, last: describe });
  // The order of the spill: network b is asked for capacity only once network a is full, so h2's node
  // was started before h4's (start times from each governor's status: now minus the child's uptime).
  const startedAt = async (h: TopologyHost) => {
    const r = await h.exec(process.execPath, [BIN, "governor", "status", "--json"], { env: f(h).env, timeoutMs: 20_000 });
    const s = JSON.parse(r.stdout) as { components: { name: string; source?: string; children: { uptimeMs: number }[] }[] };
    const c = s.components.find((c) => c.name === "where");
    return { at: Date.now() - Math.max(...(c?.children ?? []).map((k) => k.uptimeMs)), source: c?.source };
  };
  const [s2, s4] = [await startedAt(h2), await startedAt(h4)];
  t.match(s2.source, /^fetched from /, `h2 runs where ${s2.source}`);
  t.match(s4.source, /^fetched from /, `h4 runs where ${s4.source}`);
  t.ok(s2.at < s4.at, `h2's node started before h4's (${s4.at - s2.at} ms before): network a first, then network b`);
  t.pass(`served on h2 (pid ${onH2.pid}): the code was fetched there`);
  t.pass(`served in network b on ${names.get(inB.host!)} (pid ${inB.pid}), and on h4 (pid ${onH4.pid}), which fetched the code from h3`);

  const atProvided = await until(async () => firstOn((o) => provided.has(o.host!)), 120_000, "a call served on the provider-launched host", { everyMs: 200, last: () => ({ served: describe(), requests: requests.requests }) });
  const launch = requests.requests.find((r) => r.kind === "provide");
  t.ok(launch?.env.NODEBIN_SEEDS, `the provider command got NODEBIN_SEEDS=${launch?.env.NODEBIN_SEEDS} (network "${launch?.env.NODEBIN_NETWORK ?? ""}", reason: ${launch?.env.NODEBIN_REASON})`);
  const p = provided.get(atProvided.host!)!;
  t.pass(`served on the provider-launched host ${p.host.name} (${p.host.address}, host id ${atProvided.host}, pid ${atProvided.pid})`);

  t.comment(`load step (${CALLERS} callers on h1, ${WORK_MS} ms per call, capacity wait 200 ms, scope any) to the first call served:`);
  t.comment(`  on h2 (code fetched on demand):            ${since(onH2)} ms`);
  t.comment(`  in network b (${names.get(inB.host!)}, through the gateway):   ${since(inB)} ms`);
  t.comment(`  on h4 (a node network b started for it):  ${since(onH4)} ms`);
  t.comment(`  on the provider-launched host ${p.host.name}:         ${since(atProvided)} ms (provider command ran ${launch!.at - step} ms after the step)`);
  t.comment(`calls by where they were served: ${JSON.stringify(describe())}`);

  // The load stops; every call ended by its deadline; the launched host is released and removed.
  load.kill("SIGTERM");
  const stoppedAt = Date.now();
  const late = served.filter((o) => o.ms > CALL_TIMEOUT_MS + 2000);
  t.same(late, [], "no call outlived its deadline");
  const failed = served.filter((o) => o.code !== undefined);
  t.comment(`calls that ended with an error: ${failed.length} of ${served.length} (${[...new Set(failed.map((o) => o.code))].join(", ") || "none"})`);
  // Under load callers may be refused or time out, with a clear code; a crash of the caller's own code is a bug.
  const crashed = failed.filter((o) => /Maximum call stack|is not a function|Cannot read prop/.test(o.message ?? ""));
  t.same(crashed.map((o) => `${o.code} from ${o.origin ?? "the caller"}: ${o.message}`).slice(0, 3), [], `no call ends with an error of the runtime's own (${crashed.length} did)`);
  for (const code of new Set(failed.map((o) => o.code))) t.comment(`  ${code}: ${[...new Set(failed.filter((o) => o.code === code).map((o) => o.message))].slice(0, 3).join(" | ")}`);
  const release = await until(async () => requests.requests.find((r) => r.kind === "release" && r.id === atProvided.host && r.answeredAt !== undefined), 90_000, "the release command for the launched host that took load", { everyMs: 200, last: () => requests.requests });
  t.notOk(release.error, `the release command named the launched host that took load (${release.id}), and it was removed: ${release.error ?? "ok"}`);
  t.throws(() => topo.host(p.host.name), /no host/, `${p.host.name} is gone from the topology`);
  t.same(topo.hosts.map((h) => h.name).sort(), ["gw", "h1", "h2", "h3", "h4"], "no launched host is left");
  t.comment(`provider requests: ${requests.requests.map((r) => `${r.kind} ${r.host ?? ""} (${r.id ?? ""}) at ${r.at - step} ms${r.error ? `: ${r.error}` : ""}`).join("; ")}`);
  t.comment(`released ${release.answeredAt! - stoppedAt} ms after the load stopped`);
});
