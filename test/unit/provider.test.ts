// The provider loop (src/governor/provider.ts) on a ManualClock with fake host summaries and a
// fake provider whose launches and releases the test settles by hand; and the built-in command
// provider (src/governor/plugins/provider-command.ts) running real bash scripts.
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { ManualClock } from "../../src/platform/clock.ts";
import { CommandProvider, parseCommandOptions } from "../../src/governor/plugins/provider-command.ts";
import { BACKOFF_MAX_MS, LaunchedHostsFile, ProviderLoop, RESTORE_GRACE_MS, UnmetForwarder, deciderOf, type LaunchedStore } from "../../src/governor/provider.ts";
import { DEFAULT_SETTINGS, SETTING_KEYS, parseConfig, type ProviderSettings } from "../../src/governor/settings.ts";
import type { HostProvider } from "../../src/governor/strategy.ts";
import type { CapacityRequest, HostSummary } from "../../src/wire/control.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { deferred, type Deferred } from "../lib/deferred.ts";
import { recordingLoggers } from "../lib/recording-logger.ts";

const NET = "net-1";

/** A host of NET with `free` of 2 slots free; `nodes`: its component's node count (default: one per used slot). */
function host(id: string, free: number, o: { provider?: boolean; nodes?: number; network?: string; noCapacity?: boolean } = {}): HostSummary {
  return {
    host: id,
    network: o.network ?? NET,
    endpoint: `tcp://10.0.0.${id.length}:7400`,
    ...(o.noCapacity ? {} : { capacity: { slots: 2, used: 2 - free, components: [{ name: "slow", hash: "h1", nodes: o.nodes ?? 2 - free, queued: 0, capacity: 0, max: 4 }], provider: o.provider ?? false } }),
    remotes: [],
    role: "governor",
  };
}

class FakeProvider implements HostProvider {
  readonly name = "fake";
  readonly launches: { request: { seeds: string[]; network: string; reason: string }; answer: Deferred<{ host?: string }> }[] = [];
  readonly releases: { request: { host: string; network: string; reason: string }; answer: Deferred<void> }[] = [];
  closed = 0;
  launch(request: { seeds: string[]; network: string; reason: string }): Promise<{ host?: string }> {
    const answer = deferred<{ host?: string }>();
    this.launches.push({ request, answer });
    return answer.promise;
  }
  release(request: { host: string; network: string; reason: string }): Promise<void> {
    const answer = deferred<void>();
    this.releases.push({ request, answer });
    return answer.promise;
  }
  close(): void {
    this.closed++;
  }
}

const request = (o: Partial<CapacityRequest> = {}): CapacityRequest => ({ component: "slow", method: "gov.Slow/Work", fromHost: "a", visited: [], ...o });

interface Harness {
  clock: ManualClock;
  loop: ProviderLoop;
  provider: FakeProvider;
  hosts: HostSummary[];
  settings: ProviderSettings;
  lines: ReturnType<typeof recordingLoggers>["lines"];
  forwarded: { request: CapacityRequest; endpoint: string }[];
  /** While true, an unmet request arrives every 500 ms. */
  demand: { on: boolean };
  /** Moves the clock by `ms` (rounds and requests run on the way). */
  advance(ms: number): Promise<void>;
}

function harness(t: { teardown(fn: () => unknown): void }, o: { self?: string; hosts?: HostSummary[]; settings?: Partial<ProviderSettings>; provider?: FakeProvider; store?: LaunchedStore } = {}): Harness {
  const clock = new ManualClock();
  const provider = o.provider ?? new FakeProvider();
  const { lines, logger } = recordingLoggers();
  const settings: ProviderSettings = { providerMaxHosts: 2, providerCooldownMs: 5000, providerSustainMs: 3000, providerIdleMs: 10_000, ...o.settings };
  const h: Harness = {
    clock,
    provider,
    hosts: o.hosts ?? [host(o.self ?? "a", 0, { provider: true })],
    settings,
    lines,
    forwarded: [],
    demand: { on: true },
    loop: undefined as unknown as ProviderLoop,
    advance: (ms) => clock.advance(ms),
  };
  h.loop = new ProviderLoop({
    provider,
    clock,
    host: o.self ?? "a",
    network: NET,
    hosts: () => h.hosts,
    seeds: () => ["10.0.0.1:7400", "10.0.0.9:7400"],
    settings,
    log: logger("governor/provider"),
    forward: (r, endpoint) => void h.forwarded.push({ request: r, endpoint }),
    launchTimeoutMs: 20_000,
    ...(o.store ? { store: o.store } : {}),
  });
  h.loop.start();
  clock.every(500, () => {
    if (h.demand.on) h.loop.unmet(request(), clock.now());
  });
  t.teardown(() => h.loop.stop());
  return h;
}

