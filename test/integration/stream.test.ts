// STREAM calls between processes (issue 13): `node-bin client stream` prints
// items as they are produced, `| head -n 3` ends the producer and its node
// serves the next call at once, a consumer that dies is noticed at once, a
// producer killed mid-stream gives UNAVAILABLE, the deadline covers the
// stream. Each case runs against a container over ipc, a container over tcp
// with a cluster key (CurveZMQ), `node-bin dev`, and under Deno: a Deno
// container with Node consumers, and a Node container with Deno consumers.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import t, { type Test } from "tap";
import { DENO, denoArgs, denoEnv, denoUnusable, startDeno } from "../lib/deno.ts";
import { BIN, clusterKeyFile, privateRuntime, ROOT, runCli, runCommand, startContainer, startDev, startProcess, testPort, type DevProcess } from "../lib/processes.ts";

const COMPONENTS = join(ROOT, "test", "fixtures", "components-stream");
const COUNT = "streamer.Streamer/Count";

interface Setup {
  name: string;
  /** The producer's process. */
  producer: DevProcess;
  /** The environment of consumers (CLI, helper). */
  env: Record<string, string>;
  /** Flags every `client` command takes to reach the producer. */
  reach: string[];
  /** How consumers run: the command and the arguments before node-bin's (or the helper's) own, and their environment. */
  runtime: Runtime;
}

interface Runtime {
  /** `node-bin ...` as this runtime runs it. */
  bin: string[];
  /** test/lib/stream-consumer.ts as this runtime runs it. */
  helper: string[];
  env(env: Record<string, string>): NodeJS.ProcessEnv;
}

const node: Runtime = { bin: [process.execPath, BIN], helper: [process.execPath, "--import", join(ROOT, "bin", "register.mjs"), join(ROOT, "test", "lib", "stream-consumer.ts")], env: (env) => shellEnv(env) };
const deno: Runtime = { bin: [DENO, ...denoArgs([])], helper: [DENO, "run", "-A", join(ROOT, "test", "lib", "stream-consumer.ts")], env: (env) => denoEnv(env) };
const denoSkip = denoUnusable();

/** The environment a user's shell would give a child (without tap's NODE_OPTIONS). */
function shellEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const { NODE_OPTIONS: _, ...rest } = process.env;
  return { ...rest, ...env };
}

const setups: Record<string, (t: Test) => Promise<Setup>> = {
  "container over ipc": async (t) => {
    const port = testPort();
    const env = { ...privateRuntime(t), NODEBIN_HOST: "stream-host" };
    const producer = await startContainer(t, ["--component", "streamer", "--components", COMPONENTS, "--listen", "127.0.0.1", "--discovery-port", String(port)], env);
    return { name: "container over ipc", producer, env, reach: ["--seed", `127.0.0.1:${port}`], runtime: node };
  },
  "container over tcp with a cluster key": async (t) => {
    const port = testPort();
    const key = clusterKeyFile(t);
    const producer = await startContainer(t, ["--component", "streamer", "--components", COMPONENTS, "--listen", "127.0.0.1", "--discovery-port", String(port)], { ...privateRuntime(t), NODEBIN_HOST: "stream-host", NODEBIN_CLUSTER_KEY_FILE: key });
    // Another runtime directory and host id: the consumer reaches the node over tcp, CurveZMQ.
    return { name: "tcp", producer, env: { ...privateRuntime(t), NODEBIN_HOST: "consumer-host", NODEBIN_CLUSTER_KEY_FILE: key }, reach: ["--seed", `127.0.0.1:${port}`], runtime: node };
  },
  dev: async (t) => {
    const env = privateRuntime(t);
    const producer = await startDev(t, ["--components", COMPONENTS], env);
    return { name: "dev", producer, env, reach: [], runtime: node };
  },
  "a Deno container, Node consumers": async (t) => {
    const port = testPort();
    const env = { ...privateRuntime(t), NODEBIN_HOST: "stream-host" };
    const producer = await startDeno(t, ["container", "--component", "streamer", "--components", COMPONENTS, "--listen", "127.0.0.1", "--discovery-port", String(port)], env, /container ready: \S+ at (\S+)/);
    return { name: "deno producer", producer, env, reach: ["--seed", `127.0.0.1:${port}`], runtime: node };
  },
  "a Node container, Deno consumers": async (t) => {
    const port = testPort();
    const env = { ...privateRuntime(t), NODEBIN_HOST: "stream-host" };
    const producer = await startContainer(t, ["--component", "streamer", "--components", COMPONENTS, "--listen", "127.0.0.1", "--discovery-port", String(port)], env);
    return { name: "deno consumers", producer, env, reach: ["--seed", `127.0.0.1:${port}`], runtime: deno };
  },
};

