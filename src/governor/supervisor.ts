/**
 * Supervision of the governor's children: spawning them, their exits (a
 * crash is restarted by the elastic loop after an exponential backoff; a
 * component that keeps failing at start is marked failed with its last
 * error), pinging them, finding zombies (a child silent past zombieAfterMs;
 * the zombie strategy decides what happens), killing and draining them,
 * adopting the live children a previous governor recorded, and keeping that
 * record (the children file) current. It also judges the leases the host
 * agent is asked for (checkLease): a child's pid comes with its container id.
 *
 * Every side effect (control calls, spawning, signals, the host agent) comes
 * in through SupervisorPorts, and all time through the state's clock.
 */
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { join } from "node:path";
import type { Timer } from "../platform/clock.ts";
import { DRAIN, PULL, RELEASE, RESUME, type RegisterRequest } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import { ChildrenFile, lastError, type ChildRecord } from "./children.ts";
import type { ProcessHandle, SupervisorPorts } from "./ports.ts";
import { viewOf, type Child, type ComponentState, type GovernorState } from "./state.ts";
import type { ZombieActions } from "./strategy.ts";

/** Consecutive failed starts after which a component is marked failed (until its code changes). */
const MAX_START_FAILURES = 5;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** A child up this long proves the component starts: its crash counter resets. */
const STABLE_MS = 10_000;
/** How long a drained child lingers before it is told to exit: a renewal period plus a client's refresh period. */
const DRAIN_GRACE_MS = 2000;

/** An adopted child's lease, handed to the host agent until the child renews it itself. */
export type AdoptedLease = RegisterRequest;

/** What a child is started with (the governor's own options, passed on). */
export interface SpawnConfig {
  componentsDir: string;
  /** The governor's socket (children register and ask for capacity there). */
  socket: string;
  discoveryPort: number;
  host: string;
  /** The governor's bind and advertised addresses: its children bind and advertise the same. */
  bind: string;
  advertise: string;
  /** Arguments that give a child the governor's security (--cluster-key FILE, or --insecure), after --listen. */
  securityArgs: string[];
  /** More arguments for every child: what the governor's plugins need of it (the metrics plugin's --metrics-calls). */
  extraArgs?: string[];
  network: string;
  seeds: string[];
  runtimeDir: string;
  /** The governor's state directory: the children file and the children's logs (in logs/). */
  stateDir: string;
  /** How to start a child (default: this program again). */
  command?: { command: string; args: string[] };
}

export class Supervisor {
  /** The record of the children, for a later governor to adopt. */
  readonly childrenFile: ChildrenFile;
  private pingTimer: Timer | undefined;

  constructor(
    private readonly state: GovernorState,
    private readonly config: SpawnConfig,
    private readonly ports: SupervisorPorts,
  ) {
    this.childrenFile = new ChildrenFile(join(config.stateDir, "children.json"));
  }

  /**
   * Judges a Register before the host agent takes it (AgentOptions.checkLease).
   * Anything on this host that can open the private runtime directory may
   * register, and what it says of itself is all the agent has: so a lease
   * that names one of this governor's children (its pid, its container id or
   * its node) must name all three consistently, or it would repoint the
   * child's record (its pings then go to a stranger, and the healthy child is
   * killed as a zombie) or hijack its node's entry. The child's container id
   * is the one the governor gave it at spawn (or recorded for an adopted
   * child). A lease naming no child (`node-bin dev`, a hand-started
   * container) is taken, up to maxLeaseNodes nodes.
   */
  checkLease(request: RegisterRequest): NodeBinError | undefined {
    const refused = this.leaseProblem(request);
    if (refused) {
      this.state.leasesRefused++;
      this.state.lastLeaseRefused = `container ${JSON.stringify(request.container)} (pid ${request.pid}): ${refused.message}`;
    }
    return refused;
  }

