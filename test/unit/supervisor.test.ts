import { EventEmitter } from "node:events";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { ElasticLoop } from "../../src/governor/elastic.ts";
import defaultZombie from "../../src/governor/plugins/zombie.ts";
import type { ProcessHandle, SupervisorPorts } from "../../src/governor/ports.ts";
import { RollingDeploy } from "../../src/governor/roll.ts";
import { DEFAULT_SETTINGS, GovernorConfig, type Settings } from "../../src/governor/settings.ts";
import { GovernorState, type ComponentState } from "../../src/governor/state.ts";
import type { ChildView, ZombieActions, ZombieStrategy } from "../../src/governor/strategy.ts";
import { Supervisor } from "../../src/governor/supervisor.ts";
import type { Logger } from "../../src/component/context.ts";
import { ManualClock } from "../../src/platform/clock.ts";
import type { PingReply } from "../../src/wire/control.ts";
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
  settings?: Partial<Settings>;
}

function harness(t: Test, options: HarnessOptions = {}) {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-supervisor-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const componentsDir = join(dir, "components");
  const stateDir = join(dir, "state");
  mkdirSync(componentsDir);
  mkdirSync(join(stateDir, "logs"), { recursive: true });

  const clock = new ManualClock();
  const state = new GovernorState({ clock, host: "host-a", componentsDir, capacity: 8 });
  state.log = quiet;
  const zombie = options.zombie ?? new SpyZombie();
  state.strategies = { logging: { name: "quiet", logger: () => quiet }, lifecycle: { name: "none", decide: () => [] }, zombie };
  const config = new GovernorConfig(state, { stateDir, capacity: 8, ...(options.settings ? { settings: options.settings } : {}) });
  config.readConfig(true);

  const procs: FakeProcess[] = [];
  const kills: { pid: number; signal: NodeJS.Signals }[] = [];
  const pings: { via: string; timeoutMs: number }[] = [];
  const evicted: string[] = [];
  /** The endpoint each registered child answers at. */
  const endpoints = new Map<string, number>();
  const answer = options.answer ?? (() => undefined);
  let nextPid = 4000;

  const ports: SupervisorPorts = {
    call: () => Promise.reject(new NodeBinError("UNAVAILABLE", "no control plane in this test")),
    ping(via, timeoutMs) {
      pings.push({ via, timeoutMs });
      const pid = endpoints.get(via);
      const reply = pid === undefined ? undefined : answer(pid);
      if (reply) return Promise.resolve(reply);
      return clock.sleep(timeoutMs).then(() => {
        throw new NodeBinError("DEADLINE_EXCEEDED", `ping ${via}: no answer in ${timeoutMs} ms`);
      });
    },
    spawn() {
      const p = new FakeProcess(nextPid++);
      procs.push(p);
      return p;
    },
    kill(pid, signal) {
      kills.push({ pid, signal });
      const p = procs.find((x) => x.pid === pid);
      if (!p?.alive) throw new Error("ESRCH");
      // Like a real process, it exits after the signal, not inside kill().
      queueMicrotask(() => p.exit(null, signal));
    },
    pidAlive: (pid) => procs.some((p) => p.pid === pid && p.alive),
    evict: (container) => evicted.push(container),
  };

  const supervisor = new Supervisor(
    state,
    { componentsDir, socket: `ipc://${join(dir, "governor.sock")}`, discoveryPort: 7400, host: "host-a", bind: "127.0.0.1", advertise: "127.0.0.1", network: "", seeds: [], runtimeDir: dir, stateDir },
    ports,
  );
  const deploy = new RollingDeploy(state, config, supervisor, ports.call);
  const loop = new ElasticLoop(state, config, supervisor, deploy, { entries: () => [], send: () => {} });
  const comp: ComponentState = deploy.addComponentState("greeter", "code-1");
  t.teardown(() => {
    loop.stop();
    supervisor.stopPings();
  });

  return {
    clock,
    state,
    comp,
    procs,
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
    /** The host agent saw child `pid` register its node. */
    register(pid: number) {
      const endpoint = `ipc://${join(dir, `greeter-${pid}.sock`)}`;
      endpoints.set(endpoint, pid);
      supervisor.onRegistered(pid, `c-${pid}`, [{ id: `greeter-${pid}`, endpoints: [endpoint] }]);
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
  t.ok(h.evicted.length >= 1 && h.evicted.every((c) => c === `c-${pid}`), "its lease ends at the agent");
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
