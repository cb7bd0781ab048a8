/**
 * The components-directory scanner of the governor's hot deploy. A components
 * directory holds one subdirectory per component; each gets a content hash
 * (sha256 over the sorted relative paths and contents of its files, and the
 * targets of its symbolic links, which are never followed). The
 * scanner rescans on file-system events (debounced) and every `intervalMs` as
 * the safety net, diffs against the state it last reported, and tells the
 * governor what was added, removed or changed.
 *
 * Lock files pause it:
 * - `DIR/.deploy.lock`: the whole directory is locked; no changes are reported.
 * - `DIR/NAME/.deploying`: NAME is locked; its last reported hash is kept and
 *   nothing is reported for it until the lock is gone (`node-bin deploy` holds
 *   it while it swaps the files).
 * A lock older than `staleLockMs` is still honoured, and listed as stale so the
 * governor can warn about it.
 */
import { createHash } from "node:crypto";
import { closeSync, constants as fsConstants, fstatSync, openSync, readdirSync, readFileSync, readlinkSync, statSync, watch, type Dirent, type FSWatcher } from "node:fs";
import { join, resolve } from "node:path";
import { NodeBinError } from "../wire/errors.ts";

/** Locks the whole components directory while it exists. */
export const DIR_LOCK = ".deploy.lock";
/** Locks one component (`DIR/NAME/.deploying`) while it exists. */
export const COMPONENT_LOCK = ".deploying";

export const DEFAULT_SCAN_INTERVAL_MS = 2000;
export const DEFAULT_DEBOUNCE_MS = 200;
export const DEFAULT_STALE_LOCK_MS = 10 * 60_000;

export interface ComponentChange {
  type: "added" | "removed" | "changed";
  name: string;
  /** The new hash (absent for "removed"). */
  hash?: string;
}

export interface ScanResult {
  /** Hash by component name. Locked components keep their last reported hash (or are absent if they had none). */
  components: Map<string, string>;
  /** DIR/.deploy.lock exists: `components` is the last reported state, nothing was scanned. */
  locked: boolean;
  /** Components whose NAME/.deploying exists, sorted. */
  lockedComponents: string[];
  /** Paths of lock files older than staleLockMs (still honoured). */
  staleLocks: string[];
  /** Components that could not be hashed (they keep their last reported hash). */
  errors: Error[];
}

export interface ComponentScannerOptions {
  dir: string;
  /** Periodic rescan (the safety net under the watcher); default 2000 ms. */
  intervalMs?: number;
  /** Quiet time after a file-system event before the rescan; default 200 ms. */
  debounceMs?: number;
  /** A lock older than this is reported as stale; default 10 minutes. */
  staleLockMs?: number;
  onChange(changes: ComponentChange[]): void;
  /** Scan problems, each distinct message once while it persists. */
  onError?(err: Error): void;
}

export interface ComponentHash {
  /** sha256, hex. */
  hash: string;
  /** Regular files hashed. */
  files: number;
  /** Symbolic links hashed (by their target, as written). */
  links: number;
}

/** Names under a components directory or a component that are never components or content. */
function ignored(name: string): boolean {
  return name.startsWith(".") || name === "node_modules";
}

// Opening a file to hash it: never through a symlink put in its place since
// the directory was read, and never blocking on a fifo put there (O_NONBLOCK
// does nothing to regular files). Windows has neither flag.
const OPEN_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0);

/**
 * The content hash of one component directory: sha256 over its entries in
 * order of their relative paths ("/"-separated): a regular file as path, NUL,
 * byte length, NUL, contents; a symbolic link as path, NUL, "symlink", NUL,
 * the target's length, NUL, the target as written. Skips node_modules and
 * every name starting with "." (so the lock file `.deploying` too); sockets,
 * fifos and devices are not content.
 *
 * Symbolic links inside the component are never followed, wherever they
 * point: as git does, a link is content by what it says, not by what it
 * reaches. Following them would have the governor (root, or the service
 * user) read whatever a component's author names: /etc/shadow into a hash, a
 * file of many gigabytes into memory, a fifo that blocks the scan forever, a
 * loop. So a link that changes changes the hash; a file outside the
 * component that a link reaches does not (deploy changed code into the
 * component, or touch it). `node-bin deploy` copies links as links, so the
 * copy hashes as its source. Only `dir` itself may be a link (a component
 * placed in the components directory as one): that is the operator's choice,
 * and the loader follows it too. Directories are walked once each (by device
 * and inode: a bind mount can loop without any symlink).
 *
 * A file that vanishes while it is read is left out (a write in progress).
 * Throws (the fs error) when the directory cannot be read.
 */
