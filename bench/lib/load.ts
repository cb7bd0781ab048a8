/**
 * A load process of bench/run.ts: the calling side of one system, driven by
 * the bench driver over IPC (bench/lib/ipc.ts). One process per system, so
 * that each caller's CPU time (process.cpuUsage()) is its own and no
 * library's timers or heap weigh on another's figures.
 *
 *   node --import ./bin/register.mjs bench/lib/load.ts <system> '<json options>'
 *
 * Systems:
 *   node-bin-inproc  a Container with examples/components/greeter; calls demo.Greeter/Hello
 *                    through container.caller (the full envelope path, dev mode)
 *   moleculer-local  one ServiceBroker, no transporter, logger/metrics/tracing off, a
 *                    `greeter` service whose `hello` action answers like the greeter
 *   node-bin         the Client library (src/client/client.ts) connected to a
 *                    container's discovery endpoint; calls bench.Echo/Echo.
 *                    options: { endpoint, host? } (host: this client's host id; another
 *                    id than the container's makes it call over tcp instead of ipc)
 *   zeromq           a raw zeromq.js DEALER to bench/raw-zmq-echo.ts. options: { endpoint }
 *   moleculer        a ServiceBroker with the TCP transporter to bench/lib/moleculer-echo.ts
 *                    (UDP discovery off, static urls, JSON). options: { port }
 *   net              node:net with a 4-byte length prefix to bench/lib/net-echo.ts. options: { port }
 *
 * Requests (answered over IPC):
 *   check            one call, its reply checked
 *   run              { inFlight, ms, sampleEvery }: `inFlight` loops each awaiting one call
 *                    at a time, until `ms` have passed (no new call after); answers calls,
 *                    seconds, errors, CPU µs of this process, and p50/p99 latency (µs) of
 *                    every `sampleEvery`-th call of each loop
 *   nodes            { count }: (node-bin) waits until the table holds `count` echo nodes
 *   rss              this process's RSS
 * Prints `load ready: <system>` once connected.
 */
