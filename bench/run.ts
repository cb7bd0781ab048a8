/**
 * `npm run bench`: node-bin beside the peers users would pick instead, every
 * comparison measured in the same run. Prints ONE table and writes
 * bench/results.json (`{ machine, run, rows }`). Asserts nothing: each row
 * says which target of issue 6 applies and whether it is met.
 *
 *   npm run bench                         # the full suite, a few minutes
 *   npm run bench -- --quick              # a smoke run: fewer, shorter rounds (about 2 minutes)
 *   npm run bench -- --only rpc,fanout    # some cases: inprocess rpc fanout elasticity membership footprint
 *   npm run bench -- --rounds 7 --out /tmp/results.json
 *
 * The cases (see bench/README.md for what each row means):
 *   inprocess   the full envelope path in one process vs Moleculer local broker.call
 *   rpc         same-host request/response between two processes: node-bin (a
 *               `node-bin container` serving bench/components/echo; the Client
 *               library over ipc and over tcp) vs raw zeromq.js DEALER/ROUTER (tcp,
 *               ipc) vs Moleculer's TCP transporter vs raw node:net (the floor)
 *   fanout      one client, 64 in flight, to 1, 2 and 4 containers of the echo
 *   elasticity  a real governor: load step to an extra node, load stop to its shutdown
 *   membership  3 real governors gossiping on loopback; simulated 10/100/1000 hosts
 *   footprint   RSS of an idle container and governor; container start to first call
 *
 * Throughput cases: every system's caller runs in its own process
 * (bench/lib/load.ts) and every server carries bench/lib/probe.ts, so CPU per
 * call is process.cpuUsage() of each side, reported over IPC, over the calls
 * of the measurement. Each round measures every system once per in-flight
 * level, in an order rotated every round; figures are medians over rounds and
 * ratios the median of per-round ratios (the machine is shared and noisy).
 *
 * Every process started is killed (by pid) and every temporary directory
 * removed on any exit of this driver, Ctrl-C and failures included.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { cpus, loadavg, release, type as osType, arch } from "node:os";
import { join } from "node:path";
import { Client } from "../src/client/client.ts";
import { discoveryIpc } from "../src/transport/runtime-dir.ts";
import { GOVERNOR_STATUS } from "../src/wire/control.ts";
import { NodeBinError } from "../src/wire/errors.ts";
import type { RunResult } from "./lib/load.ts";
import { cleanupSync, freePort, killUsing, PROBED, Proc, ROOT, rssOf, start, stopAll, tempDir, TS } from "./lib/procs.ts";
import { dec1, int, max, median, mib, min, ratio, rotate, round, secs } from "./lib/stats.ts";

// ---------------------------------------------------------------- settings

const argv = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const quick = argv.includes("--quick");
const ALL_CASES = ["inprocess", "rpc", "fanout", "elasticity", "membership", "footprint"];
const only = flag("--only")?.split(",").map((s) => s.trim());
const unknown = only?.filter((c) => !ALL_CASES.includes(c));
if (unknown?.length) {
  console.error(`bench/run.ts: unknown case(s) ${unknown.join(", ")}; cases: ${ALL_CASES.join(", ")}`);
  process.exit(64);
}
const ROUNDS = Number(flag("--rounds") ?? (quick ? 3 : 5));
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) {
  console.error("bench/run.ts: --rounds takes a whole number >= 1");
  process.exit(64);
}
const OUT = flag("--out") ?? join(ROOT, "bench", "results.json");
/**
 * --profile DIR: node-bin's own processes (its load processes and containers)
 * run under `node --cpu-prof`, one directory each under DIR. Profiling slows
 * them (about 20%) and not the peers: ratios of such a run mean nothing.
 */
const PROFILE_DIR = flag("--profile");
/** --in-flight 64 (or 1, or 1,64): the levels measured by the in-process and same-host cases (both by default). */
const LEVELS = (flag("--in-flight") ?? "1,64").split(",").map(Number);
if (LEVELS.some((n) => !Number.isInteger(n) || n < 1)) {
  console.error("bench/run.ts: --in-flight takes whole numbers >= 1, comma-separated");
  process.exit(64);
}
const prof = (name: string): string[] => (PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${join(PROFILE_DIR, name.replace(/[^\w.-]+/g, "-"))}`] : []);
const PLAN = quick
  ? { inprocMs: 300, rpcMs: 400, fanoutMs: 500, warmMs: 300, elasticRounds: 1, gossipWindowMs: 5_000, startupSamples: 1, idleMs: 1_500, sim: ["3", "10", "100"] }
  : { inprocMs: 1_000, rpcMs: 1_500, fanoutMs: 1_500, warmMs: 1_000, elasticRounds: 3, gossipWindowMs: 15_000, startupSamples: 3, idleMs: 3_000, sim: ["3", "10", "100", "1000"] };
/** The whole run is abandoned (everything killed, exit 1) past this. */
const RUN_LIMIT_MS = quick ? 6 * 60_000 : 30 * 60_000;

/** The method and request of every cross-process case (bench/components/echo). */
const ECHO = "bench.Echo/Echo";

// ---------------------------------------------------------------- cleanup on any exit

process.on("exit", cleanupSync);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: killing every process of this run`);
    process.exit(130);
  });
}
setTimeout(() => {
  console.error(`bench/run.ts: gave up after ${RUN_LIMIT_MS / 60_000} minutes`);
  process.exit(1);
}, RUN_LIMIT_MS).unref();

const log = (line: string) => process.stderr.write(`${line}\n`);

// ---------------------------------------------------------------- results

/** One row of results.json. */
type Row = Record<string, unknown> & { case: string; system: string };
/** One line of the printed table. */
interface Line {
  case: string;
  system: string;
  inFlight: string;
  result: string;
  latency: string;
  cpu: string;
  ratio: string;
  target: string;
  met: string;
}
const rows: Row[] = [];
const lines: Line[] = [];
const failures: string[] = [];
interface Verdict {
  target: string;
  met: boolean;
  detail: string;
}
const verdicts: Verdict[] = [];

