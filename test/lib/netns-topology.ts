/**
 * Several networks on one Linux machine: each network is a bridge of its own
 * with its own random 10.200-250.x.0/24; each host is a network namespace with
 * one leg (an interface: eth0, eth1, ... in the order of its networks) on each
 * network it belongs to. A gateway is a host with legs on two (or more)
 * networks. The namespaces have no default route and no forwarding between
 * their legs: a packet crosses from one network to another only if a process
 * in a gateway host carries it (as a node-bin gateway does, at its level).
 *
 *   createTopology(t, { networks: { a: ["h1", "h2"], b: ["h3", "h4"] }, gateways: { gw: ["a", "b"] },
 *                       delays: [{ host: "gw", network: "b", ms: 20 }] })
 *
 * Names, leftovers and teardown are as in netns.ts: every network has its own
 * prefix `nbt<creator pid><two letters>`; a host's namespace is named after its
 * first network's prefix; each leg's interfaces after its own network's. The
 * whole topology is torn down at `t.teardown` (processes by pid, then any
 * process left inside a namespace, then namespaces, legs and bridges), by an
 * exit hook if the process exits without it, and by the next creation's stale
 * cleanup if the process was killed outright.
 *
 * **Hosts added later** (`addHost`, `removeHost`) are made and removed only by
 * the test's own process, so they are in the same cleanup as the rest. A script
 * that runs elsewhere (a provider command started by a governor inside a host)
 * asks for one through a request directory: see netns-host-requests.ts.
 *
 * **Delay on a leg** (`delays`): the kernel's `tc netem` is used where the
 * kernel has it (`sch_netem`). Where it does not (this machine's kernel: "Specified
 * qdisc kind is unknown"; nor `fq`, which an eBPF departure-time delay needs), the
 * leg is made of two tap devices instead of a veth, one inside the host and one
 * on the bridge, joined by a small forwarder process in the caller's namespace
 * (python3, the only language here that opens /dev/net/tun without an addon) that
 * holds every Ethernet frame for the delay in each direction before passing
 * it on. That delays everything on that leg (TCP, ARP, every connection), as a
 * slow link would; it adds the forwarder's own scheduling jitter (about a
 * millisecond) and no loss or bandwidth limit. Where neither is available the leg
 * is a plain veth and `delays` says so (`mechanism: "none"`, with the reason):
 * the test must print it.
 *
 * Cutting a leg (`cut(network)`) takes its bridge-side interface down, as
 * `NetnsHost.cut()` does for a one-bridge host; `cut()` without a network cuts
 * every leg of the host.
 */
