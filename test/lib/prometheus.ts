/**
 * Reading /metrics in tests: the Prometheus text format parsed into samples
 * (enough of it for what node-bin writes), a sample looked up by name and
 * labels, and `promtool check metrics` run on a body (Debian's `prometheus`
 * package; tests skip, saying so, where it is missing).
 */
import { spawnSync } from "node:child_process";
import { runCommand, type CliResult } from "./processes.ts";

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a text-format body (comments and blank lines skipped). Throws on a line it cannot read. */
export function parseMetrics(body: string): PromSample[] {
  const samples: PromSample[] = [];
  for (const line of body.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    const raw = m[3]!;
    samples.push({ name: m[1]!, labels, value: raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : Number(raw) });
  }
  return samples;
}

/** The samples named `name` whose labels include all of `labels`. */
export function samplesOf(samples: PromSample[], name: string, labels: Record<string, string> = {}): PromSample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The value of the one sample named `name` with `labels` (undefined when there is none; throws when several match). */
export function valueOf(samples: PromSample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samplesOf(samples, name, labels);
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

/** Why `promtool` cannot run here, or undefined when it can. */
export function promtoolMissing(): string | undefined {
  const r = spawnSync("promtool", ["--version"], { stdio: "ignore", timeout: 10_000 });
  if (r.error) return `promtool is not installed (Debian: apt-get install prometheus): ${r.error.message}`;
  return r.status === 0 ? undefined : `promtool --version exited ${r.status}`;
}

/** `promtool check metrics` on `body`, fed on stdin (exit 0: valid and lint-clean). */
export function promtoolCheck(body: string): Promise<CliResult> {
  return runCommand("promtool", ["check", "metrics"], { PATH: process.env.PATH ?? "/usr/bin:/bin" }, { input: body, timeoutMs: 20_000 });
}

/** GETs `url` (bounded), resolving with the response's status, content type and body. */
export async function scrape(url: string, timeoutMs = 5000): Promise<{ status: number; contentType: string; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, contentType: res.headers.get("content-type") ?? "", body: await res.text() };
}