function line(l: Partial<Line> & { case: string; system: string }): void {
  lines.push({ inFlight: "", result: "", latency: "", cpu: "", ratio: "", target: "", met: "", ...l });
}
const yesNo = (met: boolean) => (met ? "**met**" : "**missed**");

// ---------------------------------------------------------------- throughput measurement

interface Sys {
  /** Short key, unique in its case. */
  key: string;
  system: string;
  label: string;
  transport?: string;
  load: Proc;
  servers: Proc[];
  /** Time only every n-th call of each loop (in-process calls are too quick to time each). */
  sampleEvery: number;
}

interface Sample {
  rate: number;
  p50: number;
  p99: number;
  clientCpu: number; // µs per call
  serverCpu: number; // µs per call, all servers
  serverCpuEach: number[]; // µs per call, per server
  calls: number;
  errors: number;
  firstError?: string;
}

async function cpuOf(servers: Proc[]): Promise<number[]> {
  return Promise.all(servers.map(async (s) => (await s.request<{ cpuUs: number }>("cpu")).cpuUs));
}

async function measureOnce(s: Sys, inFlight: number, ms: number): Promise<Sample> {
  const before = await cpuOf(s.servers);
  const r = await s.load.request<RunResult>("run", { inFlight, ms, sampleEvery: s.sampleEvery });
  const after = await cpuOf(s.servers);
  const each = after.map((a, i) => (a - before[i]!) / Math.max(1, r.calls));
  return {
    rate: r.calls / r.seconds,
    p50: r.p50Us,
    p99: r.p99Us,
    clientCpu: r.cpuUs / Math.max(1, r.calls),
    serverCpu: each.reduce((a, b) => a + b, 0),
    serverCpuEach: each,
    calls: r.calls,
    errors: r.errors,
    ...(r.firstError ? { firstError: r.firstError } : {}),
  };
}

type Samples = Map<string, Sample[]>;
const sampleKey = (s: Sys, n: number) => `${s.key}|${n}`;

/**
 * Warms every system up, then `ROUNDS` rounds: in each, every in-flight level,
 * every system once, in an order rotated every round.
 */
async function compare(what: string, systems: Sys[], levels: number[], ms: number): Promise<Samples> {
  for (const s of systems) await s.load.request("check");
  for (const s of systems) for (const n of levels) await measureOnce(s, n, PLAN.warmMs);
  const samples: Samples = new Map();
  for (let r = 0; r < ROUNDS; r++) {
    for (const n of levels) {
      for (const s of rotate(systems, r)) {
        const x = await measureOnce(s, n, ms);
        const k = sampleKey(s, n);
        (samples.get(k) ?? samples.set(k, []).get(k)!).push(x);
        log(`${what} round ${r + 1}/${ROUNDS}  ${s.label.padEnd(26)} ${String(n).padStart(2)} in flight  ${int(x.rate).padStart(9)} calls/s  p50 ${dec1(x.p50)} µs  cpu ${dec1(x.clientCpu)} + ${dec1(x.serverCpu)} µs/call${x.errors ? `  ERRORS ${x.errors}: ${x.firstError}` : ""}`);
      }
    }
  }
  return samples;
}

interface Summary {
  rate: number;
  rateMin: number;
  rateMax: number;
  p50: number;
  p99: number;
  clientCpu: number;
  serverCpu: number;
  serverCpuEach: number[];
  errors: number;
  rates: number[];
}

function summarize(xs: Sample[]): Summary {
  return {
    rate: median(xs.map((x) => x.rate)),
    rateMin: min(xs.map((x) => x.rate)),
    rateMax: max(xs.map((x) => x.rate)),
    p50: median(xs.map((x) => x.p50)),
    p99: median(xs.map((x) => x.p99)),
    clientCpu: median(xs.map((x) => x.clientCpu)),
    serverCpu: median(xs.map((x) => x.serverCpu)),
    serverCpuEach: xs[0]!.serverCpuEach.map((_, i) => median(xs.map((x) => x.serverCpuEach[i]!))),
    errors: xs.reduce((a, x) => a + x.errors, 0),
    rates: xs.map((x) => x.rate),
  };
}

/** The median over rounds of a / b, each round's a against the same round's b. */
function ratioOf(samples: Samples, a: Sys, b: Sys, n: number): { median: number; min: number; max: number } {
  const xs = samples.get(sampleKey(a, n))!;
  const ys = samples.get(sampleKey(b, n))!;
  const rs = xs.map((x, i) => x.rate / ys[i]!.rate);
  return { median: median(rs), min: min(rs), max: max(rs) };
}

function throughputRow(caseName: string, s: Sys, n: number, sum: Summary, extra: Record<string, unknown> = {}): Row {
  return {
    case: caseName,
    system: s.system,
    ...(s.transport ? { transport: s.transport } : {}),
    label: s.label,
    in_flight: n,
    calls_per_s: round(sum.rate, 0),
    calls_per_s_min: round(sum.rateMin, 0),
    calls_per_s_max: round(sum.rateMax, 0),
    p50_us: round(sum.p50),
    p99_us: round(sum.p99),
    cpu_us_per_call: round(sum.clientCpu + sum.serverCpu),
    cpu_client_us_per_call: round(sum.clientCpu),
    cpu_server_us_per_call: round(sum.serverCpu),
    rounds: sum.rates.length,
    errors: sum.errors,
    ...extra,
  };
}

const rateCell = (sum: Summary) => `${int(sum.rate)} calls/s (${int(sum.rateMin)}-${int(sum.rateMax)})${sum.errors ? `, ${sum.errors} errors` : ""}`;
const us = (x: number) => (x < 100 ? dec1(x) : int(x));
const latencyCell = (sum: Summary) => `${us(sum.p50)} / ${us(sum.p99)}`;
const cpuCell = (sum: Summary, servers = 1) => (servers === 0 ? dec1(sum.clientCpu) : `${dec1(sum.clientCpu + sum.serverCpu)} (${dec1(sum.clientCpu)} + ${dec1(sum.serverCpu)})`);

