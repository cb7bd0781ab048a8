// Sealed state with real processes (issue 12, item 3): a hot deploy of the counter under a real
// `node-bin governor` hands its state over sealed, and the payload a child hands out is not the
// plaintext (captured by calling Drain on the child ourselves, from a raw ZeroMQ DEALER on its
// private ipc socket, as the governor does). Tampered and foreign payloads sent to a held child
// from a raw socket are refused UNAUTHENTICATED and import nothing; a roll whose import fails
// leaves the old node serving with its state.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { serialize } from "node:v8";
import t from "tap";
import * as zmq from "zeromq";
import { stateContext } from "../../src/container/process.ts";
import { newKeyLine, parseKeyring } from "../../src/security/keys.ts";
import { hostStateKeyring } from "../../src/security/provider.ts";
import { isSealed, open, seal } from "../../src/security/seal.ts";
import { DRAIN, IMPORT_STATE, PING, PULL, RELEASE, RESUME, type ControlMethod } from "../../src/wire/control.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { counterSource, example, startGovernor, testHost, type GovernorProcess, type TestHost } from "../lib/governor.ts";
import { askRaw } from "../lib/raw-control.ts";
import { EXAMPLES, privateRuntime, runCli, startContainer, testPort } from "../lib/processes.ts";

/** A key no one would guess, counted with: its bytes inside the v8-serialized state are what is searched for on the wire. */
const MARKER = `sealed-marker-${process.pid}-${Date.now()}`;
/** The marker as it appears inside a v8-serialized object (the string's tag, length and bytes: no version header). */
const MARKER_V8 = serialize(MARKER).subarray(2);
const contains = (haystack: Uint8Array, needle: Uint8Array) => Buffer.from(haystack).indexOf(Buffer.from(needle)) >= 0;

/** One control request over a raw DEALER (test/lib/raw-control.ts). */
const ask = <Req, Res>(d: zmq.Dealer, method: ControlMethod<Req, Res>, request: Req) => askRaw(d, method, request, { deadlineMs: 15_000 });

/** ask(), and the reply (fails the test with the error otherwise). */
async function ok<Req, Res>(d: zmq.Dealer, method: ControlMethod<Req, Res>, request: Req): Promise<Res> {
  const r = await ask(d, method, request);
  if (r instanceof NodeBinError) throw new Error(`${method.schema.fullName}: ${r.code}: ${r.message}`);
  return r;
}

/** A raw DEALER at `endpoint` (ipc in the test's runtime directory: a host peer), closed at teardown. */
function dealer(t: { teardown(fn: () => unknown): void }, endpoint: string): zmq.Dealer {
  const d = new zmq.Dealer({ linger: 0, receiveTimeout: 20_000 });
  d.connect(endpoint);
  t.teardown(() => d.close());
  return d;
}


