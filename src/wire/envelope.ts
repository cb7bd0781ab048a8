/**
 * The Envelope codec. encodeEnvelope never fails on an Envelope built by the
 * runtime; decodeEnvelope takes any bytes at all and returns either a checked
 * Envelope or a NodeBinError: nothing malformed throws past this boundary.
 */
import protobuf from "protobufjs";
import { NodeBinError, type WireError } from "./errors.ts";
import { loadNodebinProtos } from "./proto.ts";
import { decodeStrict, strictView, utf8OrUndefined } from "./message.ts";
import { MODE_NAMES, type Mode } from "./schema.ts";

/** The protocol version this build speaks. */
export const PROTOCOL_VERSION = 1;

export const Plane = { APPLICATION: 0, CONTROL: 1 } as const;
export type Plane = (typeof Plane)[keyof typeof Plane];

/** See envelope.proto: STREAM_ITEM and STREAM_END answer a STREAM request; CANCEL and CREDIT (flow control) go the request's way. */
export const Kind = { REQUEST: 0, RESPONSE: 1, STREAM_ITEM: 2, STREAM_END: 3, CANCEL: 4, CREDIT: 5 } as const;
export type Kind = (typeof Kind)[keyof typeof Kind];
const KIND_COUNT = 6;

export interface Envelope {
  version: number;
  id: number;
  plane: Plane;
  mode: Mode;
  kind: Kind;
  from: string;
  to: string;
  method: string;
  value: Uint8Array;
  error?: WireError | null;
  meta: Record<string, string>;
  state: Uint8Array;
  control: Record<string, string>;
  /** Time left when sent, in ms (0 = none). */
  deadlineMs: number;
  /** STREAM flow control: the opening window on a REQUEST, the items granted on a CREDIT (0 elsewhere). */
  credit: number;
}

/** The nodebin protos, parsed once: immutable after load, shared by every codec user. */
export const nodebinRoot: protobuf.Root = loadNodebinProtos();
const EnvelopeType = nodebinRoot.lookupType("nodebin.Envelope");

const EMPTY = new Uint8Array(0);

/** An Envelope with every field at its default, for the runtime to fill in. */
export function envelope(fields: Partial<Envelope>): Envelope {
  return {
    version: PROTOCOL_VERSION,
    id: 0,
    plane: Plane.APPLICATION,
    mode: 0,
    kind: Kind.REQUEST,
    from: "",
    to: "",
    method: "",
    value: EMPTY,
    error: null,
    meta: {},
    state: EMPTY,
    control: {},
    deadlineMs: 0,
    credit: 0,
    ...fields,
  };
}

export function encodeEnvelope(env: Envelope): Uint8Array {
  return EnvelopeType.encode(env).finish();
}

/**
 * Decodes and checks a frame. Returns a NodeBinError (never throws):
 * INVALID_ARGUMENT for bytes that are not an Envelope, carry out-of-range
 * enums or a string that is not UTF-8 (details.field names it: "from",
 * 'meta["k"]', "error.message"), FAILED_PRECONDITION for a protocol version
 * this build does not speak. partialEnvelope() reads what a refused frame
 * still says about its request (its id, to answer it).
 */
export function decodeEnvelope(frame: Uint8Array): Envelope | NodeBinError {
  let env: Envelope;
  try {
    env = decodeStrict(EnvelopeType, frame) as unknown as Envelope;
  } catch (err) {
    if (err instanceof NodeBinError) return new NodeBinError(err.code, `malformed envelope: ${err.message}`, { details: err.details, cause: err });
    return new NodeBinError("INVALID_ARGUMENT", `malformed envelope (${frame.length} bytes): ${(err as Error).message}`, { cause: err });
  }
  if (env.version !== PROTOCOL_VERSION) {
    return new NodeBinError("FAILED_PRECONDITION", `envelope has protocol version ${env.version}; this node speaks ${PROTOCOL_VERSION}`, {
      details: { version: String(env.version) },
    });
  }
  // Unknown enum numbers decode without complaint in proto3: refuse them here.
  if (env.plane !== Plane.APPLICATION && env.plane !== Plane.CONTROL) return badField("plane", env.plane);
  if (!(env.mode >= 0 && env.mode < MODE_NAMES.length)) return badField("mode", env.mode);
  if (!(env.kind >= 0 && env.kind < KIND_COUNT)) return badField("kind", env.kind);
  return env;
}

/**
 * What a frame that decodeEnvelope refused still says about its request, so
 * that the refusal can answer it (same id, plane, mode and method, sent back
 * to its `from`) instead of id 0, which no caller waits for. It reads the
 * top-level fields in wire order and keeps each one that reads cleanly: a
 * string that is not UTF-8 and an out-of-range enum are left out, and
 * reading stops at the first byte that does not parse (what came before it
 * stands). Never throws. Use it only on the error path: it reads the frame a
 * second time.
 */
export function partialEnvelope(frame: Uint8Array): Partial<Envelope> {
  const out: Partial<Envelope> = {};
  const r = new protobuf.Reader(strictView(frame));
  try {
    while (r.pos < r.len) {
      const tag = r.uint32();
      // The whole tag (field number and wire type) selects: a field sent with the wrong wire type is skipped.
      switch (tag) {
        case (1 << 3) | 0:
          out.version = r.uint32();
          break;
        case (2 << 3) | 0:
          out.id = r.uint32();
          break;
        case (3 << 3) | 0: {
          const plane = r.int32();
          if (plane === Plane.APPLICATION || plane === Plane.CONTROL) out.plane = plane;
          break;
        }
        case (4 << 3) | 0: {
          const mode = r.int32();
          if (mode >= 0 && mode < MODE_NAMES.length) out.mode = mode as Mode;
          break;
        }
        case (5 << 3) | 0: {
          const kind = r.int32();
          if (kind >= 0 && kind < KIND_COUNT) out.kind = kind as Kind;
          break;
        }
        case (6 << 3) | 2:
        case (7 << 3) | 2:
        case (8 << 3) | 2: {
          const text = utf8OrUndefined(r.bytes());
          if (text !== undefined) out[tag === ((6 << 3) | 2) ? "from" : tag === ((7 << 3) | 2) ? "to" : "method"] = text;
          break;
        }
        case (12 << 3) | 2:
          out.state = r.bytes();
          break;
        default:
          r.skipType(tag & 7);
      }
    }
  } catch {
    // The first byte that does not parse: the fields read so far are the answer.
  }
  return out;
}

function badField(field: string, value: number): NodeBinError {
  return new NodeBinError("INVALID_ARGUMENT", `envelope has unknown ${field} ${value}`, { details: { field } });
}

/** The encoded RESPONSE to `request`, from endpoint `from`: a reply value, an error, or neither (an ASYNC acceptance). */
export function encodeResponse(request: Envelope, from: string, value?: Uint8Array, error?: WireError): Uint8Array {
  return encodeEnvelope(
    envelope({
      id: request.id,
      plane: request.plane,
      mode: request.mode,
      kind: Kind.RESPONSE,
      from,
      to: request.from,
      method: request.method,
      state: request.state,
      ...(value ? { value } : {}),
      ...(error ? { error } : {}),
    }),
  );
}
