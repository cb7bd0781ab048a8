/**
 * The component manifest. Duck-typed: a component module may export a
 * `manifest` object with any of these fields; the rest default from the
 * directory and its package.json. Bad field types are errors naming the file.
 */
import { NodeBinError } from "../wire/errors.ts";

export interface ComponentLimits {
  /** Most messages waiting in one node's queue; beyond it callers get RESOURCE_EXHAUSTED. */
  queue: number;
  /** Fewest nodes of this component the governor keeps running. */
  min: number;
  /** Most nodes of this component the governor runs on one host. */
  max: number;
  /**
   * How long a STREAM handler may wait for its consumer's credit (ms): a
   * consumer that takes no item for that long ends the stream with
   * DEADLINE_EXCEEDED naming this limit, and the node serves its queue again.
   */
  streamIdleMs: number;
}

export interface ComponentManifest {
  name: string;
  version: string;
  /** .proto files of the component, relative to its directory (default: every .proto in it). */
  proto: string[];
  /** Services it serves, full names (default: every service its .proto files define). */
  services?: string[];
  limits: ComponentLimits;
}

export const DEFAULT_LIMITS: ComponentLimits = { queue: 1000, min: 1, max: 16, streamIdleMs: 30_000 };

export interface ManifestSources {
  dirName: string;
  /** Every .proto file in the component's directory. */
  protoFiles: string[];
  /** The module's `manifest` export, if any, and the file it came from. */
  exported?: unknown;
  moduleFile: string;
  /** The parsed package.json, if any. */
  packageJson?: { name?: unknown; version?: unknown };
}

export function resolveManifest(src: ManifestSources): ComponentManifest {
  const m = src.exported ?? {};
  const where = `${src.moduleFile}: manifest`;
  if (typeof m !== "object" || m === null) throw bad(where, "must be an object", src.moduleFile);
  const given = m as Record<string, unknown>;
  const pkgName = typeof src.packageJson?.name === "string" ? src.packageJson.name.replace(/^@[^/]+\//, "") : undefined;
  const name = optionalString(given, "name", where, src.moduleFile) ?? pkgName ?? src.dirName;
  if (!/^[A-Za-z0-9][\w.-]*$/.test(name)) throw bad(where, `name ${JSON.stringify(name)} must be letters, digits, '.', '_' or '-'`, src.moduleFile);
  const version = optionalString(given, "version", where, src.moduleFile) ?? (typeof src.packageJson?.version === "string" ? src.packageJson.version : "0.0.0");
  const proto = given.proto === undefined ? src.protoFiles : typeof given.proto === "string" ? [given.proto] : stringList(given.proto, `${where}.proto`, src.moduleFile);
  const services = given.services === undefined ? undefined : stringList(given.services, `${where}.services`, src.moduleFile);
  const limits = { ...DEFAULT_LIMITS };
  if (given.limits !== undefined) {
    if (typeof given.limits !== "object" || given.limits === null) throw bad(`${where}.limits`, "must be an object", src.moduleFile);
    for (const [key, value] of Object.entries(given.limits)) {
      if (!(key in limits)) throw bad(`${where}.limits.${key}`, `is not a known limit (${Object.keys(limits).join(", ")})`, src.moduleFile);
      if (typeof value !== "number" || !Number.isInteger(value) || value < 0) throw bad(`${where}.limits.${key}`, "must be a whole number >= 0", src.moduleFile);
      limits[key as keyof ComponentLimits] = value;
    }
  }
  if (limits.queue < 1) throw bad(`${where}.limits.queue`, "must be at least 1", src.moduleFile);
  // A timer's ceiling (setTimeout fires at once past it).
  if (limits.streamIdleMs < 1 || limits.streamIdleMs > 2_147_483_647) throw bad(`${where}.limits.streamIdleMs`, "must be from 1 to 2147483647 ms", src.moduleFile);
  if (limits.max < limits.min) throw bad(`${where}.limits`, `max (${limits.max}) is below min (${limits.min})`, src.moduleFile);
  return { name, version, proto, ...(services ? { services } : {}), limits };
}

function optionalString(m: Record<string, unknown>, key: string, where: string, file: string): string | undefined {
  const v = m[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v === "") throw bad(`${where}.${key}`, "must be a non-empty string", file);
  return v;
}

function stringList(v: unknown, where: string, file: string): string[] {
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string")) throw bad(where, "must be a list of strings", file);
  return v as string[];
}

function bad(where: string, problem: string, file: string): NodeBinError {
  return new NodeBinError("INVALID_ARGUMENT", `${where} ${problem}`, { details: { file } });
}
