/** Small statistics and formatting helpers of bench/run.ts. */

export const median = (xs: number[]): number => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export const min = (xs: number[]): number => Math.min(...xs);
export const max = (xs: number[]): number => Math.max(...xs);

/** 12,345 */
export const int = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString("en-US") : "-");
/** One decimal (or "-"). */
export const dec1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : "-");
/** 1.23x */
export const ratio = (x: number): string => (Number.isFinite(x) ? `${x.toFixed(2)}x` : "-");
/** Milliseconds as seconds: 2.9 s */
export const secs = (ms: number): string => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : "-");
/** Bytes as MiB: 88 MiB */
export const mib = (bytes: number): string => (Number.isFinite(bytes) ? `${Math.round(bytes / 1048576)} MiB` : "-");
/** A number rounded for JSON (3 significant decimals at most). */
export const round = (x: number, digits = 1): number | null => (Number.isFinite(x) ? Math.round(x * 10 ** digits) / 10 ** digits : null);

/** Rotates `xs` left by `by`: the order of systems in round `by`. */
export const rotate = <T>(xs: T[], by: number): T[] => xs.map((_, i) => xs[(i + by) % xs.length]!);
