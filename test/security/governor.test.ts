// The governor holds a lease's pid to its children (issue 11, finding 4): a made-up container
// registering with a real child's pid used to repoint the governor's record of the child (its
// pings then went to the made-up endpoint) and get the healthy child SIGKILLed as a zombie.
// Raw Register envelopes from a plain ZeroMQ DEALER at the host's discovery socket, against a
// real governor and its child.
import { join } from "node:path";
import t from "tap";
import * as zmq from "zeromq";
import { PULL, REGISTER, type ControlMethod, type NodeEntry, type RegisterRequest } from "../../src/wire/control.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { askRaw } from "../lib/raw-control.ts";
import { example, hostClient, startGovernor, testHost, type ChildStatus, type GovernorProcess } from "../lib/governor.ts";
import { runCli } from "../lib/processes.ts";

// Fast pings, so that several zombie periods pass in a couple of seconds.
const PING_MS = 200;
const ZOMBIE_AFTER_MS = 600;

/** One control request over a raw DEALER (test/lib/raw-control.ts), as "attacker". */
const ask = <Req, Res>(d: zmq.Dealer, method: ControlMethod<Req, Res>, request: Req) => askRaw(d, method, request, { from: "attacker" });

/** Waits until the child `pid` answered `more` pings beyond `from`, or is gone; returns it (undefined: gone). */
async function pongsLater(gov: GovernorProcess, pid: number, from: number, more: number): Promise<ChildStatus | undefined> {
  const found = await gov.until(
    (s) => {
      const child = s.components.flatMap((c) => c.children).find((k) => k.pid === pid);
      if (!child) return { gone: true as const };
      return child.pongs >= from + more ? { child } : undefined;
    },
    20_000,
    `pid ${pid} answered ${more} more pings`,
  );
  return "child" in found ? found.child : undefined;
}

t.test("governor - a Register naming a child's pid with a made-up container is refused; the child keeps serving and is not killed", async (t) => {
  const host = testHost(t, [example("greeter")]);
  const gov = await startGovernor(t, host, ["--ping-ms", String(PING_MS), "--zombie-after-ms", String(ZOMBIE_AFTER_MS)]);
  const ready = await gov.until((s) => s.components[0]?.children.find((k) => k.phase === "ready" && k.node), 30_000, "greeter serving");
  t.match(ready.container, /^greeter@gov-test-[0-9a-f]{8}$/, "the governor named its child's container");
  const client = await hostClient(t, host);
  t.same(await client.call("demo.Greeter/Hello", { name: "Ada" }), { message: "Hello, Ada!" }, "the real node answers");

  // The host's discovery socket, in the test's private runtime directory, where containers register.
  const d = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
  d.connect(`ipc://${join(host.env.NODEBIN_RUNTIME_DIR!, `discovery-${host.port}.sock`)}`);
  t.teardown(() => d.close());
  const pulled = await ask(d, PULL, { knownVersion: 0 });
  if (pulled instanceof NodeBinError) throw pulled;
  const real = pulled.nodes.find((n) => n.id === ready.node);
  if (!real) throw new Error(`the agent's table has no ${ready.node}`);
  const schemas = pulled.schemas.filter((s) => s.id === real.schema);
  const attackerEndpoint = `ipc://${join(host.env.NODEBIN_RUNTIME_DIR!, "attacker.sock")}`;
  const forged = (over: Partial<RegisterRequest>, nodes: NodeEntry[] = [{ ...real, endpoints: [attackerEndpoint] }]): RegisterRequest => ({
    container: "greeter@gov-test-made-up",
    pid: ready.pid,
    nodes,
    schemas,
    leaseMs: 600_000,
    seeds: [],
    ...over,
  });

  const before = await gov.status();
  t.equal(before.leasesRefused, 0, "no lease refused yet");
  const answer = await ask(d, REGISTER, forged({}));
  t.ok(answer instanceof NodeBinError, "the Register is answered with an error");
  t.equal((answer as NodeBinError).code, "PERMISSION_DENIED", "PERMISSION_DENIED");
  t.notMatch((answer as NodeBinError).message, ready.container, "the answer does not tell the child's container id");
  await gov.waitForStderr(/refused the lease of container "greeter@gov-test-made-up" \(pid \d+\)/);
  t.pass("the governor logged a warning");

  // The child's own container id with another pid, and the child's node from a stranger's pid.
  const withItsId = await ask(d, REGISTER, forged({ container: ready.container, pid: process.pid }));
  t.equal((withItsId as NodeBinError).code, "PERMISSION_DENIED", "the child's container id with another pid: refused");
  const itsNode = await ask(d, REGISTER, forged({ container: "dev@gov-test-1", pid: process.pid }));
  t.equal((itsNode as NodeBinError).code, "PERMISSION_DENIED", "the child's node from another container: refused");
  const after = await gov.status();
  t.equal(after.leasesRefused, 3, "the status counts the refusals");
  t.match(after.lastLeaseRefused, /dev@gov-test-1/);

  // Several zombie periods of pings later the child is still the same, ready, and answering.
  const child = await pongsLater(gov, ready.pid, ready.pongs, Math.ceil((4 * ZOMBIE_AFTER_MS) / PING_MS));
  t.ok(child, `pid ${ready.pid} is still a child after ${4 * ZOMBIE_AFTER_MS} ms of pings (not killed as a zombie)`);
  t.same([child?.node, child?.container, child?.phase, child?.restarts], [ready.node, ready.container, "ready", 0], "same node, same container, ready, never restarted");
  t.notOk(gov.stderr().match(/zombie|killing/i), "no zombie was found");
  const greeter = (await gov.component("greeter"))!;
  t.same(
    greeter.children.map((k) => k.pid),
    [ready.pid],
    "no replacement was started",
  );

  // Calls still reach the real node (the agent's table never took the attacker's endpoint).
  await client.refresh();
  t.same(
    client.nodes().filter((n) => n.id === ready.node).map((n) => n.endpoints.includes(attackerEndpoint)),
    [false],
    "the table has the child's node at its own endpoints",
  );
  for (let i = 0; i < 5; i++) t.same(await client.call("demo.Greeter/Hello", { name: `Ada${i}` }), { message: `Hello, Ada${i}!` });
  const served = await gov.until((s) => s.components[0]!.children.find((k) => k.pid === ready.pid && k.handled >= 6), 10_000, "the child handled the calls");
  t.ok(served, "the child handled every call");

  const text = await runCli(["governor", "status", "--discovery-port", String(host.port)], host.env);
  t.equal(text.code, 0, text.stderr);
  t.match(text.stdout, /3 lease\(s\) refused; last: container "dev@gov-test-1"/, "`governor status` shows the refusals");
});