/** Starts a load process (bench/lib/load.ts) for `system` and waits until it is connected. */
function startLoad(name: string, system: string, options: Record<string, unknown>, env: Record<string, string> = {}): Promise<Proc> {
  const profiled = system.startsWith("node-bin") ? prof(name) : [];
  return start(name, { args: [...profiled, ...TS, "bench/lib/load.ts", system, JSON.stringify(options)], env, ready: /load ready: /, readyTimeoutMs: 60_000 });
}

/** Starts `node-bin container --component echo` (with the CPU probe) on a private runtime dir and discovery port. */
function startEchoContainer(name: string, runtimeDir: string, port: number, host: string): Promise<Proc> {
  return start(name, {
    args: [...prof(name), ...PROBED, "bin/node-bin", "container", "--component", "echo", "--components", "bench/components", "--listen", "127.0.0.1", "--discovery-port", String(port), "--host", host],
    env: { NODEBIN_RUNTIME_DIR: runtimeDir },
    ready: /node-bin container ready: (\S+) at /,
    readyTimeoutMs: 60_000,
  });
}

// ---------------------------------------------------------------- 1. in-process

async function inprocess(): Promise<void> {
  log("\n== 1. in-process: the full envelope path vs Moleculer local broker.call");
  const [nb, ml] = await Promise.all([startLoad("load node-bin in-process", "node-bin-inproc", {}), startLoad("load moleculer local", "moleculer-local", {})]);
  const systems: Sys[] = [
    { key: "node-bin", system: "node-bin", label: "node-bin in-process", load: nb, servers: [], sampleEvery: 64 },
    { key: "moleculer", system: "moleculer", label: "Moleculer local", load: ml, servers: [], sampleEvery: 64 },
  ];
  const samples = await compare("inprocess", systems, LEVELS, PLAN.inprocMs);
  for (const n of LEVELS) {
    const [sNb, sMl] = systems as [Sys, Sys];
    const nbSum = summarize(samples.get(sampleKey(sNb, n))!);
    const mlSum = summarize(samples.get(sampleKey(sMl, n))!);
    const r = ratioOf(samples, sNb, sMl, n);
    const met = r.median >= 1;
    const target = "≥ 1.0x Moleculer local";
    verdicts.push({ target: `in-process, ${n} in flight: node-bin ${target}`, met, detail: `${ratio(r.median)} (${ratio(r.min)}-${ratio(r.max)} over rounds)` });
    rows.push(throughputRow("in-process", sNb, n, nbSum, { ratio_vs_moleculer: round(r.median, 2), target, met }));
    rows.push(throughputRow("in-process", sMl, n, mlSum));
    line({ case: "1 in-process", system: "Moleculer local broker.call", inFlight: String(n), result: rateCell(mlSum), latency: latencyCell(mlSum), cpu: cpuCell(mlSum, 0), ratio: "1.00x (baseline)" });
    line({ case: "1 in-process", system: "node-bin (dev mode, full envelope path)", inFlight: String(n), result: rateCell(nbSum), latency: latencyCell(nbSum), cpu: cpuCell(nbSum, 0), ratio: `${ratio(r.median)} Moleculer local`, target, met: yesNo(met) });
  }
}

// ---------------------------------------------------------------- 2. same-host rpc

async function rpc(): Promise<void> {
  log("\n== 2. same-host request/response between two processes");
  const rt = tempDir("rpc");
  const port = await freePort();
  const [container, zmqTcp, zmqIpc, mol, net] = await Promise.all([
    startEchoContainer("node-bin container (echo)", rt, port, "bench-local"),
    start("raw zeromq.js echo tcp", { args: [...PROBED, "bench/raw-zmq-echo.ts", "tcp://127.0.0.1:0"], ready: /raw zmq echo ready at (\S+)/ }),
    start("raw zeromq.js echo ipc", { args: [...PROBED, "bench/raw-zmq-echo.ts", `ipc://${join(rt, "raw.sock")}`], ready: /raw zmq echo ready at (\S+)/ }),
    start("moleculer echo (TCP transporter)", { args: [...PROBED, "bench/lib/moleculer-echo.ts"], ready: /moleculer echo ready at (\d+)/ }),
    start("net echo", { args: [...PROBED, "bench/lib/net-echo.ts"], ready: /net echo ready at (\d+)/ }),
  ]);
  const env = { NODEBIN_RUNTIME_DIR: rt };
  const [lNet, lZt, lZi, lMol, lNbTcp, lNbIpc] = await Promise.all([
    startLoad("load net", "net", { port: Number(net.match![1]) }),
    startLoad("load zeromq tcp", "zeromq", { endpoint: zmqTcp.match![1] }),
    startLoad("load zeromq ipc", "zeromq", { endpoint: zmqIpc.match![1] }),
    startLoad("load moleculer", "moleculer", { port: Number(mol.match![1]) }),
    // Another host id than the container's: the client reaches the node at its tcp endpoint.
    startLoad("load node-bin tcp", "node-bin", { endpoint: `tcp://127.0.0.1:${port}`, host: "bench-elsewhere" }, env),
    // The container's own host id: same host, so the client reaches the node over ipc (node-bin's same-host path).
    startLoad("load node-bin ipc", "node-bin", { endpoint: discoveryIpc(rt, port), host: "bench-local" }, env),
  ]);
  const sys = (key: string, system: string, label: string, transport: string, load: Proc, server: Proc): Sys => ({ key, system, label, transport, load, servers: [server], sampleEvery: 1 });
  const netS = sys("net", "net", "raw node:net (tcp)", "tcp", lNet, net);
  const zt = sys("zeromq-tcp", "zeromq", "raw zeromq.js tcp", "tcp", lZt, zmqTcp);
  const zi = sys("zeromq-ipc", "zeromq", "raw zeromq.js ipc", "ipc", lZi, zmqIpc);
  const molS = sys("moleculer", "moleculer", "Moleculer TCP transporter", "tcp", lMol, mol);
  const nbt = sys("node-bin-tcp", "node-bin", "node-bin tcp", "tcp", lNbTcp, container);
  const nbi = sys("node-bin-ipc", "node-bin", "node-bin ipc", "ipc", lNbIpc, container);
  const systems = [netS, zt, zi, molS, nbt, nbi];
  const samples = await compare("rpc", systems, LEVELS, PLAN.rpcMs);

  for (const n of LEVELS) {
    const sum = (s: Sys) => summarize(samples.get(sampleKey(s, n))!);
    const floor = (s: Sys) => ratioOf(samples, s, netS, n).median;
    const netSum = sum(netS);
    rows.push(throughputRow("same-host-rpc", netS, n, netSum));
    line({ case: "2 same-host rpc", system: netS.label, inFlight: String(n), result: rateCell(netSum), latency: latencyCell(netSum), cpu: cpuCell(netSum), ratio: "1.00x (the floor)" });
    for (const s of [zt, zi, molS]) {
      const x = sum(s);
      rows.push(throughputRow("same-host-rpc", s, n, x, { ratio_vs_net: round(floor(s), 2) }));
      line({ case: "2 same-host rpc", system: s.label, inFlight: String(n), result: rateCell(x), latency: latencyCell(x), cpu: cpuCell(x), ratio: `${ratio(floor(s))} net` });
    }
    for (const [s, z] of [
      [nbt, zt],
      [nbi, zi],
    ] as const) {
      const x = sum(s);
      const vsMol = ratioOf(samples, s, molS, n);
      const vsZmq = ratioOf(samples, s, z, n);
      const targets: { target: string; ratio: number; met: boolean }[] =
        n === 64
          ? [
              { target: "≥ 1.5x Moleculer TCP", ratio: vsMol.median, met: vsMol.median >= 1.5 },
              { target: `≥ 1.0x raw zeromq.js ${s.transport}`, ratio: vsZmq.median, met: vsZmq.median >= 1 },
            ]
          : n === 1
            ? [{ target: "≥ 1.0x Moleculer TCP", ratio: vsMol.median, met: vsMol.median >= 1 }]
            : [];
      for (const t of targets) verdicts.push({ target: `same-host rpc, ${n} in flight, ${s.label}: ${t.target}`, met: t.met, detail: `${ratio(t.ratio)}` });
      rows.push(
        throughputRow("same-host-rpc", s, n, x, {
          ratio_vs_moleculer: round(vsMol.median, 2),
          ratio_vs_zeromq: round(vsZmq.median, 2),
          ratio_vs_net: round(floor(s), 2),
          targets: targets.map((t) => ({ target: t.target, ratio: round(t.ratio, 2), met: t.met })),
        }),
      );
      line({
        case: "2 same-host rpc",
        system: s.label,
        inFlight: String(n),
        result: rateCell(x),
        latency: latencyCell(x),
        cpu: cpuCell(x),
        ratio: `${ratio(vsMol.median)} Moleculer; ${ratio(vsZmq.median)} zeromq ${s.transport}; ${ratio(floor(s))} net`,
        target: targets.map((t) => t.target).join("; "),
        met: targets.map((t) => yesNo(t.met)).join("; "),
      });
    }
  }
}

