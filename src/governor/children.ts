/**
 * The governor's children as processes: how one is spawned (the same entry
 * point as the governor, detached into its own process group, its output in a
 * log file so it outlives the governor), the record of them kept in the
 * governor's state directory for a later governor to adopt, and reading the
 * last error a crashed child wrote.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, openSync, readSync, fstatSync, statSync } from "node:fs";
import { isDeno } from "../platform/platform.ts";
import { isSea } from "../runtime/executable.ts";
import { StateFile } from "./state-file.ts";

/** How to start this very program again: `node bin/node-bin` from source, the executable itself when packaged. */
export function selfCommand(argv: readonly string[] = process.argv, execPath = process.execPath, sea = isSea(), deno = isDeno): { command: string; args: string[] } {
  // Inside the single executable argv[1] is the path the user typed (which may
  // be a symlink, or a bare name found on PATH): the executable needs no script.
  if (sea) return { command: execPath, args: [] };
  const script = argv[1];
  // From source argv[1] is the entry script (bin/node-bin, or dist/node-bin.cjs).
  // execArgv is deliberately not passed on: a governor started under
  // --cpu-prof or --inspect should not start every child that way.
  if (script && script !== execPath && existsSync(script) && statSync(script).isFile()) {
    // Under Deno execPath is the deno binary: the child needs `run -A` (Deno cannot
    // tell a program its own permission flags; a governor runs with -A already).
    return deno ? { command: execPath, args: ["run", "-A", script] } : { command: execPath, args: [script] };
  }
  return { command: execPath, args: [] };
}

/** What the governor records about a child, on disk, for a later governor to adopt. */
export interface ChildRecord {
  pid: number;
  component: string;
  /** Content hash of the component's code when it was spawned. */
  hash: string;
  /** Container id (its lease key) and the ipc endpoint its control answers at, once it registered. */
  container?: string;
  endpoint?: string;
  startedAt: number;
  restarts: number;
  log: string;
}

export interface SpawnSpec {
  component: string;
  /** Arguments after `container` (--component ... etc.). */
  args: string[];
  env: NodeJS.ProcessEnv;
  logFile: string;
  command?: { command: string; args: string[] };
}

/**
 * Spawns `node-bin container ...` detached (its own process group: a signal
 * to the governor's group, a Ctrl-C in its terminal, does not reach it), with
 * stdout and stderr appended to its log file. The governor keeps no pipe to
 * it: a child must not die of a broken pipe when its governor is recycled.
 */
export function spawnChild(spec: SpawnSpec): ChildProcess {
  const { command, args } = spec.command ?? selfCommand();
  const fd = openSync(spec.logFile, "a", 0o600);
  try {
    const child = spawn(command, [...args, "container", ...spec.args], { detached: true, stdio: ["ignore", fd, fd], env: spec.env });
    child.unref();
    return child;
  } finally {
    closeSync(fd);
  }
}

/** True while a process with this pid exists (it may belong to someone else: callers confirm by pinging it). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * The last error a child wrote to its log: its `error: CODE: message` line
 * (what every node-bin command prints when it fails), else its last error-level
 * log line, else its last line. Reads only the end of the file.
 */
export function lastError(logFile: string, maxBytes = 8192): string | undefined {
  let text: string;
  try {
    const fd = openSync(logFile, "r");
    try {
      const size = fstatSync(fd).size;
      const start = Math.max(0, size - maxBytes);
      const buf = Buffer.alloc(size - start);
      readSync(fd, buf, 0, buf.length, start);
      text = buf.toString("utf8");
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
  const lines = text.split("\n").map((l) => l.trimEnd()).filter(Boolean);
  const pick = [...lines].reverse().find((l) => l.startsWith("error: ")) ?? [...lines].reverse().find((l) => / error /.test(l)) ?? lines.at(-1);
  return pick?.slice(0, 2000);
}

/** The governor's children file (state-file.ts). */
export class ChildrenFile extends StateFile<ChildRecord> {
  constructor(path: string) {
    super(path, "children", isRecord);
  }
}

function isRecord(r: unknown): r is ChildRecord {
  const x = r as ChildRecord;
  return typeof x === "object" && x !== null && Number.isInteger(x.pid) && x.pid > 0 && typeof x.component === "string" && typeof x.hash === "string";
}
