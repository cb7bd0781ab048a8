/**
 * `node-bin governor`: runs this host's governor (see src/governor/governor.ts),
 * and its management subcommands, which talk to the running governor over its
 * private local socket:
 *   node-bin governor status [--json]
 *   node-bin governor set capacity 8
 *   node-bin governor set component greeter max 3
 *   node-bin governor set idle-ms 30000
 *   node-bin governor stop [--keep-children]
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { cac } from "cac";
import { Client } from "../client/client.ts";
import { consoleLogger } from "../container/log.ts";
import { DEFAULT_DISCOVERY_PORT } from "../transport/runtime-dir.ts";
import { Governor, SETTING_KEYS, type Settings } from "../governor/governor.ts";
import { ensureRuntimeDir, ipcOwner } from "../transport/runtime-dir.ts";
import { GOVERNOR_ROLL, GOVERNOR_SET, GOVERNOR_STATUS, GOVERNOR_STOP } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import { Mode, Schema } from "../wire/schema.ts";
import type { Tiers } from "../membership/capacity.ts";
import { networkLabel } from "../membership/network-name.ts";
import { formatTiers } from "./client.ts";
import { resolveComponentsDir } from "./components-dir.ts";
import { METRICS_HELP, metricsFlag, metricsLine, startMetrics, type RoleMetrics } from "./metrics-options.ts";
import { ADVERTISE_HELP, CLUSTER_KEY_HELP, INSECURE_HELP, LISTEN_HELP, LOADER_HELP, NETWORK_HELP, advertiseFlag, hostId, intFlag, netSecurity, networkFlag, parseSeeds, startPlugins } from "./net-options.ts";
import { LOG_FORMAT_HELP, roleOutput } from "./log-options.ts";
import { checkFlags, reportError, UsageError } from "./output.ts";
import { VERSION } from "./version.ts";

const USAGE = `[options]                run this host's governor
  $ node-bin governor status [--json]          what runs, per component and child
  $ node-bin governor set capacity N           most container processes on this host
  $ node-bin governor set component NAME min|max N
  $ node-bin governor set KEY N                ${Object.keys(SETTING_KEYS).join(", ")}
  $ node-bin governor stop [--keep-children]   (--keep-children: the governor only)
  $ node-bin governor call SERVICE/METHOD [JSON]  a plugin's control-plane service
  $ node-bin governor roll [COMPONENT ...]     replace the children (all components: none named),
                                               one at a time, state handed over (key rotation)

  The governor keeps the components of its components directory running, one
  node per child process: it grows them under load, shrinks idle ones, replaces
  hung (zombie) or crashed ones, and rolls changed code with state hand-over.
  It holds the host's discovery endpoint; other hosts find it through --seed.
  Settings come from the manifest limits, then the config file (re-read when it
  changes), then \`governor set\` (kept until a full \`governor stop\`).

  New hosts on demand: with --provider-command, when every host of the network
  has been full while capacity requests went unmet for --provider-sustain-ms,
  the governor runs the command for one more host (one launch at a time, at
  most --provider-max-hosts, a cooldown after each), and runs
  --provider-release-command for a launched host idle past --provider-idle-ms.
  Of several governors with a provider, the smallest host id decides. The
  launched hosts are kept in the state directory, so a restarted governor
  still releases them.`;

export async function runGovernor(argv: string[]): Promise<number> {
  const sub = argv[0];
  if (sub === "status" || sub === "set" || sub === "stop" || sub === "call" || sub === "roll") return manage(sub, argv.slice(1));
  const cli = cac("node-bin governor");
  cli
    .usage(USAGE)
    .option("--components <dir>", "components directory (default: components/ beside node-bin, or ./components)")
    .option("--seed <ip[:port]>", "discovery endpoint of another host (comma-separated or repeated; default port 7400)")
    .option("--capacity <n>", "most container processes on this host (default 2 x CPU count)")
    .option("--network <name>", NETWORK_HELP)
    .option("--listen <ip>", LISTEN_HELP)
    .option("--advertise <ip>", ADVERTISE_HELP)
    .option("--cluster-key <file>", CLUSTER_KEY_HELP)
    .option("--insecure", INSECURE_HELP)
    .option("--host <id>", "this host's id (default: $NODEBIN_HOST, else a unique id kept in the runtime directory: <host name>-<random>)")
    .option("--discovery-port <port>", "the host's discovery port (default 7400)")
    .option("--config <file>", "config file, re-read when it changes (default: governor.json beside the components directory)")
    .option("--plugins <dir>", "control-plane plugins, each replacing the built-in of its kind (default: plugins/ beside the components directory)")
    .option("--loader <file>", LOADER_HELP)
    .option("--idle-ms <ms>", "shrink a node idle this long (default 60000)")
    .option("--ping-ms <ms>", "ping period of the children (default 1000)")
    .option("--zombie-after-ms <ms>", "a child silent this long is a zombie (default 3000)")
    .option("--queue-wait-ms <ms>", "grow when queue wait exceeds this on every node (default 200)")
    .option("--queue-length <n>", "... or the queue is longer than this on every node (default 32)")
    .option("--sustain-ms <ms>", "... for this long (default 1000)")
    .option("--provider-command <cmd>", "new hosts on demand: a shell command that starts one (gets NODEBIN_SEEDS, NODEBIN_NETWORK, NODEBIN_REASON; may print the host's id last)")
    .option("--provider-release-command <cmd>", "... and one that gives an idle launched host back (gets NODEBIN_HOST, NODEBIN_NETWORK, NODEBIN_REASON)")
    .option("--provider-max-hosts <n>", "most launched hosts alive at once (default 4)")
    .option("--provider-cooldown-ms <ms>", "no launch or release this long after one (default 60000)")
    .option("--provider-sustain-ms <ms>", "launch after every host was full with capacity requests unmet this long (default 10000)")
    .option("--provider-idle-ms <ms>", "release a launched host that ran no node this long (default 120000)")
    .option("--metrics <host:port>", `${METRICS_HELP}: the governor's own series and its children's`)
    .option("--log-format <format>", LOG_FORMAT_HELP)
    .option("-v, --version", "print the version")
    .help();
  const output = roleOutput("governor");
  let parsed;
  try {
    parsed = cli.parse(["node", "node-bin governor", ...argv], { run: false });
    checkFlags(cli, argv);
  } catch (err) {
    return reportError(output, err, "run `node-bin governor --help` for usage");
  }
  if (parsed.options.help) return 0;
  if (parsed.options.version) {
    output.out(VERSION);
    return 0;
  }
  if (parsed.args.length) return reportError(output, new UsageError(`unknown governor command ${JSON.stringify(parsed.args[0])}; expected status, set, stop, call or roll (or none to run the governor)`), "run `node-bin governor --help` for usage");
  const o = parsed.options as Record<string, unknown>;
  const log = consoleLogger("governor");
  let metrics: RoleMetrics | undefined;
  try {
    const metricsAt = metricsFlag(o.metrics);
    const componentsDir = resolveComponentsDir(typeof o.components === "string" ? o.components : undefined);
    const beside = dirname(componentsDir);
    const configFile = typeof o.config === "string" ? o.config : join(beside, "governor.json");
    if (typeof o.config === "string" && !existsSync(o.config)) throw new NodeBinError("NOT_FOUND", `no config file ${o.config}`);
    const pluginsDir = typeof o.plugins === "string" ? o.plugins : existsSync(join(beside, "plugins")) ? join(beside, "plugins") : undefined;
    const settings: Partial<Settings> = {};
    const ms = (flag: string, key: keyof Settings) => {
      const v = intFlag(o[flag], `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`, 1, 2 ** 31 - 1);
      if (v !== undefined) settings[key] = v;
    };
    ms("idleMs", "idleMs");
    ms("pingMs", "pingMs");
    ms("zombieAfterMs", "zombieAfterMs");
    ms("queueWaitMs", "queueWaitMs");
    ms("queueLength", "queueLength");
    ms("sustainMs", "sustainMs");
    ms("providerMaxHosts", "providerMaxHosts");
    ms("providerCooldownMs", "providerCooldownMs");
    ms("providerSustainMs", "providerSustainMs");
    ms("providerIdleMs", "providerIdleMs");
    const commandFlag = (flag: string, name: string) => {
      const v = o[flag];
      if (v === undefined) return undefined;
      if (typeof v !== "string" || v.trim() === "") throw new UsageError(`${name} takes a shell command line, got ${JSON.stringify(v)}`);
      return v;
    };
    const providerCommand = commandFlag("providerCommand", "--provider-command");
    const providerReleaseCommand = commandFlag("providerReleaseCommand", "--provider-release-command");
    const capacity = intFlag(o.capacity, "--capacity", 1, 100_000);
    const discoveryPort = intFlag(o.discoveryPort, "--discovery-port", 1, 65535);
    const advertise = advertiseFlag(o.advertise);
    const runtimeDir = ensureRuntimeDir();
    // Start-up order (governor/plugins.ts): the security provider, the component loader (for the
    // children: the governor loads no component code itself) and discovery, before anything binds;
    // the governor starts its strategies once it holds its socket.
    const pluginOptions = earlyPluginOptions(configFile);
    const plugins = await startPlugins({ ...o, plugins: pluginsDir }, { role: "governor", runtimeDir, log });
    const security = netSecurity(o, plugins.provider);
    await plugins.host.start("loader", plugins.context, pluginOptions);
    const discovery = await plugins.host.start("discovery", plugins.context, pluginOptions);
    log[security.notice.level](security.notice.line);
    const host = hostId(o.host);
    // Served before anything starts (a port in use stops the governor here); its children count their calls for it.
    metrics = await startMetrics({ plugins, host, address: metricsAt, config: pluginOptions });
    const governor = await Governor.start({
      componentsDir,
      host,
      network: networkFlag(o.network),
      bind: security.bind,
      security: { provider: security.provider, childArgs: [...security.childArgs, ...plugins.childArgs] },
      pluginHost: { host: plugins.host, context: plugins.context },
      makeGossip: (self, seeds) => discovery.makeGossip(self, seeds),
      ...(advertise ? { advertise } : {}),
      seeds: parseSeeds(o.seed),
      runtimeDir,
      configFile,
      ...(capacity ? { capacity } : {}),
      ...(discoveryPort ? { discoveryPort } : {}),
      settings,
      ...(providerCommand || providerReleaseCommand ? { provider: { ...(providerCommand ? { command: providerCommand } : {}), ...(providerReleaseCommand ? { releaseCommand: providerReleaseCommand } : {}) } } : {}),
      ...(metrics ? { childArgs: ["--metrics-calls"] } : {}),
    });
    if (metrics) {
      const view = governor.metricsView();
      metrics.plugin.observeProcess(view.process);
      metrics.plugin.observeGovernor(view.governor);
    }
    const status = governor.status() as { discovery: string[]; capacity: number; components: unknown[] };
    const at = metricsLine(metrics);
    if (at) output.out(at);
    // The readiness line tests and scripts wait for: keep its shape.
    output.out(`node-bin governor ready: ${governor.container.host} at ${status.discovery.join(" ")}, socket ${governor.socket}, capacity ${status.capacity}, ${status.components.length} component(s)`);
    process.once("SIGINT", () => void governor.stop());
    process.once("SIGTERM", () => void governor.stop());
    // SIGHUP: the governor only: children keep serving (as `governor stop --keep-children`).
    process.once("SIGHUP", () => void governor.stop({ keepChildren: true }));
    const { keepChildren } = await governor.whenStopped();
    log.info(keepChildren ? "governor stopped; its children keep serving" : "governor and its children stopped");
    return 0;
  } catch (err) {
    return reportError(output, err, "run `node-bin governor --help` for usage");
  } finally {
    await metrics?.plugin.close();
  }
}

/** status / set / stop against the running governor. */
async function manage(sub: "status" | "set" | "stop" | "call" | "roll", argv: string[]): Promise<number> {
  const cli = cac(`node-bin governor ${sub}`);
  cli
    .option("--discovery-port <port>", "the governor's discovery port (default 7400)")
    .option("--json", "machine-readable output")
    .option("--keep-children", "stop: recycle only the governor; children keep serving and the next governor adopts them")
    .option("--timeout <ms>", "time allowed (default 5000)")
    .option("--log-format <format>", LOG_FORMAT_HELP)
    .help();
  const json = argv.includes("--json");
  const output = roleOutput("governor", json);
  try {
    const parsed = cli.parse(["node", `node-bin governor ${sub}`, ...argv], { run: false });
    checkFlags(cli, argv);
    if (parsed.options.help) return 0;
    const port = intFlag(parsed.options.discoveryPort, "--discovery-port", 1, 65535) ?? DEFAULT_DISCOVERY_PORT;
    const timeoutMs = intFlag(parsed.options.timeout, "--timeout", 1, 2 ** 31 - 1) ?? 5000;
    const socket = `ipc://${join(ensureRuntimeDir(), `governor-${port}.sock`)}`;
    const request = sub === "set" ? setRequest(parsed.args.map(String)) : undefined;
    if (sub === "call" && (parsed.args.length < 1 || parsed.args.length > 2)) throw new UsageError("usage: node-bin governor call SERVICE/METHOD [JSON]: a method of a plugin's service");
    if (sub !== "set" && sub !== "call" && sub !== "roll" && parsed.args.length) throw new UsageError(`governor ${sub} takes no arguments, got ${JSON.stringify(parsed.args[0])}`);
    if (ipcOwner(socket) === undefined) throw new NodeBinError("UNAVAILABLE", `no governor runs for discovery port ${port} (no live owner of ${socket})`);
    const client = await Client.connect({ endpoint: socket, connectTimeoutMs: timeoutMs });
    try {
      if (sub === "stop") {
        await client.callControl(GOVERNOR_STOP, { keepChildren: Boolean(parsed.options.keepChildren) }, { timeoutMs });
        const pid = ipcOwner(socket);
        // Wait for it to go (its children first, unless kept).
        const until = Date.now() + Math.max(timeoutMs, 30_000);
        while (ipcOwner(socket) !== undefined && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
        if (ipcOwner(socket) !== undefined) throw new NodeBinError("DEADLINE_EXCEEDED", `the governor (pid ${pid}) is still stopping`);
        output.out(json ? JSON.stringify({ stopped: true, keptChildren: Boolean(parsed.options.keepChildren) }) : parsed.options.keepChildren ? "governor stopped; children keep serving" : "governor and children stopped");
        return 0;
      }
      if (sub === "call") {
        const answer = await callPlugin(client, String(parsed.args[0]), parsed.args[1] === undefined ? "{}" : String(parsed.args[1]), timeoutMs);
        output.out(json ? JSON.stringify(answer) : JSON.stringify(answer, null, 2));
        return 0;
      }
      const reply = request
        ? await client.callControl(GOVERNOR_SET, request, { timeoutMs })
        : sub === "roll"
          ? await client.callControl(GOVERNOR_ROLL, { components: parsed.args.map(String) }, { timeoutMs })
          : await client.callControl(GOVERNOR_STATUS, {}, { timeoutMs });
      const status = JSON.parse(reply.json) as Status;
      output.out(json ? JSON.stringify(status) : formatStatus(status));
      return 0;
    } finally {
      await client.close();
    }
  } catch (err) {
    return reportError(output, err, "run `node-bin governor --help` for usage");
  }
}

/**
 * `governor call METHOD [JSON]`: a method of a plugin's control-plane
 * service, at the governor's private socket. Its schema comes from the
 * governor's status (the plugins' .proto as protobufjs JSON), so the CLI
 * needs no copy of the plugin. Throws NOT_FOUND naming the methods there are.
 */
async function callPlugin(client: Client, method: string, json: string, timeoutMs: number): Promise<unknown> {
  let body: unknown;
  try {
    body = JSON.parse(json);
  } catch (err) {
    throw new NodeBinError("INVALID_ARGUMENT", `request is not valid JSON: ${(err as Error).message}`);
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw new NodeBinError("INVALID_ARGUMENT", "request must be a JSON object");
  const status = JSON.parse((await client.callControl(GOVERNOR_STATUS, {}, { timeoutMs })).json) as { pluginSchemas?: { plugin: string; json: string }[] };
  const methods = (status.pluginSchemas ?? []).flatMap((p) => [...Schema.fromJSON(p.json).methods.values()]);
  const schema = methods.find((m) => m.fullName === method);
  if (!schema) {
    throw new NodeBinError("NOT_FOUND", `no plugin of this governor serves ${method}; served: ${methods.map((m) => m.fullName).join(", ") || "none"}`, { details: { method } });
  }
  const reply = await client.callControl({ schema, oneWay: schema.mode === Mode.ASYNC }, body as Record<string, unknown>, { timeoutMs });
  return reply ?? {};
}

function setRequest(args: string[]): { key: string; component: string; value: number } {
  const number = (v: string | undefined, what: string) => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < 0) throw new UsageError(`${what} takes a whole number >= 0, got ${JSON.stringify(v ?? "nothing")}`);
    return n;
  };
  if (args[0] === "component") {
    const [, component, key, value] = args;
    if (!component || (key !== "min" && key !== "max")) throw new UsageError("usage: node-bin governor set component NAME min|max N");
    return { key, component, value: number(value, `set component ${component} ${key}`) };
  }
  const [key, value] = args;
  if (!key) throw new UsageError(`usage: node-bin governor set capacity N | component NAME min|max N | ${Object.keys(SETTING_KEYS).join(" N | ")} N`);
  if (key !== "capacity" && !SETTING_KEYS[key]) throw new UsageError(`unknown setting ${JSON.stringify(key)}; known: capacity, component NAME min|max, ${Object.keys(SETTING_KEYS).join(", ")}`);
  return { key, component: "", value: number(value, `set ${key}`) };
}

