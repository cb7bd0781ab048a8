import t from "tap";
import { loadComponents } from "../../src/component/loader.ts";
import type { Container } from "../../src/container/container.ts";
import { MembershipTable } from "../../src/membership/table.ts";
import { ControlServer } from "../../src/container/control-server.ts";
import {
  AUTHORITY,
  BROADCAST,
  CONTROL_SCHEMA,
  FETCH_COMPONENT,
  DEREGISTER,
  DRAIN,
  GOSSIP,
  GOVERNOR_CAPACITY,
  GOVERNOR_SET,
  GOVERNOR_STATUS,
  GOVERNOR_STOP,
  GOVERNOR_ROLL,
  IMPORT_STATE,
  PING,
  PULL,
  REGISTER,
  RELEASE,
  REQUEST_CAPACITY,
  RESUME,
  YIELD_AGENT,
  mayAsk,
  readReply,
  readRequest,
  type AnyControlMethod,
  type PullReply as PullReplyData,
} from "../../src/wire/control.ts";
import { Kind, Plane, envelope, nodebinRoot } from "../../src/wire/envelope.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { rejection } from "../lib/expect-error.ts";
import { gatedHandler } from "../lib/gated-handler.ts";
import { examplePath, loadFixture, startContainer, withHandlers } from "../lib/fixture-components.ts";

const PullReply = nodebinRoot.lookupType("nodebin.MembershipPullReply");
const { components: examples } = await loadComponents(examplePath(""));
const probe = await loadFixture("components-probe/probe");

/** A membership pull from the container's own control endpoint, in its typed plain form. */
async function pull(c: Container): Promise<PullReplyData> {
  return readReply(PULL, await c.caller.callEndpoint({ method: CONTROL_SCHEMA.methods.get("nodebin.Control/Pull")!, to: "", plane: Plane.CONTROL, request: {} }));
}

t.test("control - the control schema serves nodebin.Control/Pull, SYNC", async (t) => {
  t.same(
    [...CONTROL_SCHEMA.methods.keys()],
    [
      ...["Pull", "Register", "Deregister", "Gossip", "Ping", "Drain", "ImportState", "Release", "Resume", "YieldAgent", "RequestCapacity", "Broadcast", "FetchComponent"].map((m) => `nodebin.Control/${m}`),
      ...["Status", "Set", "Stop", "Roll", "RequestCapacity"].map((m) => `nodebin.Governor/${m}`),
    ],
  );
  t.equal(PULL.schema, CONTROL_SCHEMA.methods.get("nodebin.Control/Pull"));
  t.equal(PULL.schema.mode, 0);
  t.equal(PULL.oneWay, false);
  t.equal(PULL.schema.responseType, PullReply);
});

t.test("control - a pull returns the membership table; merged into a fresh table it reproduces nodes and schemas", async (t) => {
  const c = await startContainer(examples);
  t.teardown(() => c.close());
  await c.addComponent(examples.find((x) => x.name === "greeter")!);
  const reply = await pull(c);
  const decoded = reply;
  t.equal(decoded.nodes.length, examples.length + 1, "every example component, greeter twice");
  t.equal(decoded.schemas.length, examples.length, "each schema sent once");

  const fresh = new MembershipTable();
  fresh.mergePull(reply);
  const byId = (entries: { id: string }[]) => [...entries].sort((a, b) => a.id.localeCompare(b.id));
  t.same(byId(fresh.entries()), byId(c.table.entries()), "the same nodes, field for field");
  t.same([...fresh.routes().keys()].sort(), [...c.table.routes().keys()].sort(), "the same methods");
  for (const [name, route] of c.table.routes()) {
    const copy = fresh.routes().get(name)!;
    t.equal(copy.method.mode, route.method.mode, `${name}: mode`);
    t.same(
      copy.nodes.map((n) => n.id).sort(),
      route.nodes.map((n) => n.id).sort(),
      `${name}: nodes`,
    );
    t.not(copy.method.requestType, route.method.requestType, `${name}: types rebuilt from the schema JSON`);
  }
  const hello = fresh.routes().get("demo.Greeter/Hello")!.method;
  t.ok(encodeMessage(hello.requestType, { name: "Ada" }, "test").length > 0, "the pulled schema can encode requests");
});

