// Answers and routes follow connections, never claims: attacks from plain ZeroMQ sockets on
// loopback against real containers (issue 11, findings 2, 8 and 10).
import t from "tap";
import * as zmq from "zeromq";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { Mode } from "../../src/wire/schema.ts";
import { EXAMPLES, privateRuntime, runCli, startContainer, testPort } from "../lib/processes.ts";

function host(tt: Parameters<typeof privateRuntime>[0]) {
  const port = testPort();
  return { env: { ...privateRuntime(tt), NODEBIN_HOST: "conn-host" }, port, seed: `127.0.0.1:${port}` };
}

const containerArgs = (component: string, port: number) => ["--component", component, "--components", EXAMPLES, "--listen", "127.0.0.1", "--discovery-port", String(port)];
const tcpOf = (readyLine: string) => /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(readyLine)![1]!;
const nodeOf = (readyLine: string) => /container ready: (\S+)/.exec(readyLine)![1]!;

/** A raw DEALER on loopback, closed at teardown. */
function raw(tt: { teardown(fn: () => unknown): void }, endpoint: string, receiveTimeout = 5000): zmq.Dealer {
  const d = new zmq.Dealer({ linger: 0, receiveTimeout });
  d.connect(endpoint);
  tt.teardown(() => d.close());
  return d;
}

/** "Hello" / "Sign" requests of demo.Greeter, encoded by hand as any peer would (field 1: name). */
function greeterRequest(fields: Partial<Envelope> & { name: string }): Uint8Array {
  const name = new TextEncoder().encode(fields.name);
  const value = new Uint8Array([0x0a, name.length, ...name]);
  const { name: _, ...rest } = fields;
  return encodeEnvelope(envelope({ id: 1, plane: Plane.APPLICATION, mode: Mode.SYNC, kind: Kind.REQUEST, method: "demo.Greeter/Hello", value, deadlineMs: 5000, ...rest }));
}

async function receiveEnvelope(d: zmq.Dealer): Promise<Envelope> {
  const [frame] = await d.receive();
  const env = decodeEnvelope(frame!);
  if (env instanceof NodeBinError) throw env;
  return env;
}

const text = (env: Envelope) => new TextDecoder().decode(env.value.subarray(2));

t.test("answers - two connections claiming the same `from` each get their own answer; an empty `from` is answered; an ASYNC sender gets its acceptance", async (t) => {
  const h = host(t);
  const greeter = await startContainer(t, containerArgs("greeter", h.port), h.env);
  const node = nodeOf(greeter.readyLine);
  const tcp = tcpOf(greeter.readyLine);
  const first = raw(t, tcp);
  const second = raw(t, tcp);
  // The second connection claims the same sender id after the first: its answers must not
  // steal the first's (a listener used to answer the connection an id was last seen on).
  await first.send(greeterRequest({ id: 7, from: "same-id", to: node, name: "first" }));
  await second.send(greeterRequest({ id: 7, from: "same-id", to: node, name: "second" }));
  const [a, b] = await Promise.all([receiveEnvelope(first), receiveEnvelope(second)]);
  t.equal(text(a), "Hello, first!", "the first connection got the answer to its own request");
  t.equal(text(b), "Hello, second!", "and the second its own");

  const anonymous = raw(t, tcp);
  await anonymous.send(greeterRequest({ id: 9, from: "", to: node, name: "nobody" }));
  const c = await receiveEnvelope(anonymous);
  t.equal(c.id, 9);
  t.equal(text(c), "Hello, nobody!", "a request with an empty `from` is answered too");

  await anonymous.send(greeterRequest({ id: 10, from: "", to: node, method: "demo.Greeter/Sign", mode: Mode.ASYNC, name: "guest" }));
  const accepted = await receiveEnvelope(anonymous);
  t.same([accepted.id, accepted.kind, accepted.error], [10, Kind.RESPONSE, undefined], "the ASYNC message's acceptance reached its sender");
});

t.test("answers - requests claiming other nodes' ids do not divert a node's nested calls; forged answers sprayed at its port never become one", async (t) => {
  const h = host(t);
  const greeter = await startContainer(t, containerArgs("greeter", h.port), h.env);
  const counter = await startContainer(t, containerArgs("counter", h.port), h.env);
  const welcome = await startContainer(t, containerArgs("welcome", h.port), h.env);
  const greeterNode = nodeOf(greeter.readyLine);
  const counterNode = nodeOf(counter.readyLine);
  const welcomeNode = nodeOf(welcome.readyLine);
  const target = tcpOf(welcome.readyLine);

  // Finding 2: requests to welcome's tcp port claiming to come from the greeter and the counter.
  const attacker = raw(t, target, 300);
  for (const from of [greeterNode, counterNode]) {
    await attacker.send(greeterRequest({ id: 1, from, to: welcomeNode, name: "x" }));
    await attacker.send(encodeEnvelope(envelope({ id: 2, plane: Plane.CONTROL, mode: Mode.SYNC, kind: Kind.REQUEST, from, method: "nodebin.Control/Ping", deadlineMs: 5000 })));
  }
  // Finding 8: answers with the ids welcome's nested calls will use, sprayed at its port while it calls.
  const forged = (id: number) => encodeEnvelope(envelope({ id, plane: Plane.APPLICATION, mode: Mode.SYNC, kind: Kind.RESPONSE, from: greeterNode, to: welcomeNode, method: "demo.Greeter/Hello", value: new Uint8Array([0x0a, 6, ...new TextEncoder().encode("forged")]) }));
  let spraying = true;
  const spray = (async () => {
    const sprayer = raw(t, target);
    let sent = 0;
    while (spraying && sent < 20_000) {
      const batch = Array.from({ length: 50 }, (_, i) => forged(1 + ((sent + i) % 64)));
      await sprayer.send(batch);
      sent += batch.length;
      await new Promise((r) => setImmediate(r));
    }
    return sent;
  })();

  const greetings: string[] = [];
  for (let i = 0; i < 8; i++) {
    const visit = await runCli(["client", "--seed", h.seed, "call", "demo.Welcome/Visit", `{"name":"Ada${i}"}`, "--json"], h.env);
    t.equal(visit.code, 0, visit.stderr);
    greetings.push((JSON.parse(visit.stdout || "{}") as { greeting?: string }).greeting ?? "");
  }
  spraying = false;
  const sprayed = await spray;
  t.same(greetings, Array.from({ length: 8 }, (_, i) => `Hello, Ada${i}!`), `every nested call got the greeter's real answer (${sprayed} forged answers sprayed)`);

  // The attacker got answers to its own requests only (the welcome node does not serve
  // Greeter/Hello; Ping is host-only) and never one of welcome's nested calls.
  const got: Envelope[] = [];
  for (;;) {
    try {
      got.push(await receiveEnvelope(attacker));
    } catch {
      break; // nothing more within 300 ms
    }
  }
  t.ok(got.length >= 4, `its own ${got.length} answers came back`);
  t.ok(
    got.every((e) => e.kind === Kind.RESPONSE && e.error !== undefined),
    "each an error answer to its own request, none a request from welcome's nested calls",
  );
});
