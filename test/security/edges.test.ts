// The strict edges (issue 11, item 11), from plain ZeroMQ sockets on loopback against a real
// container: strings that are not UTF-8 are refused with the field named and never reach a
// handler; a container id with a newline cannot forge a line of the host agent's log.
import { join } from "node:path";
import t from "tap";
import * as zmq from "zeromq";
import { discoveryIpc } from "../../src/transport/runtime-dir.ts";
import { REGISTER } from "../../src/wire/control.ts";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { decodeMessage, encodeMessage, messageToJSON } from "../../src/wire/message.ts";
import { loadProtoFiles } from "../../src/wire/proto.ts";
import { Mode } from "../../src/wire/schema.ts";
import { EXAMPLES, privateRuntime, startContainer, testPort } from "../lib/processes.ts";

const greeterProto = loadProtoFiles([join(EXAMPLES, "greeter", "greeter.proto")]);
const HelloRequest = greeterProto.lookupType("demo.HelloRequest");
const HelloReply = greeterProto.lookupType("demo.HelloReply");
const Signature = greeterProto.lookupType("demo.Signature");
const GuestList = greeterProto.lookupType("demo.GuestList");

function host(tt: Parameters<typeof privateRuntime>[0], log = "warn") {
  const port = testPort();
  const env: Record<string, string> = { ...privateRuntime(tt), NODEBIN_HOST: "edges-host", NODEBIN_LOG: log };
  return { env, port };
}

const containerArgs = (port: number) => ["--component", "greeter", "--components", EXAMPLES, "--listen", "127.0.0.1", "--discovery-port", String(port)];
const tcpOf = (readyLine: string) => /(tcp:\/\/127\.0\.0\.1:\d+)/.exec(readyLine)![1]!;
const nodeOf = (readyLine: string) => /container ready: (\S+)/.exec(readyLine)![1]!;

/** A raw DEALER, closed at teardown. */
function raw(tt: { teardown(fn: () => unknown): void }, endpoint: string): zmq.Dealer {
  const d = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
  d.connect(endpoint);
  tt.teardown(() => d.close());
  return d;
}

async function receiveEnvelope(d: zmq.Dealer): Promise<Envelope> {
  const [frame] = await d.receive();
  const env = decodeEnvelope(frame!);
  if (env instanceof NodeBinError) throw env;
  return env;
}

/** `bytes` with the one occurrence of the ASCII `marker` replaced by `replacement` (same length). */
function withBytes(bytes: Uint8Array, marker: string, replacement: number[]): Buffer {
  const out = Buffer.from(bytes);
  const at = out.indexOf(marker);
  if (at < 0 || out.indexOf(marker, at + 1) >= 0 || marker.length !== replacement.length) throw new Error(`marker ${marker} must occur once and match the replacement's length`);
  out.set(replacement, at);
  return out;
}

/**
 * The greeter container the two UTF-8 cases share (each on a connection of its own; neither
 * writes what the other reads: only the first signs the guest book): started by the first that
 * asks, stopped at the file's end.
 */
let shared: ReturnType<typeof startContainer> | undefined;
const sharedGreeter = () => {
  if (!shared) {
    const h = host(t);
    shared = startContainer(t, containerArgs(h.port), h.env);
  }
  return shared;
};

