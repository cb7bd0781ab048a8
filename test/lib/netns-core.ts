/**
 * The machinery under test/lib/netns.ts (one bridge) and test/lib/netns-topology.ts
 * (several bridges, hosts with legs on more than one): `ip` itself, the
 * availability probe, names and subnets, leftovers of crashed runs, processes
 * run inside namespaces, readiness lines. See netns.ts for the guarantees.
 */
import { execFile, spawn as spawnProcess, type ChildProcess } from "node:child_process";
import { accessSync, constants, writeFileSync } from "node:fs";
import { alive } from "./processes.ts";
import { until } from "./until.ts";
import { join } from "node:path";

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



/** The most hosts one network may have. */
export const MAX_HOSTS = 32;

export const NAME_PREFIX = "nbt";
/** Harness names: nbt<pid><tag><role>; roles: br (bridge), n<i> (namespace), h<i>/p<i> (veth ends), t<i>/u<i> (a delayed leg's tap devices, host and bridge side), q* (availability probe). */
const OWNED_NAME = /^nbt(\d+)[a-z]{2}(?:br|[nhptu]\d+|q[bhp]?)$/;
const IP_TIMEOUT_MS = 10_000;
export const LINK_SETTLE_MS = 5_000;

export interface Teardown {
  teardown(fn: () => unknown): void;
}

// ---------------------------------------------------------------------------
// `ip` itself

let ipPath: string | undefined | null = null;

