/**
 * The built-in metrics plugin ("prometheus"): src/metrics/, Prometheus's text
 * format from prom-client, one registry per process. Options: `processMetrics`
 * (also Node.js's process_* and nodejs_* series; default: when the process
 * serves /metrics itself) and `buckets` (the call duration buckets, seconds,
 * ascending).
 */
import prometheus from "../../metrics/plugin.ts";
import type { PluginModule } from "../strategy.ts";

const plugin: PluginModule<"metrics"> = {
  kind: "metrics",
  name: "prometheus",
  create(options, _settings, context) {
    for (const key of Object.keys(options)) if (key !== "processMetrics" && key !== "buckets") throw new Error(`prometheus: unknown option "${key}" (known: processMetrics, buckets)`);
    const { processMetrics, buckets } = options;
    if (processMetrics !== undefined && typeof processMetrics !== "boolean") throw new Error(`prometheus: option "processMetrics" must be true or false, got ${JSON.stringify(processMetrics)}`);
    if (buckets !== undefined && !(Array.isArray(buckets) && buckets.length > 0 && buckets.every((b, i) => typeof b === "number" && b > 0 && (i === 0 || b > (buckets[i - 1] as number))))) {
      throw new Error(`prometheus: option "buckets" must be ascending positive numbers of seconds, got ${JSON.stringify(buckets)}`);
    }
    return prometheus.create({
      role: context?.role ?? "governor",
      ...(context?.host ? { host: context.host } : {}),
      ...(context?.version ? { version: context.version } : {}),
      ...(processMetrics !== undefined ? { processMetrics } : {}),
      ...(buckets ? { buckets: buckets as number[] } : {}),
    });
  },
};

export default plugin;
