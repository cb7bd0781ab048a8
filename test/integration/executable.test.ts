// The single executable on a host of its own: copied alone into an empty
// directory with components/ beside it (.ts, .js, .mjs with top-level await,
// .cjs), no node on PATH, no node_modules anywhere above, private runtime and
// cache directories. It runs the governor (whose children are the executable
// again), answers `client call` through itself, and stops. Plus: an unusable
// cache directory, and install.sh into a temporary prefix.
//
// CI (.ci/run) runs `npm run build` before the tests. Without
// dist/node-bin-<os>-<arch> (no build yet) these tests skip, saying so.
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { fixturePath } from "../lib/fixture-components.ts";
import { EXECUTABLE, exeHost, nodeModulesAbove, runExe, startExe, which } from "../lib/executable.ts";
import { EXAMPLES, ROOT } from "../lib/processes.ts";

const missing = existsSync(EXECUTABLE) ? false : `no ${EXECUTABLE}: run \`npm run build\` first (CI does)`;
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const examples = ["greeter", "counter", "welcome"].map((name) => ({ from: join(EXAMPLES, name) }));
const fixtures = ["clock", "echo"].map((name) => ({ from: fixturePath(`executable/${name}`) }));

t.test("executable - governor, client and --version with no node on PATH and no node_modules", { skip: missing }, async (t) => {
  const host = exeHost(t, [...examples, ...fixtures]);
  t.equal(which("node", host.env.PATH), undefined, "no node on the PATH the executable gets");
  t.equal(nodeModulesAbove(host.exe), undefined, "no node_modules beside or above the executable");
  t.same(readdirSync(join(host.exe, "..")).sort(), ["components", "node-bin"], "the executable alone, with its components");
  const { env, cwd } = host;

  const version = await runExe("node-bin", ["--version"], env, cwd);
  t.equal(version.code, 0, version.stderr);
  t.equal(version.stdout.trim(), VERSION, "--version through a symlink found on PATH");

  // No --components: the directory beside the executable's real location,
  // found through the symlink on PATH, from a working directory without one.
  // Default flags, as a user on one host types them (bind every interface, advertise the host's
  // address): only the discovery port is the test's own, so that nothing meets a real agent.
  const net = ["--seed", `127.0.0.1:${host.port}`, "--discovery-port", String(host.port)];
  const started = Date.now();
  const gov = await startExe(t, "node-bin", ["governor", "--capacity", "6", ...net], env, cwd, /governor ready: \S+ at (\S+)/);
  t.match(gov.readyLine, /5 component\(s\)/, "the five components beside the executable");
  t.match(gov.stderr(), new RegExp(`governing ${host.components.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));

  const status = async () => {
    const r = await runExe(host.exe, ["governor", "status", "--json", "--discovery-port", String(host.port)], env, cwd);
    if (r.code !== 0) throw new Error(`governor status: ${r.code} ${r.stderr}`);
    return JSON.parse(r.stdout) as { components: { name: string; running: number; failed?: string; children: { phase: string; pid: number }[] }[] };
  };
  let last: Awaited<ReturnType<typeof status>> | undefined;
  const deadline = Date.now() + 45_000;
  while (Date.now() < deadline) {
    last = await status();
    if (last.components.every((c) => c.running === 1 && c.children[0]?.phase === "ready")) break;
    if (last.components.some((c) => c.failed)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  t.same(
    last?.components.map((c) => [c.name, c.running, c.failed ?? ""]),
    ["clock", "counter", "echo", "greeter", "welcome"].map((n) => [n, 1, ""]),
    `every component serves, one child each (${Date.now() - started} ms)`,
  );

  const call = (method: string, body: string) => runExe("node-bin", ["client", "call", method, body, "--seed", `127.0.0.1:${host.port}`, "--json"], env, cwd);
  const visit = await call("demo.Welcome/Visit", '{"name":"Ada"}');
  t.equal(visit.code, 0, visit.stderr);
  t.match(JSON.parse(visit.stdout || "{}"), { greeting: "Hello, Ada!", visitor: "1" }, ".ts calling .ts and .js components in other processes");
  const tick = await call("exe.Clock/Now", "{}");
  t.equal(tick.code, 0, tick.stderr);
  const tickReply = JSON.parse(tick.stdout || "{}") as { source?: string; waitedMs?: number };
  t.equal(tickReply.source, "mjs with top-level await");
  t.ok((tickReply.waitedMs ?? 0) >= 15, "the top-level await finished before the module served");
  const echo = await call("exe.Echo/Say", '{"text":"hi"}');
  t.equal(echo.code, 0, echo.stderr);
  t.same(JSON.parse(echo.stdout || "{}"), { text: "echo: hi" }, "a .cjs component");

  // Children are the executable itself, with no script argument.
  const pids = last?.components.flatMap((c) => c.children.map((k) => k.pid)) ?? [];
  for (const pid of pids) {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    t.same(cmdline.slice(0, 2), [host.exe, "container"], `child ${pid} runs ${host.exe} container ...`);
  }
  const cache = readdirSync(env.NODEBIN_CACHE_DIR!).sort();
  t.match(cache, [/^proto-[0-9a-f]{16}$/, /^zeromq-[0-9a-f]{16}\.node$/], "the addon and the protos, written once to the cache directory");
  t.ok(existsSync(join(env.NODEBIN_CACHE_DIR!, cache[0]!, "nodebin", "options.proto")), "nodebin/options.proto, which the components import");

  const stop = await runExe("node-bin", ["governor", "stop", "--discovery-port", String(host.port)], env, cwd);
  t.equal(stop.code, 0, stop.stderr);
  t.equal(await gov.stop(null, 30_000), 0, "the governor exited 0 (after draining its children)");
  for (const pid of pids) t.throws(() => process.kill(pid, 0), `child ${pid} is gone`);
});

t.test("executable - an unusable cache directory is a clear error naming it and NODEBIN_CACHE_DIR", { skip: missing }, async (t) => {
  const host = exeHost(t, examples);
  // Tests run as root, so a read-only mode would not stop the write: a path under a regular file cannot be created by anyone.
  const file = join(host.root, "a-file");
  writeFileSync(file, "not a directory\n");
  const viaEnv = await runExe(host.exe, ["--version"], { ...host.env, NODEBIN_CACHE_DIR: join(file, "sub") }, host.cwd);
  t.equal(viaEnv.code, 9, "exit status 9 (FAILED_PRECONDITION)");
  t.equal(viaEnv.stdout, "");
  t.match(viaEnv.stderr, /^error: FAILED_PRECONDITION: cannot write the cache directory \S+a-file\/sub \(NODEBIN_CACHE_DIR\): ENOTDIR/);
  t.match(viaEnv.stderr, /set NODEBIN_CACHE_DIR to a writable directory\n$/);
  t.notMatch(viaEnv.stderr, /\n\s+at /, "no stack trace");

  const { NODEBIN_CACHE_DIR: _, ...noCacheEnv } = host.env;
  const viaDefault = await runExe(host.exe, ["dev"], { ...noCacheEnv, XDG_CACHE_HOME: file }, host.cwd);
  t.equal(viaDefault.code, 9);
  t.match(viaDefault.stderr, /cannot write the cache directory \S+a-file\/node-bin: ENOTDIR.*set NODEBIN_CACHE_DIR/, "the default directory ($XDG_CACHE_HOME/node-bin) and the variable to override it");
});

t.test("install.sh - into a temporary prefix: install, again, --systemd, --uninstall", { skip: missing }, async (t) => {
  const host = exeHost(t, []);
  const prefix = join(host.root, "prefix");
  const units = join(host.root, "units");
  const script = join(ROOT, "install.sh");
  const { env, cwd } = host;
  t.equal((await runExe("bash", ["-n", script], env, cwd)).code, 0, "bash -n");

  const first = await runExe(script, ["--from", EXECUTABLE, "--prefix", prefix], env, cwd);
  t.equal(first.code, 0, first.stderr);
  const exe = join(prefix, "lib", "node-bin", "node-bin");
  t.match(first.stdout, `installed node-bin ${VERSION}: ${join(prefix, "bin", "node-bin")} -> ${exe}`);
  t.match(first.stdout, /^next: \S+node-bin governor --seed IP/m, "prints the next command");
  t.ok(existsSync(join(prefix, "lib", "node-bin", "components")), "the components directory beside the executable");
  const manifest = join(prefix, "lib", "node-bin", ".install-manifest");
  const before = readFileSync(manifest, "utf8");

  const again = await runExe(script, ["--from", EXECUTABLE, "--prefix", prefix], env, cwd);
  t.equal(again.code, 0, again.stderr);
  t.equal(readFileSync(manifest, "utf8"), before, "idempotent: a second run records nothing new");

  const installed = await runExe(join(prefix, "bin", "node-bin"), ["--version"], env, cwd);
  t.equal(installed.code, 0, installed.stderr);
  t.equal(installed.stdout.trim(), VERSION, "the installed executable answers --version");

  const unit = await runExe(script, ["--from", EXECUTABLE, "--prefix", prefix, "--systemd", "--seed", "10.0.0.5", "--systemd-dir", units], env, cwd);
  t.equal(unit.code, 0, unit.stderr);
  const unitFile = join(units, "node-bin-governor.service");
  const text = readFileSync(unitFile, "utf8");
  t.match(text, `ExecStart=${exe} governor --components ${join(prefix, "lib", "node-bin", "components")} --seed 10.0.0.5`);
  t.match(text, /^KillMode=process$/m);
  t.match(unit.stdout, /^next: systemctl (--user )?daemon-reload && systemctl (--user )?enable --now node-bin-governor\.service$/m, "prints the systemctl command, runs none");

  const foreign = await runExe(script, ["--from", join(ROOT, "package.json"), "--prefix", join(host.root, "other")], env, cwd);
  t.not(foreign.code, 0, "a file that does not run here is refused");
  t.notOk(existsSync(join(host.root, "other")), "and nothing is left of the attempt");

  const gone = await runExe(script, ["--uninstall", "--prefix", prefix], env, cwd);
  t.equal(gone.code, 0, gone.stderr);
  t.notOk(existsSync(prefix), "the prefix it created is gone");
  t.notOk(existsSync(units), "the unit and the directory it created for it are gone");
  const twice = await runExe(script, ["--uninstall", "--prefix", prefix], env, cwd);
  t.equal(twice.code, 0);
  t.match(twice.stdout, /nothing to remove/);
});