t.test("edges - a request whose body holds a string that is not UTF-8 is answered INVALID_ARGUMENT naming the field, and never run", async (t) => {
  const greeter = await sharedGreeter();
  const to = nodeOf(greeter.readyLine);
  const d = raw(t, tcpOf(greeter.readyLine));
  const request = (id: number, method: string, mode: Mode, value: Uint8Array) =>
    encodeEnvelope(envelope({ id, plane: Plane.APPLICATION, mode, kind: Kind.REQUEST, from: "raw-edges", to, method, value, deadlineMs: 5000 }));

  // "A\xffB" as the name: protobufjs alone would have read "A\ufffdB" and greeted it.
  await d.send(request(21, "demo.Greeter/Hello", Mode.SYNC, withBytes(encodeMessage(HelloRequest, { name: "A~B" }, "test"), "~", [0xff])));
  const refused = await receiveEnvelope(d);
  t.equal(refused.id, 21, "the answer is to that request");
  t.equal(refused.value.length, 0, "no reply value: the handler did not answer");
  t.equal(refused.error?.code, 3, "INVALID_ARGUMENT");
  t.equal(refused.error?.details.field, "name", "names the field");
  t.match(refused.error?.message, /not valid UTF-8/);

  // ASYNC: accepted (the body is read when the node takes it), but its handler never runs.
  await d.send(request(22, "demo.Greeter/Sign", Mode.ASYNC, withBytes(encodeMessage(Signature, { name: "forged ~~ name" }, "test"), "~~", [0xed, 0xa0])));
  t.equal((await receiveEnvelope(d)).id, 22, "the ASYNC message was accepted");
  await d.send(request(23, "demo.Greeter/Sign", Mode.ASYNC, encodeMessage(Signature, { name: "Ada ü" }, "test")));
  t.equal((await receiveEnvelope(d)).id, 23);
  // The node handles one message at a time, in order: both Signs are done when Guests answers.
  await d.send(request(24, "demo.Greeter/Guests", Mode.SYNC, new Uint8Array(0)));
  const guests = await receiveEnvelope(d);
  t.same(messageToJSON(GuestList, decodeMessage(GuestList, guests.value, "test")).names, ["Ada ü"], "only the valid signature reached the handler");

  await d.send(request(25, "demo.Greeter/Hello", Mode.SYNC, encodeMessage(HelloRequest, { name: "Zoë" }, "test")));
  const hello = await receiveEnvelope(d);
  t.equal(messageToJSON(HelloReply, decodeMessage(HelloReply, hello.value, "test")).message, "Hello, Zoë!", "valid UTF-8 is served, exactly");
});

t.test("edges - an envelope whose `from` is not UTF-8 is refused with INVALID_ARGUMENT naming the field; the listener keeps serving", async (t) => {
  const greeter = await sharedGreeter();
  const to = nodeOf(greeter.readyLine);
  const d = raw(t, tcpOf(greeter.readyLine));
  const hello = (id: number, from: string) =>
    encodeEnvelope(envelope({ id, plane: Plane.APPLICATION, mode: Mode.SYNC, kind: Kind.REQUEST, from, to, method: "demo.Greeter/Hello", value: encodeMessage(HelloRequest, { name: "Ada" }, "test"), deadlineMs: 5000 }));

  await d.send(withBytes(hello(31, "caller-~"), "~", [0xc0]));
  const refused = await receiveEnvelope(d);
  t.equal(refused.kind, Kind.RESPONSE);
  t.equal(refused.id, 31, "the refusal answers the request's id (read from what did decode)");
  t.equal(refused.error?.code, 3, "INVALID_ARGUMENT");
  t.equal(refused.error?.details.field, "from", "names the field");
  await d.send(hello(32, "caller-ok"));
  const served = await receiveEnvelope(d);
  t.same([served.id, served.error], [32, undefined], "the next request is served");
});

t.test("edges - a container id with a newline, registered over the host's ipc socket, does not forge a line of the agent's log", async (t) => {
  const h = host(t, "info");
  const agent = await startContainer(t, containerArgs(h.port), h.env);
  t.match(agent.readyLine, /\(agent/, "the container holds the host agent role");
  const d = raw(t, discoveryIpc(h.env.NODEBIN_RUNTIME_DIR!, h.port));
  const m = REGISTER.schema;
  const container = "x\nFAKE LINE 2099-01-01T00:00:00.000Z error [governor] all children killed";
  await d.send(
    encodeEnvelope(
      envelope({
        id: 41,
        plane: Plane.CONTROL,
        mode: m.mode,
        kind: Kind.REQUEST,
        from: "raw-registrar",
        method: m.fullName,
        value: encodeMessage(m.requestType, { nodes: [], schemas: [], leaseMs: 60_000, seeds: [], container, pid: process.pid }, "test"),
        deadlineMs: 5000,
      }),
    ),
  );
  const answer = await receiveEnvelope(d);
  t.equal(answer.id, 41);
  // Registered or refused, the agent logs the id: wait for that line, then read the whole log.
  await agent.waitForStderr(/FAKE LINE/, 10_000);
  const lines = agent.stderr().split("\n");
  t.same(
    lines.filter((l) => l.startsWith("FAKE")),
    [],
    "no line starts with the forged text",
  );
  const logged = lines.find((l) => l.includes("FAKE LINE"))!;
  t.match(logged, /^\d{4}-\d\d-\d\dT[\d:.]+Z \w+ +\[[^\]]+\] .*x\\nFAKE LINE/, "the id is on the agent's own line, its newline shown as \\n");
});
