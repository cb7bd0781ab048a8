/**
 * The Moleculer server of bench/run.ts: one ServiceBroker (node id "echo-server")
 * with the TCP transporter (UDP discovery off, a port the OS picks: no `port` given; clients
 * reach it through the transporter's static `urls`), the JSON serializer,
 * logger, metrics and tracing off, and a service `echo` whose action `echo`
 * returns the request's fields. Prints `moleculer echo ready at <port>`;
 * SIGTERM or SIGINT stops the broker.
 *
 *   node --import ./bin/register.mjs bench/lib/moleculer-echo.ts
 */
import { ServiceBroker, type Context } from "moleculer";

const SERVER_NODE_ID = "echo-server"; // bench/lib/load.ts MOLECULER_SERVER

const broker = new ServiceBroker({
  nodeID: SERVER_NODE_ID,
  logger: false,
  metrics: false,
  tracing: false,
  serializer: "JSON",
  transporter: { type: "TCP", options: { udpDiscovery: false } },
});
broker.createService({
  name: "echo",
  actions: {
    echo(ctx: Context<{ a: number; b: string }>) {
      return { a: ctx.params.a, b: ctx.params.b };
    },
  },
});
await broker.start();
const port = (broker.transit as unknown as { tx: { opts: { port: number } } }).tx.opts.port;
process.stdout.write(`moleculer echo ready at ${port}\n`);

const stop = () => {
  void broker.stop().finally(() => process.exit(0));
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
