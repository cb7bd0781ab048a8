// A gateway's tcp endpoints from raw ZeroMQ sockets: without the cluster key nothing reaches it
// (its discovery port, or a proxy's endpoint); with the key, what only a host's own processes may
// ask (Register, Ping, the Governor API) is PERMISSION_DENIED there, whether addressed to the
// process or to a proxy; and the gateway relays on, its table unchanged.
import { readFileSync } from "node:fs";
import t from "tap";
import * as zmq from "zeromq";
import { Client } from "../../src/client/client.ts";
import { parseKeyring } from "../../src/security/keys.ts";
import { GOVERNOR_STATUS, GOVERNOR_STOP, PING, PULL, REGISTER, type ControlMethod } from "../../src/wire/control.ts";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { Mode } from "../../src/wire/schema.ts";
import { fixturePath } from "../lib/fixture-components.ts";
import { startGovernor, testHost } from "../lib/governor.ts";
import { clusterKeyFile, privateRuntime, runCli, startNodeBin, testPort } from "../lib/processes.ts";

let nextId = 1;

function request<Req, Res>(method: ControlMethod<Req, Res>, body: Req, to = ""): { id: number; frame: Uint8Array } {
  const m = method.schema;
  const id = nextId++;
  return { id, frame: encodeEnvelope(envelope({ id, plane: Plane.CONTROL, mode: Mode.SYNC, kind: Kind.REQUEST, from: "attacker", to, method: m.fullName, value: encodeMessage(m.requestType, body, "request"), deadlineMs: 5000 })) };
}

/** The answers a raw DEALER gets for `frames` within `ms`, by request id. */
async function raw(t: { teardown(fn: () => unknown): void }, endpoint: string, options: Partial<zmq.SocketOptions<zmq.Dealer>>, frames: Uint8Array[], want: number, ms = 3000): Promise<Map<number, NodeBinError | "ok">> {
  const d = new zmq.Dealer({ linger: 0, receiveTimeout: ms, ...options });
  t.teardown(() => d.close());
  d.connect(endpoint);
  for (const f of frames) await d.send(f);
  const got = new Map<number, NodeBinError | "ok">();
  try {
    while (got.size < want) {
      const [frame] = await d.receive();
      const env = decodeEnvelope(frame!);
      if (env instanceof NodeBinError) continue;
      got.set(env.id, env.error ? NodeBinError.fromWire(env.error) : "ok");
    }
  } catch {
    // receive timed out: nothing (more) came
  }
  d.close();
  return got;
}

