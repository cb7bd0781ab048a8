/**
 * The built-in logging plugin ("default-logging"): the governor's lines go to
 * stderr through consoleLogger, the one sink that escapes control characters
 * (a container id with a newline must not forge a line), so a logger made
 * here needs no escaping of its own. Option `level` (debug, info, warn,
 * error, silent) overrides NODEBIN_LOG.
 */
import type { Logger } from "../../component/context.ts";
import { consoleLogger, type LogLevel } from "../../container/log.ts";
import type { LoggingStrategy, PluginModule } from "../strategy.ts";

/** The levels log.ts knows (it does not export its list; the type check below keeps this one complete). */
const LEVELS = ["debug", "info", "warn", "error", "silent"] as const satisfies readonly LogLevel[];
type MissingLevel = Exclude<LogLevel, (typeof LEVELS)[number]>;
const _everyLevelListed: [MissingLevel] extends [never] ? true : never = true;
void _everyLevelListed;

function parseOptions(options: Record<string, unknown>): { level: LogLevel | undefined } {
  for (const key of Object.keys(options)) {
    if (key !== "level") throw new Error(`default-logging: unknown option "${key}" (known: level)`);
  }
  const level = options.level;
  if (level === undefined) return { level: undefined };
  const lower = typeof level === "string" ? level.toLowerCase() : undefined;
  if (lower === undefined || !(LEVELS as readonly string[]).includes(lower)) {
    throw new Error(`default-logging: option "level" must be one of ${LEVELS.join(", ")}, got ${typeof level === "string" ? JSON.stringify(level) : String(level)}`);
  }
  return { level: lower as LogLevel };
}

export class DefaultLogging implements LoggingStrategy {
  readonly name = "default-logging";
  /** undefined: NODEBIN_LOG decides (read when a logger is made). */
  readonly level: LogLevel | undefined;

  constructor(level?: LogLevel) {
    this.level = level;
  }

  logger(source: string): Logger {
    return consoleLogger(source, this.level);
  }
}

const plugin: PluginModule<"logging"> = {
  kind: "logging",
  name: "default-logging",
  create(options) {
    return new DefaultLogging(parseOptions(options).level);
  },
};

export default plugin;
