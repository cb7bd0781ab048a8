/**
 * Same-host sync request/response over ZeroMQ between two processes:
 * node-bin (`node-bin dev` serving bench/components/echo, called with the
 * client library) beside raw zeromq.js (a DEALER here, the ROUTER echo of
 * bench/raw-zmq-echo.ts there), measured in the same run, 1 call at a time and
 * 64 in flight; and node-bin over tcp with a cluster key (CurveZMQ) against
 * the same without, interleaved with them: the cost of CurveZMQ as a ratio.
 * Prints markdown tables; asserts nothing.
 *
 *   node --import ./bin/register.mjs bench/zmq.ts            # 3 rounds
 *   node --import ./bin/register.mjs bench/zmq.ts --quick    # 1 round, fewer calls
 *   node --import ./bin/register.mjs bench/zmq.ts --rounds 5 --profile /tmp/prof --only "node-bin tcp"
 *
 * --profile DIR starts each server under `node --cpu-prof --cpu-prof-dir=DIR/<case>`
 * (run this driver itself with --cpu-prof to profile the client side). Each
 * directory gets two profiles: thread 0 (`CPU.*.<pid>.0.*`) is the main
 * thread; the other is the TypeScript hooks worker.
 *
 * Each round runs every case, first at 1 in flight, then at 64. A node-bin
 * case and its raw baseline over the same transport form a pair whose calls
 * are split into slices that alternate A B B A ..., so that load from other
 * processes hits both alike. The table shows medians over rounds; the ratio
 * is the median of the per-round ratios. CPU
 * per call is the client's process.cpuUsage() plus the server's utime+stime
 * from /proc/<pid>/stat, both whole-process (libzmq's I/O thread included).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "../src/client/client.ts";
import { keyFileText, newKeyLine } from "../src/security/keys.ts";
import { RawClient } from "./lib/raw-zmq-client.ts";
import { benchArgs } from "./lib/args.ts";

// ---------------------------------------------------------------- settings

const { quick, rounds: ROUNDS, flag } = benchArgs("bench/zmq.ts");
const PROFILE_DIR = flag("--profile");
/** Measure only the cases whose name contains this (e.g. "node-bin tcp"), for profiling. */
const ONLY = flag("--only");
/**
 * Calls per case per round at each in-flight level, split into `slices`
 * interleaved with the other case of its pair; `maxMs` bounds a case's time
 * per round (no new call starts past it).
 */
const PLAN = quick
  ? { calls: { 1: 1_000, 64: 10_000 } as Record<number, number>, slices: 4, maxMs: 3_000, warm: { 1: 300, 64: 3_000 } as Record<number, number> }
  : { calls: { 1: 5_000, 64: 60_000 } as Record<number, number>, slices: 10, maxMs: 8_000, warm: { 1: 500, 64: 10_000 } as Record<number, number> };
const IN_FLIGHT = [1, 64];
const READY_TIMEOUT_MS = 30_000;
/** The whole run is abandoned (servers killed, exit 1) past this. */
const RUN_LIMIT_MS = quick ? 120_000 : 600_000;

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const METHOD = "bench.Echo/Echo";
const REQUEST = { a: 1, b: "hello world" };
/** REQUEST as protobuf bytes (bench.Payload): field 1 varint 1, field 2 length 11 "hello world". What node-bin carries as its value. */
const PAYLOAD = Buffer.concat([Buffer.from([0x08, 0x01, 0x12, 0x0b]), Buffer.from("hello world")]);
const CLK_TCK = 100; // USER_HZ: /proc stat times are in 1/100 s on Linux

// ---------------------------------------------------------------- server processes

interface Server {
  name: string;
  child: ChildProcess;
  endpoint: string;
}

const children = new Set<ChildProcess>();
const privateDir = mkdtempSync(join(tmpdir(), "node-bin-bench-")); // mode 0700

function killAll(signal: NodeJS.Signals): void {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, signal);
      } catch {
        // already gone
      }
    }
  }
}

