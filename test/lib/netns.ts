/**
 * Multi-host integration tests on one Linux machine: each host is a network
 * namespace whose `eth0` is a veth joined to a private bridge in the caller's
 * namespace. Hosts get addresses in a private 10.x /24, `lo` is up, and there
 * is no default route, so nothing sent inside can reach any other address
 * (ENETUNREACH). IPv6 is disabled on every interface the harness creates, so
 * the links carry no router solicitations or multicast reports either.
 *
 * Everything is named `nbt<creator pid><two letters>...` (at most 15
 * characters, the interface-name limit); leftovers of a run whose creator pid
 * is dead are removed when the next network is created. Processes run inside
 * through `spawn`/`exec` are stopped by pid at teardown (SIGTERM, SIGKILL
 * after a bound); any process still inside a namespace after that (a child's
 * own child) gets SIGKILL by pid; then the namespaces, veths and bridge are
 * deleted. If the test process exits without running its teardowns, an exit
 * hook does the same synchronously; if it is killed outright, the next
 * creation cleans up (processes left inside those namespaces included).
 *
 * Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2's `ip`; callers skip
 * with the reason `netnsUnavailable()` gives when they cannot have them.
 * Note: on hosts where br_netfilter is loaded with bridge-nf-call-iptables=1
 * and the firewall's FORWARD policy drops (e.g. Docker hosts), bridged
 * packets between hosts are dropped by that firewall; the harness does not
 * touch the machine's firewall.
 *
 * Several bridges, hosts with legs on more than one (gateways), legs with a
 * delay, hosts added and removed while a test runs: netns-topology.ts
 * (`createTopology`). `createNetwork` is a topology of one network.
 */
import { netnsUnavailable, type NetnsHost } from "./netns-core.ts";
import { createTopology } from "./netns-topology.ts";

export { netnsUnavailable, waitForLine, type ExecResult, type NetnsHost } from "./netns-core.ts";

/** A set of hosts on one bridge. */
export interface NetnsNetwork {
  readonly hosts: NetnsHost[];
  /** The hosts' subnet in CIDR form ("10.213.47.0/24"). */
  readonly subnet: string;
  /** Every namespace and interface of this network starts with it (no other network's does). */
  readonly prefix: string;
  /** The bridge's interface name, in the caller's namespace. */
  readonly bridge: string;
  /** The bridge's own address when created with `bridgeAddress: true` (the caller's namespace can then reach the hosts); otherwise undefined. */
  readonly bridgeAddress: string | undefined;
  /**
   * Stops every process spawned through the hosts (and any other process
   * left inside the namespaces), then deletes namespaces, veths and bridge.
   * Idempotent; registered with `t.teardown` by `createNetwork`. Rejects with
   * an AggregateError listing what could not be cleaned, after trying all.
   */
  destroy(): Promise<void>;
}

/** Options of `createNetwork`. */
export interface NetnsOptions {
  /**
   * Gives the bridge the subnet's .254 address so that processes in the
   * caller's own namespace can reach the hosts. Default false: hosts talk
   * only to each other.
   */
  bridgeAddress?: boolean;
  /** Teardown waits this long after SIGTERM before SIGKILL, and again after SIGKILL. Default 3000 ms. */
  killTimeoutMs?: number;
}

/** The most hosts one network may have. */
export const MAX_HOSTS = 32;

interface Teardown {
  teardown(fn: () => unknown): void;
}

/**
 * Creates `count` hosts (1..MAX_HOSTS) on a fresh bridge, addressed .1, .2, ...
 * in a random free 10.200-250.x.0/24, each with `lo` and `eth0` up; resolves
 * once every link forwards. Registers `destroy()` with `t.teardown` before
 * creating anything, and destroys what exists if creation fails. Removes
 * leftovers of crashed earlier runs first. Rejects if netns is unavailable
 * (callers check `netnsUnavailable()` to skip instead).
 */
export async function createNetwork(t: Teardown, count: number, options: NetnsOptions = {}): Promise<NetnsNetwork> {
  if (!Number.isInteger(count) || count < 1 || count > MAX_HOSTS) throw new RangeError(`host count must be an integer in 1..${MAX_HOSTS}, got ${count}`);
  const reason = await netnsUnavailable();
  if (reason) throw new Error(reason);
  const topology = await createTopology(t, {
    networks: { net: Array.from({ length: count }, (_, i) => `h${i + 1}`) },
    ...(options.bridgeAddress !== undefined ? { bridgeAddress: options.bridgeAddress } : {}),
    ...(options.killTimeoutMs !== undefined ? { killTimeoutMs: options.killTimeoutMs } : {}),
  });
  const net = topology.networks.net!;
  return { hosts: topology.hosts, subnet: net.subnet, prefix: net.prefix, bridge: net.bridge, bridgeAddress: net.bridgeAddress, destroy: topology.destroy };
}

/**
 * The nodes host `from` sees through its own discovery port, as `node-bin
 * client nodes --json` run there prints them; [] when the client fails (not
 * joined yet). The call tests poll on until every host sees what they expect.
 */
export async function clientNodes(from: NetnsHost, env: NodeJS.ProcessEnv, bin: string): Promise<{ id: string; component: string; host: string }[]> {
  const r = await from.exec(process.execPath, [bin, "client", "nodes", "--seed", from.address, "--json", "--timeout", "3000"], { env, timeoutMs: 20_000 });
  return r.code === 0 ? (JSON.parse(r.stdout) as { id: string; component: string; host: string }[]) : [];
}
