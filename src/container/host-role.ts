/**
 * A process's part in its host's membership, written once for every role:
 * - agent: it holds the host's discovery port (tcp, plus the ipc socket the
 *   host's own processes use), keeps their leases and gossips with other
 *   hosts (membership/agent.ts);
 * - member: it registers its nodes with the agent over ipc, renews the lease,
 *   and pulls the agent's table whenever its version moves; when the agent
 *   stops answering, it tries to take the port over itself.
 * `join()` is what a container or a joined `dev` does (agent if the port is
 * free, else member, and it gives the role back to a returning governor);
 * `claim()` is what a governor does (it must hold the role: a process that
 * took it over while no governor ran is asked to yield).
 */
import { rmSync } from "node:fs";
import type { Logger } from "../component/context.ts";
import { HostAgent, type AgentOptions, type GossipLayer } from "../membership/agent.ts";
import type { HostExtras } from "../membership/gossip-codec.ts";
import { BroadcastRelay } from "../membership/broadcast-relay.ts";
import { Gossip } from "../membership/gossip.ts";
import { LOCAL } from "../membership/table.ts";
import { systemClock, type Clock, type Timer } from "../platform/clock.ts";
import { hasIpc } from "../platform/platform.ts";
import { isOwnEndpoint, tcpEndpoint } from "../transport/addresses.ts";
import { DEFAULT_DISCOVERY_PORT, discoveryIpc } from "../transport/runtime-dir.ts";
import { relayEndpoints } from "../transport/pubsub.ts";
import type { WireSecurity, ZmqListener } from "../transport/zmq.ts";
import { DEREGISTER, PULL, REGISTER, YIELD_AGENT, type RegisterRequest } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import type { Container } from "./container.ts";

/** This agent as gossip knows it. */
export interface GossipSelf {
  host: string;
  endpoint: string;
  network: string;
  incarnation: number;
  /** The host's broadcast relay, as other hosts' relays reach it (advertised in its gossip record). */
  broadcast?: string;
}

export interface HostRoleOptions {
  /** Address the discovery port binds (every interface by default) and the one it is advertised at. */
  bind: string;
  advertise: string;
  discoveryPort?: number;
  /** Discovery endpoints of other hosts ("tcp://10.0.0.5:7400"). */
  seeds: string[];
  runtimeDir: string;
  log: Logger;
  clock?: Clock;
  /** Lease length and renewal period at the host agent (default 3000 / 1000 ms). */
  leaseMs?: number;
  renewMs?: number;
  /** Makes the gossip layer when this process becomes the agent (default: Gossip with its defaults). */
  makeGossip?: (self: GossipSelf, seeds: string[]) => GossipLayer | undefined;
  /** Closes the process's outbound connection to an endpoint (its connector's disconnect): gossip's connections stay bounded by it. */
  disconnect?: (endpoint: string) => void;
  /** Told of leases starting and ending while this process is the agent (the governor tracks its children by it). */
  onLease?: AgentOptions["onLease"];
  /** See AgentOptions.checkLease. */
  checkLease?: AgentOptions["checkLease"];
  /** CurveZMQ and the ZAP check for the broadcast relay's tcp sockets (the process's security provider's). */
  security?: WireSecurity;
}

/** How the role binds its listeners: with the process's socket options, into the process's dispatch. */
export type BindListener = (addresses: string[]) => Promise<ZmqListener>;

export type RoleName = "agent" | "member";

export class HostRole {
  role: RoleName = "member";
  private agent: HostAgent | undefined;
  /** The host's broadcast relay, while this process is the agent (undefined if it could not bind). */
  private broadcastRelay: BroadcastRelay | undefined;
  private offRelayGossip: (() => void) | undefined;
  private discovery: ZmqListener[] = [];
  private renewTimer: Timer | undefined;
  private renewing = false;
  private renewAgain = false;
  private pulledVersion = 0;
  private closing = false;
  private readonly clock: Clock;

  constructor(
    private readonly container: Container,
    private readonly bindListener: BindListener,
    private readonly options: HostRoleOptions,
  ) {
    this.clock = options.clock ?? systemClock;
  }