const infos = (h: Harness) => h.lines.filter((l) => l.level === "info").map((l) => l.message);

t.test("provider - no launch before the network has been full and the demand unmet for the sustain time, then one", async (t) => {
  const h = harness(t);
  await h.advance(2500);
  t.equal(h.provider.launches.length, 0, "2.5 s of full and unmet: not yet (sustain 3 s)");
  t.equal(h.loop.counters.unmet, 5, "every unmet request counted");
  await h.advance(1000);
  t.equal(h.provider.launches.length, 0, "3.5 s: unmet for 3 s, but full only since the first round saw it (1 s)");
  t.ok(h.loop.status().fullSince === 1_001_000 && h.loop.status().demand?.since === 1_000_500, "both times in the status");
  await h.advance(1000);
  t.equal(h.provider.launches.length, 1, "full for 3 s too: a launch");
  const l = h.provider.launches[0]!.request;
  t.same(l.seeds, ["10.0.0.1:7400", "10.0.0.9:7400"], "the seeds handed over");
  t.equal(l.network, NET);
  t.match(l.reason, /every host of network net-1 full \(1 host\(s\), 0 free slots\) for \d+ ms, capacity requests unmet for \d+ ms \(last for slow\)/, "the reason in words");
  t.equal(h.loop.counters.launches.started, 1);
  t.ok(infos(h).some((m) => m.startsWith("launching a host: every host of network net-1 full")), "the decision is logged at info with why");
});

t.test("provider - a host with room breaks the sustained-full time, and demand that stopped does not launch", async (t) => {
  const h = harness(t, { hosts: [host("a", 0, { provider: true }), host("b", 1)] });
  await h.advance(10_000);
  t.equal(h.provider.launches.length, 0, "b has a free slot: no launch however long the requests go unmet");
  h.hosts[1] = host("b", 0);
  await h.advance(2000);
  t.equal(h.provider.launches.length, 0, "full for 2 s only");
  h.hosts[1] = host("b", 1);
  await h.advance(1000);
  h.hosts[1] = host("b", 0);
  await h.advance(3000);
  t.equal(h.provider.launches.length, 0, "a moment of room started the full time over (seen full again at the next round)");
  await h.advance(1000);
  t.equal(h.provider.launches.length, 1, "full 3 s without a break: launched");

  const quiet = harness(t);
  quiet.demand.on = false;
  quiet.loop.unmet(request(), quiet.clock.now());
  await quiet.advance(10_000);
  t.equal(quiet.provider.launches.length, 0, "one unmet request and then none: no launch (demand must keep arriving)");
  const scoped = harness(t);
  scoped.demand.on = false;
  scoped.clock.every(500, () => scoped.loop.unmet(request({ scope: "host" }), scoped.clock.now()));
  await scoped.advance(10_000);
  t.equal(scoped.provider.launches.length, 0, "requests scoped to their host: a new host would not serve them");
  t.equal(scoped.loop.counters.unmet, 0, "and they are not counted as demand");
});

t.test("provider - one launch in flight: while the command runs and until its host joins, the next decisions are skipped and counted", async (t) => {
  const h = harness(t, { settings: { providerMaxHosts: 4, providerCooldownMs: 1000 } });
  await h.advance(4500);
  t.equal(h.provider.launches.length, 1);
  await h.advance(5000);
  t.equal(h.provider.launches.length, 1, "the command still runs: no second launch");
  const skippedRunning = h.loop.counters.skipped.launch["in-flight"];
  t.ok(skippedRunning >= 4, `skipped (in-flight) counted every round: ${skippedRunning}`);
  t.equal(h.loop.status().inFlight?.phase, "command");
  h.provider.launches[0]!.answer.resolve({ host: "new-1" });
  await h.advance(5000);
  t.equal(h.provider.launches.length, 1, "command done, host not yet in gossip: still in flight");
  t.equal(h.loop.status().inFlight?.phase, "joining");
  t.ok(h.loop.counters.skipped.launch["in-flight"] > skippedRunning, "still skipped as in flight");
  t.equal(infos(h).filter((m) => m.startsWith("launch skipped (in-flight)")).length, 1, "logged once for the same reason (counted every round)");
  h.hosts.push(host("new-1", 0));
  await h.advance(1000);
  t.same(h.loop.status().hosts.map((x) => x.host), ["new-1"], "the named host joined: launched");
  t.equal(h.loop.counters.launches.succeeded, 1);
  t.notOk(h.loop.status().inFlight, "nothing in flight");
});

