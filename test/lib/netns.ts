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
 */
import { execFile, spawn as spawnProcess, spawnSync, type ChildProcess } from "node:child_process";
import { accessSync, constants, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** One host: a network namespace with `lo` and `eth0` (carrying `address`) on the network's bridge. */
export interface NetnsHost {
  /** Short human name: "h1", "h2", ... in creation order. */
  readonly name: string;
  /** The namespace's name (as `ip netns list` shows it). */
  readonly ns: string;
  /** This host's IPv4 address on the bridge, without prefix length ("10.213.47.1"). */
  readonly address: string;
  /**
   * Spawns `cmd args` inside the namespace (`ip netns exec`, which execs, so
   * `child.pid` is the command's own pid). stdio is piped. The environment is
   * the test's own without tap's NODE_OPTIONS, with `env` laid over it.
   * The child is stopped at teardown if it is still running.
   */
  spawn(cmd: string, args: string[], options?: { env?: NodeJS.ProcessEnv; cwd?: string }): ChildProcess;
  /**
   * Runs `cmd args` inside the namespace to completion, feeding `input` on
   * stdin. Killed with SIGKILL after `timeoutMs` (default 10 s): then `code`
   * is null and `timedOut` true. Never rejects for the command's own failure.
   */
  exec(
    cmd: string,
    args: string[],
    options?: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; input?: string },
  ): Promise<ExecResult>;
  /**
   * Cuts this host off: its veth goes down in the bridge's namespace, so no
   * frame reaches it or leaves it. Resolves once the bridge port is disabled.
   */
  cut(): Promise<void>;
  /** Undoes `cut()`; resolves once the link is up at both ends and the bridge port forwards again. */
  restore(): Promise<void>;
}

/** What `NetnsHost.exec` resolves with. */
export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True if the harness killed it after `timeoutMs`. */
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

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

const NAME_PREFIX = "nbt";
/** Harness names: nbt<pid><tag><role>; roles: br (bridge), n<i> (namespace), h<i>/p<i> (veth ends), q* (availability probe). */
const OWNED_NAME = /^nbt(\d+)[a-z]{2}(?:br|[nhp]\d+|q[bhp]?)$/;
const IP_TIMEOUT_MS = 10_000;
const LINK_SETTLE_MS = 5_000;

interface Teardown {
  teardown(fn: () => unknown): void;
}

// ---------------------------------------------------------------------------
// `ip` itself

let ipPath: string | undefined | null = null;

/** iproute2's `ip`, looked up on PATH and in the sbin directories a non-root PATH may lack. */
function findIp(): string | undefined {
  if (ipPath !== null) return ipPath;
  const dirs = [...(process.env.PATH ?? "").split(":").filter(Boolean), "/usr/sbin", "/sbin", "/usr/bin", "/bin"];
  ipPath = undefined;
  for (const dir of dirs) {
    try {
      accessSync(join(dir, "ip"), constants.X_OK);
      ipPath = join(dir, "ip");
      break;
    } catch {
      // not in this directory
    }
  }
  return ipPath;
}

class IpError extends Error {
  constructor(
    readonly args: string[],
    readonly stderr: string,
  ) {
    super(`ip ${args.join(" ")}: ${stderr.trim() || "failed"}`);
  }
}

/** Runs `ip ...args` (with `input` on stdin); resolves with stdout, rejects with an IpError carrying stderr. */
function ip(args: string[], input?: string): Promise<string> {
  const bin = findIp();
  if (!bin) return Promise.reject(new Error("no `ip` command (iproute2)"));
  return new Promise((resolve, reject) => {
    const child = execFile(bin, args, { timeout: IP_TIMEOUT_MS, encoding: "utf8" }, (error, stdout, stderr) => {
      if (error) reject(new IpError(input === undefined ? args : [...args, "<<", ...input.trim().split("\n")], stderr || error.message));
      else resolve(stdout);
    });
    // ip may exit before reading (a failed line); its status, not EPIPE, reports that.
    child.stdin?.on("error", () => undefined);
    if (input === undefined) child.stdin?.end();
    else child.stdin?.end(input);
  });
}

