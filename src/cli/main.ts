/**
 * The node-bin command line: one entry point whose first word picks the role
 * (dev, container, governor, deploy, client).
 */
import { closest } from "../wire/message.ts";
import { runClient } from "./client.ts";
import { runContainer } from "./container.ts";
import { runDeploy } from "./deploy.ts";
import { runDev } from "./dev.ts";
import { runGateway } from "./gateway.ts";
import { runGovernor } from "./governor.ts";
import { runKeygen } from "./keygen.ts";
import { applyLogFormat } from "./log-options.ts";
import { EXIT_USAGE, reportError, stdio } from "./output.ts";
import { VERSION } from "./version.ts";

export { VERSION };

const OVERVIEW = `node-bin ${VERSION}: protobuf components, in one process or across hosts

Usage: node-bin <command> [options]

Commands:
  governor             run this host's governor: keeps the components of the
                       components directory running, one node per process;
                       grows, shrinks, heals and redeploys them (--seed ip of
                       another host; status | set | stop manage it)
  keygen [FILE]        make a cluster key: CurveZMQ on every tcp socket, only
                       its holders join or call (--add, --retire: rotation)
  deploy SRC_DIR       copy a component into the components directory safely;
                       a running governor rolls it out with state hand-over
  dev                  run every component (or --only some) in one process, for
                       development and debugging; --seed (or a governor on this
                       host) joins it to the live network
  container --component NAME
                       run one node of a component in this process, joined to
                       the network (--seed ip[:port] of another host)
  gateway --network A --remote-network B ...
                       join two networks: each sees the other's components
                       and calls them through the gateway (gossip stays apart)
  client call M [JSON] call a SYNC method, print the reply as JSON
  client send M [JSON] send to an ASYNC method
  client list          list services, methods, modes and request fields
  client nodes         list running nodes, then the capacity tiers

Every command takes --help. Exit status: 0 on success, the gRPC number of the
error code on failure (e.g. 5 NOT_FOUND, 3 INVALID_ARGUMENT, 4 DEADLINE_EXCEEDED),
64 on a usage error.

Security: with a cluster key (--cluster-key FILE, $NODEBIN_CLUSTER_KEY_FILE, or
cluster.key beside node-bin) every tcp socket uses CurveZMQ and binds every
interface; without one, tcp binds 127.0.0.1 only (--insecure to do otherwise).

Environment:
  NODEBIN_LOG           debug | info | warn | error | silent (default info)
  NODEBIN_LOG_FORMAT    text | json: one JSON object per line (default text;
                        --log-format on every command sets it)
  NODEBIN_CLUSTER_KEY_FILE  the cluster key file (see keygen)
  NODEBIN_RUNTIME_DIR   private directory of ipc sockets (default $XDG_RUNTIME_DIR/node-bin)
  NODEBIN_CACHE_DIR     where the single executable unpacks its native addon
                        (default $XDG_CACHE_HOME/node-bin or ~/.cache/node-bin)`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = { governor: runGovernor, keygen: runKeygen, deploy: runDeploy, dev: runDev, container: runContainer, gateway: runGateway, client: runClient };

/** Runs the command line; resolves with the exit status. Never throws. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "help" || command === "--help" || command === "-h") {
    process.stdout.write(`${OVERVIEW}\n`);
    return 0;
  }
  if (command === "--version" || command === "-v" || command === "version") {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const run = COMMANDS[command];
  if (!run) {
    const near = closest(command, Object.keys(COMMANDS));
    process.stderr.write(`error: unknown command ${JSON.stringify(command)}${near ? ` (did you mean ${near}?)` : ""}\n\n${OVERVIEW}\n`);
    return EXIT_USAGE;
  }
  try {
    // Before the role runs: every logger it makes, and every process it starts, reads the format.
    applyLogFormat(rest);
  } catch (err) {
    return reportError(stdio(false), err, `run \`node-bin ${command} --help\` for usage`);
  }
  return run(rest);
}
