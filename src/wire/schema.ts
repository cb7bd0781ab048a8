/**
 * Schemas: the methods of a set of services with their modes and message
 * types. A Schema is built from a protobufjs Root (the component loader, from
 * .proto files) or from its JSON form (a client or a remote process, from the
 * membership table), and both give the same MethodSchema objects.
 */
import { createHash } from "node:crypto";
import protobuf from "protobufjs";
import { NodeBinError } from "./errors.ts";

/** The mode of a method, as numbered in nodebin/options.proto. */
export const Mode = { SYNC: 0, ASYNC: 1, STREAM: 2, BROADCAST: 3 } as const;
export type Mode = (typeof Mode)[keyof typeof Mode];
export const MODE_NAMES = ["SYNC", "ASYNC", "STREAM", "BROADCAST"] as const;
export type ModeName = (typeof MODE_NAMES)[number];

export function modeName(mode: number): string {
  return MODE_NAMES[mode] ?? `MODE_${mode}`;
}

export interface MethodSchema {
  /** "package.Service/Method" */
  readonly fullName: string;
  /** "package.Service" */
  readonly service: string;
  /** "Method" */
  readonly name: string;
  readonly mode: Mode;
  readonly requestType: protobuf.Type;
  readonly responseType: protobuf.Type;
}

/** The largest schema (its JSON) a process takes from another (1 MiB: the examples' are 2-10 KiB). */
export const MAX_SCHEMA_BYTES = 1024 * 1024;

export class Schema {
  /** Content hash of `json`: equal schemas have equal ids wherever they were built. */
  readonly id: string;
  /** protobufjs JSON of the whole Root: self-contained, shippable. */
  readonly json: string;
  readonly methods: ReadonlyMap<string, MethodSchema>;

  private constructor(readonly root: protobuf.Root, json: string, methods: Map<string, MethodSchema>) {
    this.json = json;
    this.id = createHash("sha256").update(json).digest("hex").slice(0, 16);
    this.methods = methods;
  }

  /**
   * The schema of the services in `root` (only those defined in `files`, when
   * given: services a component merely imports are not its own). Throws
   * INVALID_ARGUMENT for a method whose (nodebin.mode) is not a known mode, or
   * whose streaming flags contradict its mode.
   */
  static fromRoot(root: protobuf.Root, files?: readonly string[]): Schema {
    return new Schema(root, JSON.stringify(root.toJSON()), methodsOf(root, files));
  }

  /**
   * A schema another process shipped as `{id, json}` (Register, gossip, pull):
   * the id must be the hash of the content, so that no sender can put its
   * schema under an id another component's schema has. Throws
   * INVALID_ARGUMENT for JSON past `maxBytes` (checked before anything is
   * parsed), an id that is not its content's, or an invalid schema.
   */
  static verified(shipped: { id: string; json: string }, maxBytes = MAX_SCHEMA_BYTES): Schema {
    const { id, json } = shipped;
    if (typeof json !== "string" || json.length > maxBytes) {
      throw new NodeBinError("INVALID_ARGUMENT", `schema ${JSON.stringify(String(id).slice(0, 40))} is ${typeof json === "string" ? json.length : 0} characters, more than ${maxBytes}`, { details: { field: "schemas.json", schema: String(id).slice(0, 40) } });
    }
    const actual = createHash("sha256").update(json).digest("hex").slice(0, 16);
    if (actual !== id) {
      throw new NodeBinError("INVALID_ARGUMENT", `schema id ${JSON.stringify(String(id).slice(0, 40))} is not the hash of its content (${actual})`, { details: { field: "schemas.id", schema: String(id).slice(0, 40) } });
    }
    return Schema.fromJSON(json);
  }

  /** Rebuilds a schema from its JSON form (keeping its id). Throws INVALID_ARGUMENT if it is not valid. */
  static fromJSON(json: string): Schema {
    let root: protobuf.Root;
    try {
      root = protobuf.Root.fromJSON(JSON.parse(json));
    } catch (err) {
      throw new NodeBinError("INVALID_ARGUMENT", `invalid schema: ${(err as Error).message}`, { cause: err });
    }
    return new Schema(root, json, methodsOf(root));
  }
}

function methodsOf(root: protobuf.Root, files?: readonly string[]): Map<string, MethodSchema> {
  const methods = new Map<string, MethodSchema>();
  for (const service of servicesIn(root)) {
    if (files && !files.includes(service.filename ?? "")) continue;
    const serviceName = service.fullName.replace(/^\./, "");
    for (const method of service.methodsArray) {
      const fullName = `${serviceName}/${method.name}`;
      const mode = methodMode(method, fullName);
      method.resolve();
      methods.set(fullName, {
        fullName,
        service: serviceName,
        name: method.name,
        mode,
        requestType: method.resolvedRequestType as protobuf.Type,
        responseType: method.resolvedResponseType as protobuf.Type,
      });
    }
  }
  return methods;
}

function servicesIn(ns: protobuf.NamespaceBase): protobuf.Service[] {
  const out: protobuf.Service[] = [];
  for (const child of ns.nestedArray) {
    if (child instanceof protobuf.Service) out.push(child);
    if (child instanceof protobuf.Namespace || child instanceof protobuf.Type) out.push(...servicesIn(child));
  }
  return out;
}

function methodMode(method: protobuf.Method, fullName: string): Mode {
  const raw = method.options?.["(nodebin.mode)"] as unknown;
  let mode: Mode;
  if (raw === undefined) {
    mode = method.responseStream ? Mode.STREAM : Mode.SYNC;
  } else {
    const index = typeof raw === "number" ? raw : (MODE_NAMES as readonly unknown[]).indexOf(raw);
    if (!(index in MODE_NAMES)) {
      throw new NodeBinError(
        "INVALID_ARGUMENT",
        `${method.filename ?? "proto"}: method ${fullName} has unknown (nodebin.mode) ${JSON.stringify(raw)}; expected one of ${MODE_NAMES.join(", ")}`,
        { details: { file: method.filename ?? "", method: fullName } },
      );
    }
    mode = index as Mode;
  }
  if (method.requestStream) {
    throw new NodeBinError("INVALID_ARGUMENT", `${method.filename ?? "proto"}: method ${fullName} streams its request; node-bin methods take one request message`, {
      details: { file: method.filename ?? "", method: fullName },
    });
  }
  if (method.responseStream && mode !== Mode.STREAM) {
    throw new NodeBinError("INVALID_ARGUMENT", `${method.filename ?? "proto"}: method ${fullName} returns a stream but its mode is ${modeName(mode)}`, {
      details: { file: method.filename ?? "", method: fullName },
    });
  }
  return mode;
}
