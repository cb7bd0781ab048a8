// A host's link dropped under load: three hosts as network namespaces, a
// governor with two echo nodes on each of h2 and h3, and a load generator of
// 32 callers (2 s deadline) on h1. h3's link is cut for 8 s, then restored.
// Every failed call must be UNAVAILABLE or DEADLINE_EXCEEDED, within its
// deadline, and addressed to a node on h3 (no call to h2 fails); h3's nodes
// leave h1's table and come back after the link does. Figures printed.
// Needs root (network namespaces); skips with the reason otherwise.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { createNetwork, netnsUnavailable, waitForLine, type NetnsHost } from "../lib/netns.ts";
import { BIN, ROOT, clusterKeyFile } from "../lib/processes.ts";

const skip = (await netnsUnavailable()) ?? false;
const DEADLINE_MS = 2000;
const TIMER_SLACK_MS = 500;

interface Progress {
  at: number;
  ok: number;
  failed: number;
  nodes: Record<string, number>;
}

t.test("link fault - a host cut off under load: only its calls fail, with a code, in time; it comes back", { skip, timeout: 240_000 }, async (t) => {
  const net = await createNetwork(t, 3);
  const [h1, h2, h3] = net.hosts as [NetnsHost, NetnsHost, NetnsHost];
  const dirs = new Map<NetnsHost, string>();
  for (const h of net.hosts) {
    const dir = mkdtempSync(join(tmpdir(), `nodebin-link-${h.name}-`));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    dirs.set(h, dir);
  }
  const key = clusterKeyFile(t);
  const envOf = (h: NetnsHost) => ({ NODEBIN_RUNTIME_DIR: join(dirs.get(h)!, "run"), NODEBIN_HOST: h.name, NODEBIN_LOG: "warn", NODEBIN_CLUSTER_KEY_FILE: key });
  const governor = async (h: NetnsHost, seed: NetnsHost) => {
    const root = dirs.get(h)!;
    const { cpSync } = await import("node:fs");
    cpSync(join(ROOT, "bench", "components", "echo"), join(root, "components", "echo"), { recursive: true });
    writeFileSync(join(root, "governor.json"), JSON.stringify({ components: { echo: { min: 2, max: 2 } } }));
    const child = h.spawn(process.execPath, [BIN, "governor", "--components", join(root, "components"), "--listen", h.address, "--seed", seed.address], { env: envOf(h) });
    await waitForLine(child, /governor ready: /, 30_000);
    return child;
  };
  await governor(h2, h3);
  await governor(h3, h2);
  const load = h1.spawn(process.execPath, ["--import", join(ROOT, "bin", "register.mjs"), join(ROOT, "test", "reliability", "load-client.ts"), "--seed", `${h2.address}:7400`, "--host", "h1", "--callers", "32", "--deadline-ms", String(DEADLINE_MS), "--method", "bench.Echo/Echo", "--request", '{"a":1,"b":"link"}'], { env: envOf(h1) });
  await waitForLine(load, /load ready/, 30_000);
  const progress: Progress[] = [];
  let result: { ok: number; maxMs: number; failures: { code: string; to: string; host: string; at: number; ms: number; message: string }[] } | undefined;
  let buffered = "";
  load.stdout!.on("data", (d: Buffer) => {
    buffered += d;
    for (let i = buffered.indexOf("\n"); i >= 0; i = buffered.indexOf("\n")) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
      if (line.startsWith("progress ")) progress.push(JSON.parse(line.slice(9)) as Progress);
      else if (line.startsWith("result ")) result = JSON.parse(line.slice(7));
    }
  });
  const waitFor = async (ok: (p: Progress) => boolean, ms: number, what: string) => {
    const started = Date.now();
    while (Date.now() - started < ms) {
      const last = progress.at(-1);
      if (last && ok(last)) return Date.now() - started;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${what} not within ${ms} ms; last progress ${JSON.stringify(progress.at(-1))}`);
  };
  await waitFor((p) => p.nodes.h2 === 2 && p.nodes.h3 === 2, 30_000, "h1's client sees 4 nodes");
  await new Promise((r) => setTimeout(r, 2000));

  const cutAt = Date.now();
  await h3.cut();
  const gone = await waitFor((p) => p.at > cutAt && !p.nodes.h3, 30_000, "h3's nodes leave h1's table");
  await new Promise((r) => setTimeout(r, Math.max(0, 8000 - (Date.now() - cutAt))));
  const restoredAt = Date.now();
  await h3.restore();
  const back = await waitFor((p) => p.at > restoredAt && p.nodes.h3 === 2, 60_000, "h3's nodes back in h1's table");
  await new Promise((r) => setTimeout(r, 2000));
  load.kill("SIGTERM");
  await waitForLine(load, /^result /m, 30_000).catch(() => undefined);
  for (let i = 0; i < 50 && !result; i++) await new Promise((r) => setTimeout(r, 100));
  t.ok(result, "the load generator reported");
  if (!result) return;

  const failures = result.failures;
  const wrongCode = failures.filter((f) => f.code !== "UNAVAILABLE" && f.code !== "DEADLINE_EXCEEDED");
  const late = failures.filter((f) => f.ms > DEADLINE_MS + TIMER_SLACK_MS);
  const bystanders = failures.filter((f) => f.host !== "h3");
  const beforeCut = failures.filter((f) => f.at < cutAt);
  t.same(beforeCut, [], "nothing failed before the cut");
  t.same(wrongCode.slice(0, 5), [], "every failure is UNAVAILABLE or DEADLINE_EXCEEDED");
  t.same(late.slice(0, 5), [], `no call outlived its ${DEADLINE_MS} ms deadline`);
  t.same(bystanders.slice(0, 5), [], "only calls to h3's nodes failed");
  const lastFailure = Math.max(0, ...failures.map((f) => f.at));
  const okAfter = progress.filter((p) => p.at > restoredAt);
  t.ok(okAfter.length >= 2 && okAfter.at(-1)!.ok > okAfter[0]!.ok, "calls flow after the restore");
  t.comment(`cut: h3's nodes left h1's table in ${gone} ms; ${failures.length} calls failed (${[...new Set(failures.map((f) => f.code))].join(", ") || "none"}), the last ${lastFailure ? lastFailure - cutAt : 0} ms after the cut; restored: back in the table in ${back} ms; ${result.ok} calls answered, longest ${result.maxMs} ms`);
});
