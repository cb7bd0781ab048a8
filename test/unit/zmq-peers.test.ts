// How a listener names the connection a request came on (Peer.via): what logs and errors say of
// the peer, from what the transport knows (never the envelope's claim). Each connection gets a
// number of its own; a keyed tcp listener says its peers proved the cluster key.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import * as zmq from "zeromq";
import { keyFileText, newKeyLine } from "../../src/security/keys.ts";
import { loadSecurity } from "../../src/security/provider.ts";
import type { Peer } from "../../src/transport/transport.ts";
import { ZmqListener } from "../../src/transport/zmq.ts";
import { Kind, Plane, encodeEnvelope, envelope } from "../../src/wire/envelope.ts";
import { Mode } from "../../src/wire/schema.ts";

const request = (from: string) => encodeEnvelope(envelope({ id: 1, plane: Plane.APPLICATION, mode: Mode.SYNC, kind: Kind.REQUEST, from, to: "n", method: "a.B/C", deadlineMs: 1000 }));

async function vias(t: { teardown(fn: () => unknown): void }, options: Parameters<typeof ZmqListener.bind>[2], dealerOptions: Partial<zmq.SocketOptions<zmq.Dealer>>): Promise<string[]> {
  const seen: string[] = [];
  let arrived: () => void = () => {};
  const listener = await ZmqListener.bind(["tcp://127.0.0.1:0"], (_env, peer: Peer) => {
    seen.push(peer.via ?? "none");
    arrived();
    return true;
  }, options);
  t.teardown(() => listener.close());
  const dealers = [0, 1].map(() => new zmq.Dealer({ linger: 0, ...dealerOptions }));
  t.teardown(() => dealers.forEach((d) => d.close()));
  // Two requests on the first connection (different claimed ids), one on the second.
  for (const [d, from] of [[dealers[0]!, "x"], [dealers[0]!, "y"], [dealers[1]!, "x"]] as const) {
    d.connect(listener.endpoints[0]!);
    const got = new Promise<void>((r) => (arrived = r));
    await d.send(request(from));
    await got;
  }
  return seen;
}

t.test("zmq peers - each connection has a name of its own, whatever `from` it claims", async (t) => {
  const [a, b, c] = await vias(t, {}, {});
  t.match(a, /^tcp peer #\d+$/);
  t.equal(a, b, "two requests of one connection: one name, although they claim different ids");
  t.not(a, c, "another connection claiming the same id: another name");
});

t.test("zmq peers - a keyed listener names its peers cluster members", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-peers-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "k"), keyFileText([newKeyLine()]), { mode: 0o600 });
  const security = loadSecurity({ keyFile: join(dir, "k"), runtimeDir: dir, watchMs: 0 });
  const ring = security.keyring!;
  const [a] = await vias(t, { security: security.wire! }, { curveServerKey: ring.current.server.publicKey, curvePublicKey: ring.current.client.publicKey, curveSecretKey: ring.current.client.secretKey });
  t.match(a, /^tcp peer #\d+ \(a cluster member\)$/);
});
