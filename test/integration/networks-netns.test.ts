// Remote calls through a gateway (issue 14): two networks of network-namespace hosts on two
// bridges (a: h1, h2; b: h3, h4), a gateway host with a leg on each and a delay on its remote
// leg (tc netem where the kernel has it, else a user-space tap forwarder that holds every frame
// of that leg: the test prints which ran). A call from h1 to a service that runs only on h4
// goes through the gateway; cutting the gateway's remote leg ends such calls with a code within
// their deadlines; when the leg comes back, so does the route (the time it took is printed).
// Default flags: each host a runtime directory, the cluster key, a governor (--network b in
// network b: the test is about networks); the gateway is given its legs' addresses.
import { join } from "node:path";
import t from "tap";
import { netnsUnavailable, waitForLine } from "../lib/netns.ts";
import { createTopology, type TopologyHost } from "../lib/netns-topology.ts";
import { WHERE, WORK, cli, governor, hostFiles, nodes, type HostFiles, type NodeRow } from "../lib/networks.ts";
import { until } from "../lib/until.ts";
import { BIN, ROOT, clusterKeyFile } from "../lib/processes.ts";

const skip = (await netnsUnavailable()) ?? false;
const DELAY_MS = 20;
const CALL_TIMEOUT_MS = 3000;
/** A one-shot client also starts a process (a second or more on a busy machine): its wall time may exceed the call's deadline by this. */
const PROCESS_MS = 8000;
const CODES = /"code":"(UNAVAILABLE|DEADLINE_EXCEEDED|NOT_FOUND|RESOURCE_EXHAUSTED)"/;