interface Status {
  host: string;
  pid: number;
  capacity: number;
  used: number;
  locked: boolean;
  discovery: string[];
  leasesRefused?: number;
  lastLeaseRefused?: string;
  refused?: Record<string, number>;
  tiers?: Tiers;
  /** The gateways it runs (governor/gateways.ts GatewayStatus). */
  gateways?: { name: string; network: string; remoteNetwork: string; discoveryPort: number; pid: number | null; state: string; restarts: number; lastError?: string }[];
  plugins?: { kind: string; name: string; source: string; services?: string[] }[];
  /** The provider loop (governor/provider.ts ProviderStatus), when a provider runs. */
  provider?: {
    name: string;
    decider: string;
    settings: { providerMaxHosts: number };
    hosts: { host: string; idleMs: number | null; releasing: boolean; restored?: boolean }[];
    inFlight?: { since: number; phase: string; host?: string };
    lastDecision?: string;
    counters: {
      unmet: number;
      launches: Record<string, number>;
      releases: Record<string, number>;
      skipped: Record<string, Record<string, number>>;
    };
  };
  components: {
    name: string;
    min: number;
    max: number;
    desired: number;
    running: number;
    queued: number;
    restarts: number;
    rolling: boolean;
    /** "fetched from HOST": code fetched from another host, not in the components directory. */
    source?: string;
    failed?: string;
    deployError?: string;
    waiting?: string;
    children: { pid: number; node: string; phase: string; uptimeMs: number; handled: number; queued: number; lastPongMsAgo: number | null; restarts: number; rssBytes: number; refused?: Record<string, number> }[];
  }[];
}

