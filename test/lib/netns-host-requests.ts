/**
 * Hosts made on request of a script: a provider command (run by a governor
 * inside some host, as `--provider-command`) asks the test's process for a new
 * namespace host, and a release command asks for one to be removed. The
 * scripts never touch namespaces themselves: they write a request file into a
 * private directory and wait (bounded) for the answer file; the test's process
 * makes or removes the host through its Topology, so a host made this way is
 * in the topology's cleanup (teardown, exit hook, stale cleanup) like any other.
 *
 * Provide: the script passes NODEBIN_SEEDS, NODEBIN_NETWORK and NODEBIN_REASON on;
 * the test adds host `<namePrefix><n>` with a leg on `network`, calls `start`
 * (which runs what the new host runs, e.g. a governor seeded from NODEBIN_SEEDS,
 * and resolves with the host's id), and the script prints that id as its last
 * stdout line. Release: the script passes NODEBIN_HOST on; the test stops that
 * host's processes and deletes it. A request that fails answers an error: the
 * script prints it on stderr and exits 1 (2 if no answer came within its bound).
 */
import { mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Topology, TopologyHost } from "./netns-topology.ts";

interface Teardown {
  teardown(fn: () => unknown): void;
}

/** One request as the test's process saw it. */
export interface HostRequestRecord {
  kind: "provide" | "release";
  /** When the request file was seen (Date.now()). */
  at: number;
  /** When it was answered. */
  answeredAt?: number;
  /** The variables the script passed on (NODEBIN_SEEDS, NODEBIN_NETWORK, NODEBIN_REASON; or NODEBIN_HOST). */
  env: Record<string, string>;
  /** The namespace host made or removed. */
  host?: string;
  /** The id printed (provide) or named (release). */
  id?: string;
  error?: string;
}

export interface HostRequests {
  /** The private directory requests and answers pass through. */
  readonly dir: string;
  /** A command line for `--provider-command`. */
  readonly provideCommand: string;
  /** A command line for `--provider-release-command`. */
  readonly releaseCommand: string;
  /** Every request seen so far, oldest first. */
  readonly requests: HostRequestRecord[];
  /** The namespace host name a printed id belongs to (while it exists). */
  hostOf(id: string): string | undefined;
}

/** The script both commands run: `node <script> provide|release <dir> <waitMs>`. */
const SCRIPT = `
const { existsSync, readFileSync, renameSync, writeFileSync } = require("node:fs");
const { join } = require("node:path");
const [kind, dir, waitMs] = process.argv.slice(2);
const names = kind === "provide" ? ["NODEBIN_SEEDS", "NODEBIN_NETWORK", "NODEBIN_REASON"] : ["NODEBIN_HOST"];
const env = Object.fromEntries(names.filter((n) => process.env[n] !== undefined).map((n) => [n, process.env[n]]));
const id = process.pid + "-" + Date.now();
writeFileSync(join(dir, id + ".tmp"), JSON.stringify({ kind, env }));
renameSync(join(dir, id + ".tmp"), join(dir, id + ".request"));
const end = Date.now() + Number(waitMs);
const poll = () => {
  const file = join(dir, id + ".answer");
  if (existsSync(file)) {
    const answer = JSON.parse(readFileSync(file, "utf8"));
    if (answer.error) { console.error(answer.error); process.exit(1); }
    if (answer.id) console.log(answer.id);
    process.exit(0);
  }
  if (Date.now() > end) { console.error("no answer from the test within " + waitMs + " ms"); process.exit(2); }
  setTimeout(poll, 25);
};
poll();
`;

/**
 * Serves host requests for `topology` until teardown. `start` runs the new
 * host's processes (through `host.spawn`, so they are stopped with it) and
 * resolves with the id the provider prints; `waitMs` bounds how long a script
 * waits for its answer (default 60 s).
 */
export function serveHostRequests(
  t: Teardown,
  topology: Topology,
  options: { network: string; namePrefix?: string; waitMs?: number; start(host: TopologyHost, env: Record<string, string>): Promise<string> },
): HostRequests {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-hostreq-"));
  const script = join(dir, "host-request.cjs");
  writeFileSync(script, SCRIPT);
  const requests: HostRequestRecord[] = [];
  const ids = new Map<string, string>();
  const seen = new Set<string>();
  let made = 0;
  let closed = false;

  const answer = (file: string, body: { id?: string; error?: string }) => {
    if (closed) return;
    writeFileSync(join(dir, `${file}.tmp-answer`), JSON.stringify(body));
    renameSync(join(dir, `${file}.tmp-answer`), join(dir, `${file}.answer`));
  };

  const serve = async (file: string, record: HostRequestRecord) => {
    try {
      if (record.kind === "provide") {
        const name = `${options.namePrefix ?? "p"}${++made}`;
        record.host = name;
        const host = await topology.addHost(name, options.network);
        const id = await options.start(host, record.env);
        record.id = id;
        ids.set(id, name);
        answer(file, { id });
      } else {
        const id = record.env.NODEBIN_HOST ?? "";
        record.id = id;
        const name = ids.get(id);
        if (!name) throw new Error(`no host was provided with id ${JSON.stringify(id)}`);
        record.host = name;
        ids.delete(id);
        await topology.removeHost(name);
        answer(file, {});
      }
    } catch (error) {
      record.error = (error as Error).message;
      answer(file, { error: record.error });
    }
    record.answeredAt = Date.now();
  };

  const timer = setInterval(() => {
    let files: string[];
    try {
      files = readdirSync(dir);
    } catch {
      return;
    }
    for (const f of files) {
      if (!f.endsWith(".request")) continue;
      const base = f.slice(0, -".request".length);
      if (seen.has(base)) continue;
      seen.add(base);
      let body: { kind?: unknown; env?: unknown };
      try {
        body = JSON.parse(readFileSync(join(dir, f), "utf8")) as typeof body;
      } catch {
        body = {};
      }
      const kind = body.kind === "provide" || body.kind === "release" ? body.kind : undefined;
      const env = typeof body.env === "object" && body.env !== null ? Object.fromEntries(Object.entries(body.env).filter(([, v]) => typeof v === "string")) : {};
      const record: HostRequestRecord = { kind: kind ?? "provide", at: Date.now(), env: env as Record<string, string> };
      requests.push(record);
      if (!kind) {
        record.error = "unreadable request";
        answer(base, { error: record.error });
        continue;
      }
      void serve(base, record);
    }
  }, 50);
  t.teardown(() => {
    closed = true;
    clearInterval(timer);
    rmSync(dir, { recursive: true, force: true });
  });

  const waitMs = options.waitMs ?? 60_000;
  return {
    dir,
    provideCommand: `${process.execPath} ${script} provide ${dir} ${waitMs}`,
    releaseCommand: `${process.execPath} ${script} release ${dir} ${waitMs}`,
    requests,
    hostOf: (id) => ids.get(id),
  };
}