t.test("provider - at most max-hosts launched hosts alive", async (t) => {
  const h = harness(t, { settings: { providerMaxHosts: 1, providerCooldownMs: 1000 } });
  await h.advance(4500);
  h.provider.launches[0]!.answer.resolve({ host: "new-1" });
  h.hosts.push(host("new-1", 0));
  await h.advance(1000);
  t.equal(h.loop.counters.launches.succeeded, 1);
  await h.advance(10_000);
  t.equal(h.provider.launches.length, 1, "the whole network full again and requests unmet, but 1 of 1 launched: no launch");
  t.ok(h.loop.counters.skipped.launch["max-hosts"] >= 5, `skipped (max-hosts): ${h.loop.counters.skipped.launch["max-hosts"]}`);
  t.match(h.loop.status().lastDecision, /launch skipped \(max-hosts\): .*1 launched hosts alive, the most allowed \(1\)/);
  h.settings.providerMaxHosts = 2;
  await h.advance(1000);
  t.equal(h.provider.launches.length, 2, "max raised live: the next launch");
});

t.test("provider - a cooldown after a launch", async (t) => {
  const h = harness(t, { settings: { providerMaxHosts: 4, providerCooldownMs: 8000 } });
  await h.advance(4500);
  h.provider.launches[0]!.answer.resolve({});
  h.hosts.push(host("new-1", 0));
  await h.advance(1000);
  t.equal(h.loop.counters.launches.succeeded, 1, "the first new host taken as the launched one");
  const joined = h.clock.now();
  await h.advance(6000);
  t.equal(h.provider.launches.length, 1, "full again, but within the 8 s cooldown");
  t.ok(h.loop.counters.skipped.launch.cooldown >= 5, `skipped (cooldown): ${h.loop.counters.skipped.launch.cooldown}`);
  await h.advance(joined + 8000 - h.clock.now());
  t.equal(h.provider.launches.length, 2, "cooldown over: the next launch");
});

t.test("provider - a failed launch is counted and logged with the provider's error, and backs off, doubling", async (t) => {
  const h = harness(t, { settings: { providerMaxHosts: 4, providerCooldownMs: 2000 } });
  await h.advance(4500);
  const at = h.clock.now();
  h.provider.launches[0]!.answer.reject(new NodeBinError("UNAVAILABLE", 'provider launch command "x" exited with 3; stderr: quota exceeded'));
  await h.advance(0);
  t.equal(h.loop.counters.launches.failed, 1);
  t.ok(h.lines.some((l) => l.level === "warn" && /launch failed: provider fake: UNAVAILABLE: .*quota exceeded; next launch in 2000 ms/.test(l.message)), "logged with the stderr tail");
  await h.advance(1900 - (h.clock.now() - at));
  t.equal(h.provider.launches.length, 1, "backing off");
  t.ok(h.loop.counters.skipped.launch.backoff >= 1, "skipped (backoff) counted");
  await h.advance(1000);
  t.equal(h.provider.launches.length, 2, "after the backoff: tried again");
  const second = h.clock.now();
  h.provider.launches[1]!.answer.reject(new Error("boom"));
  await h.advance(4500);
  t.equal(h.provider.launches.length, 2, "second failure in a row: 4 s of backoff");
  await h.advance(second + 4000 - h.clock.now() + 1000);
  t.equal(h.provider.launches.length, 3, "then tried again");
  t.equal(h.loop.counters.launches.failed, 2);
  t.ok(BACKOFF_MAX_MS >= 60_000, "the backoff has a ceiling");

  // A command that succeeds but whose host never joins: failed at the launch timeout (20 s here).
  h.provider.launches[2]!.answer.resolve({ host: "ghost" });
  await h.advance(19_000);
  t.equal(h.loop.counters.launches.failed, 2, "still waiting for it to join");
  await h.advance(2000);
  t.equal(h.loop.counters.launches.failed, 3, "never joined: failed at the launch timeout");
  t.ok(h.lines.some((l) => /host ghost did not join network net-1 within 20000 ms/.test(l.message)));
});

