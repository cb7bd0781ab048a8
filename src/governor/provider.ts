/**
 * New hosts on demand: the decision loop of a governor with a provider plugin
 * (kind `provider`, strategy.ts HostProvider; the built-in runs a user's
 * commands, plugins/provider-command.ts). The plugin only does what this
 * loop decides; the guard rails are all here, after Kubernetes'
 * cluster-autoscaler (scale up on work that cannot be placed, scale down a
 * node idle past a delay) and Ray's node providers (the provider only
 * creates and terminates).
 *
 * Launch, when all of these hold:
 * - demand: capacity requests that no host in reach had room for (the
 *   elastic loop's UnmetDemand) keep coming: one at least in the last
 *   `providerSustainMs`, the first of the streak at least that long ago;
 * - every host of this network that gossips a capacity has 0 free slots,
 *   without a break for `providerSustainMs` (judged every round);
 * - this governor decides for the network: of the hosts whose capacity says
 *   `provider: true`, the one with the smallest host id (plain code-point
 *   order, the same on every host). Two governors with a provider so never
 *   both launch for one shortage; the others hand their unmet requests to
 *   the decider (as a capacity request, to its discovery endpoint), and so
 *   do governors without a provider (UnmetForwarder). The decider changes
 *   when its record goes (it left) or a smaller one appears;
 *
 * and the guard rails allow it (each refusal logged and counted by reason):
 * - `in-flight`: at most one launch at a time, from running the command
 *   until the launched host shows up in this network's gossip, or
 *   LAUNCH_TIMEOUT_MS after the command finished (then it failed);
 * - `max-hosts`: at most `providerMaxHosts` launched hosts alive;
 * - `cooldown`: nothing launched or released for `providerCooldownMs` after
 *   a launch or a release;
 * - `backoff`: after a failed launch (the command failed, or the host never
 *   came), the cooldown doubled per failure in a row (at most BACKOFF_MAX_MS).
 *
 * Which host a launch made: the id the plugin answered (the command's last
 * stdout line), else the first host of this network seen in gossip after the
 * launch began that was not known before it.
 *
 * Release a launched host that runs no node (its gossiped capacity lists no
 * component with nodes > 0: spilled components shrink to none when idle) for
 * `providerIdleMs`, one release at a time, within the cooldown; one that
 * left the gossip is forgotten (nothing run: it is gone already).
 *
 * The hosts it launched are kept in the governor's state directory
 * (LaunchedHostsFile), so that a restarted or upgraded governor still counts
 * them against `max-hosts` and releases them when idle: a cloud machine
 * nobody remembers is paid for until someone notices. After a restart a
 * remembered host gets RESTORE_GRACE_MS to show up in the new table (gossip
 * converges in seconds) before it is taken as gone. What stays in memory: a
 * launch in flight (its command is ended with the governor; a host it made
 * after all is not this loop's), the cooldown and the counters.
 */
import type { Logger } from "../component/context.ts";
import type { ProviderSample } from "../metrics/sources.ts";
import { freeSlots } from "../membership/capacity.ts";
import { networkLabel } from "../membership/network-name.ts";
import type { Clock, Timer } from "../platform/clock.ts";
import { StateFile } from "./state-file.ts";
import type { CapacityRequest, HostSummary } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import type { UnmetDemand } from "./ports.ts";
import type { ProviderSettings } from "./settings.ts";
import type { HostProvider } from "./strategy.ts";

/** A launched host that has not shown up this long after the command finished: the launch failed. */
export const LAUNCH_TIMEOUT_MS = 120_000;
/** Longest backoff after launches failed in a row. */
export const BACKOFF_MAX_MS = 30 * 60_000;
/** One decision round this often (on the governor's clock). */
export const PROVIDER_TICK_MS = 1000;
/** A refusal for the same reason is logged again at most this often (it is counted every round). */
const SKIP_LOG_MS = 30_000;
/** New hosts remembered while a launch is in flight (what is read of the gossip is bounded). */
const MAX_SEEN = 64;
const HOST_ID_MAX = 256;
/** A host remembered from before a restart is taken as gone if it is not in the table this long after. */
export const RESTORE_GRACE_MS = 60_000;
/** Remembered hosts read back at most (the file is ours, but it is read as input). */
const MAX_REMEMBERED = 1024;

export type LaunchSkip = "not-decider" | "in-flight" | "max-hosts" | "cooldown" | "backoff";
export type ReleaseSkip = "in-flight" | "cooldown" | "backoff";

