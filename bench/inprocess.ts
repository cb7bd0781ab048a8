/**
 * In-process call throughput through the full envelope path: a Container
 * with the greeter example; each call checks and encodes the request,
 * encodes the Envelope, goes through the direct transport (which decodes it),
 * the node's queue, the handler, and the same way back. Prints a table; no
 * thresholds (timed assertions do not belong in tests on shared machines).
 *
 *   npm run bench            # default rounds
 *   npm run bench -- --quick # fewer calls, for a smoke run
 */
import { fileURLToPath } from "node:url";
import { loadComponent } from "../src/component/loader.ts";
import { Container } from "../src/container/container.ts";
import type { Logger } from "../src/component/context.ts";

const quick = process.argv.includes("--quick");
const CALLS = quick ? 20_000 : 200_000;
const ROUNDS = quick ? 1 : 3;
const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

const greeter = await loadComponent(fileURLToPath(new URL("../examples/components/greeter", import.meta.url)));
const container = new Container({ logger: () => silent });
await container.addComponent(greeter);
const request = { name: "Ada" };

/** Calls with `concurrency` in flight until `total` are done; returns calls per second. */
async function run(concurrency: number, total: number): Promise<number> {
  let started = 0;
  const t0 = process.hrtime.bigint();
  const worker = async () => {
    while (started < total) {
      started++;
      await container.caller.call("demo.Greeter/Hello", request);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return total / seconds;
}

/** The baseline: the handler called as a plain async function, no runtime at all. */
async function baseline(total: number): Promise<number> {
  const { Hello } = (await import("../examples/components/greeter/index.ts")) as { Hello: (r: unknown, ctx: unknown) => unknown };
  const ctx = { log: silent, state: {} };
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < total; i++) await Hello(request, ctx);
  return total / (Number(process.hrtime.bigint() - t0) / 1e9);
}

await run(64, CALLS / 10); // warm-up: JIT and protobufjs codegen
const cases: [string, () => Promise<number>][] = [
  ["plain async function call (no runtime)", () => baseline(CALLS)],
  ["node-bin in-process, 1 in flight", () => run(1, CALLS)],
  ["node-bin in-process, 64 in flight", () => run(64, CALLS)],
];
const results = new Map<string, number[]>(cases.map(([name]) => [name, []]));
for (let round = 0; round < ROUNDS; round++) for (const [name, fn] of cases) results.get(name)!.push(await fn());
await container.close();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows = cases.map(([name]) => [name, median(results.get(name)!)] as const);
const ref = rows[1]![1];
console.log(`\nin-process sync calls, demo.Greeter/Hello, ${CALLS} calls x ${ROUNDS} rounds (median), node ${process.version}\n`);
console.log(`| case | calls/s | µs/call | vs 1-in-flight |`);
console.log(`| --- | ---: | ---: | ---: |`);
for (const [name, rate] of rows) console.log(`| ${name} | ${Math.round(rate).toLocaleString("en-US")} | ${(1e6 / rate).toFixed(2)} | ${(rate / ref).toFixed(2)}x |`);