  private leaseProblem(request: RegisterRequest): NodeBinError | undefined {
    const { state } = this;
    const limit = state.settings.maxLeaseNodes;
    if (request.nodes.length > limit) {
      return new NodeBinError("RESOURCE_EXHAUSTED", `a lease may hold at most ${limit} nodes (max-lease-nodes), got ${request.nodes.length}`, {
        details: { limit: String(limit), nodes: String(request.nodes.length) },
      });
    }
    // The child's own container id stays out of the answers: it would tell the asker what to claim.
    const denied = (why: string) => new NodeBinError("PERMISSION_DENIED", why, { details: { pid: String(request.pid), container: request.container } });
    const byPid = state.children.get(request.pid);
    // A child with no container id yet (only a child spawned by an older governor and adopted
    // without a record of it) is bound to the first one it registers with (onRegistered).
    if (byPid?.container !== undefined && byPid.container !== request.container) {
      return denied(`pid ${request.pid} is the governor's ${byPid.component} child, which is another container`);
    }
    for (const child of state.children.values()) {
      if (child === byPid) continue;
      if (child.container === request.container) return denied(`container ${JSON.stringify(request.container)} is the governor's ${child.component} child, which is not pid ${request.pid}`);
      if (child.node !== undefined && request.nodes.some((n) => n.id === child.node)) return denied(`node ${child.node} is the governor's ${child.component} child's (pid ${child.pid}), which is another container`);
    }
    return undefined;
  }

  /** The host agent saw a container register: if it is a child, it now serves. */
  onRegistered(pid: number, container: string, nodes: { id: string; endpoints: string[] }[]): void {
    const { state } = this;
    const child = state.children.get(pid);
    if (!child || !nodes.length) return;
    // checkLease refused any other container for this pid already; this keeps the record safe
    // should the agent ever be asked without it.
    if (child.container !== undefined && child.container !== container) return;
    child.container = container;
    child.node = nodes[0]!.id;
    child.endpoint = nodes[0]!.endpoints.find((e) => e.startsWith("ipc://")) ?? nodes[0]!.endpoints[0];
    if (child.phase === "starting") {
      child.phase = state.held.has(child.pid) ? "holding" : "ready";
      child.readyAt = state.clock.now();
      child.lastPongAt = child.readyAt;
      state.log.info(`${child.component} pid ${child.pid} serves as ${child.node} (${child.readyAt - child.startedAt} ms after spawn)`);
      for (const w of child.waiters.splice(0)) w(true);
      this.saveChildren();
    }
  }