import type { ChildProcess } from "node:child_process";
import { execFile, spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { join } from "node:path";
import {
  NAME_PREFIX,
  ProcessSet,
  disableIpv6Here,
  disableIpv6In,
  findIp,
  freshPrefix,
  freshSubnet,
  ip,
  ipBatch,
  killLeftoversIn,
  linkNames,
  namespaceNames,
  netnsUnavailable,
  releasePrefix,
  removeLeftovers,
  settled,
  waitForLine,
  type ExecResult,
  type NetnsHost,
  type Teardown,
} from "./netns-core.ts";

/** The most legs one network may have (hosts on it, gateways included, added ones too). */
export const MAX_LEGS_PER_NETWORK = 32;

export interface TopologyOptions {
  /** Network name -> the hosts that have a leg on it only. Network names: lowercase letters and digits. */
  networks: Record<string, string[]>;
  /** Host name -> the networks it has a leg on (two or more), in order: its first is `address`. */
  gateways?: Record<string, string[]>;
  /** Legs to delay: each frame waits `ms` in each direction (see the file's comment for how). */
  delays?: { host: string; network: string; ms: number }[];
  /** Give each bridge its subnet's .254 so the caller's namespace reaches the hosts. Default false. */
  bridgeAddress?: boolean;
  /** Teardown waits this long after SIGTERM before SIGKILL, and again after SIGKILL. Default 3000 ms. */
  killTimeoutMs?: number;
}

/** One network of a topology: its bridge and subnet. */
export interface TopologyNetwork {
  readonly name: string;
  /** CIDR ("10.213.47.0/24"). */
  readonly subnet: string;
  /** Every interface of this network's legs starts with it. */
  readonly prefix: string;
  readonly bridge: string;
  readonly bridgeAddress: string | undefined;
  /** Names of the hosts with a leg on it now. */
  hosts(): string[];
}

/** What was done for one requested delay. */
export interface LegDelay {
  host: string;
  network: string;
  /** The delay asked for, each direction. */
  ms: number;
  /** "netem": the kernel's; "tap-forwarder": a user-space frame forwarder (see above); "none": not delayed. */
  mechanism: "netem" | "tap-forwarder" | "none";
  /** One line for the test's output: what delays what, or why nothing does. */
  note: string;
  /** The tap forwarder's pid, when that is the mechanism. */
  pid?: number;
}

/** A host of a topology: a NetnsHost (its `address` is its first leg's) with a leg per network. */
export interface TopologyHost extends NetnsHost {
  /** The networks it has a leg on, in leg order (eth0, eth1, ...). */
  readonly networks: readonly string[];
  /** Its address on `network` (throws if it has no leg there). */
  addressOn(network: string): string;
  /** Takes its leg on `network` down at the bridge (every leg if none given); resolves once the port is disabled. */
  cut(network?: string): Promise<void>;
  /** Undoes `cut`; resolves once the leg forwards again at both ends. */
  restore(network?: string): Promise<void>;
}

export interface Topology {
  /** The hosts now (added ones included, removed ones not), in creation order. */
  readonly hosts: TopologyHost[];
  /** The host named `name` (throws if there is none). */
  host(name: string): TopologyHost;
  readonly networks: Readonly<Record<string, TopologyNetwork>>;
  /** One entry per requested delay, saying which mechanism ran. */
  readonly delays: LegDelay[];
  /**
   * Adds a host with a leg on each of `networks` (first is its `address`),
   * optionally delayed (`delays`: network -> ms). Resolves once every leg
   * forwards. Only the test's process calls it (see netns-host-requests.ts for scripts).
   */
  addHost(name: string, networks: string | string[], options?: { delays?: Record<string, number> }): Promise<TopologyHost>;
  /** Stops the host's processes (as teardown does) and deletes its namespace and legs. */
  removeHost(name: string): Promise<void>;
  /** Tears everything down; idempotent; registered with `t.teardown`. Rejects with an AggregateError after trying all. */
  destroy(): Promise<void>;
}

interface Net {
  name: string;
  prefix: string;
  subnet: string;
  base: string;
  bridge: string;
  bridgeAddress: string | undefined;
  nextIndex: number;
}

interface Leg {
  net: Net;
  index: number;
  address: string;
  /** Inside the namespace: eth0, eth1, ... */
  ifname: string;
  ns: string;
  /** Bridge-side interface (veth `h<i>`, or tap `u<i>`), in the caller's namespace. */
  link: string;
  /** Host-side interface before it moves in and is renamed (veth `p<i>`, or tap `t<i>`). */
  peer: string;
  delayMs: number;
  mechanism: LegDelay["mechanism"];
  forwarder?: ChildProcess;
}

interface HostState {
  name: string;
  ns: string;
  legs: Leg[];
  api: TopologyHost;
}

const NAME = /^[a-z][a-z0-9]{0,15}$/;

/**
 * Holds each frame `delay` ms in each direction between two tap devices
 * (argv: tap, tap, ms). Prints "open" once both are attached; exits when its
 * stdin closes (its creator is gone) or a tap is deleted.
 */
const FORWARDER = String.raw`
import fcntl, heapq, os, select, struct, sys, time
def tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", name.encode(), 0x0002 | 0x1000))  # TUNSETIFF, IFF_TAP | IFF_NO_PI
    return fd
a, b = tap(sys.argv[1]), tap(sys.argv[2])
delay = float(sys.argv[3]) / 1000
peer = {a: b, b: a}
held = []
seq = 0
print("open", flush=True)
while True:
    wait = max(0.0, held[0][0] - time.monotonic()) if held else None
    ready, _, _ = select.select([a, b, 0], [], [], wait)
    if 0 in ready and not os.read(0, 4096):
        sys.exit(0)
    now = time.monotonic()
    for fd in ready:
        if fd == 0:
            continue
        for _ in range(256):
            try:
                frame = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                sys.exit(0)
            seq += 1
            if len(held) < 100000:
                heapq.heappush(held, (now + delay, seq, peer[fd], frame))
    now = time.monotonic()
    while held and held[0][0] <= now:
        _, _, fd, frame = heapq.heappop(held)
        try:
            os.write(fd, frame)
        except OSError:
            pass  # that side is down (a cut leg): the frame is lost, as on a cut cable
`;

let delaySupport: Promise<{ mechanism: LegDelay["mechanism"]; python?: string; reason: string }> | undefined;

/** Which delay mechanism this machine has: netem if the kernel has it, else the tap forwarder if python3 and /dev/net/tun exist. */
function probeDelay(): Promise<{ mechanism: LegDelay["mechanism"]; python?: string; reason: string }> {
  delaySupport ??= (async () => {
    const probe = `${NAME_PREFIX}${process.pid}zzqb`;
    let netemError = "";
    try {
      await ip(["link", "add", probe, "type", "bridge"]);
      const tc = spawnSync(findTc() ?? "tc", ["qdisc", "add", "dev", probe, "root", "netem", "delay", "1ms"], { encoding: "utf8", timeout: 5000 });
      if (tc.status === 0) return { mechanism: "netem" as const, reason: "tc netem" };
      netemError = (tc.stderr || tc.error?.message || "failed").trim().split("\n")[0]!;
    } finally {
      await ip(["link", "del", probe]).catch(() => undefined);
    }
    const python = findOnPath("python3");
    let tun = true;
    try {
      accessSync("/dev/net/tun", constants.R_OK | constants.W_OK);
    } catch {
      tun = false;
    }
    if (python && tun) return { mechanism: "tap-forwarder" as const, python, reason: `no netem here (tc: ${netemError})` };
    return { mechanism: "none" as const, reason: `no netem here (tc: ${netemError}), and ${python ? "no /dev/net/tun" : "no python3"} for the tap forwarder` };
  })();
  return delaySupport;
}

function findOnPath(name: string): string | undefined {
  for (const dir of [...(process.env.PATH ?? "").split(":").filter(Boolean), "/usr/sbin", "/sbin", "/usr/bin", "/bin"]) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

function findTc(): string | undefined {
  return findOnPath("tc");
}

/** Runs `tc ...args`; rejects with its stderr. */
function tc(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(findTc() ?? "tc", args, { timeout: 10_000, encoding: "utf8" }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`tc ${args.join(" ")}: ${stderr.trim() || error.message}`));
      else resolve();
    });
  });
}

