import { createHash } from "node:crypto";
import t from "tap";
import { loadComponent } from "../../src/component/loader.ts";
import { MembershipTable, type NodeEntry } from "../../src/membership/table.ts";
import { PULL, readReply } from "../../src/wire/control.ts";
import { nodebinRoot } from "../../src/wire/envelope.ts";
import { Mode, Schema } from "../../src/wire/schema.ts";
import { thrown } from "../lib/expect-error.ts";
import { examplePath } from "../lib/fixture-components.ts";

const greeter = await loadComponent(examplePath("greeter"));
const counter = await loadComponent(examplePath("counter"));
const PullReply = nodebinRoot.lookupType("nodebin.MembershipPullReply");

function entry(id: string, schema: Schema, more: Partial<NodeEntry> = {}): NodeEntry {
  return {
    id,
    component: id.split("-")[0]!,
    version: "1.0.0",
    host: "h1",
    network: "",
    endpoints: [],
    methods: [...schema.methods.values()].map((m) => ({ name: m.fullName, mode: m.mode })),
    schema: schema.id,
    load: { queued: 0, capacity: 100 },
    ...more,
  };
}

/** What a pull of `table` decodes to at the other end. */
/** A table's pull reply as a caller gets it: encoded, decoded, in its typed plain form. */
const pulled = (table: MembershipTable) => readReply(PULL, PullReply.decode(table.encodePull()));

t.test("table - upsert with an unknown schema is FAILED_PRECONDITION", async (t) => {
  const table = new MembershipTable();
  t.equal(thrown(() => table.upsert(entry("greeter-1", greeter.schema))).code, "FAILED_PRECONDITION");
  t.same(table.entries(), []);
  table.upsert(entry("greeter-1", greeter.schema), greeter.schema);
  t.doesNotThrow(() => table.upsert(entry("greeter-2", greeter.schema)), "a schema, once known, serves later nodes");
  t.equal(table.entries().length, 2);
});

t.test("table - get, entries, replace and remove", async (t) => {
  const table = new MembershipTable();
  table.upsert(entry("greeter-1", greeter.schema), greeter.schema);
  table.upsert(entry("greeter-1", greeter.schema, { host: "h2" }));
  t.equal(table.entries().length, 1, "same id: replaced");
  t.equal(table.get("greeter-1")?.host, "h2");
  t.equal(table.remove("greeter-1"), true);
  t.equal(table.remove("greeter-1"), false);
  t.equal(table.get("greeter-1"), undefined);
});

t.test("table - routes list the nodes of each method and follow changes", async (t) => {
  const table = new MembershipTable();
  table.upsert(entry("greeter-1", greeter.schema), greeter.schema);
  table.upsert(entry("greeter-2", greeter.schema));
  table.upsert(entry("counter-1", counter.schema), counter.schema);
  const routes = table.routes();
  t.same([...routes.keys()].sort(), ["demo.Counter/Add", "demo.Counter/Get", "demo.Greeter/Guests", "demo.Greeter/Hello", "demo.Greeter/Sign"]);
  t.same(
    routes.get("demo.Greeter/Hello")?.nodes.map((n) => n.id),
    ["greeter-1", "greeter-2"],
  );
  t.equal(routes.get("demo.Greeter/Sign")?.method.mode, Mode.ASYNC);
  t.equal(table.routes(), routes, "cached while nothing changes");
  table.remove("greeter-1");
  t.same(
    table.routes().get("demo.Greeter/Hello")?.nodes.map((n) => n.id),
    ["greeter-2"],
    "rebuilt after a change",
  );
  table.remove("greeter-2");
  t.notOk(table.routes().has("demo.Greeter/Hello"), "a method nobody serves has no route");
});

t.test("table - a node's method its schema lacks gets no route", async (t) => {
  const table = new MembershipTable();
  table.upsert(entry("greeter-1", greeter.schema, { methods: [{ name: "demo.Greeter/Hello", mode: Mode.SYNC }, { name: "demo.Greeter/Ghost", mode: Mode.SYNC }] }), greeter.schema);
  t.same([...table.routes().keys()], ["demo.Greeter/Hello"], "only the methods the node announces, and only real ones");
});

t.test("table - a pull carries every node and each schema once", async (t) => {
  const table = new MembershipTable();
  table.upsert(entry("greeter-1", greeter.schema), greeter.schema);
  table.upsert(entry("greeter-2", greeter.schema));
  table.upsert(entry("counter-1", counter.schema), counter.schema);
  const reply = pulled(table);
  t.same(reply.nodes.map((n) => n.id).sort(), ["counter-1", "greeter-1", "greeter-2"]);
  t.same(reply.schemas.map((s) => s.id).sort(), [counter.schema.id, greeter.schema.id].sort());
  t.equal(reply.schemas.find((s) => s.id === greeter.schema.id)?.json, greeter.schema.json);
});

t.test("table - merging a pull into a fresh table reproduces nodes, routes and schemas", async (t) => {
  const source = new MembershipTable();
  source.upsert(entry("greeter-1", greeter.schema, { endpoints: ["tcp://h1:1"], load: { queued: 3, capacity: 9 }, network: "lan" }), greeter.schema);
  source.upsert(entry("counter-1", counter.schema, { host: "h2" }), counter.schema);
  const copy = new MembershipTable();
  copy.mergePull(pulled(source));
  t.same(copy.get("greeter-1"), source.get("greeter-1"));
  t.same(copy.get("counter-1"), source.get("counter-1"));
  t.same([...copy.routes().keys()].sort(), [...source.routes().keys()].sort());
  const sign = copy.routes().get("demo.Greeter/Sign")!.method;
  t.equal(sign.mode, Mode.ASYNC, "modes survive the schema's JSON form");
  t.equal(sign.requestType.fullName, ".demo.Signature");
});

