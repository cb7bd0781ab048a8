/**
 * The cost of a gateway: SYNC calls to one echo node (`node-bin container`,
 * network b) made directly by a client of network b, against the same calls
 * made by a client of network a through a `node-bin gateway` joining a and b,
 * in one run, on loopback tcp (every hop tcp: the clients' host ids are
 * their own). Calls/s at 1 and 64 in flight, and latency p50/p99 at 1 in
 * flight with what the gateway adds. The two cases of each level alternate
 * in slices (A B B A ...) so that load from other processes hits both alike;
 * tables show medians over rounds, ratios are medians of per-round ratios.
 * Asserts nothing.
 *
 *   npm run bench:gateway               # 3 rounds
 *   npm run bench:gateway -- --quick    # 1 round, fewer calls
 *   npm run bench:gateway -- --rounds 5
 */
import { join } from "node:path";
import { Client } from "../src/client/client.ts";
import { benchArgs } from "./lib/args.ts";
import { BIN, ROOT, TS, cleanupSync, freePort, start, stopAll, tempDir } from "./lib/procs.ts";
import { dec1, int, median, ratio } from "./lib/stats.ts";

const { quick, rounds: ROUNDS } = benchArgs("bench/gateway.ts");
const PLAN = quick ? { calls: { 1: 1_000, 64: 8_000 } as Record<number, number>, slices: 4, warm: 300 } : { calls: { 1: 4_000, 64: 40_000 } as Record<number, number>, slices: 8, warm: 1_000 };
const IN_FLIGHT = [1, 64];
const METHOD = "bench.Echo/Echo";
const REQUEST = { a: 1, b: "hello world" };
const RUN_LIMIT_MS = quick ? 180_000 : 900_000;

process.on("exit", cleanupSync);
for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => process.exit(130));
const guard = setTimeout(() => {
  console.error(`bench/gateway.ts: gave up after ${RUN_LIMIT_MS / 1000} s`);
  process.exit(1);
}, RUN_LIMIT_MS);
guard.unref();

interface Totals {
  calls: number;
  seconds: number;
  /** Per-call latency (ms), at 1 in flight only. */
  latencies: number[];
}

