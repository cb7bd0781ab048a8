/**
 * BROADCAST throughput on one host: broadcasts per second that reach every
 * one of 1, 2 and 4 subscribers, node-bin beside raw zeromq.js PUB/SUB in
 * the same run. Prints a markdown table; asserts nothing.
 *
 *   node --import ./bin/register.mjs bench/broadcast.ts            # 3 rounds
 *   node --import ./bin/register.mjs bench/broadcast.ts --quick    # 1 round, fewer broadcasts
 *   node --import ./bin/register.mjs bench/broadcast.ts --rounds 5
 *
 * node-bin, as in production: per subscriber count K, a `node-bin governor`
 * (the host's agent, so its broadcast relay) with K children of
 * examples/components/board (its own runtime directory and discovery port:
 * one "host" per K); this driver joins that host as a member process and
 * publishes demo.Board/Post through its PUB, so each broadcast takes the
 * publisher -> relay (ipc XSUB) -> relay's XPUB -> each child's SUB path,
 * and each child decodes the envelope, queues it and runs the handler.
 * raw zeromq.js: the driver's PUB (ipc), K processes of bench/lib/raw-zmq-sub.ts
 * (a SUB that counts), one message [topic, payload] per broadcast.
 * Payload: the same encoded demo.Note (a 100-character text) both ways.
 *
 * Both are driven alike: bursts of BURST broadcasts, the event loop given a
 * turn between bursts, and never more than WINDOW broadcasts ahead of the
 * slowest subscriber (each subscriber's count asked over a request socket:
 * demo.Board/Read at each child, a ROUTER at each raw subscriber), so neither
 * outruns its high-water marks and nothing is dropped (a run that loses
 * broadcasts is reported as such). A case's time ends when every subscriber
 * has all of them. Cases run in pairs (node-bin and raw for the same K),
 * their broadcasts split into slices that alternate A B B A; the table shows
 * medians over rounds, and the ratio is the median of per-round ratios.
 * CPU per broadcast adds every process of the case (driver, relay,
 * subscribers) from process.cpuUsage() and /proc/<pid>/stat.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import * as zmq from "zeromq";
import { loadComponent } from "../src/component/loader.ts";
import { NodeBinProcess } from "../src/container/compose.ts";
import { consoleLogger } from "../src/container/log.ts";
import { encodeMessage } from "../src/wire/message.ts";
import { Plane } from "../src/wire/envelope.ts";
import { benchArgs } from "./lib/args.ts";

// ---------------------------------------------------------------- settings

const { quick, rounds: ROUNDS, flag } = benchArgs("bench/broadcast.ts");
const SUBSCRIBERS = [1, 2, 4];
/** Broadcasts per case per round, in slices alternating with the other case of its pair. */
const PLAN = quick ? { broadcasts: 6_000, slices: 2, warm: 2_000 } : { broadcasts: 30_000, slices: 6, warm: 6_000 };
const BURST = 100;
// Under what a PUB holds (SNDHWM 1000 messages, whose reader's progress it learns only every ~500): raw zeromq.js loses none at this.
const WINDOW = 300;
/** A slice whose subscribers stop making progress for this long has lost broadcasts: it ends there. */
const STALL_MS = 5_000;
const READY_TIMEOUT_MS = 60_000;
const RUN_LIMIT_MS = quick ? 300_000 : 1_200_000;
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const POST = "demo.Board/Post";
const READ = "demo.Board/Read";
const TOPIC = `${POST}\0`;
const CLK_TCK = 100;

// ---------------------------------------------------------------- processes

const children = new Set<ChildProcess>();
const base = mkdtempSync(join(tmpdir(), "node-bin-bench-bcast-"));
const extraPids = new Set<number>(); // governors' children: killed by pid too

