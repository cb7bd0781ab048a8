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
import { capacityTarget, codeSources, freeSlots, type HostCapacity } from "../membership/capacity.ts";
import { networkLabel } from "../membership/network-name.ts";
import type { CapacityPeers, CodeFetch, UnmetDemand } from "./ports.ts";
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
    private readonly code?: CodeFetch,
    private readonly demand?: UnmetDemand,
    private readonly random: () => number = Math.random,
  ) {}

  /** Components whose code is being fetched for a capacity request (one fetch at a time each). */
  private readonly fetching = new Set<string>();
  /** What this host last put in its gossip record, and when (see announce). */
  private announced: { key: string; load: string; at: number } | undefined;

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
      this.announce();
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
      // Min 0 and none wanted (spilled code shrunk to none): it wants no node until a capacity request asks for one.
      if (c.desired === 0 && this.config.limits(c).min === 0) continue;
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
   * What this host can take, for its gossip record: its slots, those in use
   * (children alive and slots held for components with no node), and per
   * component its live nodes, their load, its max and its code's hash (where
   * a host without the code fetches it). Put out at once when slots or node
   * counts change; a change of load alone at most once a second (load moves
   * all the time: each change is a new record version to spread).
   */
  capacity(): HostCapacity {
    const { state, config } = this;
    const components = [...state.components.values()]
      .filter((c) => !c.removed)
      .map((c) => {
        const kids = state.childrenOf(c.name).filter((k) => !k.ending);
        return {
          name: c.name,
          hash: c.failed || c.hash === c.badHash ? "" : c.hash,
          nodes: kids.length,
          queued: kids.reduce((n, k) => n + (k.stats?.queued ?? 0), 0),
          capacity: kids.reduce((n, k) => n + (k.stats?.capacity ?? 0), 0),
          max: config.limits(c).max,
        };
      })
      .sort((a, b) => a.name.localeCompare(b.name));
    return { slots: state.capacity, used: Math.min(state.capacity, state.used() + this.heldSlots()), components, provider: state.provider };
  }

  private announce(): void {
    const capacity = this.capacity();
    const now = this.state.clock.now();
    const key = JSON.stringify([capacity.slots, capacity.used, capacity.provider, capacity.components.map((c) => [c.name, c.hash, c.nodes, c.max])]);
    const load = JSON.stringify(capacity.components.map((c) => [c.queued, c.capacity]));
    const last = this.announced;
    if (last && last.key === key && (last.load === load || now - last.at < ANNOUNCE_LOAD_MS)) return;
    this.announced = { key, load, at: now };
    this.peers.announce(capacity);
  }

  /**
   * A caller found every node of a component full (or a host of the network,
   * or a gateway, passed the request on). In the seed's order of tiers:
   * - grow here, when this host runs the component and has a free slot (and
   *   the component is below its max);
   * - when this host lacks the component's code but has a free slot, fetch
   *   the code from a host of this network that has it (CodeFetch: sealed,
   *   verified by its hash) and start a node of it;
   * - else pass it on (capacityTarget): to the host of this network with the
   *   most free slots, else through a gateway to a remote network, as far as
   *   the request's scope allows;
   * - nowhere: the demand is unmet (what the provider plugin acts on).
   */
  capacityWanted(wanted: CapacityRequest): void {
    const { state } = this;
    // What a peer can make this governor hold or send on is bounded like any input from the network.
    if (wanted.visited.length > MAX_VISITED || (wanted.networks?.length ?? 0) > MAX_NETWORKS || !wanted.component) {
      state.log.debug(`capacity request dropped: ${wanted.visited.length} hosts visited, ${wanted.networks?.length ?? 0} networks`);
      return;
    }
    const comp = state.components.get(wanted.component);
    const hash = wanted.hash || (comp && !comp.removed ? comp.hash : "") || this.hashKnown(wanted.component);
    const request: CapacityRequest = { ...wanted, ...(hash ? { hash } : {}) };
    const free = state.used() + this.heldSlots(comp) < state.capacity;
    if (comp && !comp.failed && !comp.removed) {
      if (free && this.liveOf(comp) < this.config.limits(comp).max) {
        comp.capacityRequests++;
        state.log.debug(`capacity wanted for ${wanted.component} (from ${wanted.fromHost || "this host"})`);
        return;
      }
    } else if (!comp && this.fetching.has(wanted.component)) {
      return; // its code is on its way here: the node starts when it came
    } else if (!comp && free && this.code && hash && request.scope !== "process") {
      const sources = codeSources(wanted.component, hash, this.peers.network, this.peers.hosts(), state.host);
      if (sources.length > 0) {
        this.fetchAndStart(request, hash, sources);
        return;
      }
    }
    this.passOn(request);
  }

  /** The code hash of `component` some host of this network gossips (the first governor that knows it names the version wanted). */
  private hashKnown(component: string): string {
    for (const h of this.peers.hosts()) {
      if (h.network !== this.peers.network) continue;
      const load = h.capacity?.components.find((c) => c.name === component && c.hash);
      if (load) return load.hash;
    }
    return "";
  }

  private fetchAndStart(request: CapacityRequest, hash: string, sources: readonly { host: string; endpoint: string }[]): void {
    const { state } = this;
    const name = request.component;
    this.fetching.add(name);
    state.log.info(`capacity wanted for ${name}, whose code this host lacks: fetching it (${hash.slice(0, 12)}) from ${sources.map((s) => s.host).join(", ")}`);
    this.code!.fetch(name, hash, sources).then(
      () => {
        this.fetching.delete(name);
        const comp = state.components.get(name);
        if (!comp) return;
        // A node to take the load that asked for it; more follow as requests keep coming (and shrink back when idle).
        comp.desired = Math.max(comp.desired, 1);
        comp.capacityRequests++;
        state.log.info(`${name}: code fetched and verified, starting a node of it`);
      },
      (err: unknown) => {
        this.fetching.delete(name);
        const e = NodeBinError.from(err);
        state.log.warn(`capacity wanted for ${name}: its code could not be fetched (${e.code}: ${e.message}); passing the request on`);
        this.passOn(request);
      },
    );
  }

  /** Hands a request this host cannot serve to the next tier with room (capacityTarget), or records it unmet. */
  private passOn(request: CapacityRequest): void {
    const { state, peers } = this;
    const target = capacityTarget(request, { host: state.host, network: peers.network }, peers.hosts(), this.random);
    const visited = [...new Set([...request.visited, state.host])];
    if (!target) {
      state.log.info(`capacity wanted for ${request.component}, but no host in scope "${request.scope || "any"}" has room (visited ${visited.join(", ")})`);
      this.demand?.unmet(request, state.clock.now());
      return;
    }
    try {
      peers.sendVia(REQUEST_CAPACITY, { ...request, visited }, target.host.endpoint);
      state.log.info(
        target.tier === "network"
          ? `capacity wanted for ${request.component}: no room here, asked host ${target.host.host} (${freeSlots(target.host.capacity)} free slots)`
          : `capacity wanted for ${request.component}: no room in network ${networkLabel(peers.network)}, asked gateway ${target.host.host} for network ${networkLabel(target.network)}`,
      );
    } catch (err) {
      state.log.debug(`capacity request to ${target.host.host} not sent: ${NodeBinError.from(err)}`);
    }
  }
}

/** Load alone moves a host's record at most this often (slots and node counts at once). */
export const ANNOUNCE_LOAD_MS = 1000;
/** Bounds on a capacity request's trail (hosts visited in a network, networks crossed): past them it is dropped. */
export const MAX_VISITED = 1024;
export const MAX_NETWORKS = 16;

/** How cheap a child is to stop: a starting one serves nobody yet; then the most idle, the least queued. */
function rank(c: Child): number {
  return c.phase === "starting" ? Number.MAX_SAFE_INTEGER : (c.stats?.idleMs ?? 0) - (c.stats?.queued ?? 0) * 1000;
}
