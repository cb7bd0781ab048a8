/**
 * The small JSON files a governor keeps in its state directory so that a
 * later governor (after a restart or an upgrade) picks up where it left off:
 * its children (children.ts) and the hosts its provider launched
 * (provider.ts). Read leniently (a missing or damaged file is no record:
 * what it held is then rebuilt or lost, never a crash) and written
 * atomically (a temp file, then a rename), readable by its owner only.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

/** A file's parsed JSON, or undefined when it is missing or not JSON. */
export function readStateFile(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as unknown;
  } catch {
    return undefined;
  }
}

/** Writes `value` as JSON, stamped with the writing process and time; a reader sees the old file or the new one, never half of one. */
export function writeStateFile(path: string, value: Record<string, unknown>): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ governor: process.pid, written: new Date().toISOString(), ...value }, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}
