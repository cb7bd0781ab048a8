/**
 * `node-bin dev`: all or some components in one process, one debugger.
 *
 * - Alone (no --seed, no host agent on this host): every component on the
 *   in-memory pseudo-network, plus a local ZeroMQ endpoint that
 *   `node-bin client` finds by itself. A closed world.
 * - Joined (--seed, or a governor or container already holds this host's
 *   discovery port): the same process is a real member of the host and the
 *   network (compose.ts, host-role.ts). Its nodes are registered and
 *   gossiped like any container's, so the network's calls reach them; calls
 *   from them to anything dev does not serve go out to the network. With
 *   --only, a developer runs one component (or a few) under the debugger
 *   against a live system.
 *
 * Components that fail to load are reported; the others serve.
 */
import { cac } from "cac";
import type { Component } from "../component/loader.ts";
import { NodeBinProcess } from "../container/compose.ts";
import { LOCAL } from "../membership/table.ts";
import { consoleLogger } from "../container/log.ts";
import { DEFAULT_DISCOVERY_PORT, devEndpoint, discoveryIpc, ensureRuntimeDir } from "../transport/runtime-dir.ts";
import { PULL } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import { closest } from "../wire/message.ts";
import { processView } from "../metrics/sources.ts";
import type { MetricsAddress } from "../metrics/server.ts";
import { resolveComponentsDir } from "./components-dir.ts";
import { METRICS_HELP, metricsFlag, metricsLine, startMetrics } from "./metrics-options.ts";
import { ADVERTISE_HELP, CLUSTER_KEY_HELP, INSECURE_HELP, LISTEN_HELP, LOADER_HELP, NETWORK_HELP, PLUGINS_HELP, advertiseFlag, hostId, intFlag, netSecurity, networkFlag, parseSeeds, startPlugins, type NetSecurity } from "./net-options.ts";
import type { PluginHost } from "../governor/plugins.ts";
import type { ComponentLoader, PluginContext } from "../governor/strategy.ts";
import { isLoopback } from "../transport/addresses.ts";
import { VERSION } from "./version.ts";
import { LOG_FORMAT_HELP, roleOutput } from "./log-options.ts";
import { checkFlags, reportError, UsageError } from "./output.ts";

const USAGE = `[options]

  Runs the components of the components directory (all, or those named by
  --only) in this one process. Alone, it is a closed world served at a local
  endpoint (default: the well-known one \`node-bin client\` looks for). With
  --seed, or when a governor or container already runs on this host, it joins
  the host and the network: its nodes serve the network's calls, and their
  calls to components it does not run go to the network.

  Debugging: node --inspect bin/node-bin dev --only NAME ... (or the
  executable with NODE_OPTIONS=--inspect), then attach Chrome DevTools or
  VS Code and set breakpoints in the component's source.`;

