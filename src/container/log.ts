/**
 * The default logger: one line per event on stderr, "time level [source]
 * message {fields}". NODEBIN_LOG (debug, info, warn, error, silent) sets the
 * threshold; the logging plugin of the governor will replace it.
 */
import type { Logger } from "../component/context.ts";

const LEVELS = ["debug", "info", "warn", "error", "silent"] as const;
export type LogLevel = (typeof LEVELS)[number];

export function logLevelFromEnv(env: Record<string, string | undefined> = process.env): LogLevel {
  const value = env.NODEBIN_LOG?.toLowerCase();
  return (LEVELS as readonly string[]).includes(value ?? "") ? (value as LogLevel) : "info";
}

export function consoleLogger(source: string, level: LogLevel = logLevelFromEnv(), write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const threshold = LEVELS.indexOf(level);
  const at = (lvl: Exclude<LogLevel, "silent">) =>
    LEVELS.indexOf(lvl) < threshold
      ? () => {}
      : (message: string, fields?: Record<string, unknown>) => {
          const extra = fields && Object.keys(fields).length ? ` ${safeJson(fields)}` : "";
          write(`${new Date().toISOString()} ${lvl.padEnd(5)} [${source}] ${message}${extra}\n`);
        };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value, (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
  } catch {
    return "[unserializable]";
  }
}