/**
 * Runs one `ip` command per line in a single process (`ip -batch -`), in
 * namespace `ns` if given: each `ip` run costs tens of milliseconds on a busy
 * machine. Stops at the first failing line unless `force`.
 */
function ipBatch(lines: string[], options: { ns?: string; force?: boolean } = {}): Promise<string> {
  const args = [...(options.ns ? ["-n", options.ns] : []), ...(options.force ? ["-force"] : []), "-batch", "-"];
  return ip(args, lines.join("\n") + "\n");
}

/** `ip -j ...` parsed; an empty output is an empty list. */
async function ipJson<T>(args: string[]): Promise<T[]> {
  const out = (await ip(["-j", ...args])).trim();
  return out ? (JSON.parse(out) as T[]) : [];
}

interface LinkInfo {
  ifname: string;
  operstate?: string;
  linkinfo?: { info_slave_data?: { state?: string } };
}

async function namespaceNames(): Promise<string[]> {
  return (await ipJson<{ name: string }>(["netns", "list"])).map((n) => n.name);
}

async function linkNames(): Promise<string[]> {
  return (await ipJson<LinkInfo>(["link", "show"])).map((l) => l.ifname);
}

/** Pids of the processes inside namespace `ns` (zombies excluded: they have no namespace). */
async function pidsIn(ns: string): Promise<number[]> {
  return (await ip(["netns", "pids", ns])).split(/\s+/).filter(Boolean).map(Number);
}