/** "tooManyFrames 1, connectionsRefused 200", or "" when nothing was refused. */
function refusals(counters: Record<string, number> | undefined): string {
  return Object.entries(counters ?? {})
    .filter(([, n]) => n > 0)
    .map(([reason, n]) => `${reason} ${n}`)
    .join(", ");
}

function formatStatus(s: Status): string {
  const lines = [`governor pid ${s.pid} on ${s.host} at ${s.discovery.join(" ")}: ${s.used}/${s.capacity} processes${s.locked ? " (deploy lock held: spawning paused)" : ""}`];
  if (s.plugins?.length) lines.push(`plugins: ${s.plugins.map((p) => `${p.kind} ${p.name} (${p.source}${p.services?.length ? `; serves ${p.services.join(", ")}` : ""})`).join(", ")}`);
  if (s.leasesRefused) lines.push(`${s.leasesRefused} lease(s) refused${s.lastLeaseRefused ? `; last: ${s.lastLeaseRefused}` : ""}`);
  if (refusals(s.refused)) lines.push(`refused or dropped by the governor: ${refusals(s.refused)}`);
  if (s.provider) lines.push(...providerLines(s.provider));
  for (const g of s.gateways ?? []) {
    lines.push(`gateway ${g.name}: ${networkLabel(g.network)} <-> ${networkLabel(g.remoteNetwork)}, ${g.state}${g.pid ? ` (pid ${g.pid})` : ""}, discovery port ${g.discoveryPort}, ${g.restarts} restart(s)${g.lastError && g.state !== "running" ? `; last: ${g.lastError}` : ""}`);
  }
  if (s.tiers) lines.push("", formatTiers(s.tiers));
  if (!s.components.length) lines.push("no components");
  for (const c of s.components) {
    lines.push("");
    lines.push(`${c.name}${c.source ? ` (${c.source})` : ""}: ${c.running} running (min ${c.min}, max ${c.max}, want ${c.desired}), ${c.queued} queued, ${c.restarts} restarts${c.rolling ? ", rolling" : ""}`);
    if (c.failed) lines.push(`  FAILED: ${c.failed}`);
    if (c.deployError) lines.push(`  DEPLOY FAILED: ${c.deployError}`);
    if (c.waiting) lines.push(`  ${c.waiting}`);
    const rows = [["PID", "NODE", "PHASE", "UPTIME", "HANDLED", "QUEUED", "PONG", "RESTARTS", "RSS"]];
    for (const k of c.children) {
      rows.push([String(k.pid), k.node || "-", k.phase, duration(k.uptimeMs), String(k.handled), String(k.queued), k.lastPongMsAgo === null ? "-" : `${k.lastPongMsAgo} ms ago`, String(k.restarts), `${Math.round(k.rssBytes / 1048576)} MiB`]);
    }
    if (c.children.length) {
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      for (const r of rows) lines.push(`  ${r.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()}`);
    }
    for (const k of c.children) if (refusals(k.refused)) lines.push(`  pid ${k.pid} refused or dropped: ${refusals(k.refused)}`);
  }
  return lines.join("\n");
}

