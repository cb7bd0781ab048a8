// Bad input: property-based (fast-check) fuzzing of what reaches a node from
// outside. At least 100,000 malformed frames and envelopes go to a container's
// tcp port: garbage, truncated envelopes, valid envelopes carrying garbage
// values, out-of-range enums (modes, kinds, planes), wild deadlines, unknown
// methods and nodes, huge length prefixes; and a few messages larger than the
// configured limit. And 20,000 random JSON requests go through the client's
// JSON path (the strict message checker), 2,000 of them over the network.
// And 20,000 stream frames (STREAM_ITEM, STREAM_END, CANCEL, CREDIT) for
// streams that do not exist: counted and dropped, nothing answered or held.
// The node must never crash, must answer with coded errors where there is
// someone to answer, must keep serving, and must not grow without bound.
import fc from "fast-check";
import t from "tap";
import * as zmq from "zeromq";
import { Client } from "../../src/client/client.ts";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope, nodebinRoot } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { decodeMessage, encodeMessage } from "../../src/wire/message.ts";
import { PING, readReply } from "../../src/wire/control.ts";
import { Mode } from "../../src/wire/schema.ts";
import { join } from "node:path";
import { privateRuntime, ROOT, startContainer, testPort } from "../lib/processes.ts";
import { MiB, rssOf } from "../lib/load.ts";

const FRAMES = 100_000;
const PORT = testPort();
const EnvelopeType = nodebinRoot.lookupType("nodebin.Envelope");
const KNOWN_CODES = new Set(Array.from({ length: 17 }, (_, i) => i));

