/**
 * How every subcommand reports: results on stdout, errors on stderr as
 * "error: CODE: message" (or one JSON object with --json), and an exit status
 * that scripts can branch on: 0 on success, the gRPC number of the error code
 * (1-16) on a coded error, 64 on a usage error.
 */
import type { CAC } from "cac";
import type { Logger } from "../component/context.ts";
import { escapeControl } from "../container/log.ts";
import { NodeBinError, codeNumber } from "../wire/errors.ts";
import { closest } from "../wire/message.ts";

export const EXIT_USAGE = 64;

export class UsageError extends Error {
  override readonly name = "UsageError";
}

export interface Output {
  json: boolean;
  out(text: string): void;
  err(text: string): void;
  /** When set (the json log format, see cli/log-options.ts), errors are reported as one line of this logger instead of text. */
  log?: Logger;
}

export function stdio(json: boolean): Output {
  return { json, out: (t) => process.stdout.write(`${t}\n`), err: (t) => process.stderr.write(`${t}\n`) };
}

/**
 * Reports `err` and returns the exit status for it. Messages, details and
 * origins come from other processes too (a remote node's error): their
 * control characters are escaped, so that one error stays one line.
 */
export function reportError(output: Output, err: unknown, usage?: string): number {
  if (err instanceof UsageError || (err as { name?: string })?.name === "CACError") {
    if (output.log) {
      output.log.error(`error: ${(err as Error).message}`, { exit: EXIT_USAGE, ...(usage ? { usage } : {}) });
      return EXIT_USAGE;
    }
    output.err(`error: ${escapeControl((err as Error).message)}`);
    if (usage) output.err(usage);
    return EXIT_USAGE;
  }
  const e = NodeBinError.from(err, "INTERNAL");
  if (output.log && !output.json) {
    output.log.error(`error: ${e.code}: ${e.message}`, { code: e.code, details: e.details, ...(e.origin ? { origin: e.origin } : {}) });
  } else if (output.json) {
    output.err(escapeControl(JSON.stringify({ error: { code: e.code, message: e.message, details: e.details, origin: e.origin } })));
  } else {
    output.err(`error: ${e.code}: ${escapeControl(e.message)}`);
    if (e.origin) output.err(`  at node ${escapeControl(e.origin)}`);
  }
  return codeNumber(e.code);
}

/**
 * Refuses the flags a command does not declare, and declared flags that take
 * a value given without one. cac checks both only inside runMatchedCommand,
 * which most subcommands never reach (they parse with {run: false} and read
 * the options themselves), so a misspelt flag used to be ignored without a
 * word: `dev --sed 10.0.0.5` ran a closed world. Call it right after
 * cli.parse(); the declared flags are the global ones plus those of the
 * matched command (or of every command, when none matched). With --help it
 * does nothing: cac has printed the help, the command exits 0. Throws
 * UsageError naming each unknown flag as it was typed, with the closest known
 * one when there is a likely typo.
 */
export function checkFlags(cli: CAC, argv: readonly string[]): void {
  if (cli.options.help) return;
  const commands = cli.matchedCommand ? [cli.matchedCommand] : cli.commands;
  const declared = [...cli.globalCommand.options, ...commands.flatMap((c) => c.options)];
  const known = new Set(declared.flatMap((o) => o.names));
  const negatable = new Set(declared.filter((o) => o.negated).flatMap((o) => o.names));
  // cac reads "--no-NAME" as NAME = false for any NAME: only a declared "--no-" flag may do that.
  const unknown = Object.keys(cli.options).filter((key) => key !== "--" && (!known.has(key) || (cli.options[key] === false && !negatable.has(key))));
  if (unknown.length) {
    const longNames = [...new Set(declared.flatMap((o) => o.rawName.match(/--[\w-]+/g) ?? []).map((n) => n.slice(2)))];
    // cac's own wording (what `client` and `deploy` said before), plus the likely typo.
    const named = unknown.map((key) => {
      const flag = spelled(key, argv);
      const near = closest(flag.replace(/^-+/, ""), longNames);
      return `\`${flag}\`${near ? ` (did you mean \`--${near}\`?)` : ""}`;
    });
    throw new UsageError(`Unknown option${named.length > 1 ? "s" : ""} ${named.join(", ")}`);
  }
  for (const option of declared) {
    // cac gives a value-taking flag typed without its value as `true`.
    if (option.required && cli.options[option.name] === true) throw new UsageError(`option \`${option.rawName}\` value is missing`);
  }
}

/** The flag behind a parsed option key ("discoveryPort", "x") as the user typed it ("--discovery-port", "-x"). */
function spelled(key: string, argv: readonly string[]): string {
  // cac's own key form: the part before a dot, "a-b" in camelCase.
  const keyOf = (name: string) => name.split(".")[0]!.replace(/([a-z])-([a-z])/g, (_, a: string, b: string) => a + b.toUpperCase());
  for (const arg of argv) {
    if (arg === "--") break;
    if (arg.startsWith("--")) {
      const name = arg.slice(2).split("=")[0]!;
      if (keyOf(name) === key || (name.startsWith("no-") && keyOf(name.slice(3)) === key)) return `--${name}`;
    }
  }
  return key.length === 1 ? `-${key}` : `--${key}`;
}

/** Parses a positive whole number of ms given to `flag`. Throws UsageError. */
export function parseMs(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${flag} takes a positive whole number of milliseconds, got ${JSON.stringify(value)}`);
  return n;
}
