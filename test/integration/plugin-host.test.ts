// The plugin host (issue 12, item 1), through a real governor: plugins from a plugins directory
// (a component-like directory with a .proto service, replacing the zombie strategy) and a loader
// named by --loader; `governor status` lists them in start-up order (security provider first,
// loader second); the plugin's service answers `node-bin governor call` on the private socket and
// refuses a raw tcp peer; the children load their component through the --loader plugin; a
// security plugin that fails stops start-up with one error naming the step and the plugin.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import * as zmq from "zeromq";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { Mode } from "../../src/wire/schema.ts";
import { example, startGovernor, testHost } from "../lib/governor.ts";
import { ROOT, runCli } from "../lib/processes.ts";

const CASE = { timeout: 120_000 };

const TALKING_ZOMBIES = `
export const manifest = { kind: "zombie", name: "talking-zombies" };
export default {
  kind: "zombie",
  name: "talking-zombies",
  create(options) {
    return { name: "talking-zombies", said: 0, greeting: options.greeting ?? "hi", onZombie(child, actions) { actions.kill(); actions.respawn(); } };
  },
};
export const handlers = {
  Say(request, ctx) {
    ctx.plugin.said++;
    return { text: ctx.plugin.greeting + ", " + request.text + " (" + ctx.plugin.said + ")" };
  },
};
`;

const ECHO_PROTO = `syntax = "proto3";
package plugin;
service Talk { rpc Say (Words) returns (Words); }
message Words { string text = 1; }
`;

/** A loader that loads as the built-in does, and leaves a mark of each directory it loaded (LOADER_MARK). */
const loaderSource = (loaderModule: string) => `
import { appendFileSync } from "node:fs";
import { loadComponents } from ${JSON.stringify(loaderModule)};
export default {
  kind: "loader",
  name: "marking-loader",
  create() {
    return { name: "marking-loader", async load(dir) { appendFileSync(process.env.LOADER_MARK, dir + "\\n"); return loadComponents(dir); } };
  },
};
`;

t.test("plugin host - status lists the plugins in start-up order; a plugin's service answers on the governor's socket only; children load through --loader", CASE, async (t) => {
  const host = testHost(t, [example("greeter")]);
  const plugins = join(host.root, "plugins");
  mkdirSync(join(plugins, "talking-zombies"), { recursive: true });
  writeFileSync(join(plugins, "talking-zombies", "index.mjs"), TALKING_ZOMBIES);
  writeFileSync(join(plugins, "talking-zombies", "talk.proto"), ECHO_PROTO);
  const loader = join(host.root, "marking-loader.mjs");
  writeFileSync(loader, loaderSource(join(ROOT, "src", "component", "loader.ts")));
  writeFileSync(join(host.root, "governor.json"), JSON.stringify({ plugins: { "talking-zombies": { greeting: "hello" } } }));
  const mark = join(host.root, "loader-mark");
  host.env.LOADER_MARK = mark;

  const gov = await startGovernor(t, host, ["--plugins", plugins, "--loader", loader]);
  await gov.until((s) => s.components[0]?.children.find((k) => k.phase === "ready"), 30_000, "greeter serving");
  const status = JSON.parse((await runCli(["governor", "status", "--json", "--discovery-port", String(host.port)], host.env)).stdout) as { plugins: { kind: string; name: string; source: string; services?: string[] }[] };
  t.same(
    status.plugins.map((p) => [p.kind, p.name, p.source]),
    [
      ["security", "curve", "built-in"],
      ["loader", "marking-loader", loader],
      ["discovery", "gossip", "built-in"],
      ["logging", "default-logging", "built-in"],
      ["lifecycle", "default-lifecycle", "built-in"],
      ["zombie", "talking-zombies", join(plugins, "talking-zombies")],
    ],
    "the security provider first, the loader second, then the rest, each with its source",
  );
  t.same(status.plugins.find((p) => p.name === "talking-zombies")?.services, ["plugin.Talk"], "the plugin's service is listed");
  const human = await runCli(["governor", "status", "--discovery-port", String(host.port)], host.env);
  t.match(human.stdout, /plugins: security curve \(built-in\), loader marking-loader \(/, "the human status lists them too, in order");

  // Its service, at the governor's private socket, with its config options.
  const said = await runCli(["governor", "call", "plugin.Talk/Say", '{"text":"Ada"}', "--discovery-port", String(host.port)], host.env);
  t.equal(said.code, 0, said.stderr);
  t.same(JSON.parse(said.stdout), { text: "hello, Ada (1)" }, "answered by the plugin instance the governor created");
  const unknown = await runCli(["governor", "call", "plugin.Talk/Shout", "{}", "--discovery-port", String(host.port)], host.env);
  t.equal(unknown.code, 5, "an unknown method is NOT_FOUND");
  t.match(unknown.stderr, /plugin\.Talk\/Say/, "naming the methods there are");

  // The same request from a raw tcp socket at the discovery port: host-only, refused.
  const d = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
  t.teardown(() => d.close());
  d.connect(`tcp://${host.seed}`);
  await d.send(encodeEnvelope(envelope({ id: 7, plane: Plane.CONTROL, mode: Mode.SYNC, kind: Kind.REQUEST, from: "outsider", method: "plugin.Talk/Say", value: new Uint8Array([0x0a, 1, 0x78]), deadlineMs: 5000 })));
  const [frame] = await d.receive();
  const answer = decodeEnvelope(frame!);
  if (answer instanceof NodeBinError) throw answer;
  t.equal(answer.error ? NodeBinError.fromWire(answer.error).code : "OK", "PERMISSION_DENIED", "a plugin's service is not served to tcp peers");

  // The child loaded its component through the --loader plugin, and serves it.
  t.ok(existsSync(mark) && readFileSync(mark, "utf8").includes(host.components), "the child's loader was the --loader plugin");
  const call = await runCli(["client", "--seed", host.seed, "call", "demo.Greeter/Hello", '{"name":"Ada"}'], host.env);
  t.equal(call.code, 0, call.stderr);
});

t.test("plugin host - a security plugin that fails stops start-up with one error naming the step and the plugin", CASE, async (t) => {
  const host = testHost(t, [example("greeter")]);
  const plugins = join(host.root, "plugins");
  mkdirSync(plugins);
  writeFileSync(join(plugins, "vault.mjs"), `export default { kind: "security", name: "vault", create() { throw new Error("the vault is sealed"); } };`);
  const r = await runCli(["governor", "--components", host.components, "--listen", "127.0.0.1", "--discovery-port", String(host.port), "--plugins", plugins], host.env);
  t.equal(r.code, 3, "INVALID_ARGUMENT");
  t.match(r.stderr, /start-up step 1 of \d \(security\): plugin "vault" failed to start: the vault is sealed/);
  t.match(r.stderr, /vault\.mjs/, "naming its file");
  t.notOk(existsSync(join(host.env.NODEBIN_RUNTIME_DIR!, `governor-${host.port}.sock`)), "nothing was bound");
});
