/**
 * How node-bin runs: from source (bin/node-bin), as the esbuild bundle
 * (dist/node-bin.cjs) or as the single executable (a Node SEA built by
 * build/build.mjs). A leaf below every layer: it imports only node: modules
 * and ./embedded.ts, so src/wire and up may all use it.
 *
 * Inside the executable, files that must exist on disk (zeromq's native addon,
 * which only process.dlopen can load; the nodebin/*.proto files component
 * protos import) are written once to a per-user cache directory, under names
 * keyed by their sha256, each through a temporary file and a rename.
 *
 * Loading code from a directory is only as safe as the directory: whoever can
 * rename entries in it, or in any directory above it, can put their own
 * library where node-bin dlopens the addon, and run it as node-bin's user
 * (root, for a root-run governor). So the cache directory, and every directory
 * above it, must belong to this user or root and be writable by nobody else
 * (above the cache directory itself, a sticky directory like /tmp is fine:
 * there others cannot rename or remove what is not theirs). And the addon is
 * hashed, from the very file descriptor it is then loaded through, against
 * the sha256 the build recorded.
 */
import { createHash, randomBytes } from "node:crypto";
import { closeSync, constants, existsSync, fstatSync, lstatSync, mkdirSync, openSync, readSync, realpathSync, renameSync, rmSync, statSync, writeFileSync, type Stats } from "node:fs";
import { homedir } from "node:os";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { EMBEDDED_PROTOS } from "./embedded.ts";

/** The parts of `node:sea` used here (Node >= 20.12; assets need 21.7). */
interface SeaModule {
  isSea(): boolean;
  getAsset(key: string, encoding: string): string;
  getRawAsset(key: string): ArrayBuffer;
}

/** What build/build.mjs puts in the executable's `manifest.json` asset: per asset, its hash and size. */
export interface AssetManifest {
  version: string;
  target: string;
  assets: Record<string, AssetEntry>;
}

/** One asset of the executable: the sha256 (hex) and size the build recorded. */
export interface AssetEntry {
  sha256: string;
  size: number;
}

type Env = Record<string, string | undefined>;

let seaCache: SeaModule | null | undefined;

/** node:sea when this process is the single executable, else null. Never throws (Node 20 without getBuiltinModule, Deno). */
function seaModule(): SeaModule | null {
  if (seaCache !== undefined) return seaCache;
  seaCache = null;
  try {
    // getBuiltinModule: a plain runtime lookup, so neither esbuild nor Deno trips over "node:sea".
    const get = (process as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule;
    const sea = typeof get === "function" ? (get.call(process, "node:sea") as SeaModule | undefined) : undefined;
    if (sea && typeof sea.isSea === "function" && sea.isSea()) seaCache = sea;
  } catch {
    // not a Node that knows node:sea: not the executable
  }
  return seaCache;
}

/** True when this process is the node-bin single executable. */
export function isSea(): boolean {
  return seaModule() !== null;
}

/** The executable's own file, symlinks resolved, when this process is the single executable. */
export function executableFile(): string | undefined {
  if (!isSea()) return undefined;
  try {
    return realpathSync(process.execPath);
  } catch {
    return process.execPath;
  }
}

/**
 * The error for a cache directory (or cached file) that cannot be used. The
 * CLI entry (build/entry.cjs) recognises it by `code` and prints
 * "error: FAILED_PRECONDITION: <message>" alone, exit status 9: this module is
 * a leaf below src/wire, so it cannot throw a NodeBinError itself.
 */
export class CacheDirError extends Error {
  override readonly name = "CacheDirError";
  readonly code = "NODEBIN_CACHE_DIR";
  /** The gRPC-style code the CLI reports it under. */
  readonly status = "FAILED_PRECONDITION";
  constructor(
    readonly dir: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The per-user cache directory: $NODEBIN_CACHE_DIR, else %LOCALAPPDATA%\node-bin
 * on Windows, else $XDG_CACHE_HOME/node-bin, else ~/.cache/node-bin.
 */
export function cacheDir(env: Env = process.env, platform: string = process.platform): { dir: string; fromEnv: boolean } {
  if (env.NODEBIN_CACHE_DIR) return { dir: resolve(env.NODEBIN_CACHE_DIR), fromEnv: true };
  if (platform === "win32") return { dir: join(env.LOCALAPPDATA || join(homedir(), "AppData", "Local"), "node-bin"), fromEnv: false };
  const xdg = env.XDG_CACHE_HOME;
  return { dir: join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), ".cache"), "node-bin"), fromEnv: false };
}

