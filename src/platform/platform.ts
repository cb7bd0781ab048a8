/**
 * What differs between the runtimes and operating systems node-bin runs on,
 * decided once, in one place. Every other module asks here instead of
 * testing `"Deno" in globalThis` or `process.platform` itself, so that a new
 * runtime or OS is one edit. The lowest layer: imports nothing of the project.
 */

/** Running under Deno (2.x): zeromq's native waiting does not work there (see transport/zmq.ts). */
export const isDeno: boolean = "Deno" in globalThis;

/** Running on Windows. */
export const isWindows: boolean = process.platform === "win32";

/**
 * libzmq has an ipc (Unix domain socket) transport here. Without it, same-host
 * traffic goes over loopback tcp and the well-known local endpoints are tcp ports.
 */
export const hasIpc: boolean = !isWindows;

/** The runtime's name and version, for logs and `--version`. */
export function runtimeDescription(): string {
  const deno = (globalThis as { Deno?: { version?: { deno?: string } } }).Deno;
  return isDeno ? `deno ${deno?.version?.deno ?? "?"}` : `node ${process.versions.node}`;
}
