/**
 * The default logger: one line per event on stderr, in one of two formats:
 * - text (the default): "time level [source] message {fields}";
 * - json: one JSON object per line, {"level","time","source",...fields,"msg"}
 *   (pino, written synchronously to fd 2: no worker thread, nothing
 *   buffered, so it bundles into the single executable and loses nothing at
 *   exit).
 * NODEBIN_LOG (debug, info, warn, error, silent) sets the threshold and
 * NODEBIN_LOG_FORMAT (text, json) the format, both read when a logger is
 * made (`--log-format` sets the latter for a process and what it starts);
 * the governor's logging plugin may decide otherwise for its own lines.
 */
import pino from "pino";
import type { Logger } from "../component/context.ts";

const LEVELS = ["debug", "info", "warn", "error", "silent"] as const;
export type LogLevel = (typeof LEVELS)[number];

export function logLevelFromEnv(env: Record<string, string | undefined> = process.env): LogLevel {
  const value = env.NODEBIN_LOG?.toLowerCase();
  return (LEVELS as readonly string[]).includes(value ?? "") ? (value as LogLevel) : "info";
}

const FORMATS = ["text", "json"] as const;
/** How log lines are written: text for people, json (one object per line) for machines. */
export type LogFormat = (typeof FORMATS)[number];
export const LOG_FORMATS: readonly LogFormat[] = FORMATS;

/** `value` as a LogFormat (case-insensitive), or undefined when it is none. */
export function parseLogFormat(value: unknown): LogFormat | undefined {
  const lower = typeof value === "string" ? value.toLowerCase() : undefined;
  return (FORMATS as readonly (string | undefined)[]).includes(lower) ? (lower as LogFormat) : undefined;
}

/** NODEBIN_LOG_FORMAT: json or text; anything else (or nothing) is text, as NODEBIN_LOG falls back to info. */
export function logFormatFromEnv(env: Record<string, string | undefined> = process.env): LogFormat {
  return parseLogFormat(env.NODEBIN_LOG_FORMAT) ?? "text";
}

/**
 * The logger of `source`: lines at `level` and above, in `format`, each
 * passed whole (newline included) to `write` (default: stderr).
 */
export function consoleLogger(source: string, level: LogLevel = logLevelFromEnv(), write?: (line: string) => void, format: LogFormat = logFormatFromEnv()): Logger {
  return format === "json" ? jsonLogger(source, level, write) : textLogger(source, level, write ?? ((l) => process.stderr.write(l)));
}

function textLogger(source: string, level: LogLevel, write: (line: string) => void): Logger {
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

/**
 * Keys of every JSON line; a field of the same name is written as `_NAME`
 * (so that a field can never pass for the line's own source or level).
 */
const JSON_KEYS = new Set(["level", "time", "source", "msg"]);

/** The synchronous stderr sink of the JSON format, made on first use and shared (one per process). */
let stderrSink: pino.DestinationStream | undefined;

/** One pino root per level over stderr (a logger per source is a cheap child of it). */
const stderrRoots = new Map<LogLevel, pino.Logger>();

/**
 * One JSON object per line: {"level":"info","time":ISO-8601,"source",
 * ...fields,"msg"}. JSON escapes the C0 controls; the rest of what
 * escapeControl covers (DEL, C1, the line separators, bidi controls) is
 * escaped on the finished line, which keeps it valid JSON with the same
 * values (those characters only occur inside its strings).
 */
export function jsonLogger(source: string, level: LogLevel = logLevelFromEnv(), write?: (line: string) => void): Logger {
  let root: pino.Logger;
  if (write) root = jsonRoot(level, { write });
  else {
    root = stderrRoots.get(level) ?? jsonRoot(level, (stderrSink ??= pino.destination({ dest: 2, sync: true })));
    stderrRoots.set(level, root);
  }
  const p = root.child({ source });
  const at = (lvl: Exclude<LogLevel, "silent">) =>
    LEVELS.indexOf(lvl) < LEVELS.indexOf(level)
      ? () => {}
      : (message: string, fields?: Record<string, unknown>) => {
          try {
            p[lvl](fields ? jsonFields(fields) : {}, String(message));
          } catch {
            // A sink that fails (stderr closed) must not take the caller down: logging is best effort.
          }
        };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

function jsonRoot(level: LogLevel, destination: pino.DestinationStream): pino.Logger {
  return pino(
    {
      level,
      base: null,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      hooks: { streamWrite: escapeLine },
    },
    destination,
  );
}

/** A finished JSON line with escapeControl applied before its final newline. */
function escapeLine(line: string): string {
  return line.endsWith("\n") ? `${escapeControl(line.slice(0, -1))}\n` : escapeControl(line);
}

function jsonFields(fields: Record<string, unknown>): Record<string, unknown> {
  let clash = false;
  for (const key in fields) if (JSON_KEYS.has(key)) clash = true;
  if (!clash) return fields;
  const renamed: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) renamed[JSON_KEYS.has(key) ? `_${key}` : key] = value;
  return renamed;
}