/** This process's uid, or undefined where there are none (Windows: the directory is under the user's own profile, guarded by ACLs). */
function currentUid(): number | undefined {
  return typeof process.getuid === "function" ? process.getuid() : undefined;
}

const octal = (mode: number) => `0${(mode & 0o7777).toString(8)}`;

/**
 * Throws CacheDirError unless no user but `uid` and root can change what
 * `fileDir` (an existing directory, symlinks resolved) holds: it and each
 * directory above it must belong to `uid` or root, and must not be writable by
 * group or others. `cacheRoot` (symlinks resolved) is the cache directory
 * itself: it and the directories below it must be private outright; above it
 * (everywhere, when `cacheRoot` is undefined: the directories a cache
 * directory is about to be created in), a sticky directory (/tmp) passes,
 * because in one others can neither rename nor remove entries they do not
 * own, and the entry below it is checked to be ours or root's. Checking only
 * the cache directory would not do: whoever can rename an entry of its parent
 * (or of any directory above) can swap the whole directory for one of their
 * own. `where` names the directory in messages. A no-op without uids (Windows).
 */
export function checkCacheDirSafe(fileDir: string, cacheRoot: string | undefined, where: string, uid: number | undefined = currentUid()): void {
  if (uid === undefined) return;
  let inside = cacheRoot !== undefined; // from fileDir up to cacheRoot; above it, sticky directories pass
  for (let d = fileDir; ; d = dirname(d)) {
    let st: Stats;
    try {
      st = lstatSync(d);
    } catch (err) {
      throw new CacheDirError(cacheRoot ?? fileDir, `cannot check ${where}: ${(err as NodeJS.ErrnoException).code ?? String(err)} on ${d}`, { cause: err });
    }
    const what = d === cacheRoot ? "it" : inside ? `${d}, inside it,` : `${d}, above it,`;
    const refuse = (problem: string, fix: string) =>
      new CacheDirError(
        cacheRoot ?? fileDir,
        `refusing ${where}: ${what} ${problem}. node-bin loads its native addon from there, so another user could swap in a library of theirs and have it run as you. ${fix}, or set NODEBIN_CACHE_DIR to a directory only you (or root) can change`,
      );
    // The path was resolved a moment ago: a symlink now means it was changed under us.
    if (st.isSymbolicLink()) throw refuse("became a symbolic link while it was checked", "Find out what changed it");
    if (!st.isDirectory()) throw refuse("is not a directory", `Remove ${d}`);
    if (st.uid !== uid && st.uid !== 0) throw refuse(`belongs to uid ${st.uid}, not to you (uid ${uid}) or root`, `Run \`chown ${uid} ${d}\``);
    const writable = (st.mode & 0o022) !== 0;
    const sticky = (st.mode & 0o1000) !== 0;
    if (writable && (inside || !sticky)) {
      throw refuse(`is writable by ${st.mode & 0o002 ? "every user" : "its group"} (mode ${octal(st.mode)})`, `Run \`chmod go-w ${d}\``);
    }
    if (d === cacheRoot) inside = false;
    if (dirname(d) === d) return;
  }
}

/** An existing cached file that may be used as it is: a regular file of `size` bytes that only its owner, this user or root, can write. */
function usable(st: Stats, size: number, uid: number | undefined): boolean {
  if (!st.isFile() || st.size !== size) return false;
  if (uid === undefined) return true;
  return (st.uid === uid || st.uid === 0) && (st.mode & 0o022) === 0;
}

function lstatOrUndefined(file: string): Stats | undefined {
  try {
    return lstatSync(file);
  } catch {
    return undefined;
  }
}

function statOrUndefined(file: string): Stats | undefined {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}

/**
 * The file `relative` in the cache directory, holding `size` bytes, and
 * whether this call wrote it: written (from `data()`, through a temporary file
 * and a rename) unless a usable file is already there (a regular file of that
 * size, owned by this user or root, writable by its owner alone). Names carry
 * a content hash, so a file of the right size is taken for the right file
 * here; loadCachedAddon checks the hash itself before loading code. The
 * directory is created 0700, symlinks in its path are resolved once (the
 * returned path has none) and the result is checked with checkCacheDirSafe.
 * A cache directory that cannot be created or written is a CacheDirError
 * naming it and NODEBIN_CACHE_DIR. An up-to-date read-only cache still works.
 */