export function hashComponent(dir: string): ComponentHash {
  const root = resolve(dir);
  const entries: { rel: string; abs: string; link?: string }[] = [];
  const visited = new Set<string>();
  const walk = (abs: string, rel: string, top: boolean): void => {
    let list: Dirent[];
    try {
      const st = statSync(abs); // the top may be a link (see above); below, only real directories get here
      const id = `${st.dev}:${st.ino}`;
      if (visited.has(id)) return;
      visited.add(id);
      list = readdirSync(abs, { withFileTypes: true });
    } catch (err) {
      if (!top && isGone(err)) return;
      throw err;
    }
    for (const entry of list) {
      if (ignored(entry.name)) continue;
      const childAbs = join(abs, entry.name);
      const childRel = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isFile()) {
        entries.push({ rel: childRel, abs: childAbs });
      } else if (entry.isDirectory()) {
        walk(childAbs, childRel, false);
      } else if (entry.isSymbolicLink()) {
        try {
          entries.push({ rel: childRel, abs: childAbs, link: readlinkSync(childAbs) });
        } catch (err) {
          if (isGone(err) || (err as NodeJS.ErrnoException).code === "EINVAL") continue; // removed, or replaced by a non-link meanwhile
          throw err;
        }
      }
      // sockets, fifos, devices: not content
    }
  };
  walk(root, "", true);
  entries.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  const hash = createHash("sha256");
  let files = 0;
  let links = 0;
  for (const e of entries) {
    if (e.link !== undefined) {
      const target = Buffer.from(e.link);
      hash.update(e.rel);
      hash.update("\0symlink\0");
      hash.update(String(target.length));
      hash.update("\0");
      hash.update(target);
      links++;
      continue;
    }
    const content = readRegularFile(e.abs);
    if (content === undefined) continue;
    hash.update(e.rel);
    hash.update("\0");
    hash.update(String(content.length));
    hash.update("\0");
    hash.update(content);
    files++;
  }
  return { hash: hash.digest("hex"), files, links };
}

/** The contents of `file` if it is (still) a regular file, else undefined (gone, or replaced by a link, a fifo, a directory). */
function readRegularFile(file: string): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(file, OPEN_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (isGone(err) || code === "ELOOP" || code === "EISDIR" || code === "ENXIO") return undefined; // ELOOP: a symlink now (O_NOFOLLOW)
    throw err;
  }
  try {
    if (!fstatSync(fd).isFile()) return undefined;
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** What changed from `before` to `after`, sorted by name. */
export function diffComponents(before: ReadonlyMap<string, string>, after: ReadonlyMap<string, string>): ComponentChange[] {
  const changes: ComponentChange[] = [];
  const names = [...new Set([...before.keys(), ...after.keys()])].sort();
  for (const name of names) {
    const was = before.get(name);
    const now = after.get(name);
    if (was === undefined && now !== undefined) changes.push({ type: "added", name, hash: now });
    else if (was !== undefined && now === undefined) changes.push({ type: "removed", name });
    else if (was !== now && now !== undefined) changes.push({ type: "changed", name, hash: now });
  }
  return changes;
}

function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}

/** mtime of `file` in ms, or undefined when it does not exist. */
function lockTime(file: string): number | undefined {
  try {
    return statSync(file).mtimeMs;
  } catch (err) {
    if (isGone(err)) return undefined;
    throw err;
  }
}

