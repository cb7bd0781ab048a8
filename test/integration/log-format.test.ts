// --log-format json on real processes: a `node-bin dev` and a `node-bin
// container`, called by `node-bin client` (a call that succeeds, one that
// fails, nested in-process calls, an ASYNC send; over ipc and over tcp), with
// NODEBIN_LOG=debug so that every message has its start and end (or error)
// line. Every line each process writes on stderr must parse as one JSON
// object; the hooks' lines must name method, duration, code and peer.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import t, { type Test } from "tap";
import * as zmq from "zeromq";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope, type Envelope } from "../../src/wire/envelope.ts";
import { Mode } from "../../src/wire/schema.ts";
import { example, startGovernor, testHost } from "../lib/governor.ts";
import { EXAMPLES, privateRuntime, runCli, startContainer, startDev, testPort, type CliResult, type DevProcess } from "../lib/processes.ts";

t.setTimeout(180_000);

interface LogLine {
  level: string;
  time: string;
  source: string;
  msg: string;
  hook?: "start" | "end" | "error";
  method?: string;
  mode?: string;
  peer?: { id: string; kind: string };
  code?: string;
  durationMs?: number;
  error?: string;
  origin?: string;
}

/** Every line of `text` parsed as JSON; a line that is not one JSON object with time, level, source and msg fails the test. */
function jsonLines(t: Test, text: string, who: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      t.fail(`${who}: a stderr line that is not JSON: ${JSON.stringify(line)}`);
      continue;
    }
    const o = value as Partial<LogLine>;
    if (typeof o !== "object" || o === null || typeof o.level !== "string" || typeof o.time !== "string" || typeof o.source !== "string" || typeof o.msg !== "string") {
      t.fail(`${who}: a JSON line without time, level, source and msg: ${line}`);
      continue;
    }
    out.push(o as LogLine);
  }
  return out;
}

/** Resolves once a complete stderr line of `proc` satisfies `ok` (rejects after `timeoutMs`, with what it wrote). */
function waitForLog(proc: DevProcess, ok: (line: LogLine) => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const found = () =>
    proc
      .stderr()
      .split("\n")
      .slice(0, -1) // only complete lines
      .some((l) => {
        try {
          return ok(JSON.parse(l) as LogLine);
        } catch {
          return false;
        }
      });
  return new Promise((resolve, reject) => {
    if (found()) return resolve();
    const timer = setTimeout(() => {
      proc.child.stderr!.off("data", check);
      reject(new Error(`no log line ${what} within ${timeoutMs} ms; stderr:\n${proc.stderr()}`));
    }, timeoutMs);
    const check = () => {
      if (!found()) return;
      clearTimeout(timer);
      proc.child.stderr!.off("data", check);
      resolve();
    };
    proc.child.stderr!.on("data", check);
  });
}

const hookLines = (lines: LogLine[], method: string) => lines.filter((l) => l.hook !== undefined && l.method === method);

/** The client's own stderr: JSON lines too; a failed call ends with one error line carrying the code. */
function clientLines(t: Test, r: CliResult, who: string): LogLine[] {
  return jsonLines(t, r.stderr, who);
}