t.test("provider - the decider is the smallest host id with a provider; the others hand their unmet requests to it", async (t) => {
  t.equal(deciderOf("b", NET, [host("b", 0, { provider: true }), host("a", 0, { provider: true }), host("0", 0)]), "a", "the smallest id among the providers, not among all");
  t.equal(deciderOf("b", NET, [host("a", 0, { provider: true, network: "other" })]), "b", "another network's provider does not count");
  t.equal(deciderOf("b", NET, [host("c", 0)], false), undefined, "no provider: none");

  const hosts = [host("a", 0, { provider: true }), host("b", 0, { provider: true })];
  const b = harness(t, { self: "b", hosts });
  await b.advance(10_000);
  t.equal(b.provider.launches.length, 0, "b is no decider: it never launches");
  t.equal(b.forwarded.length, 20, "every unmet request handed on");
  t.same(b.forwarded[0], { request: { ...request(), visited: ["b"] }, endpoint: "tcp://10.0.0.1:7400" }, "to a's endpoint, b marked visited");
  t.equal(b.loop.counters.forwarded, 20);
  b.loop.unmet(request({ visited: ["a"] }), b.clock.now());
  t.equal(b.forwarded.length, 20, "a request a has seen already is not sent back to it");

  // The decider leaves the gossip: b decides.
  b.hosts.splice(0, 1);
  await b.advance(4500);
  t.equal(b.provider.launches.length, 1, "a gone: b is the decider and launches");

  // A second decider on the same hosts: a launches, only it.
  const a = harness(t, { self: "a", hosts });
  await a.advance(4500);
  t.equal(a.provider.launches.length, 1, "a launches");

  // Not counted as a decider while its request is not its own.
  const c = harness(t, { self: "c", hosts: [host("a", 0, { provider: true }), host("c", 0, { provider: true })] });
  c.hosts[0] = { ...c.hosts[0]!, endpoint: "" };
  await c.advance(4500);
  t.ok(c.loop.counters.skipped.launch["not-decider"] >= 1, "with the decider unreachable, c records the demand, and skips as not the decider");

  const sent: { request: CapacityRequest; endpoint: string }[] = [];
  const f = new UnmetForwarder({ host: "z", network: NET, hosts: () => hosts, forward: (r, endpoint) => void sent.push({ request: r, endpoint }), log: recordingLoggers().logger("x") });
  f.unmet(request());
  t.same(sent, [{ request: { ...request(), visited: ["z"] }, endpoint: "tcp://10.0.0.1:7400" }], "a governor without a provider hands its unmet requests to the decider");
  f.unmet(request({ scope: "process" }));
  t.equal(sent.length, 1, "not one scoped to a process");
});

t.test("provider - host attribution: the id the command printed, else the first new host to join", async (t) => {
  const named = harness(t, { hosts: [host("a", 0, { provider: true })], settings: { providerMaxHosts: 4 } });
  await named.advance(4500);
  // Another host joins on its own while the command runs; the command names its own host.
  named.hosts.push(host("stranger", 0));
  await named.advance(1000);
  named.provider.launches[0]!.answer.resolve({ host: "mine" });
  await named.advance(1000);
  t.equal(named.loop.counters.launches.succeeded, 0, "the stranger is not taken: the command named another");
  named.hosts.push(host("mine", 0));
  await named.advance(1000);
  t.same(named.loop.status().hosts.map((x) => x.host), ["mine"]);

  const first = harness(t, { hosts: [host("a", 0, { provider: true }), host("old", 0)], settings: { providerMaxHosts: 4 } });
  await first.advance(4500);
  first.hosts.push(host("x2", 0, { network: "elsewhere" }));
  await first.advance(1000);
  first.hosts.push(host("n2", 0));
  await first.advance(1000);
  first.hosts.push(host("n1", 0));
  await first.advance(1000);
  first.provider.launches[0]!.answer.resolve({});
  await first.advance(0);
  t.same(first.loop.status().hosts.map((x) => x.host), ["n2"], "the first host of this network seen after the launch began (not one known before, not another network's)");
  const bad = harness(t, { settings: { providerMaxHosts: 4 } });
  await bad.advance(4500);
  bad.provider.launches[0]!.answer.resolve({ host: " spaced " });
  bad.hosts.push(host("real", 0));
  await bad.advance(1000);
  t.same(bad.loop.status().hosts.map((x) => x.host), ["real"], "an answer that is no host id is ignored");
});

