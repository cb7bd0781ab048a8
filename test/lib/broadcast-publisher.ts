/**
 * A broadcast load, run inside a test host (a network namespace) by
 * test/integration/broadcast-netns.test.ts, never by tap itself:
 *   node --import bin/register.mjs test/lib/broadcast-publisher.ts ENDPOINT COUNT BYTES RATE [PREFIX]
 * broadcasts COUNT notes to demo.Board/Post, each with a text of BYTES, at
 * about RATE a second (a step every 10 ms, each step's acknowledgements
 * awaited before the next), through a client of the process at ENDPOINT (the
 * cluster key from $NODEBIN_CLUSTER_KEY_FILE). Prints one JSON line:
 * {"sent":COUNT,"ms":...}; exits 1 with the error on stderr.
 */
import { Client } from "../../src/client/client.ts";

const [endpoint, countArg, bytesArg, rateArg, prefix = "load"] = process.argv.slice(2);
const count = Number(countArg);
const bytes = Number(bytesArg);
const rate = Number(rateArg);
if (!endpoint || !(count > 0) || !(bytes >= 0) || !(rate > 0)) {
  process.stderr.write("usage: broadcast-publisher.ts ENDPOINT COUNT BYTES RATE [PREFIX]\n");
  process.exit(64);
}
const client = await Client.connect({ endpoint, refreshMs: 0 });
const pad = "x".repeat(bytes);
const perStep = Math.max(1, Math.round(rate / 100));
const started = performance.now();
try {
  for (let sent = 0; sent < count; ) {
    const stepEnds = performance.now() + 10;
    const n = Math.min(perStep, count - sent);
    await Promise.all(Array.from({ length: n }, (_, i) => client.broadcast("demo.Board/Post", { text: `${prefix}-${sent + i}:${pad}`, author: "publisher" })));
    sent += n;
    const wait = stepEnds - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  process.stdout.write(`${JSON.stringify({ sent: count, ms: Math.round(performance.now() - started) })}\n`);
} catch (err) {
  process.stderr.write(`${String(err)}\n`);
  process.exitCode = 1;
} finally {
  await client.close();
}
