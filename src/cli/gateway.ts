/**
 * `node-bin gateway --network A --seed A_SEED --listen A_ADDR --remote-network B
 * --remote-seed B_SEED --remote-listen B_ADDR`: joins two networks
 * (src/gateway/gateway.ts). Each leg is a host of its network with a
 * discovery port of its own on its listen address; in each network the
 * gateway advertises the other's components and relays calls, streams and
 * messages to them. A governor can run it as a child (governor.json
 * `gateways`).
 */
import { resolve } from "node:path";
import { cac } from "cac";
import { consoleLogger } from "../container/log.ts";
import { Gateway, type GatewayLeg } from "../gateway/gateway.ts";
import { networkLabel } from "../membership/network-name.ts";
import { ensureRuntimeDir } from "../transport/runtime-dir.ts";
import { ADVERTISE_HELP, INSECURE_HELP, PLUGINS_HELP, advertiseFlag, bindAddress, hostId, intFlag, networkFlag, parseSeeds, startPlugins } from "./net-options.ts";
import { LOG_FORMAT_HELP, roleOutput } from "./log-options.ts";
import { checkFlags, reportError, UsageError } from "./output.ts";
import { VERSION } from "./version.ts";

export async function runGateway(argv: string[]): Promise<number> {
  const cli = cac("node-bin gateway");
  cli
    .usage(
      "--network A --seed A_SEED --listen A_ADDR --remote-network B --remote-seed B_SEED --remote-listen B_ADDR [options]\n\n" +
        "  Joins two networks: in each, advertises the other's components (with a summary of its\n" +
        "  capacity) and relays calls, streams and messages to them. Gossip stays in its network.",
    )
    .option("--network <name>", "the first network's name (default: none, the default network)")
    .option("--seed <ip[:port]>", "discovery endpoint of a host of the first network (comma-separated or repeated; default port 7400)")
    .option("--listen <ip>", "address the first leg's tcp sockets bind (its discovery port and the proxies of the second network's components); default as for other roles: every interface with a cluster key, else 127.0.0.1")
    .option("--advertise <ip>", `the first leg: ${ADVERTISE_HELP}`)
    .option("--discovery-port <port>", "the first leg's discovery port (default 7400; give another when a governor of this host holds it on the same address)")
    .option("--remote-network <name>", "the second network's name (required; not the first's)")
    .option("--remote-seed <ip[:port]>", "discovery endpoint of a host of the second network")
    .option("--remote-listen <ip>", "address the second leg's tcp sockets bind")
    .option("--remote-advertise <ip>", "the second leg: address hosts of the second network reach it at")
    .option("--remote-discovery-port <port>", "the second leg's discovery port (default 7400)")
    .option("--host <name>", "this gateway's name: its legs are hosts <name>~<network> (default: $NODEBIN_HOST, else this host's id)")
    .option("--cluster-key <file>", "cluster key file: CurveZMQ on every tcp socket, both legs unless --remote-cluster-key (default: $NODEBIN_CLUSTER_KEY_FILE, else cluster.key beside node-bin)")
    .option("--remote-cluster-key <file>", "the second network's own cluster key, when the two networks are under different keys (needs --cluster-key: the gateway then bridges the two, and a member of either may call the other's components through it)")
    .option("--insecure", INSECURE_HELP)
    .option("--plugins <dir>", PLUGINS_HELP)
    .option("--runtime-dir <dir>", "private runtime directory; each leg takes a subdirectory of it (default: $NODEBIN_RUNTIME_DIR, else $XDG_RUNTIME_DIR/node-bin)")
    .option("--max-calls <n>", "relayed SYNC and ASYNC calls in flight per leg, past which calls are refused RESOURCE_EXHAUSTED (default 4096)")
    .option("--max-streams <n>", "relayed streams open per leg (default 256)")
    .option("--log-format <format>", LOG_FORMAT_HELP)
    .option("-v, --version", "print the version")
    .help();
  const output = roleOutput("gateway");
  let parsed;
  try {
    parsed = cli.parse(["node", "node-bin gateway", ...argv], { run: false });
    checkFlags(cli, argv);
  } catch (err) {
    return reportError(output, err, "run `node-bin gateway --help` for usage");
  }
  if (parsed.options.help) return 0;
  if (parsed.options.version) {
    output.out(VERSION);
    return 0;
  }
  const o = parsed.options as Record<string, unknown>;
  const log = consoleLogger("gateway");
  try {
    const network = networkFlag(o.network);
    if (o.remoteNetwork === undefined) throw new UsageError("--remote-network NAME is required: the network the gateway joins to --network's");
    const remoteNetwork = networkFlag(o.remoteNetwork, "--remote-network");
    if (network === remoteNetwork) throw new UsageError(`--network and --remote-network both name ${networkLabel(network)}: a gateway joins two networks`);
    const seeds = parseSeeds(o.seed);
    const remoteSeeds = parseSeeds(o.remoteSeed);
    const discoveryPort = intFlag(o.discoveryPort, "--discovery-port", 1, 65535);
    const remoteDiscoveryPort = intFlag(o.remoteDiscoveryPort, "--remote-discovery-port", 1, 65535);
    const calls = intFlag(o.maxCalls, "--max-calls", 1, 1_000_000);
    const streams = intFlag(o.maxStreams, "--max-streams", 1, 100_000);
    const advertise = advertiseFlag(o.advertise);
    const remoteAdvertise = flagAs("--remote-advertise", () => advertiseFlag(o.remoteAdvertise));
    const runtimeDir = ensureRuntimeDir(typeof o.runtimeDir === "string" && o.runtimeDir ? { ...process.env, NODEBIN_RUNTIME_DIR: o.runtimeDir } : process.env);
    const name = hostId(o.host, process.env.NODEBIN_HOST ? process.env : { ...process.env, NODEBIN_RUNTIME_DIR: runtimeDir });
    const plugins = await startPlugins(o, { role: "gateway", runtimeDir, log });
    const security = plugins.provider;
    const keyed = security.wire !== undefined;
    if (o.remoteClusterKey !== undefined && (typeof o.remoteClusterKey !== "string" || !o.remoteClusterKey)) throw new UsageError("--remote-cluster-key takes the file of the second network's cluster key");
    if (o.remoteClusterKey !== undefined && !keyed) {
      throw new UsageError("--remote-cluster-key needs a cluster key for the first leg too (--cluster-key): a leg without one would open the second network's components to anyone who reaches the first leg");
    }
    // Networks under different keys: the second leg's own provider (the same security plugin, another key file).
    const remoteSecurity = typeof o.remoteClusterKey === "string" ? await plugins.host.another("security", { ...plugins.context, clusterKeyFile: resolve(o.remoteClusterKey) }) : undefined;
    const insecure = o.insecure === true;
    const bind = bindAddress(o.listen, keyed, insecure);
    const remoteBind = flagAs("--remote-listen", () => bindAddress(o.remoteListen, keyed, insecure));
    if (!keyed) log.info(`no cluster key: plain tcp on ${bind} and ${remoteBind}`);
    else if (remoteSecurity) log.info(`tcp secured with ${security.describe()} on ${networkLabel(network)}'s leg and ${remoteSecurity.describe()} on ${networkLabel(remoteNetwork)}'s: the gateway bridges the two keys`);
    else log.info(`tcp secured with ${security.describe()} (both legs)`);
    const legs: [GatewayLeg, GatewayLeg] = [
      { network, seeds, bind, ...(advertise ? { advertise } : {}), ...(discoveryPort ? { discoveryPort } : {}) },
      { network: remoteNetwork, seeds: remoteSeeds, bind: remoteBind, ...(remoteAdvertise ? { advertise: remoteAdvertise } : {}), ...(remoteDiscoveryPort ? { discoveryPort: remoteDiscoveryPort } : {}), ...(remoteSecurity ? { security: remoteSecurity } : {}) },
    ];
    const gateway = await Gateway.start({
      name,
      legs,
      runtimeDir,
      security,
      logger: (source) => consoleLogger(source),
      ...(calls || streams ? { limits: { ...(calls ? { calls } : {}), ...(streams ? { streams } : {}) } } : {}),
    });
    const stopped = new Promise<string>((resolve) => {
      process.once("SIGINT", () => resolve("SIGINT"));
      process.once("SIGTERM", () => resolve("SIGTERM"));
    });
    const [sa, sb] = gateway.describe();
    // The readiness line tests and scripts wait for: keep its shape.
    output.out(`node-bin gateway ready: ${networkLabel(sa.network)} <-> ${networkLabel(sb.network)} (${networkLabel(sa.network)}: ${sa.host} at ${sa.discovery.filter((e) => e.startsWith("tcp://")).join(" ")}; ${networkLabel(sb.network)}: ${sb.host} at ${sb.discovery.filter((e) => e.startsWith("tcp://")).join(" ")})`);
    const signal = await stopped;
    log.info(`${signal}: leaving both networks`);
    await gateway.close();
    return 0;
  } catch (err) {
    return reportError(output, err, "run `node-bin gateway --help` for usage");
  }
}

/** Runs a flag check written for a leg's flag (--listen, --advertise) for the other leg's, naming that one in the error. */
function flagAs<T>(flag: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof UsageError) throw new UsageError(err.message.replace(/--(listen|advertise)\b/g, flag));
    throw err;
  }
}
