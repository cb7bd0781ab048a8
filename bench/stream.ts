/**
 * STREAM items per second, same host, two processes: `node-bin dev` serving
 * bench/components-stream/items over ipc, read with the client library at a
 * window of 1, 16 and 256 items, beside 64-in-flight SYNC calls of the same
 * payload to the same node, all in one run. Prints a markdown table; asserts
 * nothing.
 *
 *   node --import ./bin/register.mjs bench/stream.ts            # 3 rounds
 *   node --import ./bin/register.mjs bench/stream.ts --quick    # 1 round, shorter slices
 *   node --import ./bin/register.mjs bench/stream.ts --rounds 5
 *
 * Each round gives every case the same time in slices that alternate
 * (A B C D, then D C B A, ...), so that load from other processes hits all
 * alike; a stream case opens one stream per slice (its items until the
 * slice's time is up, then it leaves the stream). The table shows medians over
 * rounds; the ratio is the median of per-round ratios to the SYNC case. CPU
 * per item is the client's process.cpuUsage() plus the server's utime+stime
 * from /proc/<pid>/stat.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "../src/client/client.ts";
import { benchArgs } from "./lib/args.ts";

const { quick, rounds: ROUNDS, flag } = benchArgs("bench/stream.ts");
const PLAN = quick ? { slices: 4, sliceMs: 250, warmMs: 300 } : { slices: 6, sliceMs: 500, warmMs: 1000 };
const WINDOWS = [1, 16, 256];
const IN_FLIGHT = 64;
const RUN_LIMIT_MS = quick ? 120_000 : 600_000;
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const PAYLOAD = { a: 1, b: "hello world" };
const CLK_TCK = 100;

const privateDir = mkdtempSync(join(tmpdir(), "node-bin-bench-stream-"));
let server: ChildProcess | undefined;
process.on("exit", () => {
  if (server?.pid !== undefined && server.exitCode === null && server.signalCode === null) server.kill("SIGKILL");
  rmSync(privateDir, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => process.exit(130));
setTimeout(() => {
  console.error(`bench/stream.ts: gave up after ${RUN_LIMIT_MS / 1000} s`);
  process.exit(1);
}, RUN_LIMIT_MS).unref();

/** Starts `node-bin dev` on an ipc endpoint of the private directory; resolves with it once ready. */
function startServer(): Promise<string> {
  const endpoint = `ipc://${join(privateDir, "stream.sock")}`;
  server = spawn(process.execPath, ["bin/node-bin", "dev", "--components", "bench/components-stream", "--endpoint", endpoint], {
    cwd: ROOT,
    env: { ...process.env, NODEBIN_RUNTIME_DIR: privateDir, NODEBIN_LOG: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`node-bin dev not ready within 30 s: ${err}`)), 30_000);
    server!.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
    server!.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      if (/ready at (\S+)/.test(out)) {
        clearTimeout(timer);
        resolve(endpoint);
      }
    });
    server!.once("exit", (code) => reject(new Error(`node-bin dev exited (${code}) before it was ready: ${err}`)));
  });
}

function processCpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLK_TCK;
}

interface Case {
  name: string;
  /** Runs for `ms` and returns how many items (or replies) arrived. */
  run(ms: number): Promise<number>;
}

