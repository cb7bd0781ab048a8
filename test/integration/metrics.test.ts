// /metrics on real processes: a governor's endpoint covers its host (its
// children's calls come from their pongs, labelled with component and pid),
// a container and dev serve their own; the calls made with `node-bin client`
// are counted by method and code (an error code included), and the body
// passes `promtool check metrics`. A bad --metrics value exits 64, a port in
// use 14 (UNAVAILABLE), on every role.
import { readdirSync } from "node:fs";
import { createServer } from "node:http";
import t, { type Test } from "tap";
import { example, startGovernor, testHost } from "../lib/governor.ts";
import { EXAMPLES, privateRuntime, runCli, startContainer, startDev, testPort, type DevProcess } from "../lib/processes.ts";
import { parseMetrics, promtoolCheck, promtoolMissing, samplesOf, scrape, valueOf, type PromSample } from "../lib/prometheus.ts";

const noPromtool = promtoolMissing();

/** The URL a role printed before its readiness line (`node-bin metrics at URL`); throws without one. */
function metricsUrl(p: DevProcess): string {
  const m = /^node-bin metrics at (\S+)$/m.exec(p.stdout());
  if (!m) throw new Error(`no "node-bin metrics at" line before the readiness line; stdout:\n${p.stdout()}\nstderr:\n${p.stderr()}`);
  return m[1]!;
}

/** Scrapes `url` until `ok` accepts its samples (bounded by `ms`), and resolves with that body. */
async function scrapeUntil(url: string, ok: (s: PromSample[]) => boolean, ms: number, what: string): Promise<string> {
  const end = Date.now() + ms;
  let last = "";
  while (Date.now() < end) {
    const got = await scrape(url);
    if (got.status !== 200) throw new Error(`GET ${url}: ${got.status} ${got.body}`);
    last = got.body;
    if (ok(parseMetrics(last))) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`/metrics did not show ${what} within ${ms} ms; last:\n${last.split("\n").filter((l) => l.startsWith("nodebin_calls_total")).join("\n")}`);
}

/** `promtool check metrics` on `body`, as a subtest of its own: skipped, with the reason, where promtool is missing. */
async function promtool(t: Test, body: string, what: string): Promise<void> {
  await t.test(`promtool check metrics on ${what}`, { skip: noPromtool ?? false }, async (t) => {
    const r = await promtoolCheck(body);
    t.equal(r.code, 0, `exit 0 (${r.stdout}${r.stderr})`);
  });
}

