import { EventEmitter } from "node:events";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { ElasticLoop, ROOM_WAIT_MS } from "../../src/governor/elastic.ts";
import defaultZombie from "../../src/governor/plugins/zombie.ts";
import type { SpawnSpec } from "../../src/governor/children.ts";
import type { ControlCall, ProcessHandle, SupervisorPorts } from "../../src/governor/ports.ts";
import { RollingDeploy } from "../../src/governor/roll.ts";
import { DEFAULT_SETTINGS, GovernorConfig, type Settings } from "../../src/governor/settings.ts";
import { GovernorState, type ComponentState } from "../../src/governor/state.ts";
import type { ChildView, LifecycleStrategy, ZombieActions, ZombieStrategy } from "../../src/governor/strategy.ts";
import { Supervisor } from "../../src/governor/supervisor.ts";
import type { Logger } from "../../src/component/context.ts";
import { ManualClock } from "../../src/platform/clock.ts";
import type { PingReply, RegisterRequest } from "../../src/wire/control.ts";
import { NodeBinError } from "../../src/wire/errors.ts";

/**
 * The supervisor with the governor's elastic loop around it (the rounds that
 * judge silence and restart crashed children), on a ManualClock, with fake
 * processes and a fake control plane: nothing sleeps, nothing is spawned.
 */

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** A spawned process that exits when the test (or a kill) says so. */
class FakeProcess extends EventEmitter implements ProcessHandle {
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;

  constructor(readonly pid: number) {
    super();
  }

  get alive(): boolean {
    return this.exitCode === null && this.signalCode === null;
  }

  exit(code: number | null, signal: NodeJS.Signals | null = null): void {
    this.exitCode = code;
    this.signalCode = signal;
    this.emit("exit", code, signal);
  }
}

/** A Register as a container sends it (only what the governor's check reads matters here). */
function lease(container: string, pid: number, nodes: { id: string; endpoints: string[] }[]): RegisterRequest {
  return {
    container,
    pid,
    leaseMs: 3000,
    seeds: [],
    schemas: [],
    nodes: nodes.map((n) => ({ ...n, component: n.id.replace(/-\d+$/, ""), version: "1", host: "host-a", network: "", methods: [], schema: "s", load: { queued: 0, capacity: 100 } })),
  };
}

function pong(pid: number, over: Partial<PingReply> = {}): PingReply {
  return {
    pid,
    container: `c-${pid}`,
    node: `greeter-${pid}`,
    component: "greeter",
    version: "1",
    phase: "ready",
    handled: 0,
    failed: 0,
    rejected: 0,
    queued: 0,
    capacity: 100,
    queueWaitMs: 0,
    idleMs: 10,
    uptimeMs: 1000,
    rssBytes: 1,
    endpoints: [],
    role: "member",
    min: 1,
    max: 4,
    refused: {},
    calls: [],
    callBuckets: [],
    ...over,
  };
}

/** Records every zombie it is told of, then kills and respawns, as the built-in strategy does. */
class SpyZombie implements ZombieStrategy {
  readonly name = "spy-zombie";
  readonly calls: { child: ChildView; actions: ZombieActions }[] = [];

  onZombie(child: ChildView, actions: ZombieActions): void {
    this.calls.push({ child, actions });
    actions.kill();
    actions.respawn();
  }
}

interface HarnessOptions {
  /** The pong a child answers its ping with; undefined: no answer (the ping times out after its timeout). */
  answer?: (pid: number) => PingReply | undefined;
  zombie?: ZombieStrategy;
  lifecycle?: LifecycleStrategy;
  settings?: Partial<Settings>;
  /** The host's capacity (default 8). */
  capacity?: number;
  /** Processes ignore SIGTERM (a child that will not exit when told to). */
  ignoreTerm?: boolean;
  /** Answers the control calls to children (default: none answers, UNAVAILABLE). */
  call?: ControlCall;
}

