/**
 * How every subcommand reports: results on stdout, errors on stderr as
 * "error: CODE: message" (or one JSON object with --json), and an exit status
 * that scripts can branch on: 0 on success, the gRPC number of the error code
 * (1-16) on a coded error, 64 on a usage error.
 */
import { NodeBinError, codeNumber } from "../wire/errors.ts";

export const EXIT_USAGE = 64;

export class UsageError extends Error {
  override readonly name = "UsageError";
}

export interface Output {
  json: boolean;
  out(text: string): void;
  err(text: string): void;
}

export function stdio(json: boolean): Output {
  return { json, out: (t) => process.stdout.write(`${t}\n`), err: (t) => process.stderr.write(`${t}\n`) };
}

/** Reports `err` and returns the exit status for it. */
export function reportError(output: Output, err: unknown, usage?: string): number {
  if (err instanceof UsageError || (err as { name?: string })?.name === "CACError") {
    output.err(`error: ${(err as Error).message}`);
    if (usage) output.err(usage);
    return EXIT_USAGE;
  }
  const e = NodeBinError.from(err, "INTERNAL");
  if (output.json) {
    output.err(JSON.stringify({ error: { code: e.code, message: e.message, details: e.details, origin: e.origin } }));
  } else {
    output.err(`error: ${e.code}: ${e.message}`);
    if (e.origin) output.err(`  at node ${e.origin}`);
  }
  return codeNumber(e.code);
}

/** Parses a positive whole number of ms given to `flag`. Throws UsageError. */
export function parseMs(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${flag} takes a positive whole number of milliseconds, got ${JSON.stringify(value)}`);
  return n;
}
