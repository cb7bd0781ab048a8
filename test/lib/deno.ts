/**
 * node-bin under Deno, for integration tests: the deno binary of the npm
 * devDependency `deno`, whether it runs node-bin here, and node-bin processes
 * started with it as a user would (`deno run -A bin/node-bin ...`): awaited
 * on their readiness line, stopped (SIGTERM, then SIGKILL, by pid) at
 * teardown; one-shot CLI runs with a bounded time.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { BIN, ROOT, runCommand, startProcess, type CliResult, type DevProcess } from "./processes.ts";

interface Teardown {
  teardown(fn: () => unknown): void;
}

export const DENO = join(ROOT, "node_modules", ".bin", process.platform === "win32" ? "deno.cmd" : "deno");

/** The environment of a Deno child: the user's, without tap's NODE_OPTIONS, no colours, no update check. */
export function denoEnv(env: Record<string, string> = {}): NodeJS.ProcessEnv {
  const { NODE_OPTIONS: _, ...rest } = process.env;
  return { ...rest, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", DENO_NO_PROMPT: "1", ...env };
}

/** `deno run -A bin/node-bin ...args`: node-bin's own entry point, TypeScript run by Deno itself. */
export function denoArgs(args: string[]): string[] {
  return ["run", "-A", BIN, ...args];
}

let unusable: string | false | undefined;

/** Why node-bin cannot run under Deno here (a skip message), or false when it can. Checked once. */
export function denoUnusable(): string | false {
  if (unusable !== undefined) return unusable;
  if (!existsSync(DENO)) return (unusable = `no deno binary at ${DENO} (npm ci installs the devDependency "deno")`);
  const run = spawnSync(DENO, denoArgs(["--version"]), { cwd: ROOT, encoding: "utf8", timeout: 60_000, env: denoEnv() });
  if (run.error || run.status !== 0 || !/^\d+\.\d+\.\d+/.test(run.stdout)) {
    return (unusable = `deno cannot run node-bin here (\`deno run -A bin/node-bin --version\`: ${run.error?.message ?? `exit ${run.status}`}) ${run.stderr.trim().slice(0, 500)}`);
  }
  return (unusable = false);
}

/** Runs `deno run -A bin/node-bin ...args` to completion (killed after `timeoutMs`). */
export function runDenoCli(args: string[], env: Record<string, string>, options: { timeoutMs?: number } = {}): Promise<CliResult> {
  return runCommand(DENO, denoArgs(args), denoEnv(env), { ...options, cwd: ROOT });
}

/**
 * Starts `deno run -A bin/node-bin ...args`; resolves once stdout matches
 * `ready` (its first group is the endpoint). Stopped at teardown: SIGTERM,
 * then SIGKILL after 10 s.
 */
export function startDeno(t: Teardown, args: string[], env: Record<string, string>, ready: RegExp, readyTimeoutMs = 60_000): Promise<DevProcess> {
  return startProcess(t, DENO, denoArgs(args), env, denoEnv(env), { ready, readyTimeoutMs, cwd: ROOT, label: `deno ${args[0]}` });
}
