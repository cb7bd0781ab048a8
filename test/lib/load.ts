/**
 * Load for the integration and reliability tests: N callers calling in a loop, every outcome
 * recorded (a reply, or a coded error with the node it concerned, when and
 * how long it took), so that a test can say which calls a fault affected and
 * that no call outlived its deadline.
 */
import { readFileSync } from "node:fs";
import { NodeBinError } from "../../src/wire/errors.ts";

export interface Failure {
  code: string;
  /** The node the call was addressed to, when the error says. */
  to: string;
  message: string;
  /** When it ended (epoch ms) and how long it took. */
  at: number;
  ms: number;
}

export interface LoadRun {
  readonly ok: number;
  /** Resolves once at least `n` calls succeeded (or the load stopped). */
  reach(n: number): Promise<void>;
  readonly failures: Failure[];
  /** Longest call, ms. */
  readonly maxMs: number;
  /** Calls that succeeded since `since` (epoch ms). */
  okSince(since: number): number;
  stop(): Promise<void>;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

/** `callers` loops, each making `call()` again as soon as the last one ended, until stopped (at the latest at teardown). */
export function runLoad(t: Teardown, callers: number, call: () => Promise<unknown>): LoadRun {
  let running = true;
  let ok = 0;
  let maxMs = 0;
  const failures: Failure[] = [];
  // Successes per 100 ms bucket, to see capacity come back after a fault.
  const buckets = new Map<number, number>();
  const loop = async () => {
    while (running) {
      const started = Date.now();
      try {
        await call();
        ok++;
        const b = Math.floor(Date.now() / 100);
        buckets.set(b, (buckets.get(b) ?? 0) + 1);
      } catch (err) {
        const e = NodeBinError.from(err);
        failures.push({ code: e.code, to: e.details.to ?? e.origin ?? "", message: e.message, at: Date.now(), ms: Date.now() - started });
      }
      maxMs = Math.max(maxMs, Date.now() - started);
    }
  };
  const loops = Array.from({ length: callers }, loop);
  const stop = async () => {
    running = false;
    await Promise.all(loops);
  };
  t.teardown(stop);
  return {
    get ok() {
      return ok;
    },
    failures,
    get maxMs() {
      return maxMs;
    },
    async reach(n) {
      while (ok < n && running) await new Promise((r) => setTimeout(r, 20));
    },
    okSince(since) {
      let n = 0;
      for (const [b, c] of buckets) if (b * 100 >= since) n += c;
      return n;
    },
    stop,
  };
}

/** Resident set size of a process (bytes), from /proc; undefined where there is no /proc. */
export function rssOf(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** How long the test phases run: short in CI, NODEBIN_SOAK=1 for the long variant. */
export function soakSeconds(short: number, long: number): number {
  const fromEnv = Number(process.env.NODEBIN_RELIABILITY_SECONDS);
  if (Number.isFinite(fromEnv) && fromEnv > 0) return fromEnv;
  return process.env.NODEBIN_SOAK === "1" ? long : short;
}

export const MiB = 1024 * 1024;
