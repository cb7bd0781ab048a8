import t from "tap";
import { Kind, PROTOCOL_VERSION, Plane, decodeEnvelope, encodeEnvelope, encodeResponse, envelope, partialEnvelope, type Envelope } from "../../src/wire/envelope.ts";
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
    ["kind", 6],
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
  if (!(result.plane === 0 || result.plane === 1) || !(result.mode >= 0 && result.mode <= 3) || !(result.kind >= 0 && result.kind <= 5)) {
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

/**
 * `frame` with the one occurrence of the ASCII `marker` replaced by `replacement`
 * (same length): how a peer that does not encode with protobufjs puts invalid
 * UTF-8 into a string field.
 */
function withBytes(frame: Uint8Array, marker: string, replacement: number[]): Buffer {
  const out = Buffer.from(frame);
  const at = out.indexOf(marker);
  if (at < 0 || out.indexOf(marker, at + 1) >= 0 || marker.length !== replacement.length) throw new Error(`marker ${marker} must occur once and match the replacement's length`);
  out.set(replacement, at);
  return out;
}

/** Byte sequences that are not UTF-8, each of a kind protobufjs used to turn into some other text. */
const INVALID_UTF8: [string, number[]][] = [
  ["a lone 0xFF", [0xff]],
  ["a stray continuation byte", [0x80]],
  ["an overlong NUL", [0xc0, 0x80]],
  ["an overlong '/'", [0xe0, 0x80, 0xaf]],
  ["a UTF-16 surrogate half", [0xed, 0xa0, 0x80]],
  ["a code point past U+10FFFF", [0xf4, 0x90, 0x80, 0x80]],
  ["a sequence cut short by ASCII", [0xe2, 0x82, 0x41]],
];

t.test("envelope - a string field that is not UTF-8 is INVALID_ARGUMENT naming the field, in every string of the envelope", async (t) => {
  const cases: [string, (m: string) => Partial<Envelope>][] = [
    ["from", (m) => ({ from: `caller-${m}` })],
    ["to", (m) => ({ to: m })],
    ["method", (m) => ({ method: `demo.${m}/Hello` })],
    ["meta", (m) => ({ meta: { ok: "1", [`key-${m}`]: "v" } })],
    ['meta["trace"]', (m) => ({ meta: { trace: `t-${m}-longer-than-eight-bytes` } })],
    ['control["hop"]', (m) => ({ control: { hop: m } })],
    ["error.message", (m) => ({ kind: Kind.RESPONSE, error: { code: 5, message: `gone ${m}`, details: {}, origin: "" } })],
    ["error.origin", (m) => ({ kind: Kind.RESPONSE, error: { code: 5, message: "gone", details: {}, origin: m } })],
    ['error.details["field"]', (m) => ({ kind: Kind.RESPONSE, error: { code: 3, message: "bad", details: { field: m }, origin: "" } })],
  ];
  for (const [field, fields] of cases) {
    for (const [what, bad] of INVALID_UTF8) {
      const marker = "~".repeat(bad.length);
      const frame = withBytes(encodeEnvelope(envelope({ id: 9, ...fields(marker) })), marker, bad);
      const err = decodeEnvelope(frame);
      t.ok(err instanceof NodeBinError, `${field}, ${what}: refused`);
      t.equal((err as NodeBinError).code, "INVALID_ARGUMENT", `${field}, ${what}: INVALID_ARGUMENT`);
      t.equal((err as NodeBinError).details.field, field, `${field}, ${what}: names the field`);
    }
  }
  // A ZeroMQ frame is often a view into a larger buffer: offsets are the view's.
  const pool = Buffer.concat([Buffer.alloc(37, 0xee), withBytes(encodeEnvelope(envelope({ from: "ab~cd" })), "~", [0xff])]);
  const err = decodeEnvelope(pool.subarray(37));
  t.equal((err as NodeBinError).details.field, "from", "a frame at an offset of its buffer names the field too");
});

t.test("envelope - valid UTF-8 of every length and width decodes to exactly what was sent", async (t) => {
  const texts = ["", "a", "ascii-only-and-longer-than-the-short-path", "é", "naïve ünïcødé ✓", "€", "𝄞 music", "\uFEFFstarts with a BOM", "nul \u0000 inside", "x".repeat(5000), "ü".repeat(3000)];
  for (const text of texts) {
    const got = decodeOk(encodeEnvelope(envelope({ from: text, method: text, meta: { [text]: text } })));
    t.equal(got.from, text, `${JSON.stringify(text.slice(0, 20))} (${text.length} chars)`);
    t.same({ ...got.meta }, { [text]: text });
    const asBuffer = decodeOk(Buffer.from(encodeEnvelope(envelope({ to: text }))));
    t.equal(asBuffer.to, text, "from a Buffer too");
  }
});

t.test("envelope - partialEnvelope reads id, plane, mode, kind, from and method of a refused frame, so its refusal can answer it", async (t) => {
  const request = { id: 4242, plane: Plane.CONTROL, mode: Mode.SYNC, kind: Kind.REQUEST, from: "caller-1", method: "nodebin.Control/Pull", state: new Uint8Array([1, 2]) };
  // Refused for a bad meta value: everything else reads.
  const badMeta = withBytes(encodeEnvelope(envelope({ ...request, meta: { k: "~" } })), "~", [0xff]);
  t.ok(decodeEnvelope(badMeta) instanceof NodeBinError, "decodeEnvelope refuses it");
  const partial = partialEnvelope(badMeta);
  t.match(partial, { id: 4242, plane: Plane.CONTROL, mode: Mode.SYNC, kind: Kind.REQUEST, from: "caller-1", method: "nodebin.Control/Pull" });
  t.same(bytes(partial.state!), [1, 2], "pass-through state, to echo");

  // The refusal, built as a listener builds it, answers the request's id.
  const answer = decodeOk(encodeResponse(envelope(partial), "", undefined, new NodeBinError("INVALID_ARGUMENT", "bad").toWire()));
  t.same([answer.id, answer.kind, answer.plane, answer.to, answer.method], [4242, Kind.RESPONSE, Plane.CONTROL, "caller-1", "nodebin.Control/Pull"], "the answer carries the request's id, back to its sender");

  // A `from` that is not UTF-8 is left out; what follows it still reads.
  const badFrom = withBytes(encodeEnvelope(envelope({ ...request, from: "~" })), "~", [0xc0]);
  const noFrom = partialEnvelope(badFrom);
  t.equal(noFrom.id, 4242);
  t.equal(noFrom.from, undefined, "the invalid from is not used");
  t.equal(noFrom.method, "nodebin.Control/Pull", "the method after it is read");

  // Out-of-range enums (decodeEnvelope refuses them) are left out.
  const badPlane = partialEnvelope(encodeEnvelope(envelope({ id: 5, plane: 7 as Plane, kind: 9 as Kind, mode: Mode.ASYNC })));
  t.same([badPlane.id, badPlane.plane, badPlane.kind, badPlane.mode], [5, undefined, undefined, Mode.ASYNC]);

  // A frame cut inside its method: what came before stands.
  const full = encodeEnvelope(envelope(request));
  const cut = Buffer.from(full).indexOf("Control/Pull");
  const truncated = partialEnvelope(full.subarray(0, cut));
  t.match(truncated, { id: 4242, from: "caller-1" });
  t.equal(truncated.method, undefined, "the cut string is not used");

  // Another protocol version: still answerable.
  t.equal(partialEnvelope(encodeEnvelope(envelope({ id: 77, version: PROTOCOL_VERSION + 1 }))).id, 77);
  t.same(partialEnvelope(new Uint8Array(0)), {}, "an empty frame says nothing");
  t.same(partialEnvelope(new Uint8Array([0xff, 0xff, 0xff])), {}, "neither does garbage");
});

t.test("envelope - partialEnvelope never throws, on random frames and every truncation", async (t) => {
  const random = seededRandom(0xbad);
  const failures: string[] = [];
  const frames: Uint8Array[] = [];
  for (let i = 0; i < 5000; i++) {
    const frame = new Uint8Array(Math.floor(random() * 300));
    for (let j = 0; j < frame.length; j++) frame[j] = Math.floor(random() * 256);
    frames.push(frame);
  }
  const full = encodeEnvelope(fullEnvelope());
  for (let length = 0; length <= full.length; length++) frames.push(full.subarray(0, length));
  for (const frame of frames) {
    try {
      const p = partialEnvelope(frame);
      if (p.plane !== undefined && p.plane !== 0 && p.plane !== 1) failures.push(`plane ${p.plane}`);
      if (p.kind !== undefined && !(p.kind >= 0 && p.kind <= 4)) failures.push(`kind ${p.kind}`);
      if (p.mode !== undefined && !(p.mode >= 0 && p.mode <= 3)) failures.push(`mode ${p.mode}`);
    } catch (err) {
      failures.push(`threw ${String(err)}`);
    }
  }
  t.same(failures.slice(0, 5), []);
  t.match(partialEnvelope(full), { id: 0xffffffff, from: "client-1/caller", method: "demo.Greeter/Hello" }, "a whole frame reads in full");
});