/** Keeps `concurrency` calls of `call` in flight until `total` have been made. */
async function measure(call: () => Promise<unknown>, concurrency: number, total: number, timed: boolean): Promise<Totals> {
  let started = 0;
  const latencies: number[] = [];
  const t0 = performance.now();
  const worker = async () => {
    while (started < total) {
      started++;
      const s = timed ? performance.now() : 0;
      await call();
      if (timed) latencies.push(performance.now() - s);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { calls: total, seconds: (performance.now() - t0) / 1e3, latencies };
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function main(): Promise<void> {
  const runtime = tempDir("gateway");
  const env = { NODEBIN_RUNTIME_DIR: runtime };
  const [portB, gwA, gwB] = [await freePort(), await freePort(), await freePort()];
  const echo = await start("echo (network b)", {
    args: [...TS, BIN, "container", "--component", "echo", "--components", join(ROOT, "bench", "components"), "--network", "b", "--host", "bench-b", "--listen", "127.0.0.1", "--discovery-port", String(portB)],
    env,
    ready: /container ready: \S+ at (\S+)/,
    ipc: false,
  });
  const gateway = await start("gateway a <-> b", {
    args: [...TS, BIN, "gateway", "--host", "bench-gw", "--network", "a", "--listen", "127.0.0.1", "--discovery-port", String(gwA), "--remote-network", "b", "--remote-seed", `127.0.0.1:${portB}`, "--remote-listen", "127.0.0.1", "--remote-discovery-port", String(gwB)],
    env,
    ready: /gateway ready: (\S+ <-> \S+)/,
    ipc: false,
  });
  // Clients of a host of their own: every hop is tcp, as between hosts.
  const direct = await Client.connect({ endpoint: `tcp://127.0.0.1:${portB}`, host: "bench-client-b" });
  const via = await Client.connect({ endpoint: `tcp://127.0.0.1:${gwA}`, host: "bench-client-a" });
  const end = Date.now() + 30_000;
  while (!via.nodes().some((n) => n.component === "echo")) {
    if (Date.now() > end) throw new Error(`the gateway did not advertise echo within 30 s${gateway.tail()}`);
    await new Promise((r) => setTimeout(r, 100));
    await via.refresh();
  }
  const cases = {
    direct: () => direct.call(METHOD, REQUEST, { timeoutMs: 30_000 }),
    gateway: () => via.call(METHOD, REQUEST, { timeoutMs: 30_000 }),
  };
  for (const c of Object.values(cases)) await measure(c, 16, PLAN.warm, false);

  type Name = keyof typeof cases;
  const results: Record<number, Record<Name, { rate: number; p50: number; p99: number }[]>> = {};
  for (let round = 0; round < ROUNDS; round++) {
    for (const inFlight of IN_FLIGHT) {
      const per = Math.ceil(PLAN.calls[inFlight]! / PLAN.slices);
      const totals: Record<Name, Totals> = { direct: { calls: 0, seconds: 0, latencies: [] }, gateway: { calls: 0, seconds: 0, latencies: [] } };
      for (let slice = 0; slice < PLAN.slices; slice++) {
        const order: Name[] = (slice + round) % 2 === 0 ? ["direct", "gateway"] : ["gateway", "direct"];
        for (const name of order) {
          const t = await measure(cases[name], inFlight, per, inFlight === 1);
          totals[name].calls += t.calls;
          totals[name].seconds += t.seconds;
          totals[name].latencies.push(...t.latencies);
        }
      }
      const row = (results[inFlight] ??= { direct: [], gateway: [] });
      for (const name of Object.keys(cases) as Name[]) {
        const t = totals[name];
        row[name].push({ rate: t.calls / t.seconds, p50: percentile(t.latencies, 50), p99: percentile(t.latencies, 99) });
      }
    }
    console.error(`round ${round + 1}/${ROUNDS} done`);
  }

  console.log(`\n## Gateway cost: SYNC echo, loopback tcp, ${ROUNDS} round(s) (medians)\n`);
  console.log("| in flight | direct calls/s | via gateway calls/s | gateway / direct |");
  console.log("| ---: | ---: | ---: | ---: |");
  for (const inFlight of IN_FLIGHT) {
    const r = results[inFlight]!;
    const ratios = r.gateway.map((g, i) => g.rate / r.direct[i]!.rate);
    console.log(`| ${inFlight} | ${int(median(r.direct.map((x) => x.rate)))} | ${int(median(r.gateway.map((x) => x.rate)))} | ${ratio(median(ratios))} |`);
  }
  const one = results[1]!;
  const us = (x: number) => `${dec1(x * 1000)} µs`;
  console.log("\n| latency at 1 in flight | direct | via gateway | added by the gateway | gateway / direct |");
  console.log("| --- | ---: | ---: | ---: | ---: |");
  for (const p of ["p50", "p99"] as const) {
    const d = median(one.direct.map((x) => x[p]));
    const g = median(one.gateway.map((x) => x[p]));
    const added = median(one.gateway.map((x, i) => x[p] - one.direct[i]![p]));
    console.log(`| ${p} | ${us(d)} | ${us(g)} | ${us(added)} | ${ratio(median(one.gateway.map((x, i) => x[p] / one.direct[i]![p])))} |`);
  }
  console.log(`\nA call through the gateway crosses two tcp hops (client -> gateway -> node) and the relay; a direct one, one hop. Node: ${process.version}, rounds: ${ROUNDS}${quick ? " (--quick)" : ""}.`);
  await direct.close();
  await via.close();
  await stopAll();
  void echo;
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  },
);
