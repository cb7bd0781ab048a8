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
  const where = escapeControl(source);
  const at = (lvl: Exclude<LogLevel, "silent">) =>
    LEVELS.indexOf(lvl) < threshold
      ? () => {}
      : (message: string, fields?: Record<string, unknown>) => {
          const extra = fields && Object.keys(fields).length ? ` ${escapeControl(safeJson(fields))}` : "";
          write(`${new Date().toISOString()} ${lvl.padEnd(5)} [${where}] ${escapeControl(String(message))}${extra}\n`);
        };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/**
 * Characters that must not reach a log line or a terminal as they are: C0
 * controls (newline, carriage return, tab, ESC...), DEL, C1 controls (NEL
 * among them), the Unicode line and paragraph separators, and the bidi
 * embeddings, overrides and isolates (which make a line display in another
 * order than it reads). Log messages carry strings peers choose (node and
 * container ids, methods, error messages): one raw newline forges a line.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const UNSAFE_ALL = new RegExp(UNSAFE.source, "g");
const SHORT_ESCAPES: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * `text` with each unsafe character (see UNSAFE) written as an escape a
 * person can read: \n, \r, \t, else \u followed by four hex digits. A
 * string without any comes back as it is (the common case costs one test).
 * Escapes inside JSON text keep it valid JSON.
 */
export function escapeControl(text: string): string {
  if (!UNSAFE.test(text)) return text;
  return text.replace(UNSAFE_ALL, (c) => SHORT_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value, (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
  } catch {
    return "[unserializable]";
  }
}
