/**
 * The small JSON files a governor keeps in its state directory so that a
 * later governor (after a restart or an upgrade) picks up where it left off:
 * its children (children.ts) and the hosts its provider launched
 * (provider.ts). Each holds one list under one key. Read leniently and as
 * input (a missing or damaged file is no record, a malformed entry is
 * dropped: what it held is then rebuilt or lost, never a crash) and written
 * atomically (a temp file, then a rename), readable by its owner only.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

export class StateFile<T> {
  constructor(
    readonly path: string,
    private readonly key: string,
    private readonly valid: (entry: unknown) => entry is T,
    private readonly max = Infinity,
  ) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  }

  /** The well-formed entries, at most `max`; none when the file is missing or not JSON. */
  read(): T[] {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(this.path, "utf8"));
    } catch {
      return [];
    }
    const list = (parsed as Record<string, unknown> | null)?.[this.key];
    return Array.isArray(list) ? list.filter(this.valid).slice(0, this.max) : [];
  }

  /** Stamped with the writing process and time; a reader sees the old file or the new one, never half of one. */
  write(entries: T[]): void {
    const tmp = `${this.path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ governor: process.pid, written: new Date().toISOString(), [this.key]: entries }, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, this.path);
  }
}