/** The provider's lines of the text status: hosts launched, counts, what the guard rails refused, the last decision. */
function providerLines(p: NonNullable<Status["provider"]>): string[] {
  const c = p.counters;
  const skipped = Object.entries(c.skipped)
    .flatMap(([action, reasons]) => Object.entries(reasons).filter(([, n]) => n > 0).map(([reason, n]) => `${action} ${reason} ${n}`))
    .join(", ");
  const hosts = p.hosts.map((h) => `${h.host}${h.releasing ? " (releasing)" : h.restored ? " (remembered from before a restart, not seen yet)" : h.idleMs !== null ? ` (idle ${duration(h.idleMs)})` : ""}`).join(", ");
  return [
    `provider ${p.name}${p.decider ? ` (decides: ${p.decider})` : ""}: ${p.hosts.length}/${p.settings.providerMaxHosts} launched host(s)${hosts ? ` ${hosts}` : ""}${p.inFlight ? `, a launch in flight (${p.inFlight.phase}${p.inFlight.host ? ` ${p.inFlight.host}` : ""})` : ""}`,
    `  launches ${c.launches.started ?? 0} started, ${c.launches.succeeded ?? 0} joined, ${c.launches.failed ?? 0} failed; releases ${c.releases.succeeded ?? 0} done, ${c.releases.failed ?? 0} failed, ${c.releases.gone ?? 0} gone; ${c.unmet} unmet request(s)${skipped ? `; skipped: ${skipped}` : ""}`,
    ...(p.lastDecision ? [`  last: ${p.lastDecision}`] : []),
  ];
}

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}


/**
 * The config file's plugin options, for the plugins that start before the
 * governor reads its config (security, loader, discovery). A missing or
 * broken file gives none: the governor reports a broken one when it reads it.
 */
function earlyPluginOptions(file: string): Record<string, Record<string, unknown>> {
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as { plugins?: unknown };
    const plugins = parsed?.plugins;
    return typeof plugins === "object" && plugins !== null && !Array.isArray(plugins) ? (plugins as Record<string, Record<string, unknown>>) : {};
  } catch {
    return {};
  }
}