function harness(t: Test, options: HarnessOptions = {}) {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-supervisor-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const componentsDir = join(dir, "components");
  const stateDir = join(dir, "state");
  mkdirSync(componentsDir);
  mkdirSync(join(stateDir, "logs"), { recursive: true });

  const clock = new ManualClock();
  const capacity = options.capacity ?? 8;
  const state = new GovernorState({ clock, host: "host-a", componentsDir, capacity });
  state.log = quiet;
  const zombie = options.zombie ?? new SpyZombie();
  state.strategies = { logging: { name: "quiet", logger: () => quiet }, lifecycle: options.lifecycle ?? { name: "none", decide: () => [] }, zombie };
  const config = new GovernorConfig(state, { stateDir, capacity, ...(options.settings ? { settings: options.settings } : {}) });
  config.readConfig(true);

  const procs: FakeProcess[] = [];
  /** What each process was spawned with, by pid. */
  const specs = new Map<number, SpawnSpec>();
  const kills: { pid: number; signal: NodeJS.Signals }[] = [];
  const pings: { via: string; timeoutMs: number }[] = [];
  const evicted: string[] = [];
  /** The endpoint each registered child answers at. */
  const endpoints = new Map<string, number>();
  const answer = options.answer ?? (() => undefined);
  let nextPid = 4000;

  const ports: SupervisorPorts = {
    call: options.call ?? (() => Promise.reject(new NodeBinError("UNAVAILABLE", "no control plane in this test"))),
    ping(via, timeoutMs) {
      pings.push({ via, timeoutMs });
      const pid = endpoints.get(via);
      const reply = pid === undefined ? undefined : answer(pid);
      if (reply) return Promise.resolve(reply);
      return clock.sleep(timeoutMs).then(() => {
        throw new NodeBinError("DEADLINE_EXCEEDED", `ping ${via}: no answer in ${timeoutMs} ms`);
      });
    },
    spawn(spec) {
      const p = new FakeProcess(nextPid++);
      procs.push(p);
      specs.set(p.pid, spec);
      return p;
    },
    kill(pid, signal) {
      kills.push({ pid, signal });
      const p = procs.find((x) => x.pid === pid);
      if (!p?.alive) throw new Error("ESRCH");
      if (signal === "SIGTERM" && options.ignoreTerm) return;
      // Like a real process, it exits after the signal, not inside kill().
      queueMicrotask(() => p.exit(null, signal));
    },
    pidAlive: (pid) => procs.some((p) => p.pid === pid && p.alive),
    evict: (container) => evicted.push(container),
  };

  const supervisor = new Supervisor(
    state,
    { componentsDir, socket: `ipc://${join(dir, "governor.sock")}`, discoveryPort: 7400, host: "host-a", bind: "127.0.0.1", advertise: "127.0.0.1", securityArgs: [], network: "", seeds: [], runtimeDir: dir, stateDir },
    ports,
  );
  const deploy = new RollingDeploy(state, config, supervisor, ports.call);
  const loop = new ElasticLoop(state, config, supervisor, deploy, { network: "", hosts: () => [], sendVia: () => {}, announce: () => {} });
  const comp: ComponentState = deploy.addComponentState("greeter", "code-1");
  t.teardown(() => {
    loop.stop();
    supervisor.stopPings();
  });

  return {
    clock,
    state,
    config,
    supervisor,
    deploy,
    comp,
    procs,
    specs,
    endpoints,
    kills,
    pings,
    evicted,
    zombie,
    /** As the governor starts: rounds every 250 ms, pings every pingMs, one round at once. */
    start() {
      loop.start();
      supervisor.startPings();
      loop.tick();
    },
    /** Runs one round of the elastic loop now. */
    tick() {
      loop.tick();
    },
    /** The container id the governor gave child `pid` at spawn (its --id argument). */
    containerOf(pid: number): string {
      const args = specs.get(pid)?.args ?? [];
      const at = args.indexOf("--id");
      if (at < 0) throw new Error(`pid ${pid} was spawned without --id`);
      return args[at + 1]!;
    },
    /** The host agent saw child `pid` register its node (its own container id, as a real child does). */
    register(pid: number) {
      const component = state.children.get(pid)?.component ?? "greeter";
      const endpoint = `ipc://${join(dir, `${component}-${pid}.sock`)}`;
      endpoints.set(endpoint, pid);
      const container = this.containerOf(pid);
      const nodes = [{ id: `${component}-${pid}`, endpoints: [endpoint] }];
      const refused = supervisor.checkLease(lease(container, pid, nodes));
      if (refused) throw refused;
      supervisor.onRegistered(pid, container, nodes);
    },
  };
}

