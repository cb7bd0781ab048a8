// The source must stay runnable under Deno 2 (the deno binary of the npm
// devDependency "deno"): the in-process path, and node-bin's own entry point
// (`deno run -A bin/node-bin ...`) as container, dev, client and governor,
// talking over ZeroMQ with Node processes in both directions. Under Deno the
// zmq transport polls its sockets (see `io` in src/transport/zmq.ts).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { Client } from "../../src/client/client.ts";
import { GOVERNOR_STATUS } from "../../src/wire/control.ts";
import { DENO, denoEnv, denoUnusable, runDenoCli, startDeno } from "../lib/deno.ts";
import { example, testHost, type GovernorStatus } from "../lib/governor.ts";
import { EXAMPLES, privateRuntime, ROOT, runCli, startContainer, testPort } from "../lib/processes.ts";

const skip = denoUnusable();
const containerArgs = (component: string, port: number) => ["container", "--component", component, "--components", EXAMPLES, "--listen", "127.0.0.1", "--discovery-port", String(port)];
const CONTAINER_READY = /container ready: \S+ at (\S+)/;
const randomPort = () => testPort();

t.test("deno - the in-process path runs under Deno unchanged", { skip }, async (t) => {
  const run = spawnSync(DENO, ["run", "--allow-read", "--allow-env", "--allow-sys", join(ROOT, "test", "lib", "deno-smoke.ts")], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 120_000,
    env: denoEnv(),
  });
  t.equal(run.status, 0, run.stderr);
  const result = JSON.parse(run.stdout.trim().split("\n").pop()!) as Record<string, unknown>;
  t.same(result, {
    runtime: "deno",
    components: ["board", "counter", "greeter", "ticker", "welcome"],
    loadErrors: 0,
    hello: "Hello, Deno!",
    visit: { greeting: "Hello, Deno!", via: "deno" },
    burst: 400,
    count: "400",
    ticks: [1, 2, 3],
    ticker: { lazy: true, ended: 1 },
    notFound: "NOT_FOUND",
    invalid: "INVALID_ARGUMENT",
    internal: "INTERNAL",
    deadline: "DEADLINE_EXCEEDED",
  });
});

t.test("deno - the zmq transport polls under Deno: sends retried while ZeroMQ's queue is full, every frame answered in order, nothing left running", { skip }, async (t) => {
  const run = spawnSync(DENO, ["run", "-A", join(ROOT, "test", "lib", "deno-zmq.ts")], { cwd: ROOT, encoding: "utf8", timeout: 120_000, env: denoEnv() });
  t.equal(run.status, 0, `exits by itself once its sockets are closed: ${run.error?.message ?? ""} ${run.stderr}`);
  const result = JSON.parse(run.stdout.trim().split("\n").pop() ?? "{}") as { burstMs?: number };
  t.match(result, { runtime: "deno", requestsInOrder: true, repliesInOrder: true, drops: [] });
  t.comment(`3000 requests and replies through a DEALER with a high-water mark of 5: ${result.burstMs} ms`);
});

