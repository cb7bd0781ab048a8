// New hosts on demand (issue 14): governor A (capacity 1) with the built-in `command` provider,
// whose launch script, written by this test, starts a second real governor B in the background
// (its own runtime dir, discovery port and host id; --seed from NODEBIN_SEEDS, --network from
// NODEBIN_NETWORK; an empty components directory: B fetches the component's code from A, sealed
// with the cluster key, and runs it at min 0) and prints B's host id. Load that A cannot serve
// spills to B; when it stops, B's node shrinks away, and the release script (NODEBIN_HOST) stops
// B by its recorded pid. Guard rails: one launch while the load continues, max-hosts 1.
//
// Every process the test or its scripts start is ended by pid at teardown: A (startGovernor),
// A's children (testHost), B (its pid file) and B's children (seen in B's status).
// PROVIDER_TEST_DEBUG=1 prints both governors' logs once B serves.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { Client } from "../../src/client/client.ts";
import { GOVERNOR_STATUS } from "../../src/wire/control.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { fixturePath } from "../lib/fixture-components.ts";
import { startGovernor, testHost } from "../lib/governor.ts";
import { parseMetrics, promtoolCheck, promtoolMissing, scrape, valueOf } from "../lib/prometheus.ts";
import { alive, BIN, clusterKeyFile, runCli } from "../lib/processes.ts";
import { until } from "../lib/until.ts";

const CASE = { timeout: 240_000 };
// Growth only on capacity requests (never on queue wait), on both hosts.
const NO_QUEUE_GROWTH = ["--queue-wait-ms", "600000", "--queue-length", "100000", "--sustain-ms", "600000"];

interface ProviderCounters {
  unmet: number;
  launches: { started: number; succeeded: number; failed: number };
  releases: { started: number; succeeded: number; failed: number; gone: number };
  skipped: { launch: Record<string, number>; release: Record<string, number> };
}
interface ProviderStatus {
  name: string;
  decider: string;
  hosts: { host: string; idleMs: number | null }[];
  inFlight?: { phase: string };
  lastDecision?: string;
  counters: ProviderCounters;
}
interface BStatus {
  components: { name: string; running: number; source?: string; children: { pid: number; phase: string }[] }[];
}

