/**
 * Polling for a condition that has no event to await (a peer's gossip, a
 * process's status over the CLI, the kernel's link state): the one helper the
 * tests share, so a timeout always says what was awaited, for how long, and
 * what was last seen.
 */

export interface UntilOptions {
  /** Between two checks; 100 ms unless told. */
  everyMs?: number;
  /** What to print beside the timeout, e.g. the last rows seen. */
  last?: () => unknown;
}

/**
 * Calls `check` until it returns a value that is neither `undefined` nor
 * `false`, and returns that value. A check that throws is tried again (a CLI
 * call made while a process starts may fail); its last error is in the
 * timeout's message. Rejects after `ms` naming `what`.
 */
export async function until<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  ms: number,
  what: string,
  options: UntilOptions = {},
): Promise<T> {
  const end = Date.now() + ms;
  const every = options.everyMs ?? 100;
  let error: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
      error = undefined;
    } catch (err) {
      error = err;
    }
    if (Date.now() > end) {
      const seen = options.last ? `; last seen: ${JSON.stringify(options.last())}` : "";
      const failed = error === undefined ? "" : `; last error: ${error instanceof Error ? error.message : String(error)}`;
      throw new Error(`${what}: not within ${ms} ms${seen}${failed}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}