function cachedFileEntry(relative: string, size: number, data: () => Uint8Array, mode: number, env: Env): { file: string; written: boolean } {
  const { dir, fromEnv } = cacheDir(env);
  const where = `the cache directory ${dir}${fromEnv ? " (NODEBIN_CACHE_DIR)" : ""}`;
  const cannotWrite = (err: unknown): CacheDirError => {
    const e = err as NodeJS.ErrnoException;
    const why = e.code ? `${e.code}${e.path ? ` on ${e.path}` : ""}` : String(err);
    return new CacheDirError(dir, `cannot write ${where}: ${why}. node-bin writes its native addon and protos there once; set NODEBIN_CACHE_DIR to a writable directory`, {
      cause: err,
    });
  };
  const uid = currentUid();
  // Nothing is created where others could change it: first the directories
  // that exist already (when the cache directory is still to be made), then
  // the cache directory, then the file's own directory inside it.
  let above = dir;
  while (!lstatOrUndefined(above) && dirname(above) !== above) above = dirname(above);
  if (above !== dir && statOrUndefined(above)?.isDirectory()) {
    let real: string;
    try {
      real = realpathSync(above);
    } catch (err) {
      throw cannotWrite(err);
    }
    checkCacheDirSafe(real, undefined, where, uid);
  }
  let root: string;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    root = realpathSync(dir);
  } catch (err) {
    throw cannotWrite(err);
  }
  const named = root === dir ? where : `${where}, which is ${root}`;
  checkCacheDirSafe(root, root, named, uid);
  let fileDir = root;
  if (dirname(relative) !== ".") {
    try {
      mkdirSync(join(root, dirname(relative)), { recursive: true, mode: 0o700 });
      fileDir = realpathSync(join(root, dirname(relative)));
    } catch (err) {
      throw cannotWrite(err);
    }
    checkCacheDirSafe(fileDir, root, named, uid);
  }
  // From here on only the resolved path is used: a symlink in $NODEBIN_CACHE_DIR is followed once, where it was checked.
  const file = join(fileDir, basename(relative));
  const existing = lstatOrUndefined(file);
  if (existing && usable(existing, size, uid)) return { file, written: false };
  const tmp = `${file}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  try {
    writeFileSync(tmp, data(), { mode, flag: "wx" });
    renameSync(tmp, file);
  } catch (err) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // nothing was written
    }
    // Another process may have won the race (Windows refuses to replace a loaded file).
    const now = lstatOrUndefined(file);
    if (now && usable(now, size, uid)) return { file, written: false };
    throw cannotWrite(err);
  }
  return { file, written: true };
}

/** The file `relative` in the cache directory (see cachedFileEntry): its path, symlinks resolved. */
export function cachedFile(relative: string, size: number, data: () => Uint8Array, mode = 0o644, env: Env = process.env): string {
  return cachedFileEntry(relative, size, data, mode, env).file;
}

let manifestCache: AssetManifest | undefined;

/** The executable's asset manifest (undefined outside the executable). */
export function assetManifest(): AssetManifest | undefined {
  const sea = seaModule();
  if (!sea) return undefined;
  manifestCache ??= JSON.parse(sea.getAsset("manifest.json", "utf8")) as AssetManifest;
  return manifestCache;
}

/**
 * Inside the executable: writes the native addon carried as asset `name` to
 * the cache (once) and loads it (loadCachedAddon). Undefined outside the executable.
 */
export function loadEmbeddedAddon(name: string): unknown {
  const sea = seaModule();
  const entry = assetManifest()?.assets[name];
  if (!sea || !entry) return undefined;
  return loadCachedAddon(name, entry, () => new Uint8Array(sea.getRawAsset(name)));
}

/**
 * Writes the native addon `name` (its bytes from `data()`, its sha256 and
 * size from the build's manifest) to the cache directory unless it is there,
 * then loads it with process.dlopen, after checking, on the open file, that it
 * is a regular file only its owner (this user or root) can write and that its
 * sha256 is `entry.sha256`. Throws CacheDirError otherwise, and when dlopen
 * fails (a noexec mount, typically). The executable's path to it is
 * loadEmbeddedAddon; this one is separate so that it can be tested from source.
 */
export function loadCachedAddon(name: string, entry: AssetEntry, data: () => Uint8Array, env: Env = process.env): unknown {
  const stem = name.replace(/\.node$/, "");
  const { file, written } = cachedFileEntry(`${stem}-${entry.sha256.slice(0, 16)}.node`, entry.size, data, 0o755, env);
  const dir = dirname(file);
  const uid = currentUid();
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
  } catch (err) {
    throw new CacheDirError(dir, `cannot open the native addon ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  try {
    const st = fstatSync(fd);
    if (!usable(st, entry.size, uid)) {
      throw new CacheDirError(
        dir,
        `refusing the native addon ${file}: it changed while it was checked (now ${st.isFile() ? `${st.size} bytes, owner uid ${st.uid}, mode ${octal(st.mode)}` : "not a regular file"}); remove it (node-bin writes it again) and find out what changed it`,
      );
    }
    const actual = sha256Of(fd, st.size);
    if (actual !== entry.sha256) {
      throw new CacheDirError(
        dir,
        written
          ? `refusing the native addon ${file}: its sha256 is ${actual}, not the ${entry.sha256} the build recorded, right after node-bin wrote it: this executable is damaged; install it again`
          : `refusing the native addon ${file}: its sha256 is ${actual}, not the ${entry.sha256} this executable carries: it was changed after node-bin wrote it. Remove it (node-bin writes it again on the next start) and find out what changed it`,
      );
    }
    // Load the file just hashed. On Linux /proc/self/fd/N opens the inode
    // behind fd itself, not whatever the name in the cache directory points
    // to by now, so renaming another file into place cannot change what is
    // loaded. What remains is a write into that inode between the hash and
    // the loader's read; fstat above showed only its owner (this user or
    // root) may write it, and either could run code as this user anyway:
    // that window is no privilege boundary. Without /proc (macOS), dlopen
    // looks the path up again; checkCacheDirSafe is what closes that window:
    // nobody but this user and root can rename entries of that directory or
    // of any directory above it. (glibc hands back a library already loaded
    // under the same name without opening anything; the only earlier
    // /proc/self/fd/N loads of this process are addons verified here.)
    const viaFd = `/proc/self/fd/${fd}`;
    const path = process.platform === "linux" && existsSync(viaFd) ? viaFd : file;
    const module = { exports: {} as unknown };
    try {
      process.dlopen(module, path);
    } catch (err) {
      // Typically a cache directory on a noexec mount: "failed to map segment from shared object".
      throw new CacheDirError(
        dir,
        `cannot load the native addon ${file} (${(err as Error).message.split("\n")[0]}); if the cache directory is on a noexec mount, set NODEBIN_CACHE_DIR to a directory on another`,
        { cause: err },
      );
    }
    return module.exports;
  } finally {
    closeSync(fd);
  }
}