t.test("supervisor - a child whose pings go unanswered is a zombie only after zombieAfterMs", async (t) => {
  const h = harness(t);
  const spy = h.zombie;
  if (!(spy instanceof SpyZombie)) throw new Error("harness: expected the spy strategy");
  h.start();
  t.equal(h.procs.length, 1, "the component's one child is spawned");
  const pid = h.procs[0]!.pid;
  h.register(pid);
  t.equal(h.state.children.get(pid)?.phase, "ready");
  t.equal(h.state.settings.zombieAfterMs, 3000);

  await h.clock.advance(2900);
  t.ok(h.pings.length >= 2, `pings were sent (${h.pings.length}) and went unanswered`);
  t.ok((h.state.children.get(pid)?.missedPongs ?? 0) >= 1, "missed pongs are counted");
  t.equal(spy.calls.length, 0, "2.9 s of silence: not a zombie yet");
  t.same(h.kills, [], "nothing killed");

  await h.clock.advance(100);
  t.equal(spy.calls.length, 0, "3 s of silence exactly: not past zombieAfterMs");
  await h.clock.advance(250); // 3.25 s: the first round after 3 s of silence
  t.equal(spy.calls.length, 1, "just past zombieAfterMs: the zombie strategy is called once");
  const call = spy.calls[0]!;
  t.equal(call.child.pid, pid);
  t.equal(call.child.component, "greeter");
  t.type(call.actions.kill, "function");
  t.type(call.actions.respawn, "function");
  t.same(h.kills, [{ pid, signal: "SIGKILL" }], "kill() SIGKILLs the child");
  t.ok(h.evicted.length >= 1 && h.evicted.every((c) => c === h.containerOf(pid)), "its lease ends at the agent");
  t.notOk(h.state.children.has(pid), "the killed child leaves the table of children once it exited");
  t.equal(h.comp.desired, 1, "respawn() keeps the slot wanted");
  t.equal(h.comp.restarts, 1);
  t.equal(h.comp.startFailures, 0, "a zombie kill is not a failed start");

  await h.clock.advance(250);
  t.equal(h.procs.length, 2, "the next round starts the replacement");
  t.not(h.procs[1]!.pid, pid);

  await h.clock.advance(10_000);
  t.equal(spy.calls.length, 1, "called once per zombie (the replacement, not yet registered, is not one)");
});

t.test("supervisor - a child that answers its pings is never a zombie", async (t) => {
  const h = harness(t, { answer: (pid) => pong(pid) });
  const spy = h.zombie;
  if (!(spy instanceof SpyZombie)) throw new Error("harness: expected the spy strategy");
  h.start();
  const pid = h.procs[0]!.pid;
  h.register(pid);

  for (let i = 0; i < 10; i++) await h.clock.advance(60_000);
  t.equal(spy.calls.length, 0, "10 minutes of answered pings: never a zombie");
  t.same(h.kills, []);
  const child = h.state.children.get(pid);
  t.equal(child?.phase, "ready");
  t.equal(child?.missedPongs, 0);
  t.ok(h.clock.now() - (child?.lastPongAt ?? 0) <= h.state.settings.pingMs, "its last pong is at most one ping period old");
  t.ok(h.pings.length >= 599, `pinged every second (${h.pings.length} pings)`);
  t.ok(h.pings.every((p) => p.timeoutMs === DEFAULT_SETTINGS.pingMs), "each ping waits at most one ping period");
  t.equal(h.procs.length, 1, "nothing was respawned");
});

t.test("supervisor - a pong from another process at the child's endpoint does not count", async (t) => {
  const h = harness(t, { answer: (pid) => pong(pid + 1) });
  const spy = h.zombie;
  if (!(spy instanceof SpyZombie)) throw new Error("harness: expected the spy strategy");
  h.start();
  const pid = h.procs[0]!.pid;
  h.register(pid);
  await h.clock.advance(2900);
  t.equal(spy.calls.length, 0);
  await h.clock.advance(350);
  t.equal(spy.calls.length, 1, "answered, but not by our child: a zombie");
  t.equal(spy.calls[0]!.child.pid, pid);
});

t.test("supervisor - a live setting change moves the zombie threshold", async (t) => {
  const h = harness(t, { settings: { zombieAfterMs: 6000 } });
  const spy = h.zombie;
  if (!(spy instanceof SpyZombie)) throw new Error("harness: expected the spy strategy");
  h.start();
  h.register(h.procs[0]!.pid);
  await h.clock.advance(5900);
  t.equal(spy.calls.length, 0, "5.9 s of a 6 s setting");
  await h.clock.advance(350);
  t.equal(spy.calls.length, 1);
});

t.test("supervisor - the built-in zombie strategy kills with SIGKILL and starts a replacement", async (t) => {
  const zombie = await defaultZombie.create({}, DEFAULT_SETTINGS);
  const h = harness(t, { zombie });
  h.start();
  const pid = h.procs[0]!.pid;
  h.register(pid);
  await h.clock.advance(2900);
  t.same(h.kills, []);
  await h.clock.advance(350);
  t.same(h.kills, [{ pid, signal: "SIGKILL" }]);
  await h.clock.advance(250);
  t.equal(h.procs.length, 2, "replaced");
  t.equal(h.comp.desired, 1);
});

