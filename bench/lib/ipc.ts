/**
 * Request/response over the Node IPC channel between the bench driver
 * (bench/run.ts) and the processes it starts: the driver sends
 * `{ id, op, ...args }`, the child answers `{ id, ok, result | error }`.
 *
 * Children serve requests with serveIpc(). A child whose driver goes away
 * (the channel disconnects: the driver exited or was killed) sends itself
 * SIGTERM, and exits 5 s later if that did not end it: nothing the bench
 * starts outlives it, even when the driver is SIGKILLed.
 */

export interface IpcRequest {
  id: number;
  op: string;
  [arg: string]: unknown;
}

export interface IpcReply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

export type IpcHandlers = Record<string, (request: IpcRequest) => unknown>;

/**
 * Serves `handlers` on this process's IPC channel (a no-op without one).
 * The channel is unref'd: it never keeps the process alive by itself.
 */
export function serveIpc(handlers: IpcHandlers): void {
  const send = process.send?.bind(process);
  if (!send) return;
  process.on("message", (message: unknown) => {
    const request = message as IpcRequest;
    if (typeof request !== "object" || request === null || typeof request.id !== "number") return;
    const handler = handlers[request.op];
    if (!handler) {
      send({ id: request.id, ok: false, error: `unknown op ${JSON.stringify(request.op)}` } satisfies IpcReply);
      return;
    }
    Promise.resolve()
      .then(() => handler(request))
      .then(
        (result) => send({ id: request.id, ok: true, result } satisfies IpcReply),
        (err: unknown) => send({ id: request.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies IpcReply),
      );
  });
  process.once("disconnect", () => {
    process.kill(process.pid, "SIGTERM");
    setTimeout(() => process.exit(1), 5_000).unref();
  });
  (process.channel as { unref?: () => void } | undefined)?.unref?.();
}

/** This process's CPU time (user + system, µs, all threads) and resident set size (bytes). */
export function cpuAndRss(): { cpuUs: number; rss: number } {
  const { user, system } = process.cpuUsage();
  return { cpuUs: user + system, rss: process.memoryUsage.rss() };
}