/** Resolves with everything `child` wrote to stdout once it matches `pattern`; rejects after `ms`. */
function stdoutMatch(child: ChildProcess, pattern: RegExp, ms: number, already = ""): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = already;
    if (pattern.test(out)) return resolve(out);
    const timer = setTimeout(() => reject(new Error(`stdout did not match ${pattern} within ${ms} ms: ${out}`)), ms);
    const on = (d: Buffer) => {
      out += d;
      if (!pattern.test(out)) return;
      clearTimeout(timer);
      child.stdout!.off("data", on);
      resolve(out);
    };
    child.stdout!.on("data", on);
  });
}

/**
 * The producer node's Stats, through the CLI (a SYNC call: it waits behind any stream holding the
 * node). `timeoutMs` is the call's deadline: past it the CLI exits 4 and this throws (the process
 * itself is given 20 s more, for its start-up on a loaded machine).
 */
async function stats(s: Setup, timeoutMs = 10_000): Promise<{ computed: number; started: number; finalized: number; ms: number }> {
  const started = Date.now();
  const r = await runCli(["client", ...s.reach, "call", "streamer.Streamer/Stats", "--json", "--timeout", String(timeoutMs)], s.env, { timeoutMs: timeoutMs + 20_000 });
  if (r.code !== 0) throw new Error(`Stats failed (${r.code}): ${r.stderr}`);
  const reply = JSON.parse(r.stdout) as { computed?: number; started?: number; finalized?: number };
  return { computed: reply.computed ?? 0, started: reply.started ?? 0, finalized: reply.finalized ?? 0, ms: Date.now() - started };
}

/** A consumer process (test/lib/stream-consumer.ts) streaming `request`, started once it printed `ready`. */
function consumer(t: Test, s: Setup, request: object, args: string[], ready: RegExp): Promise<DevProcess> {
  const endpoint = s.reach.length ? ["--endpoint", `tcp://${s.reach[1]}`] : [];
  const [command, ...pre] = s.runtime.helper;
  return startProcess(t, command!, [...pre, COUNT, JSON.stringify(request), ...endpoint, ...args], s.env, s.runtime.env(s.env), { ready, label: "stream consumer", readyTimeoutMs: 60_000, cwd: ROOT });
}