  /** Starts one child of a component; resolves once it registered (true) or died first (false). */
  spawn(comp: ComponentState, options: { hold?: boolean; restarts?: number } = {}): { child: Child; ready: Promise<boolean> } | undefined {
    const { state, config: o } = this;
    // The governor names the container, so that it knows which lease is its child's before the
    // child registers (checkLease): a stranger claiming the child's pid cannot take its record.
    const container = `${comp.name}@${o.host}-${randomBytes(4).toString("hex")}`;
    const args = [
      "--component",
      comp.name,
      "--id",
      container,
      "--components",
      // Fetched code (code-share.ts) lives in a components directory of its own.
      comp.fetched?.root ?? o.componentsDir,
      "--governor",
      o.socket,
      "--discovery-port",
      String(o.discoveryPort),
      "--host",
      o.host,
      "--listen",
      o.bind,
      ...o.securityArgs,
      "--advertise",
      o.advertise,
      ...(o.network ? ["--network", o.network] : []),
      ...o.seeds.flatMap((s) => ["--seed", s.replace(/^tcp:\/\//, "")]),
      ...(options.hold ? ["--hold"] : []),
      ...(o.extraArgs ?? []),
    ];
    const logFile = join(o.stateDir, "logs", `${comp.name}.log`);
    let proc: ProcessHandle;
    try {
      proc = this.ports.spawn({ component: comp.name, args, env: { ...process.env, NODEBIN_RUNTIME_DIR: o.runtimeDir }, logFile, ...(o.command ? { command: o.command } : {}) });
    } catch (err) {
      state.log.error(`cannot start ${comp.name}: ${(err as Error).message}`);
      return undefined;
    }
    if (!proc.pid) {
      state.log.error(`cannot start ${comp.name}: spawn gave no pid`);
      proc.on("error", () => {});
      return undefined;
    }
    const child: Child = {
      pid: proc.pid,
      component: comp.name,
      hash: comp.hash,
      phase: "starting",
      startedAt: state.clock.now(),
      readyAt: 0,
      lastPongAt: 0,
      missedPongs: 0,
      pongs: 0,
      restarts: options.restarts ?? 0,
      log: logFile,
      proc,
      container,
      waiters: [],
    };
    if (options.hold) state.held.add(child.pid);
    proc.on("error", (err) => state.log.warn(`${comp.name} pid ${child.pid}: ${err.message}`));
    proc.on("exit", (code, signal) => this.onExit(child, code, signal));
    state.children.set(child.pid, child);
    const ready = new Promise<boolean>((resolve) => child.waiters.push(resolve));
    state.log.info(`starting ${comp.name} (pid ${child.pid}${options.hold ? ", held for state" : ""})`);
    this.saveChildren();
    return { child, ready };
  }

  private onExit(child: Child, code: number | null, signal: NodeJS.Signals | null): void {
    const { state } = this;
    if (state.children.get(child.pid) !== child) return;
    state.children.delete(child.pid);
    state.held.delete(child.pid);
    if (child.container) this.ports.evict(child.container, `pid ${child.pid} exited`);
    // A killed child leaves its ipc socket file behind: remove it, so that a
    // caller whose table still names the node is refused at once (unhandled,
    // re-routed) instead of queueing for a listener that will never return.
    if (child.endpoint?.startsWith("ipc://")) rmSync(child.endpoint.slice("ipc://".length), { force: true });
    for (const w of child.waiters.splice(0)) w(false);
    this.saveChildren();
    const comp = state.components.get(child.component);
    const how = signal ? `signal ${signal}` : `code ${code}`;
    if (child.ending || state.stopping) {
      state.log.debug(`${child.component} pid ${child.pid} ended (${child.ending ?? "stop"}, ${how})`);
      return;
    }
    if (!comp) return;
    const error = lastError(child.log);
    const startedOk = child.readyAt > 0;
    const now = state.clock.now();
    if (startedOk && now - child.readyAt >= STABLE_MS) comp.startFailures = 0;
    else comp.startFailures++;
    comp.restarts++;
    const delay = Math.min(BACKOFF_BASE_MS * 2 ** Math.max(0, comp.startFailures - 1), BACKOFF_MAX_MS);
    comp.backoffUntil = now + delay;
    if (!startedOk && comp.startFailures >= MAX_START_FAILURES) {
      comp.failed = `failed to start ${comp.startFailures} times in a row; last: ${error ?? how}`;
      state.log.error(`${comp.name} is failed (not restarted until its code changes): ${comp.failed}`);
      return;
    }
    state.log.warn(`${child.component} pid ${child.pid} ${startedOk ? "crashed" : "failed to start"} (${how})${error ? `: ${error}` : ""}; restarting in ${delay} ms`);
  }

  /** Pings every registered child every pingMs (read live); silence past zombieAfterMs makes it a zombie. */
  startPings(): void {
    this.pingTimer = this.state.clock.after(this.state.settings.pingMs, () => {
      this.pingAll();
      if (!this.state.stopping) this.startPings();
    });
  }

  stopPings(): void {
    this.pingTimer?.cancel();
  }

  private pingAll(): void {
    const { state } = this;
    const now = state.clock.now();
    for (const child of state.children.values()) {
      if (child.phase === "starting") {
        if (now - child.startedAt > state.settings.startTimeoutMs && !child.ending) {
          state.log.warn(`${child.component} pid ${child.pid} did not register within ${state.settings.startTimeoutMs} ms: killing it`);
          this.kill(child, "SIGKILL");
        }
        continue;
      }
      if (!child.endpoint || child.pinging) {
        this.checkZombie(child, now);
        continue;
      }
      child.pinging = true;
      this.ports
        .ping(child.endpoint, state.settings.pingMs)
        .then(
          (r) => {
            if (r.pid !== child.pid) return; // another process behind that endpoint: not our child
            child.lastPongAt = state.clock.now();
            child.missedPongs = 0;
            child.pongs++;
            child.stats = r;
            const comp = state.components.get(child.component);
            if (comp && r.max > 0) comp.manifest = { min: r.min, max: r.max };
          },
          () => {
            child.missedPongs++;
          },
        )
        .finally(() => {
          child.pinging = false;
          this.checkZombie(child, state.clock.now());
        });
    }
  }

  /** Judges the silence of every child now (the elastic loop does, every round). */
  checkZombies(now: number): void {
    for (const child of [...this.state.children.values()]) this.checkZombie(child, now);
  }

  private checkZombie(child: Child, now: number): void {
    const { state } = this;
    // An adopted child has no exit event: a vanished pid is its exit (a drained one's too, or it
    // would stay listed as draining, and a slot it was making room with would never come free).
    if (!child.proc && !this.ports.pidAlive(child.pid)) {
      this.onExit(child, null, null);
      return;
    }
    if (child.zombie || child.ending || child.phase === "starting") return;
    const silentMs = now - (child.lastPongAt || child.readyAt || child.startedAt);
    if (silentMs <= state.settings.zombieAfterMs) return;
    child.zombie = true;
    const view = viewOf(child, now);
    const comp = state.components.get(child.component);
    if (comp) comp.zombies = (comp.zombies ?? 0) + 1;
    let respawned = false;
    const actions: ZombieActions = {
      kill: () => {
        child.ending = "zombie";
        this.kill(child, "SIGKILL");
      },
      respawn: () => {
        // The slot stays wanted: reconcile starts the replacement (the desired count is unchanged).
        respawned = true;
        if (comp) comp.restarts++;
      },
      log: state.logger(`governor/${child.component}`),
    };
    Promise.resolve()
      .then(() => state.strategies.zombie.onZombie(view, actions))
      .catch((err) => state.log.error(`zombie strategy failed for pid ${child.pid}: ${(err as Error).message}`))
      .finally(() => {
        if (!respawned && comp && child.ending === "zombie") comp.desired = Math.max(0, comp.desired - 1);
      });
  }

  /** Signals a child; SIGKILL also takes its nodes out of the table at once. */
  kill(child: Child, signal: NodeJS.Signals): void {
    try {
      this.ports.kill(child.pid, signal);
    } catch {
      // gone already
    }
    if (signal === "SIGKILL" && child.container) this.ports.evict(child.container, `pid ${child.pid} killed`);
    if (signal === "SIGKILL" && !child.proc) {
      // Adopted: no exit event will come.
      this.state.clock.after(100, () => {
        if (!this.ports.pidAlive(child.pid)) this.onExit(child, null, signal);
      });
    }
  }

  /**
   * Drains a child: out of the table, queue finished; with `exportState`,
   * resolves with its state. It is told to exit (SIGTERM) a grace period later.
   */
  async drain(child: Child, exportState: boolean): Promise<Uint8Array | undefined> {
    child.ending = "drain";
    child.phase = "draining";
    let state: Uint8Array | undefined;
    if (child.endpoint) {
      try {
        const reply = await this.ports.call(DRAIN, { exportState }, child.endpoint, 60_000);
        state = reply.state;
      } catch (err) {
        this.state.log.warn(`${child.component} pid ${child.pid} did not drain cleanly: ${NodeBinError.from(err)}`);
      }
      // Drained, it still answers "unhandled" (callers re-route) while the
      // tables elsewhere catch up with its departure; a process that exited at
      // once would leave callers with stale tables sending into the void.
      this.state.clock.after(DRAIN_GRACE_MS, () => this.kill(child, "SIGTERM"));
    } else {
      this.kill(child, "SIGTERM");
    }
    return state;
  }

  /**
   * The first phase of a hand-over (roll.ts): drains a child for its state and
   * resolves with it, sealed by the child (empty: it had none). Unlike
   * drain(), the child is not told to exit: it waits, its state intact, for
   * release() or takeBack(). Rejects with why it did not hand over (its
   * coded answer, or no answer).
   */
  async handOver(child: Child): Promise<Uint8Array> {
    child.ending = "drain";
    child.phase = "draining";
    if (!child.endpoint) throw new NodeBinError("UNAVAILABLE", `${child.component} pid ${child.pid} has no endpoint to drain`);
    const reply = await this.ports.call(DRAIN, { exportState: true }, child.endpoint, 60_000);
    return reply.state;
  }

  /**
   * The hand-over happened: the child shuts its node down and is told to
   * exit (SIGTERM) a grace period later, as after a drain. A child that took
   * its state back meanwhile (its own timeout) is stopped all the same: its
   * successor serves the state now.
   */
  async release(child: Child): Promise<void> {
    if (child.endpoint && this.state.children.get(child.pid) === child) {
      try {
        await this.ports.call(RELEASE, {}, child.endpoint, 10_000);
      } catch (err) {
        this.state.log.warn(`${child.component} pid ${child.pid} was not released cleanly: ${NodeBinError.from(err)}`);
      }
    }
    this.state.clock.after(DRAIN_GRACE_MS, () => this.kill(child, "SIGTERM"));
  }

  /**
   * The hand-over did not happen: the child takes its state back and serves
   * again, no longer ending. Rejects when it cannot be told (gone, or silent).
   */
  async takeBack(child: Child, reason: string): Promise<void> {
    if (!child.endpoint) throw new NodeBinError("UNAVAILABLE", `${child.component} pid ${child.pid} has no endpoint`);
    await this.ports.call(RESUME, { reason }, child.endpoint, 10_000);
    child.ending = undefined;
    child.phase = "ready";
  }

  /** Resolves once the child exited (SIGKILL after `ms`). */
  async awaitExit(child: Child, ms: number): Promise<void> {
    const { state } = this;
    const { clock } = state;
    const deadline = clock.now() + ms;
    while (state.children.get(child.pid) === child && (child.proc ? child.proc.exitCode === null && child.proc.signalCode === null : this.ports.pidAlive(child.pid))) {
      if (clock.now() > deadline) {
        this.kill(child, "SIGKILL");
        await clock.sleep(100);
        break;
      }
      await clock.sleep(50);
    }
    if (!child.proc && state.children.get(child.pid) === child) this.onExit(child, null, null);
  }

  /** Stops every child (SIGTERM, SIGKILL after 15 s) and deletes the children file: a full stop. */
  async stopAll(): Promise<void> {
    const kids = [...this.state.children.values()];
    for (const k of kids) {
      k.ending ??= "stop";
      this.kill(k, "SIGTERM");
    }
    await Promise.all(kids.map((k) => this.awaitExit(k, 15_000)));
    rmSync(this.childrenFile.path, { force: true });
  }

  /** Re-adopts the live children a previous governor recorded: pinged, they answer with their pid. */
  async adopt(): Promise<AdoptedLease[]> {
    const { state } = this;
    const records = this.childrenFile.read();
    const leases: AdoptedLease[] = [];
    await Promise.all(
      records.map(async (r) => {
        if (!r.endpoint || !this.ports.pidAlive(r.pid)) return;
        try {
          const reply = await this.ports.ping(r.endpoint, 1500);
          if (reply.pid !== r.pid) return;
          // The record says which container this pid is (the governor named it at spawn): a
          // process answering with another id is not the child that was recorded.
          if (r.container !== undefined && reply.container !== r.container) {
            state.log.warn(`recorded child ${r.component} pid ${r.pid} answers as container ${JSON.stringify(reply.container)}, recorded as ${JSON.stringify(r.container)}: not adopted (left alone)`);
            return;
          }
          const now = state.clock.now();
          state.children.set(r.pid, {
            pid: r.pid,
            component: r.component,
            hash: r.hash,
            phase: reply.phase === "draining" ? "draining" : "ready",
            startedAt: r.startedAt,
            readyAt: now,
            lastPongAt: now,
            missedPongs: 0,
            pongs: 1,
            restarts: r.restarts,
            log: r.log,
            container: reply.container,
            endpoint: r.endpoint,
            node: reply.node,
            stats: reply,
            waiters: [],
            ...(reply.phase === "draining" ? { ending: "drain" as const } : {}),
          });
          state.log.info(`adopted ${r.component} pid ${r.pid} (${reply.node})`);
          // Its node entry (with schema), from its own table, as a lease until it renews with us.
          try {
            const pulled = await this.ports.call(PULL, { knownVersion: 0 }, r.endpoint, 1500);
            const nodes = pulled.nodes.filter((n) => n.id === reply.node);
            for (const n of nodes) n.load ??= { queued: 0, capacity: 0 };
            const schemas = pulled.schemas.filter((x) => nodes.some((n) => n.schema === x.id));
            if (nodes.length) leases.push({ container: reply.container, pid: r.pid, nodes, schemas, leaseMs: 3000, seeds: [] });
          } catch {
            // It registers itself within a renewal period anyway.
          }
        } catch {
          state.log.warn(`recorded child ${r.component} pid ${r.pid} does not answer at ${r.endpoint}: not adopted (left alone)`);
        }
      }),
    );
    this.saveChildren();
    return leases;
  }

  /** Records the children in the children file (not during a full stop: that deletes it). */
  saveChildren(): void {
    if (this.state.stopping && !this.state.keepChildren) return;
    const records: ChildRecord[] = [...this.state.children.values()].map((c) => ({
      pid: c.pid,
      component: c.component,
      hash: c.hash,
      ...(c.container ? { container: c.container } : {}),
      ...(c.endpoint ? { endpoint: c.endpoint } : {}),
      startedAt: c.startedAt,
      restarts: c.restarts,
      log: c.log,
    }));
    try {
      this.childrenFile.write(records);
    } catch (err) {
      this.state.log.warn(`cannot record children in ${this.childrenFile.path}: ${(err as Error).message}`);
    }
  }
}