t.test("supervisor - respawn off: a killed zombie's slot is given up", async (t) => {
  const zombie = await defaultZombie.create({ respawn: false }, DEFAULT_SETTINGS);
  const h = harness(t, { zombie });
  h.start();
  const pid = h.procs[0]!.pid;
  h.register(pid);
  await h.clock.advance(3250);
  t.same(h.kills, [{ pid, signal: "SIGKILL" }]);
  t.equal(h.comp.desired, 0, "desired count lowered");
  // The min (1) still holds: the next round clamps desired back up and starts one.
  await h.clock.advance(250);
  t.equal(h.comp.desired, 1);
  t.equal(h.procs.length, 2);
});

t.test("supervisor - a child that exits before registering is restarted after 500 ms, then 1 s, then 2 s", async (t) => {
  const h = harness(t);
  h.start();
  t.equal(h.procs.length, 1);

  h.procs[0]!.exit(1);
  t.equal(h.comp.startFailures, 1);
  t.notOk(h.state.children.has(h.procs[0]!.pid), "the exited child is gone");
  await h.clock.advance(499);
  t.equal(h.procs.length, 1, "not restarted within the 500 ms backoff");
  await h.clock.advance(1);
  t.equal(h.procs.length, 2, "restarted at 500 ms");

  h.procs[1]!.exit(1);
  t.equal(h.comp.startFailures, 2);
  await h.clock.advance(999);
  t.equal(h.procs.length, 2, "second failure: not within 1 s");
  await h.clock.advance(1);
  t.equal(h.procs.length, 3, "restarted at 1 s");

  h.procs[2]!.exit(1);
  await h.clock.advance(1999);
  t.equal(h.procs.length, 3, "third failure: not within 2 s");
  await h.clock.advance(1);
  t.equal(h.procs.length, 4, "restarted at 2 s");
  t.equal(h.comp.restarts, 3);
  t.notOk(h.comp.failed);
});

t.test("supervisor - five failed starts in a row mark the component failed, not restarted", async (t) => {
  const h = harness(t);
  h.start();
  for (const delay of [500, 1000, 2000, 4000]) {
    h.procs.at(-1)!.exit(1);
    await h.clock.advance(delay);
  }
  t.equal(h.procs.length, 5, "four restarts after backoff");
  h.procs.at(-1)!.exit(1);
  t.equal(h.comp.startFailures, 5);
  t.match(h.comp.failed, /failed to start 5 times in a row/);
  await h.clock.advance(120_000);
  t.equal(h.procs.length, 5, "a failed component is not restarted");
});

t.test("supervisor - a crash of a child that served 10 s is restarted after the base delay", async (t) => {
  const h = harness(t, { answer: (pid) => pong(pid) });
  h.start();
  const first = h.procs[0]!;
  first.exit(1);
  await h.clock.advance(500);
  t.equal(h.procs.length, 2);
  const second = h.procs[1]!;
  h.register(second.pid);
  await h.clock.advance(10_000);
  second.exit(1);
  t.equal(h.comp.startFailures, 0, "it proved the component starts: the failure count is reset");
  await h.clock.advance(499);
  t.equal(h.procs.length, 2);
  await h.clock.advance(1);
  t.equal(h.procs.length, 3, "restarted after 500 ms");
});

t.test("supervisor - a child that never registers is killed after startTimeoutMs", async (t) => {
  const h = harness(t, { settings: { startTimeoutMs: 5000 } });
  h.start();
  const pid = h.procs[0]!.pid;
  await h.clock.advance(5000);
  t.same(h.kills, [], "not before the start timeout");
  await h.clock.advance(1000); // the next ping round
  t.same(h.kills, [{ pid, signal: "SIGKILL" }]);
  t.notOk(h.state.children.has(pid));
  t.equal(h.comp.startFailures, 1, "counted as a failed start");
});

// ---------------------------------------------------------------- leases (issue 11, finding 4)