// Whatever happens, the servers started here do not outlive this process.
process.on("exit", () => {
  killAll("SIGKILL");
  rmSync(privateDir, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: stopping the servers`);
    process.exit(130);
  });
}
const guard = setTimeout(() => {
  console.error(`bench/zmq.ts: gave up after ${RUN_LIMIT_MS / 1000} s`);
  process.exit(1);
}, RUN_LIMIT_MS);
guard.unref();

/** Starts a server process and waits for its readiness line; returns the endpoint it printed. */
function start(name: string, args: string[], ready: RegExp): Promise<Server> {
  // One directory per server: its main thread and the TypeScript hooks worker each write a profile.
  const nodeFlags = PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${join(PROFILE_DIR, name.replace(/\W+/g, "-"))}`] : [];
  const child = spawn(process.execPath, [...nodeFlags, ...args], {
    cwd: ROOT,
    env: { ...process.env, NODEBIN_RUNTIME_DIR: privateDir, NODEBIN_LOG: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  return new Promise<Server>((resolve, reject) => {
    let out = "";
    let err = "";
    const fail = (why: string) => {
      clearTimeout(timer);
      reject(new Error(`${name}: ${why}${err ? `\n--- its stderr:\n${err}` : ""}`));
    };
    const timer = setTimeout(() => fail(`no readiness line within ${READY_TIMEOUT_MS} ms`), READY_TIMEOUT_MS);
    child.stderr!.setEncoding("utf8").on("data", (d: string) => {
      if (err.length < 20_000) err += d;
    });
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ name, child, endpoint: m[1]! });
      }
    });
    child.once("error", (e) => fail(e.message));
    child.once("exit", (code, signal) => fail(`exited (${signal ?? code}) before it was ready`));
  });
}

/** SIGTERM, then SIGKILL if it has not exited within `ms`. */
async function stop(server: Server, ms = 5_000): Promise<void> {
  const { child } = server;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  await exited;
  clearTimeout(timer);
}

/** utime + stime of a process in µs (all its threads). */
function processCpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // fields from 3 (state) on
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLK_TCK; // fields 14 and 15
}

// ---------------------------------------------------------------- measuring

interface Case {
  name: string;
  server: Server;
  call: () => Promise<unknown>;
  /** Name of the raw case this one is compared with (and measured interleaved with). */
  baseline: string;
  /** Name of another case of its group to report a ratio against too (the keyed case: the unkeyed one). */
  compare?: string;
}

interface Totals {
  calls: number;
  seconds: number;
  clientCpu: number; // µs
  serverCpu: number; // µs
}

interface Sample {
  rate: number;
  clientCpu: number; // µs per call
  serverCpu: number; // µs per call
}

const sample = (t: Totals): Sample => ({ rate: t.calls / t.seconds, clientCpu: t.clientCpu / t.calls, serverCpu: t.serverCpu / t.calls });