/** Disables IPv6 on an interface of the caller's namespace; a kernel without IPv6 needs nothing. */
function disableIpv6Here(ifname: string): void {
  try {
    writeFileSync(`/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`, "1");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
}

/** Disables IPv6 inside `ns` for existing (`all`) and future (`default`) interfaces, before eth0 moves in. */
async function disableIpv6In(ns: string): Promise<void> {
  const script = 'for c in all default; do f=/proc/sys/net/ipv6/conf/$c/disable_ipv6; if [ -e "$f" ]; then echo 1 > "$f" || exit 1; fi; done';
  await ip(["netns", "exec", ns, "/bin/sh", "-c", script]);
}

function alive(pid: number): boolean {
  try {
    // A zombie is dead for our purposes: it only waits for its parent to reap it.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return false;
  }
}

/** Polls `check` until true; rejects after `timeoutMs` with `what` (kernel link state has no event we can await). */
async function until(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const error = new Error(`${what} not reached within ${timeoutMs} ms`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw error;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// ---------------------------------------------------------------------------
// availability

let unavailable: Promise<string | undefined> | undefined;

/**
 * Why network namespaces cannot be used here (not Linux, not root, no `ip`,
 * or the kernel/container refuses a namespace, veth or bridge), or undefined
 * if they can. The first call probes once by creating and deleting a
 * namespace, a veth pair and a bridge (~50 ms); later calls reuse the answer.
 */
export function netnsUnavailable(): Promise<string | undefined> {
  unavailable ??= probe();
  return unavailable;
}

async function probe(): Promise<string | undefined> {
  if (process.platform !== "linux") return `network namespaces need Linux (this is ${process.platform})`;
  const uid = process.getuid?.();
  if (uid !== 0) return `network namespaces need root (uid ${uid})`;
  if (!findIp()) return "no `ip` command (Debian package iproute2) on PATH or in /usr/sbin, /sbin";
  const base = `${NAME_PREFIX}${process.pid}${randomTag()}q`;
  const steps = [
    ["netns", "add", base],
    ["netns", "exec", base, "/bin/true"],
    ["link", "add", `${base}h`, "type", "veth", "peer", "name", `${base}p`],
    ["link", "add", `${base}b`, "type", "bridge"],
    ["-j", "link", "show", "dev", `${base}b`],
  ];
  let reason: string | undefined;
  try {
    for (const step of steps) await ip(step);
  } catch (error) {
    reason = `cannot create network namespaces, veths or bridges here: ${(error as Error).message}`;
  }
  await Promise.allSettled([ip(["link", "del", `${base}b`]), ip(["link", "del", `${base}h`]), ip(["netns", "del", base])]);
  return reason;
}

// ---------------------------------------------------------------------------
// leftovers of crashed runs

/**
 * Removes namespaces and interfaces named by this harness whose creator pid is
 * dead, stopping (by pid) any process still inside those namespaces: they can
 * only be leftovers of that run.
 */
async function removeLeftovers(): Promise<void> {
  const stale = (name: string) => {
    const match = OWNED_NAME.exec(name);
    return match !== null && Number(match[1]) !== process.pid && !alive(Number(match[1]));
  };
  const [namespaces, links] = await Promise.all([namespaceNames(), linkNames()]);
  for (const ns of namespaces.filter(stale)) {
    for (const pid of await pidsIn(ns).catch(() => [])) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await ip(["netns", "del", ns]).catch(() => undefined);
  }
  // Deleting one end of a veth deletes both; bridges last so their ports are gone first.
  const staleLinks = links.filter(stale).sort((a, b) => Number(a.endsWith("br")) - Number(b.endsWith("br")));
  for (const link of staleLinks) await ip(["link", "del", link]).catch(() => undefined);
}

// ---------------------------------------------------------------------------
// names and addresses

const usedTags = new Set<string>();

function randomTag(): string {
  const letter = () => String.fromCharCode(97 + Math.floor(Math.random() * 26));
  return letter() + letter();
}

/** A prefix no existing namespace or interface uses, reserved for this process's lifetime. */
async function freshPrefix(): Promise<string> {
  const existing = [...(await namespaceNames()), ...(await linkNames())];
  for (let attempt = 0; attempt < 100; attempt++) {
    const prefix = `${NAME_PREFIX}${process.pid}${randomTag()}`;
    if (usedTags.has(prefix) || existing.some((name) => name.startsWith(prefix))) continue;
    usedTags.add(prefix);
    return prefix;
  }
  throw new Error("no free netns name prefix left for this process");
}

function toInt(address: string): number {
  return address.split(".").reduce((n, part) => n * 256 + Number(part), 0);
}

/** [first, last] addresses of a CIDR ("10.0.0.0/8") or a single address. */
function range(cidr: string): [number, number] {
  const [address, bits = "32"] = cidr.split("/");
  const size = 2 ** (32 - Number(bits));
  const first = Math.floor(toInt(address!) / size) * size;
  return [first, first + size - 1];
}

/**
 * A random 10.200-250.x.0/24 that no address or route of the caller's
 * namespace overlaps. The default route and summaries broader than /16 (a VPN's
 * 10.0.0.0/8) do not count: hosts live in their own namespaces, and with
 * `bridgeAddress` the more specific /24 wins only for its own 256 addresses.
 */
async function freshSubnet(): Promise<string> {
  const [addresses, routes] = await Promise.all([
    ipJson<{ addr_info?: { local: string; prefixlen: number }[] }>(["-4", "addr", "show"]),
    ipJson<{ dst: string }>(["-4", "route", "show", "table", "all"]),
  ]);
  const taken: [number, number][] = [
    ...addresses.flatMap((a) => (a.addr_info ?? []).map((i) => range(`${i.local}/${i.prefixlen}`))),
    ...routes.filter((r) => r.dst !== "default" && Number(r.dst.split("/")[1] ?? "32") >= 16).map((r) => range(r.dst)),
  ];
  for (let attempt = 0; attempt < 200; attempt++) {
    const candidate = `10.${200 + Math.floor(Math.random() * 51)}.${Math.floor(Math.random() * 256)}.0/24`;
    const [first, last] = range(candidate);
    if (!taken.some(([a, b]) => a <= last && first <= b)) return candidate;
  }
  throw new Error("no free 10.200-250.x.0/24 subnet: the addresses and routes here cover them all");
}

// ---------------------------------------------------------------------------
// processes

/** The environment a child gets: the test's own without tap's NODE_OPTIONS instrumentation, with `env` over it. */
function childEnv(env: NodeJS.ProcessEnv | undefined): NodeJS.ProcessEnv {
  const { NODE_OPTIONS: _, ...rest } = process.env;
  return { ...rest, ...env };
}

interface Tracked {
  child: ChildProcess;
  exited: Promise<void>;
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Resolves true if `promise` settles within `ms`. */
function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    void promise.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** SIGTERM, then SIGKILL after `boundMs`; undefined once it exited, else why not. */
async function stop({ child, exited: done }: Tracked, boundMs: number): Promise<string | undefined> {
  if (exited(child) || child.pid === undefined) return undefined;
  child.kill("SIGTERM");
  if (await within(done, boundMs)) return undefined;
  child.kill("SIGKILL");
  if (await within(done, boundMs)) return undefined;
  return `pid ${child.pid} did not exit after SIGKILL`;
}

// ---------------------------------------------------------------------------
// readiness lines

interface LineLog {
  /** Complete stdout lines not yet consumed by a waitForLine match. */
  lines: string[];
  partial: string;
  stderr: string;
  listeners: Set<() => void>;
}

const MAX_PENDING_LINES = 10_000;
const MAX_STDERR = 16_384;
const lineLogs = new WeakMap<ChildProcess, LineLog>();

/** Starts recording `child`'s stdout lines (from spawn time for harness children, so none is missed). */
function lineLog(child: ChildProcess): LineLog {
  let log = lineLogs.get(child);
  if (log) return log;
  const created: LineLog = { lines: [], partial: "", stderr: "", listeners: new Set() };
  log = created;
  lineLogs.set(child, created);
  const notify = () => [...created.listeners].forEach((listener) => listener());
  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (chunk: string) => {
    const parts = (created.partial + chunk).split("\n");
    created.partial = parts.pop()!;
    created.lines.push(...parts.map((line) => line.replace(/\r$/, "")));
    if (created.lines.length > MAX_PENDING_LINES) created.lines.splice(0, created.lines.length - MAX_PENDING_LINES);
    notify();
  });
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    created.stderr = (created.stderr + chunk).slice(-MAX_STDERR);
  });
  child.on("exit", notify);
  return created;
}

/**
 * Resolves with the match of the first stdout line of `child` matching
 * `pattern` (a line without its newline). Lines are consumed: a later call
 * looks only at lines after the last match, including lines printed before
 * that call. Rejects if the child exits first or after `timeoutMs`, with its
 * recent stderr in the message. Works best on children from `NetnsHost.spawn`,
 * whose stdout is recorded from the start.
 */
export function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs = 10_000): Promise<RegExpExecArray> {
  // Created here so that its stack points at the caller.
  const error = new Error();
  const log = lineLog(child);
  return new Promise((resolve, reject) => {
    const finish = (result: RegExpExecArray | string) => {
      clearTimeout(timer);
      log.listeners.delete(check);
      if (typeof result !== "string") return resolve(result);
      error.message = `${result}; stderr:\n${log.stderr}`;
      reject(error);
    };
    const check = () => {
      while (log.lines.length > 0) {
        const match = pattern.exec(log.lines.shift()!);
        if (match) return finish(match);
      }
      if (exited(child)) finish(`pid ${child.pid} exited (${child.exitCode ?? child.signalCode}) before printing a line matching ${pattern}`);
    };
    const timer = setTimeout(() => finish(`no stdout line of pid ${child.pid} matched ${pattern} within ${timeoutMs} ms`), timeoutMs);
    log.listeners.add(check);
    check();
  });
}

