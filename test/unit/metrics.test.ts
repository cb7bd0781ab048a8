// The metrics plugin in one process: the call tally and its interceptor, the
// text it renders from a process's and a governor's views (checked by
// promtool where it is installed), one registry per plugin, the --metrics
// flag, and the HTTP endpoint with its coded bind errors.
import { createServer, type Server } from "node:http";
import t from "tap";
import { composeInterceptors, type InboundCall } from "../../src/component/interceptor.ts";
import { loadComponents } from "../../src/component/loader.ts";
import { Container } from "../../src/container/container.ts";
import { metricsFlag } from "../../src/cli/metrics-options.ts";
import { UsageError } from "../../src/cli/output.ts";
import { CALL_BUCKETS, CallTally, callInterceptor } from "../../src/metrics/metrics.ts";
import prometheus from "../../src/metrics/plugin.ts";
import type { ChildSample, GovernorView, ProcessView } from "../../src/metrics/sources.ts";
import type { PingReply } from "../../src/wire/control.ts";
import { Plane } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { Mode } from "../../src/wire/schema.ts";
import { rejection, thrown } from "../lib/expect-error.ts";
import { examplePath } from "../lib/fixture-components.ts";
import { parseMetrics, promtoolCheck, promtoolMissing, scrape, valueOf } from "../lib/prometheus.ts";
import { silentLogger } from "../lib/recording-logger.ts";

const call = (method: string): InboundCall => ({ method, mode: Mode.SYNC, plane: Plane.APPLICATION, from: "caller", peerKind: "local", to: "node-1", control: {}, deadline: Infinity, meta: {} });

t.test("metrics - the tally counts by method and code, with cumulative buckets", async (t) => {
  const tally = new CallTally([0.01, 0.1, 1]);
  tally.record("a.S/M", "OK", 0.005);
  tally.record("a.S/M", "OK", 0.05);
  tally.record("a.S/M", "OK", 0.1); // on a bound: in that bucket (le is "at most")
  tally.record("a.S/M", "OK", 5); // past every bound: +Inf only
  tally.record("a.S/M", "INTERNAL", 0.5);
  tally.record("a.S/A", "OK", 0);
  t.same(tally.snapshot(), [
    { method: "a.S/A", code: "OK", count: 1, seconds: 0, buckets: [1, 1, 1] },
    { method: "a.S/M", code: "INTERNAL", count: 1, seconds: 0.5, buckets: [0, 0, 1] },
    { method: "a.S/M", code: "OK", count: 4, seconds: 0.005 + 0.05 + 0.1 + 5, buckets: [1, 3, 3] },
  ]);
  for (const bad of [[0.1, 0.01], [0, 1], [1, Infinity], [0.1, 0.1]]) t.equal(thrown(() => new CallTally(bad)).code, "INVALID_ARGUMENT", `buckets ${JSON.stringify(bad)} refused`);
  t.same(new CallTally().bounds, CALL_BUCKETS, "the default buckets");
});

t.test("metrics - the interceptor counts each outcome, its code and duration, and passes the outcome through", async (t) => {
  const tally = new CallTally([0.001, 0.01]);
  let clock = 0;
  const link = callInterceptor(tally, () => clock);
  const ok = composeInterceptors([link], async () => {
    clock += 5; // 5 ms
    return { reply: 1 };
  });
  t.same(await ok(call("p.P/Echo")), { reply: 1 }, "the reply unchanged");
  const failing = composeInterceptors([link], async () => {
    clock += 0.5;
    throw new NodeBinError("DEADLINE_EXCEEDED", "too late");
  });
  const err = await rejection(failing(call("p.P/Echo")));
  t.equal(err.code, "DEADLINE_EXCEEDED", "the error unchanged");
  t.same(tally.snapshot(), [
    { method: "p.P/Echo", code: "DEADLINE_EXCEEDED", count: 1, seconds: 0.0005, buckets: [1, 1] },
    { method: "p.P/Echo", code: "OK", count: 1, seconds: 0.005, buckets: [0, 1] },
  ]);
});