/** Everything the loop counted since the governor started (status and metrics). */
export interface ProviderCounters {
  /** Capacity requests that reached this loop unmet (scopes a new host could serve). */
  unmet: number;
  /** ... of them handed to the deciding governor of the network. */
  forwarded: number;
  launches: { started: number; succeeded: number; failed: number };
  releases: { started: number; succeeded: number; failed: number; gone: number };
  skipped: { launch: Record<LaunchSkip, number>; release: Record<ReleaseSkip, number> };
}

/** The loop as `governor status --json` shows it (under `provider`). */
export interface ProviderStatus {
  name: string;
  /** The host id deciding for this network (this one, or another governor with a provider). */
  decider: string;
  settings: ProviderSettings;
  /** The hosts this loop launched that are alive, with how long each has run no node. */
  hosts: { host: string; launchedAt: number; idleMs: number | null; releasing: boolean; restored?: true }[];
  /** The launch in flight: its command running, or its host awaited in gossip. */
  inFlight?: { since: number; phase: "command" | "joining"; host?: string };
  /** Since when every host of the network is full (absent: one has room). */
  fullSince?: number;
  /** The current streak of unmet requests (absent: none in the last sustain time). */
  demand?: { since: number; last: number; component: string };
  cooldownLeftMs: number;
  backoffLeftMs: number;
  lastDecision?: string;
  counters: ProviderCounters;
}

export interface ProviderLoopOptions {
  provider: HostProvider;
  clock: Clock;
  /** This host's id and network. */
  host: string;
  network: string;
  /** The host summaries this governor's table holds (its own among them). */
  hosts(): readonly HostSummary[];
  /** NODEBIN_SEEDS: this governor's advertised discovery endpoint first, then its seeds ("ip:port"). */
  seeds(): string[];
  /** The live settings (read every round: `governor set` takes effect at once). */
  settings: ProviderSettings;
  log: Logger;
  /** Sends an unmet request on to the deciding governor's discovery endpoint (a capacity request). Throws when it cannot be sent. */
  forward?(request: CapacityRequest, endpoint: string): void;
  launchTimeoutMs?: number;
  /** Where the launched hosts are kept across restarts (absent: in memory only). */
  store?: LaunchedStore;
}

/** A launched host as kept across restarts. */
export interface RememberedHost {
  host: string;
  network: string;
  /** When it joined (the clock's ms: epoch ms on the system clock). */
  launchedAt: number;
}

export interface LaunchedStore {
  read(): RememberedHost[];
  /** May throw (a full disk): the loop logs it and goes on. */
  write(hosts: RememberedHost[]): void;
}

/** The launched hosts in a JSON file of the governor's state directory (state-file.ts). */
export class LaunchedHostsFile extends StateFile<RememberedHost> implements LaunchedStore {
  constructor(path: string) {
    super(path, "hosts", isRemembered, MAX_REMEMBERED);
  }
}

function isRemembered(r: unknown): r is RememberedHost {
  const x = r as RememberedHost;
  return typeof x === "object" && x !== null && isHostId(x.host) && typeof x.network === "string" && Number.isFinite(x.launchedAt);
}

function isHostId(h: unknown): h is string {
  return typeof h === "string" && h.length > 0 && h.length <= HOST_ID_MAX && h.trim() === h;
}

interface Launch {
  startedAt: number;
  /** Host ids known when it began: none of them is the new one. */
  known: Set<string>;
  /** Hosts of this network first seen since, in the order seen. */
  seen: string[];
  /** When the plugin's launch resolved (undefined: still running). */
  doneAt?: number;
  /** The id the plugin answered. */
  named?: string;
}

interface Launched {
  launchedAt: number;
  idleSince?: number;
  releasing: boolean;
  backoffUntil: number;
  releaseFailures: number;
  /** Read back from the store after a restart, and not yet seen in this governor's table since. */
  restoredAt?: number;
}

/** The network's deciding governor: of `self` and the hosts of `network` whose capacity says provider, the smallest id. */
export function deciderOf(self: string, network: string, hosts: readonly HostSummary[], selfProvides = true): string | undefined {
  let best: string | undefined = selfProvides ? self : undefined;
  for (const h of hosts) {
    if (h.network !== network || !h.capacity?.provider) continue;
    if (best === undefined || h.host < best) best = h.host;
  }
  return best;
}

/** Whether a request that went unmet could be served by a new host of this network (not one scoped to a process or host). */
function newHostHelps(request: CapacityRequest): boolean {
  return request.scope !== "host" && request.scope !== "process";
}