export async function runDev(argv: string[]): Promise<number> {
  const cli = cac("node-bin dev");
  cli
    .usage(USAGE)
    .option("--components <dir>", "components directory (default: components/ beside node-bin, or ./components)")
    .option("--only <names>", "serve only these components (comma-separated or repeated); the others are the network's")
    .option("--seed <ip[:port]>", "join the network through this host's discovery endpoint (comma-separated or repeated; default port 7400)")
    .option("--endpoint <address>", "the local endpoint, e.g. tcp://127.0.0.1:7399 (default: ipc socket in the runtime directory)")
    .option("--instances <n>", "nodes per component", { default: 1 })
    .option("--listen <ip>", `joined: ${LISTEN_HELP}`)
    .option("--advertise <ip>", `joined: ${ADVERTISE_HELP}`)
    .option("--cluster-key <file>", CLUSTER_KEY_HELP)
    .option("--insecure", INSECURE_HELP)
    .option("--plugins <dir>", PLUGINS_HELP)
    .option("--loader <file>", LOADER_HELP)
    .option("--network <name>", `joined: ${NETWORK_HELP}`)
    .option("--host <id>", "joined: this host's id (default: $NODEBIN_HOST, else a unique id kept in the runtime directory: <host name>-<random>)")
    .option("--discovery-port <port>", "joined: the host's discovery port (default 7400)")
    .option("--metrics <host:port>", METRICS_HELP)
    .option("--log-format <format>", LOG_FORMAT_HELP)
    .option("-v, --version", "print the version")
    .help();
  const output = roleOutput("dev");
  let parsed;
  try {
    parsed = cli.parse(["node", "node-bin dev", ...argv], { run: false });
    checkFlags(cli, argv);
  } catch (err) {
    return reportError(output, err, "run `node-bin dev --help` for usage");
  }
  if (parsed.options.help) return 0;
  if (parsed.options.version) {
    output.out(VERSION);
    return 0;
  }
  const o = parsed.options as Record<string, unknown>;
  try {
    const instances = Number(o.instances);
    if (!Number.isInteger(instances) || instances < 1) throw new UsageError(`--instances takes a whole number >= 1, got ${JSON.stringify(o.instances)}`);
    const only = o.only === undefined ? undefined : [o.only].flat().flatMap((v) => String(v).split(",")).map((s) => s.trim()).filter(Boolean);
    if (only && only.length === 0) throw new UsageError("--only takes component names, e.g. --only teller,ledger");
    const metrics = metricsFlag(o.metrics);
    // Start-up order: the security provider, then the component loader (governor/plugins.ts).
    const log = consoleLogger("dev");
    const plugins = await startPlugins(o, { role: "dev", runtimeDir: ensureRuntimeDir(), log });
    const loader = await plugins.host.start("loader", plugins.context);
    return await serve({
      loader,
      plugins,
      componentsDir: resolveComponentsDir(typeof o.components === "string" ? o.components : undefined),
      ...(typeof o.endpoint === "string" ? { endpoint: o.endpoint } : {}),
      instances,
      ...(only ? { only } : {}),
      seeds: parseSeeds(o.seed),
      security: netSecurity(o, plugins.provider),
      advertise: advertiseFlag(o.advertise),
      host: hostId(o.host),
      network: networkFlag(o.network),
      discoveryPort: intFlag(o.discoveryPort, "--discovery-port", 1, 65535) ?? DEFAULT_DISCOVERY_PORT,
      metrics,
    });
  } catch (err) {
    return reportError(output, err, "run `node-bin dev --help` for usage");
  }
}

interface DevOptions {
  componentsDir: string;
  loader: ComponentLoader;
  plugins: { host: PluginHost; context: PluginContext };
  endpoint?: string;
  instances: number;
  only?: string[];
  seeds: string[];
  security: NetSecurity;
  advertise: string | undefined;
  host: string;
  network: string;
  discoveryPort: number;
  /** --metrics: where to serve /metrics. */
  metrics: MetricsAddress | undefined;
}

