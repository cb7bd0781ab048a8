/**
 * Loading .proto files with protobufjs at run time: import resolution
 * (the importing file's directory, then the caller's import directories, then
 * this project's proto/ for "nodebin/*.proto"), and errors that name the file
 * and the problem instead of protobufjs's bare exceptions.
 */
import { existsSync, statSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import descriptor from "protobufjs/google/protobuf/descriptor.json" with { type: "json" };
import { embeddedProtoDir } from "../runtime/executable.ts";
import { NodeBinError } from "./errors.ts";

// protobufjs bundles some google/protobuf files but not descriptor.proto, which
// nodebin/options.proto imports to extend MethodOptions. Registering its bundled
// JSON makes the import resolve without any file on disk (also inside a bundle).
const descriptorTypes = (descriptor as unknown as { nested: { google: { nested: { protobuf: { nested: Record<string, unknown> } } } } }).nested.google.nested.protobuf.nested;
protobuf.common("descriptor", descriptorTypes as Parameters<typeof protobuf.common>[1]);

/**
 * The directory holding nodebin/*.proto. The only place that knows where the
 * project's own protos live: proto/ in the checkout, or, in the bundle and the
 * executable (which embed them), their copy in the per-user cache directory.
 */
export const NODEBIN_PROTO_DIR = embeddedProtoDir() ?? fileURLToPath(new URL("../../proto/", import.meta.url));

export interface LoadProtoOptions {
  /** Directories searched for imports after the importing file's own directory. */
  importDirs?: string[];
}

/**
 * Parses `files` (and everything they import) into a fresh, fully resolved
 * protobufjs Root. Throws NodeBinError INVALID_ARGUMENT naming the file and
 * the problem when a file is missing, unparsable or refers to unknown types.
 */
export function loadProtoFiles(files: string[], options: LoadProtoOptions = {}): protobuf.Root {
  const importDirs = [...(options.importDirs ?? []), NODEBIN_PROTO_DIR];
  const root = new protobuf.Root();
  root.resolvePath = (origin: string, target: string): string => {
    if (isAbsolute(target)) return target;
    if (target.startsWith("google/protobuf/")) return target; // protobufjs's bundled copies
    const dirs = origin ? [dirname(origin), ...importDirs] : importDirs;
    for (const dir of dirs) {
      const candidate = resolve(dir, target);
      if (existsSync(candidate) && statSync(candidate).isFile()) return candidate;
    }
    // Not found anywhere: return the first candidate so the error names a real path.
    return resolve(dirs[0] ?? ".", target);
  };
  for (const file of files) {
    try {
      root.loadSync(file, { keepCase: false });
    } catch (err) {
      throw protoError(file, err);
    }
  }
  try {
    root.resolveAll();
  } catch (err) {
    throw protoError(files.join(", "), err);
  }
  return root;
}

function protoError(file: string, err: unknown): NodeBinError {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === "ENOENT") {
    return new NodeBinError("INVALID_ARGUMENT", `cannot read ${e.path ?? file}: no such file`, { details: { file: e.path ?? file }, cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  // protobufjs parse errors already carry "(file, line N)"; add the file otherwise.
  const text = message.includes(".proto") ? message : `${file}: ${message}`;
  return new NodeBinError("INVALID_ARGUMENT", `invalid proto: ${text}`, { details: { file }, cause: err });
}

/** Loads this project's own protos (envelope, control, options) into one Root. */
export function loadNodebinProtos(): protobuf.Root {
  return loadProtoFiles(["envelope.proto", "control.proto", "options.proto"].map((f) => join(NODEBIN_PROTO_DIR, "nodebin", f)));
}
