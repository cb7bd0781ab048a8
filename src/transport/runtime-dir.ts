/**
 * The private runtime directory of this user's node-bin processes: where ipc
 * sockets and pid files live. Mode 0700 and owned by the user, because anyone
 * who can open an ipc socket can call every component behind it.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
