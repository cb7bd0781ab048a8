// Load: 64 concurrent callers against 4 echo containers kept by a governor,
// for 10 s in CI (NODEBIN_SOAK=1: 10 minutes, run with `npx tap --timeout 900`;
// NODEBIN_RELIABILITY_SECONDS=N: N seconds). Every call must end with a reply (nothing is faulted here, so no
// coded error is expected either), and the resident memory of every node-bin
// process must stay flat: after a warm-up, growth within 25% + 16 MiB.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { hostClient, startGovernor, testHost } from "../lib/governor.ts";
import { ROOT } from "../lib/processes.ts";
import { MiB, rssOf, runLoad, soakSeconds } from "../lib/load.ts";

const seconds = soakSeconds(10, 600);

t.test(`load - 64 callers for ${seconds} s against 4 containers: every call answered, memory flat`, { timeout: (seconds + 120) * 1000 }, async (t) => {
  const host = testHost(t, [{ from: join(ROOT, "bench", "components", "echo") }]);
  writeFileSync(join(host.root, "governor.json"), JSON.stringify({ capacity: 4, components: { echo: { min: 4, max: 4 } } }));
  const gov = await startGovernor(t, host);
  const ready = await gov.until((s) => s.components[0]?.children.filter((c) => c.phase === "ready").length === 4 && s, 30_000, "4 echo nodes");
  const pids = [ready.pid, ...ready.components[0]!.children.map((c) => c.pid)];
  const client = await hostClient(t, host);
  const load = runLoad(t, 64, () => client.call("bench.Echo/Echo", { a: 1, b: "hello world" }, { timeoutMs: 10_000 }));

  const warmup = Math.min(5, Math.max(2, seconds / 4));
  await new Promise((r) => setTimeout(r, warmup * 1000));
  const before = new Map(pids.map((pid) => [pid, rssOf(pid)]));
  const okAtWarm = load.ok;
  const started = Date.now();
  let lastReport = started;
  while (Date.now() - started < (seconds - warmup) * 1000) {
    await new Promise((r) => setTimeout(r, 1000));
    if (Date.now() - lastReport >= 60_000) {
      lastReport = Date.now();
      t.comment(`${Math.round((Date.now() - started) / 1000)} s: ${load.ok} calls, ${load.failures.length} failed, rss ${pids.map((p) => Math.round((rssOf(p) ?? 0) / MiB)).join("/")} MiB`);
    }
  }
  const after = new Map(pids.map((pid) => [pid, rssOf(pid)]));
  const elapsed = (Date.now() - started) / 1000;
  await load.stop();

  t.equal(load.failures.length, 0, `no call failed (${load.ok} calls; first failures: ${JSON.stringify(load.failures.slice(0, 3))})`);
  t.ok(load.ok > 0);
  t.comment(`${load.ok} calls in ${seconds} s, ${Math.round((load.ok - okAtWarm) / elapsed)} calls/s after warm-up, longest call ${load.maxMs} ms`);
  const s = await gov.status();
  t.equal(s.components[0]!.children.filter((c) => c.phase === "ready").length, 4, "still 4 nodes, none restarted");
  t.equal(s.components[0]!.restarts, 0);
  for (const pid of pids) {
    const a = before.get(pid);
    const b = after.get(pid);
    if (a === undefined || b === undefined) {
      t.comment(`no /proc/${pid}/status here: RSS not measured`);
      continue;
    }
    const bound = a * 1.25 + 16 * MiB;
    t.ok(b <= bound, `pid ${pid} (${pid === ready.pid ? "governor" : "echo"}): RSS ${Math.round(a / MiB)} -> ${Math.round(b / MiB)} MiB (bound ${Math.round(bound / MiB)} MiB)`);
  }
});
