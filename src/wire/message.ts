/**
 * Message codec: checks a JS value against a protobuf message type, then
 * encodes it; decodes bytes into a message. The check is strict where
 * protobufjs's fromObject is lenient (it turns {a:1} into "[object Object]"
 * for a string field): a wrong type, an unknown field or an out-of-range
 * number is an INVALID_ARGUMENT naming the field path. It accepts both the JS
 * forms a handler uses (numbers, Uint8Array, Long, bigint) and the proto3 JSON
 * forms a CLI user types (enum names, 64-bit integers as strings, base64 bytes).
 */
import protobuf from "protobufjs";
import { NodeBinError } from "./errors.ts";

const INT32_RANGE: Record<string, [number, number]> = {
  int32: [-2147483648, 2147483647],
  sint32: [-2147483648, 2147483647],
  sfixed32: [-2147483648, 2147483647],
  uint32: [0, 4294967295],
  fixed32: [0, 4294967295],
};
const INT64 = new Set(["int64", "sint64", "sfixed64", "uint64", "fixed64"]);
const UNSIGNED64 = new Set(["uint64", "fixed64"]);
const MAX_DEPTH = 64;
const FLOAT32_MAX = 3.4028234663852886e38;

/** Standard base64 (what protobufjs decodes): padded to a multiple of 4, or unpadded but never 1 past one. */
function isBase64(s: string): boolean {
  return /^[A-Za-z0-9+/]*={0,2}$/.test(s) && (s.endsWith("=") ? s.length % 4 === 0 : s.length % 4 !== 1);
}

/**
 * Returns a problem description for `value` as a `type`, or undefined when it
 * is acceptable. `path` names the field ("items[2].qty").
 */
export function checkMessage(type: protobuf.Type, value: unknown, path = "", depth = 0): { field: string; problem: string } | undefined {
  if (depth > MAX_DEPTH) return { field: path, problem: `nested deeper than ${MAX_DEPTH} levels` };
  if (value === null || typeof value !== "object" || Array.isArray(value) || value instanceof Uint8Array) {
    return { field: path, problem: `object expected for ${type.fullName.slice(1)}, got ${describe(value)}` };
  }
  if (value instanceof type.ctor) return undefined; // built by protobufjs itself: trusted
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    const fieldValue = record[key];
    if (fieldValue === undefined || fieldValue === null) continue;
    const field = type.fields[key];
    const fieldPath = path ? `${path}.${key}` : key;
    if (!field) {
      // protobufjs names fields in lowerCamelCase (as proto3 JSON does): point snake_case users there.
      const near = type.fields[camel(key)] ? camel(key) : closest(key, Object.keys(type.fields));
      return { field: fieldPath, problem: `unknown field in ${type.fullName.slice(1)}${near ? ` (did you mean '${near}'?)` : ""}` };
    }
    const problem = field.map
      ? checkMap(field as unknown as protobuf.MapField, fieldValue, fieldPath, depth)
      : field.repeated
        ? checkRepeated(field, fieldValue, fieldPath, depth)
        : checkValue(field, fieldValue, fieldPath, depth);
    if (problem) return problem;
  }
  for (const oneof of type.oneofsArray) {
    const set = oneof.oneof.filter((name) => record[name] !== undefined && record[name] !== null);
    if (set.length > 1) return { field: path ? `${path}.${oneof.name}` : oneof.name, problem: `only one of ${set.join(", ")} may be set` };
  }
  return undefined;
}

function checkRepeated(field: protobuf.Field, value: unknown, path: string, depth: number) {
  if (!Array.isArray(value)) return { field: path, problem: `array expected, got ${describe(value)}` };
  for (let i = 0; i < value.length; i++) {
    const problem = checkValue(field, value[i], `${path}[${i}]`, depth);
    if (problem) return problem;
  }
  return undefined;
}

function checkMap(field: protobuf.MapField, value: unknown, path: string, depth: number) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return { field: path, problem: `object (map) expected, got ${describe(value)}` };
  for (const [key, item] of Object.entries(value)) {
    const keyProblem = field.keyType === "bool" ? (key === "true" || key === "false" ? undefined : "true or false") : field.keyType === "string" ? undefined : checkScalar(field.keyType, /^-?\d+$/.test(key) ? key : NaN);
    if (keyProblem) return { field: `${path}[${JSON.stringify(key)}]`, problem: `map key: ${keyProblem}` };
    const problem = checkValue(field as unknown as protobuf.Field, item, `${path}[${JSON.stringify(key)}]`, depth);
    if (problem) return problem;
  }
  return undefined;
}

