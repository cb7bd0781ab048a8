// A gateway run by a governor (governor.json `gateways`): network a's governor starts
// `node-bin gateway` as a supervised child (near leg: its own network, seeded with itself, a
// discovery port of its own), lists it in its status, starts it again when it dies, and stops
// it on a full stop; through it a client of network a calls network b's component.
import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { Client } from "../../src/client/client.ts";
import { fixturePath } from "../lib/fixture-components.ts";
import { startGovernor, testHost } from "../lib/governor.ts";
import { alive, clusterKeyFile, runCli, testPort } from "../lib/processes.ts";
import { until } from "../lib/until.ts";

interface GatewayRow {
  name: string;
  network: string;
  remoteNetwork: string;
  discoveryPort: number;
  pid: number | null;
  state: string;
  restarts: number;
}

t.test("gateway by governor - started as a child, listed, restarted when it dies, stopped with the governor; calls cross it", { timeout: 180_000 }, async (t) => {
  // The two networks are under different cluster keys: network b's sits beside governor.json (a relative path there).
  const key = clusterKeyFile(t);
  const keyB = clusterKeyFile(t);
  const hostA = testHost(t, [{ from: fixturePath("components-gateway/near") }]);
  const hostB = testHost(t, [{ from: fixturePath("components-gateway/far") }]);
  hostA.env.NODEBIN_HOST = "host-a";
  hostB.env.NODEBIN_HOST = "host-b";
  hostA.env.NODEBIN_CLUSTER_KEY_FILE = key;
  hostB.env.NODEBIN_CLUSTER_KEY_FILE = keyB;
  copyFileSync(keyB, join(hostA.root, "b.key"));
  const remotePort = testPort();
  writeFileSync(join(hostA.root, "governor.json"), JSON.stringify({ gateways: [{ name: "gw-ab", remoteNetwork: "b", remoteSeeds: [hostB.seed], remoteListen: "127.0.0.1", remoteDiscoveryPort: remotePort, remoteClusterKey: "b.key" }] }));
  await startGovernor(t, hostB, ["--network", "b"]);
  const govA = await startGovernor(t, hostA, ["--network", "a"]);
  const rows = async () => ((await govA.status()) as unknown as { gateways?: GatewayRow[] }).gateways ?? [];
  const first = await until(async () => (await rows()).find((g) => g.state === "running" && g.pid), 20_000, "the gateway listed as running");
  t.same([first.name, first.network, first.remoteNetwork, first.discoveryPort], ["gw-ab", "a", "b", hostA.port + 1], "near leg: the governor's network, the next discovery port");
  t.teardown(() => {
    for (const g of [first.pid]) if (g && alive(g)) process.kill(g, "SIGKILL");
  });
  const text = await runCli(["governor", "status", "--discovery-port", String(hostA.port)], hostA.env);
  t.match(text.stdout, /gateway gw-ab: a <-> b, running \(pid \d+\), discovery port \d+, 0 restart\(s\)/, "the text status lists it");

  const client = await Client.connect({ endpoint: `tcp://${hostA.seed}`, host: "host-a", clusterKeyFile: key });
  t.teardown(() => client.close());
  await until(() => client.nodes().some((n) => n.component === "far" && n.network === "b" && n.host === "gw-ab~a"), 60_000, "far visible through the governor's gateway");
  const r = (await client.call("far.Far/Where", { text: "via governor" }, { timeoutMs: 10_000 })) as { host: string; from: string };
  t.same([r.host, r.from], ["host-b", "gateway@gw-ab~b/relay"], "served in network b, under its own key, through it");

  process.kill(first.pid!, "SIGKILL");
  const again = await until(async () => (await rows()).find((g) => g.state === "running" && g.pid && g.pid !== first.pid && g.restarts === 1), 20_000, "the gateway started again");
  t.teardown(() => {
    if (again.pid && alive(again.pid)) process.kill(again.pid, "SIGKILL");
  });
  t.ok(alive(again.pid!), `a new gateway process (pid ${again.pid})`);
  await until(async () => {
    try {
      return ((await client.call("far.Far/Where", { text: "again" }, { timeoutMs: 3000 })) as { from: string }).from === "gateway@gw-ab~b/relay";
    } catch {
      return false;
    }
  }, 30_000, "calls served through the restarted gateway");
  t.pass("calls cross the restarted gateway");

  const stop = await runCli(["governor", "stop", "--discovery-port", String(hostA.port)], hostA.env, { timeoutMs: 30_000 });
  t.equal(stop.code, 0, stop.stderr);
  await until(() => !alive(again.pid!), 15_000, "the gateway stopped with the governor");
  t.pass("a full stop stops the gateway");
});
