/**
 * The processes of the multi-network tests (test/integration/networks-*.test.ts)
 * on a netns Topology: each host a private runtime directory and components
 * directory, the cluster key in its environment, nothing else unless a test is
 * about a flag; governors, a gateway and one-shot clients run inside the hosts.
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { waitForLine } from "./netns.ts";
import type { TopologyHost } from "./netns-topology.ts";
import { BIN, ROOT } from "./processes.ts";

interface Teardown {
  teardown(fn: () => unknown): void;
}

export const WHERE = join(ROOT, "test", "fixtures", "networks", "where");
export const WORK = "nets.Where/Work";

/** A directory removed at teardown. */
export function privateDir(t: Teardown, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `nodebin-${name}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface HostFiles {
  env: NodeJS.ProcessEnv;
  /** Its components directory (empty unless `components` named some). */
  components: string;
}

/** A host's own runtime directory (the cluster key in its environment) and components directory with copies of `components`. */
export function hostFiles(t: Teardown, host: { name: string }, key: string, components: string[] = []): HostFiles {
  const root = privateDir(t, `${host.name}-root`);
  const dir = join(root, "components");
  mkdirSync(dir);
  for (const c of components) cpSync(c, join(dir, c.split("/").pop()!), { recursive: true });
  return { env: { NODEBIN_RUNTIME_DIR: privateDir(t, `${host.name}-run`), NODEBIN_LOG: "warn", NODEBIN_CLUSTER_KEY_FILE: key }, components: dir };
}

/** Starts `node-bin governor` in `host`; resolves with its host id (from its readiness line) once ready. */
export async function governor(host: TopologyHost, files: HostFiles, args: string[] = []): Promise<{ child: ChildProcess; id: string }> {
  const child = host.spawn(process.execPath, [BIN, "governor", "--components", files.components, ...args], { env: files.env });
  const [, id] = await waitForLine(child, /governor ready: (\S+) at /, 60_000);
  return { child, id: id! };
}

/** `node-bin client ARGS --seed <host>` run in `host` (its own runtime directory), bounded. */
export function cli(host: TopologyHost, files: HostFiles, args: string[], timeoutMs = 30_000) {
  return host.exec(process.execPath, [BIN, "client", ...args, "--seed", host.address], { env: files.env, timeoutMs });
}

export interface NodeRow {
  id: string;
  component: string;
  host: string;
  network?: string;
}

/** What `node-bin client nodes --json` prints in `host`; [] while it fails. */
export async function nodes(host: TopologyHost, files: HostFiles): Promise<NodeRow[]> {
  const r = await cli(host, files, ["nodes", "--json", "--timeout", "3000"], 20_000);
  if (r.code !== 0) return [];
  const parsed = JSON.parse(r.stdout) as NodeRow[] | { nodes?: NodeRow[] };
  return Array.isArray(parsed) ? parsed : (parsed.nodes ?? []);
}

/** The load script (test/lib/where-load.ts) started in `host`. */
export function whereLoad(host: TopologyHost, files: HostFiles, callers: number, workMs: number, capacityWaitMs: number, timeoutMs: number): ChildProcess {
  return host.spawn(process.execPath, ["--import", join(ROOT, "bin", "register.mjs"), join(ROOT, "test", "lib", "where-load.ts"), `tcp://${host.address}:7400`, String(callers), String(workMs), String(capacityWaitMs), String(timeoutMs)], { env: files.env });
}