// ---------------------------------------------------------------- 3. fan-out

async function fanout(): Promise<void> {
  log("\n== 3. fan-out: one client, 64 in flight, to 1, 2 and 4 containers");
  const systems: Sys[] = [];
  for (const count of [1, 2, 4]) {
    const rt = tempDir(`fanout${count}`);
    const port = await freePort();
    // The first container takes the discovery port (the host agent); the others register with it.
    const first = await startEchoContainer(`container 1/${count}`, rt, port, "bench-local");
    const rest = await Promise.all(Array.from({ length: count - 1 }, (_, i) => startEchoContainer(`container ${i + 2}/${count}`, rt, port, "bench-local")));
    const load = await startLoad(`load fan-out ${count}`, "node-bin", { endpoint: discoveryIpc(rt, port), host: "bench-local" }, { NODEBIN_RUNTIME_DIR: rt });
    const seen = await load.request<number>("nodes", { count });
    if (seen !== count) throw new Error(`fan-out ${count}: the client's table holds ${seen} echo nodes`);
    systems.push({ key: `fanout-${count}`, system: "node-bin", label: `node-bin, ${count} container${count > 1 ? "s" : ""}`, transport: "ipc", load, servers: [first, ...rest], sampleEvery: 1 });
  }
  const samples = await compare("fanout", systems, [64], PLAN.fanoutMs);
  const one = systems[0]!;
  for (const s of systems) {
    const x = summarize(samples.get(sampleKey(s, 64))!);
    const r = ratioOf(samples, s, one, 64);
    rows.push(throughputRow("fan-out", s, 64, x, { containers: s.servers.length, ratio_vs_1: round(r.median, 2), cpu_server_us_per_call_each: x.serverCpuEach.map((c) => round(c)) }));
    line({
      case: "3 fan-out",
      system: s.label,
      inFlight: "64",
      result: rateCell(x),
      latency: latencyCell(x),
      cpu: `${cpuCell(x)}${s.servers.length > 1 ? `; per container ${x.serverCpuEach.map(dec1).join(" / ")}` : ""}`,
      ratio: s === one ? "1.00x (baseline)" : `${ratio(r.median)} 1 container`,
      target: "none (reported)",
    });
  }
}

// ---------------------------------------------------------------- governors

interface ChildStatus {
  pid: number;
  phase: string;
  rssBytes: number;
}
interface ComponentStatus {
  name: string;
  running: number;
  children: ChildStatus[];
}
interface GovernorStatus {
  pid: number;
  components: ComponentStatus[];
}

interface Governor {
  proc: Proc;
  runtimeDir: string;
  port: number;
  host: string;
  status(): Promise<GovernorStatus>;
  until<T>(ok: (s: GovernorStatus) => T | undefined | false, ms: number, what: string, everyMs?: number): Promise<T>;
  stop(): Promise<void>;
}

/** A components directory holding copies of `components` ([name, source dir]). */
function componentsDir(prefix: string, components: [string, string][]): string {
  const dir = join(tempDir(prefix), "components");
  mkdirSync(dir, { recursive: true });
  for (const [name, from] of components) cpSync(join(ROOT, from), join(dir, name), { recursive: true });
  return dir;
}

