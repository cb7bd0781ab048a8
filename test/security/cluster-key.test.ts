// The cluster key (issue 12): with one, every tcp socket speaks CurveZMQ and admits only peers
// that prove a key of the ring. Attacks from raw ZeroMQ sockets (plain, and CurveZMQ with a client
// key of their own) at a live governor's discovery port and its child's node port; clients without
// the key, or with another, told UNAUTHENTICATED at once; no key: loopback only; a key rotation.
import { readFileSync, writeFileSync } from "node:fs";
import t from "tap";
import * as zmq from "zeromq";
import { clusterKey, keyFileText, newKeyLine, parseKeyring } from "../../src/security/keys.ts";
import { PULL, REGISTER, type ControlMethod } from "../../src/wire/control.ts";
import { Kind, Plane, encodeEnvelope, envelope } from "../../src/wire/envelope.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { Mode } from "../../src/wire/schema.ts";
import { example, startGovernor, testHost } from "../lib/governor.ts";
import { clusterKeyFile, EXAMPLES, privateRuntime, runCli, startContainer, testPort } from "../lib/processes.ts";

const CASE = { timeout: 120_000 };
let nextId = 1;

function request<Req, Res>(method: ControlMethod<Req, Res>, body: Req): Uint8Array {
  const m = method.schema;
  return encodeEnvelope(envelope({ id: nextId++, plane: Plane.CONTROL, mode: Mode.SYNC, kind: Kind.REQUEST, from: "attacker", method: m.fullName, value: encodeMessage(m.requestType, body, "request"), deadlineMs: 5000 }));
}

function hello(to: string): Uint8Array {
  const name = new TextEncoder().encode("Mallory");
  return encodeEnvelope(envelope({ id: nextId++, plane: Plane.APPLICATION, mode: Mode.SYNC, kind: Kind.REQUEST, from: "attacker", to, method: "demo.Greeter/Hello", value: new Uint8Array([0x0a, name.length, ...name]), deadlineMs: 5000 }));
}

/** What a raw DEALER gets back for `frames` within `ms`: the frames, or [] when nothing came. */
async function tryRaw(t: { teardown(fn: () => unknown): void }, endpoint: string, options: Partial<zmq.SocketOptions<zmq.Dealer>>, frames: Uint8Array[], ms = 1500): Promise<Buffer[]> {
  const d = new zmq.Dealer({ linger: 0, receiveTimeout: ms, ...options });
  t.teardown(() => d.close());
  d.connect(endpoint);
  for (const f of frames) await d.send(f);
  const got: Buffer[] = [];
  try {
    for (;;) got.push(...(await d.receive()));
  } catch {
    // receive timed out: nothing (more) came
  }
  d.close();
  return got;
}

t.test("keyed - members call; a plain or wrongly keyed raw peer gets nothing and changes nothing; clients without the key or with another are told UNAUTHENTICATED at once", CASE, async (t) => {
  const key = clusterKeyFile(t);
  const host = testHost(t, [example("greeter")]);
  host.env.NODEBIN_CLUSTER_KEY_FILE = key;
  host.env.NODEBIN_LOG = "info";
  const gov = await startGovernor(t, host);
  t.match(gov.stderr(), /tcp secured with cluster key [0-9a-f]{16}/, "the governor says which key secures it");
  const child = await gov.until((s) => s.components[0]?.children.find((k) => k.phase === "ready" && k.node), 30_000, "greeter serving");

  // A member elsewhere (its own runtime directory: it reaches the nodes over tcp, not ipc).
  const elsewhere = { ...privateRuntime(t), NODEBIN_HOST: "another-host" };
  const call = (env: Record<string, string>) => runCli(["client", "--seed", host.seed, "--timeout", "20000", "call", "demo.Greeter/Hello", '{"name":"Ada"}'], env);
  const member = await call({ ...elsewhere, NODEBIN_CLUSTER_KEY_FILE: key });
  t.equal(member.code, 0, `a member calls over tcp: ${member.stderr}`);
  t.match(member.stdout, /Hello, Ada!/);

  // Without a key, and with another cluster's: refused in the handshake, told so long before the 20 s deadline.
  for (const [what, env] of [
    ["no key", elsewhere],
    ["another cluster's key", { ...elsewhere, NODEBIN_CLUSTER_KEY_FILE: clusterKeyFile(t) }],
  ] as const) {
    const started = Date.now();
    const r = await call(env);
    const took = Date.now() - started;
    t.equal(r.code, 16, `${what}: exit 16 (UNAUTHENTICATED)`);
    t.match(r.stderr, /UNAUTHENTICATED: .*handshake with tcp:\/\/127\.0\.0\.1:\d+.* failed/, `${what}: the error says the handshake failed`);
    t.ok(took < 10_000, `${what}: surfaced in ${took} ms, not waited out to the deadline`);
  }

  const before = await gov.status();
  const node = child.node;
  const listed = await runCli(["client", "--seed", host.seed, "--json", "nodes"], { ...elsewhere, NODEBIN_CLUSTER_KEY_FILE: key });
  const entries = JSON.parse(listed.stdout) as { id: string; endpoints: string[] }[];
  const nodeTcp = entries.find((n) => n.id === node)?.endpoints.find((e) => e.startsWith("tcp://"));
  if (!nodeTcp) throw new Error(`no tcp endpoint for ${node} in ${listed.stdout}`);
  const forgedRegister = request(REGISTER, { container: "attacker@x", pid: 1, nodes: [], schemas: [], leaseMs: 600_000, seeds: [] });
  const ring = parseKeyring(readFileSync(key, "utf8"), key);
  t.comment(`test ring ${ring.current.id}`);
  // An attacker who knows the cluster's server public key (it is no secret), with a client key of its own.
  const stranger = zmq.curveKeyPair();
  const wrongCurve = { curveServerKey: ring.current.server.publicKey, curvePublicKey: stranger.publicKey, curveSecretKey: stranger.secretKey };
  for (const endpoint of [`tcp://${host.seed}`, nodeTcp]) {
    t.same(await tryRaw(t, endpoint, {}, [request(PULL, { knownVersion: 0 }), forgedRegister, hello(node)]), [], `plain tcp at ${endpoint}: nothing comes back`);
    t.same(await tryRaw(t, endpoint, wrongCurve, [request(PULL, { knownVersion: 0 }), forgedRegister, hello(node)]), [], `CurveZMQ with a stranger's key at ${endpoint}: nothing comes back`);
  }

  // Counted where they were refused: the governor (discovery port) and its child (node port, reported in its pongs).
  const after = await gov.until((s) => ((s.components[0]?.children[0]?.refused.unauthenticated ?? 0) >= 2 ? s : undefined), 10_000, "the child's refusals reported");
  const refused = (after as unknown as { refused: Record<string, number> }).refused;
  t.ok((refused.unauthenticated ?? 0) >= 2, `the governor counted the refused connections (${JSON.stringify(refused)})`);
  t.same(after.components[0]!.children.map((k) => [k.pid, k.node, k.phase]), before.components[0]!.children.map((k) => [k.pid, k.node, k.phase]), "its children are as they were");
  const again = await runCli(["client", "--seed", host.seed, "--json", "nodes"], { ...elsewhere, NODEBIN_CLUSTER_KEY_FILE: key });
  t.same((JSON.parse(again.stdout) as { id: string }[]).map((n) => n.id), [node], "the table holds the real node only");
});