interface Totals {
  units: number;
  seconds: number;
  cpu: number; // µs, client + server
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function measure(c: Case, ms: number): Promise<Totals> {
  const pid = server!.pid!;
  const cpu0 = process.cpuUsage();
  const server0 = processCpuMicros(pid);
  const t0 = performance.now();
  const units = await c.run(ms);
  const seconds = (performance.now() - t0) / 1e3;
  const cpu = process.cpuUsage(cpu0);
  return { units, seconds, cpu: cpu.user + cpu.system + processCpuMicros(pid) - server0 };
}

let client: Client | undefined;
let exitCode = 0;
try {
  const endpoint = await startServer();
  client = await Client.connect({ endpoint });
  const c = client;
  // A wrong item would make the numbers meaningless: check one of each.
  const echoed = (await c.call("bench.Items/Echo", PAYLOAD)) as typeof PAYLOAD;
  if (echoed.a !== PAYLOAD.a || echoed.b !== PAYLOAD.b) throw new Error(`Echo answered ${JSON.stringify(echoed)}`);
  for await (const item of c.stream<typeof PAYLOAD>("bench.Items/Items", { count: 1, payload: PAYLOAD })) {
    if (item.a !== PAYLOAD.a || item.b !== PAYLOAD.b) throw new Error(`Items yielded ${JSON.stringify(item)}`);
  }

  const streamCase = (window: number): Case => ({
    name: `stream, window ${window}`,
    async run(ms) {
      const until = performance.now() + ms;
      let n = 0;
      for await (const _ of c.stream("bench.Items/Items", { count: 0, payload: PAYLOAD }, { window, timeoutMs: ms + 30_000 })) {
        // The clock is read every 64 items: reading it costs about what an item does.
        if ((++n & 63) === 0 && performance.now() >= until) break;
        if (window < 64 && n % window === 0 && performance.now() >= until) break;
      }
      return n;
    },
  });
  const syncCase: Case = {
    name: `SYNC calls, ${IN_FLIGHT} in flight`,
    async run(ms) {
      const until = performance.now() + ms;
      let n = 0;
      const worker = async () => {
        while ((n & 63) !== 0 || performance.now() < until) {
          await c.call("bench.Items/Echo", PAYLOAD);
          n++;
        }
      };
      await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
      return n;
    },
  };
  const cases: Case[] = [syncCase, ...WINDOWS.map(streamCase)];

  console.error(`warming up (${cases.length} cases)...`);
  for (const k of cases) await measure(k, PLAN.warmMs);

  const samples = new Map<string, { rate: number; cpu: number }[]>(cases.map((k) => [k.name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    const totals = new Map<string, Totals>(cases.map((k) => [k.name, { units: 0, seconds: 0, cpu: 0 }]));
    for (let slice = 0; slice < PLAN.slices; slice++) {
      const order = (slice + round) % 2 === 0 ? cases : [...cases].reverse();
      for (const k of order) {
        const t = await measure(k, PLAN.sliceMs);
        const sum = totals.get(k.name)!;
        sum.units += t.units;
        sum.seconds += t.seconds;
        sum.cpu += t.cpu;
      }
    }
    for (const k of cases) {
      const sum = totals.get(k.name)!;
      const s = { rate: sum.units / sum.seconds, cpu: sum.cpu / sum.units };
      samples.get(k.name)!.push(s);
      console.error(`round ${round + 1}/${ROUNDS}  ${k.name.padEnd(24)} ${Math.round(s.rate).toString().padStart(7)} /s  cpu ${s.cpu.toFixed(1)} µs each`);
    }
  }

  const fmt = (x: number) => Math.round(x).toLocaleString("en-US");
  const base = samples.get(syncCase.name)!;
  console.log(
    `\nSTREAM items against SYNC replies, same host, two processes (node-bin dev over ipc, the client library); payload {a:1,b:"hello world"} as each item and each reply; ` +
      `${ROUNDS} round${ROUNDS > 1 ? "s" : ""} of ${PLAN.slices} slices of ${PLAN.sliceMs} ms per case, alternating; medians (ratio: median of per-round ratios to the SYNC case); node ${process.version}\n`,
  );
  console.log("| case | items (or replies)/s | ratio vs SYNC, 64 in flight | CPU µs per item (client + server) | /s, min-max over rounds |");
  console.log("| --- | ---: | ---: | ---: | ---: |");
  for (const k of cases) {
    const xs = samples.get(k.name)!;
    const ratios = xs.map((s, i) => s.rate / base[i]!.rate);
    const ratio = k === syncCase ? "1.00x (baseline)" : `${median(ratios).toFixed(2)}x`;
    console.log(`| ${k.name} | ${fmt(median(xs.map((s) => s.rate)))} | ${ratio} | ${median(xs.map((s) => s.cpu)).toFixed(1)} | ${fmt(Math.min(...xs.map((s) => s.rate)))}-${fmt(Math.max(...xs.map((s) => s.rate)))} |`);
  }
} catch (err) {
  console.error(`bench/stream.ts failed: ${(err as Error).stack ?? err}`);
  exitCode = 1;
} finally {
  await client?.close().catch(() => {});
  if (server && server.exitCode === null && server.signalCode === null) {
    const exited = new Promise<void>((resolve) => server!.once("exit", () => resolve()));
    server.kill("SIGTERM");
    const timer = setTimeout(() => server!.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }
}
process.exit(exitCode);