t.test("log-format - dev with --log-format json: every stderr line is JSON; start/end/error hooks name method, duration, code and peer", async (t) => {
  const env = { ...privateRuntime(t), NODEBIN_LOG: "debug" };
  const dev = await startDev(t, ["--components", EXAMPLES, "--log-format", "json"], env);

  const ok = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":"Ada"}', "--log-format", "json"], env, { timeoutMs: 20_000 });
  t.equal(ok.code, 0, ok.stderr);
  t.same(JSON.parse(ok.stdout), { message: "Hello, Ada!" }, "results stay on stdout, as they were");
  const bad = await runCli(["client", "call", "demo.Greeter/Hello", "{}", "--log-format", "json"], env, { timeoutMs: 20_000 });
  t.equal(bad.code, 13, "INTERNAL: the handler threw");
  const badLines = clientLines(t, bad, "client (failed call)");
  t.match(badLines.at(-1), { level: "error", source: "client", code: "INTERNAL", origin: /^greeter-/, msg: /name is required/ }, "the client's error report is a JSON log line");
  t.equal(badLines.filter((l) => l.level === "error").length, 1, "one error line");
  const visit = await runCli(["client", "call", "demo.Welcome/Visit", '{"name":"Bo"}', "--log-format", "json"], env, { timeoutMs: 20_000 });
  t.equal(visit.code, 0, visit.stderr);
  const send = await runCli(["client", "send", "demo.Greeter/Sign", '{"name":"Cy"}', "--log-format", "json"], env, { timeoutMs: 20_000 });
  t.equal(send.code, 0, send.stderr);
  for (const r of [ok, visit, send]) clientLines(t, r, "client");

  // The hooks write before the answer leaves; the pipe to this test may still hold them: wait for the last ones.
  await waitForLog(dev, (l) => l.hook === "end" && l.method === "demo.Welcome/Visit", "ending Visit");
  await waitForLog(dev, (l) => l.hook === "end" && l.method === "demo.Greeter/Sign" && l.peer?.kind === "host", "ending the client's Sign");
  t.equal(await dev.stop(), 0, "dev exits 0 on SIGTERM");
  const lines = jsonLines(t, dev.stderr(), "dev");
  t.ok(lines.some((l) => l.source === "dev" && l.level === "info" && /greeter/.test(l.msg)), "dev's own lines are JSON too");

  const hello = hookLines(lines, "demo.Greeter/Hello");
  const fromClients = hello.filter((l) => l.peer?.kind === "host");
  t.same(
    fromClients.map((l) => [l.hook, l.code]),
    [
      ["start", undefined],
      ["end", "OK"],
      ["start", undefined],
      ["error", "INTERNAL"],
    ],
    "the two client calls of Hello, over ipc: start then end, start then error",
  );
  const greeter = fromClients[0]!.source;
  t.match(greeter, /^greeter-/, "the source is the node");
  for (const l of fromClients) {
    t.match(l, { level: "debug", source: greeter, method: "demo.Greeter/Hello", mode: "SYNC", peer: { id: /^client-.*\/caller$/, kind: "host" } });
  }
  t.equal(fromClients[0]!.peer!.id, fromClients[1]!.peer!.id, "start and end name the same caller");
  t.not(fromClients[0]!.peer!.id, fromClients[2]!.peer!.id, "two client processes, two callers");
  for (const l of [fromClients[1]!, fromClients[3]!]) t.ok(typeof l.durationMs === "number" && l.durationMs >= 0 && l.durationMs < 20_000, `${l.hook}: a duration in ms`);
  t.equal(fromClients[3]!.error, "name is required", "the error line carries the error's message");

  const visits = hookLines(lines, "demo.Welcome/Visit");
  t.same(
    visits.map((l) => [l.hook, l.code, l.peer?.kind]),
    [
      ["start", undefined, "host"],
      ["end", "OK", "host"],
    ],
  );
  const welcome = visits[0]!.source;
  const nested = hello.filter((l) => l.peer?.kind === "local");
  t.same(
    nested.map((l) => [l.hook, l.code, l.peer?.id]),
    [
      ["start", undefined, welcome],
      ["end", "OK", welcome],
    ],
    "Visit's nested call to Hello: in this process, from the welcome node",
  );
  const add = hookLines(lines, "demo.Counter/Add");
  t.same(
    add.map((l) => [l.hook, l.code, l.peer?.kind, l.peer?.id]),
    [
      ["start", undefined, "local", welcome],
      ["end", "OK", "local", welcome],
    ],
  );
  const sign = hookLines(lines, "demo.Greeter/Sign");
  t.same(
    sign.map((l) => [l.hook, l.mode, l.code, l.peer?.kind]),
    [
      ["start", "ASYNC", undefined, "local"],
      ["end", "ASYNC", "OK", "local"],
      ["start", "ASYNC", undefined, "host"],
      ["end", "ASYNC", "OK", "host"],
    ],
    "ASYNC: Visit's send, then the client's; each ends once handled",
  );
  t.ok(visits[1]!.durationMs! >= nested[1]!.durationMs!, "the outer message lasts at least as long as its nested call");
});

