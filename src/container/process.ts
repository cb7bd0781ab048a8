/**
 * A container process: exactly one component node in its own process, with
 * its own endpoints (ipc for the host, tcp for the network), joined to its
 * host (as the host agent when the discovery port is free, else as a member:
 * see host-role.ts) and through the seeds to the network. On top of the
 * shared composition (compose.ts) it serves what a governor asks of its
 * children: Ping, Drain, ImportState, Release, Resume; and passes capacity
 * requests for its component to the governor that started it.
 *
 * State moves between processes sealed (security/seal.ts): a Drain that
 * exports state answers with the snapshot serialized and sealed under this
 * process's seal key (the cluster keyring, else the host's own key), and an
 * ImportState opens the payload before anything reads it, so a payload
 * changed on the way, or sealed by a process without the key, is refused
 * (UNAUTHENTICATED) and the held node stays held. Component code sees none
 * of this.
 *
 * The hand-over is two-phase, so that a refused payload loses nothing: the
 * drained node keeps its state (out of the table, serving nothing) until the
 * governor says Release (the successor took it: shut down) or Resume (it did
 * not: serve again). A governor that says neither within handOverMs (it
 * died) leaves the node serving again by itself. Of the two ways to guess,
 * that is the one that cannot lose the state: the sealed payload it handed
 * out was never confirmed taken, so its own copy is the only one known to
 * exist. The cost, when the governor died after the successor imported it,
 * is a second node with a copy of the state (in the tables, and in a new
 * governor's status, where the surplus is drained); exiting instead would
 * lose the state whenever the governor died before the import.
 */
import { randomBytes } from "node:crypto";
import { deserialize, serialize } from "node:v8";
import type { Logger } from "../component/context.ts";
import type { Component } from "../component/loader.ts";
import type { ComponentNode } from "../component/node.ts";
import type { GossipLayer } from "../membership/agent.ts";
import { systemClock, type Clock, type Timer } from "../platform/clock.ts";
import type { ZmqOptions } from "../transport/zmq.ts";
import { DEFAULT_DISCOVERY_PORT } from "../transport/runtime-dir.ts";
import type { SecurityProvider } from "../security/provider.ts";
import { open, seal } from "../security/seal.ts";
import { DRAIN, GOVERNOR_CAPACITY, IMPORT_STATE, PING, RELEASE, RESUME, type CapacityRequest, type PingReply } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import { NodeBinProcess, type ProcessOptions } from "./compose.ts";
import type { Container } from "./container.ts";
import type { GossipSelf, RoleName } from "./host-role.ts";

export { DEFAULT_DISCOVERY_PORT };

export interface ContainerProcessOptions {
  component: Component;
  /**
   * This container's id, its lease key at the host agent (default: made up
   * from the component, host, pid and a random part). A governor names its
   * children, so that it knows which lease is whose before they register.
   */
  id?: string;
  /** This host's id (default: the machine's host name). */
  host: string;
  network: string;
  /** Address tcp sockets bind (default: every interface) and the one they are advertised at (default: see advertiseAddress()). */
bind?: string;
  /** The security provider (default: none; see ProcessOptions.security). */
  security?: SecurityProvider;
  advertise?: string;
  discoveryPort?: number;
  /** Discovery endpoints of other hosts ("tcp://10.0.0.5:7400"). */
  seeds: string[];
  /** Private runtime directory (ipc sockets). */
  runtimeDir: string;
  logger: (source: string) => Logger;
  clock?: Clock;
  zmq?: Omit<ZmqOptions, "onDrop" | "advertise">;
  /** Lease length and renewal period at the host agent (default 3000 / 1000 ms). */
  leaseMs?: number;
  renewMs?: number;
  /** How long a call for a method nobody serves waits for membership to settle (default 2000 ms). */
  settleMs?: number;
  /**
   * The governor's private control socket, when a governor started this
   * process: capacity requests for this node's component go there.
   */
  governor?: string;
  /** Start the node held: it queues messages but handles none until its predecessor's state arrives (ImportState) or holdMs passes. */
  hold?: boolean;
  /** Longest a held node waits for its state (default 30 000 ms); then it serves with empty state and says so. */
  holdMs?: number;
  /**
   * Longest a node drained for a hand-over waits for Release or Resume
   * (default 60 000 ms: past the governor's 30 s bound on the import and its
   * Release); then it serves again with its state (see the module comment).
   */
  handOverMs?: number;
  /** Makes the gossip layer when this process becomes the host agent (default: Gossip with its defaults). */
  makeGossip?: (self: GossipSelf, seeds: string[]) => GossipLayer;
  /** Links around the node's calls and messages (see ProcessOptions.interceptors): the metrics plugin's call counter. */
  interceptors?: ProcessOptions["interceptors"];
  /** The calls counted by the metrics plugin, reported in every Ping (the governor exports them). Default: none. */
  callStats?: () => Pick<PingReply, "calls" | "callBuckets">;
}

