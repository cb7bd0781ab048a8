// The two-phase state hand-over between container processes (src/container/process.ts), in one
// test process over real ipc sockets: Drain with exportState answers with the state sealed and
// leaves the node suspended with it; ImportState opens a payload before reading it and refuses
// anything that does not authenticate, leaving the held node held; Release shuts the drained node
// down, Resume (or the hand-over timeout: a governor gone) puts it back in the table, serving with
// its state.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serialize } from "node:v8";
import t, { type Test } from "tap";
import { loadComponent } from "../../src/component/loader.ts";
import { ContainerProcess, stateContext, type ContainerProcessOptions } from "../../src/container/process.ts";
import { newKeyLine, parseKeyring } from "../../src/security/keys.ts";
import { hostStateKeyring } from "../../src/security/provider.ts";
import { isSealed, open, seal } from "../../src/security/seal.ts";
import { DRAIN, IMPORT_STATE, PING, RELEASE, RESUME, type ControlMethod } from "../../src/wire/control.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { examplePath, withHandlers } from "../lib/fixture-components.ts";
import { silentLogger } from "../lib/recording-logger.ts";
import { testPort } from "../lib/processes.ts";

const counter = await loadComponent(examplePath("counter"));
const MARKER = "hand-over-marker-5c1f";
/** How the marker appears inside a v8-serialized state: the string's own bytes, without the 2-byte version header. */
const MARKER_V8 = serialize(MARKER).subarray(2);

/** Two counter processes on one private host: `a` serving (the host agent), `b` held for a state. */
async function pair(t: Test, more: Partial<ContainerProcessOptions> = {}) {
  const runtimeDir = mkdtempSync(join(tmpdir(), "nodebin-handover-"));
  t.teardown(() => rmSync(runtimeDir, { recursive: true, force: true }));
  const base: ContainerProcessOptions = {
    component: counter,
    host: "hand-over-host",
    network: "",
    bind: "127.0.0.1",
    advertise: "127.0.0.1",
    seeds: [],
    runtimeDir,
    discoveryPort: testPort(),
    logger: () => silentLogger,
    ...more,
  };
  const a = await ContainerProcess.start(base);
  t.teardown(() => a.close());
  const b = await ContainerProcess.start({ ...base, hold: true });
  t.teardown(() => b.close());
  const ipcOf = (p: ContainerProcess) => p.container.endpoints.find((e) => e.startsWith("ipc://"))!;
  /** A control call from the other process to `to`'s ipc endpoint (a host peer, as a governor is). */
  const ask = <Req, Res>(to: ContainerProcess, method: ControlMethod<Req, Res>, request: Req): Promise<Res> =>
    (to === a ? b : a).container.callControl(method, request, { via: ipcOf(to) }, 5000);
  /** Calls the counter in `p`'s own process (its nearest node). */
  const count = async (p: ContainerProcess, method: "Add" | "Get", key: string): Promise<number> => Number(((await p.container.caller.call(`demo.Counter/${method}`, { key }, { timeoutMs: 3000 })) as { count: unknown }).count);
  const nodeOf = (p: ContainerProcess) => p.container.localNodes()[0]!;
  return { a, b, ask, count, nodeOf, runtimeDir };
}

async function refusal(promise: Promise<unknown>): Promise<NodeBinError> {
  try {
    await promise;
  } catch (err) {
    return NodeBinError.from(err);
  }
  throw new Error("resolved instead of being refused");
}

const contains = (haystack: Uint8Array, needle: Uint8Array) => Buffer.from(haystack).indexOf(Buffer.from(needle)) >= 0;