async function startGovernor(name: string, components: string, host: string, extra: string[] = [], port?: number): Promise<Governor> {
  const runtimeDir = tempDir(`${name}-rt`);
  port ??= await freePort();
  const proc = await start(name, {
    // With the probe: its IPC channel makes the governor stop (and stop its children) if this driver is killed.
    args: [...PROBED, "bin/node-bin", "governor", "--components", components, "--listen", "127.0.0.1", "--discovery-port", String(port), "--host", host, ...extra],
    env: { NODEBIN_RUNTIME_DIR: runtimeDir },
    ready: /governor ready: \S+ at (\S+)/,
    readyTimeoutMs: 60_000,
  });
  const client = await Client.connect({ endpoint: `ipc://${join(runtimeDir, `governor-${port}.sock`)}`, connectTimeoutMs: 5_000, refreshMs: 0 });
  const status = async () => JSON.parse((await client.callControl(GOVERNOR_STATUS, {}, { timeoutMs: 5_000 })).json) as GovernorStatus;
  const until = async <T>(ok: (s: GovernorStatus) => T | undefined | false, ms: number, what: string, everyMs = 50): Promise<T> => {
    const end = Date.now() + ms;
    let last: GovernorStatus | undefined;
    while (Date.now() < end) {
      last = await status();
      const v = ok(last);
      if (v !== undefined && v !== false) return v;
      await new Promise((r) => setTimeout(r, everyMs));
    }
    throw new Error(`${name}: status did not reach "${what}" within ${ms} ms; last: ${JSON.stringify(last?.components.map((c) => ({ name: c.name, running: c.running, children: c.children.map((k) => `${k.pid}:${k.phase}`) })))}${proc.tail()}`);
  };
  const stop = async () => {
    await client.close().catch(() => {});
    await proc.stop(10_000); // SIGTERM: a full stop drains and stops its children
    killUsing(runtimeDir); // any child left behind
  };
  return { proc, runtimeDir, port, host, status, until, stop };
}

// ---------------------------------------------------------------- 4. elasticity

async function elasticity(): Promise<void> {
  log("\n== 4. elasticity: a real governor, the slow component (min 1, max 2)");
  const components = componentsDir("elastic", [["slow", "test/fixtures/governor/slow"]]);
  const settings = ["--queue-wait-ms", "100", "--sustain-ms", "500", "--idle-ms", "2000"];
  const gov = await startGovernor("governor (elasticity)", components, "bench-gov", settings);
  const client = await Client.connect({ endpoint: `tcp://127.0.0.1:${gov.port}`, host: gov.host, connectTimeoutMs: 10_000 });
  const samples: { growReadyMs: number; growServingMs: number; shrinkMs: number; calls: number; failed: number }[] = [];
  try {
    for (let r = 0; r < PLAN.elasticRounds; r++) {
      const basePid = await gov.until((s) => {
        const c = s.components.find((c) => c.name === "slow");
        return c && c.running === 1 && c.children.length === 1 && c.children[0]!.phase === "ready" && c.children[0]!.pid;
      }, 60_000, "slow: one node serving");
      // The client's table must hold exactly the one node (it re-pulls every second).
      await client.refresh();
      // 24 callers, each call 40 ms of work: six times what one node serves.
      let running = true;
      let calls = 0;
      let failed = 0;
      let servingAt = 0;
      const t0 = performance.now();
      const loops = Array.from({ length: 24 }, async () => {
        while (running) {
          try {
            const reply = (await client.call("gov.Slow/Work", { ms: 40 }, { timeoutMs: 20_000 })) as { pid: number };
            calls++;
            if (reply.pid !== basePid && !servingAt) servingAt = performance.now();
          } catch (err) {
            failed++;
            log(`elasticity: call failed: ${NodeBinError.from(err).toString()}`);
          }
        }
      });
      let readyAt = 0;
      try {
        await gov.until((s) => s.components[0]!.children.some((k) => k.pid !== basePid && k.phase === "ready"), 60_000, "a second node ready");
        readyAt = performance.now();
        const end = Date.now() + 15_000;
        while (!servingAt && Date.now() < end) await new Promise((res) => setTimeout(res, 20));
      } finally {
        running = false;
        await Promise.all(loops);
      }
      const stoppedAt = performance.now();
      await gov.until((s) => s.components[0]!.running === 1 && s.components[0]!.children.length === 1, 60_000, "back to one node");
      const shrinkMs = performance.now() - stoppedAt;
      const x = { growReadyMs: readyAt - t0, growServingMs: servingAt ? servingAt - t0 : NaN, shrinkMs, calls, failed };
      samples.push(x);
      log(`elasticity round ${r + 1}/${PLAN.elasticRounds}: second node ready ${int(x.growReadyMs)} ms, first reply from it ${int(x.growServingMs)} ms after the load step; idle node gone ${int(x.shrinkMs)} ms after the load stopped; ${calls} calls, ${failed} failed`);
    }
  } finally {
    await client.close().catch(() => {});
    await gov.stop();
  }
  const m = (f: (x: (typeof samples)[number]) => number) => ({ med: median(samples.map(f)), lo: min(samples.map(f)), hi: max(samples.map(f)) });
  const ready = m((x) => x.growReadyMs);
  const serving = m((x) => x.growServingMs);
  const shrink = m((x) => x.shrinkMs);
  const failed = samples.reduce((a, x) => a + x.failed, 0);
  const range = (v: { med: number; lo: number; hi: number }) => `${secs(v.med)}${samples.length > 1 ? ` (${secs(v.lo)}-${secs(v.hi)})` : ""}`;
  rows.push({
    case: "elasticity",
    system: "node-bin",
    settings: "queue-wait-ms 100, sustain-ms 500, idle-ms 2000, ping-ms 1000 (default); 24 callers x 40 ms work",
    rounds: samples.length,
    grow_ready_ms: round(ready.med, 0),
    grow_serving_ms: round(serving.med, 0),
    shrink_ms: round(shrink.med, 0),
    grow_ready_ms_each: samples.map((x) => round(x.growReadyMs, 0)),
    grow_serving_ms_each: samples.map((x) => round(x.growServingMs, 0)),
    shrink_ms_each: samples.map((x) => round(x.shrinkMs, 0)),
    calls: samples.reduce((a, x) => a + x.calls, 0),
    failed_calls: failed,
  });
  const note = "none (reported)";
  line({ case: "4 elasticity", system: "load step → 2nd node ready (governor status)", result: range(ready), target: note });
  line({ case: "4 elasticity", system: "load step → first reply from the 2nd node", result: `${range(serving)}${failed ? `; ${failed} calls failed` : "; 0 calls failed"}`, target: note });
  line({ case: "4 elasticity", system: "load stop → idle node shut down (idle-ms 2 s)", result: range(shrink), target: note });
}

