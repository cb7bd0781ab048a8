// The one composition of a process (container/compose.ts): what every role gets from it.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { NodeBinProcess, type ProcessOptions } from "../../src/container/compose.ts";
import { advertiseAddress, isOwnEndpoint } from "../../src/transport/addresses.ts";
import { advertisedEndpoint } from "../../src/transport/zmq.ts";
import { PULL } from "../../src/wire/control.ts";
import { rejection } from "../lib/expect-error.ts";

const quiet = () => ({ debug() {}, info() {}, warn() {}, error() {} });

async function start(t: { teardown(fn: () => unknown): void }, options: Partial<ProcessOptions>): Promise<NodeBinProcess> {
  const runtimeDir = mkdtempSync(join(tmpdir(), "nodebin-compose-"));
  const p = await NodeBinProcess.create({ id: `p-${Math.random().toString(36).slice(2, 8)}`, host: "h", runtimeDir, logger: quiet, ...options });
  t.teardown(async () => {
    await p.close();
    rmSync(runtimeDir, { recursive: true, force: true });
  });
  return p;
}

t.test("compose - the socket-options hook reaches every socket of the process, listeners and connectors", async (t) => {
  const seen: string[] = [];
  const server = await start(t, { nodeEndpoints: true, bind: "127.0.0.1", zmq: { socketOptions: (role, address) => (seen.push(`${role} ${address.replace(/node-.*\.sock$/, "node.sock")}`), {}) } });
  t.same(seen.map((s) => s.replace(/ipc:\/\/\S+\//, "ipc://DIR/")), ["listen ipc://DIR/node.sock", "listen tcp://127.0.0.1:0"], "one listener per kind of address");
  const tcp = server.endpoints.find((e) => e.startsWith("tcp://"))!;

  const calls: string[] = [];
  const client = await start(t, { zmq: { socketOptions: (role, address) => (calls.push(`${role} ${address}`), {}) } });
  const reply = await client.container.callControl(PULL, { knownVersion: 0 }, { via: tcp }, 5000);
  t.equal(reply.unchanged, false);
  t.same(calls, [`connect ${tcp}`], "the connector's socket too");
});

t.test("compose - an option from the hook takes effect: a listener limited to 64-byte messages drops a larger one", async (t) => {
  const limited = await start(t, { nodeEndpoints: true, bind: "127.0.0.1", zmq: { socketOptions: (role) => (role === "listen" ? { maxMessageSize: 64 } : {}) } });
  const open = await start(t, { nodeEndpoints: true, bind: "127.0.0.1" });
  const tcpOf = (p: NodeBinProcess) => p.endpoints.find((e) => e.startsWith("tcp://"))!;
  // A caller whose id alone makes every request frame larger than 64 bytes.
  const caller = await start(t, { id: `caller-${"x".repeat(80)}` });
  t.equal((await caller.container.callControl(PULL, { knownVersion: 0 }, { via: tcpOf(open) }, 5000)).unchanged, false, "answered without the limit");
  const err = await rejection(caller.container.callControl(PULL, { knownVersion: 0 }, { via: tcpOf(limited) }, 1500));
  t.ok(["UNAVAILABLE", "DEADLINE_EXCEEDED"].includes(err.code), `refused by libzmq with the limit (${err.code})`);
});

t.test("compose - a wildcard bind is advertised at the advertise address, never as the wildcard", async (t) => {
  const p = await start(t, { nodeEndpoints: true, bind: "0.0.0.0", advertise: "127.0.0.1" });
  const tcp = p.endpoints.filter((e) => e.startsWith("tcp://"));
  t.equal(tcp.length, 1);
  t.match(tcp[0], /^tcp:\/\/127\.0\.0\.1:\d+$/);
  t.equal(p.bind, "0.0.0.0");
  t.equal(p.advertise, "127.0.0.1");
  // And reachable there.
  const caller = await start(t, {});
  t.equal((await caller.container.callControl(PULL, { knownVersion: 0 }, { via: tcp[0]! }, 5000)).unchanged, false);
});

t.test("addresses - advertise defaults: the bind address when it names one, else a routable one; wildcards rewritten; own endpoints known", async (t) => {
  t.equal(advertiseAddress("10.1.2.3"), "10.1.2.3");
  t.equal(advertiseAddress("0.0.0.0", "10.9.9.9"), "10.9.9.9");
  t.not(advertiseAddress("0.0.0.0"), "0.0.0.0");
  t.equal(advertisedEndpoint("tcp://0.0.0.0:7400", "10.0.0.5"), "tcp://10.0.0.5:7400");
  t.equal(advertisedEndpoint("tcp://[::]:7400", "fe80::1"), "tcp://[fe80::1]:7400");
  t.equal(advertisedEndpoint("tcp://10.0.0.6:7400", "10.0.0.5"), "tcp://10.0.0.6:7400", "a specific bind is kept");
  t.equal(advertisedEndpoint("ipc:///x.sock", "10.0.0.5"), "ipc:///x.sock");
  t.equal(isOwnEndpoint("tcp://127.0.0.1:7400", 7400), true, "loopback, same port: this very agent");
  t.equal(isOwnEndpoint("tcp://127.0.0.1:7401", 7400), false, "another port: another agent");
  t.equal(isOwnEndpoint("tcp://10.0.0.5:7400", 7400, ["10.0.0.5"]), true, "the advertised address");
  t.equal(isOwnEndpoint("tcp://192.0.2.123:7400", 7400), false, "someone else's address");
});
