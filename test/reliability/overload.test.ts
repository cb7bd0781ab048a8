// Slow consumers and overload: a component slower than its arrival rate.
// Callers far outnumbering what its queue holds get RESOURCE_EXHAUSTED at
// once (never an unbounded queue), or, with capacityWaitMs, wait for room and
// are served; the node's queue, sampled while the burst runs, never exceeds
// its configured limit, and its memory stays bounded.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { NodeBinError } from "../../src/wire/errors.ts";
import { fixturePath } from "../lib/fixture-components.ts";
import { hostClient, startGovernor, testHost } from "../lib/governor.ts";
import { MiB, rssOf } from "../lib/load.ts";

const QUEUE = 20;

t.test("overload - a slow node's queue stays within its limit; the rest are refused at once or wait for room", { timeout: 180_000 }, async (t) => {
  const src = mkdtempSync(join(tmpdir(), "nodebin-slowq-"));
  t.teardown(() => rmSync(src, { recursive: true, force: true }));
  cpSync(fixturePath("governor/slow"), join(src, "slow"), { recursive: true });
  const index = join(src, "slow", "index.js");
  writeFileSync(index, readFileSync(index, "utf8").replace("limits: { queue: 1000, min: 1, max: 2 }", `limits: { queue: ${QUEUE}, min: 1, max: 1 }`));
  const host = testHost(t, [{ from: join(src, "slow") }]);
  const gov = await startGovernor(t, host, ["--queue-wait-ms", "600000", "--sustain-ms", "600000"]);
  const child = await gov.until((s) => s.components[0]?.children[0]?.phase === "ready" && s.components[0]!.children[0]!, 20_000, "slow serving");
  const client = await hostClient(t, host);
  const rssBefore = rssOf(child.pid);

  // 2000 calls of 20 ms at once against one node holding 20: most are refused, at once.
  const started = Date.now();
  let sampling = true;
  let maxQueued = 0;
  const sampler = (async () => {
    while (sampling) {
      const c = await gov.component("slow");
      maxQueued = Math.max(maxQueued, c?.children[0]?.queued ?? 0);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const outcomes = await Promise.all(
    Array.from({ length: 2000 }, () =>
      client.call("gov.Slow/Work", { ms: 20 }, { timeoutMs: 30_000 }).then(
        () => "ok",
        (err: unknown) => NodeBinError.from(err).code,
      ),
    ),
  );
  const took = Date.now() - started;
  const count = (c: string) => outcomes.filter((o) => o === c).length;
  t.equal(count("ok") + count("RESOURCE_EXHAUSTED"), 2000, `every call served or refused as RESOURCE_EXHAUSTED (${count("ok")} served, ${count("RESOURCE_EXHAUSTED")} refused)`);
  t.ok(count("ok") >= QUEUE, "at least a queue's worth served");
  t.ok(took < 15_000, `all 2000 ended in ${took} ms: refusals do not wait`);

  // A second burst, right after: the same.
  const sends = await Promise.all(
    Array.from({ length: 200 }, () =>
      client.call("gov.Slow/Work", { ms: 50 }, { timeoutMs: 30_000 }).then(
        () => "ok",
        (err: unknown) => NodeBinError.from(err).code,
      ),
    ),
  );
  t.ok(sends.every((o) => o === "ok" || o === "RESOURCE_EXHAUSTED"), "a second burst: served or RESOURCE_EXHAUSTED");
  sampling = false;
  await sampler;
  t.ok(maxQueued <= QUEUE, `the queue, sampled during the bursts, never held more than its limit (max ${maxQueued} of ${QUEUE})`);

  // With capacityWaitMs (and no room to grow: max 1) callers wait for the queue to drain and are served.
  const patient = await Promise.all(
    Array.from({ length: 100 }, () =>
      client.call("gov.Slow/Work", { ms: 10 }, { timeoutMs: 60_000, capacityWaitMs: 50_000 }).then(
        () => "ok",
        (err: unknown) => NodeBinError.from(err).toString(),
      ),
    ),
  );
  t.same(patient.filter((o) => o !== "ok"), [], "100 patient callers, 5x the queue: all served once room came");

  const s = await gov.component("slow");
  t.equal(s!.running, 1, "max 1: no growth");
  const rssAfter = rssOf(child.pid);
  if (rssBefore !== undefined && rssAfter !== undefined) t.ok(rssAfter <= rssBefore + 32 * MiB, `RSS ${Math.round(rssBefore / MiB)} -> ${Math.round(rssAfter / MiB)} MiB`);
});
