// A host's identity (issue 11, finding 13): made once per host and kept in its runtime directory,
// agreed on by every process that shares it, checked when read, and unique where host names are
// not: three namespace hosts of one machine share its host name, and with default flags (only
// --seed) they are still three hosts whose calls reach each other.
import { spawn } from "node:child_process";
import { lstatSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { HOST_ID_FILE, hostIdentity, readHostIdentity } from "../../src/transport/runtime-dir.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { clientNodes, createNetwork, netnsUnavailable, waitForLine, type NetnsHost } from "../lib/netns.ts";
import { BIN, EXAMPLES, ROOT, clusterKeyFile } from "../lib/processes.ts";

const skipNetns = (await netnsUnavailable()) ?? false;

function privateDir(t: { teardown(fn: () => unknown): void }, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `nodebin-${name}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** What `fn` throws, if it is a NodeBinError (undefined when it returns or throws anything else). */
function thrown(fn: () => unknown): NodeBinError | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof NodeBinError ? err : undefined;
  }
  return undefined;
}

t.test("host identity - made once, kept private, the same for every later reader; the host name is only its label", async (t) => {
  const dir = privateDir(t, "hid");
  t.equal(readHostIdentity(dir), undefined, "none before the first process needs it");
  const id = hostIdentity(dir);
  const label = hostname().replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "").slice(0, 64) || "host";
  t.match(id, new RegExp(`^${label.replace(/[.]/g, "\\.")}-[0-9a-f]{12}$`), "the host name and 12 random hex digits");
  t.equal(hostIdentity(dir), id, "kept");
  t.equal(readHostIdentity(dir), id);
  const st = lstatSync(join(dir, HOST_ID_FILE));
  t.equal(st.mode & 0o777, 0o600, "mode 0600");
  t.not(hostIdentity(privateDir(t, "hid-other")), id, "another runtime directory: another host");
});

t.test("host identity - processes starting at once all agree on one id", async (t) => {
  const dir = privateDir(t, "hid-race");
  const script = `const { hostIdentity } = await import(${JSON.stringify(join(ROOT, "src", "transport", "runtime-dir.ts"))}); console.log(hostIdentity(process.argv[1]));`;
  const { NODE_OPTIONS: _, ...env } = process.env;
  const runs = Array.from(
    { length: 8 },
    () =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ["--import", join(ROOT, "bin", "register.mjs"), "--input-type=module", "-e", script, dir], { env, stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        let err = "";
        child.stdout.on("data", (d: Buffer) => (out += d));
        child.stderr.on("data", (d: Buffer) => (err += d));
        const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
        child.on("error", reject);
        child.on("close", (code) => {
          clearTimeout(timer);
          if (code === 0) resolve(out.trim());
          else reject(new Error(`exit ${code}: ${err}`));
        });
      }),
  );
  const ids = await Promise.all(runs);
  t.equal(new Set(ids).size, 1, `8 processes, one id (${ids[0]})`);
  t.equal(readFileSync(join(dir, HOST_ID_FILE), "utf8"), `${ids[0]}\n`, "the file holds it");
});

t.test("host identity - a file that is not an id, or not a regular file of ours, is refused, never replaced", async (t) => {
  const dir = privateDir(t, "hid-bad");
  const file = join(dir, HOST_ID_FILE);
  for (const text of ["", "\n", "two words\n", "../../etc\n", "x".repeat(300)]) {
    writeFileSync(file, text, { mode: 0o600 });
    t.equal(thrown(() => hostIdentity(dir))?.code, "FAILED_PRECONDITION", `refused: ${JSON.stringify(text.slice(0, 20))}`);
    t.equal(readFileSync(file, "utf8"), text, "and left as it was");
  }
  rmSync(file);
  const elsewhere = join(privateDir(t, "hid-target"), "id");
  writeFileSync(elsewhere, "someone-else\n");
  symlinkSync(elsewhere, file);
  t.equal(thrown(() => readHostIdentity(dir))?.code, "PERMISSION_DENIED", "a symlink is not followed");
});

t.test("host identity - three namespace hosts with the same host name and default flags are three hosts; calls cross them", { skip: skipNetns, timeout: 180_000 }, async (t) => {
  const net = await createNetwork(t, 3);
  const [h1, h2, h3] = net.hosts as [NetnsHost, NetnsHost, NetnsHost];
  // Only a runtime directory of its own per host: no --listen, --advertise or --host, and no NODEBIN_HOST
  // (even if the test runner has one: an undefined value leaves it out of the child's environment).
  // ... and the cluster key, in the environment (hosts that reach each other need one).
  const key = clusterKeyFile(t);
  const envs = new Map(net.hosts.map((h) => [h, { NODEBIN_RUNTIME_DIR: privateDir(t, h.name), NODEBIN_LOG: "warn", NODEBIN_HOST: undefined, NODEBIN_CLUSTER_KEY_FILE: key } as NodeJS.ProcessEnv]));
  const facts = await Promise.all(net.hosts.map((h) => h.exec(process.execPath, ["-e", 'console.log(JSON.stringify([require("node:os").hostname(), process.env.NODEBIN_HOST ?? null]))'], { env: envs.get(h)! })));
  const seen = facts.map((r) => JSON.parse(r.stdout) as [string, string | null]);
  t.same(new Set(seen.map(([name]) => name)).size, 1, `the hosts share one host name (${seen[0]![0]}): network namespaces share the UTS namespace`);
  t.ok(seen.every(([, env]) => env === null), "and no host has NODEBIN_HOST");

  const container = async (host: NetnsHost, component: string, seed?: NetnsHost) => {
    const child = host.spawn(process.execPath, [BIN, "container", "--component", component, "--components", EXAMPLES, ...(seed ? ["--seed", seed.address] : [])], { env: envs.get(host)! });
    await waitForLine(child, /container ready: /, 30_000);
  };
  await container(h1, "greeter");
  await container(h2, "counter", h1);
  await container(h3, "welcome", h2);

  const cli = (from: NetnsHost, args: string[]) => from.exec(process.execPath, [BIN, "client", ...args], { env: envs.get(from)!, timeoutMs: 20_000 });
  const rows = (from: NetnsHost) => clientNodes(from, envs.get(from)!, BIN);
  const started = Date.now();
  let tables: { component: string; host: string }[][] = [];
  for (;;) {
    tables = await Promise.all(net.hosts.map(rows));
    if (tables.every((table) => table.map((r) => r.component).sort().join(" ") === "counter greeter welcome")) break;
    if (Date.now() - started > 30_000) throw new Error(`not converged within 30 s: ${JSON.stringify(tables)}`);
  }
  t.pass(`every host holds every other's node (${Date.now() - started} ms)`);
  const ids = new Set(tables[0]!.map((r) => r.host));
  t.equal(ids.size, 3, `three host ids: ${[...ids].join(", ")}`);
  const label = seen[0]![0].replace(/[^A-Za-z0-9._-]+/g, "-");
  t.ok([...ids].every((id) => id.startsWith(`${label.slice(0, 64)}-`)), "each shows the shared host name");
  for (const table of tables) t.same(new Set(table.map((r) => r.host)), ids, "and every host agrees on them");

  // From h1: welcome runs only on h3, and calls the greeter on h1 and the counter on h2.
  const visit = await cli(h1, ["call", "demo.Welcome/Visit", '{"name":"Ada"}', "--seed", h1.address, "--json"]);
  t.equal(visit.code, 0, visit.stderr);
  t.same(JSON.parse(visit.stdout || "{}"), { greeting: "Hello, Ada!", visitor: "1", via: "" }, "a call from h1 reached h3, and h3's nested calls h1 and h2");
});
