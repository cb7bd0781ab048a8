// A keyed cluster across hosts (issue 12, done-when): three network-namespace hosts with one
// cluster key and default flags (a runtime directory each, the key in the environment, --seed)
// learn each other's nodes and call across; a fourth host with another key, seeded at the same
// hosts, never appears in any table, and its client is told UNAUTHENTICATED long before its deadline.
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { clientNodes, createNetwork, netnsUnavailable, waitForLine, type NetnsHost } from "../lib/netns.ts";
import { BIN, EXAMPLES, clusterKeyFile } from "../lib/processes.ts";

const skip = (await netnsUnavailable()) ?? false;

function privateDir(t: { teardown(fn: () => unknown): void }, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `nodebin-${name}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test("cluster key - three keyed hosts learn each other and call across; a fourth with another key is in no table and is refused at once", { skip, timeout: 200_000 }, async (t) => {
  const net = await createNetwork(t, 4);
  const [h1, h2, h3, h4] = net.hosts as [NetnsHost, NetnsHost, NetnsHost, NetnsHost];
  const key = clusterKeyFile(t);
  const other = clusterKeyFile(t);
  const envs = new Map(net.hosts.map((h) => [h, { NODEBIN_RUNTIME_DIR: privateDir(t, h.name), NODEBIN_LOG: "info", NODEBIN_HOST: h.name, NODEBIN_CLUSTER_KEY_FILE: h === h4 ? other : key } as NodeJS.ProcessEnv]));

  const governor = async (host: NetnsHost, component: string, seeds: NetnsHost[]) => {
    // A components directory of one example each, so each host serves its own component.
    const root = privateDir(t, `${host.name}-root`);
    cpSync(join(EXAMPLES, component), join(root, "components", component), { recursive: true });
    const child = host.spawn(process.execPath, [BIN, "governor", "--components", join(root, "components"), ...seeds.flatMap((s) => ["--seed", s.address])], { env: envs.get(host)! });
    await waitForLine(child, /governor ready: /, 30_000);
    return child;
  };
  await governor(h1, "greeter", []);
  await governor(h2, "counter", [h1]);
  await governor(h3, "welcome", [h2]);
  // The stranger seeds itself at every keyed host, with a component of its own.
  await governor(h4, "greeter", [h1, h2, h3]);

  const cli = (from: NetnsHost, args: string[], timeoutMs = 25_000) => from.exec(process.execPath, [BIN, "client", ...args], { env: envs.get(from)!, timeoutMs });
  const rows = (from: NetnsHost) => clientNodes(from, envs.get(from)!, BIN);
  const started = Date.now();
  let tables: { component: string; host: string }[][] = [];
  for (;;) {
    tables = await Promise.all([h1, h2, h3].map(rows));
    if (tables.every((table) => table.map((r) => `${r.component}@${r.host}`).sort().join(" ") === `counter@${h2.name} greeter@${h1.name} welcome@${h3.name}`)) break;
    if (Date.now() - started > 60_000) throw new Error(`not converged within 60 s: ${JSON.stringify(tables)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  t.pass(`every keyed host holds every keyed host's node (${Date.now() - started} ms)`);

  // From h1: welcome runs only on h3 and calls the greeter on h1 and the counter on h2.
  const visit = await cli(h1, ["call", "demo.Welcome/Visit", '{"name":"Ada"}', "--seed", h1.address, "--json"]);
  t.equal(visit.code, 0, visit.stderr);
  t.same(JSON.parse(visit.stdout || "{}"), { greeting: "Hello, Ada!", visitor: "1", via: "" }, "a call from h1 reached h3, and h3's nested calls reached h1 and h2");

  // Wait until each keyed host refused the stranger's gossip (its governor counts the handshakes
  // it refused), then look again: the stranger is nowhere.
  for (const h of [h1, h2, h3]) {
    const end = Date.now() + 30_000;
    for (;;) {
      const r = await h.exec(process.execPath, [BIN, "governor", "status", "--json"], { env: envs.get(h)!, timeoutMs: 10_000 });
      const refused = r.code === 0 ? ((JSON.parse(r.stdout) as { refused?: Record<string, number> }).refused ?? {}) : {};
      if ((refused.unauthenticated ?? 0) > 0) break;
      if (Date.now() > end) throw new Error(`${h.name} refused nothing of h4 within 30 s: ${r.stdout || r.stderr}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  t.pass("every keyed host refused the stranger's connections");
  const later = await Promise.all([h1, h2, h3].map(rows));
  for (const [i, table] of later.entries()) t.notOk(table.some((r) => r.host === h4.name), `h${i + 1}'s table has nothing of h4 (${table.map((r) => `${r.component}@${r.host}`).join(", ")})`);
  const h4table = await rows(h4);
  t.same(h4table.map((r) => r.host), [h4.name], "and h4 learned nothing of the keyed hosts");

  // h4's client (its key) against a keyed host: refused in the handshake, long before the 20 s deadline.
  const before = Date.now();
  const refused = await cli(h4, ["call", "demo.Greeter/Hello", '{"name":"Eve"}', "--seed", h1.address, "--timeout", "20000"]);
  const took = Date.now() - before;
  t.equal(refused.code, 16, `h4's client: exit 16 (UNAUTHENTICATED): ${refused.stderr.trim()}`);
  t.ok(took < 10_000, `told in ${took} ms`);
  t.match(refused.stderr, /UNAUTHENTICATED: .*handshake with tcp:\/\/[0-9.]+:7400 .*failed/, "naming the failed handshake");
});
