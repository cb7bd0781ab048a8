/**
 * The built-in lifecycle plugin ("default-lifecycle"): elasticity.
 *
 * Grow a component when every ready node of it has been over its queue limits
 * (queue wait above `queueWaitMs` or queue length above `queueLength`) without
 * a break for `sustainMs`, or at once when the network asked for capacity.
 * Shrink it by its most idle node when that node has been idle longer than
 * `idleMs` and the component has more ready nodes than its minimum.
 *
 * One change at a time: nothing is decided for a component while one of its
 * nodes is starting, holding or draining. Thresholds are read from the
 * governor's settings at every round (so `governor set` takes effect live),
 * unless the plugin's options pin them.
 */
import type { ChildView, ComponentView, GovernorSettings, HostView, LifecycleDecision, LifecycleStrategy, PluginModule } from "../strategy.ts";

type Thresholds = Pick<GovernorSettings, "queueWaitMs" | "queueLength" | "sustainMs" | "idleMs">;
const OPTION_NAMES = ["queueWaitMs", "queueLength", "sustainMs", "idleMs"] as const satisfies readonly (keyof Thresholds)[];

/** Per component: since when the grow condition has held, for which set of ready nodes. */
interface Pressure {
  readyKey: string;
  since: number | undefined;
}

const BUSY_PHASES: ReadonlySet<ChildView["phase"]> = new Set(["starting", "holding", "draining"]);

function parseOptions(options: Record<string, unknown>): Partial<Thresholds> {
  const pinned: Partial<Thresholds> = {};
  for (const key of Object.keys(options)) {
    if (!(OPTION_NAMES as readonly string[]).includes(key)) {
      throw new Error(`default-lifecycle: unknown option "${key}" (known: ${OPTION_NAMES.join(", ")})`);
    }
    const value = options[key];
    if (value === undefined) continue;
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
      throw new Error(`default-lifecycle: option "${key}" must be a non-negative finite number, got ${describe(value)}`);
    }
    pinned[key as keyof Thresholds] = value;
  }
  return pinned;
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (value === null || typeof value !== "object") return String(value);
  return Array.isArray(value) ? "an array" : "an object";
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** Why the grow condition holds, with the numbers (the smallest of the nodes: what "all" is bounded by). */
function pressureReason(ready: readonly ChildView[], t: Thresholds, heldMs: number): string {
  const minWait = Math.min(...ready.map((c) => c.queueWaitMs));
  const minQueued = Math.min(...ready.map((c) => c.queued));
  const span = `for ${heldMs} ms on all ${plural(ready.length, "node")}`;
  if (minWait > t.queueWaitMs) return `queue wait ${minWait} ms > ${t.queueWaitMs} ms ${span}`;
  if (minQueued > t.queueLength) return `queue length ${minQueued} > ${t.queueLength} ${span}`;
  return `queue wait > ${t.queueWaitMs} ms or queue length > ${t.queueLength} ${span} (least: wait ${minWait} ms, length ${minQueued})`;
}

export class DefaultLifecycle implements LifecycleStrategy {
  readonly name = "default-lifecycle";
  readonly #settings: GovernorSettings;
  readonly #pinned: Partial<Thresholds>;
  readonly #pressure = new Map<string, Pressure>();

  constructor(settings: GovernorSettings, pinned: Partial<Thresholds> = {}) {
    this.#settings = settings;
    this.#pinned = pinned;
  }

  /** The thresholds in force now: pinned options over the live settings. */
  thresholds(): Thresholds {
    const s = this.#settings;
    const p = this.#pinned;
    return {
      queueWaitMs: p.queueWaitMs ?? s.queueWaitMs,
      queueLength: p.queueLength ?? s.queueLength,
      sustainMs: p.sustainMs ?? s.sustainMs,
      idleMs: p.idleMs ?? s.idleMs,
    };
  }

  decide(host: HostView, components: readonly ComponentView[]): LifecycleDecision[] {
    const t = this.thresholds();
    const now = host.now;
    const decisions: LifecycleDecision[] = [];
    let used = host.used;
    const seen = new Set<string>();

    for (const component of components) {
      seen.add(component.name);
      const ready = component.children.filter((c) => c.phase === "ready");
      const busy = component.children.some((c) => BUSY_PHASES.has(c.phase));

      // Track since when every ready node has been over its limits.
      const overLimits = ready.length > 0 && ready.every((c) => c.queueWaitMs > t.queueWaitMs || c.queued > t.queueLength);
      const readyKey = ready
        .map((c) => c.pid)
        .sort((a, b) => a - b)
        .join(",");
      let pressure = this.#pressure.get(component.name);
      if (!pressure || pressure.readyKey !== readyKey) {
        pressure = { readyKey, since: overLimits ? now : undefined };
        this.#pressure.set(component.name, pressure);
      } else if (!overLimits) {
        pressure.since = undefined;
      } else {
        pressure.since ??= now;
      }

      if (busy) continue; // one change at a time

      // Grow.
      const canGrow = component.failed === undefined && component.children.length < component.max && used < host.capacity;
      if (canGrow) {
        let reason: string | undefined;
        if (component.capacityRequests > 0) {
          reason = `${plural(component.capacityRequests, "capacity request")} from the network (every node full)`;
        } else if (pressure.since !== undefined && now - pressure.since >= t.sustainMs) {
          reason = pressureReason(ready, t, now - pressure.since);
        }
        if (reason !== undefined) {
          decisions.push({ action: "grow", component: component.name, reason });
          used++;
          pressure.since = overLimits ? now : undefined; // the next grow needs its own sustained pressure
          continue;
        }
      }

      // Shrink: the most idle ready node, if idle long enough and above the minimum.
      if (ready.length > component.min) {
        let idlest: ChildView | undefined;
        for (const c of ready) if (c.idleMs > t.idleMs && (!idlest || c.idleMs > idlest.idleMs)) idlest = c;
        if (idlest) decisions.push({ action: "shrink", component: component.name, pid: idlest.pid, reason: `idle ${idlest.idleMs} ms > ${t.idleMs} ms` });
      }
    }

    for (const name of this.#pressure.keys()) if (!seen.has(name)) this.#pressure.delete(name);
    return decisions;
  }
}

const plugin: PluginModule<"lifecycle"> = {
  kind: "lifecycle",
  name: "default-lifecycle",
  create(options, settings) {
    return new DefaultLifecycle(settings, parseOptions(options));
  },
};

export default plugin;
