// Hot deploy and governor recycling with real processes: a component added
// with `node-bin deploy` serves without a restart; the counter's code changed
// while calls run rolls with its count handed over and no call lost; broken
// new code leaves the old node serving; a removed component drains; a
// SIGKILLed governor leaves its children serving and a new governor adopts
// them instead of starting duplicates.
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { counterSource, example, hostClient, startGovernor, testHost, type GovernorProcess } from "../lib/governor.ts";
import { runLoad } from "../lib/load.ts";
import { EXAMPLES, runCli } from "../lib/processes.ts";


const deploy = (src: string, components: string, env: Record<string, string>, name?: string) => runCli(["deploy", src, "--components", components, ...(name ? ["--name", name] : [])], env);

const serving = (gov: GovernorProcess, name: string) =>
  gov.until((s) => {
    const c = s.components.find((x) => x.name === name);
    return c && !c.rolling && c.children.length === 1 && c.children[0]!.phase === "ready" && c.children[0]!;
  }, 30_000, `${name} serving`);

t.test("deploy - a component added with `node-bin deploy` serves with no governor restart; a removed one drains", async (t) => {
  const host = testHost(t, [example("counter")]);
  const gov = await startGovernor(t, host);
  await serving(gov, "counter");
  const before = Date.now();
  const d = await deploy(join(EXAMPLES, "greeter"), host.components, host.env);
  t.equal(d.code, 0, d.stderr);
  t.match(d.stdout, /deployed greeter \(\d+ files, sha256 [0-9a-f]{12}\)/);
  const greeter = await serving(gov, "greeter");
  t.comment(`deploy to serving: ${Date.now() - before} ms`);
  const hello = await runCli(["client", "call", "Greeter.Hello", '{"name":"New"}', "--seed", host.seed, "--json"], host.env);
  t.equal(hello.code, 0, hello.stderr);
  t.same(JSON.parse(hello.stdout), { message: "Hello, New!" });

  rmSync(join(host.components, "greeter"), { recursive: true, force: true });
  await gov.until((s) => !s.components.some((c) => c.name === "greeter") && s, 30_000, "greeter gone");
  t.throws(() => process.kill(greeter.pid, 0), "its process exited");
  const gone = await runCli(["client", "call", "Greeter.Hello", "{}", "--seed", host.seed], host.env);
  t.equal(gone.code, 5, "its methods are NOT_FOUND");
});

t.test("deploy - the counter's code changes while calls run: it rolls, keeps its count, loses no call", async (t) => {
  const host = testHost(t, [example("counter")]);
  // One counter node at a time (its count is per node): the config file says so.
  writeFileSync(join(host.root, "governor.json"), JSON.stringify({ components: { counter: { max: 1 } } }));
  const gov = await startGovernor(t, host);
  const old = await serving(gov, "counter");
  const client = await hostClient(t, host);

  const load = runLoad(t, 4, () => client.call("demo.Counter/Add", { key: "k", by: 1 }, { timeoutMs: 20_000 }));
  await load.reach(100);

  const src = counterSource(t, (code) => code.replace('version: "1.0.0"', 'version: "1.1.0"'));
  const d = await deploy(src, host.components, host.env);
  t.equal(d.code, 0, d.stderr);
  const rolledAt = Date.now();
  const next = await gov.until((s) => {
    const c = s.components.find((x) => x.name === "counter")!;
    return !c.rolling && c.children.length === 1 && c.children[0]!.pid !== old.pid && c.children[0]!.phase === "ready" && c.children[0]!;
  }, 60_000, "counter rolled to the new code");
  t.comment(`roll took ${Date.now() - rolledAt} ms`);
  await load.reach(load.ok + 100);
  await load.stop();
  const ok = load.ok;

  t.same(load.failures, [], `no call failed during the deploy (${ok} calls)`);
  t.comment(`calls lost during the hot deploy: ${load.failures.length} of ${ok + load.failures.length}`);
  const count = (await client.call("demo.Counter/Get", { key: "k" })) as { count: number };
  t.equal(Number(count.count), ok, "the count survived the roll: every successful Add is counted exactly once");
  t.throws(() => process.kill(old.pid, 0), "the old process exited");
  const nodes = await runCli(["client", "nodes", "--seed", host.seed, "--json"], host.env);
  t.same(JSON.parse(nodes.stdout).map((n: { version: string }) => n.version), ["1.1.0"], "the new code serves");
  t.not(next.code, old.code);
});