/** iproute2's `ip`, looked up on PATH and in the sbin directories a non-root PATH may lack. */
export function findIp(): string | undefined {
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

export class IpError extends Error {
  constructor(
    readonly args: string[],
    readonly stderr: string,
  ) {
    super(`ip ${args.join(" ")}: ${stderr.trim() || "failed"}`);
  }
}

/** Runs `ip ...args` (with `input` on stdin); resolves with stdout, rejects with an IpError carrying stderr. */
export function ip(args: string[], input?: string): Promise<string> {
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
export function ipBatch(lines: string[], options: { ns?: string; force?: boolean } = {}): Promise<string> {
  const args = [...(options.ns ? ["-n", options.ns] : []), ...(options.force ? ["-force"] : []), "-batch", "-"];
  return ip(args, lines.join("\n") + "\n");
}

/** `ip -j ...` parsed; an empty output is an empty list. */
export async function ipJson<T>(args: string[]): Promise<T[]> {
  const out = (await ip(["-j", ...args])).trim();
  return out ? (JSON.parse(out) as T[]) : [];
}

export interface LinkInfo {
  ifname: string;
  operstate?: string;
  linkinfo?: { info_slave_data?: { state?: string } };
}

export async function namespaceNames(): Promise<string[]> {
  return (await ipJson<{ name: string }>(["netns", "list"])).map((n) => n.name);
}

export async function linkNames(): Promise<string[]> {
  return (await ipJson<LinkInfo>(["link", "show"])).map((l) => l.ifname);
}

/** Pids of the processes inside namespace `ns` (zombies excluded: they have no namespace). */
export async function pidsIn(ns: string): Promise<number[]> {
  return (await ip(["netns", "pids", ns])).split(/\s+/).filter(Boolean).map(Number);
}

/** Disables IPv6 on an interface of the caller's namespace; a kernel without IPv6 needs nothing. */
export function disableIpv6Here(ifname: string): void {
  try {
    writeFileSync(`/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`, "1");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
}

/** Disables IPv6 inside `ns` for existing (`all`) and future (`default`) interfaces, before eth0 moves in. */
export async function disableIpv6In(ns: string): Promise<void> {
  const script = 'for c in all default; do f=/proc/sys/net/ipv6/conf/$c/disable_ipv6; if [ -e "$f" ]; then echo 1 > "$f" || exit 1; fi; done';
  await ip(["netns", "exec", ns, "/bin/sh", "-c", script]);
}

export { alive };

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
export async function removeLeftovers(): Promise<void> {
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

export function randomTag(): string {
  const letter = () => String.fromCharCode(97 + Math.floor(Math.random() * 26));
  return letter() + letter();
}

/** A prefix no existing namespace or interface uses, reserved for this process's lifetime. */
/** Gives a prefix back once everything named with it is gone. */
export function releasePrefix(prefix: string): void {
  usedTags.delete(prefix);
}

export async function freshPrefix(): Promise<string> {
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
 * Nor any of `exclude` (the other networks of one topology: a host with legs on
 * two of them needs them apart).
 */
export async function freshSubnet(exclude: string[] = []): Promise<string> {
  const [addresses, routes] = await Promise.all([
    ipJson<{ addr_info?: { local: string; prefixlen: number }[] }>(["-4", "addr", "show"]),
    ipJson<{ dst: string }>(["-4", "route", "show", "table", "all"]),
  ]);
  const taken: [number, number][] = [
    ...addresses.flatMap((a) => (a.addr_info ?? []).map((i) => range(`${i.local}/${i.prefixlen}`))),
    ...routes.filter((r) => r.dst !== "default" && Number(r.dst.split("/")[1] ?? "32") >= 16).map((r) => range(r.dst)),
    ...exclude.map(range),
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
export function childEnv(env: NodeJS.ProcessEnv | undefined): NodeJS.ProcessEnv {
  const { NODE_OPTIONS: _, ...rest } = process.env;
  return { ...rest, ...env };
}

export interface Tracked {
  child: ChildProcess;
  exited: Promise<void>;
}

export function exited(child: ChildProcess): boolean {
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
export async function stop({ child, exited: done }: Tracked, boundMs: number): Promise<string | undefined> {
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
export function lineLog(child: ChildProcess): LineLog {
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
// processes run inside namespaces

/**
 * The processes one network or topology started, each tracked until it exits
 * and stopped by pid (SIGTERM, then SIGKILL) at teardown. `ns` undefined runs
 * in the caller's own namespace (the harness's own helpers, e.g. a delay forwarder).
 */
export class ProcessSet {
  private readonly entries = new Set<Tracked & { ns: string | undefined }>();

  track(child: ChildProcess, ns: string | undefined): ChildProcess {
    const entry = {
      ns,
      child,
      exited: new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        // A spawn failure never emits "exit"; teardown must not wait for it.
        child.once("error", () => {
          if (child.pid === undefined) resolve();
        });
      }),
    };
    this.entries.add(entry);
    void entry.exited.then(() => this.entries.delete(entry));
    return child;
  }

  /** `cmd args` in namespace `ns` (through `ip netns exec`, which execs: `child.pid` is the command's), stdio piped, stdout lines recorded. */
  spawn(ns: string | undefined, cmd: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
    const [file, argv] = ns === undefined ? [cmd, args] : [findIp()!, ["netns", "exec", ns, cmd, ...args]];
    const child = spawnProcess(file, argv, { env: childEnv(options.env), cwd: options.cwd, stdio: ["pipe", "pipe", "pipe"] });
    lineLog(child);
    return this.track(child, ns);
  }

  /** `cmd args` in namespace `ns` to completion; SIGKILL after `timeoutMs` (default 10 s). Never rejects for the command's own failure. */
  exec(ns: string | undefined, cmd: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
    const [file, argv] = ns === undefined ? [cmd, args] : [findIp()!, ["netns", "exec", ns, cmd, ...args]];
    const child = this.track(spawnProcess(file, argv, { env: childEnv(options.env), cwd: options.cwd, stdio: ["pipe", "pipe", "pipe"] }), ns);
    return new Promise((resolve, reject) => {
      let stdout = "";
      let stderr = "";
      let timedOut = false;
      child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
      child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill("SIGKILL");
      }, options.timeoutMs ?? 10_000);
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
      child.stdin!.end(options.input ?? "");
    });
  }

  /** Stops the tracked processes `which` selects (default all); resolves with what could not be stopped. */
  async stopAll(boundMs: number, which: (ns: string | undefined) => boolean = () => true): Promise<string[]> {
    const problems = await Promise.all([...this.entries].filter((e) => which(e.ns)).map((e) => stop(e, boundMs)));
    return problems.filter((p): p is string => p !== undefined);
  }

  /** SIGKILL to every tracked process still running (the exit hook's synchronous last resort). */
  killAllNow(): void {
    for (const { child } of this.entries) if (!exited(child)) child.kill("SIGKILL");
  }
}

/** SIGKILL to every process left inside `ns` (children of our children), then waits until none is left. */
export async function killLeftoversIn(ns: string, boundMs: number): Promise<void> {
  const leftover = await pidsIn(ns);
  for (const pid of leftover) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  if (leftover.length > 0) await until(async () => (await pidsIn(ns)).length === 0, boundMs, `processes in ${ns} gone`, { everyMs: 10 });
}

/**
 * Waits until one leg's link state has settled: up means the bridge-side port
 * and the host-side interface are operationally up and the port forwards
 * (carrier changes reach the bridge through the kernel's deferred link-watch,
 * up to a second late); down means the bridge port is disabled.
 */
export async function settled(leg: { ns: string; link: string; ifname: string }, up: boolean): Promise<void> {
  // Kernel link state has no event we can await.
  await until(
    async () => {
      const [port] = await ipJson<LinkInfo>(["-d", "link", "show", "dev", leg.link]);
      const state = port?.linkinfo?.info_slave_data?.state;
      if (!up) return state === "disabled";
      if (port?.operstate !== "UP" || state !== "forwarding") return false;
      const [inside] = await ipJson<LinkInfo>(["-n", leg.ns, "link", "show", "dev", leg.ifname]);
      return inside?.operstate === "UP";
    },
    LINK_SETTLE_MS,
    `${leg.link} ${up ? "forwarding" : "disabled"}`,
    { everyMs: 10 },
  );
}