  get discoveryPort(): number {
    return this.options.discoveryPort ?? DEFAULT_DISCOVERY_PORT;
  }

  /** The agent's ipc endpoint, where the host's processes register and local clients pull. */
  get discoveryIpc(): string {
    return discoveryIpc(this.options.runtimeDir, this.discoveryPort);
  }

  /** The discovery endpoints this process holds as agent (none as member). */
  get discoveryEndpoints(): string[] {
    return this.discovery.flatMap((l) => l.endpoints);
  }

  /** The agent's lease and gossip counters, and its broadcast relay's topics and peers (empty as member). */
  stats(): Record<string, number> {
    return { ...(this.agent?.stats() ?? {}), ...(this.agent ? this.broadcastRelay?.stats() : {}) };
  }

  /** The host's broadcast relay, while this process is the agent and runs one. */
  get relay(): BroadcastRelay | undefined {
    return this.broadcastRelay;
  }

  /** The ipc endpoints of this host's broadcast relay (whichever process runs it). */
  get relayEndpoints() {
    return relayEndpoints(this.options.runtimeDir, this.discoveryPort);
  }

  /** The agent, while this process is one (the governor installs adopted leases through it). */
  get hostAgent(): HostAgent | undefined {
    return this.agent;
  }

  /**
   * Joins the host: agent if the discovery port is free, else member
   * (registered). Also serves YieldAgent: a governor that comes back gets the
   * role back.
   */
  async join(): Promise<void> {
    this.container.control.serve(YIELD_AGENT, () => {
      // Answer first (through the listener about to close), then give the role back.
      if (this.role === "agent") this.clock.after(20, () => void this.yieldAgent());
      return {};
    });
    if (await this.becomeAgent(false)) return;
    await this.renew();
  }

  /**
   * Takes the agent role and keeps it: a process holding the discovery port
   * (it took over while no governor ran) is asked to yield, and the bind
   * retried for about 5 s. `leases` are installed at once (a governor's
   * adopted children). Throws UNAVAILABLE when the port stays taken.
   */
  async claim(leases: RegisterRequest[] = []): Promise<void> {
    let lastErr: unknown;
    for (let attempt = 0; attempt < 25; attempt++) {
      try {
        if (await this.becomeAgent(false, true)) break;
      } catch (err) {
        lastErr = err;
      }
      // Held by a process acting as agent (or by something else entirely): ask, then try again.
      try {
        await this.container.callControl(YIELD_AGENT, {}, { via: this.discoveryIpc }, 500);
        if (attempt === 0) this.options.log.info(`a process held the discovery endpoint ${this.tcpBind}: asked it to give it back`);
      } catch {
        // Nobody answered over ipc: wait and retry (the port may be in TIME_WAIT or held by another program).
      }
      await this.clock.sleep(200);
    }
    if (!this.agent) {
      const why = lastErr instanceof Error ? lastErr.message : "it is taken";
      throw new NodeBinError("UNAVAILABLE", `cannot bind the discovery endpoint ${this.tcpBind}: ${why}; is another program using port ${this.discoveryPort}? (--discovery-port)`);
    }
    for (const lease of leases) this.agent.lease(lease);
  }

  private get tcpBind(): string {
    return tcpEndpoint(this.options.bind, this.discoveryPort);
  }

