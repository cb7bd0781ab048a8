/**
 * `--log-format text|json`, the flag every role takes (governor, container,
 * dev, client, deploy): how the process writes its log lines on stderr
 * (src/container/log.ts). The format is a property of the process and of
 * what it starts, as the level is: main() applies the flag by setting
 * NODEBIN_LOG_FORMAT in the process's environment before the role runs, so
 * every logger made in the process reads it, and every process started from
 * here (a governor's children, which get the governor's environment)
 * inherits it without a flag of its own.
 */
import { LOG_FORMATS, consoleLogger, logFormatFromEnv, parseLogFormat, type LogFormat } from "../container/log.ts";
import { UsageError, stdio, type Output } from "./output.ts";

export const LOG_FORMAT_HELP = "log lines on stderr: text (default) or json, one JSON object per line (default: $NODEBIN_LOG_FORMAT; processes started from here inherit it)";

/** The value of the last `--log-format V` or `--log-format=V` in `argv` (flags end at "--"), or undefined. */
export function logFormatArg(argv: readonly string[]): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") break;
    if (arg === "--log-format") value = argv[++i] ?? "";
    else if (arg.startsWith("--log-format=")) value = arg.slice("--log-format=".length);
  }
  return value;
}

/**
 * Applies `--log-format` from `argv` to `env` (NODEBIN_LOG_FORMAT; without
 * the flag, what the environment says stands) and returns the format in
 * force. Throws UsageError when the flag names another format.
 */
export function applyLogFormat(argv: readonly string[], env: Record<string, string | undefined> = process.env): LogFormat {
  const given = logFormatArg(argv);
  if (given === undefined) return logFormatFromEnv(env);
  const format = parseLogFormat(given);
  if (!format) throw new UsageError(`--log-format takes ${LOG_FORMATS.join(" or ")}, got ${JSON.stringify(given)}`);
  env.NODEBIN_LOG_FORMAT = format;
  return format;
}

/**
 * The Output of a role: results on stdout as always; with the json log
 * format, its error report is one log line of `source` (level error, with
 * the error's code, details and origin as fields) instead of text, unless
 * the command was asked for `json` results, whose error object it keeps.
 */
export function roleOutput(source: string, json = false, env: Record<string, string | undefined> = process.env): Output {
  const output = stdio(json);
  return !json && logFormatFromEnv(env) === "json" ? { ...output, log: consoleLogger(source, undefined, undefined, "json") } : output;
}