/**
 * Hands unmet requests of a governor without a provider to the network's
 * deciding governor (the smallest host id whose capacity says provider),
 * when there is one and the request has not been there.
 */
export class UnmetForwarder implements UnmetDemand {
  forwarded = 0;

  constructor(private readonly options: Pick<ProviderLoopOptions, "host" | "network" | "hosts" | "forward" | "log">) {}

  unmet(request: CapacityRequest): void {
    const { host, network, hosts, forward, log } = this.options;
    if (!forward || !newHostHelps(request)) return;
    const decider = deciderOf(host, network, hosts(), false);
    if (!decider || decider === host || request.visited.includes(decider)) return;
    const endpoint = hosts().find((h) => h.host === decider)?.endpoint;
    if (!endpoint) return;
    try {
      forward({ ...request, visited: [...new Set([...request.visited, host])] }, endpoint);
      this.forwarded++;
      log.debug(`capacity wanted for ${request.component}, unmet in this network: handed to ${decider}, whose provider may launch a host`);
    } catch (err) {
      log.debug(`unmet capacity request not handed to ${decider}: ${NodeBinError.from(err).message}`);
    }
  }
}

export class ProviderLoop implements UnmetDemand {
  private timer: Timer | undefined;
  private stopped = false;
  private launch: Launch | undefined;
  private readonly launched = new Map<string, Launched>();
  private fullSince: number | undefined;
  private demand: { since: number; last: number; component: string } | undefined;
  private cooldownUntil = 0;
  private backoffUntil = 0;
  private launchFailures = 0;
  private lastDecision: string | undefined;
  private readonly logged = new Map<string, number>();
  private noReleaseLogged = false;
  readonly counters: ProviderCounters = {
    unmet: 0,
    forwarded: 0,
    launches: { started: 0, succeeded: 0, failed: 0 },
    releases: { started: 0, succeeded: 0, failed: 0, gone: 0 },
    skipped: { launch: { "not-decider": 0, "in-flight": 0, "max-hosts": 0, cooldown: 0, backoff: 0 }, release: { "in-flight": 0, cooldown: 0, backoff: 0 } },
  };

  constructor(private readonly options: ProviderLoopOptions) {}

  private get settings(): ProviderSettings {
    return this.options.settings;
  }

  /** Takes back the hosts launched before a restart, then runs a round every PROVIDER_TICK_MS on the governor's clock. */
  start(): void {
    this.restore();
    this.timer = this.options.clock.every(PROVIDER_TICK_MS, () => this.tick());
  }

  /** Stops the rounds and ends what the plugin still runs (a command: killed by its pid). */
  stop(): Promise<void> {
    return (this.stopping ??= this.close());
  }

  private stopping: Promise<void> | undefined;

  private async close(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    try {
      await this.options.provider.close?.();
    } catch (err) {
      this.options.log.warn(`provider ${this.options.provider.name} did not close cleanly: ${NodeBinError.from(err).message}`);
    }
  }

  private restore(): void {
    const { store, network, clock, log } = this.options;
    if (!store) return;
    let remembered: RememberedHost[];
    try {
      remembered = store.read();
    } catch (err) {
      log.warn(`the launched hosts kept from before could not be read: ${NodeBinError.from(err).message}`);
      return;
    }
    const now = clock.now();
    const other = remembered.filter((r) => r.network !== network);
    for (const r of remembered) {
      if (r.network === network) this.launched.set(r.host, { launchedAt: r.launchedAt, releasing: false, backoffUntil: 0, releaseFailures: 0, restoredAt: now });
    }
    if (this.launched.size > 0) this.decided(`remembered ${this.launched.size} launched host(s) from before this governor started: ${[...this.launched.keys()].join(", ")}; each released when idle, or forgotten if not seen within ${RESTORE_GRACE_MS} ms`);
    // Launched for another network (this governor was started with another --network since): not this loop's to release.
    if (other.length > 0) {
      log.warn(`forgetting ${other.length} launched host(s) of another network (${[...new Set(other.map((r) => networkLabel(r.network)))].join(", ")}): ${other.map((r) => r.host).join(", ")}; release them by hand if they still run`);
      this.remember();
    }
  }

  /** Writes the launched hosts to the store (after each change). */
  private remember(): void {
    const { store, network, log } = this.options;
    if (!store) return;
    try {
      store.write([...this.launched.entries()].map(([host, e]) => ({ host, network, launchedAt: e.launchedAt })));
    } catch (err) {
      log.warn(`the launched hosts could not be kept for a restart: ${NodeBinError.from(err).message}`);
    }
  }