  /**
   * Takes the host's discovery port if it is free. Resolves true when this
   * process is now the agent; with `rethrow`, a failed bind throws instead
   * of resolving false.
   */
  private async becomeAgent(takeover: boolean, rethrow = false): Promise<boolean> {
    const { advertise, seeds, log } = this.options;
    const container = this.container;
    // Bound in this order: the tcp port decides who is the agent; the ipc path
    // is only taken after it (binding ipc would steal the socket file of a live agent).
    let tcp: ZmqListener;
    try {
      tcp = await this.bindListener([this.tcpBind]);
    } catch (err) {
      if (rethrow) throw err;
      return false; // another process holds the port: it is the agent
    }
    const listeners = [tcp];
    if (hasIpc) {
      try {
        listeners.push(await this.bindListener([this.discoveryIpc]));
      } catch (err) {
        await tcp.close();
        if (rethrow) throw err;
        return false;
      }
    }
    this.discovery = listeners;
    for (const l of listeners) container.addTransport(l);
    container.table.setSource("agent", []); // our own table is now the host's
    const endpoint = tcpEndpoint(advertise, this.discoveryPort);
    const incarnation = this.clock.now();
    // Bound after the discovery port, as the discovery ipc socket is: only the agent may take the relay's socket files.
    const relay = (this.broadcastRelay = await this.startRelay(incarnation));
    const self: GossipSelf = { host: container.host, endpoint, network: container.network, incarnation, ...(relay ? { broadcast: relay.networkEndpoint } : {}) };
    // A seed naming this very agent (`--seed 127.0.0.1` on the seed host itself) is no other host.
    const others = seeds.filter((s) => !isOwnEndpoint(s, this.discoveryPort, [advertise]));
    // A discovery plugin's layer, or (undefined: the built-in "gossip" plugin) the built-in gossip.
    const gossip = this.options.makeGossip?.(self, others) ?? new Gossip({ self, seeds: others, now: () => this.clock.now() });
    // The relay subscribes to every other host's relay that gossip tells of, and lets go of those that leave.
    if (relay) {
      this.offRelayGossip = gossip.onChange(({ type, host }) => {
        if (host.host !== container.host) relay.setPeer(host.host, type === "removed" ? undefined : host.broadcast);
      });
    }
    this.agent = new HostAgent(container, { host: container.host, endpoint, network: container.network, log, gossip, ...(this.options.disconnect ? { disconnect: this.options.disconnect } : {}), ...(this.options.onLease ? { onLease: this.options.onLease } : {}), ...(this.options.checkLease ? { checkLease: this.options.checkLease } : {}) });
    this.agent.start();
    if (this.extras) this.agent.setExtras(this.extras);
    this.role = "agent";
    const says = `host agent for ${container.host} at ${listeners.flatMap((l) => l.endpoints).join(" ")}${others.length ? `, seeds ${others.join(" ")}` : ""}${relay ? `; broadcast relay at ${relay.networkEndpoint}` : ""}`;
    // Taking over from an agent that stopped answering is worth an operator's attention.
    if (takeover) log.warn(`${says} (took over: the previous agent stopped answering)`);
    else log.info(says);
    return true;
  }

  /**
   * The host's broadcast relay, bound now (its ipc sockets in the runtime
   * directory, its network XPUB on a tcp port the OS picks): undefined, with
   * a warning, when it cannot be (the agent serves without broadcasts across
   * processes then).
   */
  private async startRelay(incarnation: number): Promise<BroadcastRelay | undefined> {
    if (!hasIpc) return undefined; // the relay's host side is ipc: where there is none (Windows), broadcasts stay in their process
    try {
      return await BroadcastRelay.start({
        origin: `${this.container.host}~${incarnation.toString(36)}${Math.floor(Math.random() * 0xffff).toString(36)}`,
        endpoints: this.relayEndpoints,
        networkBind: tcpEndpoint(this.options.bind, 0),
        advertise: this.options.advertise,
        ...(this.options.security ? { security: this.options.security } : {}),
        log: this.options.log,
      });
    } catch (err) {
      this.options.log.warn(`no broadcast relay on this host: ${NodeBinError.from(err).message}`);
      return undefined;
    }
  }

  /** Stops the relay (before the discovery listeners close: the next agent binds its sockets only after it has the port). */
  private async stopRelay(): Promise<void> {
    this.offRelayGossip?.();
    this.offRelayGossip = undefined;
    const relay = this.broadcastRelay;
    this.broadcastRelay = undefined;
    await relay?.close();
  }

