// Attacks on nodebin.Control/FetchComponent (a governor serving its components' code to other
// hosts, src/governor/code-share.ts) from raw ZeroMQ DEALERs at a live governor's discovery port:
// without the cluster key, or with a stranger's, nothing comes back; a member gets only what it
// names exactly (name and content hash), sealed so that only the cluster opens it and only as that
// component; a governor without a cluster key shares no code at all.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import * as zmq from "zeromq";
import { openArchive } from "../../src/governor/code-share.ts";
import { hashComponent } from "../../src/governor/scan.ts";
import { parseKeyring } from "../../src/security/keys.ts";
import { FETCH_COMPONENT, PULL } from "../../src/wire/control.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { example, startGovernor, testHost } from "../lib/governor.ts";
import { clusterKeyFile } from "../lib/processes.ts";
import { askRaw } from "../lib/raw-control.ts";

const CASE = { timeout: 120_000 };

function dealer(t: { teardown(fn: () => unknown): void }, endpoint: string, options: Partial<zmq.SocketOptions<zmq.Dealer>> = {}): zmq.Dealer {
  const d = new zmq.Dealer({ linger: 0, receiveTimeout: 3000, sendTimeout: 3000, ...options });
  t.teardown(() => d.close());
  d.connect(endpoint);
  return d;
}

/** What a raw DEALER gets for one request within the receive timeout: the answer, or "nothing". */
async function tryAsk(d: zmq.Dealer, name: string, hash: string): Promise<unknown> {
  try {
    return await askRaw(d, FETCH_COMPONENT, { name, hash });
  } catch (err) {
    if ((err as { code?: string }).code === "EAGAIN") return "nothing";
    throw err;
  }
}

t.test("code share attacks - with a cluster key: strangers get nothing; a member gets exactly what it names, sealed", CASE, async (t) => {
  const key = clusterKeyFile(t);
  const host = testHost(t, [example("greeter")]);
  host.env.NODEBIN_CLUSTER_KEY_FILE = key;
  const gov = await startGovernor(t, host);
  await gov.until((s) => s.components[0]?.children[0]?.phase === "ready", 30_000, "greeter serving");
  const hash = hashComponent(join(host.components, "greeter")).hash;
  const endpoint = `tcp://127.0.0.1:${host.port}`;
  const ring = parseKeyring(readFileSync(key, "utf8"), key);

  t.equal(await tryAsk(dealer(t, endpoint), "greeter", hash), "nothing", "plain tcp, no key: nothing comes back");
  const stranger = zmq.curveKeyPair();
  const wrong = { curveServerKey: ring.current.server.publicKey, curvePublicKey: stranger.publicKey, curveSecretKey: stranger.secretKey };
  t.equal(await tryAsk(dealer(t, endpoint, wrong), "greeter", hash), "nothing", "CurveZMQ with a stranger's key: nothing comes back");
  const other = parseKeyring(readFileSync(clusterKeyFile(t), "utf8"), "other");
  const otherCluster = { curveServerKey: other.current.server.publicKey, curvePublicKey: other.current.client.publicKey, curveSecretKey: other.current.client.secretKey };
  t.equal(await tryAsk(dealer(t, endpoint, otherCluster), "greeter", hash), "nothing", "another cluster's key: nothing comes back");

  const member = dealer(t, endpoint, { curveServerKey: ring.current.server.publicKey, curvePublicKey: ring.current.client.publicKey, curveSecretKey: ring.current.client.secretKey });
  const code = async (name: string, h: string) => {
    const r = await askRaw(member, FETCH_COMPONENT, { name, hash: h });
    return r instanceof NodeBinError ? r.code : "served";
  };
  t.equal(await code("counter", hash), "NOT_FOUND", "another name");
  t.equal(await code("greeter", "0".repeat(64)), "NOT_FOUND", "another hash");
  t.equal(await code("../../../etc", hash), "INVALID_ARGUMENT", "a path for a name");
  t.equal(await code("greeter", "../../x"), "INVALID_ARGUMENT", "a path for a hash");
  t.equal(await code("x".repeat(100_000), hash), "INVALID_ARGUMENT", "a huge name");
  const reply = await askRaw(member, FETCH_COMPONENT, { name: "greeter", hash });
  if (reply instanceof NodeBinError) throw reply;
  t.notOk(Buffer.from(reply.sealed).includes(Buffer.from("GREETINGS")), "the code is not readable on the way");
  const archive = openArchive(ring, reply.sealed, "greeter", hash);
  t.same(archive.entries.map((e) => e.path), ["greeter.proto", "index.ts"], "the member opens the greeter's code");
  t.equal(
    (() => {
      try {
        openArchive(ring, reply.sealed, "counter", hash);
        return "opened";
      } catch (err) {
        return NodeBinError.from(err).code;
      }
    })(),
    "UNAUTHENTICATED",
    "and cannot pass it off as another component",
  );
  // The governor still serves its members after all that.
  const pulled = await askRaw(member, PULL, { knownVersion: 0 });
  t.notOk(pulled instanceof NodeBinError, "the governor still answers");
  t.equal((await gov.status()).components[0]?.children[0]?.phase, "ready", "its child still serves");
});

t.test("code share attacks - without a cluster key no code is served, to anyone", CASE, async (t) => {
  const host = testHost(t, [example("greeter")]);
  const gov = await startGovernor(t, host);
  await gov.until((s) => s.components[0]?.children[0]?.phase === "ready", 30_000, "greeter serving");
  const hash = hashComponent(join(host.components, "greeter")).hash;
  const r = await askRaw(dealer(t, `tcp://127.0.0.1:${host.port}`), FETCH_COMPONENT, { name: "greeter", hash });
  t.ok(r instanceof NodeBinError, "refused");
  t.equal((r as NodeBinError).code, "FAILED_PRECONDITION", "FAILED_PRECONDITION: code is shared only with a cluster key");
});