export class ComponentScanner {
  readonly dir: string;
  private readonly intervalMs: number;
  private readonly debounceMs: number;
  private readonly staleLockMs: number;
  private readonly onChange: (changes: ComponentChange[]) => void;
  private readonly onError: ((err: Error) => void) | undefined;
  /** The last reported state (the baseline after start()). */
  private state = new Map<string, string>();
  private interval: ReturnType<typeof setInterval> | undefined;
  private debounce: ReturnType<typeof setTimeout> | undefined;
  /** recursive: one watcher on dir; fallback: dir and each component dir, non-recursive. */
  private recursive = true;
  private watchers = new Map<string, FSWatcher>();
  /** Inode of dir when its watcher was made: a replaced directory needs a new one. */
  private watchedIno: number | undefined;
  /** Error messages reported in the last round (each is reported once while it persists). */
  private reported = new Set<string>();
  private started = false;
  private closed = false;

  constructor(options: ComponentScannerOptions) {
    this.dir = resolve(options.dir);
    this.intervalMs = options.intervalMs ?? DEFAULT_SCAN_INTERVAL_MS;
    this.debounceMs = options.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    this.staleLockMs = options.staleLockMs ?? DEFAULT_STALE_LOCK_MS;
    this.onChange = options.onChange;
    this.onError = options.onError;
  }