  /**
   * Gives the host agent role back (a governor came back and wants the
   * discovery endpoint): closes the discovery listeners, forgets the leases
   * and remote hosts the agent kept, and registers with the new agent.
   */
  private async yieldAgent(): Promise<void> {
    if (this.role !== "agent" || this.closing) return;
    this.agent?.close();
    this.agent = undefined;
    const listeners = this.discovery;
    this.discovery = [];
    this.role = "member";
    await this.stopRelay();
    const table = this.container.table;
    for (const source of table.sourceNames()) if (source.startsWith("lease:") || source.startsWith("host:")) table.setSource(source, []);
    for (const l of listeners) await this.container.removeTransport(l);
    removeIpcFiles(listeners);
    this.options.log.info("gave the host agent role back");
    this.pulledVersion = 0;
    this.renewTimer?.cancel();
    this.renewTimer = this.clock.after(this.renewMs, () => void this.renew());
  }

  private get renewMs(): number {
    return this.options.renewMs ?? 1000;
  }

  private extras: HostExtras | undefined;

  /**
   * What this host can take and reaches, for its gossip record (a governor's
   * capacity, a gateway's remote networks): kept, and given to the agent
   * whenever this process is one.
   */
  setExtras(extras: HostExtras): void {
    this.extras = extras;
    this.agent?.setExtras(extras);
  }

  /** Renews the lease now (the node set changed), instead of at the next period. */
  renewNow(): void {
    if (this.role !== "member" || this.closing) return;
    this.renewTimer?.cancel();
    void this.renew();
  }

  /** One lease renewal (and a pull when the agent's table moved); schedules the next. */
  private async renew(): Promise<void> {
    if (this.closing || this.role === "agent") return;
    // One renewal at a time: a renewNow() during one asks for another right after.
    if (this.renewing) {
      this.renewAgain = true;
      return;
    }
    this.renewing = true;
    let again: boolean;
    try {
      await this.renewOnce();
    } finally {
      this.renewing = false;
      again = this.renewAgain;
      this.renewAgain = false;
    }
    if (this.closing || this.role !== "member") return;
    this.renewTimer?.cancel();
    if (again) return this.renew();
    this.renewTimer = this.clock.after(this.renewMs, () => void this.renew());
  }

  private async renewOnce(): Promise<void> {
    const c = this.container;
    const via = { via: this.discoveryIpc };
    try {
      c.refreshLoad();
      const nodes = c.table.sourceEntries(LOCAL);
      const schemas = [...new Set(nodes.map((n) => n.schema))].map((id) => ({ id, json: c.table.schema(id)!.json }));
      const request: RegisterRequest = { nodes, schemas, leaseMs: this.options.leaseMs ?? 3000, seeds: this.options.seeds, container: c.id, pid: process.pid };
      const reply = await c.callControl(REGISTER, request, via, this.renewMs);
      if (reply.version !== this.pulledVersion) {
        const pulled = await c.callControl(PULL, { knownVersion: this.pulledVersion }, via, this.renewMs);
        this.pulledVersion = c.table.mergePull(pulled, undefined, "agent").version;
      }
    } catch (err) {
      this.options.log.debug(`host agent did not answer (${NodeBinError.from(err)}); trying to take over`);
      if (!this.closing) await this.becomeAgent(true);
    }
  }

  /** Leaves: a member deregisters (so callers stop choosing its nodes), an agent closes its listeners. Idempotent. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.renewTimer?.cancel();
    if (this.role === "member") {
      try {
        await this.container.callControl(DEREGISTER, { container: this.container.id }, { via: this.discoveryIpc }, 1000);
      } catch {
        // The agent is gone too: our lease simply runs out.
      }
    }
    this.agent?.close();
    this.agent = undefined;
    await this.stopRelay();
  }
}

/** libzmq leaves an ipc socket file behind when its socket closes: a caller would then wait for an answer that never comes. */
export function removeIpcFiles(listeners: ZmqListener[]): void {
  for (const l of listeners) for (const e of l.endpoints) if (e.startsWith("ipc://")) rmIpc(e);
}

function rmIpc(endpoint: string): void {
  rmSync(endpoint.slice("ipc://".length), { force: true });
}
