/**
 * Run by test/integration/deno.test.ts under Deno (never by tap itself): the
 * in-process path (loader with .ts and .js components, codec, routing, node
 * queue, nested calls, coded errors, a STREAM read 3 at a time) with Deno's runtime instead of Node's.
 * Prints one JSON document of what it observed.
 */
import { loadComponents } from "../../src/component/loader.ts";
import type { Logger } from "../../src/component/context.ts";
import { Container } from "../../src/container/container.ts";
import { NodeBinError } from "../../src/wire/errors.ts";

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };
const { components, errors } = await loadComponents(new URL("../../examples/components", import.meta.url).pathname);
const container = new Container({ logger: () => silent });
for (const c of components) await container.addComponent(c);

const codeOf = async (p: Promise<unknown>) => p.then(() => "OK", (e: unknown) => (e instanceof NodeBinError ? e.code : `not coded: ${String(e)}`));
const hello = (await container.caller.call("demo.Greeter/Hello", { name: "Deno" })) as { message: string };
const visit = (await container.caller.call("demo.Welcome/Visit", { name: "Deno" }, { meta: { via: "deno" } })) as { greeting: string; via: string };
// More than one burst of synchronous handlers: the node yields to the event loop between bursts.
const burst = await Promise.all(Array.from({ length: 400 }, (_, i) => container.caller.call("demo.Counter/Add", { key: "burst", by: 1 }).then(() => i)));
const count = (await container.caller.call("demo.Counter/Get", { key: "burst" })) as { count: { toString(): string } };
// A stream of ticks without end, read 3 at a time: at most 3 + the window are computed, and the generator is returned.
const ticks: number[] = [];
for await (const tick of container.caller.stream("demo.Ticker/Count", { count: 0, from: 1 }, { window: 4 })) if (ticks.push((tick as { n: number }).n) === 3) break;
const tickerStats = (await container.caller.call("demo.Ticker/Stats", {})) as { computed: number; ended: number };
const result = {
  runtime: "Deno" in globalThis ? "deno" : "other",
  components: components.map((c) => c.name),
  loadErrors: errors.length,
  hello: hello.message,
  visit: { greeting: visit.greeting, via: visit.via },
  burst: burst.length,
  count: count.count.toString(),
  ticks,
  ticker: { lazy: tickerStats.computed <= 3 + 4, ended: tickerStats.ended },
  notFound: await codeOf(container.caller.call("demo.Greeter/Helo", {})),
  invalid: await codeOf(container.caller.call("demo.Greeter/Hello", { name: 5 })),
  internal: await codeOf(container.caller.call("demo.Greeter/Hello", {})),
  deadline: await codeOf(container.caller.call("demo.Greeter/Hello", { name: "x" }, { deadline: Date.now() - 1 })),
};
await container.close();
console.log(JSON.stringify(result));