/**
 * Creates the networks and hosts of `options` and resolves once every leg
 * forwards. Registers `destroy()` with `t.teardown` before creating anything,
 * and destroys what exists if creation fails. Removes leftovers of crashed
 * earlier runs first. Rejects if netns is unavailable (callers check
 * `netnsUnavailable()` to skip instead).
 */
export async function createTopology(t: Teardown, options: TopologyOptions): Promise<Topology> {
  const networkNames = Object.keys(options.networks);
  if (networkNames.length === 0) throw new RangeError("a topology needs at least one network");
  const placement = new Map<string, string[]>();
  for (const [net, names] of Object.entries(options.networks)) {
    if (!NAME.test(net)) throw new RangeError(`network name ${JSON.stringify(net)}: lowercase letters and digits, 16 at most`);
    for (const h of names) {
      if (placement.has(h)) throw new RangeError(`host ${h} is listed twice`);
      placement.set(h, [net]);
    }
  }
  for (const [h, nets] of Object.entries(options.gateways ?? {})) {
    if (placement.has(h)) throw new RangeError(`host ${h} is listed twice`);
    if (nets.length === 0) throw new RangeError(`gateway ${h} has no network`);
    placement.set(h, nets);
  }
  for (const [h, nets] of placement) {
    if (!NAME.test(h)) throw new RangeError(`host name ${JSON.stringify(h)}: lowercase letters and digits, 16 at most`);
    for (const n of nets) if (!(n in options.networks)) throw new RangeError(`host ${h}: no network ${JSON.stringify(n)}`);
    if (new Set(nets).size !== nets.length) throw new RangeError(`host ${h} has two legs on one network`);
  }
  for (const d of options.delays ?? []) {
    if (!placement.get(d.host)?.includes(d.network)) throw new RangeError(`delay: host ${d.host} has no leg on ${d.network}`);
    if (!(d.ms > 0 && d.ms <= 10_000)) throw new RangeError(`delay: ms must be in (0, 10000], got ${d.ms}`);
  }
  const reason = await netnsUnavailable();
  if (reason) throw new Error(reason);
  const killTimeoutMs = options.killTimeoutMs ?? 3_000;

  await removeLeftovers();
  const nets = new Map<string, Net>();
  const subnets: string[] = [];
  for (const name of networkNames) {
    const prefix = await freshPrefix();
    const subnet = await freshSubnet(subnets);
    subnets.push(subnet);
    const base = subnet.split(".").slice(0, 3).join(".");
    nets.set(name, { name, prefix, subnet, base, bridge: `${prefix}br`, bridgeAddress: options.bridgeAddress ? `${base}.254` : undefined, nextIndex: 1 });
  }
  const hosts = new Map<string, HostState>();
  /** Every leg ever made (removed hosts' too, until deleted): what teardown and the exit hook delete. */
  const allLegs = new Set<Leg>();
  const namespaces = new Set<string>();
  const processes = new ProcessSet();
  const delays: LegDelay[] = [];

  const onExit = () => {
    processes.killAllNow();
    const bin = findIp()!;
    for (const ns of namespaces) spawnSync(bin, ["netns", "del", ns], { timeout: 2_000, stdio: "ignore" });
    for (const leg of allLegs) spawnSync(bin, ["link", "del", leg.link], { timeout: 2_000, stdio: "ignore" });
    for (const net of nets.values()) spawnSync(bin, ["link", "del", net.bridge], { timeout: 2_000, stdio: "ignore" });
  };
  process.on("exit", onExit);

  let destroying: Promise<void> | undefined;
  const destroy = () => (destroying ??= teardown());
  t.teardown(destroy);

  async function teardown(): Promise<void> {
    const problems: string[] = [];
    const note = (error: unknown) => void problems.push((error as Error).message);
    try {
      // Processes inside the hosts first; the delay forwarders (caller's namespace) after, so links stay up meanwhile.
      problems.push(...(await processes.stopAll(killTimeoutMs, (ns) => ns !== undefined)));
      const created = new Set(await namespaceNames());
      await Promise.all([...namespaces].filter((ns) => created.has(ns)).map((ns) => killLeftoversIn(ns, killTimeoutMs).catch(note)));
      problems.push(...(await processes.stopAll(killTimeoutMs)));
      // Some never existed if creation failed part-way, and deleting either end of a veth deletes both:
      // failed lines are expected, so the check below, not ip's exit status, says what is left.
      const lines = [
        ...[...namespaces].map((ns) => `netns del ${ns}`),
        ...[...allLegs].flatMap((leg) => [`link del ${leg.link}`, `link del ${leg.peer}`]),
        ...[...nets.values()].map((n) => `link del ${n.bridge}`),
      ];
      await ipBatch(lines, { force: true }).catch(() => undefined);
      const prefixes = [...nets.values()].map((n) => n.prefix);
      const remaining = [...(await namespaceNames()), ...(await linkNames())].filter((name) => prefixes.some((p) => name.startsWith(p)));
      if (remaining.length > 0) problems.push(`still present after teardown: ${remaining.join(", ")}`);
    } catch (error) {
      note(error);
    } finally {
      process.off("exit", onExit);
      for (const n of nets.values()) releasePrefix(n.prefix);
    }
    if (problems.length > 0) throw new AggregateError(problems.map((p) => new Error(p)), `netns teardown of ${[...nets.values()].map((n) => n.prefix).join(", ")}: ${problems.join("; ")}`);
  }

  const legOf = (state: HostState, network: string | undefined): Leg[] => {
    if (network === undefined) return state.legs;
    const leg = state.legs.find((l) => l.net.name === network);
    if (!leg) throw new Error(`host ${state.name} has no leg on network ${network}`);
    return [leg];
  };

  function hostApi(state: HostState): TopologyHost {
    const { ns } = state;
    const live = () => {
      if (destroying) throw new Error("topology is torn down");
      if (!hosts.has(state.name)) throw new Error(`host ${state.name} was removed`);
    };
    return {
      name: state.name,
      ns,
      address: state.legs[0]!.address,
      networks: state.legs.map((l) => l.net.name),
      addressOn: (network) => legOf(state, network)[0]!.address,
      spawn(cmd, args, spawnOptions = {}) {
        live();
        return processes.spawn(ns, cmd, args, spawnOptions);
      },
      exec(cmd, args, execOptions = {}): Promise<ExecResult> {
        try {
          live();
        } catch (error) {
          return Promise.reject(error);
        }
        return processes.exec(ns, cmd, args, execOptions);
      },
      async cut(network) {
        const legs = legOf(state, network);
        await ipBatch(legs.map((l) => `link set ${l.link} down`));
        await Promise.all(legs.map((l) => settled(l, false)));
      },
      async restore(network) {
        const legs = legOf(state, network);
        await ipBatch(legs.map((l) => `link set ${l.link} up`));
        await Promise.all(legs.map((l) => settled(l, true)));
      },
    };
  }

  /** Reserves legs (names and addresses) for a new host; nothing is created yet. */
  function plan(name: string, networks: string[], legDelays: Record<string, number>, support: Awaited<ReturnType<typeof probeDelay>>): HostState {
    if (hosts.has(name)) throw new Error(`host ${name} exists`);
    const legs = networks.map((network, k): Leg => {
      const net = nets.get(network);
      if (!net) throw new Error(`no network ${network}`);
      if (net.nextIndex > MAX_LEGS_PER_NETWORK) throw new RangeError(`network ${network} has had ${MAX_LEGS_PER_NETWORK} legs, the most one may have`);
      const index = net.nextIndex++;
      const delayMs = legDelays[network] ?? 0;
      const mechanism: LegDelay["mechanism"] = delayMs > 0 ? support.mechanism : "none";
      const tap = delayMs > 0 && mechanism === "tap-forwarder";
      return {
        net,
        index,
        address: `${net.base}.${index}`,
        ifname: `eth${k}`,
        ns: "",
        link: `${net.prefix}${tap ? "u" : "h"}${index}`,
        peer: `${net.prefix}${tap ? "t" : "p"}${index}`,
        delayMs,
        mechanism,
      };
    });
    const ns = `${legs[0]!.net.prefix}n${legs[0]!.index}`;
    for (const leg of legs) leg.ns = ns;
    const state = { name, ns, legs } as HostState;
    state.api = hostApi(state);
    return state;
  }

  /** Creates a planned host: namespace, legs (delayed ones with their mechanism), addresses; resolves once every leg forwards. */
  async function build(state: HostState, support: Awaited<ReturnType<typeof probeDelay>>): Promise<void> {
    const { ns, legs } = state;
    namespaces.add(ns);
    for (const leg of legs) allLegs.add(leg);
    await ipBatch([
      `netns add ${ns}`,
      ...legs.map((l) => (l.mechanism === "tap-forwarder" ? `tuntap add dev ${l.link} mode tap` : `link add ${l.link} type veth peer name ${l.peer}`)),
      ...legs.filter((l) => l.mechanism === "tap-forwarder").map((l) => `tuntap add dev ${l.peer} mode tap`),
    ]);
    // Before anything is up, so that no IPv6 autoconfiguration packet is ever sent.
    for (const leg of legs) disableIpv6Here(leg.link);
    await disableIpv6In(ns);
    for (const leg of legs.filter((l) => l.mechanism === "tap-forwarder")) {
      // Both taps are attached here, in the caller's namespace, before the host's one moves in.
      const forwarder = processes.spawn(undefined, support.python!, ["-c", FORWARDER, leg.peer, leg.link, String(leg.delayMs)]);
      leg.forwarder = forwarder;
      await waitForLine(forwarder, /^open$/, 10_000);
    }
    await ipBatch(legs.flatMap((l) => [`link set ${l.peer} netns ${ns}`, `link set ${l.link} master ${l.net.bridge}`, `link set ${l.link} up`]));
    await ipBatch(["link set lo up", ...legs.flatMap((l) => [`link set ${l.peer} name ${l.ifname}`, `addr add ${l.address}/24 dev ${l.ifname}`, `link set ${l.ifname} up`])], { ns });
    for (const leg of legs.filter((l) => l.mechanism === "netem")) {
      // Each end delays what it sends: the host's interface its outgoing frames, the bridge port the incoming ones.
      await tc(["-n", ns, "qdisc", "add", "dev", leg.ifname, "root", "netem", "delay", `${leg.delayMs}ms`]);
      await tc(["qdisc", "add", "dev", leg.link, "root", "netem", "delay", `${leg.delayMs}ms`]);
    }
    await Promise.all(legs.map((l) => settled(l, true)));
    for (const leg of legs.filter((l) => l.delayMs > 0)) {
      delays.push({
        host: state.name,
        network: leg.net.name,
        ms: leg.delayMs,
        mechanism: leg.mechanism,
        ...(leg.forwarder?.pid ? { pid: leg.forwarder.pid } : {}),
        note:
          leg.mechanism === "tap-forwarder"
            ? `${state.name}'s leg on ${leg.net.name}: every frame held ${leg.delayMs} ms each way by a user-space tap forwarder (pid ${leg.forwarder?.pid}; ${support.reason})`
            : leg.mechanism === "netem"
              ? `${state.name}'s leg on ${leg.net.name}: tc netem delay ${leg.delayMs} ms each way`
              : `${state.name}'s leg on ${leg.net.name}: NOT delayed (${support.reason})`,
      });
    }
  }

  async function addHost(name: string, networks: string | string[], addOptions: { delays?: Record<string, number> } = {}): Promise<TopologyHost> {
    if (destroying) throw new Error("topology is torn down");
    if (!NAME.test(name)) throw new RangeError(`host name ${JSON.stringify(name)}: lowercase letters and digits, 16 at most`);
    const list = typeof networks === "string" ? [networks] : networks;
    if (list.length === 0 || new Set(list).size !== list.length) throw new RangeError(`host ${name}: one leg per network, at least one`);
    const support = await probeDelay();
    const state = plan(name, list, addOptions.delays ?? {}, support);
    hosts.set(name, state);
    try {
      await build(state, support);
    } catch (error) {
      await removeHost(name).catch(() => undefined);
      throw error;
    }
    return state.api;
  }

  async function removeHost(name: string): Promise<void> {
    const state = hosts.get(name);
    if (!state) throw new Error(`no host ${name}`);
    hosts.delete(name);
    const problems = await processes.stopAll(killTimeoutMs, (ns) => ns === state.ns);
    if ((await namespaceNames()).includes(state.ns)) await killLeftoversIn(state.ns, killTimeoutMs).catch((e: Error) => problems.push(e.message));
    for (const leg of state.legs) if (leg.forwarder && leg.forwarder.exitCode === null && leg.forwarder.signalCode === null) leg.forwarder.kill("SIGKILL");
    await ipBatch([`netns del ${state.ns}`, ...state.legs.flatMap((l) => [`link del ${l.link}`, `link del ${l.peer}`])], { force: true }).catch(() => undefined);
    const left = [...(await namespaceNames()), ...(await linkNames())].filter((n) => n === state.ns || state.legs.some((l) => n === l.link || n === l.peer));
    if (left.length > 0) problems.push(`still present: ${left.join(", ")}`);
    if (problems.length === 0) {
      namespaces.delete(state.ns);
      for (const leg of state.legs) allLegs.delete(leg);
    }
    if (problems.length > 0) throw new Error(`removing host ${name}: ${problems.join("; ")}`);
  }

  try {
    const support = await probeDelay();
    await ipBatch([...nets.values()].flatMap((n) => [`link add name ${n.bridge} type bridge`]));
    for (const n of nets.values()) disableIpv6Here(n.bridge);
    await ipBatch([...nets.values()].flatMap((n) => [...(n.bridgeAddress ? [`addr add ${n.bridgeAddress}/24 dev ${n.bridge}`] : []), `link set ${n.bridge} up`]));
    const states = [...placement].map(([name, networks]) => {
      const legDelays = Object.fromEntries((options.delays ?? []).filter((d) => d.host === name).map((d) => [d.network, d.ms]));
      const state = plan(name, networks, legDelays, support);
      hosts.set(name, state);
      return state;
    });
    await Promise.all(states.map((s) => build(s, support)));
  } catch (error) {
    await destroy().catch(() => undefined);
    throw error;
  }

  const networks = Object.fromEntries(
    [...nets.values()].map((n): [string, TopologyNetwork] => [
      n.name,
      { name: n.name, subnet: n.subnet, prefix: n.prefix, bridge: n.bridge, bridgeAddress: n.bridgeAddress, hosts: () => [...hosts.values()].filter((h) => h.legs.some((l) => l.net === n)).map((h) => h.name) },
    ]),
  );
  return {
    get hosts() {
      return [...hosts.values()].map((h) => h.api);
    },
    host(name) {
      const state = hosts.get(name);
      if (!state) throw new Error(`no host ${name}`);
      return state.api;
    },
    networks,
    delays,
    addHost,
    removeHost,
    destroy,
  };
}