t.test("networks netns - h1 calls a service that runs only on h4 through the gateway; the remote leg cut, calls end with a code in time; restored, the route comes back", { skip, timeout: 230_000 }, async (t) => {
  const topo = await createTopology(t, { networks: { a: ["h1", "h2"], b: ["h3", "h4"] }, gateways: { gw: ["a", "b"] }, delays: [{ host: "gw", network: "b", ms: DELAY_MS }] });
  for (const d of topo.delays) t.comment(`delay: ${d.note}`);
  const [h1, h2, h3, h4, gw] = ["h1", "h2", "h3", "h4", "gw"].map((n) => topo.host(n)) as TopologyHost[] as [TopologyHost, TopologyHost, TopologyHost, TopologyHost, TopologyHost];
  const key = clusterKeyFile(t);
  const files = new Map<TopologyHost, HostFiles>([h1, h2, h3, h4, gw].map((h) => [h, hostFiles(t, h, key, h === h4 ? [WHERE] : [])]));
  const f = (h: TopologyHost) => files.get(h)!;

  await governor(h1, f(h1));
  await governor(h2, f(h2), ["--seed", h1.address]);
  await governor(h3, f(h3), ["--network", "b"]);
  const { id: h4id } = await governor(h4, f(h4), ["--network", "b", "--seed", h3.address]);
  const started = Date.now();
  const gateway = gw.spawn(process.execPath, [BIN, "gateway", "--remote-network", "b", "--seed", h1.address, "--listen", gw.addressOn("a"), "--remote-seed", h3.address, "--remote-listen", gw.addressOn("b")], { env: f(gw).env });
  const [ready] = await waitForLine(gateway, /gateway ready: .*/, 60_000);
  t.comment(ready);

  // h1's table shows the far service as a proxy of network b.
  let seen: NodeRow[] = [];
  const proxy = await until(async () => (seen = await nodes(h1, f(h1))).find((n) => n.component === "where" && n.network === "b"), 60_000, "h1 sees where@b", { everyMs: 200, last: () => seen });
  t.pass(`h1's table lists the service of h4 as a node of network b (${proxy.id} on ${proxy.host}), ${Date.now() - started} ms after the gateway started`);

  // The three tiers, as `client nodes` and `governor status` print them on h1: this host, network a (h1, h2), network b (h3, h4) via the gateway.
  const tierRows = (text: string) => text.split("\n").filter((l) => /^(TIER|this host|this network|remote) /.test(l));
  const shown = await until(async () => {
    const r = await cli(h1, f(h1), ["nodes", "--timeout", "3000"], 20_000);
    return r.code === 0 && /^this network default\s+2\s+\d+\s+\d+/m.test(r.stdout) && /^remote b via \S+\s+2\s+\d+\s+\d+\s+where$/m.test(r.stdout) ? r.stdout : undefined;
  }, 60_000, "client nodes on h1 shows network a's two hosts and network b's two behind the gateway", { everyMs: 200 });
  t.match(shown, /^TIER\s+HOSTS\s+SLOTS\s+FREE\s+COMPONENTS$/m, "client nodes prints the tiers table");
  t.match(shown, /^this host \S+\s+1\s+\d+\s+\d+/m, "this host: one host");
  t.comment(`client nodes on h1:\n${tierRows(shown).join("\n")}`);
  const status = await h1.exec(process.execPath, [BIN, "governor", "status"], { env: f(h1).env, timeoutMs: 20_000 });
  t.equal(status.code, 0, `governor status on h1 exits 0 ${status.stderr}`);
  t.match(status.stdout, /^remote b via \S+\s+2\s+/m, "governor status on h1 shows network b as a remote tier");
  t.match(status.stdout, /^this network default\s+2\s+/m, "and this network's two hosts");

  const call = (from: TopologyHost, timeoutMs = CALL_TIMEOUT_MS) => cli(from, f(from), ["call", WORK, '{"ms":0,"text":"hi"}', "--json", "--timeout", String(timeoutMs)], timeoutMs + PROCESS_MS + 5000);
  const first = await until(async () => {
    const r = await call(h1);
    return r.code === 0 ? r : undefined;
  }, 30_000, "a call from h1 served", { everyMs: 200 });
  const reply = JSON.parse(first.stdout) as { host: string; pid: number; nodeId: string };
  t.equal(reply.host, h4id, `served on h4 (${reply.host}, pid ${reply.pid}, node ${reply.nodeId})`);
  const fromH2 = await call(h2);
  t.equal(fromH2.code, 0, `and from h2 too: ${fromH2.stderr}`);

  // The remote leg is cut: calls end with a code, none past its deadline (plus the client's start-up).
  // One call is in flight when the leg goes (its caller says so as it sends; the handler takes 6 s): it too ends with a code within its deadline.
  const inFlight = h1.spawn(process.execPath, ["--import", join(ROOT, "bin", "register.mjs"), "--input-type=module", "-e", IN_FLIGHT, WORK, `tcp://${h1.address}:7400`], { env: f(h1).env });
  await waitForLine(inFlight, /^calling$/, 30_000);
  await gw.cut("b");
  const cutAt = Date.now();
  const flown = JSON.parse((await waitForLine(inFlight, /^\{.*\}$/, 5000 + 10_000))[0]) as { code?: string; ms: number };
  t.match(flown.code, /^(UNAVAILABLE|DEADLINE_EXCEEDED)$/, `the call in flight when the leg was cut ends with ${flown.code}`);
  t.ok(flown.ms <= 5000 + 500, `within its deadline of 5000 ms (${flown.ms} ms)`);
  const during: { code: number | null; ms: number; stderr: string }[] = [];
  while (Date.now() - cutAt < 20_000 || during.length < 3) {
    const s = Date.now();
    const r = await call(h1);
    during.push({ code: r.code, ms: Date.now() - s, stderr: r.stderr.trim() });
    if (during.length >= 6) break;
  }
  for (const [i, d] of during.entries()) {
    t.not(d.code, 0, `call ${i + 1} during the cut fails`);
    t.match(d.stderr, CODES, `with a code: ${d.stderr.slice(0, 160)}`);
    t.ok(d.ms < CALL_TIMEOUT_MS + PROCESS_MS, `within its deadline of ${CALL_TIMEOUT_MS} ms, plus start-up (${d.ms} ms wall)`);
  }
  t.comment(`during the cut: ${during.map((d) => `${(CODES.exec(d.stderr) ?? [])[1] ?? d.code} in ${d.ms} ms`).join(", ")}`);

  // Restored: the route comes back.
  await gw.restore("b");
  const restoredAt = Date.now();
  let last = "";
  const back = await until(async () => {
    const r = await call(h1);
    last = r.stderr.trim();
    return r.code === 0 ? (JSON.parse(r.stdout) as { host: string }) : undefined;
  }, 90_000, "a call served again after the restore", { everyMs: 200, last: () => last });
  const routeBackMs = Date.now() - restoredAt;
  t.equal(back.host, h4id, "served on h4 again");
  t.comment(`route back: ${routeBackMs} ms from the restore of the gateway's remote leg to the first call served on h4 again (one-shot clients, each ~1 s of start-up)`);

  // The delay shows on the route: a call through the gateway pays at least the round trip of the remote leg.
  const timed = await h1.exec(process.execPath, ["--import", join(ROOT, "bin", "register.mjs"), "--input-type=module", "-e", TIMED_CALLS, WORK, `tcp://${h1.address}:7400`], { env: f(h1).env, timeoutMs: 60_000 });
  t.equal(timed.code, 0, timed.stderr);
  const { min, median } = JSON.parse(timed.stdout.trim().split("\n").pop()!) as { min: number; median: number };
  const delayed = topo.delays[0]?.mechanism !== "none";
  t.comment(`call from h1 to h4 through the gateway, 10 in a row from one client: fastest ${min.toFixed(1)} ms, median ${median.toFixed(1)} ms (remote leg ${delayed ? `delayed ${DELAY_MS} ms each way` : "not delayed"})`);
  if (delayed) t.ok(min >= 2 * DELAY_MS * 0.9, `a call crosses the delayed leg there and back (${min.toFixed(1)} ms >= ${2 * DELAY_MS} ms)`);
});

/** 10 calls in a row from one client (argv: method, endpoint); prints {"min":..,"median":..} in ms. */
const TIMED_CALLS = `
const { Client } = await import(${JSON.stringify(new URL("../../src/client/client.ts", import.meta.url).pathname)});
const [method, endpoint] = process.argv.slice(1);
const client = await Client.connect({ endpoint });
const times = [];
for (let i = 0; i < 11; i++) {
  const s = performance.now();
  await client.callJSON(method, { ms: 0, text: "timed" }, { timeoutMs: 5000 });
  if (i > 0) times.push(performance.now() - s);
}
await client.close();
times.sort((a, b) => a - b);
console.log(JSON.stringify({ min: times[0], median: times[5] }));
process.exit(0);
`;

/** One call of 6 s with a deadline of 5 s (argv: method, endpoint); prints "calling" as it sends, then {"code":..,"ms":..}. */
const IN_FLIGHT = `
const { Client } = await import(${JSON.stringify(new URL("../../src/client/client.ts", import.meta.url).pathname)});
const [method, endpoint] = process.argv.slice(1);
const client = await Client.connect({ endpoint });
await client.callJSON(method, { ms: 0, text: "warm" }, { timeoutMs: 5000 });
const s = Date.now();
console.log("calling");
let code = "OK";
try { await client.callJSON(method, { ms: 6000, text: "in flight" }, { timeoutMs: 5000 }); } catch (err) { code = err.code ?? String(err); }
console.log(JSON.stringify({ code, ms: Date.now() - s }));
await client.close();
process.exit(0);
`;