function checkValue(field: protobuf.Field, value: unknown, path: string, depth: number): { field: string; problem: string } | undefined {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) return checkMessage(resolved, value, path, depth + 1);
  if (resolved instanceof protobuf.Enum) {
    if (typeof value === "string") {
      return value in resolved.values ? undefined : { field: path, problem: `unknown ${resolved.name} value ${JSON.stringify(value)}; expected one of ${Object.keys(resolved.values).join(", ")}` };
    }
    if (typeof value === "number" && Number.isInteger(value) && value >= -2147483648 && value <= 2147483647) return undefined;
    return { field: path, problem: `${resolved.name} name or number expected, got ${describe(value)}` };
  }
  const problem = checkScalar(field.type, value);
  return problem ? { field: path, problem } : undefined;
}

/** Returns what is wrong with `value` as a scalar of protobuf type `type`, or undefined. */
function checkScalar(type: string, value: unknown): string | undefined {
  switch (type) {
    case "string":
      return typeof value === "string" ? undefined : `string expected, got ${describe(value)}`;
    case "bool":
      return typeof value === "boolean" ? undefined : `boolean expected, got ${describe(value)}`;
    case "bytes":
      if (value instanceof Uint8Array) return undefined;
      return typeof value === "string" && isBase64(value) ? undefined : `bytes (Uint8Array or standard base64 string) expected, got ${describe(value)}`;
    case "double":
    case "float": {
      const n = typeof value === "string" && /^(NaN|-?Infinity|-?\d+(\.\d+)?([eE][-+]?\d+)?)$/.test(value) ? Number(value) : value;
      if (typeof n !== "number") return `number expected, got ${describe(value)}`;
      return type === "float" && Number.isFinite(n) && Math.abs(n) > FLOAT32_MAX ? `float out of range: ${n}` : undefined;
    }
  }
  const range = INT32_RANGE[type];
  if (range) {
    const n = typeof value === "string" && /^-?\d+$/.test(value) ? Number(value) : value;
    if (typeof n !== "number" || !Number.isInteger(n)) return `integer expected, got ${describe(value)}`;
    return n < range[0] || n > range[1] ? `${type} out of range: ${n}` : undefined;
  }
  if (INT64.has(type)) {
    let big: bigint;
    if (typeof value === "number" && Number.isSafeInteger(value)) big = BigInt(value);
    else if (typeof value === "string" && /^-?\d+$/.test(value)) big = BigInt(value);
    else if (typeof value === "bigint") big = value;
    else if (protobuf.util.isInteger((value as { low?: unknown })?.low) && protobuf.util.isInteger((value as { high?: unknown })?.high)) return undefined; // Long
    else return `integer (number, decimal string or bigint) expected, got ${describe(value)}`;
    const lo = UNSIGNED64.has(type) ? 0n : -(2n ** 63n);
    const hi = UNSIGNED64.has(type) ? 2n ** 64n - 1n : 2n ** 63n - 1n;
    return big < lo || big > hi ? `${type} out of range: ${big}` : undefined;
  }
  return `unsupported field type ${type}`;
}

/**
 * Checks and encodes `value` as `type`. `what` names the message in errors
 * ("request of demo.Greeter/Hello"). Throws INVALID_ARGUMENT with
 * details.field naming the offending field.
 */
export function encodeMessage(type: protobuf.Type, value: unknown, what: string): Uint8Array {
  const problem = checkMessage(type, value ?? {});
  if (problem) {
    const where = problem.field ? ` field '${problem.field}'` : "";
    throw new NodeBinError("INVALID_ARGUMENT", `${what}:${where} ${problem.problem}`, { details: { field: problem.field, type: type.fullName.slice(1) } });
  }
  try {
    const message = value instanceof type.ctor ? value : type.fromObject(normalize(value ?? {}) as Record<string, unknown>);
    return type.encode(message).finish();
  } catch (err) {
    throw new NodeBinError("INVALID_ARGUMENT", `${what}: ${(err as Error).message}`, { details: { type: type.fullName.slice(1) }, cause: err });
  }
}