t.test("control - a pull reports the current queue length of each node", async (t) => {
  const gated = gatedHandler();
  const c = await startContainer([withHandlers(probe, { "probe.Probe/Echo": gated.handler })]);
  t.teardown(() => c.close());
  const calls = ["a", "b", "c"].map((text) => c.caller.call("probe.Probe/Echo", { text }));
  await gated.entered("a");
  const fresh = new MembershipTable();
  fresh.mergePull(await pull(c));
  t.same(fresh.entries()[0]?.load, { queued: 2, capacity: 50 });
  for (const key of ["a", "b", "c"]) gated.release(key);
  await Promise.all(calls);
});

t.test("control - an application-plane request to the control endpoint is INVALID_ARGUMENT", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  const err = await rejection(c.caller.callEndpoint({ method: probe.schema.methods.get("probe.Probe/Echo")!, to: "", request: { text: "x" } }));
  t.equal(err.code, "INVALID_ARGUMENT");
  t.equal(err.origin, c.id);
});

t.test("control - an unknown control method is UNIMPLEMENTED", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  const err = await rejection(c.caller.callEndpoint({ method: probe.schema.methods.get("probe.Probe/Echo")!, to: "", plane: Plane.CONTROL, request: {} }));
  t.equal(err.code, "UNIMPLEMENTED");
});

t.test("control - a request to the container's own caller endpoint is UNIMPLEMENTED", async (t) => {
  const c = await startContainer([probe]);
  t.teardown(() => c.close());
  const err = await rejection(c.caller.callEndpoint({ method: PULL.schema, to: c.caller.id, plane: Plane.CONTROL, request: {} }));
  t.equal(err.code, "UNIMPLEMENTED");
  t.equal(err.origin, c.caller.id);
});

// The TypeScript interfaces of wire/control.ts mirror control.proto by hand: a value of each,
// through the real codec and back, must come out the same (a field named differently on one
// side would be dropped by the encoder and fail here).
const entryValue = { id: "n1", component: "c", version: "1", host: "h", network: "", endpoints: ["ipc:///x"], methods: [{ name: "demo.Greeter/Hello", mode: 0 }], schema: "s1", load: { queued: 1, capacity: 2 } };
const samples: { method: AnyControlMethod; request: unknown; reply: unknown }[] = [
  {
    method: PULL,
    request: { knownVersion: 3 },
    reply: {
      nodes: [entryValue],
      schemas: [{ id: "s1", json: "{}" }],
      version: 4,
      unchanged: false,
      hosts: [
        { host: "h", network: "a", endpoint: "tcp://10.0.0.1:7400", capacity: { slots: 4, used: 1, components: [{ name: "c", hash: "ab", nodes: 1, queued: 2, capacity: 10, max: 4 }], provider: true }, remotes: [], role: "governor" },
        { host: "g", network: "a", endpoint: "tcp://10.0.0.2:7400", capacity: null, remotes: [{ network: "b", hosts: 2, slots: 8, free: 5, components: ["c"] }], role: "gateway" },
      ],
      host: "h",
      network: "a",
    },
  },
  { method: REGISTER, request: { nodes: [entryValue], schemas: [{ id: "s1", json: "{}" }], leaseMs: 3000, seeds: ["tcp://a:1"], container: "c1", pid: 42 }, reply: { version: 7, host: "h" } },
  { method: DEREGISTER, request: { container: "c1" }, reply: {} },
  { method: GOSSIP, request: { payload: new Uint8Array([1, 2, 3]) }, reply: {} },
  {
    method: PING,
    request: {},
    reply: {
      ...{ pid: 1, container: "c", node: "n", component: "x", version: "1", phase: "serving", handled: 5, failed: 1, rejected: 2, queued: 3, capacity: 50, queueWaitMs: 9, idleMs: 10, uptimeMs: 11, rssBytes: 12, endpoints: ["e"], role: "member", min: 1, max: 4 },
      refused: { undecodable: 3, foreignAnswers: 1 },
      calls: [{ method: "demo.Greeter/Hello", code: "OK", count: 7, seconds: 0.25, buckets: [2, 7] }, { method: "demo.Greeter/Hello", code: "INTERNAL", count: 1, seconds: 0.5, buckets: [0, 0] }],
      callBuckets: [0.01, 0.1],
    },
  },
  { method: DRAIN, request: { exportState: true }, reply: { state: new Uint8Array([9]), handled: 3 } },
  { method: IMPORT_STATE, request: { state: new Uint8Array([8]) }, reply: {} },
  { method: RELEASE, request: {}, reply: {} },
  { method: RESUME, request: { reason: "pid 7 did not take the state: UNAUTHENTICATED" }, reply: {} },
  { method: YIELD_AGENT, request: {}, reply: {} },
  { method: REQUEST_CAPACITY, request: { component: "c", method: "m", fromHost: "h", visited: ["a"], scope: "network", hash: "ab", networks: ["b"] }, reply: {} },
  { method: BROADCAST, request: { method: "demo.Board/Post", value: new Uint8Array([10, 1, 120]), meta: { k: "v" } }, reply: {} },
  { method: FETCH_COMPONENT, request: { name: "greeter", hash: "ab" }, reply: { sealed: new Uint8Array([1]) } },
  { method: GOVERNOR_STATUS, request: {}, reply: { json: "{}" } },
  { method: GOVERNOR_SET, request: { key: "capacity", component: "", value: 3 }, reply: { json: "{}" } },
  { method: GOVERNOR_STOP, request: { keepChildren: true }, reply: {} },
  { method: GOVERNOR_ROLL, request: { components: ["greeter", "counter"] }, reply: { json: "{}" } },
  { method: GOVERNOR_CAPACITY, request: { component: "c", method: "m", fromHost: "h", visited: [], scope: "", hash: "", networks: [] }, reply: {} },
];

