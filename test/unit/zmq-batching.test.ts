// Envelopes queued for the same peer leave in one ZeroMQ message (one frame
// each), in order; receivers take every frame of a message; a raw peer's
// single-frame messages still work.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import * as zmq from "zeromq";
import { ZmqConnector, ZmqListener } from "../../src/transport/zmq.ts";
import { Kind, decodeEnvelope, encodeEnvelope, encodeResponse, envelope, type Envelope } from "../../src/wire/envelope.ts";

function ipcAddress(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-zmq-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return `ipc://${join(dir, "s.sock")}`;
}

const request = (id: number) => encodeEnvelope(envelope({ id, kind: Kind.REQUEST, from: "caller-1", to: "node-1", method: "a.B/C" }));

t.test("zmq - a connector sends the envelopes queued together in one message, in order", async (t) => {
  const address = ipcAddress(t);
  const router = new zmq.Router({ linger: 0 });
  await router.bind(address);
  t.teardown(() => router.close());
  const connector = new ZmqConnector(() => address, () => true);
  t.teardown(() => connector.close());
  for (let id = 1; id <= 100; id++) connector.deliverVia(address, request(id));
  const ids: number[] = [];
  let messages = 0;
  while (ids.length < 100) {
    const [, ...frames] = await router.receive();
    messages++;
    for (const f of frames) ids.push((decodeEnvelope(f) as Envelope).id);
  }
  t.same(ids, Array.from({ length: 100 }, (_, i) => i + 1), "every envelope, in order");
  t.ok(messages < 100, `in ${messages} ZeroMQ message(s), not 100`);
});

t.test("zmq - a listener takes every envelope of a multi-frame message and batches its answers per peer", async (t) => {
  const address = ipcAddress(t);
  const seen: number[] = [];
  const listener = await ZmqListener.bind([address], (env, peer) => {
    seen.push(env.id);
    peer.reply!(encodeResponse(env, "node-1", new Uint8Array(), undefined));
    return true;
  });
  t.teardown(() => listener.close());
  const dealer = new zmq.Dealer({ linger: 0 });
  dealer.connect(address);
  t.teardown(() => dealer.close());
  await dealer.send([request(1), request(2), request(3)]);
  await dealer.send(request(4)); // a single-frame message, as any raw peer sends
  const answered: number[] = [];
  let messages = 0;
  while (answered.length < 4) {
    const frames = await dealer.receive();
    messages++;
    for (const f of frames) {
      const env = decodeEnvelope(f) as Envelope;
      t.equal(env.kind, Kind.RESPONSE);
      answered.push(env.id);
    }
  }
  t.same(seen, [1, 2, 3, 4], "each frame dispatched as its own envelope");
  t.same(answered, [1, 2, 3, 4], "every answer came back, in order");
  t.ok(messages <= 3, `answers to the batch came back batched (${messages} messages for 4 answers)`);
});

t.test("zmq - a listener routes nothing by claimed id and takes no answers: a sprayed answer is dropped and counted, a request is answered on its own connection", async (t) => {
  const address = ipcAddress(t);
  const dispatched: number[] = [];
  const drops: string[] = [];
  const listener = await ZmqListener.bind(
    [address],
    (env, peer) => {
      dispatched.push(env.id);
      peer.reply!(encodeResponse(env, "node-1", new Uint8Array(), undefined));
      return true;
    },
    { onDrop: (reason) => drops.push(reason) },
  );
  t.teardown(() => listener.close());
  const dealer = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
  dealer.connect(address);
  t.teardown(() => dealer.close());
  // Forged answers first (a caller's pending ids), then a request claiming the id "caller-1".
  await dealer.send([1, 2, 3].map((id) => encodeEnvelope(envelope({ id, kind: Kind.RESPONSE, from: "node-1", to: "caller-1", method: "a.B/C" }))));
  await dealer.send(request(4));
  const [frame] = await dealer.receive();
  t.equal((decodeEnvelope(frame!) as Envelope).id, 4, "the request was answered, on the connection it came on");
  t.same(dispatched, [4], "no answer was dispatched");
  t.equal(drops.filter((d) => /an answer arrived at a listener/.test(d)).length, 3, "each sprayed answer counted as a drop");
  t.equal(listener.deliver("caller-1", request(5)), false, "the id a peer claimed is no route");
});

t.test("zmq - listeners bound at once, and one bound right after the last closed, all pass the connection gate", async (t) => {
  for (let round = 0; round < 20; round++) {
    const listeners = await Promise.all([0, 1, 2].map(() => ZmqListener.bind(["tcp://127.0.0.1:0"], () => false)));
    await Promise.all(listeners.map((l) => l.close()));
  }
  const l = await ZmqListener.bind(["tcp://127.0.0.1:0"], () => false);
  t.teardown(() => l.close());
  const d = new zmq.Dealer({ linger: 0, receiveTimeout: 3000 });
  t.teardown(() => d.close());
  d.connect(l.endpoints[0]!);
  await d.send(encodeEnvelope(envelope({ id: 4, kind: Kind.REQUEST, to: "nobody", method: "a.B/C" })));
  const [frame] = await d.receive();
  t.equal((decodeEnvelope(frame!) as Envelope).id, 4, "a connection is admitted and answered after 20 open/close cycles of the gate");
});
