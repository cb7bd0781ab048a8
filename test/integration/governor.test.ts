// The governor with real processes: it starts the components of its
// directory, grows a loaded component up to its max (and further once the max
// is raised live), shrinks it back when idle, replaces a hung (SIGSTOPped) or
// killed child, and reports a component that cannot start instead of
// restarting it forever. Figures (time to the first extra node, zombie
// detection time) are printed as test comments.
import { cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { NodeBinError } from "../../src/wire/errors.ts";
import { example, hostClient, startGovernor, testHost } from "../lib/governor.ts";
import { fixturePath } from "../lib/fixture-components.ts";
import { runLoad } from "../lib/load.ts";
import { EXAMPLES, runCli } from "../lib/processes.ts";

const slow = { from: fixturePath("governor/slow") };

t.test("governor - serves the examples, status and set through the CLI, bad settings refused", async (t) => {
  const host = testHost(t, [example("greeter"), example("counter"), example("welcome")]);
  const gov = await startGovernor(t, host);
  t.match(gov.readyLine, /governor ready: gov-test at tcp:\/\/127\.0\.0\.1:\d+ ipc:.*capacity \d+, 3 component\(s\)/);
  const s = await gov.until((s) => s.components.every((c) => c.running === 1 && c.children[0]?.phase === "ready") && s, 20_000, "three components serving");
  t.same(s.components.map((c) => c.name), ["counter", "greeter", "welcome"]);

  const visit = await runCli(["client", "call", "demo.Welcome/Visit", '{"name":"Ada"}', "--seed", host.seed, "--json"], host.env);
  t.equal(visit.code, 0, visit.stderr);
  t.match(JSON.parse(visit.stdout), { greeting: "Hello, Ada!", visitor: "1" }, "a nested call across three governed processes");

  // Read-only, and refused, commands side by side (each a process of its own; a longer bound before one is
  // killed, as side by side each takes longer on a loaded machine); the one set that changes something alone.
  const [pretty, json] = await Promise.all([
    runCli(["governor", "status", "--discovery-port", String(host.port)], host.env, { timeoutMs: 60_000 }),
    runCli(["governor", "status", "--json", "--discovery-port", String(host.port)], host.env, { timeoutMs: 60_000 }),
  ]);
  t.equal(pretty.code, 0, pretty.stderr);
  t.match(pretty.stdout, /greeter: 1 running \(min 1, max 16, want 1\)/);
  t.match(pretty.stdout, /PID\s+NODE\s+PHASE\s+UPTIME\s+HANDLED/);
  t.equal(json.code, 0);
  t.equal(JSON.parse(json.stdout).components.length, 3);

  const setOk = await runCli(["governor", "set", "component", "greeter", "max", "3", "--discovery-port", String(host.port), "--json"], host.env);
  t.equal(setOk.code, 0, setOk.stderr);
  t.equal(JSON.parse(setOk.stdout).components.find((c: { name: string }) => c.name === "greeter").max, 3, "max changed live");
  const [unknownKey, unknownComponent, notANumber, zero, second] = await Promise.all([
    runCli(["governor", "set", "speed", "3", "--discovery-port", String(host.port)], host.env, { timeoutMs: 60_000 }),
    runCli(["governor", "set", "component", "gretter", "max", "3", "--discovery-port", String(host.port)], host.env, { timeoutMs: 60_000 }),
    runCli(["governor", "set", "capacity", "lots", "--discovery-port", String(host.port)], host.env, { timeoutMs: 60_000 }),
    runCli(["governor", "set", "capacity", "0", "--discovery-port", String(host.port)], host.env, { timeoutMs: 60_000 }),
    runCli(["governor", "--components", host.components, "--listen", "127.0.0.1", "--discovery-port", String(host.port)], host.env, { timeoutMs: 60_000 }),
  ]);
  t.equal(unknownKey.code, 64, "an unknown setting is a usage error");
  t.equal(unknownComponent.code, 5, "an unknown component is NOT_FOUND");
  t.match(unknownComponent.stderr, /no component "gretter"/);
  t.equal(notANumber.code, 64);
  t.equal(zero.code, 3, "capacity 0 is INVALID_ARGUMENT");
  t.equal(second.code, 6, "a second governor for the same port is ALREADY_EXISTS");

  const stop = await runCli(["governor", "stop", "--discovery-port", String(host.port)], host.env);
  t.equal(stop.code, 0, stop.stderr);
  t.equal(await gov.stop(), 0, "the governor exited 0");
  for (const pid of host.pids) t.throws(() => process.kill(pid, 0), `child ${pid} is gone after a full stop`);
  const none = await runCli(["governor", "status", "--discovery-port", String(host.port)], host.env);
  t.equal(none.code, 14, "status with no governor is UNAVAILABLE");
});

t.test("governor - load grows a component to its max, a raised max lets it grow further, idle nodes shrink back to min", async (t) => {
  const host = testHost(t, [slow]);
  host.env.NODEBIN_LOG = "debug"; // why it grows or does not (in the failure message, should it not)
  const gov = await startGovernor(t, host, ["--queue-wait-ms", "100", "--sustain-ms", "500", "--idle-ms", "1500"]);
  await gov.until((s) => s.components[0]?.children[0]?.phase === "ready", 20_000, "slow serving");
  const client = await hostClient(t, host);

  // 24 callers, each call 40 ms of work: far more than one node's rate.
  const loadStarted = Date.now();
  const load = runLoad(t, 24, () => client.call("gov.Slow/Work", { ms: 40 }, { timeoutMs: 20_000 }));
  const grewIn = await gov.until((s) => s.components[0]!.children.filter((c) => c.phase === "ready").length >= 2 && Date.now() - loadStarted, 30_000, "a second node under load");
  t.comment(`load step to the first extra node serving: ${grewIn} ms (sustain 500 ms, ping 1000 ms)`);
  // At max 2, it stays at 2 while loaded.
  await new Promise((r) => setTimeout(r, 3000));
  t.equal((await gov.component("slow"))!.running, 2, "no more than its max (2)");

  const set = await runCli(["governor", "set", "component", "slow", "max", "3", "--discovery-port", String(host.port)], host.env);
  t.equal(set.code, 0, set.stderr);
  await gov.until((s) => s.components[0]!.children.filter((c) => c.phase === "ready").length === 3, 30_000, "a third node after max 3");
  t.pass("grew to 3 after the max was raised live");

  await load.stop();
  t.same(load.failures, [], `no call failed while the component grew (${load.ok} calls)`);
  const shrunk = Date.now();
  await gov.until((s) => s.components[0]!.running === 1 && s.components[0]!.children.length === 1, 30_000, "back to min 1 when idle");
  t.comment(`idle to shrunk to min: ${Date.now() - shrunk} ms (idle period 1500 ms)`);
});

t.test("governor - a SIGSTOPped child is a zombie: killed and replaced within 5 s", async (t) => {
  const host = testHost(t, [example("greeter")]);
  const gov = await startGovernor(t, host);
  const first = await gov.until((s) => s.components[0]?.children[0]?.phase === "ready" && s.components[0]!.children[0]!, 20_000, "greeter serving");
  const stoppedAt = Date.now();
  process.kill(first.pid, "SIGSTOP");
  t.teardown(() => {
    try {
      process.kill(first.pid, "SIGCONT");
    } catch {
      // killed already
    }
  });
  await gov.until((s) => !s.components[0]!.children.some((c) => c.pid === first.pid), 10_000, "the zombie gone");
  const detected = Date.now() - stoppedAt;
  t.ok(detected <= 5000, `zombie detected and killed in ${detected} ms (bound 5000 ms)`);
  t.comment(`zombie detection: ${detected} ms`);
  const next = await gov.until((s) => s.components[0]!.children.find((c) => c.phase === "ready" && c.pid !== first.pid), 20_000, "a replacement serving");
  t.not(next.pid, first.pid);
  t.ok((await gov.component("greeter"))!.restarts >= 1, "counted as a restart");
  const hello = await runCli(["client", "call", "Greeter.Hello", '{"name":"Z"}', "--seed", host.seed], host.env);
  t.equal(hello.code, 0, hello.stderr);
});

t.test("governor - a child killed mid-call: the caller gets UNAVAILABLE at once, the child is respawned", async (t) => {
  const host = testHost(t, [slow]);
  const gov = await startGovernor(t, host);
  const first = await gov.until((s) => s.components[0]?.children[0]?.phase === "ready" && s.components[0]!.children[0]!, 20_000, "slow serving");
  const client = await hostClient(t, host);
  const call = client.call("gov.Slow/Work", { ms: 15_000 }, { timeoutMs: 25_000 });
  const failed = call.then(
    () => undefined,
    (err: unknown) => NodeBinError.from(err),
  );
  // Its pong says a handler runs: the call is in the node's hands.
  await gov.until((s) => s.components[0]!.children[0]!.idleMs === 0, 10_000, "the call being handled");
  const killedAt = Date.now();
  process.kill(first.pid, "SIGKILL");
  const err = await failed;
  const took = Date.now() - killedAt;
  t.equal(err?.code, "UNAVAILABLE", `the caller got ${err}`);
  t.ok(took < 5000, `within ${took} ms of the kill, not at the 25 s deadline`);
  const next = await gov.until((s) => s.components[0]!.children.find((c) => c.phase === "ready" && c.pid !== first.pid), 20_000, "respawned");
  t.not(next.pid, first.pid, "a new process serves");
  const reply = (await client.call("gov.Slow/Work", { ms: 1 }, { timeoutMs: 10_000 })) as { pid: number };
  t.equal(reply.pid, next.pid, "and answers");
});

t.test("governor - a component that fails at start is reported with its error, not restarted forever", async (t) => {
  const host = testHost(t, [example("greeter"), { from: fixturePath("governor/crash-at-start"), name: "crasher" }]);
  const gov = await startGovernor(t, host);
  const crasher = await gov.until((s) => s.components.find((c) => c.name === "crasher" && c.failed), 60_000, "crasher failed");
  t.match(crasher.failed, /failed to start 5 times in a row/);
  t.match(crasher.failed, /db\.invalid is unreachable/, "the child's own error is in the status");
  t.equal(crasher.running, 0);
  const restarts = crasher.restarts;
  await new Promise((r) => setTimeout(r, 2000));
  t.equal((await gov.component("crasher"))!.restarts, restarts, "no restarts once failed");
  t.equal((await gov.component("greeter"))!.running, 1, "the other component serves on");
  const pretty = await runCli(["governor", "status", "--discovery-port", String(host.port)], host.env);
  t.match(pretty.stdout, /FAILED: .*db\.invalid/);
});

t.test("governor - config file re-read live, a user plugin from plugins/, capacity lowered drains the surplus, a deploy lock pauses spawning", async (t) => {
  const host = testHost(t, [example("greeter")]);
  const config = join(host.root, "governor.json");
  writeFileSync(config, JSON.stringify({ components: { greeter: { min: 3 } }, plugins: { "quiet-zombies": { note: "from the config file" } } }));
  mkdirSync(join(host.root, "plugins"));
  writeFileSync(
    join(host.root, "plugins", "quiet-zombies.mjs"),
    `export default { kind: "zombie", name: "quiet-zombies", create(options) {
       return { name: "quiet-zombies", onZombie(child, actions) { actions.log.warn("zombie " + child.pid + " " + options.note); actions.kill(); actions.respawn(); } };
     } };\n`,
  );
  const gov = await startGovernor(t, host);
  const s = await gov.until((s) => s.components[0]!.children.filter((c) => c.phase === "ready").length === 3 && s, 30_000, "min 3 from the config file");
  t.match((s as unknown as { plugins: { kind: string; name: string; source: string }[] }).plugins, [
      { kind: "security", name: "curve" },
      { kind: "loader", name: "default-loader" },
      { kind: "discovery", name: "gossip" },
      { kind: "logging", name: "default-logging" },
      { kind: "lifecycle", name: "default-lifecycle" },
      { kind: "zombie", name: "quiet-zombies", source: /plugins\/quiet-zombies\.mjs$/ },
    ], "the user's zombie plugin replaced the default");

  const set = await runCli(["governor", "set", "capacity", "2", "--discovery-port", String(host.port)], host.env);
  t.equal(set.code, 0, set.stderr);
  await gov.until((s) => s.components[0]!.running === 2 && s.components[0]!.children.length === 2, 20_000, "drained to the new capacity");
  t.pass("capacity 2: the surplus node drained");

  writeFileSync(config, JSON.stringify({ components: { greeter: { max: 1 } } }));
  await gov.until((s) => s.components[0]!.max === 1 && s.components[0]!.children.length === 1, 20_000, "max 1 from the rewritten config file");
  t.pass("config file change applied live: max 1");

  writeFileSync(config, "{ not json");
  await gov.waitForStderr(/not JSON .*keeping the previous config/, 10_000);
  t.equal((await gov.component("greeter"))!.max, 1, "a broken config file keeps the previous settings");

  writeFileSync(join(host.components, ".deploy.lock"), "");
  cpSync(join(EXAMPLES, "counter"), join(host.components, "counter"), { recursive: true });
  const locked = await gov.until((s) => s.locked !== undefined && s, 5000, "status");
  t.equal((locked as unknown as { locked: boolean }).locked, true, "status says the lock is held");
  await new Promise((r) => setTimeout(r, 3000)); // two scan periods
  t.notOk((await gov.status()).components.some((c) => c.name === "counter"), "nothing new starts while the lock is held");
  rmSync(join(host.components, ".deploy.lock"));
  await gov.until((s) => s.components.find((c) => c.name === "counter")?.children[0]?.phase === "ready", 30_000, "counter started after the lock went");
  t.pass("the lock removed: the new component starts");
});