// ---------------------------------------------------------------------------
// the network

interface HostParts {
  ns: string;
  /** The veth end on the bridge, in the caller's namespace. */
  link: string;
  /** The other end, renamed eth0 once inside `ns`. */
  peer: string;
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
  const killTimeoutMs = options.killTimeoutMs ?? 3_000;

  await removeLeftovers();
  const prefix = await freshPrefix();
  const subnet = await freshSubnet();
  const base = subnet.split(".").slice(0, 3).join(".");
  const bridge = `${prefix}br`;
  const parts: HostParts[] = Array.from({ length: count }, (_, i) => ({ ns: `${prefix}n${i + 1}`, link: `${prefix}h${i + 1}`, peer: `${prefix}p${i + 1}` }));
  const children = new Set<Tracked>();

  // Synchronous last resort if the test process exits without running teardown.
  const onExit = () => {
    for (const { child } of children) if (!exited(child)) child.kill("SIGKILL");
    const bin = findIp()!;
    for (const { ns, link } of parts) {
      spawnSync(bin, ["netns", "del", ns], { timeout: 2_000, stdio: "ignore" });
      spawnSync(bin, ["link", "del", link], { timeout: 2_000, stdio: "ignore" });
    }
    spawnSync(bin, ["link", "del", bridge], { timeout: 2_000, stdio: "ignore" });
  };
  process.on("exit", onExit);