  /** The elastic loop found no room for `request` anywhere in reach. */
  unmet(request: CapacityRequest, now: number): void {
    if (this.stopped || !newHostHelps(request)) return;
    const { host, network, hosts, forward } = this.options;
    this.counters.unmet++;
    const decider = deciderOf(host, network, hosts());
    if (decider !== host && decider !== undefined && forward && !request.visited.includes(decider)) {
      const endpoint = hosts().find((h) => h.host === decider)?.endpoint;
      if (endpoint) {
        try {
          forward({ ...request, visited: [...new Set([...request.visited, host])] }, endpoint);
          this.counters.forwarded++;
          return;
        } catch (err) {
          this.options.log.debug(`unmet capacity request not handed to ${decider}: ${NodeBinError.from(err).message}`);
        }
      }
    }
    const d = this.demand;
    if (!d || now - d.last > this.settings.providerSustainMs) this.demand = { since: now, last: now, component: request.component };
    else {
      d.last = now;
      d.component = request.component;
    }
  }

  /** One round (never throws: a failed round is logged, the next one runs). */
  tick(): void {
    if (this.stopped) return;
    try {
      const now = this.options.clock.now();
      const hosts = this.options.hosts();
      this.judgeFull(hosts, now);
      this.followLaunch(hosts, now);
      this.releases(hosts, now);
      this.decideLaunch(hosts, now);
    } catch (err) {
      this.options.log.error(`provider round failed: ${(err as Error).stack ?? err}`);
    }
  }

  status(): ProviderStatus {
    const now = this.options.clock.now();
    const hosts = this.options.hosts();
    const l = this.launch;
    return {
      name: this.options.provider.name,
      decider: deciderOf(this.options.host, this.options.network, hosts) ?? this.options.host,
      settings: { ...pickProvider(this.settings) },
      hosts: [...this.launched.entries()].map(([host, e]) => ({ host, launchedAt: e.launchedAt, idleMs: e.idleSince === undefined ? null : now - e.idleSince, releasing: e.releasing, ...(e.restoredAt !== undefined ? { restored: true as const } : {}) })),
      ...(l ? { inFlight: { since: l.startedAt, phase: l.doneAt === undefined ? ("command" as const) : ("joining" as const), ...(l.named ? { host: l.named } : {}) } } : {}),
      ...(this.fullSince !== undefined ? { fullSince: this.fullSince } : {}),
      ...(this.demand && now - this.demand.last <= this.settings.providerSustainMs ? { demand: { ...this.demand } } : {}),
      cooldownLeftMs: Math.max(0, this.cooldownUntil - now),
      backoffLeftMs: Math.max(0, this.backoffUntil - now),
      ...(this.lastDecision ? { lastDecision: this.lastDecision } : {}),
      counters: structuredClone(this.counters),
    };
  }

  /** What /metrics shows of it (metrics/sources.ts). */
  sample(): ProviderSample {
    const c = this.counters;
    return {
      hosts: this.launched.size,
      unmet: c.unmet,
      launches: { ...c.launches },
      releases: { ...c.releases },
      skipped: (["launch", "release"] as const).flatMap((action) => Object.entries(c.skipped[action]).map(([reason, count]) => ({ action, reason, count }))),
    };
  }

  private networkHosts(hosts: readonly HostSummary[]): HostSummary[] {
    return hosts.filter((h) => h.network === this.options.network);
  }

  private judgeFull(hosts: readonly HostSummary[], now: number): void {
    const governed = this.networkHosts(hosts).filter((h) => h.capacity);
    const full = governed.length > 0 && governed.every((h) => freeSlots(h.capacity) === 0);
    if (!full) this.fullSince = undefined;
    else this.fullSince ??= now;
  }

