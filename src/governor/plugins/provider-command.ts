/**
 * The built-in host provider ("command"): a user's commands do the work (a
 * script calling a cloud CLI, `kubectl scale`, anything), the governor's
 * provider loop (governor/provider.ts) decides when.
 *
 * - launch: option `command` runs with NODEBIN_SEEDS (the discovery
 *   endpoints the new host joins from, "ip:port", comma-separated),
 *   NODEBIN_NETWORK and NODEBIN_REASON (why, in words) over the governor's
 *   environment, less its NODEBIN_HOST (that is this host's id: a script that
 *   starts a governor must not inherit it). Its last line on stdout may be
 *   the new host's id (a word of letters, digits and `._:@-`); anything else
 *   there is ignored.
 * - release: option `releaseCommand` runs with NODEBIN_HOST (the host to give
 *   back), NODEBIN_NETWORK and NODEBIN_REASON. Without one, launched hosts are
 *   never released.
 *
 * A command given as a string (`--provider-command CMD`, or a string in
 * governor.json) is a line the user wrote for a shell: it runs under
 * `/bin/sh -c`. Given as an array of strings (governor.json only) it is a
 * program and its arguments: no shell. A command that exits non-zero, or
 * outlives option `timeoutMs` (default 5 min: then it gets SIGTERM by its
 * pid, SIGKILL 5 s later), fails with the tail of its stderr. close() ends a
 * command still running the same way (the governor stops). Each command's
 * stdout and stderr are kept to their last 64 KiB.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { NodeBinError } from "../../wire/errors.ts";
import type { HostProvider, PluginModule } from "../strategy.ts";

/** A command: a shell line (string) or a program with its arguments (array). */
export type ProviderCommandLine = string | readonly string[];

export interface CommandProviderOptions {
  command: ProviderCommandLine;
  releaseCommand?: ProviderCommandLine;
  /** Longest a command may run (ms; default 5 min). */
  timeoutMs?: number;
  /** The environment the commands start from (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

export const COMMAND_TIMEOUT_MS = 5 * 60_000;
/** SIGTERM, then SIGKILL this long after when it has not exited. */
const KILL_GRACE_MS = 5000;
/** After it exited, how long its output may still be read (a background child it left may hold the pipe open). */
const DRAIN_MS = 500;
const OUTPUT_KEEP = 64 * 1024;
const STDERR_TAIL = 2000;
/** What a host id printed by the launch command may look like. */
const HOST_ID = /^[A-Za-z0-9._:@-]{1,256}$/;

const OPTION_NAMES = ["command", "releaseCommand", "timeoutMs"] as const;

export class CommandProvider implements HostProvider {
  readonly name = "command";
  private readonly running = new Map<number, { child: ChildProcess; exited: Promise<void> }>();
  private closed = false;
  readonly release?: HostProvider["release"];

  constructor(private readonly options: CommandProviderOptions) {
    if (options.releaseCommand !== undefined) {
      const releaseCommand = options.releaseCommand;
      this.release = async ({ host, network, reason }) => {
        await this.run("release", releaseCommand, { NODEBIN_HOST: host, NODEBIN_NETWORK: network, NODEBIN_REASON: reason });
      };
    }
  }

  async launch({ seeds, network, reason }: { seeds: string[]; network: string; reason: string }): Promise<{ host?: string }> {
    const { stdout } = await this.run("launch", this.options.command, { NODEBIN_SEEDS: seeds.join(","), NODEBIN_NETWORK: network, NODEBIN_REASON: reason }, ["NODEBIN_HOST"]);
    const last = stdout.split("\n").map((l) => l.trim()).filter(Boolean).pop();
    return last !== undefined && HOST_ID.test(last) ? { host: last } : {};
  }

  /** Ends every command still running (SIGTERM by its pid, SIGKILL after the grace) and refuses new ones. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      [...this.running.entries()].map(([pid, r]) => {
        kill(pid, "SIGTERM");
        const force = setTimeout(() => kill(pid, "SIGKILL"), KILL_GRACE_MS);
        return r.exited.finally(() => clearTimeout(force));
      }),
    );
  }

  /** The commands running now, by pid (status, tests). */
  get pids(): number[] {
    return [...this.running.keys()];
  }

