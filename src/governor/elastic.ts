/**
 * The governor's elastic loop: one round every 250 ms re-reads the config
 * file, judges the children's silence, starts rolls, brings each component's
 * live child count to its desired count (reconcile: within the host's
 * capacity, after a crash's backoff) and asks the lifecycle strategy to move
 * the desired counts (elasticity). It also takes the network's capacity
 * requests: grown here when this host has room, else passed to another host.
 *
 * The model: each component has a `desired` node count, kept within
 * [min, max] and the host's capacity; reconcile() starts or drains children
 * until the live count matches it. Strategies move `desired`; crashes do not
 * (so a crashed child is replaced).
 *
 * A component with no node comes before any component's extra node: a slot
 * it will need is held for it (growth cannot take it), it is started first,
 * and on a full host the most idle node above its component's min drains to
 * make room for it (the slot stays promised to it until that node exited).
 * Why a component runs fewer nodes than it wants is kept for the status.
 */
import type { Timer } from "../platform/clock.ts";
import { REQUEST_CAPACITY, type CapacityRequest } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import type { CapacityPeers } from "./ports.ts";
import type { RollingDeploy } from "./roll.ts";
import type { GovernorConfig } from "./settings.ts";
import { viewOf, type Child, type ComponentState, type GovernorState } from "./state.ts";
import type { ComponentView } from "./strategy.ts";
import type { Supervisor } from "./supervisor.ts";

const TICK_MS = 250;
/**
 * Longest a component with no node waits for the node draining to make room
 * for it: a node slow to finish its queue (or one that will not exit) must not
 * keep it from starting. Past it, the slot is taken anyway.
 */
export const ROOM_WAIT_MS = 30_000;

export class ElasticLoop {
  private timer: Timer | undefined;

  constructor(
    private readonly state: GovernorState,
    private readonly config: GovernorConfig,
    private readonly supervisor: Supervisor,
    private readonly deploy: RollingDeploy,
    private readonly peers: CapacityPeers,
  ) {}

  /** Runs a round every 250 ms from now on (the first one 250 ms from now: call tick() for one at once). */
  start(): void {
    this.timer = this.state.clock.every(TICK_MS, () => this.tick());
  }

  stop(): void {
    this.timer?.cancel();
  }

  /** One round (never throws: a failed round is logged, the next one runs). */
  tick(): void {
    const { state } = this;
    if (state.stopping) return;
    try {
      this.config.readConfig(false);
      // Silence is judged every round, not only when a ping returns: a zombie is
      // found within zombieAfterMs + one round of its last pong.
      this.supervisor.checkZombies(state.clock.now());
      this.deploy.rollChanged();
      this.reconcile();
      this.elasticity();
    } catch (err) {
      state.log.error(`governor round failed: ${(err as Error).stack ?? err}`);
    }
  }

