/**
 * `node-bin container --component NAME`: one component node in this process,
 * reachable over ipc and tcp, joined to its host (as the host agent when the
 * discovery port is free) and through the seeds to the network.
 */
import { cac } from "cac";
import { consoleLogger } from "../container/log.ts";
import { ContainerProcess } from "../container/process.ts";
import { ensureRuntimeDir } from "../transport/runtime-dir.ts";
import { NodeBinError } from "../wire/errors.ts";
import { closest } from "../wire/message.ts";
import { processView } from "../metrics/sources.ts";
import { resolveComponentsDir } from "./components-dir.ts";
import { METRICS_HELP, metricsFlag, metricsLine, startMetrics, type RoleMetrics } from "./metrics-options.ts";
import { ADVERTISE_HELP, CLUSTER_KEY_HELP, INSECURE_HELP, LISTEN_HELP, LOADER_HELP, NETWORK_HELP, PLUGINS_HELP, advertiseFlag, hostId, intFlag, netSecurity, networkFlag, parseSeeds, startPlugins } from "./net-options.ts";
import { LOG_FORMAT_HELP, roleOutput } from "./log-options.ts";
import { checkFlags, reportError, UsageError } from "./output.ts";
import { VERSION } from "./version.ts";

export async function runContainer(argv: string[]): Promise<number> {
  const cli = cac("node-bin container");
  cli
    .usage("--component NAME [options]\n\n  Runs one node of one component in this process and joins the network.")
    .option("--component <name>", "the component to run (a directory name under the components directory)")
    .option("--components <dir>", "components directory (default: components/ beside node-bin, or ./components)")
    .option("--seed <ip[:port]>", "discovery endpoint of another host (comma-separated or repeated; default port 7400)")
    .option("--listen <ip>", LISTEN_HELP)
    .option("--advertise <ip>", ADVERTISE_HELP)
    .option("--cluster-key <file>", CLUSTER_KEY_HELP)
    .option("--insecure", INSECURE_HELP)
    .option("--plugins <dir>", PLUGINS_HELP)
    .option("--loader <file>", LOADER_HELP)
    .option("--network <name>", NETWORK_HELP)
    .option("--host <id>", "this host's id (default: $NODEBIN_HOST, else a unique id kept in the runtime directory: <host name>-<random>)")
    .option("--discovery-port <port>", "the host's discovery port (default 7400)")
    .option("--governor <endpoint>", "the governor's local socket (set by the governor when it starts this container)")
    .option("--id <container-id>", "this container's id at the host agent (set by the governor when it starts this container; default: made up)")
    .option("--metrics <host:port>", METRICS_HELP)
    .option("--metrics-calls", "count calls and report them in Ping, for the governor's /metrics (set by a governor started with --metrics)")
    .option("--hold", "queue messages but handle none until a predecessor's state arrives (set by the governor during a rolling deploy)")
    .option("--log-format <format>", LOG_FORMAT_HELP)
    .option("-v, --version", "print the version")
    .help();
  const output = roleOutput("container");
  let parsed;
  try {
    parsed = cli.parse(["node", "node-bin container", ...argv], { run: false });
    checkFlags(cli, argv);
  } catch (err) {
    return reportError(output, err, "run `node-bin container --help` for usage");
  }
  if (parsed.options.help) return 0;
  if (parsed.options.version) {
    output.out(VERSION);
    return 0;
  }
  const o = parsed.options as Record<string, unknown>;
  const log = consoleLogger("container");
  let metrics: RoleMetrics | undefined;
  try {
    if (typeof o.component !== "string" || !o.component) throw new UsageError("--component NAME is required");
    const metricsAt = metricsFlag(o.metrics);
    const id = containerId(o.id);
    const seeds = parseSeeds(o.seed);
    const discoveryPort = intFlag(o.discoveryPort, "--discovery-port", 1, 65535);
    const runtimeDir = ensureRuntimeDir();
    // Start-up order: the security provider, then the component loader (governor/plugins.ts).
    const plugins = await startPlugins(o, { role: "container", runtimeDir, log });
    const security = netSecurity(o, plugins.provider);
    const loader = await plugins.host.start("loader", plugins.context);
    const bind = security.bind;
    const advertise = advertiseFlag(o.advertise);
    const host = hostId(o.host);
    const network = networkFlag(o.network);
    const dir = resolveComponentsDir(typeof o.components === "string" ? o.components : undefined);
    const { components, errors } = await loader.load(dir);
    const component = components.find((c) => c.name === o.component);
    if (!component) {
      const failed = errors.find((e) => (e.details.file ?? "").includes(`/${o.component as string}/`) || (e.details.file ?? "").endsWith(`/${o.component as string}`));
      if (failed) throw failed;
      const near = closest(o.component as string, components.map((c) => c.name));
      throw new NodeBinError("NOT_FOUND", `no component ${JSON.stringify(o.component)} in ${dir}${near ? ` (did you mean ${near}?)` : ""}; found: ${components.map((c) => c.name).join(", ") || "none"}`);
    }
    log[security.notice.level](security.notice.line);
    metrics = await startMetrics({ plugins, host, address: metricsAt, countCalls: o.metricsCalls === true });
    const plugin = metrics?.plugin;
    const proc = await ContainerProcess.start({
      component,
      ...(id ? { id } : {}),
      host,
      network,
      bind,
      security: security.provider,
      ...(advertise ? { advertise } : {}),
      seeds,
      runtimeDir,
      logger: (source) => consoleLogger(source),
      ...(discoveryPort ? { discoveryPort } : {}),
      ...(typeof o.governor === "string" && o.governor ? { governor: o.governor } : {}),
      ...(o.hold ? { hold: true } : {}),
      ...(plugin ? { interceptors: { inbound: [plugin.interceptor] }, callStats: () => plugin.callStats() } : {}),
    });
    plugin?.observeProcess(processView(proc.process));
    const stopped = new Promise<string>((resolve) => {
      process.once("SIGINT", () => resolve("SIGINT"));
      process.once("SIGTERM", () => resolve("SIGTERM"));
    });
    const d = proc.describe();
    const at = metricsLine(metrics);
    if (at) output.out(at);
    // The readiness line tests and scripts wait for: keep its shape.
    output.out(`node-bin container ready: ${d.node} at ${d.endpoints.join(" ")} (${d.role}${d.discovery ? ` at ${d.discovery.join(" ")}` : ""})`);
    const signal = await stopped;
    log.info(`${signal}: leaving the network, finishing queued messages`);
    await proc.close();
    return 0;
  } catch (err) {
    return reportError(output, err, "run `node-bin container --help` for usage");
  } finally {
    await metrics?.plugin.close();
  }
}

/** --id: a container id is a lease key and a log source: no spaces or control characters, bounded. */
function containerId(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  // cac turns a purely numeric value into a number.
  const id = String(value);
  if (!/^[^\s\p{Cc}]{1,200}$/u.test(id)) throw new UsageError(`--id takes 1 to 200 characters, no spaces or control characters, got ${JSON.stringify(id)}`);
  return id;
}