function killAll(): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const pid of extraPids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}
process.on("exit", () => {
  killAll();
  rmSync(base, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => process.exit(130));
setTimeout(() => {
  console.error(`bench/broadcast.ts: gave up after ${RUN_LIMIT_MS / 1000} s`);
  process.exit(1);
}, RUN_LIMIT_MS).unref();

function start(args: string[], env: NodeJS.ProcessEnv, ready: RegExp, label: string): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, NODEBIN_LOG: "warn", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`${label}: not ready within ${READY_TIMEOUT_MS} ms\n${err}`)), READY_TIMEOUT_MS);
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (err.length < 20_000 ? (err += d) : undefined));
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m });
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${label}: exited (${signal ?? code}) before it was ready\n${err}`));
    });
  });
}

function processCpuMicros(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLK_TCK;
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------- the cases

interface Case {
  name: string;
  subscribers: number;
  publish(): void;
  /** What each subscriber has received so far. */
  counts(): Promise<number[]>;
  /** Pids of its other processes (relay, subscribers), for CPU. */
  pids: number[];
}

const board = await loadComponent(join(ROOT, "examples", "components", "board"));
const note = { text: "x".repeat(100), author: "bench" };
const payload = Buffer.from(encodeMessage(board.schema.methods.get(POST)!.requestType, note, "bench"));

/** K board children under a governor of their own ("host" bench-bK), and this driver as a member of that host. */
async function nodeBinCase(k: number): Promise<Case> {
  const dir = join(base, `nb${k}`);
  const runtimeDir = join(dir, "rt");
  mkdirSync(runtimeDir, { recursive: true, mode: 0o700 });
  cpSync(join(ROOT, "examples", "components", "board"), join(dir, "components", "board"), { recursive: true });
  writeFileSync(join(dir, "governor.json"), JSON.stringify({ components: { board: { min: k, max: k } } }));
  const port = 21000 + Math.floor(Math.random() * 20000);
  const host = `bench-b${k}`;
  const env = { NODEBIN_RUNTIME_DIR: runtimeDir, NODEBIN_HOST: host };
  const gov = await start(["bin/node-bin", "governor", "--components", join(dir, "components"), "--listen", "127.0.0.1", "--discovery-port", String(port)], env, /governor ready: /, `governor for ${k}`);
  const proc = await NodeBinProcess.create({ id: `bench-driver-${k}`, host, runtimeDir, logger: (source) => consoleLogger(source), hostRole: { seeds: [], discoveryPort: port } });
  await proc.host!.join();
  if (proc.host!.role !== "member") throw new Error(`the driver should be a member of ${host}, it is its ${proc.host!.role}`);
  const end = Date.now() + READY_TIMEOUT_MS;
  const nodesOf = () => proc.container.table.entries().filter((n) => n.component === "board");
  while (nodesOf().length < k) {
    if (Date.now() > end) throw new Error(`governor for ${k}: ${nodesOf().length} board nodes in the table after ${READY_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const nodes = nodesOf().map((n) => n.id);
  const read = proc.container.router.route(READ).method;
  const childPids = [...new Set(nodes.map((id) => proc.container.table.get(id)?.endpoints.map((e) => Number(/node-(\d+)-/.exec(e)?.[1])).find(Boolean) ?? 0))].filter(Boolean);
  for (const pid of childPids) extraPids.add(pid);
  return {
    name: "node-bin",
    subscribers: k,
    publish: () => proc.broadcast(POST, note),
    counts: () => Promise.all(nodes.map(async (to) => Number(((await proc.container.caller.callEndpoint({ method: read, to, plane: Plane.APPLICATION, request: { last: 1 } })) as { received: { toString(): string } }).received.toString()))),
    pids: [gov.child.pid!, ...childPids],
  };
}