t.test("deno - a Deno container answers a Node client, Node containers answer a Deno client, and they call each other", { skip }, async (t) => {
  const port = randomPort();
  const seed = `127.0.0.1:${port}`;
  const env: Record<string, string> = { ...privateRuntime(t), NODEBIN_HOST: "deno-host" };
  // The Deno container starts first: it holds the host's discovery endpoint (the agent) the Node ones register with.
  const greeter = await startDeno(t, containerArgs("greeter", port), env, CONTAINER_READY);
  t.match(greeter.readyLine, /\(agent at tcp:\/\/127\.0\.0\.1:\d+ ipc:/, "the Deno container is the host agent");
  const counter = await startContainer(t, containerArgs("counter", port).slice(1), env);
  t.match(counter.readyLine, /\(member\)/, "a Node container registered with the Deno agent");
  await startContainer(t, containerArgs("welcome", port).slice(1), env);

  const hello = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":"Node"}', "--seed", seed, "--json"], env);
  t.equal(hello.code, 0, hello.stderr);
  t.same(JSON.parse(hello.stdout), { message: "Hello, Node!" }, "Node client, Deno container");

  const add = await runDenoCli(["client", "call", "demo.Counter/Add", '{"key":"deno","by":2}', "--seed", seed, "--json"], env);
  t.equal(add.code, 0, add.stderr);
  t.same(JSON.parse(add.stdout), { key: "deno", count: "2" }, "Deno client, Node container");

  // welcome (Node) calls greeter (Deno) and counter (Node); its caller is the Deno client.
  const visit = await runDenoCli(["client", "call", "demo.Welcome/Visit", '{"name":"Ada"}', "--seed", seed, "--json", "--meta", "via=deno"], env);
  t.equal(visit.code, 0, visit.stderr);
  t.same(JSON.parse(visit.stdout), { greeting: "Hello, Ada!", visitor: "1", via: "deno" }, "Node container calling a Deno one, for a Deno client");

  const missing = await runDenoCli(["client", "call", "demo.Greeter/Hello", "{}", "--seed", seed, "--json"], env);
  t.equal(missing.code, 13, "a handler's error reaches the Deno client as INTERNAL (exit 13)");

  // A call in flight from a Deno client to a node whose process dies fails at
  // once: ZeroMQ's disconnect event reaches the Deno connector too.
  const slow = await startContainer(t, ["--component", "slow", "--components", slowComponents(t), "--listen", "127.0.0.1", "--discovery-port", String(port)], { ...env, NODEBIN_TEST_MARK: join(env.NODEBIN_RUNTIME_DIR!, "work-started") });
  const inFlight = runDenoCli(["client", "call", "test.Slow/Work", '{"ms":20000}', "--seed", seed, "--json", "--timeout", "20000"], env, { timeoutMs: 40_000 });
  for (const end = Date.now() + 30_000; !existsSync(join(env.NODEBIN_RUNTIME_DIR!, "work-started")) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
  const killedAt = Date.now();
  slow.child.kill("SIGKILL");
  const lost = await inFlight;
  const failedAfter = Date.now() - killedAt;
  t.equal(lost.code, 14, `UNAVAILABLE (exit 14): ${lost.stderr}`);
  t.ok(failedAfter < 5000, `the call failed ${failedAfter} ms after the kill, long before its 20 s deadline`);

  t.equal(await greeter.stop(), 0, "the Deno container exits 0 on SIGTERM");
});

/** A component whose Work waits `ms` and first touches $NODEBIN_TEST_MARK, so a test knows the call arrived. */
function slowComponents(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-deno-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, "slow"));
  writeFileSync(
    join(dir, "slow", "slow.proto"),
    'syntax = "proto3";\npackage test;\nservice Slow { rpc Work (WorkRequest) returns (WorkReply); }\nmessage WorkRequest { uint32 ms = 1; }\nmessage WorkReply { uint32 pid = 1; }\n',
  );
  writeFileSync(
    join(dir, "slow", "index.js"),
    'import { writeFileSync } from "node:fs";\nexport async function Work({ ms }) {\n  writeFileSync(process.env.NODEBIN_TEST_MARK, "");\n  await new Promise((resolve) => setTimeout(resolve, ms));\n  return { pid: process.pid };\n}\n',
  );
  return dir;
}

t.test("deno - `node-bin dev` under Deno answers Node and Deno clients", { skip }, async (t) => {
  const env = privateRuntime(t);
  const dev = await startDeno(t, ["dev", "--components", EXAMPLES], env, /ready at (\S+)/);
  t.match(dev.endpoint, /^ipc:\/\/.*dev\.sock$/);
  // Found through the runtime directory, as a user's `node-bin client` finds it.
  for (const name of ["Ada", "Grace", "Linus"]) {
    const r = await runCli(["client", "call", "demo.Welcome/Visit", JSON.stringify({ name }), "--json"], env);
    t.equal(r.code, 0, r.stderr);
    t.equal((JSON.parse(r.stdout) as { greeting: string }).greeting, `Hello, ${name}!`, `Node client call ${name}`);
  }
  const list = await runDenoCli(["client", "list", "--json"], env);
  t.equal(list.code, 0, list.stderr);
  t.match(list.stdout, /demo\.Counter/);
  t.equal(await dev.stop(), 0, "exits 0 on SIGTERM");
});

