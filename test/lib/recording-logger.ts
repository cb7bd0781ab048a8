/** Loggers for tests: silent, or recording every line so a test can assert what was logged. */
import type { Logger } from "../../src/component/context.ts";

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

export interface LogLine {
  level: "debug" | "info" | "warn" | "error";
  source: string;
  message: string;
  fields: Record<string, unknown> | undefined;
}

/** A logger factory (as Container takes) that keeps every line in `lines`. */
export function recordingLoggers(): { lines: LogLine[]; logger: (source: string) => Logger } {
  const lines: LogLine[] = [];
  const logger = (source: string): Logger => {
    const at = (level: LogLine["level"]) => (message: string, fields?: Record<string, unknown>) => void lines.push({ level, source, message, fields });
    return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  };
  return { lines, logger };
}
