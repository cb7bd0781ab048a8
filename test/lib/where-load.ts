/**
 * A load of nets.Where/Work calls (test/fixtures/networks/where), run inside a
 * test host (a network namespace) by the multi-network tests, never by tap itself:
 *   node --import bin/register.mjs test/lib/where-load.ts ENDPOINT CALLERS WORK_MS CAPACITY_WAIT_MS TIMEOUT_MS
 * CALLERS loops, each calling again as soon as its last call ended, with
 * scope "any" and the capacity wait given, through a client of the process at
 * ENDPOINT (the cluster key from $NODEBIN_CLUSTER_KEY_FILE). Prints one JSON
 * line per call as it ends: {"at":epoch ms,"ms":..,"host":..,"pid":..,"node":..}
 * or {"at":..,"ms":..,"code":..,"message":..}; "ready" first. Runs until SIGTERM.
 */
import { Client } from "../../src/client/client.ts";
import { NodeBinError } from "../../src/wire/errors.ts";

const [endpoint, callersArg, workArg, waitArg, timeoutArg] = process.argv.slice(2);
const callers = Number(callersArg);
if (!endpoint || !(callers > 0)) {
  process.stderr.write("usage: where-load.ts ENDPOINT CALLERS WORK_MS CAPACITY_WAIT_MS TIMEOUT_MS\n");
  process.exit(64);
}
const client = await Client.connect({ endpoint });
let running = true;
process.once("SIGTERM", () => {
  running = false;
  void client.close().finally(() => process.exit(0));
});
console.log("ready");
const options = { scope: "any" as const, capacityWaitMs: Number(waitArg), timeoutMs: Number(timeoutArg) };
await Promise.all(
  Array.from({ length: callers }, async (_, i) => {
    while (running) {
      const start = Date.now();
      try {
        const r = (await client.callJSON("nets.Where/Work", { ms: Number(workArg), text: `caller-${i}` }, options)) as { host: string; pid: number; nodeId: string };
        console.log(JSON.stringify({ at: Date.now(), ms: Date.now() - start, host: r.host, pid: r.pid, node: r.nodeId }));
      } catch (err) {
        const e = NodeBinError.from(err);
        console.log(JSON.stringify({ at: Date.now(), ms: Date.now() - start, code: e.code, message: e.message.slice(0, 200), ...(e.origin ? { origin: e.origin } : {}) }));
        if (running) await new Promise((r) => setTimeout(r, 50));
      }
    }
  }),
);
