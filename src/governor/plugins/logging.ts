/**
 * The built-in logging plugin ("default-logging"): the governor's lines go to
 * stderr through consoleLogger, the one sink that escapes control characters
 * (a container id with a newline must not forge a line), so a logger made
 * here needs no escaping of its own. Option `level` (debug, info, warn,
 * error, silent) overrides NODEBIN_LOG; option `format` (text, json: one
 * JSON object per line) overrides NODEBIN_LOG_FORMAT, which `--log-format`
 * sets. Both concern the governor's own lines: its children log as the
 * environment they inherit says. A user's logging plugin replaces all of
 * this by declaring the same kind.
 */
import type { Logger } from "../../component/context.ts";
import { LOG_FORMATS, consoleLogger, parseLogFormat, type LogFormat, type LogLevel } from "../../container/log.ts";
import type { LoggingStrategy, PluginModule } from "../strategy.ts";

/** The levels log.ts knows (it does not export its list; the type check below keeps this one complete). */
const LEVELS = ["debug", "info", "warn", "error", "silent"] as const satisfies readonly LogLevel[];
type MissingLevel = Exclude<LogLevel, (typeof LEVELS)[number]>;
const _everyLevelListed: [MissingLevel] extends [never] ? true : never = true;
void _everyLevelListed;

function parseOptions(options: Record<string, unknown>): { level: LogLevel | undefined; format: LogFormat | undefined } {
  for (const key of Object.keys(options)) {
    if (key !== "level" && key !== "format") throw new Error(`default-logging: unknown option "${key}" (known: level, format)`);
  }
  return { level: parseLevel(options.level), format: parseFormat(options.format) };
}

function parseLevel(level: unknown): LogLevel | undefined {
  if (level === undefined) return undefined;
  const lower = typeof level === "string" ? level.toLowerCase() : undefined;
  if (lower === undefined || !(LEVELS as readonly string[]).includes(lower)) {
    throw new Error(`default-logging: option "level" must be one of ${LEVELS.join(", ")}, got ${typeof level === "string" ? JSON.stringify(level) : String(level)}`);
  }
  return lower as LogLevel;
}

function parseFormat(format: unknown): LogFormat | undefined {
  if (format === undefined) return undefined;
  const parsed = parseLogFormat(format);
  if (!parsed) throw new Error(`default-logging: option "format" must be one of ${LOG_FORMATS.join(", ")}, got ${typeof format === "string" ? JSON.stringify(format) : String(format)}`);
  return parsed;
}

export class DefaultLogging implements LoggingStrategy {
  readonly name = "default-logging";
  /** undefined: NODEBIN_LOG decides (read when a logger is made). */
  readonly level: LogLevel | undefined;
  /** undefined: NODEBIN_LOG_FORMAT (that is, --log-format) decides, read when a logger is made. */
  readonly format: LogFormat | undefined;

  constructor(level?: LogLevel, format?: LogFormat) {
    this.level = level;
    this.format = format;
  }

  logger(source: string): Logger {
    return consoleLogger(source, this.level, undefined, this.format);
  }
}

const plugin: PluginModule<"logging"> = {
  kind: "logging",
  name: "default-logging",
  create(options) {
    const { level, format } = parseOptions(options);
    return new DefaultLogging(level, format);
  },
};

export default plugin;
