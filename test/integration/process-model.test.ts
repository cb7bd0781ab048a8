// One process model, tried as a user would on one host with default flags (no --listen, no
// --advertise): `dev --only` joined to a live host, its nested calls going out to a container
// and the network's calls coming in; and what a plain ZeroMQ socket on the tcp port may ask.
import { join } from "node:path";
import t from "tap";
import * as zmq from "zeromq";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { DEREGISTER, DRAIN, GOVERNOR_SET, GOVERNOR_STATUS, GOVERNOR_STOP, PING, REGISTER, YIELD_AGENT } from "../../src/wire/control.ts";
import { Mode } from "../../src/wire/schema.ts";
import { example, startGovernor, testHost } from "../lib/governor.ts";
import { privateRuntime, ROOT, runCli, startContainer, startDev, testPort } from "../lib/processes.ts";

const BANK = join(ROOT, "examples", "bank");
const PERMISSION_DENIED = 7;

/** One control request from a plain ZeroMQ DEALER (not our client), and the envelope that came back. */
async function ask(endpoint: string, method: { schema: { fullName: string; requestType: Parameters<typeof encodeMessage>[0] } }, request: unknown, to = ""): Promise<Envelope> {
  const raw = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
  raw.connect(endpoint);
  try {
    const value = encodeMessage(method.schema.requestType, request, "attack");
    await raw.send(encodeEnvelope(envelope({ id: 1, plane: Plane.CONTROL, mode: Mode.SYNC, kind: Kind.REQUEST, from: "attacker", to, method: method.schema.fullName, value, deadlineMs: 5000 })));
    const [frame] = await raw.receive().catch((err: unknown) => {
      throw new Error(`${method.schema.fullName} to ${endpoint}: no answer (${String(err)})`);
    });
    const env = decodeEnvelope(frame!);
    if (env instanceof NodeBinError) throw env;
    return env;
  } finally {
    raw.close();
  }
}
/** The coded error `node-bin client --json` printed last on stderr. */
const errorOf = (stderr: string) => (JSON.parse(stderr.trim().split("\n").pop()!) as { error: { code: string; origin?: string } }).error;

/** A test's own host: private runtime dir, host id, and a discovery port of its own (never 7400). */
function oneHost(tt: Parameters<typeof privateRuntime>[0]) {
  const port = testPort();
  return { env: { ...privateRuntime(tt), NODEBIN_HOST: "bank-host" }, port, seed: `127.0.0.1:${port}` };
}

interface NodeRow {
  id: string;
  component: string;
  endpoints: string[];
}

