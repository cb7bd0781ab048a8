/**
 * The Envelope codec. encodeEnvelope never fails on an Envelope built by the
 * runtime; decodeEnvelope takes any bytes at all and returns either a checked
 * Envelope or a NodeBinError: nothing malformed throws past this boundary.
 */
import type protobuf from "protobufjs";
import { NodeBinError, type WireError } from "./errors.ts";
import { loadNodebinProtos } from "./proto.ts";
import { strictView } from "./message.ts";
import { MODE_NAMES, type Mode } from "./schema.ts";

/** The protocol version this build speaks. */
export const PROTOCOL_VERSION = 1;

export const Plane = { APPLICATION: 0, CONTROL: 1 } as const;
export type Plane = (typeof Plane)[keyof typeof Plane];

export const Kind = { REQUEST: 0, RESPONSE: 1, STREAM_ITEM: 2, STREAM_END: 3, CANCEL: 4 } as const;
export type Kind = (typeof Kind)[keyof typeof Kind];
const KIND_COUNT = 5;

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
    ...fields,
  };
}

export function encodeEnvelope(env: Envelope): Uint8Array {
  return EnvelopeType.encode(env).finish();
}

/**
 * Decodes and checks a frame. Returns a NodeBinError (never throws):
 * INVALID_ARGUMENT for bytes that are not an Envelope or carry out-of-range
 * enums, FAILED_PRECONDITION for a protocol version this build does not speak.
 */
export function decodeEnvelope(frame: Uint8Array): Envelope | NodeBinError {
  let env: Envelope;
  try {
    env = EnvelopeType.decode(strictView(frame)) as unknown as Envelope;
  } catch (err) {
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