t.test("provider - release after idle, one at a time, after the cooldown; a launched host that left is forgotten", async (t) => {
  const h = harness(t, { settings: { providerMaxHosts: 4, providerCooldownMs: 2000, providerIdleMs: 10_000 } });
  for (const id of ["n1", "n2"]) {
    await h.advance(4500);
    const l = h.provider.launches.at(-1)!;
    l.answer.resolve({ host: id });
    h.hosts.push(host(id, 0));
    await h.advance(1000);
  }
  t.same(h.loop.status().hosts.map((x) => x.host), ["n1", "n2"]);
  t.equal(h.loop.sample().hosts, 2);
  h.demand.on = false;
  // n1 shrinks to no node; n2 keeps one.
  h.hosts[1] = host("n1", 2, { nodes: 0 });
  h.hosts[2] = host("n2", 1, { nodes: 1 });
  await h.advance(9000);
  t.equal(h.provider.releases.length, 0, "9 s idle: kept");
  await h.advance(2000);
  t.equal(h.provider.releases.length, 1, "past 10 s idle: released");
  t.same(h.provider.releases[0]!.request.host, "n1");
  t.equal(h.provider.releases[0]!.request.network, NET);
  t.match(h.provider.releases[0]!.request.reason, /host n1 has run no node for \d+ ms \(idle time 10000 ms\)/);
  t.ok(infos(h).some((m) => m.startsWith("releasing host n1 has run no node")), "logged at info with why");
  t.equal(h.loop.counters.releases.started, 1);
  // n2 goes idle too while n1's release runs: one release at a time.
  h.hosts[2] = host("n2", 2, { nodes: 0 });
  await h.advance(12_000);
  t.equal(h.provider.releases.length, 1, "n2 idle past 10 s, but a release runs");
  t.ok(h.loop.counters.skipped.release["in-flight"] >= 1, "skipped (release in flight) counted");
  h.provider.releases[0]!.answer.resolve();
  await h.advance(0);
  t.equal(h.loop.counters.releases.succeeded, 1);
  t.same(h.loop.status().hosts.map((x) => x.host), ["n2"], "n1 no longer launched");
  await h.advance(1000);
  t.equal(h.provider.releases.length, 1, "cooldown after the release");
  t.ok(h.loop.counters.skipped.release.cooldown >= 1, "skipped (release cooldown) counted");
  await h.advance(2000);
  t.equal(h.provider.releases.length, 2, "then n2");
  h.provider.releases[1]!.answer.reject(new NodeBinError("UNAVAILABLE", "kubectl: forbidden"));
  await h.advance(0);
  t.equal(h.loop.counters.releases.failed, 1, "a failed release counted");
  t.ok(h.lines.some((l) => l.level === "warn" && /release of host n2 failed \(UNAVAILABLE: kubectl: forbidden\)/.test(l.message)));
  t.same(h.loop.status().hosts.map((x) => x.host), ["n2"], "and the host still counted as launched");

  // n2 vanishes from the gossip (the machine died, or someone removed it): forgotten, no command.
  h.hosts.splice(2, 1);
  await h.advance(1000);
  t.same(h.loop.status().hosts, [], "forgotten");
  t.equal(h.loop.counters.releases.gone, 1);
  t.equal(h.provider.releases.length, 2, "no release command for a host that is gone");
  t.ok(infos(h).some((m) => m.startsWith("launched host n2 left the network's gossip: forgotten")));
});

t.test("provider - the launched hosts outlive a restart: remembered, counted against max-hosts, released when idle; one that never shows up again is forgotten", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-provider-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "governor-7400", "provider-hosts.json");
  const kept = () => (JSON.parse(readFileSync(path, "utf8")) as { hosts: { host: string; network: string; launchedAt: number }[] }).hosts;
  const before = harness(t, { store: new LaunchedHostsFile(path), settings: { providerMaxHosts: 2, providerCooldownMs: 1000 } });
  for (const id of ["n1", "n2"]) {
    await before.advance(4500);
    before.provider.launches.at(-1)!.answer.resolve({ host: id });
    before.hosts.push(host(id, 0));
    await before.advance(1000);
  }
  t.same(kept().map((r) => [r.host, r.network]), [["n1", NET], ["n2", NET]], "each launched host written down as it joined");
  t.same(kept().map((r) => r.launchedAt), before.loop.status().hosts.map((x) => x.launchedAt));
  await before.loop.stop();

  // The governor restarts: its table is empty of the launched hosts until gossip brings them back.
  const after = harness(t, { store: new LaunchedHostsFile(path), settings: { providerMaxHosts: 2, providerCooldownMs: 1000 } });
  t.same(after.loop.status().hosts.map((x) => [x.host, x.restored]), [["n1", true], ["n2", true]], "both remembered, not seen yet");
  t.ok(infos(after).some((m) => m.startsWith("remembered 2 launched host(s) from before this governor started: n1, n2")), "and it says so");
  t.equal(after.loop.sample().hosts, 2, "counted in the metrics");
  await after.advance(4500);
  t.equal(after.provider.launches.length, 0, "the network is full and demand unmet, but no launch past max-hosts");
  t.ok(after.loop.counters.skipped.launch["max-hosts"] >= 1, "skipped (max-hosts) counted");
  after.demand.on = false;

  // n1 comes back in gossip and runs no node: released as any launched host; n2 never comes back.
  after.hosts.push(host("n1", 2, { nodes: 0 }));
  await after.advance(1000);
  t.same(after.loop.status().hosts.map((x) => [x.host, x.restored ?? false]), [["n1", false], ["n2", true]], "n1 seen again");
  await after.advance(10_000);
  t.same(after.provider.releases.map((r) => r.request.host), ["n1"], "n1 released after its idle time");
  after.provider.releases[0]!.answer.resolve();
  await after.advance(0);
  t.same(kept().map((r) => r.host), ["n2"], "n1 no longer written down");
  t.same(after.loop.status().hosts.map((x) => x.host), ["n2"], "n2 still awaited within the grace");
  await after.advance(RESTORE_GRACE_MS - 15_500 - 1000);
  t.same(after.loop.status().hosts.map((x) => x.host), ["n2"], "n2 still awaited 1 s before the grace ends");
  await after.advance(1000);
  t.same(after.loop.status().hosts, [], `n2 forgotten ${RESTORE_GRACE_MS} ms after the restart`);
  t.equal(after.loop.counters.releases.gone, 1);
  t.equal(after.provider.releases.length, 1, "no release command for it");
  t.ok(infos(after).some((m) => m.startsWith(`launched host n2 (remembered from before this governor started) did not show up in the network's gossip within ${RESTORE_GRACE_MS} ms: forgotten`)));
  t.same(kept(), [], "nothing left written down");
});