/** sha256 (hex) of what fd holds, read from its start; more or fewer than `size` bytes give a hash that cannot match. */
function sha256Of(fd: number, size: number): string {
  const hash = createHash("sha256");
  const buf = Buffer.allocUnsafe(Math.min(Math.max(size, 1), 1 << 20));
  for (let pos = 0; ; ) {
    const n = readSync(fd, buf, 0, buf.length, pos);
    if (n === 0) break;
    hash.update(buf.subarray(0, n));
    pos += n;
  }
  return hash.digest("hex");
}

let protoDirCache: string | undefined;

/**
 * The directory holding nodebin/*.proto when they are embedded (the bundle and
 * the executable): extracted to the cache once. Undefined from source. These
 * are read later, by path, by protobufjs: no code runs from them, and the
 * directory checks of cachedFile keep other users from changing them.
 */
export function embeddedProtoDir(): string | undefined {
  const embedded: typeof EMBEDDED_PROTOS = EMBEDDED_PROTOS;
  if (!embedded) return undefined;
  if (protoDirCache) return protoDirCache;
  const base = `proto-${embedded.sha256.slice(0, 16)}`;
  let dir: string | undefined;
  for (const [name, text] of Object.entries(embedded.files)) {
    const bytes = Buffer.from(text, "utf8");
    let up = cachedFile(join(base, name), bytes.length, () => bytes);
    // The resolved directory of `base`: as many levels up from the file as `name` has parts.
    for (let i = 0; i < name.split("/").length; i++) up = dirname(up);
    dir ??= up;
  }
  protoDirCache = dir ?? join(cacheDir().dir, base);
  return protoDirCache;
}