const call = async (host: TestHost, method: string, request: unknown): Promise<{ key: string; count: number }> => {
  const r = await runCli(["client", "call", method, JSON.stringify(request), "--seed", host.seed, "--json", "--timeout", "15000"], host.env, { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`${method}: exit ${r.code}: ${r.stderr}`);
  const reply = JSON.parse(r.stdout) as { key: string; count: string | number };
  return { key: reply.key, count: Number(reply.count) };
};

const onlyChild = (gov: GovernorProcess, what: string, ok: (pid: number) => boolean) =>
  gov.until((s) => {
    const c = s.components.find((x) => x.name === "counter");
    return c && !c.rolling && c.children.length === 1 && c.children[0]!.phase === "ready" && ok(c.children[0]!.pid) && c;
  }, 60_000, what);

/** The ipc endpoint of the counter's node, from the host agent's table (its discovery socket). */
async function counterIpc(t: { teardown(fn: () => unknown): void }, host: TestHost, node: string): Promise<string> {
  const agent = dealer(t, `ipc://${join(host.env.NODEBIN_RUNTIME_DIR!, `discovery-${host.port}.sock`)}`);
  const pulled = await ok(agent, PULL, { knownVersion: 0 });
  const entry = pulled.nodes.find((n) => n.id === node);
  const ipc = entry?.endpoints.find((e) => e.startsWith("ipc://"));
  if (!ipc) throw new Error(`no ipc endpoint for ${node} in ${JSON.stringify(pulled.nodes.map((n) => [n.id, n.endpoints]))}`);
  return ipc;
}

t.test("sealed state - a hot deploy hands the counter's state over; what a child hands out is sealed, not the plaintext", async (t) => {
  const host = testHost(t, [example("counter")]);
  writeFileSync(join(host.root, "governor.json"), JSON.stringify({ components: { counter: { max: 1 } } }));
  const gov = await startGovernor(t, host);
  const before = await onlyChild(gov, "counter serving", () => true);
  const old = before.children[0]!;
  for (const by of [5, 7, 30]) await call(host, "demo.Counter/Add", { key: MARKER, by });
  t.equal((await call(host, "demo.Counter/Get", { key: MARKER })).count, 42, "state built: 42 under the marker key");

  const src = counterSource(t, (code) => code.replace('version: "1.0.0"', 'version: "1.1.0"'));
  const d = await runCli(["deploy", src, "--components", host.components], host.env);
  t.equal(d.code, 0, d.stderr);
  const after = await onlyChild(gov, "counter rolled to the new code", (pid) => pid !== old.pid);
  const fresh = after.children[0]!;
  t.equal(after.deployError, undefined, "no deploy error");
  t.equal((await call(host, "demo.Counter/Get", { key: MARKER })).count, 42, "the state arrived in the new node");
  t.throws(() => process.kill(old.pid, 0), "the old process exited");
  const nodes = await runCli(["client", "nodes", "--seed", host.seed, "--json"], host.env);
  t.same(JSON.parse(nodes.stdout).map((n: { version: string }) => n.version), ["1.1.0"], "the new code serves");

  // What the governor carries: Drain the new child ourselves over its private ipc socket.
  const child = dealer(t, await counterIpc(t, host, fresh.node));
  const drained = await ok(child, DRAIN, { exportState: true });
  const payload = drained.state;
  t.ok(payload.length > 0, `the child handed out ${payload.length} bytes`);
  t.ok(isSealed(payload), "laid out as a sealed payload");
  t.notOk(contains(payload, MARKER_V8), "the marker, as v8 serializes it into the state, does not occur on the wire");
  t.notOk(contains(payload, new TextEncoder().encode(MARKER)), "nor its UTF-8 bytes");
  const start = serialize({ counts: { [MARKER]: 42 } }).subarray(2, 18);
  t.notOk(contains(payload, start), "nor the start of the plaintext state");
  // Positive control: opened with the host's own key (no cluster key: it is in the runtime
  // directory), the same bytes are the counter's state, marker included.
  const plain = open(hostStateKeyring(host.env.NODEBIN_RUNTIME_DIR!), payload, stateContext("counter"));
  t.ok(contains(plain, MARKER_V8) && contains(plain, start), "opened with the host's seal key, it is the state, marker and all (what was searched for above)");
  t.equal((await ok(child, PING, {})).phase, "handing-over", "the child waits with its state for Release or Resume");

  // Give it back, as a governor does when the import fails: it serves again with its state.
  await ok(child, RESUME, { reason: "test: captured the payload" });
  t.equal((await ok(child, PING, {})).phase, "serving");
  t.equal((await call(host, "demo.Counter/Add", { key: MARKER, by: 1 })).count, 43, "serving again, with its state");
});

t.test("sealed state - ImportState from a raw socket: a flipped byte, a foreign key or the plaintext is UNAUTHENTICATED and imports nothing", async (t) => {
  const env: Record<string, string> = { ...privateRuntime(t), NODEBIN_HOST: "sealed-test" };
  const port = testPort();
  const host: TestHost = { env, port, seed: `127.0.0.1:${port}`, components: EXAMPLES, root: "", pids: new Set() };
  const flags = ["--component", "counter", "--components", EXAMPLES, "--listen", "127.0.0.1", "--discovery-port", String(port)];
  const first = await startContainer(t, flags, env);
  await Promise.all(Array.from({ length: 4 }, () => call(host, "demo.Counter/Add", { key: MARKER, by: 10 }))); // four clients at once: the sum is what counts
  const held = await startContainer(t, [...flags, "--hold"], env);
  const ipc = (line: string) => /ipc:\/\/\S+/.exec(line)?.[0] ?? "";
  const from = dealer(t, ipc(first.readyLine));
  const to = dealer(t, ipc(held.readyLine));
  t.equal((await ok(to, PING, {})).phase, "holding", "the second container is held");

  const payload = (await ok(from, DRAIN, { exportState: true })).state;
  t.ok(isSealed(payload), "the first container handed out its state sealed");
  t.notOk(contains(payload, MARKER_V8), "without the marker in the clear");

  const ring = hostStateKeyring(env.NODEBIN_RUNTIME_DIR!);
  const plain = open(ring, payload, stateContext("counter"));
  const flipped = (i: number) => {
    const b = new Uint8Array(payload);
    b[i] = b[i]! ^ 0x04;
    return b;
  };
  const attacks: [string, Uint8Array][] = [
    ["a flipped byte in the ciphertext", flipped(40)],
    ["a flipped byte in the tag", flipped(payload.length - 1)],
    ["a flipped byte in the key id", flipped(5)],
    ["sealed under a foreign key", seal(parseKeyring(newKeyLine(), "foreign.key"), plain, stateContext("counter"))],
    ["sealed for another component", seal(ring, plain, stateContext("greeter"))],
    ["the plaintext state, unsealed", plain],
    ["a state made up by the attacker", new Uint8Array(serialize({ counts: { [MARKER]: 1_000_000 } }))],
  ];
  for (const [what, state] of attacks) {
    const answer = await ask(to, IMPORT_STATE, { state });
    t.ok(answer instanceof NodeBinError, `${what}: refused`);
    t.equal((answer as NodeBinError).code, "UNAUTHENTICATED", `${what}: UNAUTHENTICATED`);
    const ping = await ok(to, PING, {});
    t.equal(ping.phase, "holding", `${what}: the node is still held (nothing imported, nothing served)`);
    t.equal(ping.handled, 0, `${what}: it handled nothing`);
  }

  await ok(to, IMPORT_STATE, { state: payload });
  t.equal((await ok(to, PING, {})).phase, "serving", "the genuine payload: imported, serving");
  await ok(from, RELEASE, {});
  t.equal((await ok(from, PING, {})).phase, "closed", "the first container's node shut down once released");
  t.equal((await call(host, "demo.Counter/Get", { key: MARKER })).count, 40, "exactly the state that was sealed, none of the attacker's");
});

t.test("sealed state - a roll whose import fails leaves the old node serving with its state, and says so", async (t) => {
  const host = testHost(t, [example("counter")]);
  const gov = await startGovernor(t, host);
  const before = await onlyChild(gov, "counter serving", () => true);
  const old = before.children[0]!;
  await Promise.all(Array.from({ length: 3 }, () => call(host, "demo.Counter/Add", { key: "kept", by: 4 }))); // three clients at once: the sum is what counts

  const refusing = counterSource(t, (code) =>
    code.replace('version: "1.0.0"', 'version: "2.0.0"').replace("export function importState(snapshot, ctx) {", 'export function importState(snapshot, ctx) {\n  throw new Error("schema v2 cannot read v1 counts");'),
  );
  t.equal((await runCli(["deploy", refusing, "--components", host.components], host.env)).code, 0);
  const failed = await gov.until((s) => s.components.find((c) => c.name === "counter" && c.deployError && !c.rolling), 60_000, "the failed hand-over reported");
  t.match(failed.deployError, /state hand-over failed .*importState failed: schema v2 cannot read v1 counts.*; the old node keeps serving with its state/);
  const now = await onlyChild(gov, "the old node alone, ready", (pid) => pid === old.pid);
  t.same(now.children.map((k) => k.pid), [old.pid], "the old process is the one child");
  t.equal((await call(host, "demo.Counter/Get", { key: "kept" })).count, 12, "with its state");
  t.equal((await call(host, "demo.Counter/Add", { key: "kept", by: 1 })).count, 13, "and serving it");
  const nodes = await runCli(["client", "nodes", "--seed", host.seed, "--json"], host.env);
  t.same(JSON.parse(nodes.stdout).map((n: { version: string }) => n.version), ["1.0.0"], "the old code serves, the new node is gone");
  await gov.waitForStderr(/state hand-over failed/, 5000);
  t.pass("the governor logged it");
});