t.test("provider - the kept file is read as input: another network's hosts, damaged entries and a damaged file are dropped, never a crash", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-provider-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "provider-hosts.json");
  const long = "x".repeat(300);
  writeFileSync(path, JSON.stringify({ hosts: [{ host: "n1", network: NET, launchedAt: 5 }, { host: "o1", network: "other", launchedAt: 5 }, { host: long, network: NET, launchedAt: 5 }, { host: " n3", network: NET, launchedAt: 5 }, { host: "n4", network: NET }, "n5", null] }));
  const h = harness(t, { store: new LaunchedHostsFile(path) });
  t.same(h.loop.status().hosts.map((x) => x.host), ["n1"], "only the well-formed entry of this network");
  t.ok(h.lines.some((l) => l.level === "warn" && /forgetting 1 launched host\(s\) of another network \(other\): o1; release them by hand/.test(l.message)), "another network's host: a warning naming it");
  t.same((JSON.parse(readFileSync(path, "utf8")) as { hosts: { host: string }[] }).hosts.map((r) => r.host), ["n1"], "and the file rewritten without it");

  writeFileSync(path, "{ not json");
  const damaged = harness(t, { store: new LaunchedHostsFile(path) });
  t.same(damaged.loop.status().hosts, [], "a damaged file: nothing remembered");
  t.same(new LaunchedHostsFile(join(dir, "missing.json")).read(), [], "a missing file: nothing");

  const failing: LaunchedStore = { read: () => [], write: () => { throw new Error("ENOSPC: no space left on device"); } };
  const full = harness(t, { store: failing });
  await full.advance(4500);
  full.provider.launches[0]!.answer.resolve({ host: "n1" });
  full.hosts.push(host("n1", 0));
  await full.advance(1000);
  t.same(full.loop.status().hosts.map((x) => x.host), ["n1"], "a store that cannot write: the launch still counts");
  t.ok(full.lines.some((l) => l.level === "warn" && /could not be kept for a restart: .*ENOSPC/.test(l.message)), "and a warning says it will not outlive a restart");
});

t.test("provider - a host that runs a node again is not idle; no release without a release", async (t) => {
  const noRelease: FakeProvider = Object.assign(new FakeProvider(), { release: undefined }) as unknown as FakeProvider;
  const h = harness(t, { provider: noRelease, settings: { providerIdleMs: 5000, providerCooldownMs: 1000 } });
  await h.advance(4500);
  h.provider.launches[0]!.answer.resolve({ host: "n1" });
  h.hosts.push(host("n1", 2, { nodes: 0 }));
  h.demand.on = false;
  await h.advance(4000);
  h.hosts[1] = host("n1", 1, { nodes: 1 });
  await h.advance(1000);
  h.hosts[1] = host("n1", 2, { nodes: 0 });
  await h.advance(4000);
  const idle = h.loop.status().hosts[0]!.idleMs;
  t.ok(idle !== null && idle <= 4000, `a node ran: the idle time started over (${idle} ms, not 9000)`);
  t.equal(h.provider.launches.length, 1);
  await h.advance(3000);
  t.ok(infos(h).some((m) => /has no release \(no --provider-release-command\): it stays/.test(m)), "idle, but nothing to release it with: said once");
  t.same(h.loop.status().hosts.map((x) => x.host), ["n1"]);
});

t.test("provider - stop ends the rounds and closes the provider", async (t) => {
  const h = harness(t);
  await h.loop.stop();
  t.equal(h.provider.closed, 1, "the provider is closed (a command still running is killed)");
  await h.advance(10_000);
  t.equal(h.provider.launches.length, 0, "no decision after stop");
});

