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
 * protobufjs decodes a Node Buffer with a reader that cuts a truncated string
 * short instead of failing; a plain Uint8Array view of the same bytes gets its
 * strict reader. Every frame from ZeroMQ and every encoded envelope is a Buffer.
 */
export function strictView(bytes: Uint8Array): Uint8Array {
  return bytes.constructor === Uint8Array ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decodes bytes as `type`. Throws INVALID_ARGUMENT when they are not a valid encoding. */
export function decodeMessage(type: protobuf.Type, bytes: Uint8Array, what: string): protobuf.Message {
  try {
    return type.decode(strictView(bytes));
  } catch (err) {
    throw new NodeBinError("INVALID_ARGUMENT", `${what}: cannot decode ${type.fullName.slice(1)}: ${(err as Error).message}`, { details: { type: type.fullName.slice(1) }, cause: err });
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
