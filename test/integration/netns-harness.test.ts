// The multi-host harness itself: hosts as network namespaces on one bridge,
// reachable over TCP, cut and restored, and leaving nothing behind.
import { execFileSync, spawnSync } from "node:child_process";
import t from "tap";
import { createNetwork, netnsUnavailable, waitForLine, type NetnsHost } from "../lib/netns.ts";
import { alive } from "../lib/processes.ts";

const skip = (await netnsUnavailable()) ?? false;

/** Echoes each connection back, prefixed with the peer's address; prints "listening <port>" when ready. */
const ECHO_SERVER = `
const net = require("node:net");
const server = net.createServer((socket) => { socket.write(socket.remoteAddress + " "); socket.pipe(socket); });
server.listen(0, process.argv[1], () => console.log("listening " + server.address().port));
`;

/** Sends argv[3] to argv[1]:argv[2] and prints the reply; exit 2 if nothing within argv[4] ms, 3 on a socket error. */
const ECHO_CLIENT = `
const net = require("node:net");
const [host, port, message, ms] = process.argv.slice(1);
const timer = setTimeout(() => { console.error("timeout"); process.exit(2); }, Number(ms));
const socket = net.connect(Number(port), host, () => socket.end(message));
let reply = "";
socket.setEncoding("utf8").on("data", (d) => (reply += d));
socket.on("end", () => { clearTimeout(timer); process.stdout.write(reply); });
socket.on("error", (e) => { console.error(e.code); process.exit(3); });
`;

/** Starts the echo server inside `host` on its own address; resolves with its port. */
async function echoServer(host: NetnsHost): Promise<number> {
  const server = host.spawn(process.execPath, ["-e", ECHO_SERVER, host.address]);
  const [, port] = await waitForLine(server, /^listening (\d+)$/, 10_000);
  return Number(port);
}

/** One echo round trip from `from` to `to`, giving up after `ms`. */
function echo(from: NetnsHost, to: NetnsHost, port: number, ms = 5_000) {
  return from.exec(process.execPath, ["-e", ECHO_CLIENT, to.address, String(port), `hello from ${from.name}`, String(ms)], { timeoutMs: ms + 5_000 });
}

function ownedNames(prefix: string): string[] {
  const namespaces = (JSON.parse(execFileSync("ip", ["-j", "netns", "list"], { encoding: "utf8" }) || "[]") as { name: string }[]).map((n) => n.name);
  const links = (JSON.parse(execFileSync("ip", ["-j", "link", "show"], { encoding: "utf8" })) as { ifname: string }[]).map((l) => l.ifname);
  return [...namespaces, ...links].filter((name) => name.startsWith(prefix));
}


t.test("netns - three hosts reach each other over TCP", { skip }, async (t) => {
  const network = await createNetwork(t, 3);
  t.match(network.subnet, /^10\.(2[0-4]\d|250)\.\d+\.0\/24$/);
  const ports = await Promise.all(network.hosts.map(echoServer));
  const pairs = network.hosts.flatMap((from) => network.hosts.map((to, i) => ({ from, to, port: ports[i]! }))).filter(({ from, to }) => from !== to);
  const results = await Promise.all(pairs.map(({ from, to, port }) => echo(from, to, port)));
  for (const [i, { from, to }] of pairs.entries()) {
    t.same(results[i], { code: 0, signal: null, timedOut: false, stdout: `${from.address} hello from ${from.name}`, stderr: "" }, `${from.name} -> ${to.name}`);
  }
});

t.test("netns - a cut host is unreachable, and reachable again after restore", { skip }, async (t) => {
  const network = await createNetwork(t, 3);
  const [a, b, c] = network.hosts as [NetnsHost, NetnsHost, NetnsHost];
  const [portA, portB] = await Promise.all([echoServer(a), echoServer(b)]);
  t.equal((await echo(b, a, portA)).code, 0, "reachable before the cut");

  await a.cut();
  const cut = await echo(b, a, portA, 1_000);
  t.not(cut.code, 0, "unreachable while cut");
  t.equal(cut.stdout, "");
  t.equal((await echo(c, b, portB)).code, 0, "the other hosts still reach each other");

  await a.restore();
  const restored = await echo(b, a, portA);
  t.equal(restored.code, 0, restored.stderr);
  t.equal(restored.stdout, `${b.address} hello from ${b.name}`);
});

t.test("netns - teardown removes namespaces, veths and bridge, and kills the processes", { skip }, async (t) => {
  let prefix = "";
  const pids: number[] = [];
  await t.test("netns - a network with stubborn processes", async (inner) => {
    const network = await createNetwork(inner, 2, { killTimeoutMs: 500 });
    prefix = network.prefix;
    const [a, b] = network.hosts as [NetnsHost, NetnsHost];
    // Ignores SIGTERM, so only the SIGKILL after the bound ends it.
    const stubborn = a.spawn(process.execPath, ["-e", 'process.on("SIGTERM", () => {}); console.log("ready"); setInterval(() => {}, 1000);']);
    // The shell dies on SIGTERM; its background sleep is left in the namespace.
    const shell = b.spawn("/bin/sh", ["-c", 'sleep 300 & echo "ready $!"; wait']);
    await waitForLine(stubborn, /^ready$/);
    const [, sleeper] = await waitForLine(shell, /^ready (\d+)$/);
    pids.push(stubborn.pid!, shell.pid!, Number(sleeper));
    inner.equal(ownedNames(prefix).length, 2 + 2 + 1, "2 namespaces, 2 veths, 1 bridge exist");
    inner.ok(pids.every(alive), "processes run");
  });
  t.same(ownedNames(prefix), [], "no namespace, veth or bridge is left");
  t.same(pids.filter(alive), [], "no process is left");
});

t.test("netns - creating a network removes leftovers of a crashed run", { skip }, async (t) => {
  // A pid that just exited stands for the crashed run's.
  const dead = spawnSync(process.execPath, ["-e", ""]).pid;
  const prefix = `nbt${dead}zz`;
  const leftovers = [`netns add ${prefix}n1`, `link add ${prefix}h1 type veth peer name ${prefix}p1`, `link add ${prefix}br type bridge`];
  t.teardown(() => spawnSync("ip", ["-force", "-batch", "-"], { input: `netns del ${prefix}n1\nlink del ${prefix}h1\nlink del ${prefix}br\n`, timeout: 10_000 }));
  execFileSync("ip", ["-batch", "-"], { input: leftovers.join("\n") + "\n" });
  t.equal(ownedNames(prefix).length, 4, "the leftovers exist");
  await createNetwork(t, 1);
  t.same(ownedNames(prefix), [], "they are gone");
});