t.test("deno - a Deno governor runs its children under Deno and serves a Node client", { skip }, async (t) => {
  const host = testHost(t, [example("greeter")]);
  const governor = await startDeno(t, ["governor", "--components", host.components, "--listen", "127.0.0.1", "--discovery-port", String(host.port)], host.env, /governor ready: \S+ at (\S+)/);
  const socket = `ipc://${join(host.env.NODEBIN_RUNTIME_DIR!, `governor-${host.port}.sock`)}`;
  const status = async (): Promise<GovernorStatus> => {
    const client = await Client.connect({ endpoint: socket, connectTimeoutMs: 3000 });
    try {
      const s = JSON.parse((await client.callControl(GOVERNOR_STATUS, {}, { timeoutMs: 3000 })).json) as GovernorStatus;
      for (const c of s.components) for (const k of c.children) host.pids.add(k.pid); // killed at teardown
      return s;
    } finally {
      await client.close();
    }
  };
  let pid: number | undefined;
  for (const end = Date.now() + 30_000; pid === undefined && Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
    pid = (await status()).components[0]?.children.find((k) => k.phase === "ready")?.pid;
  }
  if (pid === undefined) throw new Error(`no greeter child ready within 30 s; governor stderr:\n${governor.stderr()}`);
  if (process.platform === "linux") {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    t.equal(readlinkSync(`/proc/${pid}/exe`), readlinkSync(`/proc/${governor.child.pid}/exe`), "the child runs on the governor's deno binary");
    t.ok(cmdline.includes("container"), `the child is a container: ${cmdline.join(" ")}`);
  }

  const hello = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":"Node"}', "--seed", host.seed, "--json"], host.env);
  t.equal(hello.code, 0, hello.stderr);
  t.same(JSON.parse(hello.stdout), { message: "Hello, Node!" });

  const stop = await runDenoCli(["governor", "stop", "--discovery-port", String(host.port)], host.env);
  t.equal(stop.code, 0, stop.stderr);
  // It is exiting already (told by `governor stop`): no SIGTERM on top, which could land while Deno tears down.
  t.equal(await governor.stop(null, 30_000), 0, "the governor exited 0");
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (const end = Date.now() + 5000; alive() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 100));
  t.notOk(alive(), "its child stopped with it");
});

t.test("deno - dev --only under Deno joins a host whose other component is a Node container: nested calls go out, the network's come in", { skip }, async (t) => {
  const port = randomPort();
  const seed = `127.0.0.1:${port}`;
  const bank = join(ROOT, "examples", "bank");
  const env: Record<string, string> = { ...privateRuntime(t), NODEBIN_HOST: "deno-dev-host" };
  const ledger = await startContainer(t, ["--component", "ledger", "--components", bank, "--discovery-port", String(port)], env);
  const ledgerNode = /container ready: (\S+)/.exec(ledger.readyLine)![1]!;
  const dev = await startDeno(t, ["dev", "--components", bank, "--only", "teller", "--seed", seed, "--discovery-port", String(port)], env, /dev ready at (\S+)/);
  t.match(dev.readyLine, /joined deno-dev-host as member/);
  const deposit = await runCli(["client", "--seed", seed, "call", "bank.Teller/Deposit", '{"account":"ada","cents":42}', "--json"], env);
  t.equal(deposit.code, 0, deposit.stderr);
  t.match(JSON.parse(deposit.stdout), { balanceCents: "42", ledger: ledgerNode }, "a Node client, a Deno teller, a Node ledger");
});