  let destroying: Promise<void> | undefined;
  const destroy = () => (destroying ??= teardown());
  t.teardown(destroy);

  async function teardown(): Promise<void> {
    const problems: string[] = [];
    const note = (error: unknown) => void problems.push((error as Error).message);
    try {
      for (const problem of await Promise.all([...children].map((c) => stop(c, killTimeoutMs)))) if (problem) problems.push(problem);
      const created = new Set(await namespaceNames());
      await Promise.all(
        parts
          .filter(({ ns }) => created.has(ns))
          .map(async ({ ns }) => {
            // Children of our children (a shell's background job) outlive them inside the namespace.
            const leftover = await pidsIn(ns);
            for (const pid of leftover) {
              try {
                process.kill(pid, "SIGKILL");
              } catch {
                // already gone
              }
            }
            if (leftover.length > 0) await until(async () => (await pidsIn(ns)).length === 0, killTimeoutMs, `processes in ${ns} gone`).catch(note);
          }),
      );
      // Some of these never existed if creation failed part-way, and deleting either end of a veth deletes
      // both: failed lines are expected, so the check below, not ip's exit status, says what is left.
      const lines = [...parts.map(({ ns }) => `netns del ${ns}`), ...parts.flatMap(({ link, peer }) => [`link del ${link}`, `link del ${peer}`]), `link del ${bridge}`];
      await ipBatch(lines, { force: true }).catch(() => undefined);
      const remaining = [...(await namespaceNames()), ...(await linkNames())].filter((name) => name.startsWith(prefix));
      if (remaining.length > 0) problems.push(`still present after teardown: ${remaining.join(", ")}`);
    } catch (error) {
      note(error);
    } finally {
      process.off("exit", onExit);
      usedTags.delete(prefix);
    }
    if (problems.length > 0) throw new AggregateError(problems.map((p) => new Error(p)), `netns teardown of ${prefix}: ${problems.join("; ")}`);
  }

