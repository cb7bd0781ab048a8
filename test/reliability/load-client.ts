/**
 * A load generator run as its own process (inside a network namespace host,
 * for the link-fault test): `node --import bin/register.mjs
 * test/reliability/load-client.ts --seed IP[:PORT] --host ID --callers N
 * --deadline-ms MS --method M --request JSON`. It prints `load ready` once
 * connected, a `progress {...}` line every second (calls answered, failed,
 * nodes in its table by host), and on SIGTERM or stdin closing, one line
 * `result {...}`: every failure with its code, the node and host it
 * concerned, when it ended and how long it took. Then it exits 0.
 */
import { Client } from "../../src/client/client.ts";
import { NodeBinError } from "../../src/wire/errors.ts";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i]!.replace(/^--/, ""), process.argv[i + 1]!);
const need = (k: string) => {
  const v = args.get(k);
  if (v === undefined) throw new Error(`--${k} is required`);
  return v;
};

const client = await Client.connect({ endpoint: `tcp://${need("seed")}`, host: need("host") });
const callers = Number(need("callers"));
const deadlineMs = Number(need("deadline-ms"));
const method = need("method");
const request = JSON.parse(need("request")) as unknown;
let running = true;
let ok = 0;
let maxMs = 0;
const failures: { code: string; to: string; host: string; at: number; ms: number; message: string }[] = [];
// Every node ever seen, with its host: a failed call's node may have left the table by the time it fails.
const seen = new Map<string, string>();
const remember = () => {
  for (const n of client.nodes()) seen.set(n.id, n.host);
};
remember();
client.table.onChange(remember);
const hostOf = (id: string) => seen.get(id) ?? "";

const loop = async () => {
  while (running) {
    const started = Date.now();
    try {
      await client.call(method, request, { timeoutMs: deadlineMs });
      ok++;
    } catch (err) {
      const e = NodeBinError.from(err);
      const to = e.details.to ?? e.origin ?? "";
      failures.push({ code: e.code, to, host: hostOf(to), at: Date.now(), ms: Date.now() - started, message: e.message.slice(0, 200) });
    }
    maxMs = Math.max(maxMs, Date.now() - started);
  }
};

const byHost = () => {
  const counts: Record<string, number> = {};
  for (const n of client.nodes()) counts[n.host] = (counts[n.host] ?? 0) + 1;
  return counts;
};

process.stdout.write("load ready\n");
const loops = Array.from({ length: callers }, loop);
const progress = setInterval(() => process.stdout.write(`progress ${JSON.stringify({ at: Date.now(), ok, failed: failures.length, nodes: byHost() })}\n`), 1000);

const finish = async () => {
  if (!running) return;
  running = false;
  clearInterval(progress);
  await Promise.all(loops);
  process.stdout.write(`result ${JSON.stringify({ ok, maxMs, failures })}\n`);
  await client.close();
  process.exit(0);
};
process.on("SIGTERM", () => void finish());
process.stdin.on("end", () => void finish());
process.stdin.resume();
