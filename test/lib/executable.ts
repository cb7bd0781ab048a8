/**
 * The single executable (dist/node-bin-<os>-<arch>, made by `npm run build`)
 * on a host of its own: a temporary directory holding a copy of the
 * executable alone with a components/ folder beside it, a PATH with no
 * node on it, no node_modules anywhere above, and a private runtime and cache
 * directory. The executable is spawned directly (never through node).
 */
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { ROOT, runCommand, startProcess, testPort, type CliResult, type DevProcess } from "./processes.ts";

interface Teardown {
  teardown(fn: () => unknown): void;
}

const TARGET = `${process.platform === "win32" ? "win" : process.platform}-${process.arch}`;
/** The executable `npm run build` makes for this machine. */
export const EXECUTABLE = join(ROOT, "dist", `node-bin-${TARGET}${process.platform === "win32" ? ".exe" : ""}`);

/** Tools a shell on a bare host would have; node is not one of them. */
const TOOLS = ["sh", "bash", "ls", "cat", "env", "id", "uname", "mkdir", "rm", "cp", "mv", "ln", "chmod", "rmdir", "dirname", "readlink", "grep", "sed", "head", "cut", "mktemp", "sha256sum", "printf"];

/** Where `name` is on this process's PATH, if anywhere. */
export function which(name: string, path = process.env.PATH ?? ""): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

export interface ExeHost {
  /** The temporary root: everything below is removed at teardown. */
  root: string;
  /** The executable's copy: <root>/app/node-bin, with <root>/app/components beside it. */
  exe: string;
  components: string;
  /** A directory on PATH holding a `node-bin` symlink to `exe` (as install.sh makes). */
  linkDir: string;
  /** A directory with no components/ to run commands from. */
  cwd: string;
  /** The whole environment of every command: PATH without node, private runtime and cache directories. */
  env: Record<string, string>;
  port: number;
}

/** A host of the executable's own; `components` are copied into its components/ folder. */
export function exeHost(t: Teardown, components: { from: string; name?: string }[]): ExeHost {
  const root = mkdtempSync(join(tmpdir(), "nodebin-exe-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const app = join(root, "app");
  const exe = join(app, "node-bin");
  const dirs = { tools: join(root, "tools"), link: join(root, "bin"), cwd: join(root, "elsewhere"), runtime: join(root, "run"), cache: join(root, "cache"), home: join(root, "home") };
  for (const dir of [app, ...Object.values(dirs)]) mkdirSync(dir, { recursive: true });
  copyFileSync(EXECUTABLE, exe);
  const compDir = join(app, "components");
  for (const c of components) cpSync(c.from, join(compDir, c.name ?? c.from.split("/").pop()!), { recursive: true });
  for (const tool of TOOLS) {
    const found = which(tool);
    if (found && !existsSync(join(dirs.tools, tool))) symlinkSync(found, join(dirs.tools, tool));
  }
  symlinkSync(exe, join(dirs.link, "node-bin"));
  const env = {
    PATH: [dirs.link, dirs.tools].join(delimiter),
    HOME: dirs.home,
    NODEBIN_RUNTIME_DIR: dirs.runtime,
    NODEBIN_CACHE_DIR: dirs.cache,
    NODEBIN_LOG: "info",
    NODEBIN_HOST: "exe-test",
  };
  const port = testPort();
  return { root, exe, components: compDir, linkDir: dirs.link, cwd: dirs.cwd, env, port };
}

export type ExeResult = CliResult;

/**
 * Runs `command args` to completion (killed after `timeoutMs`) with exactly
 * `env` (nothing inherited from the test process) in `cwd`. `command` may be a
 * bare name, looked up on env.PATH.
 */
export function runExe(command: string, args: string[], env: Record<string, string>, cwd: string, timeoutMs = 30_000): Promise<ExeResult> {
  return runCommand(command, args, env, { cwd, timeoutMs });
}

export type ExeProcess = DevProcess;

/** Starts `command args` like runExe; resolves once stdout matches `ready`. Stopped at teardown. */
export function startExe(t: Teardown, command: string, args: string[], env: Record<string, string>, cwd: string, ready: RegExp, readyTimeoutMs = 30_000): Promise<ExeProcess> {
  return startProcess(t, command, args, env, env, { ready, readyTimeoutMs, cwd, label: args[0] ?? command });
}

/** True when some directory from `dir` up holds a node_modules. */
export function nodeModulesAbove(dir: string): string | undefined {
  for (let d = dir; ; d = dirname(d)) {
    if (existsSync(join(d, "node_modules"))) return join(d, "node_modules");
    if (dirname(d) === d) return undefined;
  }
}
