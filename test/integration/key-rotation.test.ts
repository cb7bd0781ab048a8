// A cluster key rotation on a live governor, the README's steps, with a stateful component and
// callers from another host's runtime directory (over tcp, CurveZMQ): `keygen --add` (the running
// processes read the file again), `governor roll` (children replaced one by one, state handed
// over, each new one serving the new key), `governor stop --keep-children` and a new governor (its
// own ports under the new key), then `keygen --retire`. At every step a caller with the file as it
// is then is served, and the count is never lost.
import { copyFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { parseKeyring } from "../../src/security/keys.ts";
import { example, startGovernor, testHost } from "../lib/governor.ts";
import { clusterKeyFile, privateRuntime, runCli } from "../lib/processes.ts";

t.test("key rotation - add, roll, recycle, retire: callers served throughout, the counter's state kept", { timeout: 180_000 }, async (t) => {
  const key = clusterKeyFile(t);
  const host = testHost(t, [example("counter")]);
  host.env.NODEBIN_CLUSTER_KEY_FILE = key;
  const gov = await startGovernor(t, host);
  await gov.until((s) => s.components[0]?.children.find((k) => k.phase === "ready"), 30_000, "counter serving");

  const elsewhere = { ...privateRuntime(t), NODEBIN_HOST: "caller-host" };
  // A caller holding a copy of the key file as it is at that moment.
  const add = async (withKeys: string) => {
    const copy = join(host.root, `caller-${Date.now()}-${Math.random().toString(36).slice(2)}.key`);
    copyFileSync(withKeys, copy);
    const r = await runCli(["client", "--seed", host.seed, "--cluster-key", copy, "--timeout", "20000", "call", "demo.Counter/Add", '{"key":"rot","by":1}'], elsewhere);
    return { code: r.code, stderr: r.stderr, count: r.code === 0 ? Number((JSON.parse(r.stdout) as { count: string | number }).count) : undefined };
  };
  const old = join(host.root, "old.key");
  copyFileSync(key, old);
  t.equal((await add(key)).count, 1, "served with the first key");

  // Step 1: a new key first, the old one still accepted.
  const added = await runCli(["keygen", "--add", key], host.env);
  t.equal(added.code, 0, added.stderr);
  const ring = parseKeyring(readFileSync(key, "utf8"), key);
  t.equal(ring.keys.length, 2);
  t.equal((await add(key)).count, 2, "a caller with [new, old] is served (it falls back to the old key the listeners still serve)");
  t.equal((await add(old)).count, 3, "a caller with the old key only is still served");

  // Step 2: every child replaced, state handed over; then the governor itself recycled.
  const before = (await gov.status()).components[0]!.children.map((k) => k.pid);
  const rolled = await runCli(["governor", "roll", "--discovery-port", String(host.port)], host.env);
  t.equal(rolled.code, 0, rolled.stderr);
  const after = await gov.until(
    (s) => {
      const kids = s.components[0]?.children ?? [];
      return kids.length > 0 && kids.every((k) => k.phase === "ready" && !before.includes(k.pid)) ? kids : undefined;
    },
    60_000,
    "every child replaced",
  );
  t.notOk(after.some((k) => before.includes(k.pid)), `children ${before.join(", ")} replaced by ${after.map((k) => k.pid).join(", ")}`);
  t.equal((await add(key)).count, 4, "the count survived the roll (sealed hand-over)");
  const stopped = await runCli(["governor", "stop", "--keep-children", "--discovery-port", String(host.port)], host.env);
  t.equal(stopped.code, 0, stopped.stderr);
  const gov2 = await startGovernor(t, host);
  await gov2.until((s) => s.components[0]?.children.find((k) => k.phase === "ready" && after.some((a) => a.pid === k.pid)), 30_000, "the rolled child adopted");

  // Step 3: retire the old key: a caller with the new key alone is served; one with the old alone is not.
  const retired = await runCli(["keygen", "--retire", key], host.env);
  t.equal(retired.code, 0, retired.stderr);
  t.equal(parseKeyring(readFileSync(key, "utf8"), key).keys.length, 1);
  const fresh = await add(key);
  t.equal(fresh.count, 5, `a caller with only the new key is served, the count kept (${fresh.stderr})`);
  const stale = await add(old);
  t.equal(stale.code, 16, "a caller with only the retired key: UNAUTHENTICATED");
});