t.test("table - merging fills in missing endpoints with the answering process's", async (t) => {
  const source = new MembershipTable();
  source.upsert(entry("greeter-1", greeter.schema), greeter.schema);
  source.upsert(entry("counter-1", counter.schema, { endpoints: ["tcp://elsewhere:2"] }), counter.schema);
  const copy = new MembershipTable();
  copy.mergePull(pulled(source), "tcp://seed:7400");
  t.same(copy.get("greeter-1")?.endpoints, ["tcp://seed:7400"], "in-process nodes are reached through the answering process");
  t.same(copy.get("counter-1")?.endpoints, ["tcp://elsewhere:2"], "advertised endpoints are kept");
});

t.test("table - merging skips nodes whose schema did not come along", async (t) => {
  const reply = readReply(PULL, PullReply.fromObject({ nodes: [entry("greeter-1", greeter.schema)], schemas: [] }));
  const table = new MembershipTable();
  table.mergePull(reply);
  t.same(table.entries(), []);
});

t.test("table - merging a schema that does not parse is INVALID_ARGUMENT", async (t) => {
  const json = "{not json";
  const id = createHash("sha256").update(json).digest("hex").slice(0, 16);
  const reply = readReply(PULL, PullReply.fromObject({ nodes: [{ ...entry("greeter-1", greeter.schema), schema: id }], schemas: [{ id, json }] }));
  t.equal(thrown(() => new MembershipTable().mergePull(reply)).code, "INVALID_ARGUMENT");
});

t.test("table - schemas are content-addressed: an id that is not the hash of its content is refused, and can never shadow the real one", async (t) => {
  const table = new MembershipTable();
  // An attacker's schema shipped under the greeter's id, before the greeter's own arrives.
  const forged = { id: greeter.schema.id, json: counter.schema.json };
  t.equal(table.setSource("lease:evil", [entry("greeter-evil", greeter.schema)], [forged]), 0, "its entry is skipped");
  t.equal(table.refusedSchemas, 1, "and counted");
  t.equal(table.schema(greeter.schema.id), undefined, "the forged content is not kept under that id");
  const err = thrown(() => table.setSource("lease:evil", [entry("greeter-evil", greeter.schema)], [forged], true));
  t.same([err.code, err.details.field], ["INVALID_ARGUMENT", "schemas.id"], "strict (Register): answered INVALID_ARGUMENT");
  t.equal(table.setSource("lease:real", [entry("greeter-1", greeter.schema)], [{ id: greeter.schema.id, json: greeter.schema.json }]), 1);
  t.equal(table.schema(greeter.schema.id)!.json, greeter.schema.json, "the real schema is kept under its id");
  const huge = { id: "x", json: " ".repeat(1024 * 1024 + 1) };
  t.match(thrown(() => table.setSource("lease:big", [{ ...entry("greeter-2", greeter.schema), schema: "x" }], [huge], true)).message, /more than 1048576/, "past the size bound before anything is parsed or hashed");
});

t.test("table - a schema is kept only while a node uses it: unused ones are never stored, and the last node takes its schema with it", async (t) => {
  const table = new MembershipTable();
  const shipped = (s: Schema) => ({ id: s.id, json: s.json });
  table.setSource("lease:a", [entry("greeter-1", greeter.schema)], [shipped(greeter.schema), shipped(counter.schema)]);
  t.equal(table.schemaCount, 1, "the counter's schema, used by no entry of the source, was not stored");
  table.setSource("lease:b", [entry("greeter-2", greeter.schema)], [shipped(greeter.schema)]);
  table.setSource("lease:a", []);
  t.equal(table.schemaCount, 1, "still used by greeter-2");
  table.setSource("lease:b", []);
  t.equal(table.schemaCount, 0, "gone with its last node");
  // 100 leases with distinct 100 KB schemas, then the leases end: nothing stays.
  for (let i = 0; i < 100; i++) {
    const json = JSON.stringify({ nested: { [`pad${i}`]: { fields: {} } }, pad: "x".repeat(100_000) });
    const s = Schema.fromJSON(json);
    table.setSource(`lease:${i}`, [{ ...entry(`n-${i}`, greeter.schema), methods: [], schema: s.id }], [{ id: s.id, json }]);
  }
  t.equal(table.schemaCount, 100);
  for (let i = 0; i < 100; i++) table.setSource(`lease:${i}`, []);
  t.equal(table.schemaCount, 0, "pruned with their nodes");
});

t.test("table - a node id belongs to the source that claimed it first: a later lease or host record naming it cannot take its route", async (t) => {
  const table = new MembershipTable();
  table.setSource("lease:real", [entry("greeter-1", greeter.schema, { endpoints: ["ipc:///real"] })], [{ id: greeter.schema.id, json: greeter.schema.json }]);
  table.setSource("host:evil", [entry("greeter-1", greeter.schema, { endpoints: ["tcp://6.6.6.6:1"] })]);
  t.same(table.get("greeter-1")!.endpoints, ["ipc:///real"], "the real entry stays");
  table.setSource("lease:real", []);
  t.same(table.get("greeter-1")!.endpoints, ["tcp://6.6.6.6:1"], "once the real one left, the other claim is what remains");
});
