/**
 * `--metrics HOST:PORT`, worded and checked once for every role that serves
 * /metrics (governor, container, dev), and the metrics plugin those roles
 * start from it, through the plugin host (kind "metrics": the built-in is
 * src/metrics/, a plugins directory may hold another).
 */
import { isIP, isIPv6 } from "node:net";
import type { PluginHost } from "../governor/plugins.ts";
import type { PluginContext } from "../governor/strategy.ts";
import type { MetricsAddress, MetricsPlugin } from "../metrics/plugin.ts";
import { UsageError } from "./output.ts";
import { VERSION } from "./version.ts";

export const METRICS_HELP = "serve Prometheus metrics at http://HOST:PORT/metrics (HOST: an IP address of this host, e.g. 127.0.0.1:9464 or 0.0.0.0:9464; PORT 0: one the OS picks, printed)";

/** --metrics: HOST:PORT (an IP address or `localhost`; [v6]:PORT), or undefined without the flag. Throws UsageError. */
export function metricsFlag(value: unknown): MetricsAddress | undefined {
  if (value === undefined) return undefined;
  if (Array.isArray(value)) throw new UsageError("--metrics is given once");
  const text = String(value);
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(text);
  const host = m ? (m[1] ?? m[2]!) : "";
  const port = Number(m?.[3]);
  const ip = m?.[1] !== undefined ? isIPv6(host) : host === "localhost" || isIP(host) === 4;
  if (!m || !ip || port > 65535) {
    throw new UsageError(`--metrics takes HOST:PORT, an IP address of this host and a port (127.0.0.1:9464, 0.0.0.0:9464, [::1]:9464; port 0: the OS picks), got ${JSON.stringify(text)}`);
  }
  return { host: host === "localhost" ? "127.0.0.1" : host, port };
}

/** The metrics plugin of a running role, and the URL it serves at (when it serves). */
export interface RoleMetrics {
  plugin: MetricsPlugin;
  url: string | undefined;
}

/**
 * The metrics plugin of a role, when it serves /metrics (`address`) or
 * counts calls for its governor (`countCalls`); undefined for neither. It
 * serves before the role starts, so a port in use fails the process before
 * anything joins the host (rejects as MetricsPlugin.serve does).
 */
export async function startMetrics(options: {
  plugins: { host: PluginHost; context: PluginContext };
  host: string;
  address: MetricsAddress | undefined;
  countCalls?: boolean;
  /** Plugin options by plugin name (the governor's config file). */
  config?: Record<string, Record<string, unknown>>;
}): Promise<RoleMetrics | undefined> {
  if (!options.address && !options.countCalls) return undefined;
  // The plugin of kind "metrics" (the built-in "prometheus" unless the plugins directory has another).
  const { host, context } = options.plugins;
  const builtIn = { processMetrics: options.address !== undefined };
  const config = { ...options.config, prometheus: { ...builtIn, ...options.config?.prometheus } };
  const plugin = await host.start("metrics", { ...context, host: options.host, version: VERSION }, config);
  const url = options.address ? await plugin.serve(options.address) : undefined;
  return { plugin, url };
}

/** The line a role prints on stdout, before its readiness line, when it serves /metrics (tests and scripts read the URL from it). */
export function metricsLine(metrics: RoleMetrics | undefined): string | undefined {
  return metrics?.url ? `node-bin metrics at ${metrics.url}` : undefined;
}
