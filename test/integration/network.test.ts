// Several real container processes on one host (loopback), found through the
// host agent, called by a client that only knows the host's discovery port.
import t from "tap";
import * as zmq from "zeromq";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { Mode } from "../../src/wire/schema.ts";
import { EXAMPLES, privateRuntime, runCli, startContainer, testPort, type DevProcess } from "../lib/processes.ts";

// A discovery port of our own (not 7400), so that tests never meet a real agent or each other.
const PORT = testPort();
const SEED = `127.0.0.1:${PORT}`;
const nodeArgs = (component: string) => ["--component", component, "--components", EXAMPLES, "--listen", "127.0.0.1", "--discovery-port", String(PORT)];
const errorOf = (stderr: string) => (JSON.parse(stderr.trim().split("\n").pop()!) as { error: { code: string } }).error;

interface NodeRow {
  id: string;
  component: string;
  endpoints: string[];
}

async function nodes(env: Record<string, string>): Promise<NodeRow[]> {
  const r = await runCli(["client", "nodes", "--seed", SEED, "--json"], env);
  if (r.code !== 0) throw new Error(`client nodes failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as NodeRow[];
}

/** Polls the table (through the CLI, as a user would) until `ok` holds; fails after `ms`. Returns the time it took. */
async function until(env: Record<string, string>, ok: (rows: NodeRow[]) => boolean, ms: number): Promise<number> {
  const started = Date.now();
  let rows: NodeRow[] = [];
  while (Date.now() - started < ms) {
    rows = await nodes(env);
    if (ok(rows)) return Date.now() - started;
  }
  throw new Error(`table did not reach the expected state within ${ms} ms: ${JSON.stringify(rows.map((r) => r.component))}`);
}

t.test("network - containers in separate processes find each other through the host agent; a client calls through one seed", async (t) => {
  const env = { ...privateRuntime(t), NODEBIN_HOST: "loopback-host" };
  const started: DevProcess[] = [];
  // The first becomes the host agent; the other two, members, start side by side once it is ready.
  started.push(await startContainer(t, nodeArgs("greeter"), env));
  started.push(...(await Promise.all(["counter", "welcome"].map((c) => startContainer(t, nodeArgs(c), env)))));
  t.match(started[0]!.readyLine, /\(agent at tcp:\/\/127\.0\.0\.1:\d+ ipc:/, "the first container became the host agent");
  t.match(started[1]!.readyLine, /\(member\)/, "the others registered with it");

  await until(env, (rows) => rows.length === 3, 10_000);
  const rows = await nodes(env);
  t.same(rows.map((r) => r.component).sort(), ["counter", "greeter", "welcome"]);
  for (const r of rows) {
    t.match(r.endpoints[0], /^ipc:\/\//, `${r.component}: an ipc endpoint for same-host peers`);
    t.match(r.endpoints[1], /^tcp:\/\/127\.0\.0\.1:\d+$/, `${r.component}: a tcp endpoint for the network`);
  }

  // welcome calls greeter and counter in their own processes.
  const visit = await runCli(["client", "call", "demo.Welcome/Visit", '{"name":"Ada"}', "--seed", SEED, "--json", "--meta", "via=net"], env);
  t.equal(visit.code, 0, visit.stderr);
  t.same(JSON.parse(visit.stdout), { greeting: "Hello, Ada!", visitor: "1", via: "net" });

  // A member leaving with SIGTERM deregisters at once: no lease to wait out.
  t.equal(await started[1]!.stop(), 0, "counter exits 0 on SIGTERM");
  const gone = await until(env, (r) => !r.some((n) => n.component === "counter"), 5_000);
  t.ok(gone < 5_000, `counter left the table (${gone} ms)`);
  const [missing, nested] = await Promise.all([
    runCli(["client", "call", "demo.Counter/Get", '{"key":"x"}', "--seed", SEED, "--json"], env, { timeoutMs: 60_000 }),
    runCli(["client", "call", "demo.Welcome/Visit", '{"name":"Bo"}', "--seed", SEED, "--json", "--timeout", "10000"], env, { timeoutMs: 60_000 }),
  ]);
  t.equal(errorOf(missing.stderr).code, "NOT_FOUND");
  t.equal(errorOf(nested.stderr).code, "NOT_FOUND", "welcome's nested call finds no counter (after its settle wait)");

  // The agent dies without a word: another container takes the port over; the dead node leaves the table.
  started[0]!.child.kill("SIGKILL");
  const takeover = await until(env, (r) => r.length === 1 && r[0]!.component === "welcome", 15_000);
  t.ok(takeover < 15_000, `welcome took over as host agent; greeter left the table within ${takeover} ms`);
  t.match(started[2]!.stderr(), /host agent for loopback-host/, "welcome says it is the agent now");

  // New containers join the new agent.
  await Promise.all(["counter", "greeter"].map((c) => startContainer(t, nodeArgs(c), env)));
  await until(env, (r) => r.length === 3, 10_000);
  const again = await runCli(["client", "call", "demo.Welcome/Visit", '{"name":"Cy"}', "--seed", SEED, "--json"], env);
  t.equal(again.code, 0, again.stderr);
  t.same(JSON.parse(again.stdout), { greeting: "Hello, Cy!", visitor: "1", via: "" }, "a fresh counter: its state started over");
});

t.test("network - malformed frames at a node's tcp port get coded errors or are dropped; the node keeps serving", async (t) => {
  const env = { ...privateRuntime(t), NODEBIN_HOST: "loopback-host" };
  const greeter = await startContainer(t, nodeArgs("greeter"), env);
  const tcp = /tcp:\/\/127\.0\.0\.1:\d+/.exec(greeter.readyLine)![0];
  const node = /ready: (\S+)/.exec(greeter.readyLine)![1]!;
  const raw = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
  raw.connect(tcp);
  t.teardown(() => raw.close());
  const exchange = async (frame: Uint8Array): Promise<Envelope | NodeBinError> => {
    await raw.send(frame);
    const [reply] = await raw.receive();
    return decodeEnvelope(reply!);
  };
  const request = (fields: Partial<Envelope>) => encodeEnvelope(envelope({ id: 7, plane: Plane.APPLICATION, mode: Mode.SYNC, kind: Kind.REQUEST, from: "raw-test", to: node, method: "demo.Greeter/Hello", deadlineMs: 5000, ...fields }));

  const garbage = await exchange(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]));
  t.equal((garbage as Envelope).error?.code, 3, "garbage bytes: INVALID_ARGUMENT back to the connection");
  const version = await exchange(encodeEnvelope(envelope({ version: 99, from: "raw-test", to: node })));
  t.equal((version as Envelope).error?.code, 9, "an unknown protocol version: FAILED_PRECONDITION");
  const badValue = (await exchange(request({ value: new Uint8Array([0x0a, 0x50, 0x41]) }))) as Envelope;
  t.equal(badValue.id, 7, "answered by id");
  t.equal(badValue.error?.code, 3, "a value that is not a HelloRequest: INVALID_ARGUMENT");
  const unknown = (await exchange(request({ method: "demo.Greeter/Nope" }))) as Envelope;
  t.equal(unknown.error?.code, 5, "an unknown method: NOT_FOUND");
  const noNode = (await exchange(request({ to: "nobody-here" }))) as Envelope;
  t.equal(noNode.error?.code, 5, "an unknown node id: NOT_FOUND");
  const wrongMode = (await exchange(request({ mode: Mode.ASYNC }))) as Envelope;
  t.equal(wrongMode.error?.code, 3, "the wrong mode: INVALID_ARGUMENT");

  const ok = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":"still here"}', "--seed", SEED, "--json"], env);
  t.equal(ok.code, 0, ok.stderr);
  t.same(JSON.parse(ok.stdout), { message: "Hello, still here!" });
  t.equal(greeter.child.exitCode, null, "the node process is still running");
});