  /**
   * Runs one command to its end. Resolves with its output when it exited 0;
   * rejects UNAVAILABLE (could not start, exited non-zero, killed) or
   * DEADLINE_EXCEEDED (outlived timeoutMs), the message ending with its stderr's tail.
   */
  private run(what: string, line: ProviderCommandLine, extra: Record<string, string>, drop: string[] = []): Promise<{ stdout: string; stderr: string }> {
    if (this.closed) return Promise.reject(new NodeBinError("CANCELLED", `provider ${what} command not run: the governor is stopping`));
    const env: NodeJS.ProcessEnv = { ...(this.options.env ?? process.env) };
    for (const k of drop) delete env[k];
    Object.assign(env, extra);
    const timeoutMs = this.options.timeoutMs ?? COMMAND_TIMEOUT_MS;
    const shown = typeof line === "string" ? line : line.join(" ");
    return new Promise((resolve, reject) => {
      let child: ChildProcess;
      try {
        child =
          typeof line === "string"
            ? spawn(line, { shell: true, env, stdio: ["ignore", "pipe", "pipe"] })
            : spawn(line[0]!, line.slice(1), { env, stdio: ["ignore", "pipe", "pipe"] });
      } catch (err) {
        reject(new NodeBinError("UNAVAILABLE", `provider ${what} command ${JSON.stringify(shown)} could not start: ${(err as Error).message}`, { cause: err }));
        return;
      }
      let stdout = "";
      let stderr = "";
      const keep = (acc: string, d: Buffer) => (acc + d.toString("utf8")).slice(-OUTPUT_KEEP);
      child.stdout!.on("data", (d: Buffer) => (stdout = keep(stdout, d)));
      child.stderr!.on("data", (d: Buffer) => (stderr = keep(stderr, d)));
      let timedOut = false;
      let force: ReturnType<typeof setTimeout> | undefined;
      const timer = setTimeout(() => {
        timedOut = true;
        if (child.pid !== undefined) kill(child.pid, "SIGTERM");
        force = setTimeout(() => child.pid !== undefined && kill(child.pid, "SIGKILL"), KILL_GRACE_MS);
      }, timeoutMs);
      let settle!: () => void;
      const exited = new Promise<void>((r) => (settle = r));
      if (child.pid !== undefined) this.running.set(child.pid, { child, exited });
      const finish = (err: NodeBinError | undefined) => {
        clearTimeout(timer);
        if (force) clearTimeout(force);
        if (child.pid !== undefined) this.running.delete(child.pid);
        settle();
        if (err) reject(err);
        else resolve({ stdout, stderr });
      };
      child.once("error", (err) => {
        finish(new NodeBinError("UNAVAILABLE", `provider ${what} command ${JSON.stringify(shown)} could not start: ${err.message}`, { cause: err, details: { command: shown } }));
      });
      child.once("exit", (code, signal) => {
        // Its output may still be in the pipe; a background process it started may keep the pipe open: read on a little, then let go.
        let done = false;
        const complete = () => {
          if (done) return;
          done = true;
          clearTimeout(drain);
          child.stdout!.destroy();
          child.stderr!.destroy();
          const tail = stderr.trim().slice(-STDERR_TAIL);
          const details = { command: shown, ...(code !== null ? { exitCode: String(code) } : {}), ...(signal ? { signal } : {}), stderr: tail };
          if (timedOut) finish(new NodeBinError("DEADLINE_EXCEEDED", `provider ${what} command ${JSON.stringify(shown)} ran past ${timeoutMs} ms and was killed${tail ? `; stderr: ${tail}` : ""}`, { details }));
          else if (code !== 0) finish(new NodeBinError("UNAVAILABLE", `provider ${what} command ${JSON.stringify(shown)} ${signal ? `was killed by ${signal}` : `exited with ${code}`}${tail ? `; stderr: ${tail}` : ""}`, { details }));
          else finish(undefined);
        };
        const drain = setTimeout(complete, DRAIN_MS);
        let open = 2;
        const closed = () => --open === 0 && complete();
        for (const s of [child.stdout!, child.stderr!]) {
          if (s.readableEnded || s.destroyed) closed();
          else s.once("close", closed);
        }
      });
    });
  }
}

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

function commandOption(value: unknown, name: string): ProviderCommandLine | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "string" && value.trim() !== "") return value;
  if (Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === "string") && (value[0] as string) !== "") return value as string[];
  throw new Error(`command: option "${name}" must be a shell command line (a non-empty string) or a program with its arguments (an array of strings), got ${JSON.stringify(value)}`);
}

/** Checks the plugin's options. Throws (a plain Error: the plugin host names the step and plugin) on an unknown or bad one. */
export function parseCommandOptions(options: Record<string, unknown>): CommandProviderOptions {
  for (const key of Object.keys(options)) {
    if (!(OPTION_NAMES as readonly string[]).includes(key)) throw new Error(`command: unknown option "${key}" (known: ${OPTION_NAMES.join(", ")})`);
  }
  const command = commandOption(options.command, "command");
  if (command === undefined) throw new Error('command: no launch command: give --provider-command CMD (or "providerCommand" in governor.json)');
  const releaseCommand = commandOption(options.releaseCommand, "releaseCommand");
  const timeoutMs = options.timeoutMs;
  if (timeoutMs !== undefined && !(Number.isInteger(timeoutMs) && (timeoutMs as number) >= 1)) throw new Error(`command: option "timeoutMs" must be a whole number of ms >= 1, got ${JSON.stringify(timeoutMs)}`);
  return { command, ...(releaseCommand !== undefined ? { releaseCommand } : {}), ...(timeoutMs !== undefined ? { timeoutMs: timeoutMs as number } : {}) };
}

const plugin: PluginModule<"provider"> = {
  kind: "provider",
  name: "command",
  create(options) {
    return new CommandProvider(parseCommandOptions(options));
  },
};

export default plugin;