import { connect, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { ServiceBroker, type Context } from "moleculer";
import { Client } from "../../src/client/client.ts";
import type { Logger } from "../../src/component/context.ts";
import { loadComponent } from "../../src/component/loader.ts";
import { Container } from "../../src/container/container.ts";
import { cpuAndRss, serveIpc } from "./ipc.ts";
import { RawClient } from "./raw-zmq-client.ts";

/** The request of every cross-process case, and its protobuf bytes (bench.Payload) for the raw ones. */
export const REQUEST = { a: 1, b: "hello world" };
export const PAYLOAD = Buffer.concat([Buffer.from([0x08, 0x01, 0x12, 0x0b]), Buffer.from("hello world")]);
export const MOLECULER_SERVER = "echo-server";

interface Target {
  call(): Promise<unknown>;
  check(): Promise<void>;
  nodes?(count: number): Promise<number>;
  close(): Promise<void>;
}

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function expectEcho(system: string, reply: unknown): void {
  const r = reply as { a?: unknown; b?: unknown } | undefined;
  if (r?.a !== REQUEST.a || r?.b !== REQUEST.b) throw new Error(`${system}: the echo answered ${JSON.stringify(reply)}`);
}

async function nodeBinInproc(): Promise<Target> {
  const greeter = await loadComponent(fileURLToPath(new URL("../../examples/components/greeter", import.meta.url)));
  const container = new Container({ logger: () => silent });
  await container.addComponent(greeter);
  const request = { name: "Ada" };
  return {
    call: () => container.caller.call("demo.Greeter/Hello", request),
    async check() {
      const reply = (await container.caller.call("demo.Greeter/Hello", request)) as { message?: string };
      if (reply.message !== "Hello, Ada!") throw new Error(`node-bin in-process answered ${JSON.stringify(reply)}`);
    },
    close: () => container.close(),
  };
}

async function moleculerLocal(): Promise<Target> {
  const broker = new ServiceBroker({ nodeID: "local", logger: false, metrics: false, tracing: false, transporter: null });
  broker.createService({
    name: "greeter",
    actions: {
      hello(ctx: Context<{ name: string }>) {
        return { message: `Hello, ${ctx.params.name}!` };
      },
    },
  });
  await broker.start();
  const request = { name: "Ada" };
  return {
    call: () => broker.call("greeter.hello", request),
    async check() {
      const reply = (await broker.call("greeter.hello", request)) as { message?: string };
      if (reply.message !== "Hello, Ada!") throw new Error(`Moleculer local answered ${JSON.stringify(reply)}`);
    },
    close: () => broker.stop(),
  };
}

async function nodeBin(o: { endpoint: string; host?: string }): Promise<Target> {
  const client = await Client.connect({ endpoint: o.endpoint, ...(o.host ? { host: o.host } : {}), connectTimeoutMs: 10_000 });
  const method = "bench.Echo/Echo";
  return {
    call: () => client.call(method, REQUEST),
    check: async () => expectEcho("node-bin", await client.call(method, REQUEST)),
    async nodes(count) {
      const end = Date.now() + 30_000;
      for (;;) {
        await client.refresh();
        const n = client.nodes().filter((e) => e.component === "echo").length;
        if (n >= count || Date.now() > end) return n;
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    close: () => client.close(),
  };
}

async function zeromq(o: { endpoint: string }): Promise<Target> {
  const client = new RawClient(o.endpoint);
  return {
    call: () => client.call(PAYLOAD),
    async check() {
      const reply = await client.call(PAYLOAD);
      if (!reply.equals(PAYLOAD)) throw new Error(`raw zeromq.js echo answered ${reply.toString("hex")}`);
    },
    close: () => client.close(),
  };
}

async function moleculer(o: { port: number }): Promise<Target> {
  const broker = new ServiceBroker({
    nodeID: "echo-client",
    logger: false,
    metrics: false,
    tracing: false,
    serializer: "JSON",
    transporter: { type: "TCP", options: { udpDiscovery: false, urls: `127.0.0.1:${o.port}/${MOLECULER_SERVER}` } },
  });
  await broker.start();
  await broker.waitForServices("echo", 30_000);
  return {
    call: () => broker.call("echo.echo", REQUEST),
    check: async () => expectEcho("moleculer", await broker.call("echo.echo", REQUEST)),
    close: () => broker.stop(),
  };
}

/** Length-prefixed frames over one connection; the echo answers in order, so a reply settles the oldest call. */
async function net(o: { port: number }): Promise<Target> {
  const socket: Socket = await new Promise((resolve, reject) => {
    const s = connect({ port: o.port, host: "127.0.0.1" }, () => resolve(s));
    s.once("error", reject);
  });
  socket.setNoDelay(true);
  const frame = Buffer.alloc(4 + PAYLOAD.length);
  frame.writeUInt32BE(PAYLOAD.length, 0);
  PAYLOAD.copy(frame, 4);
  const waiting: ((reply: Buffer) => void)[] = [];
  let head = 0;
  let pending: Buffer | undefined;
  socket.on("data", (chunk: Buffer) => {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    let at = 0;
    while (buf.length - at >= 4) {
      const len = buf.readUInt32BE(at);
      if (at + 4 + len > buf.length) break;
      const resolve = waiting[head++]!;
      if (head === waiting.length) {
        waiting.length = 0;
        head = 0;
      }
      resolve(buf.subarray(at + 4, at + 4 + len));
      at += 4 + len;
    }
    pending = at === buf.length ? undefined : Buffer.from(buf.subarray(at));
  });
  socket.on("error", () => {});
  const call = () =>
    new Promise<Buffer>((resolve) => {
      waiting.push(resolve);
      socket.write(frame);
    });
  return {
    call,
    async check() {
      const reply = await call();
      if (!reply.equals(PAYLOAD)) throw new Error(`net echo answered ${reply.toString("hex")}`);
    },
    async close() {
      socket.destroy();
    },
  };
}

export interface RunResult {
  calls: number;
  errors: number;
  firstError?: string;
  seconds: number;
  cpuUs: number;
  p50Us: number;
  p99Us: number;
  samples: number;
}

async function run(target: Target, inFlight: number, ms: number, sampleEvery: number): Promise<RunResult> {
  const latencies: number[] = [];
  let calls = 0;
  let errors = 0;
  let firstError: string | undefined;
  let stopped = false;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + ms;
  const loop = async () => {
    let i = 0;
    while (!stopped) {
      try {
        if (i++ % sampleEvery === 0) {
          const start = performance.now();
          await target.call();
          const now = performance.now();
          latencies.push((now - start) * 1000);
          if (now >= end) stopped = true;
        } else {
          await target.call();
        }
        calls++;
      } catch (err) {
        errors++;
        firstError ??= String(err);
        if (performance.now() >= end) stopped = true;
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, loop));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const sorted = Float64Array.from(latencies).sort();
  const pct = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : NaN);
  return { calls, errors, ...(firstError ? { firstError } : {}), seconds, cpuUs: cpu.user + cpu.system, p50Us: pct(0.5), p99Us: pct(0.99), samples: sorted.length };
}

const [system, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson ?? "{}") as never;
const makers: Record<string, (o: never) => Promise<Target>> = {
  "node-bin-inproc": nodeBinInproc,
  "moleculer-local": moleculerLocal,
  "node-bin": nodeBin,
  zeromq,
  moleculer,
  net,
};
const make = makers[system ?? ""];
if (!make) {
  console.error(`bench/lib/load.ts: unknown system ${JSON.stringify(system)}; one of ${Object.keys(makers).join(", ")}`);
  process.exit(64);
}
const target = await make(options);
let closing = false;
const close = () => {
  if (closing) return;
  closing = true;
  void target
    .close()
    .catch(() => {})
    .finally(() => process.exit(0));
};
process.once("SIGTERM", close);
process.once("SIGINT", close);
serveIpc({
  check: () => target.check(),
  run: (r) => run(target, Number(r.inFlight), Number(r.ms), Math.max(1, Number(r.sampleEvery ?? 1))),
  nodes: (r) => (target.nodes ? target.nodes(Number(r.count)) : Promise.reject(new Error(`${system} has no node table`))),
  rss: () => cpuAndRss(),
});
// The IPC channel is unref'd and an in-process system holds no handle: this keeps the process until SIGTERM (or the driver's exit).
setInterval(() => {}, 1 << 30);
process.stdout.write(`load ready: ${system}\n`);