/**
 * A plain Uint8Array view of the same bytes. protobufjs reads a Node Buffer
 * with a reader that cuts a truncated string short instead of failing, and
 * slices of a Buffer are Buffers: decodeStrict reads through its own reader
 * over this view, so bounds are checked and bytes fields come out as plain
 * views whatever the frame was. Every frame from ZeroMQ and every encoded
 * envelope is a Buffer.
 */
export function strictView(bytes: Uint8Array): Uint8Array {
  return bytes.constructor === Uint8Array ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ignoreBOM: a string that starts with U+FEFF keeps it (the default would drop it silently).
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
// Up to this length an all-ASCII string is built in JS: cheaper than a call into the decoder (measured, Node 20).
const SHORT_STRING = 8;

/** What StrictReader throws for a string that is not UTF-8: `at` is the offset of its first byte. */
class InvalidUtf8 extends Error {
  constructor(readonly at: number) {
    super("string is not valid UTF-8");
  }
}

/**
 * The reader every decode of bytes from outside goes through. protobufjs
 * reads strings leniently (invalid UTF-8 becomes U+FFFD or other characters
 * than were sent, so two peers can read one id differently); this reader's
 * string() refuses invalid UTF-8 (overlong forms, surrogates, truncated
 * sequences, stray continuation bytes). The generated decoders read every
 * string through the reader they were given (nested messages, repeated
 * fields, map keys and values alike), so this one override covers them all.
 */
class StrictReader extends protobuf.Reader {
  override string(): string {
    const length = this.uint32();
    const start = this.pos;
    const end = start + length;
    if (end > this.len) throw new RangeError(`index out of range: ${start} + ${length} > ${this.len}`);
    this.pos = end;
    const buf = this.buf;
    if (length <= SHORT_STRING) {
      let s = "";
      for (let i = start; i < end; i++) {
        const c = buf[i]!;
        if (c > 0x7f) return utf8(buf, start, end);
        s += String.fromCharCode(c);
      }
      return s;
    }
    return utf8(buf, start, end);
  }
}

/** `bytes` as a string, or undefined when they are not UTF-8 (the same rules as StrictReader). */
export function utf8OrUndefined(bytes: Uint8Array): string | undefined {
  try {
    return UTF8.decode(bytes);
  } catch {
    return undefined;
  }
}

function utf8(buf: Uint8Array, start: number, end: number): string {
  try {
    return UTF8.decode(buf.subarray(start, end));
  } catch {
    throw new InvalidUtf8(start);
  }
}

/**
 * Decodes `bytes` as `type` through StrictReader. Throws what protobufjs
 * throws for a malformed encoding, and a NodeBinError INVALID_ARGUMENT with
 * details.field (the path, as checkMessage names it: "items[2].name",
 * 'meta["k"]') for a string that is not UTF-8.
 */
export function decodeStrict(type: protobuf.Type, bytes: Uint8Array): protobuf.Message {
  const view = strictView(bytes);
  try {
    return type.decode(new StrictReader(view));
  } catch (err) {
    if (!(err instanceof InvalidUtf8)) throw err;
    const found = stringFieldAt(type, view, err.at);
    const field = found?.path ?? "";
    const message = !found ? "a string field is not valid UTF-8" : found.key ? `field '${field}' has a key that is not valid UTF-8` : `field '${field}' is not valid UTF-8`;
    throw new NodeBinError("INVALID_ARGUMENT", message, { details: { field }, cause: err });
  }
}

/**
 * The path of the string field whose bytes start at offset `at` of `buf`, an
 * encoding of `type` (key: true when it is a map key). The decoder knows only
 * the offset; this walks the wire form again, guided by the schema, down to
 * it. It runs on the error path only, so the decoder pays nothing for it.
 */
function stringFieldAt(type: protobuf.Type, buf: Uint8Array, at: number): { path: string; key: boolean } | undefined {
  try {
    return walk(type, new protobuf.Reader(buf), buf.length, "", at, 0);
  } catch {
    return undefined; // bytes the decoder read cannot fail here; if they do, the error goes unnamed
  }
}

function walk(type: protobuf.Type, r: protobuf.Reader, end: number, path: string, at: number, depth: number): { path: string; key: boolean } | undefined {
  // The decoder got this deep before it failed (protobufjs stops at 100 levels): a guard, not a limit.
  if (depth > 100) return undefined;
  const seen = new Map<number, number>();
  while (r.pos < end) {
    const tag = r.uint32();
    const field = type.fieldsById[tag >>> 3];
    if ((tag & 7) !== 2) {
      r.skipType(tag & 7);
      continue;
    }
    const length = r.uint32();
    const begin = r.pos;
    r.pos = begin + length;
    if (!field) continue;
    let name = path ? `${path}.${field.name}` : field.name;
    if (field.repeated && !field.map) {
      const index = seen.get(field.id) ?? 0;
      seen.set(field.id, index + 1);
      name += `[${index}]`;
    }
    if (at < begin || at >= begin + length) continue;
    if (field.map) return mapEntry(field as unknown as protobuf.MapField, r, begin, begin + length, name, at, depth);
    if (field.resolvedType instanceof protobuf.Type) {
      r.pos = begin;
      return walk(field.resolvedType, r, begin + length, name, at, depth + 1);
    }
    return field.type === "string" && at === begin ? { path: name, key: false } : undefined;
  }
  return undefined;
}

/** walk() inside one map entry (key: field 1, value: field 2, in either order). */
function mapEntry(field: protobuf.MapField, r: protobuf.Reader, start: number, end: number, name: string, at: number, depth: number): { path: string; key: boolean } | undefined {
  r.pos = start;
  let key = "";
  let value: [number, number] | undefined;
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag >>> 3 === 1 && field.keyType === "string" && (tag & 7) === 2) {
      const length = r.uint32();
      if (r.pos === at) return { path: name, key: true };
      key = protobuf.util.utf8.read(r.buf, r.pos, r.pos + length);
      r.pos += length;
    } else if (tag >>> 3 === 1 && (tag & 7) !== 2) {
      key = String((r as unknown as Record<string, () => unknown>)[field.keyType]!.call(r));
    } else if (tag >>> 3 === 2 && (tag & 7) === 2) {
      const length = r.uint32();
      value = [r.pos, r.pos + length];
      r.pos += length;
    } else {
      r.skipType(tag & 7);
    }
  }
  if (!value || at < value[0] || at >= value[1]) return undefined;
  const path = `${name}[${JSON.stringify(key)}]`;
  if (field.resolvedType instanceof protobuf.Type) {
    r.pos = value[0];
    return walk(field.resolvedType, r, value[1], path, at, depth + 1);
  }
  return field.type === "string" && at === value[0] ? { path, key: false } : undefined;
}

