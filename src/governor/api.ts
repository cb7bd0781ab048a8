/**
 * The governor's control API at its socket: nodebin.Governor/Status, Set,
 * Stop and RequestCapacity (what `node-bin governor ...` and the host's
 * containers ask), nodebin.Control/RequestCapacity (capacity requests passed
 * on by another host's governor), and the status report they answer with.
 */
import { GOVERNOR_CAPACITY, GOVERNOR_ROLL, GOVERNOR_SET, GOVERNOR_STATUS, GOVERNOR_STOP } from "../wire/control.ts";
import type { ElasticLoop } from "./elastic.ts";
import type { ServeControl, StatusSources } from "./ports.ts";
import type { GovernorConfig } from "./settings.ts";
import type { GovernorState } from "./state.ts";

export class GovernorApi {
  constructor(
    private readonly state: GovernorState,
    private readonly config: GovernorConfig,
    private readonly elastic: ElasticLoop,
    private readonly sources: StatusSources,
    /** Stops the governor (`governor stop`); called just after the request is answered. */
    private readonly stop: (keepChildren: boolean) => Promise<void>,
    /** `governor roll` (RollingDeploy.rollNow): throws NOT_FOUND for an unknown component. */
    private readonly roll: (components: string[]) => unknown = () => {},
  ) {}

  /** Serves the API's methods. */
  serve(serve: ServeControl): void {
    serve(GOVERNOR_STATUS, () => ({ json: JSON.stringify(this.status()) }));
    serve(GOVERNOR_SET, ({ key, component, value }) => {
      this.config.set(key, component, value);
      return { json: JSON.stringify(this.status()) };
    });
    serve(GOVERNOR_ROLL, ({ components }) => {
      this.roll(components);
      return { json: JSON.stringify(this.status()) };
    });
    serve(GOVERNOR_STOP, ({ keepChildren }) => {
      this.state.clock.after(20, () => void this.stop(keepChildren));
      return {};
    });
    // Its children pass on what callers asked of them. (nodebin.Control/RequestCapacity sent to
    // the governor's own process, from another host's governor, is the composition's: it goes to
    // the same capacityWanted through ProcessOptions.onCapacity.)
    serve(GOVERNOR_CAPACITY, (request) => {
      this.elastic.capacityWanted(request);
    });
  }

  /** The status report (`node-bin governor status --json`). */
  status(): Record<string, unknown> {
    const { state, config, sources } = this;
    const now = state.clock.now();
    return {
      host: state.host,
      pid: process.pid,
      uptimeMs: now - sources.startedAt,
      componentsDir: state.componentsDir,
      discovery: sources.discovery(),
      socket: sources.socket,
      capacity: state.capacity,
      // Live children, and the ones draining to make room for a component with no node (their slot is promised).
      used: state.used(),
      settings: { ...state.settings },
      // In start-up order: the security provider first, the component loader second.
      plugins: sources.plugins(),
      // The plugins' control-plane services, for `node-bin governor call` (schemas as protobufjs JSON).
      pluginSchemas: sources.pluginSchemas(),
      // The host agent's leases and gossip counters (bytes sent and received, rounds, hosts known).
      agent: sources.agent(),
      // Registers refused because they named one of the children without being it (or leased too many nodes).
      leasesRefused: state.leasesRefused,
      // Input the governor's process dropped or refused past a bound, by reason (each child's is in its row).
      refused: { ...sources.refused(), ...(this.state.leasesRefused ? { leases: this.state.leasesRefused } : {}), ...tableRefusals(sources.agent()) },
      ...(state.lastLeaseRefused ? { lastLeaseRefused: state.lastLeaseRefused } : {}),
      locked: state.locked(),
      // Capacity per tier as this governor knows it from gossip: this host, this network, remote networks (membership/capacity.ts).
      ...(sources.tiers ? { tiers: sources.tiers() } : {}),
      // New hosts on demand (provider.ts): what was launched and released, and what the guard rails refused.
      ...(sources.provider?.() ? { provider: sources.provider() } : {}),
      // The gateways it runs as children (governor.json `gateways`).
      ...(sources.gateways?.().length ? { gateways: sources.gateways() } : {}),
      components: [...state.components.values()]
        .filter((c) => !c.removed || state.childrenOf(c.name).length)
        .sort((a, b) => a.name.localeCompare(b.name))
        .map((c) => {
          const kids = state.childrenOf(c.name);
          return {
            name: c.name,
            hash: c.hash.slice(0, 12),
            ...config.limits(c),
            desired: c.desired,
            running: kids.filter((k) => !k.ending).length,
            queued: kids.reduce((n, k) => n + (k.stats?.queued ?? 0), 0),
            restarts: c.restarts,
            rolling: c.rolling,
            locked: state.locked(c.name),
            ...(c.removed ? { removed: true } : {}),
            // Not in the components directory: code fetched from another host (code-share.ts).
            ...(c.fetched ? { source: `fetched from ${c.fetched.from}` } : {}),
            ...(c.failed ? { failed: c.failed } : {}),
            ...(c.deployError ? { deployError: c.deployError } : {}),
            ...(c.waiting ? { waiting: c.waiting } : {}),
            children: kids.map((k) => ({
              pid: k.pid,
              container: k.container ?? "",
              node: k.node ?? "",
              phase: k.ending ? "draining" : k.phase,
              uptimeMs: now - k.startedAt,
              handled: k.stats?.handled ?? 0,
              queued: k.stats?.queued ?? 0,
              idleMs: k.stats?.idleMs ?? null,
              lastPongMsAgo: k.lastPongAt ? now - k.lastPongAt : null,
              pongs: k.pongs,
              restarts: k.restarts,
              rssBytes: k.stats?.rssBytes ?? 0,
              refused: k.stats?.refused ?? {},
              code: k.hash.slice(0, 12),
              adopted: !k.proc,
              log: k.log,
            })),
          };
        }),
    };
  }
}

/** The membership table's refused schemas, when the agent reports any. */
function tableRefusals(agent: Record<string, unknown>): Record<string, number> {
  const n = agent.refusedSchemas;
  return typeof n === "number" && n > 0 ? { schemas: n } : {};
}
