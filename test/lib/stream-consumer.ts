/**
 * A STREAM consumer in a process of its own, for the stream tests:
 * `node --import bin/register.mjs test/lib/stream-consumer.ts METHOD JSON
 * [--endpoint ADDR] [--window N] [--take N]`. Prints `item JSON` per item
 * as it arrives and `end OK` or `end CODE message` at the end. With
 * --take N it stops reading after N items without leaving the stream
 * (prints `stalled`) and waits until it is killed: a consumer that died
 * without a word, as far as its producer can tell.
 */
import { Client } from "../../src/client/client.ts";
import { NodeBinError } from "../../src/wire/errors.ts";

const [method, json, ...rest] = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const endpoint = flag("--endpoint");
const window = flag("--window");
const take = Number(flag("--take") ?? 0);
const timeoutMs = flag("--timeout");

const client = await Client.connect(endpoint ? { endpoint } : {});
const stream = client.stream(method!, JSON.parse(json ?? "{}"), { ...(window ? { window: Number(window) } : {}), ...(timeoutMs ? { timeoutMs: Number(timeoutMs) } : {}) });
let n = 0;
try {
  for (;;) {
    const r = await stream.next();
    if (r.done) break;
    process.stdout.write(`item ${JSON.stringify(r.value)}\n`);
    if (++n === take) {
      process.stdout.write("stalled\n");
      setInterval(() => {}, 60_000);
      await new Promise(() => {});
    }
  }
  process.stdout.write("end OK\n");
} catch (err) {
  const e = NodeBinError.from(err);
  process.stdout.write(`end ${e.code} ${e.message}\n`);
}
await client.close();