t.test("metrics - a governor's /metrics counts its children's calls by method and code, and passes promtool", async (t) => {
  const host = testHost(t, [example("greeter"), example("counter"), example("welcome")]);
  const gov = await startGovernor(t, host, ["--metrics", "127.0.0.1:0"]);
  const url = metricsUrl(gov);
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
  const s = await gov.until((s) => s.components.length === 3 && s.components.every((c) => c.children[0]?.phase === "ready") && s, 30_000, "three components serving");
  const pidOf = (name: string) => String(s.components.find((c) => c.name === name)!.children[0]!.pid);

  const call = (method: string, json: string) => runCli(["client", "call", method, json, "--seed", host.seed, "--json"], host.env, { timeoutMs: 60_000 });
  // Five clients at once: the counts, not the order, are checked.
  const [hellos, failed, visit] = await Promise.all([
    Promise.all(Array.from({ length: 3 }, () => call("demo.Greeter/Hello", '{"name":"Ada"}'))),
    call("demo.Greeter/Hello", '{"name":""}'),
    call("demo.Welcome/Visit", '{"name":"Bo"}'),
  ]);
  for (const r of hellos) t.equal(r.code, 0, r.stderr);
  t.equal(failed.code, 13, "the greeter refuses an empty name: INTERNAL");
  t.equal(visit.code, 0, visit.stderr);

  const greeter = { component: "greeter", pid: pidOf("greeter") };
  const expected: [Record<string, string>, number][] = [
    [{ ...greeter, method: "demo.Greeter/Hello", code: "OK" }, 4], // three, and Visit's nested one
    [{ ...greeter, method: "demo.Greeter/Hello", code: "INTERNAL" }, 1],
    [{ ...greeter, method: "demo.Greeter/Sign", code: "OK" }, 1], // Visit's ASYNC send
    [{ component: "counter", pid: pidOf("counter"), method: "demo.Counter/Add", code: "OK" }, 1],
    [{ component: "welcome", pid: pidOf("welcome"), method: "demo.Welcome/Visit", code: "OK" }, 1],
  ];
  // The children's counts reach the governor with their next pong (every second).
  const body = await scrapeUntil(url, (m) => expected.every(([labels, n]) => valueOf(m, "nodebin_calls_total", labels) === n), 15_000, "every call counted");
  const m = parseMetrics(body);
  for (const [labels, n] of expected) {
    t.equal(valueOf(m, "nodebin_calls_total", labels), n, `nodebin_calls_total ${JSON.stringify(labels)}`);
    t.equal(valueOf(m, "nodebin_call_duration_seconds_count", labels), n, "the histogram counts the same calls");
    t.equal(valueOf(m, "nodebin_call_duration_seconds_bucket", { ...labels, le: "+Inf" }), n);
  }
  t.equal(samplesOf(m, "nodebin_calls_total").reduce((sum, x) => sum + x.value, 0), 8, "nothing else counted");
  for (const name of ["greeter", "counter", "welcome"]) {
    t.equal(valueOf(m, "nodebin_queue_length", { component: name, pid: pidOf(name) }), 0, `${name}: its queue, by pid`);
    t.ok(valueOf(m, "nodebin_child_resident_memory_bytes", { component: name, pid: pidOf(name) })! > 0, `${name}: its memory`);
    t.equal(valueOf(m, "nodebin_restarts_total", { component: name }), 0, `${name}: no restarts`);
    t.equal(valueOf(m, "nodebin_zombies_total", { component: name }), 0, `${name}: no zombies`);
    t.equal(valueOf(m, "nodebin_children", { component: name, phase: "ready" }), 1);
  }
  t.equal(valueOf(m, "nodebin_info", { role: "governor", host: "gov-test" }), 1);
  t.equal(valueOf(m, "nodebin_membership_nodes"), 3);
  t.equal(valueOf(m, "nodebin_leases"), 3, "the governor holds its children's leases");
  t.equal(valueOf(m, "nodebin_gossip_hosts", { state: "alive" }), 0, "no other host");
  t.ok(valueOf(m, "process_resident_memory_bytes")! > 0, "the governor's own process metrics");
  await promtool(t, body, "a live governor's /metrics");

  // A killed child is restarted, a hung one (SIGSTOP) found a zombie and replaced: the governor counts both.
  process.kill(Number(pidOf("counter")), "SIGKILL");
  process.kill(Number(pidOf("welcome")), "SIGSTOP");
  const after = parseMetrics(
    await scrapeUntil(
      url,
      (x) => valueOf(x, "nodebin_restarts_total", { component: "counter" }) === 1 && valueOf(x, "nodebin_zombies_total", { component: "welcome" }) === 1,
      20_000,
      "the counter's restart and the welcome zombie",
    ),
  );
  t.equal(valueOf(after, "nodebin_restarts_total", { component: "welcome" }), 1, "the zombie was replaced: a restart too");
  t.equal(valueOf(after, "nodebin_zombies_total", { component: "counter" }), 0, "a crash is no zombie");
});