t.test("supervisor - a lease naming a child's pid must carry the container id the governor gave it at spawn", async (t) => {
  const h = harness(t, { answer: (pid) => pong(pid) });
  h.start();
  const pid = h.procs[0]!.pid;
  const container = h.containerOf(pid);
  t.match(container, /^greeter@host-a-[0-9a-f]{8}$/, "the governor named the child's container");
  t.equal(h.state.children.get(pid)?.container, container, "and knows it before the child registered");

  // Before the child registered: a made-up container claiming its pid.
  const early = h.supervisor.checkLease(lease("greeter@host-a-evil", pid, [{ id: "greeter-evil", endpoints: ["ipc:///tmp/attacker.sock"] }]));
  t.equal(early?.code, "PERMISSION_DENIED", "refused before the child registered");
  t.equal(h.state.children.get(pid)?.phase, "starting", "the child is still starting");

  h.register(pid);
  const child = h.state.children.get(pid)!;
  const record = () => ({ container: child.container, node: child.node, endpoint: child.endpoint, phase: child.phase });
  const before = record();
  t.equal(before.phase, "ready");

  const attackerNode = [{ id: `greeter-${pid}`, endpoints: ["ipc:///tmp/attacker.sock"] }];
  const refused = [
    h.supervisor.checkLease(lease("greeter@host-a-evil", pid, attackerNode)),
    h.supervisor.checkLease(lease("another@host-a-1", pid, [{ id: "other-1", endpoints: ["ipc:///tmp/a.sock"] }])),
    h.supervisor.checkLease(lease(container, 999_999, attackerNode)),
    h.supervisor.checkLease(lease("dev@host-a-1", 777, attackerNode)),
  ];
  t.same(
    refused.map((e) => e?.code),
    ["PERMISSION_DENIED", "PERMISSION_DENIED", "PERMISSION_DENIED", "PERMISSION_DENIED"],
    "the child's pid with another container, its container with another pid, its node from another container: all refused",
  );
  t.notMatch(refused[0]!.message, container, "the answer does not tell the asker the child's container id");
  t.equal(h.state.leasesRefused, 5, "each refusal counted");
  t.match(h.state.lastLeaseRefused, /container "dev@host-a-1" \(pid 777\)/);
  // Should the agent be asked to take one anyway, the child's record is not repointed.
  h.supervisor.onRegistered(pid, "greeter@host-a-evil", attackerNode);
  t.same(record(), before, "the child's record is unchanged");

  t.equal(h.supervisor.checkLease(lease(container, pid, [{ id: `greeter-${pid}`, endpoints: [child.endpoint!] }])), undefined, "the child's own renewal is taken");
  t.equal(h.supervisor.checkLease(lease("dev@host-a-2", 778, [{ id: "welcome-1", endpoints: ["ipc:///tmp/dev.sock"] }])), undefined, "a process that is no child, with its own nodes, may register");
  t.equal(h.state.leasesRefused, 5);

  await h.clock.advance(20_000);
  t.same(h.kills, [], "20 s of pings later the child was never taken for a zombie");
  t.equal(child.phase, "ready");
  t.ok(h.pings.every((p) => p.via === before.endpoint), "every ping went to the child's own endpoint");
});

t.test("supervisor - a lease with more than max-lease-nodes nodes is refused with RESOURCE_EXHAUSTED", async (t) => {
  const h = harness(t);
  const nodes = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `dev-${i}`, endpoints: [`ipc:///tmp/dev-${i}.sock`] }));
  t.equal(h.state.settings.maxLeaseNodes, 64, "64 by default");
  t.equal(h.supervisor.checkLease(lease("dev@host-a-1", 777, nodes(64))), undefined, "64 nodes are taken");
  const e = h.supervisor.checkLease(lease("dev@host-a-1", 777, nodes(65)));
  t.equal(e?.code, "RESOURCE_EXHAUSTED", "65 are not");
  t.match(e?.message, /at most 64 nodes/);
  h.config.set("max-lease-nodes", "", 4);
  t.equal(h.supervisor.checkLease(lease("dev@host-a-1", 777, nodes(5)))?.code, "RESOURCE_EXHAUSTED", "the bound changes live");
  t.equal(h.state.leasesRefused, 2);
});

t.test("supervisor - a recorded child that answers as another container is not adopted", async (t) => {
  const h = harness(t, { answer: (pid) => pong(pid) });
  const records = [5001, 5002].map((pid) => {
    h.procs.push(new FakeProcess(pid));
    const endpoint = `ipc:///tmp/recorded-${pid}.sock`;
    h.endpoints.set(endpoint, pid);
    return { pid, component: "greeter", hash: "code-1", endpoint, startedAt: 0, restarts: 0, log: "/dev/null" };
  });
  // pong() answers with container c-PID: the first record matches, the second names another.
  h.supervisor.childrenFile.write([
    { ...records[0]!, container: "c-5001" },
    { ...records[1]!, container: "greeter@host-a-recorded" },
  ]);
  await h.supervisor.adopt();
  t.same([...h.state.children.keys()], [5001], "only the child that answers as its recorded container is adopted");
  t.equal(h.state.children.get(5001)?.container, "c-5001");
});

