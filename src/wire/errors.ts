/**
 * Errors that cross the wire: a closed set of codes (gRPC's status names and
 * numbers), a message, optional string details and the id of the endpoint
 * where the error arose. Everything the runtime rejects is a NodeBinError;
 * tests and callers branch on `code`, never on message text.
 */

/** gRPC status names, indexed by their gRPC number. */
export const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

/** An error code; "OK" is never an error and is not one of them. */
export type Code = Exclude<(typeof CODE_NAMES)[number], "OK">;

/** The gRPC number of a code (what travels in Envelope.error.code). */
export function codeNumber(code: Code): number {
  return CODE_NAMES.indexOf(code);
}

/** The code for a gRPC number; numbers outside the set (and 0) become UNKNOWN. */
export function codeFromNumber(n: number): Code {
  const name = CODE_NAMES[n];
  return name === undefined || name === "OK" ? "UNKNOWN" : name;
}

export function isCode(value: unknown): value is Code {
  return typeof value === "string" && value !== "OK" && (CODE_NAMES as readonly string[]).includes(value);
}

export interface ErrorOptions {
  details?: Record<string, string>;
  /** Id of the endpoint where the error arose; filled in by the runtime when empty. */
  origin?: string;
  cause?: unknown;
}

/** The error shape of the Envelope (code as its gRPC number). */
export interface WireError {
  code: number;
  message: string;
  details: Record<string, string>;
  origin: string;
}

export class NodeBinError extends Error {
  override readonly name = "NodeBinError";
  readonly code: Code;
  readonly details: Record<string, string>;
  origin: string;

  constructor(code: Code, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
    this.origin = options.origin ?? "";
  }

  /**
   * Wraps anything thrown into a NodeBinError: a NodeBinError passes through;
   * anything else becomes `fallback` carrying the thrown message (never its
   * stack: remote stack traces are not sent).
   */
  static from(err: unknown, fallback: Code = "INTERNAL"): NodeBinError {
    if (err instanceof NodeBinError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new NodeBinError(fallback, message, { cause: err });
  }

  static fromWire(w: WireError): NodeBinError {
    return new NodeBinError(codeFromNumber(w.code), w.message, { details: { ...w.details }, origin: w.origin });
  }

  toWire(): WireError {
    return { code: codeNumber(this.code), message: this.message, details: this.details, origin: this.origin };
  }

  /** "CODE: message" as a CLI or log line shows it. */
  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

/**
 * The error detail set when a request was refused before any handler ran
 * (a node draining, starting or full; a frame that never left because its
 * peer is gone): the caller may safely send it elsewhere. Routing retries key
 * on it; nothing else may set it.
 */
export const UNHANDLED_DETAIL = "unhandled";

/** True when the error says the request was refused before any handler ran. */
export function isUnhandled(err: NodeBinError): boolean {
  return err.details[UNHANDLED_DETAIL] === "true";
}