t.test("dev - --only serves one component joined to the host: its nested calls reach a ledger container, the network's calls reach it", async (t) => {
  const host = oneHost(t);
  const ledger = await startContainer(t, ["--component", "ledger", "--components", BANK, "--discovery-port", String(host.port)], host.env);
  const ledgerNode = /container ready: (\S+)/.exec(ledger.readyLine)![1]!;

  const dev = await startDev(t, ["--components", BANK, "--only", "teller", "--seed", host.seed, "--discovery-port", String(host.port)], host.env);
  t.match(dev.readyLine, /\(1 components, 2 methods; joined bank-host as member, nodes at /, "dev joined the host as a member");

  // A client on the network (through the host's discovery port) calls dev's teller.
  const deposit = await runCli(["client", "--seed", host.seed, "call", "bank.Teller/Deposit", '{"account":"ada","cents":500}'], host.env);
  t.equal(deposit.code, 0, deposit.stderr);
  const receipt = JSON.parse(deposit.stdout) as { balanceCents: string; teller: string; ledger: string };
  t.equal(receipt.balanceCents, "500");
  t.equal(receipt.ledger, ledgerNode, "the teller's nested call went out to the ledger container");

  const listed = await runCli(["client", "--seed", host.seed, "nodes", "--json"], host.env);
  t.equal(listed.code, 0, listed.stderr);
  const rows = JSON.parse(listed.stdout) as NodeRow[];
  t.same(rows.map((r) => r.component).sort(), ["ledger", "teller"], "dev registered only the component it serves");
  const teller = rows.find((r) => r.component === "teller")!;
  t.equal(teller.id, receipt.teller, "the teller that answered is dev's");
  t.ok(teller.endpoints.some((e) => dev.readyLine.includes(e)), "at the endpoints dev printed");

  // The ledger's coded error comes back through dev's teller, naming its origin.
  const overdraw = await runCli(["client", "--seed", host.seed, "call", "bank.Teller/Withdraw", '{"account":"ada","cents":900}', "--json"], host.env);
  t.not(overdraw.code, 0);
  t.equal(errorOf(overdraw.stderr).code, "FAILED_PRECONDITION");
  t.equal(errorOf(overdraw.stderr).origin, ledgerNode);

  // dev leaves: its teller leaves the host's table; the ledger stays.
  t.equal(await dev.stop(), 0);
  const after = JSON.parse((await runCli(["client", "--seed", host.seed, "nodes", "--json"], host.env)).stdout) as NodeRow[];
  t.same(after.map((r) => r.component), ["ledger"], "deregistered on exit");
});

t.test("dev - without --seed and with no agent on the host it is a closed world; --only names must exist", async (t) => {
  const host = oneHost(t);
  const dev = await startDev(t, ["--components", BANK, "--discovery-port", String(host.port)], host.env);
  t.match(dev.readyLine, /\(2 components, 4 methods\)$/, "alone: not joined");
  const deposit = await runCli(["client", "call", "bank.Teller/Deposit", '{"account":"bo","cents":7}'], host.env);
  t.equal(deposit.code, 0, deposit.stderr);
  t.equal((JSON.parse(deposit.stdout) as { balanceCents: string }).balanceCents, "7", "both components in the one process");
  // Two processes of their own, neither touching the other: side by side.
  const [seeded, wrong] = await Promise.all([runCli(["client", "--seed", host.seed, "nodes"], host.env, { timeoutMs: 20_000 }), runCli(["dev", "--components", BANK, "--only", "tellr"], host.env, { timeoutMs: 60_000 })]);
  t.not(seeded.code, 0, "nothing holds the host's discovery port");

  t.not(wrong.code, 0);
  t.match(wrong.stderr, /NOT_FOUND: --only tellr: no such component .*did you mean teller/);
});

t.test("authority - host-only control methods sent to a node's and the agent's tcp ports from a raw socket are PERMISSION_DENIED; nothing changes", async (t) => {
  const host = oneHost(t);
  // --listen 127.0.0.1: the raw socket reaches the tcp ports on loopback only.
  const ledger = await startContainer(t, ["--component", "ledger", "--components", BANK, "--listen", "127.0.0.1", "--discovery-port", String(host.port)], host.env);
  const ledgerNode = /container ready: (\S+)/.exec(ledger.readyLine)![1]!;
  const nodeTcp = /(tcp:\/\/\S+)/.exec(ledger.readyLine)![1]!;

  const discoveryTcp = `tcp://127.0.0.1:${host.port}`;
  const fake = { id: ledgerNode, component: "ledger", version: "6.6.6", host: "bank-host", network: "", endpoints: ["tcp://127.0.0.1:1"], methods: [{ name: "bank.Ledger/Balance", mode: 0 }], schema: "x", load: { queued: 0, capacity: 1 } };
  const attacks: [string, Envelope][] = [
    ["Drain to the node's tcp port", await ask(nodeTcp, DRAIN, { exportState: true })],
    ["Drain addressed to the node by id", await ask(nodeTcp, DRAIN, { exportState: true }, ledgerNode)],
    ["Ping to the node's tcp port", await ask(nodeTcp, PING, {})],
    ["Register at the agent's tcp port", await ask(discoveryTcp, REGISTER, { nodes: [fake], schemas: [], leaseMs: 600_000, seeds: [], container: "evil", pid: 1 })],
    ["Deregister at the agent's tcp port", await ask(discoveryTcp, DEREGISTER, { container: "evil" })],
    ["YieldAgent at the agent's tcp port", await ask(discoveryTcp, YIELD_AGENT, {})],
  ];
  for (const [what, reply] of attacks) t.equal(reply.error?.code, PERMISSION_DENIED, what);

  // Nothing happened: the node still serves, its entry is still the real one, the agent kept the port.
  const balance = await runCli(["client", "--seed", host.seed, "call", "bank.Ledger/Balance", '{"account":"x"}'], host.env);
  t.equal(balance.code, 0, balance.stderr);
  const rows = JSON.parse((await runCli(["client", "--seed", host.seed, "nodes", "--json"], host.env)).stdout) as (NodeRow & { version: string })[];
  t.same(rows.map((r) => [r.id, r.version]), [[ledgerNode, "1.0.0"]], "no planted node");
  t.notMatch(ledger.stderr(), /gave the host agent role back/);
});

t.test("one host, default flags - governor --seed 127.0.0.1, then client --seed 127.0.0.1 calls its components", async (t) => {
  const host = testHost(t, [example("greeter"), example("counter"), example("welcome")]);
  const gov = await startGovernor(t, host, ["--seed", host.seed], { defaultFlags: true });
  t.match(gov.readyLine, /governor ready: \S+ at tcp:\/\/\S+ ipc:/, "bound and advertised");
  t.notMatch(gov.readyLine, /0\.0\.0\.0/, "a wildcard is never advertised");
  await gov.until((s) => s.components.every((c) => c.running === 1 && c.children.every((k) => k.phase === "ready")), 45_000, "every component ready");
  const visit = await runCli(["client", "--seed", host.seed, "call", "demo.Welcome/Visit", '{"name":"Ada"}'], host.env);
  t.equal(visit.code, 0, visit.stderr);
  t.match(JSON.parse(visit.stdout), { greeting: "Hello, Ada!" }, "nested calls across the governor's children");
  t.notMatch(gov.stderr(), /seeds tcp:\/\/127\.0\.0\.1/, "the seed naming the governor itself is not gossiped with");

  // The management API is the host's: over the tcp discovery port a plain socket is refused and nothing changes.
  const discoveryTcp = `tcp://127.0.0.1:${host.port}`;
  t.equal((await ask(discoveryTcp, GOVERNOR_STATUS, {})).error?.code, PERMISSION_DENIED, "Status");
  t.equal((await ask(discoveryTcp, GOVERNOR_SET, { key: "capacity", component: "", value: 1 })).error?.code, PERMISSION_DENIED, "Set");
  t.equal((await ask(discoveryTcp, GOVERNOR_STOP, { keepChildren: false })).error?.code, PERMISSION_DENIED, "Stop");
  const status = await gov.status();
  t.not(status.capacity, 1, "capacity unchanged");
  t.equal(gov.child.exitCode, null, "the governor still runs");
  const cli = await runCli(["governor", "status", "--json", "--discovery-port", String(host.port)], host.env);
  t.equal(cli.code, 0, "over its private socket, the host's own user is served");
});
