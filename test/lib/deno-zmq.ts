/**
 * Run by test/integration/deno.test.ts under Deno (never by tap itself): the
 * zmq transport on its own, where Deno's polling strategy differs from Node's
 * native waiting. A connector with a tiny high-water mark sends before anyone
 * listens (ZeroMQ queues a few frames, then every send fails with EAGAIN and
 * the writer must retry), then a listener binds: every request must arrive
 * and be answered, in order; then a burst over the live connection, flow
 * controlled the same way. Both close, and the process must then exit by
 * itself (no poller left behind). Prints one JSON document.
 */
import { createServer } from "node:net";
import { ZmqConnector, ZmqListener } from "../../src/transport/zmq.ts";
import { encodeEnvelope, encodeResponse, envelope, type Envelope } from "../../src/wire/envelope.ts";

const port = await new Promise<number>((resolve) => {
  const server = createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address() as { port: number };
    server.close(() => resolve(port));
  });
});
const endpoint = `tcp://127.0.0.1:${port}`;
const drops: string[] = [];
const replies: number[] = [];
const connector = new ZmqConnector(
  (to) => (to === "server" ? endpoint : undefined),
  (env) => {
    replies.push(env.id);
    return true;
  },
  () => {},
  { highWaterMark: 5, onDrop: (r) => drops.push(r) },
);
const request = (id: number) => encodeEnvelope(envelope({ id, from: "client", to: "server", method: "test.Echo/Echo" }));
const until = async (what: string, ok: () => boolean, ms: number) => {
  for (const end = Date.now() + ms; !ok(); await new Promise((r) => setTimeout(r, 5))) {
    if (Date.now() > end) throw new Error(`${what} within ${ms} ms (replies ${replies.length}, drops ${JSON.stringify(drops.slice(0, 3))})`);
  }
};

const EARLY = 200;
for (let id = 1; id <= EARLY; id++) connector.deliver("server", request(id));
await new Promise((r) => setTimeout(r, 300)); // the writer meets EAGAIN and retries meanwhile

const seen: number[] = [];
// Each request with the way back to its connection (a listener routes nothing by claimed id).
const unanswered: { env: Envelope; reply: (frame: Uint8Array) => void }[] = [];
let listener: ZmqListener | undefined;
const answer = () => {
  for (let next = unanswered.shift(); next && listener; next = unanswered.shift()) next.reply(encodeResponse(next.env, "server"));
};
listener = await ZmqListener.bind(
  [endpoint],
  (env, peer) => {
    seen.push(env.id);
    unanswered.push({ env, reply: peer.reply! });
    answer();
    return true;
  },
  { onDrop: (r) => drops.push(r) },
);
answer();
await until(`${EARLY} replies to requests sent before the listener bound`, () => replies.length === EARLY, 20_000);

const BURST = 3000;
const started = performance.now();
for (let id = EARLY + 1; id <= EARLY + BURST; id++) connector.deliver("server", request(id));
await until(`${BURST} replies to a burst`, () => replies.length === EARLY + BURST, 30_000);
const burstMs = performance.now() - started;

await connector.close();
await listener.close();
const inOrder = (ids: number[]) => ids.length === EARLY + BURST && ids.every((id, i) => id === i + 1);
console.log(JSON.stringify({ runtime: "Deno" in globalThis ? "deno" : "node", requestsInOrder: inOrder(seen), repliesInOrder: inOrder(replies), drops, burstMs: Math.round(burstMs) }));