async function serve(o: DevOptions): Promise<number> {
  const log = consoleLogger("dev");
  const endpoint = o.endpoint ?? devEndpoint();
  const runtimeDir = ensureRuntimeDir();
  const tcpHost = /^tcp:\/\/\[?([^\]]+?)\]?:\d+$/.exec(endpoint)?.[1];
  if (tcpHost && !o.security.provider.wire && !isLoopback(tcpHost) && !o.security.insecure) {
    throw new UsageError(`--endpoint ${endpoint} without a cluster key would serve plain tcp to the network: give --cluster-key FILE, or --insecure to do it anyway`);
  }
  log[o.security.notice.level](o.security.notice.line);
  const components = select(await loadAll(o.loader, o.componentsDir, log), o.only, o.componentsDir);

  // Joined when told where the network is, or when this host already has an agent to register with.
  const joined = o.seeds.length > 0 || (await hostHasAgent(runtimeDir, o.discoveryPort, o.host));
  const metrics = await startMetrics({ plugins: o.plugins, host: o.host, address: o.metrics });
  let proc: NodeBinProcess;
  try {
    proc = await NodeBinProcess.create({
      id: `dev@${o.host}-${process.pid}`,
      ...(metrics ? { interceptors: { inbound: [metrics.plugin.interceptor] } } : {}),
      host: o.host,
      network: o.network,
      runtimeDir,
      logger: (source) => consoleLogger(source),
      localEndpoints: [endpoint],
      security: o.security.provider,
      ...(joined
        ? {
            nodeEndpoints: true,
            pruneConnections: true,
            bind: o.security.bind,
            ...(o.advertise ? { advertise: o.advertise } : {}),
            // A node starting with its peers finds them once the host's table arrived.
            settleMs: 2000,
            hostRole: { seeds: o.seeds, discoveryPort: o.discoveryPort },
          }
        : {}),
    });
  } catch (err) {
    await metrics?.plugin.close();
    const e = NodeBinError.from(err);
    if (e.code === "ALREADY_EXISTS") throw new NodeBinError("ALREADY_EXISTS", `${e.message}; stop it, or give this one another --endpoint`, { details: e.details });
    throw e;
  }

  let stopping = false;
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info(`${signal}: finishing queued messages, then exiting`);
      resolve();
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });

  try {
    const container = proc.container;
    for (const component of components) {
      const nodes = await container.addComponent(component, o.instances);
      const services = [...new Set([...component.schema.methods.values()].map((m) => m.service))];
      log.info(`${component.name} ${component.manifest.version}: ${services.join(", ")} (${nodes.length} node${nodes.length > 1 ? "s" : ""})`);
    }
    // Registered with its nodes in the table: the network learns them at once.
    await proc.host?.join();
    const methods = new Set(container.table.sourceEntries(LOCAL).flatMap((n) => n.methods.map((m) => m.name))).size;
    const where = proc.host ? `; joined ${o.host} as ${proc.host.role}${proc.host.role === "agent" ? ` at ${proc.host.discoveryEndpoints.join(" ")}` : ""}, nodes at ${container.endpoints.join(" ")}` : "";
    metrics?.plugin.observeProcess(processView(proc));
    const at = metricsLine(metrics);
    if (at) process.stdout.write(`${at}\n`);
    // The readiness line tests and scripts wait for: keep its shape (the local endpoint first).
    process.stdout.write(`node-bin dev ready at ${proc.localEndpoints.join(" ")} (${components.length} components, ${methods} methods${where})\n`);
    await stopped;
  } finally {
    await proc.close();
    await metrics?.plugin.close();
  }
  return 0;
}

async function loadAll(loader: ComponentLoader, dir: string, log: ReturnType<typeof consoleLogger>): Promise<Component[]> {
  const { components, errors } = await loader.load(dir);
  for (const e of errors) log.error(`skipped: ${e.message}`, { code: e.code });
  if (components.length === 0) {
    throw new NodeBinError("FAILED_PRECONDITION", `no component in ${dir} could be loaded${errors.length ? ` (${errors.length} failed, see above)` : ""}`);
  }
  return components;
}

/** The components --only names (all without it). Throws NOT_FOUND for a name that is not there. */
function select(components: Component[], only: string[] | undefined, dir: string): Component[] {
  if (!only) return components;
  const names = components.map((c) => c.name);
  for (const name of only) {
    if (names.includes(name)) continue;
    const near = closest(name, names);
    throw new NodeBinError("NOT_FOUND", `--only ${name}: no such component in ${dir}${near ? ` (did you mean ${near}?)` : ""}; found: ${names.join(", ")}`, { details: { component: name } });
  }
  return components.filter((c) => only.includes(c.name));
}

/**
 * Whether a host agent (a governor, or a container standing in) answers on
 * this host's discovery socket: asked with a Pull over ipc by a throwaway
 * process with no nodes.
 */
async function hostHasAgent(runtimeDir: string, port: number, host: string): Promise<boolean> {
  // ipc only: no tcp socket, so no security of its own (its default provider is closed with it).
  const probe = await NodeBinProcess.create({ id: `dev-probe-${process.pid}`, host, runtimeDir });
  try {
    await probe.container.callControl(PULL, { knownVersion: 0 }, { via: discoveryIpc(runtimeDir, port) }, 1000);
    return true;
  } catch {
    return false;
  } finally {
    await probe.close();
  }
}