// ---------------------------------------------------------- a full host (issue 11, finding 14)

/** A greeter grown to 2 (min 2 then back to 1: one node above its min) and a welcome at 1, on a host of capacity 3. */
async function fullHost(t: Test, options: HarnessOptions = {}) {
  const idle = new Map<number, number>();
  const h = harness(t, { capacity: 3, answer: (pid) => pong(pid, { idleMs: idle.get(pid) ?? 10 }), ...options });
  h.deploy.addComponentState("welcome", "w-1");
  h.start();
  t.equal(h.procs.length, 2, "greeter and welcome started");
  for (const p of h.procs) h.register(p.pid);
  h.config.set("min", "greeter", 2);
  await h.clock.advance(250);
  t.equal(h.procs.length, 3, "greeter grew to its new min");
  h.register(h.procs[2]!.pid);
  h.config.set("min", "greeter", 1);
  const [g1, w1, g2] = h.procs.map((p) => p.pid) as [number, number, number];
  t.equal(h.state.children.get(w1)?.component, "welcome");
  await h.clock.advance(1000); // a ping round: the idle times arrive with the pongs
  return { h, idle, g1, g2, w1 };
}

t.test("elastic - on a full host a new component takes the slot of the most idle node above its component's min", async (t) => {
  const { h, idle, g1, g2, w1 } = await fullHost(t);
  // welcome is the idlest of all, but at its min: no donor. Of greeter's two, g1 is the idler.
  idle.set(g1, 40_000).set(g2, 500).set(w1, 90_000);
  await h.clock.advance(1000);
  t.equal(h.state.used(), 3, "3/3 in use");

  h.deploy.onComponentsChanged([{ type: "added", name: "counter", hash: "k-1" }]);
  h.tick();
  const counter = h.state.components.get("counter")!;
  const victim = h.state.children.get(g1)!;
  t.equal(victim.ending, "drain", "the most idle node above its component's min drains (gracefully: Drain first)");
  t.equal(victim.makingRoomFor?.component, "counter");
  t.notOk(h.state.children.get(g2)!.ending, "greeter's busier node keeps serving");
  t.notOk(h.state.children.get(w1)!.ending, "welcome, at its min, is left alone");
  t.equal(h.state.components.get("greeter")!.desired, 1, "greeter is not grown back into the slot");
  t.equal(h.procs.length, 3, "counter waits for the drained node to exit: never more processes than the capacity");
  t.equal(h.state.used(), 3, "the draining node's slot is promised to counter");
  t.match(counter.waiting, new RegExp(`^waiting for capacity: 3/3 in use \\(greeter pid ${g1} drains to make room\\)$`), "status says why counter waits");

  await h.clock.advance(2500); // the drain's grace period (2 s), the SIGTERM, the exit, the next round
  t.notOk(h.state.children.has(g1), "the drained node exited");
  t.equal(h.procs.length, 4, "counter started in its slot");
  t.equal(h.state.children.get(h.procs[3]!.pid)?.component, "counter");
  t.equal(counter.waiting, undefined, "nothing waits any more");
  t.equal(h.state.used(), 3);
  t.same(
    h.kills.map((k) => [k.pid, k.signal]),
    [[g1, "SIGTERM"]],
    "only the victim was signalled, and with SIGTERM",
  );
});

