/**
 * `node-bin client`: call, send, stream, broadcast, list and nodes, against the local
 * `node-bin dev` by default or any endpoint given with --endpoint.
 */
import { readFileSync } from "node:fs";
import { cac } from "cac";
import { Client, type ServiceInfo } from "../client/client.ts";
import type { Scope } from "../component/context.ts";
import type { Tiers } from "../membership/capacity.ts";
import type { NodeEntry } from "../membership/table.ts";
import { NodeBinError } from "../wire/errors.ts";
import { VERSION } from "./version.ts";
import { parseSeeds, startPlugins } from "./net-options.ts";
import { consoleLogger } from "../container/log.ts";
import { runtimeDirPath } from "../transport/runtime-dir.ts";
import { networkLabel } from "../membership/network-name.ts";
import { LOG_FORMAT_HELP, roleOutput } from "./log-options.ts";
import { checkFlags, reportError, parseMs, UsageError, type Output } from "./output.ts";

interface ClientFlags {
  seed?: string | string[];
  endpoint?: string;
  timeout?: string | number;
  json?: boolean;
  meta?: string | string[];
  scope?: string;
  clusterKey?: string;
  plugins?: string;
  window?: string | number;
  capacityWait?: string | number;
  tiers?: boolean;
}

const SCOPES: readonly Scope[] = ["process", "host", "network", "any"];
const SCOPE_HELP = "where it may be served, and where capacity may be made for it: process | host | network | any (default; remote networks through gateways too)";
const CAPACITY_WAIT_HELP = "when every node is full: wait this long for room, then ask for more capacity and keep waiting up to the timeout (default: fail at once)";