for (const [name, setup] of Object.entries(setups)) {
  t.test(`stream (${name})`, { timeout: 180_000, skip: name.includes("Deno") ? denoSkip : false }, async (t) => {
    const s = await setup(t);
    const [bin, ...binArgs] = s.runtime.bin;
    const dir = mkdtempSync(join(tmpdir(), "nodebin-stream-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));

    await t.test("node-bin client stream prints each item as it is produced, then exits 0", async (t) => {
      // The generator waits, before its second item, for a file the test writes only once it saw the first line.
      const signal = join(dir, "go");
      const cli = await startProcess(t, bin!, [...binArgs, "client", ...s.reach, "stream", COUNT, JSON.stringify({ count: 3, waitFile: signal, payload: "x" })], s.env, s.runtime.env(s.env), { ready: /^\{.*\}$/m, label: "client stream", readyTimeoutMs: 60_000, cwd: ROOT });
      t.match(cli.stdout(), /^\{"n":1,"payload":"x","nodeId":"streamer-\w+"\}\n$/, "the first item, alone: the generator is still waiting");
      t.notOk(existsSync(signal));
      writeFileSync(signal, "");
      const code = await cli.stop(null, 20_000);
      t.equal(code, 0, cli.stderr());
      t.same(
        cli
          .stdout()
          .trim()
          .split("\n")
          .map((l) => (JSON.parse(l) as { n: number }).n),
        [1, 2, 3],
        "one JSON line per item, in order",
      );
    });

    await t.test("`node-bin client stream ... | head -n 3` ends the producer, and the node serves the next call at once", async (t) => {
      const before = await stats(s);
      const quoted = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
      const pipeline = [...s.runtime.bin, "client", ...s.reach, "stream", COUNT, JSON.stringify({ count: 0 })].map(quoted).join(" ") + " | head -n 3";
      const started = Date.now();
      const r = await runCommand("sh", ["-c", pipeline], s.runtime.env(s.env), { timeoutMs: 60_000, cwd: ROOT });
      t.equal(r.code, 0, r.stderr);
      t.equal(r.stdout.trim().split("\n").length, 3, "three lines");
      t.equal(r.signal, null, "the client exited by itself once its reader went away");
      // "At once" is the Stats call's own deadline (2 s; it waits behind any stream still holding the node), not
      // the client's wall time, which adds the client process's start-up (seconds on a loaded machine).
      const after = await stats(s, 2000);
      t.equal(after.finalized - before.finalized, 1, "the producer's generator was returned: its finally ran");
      t.pass(`the next call was served at once, within its 2000 ms deadline (${after.ms} ms with the client's start-up; the pipeline took ${Date.now() - started - after.ms} ms)`);
      t.comment(`items computed for the piped stream: ${after.computed - before.computed} (what the client wrote before head closed the pipe, plus at most the window)`);
    });

    await t.test("a consumer that dies mid-stream is noticed at once: its generator is returned and the node serves again", async (t) => {
      const before = await stats(s);
      // The consumer takes one item and stops reading: its producer, out of credit, waits.
      const dead = await consumer(t, s, { count: 0 }, ["--window", "2", "--take", "1"], /stalled/);
      dead.child.kill("SIGKILL");
      await dead.stop(null);
      // limits.streamIdleMs is 30 s: an answer within a few seconds means the closed connection ended the stream.
      const after = await stats(s, 4000);
      t.equal(after.finalized - before.finalized, 1, "the dead consumer's generator was returned");
      t.pass(`well before the idle limit: within the Stats call's 4000 ms deadline (${after.ms} ms with the client's start-up)`);
    });

    await t.test("a consumer that stops without closing (SIGSTOP: as a vanished host) is dropped by the listener's heartbeats, before the idle limit", { skip: s.name === "tcp" || s.name === "container over ipc" ? false : "the same listener as the other setups (it takes 8 s)" }, async (t) => {
      const before = await stats(s);
      const stopped = await consumer(t, s, { count: 0 }, ["--window", "2", "--take", "1"], /stalled/);
      const at = Date.now();
      stopped.child.kill("SIGSTOP");
      t.teardown(() => void stopped.child.kill("SIGCONT"));
      // limits.streamIdleMs is 30 s; the listener times out a connection whose heartbeats stop after 6 s.
      const after = await stats(s, 20_000);
      t.equal(after.finalized - before.finalized, 1, "the stopped consumer's generator was returned");
      t.ok(Date.now() - at < 15_000, `at the heartbeats' timeout, not the idle limit (${Date.now() - at} ms)`);
      stopped.child.kill("SIGKILL");
    });

    await t.test("the deadline covers the whole stream: exit 4, the error names the deadline", async (t) => {
      const r = await runCommand(bin!, [...binArgs, "client", ...s.reach, "stream", COUNT, JSON.stringify({ count: 0, intervalMs: 50 }), "--timeout", "700"], s.runtime.env(s.env), { timeoutMs: 60_000, cwd: ROOT });
      t.equal(r.code, 4, r.stderr);
      t.match(r.stderr, /DEADLINE_EXCEEDED: streamer\.Streamer\/Count: the call's deadline \(timeoutMs 700\) passed after \d+ item\(s\)/);
      t.ok(r.stdout.trim().split("\n").length >= 3, "the items before it were printed");
      const after = await stats(s, 2000);
      t.pass(`and the node serves again, within the Stats call's 2000 ms deadline (${after.ms} ms with the client's start-up)`);
    });

    await t.test("wrong verbs are INVALID_ARGUMENT naming the right one; list shows the modes", async (t) => {
      // Four clients of their own, none holding the node for long: run side by side.
      const [call, stream, list, bad] = await Promise.all([
        runCli(["client", ...s.reach, "call", COUNT, "{}"], s.env, { timeoutMs: 60_000 }),
        runCli(["client", ...s.reach, "stream", "streamer.Streamer/Echo", "{}"], s.env, { timeoutMs: 60_000 }),
        runCli(["client", ...s.reach, "list"], s.env, { timeoutMs: 60_000 }),
        runCli(["client", ...s.reach, "stream", COUNT, '{"count":5,"badAt":2}'], s.env, { timeoutMs: 60_000 }),
      ]);
      t.equal(call.code, 3);
      t.match(call.stderr, /is STREAM, not SYNC: stream it/);
      t.equal(stream.code, 3);
      t.match(stream.stderr, /is SYNC, not STREAM: call it/);
      t.match(list.stdout, /Count\s+STREAM\s+streamer\.CountRequest/);
      t.match(list.stdout, /Echo\s+SYNC/);
      t.equal(bad.code, 13, "a bad item ends the stream with INTERNAL");
      t.match(bad.stderr, /INTERNAL: handler yielded an invalid item 2/);
      t.equal(bad.stdout.trim().split("\n").length, 1, "after the item before it");
    });

    await t.test("the producer's process killed mid-stream: the consumer gets UNAVAILABLE at once", async (t) => {
      const reader = await consumer(t, s, { count: 0, intervalMs: 20 }, [], /item .*\n.*item /);
      const killed = Date.now();
      s.producer.child.kill("SIGKILL");
      const out = await stdoutMatch(reader.child, /end (\w+)/, 10_000, reader.stdout());
      t.match(out, /end UNAVAILABLE /, "UNAVAILABLE");
      t.ok(Date.now() - killed < 5000, `promptly (${Date.now() - killed} ms), long before the 30 s deadline`);
      t.equal(await reader.stop(null), 0);
    });
  });
}