t.test("provider - settings: defaults, `governor set` keys, governor.json keys", async (t) => {
  t.same([DEFAULT_SETTINGS.providerMaxHosts, DEFAULT_SETTINGS.providerCooldownMs, DEFAULT_SETTINGS.providerSustainMs, DEFAULT_SETTINGS.providerIdleMs], [4, 60_000, 10_000, 120_000]);
  t.equal(SETTING_KEYS["provider-max-hosts"], "providerMaxHosts");
  t.equal(SETTING_KEYS["provider-idle-ms"], "providerIdleMs");
  const ok = parseConfig(JSON.stringify({ providerCommand: "bash up.sh", providerReleaseCommand: ["/bin/down", "--now"], providerMaxHosts: 2 }), "g.json");
  t.equal(ok.providerCommand, "bash up.sh");
  for (const bad of [{ providerCommand: "" }, { providerCommand: 3 }, { providerReleaseCommand: [] }, { providerMaxHosts: 0 }]) {
    t.throws(() => parseConfig(JSON.stringify(bad), "g.json"), { code: "INVALID_ARGUMENT" }, JSON.stringify(bad));
  }
  t.throws(() => parseCommandOptions({}), /no launch command/);
  t.throws(() => parseCommandOptions({ command: "x", shell: true }), /unknown option "shell"/);
  t.throws(() => parseCommandOptions({ command: "x", timeoutMs: 0 }), /timeoutMs/);
  t.same(parseCommandOptions({ command: ["/bin/up", "a"], releaseCommand: "down", timeoutMs: 5 }), { command: ["/bin/up", "a"], releaseCommand: "down", timeoutMs: 5 });
});

// ---------------------------------------------------------------- the command provider, real scripts