t.test(`fuzz - ${FRAMES} malformed frames at a node's tcp port; random JSON through the client path`, { timeout: 240_000 }, async (t) => {
  const env = { ...privateRuntime(t), NODEBIN_HOST: "fuzz-host" };
  const echo = await startContainer(t, ["--component", "echo", "--components", join(ROOT, "bench", "components"), "--listen", "127.0.0.1", "--discovery-port", String(PORT)], env);
  const tcp = /tcp:\/\/127\.0\.0\.1:\d+/.exec(echo.readyLine)![0];
  const node = /ready: (\S+)/.exec(echo.readyLine)![1]!;
  const pid = echo.child.pid!;
  const rssBefore = rssOf(pid);

  const raw = new zmq.Dealer({ linger: 0, sendHighWaterMark: 100_000, receiveHighWaterMark: 100_000 });
  raw.connect(tcp);
  t.teardown(() => raw.close());
  let answers = 0;
  let badAnswers = 0;
  const codes = new Map<number, number>();
  const reading = (async () => {
    try {
      for await (const [frame] of raw) {
        const e = decodeEnvelope(frame!);
        if (e instanceof NodeBinError || e.kind !== Kind.RESPONSE) {
          badAnswers++;
          continue;
        }
        answers++;
        const code = e.error?.code ?? 0;
        if (!KNOWN_CODES.has(code)) badAnswers++;
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
    } catch {
      // closed
    }
  })();

  const valid = (fields: Record<string, unknown>) => encodeEnvelope(envelope({ id: 1, plane: Plane.APPLICATION, mode: 1, kind: Kind.REQUEST, from: "fuzz", to: node, method: "bench.Echo/Echo", deadlineMs: 5000, ...fields }));
  // Envelope fields as protobufjs would write them, any values at all (out-of-range enums included).
  const rawEnvelope = fc.record(
    {
      version: fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 0xffffffff })),
      id: fc.integer({ min: 0, max: 0xffffffff }),
      plane: fc.integer({ min: 0, max: 9 }),
      mode: fc.integer({ min: 0, max: 9 }),
      kind: fc.integer({ min: 0, max: 9 }),
      from: fc.oneof(fc.constant("fuzz"), fc.string({ maxLength: 40 })),
      to: fc.oneof(fc.constant(node), fc.constant(""), fc.string({ maxLength: 40 })),
      method: fc.oneof(fc.constant("bench.Echo/Echo"), fc.constant("nodebin.Control/Pull"), fc.string({ maxLength: 60 })),
      value: fc.uint8Array({ maxLength: 64 }),
      deadlineMs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff })),
    },
    { requiredKeys: [] },
  );
  const frame = fc.oneof(
    // garbage
    fc.uint8Array({ maxLength: 300 }),
    // a valid envelope cut short, or with bytes flipped
    fc.tuple(fc.integer({ min: 0, max: 60 }), fc.uint8Array({ maxLength: 8 })).map(([cut, noise]) => {
      const bytes = valid({ value: encodeMessage(nodebinRoot.lookupType("nodebin.Empty"), {}, "x") });
      const out = bytes.slice(0, Math.min(cut, bytes.length));
      return noise.length ? new Uint8Array([...out, ...noise]) : out;
    }),
    // a well-formed envelope with garbage values and any enums
    rawEnvelope.map((fields) => EnvelopeType.encode(EnvelopeType.fromObject(fields)).finish()),
    // a request for the echo node whose value is not a Payload (wrong wire types)
    fc.uint8Array({ minLength: 1, maxLength: 80 }).map((value) => valid({ value })),
    // a huge length prefix: field 10 (value), length 2^31 and a few bytes
    fc.integer({ min: 1, max: 0x7fffffff }).map((len) => {
      const varint: number[] = [];
      let v = len;
      while (v > 0x7f) {
        varint.push((v & 0x7f) | 0x80);
        v >>>= 7;
      }
      varint.push(v);
      return new Uint8Array([0x08, 0x01, 0x52, ...varint, 1, 2, 3]);
    }),
  );
  const samples = fc.sample(frame, { numRuns: FRAMES, seed: 20261129 });
  const started = Date.now();
  for (const f of samples) await raw.send(f);
  // Everything that can be answered is answered within a bounded time.
  const until = Date.now() + 60_000;
  let last = -1;
  while (Date.now() < until) {
    await new Promise((r) => setTimeout(r, 500));
    if (answers === last) break;
    last = answers;
  }
  t.comment(`${samples.length} frames sent in ${Date.now() - started} ms; ${answers} answered (${[...codes].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${n} x code ${c}`).join(", ")})`);
  t.equal(echo.child.exitCode, null, "the node process survived");
  t.equal(badAnswers, 0, "every answer is a well-formed response with a known code");
  t.ok(answers >= samples.length * 0.5, `most frames got an answer (${answers})`);

  // Larger than the configured limit (16 MiB): the connection is dropped, the node lives on.
  const big = new zmq.Dealer({ linger: 0 });
  big.connect(tcp);
  await big.send(new Uint8Array(17 * MiB));
  big.close();

  // The client's JSON path: the strict checker refuses with INVALID_ARGUMENT, never anything else.
  const client = await Client.connect({ endpoint: `tcp://127.0.0.1:${PORT}`, host: "fuzz-host" });
  t.teardown(() => client.close());
  const echoType = client.method("bench.Echo/Echo").requestType;
  const json = fc.sample(fc.oneof(fc.jsonValue(), fc.dictionary(fc.constantFrom("a", "b", "c", "__proto__", "constructor"), fc.jsonValue())), { numRuns: 20_000, seed: 7 });
  let refused = 0;
  let accepted = 0;
  const wrong: string[] = [];
  for (const value of json) {
    try {
      encodeMessage(echoType, value, "request");
      accepted++;
    } catch (err) {
      const e = NodeBinError.from(err);
      if (e.code === "INVALID_ARGUMENT") refused++;
      else wrong.push(`${e.code}: ${e.message}`);
    }
  }
  t.same(wrong.slice(0, 5), [], `the checker refused ${refused} and accepted ${accepted} of 20000 JSON values, always with INVALID_ARGUMENT`);
  let netOk = 0;
  const netWrong: string[] = [];
  await Promise.all(
    Array.from({ length: 16 }, async (_, w) => {
      for (let i = w; i < 2000; i += 16) {
        try {
          await client.call("bench.Echo/Echo", json[i], { timeoutMs: 10_000 });
          netOk++;
        } catch (err) {
          const e = NodeBinError.from(err);
          if (e.code !== "INVALID_ARGUMENT") netWrong.push(`${e.code}: ${e.message}`);
        }
      }
    }),
  );
  t.same(netWrong.slice(0, 5), [], `2000 random JSON calls over the network: ${netOk} answered, the rest INVALID_ARGUMENT`);

  const reply = (await client.call("bench.Echo/Echo", { a: 5, b: "after the storm" })) as { a: number; b: string };
  t.same({ a: reply.a, b: reply.b }, { a: 5, b: "after the storm" }, "the node still serves");

  // Stream frames for no stream: CANCEL and CREDIT reach the node (counted there), STREAM_ITEM and
  // STREAM_END are answers, which a listener takes from nobody (counted as answerAtListener).
  const ipc = /ipc:\/\/\S+/.exec(echo.readyLine)![0];
  const counters = async () => {
    const d = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
    d.connect(ipc);
    try {
      await d.send(encodeEnvelope(envelope({ id: 1, plane: Plane.CONTROL, mode: Mode.SYNC, kind: Kind.REQUEST, from: "fuzz", method: PING.schema.fullName, value: encodeMessage(PING.schema.requestType, {}, "ping"), deadlineMs: 5000 })));
      const [frame] = await d.receive();
      const pong = decodeEnvelope(frame!);
      if (pong instanceof NodeBinError) throw pong;
      return readReply(PING, decodeMessage(PING.schema.responseType, pong.value, "pong")).refused;
    } finally {
      d.close();
    }
  };
  const before = await counters();
  const answersBefore = answers;
  const streamFrames = fc.sample(
    fc.record({ kind: fc.constantFrom(Kind.STREAM_ITEM, Kind.STREAM_END, Kind.CANCEL, Kind.CREDIT), id: fc.integer({ min: 0, max: 0xffffffff }), credit: fc.integer({ min: 0, max: 0xffffffff }), from: fc.oneof(fc.constant("fuzz"), fc.string({ maxLength: 20 })) }),
    { numRuns: 20_000, seed: 13 },
  );
  for (const f of streamFrames) await raw.send(encodeEnvelope(envelope({ ...f, plane: Plane.APPLICATION, mode: Mode.STREAM, to: node, method: "bench.Echo/Echo", value: new Uint8Array([1, 2, 3]) })));
  const toNode = streamFrames.filter((f) => f.kind === Kind.CANCEL || f.kind === Kind.CREDIT).length;
  let after = await counters();
  for (const until = Date.now() + 20_000; (after.unknownStreamFrames ?? 0) - (before.unknownStreamFrames ?? 0) < toNode && Date.now() < until; ) {
    await new Promise((r) => setTimeout(r, 200));
    after = await counters();
  }
  t.equal((after.unknownStreamFrames ?? 0) - (before.unknownStreamFrames ?? 0), toNode, `every CANCEL and CREDIT for no stream counted at the node (${toNode})`);
  t.equal((after.answerAtListener ?? 0) - (before.answerAtListener ?? 0), streamFrames.length - toNode, "every STREAM_ITEM and STREAM_END counted at the listener");
  t.equal(answers, answersBefore, "none of them answered");
  t.match(await client.call("bench.Echo/Echo", { a: 6, b: "after the streams" }), { a: 6, b: "after the streams" }, "the node still serves");
  const rssAfter = rssOf(pid);
  if (rssBefore !== undefined && rssAfter !== undefined) {
    t.ok(rssAfter <= rssBefore + 96 * MiB, `RSS ${Math.round(rssBefore / MiB)} -> ${Math.round(rssAfter / MiB)} MiB (bound: +96 MiB, the 16 MiB receive buffers and the capped reply routes included)`);
  }
  raw.close();
  await reading;
});