  /** The launch in flight: its host found in gossip (success), or given up on (failure). */
  private followLaunch(hosts: readonly HostSummary[], now: number): void {
    const l = this.launch;
    if (!l) return;
    const mine = this.networkHosts(hosts);
    for (const h of mine) if (!l.known.has(h.host) && !l.seen.includes(h.host) && l.seen.length < MAX_SEEN) l.seen.push(h.host);
    if (l.doneAt === undefined) return; // the command runs (bounded by the plugin's own timeout)
    const host = l.named ?? l.seen.find((h) => !this.launched.has(h));
    if (host && mine.some((h) => h.host === host)) {
      this.launch = undefined;
      this.launchFailures = 0;
      this.cooldownUntil = now + this.settings.providerCooldownMs;
      this.launched.set(host, { launchedAt: now, releasing: false, backoffUntil: 0, releaseFailures: 0 });
      this.remember();
      this.counters.launches.succeeded++;
      this.decided(`launched host ${host} joined network ${this.label} ${now - l.startedAt} ms after the launch began${l.named ? "" : " (the first new host seen: the command named none)"}; ${this.launched.size}/${this.settings.providerMaxHosts} launched hosts`);
      return;
    }
    const timeout = this.options.launchTimeoutMs ?? LAUNCH_TIMEOUT_MS;
    if (now - l.doneAt >= timeout) {
      this.launchFailed(now, `${l.named ? `host ${l.named}` : "no new host"} did not join network ${this.label} within ${timeout} ms of the launch command's end`);
    }
  }

  private launchFailed(now: number, why: string): void {
    this.launch = undefined;
    this.launchFailures++;
    this.counters.launches.failed++;
    const backoff = Math.min(BACKOFF_MAX_MS, Math.max(this.settings.providerCooldownMs, this.settings.providerCooldownMs * 2 ** Math.min(20, this.launchFailures - 1)));
    this.backoffUntil = now + backoff;
    this.lastDecision = `launch failed: ${why}; next launch in ${backoff} ms at the earliest (${this.launchFailures} failure(s) in a row)`;
    this.options.log.warn(this.lastDecision);
  }

  private releases(hosts: readonly HostSummary[], now: number): void {
    const { providerIdleMs, providerCooldownMs } = this.settings;
    const releasing = [...this.launched.values()].some((e) => e.releasing);
    for (const [host, e] of this.launched) {
      const summary = hosts.find((h) => h.host === host);
      if (!summary) {
        if (e.releasing) continue; // its release command is taking it down
        if (e.restoredAt !== undefined && now - e.restoredAt < RESTORE_GRACE_MS) continue; // not in this governor's table yet
        this.launched.delete(host);
        this.remember();
        this.counters.releases.gone++;
        const why = e.restoredAt !== undefined ? `(remembered from before this governor started) did not show up in the network's gossip within ${RESTORE_GRACE_MS} ms` : "left the network's gossip";
        this.decided(`launched host ${host} ${why}: forgotten (nothing to release); ${this.launched.size}/${this.settings.providerMaxHosts} launched hosts`);
        continue;
      }
      e.restoredAt = undefined;
      const busy = !summary.capacity || summary.capacity.components.some((c) => c.nodes > 0);
      if (busy) {
        e.idleSince = undefined;
        continue;
      }
      e.idleSince ??= now;
      if (e.releasing || now - e.idleSince < providerIdleMs) continue;
      const release = this.options.provider.release?.bind(this.options.provider);
      if (!release) {
        if (!this.noReleaseLogged) this.decided(`launched host ${host} has run no node for ${now - e.idleSince} ms, but provider ${this.options.provider.name} has no release (no --provider-release-command): it stays`);
        this.noReleaseLogged = true;
        continue;
      }
      if (releasing) this.skip("release", "in-flight", `releasing host ${host} (idle ${now - e.idleSince} ms) waits: another release runs`);
      else if (now < this.cooldownUntil) this.skip("release", "cooldown", `releasing host ${host} (idle ${now - e.idleSince} ms) waits: cooldown, ${this.cooldownUntil - now} ms left`);
      else if (now < e.backoffUntil) this.skip("release", "backoff", `releasing host ${host} waits: its last release failed, ${e.backoffUntil - now} ms of backoff left`);
      else {
        const reason = `host ${host} has run no node for ${now - e.idleSince} ms (idle time ${providerIdleMs} ms)`;
        e.releasing = true;
        this.counters.releases.started++;
        this.decided(`releasing ${reason}`);
        void release({ host, network: this.options.network, reason }).then(
          () => {
            const at = this.options.clock.now();
            this.launched.delete(host);
            this.remember();
            this.counters.releases.succeeded++;
            this.cooldownUntil = at + providerCooldownMs;
            this.decided(`released host ${host}; ${this.launched.size}/${this.settings.providerMaxHosts} launched hosts`);
          },
          (err: unknown) => {
            const at = this.options.clock.now();
            e.releasing = false;
            e.releaseFailures++;
            this.counters.releases.failed++;
            const backoff = Math.min(BACKOFF_MAX_MS, providerCooldownMs * 2 ** Math.min(20, e.releaseFailures - 1));
            e.backoffUntil = at + backoff;
            this.lastDecision = `release of host ${host} failed (${describe(err)}); tried again in ${backoff} ms at the earliest`;
            this.options.log.warn(this.lastDecision);
          },
        );
        return; // one release at a time
      }
    }
  }

