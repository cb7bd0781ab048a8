/**
 * The raw zeromq.js echo server of bench/zmq.ts: a bound ROUTER that sends
 * every message straight back ([routing id, payload] in, the same out). One
 * writer loop pumps the replies (zeromq.js allows one send in flight per
 * socket). Prints `raw zmq echo ready at <endpoint>` when it serves; exits on
 * SIGTERM or SIGINT.
 *
 *   node --import ./bin/register.mjs bench/raw-zmq-echo.ts [tcp://127.0.0.1:0]
 */
import * as zmq from "zeromq";

const address = process.argv[2] ?? "tcp://127.0.0.1:0";
const socket = new zmq.Router({ linger: 0, sendHighWaterMark: 10_000, receiveHighWaterMark: 10_000 });
await socket.bind(address);

const queue: Buffer[][] = [];
let pumping = false;
async function pump(): Promise<void> {
  pumping = true;
  while (queue.length > 0 && !socket.closed) {
    try {
      await socket.send(queue.shift()!);
    } catch {
      // peer gone: drop
    }
  }
  pumping = false;
}

const stop = () => {
  if (!socket.closed) socket.close();
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);

process.stdout.write(`raw zmq echo ready at ${socket.lastEndpoint ?? address}\n`);
try {
  for await (const message of socket) {
    queue.push(message);
    if (!pumping) void pump();
  }
} catch (err) {
  if (!socket.closed) throw err;
}