t.test("deploy - new code that fails to start leaves the old node serving and reports the error", async (t) => {
  const host = testHost(t, [example("counter")]);
  const gov = await startGovernor(t, host);
  const old = await serving(gov, "counter");
  const bad = counterSource(t, (code) => `${code}\nexport function init() { throw new Error("config key missing: COUNTER_URL"); }\n`);
  const d = await deploy(bad, host.components, host.env);
  t.equal(d.code, 0, d.stderr);
  const c = await gov.until((s) => s.components.find((x) => x.name === "counter" && x.deployError), 60_000, "deploy error reported");
  t.match(c.deployError, /new code failed to start; old nodes keep serving: .*COUNTER_URL/);
  t.same(c.children.map((k) => k.pid), [old.pid], "the old node still serves");
  const add = await runCli(["client", "call", "demo.Counter/Add", '{"key":"a"}', "--seed", host.seed, "--json"], host.env);
  t.equal(add.code, 0, add.stderr);

  // Fixed code rolls.
  const good = counterSource(t, (code) => code.replace('version: "1.0.0"', 'version: "1.0.1"'));
  t.equal((await deploy(good, host.components, host.env)).code, 0);
  await gov.until((s) => {
    const x = s.components.find((y) => y.name === "counter")!;
    return !x.deployError && !x.rolling && x.children.length === 1 && x.children[0]!.pid !== old.pid && x.children[0]!.phase === "ready";
  }, 60_000, "fixed code rolled");
  const get = await runCli(["client", "call", "demo.Counter/Get", '{"key":"a"}', "--seed", host.seed, "--json"], host.env);
  t.same(JSON.parse(get.stdout), { key: "a", count: 1 }, "with the count handed over");
});

t.test("recycle - a SIGKILLed governor leaves its children serving; a new governor adopts them; stop --keep-children recycles", async (t) => {
  const host = testHost(t, [example("greeter"), example("counter")]);
  const gov = await startGovernor(t, host);
  const before = await gov.until((s) => s.components.every((c) => c.children[0]?.phase === "ready") && s.components.length === 2 && s, 30_000, "both serving");
  const pids = before.components.map((c) => c.children[0]!.pid).sort();
  const client = await hostClient(t, host);
  await client.call("demo.Counter/Add", { key: "r", by: 5 });

  gov.child.kill("SIGKILL");
  await gov.stop();
  for (const pid of pids) t.doesNotThrow(() => process.kill(pid, 0), `child ${pid} outlived its governor`);
  const hello = (await client.call("Greeter.Hello", { name: "Orphan" })) as { message: string };
  t.equal(hello.message, "Hello, Orphan!", "calls to the children go on");
  // A child stands in as the host agent (the others register with it within a renewal period): new clients still find the nodes.
  const standIn = Date.now();
  for (;;) {
    const r = await runCli(["client", "nodes", "--seed", host.seed, "--json", "--timeout", "5000"], host.env);
    if (r.code === 0 && JSON.parse(r.stdout).length === 2) break;
    if (Date.now() - standIn > 15_000) t.fail(`no stand-in agent with both nodes within 15 s: ${r.stdout} ${r.stderr}`);
    if (Date.now() - standIn > 15_000) break;
  }
  t.comment(`a child stood in as host agent with both nodes within ${Date.now() - standIn} ms`);
  const viaSeed = await runCli(["client", "call", "Greeter.Hello", '{"name":"S"}', "--seed", host.seed, "--json", "--timeout", "15000"], host.env);
  t.equal(viaSeed.code, 0, viaSeed.stderr);

  const gov2 = await startGovernor(t, host);
  const adopted = await gov2.until((s) => s.components.length === 2 && s.components.every((c) => c.children.length === 1 && c.children[0]!.phase === "ready") && s, 30_000, "adopted");
  t.same(adopted.components.map((c) => c.children[0]!.pid).sort(), pids, "the same processes: adopted, no duplicates");
  t.ok(adopted.components.every((c) => c.children[0]!.adopted), "marked adopted");
  const count = (await client.call("demo.Counter/Get", { key: "r" })) as { count: number };
  t.equal(Number(count.count), 5, "the counter kept its state (same process)");

  const keep = await runCli(["governor", "stop", "--keep-children", "--discovery-port", String(host.port)], host.env);
  t.equal(keep.code, 0, keep.stderr);
  await gov2.stop();
  for (const pid of pids) t.doesNotThrow(() => process.kill(pid, 0), `child ${pid} kept by stop --keep-children`);
  const gov3 = await startGovernor(t, host);
  const again = await gov3.until((s) => s.components.length === 2 && s.components.every((c) => c.children.length === 1 && c.children[0]!.phase === "ready") && s, 30_000, "adopted again");
  t.same(again.components.map((c) => c.children[0]!.pid).sort(), pids, "adopted again");
  const viaGov = await runCli(["client", "call", "Greeter.Hello", '{"name":"G"}', "--seed", host.seed, "--json"], host.env);
  t.equal(viaGov.code, 0, viaGov.stderr);
  const stop = await runCli(["governor", "stop", "--discovery-port", String(host.port)], host.env);
  t.equal(stop.code, 0, stop.stderr);
  for (const pid of pids) t.throws(() => process.kill(pid, 0), `child ${pid} stopped with a full stop`);
});
