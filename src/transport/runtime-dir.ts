/**
 * The private runtime directory of this user's node-bin processes: where ipc
 * sockets and pid files live. Mode 0700 and owned by the user, because anyone
 * who can open an ipc socket can call every component behind it.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, linkSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { hasIpc } from "../platform/platform.ts";
import { NodeBinError } from "../wire/errors.ts";

type Env = Record<string, string | undefined>;

/** NODEBIN_RUNTIME_DIR, else $XDG_RUNTIME_DIR/node-bin, else <tmp>/node-bin-<uid>. Not created. */
export function runtimeDirPath(env: Env = process.env): string {
  if (env.NODEBIN_RUNTIME_DIR) return env.NODEBIN_RUNTIME_DIR;
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, "node-bin");
  const uid = typeof process.getuid === "function" ? process.getuid() : "user";
  return join(tmpdir(), `node-bin-${uid}`);
}

/**
 * Creates the runtime directory if needed and checks it is private. Throws
 * PERMISSION_DENIED when it belongs to someone else or cannot be made private,
 * naming the directory and NODEBIN_RUNTIME_DIR.
 */
export function ensureRuntimeDir(env: Env = process.env): string {
  const dir = runtimeDirPath(env);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = lstatSync(dir);
    if (!st.isDirectory()) throw new Error("not a directory");
    if (typeof process.getuid === "function" && st.uid !== process.getuid()) throw new Error(`owned by uid ${st.uid}`);
    if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
  } catch (err) {
    throw new NodeBinError("PERMISSION_DENIED", `runtime directory ${dir} is unusable (${(err as Error).message}); set NODEBIN_RUNTIME_DIR to a private directory`, {
      details: { dir },
      cause: err,
    });
  }
  return dir;
}

/** The well-known local endpoint of `node-bin dev`, which `node-bin client` finds by itself. */
export function devEndpoint(env: Env = process.env): string {
  // Without libzmq's ipc transport (Windows): a fixed loopback port instead.
  return !hasIpc ? "tcp://127.0.0.1:7399" : `ipc://${join(runtimeDirPath(env), "dev.sock")}`;
}

/**
 * The owner file beside an ipc socket ("<socket path>.pid"): which process
 * serves it. libzmq binds an ipc path by unlinking whatever socket is there,
 * so without it a second process would silently steal a live one's socket,
 * and a client could not tell a live socket from one a crashed process left.
 * Undefined for endpoints that are not ipc.
 */
export function ipcOwnerFile(endpoint: string): string | undefined {
  return endpoint.startsWith("ipc://") ? `${endpoint.slice("ipc://".length)}.pid` : undefined;
}

/** The pid of the live process serving this ipc endpoint, per its owner file (a stale file from a crash does not count). */
export function ipcOwner(endpoint: string): number | undefined {
  const file = ipcOwnerFile(endpoint);
  if (!file || !existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, "utf8").trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  if (pid === process.pid) return pid;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    // EPERM: alive but someone else's; ESRCH: gone.
    return (err as NodeJS.ErrnoException).code === "EPERM" ? pid : undefined;
  }
}

/** Writes the owner file of an ipc endpoint this process now serves. */
export function claimIpc(endpoint: string): void {
  const file = ipcOwnerFile(endpoint);
  if (file) writeFileSync(file, `${process.pid}\n`);
}

/** Removes an ipc endpoint's socket and owner file, if this process owns it. */
export function releaseIpc(endpoint: string): void {
  const file = ipcOwnerFile(endpoint);
  if (!file || ipcOwner(endpoint) !== process.pid) return;
  rmSync(file, { force: true });
  rmSync(endpoint.slice("ipc://".length), { force: true });
}

/** The discovery port a host agent (the governor, or a container standing in) listens on by default. */
export const DEFAULT_DISCOVERY_PORT = 7400;

/** The host agent's ipc endpoint for a discovery port: where the host's containers register and local clients pull. */
export function discoveryIpc(runtimeDir: string, port: number = DEFAULT_DISCOVERY_PORT): string {
  return `ipc://${join(runtimeDir, `discovery-${port}.sock`)}`;
}