/** Keeps `concurrency` calls in flight until `total` have started or `maxMs` has passed; waits for all. */
async function measure(c: Case, concurrency: number, total: number, maxMs: number): Promise<Totals> {
  const pid = c.server.child.pid!;
  let started = 0;
  let done = 0;
  const cpu0 = process.cpuUsage();
  const server0 = processCpuMicros(pid);
  const t0 = performance.now();
  const stopAt = t0 + maxMs;
  const worker = async () => {
    while (started < total && (started & 63 || performance.now() < stopAt)) {
      started++;
      await c.call();
      done++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - t0) / 1e3;
  const cpu = process.cpuUsage(cpu0);
  const serverCpu = processCpuMicros(pid) - server0;
  return { calls: done, seconds, clientCpu: cpu.user + cpu.system, serverCpu };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

// ---------------------------------------------------------------- the run

const servers: Server[] = [];
const clients: { close(): Promise<void> }[] = [];
let exitCode = 0;
try {
  const ipc = (file: string) => `ipc://${join(privateDir, file)}`;
  const rawScript = ["--import", "./bin/register.mjs", "bench/raw-zmq-echo.ts"];
  const rawReady = /raw zmq echo ready at (\S+)/;
  const devReady = /node-bin dev ready at (\S+)/;
  const dev = (endpoint: string) => ["bin/node-bin", "dev", "--components", "bench/components", "--endpoint", endpoint];
  const keyFile = join(privateDir, "cluster.key");
  writeFileSync(keyFile, keyFileText([newKeyLine()]), { mode: 0o600 });
  servers.push(
    ...(await Promise.all([
      start("raw zeromq.js tcp", [...rawScript, "tcp://127.0.0.1:0"], rawReady),
      start("raw zeromq.js ipc", [...rawScript, ipc("raw.sock")], rawReady),
      start("node-bin tcp", dev("tcp://127.0.0.1:0"), devReady),
      start("node-bin ipc", dev(ipc("bench.sock")), devReady),
      start("node-bin tcp keyed", [...dev("tcp://127.0.0.1:0"), "--cluster-key", keyFile], devReady),
    ])),
  );
  const [rawTcp, rawIpc, nbTcp, nbIpc, nbKeyed] = servers as [Server, Server, Server, Server, Server];

  const rawCase = (server: Server): Case => {
    const client = new RawClient(server.endpoint);
    clients.push(client);
    return { name: server.name, server, call: () => client.call(PAYLOAD), baseline: server.name };
  };
  const nodeBinCase = async (server: Server, baseline: Server, keyed?: { keyFile: string; compare: Server }): Promise<Case> => {
    const client = await Client.connect({ endpoint: server.endpoint, ...(keyed ? { clusterKeyFile: keyed.keyFile } : {}) });
    clients.push(client);
    // A wrong echo would make the numbers meaningless: check one reply.
    const reply = (await client.call(METHOD, REQUEST)) as { a: number; b: string };
    if (reply.a !== REQUEST.a || reply.b !== REQUEST.b) throw new Error(`${server.name}: echo answered ${JSON.stringify(reply)}`);
    return { name: server.name, server, call: () => client.call(METHOD, REQUEST), baseline: baseline.name, ...(keyed ? { compare: keyed.compare.name } : {}) };
  };
  const cases: Case[] = [
    rawCase(rawTcp),
    await nodeBinCase(nbTcp, rawTcp),
    await nodeBinCase(nbKeyed, rawTcp, { keyFile, compare: nbTcp }),
    rawCase(rawIpc),
    await nodeBinCase(nbIpc, rawIpc),
  ].filter((c) => !ONLY || c.name.includes(ONLY));
  if (cases.length === 0) throw new Error(`--only ${JSON.stringify(ONLY)} matches no case`);
  for (const c of cases.filter((c) => c.name.startsWith("raw"))) {
    const reply = await (c.call() as Promise<Buffer>);
    if (!reply.equals(PAYLOAD)) throw new Error(`${c.name}: echo answered ${reply.toString("hex")}`);
  }

  console.error(`warming up (${cases.length} cases)...`);
  for (const c of cases) for (const n of IN_FLIGHT) await measure(c, n, PLAN.warm[n]!, PLAN.maxMs);

  // Cases run in pairs: each node-bin case with its raw baseline over the same
  // transport. A pair's calls in a round are split into slices that alternate
  // A B B A A B ..., and the order of pairs reverses every other round, so a
  // change in machine load (other processes on a shared host) hits both alike.
  const pairs: Case[][] = [];
  for (const c of cases) {
    const pair = pairs.find((p) => p[0]!.baseline === c.baseline);
    if (pair) pair.push(c);
    else pairs.push([c]);
  }
  const samples = new Map<string, Sample[]>();
  const key = (c: Case, n: number) => `${c.name}|${n}`;
  for (let round = 0; round < ROUNDS; round++) {
    for (const n of IN_FLIGHT) {
      for (const pair of round % 2 === 0 ? pairs : [...pairs].reverse()) {
        const totals = pair.map((): Totals => ({ calls: 0, seconds: 0, clientCpu: 0, serverCpu: 0 }));
        for (let slice = 0; slice < PLAN.slices; slice++) {
          const order = pair.map((_, i) => i);
          if ((slice + round) % 2 === 1) order.reverse();
          for (const i of order) {
            const t = await measure(pair[i]!, n, Math.ceil(PLAN.calls[n]! / PLAN.slices), PLAN.maxMs / PLAN.slices);
            const sum = totals[i]!;
            sum.calls += t.calls;
            sum.seconds += t.seconds;
            sum.clientCpu += t.clientCpu;
            sum.serverCpu += t.serverCpu;
          }
        }
        pair.forEach((c, i) => {
          const s = sample(totals[i]!);
          (samples.get(key(c, n)) ?? samples.set(key(c, n), []).get(key(c, n))!).push(s);
          console.error(`round ${round + 1}/${ROUNDS}  ${c.name.padEnd(18)} ${String(n).padStart(2)} in flight  ${Math.round(s.rate).toString().padStart(6)} calls/s  cpu ${s.clientCpu.toFixed(1)} + ${s.serverCpu.toFixed(1)} µs/call`);
        });
      }
    }
  }

  const fmt = (x: number) => Math.round(x).toLocaleString("en-US");
  const zmqPkg = JSON.parse(readFileSync(join(ROOT, "node_modules/zeromq/package.json"), "utf8")) as { version: string };
  console.log(
    `\nsame-host sync echo over ZeroMQ, two processes; payload {a:1,b:"hello world"} (${PAYLOAD.length} protobuf bytes); ` +
      `${ROUNDS} round${ROUNDS > 1 ? "s" : ""}, medians (ratio: median of per-round ratios to raw zeromq.js over the same transport); ` +
      `per case and round up to ${PLAN.calls[1]} calls at 1 in flight and ${PLAN.calls[64]} at 64 (at most ${PLAN.maxMs / 1000} s), ` +
      `in ${PLAN.slices} slices alternating with its baseline; node ${process.version}, zeromq.js ${zmqPkg.version}\n`,
  );
  console.log(`| case | in flight | calls/s | ratio vs raw zeromq.js | CPU µs/call (client + server) | calls/s, min-max over rounds | ratio, min-max over rounds |`);
  console.log(`| --- | ---: | ---: | ---: | ---: | ---: | ---: |`);
  for (const n of IN_FLIGHT) {
    for (const c of cases) {
      const xs = samples.get(key(c, n))!;
      const rate = median(xs.map((s) => s.rate));
      const cc = median(xs.map((s) => s.clientCpu));
      const sc = median(xs.map((s) => s.serverCpu));
      const range = `${fmt(Math.min(...xs.map((s) => s.rate)))}-${fmt(Math.max(...xs.map((s) => s.rate)))}`;
      // The ratio pairs each round's node-bin rate with the same round's raw rate (measured next to it).
      const base = samples.get(`${c.baseline}|${n}`);
      const ratios = base && c.baseline !== c.name ? xs.map((s, i) => s.rate / base[i]!.rate) : undefined;
      const ratio = c.baseline === c.name ? "1.00x (baseline)" : ratios ? `${median(ratios).toFixed(2)}x` : "-";
      const ratioRange = ratios ? `${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}` : "";
      console.log(`| ${c.name} | ${n} | ${fmt(rate)} | ${ratio} | ${(cc + sc).toFixed(1)} (${cc.toFixed(1)} + ${sc.toFixed(1)}) | ${range} | ${ratioRange} |`);
    }
  }
  console.log(`\ntargets (reported, not asserted): node-bin >= 0.8x raw zeromq.js at 1 and at 64 in flight.`);

  // The cost of CurveZMQ: each keyed case against its unkeyed twin, measured interleaved with it.
  const keyedCases = cases.filter((c) => c.compare && cases.some((o) => o.name === c.compare));
  if (keyedCases.length) {
    console.log(`\nthe cost of a cluster key (CurveZMQ on tcp), same run, same slices: ratio = keyed / unkeyed calls/s (median of per-round ratios)\n`);
    console.log(`| case | in flight | calls/s keyed | calls/s unkeyed | ratio keyed / unkeyed | ratio, min-max over rounds | CPU µs/call keyed - unkeyed |`);
    console.log(`| --- | ---: | ---: | ---: | ---: | ---: | ---: |`);
    for (const n of IN_FLIGHT) {
      for (const c of keyedCases) {
        const xs = samples.get(key(c, n))!;
        const ys = samples.get(`${c.compare}|${n}`)!;
        const ratios = xs.map((s, i) => s.rate / ys[i]!.rate);
        const cpu = (ss: Sample[]) => median(ss.map((s) => s.clientCpu + s.serverCpu));
        console.log(
          `| ${c.name} | ${n} | ${fmt(median(xs.map((s) => s.rate)))} | ${fmt(median(ys.map((s) => s.rate)))} | ${median(ratios).toFixed(2)}x | ${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)} | ${(cpu(xs) - cpu(ys)).toFixed(1)} |`,
        );
      }
    }
  }
} catch (err) {
  console.error(`bench/zmq.ts failed: ${(err as Error).stack ?? err}`);
  exitCode = 1;
} finally {
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
  await Promise.all(servers.map((s) => stop(s)));
  killAll("SIGKILL"); // servers that failed to start
}
process.exit(exitCode);