export async function runClient(argv: string[]): Promise<number> {
  const cli = cac("node-bin client");
  let action: ((output: Output) => Promise<void>) | undefined;
  const common = (cmd: ReturnType<typeof cli.command>) =>
    cmd
      .option("--seed <ip[:port]>", "a host of the network: its discovery endpoint (default port 7400)")
      .option("--endpoint <address>", "node-bin process to ask, e.g. tcp://10.0.0.5:7400 (default: the local `node-bin dev`)")
      .option("--timeout <ms>", "time allowed, in ms (default 30000)")
      .option("--cluster-key <file>", "the network's cluster key (default: $NODEBIN_CLUSTER_KEY_FILE, else cluster.key beside node-bin)")
      .option("--plugins <dir>", "plugins directory: a security plugin there replaces the built-in (default: $NODEBIN_PLUGINS_DIR)")
      .option("--json", "machine-readable output (one JSON document; errors as JSON on stderr)")
      .option("--log-format <format>", LOG_FORMAT_HELP);
  common(cli.command("call <method> [json]", "Call a SYNC method; JSON request (default {}); '-' reads it from stdin, '@file' from a file"))
    .option("--meta <key=value>", "metadata for the callee (repeatable)")
    .option("--scope <scope>", SCOPE_HELP)
    .option("--capacity-wait <ms>", CAPACITY_WAIT_HELP)
    .example("node-bin client call demo.Greeter/Hello '{\"name\":\"Ada\"}'")
    .action((method: string, json: string | undefined, flags: ClientFlags) => {
      // Flags and request are checked before connecting: a usage error is not an UNAVAILABLE.
      const options = callOptions(flags);
      const request = readRequest(json);
      action = (output) => withClient(flags, async (client) => {
        const reply = await client.callJSON(method, request, options);
        output.out(output.json ? JSON.stringify(reply) : JSON.stringify(reply, null, 2));
      });
    });
  common(cli.command("send <method> [json]", "Send to an ASYNC method; returns once a node accepted it"))
    .option("--meta <key=value>", "metadata for the callee (repeatable)")
    .option("--scope <scope>", SCOPE_HELP)
    .option("--capacity-wait <ms>", CAPACITY_WAIT_HELP)
    .action((method: string, json: string | undefined, flags: ClientFlags) => {
      const options = callOptions(flags);
      const request = readRequest(json);
      action = (output) => withClient(flags, async (client) => {
        await client.send(method, request, options);
        output.out(output.json ? JSON.stringify({ accepted: true }) : "accepted");
      });
    });
  common(cli.command("broadcast <method> [json]", "Broadcast to a BROADCAST method: every node serving it, on every host; fire-and-forget, no reply"))
    .option("--meta <key=value>", "metadata for the receivers (repeatable)")
    .example("node-bin client broadcast demo.Board/Post '{\"text\":\"hello, all\"}'")
    .action((method: string, json: string | undefined, flags: ClientFlags) => {
      const { meta, timeoutMs } = callOptions(flags);
      const request = readRequest(json);
      action = (output) => withClient(flags, async (client) => {
        await client.broadcast(method, request, { meta, ...(timeoutMs ? { timeoutMs } : {}) });
        output.out(output.json ? JSON.stringify({ published: true }) : "published");
      });
    });
  common(cli.command("stream <method> [json]", "Call a STREAM method; prints one JSON line per item as it arrives, and exits with the stream's final status"))
    .option("--window <n>", "items the producer may send ahead of those printed (default 16, at most 4096)")
    .option("--meta <key=value>", "metadata for the callee (repeatable)")
    .option("--scope <scope>", SCOPE_HELP)
    .option("--capacity-wait <ms>", CAPACITY_WAIT_HELP)
    .example("node-bin client stream demo.Ticker/Count '{\"count\":5}' | head -n 3")
    .action((method: string, json: string | undefined, flags: ClientFlags) => {
      const options = { ...callOptions(flags), ...windowOption(flags) };
      const request = readRequest(json);
      action = (output) => withClient(flags, async (client) => {
        const stream = await client.streamJSON(method, request, options);
        // A reader that went away (`| head -n 3`: EPIPE on stdout) cancels the stream, and the
        // producer's node serves its next message at once. The listener stays: a write after
        // the first EPIPE fails the same way.
        let readerGone = false;
        process.stdout.on("error", (err: NodeJS.ErrnoException) => {
          if (err.code !== "EPIPE") throw err;
          readerGone = true;
          void stream.return!();
        });
        for await (const item of stream) {
          if (readerGone) break;
          output.out(JSON.stringify(item));
        }
      });
    });
  common(cli.command("list", "List services, their methods, modes and request fields")).action((flags: ClientFlags) => {
    action = (output) => withClient(flags, async (client) => {
      const services = client.services();
      output.out(output.json ? JSON.stringify(services) : formatServices(services));
    });
  });
  common(cli.command("nodes", "List running nodes with host, network, component, endpoints and load, then the capacity tiers: this host, this network, remote networks"))
    .option("--tiers", "with --json: one object { nodes, hosts, tiers } instead of the array of nodes")
    .action((flags: ClientFlags) => {
      action = (output) => withClient(flags, async (client) => {
        const nodes = client.nodes();
        if (output.json) output.out(JSON.stringify(flags.tiers ? { nodes, hosts: client.hosts(), tiers: client.tiers() ?? null } : nodes));
        else output.out(`${formatNodes(nodes)}\n\n${formatTiers(client.tiers())}`);
      });
    });
  cli.option("-v, --version", "print the version").help();

  const json = argv.includes("--json");
  const output = roleOutput("client", json);
  try {
    // cac drops a bare "-": pass it on as "@-", which also reads stdin.
    const parsed = cli.parse(["node", "node-bin client", ...argv.map((a) => (a === "-" ? "@-" : a))], { run: false });
    checkFlags(cli, argv);
    if (parsed.options.help) return 0;
    if (parsed.options.version) {
      output.out(VERSION);
      return 0;
    }
    if (!cli.matchedCommand) {
      throw new UsageError(argv[0] && !argv[0].startsWith("-") ? `unknown client command ${JSON.stringify(argv[0])}; expected call, send, stream, broadcast, list or nodes` : "missing client command: call, send, stream, broadcast, list or nodes");
    }
    await cli.runMatchedCommand();
    await action!(output);
    return 0;
  } catch (err) {
    return reportError(output, err, "run `node-bin client --help` for usage");
  }
}

async function withClient(flags: ClientFlags, use: (client: Client) => Promise<void>): Promise<void> {
  const timeoutMs = parseMs(flags.timeout, "--timeout");
  const seeds = parseSeeds(flags.seed);
  if (seeds.length && flags.endpoint) throw new UsageError("give --seed or --endpoint, not both");
  const endpoint = flags.endpoint ?? seeds[0];
  // The client's one start-up step: its security provider (governor/plugins.ts).
  const { provider } = await startPlugins(flags, { role: "client", runtimeDir: runtimeDirPath(), log: consoleLogger("client") });
  const client = await Client.connect({
    ...(endpoint ? { endpoint } : {}),
    security: provider,
    ...(timeoutMs ? { timeoutMs, connectTimeoutMs: Math.min(timeoutMs, 5000) } : {}),
  });
  try {
    await use(client);
  } finally {
    await client.close();
  }
}

