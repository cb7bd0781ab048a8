/**
 * The raw zeromq.js subscriber of bench/broadcast.ts: a SUB connected to the
 * driver's PUB, subscribed to one topic (TOPIC and a NUL), counting the messages it gets; and
 * a ROUTER where the driver asks for that count (any message in, the count
 * as a decimal string out). What a user writes with zeromq.js alone: one
 * message per broadcast, no envelope, no node. Prints
 * `raw zmq sub ready at <count endpoint>`; exits on SIGTERM or SIGINT.
 *
 *   node --import ./bin/register.mjs bench/lib/raw-zmq-sub.ts PUB_ENDPOINT COUNT_ENDPOINT TOPIC
 */
import * as zmq from "zeromq";

const [pubEndpoint, countEndpoint, topic] = process.argv.slice(2);
if (!pubEndpoint || !countEndpoint || !topic) {
  process.stderr.write("usage: raw-zmq-sub.ts PUB_ENDPOINT COUNT_ENDPOINT TOPIC\n");
  process.exit(64);
}
const sub = new zmq.Subscriber({ linger: 0, receiveHighWaterMark: 1000 });
// A NUL ends the topic, as node-bin's topics do ("demo.Board/Post\0"): the driver publishes under the same.
sub.subscribe(`${topic}\0`);
sub.connect(pubEndpoint);
const counter = new zmq.Router({ linger: 0 });
await counter.bind(countEndpoint);
let count = 0;
const stop = () => {
  if (!sub.closed) sub.close();
  if (!counter.closed) counter.close();
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
process.stdout.write(`raw zmq sub ready at ${counter.lastEndpoint ?? countEndpoint}\n`);
void (async () => {
  try {
    for await (const [rid] of counter) await counter.send([rid!, String(count)]);
  } catch {
    // closed
  }
})();
try {
  for await (const _ of sub) count++;
} catch {
  // closed
}