t.test("metrics - a container serves its own /metrics: its node's calls, queue and role", async (t) => {
  const env = { ...privateRuntime(t), NODEBIN_HOST: "metrics-host" };
  const port = testPort();
  const c = await startContainer(t, ["--component", "greeter", "--components", EXAMPLES, "--listen", "127.0.0.1", "--discovery-port", String(port), "--metrics", "127.0.0.1:0"], env);
  const url = metricsUrl(c);
  const seed = `127.0.0.1:${port}`;
  const ok = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":"Ada"}', "--seed", seed], env);
  t.equal(ok.code, 0, ok.stderr);
  const bad = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":""}', "--seed", seed], env);
  t.equal(bad.code, 13, "INTERNAL");
  // Counted when the reply left: the scrape after the client's answer sees it.
  const got = await scrape(url);
  t.equal(got.status, 200);
  const m = parseMetrics(got.body);
  t.equal(valueOf(m, "nodebin_calls_total", { method: "demo.Greeter/Hello", code: "OK" }), 1);
  t.equal(valueOf(m, "nodebin_calls_total", { method: "demo.Greeter/Hello", code: "INTERNAL" }), 1);
  t.equal(samplesOf(m, "nodebin_queue_length", { component: "greeter" }).length, 1, "its one node's queue");
  t.equal(valueOf(m, "nodebin_queue_capacity", { component: "greeter" }), 1000);
  t.equal(valueOf(m, "nodebin_info", { role: "container", host: "metrics-host" }), 1);
  t.equal(valueOf(m, "nodebin_membership_nodes"), 1);
  // The first container on a host is its agent: its own node is in its table, not leased; it gossips.
  t.equal(valueOf(m, "nodebin_leases"), 0, "an agent holds no lease for its own node");
  t.equal(samplesOf(m, "nodebin_gossip_bytes_total").length, 2, "as agent, its gossip counters");
  await promtool(t, got.body, "a container's /metrics");
  t.equal(await c.stop(), 0, "SIGTERM: exits 0, the endpoint closed with it");
  await t.rejects(scrape(url, 2000), "nothing serves after it exited");
});

t.test("metrics - dev serves /metrics for all its nodes", async (t) => {
  const env = privateRuntime(t);
  const dev = await startDev(t, ["--components", EXAMPLES, "--metrics", "127.0.0.1:0"], env);
  const url = metricsUrl(dev);
  const r = await runCli(["client", "call", "demo.Welcome/Visit", '{"name":"Ada"}'], env);
  t.equal(r.code, 0, r.stderr);
  const body = await scrapeUntil(url, (m) => valueOf(m, "nodebin_calls_total", { method: "demo.Greeter/Sign", code: "OK" }) === 1, 10_000, "Visit's ASYNC Sign");
  const m = parseMetrics(body);
  t.equal(valueOf(m, "nodebin_calls_total", { method: "demo.Welcome/Visit", code: "OK" }), 1);
  t.equal(valueOf(m, "nodebin_calls_total", { method: "demo.Greeter/Hello", code: "OK" }), 1);
  const components = readdirSync(EXAMPLES, { withFileTypes: true }).filter((e) => e.isDirectory()).length;
  t.equal(samplesOf(m, "nodebin_queue_length").length, components, `a queue per node (one per example component: ${components})`);
  await promtool(t, body, "dev's /metrics");
});

t.test("metrics - a bad --metrics is a usage error (64), a port in use UNAVAILABLE (14), on every role", async (t) => {
  const env = privateRuntime(t);
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => busy.close(() => resolve())));
  const taken = `127.0.0.1:${(busy.address() as { port: number }).port}`;
  const port = String(testPort());
  const roles: [string, string[]][] = [
    ["governor", ["governor", "--components", EXAMPLES, "--listen", "127.0.0.1", "--discovery-port", port]],
    ["container", ["container", "--component", "greeter", "--components", EXAMPLES, "--listen", "127.0.0.1", "--discovery-port", port]],
    ["dev", ["dev", "--components", EXAMPLES]],
  ];
  // The usage errors are found before anything is bound: those runs go side by side. The runs
  // that get as far as binding share the discovery port, so they go one at a time.
  const [help, ...usages] = await Promise.all([runCli(["governor", "--help"], env, { timeoutMs: 60_000 }), ...roles.map(([, args]) => runCli([...args, "--metrics", "9464"], env, { timeoutMs: 60_000 }))]);
  for (const [i, [role, args]] of roles.entries()) {
    const usage = usages[i]!;
    t.equal(usage.code, 64, `${role} --metrics 9464: usage error`);
    t.match(usage.stderr, /--metrics takes HOST:PORT/);
    const inUse = await runCli([...args, "--metrics", taken], env, { timeoutMs: 20_000 });
    t.equal(inUse.code, 14, `${role} --metrics ${taken}: UNAVAILABLE`);
    t.match(inUse.stderr, /error: UNAVAILABLE: cannot serve metrics at 127\.0\.0\.1:\d+: the port is in use/);
  }
  t.match(help.stdout, /--metrics <host:port>/, "governor --help shows the flag");
});