  const bridgeAddress = options.bridgeAddress ? `${base}.254` : undefined;
  try {
    await ipBatch([`link add name ${bridge} type bridge`, ...parts.flatMap(({ ns, link, peer }) => [`netns add ${ns}`, `link add ${link} type veth peer name ${peer}`])]);
    // Before anything is up, so that no IPv6 autoconfiguration packet is ever sent.
    for (const name of [bridge, ...parts.map((p) => p.link)]) disableIpv6Here(name);
    await Promise.all(parts.map(({ ns }) => disableIpv6In(ns)));
    await ipBatch([
      ...(bridgeAddress ? [`addr add ${bridgeAddress}/24 dev ${bridge}`] : []),
      `link set ${bridge} up`,
      ...parts.flatMap(({ ns, link, peer }) => [`link set ${peer} netns ${ns}`, `link set ${link} master ${bridge}`, `link set ${link} up`]),
    ]);
    await Promise.all(
      parts.map(({ ns, peer }, i) => ipBatch(["link set lo up", `link set ${peer} name eth0`, `addr add ${base}.${i + 1}/24 dev eth0`, "link set eth0 up"], { ns })),
    );
    await Promise.all(parts.map((p) => settled(p, true)));
  } catch (error) {
    await destroy().catch(() => undefined);
    throw error;
  }

  function track(child: ChildProcess): ChildProcess {
    const entry: Tracked = {
      child,
      exited: new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        // A spawn failure never emits "exit"; teardown must not wait for it.
        child.once("error", () => {
          if (child.pid === undefined) resolve();
        });
      }),
    };
    children.add(entry);
    void entry.exited.then(() => children.delete(entry));
    return child;
  }

  const hosts = parts.map(({ ns, link }, i): NetnsHost => ({
    name: `h${i + 1}`,
    ns,
    address: `${base}.${i + 1}`,
    spawn(cmd, args, spawnOptions = {}) {
      if (destroying) throw new Error(`network ${prefix} is torn down`);
      const child = spawnProcess(findIp()!, ["netns", "exec", ns, cmd, ...args], {
        env: childEnv(spawnOptions.env),
        cwd: spawnOptions.cwd,
        stdio: ["pipe", "pipe", "pipe"],
      });
      lineLog(child);
      return track(child);
    },
    exec(cmd, args, execOptions = {}) {
      if (destroying) return Promise.reject(new Error(`network ${prefix} is torn down`));
      const child = track(
        spawnProcess(findIp()!, ["netns", "exec", ns, cmd, ...args], { env: childEnv(execOptions.env), cwd: execOptions.cwd, stdio: ["pipe", "pipe", "pipe"] }),
      );
      return new Promise((resolve, reject) => {
        let stdout = "";
        let stderr = "";
        let timedOut = false;
        child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
        child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
        const timer = setTimeout(() => {
          timedOut = true;
          child.kill("SIGKILL");
        }, execOptions.timeoutMs ?? 10_000);
        child.on("error", (error) => {
          clearTimeout(timer);
          reject(error);
        });
        child.on("close", (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal, timedOut, stdout, stderr });
        });
        // The command may exit without reading its input.
        child.stdin!.on("error", () => undefined);
        child.stdin!.end(execOptions.input ?? "");
      });
    },
    async cut() {
      await ip(["link", "set", link, "down"]);
      await settled(parts[i]!, false);
    },
    async restore() {
      await ip(["link", "set", link, "up"]);
      await settled(parts[i]!, true);
    },
  }));

  return { hosts, subnet, prefix, bridge, bridgeAddress, destroy };
}

/**
 * Waits until a host's link state has settled: up means both veth ends are
 * operationally up and the bridge port forwards (carrier changes reach the
 * bridge through the kernel's deferred link-watch, up to a second late);
 * down means the bridge port is disabled.
 */
function settled({ ns, link }: HostParts, up: boolean): Promise<void> {
  return until(
    async () => {
      const [port] = await ipJson<LinkInfo>(["-d", "link", "show", "dev", link]);
      const state = port?.linkinfo?.info_slave_data?.state;
      if (!up) return state === "disabled";
      if (port?.operstate !== "UP" || state !== "forwarding") return false;
      const [eth0] = await ipJson<LinkInfo>(["-n", ns, "link", "show", "dev", "eth0"]);
      return eth0?.operstate === "UP";
    },
    LINK_SETTLE_MS,
    `${link} ${up ? "forwarding" : "disabled"}`,
  );
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
