/**
 * `node-bin dev`: every component in one process on the in-memory
 * pseudo-network, plus a local ZeroMQ endpoint that `node-bin client` finds by
 * itself. Components that fail to load are reported; the others serve.
 */
import { cac } from "cac";
import { loadComponents } from "../component/loader.ts";
import { Container } from "../container/container.ts";
import { consoleLogger } from "../container/log.ts";
import { claimIpc, devEndpoint, ensureRuntimeDir, ipcOwner, releaseIpc } from "../transport/runtime-dir.ts";
import { ZmqListener } from "../transport/zmq.ts";
import { NodeBinError } from "../wire/errors.ts";
import { resolveComponentsDir } from "./components-dir.ts";
import { VERSION } from "./version.ts";
import { reportError, stdio, UsageError } from "./output.ts";

export async function runDev(argv: string[]): Promise<number> {
  const cli = cac("node-bin dev");
  cli
    .usage("[options]\n\n  Runs every component of the components directory in this one process and serves them\n  at a local endpoint (default: the well-known one `node-bin client` looks for).")
    .option("--components <dir>", "components directory (default: components/ beside node-bin, or ./components)")
    .option("--endpoint <address>", "where to listen, e.g. tcp://127.0.0.1:7399 (default: ipc socket in the runtime directory)")
    .option("--instances <n>", "nodes per component", { default: 1 })
    .option("-v, --version", "print the version")
    .help();
  const output = stdio(false);
  let parsed;
  try {
    parsed = cli.parse(["node", "node-bin dev", ...argv], { run: false });
  } catch (err) {
    return reportError(output, err, "run `node-bin dev --help` for usage");
  }
  if (parsed.options.help) return 0;
  if (parsed.options.version) {
    output.out(VERSION);
    return 0;
  }
  const options = parsed.options as { components?: string; endpoint?: string; instances: string | number };
  try {
    const instances = Number(options.instances);
    if (!Number.isInteger(instances) || instances < 1) throw new UsageError(`--instances takes a whole number >= 1, got ${JSON.stringify(options.instances)}`);
    return await serve(resolveComponentsDir(options.components), options.endpoint, instances);
  } catch (err) {
    return reportError(output, err, "run `node-bin dev --help` for usage");
  }
}

async function serve(componentsDir: string, endpointFlag: string | undefined, instances: number): Promise<number> {
  const log = consoleLogger("dev");
  const wellKnown = endpointFlag === undefined;
  const endpoint = endpointFlag ?? devEndpoint();
  if (wellKnown) ensureRuntimeDir();
  const other = ipcOwner(endpoint);
  if (other !== undefined) {
    throw new NodeBinError("ALREADY_EXISTS", `process ${other} already serves at ${endpoint}; stop it, or give this one another --endpoint`, { details: { pid: String(other) } });
  }
  const { components, errors } = await loadComponents(componentsDir);
  for (const e of errors) log.error(`skipped: ${e.message}`, { code: e.code });
  if (components.length === 0) {
    throw new NodeBinError("FAILED_PRECONDITION", `no component in ${componentsDir} could be loaded${errors.length ? ` (${errors.length} failed, see above)` : ""}`);
  }

  const container = new Container({ id: `dev-${process.pid}` });
  let dropped = 0;
  const listener = await ZmqListener.bind([endpoint], (env) => container.direct.dispatch(env), {
    onDrop: (reason) => {
      dropped++;
      log.debug(`dropped a frame: ${reason}`, { dropped });
    },
  });
  container.endpoints = listener.endpoints;
  container.addTransport(listener);
  for (const e of listener.endpoints) claimIpc(e);

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
    for (const component of components) {
      const nodes = await container.addComponent(component, instances);
      const services = [...new Set([...component.schema.methods.values()].map((m) => m.service))];
      log.info(`${component.name} ${component.manifest.version}: ${services.join(", ")} (${nodes.length} node${nodes.length > 1 ? "s" : ""})`);
    }
    const methods = container.table.routes().size;
    // The readiness line tests and scripts wait for: keep its shape.
    process.stdout.write(`node-bin dev ready at ${listener.endpoints.join(" ")} (${components.length} components, ${methods} methods)\n`);
    await stopped;
  } finally {
    await container.close();
    // libzmq leaves the socket file behind; a client would then wait for an answer that never comes.
    for (const e of listener.endpoints) releaseIpc(e);
  }
  return 0;
}
