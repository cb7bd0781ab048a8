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
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";
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
  assets: Record<string, { sha256: string; size: number }>;
}

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

/** The error for a cache directory that cannot be used; the CLI entry prints its message alone. */
export class CacheDirError extends Error {
  override readonly name = "CacheDirError";
  readonly code = "NODEBIN_CACHE_DIR";
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
export function cacheDir(env: Record<string, string | undefined> = process.env, platform: string = process.platform): { dir: string; fromEnv: boolean } {
  if (env.NODEBIN_CACHE_DIR) return { dir: resolve(env.NODEBIN_CACHE_DIR), fromEnv: true };
  if (platform === "win32") return { dir: join(env.LOCALAPPDATA || join(homedir(), "AppData", "Local"), "node-bin"), fromEnv: false };
  const xdg = env.XDG_CACHE_HOME;
  return { dir: join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), ".cache"), "node-bin"), fromEnv: false };
}

/**
 * The file `relative` in the cache directory, holding `size` bytes: written
 * (from `data()`, through a temporary file and a rename) unless a file of that
 * size and owned by this user is already there. Names carry a content hash, so
 * a file of the right size is the right file; the directory is created 0700.
 * A cache directory that cannot be created or written is a CacheDirError
 * naming it and NODEBIN_CACHE_DIR. An up-to-date read-only cache still works.
 */
export function cachedFile(relative: string, size: number, data: () => Uint8Array, mode = 0o644, env: Record<string, string | undefined> = process.env): string {
  const { dir, fromEnv } = cacheDir(env);
  const file = join(dir, relative);
  try {
    const st = statSync(file);
    const ours = typeof process.getuid !== "function" || st.uid === process.getuid();
    if (st.isFile() && st.size === size && ours) return file;
  } catch {
    // not there yet
  }
  const tmp = `${file}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(tmp, data(), { mode });
    renameSync(tmp, file);
  } catch (err) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // nothing was written
    }
    // Another process may have won the race (Windows refuses to replace a loaded file).
    try {
      if (statSync(file).size === size) return file;
    } catch {
      // no: report the first failure
    }
    const e = err as NodeJS.ErrnoException;
    const why = e.code ? `${e.code}${e.path ? ` on ${e.path}` : ""}` : String(err);
    const where = `the cache directory ${dir}${fromEnv ? " (NODEBIN_CACHE_DIR)" : ""}`;
    throw new CacheDirError(
      dir,
      `cannot write ${where}: ${why}. node-bin writes its native addon and protos there once; set NODEBIN_CACHE_DIR to a writable directory`,
      { cause: err },
    );
  }
  return file;
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
 * the cache (once) and loads it. Undefined outside the executable.
 */
export function loadEmbeddedAddon(name: string): unknown {
  const sea = seaModule();
  const entry = assetManifest()?.assets[name];
  if (!sea || !entry) return undefined;
  const stem = name.replace(/\.node$/, "");
  const file = cachedFile(`${stem}-${entry.sha256.slice(0, 16)}.node`, entry.size, () => new Uint8Array(sea.getRawAsset(name)), 0o755);
  const module = { exports: {} as unknown };
  try {
    process.dlopen(module, file);
  } catch (err) {
    // Typically a cache directory on a noexec mount: "failed to map segment from shared object".
    const dir = cacheDir().dir;
    throw new CacheDirError(
      dir,
      `cannot load the native addon ${file} (${(err as Error).message.split("\n")[0]}); if the cache directory is on a noexec mount, set NODEBIN_CACHE_DIR to a directory on another`,
      { cause: err },
    );
  }
  return module.exports;
}

let protoDirCache: string | undefined;

/**
 * The directory holding nodebin/*.proto when they are embedded (the bundle and
 * the executable): extracted to the cache once. Undefined from source.
 */
export function embeddedProtoDir(): string | undefined {
  const embedded: typeof EMBEDDED_PROTOS = EMBEDDED_PROTOS;
  if (!embedded) return undefined;
  if (protoDirCache) return protoDirCache;
  const base = `proto-${embedded.sha256.slice(0, 16)}`;
  for (const [name, text] of Object.entries(embedded.files)) {
    const bytes = Buffer.from(text, "utf8");
    cachedFile(join(base, name), bytes.length, () => bytes);
  }
  protoDirCache = join(cacheDir().dir, base);
  return protoDirCache;
}