export class ContainerProcess {
  readonly process: NodeBinProcess;
  readonly container: Container;
  private readonly log: Logger;
  private readonly clock: Clock;
  private holdTimer: Timer | undefined;
  /** A node drained for a hand-over, waiting for Release or Resume. */
  private handOver: { node: ComponentNode; timer: Timer } | undefined;
  private readonly startedAt: number;
  private closing = false;

  private constructor(
    private readonly options: ContainerProcessOptions,
    proc: NodeBinProcess,
  ) {
    this.process = proc;
    this.container = proc.container;
    this.clock = options.clock ?? systemClock;
    this.startedAt = this.clock.now();
    this.log = options.logger(proc.container.id);
  }

  get role(): RoleName {
    return this.process.host!.role;
  }

  get dropped(): number {
    return this.process.dropped;
  }

  get discoveryPort(): number {
    return this.process.host!.discoveryPort;
  }

  /** The host agent's ipc endpoint, where the host's containers register. */
  get discoveryIpc(): string {
    return this.process.host!.discoveryIpc;
  }

  /** Starts the node, binds its endpoints, joins the host. Throws what the component's init throws. */
  static async start(options: ContainerProcessOptions): Promise<ContainerProcess> {
    const id = options.id ?? `${options.component.name}@${options.host}-${process.pid}-${randomBytes(2).toString("hex")}`;
    let self: ContainerProcess | undefined;
    const proc = await NodeBinProcess.create({
      id,
      host: options.host,
      network: options.network,
      runtimeDir: options.runtimeDir,
      logger: options.logger,
      // A node starting with its peers finds them once they registered.
      settleMs: options.settleMs ?? 2000,
      nodeEndpoints: true,
      pruneConnections: true,
      ...(options.bind ? { bind: options.bind } : {}),
      ...(options.security ? { security: options.security } : {}),
      ...(options.advertise ? { advertise: options.advertise } : {}),
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.zmq ? { zmq: options.zmq } : {}),
      ...(options.interceptors ? { interceptors: options.interceptors } : {}),
      hostRole: {
        seeds: options.seeds,
        ...(options.discoveryPort ? { discoveryPort: options.discoveryPort } : {}),
        ...(options.leaseMs ? { leaseMs: options.leaseMs } : {}),
        ...(options.renewMs ? { renewMs: options.renewMs } : {}),
        ...(options.makeGossip ? { makeGossip: options.makeGossip } : {}),
      },
      // A caller found this node full: the governor that started this process decides whether to grow.
      ...(options.governor ? { onCapacity: (wanted: CapacityRequest) => self?.forwardCapacity(wanted, options.governor!) } : {}),
    });
    const p = (self = new ContainerProcess(options, proc));
    try {
      await p.startNode();
      await proc.host!.join();
    } catch (err) {
      await p.close();
      throw err;
    }
    return p;
  }

  private forwardCapacity(wanted: CapacityRequest, governor: string): void {
    try {
      this.container.sendControl(GOVERNOR_CAPACITY, wanted, { via: governor });
    } catch (err) {
      this.log.debug(`capacity request not passed to the governor: ${NodeBinError.from(err)}`);
    }
  }

  private async startNode(): Promise<void> {
    const holdMs = this.options.holdMs ?? 30_000;
    await this.container.addComponent(this.options.component, 1, this.options.hold ? { hold: true } : {});
    this.serveChildControl();
    if (this.options.hold) this.armHold(holdMs);
  }

  private armHold(holdMs: number): void {
    this.holdTimer?.cancel();
    this.holdTimer = this.clock.after(holdMs, () => {
      const node = this.node();
      if (!node?.isHeld) return;
      this.log.warn(`no state arrived within ${holdMs} ms: serving with empty state`);
      node.resume();
    });
  }

  /** This process's node (undefined once it left). */
  private node(): ComponentNode | undefined {
    return this.container.localNodes()[0];
  }

  /** What a governor asks of its children: Ping, Drain, ImportState, Release, Resume (YieldAgent is the host role's). */
  private serveChildControl(): void {
    const c = this.container;
    const control = c.control;
    control.serve(PING, () => {
      const node = this.node();
      const s = node?.getStats();
      return {
        pid: process.pid,
        container: c.id,
        node: node?.id ?? "",
        component: this.options.component.name,
        version: this.options.component.manifest.version,
        phase: this.handOver ? "handing-over" : (s?.phase ?? "closed"),
        handled: s?.handled ?? 0,
        failed: s?.failed ?? 0,
        rejected: s?.rejected ?? 0,
        queued: s?.queued ?? 0,
        capacity: s?.capacity ?? 0,
        queueWaitMs: s?.queueWaitMs ?? 0,
        idleMs: s?.idleMs ?? 0,
        uptimeMs: this.clock.now() - this.startedAt,
        rssBytes: process.memoryUsage().rss,
        endpoints: c.endpoints,
        role: this.role,
        min: this.options.component.manifest.limits.min,
        max: this.options.component.manifest.limits.max,
        refused: this.process.refused(),
        ...(this.options.callStats ? this.options.callStats() : { calls: [], callBuckets: [] }),
      };
    });
    control.serve(DRAIN, async ({ exportState }) => {
      const node = this.node();
      if (!node) throw new NodeBinError("FAILED_PRECONDITION", `${c.id} has no node left to drain`);
      if (this.handOver) throw new NodeBinError("FAILED_PRECONDITION", `${node.id} is drained already, waiting for Release or Resume`);
      // Out of the table first (the agent hears it with the next renewal, sent now), then
      // refuse new messages as unhandled (callers re-route), finish the queue, hand over.
      c.table.remove(node.id);
      this.process.host!.renewNow();
      this.log.info(`draining ${node.id}${exportState ? " for a hand-over" : ""}`);
      if (!exportState) {
        await node.close();
        return { state: new Uint8Array(), handled: node.getStats().handled };
      }
      return { state: await this.exportSealed(node), handled: node.getStats().handled };
    });
    control.serve(RELEASE, async () => {
      const node = this.node();
      const h = this.handOver;
      if (!h) {
        // Asked twice, or for a node that closed: done already. A node that serves took its state back.
        if (node && !node.isSuspended && node.getStats().phase === "serving") {
          throw new NodeBinError("FAILED_PRECONDITION", `${node.id} is not handing over (it serves again, with its state)`);
        }
        return {};
      }
      this.handOver = undefined;
      h.timer.cancel();
      this.log.info(`${h.node.id}: its successor took the state; shutting down`);
      await h.node.close();
      return {};
    });
    control.serve(RESUME, ({ reason }) => {
      const node = this.node();
      if (this.handOver) this.takeBack(reason || "the governor said so");
      else if (!node || node.getStats().phase !== "serving") throw new NodeBinError("FAILED_PRECONDITION", `${c.id} has no node to resume`);
      return {};
    });
    control.serve(IMPORT_STATE, async ({ state }) => {
      const node = this.node();
      if (!node) throw new NodeBinError("FAILED_PRECONDITION", `${c.id} has no node`);
      // Importing into a node already serving would overwrite what it did since.
      if (!node.isHeld) throw new NodeBinError("FAILED_PRECONDITION", `${node.id} is not held (it serves already): state not imported`);
      const name = this.options.component.name;
      let snapshot: unknown;
      if (state.length) {
        // Opened before anything reads it: a payload that does not authenticate under this
        // process's keys is refused unread (UNAUTHENTICATED), and the node stays held.
        const plain = open(this.process.security.sealRing, state, stateContext(name));
        try {
          snapshot = deserialize(plain);
        } catch (err) {
          throw new NodeBinError("INVALID_ARGUMENT", `state cannot be read: ${(err as Error).message}`);
        }
      }
      this.holdTimer?.cancel();
      if (state.length) {
        try {
          await node.importState(snapshot);
        } catch (err) {
          // Still held: the governor gives the state back to the old node; a governor gone leaves the hold to run out.
          this.armHold(this.options.holdMs ?? 30_000);
          throw new NodeBinError("INTERNAL", `${name}: importState failed: ${(err as Error)?.message ?? String(err)}`, { origin: node.id, cause: err });
        }
      }
      node.resume();
      this.log.info(`${node.id} took over ${state.length} bytes of sealed state and serves`);
      return {};
    });
  }

  /**
   * The first phase of a hand-over: the node finishes its queue and stays
   * suspended with its state; its snapshot goes out serialized and sealed
   * (empty when there is none). Throws INTERNAL when the state cannot be
   * exported or serialized: the node then serves again, back in the table.
   */
  private async exportSealed(node: ComponentNode): Promise<Uint8Array> {
    const c = this.container;
    let sealed: Uint8Array;
    try {
      const snapshot = await node.suspend();
      let plain: Uint8Array | undefined;
      if (snapshot !== undefined) {
        try {
          plain = serialize(snapshot);
        } catch (err) {
          throw new NodeBinError("INTERNAL", `${node.component.name}: the exported state cannot be transferred (${(err as Error).message}); return plain data from exportState`, { cause: err });
        }
      }
      sealed = plain ? seal(this.process.security.sealRing, plain, stateContext(node.component.name)) : new Uint8Array();
    } catch (err) {
      // Nothing left this process: the node keeps its state and serves on.
      if (node.reopen() || node.getStats().phase === "serving") {
        c.announce(node.id);
        this.process.host!.renewNow();
      }
      this.log.warn(`${node.id} did not hand over, serving again: ${NodeBinError.from(err)}`);
      throw err;
    }
    const handOverMs = this.options.handOverMs ?? 60_000;
    this.handOver = {
      node,
      timer: this.clock.after(handOverMs, () => this.takeBack(`neither Release nor Resume within ${handOverMs} ms (is the governor gone?)`)),
    };
    return sealed;
  }

  /** The hand-over did not happen: the node takes its state back, returns to the table and serves. */
  private takeBack(why: string): void {
    const h = this.handOver;
    if (!h) return;
    this.handOver = undefined;
    h.timer.cancel();
    if (!h.node.reopen()) return;
    this.container.announce(h.node.id);
    this.process.host!.renewNow();
    this.log.warn(`${h.node.id} kept its state and serves again: ${why}`);
  }

  /** Where this process can be reached, and its role on the host. */
  describe(): { id: string; node: string; endpoints: string[]; role: RoleName; discovery?: string[] } {
    const discovery = this.process.host!.discoveryEndpoints;
    return {
      id: this.container.id,
      node: this.container.localNodes()[0]?.id ?? "",
      endpoints: this.container.endpoints,
      role: this.role,
      ...(discovery.length ? { discovery } : {}),
    };
  }

  /**
   * Leaves cleanly: deregisters (so callers stop choosing this node), drains
   * the node (new messages get UNAVAILABLE, queued ones are finished), closes
   * every socket. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.holdTimer?.cancel();
    this.handOver?.timer.cancel();
    this.handOver = undefined;
    await this.process.close();
  }
}

/** What a state payload is sealed for: its component (a payload of one component does not open as another's). */
export function stateContext(component: string): string {
  return `state ${component}`;
}
