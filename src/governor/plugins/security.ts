/**
 * The built-in security provider ("curve"): CurveZMQ with keys derived from
 * the cluster key the process was given, or none without one (security/
 * provider.ts). Started first in every process: nothing binds or connects
 * before it. Option `watchMs`: how often the key file is checked for changes
 * (default 2000; 0: never).
 */
import { loadSecurity } from "../../security/provider.ts";
import type { PluginModule } from "../strategy.ts";

const plugin: PluginModule<"security"> = {
  kind: "security",
  name: "curve",
  create(options, _settings, context) {
    for (const key of Object.keys(options)) if (key !== "watchMs") throw new Error(`curve: unknown option "${key}" (known: watchMs)`);
    const watchMs = options.watchMs;
    if (watchMs !== undefined && !(Number.isInteger(watchMs) && (watchMs as number) >= 0)) throw new Error(`curve: option "watchMs" must be a whole number of ms >= 0, got ${JSON.stringify(watchMs)}`);
    if (!context) throw new Error("curve: started without a process context (runtime directory, key file)");
    return loadSecurity({
      runtimeDir: context.runtimeDir,
      ...(context.clusterKeyFile ? { keyFile: context.clusterKeyFile } : {}),
      ...(watchMs !== undefined ? { watchMs: watchMs as number } : {}),
      log: (level, line) => context.log[level](line),
    });
  },
};

export default plugin;