function callOptions(flags: ClientFlags) {
  const meta: Record<string, string> = {};
  for (const pair of flags.meta === undefined ? [] : [flags.meta].flat()) {
    const eq = String(pair).indexOf("=");
    if (eq <= 0) throw new UsageError(`--meta takes key=value, got ${JSON.stringify(pair)}`);
    meta[String(pair).slice(0, eq)] = String(pair).slice(eq + 1);
  }
  if (flags.scope !== undefined && !SCOPES.includes(flags.scope as Scope)) throw new UsageError(`--scope takes one of ${SCOPES.join(", ")}, got ${JSON.stringify(flags.scope)}`);
  const timeoutMs = parseMs(flags.timeout, "--timeout");
  const capacityWaitMs = flags.capacityWait === undefined ? undefined : parseCapacityWait(flags.capacityWait);
  return { meta, ...(flags.scope ? { scope: flags.scope as Scope } : {}), ...(timeoutMs ? { timeoutMs } : {}), ...(capacityWaitMs !== undefined ? { capacityWaitMs } : {}) };
}

/** --capacity-wait: a whole number of ms, 0 or more (0: ask for capacity at the first refusal). */
function parseCapacityWait(value: string | number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--capacity-wait takes a whole number of ms, 0 or more, got ${JSON.stringify(value)}`);
  return n;
}

/** --window as StreamOptions: a whole number of items from 1 to 4096. */
function windowOption(flags: ClientFlags): { window?: number } {
  if (flags.window === undefined) return {};
  const n = Number(flags.window);
  if (!Number.isInteger(n) || n < 1 || n > 4096) throw new UsageError(`--window takes a whole number of items from 1 to 4096, got ${JSON.stringify(flags.window)}`);
  return { window: n };
}

/** The request object from the JSON argument. Throws INVALID_ARGUMENT for invalid JSON or a non-object. */
function readRequest(arg: string | undefined): Record<string, unknown> {
  let text = arg ?? "{}";
  try {
    if (text === "@-") text = readFileSync(0, "utf8");
    else if (text.startsWith("@")) text = readFileSync(text.slice(1), "utf8");
  } catch (err) {
    throw new NodeBinError("INVALID_ARGUMENT", `cannot read request from ${text}: ${(err as Error).message}`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new NodeBinError("INVALID_ARGUMENT", `request is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new NodeBinError("INVALID_ARGUMENT", `request must be a JSON object, got ${Array.isArray(value) ? "an array" : JSON.stringify(value)}`);
  }
  return value as Record<string, unknown>;
}

function formatServices(services: ServiceInfo[]): string {
  if (services.length === 0) return "no services";
  const lines: string[] = [];
  for (const s of services) {
    lines.push(`${s.name}  (${s.nodes} node${s.nodes === 1 ? "" : "s"})`);
    const width = Math.max(...s.methods.map((m) => m.name.length));
    for (const m of s.methods) {
      const fields = m.requestFields.map((f) => `${f.name}: ${f.repeated ? `${f.type}[]` : f.type}`).join(", ");
      lines.push(`  ${m.name.padEnd(width)}  ${m.mode.padEnd(9)} ${m.requestType} ${fields ? `{ ${fields} }` : "{}"} -> ${m.responseType}`);
    }
  }
  return lines.join("\n");
}

function formatNodes(nodes: NodeEntry[]): string {
  if (nodes.length === 0) return "no nodes";
  return table([["NODE", "COMPONENT", "VERSION", "HOST", "NETWORK", "QUEUE", "ENDPOINT"], ...nodes.map((n) => [n.id, n.component, n.version, n.host, networkLabel(n.network), `${n.load.queued}/${n.load.capacity}`, n.endpoints.join(" ")])]);
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

/** The capacity tiers (membership/capacity.ts): slots are container processes; a host without a governor has none. */
export function formatTiers(tiers: Tiers | undefined): string {
  if (!tiers) return "capacity tiers: not known (the process asked is no host agent, or predates them)";
  const load = (c: Tiers["host"]["components"]) =>
    Object.entries(c)
      .map(([name, l]) => `${name} ${l.nodes} node${l.nodes === 1 ? "" : "s"}${l.capacity ? ` ${l.queued}/${l.capacity} queued` : ""}`)
      .join(", ") || "-";
  const rows = [
    ["TIER", "HOSTS", "SLOTS", "FREE", "COMPONENTS"],
    [`this host ${tiers.host.id}`, String(tiers.host.hosts), String(tiers.host.slots), String(tiers.host.free), load(tiers.host.components)],
    [`this network ${networkLabel(tiers.network.name)}`, String(tiers.network.hosts), String(tiers.network.slots), String(tiers.network.free), load(tiers.network.components)],
    ...tiers.remotes.map((r) => [`remote ${networkLabel(r.network)} via ${r.gateways.join(", ")}`, String(r.hosts), String(r.slots), String(r.free), r.components.join(", ") || "-"]),
  ];
  return table(rows) + (tiers.remotes.length === 0 ? "\nremote networks: none (no gateway in this network)" : "");
}
