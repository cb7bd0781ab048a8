/**
 * A real `node-bin governor` for integration tests: its own discovery port
 * and private runtime directory, awaited on its readiness line, its status
 * read in-process through its socket (as `node-bin governor status --json`
 * does), and every child it ever reported killed at teardown: children are
 * detached and outlive a SIGKILLed governor by design.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "../../src/client/client.ts";
import { GOVERNOR_STATUS } from "../../src/wire/control.ts";
import { EXAMPLES, privateRuntime, startNodeBin, testPort, type DevProcess } from "./processes.ts";

interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface ChildStatus {
  pid: number;
  /** Its container id (the governor names it at spawn). */
  container: string;
  node: string;
  phase: string;
  handled: number;
  queued: number;
  /** At the last pong: 0 while a handler runs. */
  idleMs: number | null;
  /** Pings it answered. */
  pongs: number;
  restarts: number;
  rssBytes: number;
  adopted: boolean;
  code: string;
  /** Input it dropped or refused, by reason (its Ping's `refused`). */
  refused: Record<string, number>;
}

export interface ComponentStatus {
  name: string;
  min: number;
  max: number;
  desired: number;
  running: number;
  restarts: number;
  rolling: boolean;
  hash: string;
  failed?: string;
  deployError?: string;
  /** Why it runs fewer nodes than it wants ("waiting for capacity: 3/3 in use ..."). */
  waiting?: string;
  children: ChildStatus[];
}

export interface GovernorStatus {
  pid: number;
  locked?: boolean;
  capacity: number;
  used: number;
  /** Registers refused because they named a child without being it, or leased too many nodes. */
  leasesRefused: number;
  lastLeaseRefused?: string;
  components: ComponentStatus[];
}

/** A test's host: a components directory (copies of examples/fixtures), a port, a runtime dir. */
export interface TestHost {
  env: Record<string, string>;
  port: number;
  seed: string;
  components: string;
  /** The directory holding `components` (governor.json and plugins/ go here). */
  root: string;
  /** Pids ever seen as children: killed at teardown. */
  pids: Set<number>;
}

export function testHost(t: Teardown, components: { from: string; name?: string }[]): TestHost {
  const root = mkdtempSync(join(tmpdir(), "nodebin-gov-"));
  const dir = join(root, "components");
  for (const c of components) cpSync(c.from, join(dir, c.name ?? c.from.split("/").pop()!), { recursive: true });
  const port = testPort();
  const host: TestHost = { env: { ...privateRuntime(t), NODEBIN_HOST: "gov-test" }, port, seed: `127.0.0.1:${port}`, components: dir, root, pids: new Set() };
  t.teardown(() => {
    for (const pid of host.pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    rmSync(root, { recursive: true, force: true });
  });
  return host;
}

export const example = (name: string) => ({ from: join(EXAMPLES, name) });

export interface GovernorProcess extends DevProcess {
  status(): Promise<GovernorStatus>;
  component(name: string): Promise<ComponentStatus | undefined>;
  /** Polls the status until `ok` returns a value (not undefined/false); fails after `ms`. */
  until<T>(ok: (s: GovernorStatus) => T | undefined | false, ms: number, what: string): Promise<T>;
}

/**
 * Starts a governor on the test host. By default it binds loopback only
 * (--listen 127.0.0.1); `defaultFlags` leaves that out, as a user would.
 */
export async function startGovernor(t: Teardown, host: TestHost, args: string[] = [], options: { defaultFlags?: boolean } = {}): Promise<GovernorProcess> {
  const listen = options.defaultFlags ? [] : ["--listen", "127.0.0.1"];
  const p = await startNodeBin(
    t,
    ["governor", "--components", host.components, ...listen, "--discovery-port", String(host.port), ...args],
    host.env,
    /governor ready: \S+ at (\S+)/,
  );
  const socket = `ipc://${join(host.env.NODEBIN_RUNTIME_DIR!, `governor-${host.port}.sock`)}`;
  const status = async (): Promise<GovernorStatus> => {
    const client = await Client.connect({ endpoint: socket, connectTimeoutMs: 3000 });
    try {
      const reply = await client.callControl(GOVERNOR_STATUS, {}, { timeoutMs: 3000 });
      const s = JSON.parse(reply.json) as GovernorStatus;
      for (const c of s.components) for (const k of c.children) host.pids.add(k.pid);
      return s;
    } finally {
      await client.close();
    }
  };
  const until = async <T>(ok: (s: GovernorStatus) => T | undefined | false, ms: number, what: string): Promise<T> => {
    const end = Date.now() + ms;
    let last: GovernorStatus | undefined;
    while (Date.now() < end) {
      last = await status();
      const v = ok(last);
      if (v !== undefined && v !== false) return v;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`governor status did not reach "${what}" within ${ms} ms; last: ${JSON.stringify(last?.components.map((c) => ({ name: c.name, running: c.running, failed: c.failed, children: c.children.map((k) => `${k.pid}:${k.phase} queued ${k.queued} handled ${k.handled}${Object.keys(k.refused ?? {}).length ? ` refused ${JSON.stringify(k.refused)}` : ""}`) })))}\nstderr:\n${p.stderr().slice(-4000)}`);
  };
  return { ...p, status, component: async (name) => (await status()).components.find((c) => c.name === name), until };
}

/** A client of the test host's network (through its discovery port). Closed at teardown. */
export async function hostClient(t: Teardown, host: TestHost): Promise<Client> {
  const client = await Client.connect({ endpoint: `tcp://${host.seed}`, host: host.env.NODEBIN_HOST! });
  t.teardown(() => client.close());
  return client;
}

/** A copy of the counter example, its code changed by `edit`, in a temporary source directory. */
export function counterSource(t: { teardown(fn: () => unknown): void }, edit: (code: string) => string): string {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-src-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const src = join(dir, "counter");
  cpSync(join(EXAMPLES, "counter"), src, { recursive: true });
  writeFileSync(join(src, "index.js"), edit(readFileSync(join(src, "index.js"), "utf8")));
  return src;
}