/** K raw zeromq.js SUB processes on the driver's own PUB. */
async function rawCase(k: number): Promise<Case> {
  const dir = join(base, `raw${k}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pub = new zmq.Publisher({ linger: 0, sendHighWaterMark: 1000 });
  const pubEndpoint = `ipc://${join(dir, "pub.sock")}`;
  await pub.bind(pubEndpoint);
  const subs = await Promise.all(
    Array.from({ length: k }, (_, i) => start(["--import", "./bin/register.mjs", "bench/lib/raw-zmq-sub.ts", pubEndpoint, `ipc://${join(dir, `count-${i}.sock`)}`, POST], {}, /raw zmq sub ready at (\S+)/, `raw sub ${i}`)),
  );
  const askers = subs.map(({ match }) => {
    const dealer = new zmq.Dealer({ linger: 0 });
    dealer.connect(match[1]!);
    return dealer;
  });
  // One send in flight per socket (zeromq.js): queued, pumped in order.
  const queue: Buffer[][] = [];
  let pumping = false;
  const pump = async () => {
    pumping = true;
    while (queue.length) await pub.send(queue.shift()!);
    pumping = false;
  };
  const topic = Buffer.from(TOPIC);
  return {
    name: "raw zeromq.js",
    subscribers: k,
    publish: () => {
      queue.push([topic, payload]);
      if (!pumping) void pump();
    },
    counts: () =>
      Promise.all(
        askers.map(async (d) => {
          await d.send("count");
          const [reply] = await d.receive();
          return Number(reply!.toString());
        }),
      ),
    pids: subs.map((s) => s.child.pid!),
  };
}

interface Totals {
  broadcasts: number;
  seconds: number;
  cpu: number; // µs, every process of the case
  lost: number;
}

/** Publishes `n` broadcasts in bursts, never WINDOW ahead of the slowest subscriber; resolves once every subscriber has them. */
async function measure(c: Case, n: number): Promise<Totals> {
  const start = await c.counts();
  const cpu0 = process.cpuUsage();
  const others0 = c.pids.reduce((s, pid) => s + processCpuMicros(pid), 0);
  const t0 = performance.now();
  let sent = 0;
  let slowest = 0;
  let lastProgress = performance.now();
  const refresh = async () => {
    const now = await c.counts();
    const least = Math.min(...now.map((x, i) => x - start[i]!));
    if (least > slowest) lastProgress = performance.now();
    slowest = least;
  };
  while (sent < n) {
    const burst = Math.min(BURST, n - sent);
    for (let i = 0; i < burst; i++) c.publish();
    sent += burst;
    await nextTurn();
    while (sent - slowest > WINDOW) {
      await refresh();
      if (performance.now() - lastProgress > STALL_MS) break;
    }
    if (performance.now() - lastProgress > STALL_MS) break;
  }
  while (slowest < sent && performance.now() - lastProgress <= STALL_MS) await refresh();
  const seconds = (performance.now() - t0) / 1e3;
  const cpu = process.cpuUsage(cpu0);
  const others = c.pids.reduce((s, pid) => s + processCpuMicros(pid), 0) - others0;
  return { broadcasts: slowest, seconds, cpu: cpu.user + cpu.system + others, lost: sent - slowest };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

// ---------------------------------------------------------------- the run

try {
  console.error("starting 3 governors (1, 2 and 4 board children) and 7 raw subscribers...");
  const pairs: Case[][] = [];
  for (const k of SUBSCRIBERS) pairs.push([await rawCase(k), await nodeBinCase(k)]);
  // Subscriptions travel before the first broadcast can: publish until every subscriber has some, then warm up.
  for (const pair of pairs) {
    for (const c of pair) {
      for (let i = 0; Math.min(...(await c.counts())) === 0; i++) {
        if (i > 500) throw new Error(`${c.name} x${c.subscribers}: a subscriber got nothing`);
        c.publish();
        await new Promise((r) => setTimeout(r, 10));
      }
      await measure(c, PLAN.warm);
    }
  }
  const samples = new Map<string, { rate: number; cpu: number; lost: number }[]>();
  const key = (c: Case) => `${c.name}|${c.subscribers}`;
  for (let round = 0; round < ROUNDS; round++) {
    for (const pair of round % 2 === 0 ? pairs : [...pairs].reverse()) {
      const totals = pair.map((): Totals => ({ broadcasts: 0, seconds: 0, cpu: 0, lost: 0 }));
      for (let slice = 0; slice < PLAN.slices; slice++) {
        const order = (slice + round) % 2 === 1 ? [1, 0] : [0, 1];
        for (const i of order) {
          const t = await measure(pair[i]!, Math.ceil(PLAN.broadcasts / PLAN.slices));
          const sum = totals[i]!;
          sum.broadcasts += t.broadcasts;
          sum.seconds += t.seconds;
          sum.cpu += t.cpu;
          sum.lost += t.lost;
        }
      }
      pair.forEach((c, i) => {
        const t = totals[i]!;
        const s = { rate: t.broadcasts / t.seconds, cpu: t.cpu / Math.max(1, t.broadcasts), lost: t.lost };
        (samples.get(key(c)) ?? samples.set(key(c), []).get(key(c))!).push(s);
        console.error(`round ${round + 1}/${ROUNDS}  ${c.name.padEnd(14)} x${c.subscribers}  ${Math.round(s.rate).toString().padStart(7)} broadcasts/s  ${Math.round(s.rate * c.subscribers).toString().padStart(7)} deliveries/s  cpu ${s.cpu.toFixed(1)} µs/broadcast${s.lost ? `  LOST ${s.lost}` : ""}`);
      });
    }
  }
  const fmt = (x: number) => Math.round(x).toLocaleString("en-US");
  const zmqPkg = JSON.parse(readFileSync(join(ROOT, "node_modules/zeromq/package.json"), "utf8")) as { version: string };
  console.log(
    `\nsame-host broadcast, payload a demo.Note of ${payload.length} protobuf bytes; ${ROUNDS} round${ROUNDS > 1 ? "s" : ""}, medians ` +
      `(ratio: median of per-round ratios to raw zeromq.js PUB/SUB with as many subscribers); per case and round ${PLAN.broadcasts} broadcasts ` +
      `in ${PLAN.slices} slices alternating with its pair, bursts of ${BURST}, at most ${WINDOW} ahead of the slowest subscriber; node ${process.version}, zeromq.js ${zmqPkg.version}\n`,
  );
  console.log("| case | subscribers | broadcasts/s (each to every subscriber) | deliveries/s | ratio vs raw zeromq.js | CPU µs per broadcast (all processes) | broadcasts/s, min-max over rounds | lost |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const pair of pairs) {
    for (const c of pair) {
      const xs = samples.get(key(c))!;
      const raw = samples.get(key(pair[0]!))!;
      const rate = median(xs.map((s) => s.rate));
      const ratio = c === pair[0] ? "1.00x (baseline)" : `${median(xs.map((s, i) => s.rate / raw[i]!.rate)).toFixed(2)}x`;
      const range = `${fmt(Math.min(...xs.map((s) => s.rate)))}-${fmt(Math.max(...xs.map((s) => s.rate)))}`;
      console.log(`| ${c.name} | ${c.subscribers} | ${fmt(rate)} | ${fmt(rate * c.subscribers)} | ${ratio} | ${median(xs.map((s) => s.cpu)).toFixed(1)} | ${range} | ${xs.reduce((n, s) => n + s.lost, 0)} |`);
    }
  }
} catch (err) {
  console.error(err);
  process.exitCode = 1;
} finally {
  killAll();
  // The driver's own sockets and processes go with it.
  process.exit(process.exitCode ?? 0);
}