/** Decodes bytes as `type`. Throws INVALID_ARGUMENT when they are not a valid encoding (details.field names a string that is not UTF-8). */
export function decodeMessage(type: protobuf.Type, bytes: Uint8Array, what: string): protobuf.Message {
  const typeName = type.fullName.slice(1);
  try {
    return decodeStrict(type, bytes);
  } catch (err) {
    if (err instanceof NodeBinError) throw new NodeBinError(err.code, `${what}: ${typeName} ${err.message}`, { details: { ...err.details, type: typeName }, cause: err });
    throw new NodeBinError("INVALID_ARGUMENT", `${what}: cannot decode ${typeName}: ${(err as Error).message}`, { details: { type: typeName }, cause: err });
  }
}

/** The proto3 JSON form of a decoded message (64-bit integers as strings, enums by name, bytes as base64, defaults included). */
export function messageToJSON(type: protobuf.Type, message: protobuf.Message): Record<string, unknown> {
  return type.toObject(message, { longs: String, enums: String, bytes: String, defaults: true, arrays: true, objects: true });
}

// fromObject does not understand bigint: turn them into decimal strings, which it does.
function normalize(value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return value.some(needsNormalizing) ? value.map(normalize) : value;
  if (value && typeof value === "object" && !(value instanceof Uint8Array) && Object.values(value).some(needsNormalizing)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
  }
  return value;
}

function needsNormalizing(v: unknown): boolean {
  return typeof v === "bigint" || (v !== null && typeof v === "object" && !(v instanceof Uint8Array));
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (value instanceof Uint8Array) return "bytes";
  if (typeof value === "string") return `string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)}`;
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return `${typeof value} ${String(value)}`;
  return typeof value;
}

function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** The candidate closest to `word` by edit distance, if it is close enough to be a likely typo. */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/** Levenshtein distance. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}