// ---------------------------------------------------------------- 5. membership

interface SocketBytes {
  pid: number | undefined;
  sent: number;
}

/** TCP payload bytes sent, per established socket touching one of `ports` (ss: bytes_sent; ZMTP framing and heartbeats included). */
function tcpBytes(ports: number[]): Map<string, SocketBytes> {
  const filter = `( ${ports.map((p) => `sport = :${p} or dport = :${p}`).join(" or ")} )`;
  const out = execFileSync("ss", ["-tinpHn", "state", "established", filter], { encoding: "utf8" });
  const sockets = new Map<string, SocketBytes>();
  let key: string | undefined;
  let pid: number | undefined;
  for (const text of out.split("\n")) {
    if (!text.trim()) continue;
    if (!/^\s/.test(text)) {
      const cols = text.trim().split(/\s+/);
      key = `${cols[2]}>${cols[3]}`;
      pid = Number(/pid=(\d+)/.exec(text)?.[1]) || undefined;
    } else if (key) {
      sockets.set(key, { pid, sent: Number(/bytes_sent:(\d+)/.exec(text)?.[1] ?? 0) });
      key = undefined;
    }
  }
  return sockets;
}

async function membership(): Promise<void> {
  log("\n== 5. membership: 3 real governors on loopback; simulated 10 / 100 / 1000 hosts");
  const ports = [await freePort(), await freePort(), await freePort()];
  const hosts = ["bench-h1", "bench-h2", "bench-h3"];
  const governors: Governor[] = [];
  try {
    const t0 = performance.now();
    governors.push(
      ...(await Promise.all(
        hosts.map((host, i) => {
          const seeds = ports.filter((_, j) => j !== i).map((p) => `127.0.0.1:${p}`).join(",");
          return startGovernor(`governor ${host}`, componentsDir(host, [["echo", "bench/components/echo"]]), host, ["--seed", seeds], ports[i]);
        }),
      )),
    );
    // Each host's table, read through its discovery socket (ipc: no tcp traffic of ours on the ports measured below).
    // firstSeen[j][i]: when host j's table first held host i's echo node.
    const firstSeen = hosts.map(() => hosts.map(() => 0));
    const watch = async (g: Governor, j: number) => {
      const client = await Client.connect({ endpoint: discoveryIpc(g.runtimeDir, g.port), connectTimeoutMs: 5_000, refreshMs: 0 });
      try {
        const end = Date.now() + 60_000;
        while (Date.now() < end) {
          await client.refresh();
          const now = performance.now();
          for (const e of client.nodes()) {
            const i = hosts.indexOf(e.host);
            if (e.component === "echo" && i >= 0 && !firstSeen[j]![i]) firstSeen[j]![i] = now;
          }
          if (firstSeen[j]!.every((t) => t > 0)) return;
          await new Promise((r) => setTimeout(r, 25));
        }
        throw new Error(`${g.host}: its table did not hold the 3 hosts' nodes within 60 s`);
      } finally {
        await client.close();
      }
    };
    await Promise.all(governors.map(watch));
    const fromSpawn = max(firstSeen.flat()) - t0;
    // How long each node took to reach every other host's table once it was in its own host's: the gossip part.
    const spread = hosts.map((_, i) => max(firstSeen.map((row) => row[i]!)) - firstSeen[i]![i]!);
    const fromReady = max(spread);
    log(`membership: all 3 tables full ${int(fromSpawn)} ms after the governors were started; each node reached the other hosts' tables ${spread.map((x) => int(x)).join(", ")} ms after it was in its own host's`);

    // Gossip traffic once converged: TCP bytes on connections to the discovery ports.
    await new Promise((r) => setTimeout(r, 1_000));
    const before = tcpBytes(ports);
    const windowStart = performance.now();
    await new Promise((r) => setTimeout(r, PLAN.gossipWindowMs));
    const after = tcpBytes(ports);
    const seconds = (performance.now() - windowStart) / 1000;
    const perPid = new Map<number | undefined, number>();
    for (const [k, s] of after) perPid.set(s.pid, (perPid.get(s.pid) ?? 0) + s.sent - (before.get(k)?.sent ?? 0));
    const govPids = governors.map((g) => g.proc.pid);
    const perHost = govPids.map((pid) => (perPid.get(pid) ?? 0) / seconds);
    const other = [...perPid].filter(([pid]) => pid === undefined || !govPids.includes(pid)).reduce((a, [, b]) => a + b, 0) / seconds;
    const mean = perHost.reduce((a, b) => a + b, 0) / perHost.length;
    log(`membership: TCP bytes sent per host per second over ${seconds.toFixed(1)} s: ${perHost.map((b) => int(b)).join(", ")}${other ? `; by other processes ${int(other)}` : ""}`);
    rows.push({
      case: "membership",
      system: "node-bin",
      mode: "real",
      hosts: 3,
      converge_ms_from_start: round(fromSpawn, 0),
      propagate_ms_max: round(fromReady, 0),
      propagate_ms_each: spread.map((x) => round(x, 0)),
      bytes_per_host_per_s: round(mean, 0),
      bytes_per_host_per_s_each: perHost.map((b) => round(b, 0)),
      bytes_other_per_s: round(other, 0),
      window_s: round(seconds, 1),
      bytes_measured_as: "TCP payload bytes sent (ss bytes_sent) on connections to the 3 discovery ports: gossip plus ZMTP framing and heartbeats; the gossip layer's own counters (Gossip.stats()) are not exposed by any process",
    });
    line({ case: "5 membership", system: "3 real governors: all tables full (from start); a node's spread to the other hosts (max)", inFlight: "", result: `${secs(fromSpawn)}; ${secs(fromReady)}`, target: "none (reported)" });
    line({ case: "5 membership", system: "3 real governors: bytes/host/s once converged (TCP, ZMTP incl.)", result: `${int(mean)} B/s (max ${int(max(perHost))})`, target: "none (reported)" });
  } finally {
    await Promise.all(governors.map((g) => g.stop()));
  }

  // Simulated clusters: bench/gossip-sim.ts in its own process.
  const simStart = performance.now();
  const sim = await start("gossip simulation", { args: [...TS, "bench/gossip-sim.ts", "--json", "--detect-max", "100", ...PLAN.sim], ready: /^\{"rows":/m, ipc: false, readyTimeoutMs: 20 * 60_000 });
  await sim.exited;
  const simRows = (JSON.parse(sim.stdout.slice(sim.stdout.search(/^\{"rows":/m)).split("\n")[0]!) as { rows: SimRow[] }).rows;
  log(`membership: simulation took ${secs(performance.now() - simStart)}`);
  const at = (n: number) => simRows.find((r) => r.hosts === n);
  const s10 = at(10);
  const s1000 = at(1000);
  const growth = s10 && s1000 ? s1000.meanBps / s10.meanBps : NaN;
  const met = growth <= 2;
  if (s1000) verdicts.push({ target: "gossip bytes/host/s flat within 2x from 10 to 1000 simulated hosts", met, detail: `${ratio(growth)} (${int(s10?.meanBps ?? NaN)} → ${int(s1000.meanBps)} B/s)` });
  for (const r of simRows) {
    rows.push({ case: "membership", system: "node-bin", mode: "simulated", ...r, bytes_per_host_per_s: r.meanBps, converge_ms: r.convergeMs });
    const isTarget = r.hosts === 1000;
    line({
      case: "5 membership",
      system: `simulated ${r.hosts} hosts: converge; bytes/host/s (mean, max)`,
      result: `${r.convergeMs === null ? "not converged" : secs(r.convergeMs)}; ${int(r.meanBps)} B/s (max ${int(r.maxBps)})`,
      ratio: s10 && r.hosts !== 10 ? `${ratio(r.meanBps / s10.meanBps)} 10 hosts` : r.hosts === 10 ? "1.00x (baseline)" : "",
      target: isTarget ? "≤ 2x the 10-host figure" : "",
      met: isTarget ? yesNo(met) : "",
    });
  }
  if (!s1000) line({ case: "5 membership", system: "simulated 1000 hosts", result: "not run with --quick (about 2 minutes of CPU alone)", target: "≤ 2x the 10-host figure", met: "not measured" });
}

/** A row of `bench/gossip-sim.ts --json`. */
interface SimRow {
  hosts: number;
  periodMs: number;
  fanout: number;
  convergeMs: number | null;
  meanBps: number;
  maxBps: number;
  [k: string]: unknown;
}

// ---------------------------------------------------------------- 6. footprint

async function footprint(): Promise<void> {
  log("\n== 6. footprint: idle RSS, container start-up to the first served call");
  const samples: { readyMs: number; firstCallMs: number; rss: number }[] = [];
  for (let i = 0; i < PLAN.startupSamples; i++) {
    const rt = tempDir("footprint");
    const port = await freePort();
    const spawnedAt = performance.now();
    const proc = new Proc("container (footprint)", {
      args: [...PROBED, "bin/node-bin", "container", "--component", "echo", "--components", "bench/components", "--listen", "127.0.0.1", "--discovery-port", String(port), "--host", "bench-local"],
      env: { NODEBIN_RUNTIME_DIR: rt },
      ready: /node-bin container ready/,
    });
    try {
      // A client that waits from the moment of the spawn: retries every 10 ms until a call is answered.
      const firstCall = (async () => {
        const end = Date.now() + 60_000;
        while (Date.now() < end && proc.alive) {
          let client: Client | undefined;
          try {
            if (!existsSync(discoveryIpc(rt, port).slice("ipc://".length))) throw new Error("no socket yet");
            client = await Client.connect({ endpoint: discoveryIpc(rt, port), host: "bench-local", connectTimeoutMs: 1_000, refreshMs: 0 });
            await client.call(ECHO, { a: 1, b: "hello world" }, { timeoutMs: 5_000 });
            return performance.now();
          } catch {
            await new Promise((r) => setTimeout(r, 10));
          } finally {
            await client?.close();
          }
        }
        throw new Error(`the container answered no call within 60 s${proc.tail()}`);
      })();
      await proc.waitReady(/node-bin container ready/, 60_000);
      const firstCallAt = await firstCall;
      await new Promise((r) => setTimeout(r, PLAN.idleMs));
      const x = { readyMs: proc.readyAt - spawnedAt, firstCallMs: firstCallAt - spawnedAt, rss: rssOf(proc.pid) ?? NaN };
      samples.push(x);
      log(`footprint: container ready line ${int(x.readyMs)} ms, first call answered ${int(x.firstCallMs)} ms after the spawn; idle RSS ${mib(x.rss)}`);
    } finally {
      await proc.stop();
    }
  }

  // The governor with one component, idle; and a Moleculer TCP broker for comparison.
  const gov = await startGovernor("governor (footprint)", componentsDir("footprint-gov", [["echo", "bench/components/echo"]]), "bench-fp");
  let govRss = NaN;
  let childRss = NaN;
  try {
    const child = await gov.until((s) => s.components[0]?.children.find((k) => k.phase === "ready"), 60_000, "echo serving");
    await new Promise((r) => setTimeout(r, PLAN.idleMs));
    govRss = rssOf(gov.proc.pid) ?? NaN;
    childRss = rssOf(child.pid) ?? NaN;
  } finally {
    await gov.stop();
  }
  const mol = await start("moleculer echo (footprint)", { args: [...TS, "bench/lib/moleculer-echo.ts"], ready: /moleculer echo ready at (\d+)/, ipc: false });
  let molRss = NaN;
  const molReadyMs = mol.readyAt - mol.startedAt;
  try {
    await new Promise((r) => setTimeout(r, PLAN.idleMs));
    molRss = rssOf(mol.pid) ?? NaN;
  } finally {
    await mol.stop();
  }

  const ready = median(samples.map((x) => x.readyMs));
  const first = median(samples.map((x) => x.firstCallMs));
  const rss = median(samples.map((x) => x.rss));
  rows.push({ case: "footprint", system: "node-bin", what: "container (echo), idle", rss_bytes: round(rss, 0), samples: samples.length });
  rows.push({ case: "footprint", system: "node-bin", what: "governor with one component, idle", rss_bytes: round(govRss, 0), child_rss_bytes: round(childRss, 0) });
  rows.push({ case: "footprint", system: "node-bin", what: "container start-up", ready_line_ms: round(ready, 0), first_call_ms: round(first, 0), samples: samples.length, first_call_ms_each: samples.map((x) => round(x.firstCallMs, 0)) });
  rows.push({ case: "footprint", system: "moleculer", what: "TCP-transporter broker with one service, idle (for comparison)", rss_bytes: round(molRss, 0), ready_line_ms: round(molReadyMs, 0) });
  line({ case: "6 footprint", system: "RSS of an idle container (echo)", result: mib(rss), target: "none (reported)" });
  line({ case: "6 footprint", system: "RSS of an idle governor (+ its one child)", result: `${mib(govRss)} (+ ${mib(childRss)})`, target: "none (reported)" });
  line({ case: "6 footprint", system: "container start → ready line; → first served call", result: `${secs(ready)}; ${secs(first)}`, target: "none (reported)" });
  line({ case: "6 footprint", system: "Moleculer TCP broker, idle RSS; start → ready (comparison)", result: `${mib(molRss)}; ${secs(molReadyMs)}`, target: "none (reported)" });
}

// ---------------------------------------------------------------- the run

const version = (pkg: string) => (JSON.parse(readFileSync(join(ROOT, "node_modules", pkg, "package.json"), "utf8")) as { version: string }).version;
const git = (...args: string[]) => {
  try {
    return execFileSync("git", args, { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trimEnd();
  } catch {
    return "";
  }
};
const startedAt = new Date();
const loadStart = loadavg();
const phases: [string, () => Promise<void>][] = [
  ["inprocess", inprocess],
  ["rpc", rpc],
  ["fanout", fanout],
  ["elasticity", elasticity],
  ["membership", membership],
  ["footprint", footprint],
];
log(`bench/run.ts${quick ? " --quick" : ""}: ${ROUNDS} rounds; load average ${loadStart.map((x) => x.toFixed(2)).join(" ")}`);
for (const [name, phase] of phases) {
  if (only && !only.includes(name)) continue;
  try {
    await phase();
  } catch (err) {
    const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
    failures.push(`${name}: ${message}`);
    log(`\n${name} FAILED: ${message}`);
    line({ case: name, system: "FAILED", result: (err instanceof Error ? err.message : String(err)).split("\n")[0]!.slice(0, 200) });
  } finally {
    await stopAll();
  }
}
const loadEnd = loadavg();
const durationS = (Date.now() - startedAt.getTime()) / 1000;

const machine = {
  cpus: cpus().length,
  model: cpus()[0]?.model ?? "unknown",
  node: process.version,
  os: `${osType()} ${release()} ${arch()}`,
  loadavg_start: loadStart.map((x) => round(x, 2)),
  loadavg_end: loadEnd.map((x) => round(x, 2)),
  date: startedAt.toISOString(),
};
const run = {
  quick,
  rounds: ROUNDS,
  cases: only ?? ALL_CASES,
  duration_s: round(durationS, 0),
  commit: git("rev-parse", "--short", "HEAD"),
  /** Files of src/ that differ from the commit (the code measured is the working tree's). */
  src_changes: git("status", "--porcelain", "--", "src").split("\n").filter(Boolean).map((l) => l.slice(3)),
  profiled: PROFILE_DIR ?? null,
  versions: { zeromq: version("zeromq"), moleculer: version("moleculer"), protobufjs: version("protobufjs") },
  failures,
};
writeFileSync(OUT, `${JSON.stringify({ machine, run, rows }, null, 2)}\n`);

const header: (keyof Line)[] = ["case", "system", "inFlight", "result", "latency", "cpu", "ratio", "target", "met"];
const titles: Record<keyof Line, string> = { case: "case", system: "system", inFlight: "in flight", result: "result (median; min-max over rounds)", latency: "p50 / p99 µs", cpu: "CPU µs/call (client + server)", ratio: "ratio (median of per-round)", target: "target (issue 6)", met: "met?" };
console.log(
  `\nnode-bin benchmarks${quick ? " (--quick)" : ""}: ${machine.cpus} x ${machine.model}, node ${machine.node}, ${machine.os}; ` +
    `zeromq.js ${run.versions.zeromq}, Moleculer ${run.versions.moleculer}; commit ${run.commit || "?"}${run.src_changes.length ? ` + uncommitted changes in ${run.src_changes.join(", ")}` : ""}; ${startedAt.toISOString()}; ` +
    `${PROFILE_DIR ? "PROFILED (node-bin processes only: ratios are skewed); " : ""}` +
    `load average ${loadStart.map((x) => x.toFixed(1)).join("/")} at start, ${loadEnd.map((x) => x.toFixed(1)).join("/")} at end; ${ROUNDS} rounds, ${Math.round(durationS)} s\n`,
);
console.log(`| ${header.map((h) => titles[h]).join(" | ")} |`);
console.log(`| ${header.map((h) => (["inFlight"].includes(h) ? "---:" : "---")).join(" | ")} |`);
for (const l of lines) console.log(`| ${header.map((h) => l[h].replace(/\|/g, "\\|")).join(" | ")} |`);
console.log("");
if (verdicts.length) {
  console.log("targets:");
  for (const v of verdicts) console.log(`  ${v.met ? "met   " : "MISSED"}  ${v.target}: ${v.detail}`);
}
if (failures.length) console.log(`\nFAILED: ${failures.map((f) => f.split("\n")[0]).join("; ")}`);
console.log(`\nwritten: ${OUT}`);
process.exit(failures.length ? 1 : 0);
