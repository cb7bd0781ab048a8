import t from "tap";
import { Kind, PROTOCOL_VERSION, Plane, decodeEnvelope, encodeEnvelope, encodeResponse, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { Mode } from "../../src/wire/schema.ts";
import { seededRandom } from "../lib/seeded-random.ts";

const bytes = (b: Uint8Array) => Array.from(b);

/** An envelope with every field set away from its default. */
function fullEnvelope(): Envelope {
  return envelope({
    version: PROTOCOL_VERSION,
    id: 0xffffffff,
    plane: Plane.CONTROL,
    mode: Mode.BROADCAST,
    kind: Kind.CANCEL,
    from: "client-1/caller",
    to: "greeter-abc123",
    method: "demo.Greeter/Hello",
    value: new Uint8Array([0, 1, 2, 254, 255]),
    error: { code: 5, message: "not found: ünïcødé ✓", details: { field: "a.b", suggestions: "x,y" }, origin: "node-9" },
    meta: { via: "test", "trace-id": "abc", empty: "" },
    state: new Uint8Array([9, 8, 7]),
    control: { capacity: "3", "x-hop": "1" },
    deadlineMs: 0xffffffff,
  });
}

function decodeOk(frame: Uint8Array): Envelope {
  const env = decodeEnvelope(frame);
  if (env instanceof NodeBinError) throw env;
  return env;
}

t.test("envelope - every field survives encode and decode", async (t) => {
  const sent = fullEnvelope();
  const got = decodeOk(encodeEnvelope(sent));
  t.equal(got.version, PROTOCOL_VERSION);
  t.equal(got.id, 0xffffffff);
  t.equal(got.plane, Plane.CONTROL);
  t.equal(got.mode, Mode.BROADCAST);
  t.equal(got.kind, Kind.CANCEL);
  t.equal(got.from, sent.from);
  t.equal(got.to, sent.to);
  t.equal(got.method, sent.method);
  t.same(bytes(got.value), bytes(sent.value));
  t.same({ ...got.error }, sent.error);
  t.same({ ...got.meta }, sent.meta);
  t.same(bytes(got.state), bytes(sent.state));
  t.same({ ...got.control }, sent.control);
  t.equal(got.deadlineMs, 0xffffffff);
});

t.test("envelope - every plane, mode and kind round trips", async (t) => {
  for (const plane of Object.values(Plane)) {
    for (const mode of Object.values(Mode)) {
      for (const kind of Object.values(Kind)) {
        const got = decodeOk(encodeEnvelope(envelope({ plane, mode, kind, id: 7 })));
        t.same([got.plane, got.mode, got.kind, got.id], [plane, mode, kind, 7], `plane ${plane} mode ${mode} kind ${kind}`);
      }
    }
  }
});

t.test("envelope - envelope() fills defaults that decode to the same values", async (t) => {
  const env = envelope({});
  t.equal(env.version, PROTOCOL_VERSION);
  t.equal(env.kind, Kind.REQUEST);
  t.equal(env.error, null);
  const got = decodeOk(encodeEnvelope(env));
  t.equal(got.id, 0);
  t.equal(got.plane, Plane.APPLICATION);
  t.equal(got.mode, Mode.SYNC);
  t.equal(got.kind, Kind.REQUEST);
  t.equal(got.from, "");
  t.equal(got.method, "");
  t.equal(got.value.length, 0);
  t.equal(got.state.length, 0);
  t.notOk(got.error, "no error");
  t.same({ ...got.meta }, {});
  t.same({ ...got.control }, {});
  t.equal(got.deadlineMs, 0);
});

t.test("envelope - another protocol version is FAILED_PRECONDITION", async (t) => {
  for (const version of [0, PROTOCOL_VERSION + 1, 0xffffffff]) {
    const err = decodeEnvelope(encodeEnvelope(envelope({ version })));
    t.ok(err instanceof NodeBinError, `version ${version} refused`);
    t.equal((err as NodeBinError).code, "FAILED_PRECONDITION");
    t.equal((err as NodeBinError).details.version, String(version));
  }
  const empty = decodeEnvelope(new Uint8Array(0));
  t.equal((empty as NodeBinError).code, "FAILED_PRECONDITION", "an empty frame has version 0");
});

t.test("envelope - unknown plane, mode and kind numbers are INVALID_ARGUMENT naming the field", async (t) => {
  const cases: [keyof Envelope, number][] = [
    ["plane", 2],
    ["plane", -1],
    ["plane", 0x7fffffff],
    ["mode", 4],
    ["mode", -2],
    ["kind", 5],
    ["kind", 1000],
  ];
  for (const [field, value] of cases) {
    const err = decodeEnvelope(encodeEnvelope(envelope({ [field]: value })));
    t.ok(err instanceof NodeBinError, `${field} ${value} refused`);
    t.equal((err as NodeBinError).code, "INVALID_ARGUMENT");
    t.equal((err as NodeBinError).details.field, field);
  }
});

t.test("envelope - a version mismatch is reported before unknown enums", async (t) => {
  const err = decodeEnvelope(encodeEnvelope(envelope({ version: 2, plane: 9 as Plane })));
  t.equal((err as NodeBinError).code, "FAILED_PRECONDITION");
});

/** Asserts the decoder's contract for one frame; returns which way it went. */
function checkDecode(frame: Uint8Array): "envelope" | "error" | string {
  let result: Envelope | NodeBinError;
  try {
    result = decodeEnvelope(frame);
  } catch (err) {
    return `threw ${String(err)}`;
  }
  if (result instanceof NodeBinError) {
    return result.code === "INVALID_ARGUMENT" || result.code === "FAILED_PRECONDITION" ? "error" : `unexpected code ${result.code}`;
  }
  if (result.version !== PROTOCOL_VERSION) return `accepted version ${result.version}`;
  if (!(result.plane === 0 || result.plane === 1) || !(result.mode >= 0 && result.mode <= 3) || !(result.kind >= 0 && result.kind <= 4)) {
    return `accepted enums ${result.plane}/${result.mode}/${result.kind}`;
  }
  return "envelope";
}

t.test("envelope - 10,000 random frames never make decodeEnvelope throw", async (t) => {
  const random = seededRandom(0x5eed);
  const outcomes: Record<string, number> = {};
  const failures: string[] = [];
  for (let i = 0; i < 10_000; i++) {
    const frame = new Uint8Array(Math.floor(random() * 513));
    for (let j = 0; j < frame.length; j++) frame[j] = Math.floor(random() * 256);
    // Every 4th frame starts like a real envelope, to get past the version check more often.
    if (i % 4 === 0 && frame.length >= 2) frame.set([0x08, PROTOCOL_VERSION]);
    const outcome = checkDecode(frame);
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    if (outcome !== "envelope" && outcome !== "error" && failures.length < 5) failures.push(`${outcome} for [${bytes(frame).slice(0, 32).join(",")}...]`);
  }
  t.same(failures, [], "no frame threw or slipped through");
  t.equal((outcomes.envelope ?? 0) + (outcomes.error ?? 0), 10_000);
  t.ok(outcomes.error! > 0, "garbage was refused");
});

t.test("envelope - every truncation of a valid frame decodes or is refused, never throws", async (t) => {
  const frame = encodeEnvelope(fullEnvelope());
  t.ok(frame.length > 100, "a frame long enough to truncate in many places");
  const failures: string[] = [];
  let refused = 0;
  for (let length = 0; length < frame.length; length++) {
    // Both forms a frame arrives in: a Node Buffer (encodeEnvelope, ZeroMQ) and a plain Uint8Array.
    const outcome = checkDecode(Uint8Array.from(frame.subarray(0, length)));
    if (outcome === "error") refused++;
    else if (outcome !== "envelope") failures.push(`length ${length}: ${outcome}`);
    const asBuffer = checkDecode(Buffer.from(frame.subarray(0, length)));
    if (asBuffer !== "error" && asBuffer !== "envelope") failures.push(`length ${length} (Buffer): ${asBuffer}`);
  }
  t.same(failures, []);
  t.ok(refused > frame.length / 2, `most truncations are refused (${refused} of ${frame.length})`);
  t.equal(checkDecode(frame), "envelope", "the whole frame decodes");
});

t.test("envelope - every single-bit flip of a valid frame decodes or is refused, never throws", async (t) => {
  const frame = encodeEnvelope(fullEnvelope());
  const failures: string[] = [];
  for (let i = 0; i < frame.length * 8; i++) {
    const flipped = Uint8Array.from(frame);
    flipped[i >> 3]! ^= 1 << (i & 7);
    const outcome = checkDecode(flipped);
    if (outcome !== "envelope" && outcome !== "error") failures.push(`bit ${i}: ${outcome}`);
  }
  t.same(failures, []);
});

t.test("envelope - encodeResponse answers a request: same id, plane, mode, method and state, back to its sender", async (t) => {
  const request = decodeOk(
    encodeEnvelope(
      envelope({ id: 41, plane: Plane.CONTROL, mode: Mode.ASYNC, from: "caller-1", to: "node-1", method: "a.B/C", meta: { m: "1" }, state: new Uint8Array([5, 6]), deadlineMs: 500 }),
    ),
  );
  const ok = decodeOk(encodeResponse(request, "node-1", new Uint8Array([1, 2, 3])));
  t.equal(ok.kind, Kind.RESPONSE);
  t.equal(ok.id, 41);
  t.equal(ok.plane, Plane.CONTROL);
  t.equal(ok.mode, Mode.ASYNC);
  t.equal(ok.method, "a.B/C");
  t.equal(ok.from, "node-1");
  t.equal(ok.to, "caller-1");
  t.same(bytes(ok.state), [5, 6], "pass-through state echoed");
  t.same(bytes(ok.value), [1, 2, 3]);
  t.notOk(ok.error);
  t.same({ ...ok.meta }, {}, "meta is not echoed");
  t.equal(ok.deadlineMs, 0);

  const failed = decodeOk(encodeResponse(request, "node-1", undefined, new NodeBinError("NOT_FOUND", "gone", { origin: "node-1" }).toWire()));
  t.equal(failed.error?.code, 5);
  t.equal(failed.error?.origin, "node-1");
  t.equal(failed.value.length, 0);

  const ack = decodeOk(encodeResponse(request, "node-1"));
  t.notOk(ack.error, "an acceptance has no error");
  t.equal(ack.value.length, 0, "and no value");
});

t.test("envelope - a Buffer frame cut inside a string field is INVALID_ARGUMENT, as a Uint8Array is", async (t) => {
  const frame = encodeEnvelope(envelope({ id: 3, method: "demo.Greeter/Hello" }));
  const cut = Buffer.from(frame).indexOf("Hello") + 2;
  for (const [label, bytes] of [
    ["Buffer", Buffer.from(frame.subarray(0, cut))],
    ["Uint8Array", Uint8Array.from(frame.subarray(0, cut))],
  ] as const) {
    const decoded = decodeEnvelope(bytes);
    t.ok(decoded instanceof NodeBinError, `${label}: refused, not shortened`);
    t.equal((decoded as NodeBinError).code, "INVALID_ARGUMENT", label);
  }
});