t.test("governor - a process that is no child may register its own nodes, up to max-lease-nodes", async (t) => {
  const host = testHost(t, [example("greeter")]);
  const gov = await startGovernor(t, host, ["--ping-ms", String(PING_MS)]);
  const ready = await gov.until((s) => s.components[0]?.children.find((k) => k.phase === "ready" && k.node), 30_000, "greeter serving");
  const d = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
  d.connect(`ipc://${join(host.env.NODEBIN_RUNTIME_DIR!, `discovery-${host.port}.sock`)}`);
  t.teardown(() => d.close());
  const pulled = await ask(d, PULL, { knownVersion: 0 });
  if (pulled instanceof NodeBinError) throw pulled;
  const real = pulled.nodes.find((n) => n.id === ready.node)!;
  const schemas = pulled.schemas.filter((s) => s.id === real.schema);
  // Nodes of its own (ids no child has), as a hand-started container or a joined dev would lease.
  const own = (n: number): NodeEntry[] => Array.from({ length: n }, (_, i) => ({ ...real, id: `greeter-own${i}`, endpoints: [`ipc://${join(host.env.NODEBIN_RUNTIME_DIR!, `own-${i}.sock`)}`] }));
  const request = (nodes: NodeEntry[]): RegisterRequest => ({ container: "dev@gov-test-own", pid: process.pid, nodes, schemas, leaseMs: 3000, seeds: [] });

  const taken = await ask(d, REGISTER, request(own(1)));
  t.notOk(taken instanceof NodeBinError, `a stranger's own node is leased (${taken instanceof NodeBinError ? taken.message : "ok"})`);
  const pulledAgain = await ask(d, PULL, { knownVersion: 0 });
  t.ok(!(pulledAgain instanceof NodeBinError) && pulledAgain.nodes.some((n) => n.id === "greeter-own0"), "and is in the host's table");
  const renewed = await ask(d, REGISTER, request(own(64)));
  t.notOk(renewed instanceof NodeBinError, "64 nodes (the default bound) are taken");
  const tooMany = await ask(d, REGISTER, request(own(65)));
  t.equal((tooMany as NodeBinError).code, "RESOURCE_EXHAUSTED", "65 are refused");
  t.equal((await gov.status()).leasesRefused, 1);
});