/** The file in the runtime directory that keeps this host's id (see hostIdentity). */
export const HOST_ID_FILE = "host-id";
/** What a host id kept there may look like: the file is checked against it whenever it is read. */
const HOST_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * This host's id, made once and kept in the runtime directory `dir` (which
 * must exist: ensureRuntimeDir()), so that every process of the host that
 * shares the directory (governor, containers, dev, client) agrees on it, and
 * two machines with the same host name are two hosts: the host name alone
 * made a second host take the first one's gossip for its own. The id reads
 * "<host name>-<12 hex digits>": the name for people (status, `client
 * nodes`), the random part for uniqueness.
 *
 * Race-free when several processes of a host start at once: the id is
 * written whole to a temporary file of this process (mode 0600, created
 * exclusively) and hard-linked to its name, which fails for all but the
 * first; everyone then reads what the first wrote. Throws FAILED_PRECONDITION
 * when the file holds anything but an id (it is never overwritten: processes
 * already running hold the id it had), PERMISSION_DENIED when it is not a
 * regular file of this user.
 */
export function hostIdentity(dir: string): string {
  const file = join(dir, HOST_ID_FILE);
  const existing = readHostIdentity(dir);
  if (existing !== undefined) return existing;
  const label = hostname().replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "").slice(0, 64) || "host";
  try {
    createOnce(file, `${label}-${randomBytes(6).toString("hex")}\n`);
  } catch (err) {
    throw new NodeBinError("PERMISSION_DENIED", `cannot keep this host's id in ${file} (${(err as Error).message}); set NODEBIN_HOST or --host`, { details: { file }, cause: err });
  }
  const kept = readHostIdentity(dir);
  if (kept === undefined) throw new NodeBinError("FAILED_PRECONDITION", `${file} vanished while this host's id was being made; start again`, { details: { file } });
  return kept;
}

/**
 * Creates `file` (mode 0600) holding `text`, unless it exists: of several
 * processes racing, the first one's text is kept whole. The text is written
 * to a temporary file of this process (created exclusively) and hard-linked
 * to the name, which fails for all but the first. Throws what the file
 * system throws, except that the file already exists.
 */
export function createOnce(file: string, text: string): void {
  const temp = join(dirname(file), `.${basename(file)}-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    writeFileSync(temp, text, { mode: 0o600, flag: "wx" });
    try {
      linkSync(temp, file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EPERM" || code === "ENOTSUP" || code === "EOPNOTSUPP") {
        // A file system without hard links: exclusive creation still leaves one winner (a reader may
        // then, very rarely, catch the file empty and fail loudly rather than take another's).
        writeFileSync(file, text, { mode: 0o600, flag: "wx" });
      } else if (code !== "EEXIST") throw err;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  } finally {
    rmSync(temp, { force: true });
  }
}

/**
 * The host id kept in runtime directory `dir`, checked; undefined when there
 * is none yet. Throws as hostIdentity() does for a file that is not an id.
 */
export function readHostIdentity(dir: string): string | undefined {
  const file = join(dir, HOST_ID_FILE);
  let st;
  try {
    st = lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new NodeBinError("PERMISSION_DENIED", `cannot read this host's id from ${file} (${(err as Error).message}); set NODEBIN_HOST or --host`, { details: { file }, cause: err });
  }
  // A symlink or a file of another user is not ours to trust (the directory is private, so neither should be there).
  if (!st.isFile() || (typeof process.getuid === "function" && st.uid !== process.getuid())) {
    throw new NodeBinError("PERMISSION_DENIED", `${file} is not a regular file of this user; remove it (a new host id is made) or set NODEBIN_HOST`, { details: { file } });
  }
  const text = st.size <= 256 ? readFileSync(file, "utf8") : "";
  const id = text.trim();
  if (!HOST_ID.test(id)) {
    throw new NodeBinError("FAILED_PRECONDITION", `${file} does not hold a host id (${JSON.stringify(text.slice(0, 40))}); remove it (a new one is made) or set NODEBIN_HOST`, { details: { file } });
  }
  return id;
}
