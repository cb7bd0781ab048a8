/**
 * Processes and temporary directories of bench/run.ts, and their cleanup.
 *
 * Every process is started here and recorded by pid; every temporary
 * directory is made here. cleanupSync() (run on every exit of the driver,
 * Ctrl-C and failures included) SIGKILLs each recorded process that is still
 * alive, and every process whose environment names one of this run's
 * temporary directories (`NODEBIN_RUNTIME_DIR=...`): the governor's children
 * are started detached by the governor, not by us, and are found that way.
 * Then it removes the directories. No process is ever looked up by name.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { IpcReply } from "./ipc.ts";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const BIN = join(ROOT, "bin", "node-bin");
/** node flags that let a child run TypeScript on Node 20 (a no-op where Node strips types). */
export const TS = ["--import", "./bin/register.mjs"];
/** TS, plus the CPU/RSS probe (bench/lib/probe.ts) every server carries. */
export const PROBED = [...TS, "--import", "./bench/lib/probe.ts"];

const tempDirs: string[] = [];
const procs = new Set<Proc>();

/** A private temporary directory (mode 0700), removed at cleanup. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `node-bin-bench-${prefix.replace(/[^\w.-]+/g, "-").replace(/^-|-$/g, "")}-`));
  tempDirs.push(dir);
  return dir;
}

/** A random TCP port that was free on 127.0.0.1 a moment ago (20000-59999). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 40_000);
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once("error", () => resolve(false));
      server.listen({ port, host: "127.0.0.1", exclusive: true }, () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error("no free port found");
}

export interface StartOptions {
  /** node flags and script arguments, after process.execPath. */
  args: string[];
  env?: Record<string, string>;
  /** A line of stdout that says it is ready; its groups are returned as `match`. */
  ready: RegExp;
  readyTimeoutMs?: number;
  /** Open an IPC channel (for request()). Default true. */
  ipc?: boolean;
}

export class Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly startedAt = performance.now();
  match: RegExpExecArray | undefined;
  /** performance.now() when the readiness line arrived. */
  readyAt = 0;
  stdout = "";
  stderr = "";
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    options: StartOptions,
  ) {
    const { NODE_OPTIONS: _, ...env } = process.env;
    this.child = spawn(process.execPath, options.args, {
      cwd: ROOT,
      env: { ...env, NODEBIN_LOG: "warn", ...options.env },
      stdio: options.ipc === false ? ["ignore", "pipe", "pipe"] : ["ignore", "pipe", "pipe", "ipc"],
    });
    if (this.child.pid === undefined) throw new Error(`${name}: could not start`);
    this.pid = this.child.pid;
    procs.add(this);
    this.child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      if (this.stdout.length < 100_000) this.stdout += d;
    });
    this.child.stderr!.setEncoding("utf8").on("data", (d: string) => {
      if (this.stderr.length < 100_000) this.stderr += d;
    });
    this.child.on("message", (m: unknown) => {
      const reply = m as IpcReply;
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.result);
      else p.reject(new Error(`${name}: ${reply.error}`));
    });
    this.exited = new Promise<void>((resolve) =>
      this.child.once("exit", () => {
        for (const p of this.pending.values()) p.reject(new Error(`${name} exited (${this.child.signalCode ?? this.child.exitCode})${this.tail()}`));
        this.pending.clear();
        resolve();
      }),
    );
    this.child.on("error", () => {}); // reported through exit
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last lines of its stderr, for error messages. */
  tail(): string {
    return this.stderr ? `\n--- ${this.name} stderr:\n${this.stderr.slice(-3000)}` : "";
  }

  /** Resolves once stdout matches `ready` (sets match and readyAt). */
  waitReady(ready: RegExp, timeoutMs = 60_000): Promise<this> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = ready.exec(this.stdout);
        if (!m) return false;
        this.match = m;
        this.readyAt = performance.now();
        cleanup();
        resolve(this);
        return true;
      };
      const onExit = () => {
        cleanup();
        reject(new Error(`${this.name} exited (${this.child.signalCode ?? this.child.exitCode}) before it was ready${this.tail()}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${this.name}: not ready within ${timeoutMs} ms${this.tail()}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.child.stdout!.off("data", check);
        this.child.off("exit", onExit);
      };
      if (check()) return;
      this.child.stdout!.on("data", check);
      this.child.once("exit", onExit);
    });
  }

  /** One request over IPC (see bench/lib/ipc.ts). */
  request<T>(op: string, args: Record<string, unknown> = {}, timeoutMs = 120_000): Promise<T> {
    if (!this.alive) return Promise.reject(new Error(`${this.name} is not running${this.tail()}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.name}: no answer to ${op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.send({ id, op, ...args });
    });
  }

  /** SIGTERM, then SIGKILL if it has not exited within `ms`. */
  async stop(ms = 5_000): Promise<void> {
    if (this.alive) {
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), ms);
      await this.exited;
      clearTimeout(timer);
    }
    procs.delete(this);
  }
}

/** Starts a process and waits for its readiness line. */
export async function start(name: string, options: StartOptions): Promise<Proc> {
  const p = new Proc(name, options);
  try {
    return await p.waitReady(options.ready, options.readyTimeoutMs);
  } catch (err) {
    await p.stop(1_000);
    throw err;
  }
}

/** The resident set size of a process, from /proc/<pid>/status (bytes), or undefined once it is gone. */
export function rssOf(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Pids of live processes (not this one) with an environment variable whose value is one of `dirs` or a path inside it. */
function pidsUsing(dirs: string[]): number[] {
  if (dirs.length === 0) return [];
  const found: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return found;
  }
  for (const entry of entries) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const values = readFileSync(`/proc/${pid}/environ`, "latin1")
        .split("\0")
        .map((kv) => kv.slice(kv.indexOf("=") + 1));
      if (values.some((v) => dirs.some((dir) => v === dir || v.startsWith(`${dir}/`)))) found.push(pid);
    } catch {
      // gone, or not ours to read
    }
  }
  return found;
}

/** Pids of live processes whose environment names one of this run's temporary directories. */
export function pidsUsingTempDirs(): number[] {
  return pidsUsing(tempDirs);
}

/** SIGKILLs the live processes whose environment names `dir` (a governor's children), by pid; returns them. */
export function killUsing(dir: string): number[] {
  const pids = pidsUsing([dir]);
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  return pids;
}

/** Stops every process still recorded (gracefully, then SIGKILL). */
export async function stopAll(): Promise<void> {
  await Promise.all([...procs].map((p) => p.stop()));
}

/**
 * SIGKILLs every process this run started (recorded, or found through the
 * temporary directories) and removes the temporary directories. Synchronous:
 * safe in process.on("exit").
 */
export function cleanupSync(): void {
  for (const p of procs) {
    if (p.alive) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
  procs.clear();
  for (const pid of pidsUsingTempDirs()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}