t.test("elastic - a component with no node gets a free slot before another component's extra node", async (t) => {
  const seen: number[] = [];
  let grow = false;
  const lifecycle: LifecycleStrategy = {
    name: "grow-greeter",
    decide(host) {
      seen.push(host.used);
      return grow ? [{ action: "grow", component: "greeter", reason: "test" }] : [];
    },
  };
  const h = harness(t, { capacity: 3, lifecycle, answer: (pid) => pong(pid) });
  h.deploy.addComponentState("welcome", "w-1");
  h.start();
  for (const p of h.procs) h.register(p.pid);
  t.equal(h.state.used(), 2, "2/3 in use");

  // counter arrives while it is being written (its .deploying lock): it cannot start yet,
  // but the one free slot is held for it.
  mkdirSync(join(h.state.componentsDir, "counter", ".deploying"), { recursive: true });
  h.deploy.onComponentsChanged([{ type: "added", name: "counter", hash: "k-1" }]);
  grow = true;
  seen.length = 0;
  await h.clock.advance(1000);
  t.equal(h.procs.length, 2, "the strategy asked to grow greeter every round: refused, the slot is counter's");
  t.ok(seen.length >= 4 && seen.every((u) => u === 3), "strategies see the held slot as used (3/3)");
  t.equal(h.state.components.get("greeter")!.desired, 1);
  t.match(h.state.components.get("counter")!.waiting, /^waiting for the deploy lock/);

  // Both in one round: greeter's min rises (it wants a second node, and comes first in the
  // components' order) while counter's lock goes. counter gets the slot.
  grow = false;
  h.config.set("min", "greeter", 2);
  rmSync(join(h.state.componentsDir, "counter", ".deploying"), { recursive: true });
  h.tick();
  t.equal(h.procs.length, 3);
  t.equal(h.state.children.get(h.procs[2]!.pid)?.component, "counter", "the component with no node started first");
  t.match(h.state.components.get("greeter")!.waiting, /^waiting for capacity: 3\/3 in use$/, "greeter says why it waits");
});