t.test("metrics - a real node's calls through the plugin's interceptor, rendered as nodebin_calls_total and the histogram", async (t) => {
  const { components } = await loadComponents(examplePath(""));
  const metrics = prometheus.create({ role: "dev", host: "h1", version: "9.9.9" });
  const c = new Container({ id: "metrics-test", logger: () => silentLogger, interceptors: { inbound: [metrics.interceptor] } });
  t.teardown(() => c.close());
  for (const comp of components) await c.addComponent(comp);
  for (let i = 0; i < 3; i++) await c.caller.call("demo.Greeter/Hello", { name: "Ada" });
  t.equal((await rejection(c.caller.call("demo.Greeter/Hello", { name: "" }))).code, "INTERNAL", "the greeter refuses an empty name");
  await c.caller.call("demo.Welcome/Visit", { name: "Bo" }); // nested: Greeter/Hello, Counter/Add, and Greeter/Sign (ASYNC)
  metrics.observeProcess({ nodes: () => [], refused: () => ({}), membership: () => ({ nodes: 3, hosts: 1 }), agent: () => ({}) });

  const samples = parseMetrics(await metrics.collect());
  const calls = (method: string, code: string) => valueOf(samples, "nodebin_calls_total", { method, code });
  t.equal(calls("demo.Greeter/Hello", "OK"), 4, "three calls and a nested one");
  t.equal(calls("demo.Greeter/Hello", "INTERNAL"), 1, "the failed call, by its code");
  t.equal(calls("demo.Welcome/Visit", "OK"), 1);
  t.equal(calls("demo.Counter/Add", "OK"), 1);
  // The ASYNC Sign is acknowledged when queued: its handling may come a moment after Visit's reply.
  const deadline = Date.now() + 2000;
  while (!metrics.callStats().calls.some((r) => r.method === "demo.Greeter/Sign") && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  t.equal(valueOf(parseMetrics(await metrics.collect()), "nodebin_calls_total", { method: "demo.Greeter/Sign", code: "OK" }), 1, "ASYNC messages are counted too");
  t.equal(valueOf(samples, "nodebin_call_duration_seconds_count", { method: "demo.Greeter/Hello", code: "OK" }), 4, "the histogram counts the same calls");
  t.equal(valueOf(samples, "nodebin_call_duration_seconds_bucket", { method: "demo.Greeter/Hello", code: "OK", le: "+Inf" }), 4);
  t.equal(valueOf(samples, "nodebin_call_duration_seconds_bucket", { method: "demo.Greeter/Hello", code: "OK", le: "30" }), 4, "every call under 30 s");
  t.ok(valueOf(samples, "nodebin_call_duration_seconds_sum", { method: "demo.Greeter/Hello", code: "OK" })! > 0, "durations summed");
  t.equal(valueOf(samples, "nodebin_info", { role: "dev", host: "h1", version: "9.9.9" }), 1);
  t.equal(valueOf(samples, "nodebin_membership_nodes"), 3);

  const stats = metrics.callStats();
  t.same(stats.callBuckets, CALL_BUCKETS, "Ping carries the bounds");
  t.match(stats.calls.find((r) => r.method === "demo.Greeter/Hello" && r.code === "OK"), { count: 4 });
});

/** A child's pong with its calls. */
function pong(pid: number, component: string, over: Partial<PingReply> = {}): PingReply {
  return {
    ...{ pid, container: `c-${pid}`, node: `${component}-${pid}`, component, version: "1", phase: "serving", handled: 9, failed: 1, rejected: 2, queued: 3, capacity: 50 },
    ...{ queueWaitMs: 250, idleMs: 0, uptimeMs: 1000, rssBytes: 4096, endpoints: [], role: "member", min: 1, max: 2, refused: { tooManyFrames: 1 } },
    calls: [
      { method: "demo.Greeter/Hello", code: "OK", count: 7, seconds: 0.07, buckets: [5, 7] },
      { method: "demo.Greeter/Hello", code: "INVALID_ARGUMENT", count: 2, seconds: 0.002, buckets: [2, 2] },
    ],
    callBuckets: [0.01, 0.1],
    ...over,
  };
}

function views() {
  const children: ChildSample[] = [
    { component: "greeter", pid: 101, phase: "ready", stats: pong(101, "greeter") },
    { component: "greeter", pid: 102, phase: "starting" }, // no pong yet: counted as a child, no series of its own
  ];
  const process: ProcessView = {
    nodes: () => [],
    refused: () => ({ connectionsRefused: 4 }),
    membership: () => ({ nodes: 5, hosts: 2 }),
    agent: () => ({ leases: 2, hosts: 1, tombstones: 0, bytesSent: 1200, bytesReceived: 800, messagesSent: 6, messagesReceived: 5 }),
  };
  const governor: GovernorView = {
    capacity: () => ({ capacity: 4, used: 2 }),
    components: () => [{ name: "greeter", desired: 2, restarts: 3, zombies: 1 }],
    children: () => children,
  };
  return { process, governor };
}

t.test("metrics - a governor's view: its own series and its children's, labelled with component and pid", async (t) => {
  const metrics = prometheus.create({ role: "governor", host: "h1" });
  const { process, governor } = views();
  metrics.observeProcess(process);
  metrics.observeGovernor(governor);
  const s = parseMetrics(await metrics.collect());
  const child = { component: "greeter", pid: "101" };
  t.equal(valueOf(s, "nodebin_calls_total", { ...child, method: "demo.Greeter/Hello", code: "OK" }), 7);
  t.equal(valueOf(s, "nodebin_calls_total", { ...child, method: "demo.Greeter/Hello", code: "INVALID_ARGUMENT" }), 2);
  t.equal(valueOf(s, "nodebin_call_duration_seconds_bucket", { ...child, code: "OK", le: "0.01" }), 5, "the child's own buckets");
  t.equal(valueOf(s, "nodebin_call_duration_seconds_bucket", { ...child, code: "OK", le: "+Inf" }), 7);
  t.equal(valueOf(s, "nodebin_call_duration_seconds_sum", { ...child, code: "OK" }), 0.07);
  t.equal(valueOf(s, "nodebin_queue_length", { ...child, node: "greeter-101" }), 3);
  t.equal(valueOf(s, "nodebin_queue_capacity", { ...child, node: "greeter-101" }), 50);
  t.equal(valueOf(s, "nodebin_queue_wait_seconds", { ...child, node: "greeter-101" }), 0.25);
  t.equal(valueOf(s, "nodebin_messages_rejected_total", { ...child, node: "greeter-101" }), 2);
  t.equal(valueOf(s, "nodebin_messages_refused_total", { ...child, reason: "tooManyFrames" }), 1, "a child's refusals");
  t.equal(valueOf(s, "nodebin_messages_refused_total", { reason: "connectionsRefused" }), 4, "the governor's own");
  t.equal(valueOf(s, "nodebin_restarts_total", { component: "greeter" }), 3);
  t.equal(valueOf(s, "nodebin_zombies_total", { component: "greeter" }), 1);
  t.equal(valueOf(s, "nodebin_children", { component: "greeter", phase: "ready" }), 1);
  t.equal(valueOf(s, "nodebin_children", { component: "greeter", phase: "starting" }), 1);
  t.equal(valueOf(s, "nodebin_component_desired", { component: "greeter" }), 2);
  t.equal(valueOf(s, "nodebin_capacity"), 4);
  t.equal(valueOf(s, "nodebin_capacity_used"), 2);
  t.equal(valueOf(s, "nodebin_child_resident_memory_bytes", child), 4096);
  t.equal(valueOf(s, "nodebin_membership_nodes"), 5);
  t.equal(valueOf(s, "nodebin_membership_hosts"), 2);
  t.equal(valueOf(s, "nodebin_leases"), 2);
  t.equal(valueOf(s, "nodebin_gossip_hosts", { state: "alive" }), 1);
  t.equal(valueOf(s, "nodebin_gossip_bytes_total", { direction: "sent" }), 1200);
  t.equal(valueOf(s, "nodebin_gossip_bytes_total", { direction: "received" }), 800);
  t.equal(valueOf(s, "nodebin_gossip_messages_total", { direction: "received" }), 5);
  t.notOk(s.some((x) => x.labels.pid === "102"), "no series for a child that never answered a ping");
  t.equal(thrown(() => metrics.observeGovernor(governor)).code, "FAILED_PRECONDITION", "one governor per plugin");
});

t.test("metrics - a member's gossip series are absent, not zero", async (t) => {
  const metrics = prometheus.create({ role: "container" });
  metrics.observeProcess({ ...views().process, agent: () => ({}) });
  const s = parseMetrics(await metrics.collect());
  t.same(s.filter((x) => x.name.startsWith("nodebin_gossip_")), []);
  t.equal(valueOf(s, "nodebin_leases"), 0);
});

t.test("metrics - one registry per plugin: two in one process do not share series", async (t) => {
  const a = prometheus.create({ role: "container", processMetrics: true });
  const b = prometheus.create({ role: "container", processMetrics: true });
  composeInterceptors([a.interceptor], async () => ({}))(call("x.X/Only"));
  await new Promise((r) => setImmediate(r));
  t.equal(valueOf(parseMetrics(await a.collect()), "nodebin_calls_total", { method: "x.X/Only", code: "OK" }), 1);
  t.equal(valueOf(parseMetrics(await b.collect()), "nodebin_calls_total", { method: "x.X/Only", code: "OK" }), undefined);
  t.ok(valueOf(parseMetrics(await b.collect()), "process_start_time_seconds")! > 0, "prom-client's process metrics, when asked");
});

t.test("metrics - promtool check metrics passes on what a governor and a process render", { skip: promtoolMissing() ?? false }, async (t) => {
  const governor = prometheus.create({ role: "governor", host: "h\"1\\", processMetrics: true });
  const { process, governor: view } = views();
  governor.observeProcess(process);
  governor.observeGovernor(view);
  const own = prometheus.create({ role: "dev", processMetrics: true });
  composeInterceptors([own.interceptor], async () => ({}))(call("a.B/C"));
  await new Promise((r) => setImmediate(r));
  own.observeProcess({ ...process, nodes: () => [{ id: "n-1", component: "c", queued: 1, capacity: 10, queueWaitMs: 5, rejected: 0 }] });
  for (const [what, body] of [["governor", await governor.collect()], ["dev", await own.collect()]] as const) {
    const r = await promtoolCheck(body);
    t.equal(r.code, 0, `${what}: promtool check metrics: ${r.stdout}${r.stderr}`);
  }
  // promtool itself must be able to fail here: a gauge named like a counter is refused.
  const bad = await promtoolCheck("# HELP x_total a gauge\n# TYPE x_total gauge\nx_total 1\n");
  t.not(bad.code, 0, "promtool refuses a gauge named *_total");
});

t.test("metrics - --metrics takes HOST:PORT; anything else is a usage error", async (t) => {
  t.same(metricsFlag("127.0.0.1:9464"), { host: "127.0.0.1", port: 9464 });
  t.same(metricsFlag("0.0.0.0:0"), { host: "0.0.0.0", port: 0 });
  t.same(metricsFlag("[::1]:9464"), { host: "::1", port: 9464 });
  t.same(metricsFlag("localhost:80"), { host: "127.0.0.1", port: 80 });
  t.equal(metricsFlag(undefined), undefined);
  for (const bad of ["9464", "127.0.0.1", "127.0.0.1:", ":9464", "host.example:1", "127.0.0.1:65536", "[127.0.0.1]:1", "::1:9464", "1.2.3.4:5:6", true, ["127.0.0.1:1", "127.0.0.1:2"]]) {
    t.throws(() => metricsFlag(bad), UsageError, `${JSON.stringify(bad)} refused`);
  }
});

t.test("metrics - the endpoint serves GET /metrics, 404 elsewhere, 405 for other methods; a port in use is UNAVAILABLE", async (t) => {
  const metrics = prometheus.create({ role: "dev" });
  t.teardown(() => metrics.close());
  const url = await metrics.serve({ host: "127.0.0.1", port: 0 });
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
  const got = await scrape(url);
  t.equal(got.status, 200);
  t.equal(got.contentType, "text/plain; version=0.0.4; charset=utf-8");
  t.match(got.body, /^# HELP nodebin_info /m);
  t.equal((await scrape(url.replace("/metrics", "/other"))).status, 404);
  const post = await fetch(url, { method: "POST", signal: AbortSignal.timeout(5000) });
  t.equal(post.status, 405);
  t.equal(post.headers.get("allow"), "GET, HEAD");
  await post.text();
  t.equal((await rejection(metrics.serve({ host: "127.0.0.1", port: 0 }))).code, "FAILED_PRECONDITION", "one endpoint per plugin");

  const port = Number(new URL(url).port);
  const other = prometheus.create({ role: "dev" });
  const busy = await rejection(other.serve({ host: "127.0.0.1", port }));
  t.equal(busy.code, "UNAVAILABLE", "the port is in use");
  t.match(busy.message, /port is in use/);
  t.equal(busy.details.errno, "EADDRINUSE");
  const elsewhere = await rejection(other.serve({ host: "192.0.2.1", port: 0 }));
  t.equal(elsewhere.code, "UNAVAILABLE", "not an address of this host (TEST-NET-1)");

  await metrics.close();
  await t.rejects(scrape(url, 2000), "closed: nothing serves any more");
  await metrics.close(); // idempotent
});

t.test("metrics - a scrape that fails to collect answers 500 with the reason", async (t) => {
  const metrics = prometheus.create({ role: "dev" });
  t.teardown(() => metrics.close());
  metrics.observeProcess({ ...views().process, refused: () => {
    throw new Error("view broke");
  } });
  const url = await metrics.serve({ host: "127.0.0.1", port: 0 });
  const got = await scrape(url);
  t.equal(got.status, 500);
  t.match(got.body, /view broke/);
});

// Keeps a port busy with something that is not node-bin, to be sure a foreign holder is reported the same way.
t.test("metrics - a port held by another program is UNAVAILABLE too", async (t) => {
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as { port: number }).port;
  const err = await rejection(prometheus.create({ role: "dev" }).serve({ host: "127.0.0.1", port }));
  t.equal(err.code, "UNAVAILABLE");
});