t.test("no key - tcp binds loopback only and the process says so; another address needs --insecure", CASE, async (t) => {
  const env = { ...privateRuntime(t), NODEBIN_HOST: "nokey", NODEBIN_LOG: "info" };
  const port = String(testPort());
  const c = await startContainer(t, ["--component", "greeter", "--components", EXAMPLES, "--discovery-port", port], env);
  t.match(c.readyLine, /tcp:\/\/127\.0\.0\.1:\d+/, "its node listens on loopback");
  t.match(c.stderr(), /no cluster key: tcp listens on 127\.0\.0\.1 only/, "and it says so");
  const refused = await runCli(["container", "--component", "greeter", "--components", EXAMPLES, "--listen", "0.0.0.0"], env);
  t.equal(refused.code, 64, "a wildcard --listen without a key is a usage error");
  t.match(refused.stderr, /without a cluster key would serve plain tcp to the network: give --cluster-key FILE .*or --insecure/);
  const insecure = await startContainer(t, ["--component", "greeter", "--components", EXAMPLES, "--listen", "0.0.0.0", "--insecure", "--discovery-port", String(Number(port) + 1)], { ...env, NODEBIN_HOST: "nokey-2" });
  t.match(insecure.stderr(), /warn .*insecure: listening on 0\.0\.0\.0 with no cluster key/, "--insecure is logged as a warning");
});

t.test("rotation - a client with the new key first reaches a node still serving the old one; after the node restarts with both, the new key serves and the old alone is refused; retiring keeps the new", CASE, async (t) => {
  const [k1, k2] = [newKeyLine(), newKeyLine()];
  const env = { ...privateRuntime(t), NODEBIN_HOST: "rot", NODEBIN_LOG: "warn" };
  const serverKey = clusterKeyFile(t, [k1]);
  const port = testPort();
  const start = (p: number) => startContainer(t, ["--component", "greeter", "--components", EXAMPLES, "--discovery-port", String(p), "--listen", "127.0.0.1", "--cluster-key", serverKey], env);
  const first = await start(port);
  const ask = (p: number, keys: string[]) =>
    runCli(["client", "--seed", `127.0.0.1:${p}`, "--timeout", "20000", "--cluster-key", clusterKeyFile(t, keys), "call", "demo.Greeter/Hello", '{"name":"Ada"}'], { ...privateRuntime(t), NODEBIN_HOST: "elsewhere" });

  const both = await ask(port, [k2, k1]);
  t.equal(both.code, 0, `[new, old] reaches a node serving the old key (falls back): ${both.stderr}`);
  t.equal((await ask(port, [k1])).code, 0, "[old] still reaches it");

  // Step 1 on the server side: the file gets the new key first; the running node keeps its bound server key.
  writeFileSync(serverKey, keyFileText([k2, k1]), { mode: 0o600 });
  const restarted = await start(port + 1);
  t.equal((await ask(port + 1, [k2, k1])).code, 0, "a node started with [new, old] serves under the new key");
  const old = await ask(port + 1, [k1]);
  t.equal(old.code, 16, "a client with only the old key cannot reach it (UNAUTHENTICATED)");
  t.equal((await ask(port, [k2, k1])).code, 0, "while the node started before still serves [new, old] clients");
  void first;
  void restarted;

  // Last step: retire the old key.
  const retired = await runCli(["keygen", "--retire", serverKey], env);
  t.equal(retired.code, 0, retired.stderr);
  t.same(parseKeyring(readFileSync(serverKey, "utf8"), serverKey).keys.map((k) => k.id), [clusterKey(Buffer.from(k2.split(":")[1]!, "base64url")).id], "only the new key is left");
  const third = await start(port + 2);
  void third;
  t.equal((await ask(port + 2, [k2])).code, 0, "[new] reaches a node started after the retirement");
});
