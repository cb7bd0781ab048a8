/**
 * Real processes for integration tests: `node-bin dev` started with a private
 * runtime directory, awaited on its readiness line (never a sleep), and always
 * stopped at teardown; one-shot CLI runs with a bounded time.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { keyFileText, newKeyLine } from "../../src/security/keys.ts";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const BIN = join(ROOT, "bin", "node-bin");
export const EXAMPLES = join(ROOT, "examples", "components");

/**
 * The environment of a child as a user's shell would give it: without the
 * NODE_OPTIONS tap sets to instrument its own test processes.
 */
function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const { NODE_OPTIONS: _, ...rest } = process.env;
  return { ...rest, ...env };
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A private runtime directory (ipc sockets, pid files) removed at teardown. */
export function privateRuntime(t: Teardown): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-test-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return { NODEBIN_RUNTIME_DIR: dir, NODEBIN_LOG: "warn" };
}

/**
 * A new cluster key file (mode 0600, as `node-bin keygen` writes it) in a
 * directory removed at teardown: give it to every process of a test's
 * cluster as NODEBIN_CLUSTER_KEY_FILE (or --cluster-key). `keys` lines make a
 * keyring (the first current); default one new key.
 */
export function clusterKeyFile(t: Teardown, keys: string[] = [newKeyLine()]): string {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-key-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "cluster.key");
  writeFileSync(file, keyFileText(keys), { mode: 0o600 });
  return file;
}

/**
 * Runs `command args` to completion (SIGKILL after `timeoutMs`), with exactly
 * `env` (callers build it), feeding `input` on stdin. The one place every
 * one-shot process of the tests is run from.
 */
export function runCommand(command: string, args: string[], env: NodeJS.ProcessEnv, options: { input?: string; timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ["pipe", "pipe", "pipe"], ...(options.cwd ? { cwd: options.cwd } : {}) });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 30_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on("error", () => {}); // a command that exits without reading its input
    child.stdin.end(options.input ?? "");
  });
}

/** Runs `node-bin ...args` to completion (killed after `timeoutMs`). */
export function runCli(args: string[], env: Record<string, string>, options: { input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return runCommand(process.execPath, [BIN, ...args], childEnv(env), options);
}

export interface DevProcess {
  child: ChildProcess;
  /** The first endpoint on the readiness line. */
  endpoint: string;
  /** The whole readiness line. */
  readyLine: string;
  env: Record<string, string>;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Everything it wrote to stdout so far (its readiness line included). */
  stdout(): string;
  /** Resolves once its stderr matches `pattern` (rejects after `timeoutMs`). */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /**
   * Sends `signal` (default SIGTERM; null: none, it is exiting by itself),
   * then resolves with the exit code (SIGKILL if it has not exited after `graceMs`, default 10 s).
   */
  stop(signal?: NodeJS.Signals | null, graceMs?: number): Promise<number | null>;
}

/** Starts `node-bin dev` and resolves once it printed its readiness line. Stopped at teardown. */
export function startDev(t: Teardown, args: string[], env: Record<string, string>, readyTimeoutMs = 30_000): Promise<DevProcess> {
  return startNodeBin(t, ["dev", ...args], env, /ready at (\S+)/, readyTimeoutMs);
}

/** Starts `node-bin container` and resolves once it printed its readiness line. Stopped at teardown. */
export function startContainer(t: Teardown, args: string[], env: Record<string, string>, readyTimeoutMs = 30_000): Promise<DevProcess> {
  return startNodeBin(t, ["container", ...args], env, /container ready: \S+ at (\S+)/, readyTimeoutMs);
}

/**
 * Starts `node-bin ...args`; resolves once stdout matches `ready` (its first
 * group is the endpoint). Stopped (SIGTERM, then SIGKILL) at teardown.
 */
export function startNodeBin(t: Teardown, args: string[], env: Record<string, string>, ready: RegExp, readyTimeoutMs = 30_000): Promise<DevProcess> {
  return startProcess(t, process.execPath, [BIN, ...args], env, childEnv(env), { ready, readyTimeoutMs, label: args[0] ?? "node-bin" });
}

/**
 * Starts `command args` with exactly `processEnv`; resolves once stdout
 * matches `ready` (its first group is the endpoint). Stopped (SIGTERM, then
 * SIGKILL) at teardown. The one place every long-running process of the
 * tests is started from.
 */
export function startProcess(
  t: Teardown,
  command: string,
  args: string[],
  env: Record<string, string>,
  processEnv: NodeJS.ProcessEnv,
  options: { ready: RegExp; readyTimeoutMs?: number; cwd?: string; label?: string },
): Promise<DevProcess> {
  const { ready, readyTimeoutMs = 30_000, label = command } = options;
  const child = spawn(command, args, { env: processEnv, stdio: ["ignore", "pipe", "pipe"], ...(options.cwd ? { cwd: options.cwd } : {}) });
  let stdout = "";
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const stop = async (signal: NodeJS.Signals | null = "SIGTERM", graceMs = 10_000) => {
    if (signal && child.exitCode === null && child.signalCode === null) child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  t.teardown(() => stop());
  const waitForStderr = (pattern: RegExp, timeoutMs = 30_000) =>
    new Promise<void>((resolve, reject) => {
      if (pattern.test(stderr)) return resolve();
      const timer = setTimeout(() => reject(new Error(`stderr did not match ${pattern} within ${timeoutMs} ms:\n${stderr}`)), timeoutMs);
      const check = () => {
        if (!pattern.test(stderr)) return;
        clearTimeout(timer);
        child.stderr!.off("data", check);
        resolve();
      };
      child.stderr!.on("data", check);
    });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label} not ready within ${readyTimeoutMs} ms; stderr:\n${stderr}`)), readyTimeoutMs);
    child.stdout!.on("data", (d: Buffer) => {
      stdout += d;
      const match = ready.exec(stdout);
      if (match) {
        clearTimeout(timer);
        const end = stdout.indexOf("\n", match.index);
        const line = stdout.slice(stdout.lastIndexOf("\n", match.index) + 1, end < 0 ? undefined : end);
        resolve({ child, endpoint: match[1] ?? "", readyLine: line, env, stderr: () => stderr, stdout: () => stdout, waitForStderr, stop });
      }
    });
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${label} exited with ${code} before it was ready; stderr:\n${stderr}`));
    });
  });
}

/** Whether process `pid` runs (Linux: a zombie, which only waits for its parent to reap it, counts as gone). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return false;
  }
}

/**
 * A port for a test's listener (a discovery port, say), drawn from 20000-32767:
 * below Linux's ephemeral range (32768-60999), where the OS picks the ports of
 * every socket bound to port 0 and of outgoing connections, so two test files
 * run side by side (tap's jobs) never see theirs taken by such a socket.
 * Two draws can still meet, at about one in 12 767 (and one more above it is still below the range).
 */
export function testPort(): number {
  return 20000 + Math.floor(Math.random() * 12767);
}