t.test("hand-over - Drain seals the state; a changed, foreign or unsealed payload is UNAUTHENTICATED and imports nothing; the genuine one imports; Release shuts the old node down", async (t) => {
  const { a, b, ask, count, nodeOf, runtimeDir } = await pair(t);
  for (let i = 0; i < 3; i++) await count(a, "Add", MARKER);
  t.equal(await count(a, "Get", MARKER), 3, "state built on the serving node");

  const drained = await ask(a, DRAIN, { exportState: true });
  const payload = drained.state;
  t.ok(isSealed(payload), "the payload is sealed");
  t.notOk(contains(payload, MARKER_V8), "the v8-serialized marker key does not occur in it");
  t.notOk(contains(payload, new TextEncoder().encode(MARKER)), "nor its UTF-8 bytes");
  // The host's own key (no cluster key here), in the runtime directory: it is what sealed it.
  const plain = open(hostStateKeyring(runtimeDir), payload, stateContext("counter"));
  t.ok(contains(plain, MARKER_V8), "opened with the host's key, it is the state (with the marker as searched for above)");
  t.equal((await ask(a, PING, {})).phase, "handing-over", "the old process says it is handing over");
  t.ok(nodeOf(a).isSuspended, "its node is suspended, state intact");
  t.notOk(a.container.table.get(nodeOf(a).id), "and out of its table");

  const flipped = new Uint8Array(payload);
  flipped[flipped.length - 20] ^= 0x01;
  const foreign = seal(parseKeyring(newKeyLine(), "foreign.key"), plain, stateContext("counter"));
  const otherComponent = seal(hostStateKeyring(runtimeDir), plain, stateContext("greeter"));
  for (const [what, state] of [
    ["one flipped byte", flipped],
    ["sealed under a foreign key", foreign],
    ["sealed for another component", otherComponent],
    ["the plaintext, unsealed", plain],
    ["cut short", payload.subarray(0, payload.length - 1)],
  ] as const) {
    const err = await refusal(ask(b, IMPORT_STATE, { state }));
    t.equal(err.code, "UNAUTHENTICATED", `${what}: UNAUTHENTICATED`);
    t.ok(nodeOf(b).isHeld, `${what}: the new node is still held`);
    t.same(nodeOf(b).state, {}, `${what}: nothing was imported`);
  }
  t.equal((await ask(b, PING, {})).phase, "holding");

  await ask(b, IMPORT_STATE, { state: payload });
  t.notOk(nodeOf(b).isHeld, "the genuine payload: imported, serving");
  t.equal(await count(b, "Get", MARKER), 3, "with the state");
  t.equal((await refusal(ask(b, IMPORT_STATE, { state: payload }))).code, "FAILED_PRECONDITION", "a second import into a serving node is refused");

  await ask(a, RELEASE, {});
  t.equal(nodeOf(a).getStats().phase, "closed", "Release: the old node shut down");
  await ask(a, RELEASE, {});
  t.pass("Release twice is harmless");
});

t.test("hand-over - Resume: the drained node takes its state back, is in the table again and serves", async (t) => {
  const { a, ask, count, nodeOf } = await pair(t);
  await count(a, "Add", "k");
  await count(a, "Add", "k");
  await ask(a, DRAIN, { exportState: true });
  t.ok(nodeOf(a).isSuspended);
  await ask(a, RESUME, { reason: "test: the successor refused it" });
  t.notOk(nodeOf(a).isSuspended, "no longer suspended");
  t.ok(a.container.table.get(nodeOf(a).id), "back in its table");
  t.equal((await ask(a, PING, {})).phase, "serving");
  t.equal(await count(a, "Add", "k"), 3, "it serves with the state it had");
  await ask(a, RESUME, { reason: "again" });
  t.pass("Resume of a serving node is harmless");
  t.equal((await refusal(ask(a, RELEASE, {}))).code, "FAILED_PRECONDITION", "Release after Resume is refused: it serves its state");
});

t.test("hand-over - neither Release nor Resume within handOverMs (the governor is gone): the node serves again with its state", async (t) => {
  const { a, ask, count, nodeOf } = await pair(t, { handOverMs: 400 });
  await count(a, "Add", "t");
  const drainedAt = Date.now();
  await ask(a, DRAIN, { exportState: true });
  t.ok(nodeOf(a).isSuspended, "suspended");
  const end = Date.now() + 5000;
  while (nodeOf(a).isSuspended && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  const waited = Date.now() - drainedAt;
  t.notOk(nodeOf(a).isSuspended, `it took its state back by itself (after ${waited} ms)`);
  t.ok(waited >= 380, "not before handOverMs");
  t.ok(a.container.table.get(nodeOf(a).id), "back in its table");
  t.equal(await count(a, "Add", "t"), 2, "serving with its state");
  t.equal((await refusal(ask(a, RELEASE, {}))).code, "FAILED_PRECONDITION", "a late Release is refused (the governor then stops it)");
});

t.test("hand-over - a state that cannot be serialized: Drain is INTERNAL, the node keeps serving, nothing leaves the process", async (t) => {
  // Without the counter's hook (it copies the counts only), the raw state is exported: a function included.
  const { a, ask, count, nodeOf } = await pair(t, { component: withHandlers(counter, {}, { hooks: {} }) });
  await count(a, "Add", "f");
  nodeOf(a).state.handle = () => "a function does not clone";
  const err = await refusal(ask(a, DRAIN, { exportState: true }));
  t.equal(err.code, "INTERNAL");
  t.match(err.message, /cannot be transferred/);
  t.notOk(nodeOf(a).isSuspended, "not suspended");
  t.ok(a.container.table.get(nodeOf(a).id), "in its table");
  t.equal(await count(a, "Add", "f"), 2, "serving with its state");
});