t.test("provider - a full network launches a host through the command provider, the load spills to it, and it is released when idle", CASE, async (t) => {
  const key = clusterKeyFile(t);
  const dir = mkdtempSync(join(tmpdir(), "nodebin-provider-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  // The slow fixture with a queue of 2: a few callers fill a node.
  const src = join(dir, "src", "slow");
  cpSync(fixturePath("governor/slow"), src, { recursive: true });
  const index = join(src, "index.js");
  writeFileSync(index, readFileSync(index, "utf8").replace("limits: { queue: 1000, min: 1, max: 2 }", "limits: { queue: 2, min: 1, max: 4 }"));

  const a = testHost(t, [{ from: src }]);
  a.env.NODEBIN_HOST = "host-a";
  a.env.NODEBIN_LOG = "info"; // the provider's decisions are logged at info
  a.env.NODEBIN_CLUSTER_KEY_FILE = key;
  const portB = a.port === 39_999 ? 20_001 : a.port + 1;
  const bRuntime = join(dir, "b-runtime");
  const bComponents = join(dir, "b-components");
  mkdirSync(bComponents);
  const pidFile = join(dir, "b.pid");
  const bSocket = `ipc://${join(bRuntime, `governor-${portB}.sock`)}`;

  // B and its children: ended by pid whatever happens (B first by SIGTERM, so it stops its children).
  const bPids = new Set<number>();
  t.teardown(async () => {
    const b = existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8")) : 0;
    if (b > 0 && alive(b)) {
      process.kill(b, "SIGTERM");
      const end = Date.now() + 15_000;
      while (alive(b) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      if (alive(b)) process.kill(b, "SIGKILL");
    }
    for (const pid of bPids) if (alive(pid)) process.kill(pid, "SIGKILL");
  });

  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const launch = join(dir, "launch.sh");
  writeFileSync(
    launch,
    [
      "#!/bin/bash",
      "set -eu",
      `echo launch >> ${q(join(dir, "launches"))}`,
      `printf '%s' "$NODEBIN_SEEDS" > ${q(join(dir, "seeds"))}`,
      `printf '%s' "$NODEBIN_REASON" > ${q(join(dir, "launch-reason"))}`,
      `mkdir -p ${q(bRuntime)} && chmod 700 ${q(bRuntime)}`,
      `NODEBIN_RUNTIME_DIR=${q(bRuntime)} NODEBIN_HOST=host-b NODEBIN_LOG=info ${q(process.execPath)} ${q(BIN)} governor \\`,
      `  --components ${q(bComponents)} --listen 127.0.0.1 --discovery-port ${portB} --capacity 2 --idle-ms 3000 ${NO_QUEUE_GROWTH.join(" ")} \\`,
      `  --seed "$NODEBIN_SEEDS" --network "$NODEBIN_NETWORK" > ${q(join(dir, "b.log"))} 2>&1 < /dev/null &`,
      `echo $! > ${q(pidFile)}`,
      "echo starting host-b in the background",
      "echo host-b",
      "",
    ].join("\n"),
  );
  const release = join(dir, "release.sh");
  writeFileSync(
    release,
    [
      "#!/bin/bash",
      "set -eu",
      `printf '%s' "$NODEBIN_HOST" > ${q(join(dir, "released-host"))}`,
      `printf '%s' "$NODEBIN_REASON" > ${q(join(dir, "release-reason"))}`,
      `pid=$(cat ${q(pidFile)})`,
      'kill -TERM "$pid"',
      'for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done',
      'echo "host-b (pid $pid) did not stop within 15 s" >&2; exit 1',
      "",
    ].join("\n"),
  );

  const govA = await startGovernor(t, a, [
    ...NO_QUEUE_GROWTH,
    "--capacity", "1",
    "--network", "net-p",
    "--metrics", "127.0.0.1:0",
    "--provider-command", `bash ${q(launch)}`,
    "--provider-release-command", `bash ${q(release)}`,
    "--provider-max-hosts", "1",
    "--provider-sustain-ms", "1500",
    "--provider-cooldown-ms", "2000",
    "--provider-idle-ms", "3000",
  ]);
  const provider = async () => ((await govA.status()) as unknown as { provider: ProviderStatus }).provider;
  await govA.until((s) => s.components[0]?.children[0]?.phase === "ready", 30_000, "slow serving on A");
  const before = await provider();
  t.equal(before.name, "command", "the built-in command provider runs");
  t.equal(before.decider, "host-a", "A decides for its network");
  t.equal(before.counters.launches.started, 0, "nothing launched while nothing waits");
  const aPids = new Set((await govA.status()).components.flatMap((c) => c.children.map((k) => k.pid)));

  // B's status, read (when B runs) for its children's pids: to end them at teardown, and to know its calls.
  const bStatus = async (): Promise<BStatus | undefined> => {
    if (!existsSync(join(bRuntime, `governor-${portB}.sock`))) return undefined;
    let client: Client | undefined;
    try {
      client = await Client.connect({ endpoint: bSocket, connectTimeoutMs: 2000 });
      const s = JSON.parse((await client.callControl(GOVERNOR_STATUS, {}, { timeoutMs: 2000 })).json) as BStatus;
      for (const c of s.components) for (const k of c.children) bPids.add(k.pid);
      return s;
    } catch {
      return undefined;
    } finally {
      await client?.close();
    }
  };

  // The load: callers that keep A's one node and its queue full, and wait for capacity (200 ms) when refused.
  const client = await Client.connect({ endpoint: `tcp://${a.seed}`, host: "host-a", clusterKeyFile: key });
  t.teardown(() => client.close());
  const served: { pid: number; at: number }[] = [];
  const failures: string[] = [];
  let loading = true;
  const loadStarted = Date.now();
  const callers = Array.from({ length: 12 }, async () => {
    while (loading) {
      try {
        const r = (await client.call("gov.Slow/Work", { ms: 1000 }, { timeoutMs: 90_000, capacityWaitMs: 200 })) as { pid: number };
        served.push({ pid: r.pid, at: Date.now() });
      } catch (err) {
        failures.push(NodeBinError.from(err).toString());
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  });
  const stopLoad = async () => {
    loading = false;
    await Promise.all(callers);
  };
  t.teardown(stopLoad);

  // A launches host-b; B joins, fetches the code and serves.
  let launchSeen = 0;
  let joinSeen = 0;
  await until(async () => {
    const c = (await provider()).counters;
    if (c.launches.started > 0 && !launchSeen) launchSeen = Date.now();
    if (c.launches.succeeded === 1) joinSeen = Date.now();
    return joinSeen > 0;
  }, 90_000, "host-b launched and in A's gossip");
  const launched = await provider();
  t.same(launched.hosts.map((h) => h.host), ["host-b"], "the host the script named is A's launched host");
  // Written down in A's state directory, so that a restarted A still releases it.
  const keptFile = join(a.env.NODEBIN_RUNTIME_DIR!, `governor-${a.port}`, "provider-hosts.json");
  const kept = () => (JSON.parse(readFileSync(keptFile, "utf8")) as { hosts: { host: string; network: string }[] }).hosts.map((h) => [h.host, h.network]);
  t.same(kept(), [["host-b", "net-p"]], "host-b kept in A's state directory");
  t.equal(readFileSync(join(dir, "seeds"), "utf8"), a.seed, "NODEBIN_SEEDS: A's advertised discovery endpoint");
  t.match(readFileSync(join(dir, "launch-reason"), "utf8"), /^every host of network net-p full \(1 host\(s\), 0 free slots\) for \d+ ms, capacity requests unmet for \d+ ms \(last for slow\)$/, "NODEBIN_REASON says why");
  const bPid = Number(readFileSync(pidFile, "utf8"));
  t.ok(alive(bPid), `host-b's governor runs (pid ${bPid})`);

  const onB = () => served.find((s) => bPids.has(s.pid) && !aPids.has(s.pid));
  await until(async () => {
    await bStatus();
    return onB() !== undefined;
  }, 90_000, "a call served by a node on host-b");
  const firstOnB = onB()!;
  if (process.env.PROVIDER_TEST_DEBUG) t.comment(`A:\n${govA.stderr()}\nB:\n${readFileSync(join(dir, "b.log"), "utf8")}`);
  t.comment(
    `load started -> first call served by the provider-launched host: ${firstOnB.at - loadStarted} ms ` +
      `(launch decided after ~${launchSeen - loadStarted} ms; host-b in A's gossip ~${joinSeen - launchSeen} ms later; its first call ~${firstOnB.at - joinSeen} ms after that: code fetch and node start)`,
  );
  const b = await bStatus();
  t.equal(b?.components.find((c) => c.name === "slow")?.source, "fetched from host-a", "B runs the code it fetched from A");

  // The load goes on, the network is full again: the guard rails hold (max-hosts 1).
  await until(async () => {
    await bStatus();
    return (await provider()).counters.skipped.launch["max-hosts"]! > 0;
  }, 60_000, "a launch refused by max-hosts while the load continues");
  const held = await provider();
  t.equal(held.counters.launches.started, 1, "one launch while the load continues");
  t.equal(readFileSync(join(dir, "launches"), "utf8"), "launch\n", "the launch script ran once");
  t.ok(held.counters.unmet > 0, `${held.counters.unmet} unmet capacity requests counted`);
  await stopLoad();
  t.same(failures, [], "every call of the load was served");
  t.ok(served.filter((s) => bPids.has(s.pid)).length > 0 && served.filter((s) => aPids.has(s.pid)).length > 0, "both hosts served");

  // Idle: B's node shrinks away, then A releases B with the release script.
  const loadStopped = Date.now();
  await until(async () => {
    const s = await bStatus();
    return s === undefined || s.components.every((c) => c.running === 0);
  }, 60_000, "B's node shrunk away");
  await until(async () => (await provider()).counters.releases.succeeded === 1, 60_000, "host-b released");
  t.comment(`load stopped -> host-b released: ${Date.now() - loadStopped} ms`);
  t.equal(readFileSync(join(dir, "released-host"), "utf8"), "host-b", "the release script got NODEBIN_HOST");
  t.match(readFileSync(join(dir, "release-reason"), "utf8"), /^host host-b has run no node for \d+ ms \(idle time 3000 ms\)$/, "and why");
  await until(() => !alive(bPid), 15_000, "host-b's governor gone");
  t.ok([...bPids].every((pid) => !alive(pid)), "and its children");
  const after = await provider();
  t.same(after.hosts, [], "no launched host left");
  t.same(kept(), [], "and none kept");
  t.equal(after.counters.launches.started, 1, "still one launch");
  t.equal(after.counters.launches.failed, 0);
  t.equal(after.counters.releases.failed, 0);
  t.match(govA.stderr(), /launching a host: every host of network net-p full/, "the launch is logged with why");
  t.match(govA.stderr(), /releasing host host-b has run no node for/, "and the release");

  // The same counts in `governor status` (text) and /metrics.
  const text = await runCli(["governor", "status", "--discovery-port", String(a.port)], a.env);
  t.match(text.stdout, /provider command \(decides: host-a\): 0\/1 launched host\(s\)\n\s+launches 1 started, 1 joined, 0 failed; releases 1 done, 0 failed, 0 gone; \d+ unmet request\(s\); skipped: [^\n]*launch max-hosts \d+/, "the text status has the provider's lines");
  const url = /^node-bin metrics at (\S+)$/m.exec(govA.stdout())![1]!;
  const body = (await scrape(url)).body;
  const m = parseMetrics(body);
  t.equal(valueOf(m, "nodebin_provider_launches_total", { outcome: "started" }), 1);
  t.equal(valueOf(m, "nodebin_provider_launches_total", { outcome: "succeeded" }), 1);
  t.equal(valueOf(m, "nodebin_provider_releases_total", { outcome: "succeeded" }), 1);
  t.ok(valueOf(m, "nodebin_provider_skipped_total", { action: "launch", reason: "max-hosts" })! > 0, "skipped by max-hosts, in /metrics");
  t.equal(valueOf(m, "nodebin_provider_hosts"), 0);
  t.ok(valueOf(m, "nodebin_provider_unmet_total")! > 0);
  const missing = promtoolMissing();
  await t.test("promtool check metrics on a governor with a provider", { skip: missing ?? false }, async (t) => {
    const r = await promtoolCheck(body);
    t.equal(r.code, 0, `exit 0 (${r.stdout}${r.stderr})`);
  });
});