function scripts(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-provider-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test("provider command - launch gets the seeds, network and reason (not this host's NODEBIN_HOST); its last stdout line names the host", async (t) => {
  const dir = scripts(t);
  const out = join(dir, "env.txt");
  const p = new CommandProvider({
    command: `printf '%s|%s|%s|%s' "$NODEBIN_SEEDS" "$NODEBIN_NETWORK" "$NODEBIN_REASON" "\${NODEBIN_HOST-unset}" > ${out}; echo starting; echo; echo host-42`,
    env: { ...process.env, NODEBIN_HOST: "this-host", KEEP: "1" },
  });
  t.teardown(() => p.close());
  const r = await p.launch({ seeds: ["10.0.0.1:7400", "10.0.0.2:7400"], network: "n1", reason: "all full" });
  t.same(r, { host: "host-42" });
  t.equal(readFileSync(out, "utf8"), "10.0.0.1:7400,10.0.0.2:7400|n1|all full|unset");
  const none = new CommandProvider({ command: "echo 'not an id: spaces'" });
  t.same(await none.launch({ seeds: [], network: "", reason: "" }), {}, "a last line that is no host id: none named");
  t.notOk(none.release, "no release command: no release");
});

t.test("provider command - an array is run without a shell; release gets NODEBIN_HOST", async (t) => {
  const dir = scripts(t);
  const script = join(dir, "down.sh");
  writeFileSync(script, `#!/bin/bash\necho "$1 $NODEBIN_HOST $NODEBIN_NETWORK $NODEBIN_REASON" > ${join(dir, "released")}\n`);
  chmodSync(script, 0o755);
  const p = new CommandProvider({ command: ["/bin/echo", "$NOT_EXPANDED"], releaseCommand: [script, "a;b"] });
  t.same(await p.launch({ seeds: [], network: "", reason: "" }), {}, "'$NOT_EXPANDED' printed as is (no shell): not an id");
  await p.release!({ host: "h9", network: "n1", reason: "idle" });
  t.equal(readFileSync(join(dir, "released"), "utf8"), "a;b h9 n1 idle\n", "its argument passed as is");
});

t.test("provider command - a non-zero exit fails UNAVAILABLE with the stderr tail", async (t) => {
  const p = new CommandProvider({ command: "echo out; echo 'quota exceeded for project x' >&2; exit 3" });
  const err = await p.launch({ seeds: [], network: "", reason: "" }).then(
    () => undefined,
    (e: unknown) => NodeBinError.from(e),
  );
  t.equal(err?.code, "UNAVAILABLE");
  t.match(err?.message, /exited with 3; stderr: quota exceeded for project x/);
  t.equal(err?.details.exitCode, "3");
  const missing = await new CommandProvider({ command: ["/nonexistent/provider-cmd"] }).launch({ seeds: [], network: "", reason: "" }).then(
    () => undefined,
    (e: unknown) => NodeBinError.from(e),
  );
  t.equal(missing?.code, "UNAVAILABLE", "a program that does not exist");
});

t.test("provider command - past its timeout the command is killed by its pid (DEADLINE_EXCEEDED); close() kills one still running", async (t) => {
  const dir = scripts(t);
  const p = new CommandProvider({ command: `echo $$ > ${join(dir, "pid")}; echo slow >&2; exec sleep 30`, timeoutMs: 300 });
  const started = Date.now();
  const err = await p.launch({ seeds: [], network: "", reason: "" }).then(
    () => undefined,
    (e: unknown) => NodeBinError.from(e),
  );
  t.equal(err?.code, "DEADLINE_EXCEEDED");
  t.match(err?.message, /ran past 300 ms and was killed; stderr: slow/);
  t.ok(Date.now() - started < 10_000, "not left to run its 30 s");
  const pid = Number(readFileSync(join(dir, "pid"), "utf8"));
  t.throws(() => process.kill(pid, 0), "the process is gone");

  const q = new CommandProvider({ command: `echo $$ > ${join(dir, "pid2")}; exec sleep 30` });
  const running = q.launch({ seeds: [], network: "", reason: "" }).then(
    () => undefined,
    (e: unknown) => NodeBinError.from(e),
  );
  const until = Date.now() + 10_000;
  while (!existsSync(join(dir, "pid2")) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  t.equal(q.pids.length, 1, "one command running");
  await q.close();
  t.equal((await running)?.code, "UNAVAILABLE", "ended: killed by SIGTERM");
  t.same(q.pids, []);
  t.throws(() => process.kill(Number(readFileSync(join(dir, "pid2"), "utf8")), 0), "gone");
  const refused = await q.launch({ seeds: [], network: "", reason: "" }).then(
    () => undefined,
    (e: unknown) => NodeBinError.from(e),
  );
  t.equal(refused?.code, "CANCELLED", "no command after close");
});

t.test("provider command - a background process holding its stdout does not keep the launch waiting", async (t) => {
  const dir = scripts(t);
  const p = new CommandProvider({ command: `sleep 20 & echo $! > ${join(dir, "bg")}; echo host-bg` });
  t.teardown(() => {
    try {
      process.kill(Number(readFileSync(join(dir, "bg"), "utf8")), "SIGKILL");
    } catch {
      // gone
    }
  });
  const started = Date.now();
  t.same(await p.launch({ seeds: [], network: "", reason: "" }), { host: "host-bg" });
  t.ok(Date.now() - started < 5000, `resolved ${Date.now() - started} ms after start, though the pipe stays open`);
});

t.test("provider plugin - a plugins directory's provider replaces the built-in command and is checked for launch()", async (t) => {
  const { PluginHost } = await import("../../src/governor/plugins.ts");
  const dir = scripts(t);
  const builtIn = await PluginHost.discover({});
  t.same(builtIn.chosenFor("provider"), { name: "command", source: "built-in" }, "the built-in by default");
  const context = { role: "governor" as const, runtimeDir: dir, log: recordingLoggers().logger("x") };
  await t.rejects(builtIn.start("provider", context, {}), { code: "INVALID_ARGUMENT", message: /start-up step 8 of 8 \(provider\): built-in plugin "command" failed to start: command: no launch command/ }, "the built-in needs a command");

  const plugins = join(dir, "plugins");
  const cloud = join(plugins, "my-cloud");
  (await import("node:fs")).mkdirSync(cloud, { recursive: true });
  writeFileSync(
    join(cloud, "index.mjs"),
    `export const manifest = { kind: "provider", name: "my-cloud" };
export default { create(options) { return { name: "my-cloud", async launch(r) { return { host: options.prefix + r.network }; }, async release() {} }; } };
`,
  );
  const host = await PluginHost.discover({ dirs: [plugins] });
  t.same(host.chosenFor("provider"), { name: "my-cloud", source: cloud });
  const p = await host.start("provider", context, { "my-cloud": { prefix: "vm-" } });
  t.same(await p.launch({ seeds: [], network: "n1", reason: "" }), { host: "vm-n1" }, "the same interface: launch answers the host");
  t.equal(typeof p.release, "function");

  const bad = join(dir, "bad");
  (await import("node:fs")).mkdirSync(bad);
  writeFileSync(join(bad, "p.mjs"), `export default { kind: "provider", name: "lazy", create() { return { name: "lazy" }; } };\n`);
  const lazy = await PluginHost.discover({ dirs: [bad] });
  await t.rejects(lazy.start("provider", context, {}), { code: "INVALID_ARGUMENT", message: /create\(\) must return a provider plugin with a launch\(\) method/ });
});