  private decideLaunch(hosts: readonly HostSummary[], now: number): void {
    const { providerSustainMs, providerMaxHosts } = this.settings;
    const d = this.demand;
    if (!d || now - d.last > providerSustainMs) return; // no unmet demand now
    if (now - d.since < providerSustainMs) return; // not sustained yet
    if (this.fullSince === undefined || now - this.fullSince < providerSustainMs) return; // a host has room, or had lately
    const governed = this.networkHosts(hosts).filter((h) => h.capacity);
    const why = `every host of network ${this.label} full (${governed.length} host(s), 0 free slots) for ${now - this.fullSince} ms, capacity requests unmet for ${now - d.since} ms (last for ${d.component})`;
    const decider = deciderOf(this.options.host, this.options.network, hosts);
    if (decider !== this.options.host) this.skip("launch", "not-decider", `${why}: host ${decider} decides for this network (the smallest id with a provider)`);
    else if (this.launch) this.skip("launch", "in-flight", `${why}: a launch is in flight since ${now - this.launch.startedAt} ms`);
    else if (this.launched.size >= providerMaxHosts) this.skip("launch", "max-hosts", `${why}: ${this.launched.size} launched hosts alive, the most allowed (${providerMaxHosts})`);
    else if (now < this.cooldownUntil) this.skip("launch", "cooldown", `${why}: cooldown, ${this.cooldownUntil - now} ms left`);
    else if (now < this.backoffUntil) this.skip("launch", "backoff", `${why}: ${this.launchFailures} failed launch(es) in a row, ${this.backoffUntil - now} ms of backoff left`);
    else this.startLaunch(hosts, now, why);
  }

  private startLaunch(hosts: readonly HostSummary[], now: number, reason: string): void {
    const l: Launch = { startedAt: now, known: new Set(hosts.map((h) => h.host)), seen: [] };
    this.launch = l;
    this.counters.launches.started++;
    const seeds = this.options.seeds();
    this.decided(`launching a host: ${reason}; seeds ${seeds.join(",") || "none"}`);
    let pending: Promise<{ host?: string }>;
    try {
      pending = Promise.resolve(this.options.provider.launch({ seeds, network: this.options.network, reason }));
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending.then(
      (answer) => {
        if (this.launch !== l) return;
        l.doneAt = this.options.clock.now();
        const named = isHostId(answer?.host) ? answer.host : undefined;
        if (named) l.named = named;
        this.options.log.info(`launch command done after ${l.doneAt - l.startedAt} ms: ${named ? `host ${named}` : "no host named: the first new host to join is taken as it"}; waiting for it to join`);
        this.followLaunch(this.options.hosts(), l.doneAt);
      },
      (err: unknown) => {
        if (this.launch !== l) return;
        this.launchFailed(this.options.clock.now(), `provider ${this.options.provider.name}: ${describe(err)}`);
      },
    );
  }

  private get label(): string {
    return networkLabel(this.options.network);
  }

  /** A decision: logged at info and kept for the status. */
  private decided(line: string): void {
    this.lastDecision = line;
    this.options.log.info(line);
  }

  /** A guard rail held: counted every time, logged when its reason is new or SKIP_LOG_MS after the last such line. */
  private skip<A extends "launch" | "release">(action: A, reason: A extends "launch" ? LaunchSkip : ReleaseSkip, line: string): void {
    (this.counters.skipped[action] as Record<string, number>)[reason]!++;
    const key = `${action} ${reason}`;
    const now = this.options.clock.now();
    const last = this.logged.get(key);
    this.lastDecision = `${action} skipped (${reason}): ${line}`;
    if (last !== undefined && now - last < SKIP_LOG_MS && this.lastLoggedKey === key) return;
    this.logged.set(key, now);
    this.lastLoggedKey = key;
    this.options.log.info(this.lastDecision);
  }

  private lastLoggedKey: string | undefined;
}

function pickProvider(s: ProviderSettings): ProviderSettings {
  return { providerMaxHosts: s.providerMaxHosts, providerCooldownMs: s.providerCooldownMs, providerSustainMs: s.providerSustainMs, providerIdleMs: s.providerIdleMs };
}

function describe(err: unknown): string {
  const e = NodeBinError.from(err);
  return `${e.code}: ${e.message}`;
}