t.test("gateway security - keyless raw peers get nothing; keyed ones asking host-only methods are PERMISSION_DENIED; the gateway relays on", { timeout: 150_000 }, async (t) => {
  const key = clusterKeyFile(t);
  const hostB = testHost(t, [{ from: fixturePath("components-gateway/far") }]);
  hostB.env.NODEBIN_HOST = "host-b";
  hostB.env.NODEBIN_CLUSTER_KEY_FILE = key;
  await startGovernor(t, hostB, ["--network", "b"]);
  const portA = testPort();
  const portB = portA + 1;
  await startNodeBin(
    t,
    ["gateway", "--host", "gw", "--network", "a", "--listen", "127.0.0.1", "--discovery-port", String(portA), "--remote-network", "b", "--remote-seed", hostB.seed, "--remote-listen", "127.0.0.1", "--remote-discovery-port", String(portB)],
    { ...privateRuntime(t), NODEBIN_CLUSTER_KEY_FILE: key },
    /gateway ready: (\S+)/,
  );
  const discovery = `tcp://127.0.0.1:${portA}`;
  const client = await Client.connect({ endpoint: discovery, host: "elsewhere", clusterKeyFile: key });
  t.teardown(() => client.close());
  const proxy = await (async () => {
    const end = Date.now() + 60_000;
    while (Date.now() < end) {
      await client.refresh();
      const p = client.nodes().find((n) => n.component === "far");
      if (p) return p;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error("no proxy of far at the gateway within 60 s");
  })();
  const proxyTcp = proxy.endpoints.find((e) => e.startsWith("tcp://"))!;
  t.ok(proxyTcp, `the proxy ${proxy.id} listens at ${proxyTcp}`);

  const hello = (to: string) => {
    const id = nextId++;
    return { id, frame: encodeEnvelope(envelope({ id, plane: Plane.APPLICATION, mode: Mode.SYNC, kind: Kind.REQUEST, from: "attacker", to, method: "far.Far/Where", value: new Uint8Array(), deadlineMs: 5000 })) };
  };
  for (const endpoint of [discovery, proxyTcp]) {
    const got = await raw(t, endpoint, {}, [request(PULL, { knownVersion: 0 }).frame, hello(proxy.id).frame], 1, 1500);
    t.equal(got.size, 0, `keyless at ${endpoint}: nothing comes back, not even to a pull or a call`);
  }

  const ring = parseKeyring(readFileSync(key, "utf8"), key);
  const member = { curveServerKey: ring.current.server.publicKey, curvePublicKey: ring.current.client.publicKey, curveSecretKey: ring.current.client.secretKey };
  const forged = (to: string) => [
    request(REGISTER, { container: "attacker@x", pid: 1, nodes: [], schemas: [], leaseMs: 600_000, seeds: [] }, to),
    request(PING, {}, to),
    request(GOVERNOR_STATUS, {}, to),
    request(GOVERNOR_STOP, { keepChildren: false }, to),
  ];
  for (const [endpoint, to] of [
    [discovery, ""],
    [proxyTcp, ""],
    [proxyTcp, proxy.id],
  ] as const) {
    const asks = forged(to);
    const got = await raw(t, endpoint, member, asks.map((a) => a.frame), asks.length);
    for (const [i, name] of ["Register", "Ping", "Governor/Status", "Governor/Stop"].entries()) {
      const answer = got.get(asks[i]!.id);
      t.equal(answer instanceof NodeBinError ? answer.code : answer, "PERMISSION_DENIED", `${name} at ${endpoint}${to ? ` to ${to}` : ""}: PERMISSION_DENIED`);
    }
  }

  await client.refresh();
  t.same(
    client.nodes().map((n) => n.id),
    [proxy.id],
    "the gateway's table holds its proxy only: no forged lease was taken",
  );
  const r = (await client.call("far.Far/Where", { text: "still" }, { timeoutMs: 10_000 })) as { text: string; host: string };
  t.same([r.text, r.host], ["still", "host-b"], "and it relays on");
});

t.test("gateway security - two networks under different cluster keys: each leg admits its own network's key only, and calls cross", { timeout: 150_000 }, async (t) => {
  const keyA = clusterKeyFile(t);
  const keyB = clusterKeyFile(t);
  const hostB = testHost(t, [{ from: fixturePath("components-gateway/far") }]);
  hostB.env.NODEBIN_HOST = "host-b";
  hostB.env.NODEBIN_CLUSTER_KEY_FILE = keyB;
  await startGovernor(t, hostB, ["--network", "b"]);
  const portA = testPort();
  const portB = portA + 1;
  const args = ["gateway", "--host", "gw", "--network", "a", "--listen", "127.0.0.1", "--discovery-port", String(portA), "--remote-network", "b", "--remote-seed", hostB.seed, "--remote-listen", "127.0.0.1", "--remote-discovery-port", String(portB)];

  // A key on the second leg only would open network b to anyone who reaches the first: refused.
  const keyless = await runCli([...args, "--remote-cluster-key", keyB], { ...privateRuntime(t), NODEBIN_CLUSTER_KEY_FILE: "" }, { timeoutMs: 30_000 });
  t.equal(keyless.code, 64, "--remote-cluster-key without a first key: usage error");
  t.match(keyless.stderr, /--remote-cluster-key needs a cluster key for the first leg too/, "and says why");

  const gw = await startNodeBin(t, [...args, "--cluster-key", keyA, "--remote-cluster-key", keyB], { ...privateRuntime(t), NODEBIN_LOG: "info" }, /gateway ready: (\S+)/);
  t.match(gw.stderr(), /the gateway bridges the two keys/, "it says it bridges two keys");
  const legA = `tcp://127.0.0.1:${portA}`;
  const legB = `tcp://127.0.0.1:${portB}`;
  const client = await Client.connect({ endpoint: legA, host: "elsewhere", clusterKeyFile: keyA });
  t.teardown(() => client.close());
  const end = Date.now() + 60_000;
  while (!client.nodes().some((n) => n.component === "far") && Date.now() < end) await client.refresh().then(() => new Promise((r) => setTimeout(r, 200)));
  const r = (await client.call("far.Far/Where", { text: "across" }, { timeoutMs: 10_000 })) as { text: string; host: string };
  t.same([r.text, r.host], ["across", "host-b"], "a member of network a (key A) calls network b's node (key B) through the gateway");

  const member = (file: string) => {
    const ring = parseKeyring(readFileSync(file, "utf8"), file);
    return { curveServerKey: ring.current.server.publicKey, curvePublicKey: ring.current.client.publicKey, curveSecretKey: ring.current.client.secretKey };
  };
  for (const [endpoint, key, admitted] of [
    [legA, keyA, true],
    [legA, keyB, false],
    [legB, keyB, true],
    [legB, keyA, false],
  ] as const) {
    const pull = request(PULL, { knownVersion: 0 });
    const got = await raw(t, endpoint, member(key), [pull.frame], 1, 2000);
    const leg = endpoint === legA ? "a" : "b";
    const which = key === keyA ? "A" : "B";
    if (admitted) t.equal(got.get(pull.id), "ok", `leg ${leg} answers a member under key ${which}`);
    else t.equal(got.size, 0, `leg ${leg} admits no peer under key ${which}: nothing comes back`);
  }
});