t.test("elastic - with no component above its min, a component with no node waits and says why", async (t) => {
  const h = harness(t, { capacity: 2, answer: (pid) => pong(pid) });
  h.deploy.addComponentState("welcome", "w-1");
  h.deploy.addComponentState("counter", "k-1");
  h.start();
  t.equal(h.procs.length, 2, "two of three components started: capacity 2");
  for (const p of h.procs) h.register(p.pid);
  await h.clock.advance(5000);
  t.equal(h.procs.length, 2);
  t.same(h.kills, [], "nothing drained: every running component is at its min");
  t.match(h.state.components.get("counter")!.waiting, /^waiting for capacity: 2\/2 in use \(no component runs above its min/);

  h.config.set("capacity", "", 3);
  await h.clock.advance(250);
  t.equal(h.procs.length, 3, "a slot more: it starts");
  t.equal(h.state.components.get("counter")!.waiting, undefined);
});

t.test("elastic - a node draining to make room that does not exit gives its slot up after ROOM_WAIT_MS", async (t) => {
  const { h, idle, g1, g2 } = await fullHost(t, { ignoreTerm: true });
  idle.set(g1, 40_000).set(g2, 500);
  await h.clock.advance(1000);
  h.deploy.onComponentsChanged([{ type: "added", name: "counter", hash: "k-1" }]);
  h.tick();
  t.equal(h.state.children.get(g1)?.makingRoomFor?.component, "counter");
  await h.clock.advance(ROOM_WAIT_MS - 500);
  t.equal(h.procs.length, 3, "still waiting for it");
  await h.clock.advance(750);
  t.equal(h.procs.length, 4, "then counter starts anyway");
  t.equal(h.state.children.get(h.procs[3]!.pid)?.component, "counter");
});

// ------------------------------------------------------ rolls: the two-phase state hand-over

/** A control plane that records every call and answers by method (a thrown error is the answer). */
function controlPlane(answers: Record<string, (request: unknown, via: string) => unknown>) {
  const calls: { method: string; request: unknown; via: string }[] = [];
  const call = (async (method: { schema: { fullName: string } }, request: unknown, via: string) => {
    const name = method.schema.fullName.replace("nodebin.Control/", "");
    calls.push({ method: name, request, via });
    const answer = answers[name];
    if (!answer) throw new NodeBinError("UNIMPLEMENTED", `no ${name} in this test`);
    return answer(request, via);
  }) as ControlCall;
  return { calls, call };
}

/** A greeter serving on code-1, then changed to code-2: the roll starts its held successor, which registers. */
async function rolling(t: Test, answers: Record<string, (request: unknown, via: string) => unknown>) {
  const plane = controlPlane(answers);
  const h = harness(t, { call: plane.call, answer: (pid) => pong(pid) });
  h.start();
  const old = h.procs[0]!.pid;
  h.register(old);
  h.deploy.onComponentsChanged([{ type: "changed", name: "greeter", hash: "code-2" }]);
  h.tick();
  t.equal(h.procs.length, 2, "the roll started a new child");
  const fresh = h.procs[1]!.pid;
  t.ok(h.specs.get(fresh)?.args.includes("--hold"), "held for the state");
  h.register(fresh);
  await h.clock.advance(1000); // the roll lets the new node be seen before the old one drains
  await h.clock.advance(3000); // the hand-over, the grace period, the exits
  const endpointOf = (pid: number) => [...h.endpoints].find(([, p]) => p === pid)![0];
  const to = (pid: number) => plane.calls.filter((c) => c.via === endpointOf(pid)).map((c) => c.method);
  return { h, old, fresh, calls: plane.calls, to };
}

const SEALED = new Uint8Array([0x4e, 0x42, 0x53, 0x31, 7, 7, 7]);

t.test("roll - the new child takes the sealed state as the old one sent it; the old one is released, then stopped", async (t) => {
  let imported: Uint8Array | undefined;
  const r = await rolling(t, {
    Drain: () => ({ state: SEALED, handled: 3 }),
    ImportState: (request) => {
      imported = (request as { state: Uint8Array }).state;
      return {};
    },
    Release: () => ({}),
  });
  t.same(r.to(r.old), ["Drain", "Release"], "the old child: drained for its state, then released");
  t.same(r.to(r.fresh), ["ImportState"], "the new child: the state");
  t.same([...(imported ?? [])], [...SEALED], "the governor relayed the bytes untouched");
  t.same(r.h.kills, [{ pid: r.old, signal: "SIGTERM" }], "the old child is stopped (after its release), the new one is not");
  t.notOk(r.h.state.children.has(r.old), "the old child exited");
  t.equal(r.h.state.children.get(r.fresh)?.phase, "ready", "the new child serves");
  t.notOk(r.h.state.held.has(r.fresh));
  t.equal(r.h.comp.deployError, undefined);
});

t.test("roll - the new child refuses the state (UNAUTHENTICATED): the old one takes it back and serves, the new one is stopped, the error reported", async (t) => {
  const r = await rolling(t, {
    Drain: () => ({ state: SEALED, handled: 3 }),
    ImportState: () => {
      throw new NodeBinError("UNAUTHENTICATED", "state counter: the sealed payload does not authenticate");
    },
    Resume: () => ({}),
  });
  t.same(r.to(r.old), ["Drain", "Resume"], "the old child: drained, then told to resume (never released)");
  t.match((r.calls.find((c) => c.method === "Resume")?.request as { reason: string }).reason, /UNAUTHENTICATED/, "told why");
  t.same(r.h.kills, [{ pid: r.fresh, signal: "SIGTERM" }], "only the held new child is stopped");
  const old = r.h.state.children.get(r.old);
  t.equal(old?.phase, "ready", "the old child is ready again");
  t.equal(old?.ending, undefined, "and no longer ending");
  t.notOk(r.h.state.children.has(r.fresh), "the new child exited");
  t.match(r.h.comp.deployError, /state hand-over failed .*UNAUTHENTICATED.*; the old node keeps serving with its state/);
  t.equal(r.h.comp.badHash, "code-2", "that code is not rolled again until it changes");
  await r.h.clock.advance(2000);
  t.equal(r.h.procs.length, 2, "no new attempt is started");
});

t.test("roll - the old child cannot export its state (INTERNAL): it keeps it and serves, nothing is imported", async (t) => {
  const r = await rolling(t, {
    Drain: () => {
      throw new NodeBinError("INTERNAL", "greeter: exportState failed: store offline");
    },
    Resume: () => ({}),
  });
  t.same(r.to(r.old), ["Drain", "Resume"]);
  t.same(r.to(r.fresh), [], "nothing was sent to the new child");
  t.same(r.h.kills, [{ pid: r.fresh, signal: "SIGTERM" }]);
  t.equal(r.h.state.children.get(r.old)?.phase, "ready");
  t.match(r.h.comp.deployError, /did not hand its state over: INTERNAL/);
});

t.test("roll - an old child that is gone (neither Drain nor Resume answered): the new child starts with empty state", async (t) => {
  let imported: Uint8Array | undefined;
  const r = await rolling(t, {
    Drain: () => {
      throw new NodeBinError("UNAVAILABLE", "connection lost");
    },
    Resume: () => {
      throw new NodeBinError("UNAVAILABLE", "connection lost");
    },
    ImportState: (request) => {
      imported = (request as { state: Uint8Array }).state;
      return {};
    },
    Release: () => ({}),
  });
  t.same([...(imported ?? [1])], [], "an empty state was imported");
  t.equal(r.h.state.children.get(r.fresh)?.phase, "ready", "the new child serves");
  t.ok(r.h.kills.some((k) => k.pid === r.old && k.signal === "SIGTERM"), "the old child is stopped");
  t.notOk(r.h.kills.some((k) => k.pid === r.fresh), "the new one is not");
  t.equal(r.h.comp.deployError, undefined);
});