const plainBytes = (v: unknown): unknown => (v instanceof Uint8Array ? [...v] : Array.isArray(v) ? v.map(plainBytes) : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plainBytes(x)])) : v);

t.test("control - every control method's typed request and reply survive the real codec field for field", async (t) => {
  t.equal(samples.length, CONTROL_SCHEMA.methods.size, "one sample per method of control.proto");
  for (const { method, request, reply } of samples) {
    const { requestType, responseType, fullName } = method.schema;
    const req = readRequest(method, requestType.decode(encodeMessage(requestType, request, "test")));
    t.same(plainBytes(req), plainBytes(request), `${fullName}: request`);
    const res = readReply(method, responseType.decode(encodeMessage(responseType, reply, "test")));
    t.same(plainBytes(res), plainBytes(reply), `${fullName}: reply`);
  }
});

t.test("control - the authority table: host-only methods are refused to network peers, open ones are not", async (t) => {
  for (const method of CONTROL_SCHEMA.methods.keys()) t.ok(AUTHORITY.has(method), `${method} has a row`);
  for (const m of [GOVERNOR_STATUS, GOVERNOR_SET, GOVERNOR_STOP, GOVERNOR_ROLL, REGISTER, DEREGISTER, PING, DRAIN, IMPORT_STATE, RELEASE, RESUME, YIELD_AGENT]) {
    t.equal(mayAsk(m.schema.fullName, "network"), process.platform === "win32", `${m.schema.fullName} from the network`);
    t.equal(mayAsk(m.schema.fullName, "host"), true, `${m.schema.fullName} from the host`);
  }
  for (const m of [PULL, GOSSIP, REQUEST_CAPACITY, FETCH_COMPONENT]) t.equal(mayAsk(m.schema.fullName, "network"), true, `${m.schema.fullName} from the network`);
  t.equal(mayAsk("nodebin.Control/Nope", "host"), false, "a method with no row is served to nobody outside");
  t.equal(mayAsk("nodebin.Control/Nope", "local"), true, "...but the process itself");
});

t.test("control - the control server answers a network peer's host-only request with PERMISSION_DENIED, and serves the host's", async (t) => {
  const answers: { code: string | undefined; value: Uint8Array | undefined }[] = [];
  const log = { debug() {}, info() {}, warn() {}, error() {} };
  const server = new ControlServer("p1", (_req, value, _from, error) => answers.push({ code: error?.code, value }), log);
  let served = 0;
  server.serve(GOVERNOR_STATUS, () => {
    served++;
    return { json: "{}" };
  });
  const request = envelope({ plane: Plane.CONTROL, kind: Kind.REQUEST, mode: 0, from: "x", method: GOVERNOR_STATUS.schema.fullName });
  server.handle(request, { kind: "network" });
  t.same(answers.map((a) => a.code), process.platform === "win32" ? [undefined] : ["PERMISSION_DENIED"]);
  t.equal(served, process.platform === "win32" ? 1 : 0, "the handler did not run");
  server.handle(request, { kind: "host" });
  t.equal(answers.at(-1)?.code, undefined, "the host is served");
  t.ok(answers.at(-1)?.value, "with a reply");
});