  /**
   * One synchronous full scan. Reports nothing and changes no state; locked
   * components take their hash from the last reported state. Throws
   * NodeBinError NOT_FOUND (or UNAVAILABLE) when the directory cannot be read.
   */
  scan(): ScanResult {
    const now = Date.now();
    const staleLocks: string[] = [];
    const checkLock = (file: string): boolean => {
      const mtime = lockTime(file);
      if (mtime === undefined) return false;
      if (now - mtime > this.staleLockMs) staleLocks.push(file);
      return true;
    };
    let entries: Dirent[];
    try {
      entries = readdirSync(this.dir, { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const what = isGone(err) ? "does not exist" : `cannot be read (${code ?? (err as Error).message})`;
      throw new NodeBinError(isGone(err) ? "NOT_FOUND" : "UNAVAILABLE", `components directory ${this.dir} ${what}`, { details: { file: this.dir }, cause: err });
    }
    const errors: Error[] = [];
    let dirLocked: boolean;
    try {
      dirLocked = checkLock(join(this.dir, DIR_LOCK));
    } catch (err) {
      // A lock we cannot stat is still a lock: pausing is the safe side.
      errors.push(NodeBinError.from(err, "UNAVAILABLE"));
      dirLocked = true;
    }
    if (dirLocked) return { components: new Map(this.state), locked: true, lockedComponents: [], staleLocks, errors };

    const components = new Map<string, string>();
    const lockedComponents: string[] = [];
    for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      // As the loader: "_"-prefixed directories are shared code, not components.
      if (ignored(entry.name) || entry.name.startsWith("_")) continue;
      const sub = join(this.dir, entry.name);
      try {
        if (!entry.isDirectory()) {
          if (!entry.isSymbolicLink()) continue;
          try {
            if (!statSync(sub).isDirectory()) continue;
          } catch (err) {
            if (isGone(err) || (err as NodeJS.ErrnoException).code === "ELOOP") continue;
            throw err;
          }
        }
        if (checkLock(join(sub, COMPONENT_LOCK))) {
          lockedComponents.push(entry.name);
          const kept = this.state.get(entry.name);
          if (kept !== undefined) components.set(entry.name, kept);
          continue;
        }
        components.set(entry.name, hashComponent(sub).hash);
      } catch (err) {
        if (isGone(err)) continue; // removed while we looked
        const e = err as NodeJS.ErrnoException;
        errors.push(new NodeBinError("UNAVAILABLE", `component ${entry.name}: cannot be scanned: ${e.code ?? e.message}${e.path ? ` (${e.path})` : ""}`, { details: { file: sub }, cause: err }));
        const kept = this.state.get(entry.name);
        if (kept !== undefined) components.set(entry.name, kept);
      }
    }
    return { components, locked: false, lockedComponents, staleLocks, errors };
  }

  /**
   * Scans once and takes the result as the baseline (reported to nobody),
   * then watches the directory and rescans every intervalMs. Throws what
   * scan() throws when the directory cannot be read now; later problems go to
   * onError.
   */
  start(): ScanResult {
    if (this.closed) throw new NodeBinError("FAILED_PRECONDITION", "the component scanner is closed");
    if (this.started) throw new NodeBinError("FAILED_PRECONDITION", "the component scanner is already started");
    const first = this.scan();
    this.state = new Map(first.components);
    this.report(first.errors);
    this.started = true;
    this.syncWatchers(first);
    this.interval = setInterval(() => this.rescan(), this.intervalMs);
    return first;
  }

  /** Stops watching and clears every timer. Idempotent. */
  close(): void {
    this.closed = true;
    if (this.interval !== undefined) clearInterval(this.interval);
    if (this.debounce !== undefined) clearTimeout(this.debounce);
    this.interval = undefined;
    this.debounce = undefined;
    for (const w of this.watchers.values()) closeQuietly(w);
    this.watchers.clear();
  }

  /** Rescans now, reports what changed since the last report. Never throws. */
  rescan(): void {
    if (this.closed) return;
    try {
      let result: ScanResult;
      try {
        result = this.scan();
      } catch (err) {
        this.report([err as Error]); // unreadable: keep the previous state, report nothing else
        return;
      }
      this.report(result.errors);
      this.syncWatchers(result);
      if (result.locked) return;
      const changes = diffComponents(this.state, result.components);
      if (changes.length === 0) return;
      this.state = new Map(result.components);
      this.onChange(changes);
    } catch (err) {
      this.report([err instanceof Error ? err : new Error(String(err))], true);
    }
  }

  /** Passes errors to onError, each distinct message once while it keeps recurring. */
  private report(errors: Error[], always = false): void {
    const round = new Set<string>();
    for (const err of errors) {
      round.add(err.message);
      if (!always && this.reported.has(err.message)) continue;
      try {
        this.onError?.(err);
      } catch {
        // onError must not break the scanner
      }
    }
    if (!always) this.reported = round;
  }

  private schedule = (): void => {
    if (this.closed) return;
    if (this.debounce !== undefined) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.rescan();
    }, this.debounceMs);
  };

  /**
   * Keeps the watchers in step with the directory: one recursive watcher when
   * the platform has them, else one on dir and one on each component dir. A
   * watcher that failed, or watches a directory that was replaced, is redone.
   * Component directories are those of the scan just made (locked ones too, so
   * that removing a lock is noticed).
   */
  private syncWatchers(scanned: ScanResult): void {
    if (this.closed) return;
    let ino: number | undefined;
    try {
      ino = statSync(this.dir).ino;
    } catch {
      ino = undefined;
    }
    if (ino === undefined || ino !== this.watchedIno) {
      for (const w of this.watchers.values()) closeQuietly(w);
      this.watchers.clear();
      this.watchedIno = ino;
      if (ino === undefined) return; // the periodic rescan notices when it is back
    }
    if (this.recursive) {
      if (this.watchers.has(this.dir)) return;
      try {
        this.addWatcher(this.dir, true);
        return;
      } catch {
        this.recursive = false; // no recursive watch here: watch each level we care about
      }
    }
    const wanted = new Set<string>([this.dir]);
    for (const name of [...scanned.components.keys(), ...scanned.lockedComponents]) wanted.add(join(this.dir, name));
    for (const [path, w] of this.watchers) {
      if (!wanted.has(path)) {
        closeQuietly(w);
        this.watchers.delete(path);
      }
    }
    for (const path of wanted) {
      if (this.watchers.has(path)) continue;
      try {
        this.addWatcher(path, false);
      } catch {
        // gone or not watchable: the periodic rescan still covers it
      }
    }
  }

  private addWatcher(path: string, recursive: boolean): void {
    const w = watch(path, { recursive, persistent: true }, this.schedule);
    w.on("error", () => {
      // e.g. the directory was removed: drop it, the next rescan makes a new one
      closeQuietly(w);
      if (this.watchers.get(path) === w) this.watchers.delete(path);
      this.schedule();
    });
    this.watchers.set(path, w);
  }
}

function closeQuietly(w: FSWatcher): void {
  try {
    w.close();
  } catch {
    // already closed
  }
}