  /** Brings each component's live child count to its desired count, within capacity. */
  private reconcile(): void {
    const { state, config } = this;
    const now = state.clock.now();
    const liveOf = (c: ComponentState) => this.liveOf(c);
    // Capacity lowered below what runs: the surplus drains, most idle first.
    // The host limit is hard: it wins over components' mins (first from
    // components above their min, then from the largest), but it never takes
    // a component's last node.
    let surplus = state.live().length - state.capacity;
    while (surplus > 0) {
      const candidates = [...state.components.values()].filter((c) => !c.rolling && liveOf(c) > 1);
      const comp = candidates.sort((a, b) => liveOf(b) - config.limits(b).min - (liveOf(a) - config.limits(a).min) || liveOf(b) - liveOf(a))[0];
      if (!comp) break;
      if (liveOf(comp) <= config.limits(comp).min) state.log.warn(`host capacity ${state.capacity} is below the components' minimums: ${comp.name} runs below its min ${config.limits(comp).min}`);
      comp.desired = liveOf(comp) - 1;
      const victim = this.mostIdle(comp.name);
      if (!victim) break;
      state.log.info(`host capacity ${state.capacity} is below ${state.live().length} running: draining ${victim.component} pid ${victim.pid}`);
      void this.supervisor.drain(victim, false);
      surplus--;
    }
    for (const comp of state.components.values()) {
      if (comp.rolling || comp.removed) continue;
      const { min, max } = config.limits(comp);
      comp.desired = Math.min(Math.max(comp.desired, min), max);
      const live = liveOf(comp);
      if (live > comp.desired) {
        const victim = this.mostIdle(comp.name);
        if (victim) {
          state.log.info(`${comp.name}: ${live} running, ${comp.desired} wanted (max ${max}): draining pid ${victim.pid}`);
          void this.supervisor.drain(victim, false);
        }
      }
    }
    this.releaseRoom(now);
    // Starts: components with no node first (stable otherwise), so that a free slot goes to a
    // component that cannot serve at all before one that would only serve more.
    const order = [...state.components.values()].filter((c) => !c.rolling && !c.removed);
    order.sort((a, b) => Number(liveOf(a) > 0) - Number(liveOf(b) > 0));
    for (const comp of order) {
      comp.waiting = undefined;
      const live = liveOf(comp);
      if (live >= comp.desired || comp.failed || comp.hash === comp.badHash) continue;
      if (now < comp.backoffUntil) {
        comp.waiting = `waiting to restart: ${comp.backoffUntil - now} ms of crash backoff left`;
        continue;
      }
      if (state.locked(comp.name)) {
        comp.waiting = "waiting for the deploy lock to go";
        continue;
      }
      // One start at a time per component after a failure; all at once while healthy.
      const starting = state.childrenOf(comp.name).filter((c) => !c.ending && c.phase === "starting").length;
      if (comp.startFailures > 0 && starting > 0) continue;
      if (live === 0) {
        const promised = [...state.children.values()].find((c) => c.makingRoomFor?.component === comp.name);
        if (promised) {
          comp.waiting = `waiting for capacity: ${state.used()}/${state.capacity} in use (${promised.component} pid ${promised.pid} drains to make room)`;
          continue;
        }
        if (state.used() >= state.capacity) {
          const victim = this.makeRoom(comp, now);
          comp.waiting = victim
            ? `waiting for capacity: ${state.used()}/${state.capacity} in use (${victim.component} pid ${victim.pid} drains to make room)`
            : `waiting for capacity: ${state.used()}/${state.capacity} in use (no component runs above its min to take a node from: raise the capacity or lower a min)`;
          continue;
        }
      } else if (state.used() + this.heldSlots() >= state.capacity) {
        const held = this.heldSlots();
        comp.waiting = `waiting for capacity: ${state.used()}/${state.capacity} in use${held ? ` (${held} held for components with no node)` : ""}`;
        continue;
      }
      this.supervisor.spawn(comp, { restarts: comp.restarts });
    }
  }

  /**
   * The components with no node that will want one (not failed, not removed,
   * not a roll's and not code that failed to start), but `except`: a slot is
   * held for each, which growth may not take.
   */
  private heldSlots(except?: ComponentState): number {
    const { state } = this;
    let n = 0;
    for (const c of state.components.values()) {
      if (c === except || c.removed || c.failed || c.rolling || c.hash === c.badHash) continue;
      if (this.liveOf(c) > 0) continue;
      // Its slot is counted in used() already while a node drains to make room for it.
      if ([...state.children.values()].some((x) => x.makingRoomFor?.component === c.name)) continue;
      n++;
    }
    return n;
  }

  /**
   * The host is full and `comp` has no node: drains the most idle node of the
   * components running above their min (a starting one first: it serves
   * nobody yet), gracefully (it finishes its queue). Its slot is promised to
   * `comp` until it exited. Undefined when no component runs above its min.
   */
  private makeRoom(comp: ComponentState, now: number): Child | undefined {
    const { state, config } = this;
    const donors = [...state.components.values()].filter((c) => c !== comp && !c.rolling && !c.removed && this.liveOf(c) > config.limits(c).min);
    let victim: Child | undefined;
    for (const d of donors) {
      const candidate = this.mostIdle(d.name);
      if (candidate && (!victim || rank(candidate) > rank(victim))) victim = candidate;
    }
    if (!victim) return undefined;
    const donor = state.components.get(victim.component)!;
    donor.desired = this.liveOf(donor) - 1;
    victim.makingRoomFor = { component: comp.name, since: now };
    state.log.info(`host full (${state.used()}/${state.capacity}): draining ${victim.component} pid ${victim.pid} to make room for ${comp.name}, which has no node`);
    void this.supervisor.drain(victim, false);
    return victim;
  }

  /** A node draining to make room that has not exited within ROOM_WAIT_MS gives its slot up anyway. */
  private releaseRoom(now: number): void {
    for (const c of this.state.children.values()) {
      if (!c.makingRoomFor || now - c.makingRoomFor.since < ROOM_WAIT_MS) continue;
      this.state.log.warn(`${c.component} pid ${c.pid}, draining to make room for ${c.makingRoomFor.component}, has not exited after ${ROOM_WAIT_MS} ms: its slot is taken anyway`);
      c.makingRoomFor = undefined;
    }
  }