t.test("log-format - container with --log-format json: callers over tcp are network peers, over ipc host peers; a forged id stays in its string", async (t) => {
  const port = testPort();
  const seed = `127.0.0.1:${port}`;
  const env = { ...privateRuntime(t), NODEBIN_LOG: "debug", NODEBIN_HOST: "log-host" };
  const container = await startContainer(t, ["--component", "greeter", "--components", EXAMPLES, "--listen", "127.0.0.1", "--discovery-port", String(port), "--log-format", "json"], env);
  const node = /ready: (\S+)/.exec(container.readyLine)![1]!;
  const tcp = /tcp:\/\/127\.0\.0\.1:\d+/.exec(container.readyLine)![0];

  // Another host's client (another host id and runtime directory): it reaches the node over tcp. The format from the environment this time.
  const far = { ...privateRuntime(t), NODEBIN_LOG: "debug", NODEBIN_HOST: "far-host", NODEBIN_LOG_FORMAT: "json" };
  const ok = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":"Ada"}', "--seed", seed], far, { timeoutMs: 20_000 });
  t.equal(ok.code, 0, ok.stderr);
  const bad = await runCli(["client", "call", "demo.Greeter/Hello", "{}", "--seed", seed], far, { timeoutMs: 20_000 });
  t.equal(bad.code, 13, bad.stderr);
  t.match(clientLines(t, bad, "far client").at(-1), { level: "error", code: "INTERNAL", origin: node });
  // A client on the container's own host: ipc.
  const near = await runCli(["client", "call", "demo.Greeter/Hello", '{"name":"Bo"}', "--seed", seed, "--log-format", "json"], env, { timeoutMs: 20_000 });
  t.equal(near.code, 0, near.stderr);
  for (const r of [ok, near]) clientLines(t, r, "client");

  // A raw peer whose `from` tries to end the line and forge another one.
  const forged = 'evil\n{"level":"error","time":"2020-01-01T00:00:00.000Z","source":"governor","msg":"forged"}\u2028\u001b[2J';
  const raw = new zmq.Dealer({ linger: 0, receiveTimeout: 10_000 });
  raw.connect(tcp);
  t.teardown(() => raw.close());
  await raw.send(encodeEnvelope(envelope({ id: 7, plane: Plane.APPLICATION, mode: Mode.SYNC, kind: Kind.REQUEST, from: forged, to: node, method: "demo.Greeter/Hello", deadlineMs: 5000 })));
  const [frame] = await raw.receive();
  const answer = decodeEnvelope(frame!) as Envelope;
  t.equal(answer.error?.code, 13, "an empty HelloRequest: the handler throws, INTERNAL back to the raw peer");

  await waitForLog(container, (l) => l.hook === "error" && l.peer?.id === forged, "for the forged caller's error");
  await waitForLog(container, (l) => l.hook === "end" && l.peer?.kind === "host", "for the ipc caller's end");
  t.equal(await container.stop(), 0, "the container exits 0 on SIGTERM");
  const text = container.stderr();
  const lines = jsonLines(t, text, "container");
  t.ok(lines.some((l) => l.source === "container" && /SIGTERM/.test(l.msg)), "the container's own lines are JSON too");
  t.notOk(lines.some((l) => l.msg === "forged"), "no forged line");
  t.notOk(/[\u2028\u001b]/.test(text), "the separator and ESC stay escaped on the wire of the log");

  const hello = hookLines(lines, "demo.Greeter/Hello");
  t.ok(hello.every((l) => l.source === node && l.level === "debug" && l.mode === "SYNC"), "every hook line is the node's, at debug level");
  const byKind = (kind: string) => hello.filter((l) => l.peer?.kind === kind && l.peer.id !== forged).map((l) => [l.hook, l.code]);
  t.same(
    byKind("network"),
    [
      ["start", undefined],
      ["end", "OK"],
      ["start", undefined],
      ["error", "INTERNAL"],
    ],
    "the far client's two calls came over tcp: network",
  );
  t.same(
    byKind("host"),
    [
      ["start", undefined],
      ["end", "OK"],
    ],
    "the near client's call came over ipc: host",
  );
  const rawLines = hello.filter((l) => l.peer?.id === forged);
  t.same(
    rawLines.map((l) => [l.hook, l.code, l.peer?.kind]),
    [
      ["start", undefined, "network"],
      ["error", "INTERNAL", "network"],
    ],
    "the raw peer's message: its claimed id kept whole inside the peer field, its kind what the transport saw",
  );
  for (const l of hello.filter((l) => l.hook !== "start")) t.ok(typeof l.durationMs === "number" && l.durationMs >= 0, `${l.hook} ${l.code}: its duration`);
});

t.test("log-format - governor with --log-format json: its lines are JSON, and so are its children's, which inherit the format", async (t) => {
  const host = testHost(t, [example("greeter")]);
  host.env.NODEBIN_LOG = "debug";
  const governor = await startGovernor(t, host, ["--capacity", "2", "--log-format", "json"]);
  const child = await governor.until((s) => s.components.find((c) => c.name === "greeter")?.children.find((k) => k.phase === "ready"), 30_000, "greeter ready");
  const bad = await runCli(["client", "call", "demo.Greeter/Hello", "{}", "--seed", host.seed], host.env, { timeoutMs: 20_000 });
  t.equal(bad.code, 13, bad.stderr);
  await waitForLog(governor, (l) => l.source === "governor" && /serves as/.test(l.msg), "for the child serving");
  t.equal(await governor.stop(), 0, "the governor stops, its children with it");
  const lines = jsonLines(t, governor.stderr(), "governor");
  t.ok(lines.some((l) => l.source === "governor" && /governing/.test(l.msg)), "the governor's own lines (its logging plugin's) are JSON");

  // The child's log file holds its stdout too: its readiness line is the one line that is not a log line.
  const file = readFileSync(join(host.env.NODEBIN_RUNTIME_DIR!, `governor-${host.port}`, "logs", "greeter.log"), "utf8");
  const logged = file.split("\n").filter((l) => !l.startsWith("node-bin container ready:")).join("\n");
  const childLines = jsonLines(t, logged, "governor's child");
  const failed = childLines.filter((l) => l.hook === "error" && l.method === "demo.Greeter/Hello");
  t.equal(failed.length, 1, "the failed call's error hook, in the child's log");
  t.match(failed[0], { source: child.node, code: "INTERNAL", peer: { kind: "host" }, durationMs: Number });
});