  /** Its children not on their way out. */
  private liveOf(comp: ComponentState): number {
    return this.state.childrenOf(comp.name).filter((x) => !x.ending).length;
  }

  private mostIdle(name: string): Child | undefined {
    const ready = this.state.childrenOf(name).filter((c) => !c.ending);
    return ready.sort((a, b) => rank(b) - rank(a))[0];
  }

  private elasticity(): void {
    const { state, config } = this;
    const now = state.clock.now();
    const views: ComponentView[] = [...state.components.values()]
      .filter((c) => !c.removed)
      .map((c) => ({
        name: c.name,
        ...config.limits(c),
        children: state.childrenOf(c.name).map((x) => viewOf(x, now)),
        capacityRequests: c.capacityRequests,
        ...(c.failed ? { failed: c.failed } : {}),
      }));
    let decisions;
    try {
      // Slots held for components with no node count as used: no strategy grows into them.
      decisions = state.strategies.lifecycle.decide({ capacity: state.capacity, used: state.used() + this.heldSlots(), now }, views);
    } catch (err) {
      state.log.error(`lifecycle strategy ${state.strategies.lifecycle.name} failed: ${(err as Error).message}`);
      return;
    }
    for (const c of state.components.values()) c.capacityRequests = 0;
    for (const d of decisions) {
      const comp = state.components.get(d.component);
      if (!comp || comp.rolling || comp.removed || comp.failed) continue;
      const { min, max } = config.limits(comp);
      const kids = state.childrenOf(comp.name);
      if (kids.some((k) => k.phase !== "ready")) continue; // one change at a time
      const live = kids.filter((k) => !k.ending).length;
      if (d.action === "grow") {
        if (live >= max) continue;
        if (state.used() + this.heldSlots() >= state.capacity) {
          state.log.debug(`${comp.name}: not growing (${d.reason}): ${state.used()}/${state.capacity} in use, ${this.heldSlots()} held for components with no node`);
          continue;
        }
        comp.desired = live + 1;
        state.log.info(`${comp.name}: growing to ${comp.desired} (${d.reason})`);
      } else {
        if (live <= min) continue;
        const child = state.children.get(d.pid);
        if (!child || child.component !== comp.name || child.ending) continue;
        comp.desired = live - 1;
        state.log.info(`${comp.name}: shrinking to ${comp.desired}, draining pid ${child.pid} (${d.reason})`);
        void this.supervisor.drain(child, false);
      }
    }
  }

  /**
   * A caller found every node of a component full. Grow here when this host
   * runs the component and has room; else pass it to a node on another host
   * (not yet visited) so that host's governor can grow it.
   */
  capacityWanted(wanted: CapacityRequest): void {
    const { state } = this;
    const comp = state.components.get(wanted.component);
    const room =
      comp && !comp.failed && !comp.removed && state.used() + this.heldSlots(comp) < state.capacity && state.childrenOf(comp.name).filter((c) => !c.ending).length < this.config.limits(comp).max;
    if (room) {
      comp.capacityRequests++;
      state.log.debug(`capacity wanted for ${wanted.component} (from ${wanted.fromHost || "this host"})`);
      return;
    }
    const visited = new Set([...wanted.visited, state.host]);
    const entries = this.peers.entries().filter((e) => !visited.has(e.host));
    // Prefer hosts that run the component (they have its code), then any other host.
    const target = entries.find((e) => e.component === wanted.component) ?? entries[0];
    if (!target) {
      state.log.info(`capacity wanted for ${wanted.component}, but no host has room (visited ${[...visited].join(", ")})`);
      return;
    }
    try {
      this.peers.send(REQUEST_CAPACITY, { ...wanted, visited: [...visited] }, target.id);
      state.log.info(`capacity wanted for ${wanted.component}: no room here, asked host ${target.host}`);
    } catch (err) {
      state.log.debug(`capacity request to ${target.host} not sent: ${NodeBinError.from(err)}`);
    }
  }
}

/** How cheap a child is to stop: a starting one serves nobody yet; then the most idle, the least queued. */
function rank(c: Child): number {
  return c.phase === "starting" ? Number.MAX_SAFE_INTEGER : (c.stats?.idleMs ?? 0) - (c.stats?.queued ?? 0) * 1000;
}
