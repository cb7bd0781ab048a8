// BROADCAST: the wire form (topics, stamps, subscriptions), gap counting, the
// relay's forwarding rules without sockets (RelayCore: where each message goes,
// no loops, subscriptions upstream, bounds, malformed input dropped and
// counted), then real sockets: a relay with publishers and subscribers on
// ipc, two relays over tcp, a subscriber that never reads, a raw peer sending
// garbage; and a process's side of it in a closed world (ProcessBroadcast).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import * as zmq from "zeromq";
import type { InboundInterceptor } from "../../src/component/interceptor.ts";
import { loadComponent } from "../../src/component/loader.ts";
import { ProcessBroadcast } from "../../src/container/broadcast.ts";
import { BroadcastRelay, RelayCore, type RelayPorts } from "../../src/membership/broadcast-relay.ts";
import {
  BROADCAST_LIMITS,
  GapCounter,
  TopicPublisher,
  TopicSubscriber,
  decodeStamp,
  encodeBatch,
  encodeStamp,
  methodOfTopic,
  readBatch,
  readSubscription,
  relayEndpoints,
  subscriptionMessage,
  topicOf,
  type BroadcastCounter,
} from "../../src/transport/pubsub.ts";
import { Kind, Plane, encodeEnvelope, envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { encodeMessage } from "../../src/wire/message.ts";
import { Mode } from "../../src/wire/schema.ts";
import { deferred } from "../lib/deferred.ts";
import { rejection } from "../lib/expect-error.ts";
import { examplePath, startContainer, withHandlers } from "../lib/fixture-components.ts";
import { silentLogger } from "../lib/recording-logger.ts";

const board = await loadComponent(examplePath("board"));
const POST = "demo.Board/Post";

/** Polls `ok` (a condition, not a sleep) every few ms until it holds; fails after `ms`. */
async function until(ok: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

// ---------------------------------------------------------------- wire form

t.test("broadcast wire - a topic is the method and a NUL, so one method's topic is never another's prefix", async (t) => {
  t.same(topicOf(POST), Buffer.from("demo.Board/Post\0"));
  t.equal(methodOfTopic(topicOf(POST)), POST);
  t.notOk(topicOf("demo.Board/PostAll").subarray(0, topicOf(POST).length).equals(topicOf(POST)), "Post's topic is no prefix of PostAll's");
  for (const bad of ["", "demo.Board/Post", "demo.Board/Po\0st\0", "noslash\0", "/x\0", "x/\0", `a/${"b".repeat(600)}\0`]) t.equal(methodOfTopic(Buffer.from(bad)), undefined, JSON.stringify(bad).slice(0, 40));
  t.equal(methodOfTopic(Buffer.from([0x61, 0x2f, 0xff, 0])), undefined, "not UTF-8");
});

t.test("broadcast wire - a stamp carries the origin and a sequence up to 2^53; anything else is no stamp", async (t) => {
  t.same(decodeStamp(encodeStamp("host-a~k3", 0)), { origin: "host-a~k3", seq: 0 });
  t.same(decodeStamp(encodeStamp("o", 2 ** 40 + 7)), { origin: "o", seq: 2 ** 40 + 7 });
  t.same(decodeStamp(encodeStamp("o", Number.MAX_SAFE_INTEGER)), { origin: "o", seq: Number.MAX_SAFE_INTEGER });
  const wrongVersion = encodeStamp("o", 1);
  wrongVersion[0] = 9;
  t.equal(decodeStamp(wrongVersion), undefined, "another version");
  t.equal(decodeStamp(Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), undefined, "no origin");
  t.throws(() => encodeStamp("x".repeat(301), 1), "an origin too long is refused");
  const long = encodeStamp("o", 1);
  long.writeUInt16BE(400, 9);
  t.equal(decodeStamp(Buffer.concat([long, Buffer.alloc(400)])), undefined, "origin too long");
  t.equal(decodeStamp(encodeStamp("o", 1).subarray(0, 11)), undefined, "origin cut short");
  const big = encodeStamp("o", 1);
  big.writeUInt32BE(0xffffffff, 1);
  t.equal(decodeStamp(big), undefined, "past 2^53");
  t.equal(decodeStamp(undefined), undefined);
});

t.test("broadcast wire - a batch is one frame: topic, (stamp,) envelopes with their lengths; anything else is none", async (t) => {
  const envelopes = [Buffer.from("one"), Buffer.from(""), Buffer.from("three")];
  const frame = encodeBatch(topicOf(POST), envelopes);
  const batch = readBatch(frame, false)!;
  t.equal(batch.method, POST);
  t.same(batch.envelopes.map(String), ["one", "", "three"]);
  t.equal(batch.stamp, undefined);
  const stamped = Buffer.concat([topicOf(POST), encodeStamp("o", 9), encodeBatch(Buffer.alloc(0), envelopes)]);
  t.same(readBatch(stamped, true)!.stamp, { origin: "o", seq: 9 });
  t.same(readBatch(stamped, true)!.envelopes.map(String), ["one", "", "three"]);
  t.equal(readBatch(frame, true), undefined, "an unstamped batch read as stamped");
  t.equal(readBatch(topicOf(POST), false), undefined, "no envelope");
  t.equal(readBatch(frame.subarray(0, frame.length - 1), false), undefined, "cut short");
  t.equal(readBatch(Buffer.concat([frame, Buffer.from([0, 0])]), false), undefined, "trailing bytes");
  t.equal(readBatch(encodeBatch(Buffer.from("demo.Board/Post"), envelopes), false), undefined, "no terminator");
  t.equal(readBatch(encodeBatch(topicOf(POST), Array.from({ length: BROADCAST_LIMITS.maxEnvelopes + 1 }, () => Buffer.from("e"))), false), undefined, "too many envelopes");
  t.equal(readBatch(encodeBatch(topicOf(POST), [Buffer.alloc(BROADCAST_LIMITS.maxMessageBytes)]), false), undefined, "too many bytes");
  const lying = encodeBatch(topicOf(POST), [Buffer.from("e")]);
  lying.writeUInt32BE(0xffffffff, topicOf(POST).length);
  t.equal(readBatch(lying, false), undefined, "a length past the end");
});

t.test("broadcast wire - subscription messages: 1 or 0 and a method topic, nothing else", async (t) => {
  t.same(readSubscription([subscriptionMessage(topicOf(POST), true)]), { on: true, topic: topicOf(POST) });
  t.same(readSubscription([subscriptionMessage(topicOf(POST), false)]), { on: false, topic: topicOf(POST) });
  t.equal(readSubscription([Buffer.from([1])]), undefined, "subscribe-to-everything is no method topic");
  t.equal(readSubscription([Buffer.from("\x01demo")]), undefined, "a bare prefix");
  t.equal(readSubscription([Buffer.from("\x02demo.Board/Post\0")]), undefined, "another first byte");
  t.equal(readSubscription([subscriptionMessage(topicOf(POST), true), Buffer.from("x")]), undefined, "two frames");
});

t.test("broadcast gaps - the first message of an origin and topic starts the count; skipped sequences are missed; going back starts over", async (t) => {
  const gaps = new GapCounter();
  t.equal(gaps.observe("a", POST, 100, 1), 0, "a late joiner starts wherever it joins");
  t.equal(gaps.observe("a", POST, 101, 3), 0, "a batch of three");
  t.equal(gaps.observe("a", POST, 104, 1), 0);
  t.equal(gaps.observe("a", POST, 110, 1), 5, "105..109 missed");
  t.equal(gaps.observe("b", POST, 0, 1), 0, "another origin is counted apart");
  t.equal(gaps.observe("a", "demo.Board/Other", 7, 1), 0, "another topic too");
  t.equal(gaps.observe("a", POST, 3, 1), 0, "a sequence that goes back (a restart) starts over");
  t.equal(gaps.observe("a", POST, 5, 1), 1);
  const bounded = new GapCounter(2);
  bounded.observe("a", POST, 0, 1);
  bounded.observe("b", POST, 0, 1);
  bounded.observe("c", POST, 0, 1);
  t.equal(bounded.size, 2, "bounded: the least recently seen is forgotten");
  t.equal(bounded.observe("a", POST, 50, 1), 0, "a forgotten one starts over");
});

// ------------------------------------------------------------ RelayCore rules

interface Recorded {
  local: Buffer[];
  network: Buffer[];
  publishers: string[];
  peers: string[];
  counts: Partial<Record<BroadcastCounter, number>>;
}

function core(options: { maxTopics?: number; full?: boolean } = {}): { relay: RelayCore; seen: Recorded } {
  const seen: Recorded = { local: [], network: [], publishers: [], peers: [], counts: {} };
  const ports: RelayPorts = {
    toLocal: (m) => (options.full ? false : (seen.local.push(m), true)),
    toNetwork: (m) => (seen.network.push(m), true),
    toPublishers: (s) => (seen.publishers.push(`${s[0]}:${s.subarray(1, -1).toString()}`), true),
    toPeers: (topic, on) => seen.peers.push(`${on ? 1 : 0}:${topic.subarray(0, -1).toString()}`),
  };
  const relay = new RelayCore("me", ports, (counter, _reason, n = 1) => (seen.counts[counter] = (seen.counts[counter] ?? 0) + n), BROADCAST_LIMITS, options.maxTopics);
  return { relay, seen };
}

const sub = (method: string, on = true) => [subscriptionMessage(topicOf(method), on)];
const published = (method: string, ...envelopes: string[]) => [encodeBatch(topicOf(method), envelopes.map((f) => Buffer.from(f)))];
const relayed = (method: string, origin: string, seq: number, ...envelopes: string[]) => Buffer.concat([topicOf(method), encodeStamp(origin, seq), encodeBatch(Buffer.alloc(0), envelopes.map((f) => Buffer.from(f)))]);
const stampOf = (frame: Buffer) => readBatch(frame, true)!.stamp;
const envelopesOf = (frame: Buffer) => readBatch(frame, true)!.envelopes.map(String);

t.test("relay rules - nothing is forwarded for a topic nobody subscribed to", async (t) => {
  const { relay, seen } = core();
  relay.fromPublisher(published(POST, "e1"));
  relay.fromPeer(relayed(POST, "other", 0, "e1"));
  t.same([seen.local.length, seen.network.length], [0, 0]);
  t.same(seen.counts, {}, "not an error: a race with an unsubscription");
});

t.test("relay rules - a local subscription goes upstream and to every other host; a publisher's message reaches the host's subscribers, stamped", async (t) => {
  const { relay, seen } = core();
  relay.localSubscription(sub(POST));
  t.same(seen.publishers, ["1:demo.Board/Post"], "asked of the host's publishers");
  t.same(seen.peers, ["1:demo.Board/Post"], "and of every other host's relay");
  relay.fromPublisher(published(POST, "e1", "e2"));
  relay.fromPublisher(published(POST, "e3"));
  t.equal(seen.local.length, 2);
  t.equal(seen.network.length, 0, "no other host asked for it: nothing on the network");
  t.same(stampOf(seen.local[0]!), { origin: "me", seq: 0 });
  t.same(stampOf(seen.local[1]!), { origin: "me", seq: 2 }, "the sequence counts envelopes: a batch of two took 0 and 1");
  t.same(envelopesOf(seen.local[0]!), ["e1", "e2"], "envelopes forwarded as they are");
  t.same(relay.localTopics().map((b) => b.toString()), ["demo.Board/Post\0"]);
});

t.test("relay rules - another host's subscription goes upstream only; a local message then goes to both sides", async (t) => {
  const { relay, seen } = core();
  relay.networkSubscription(sub(POST));
  t.same(seen.publishers, ["1:demo.Board/Post"]);
  t.same(seen.peers, [], "another host's interest is not passed to the other hosts");
  relay.localSubscription(sub(POST));
  t.same(seen.publishers, ["1:demo.Board/Post"], "upstream once per topic");
  relay.fromPublisher(published(POST, "e1"));
  t.same([seen.local.length, seen.network.length], [1, 1], "a publisher's message goes to this host's subscribers and to the other hosts");
  t.same(stampOf(seen.local[0]!), stampOf(seen.network[0]!), "one stamp for both");
});

t.test("relay rules - a message from another host goes to this host's subscribers only: never back to the network (one hop, no loops)", async (t) => {
  const { relay, seen } = core();
  relay.localSubscription(sub(POST));
  relay.networkSubscription(sub(POST));
  relay.fromPeer(relayed(POST, "host-b", 41, "e1"));
  t.equal(seen.local.length, 1);
  t.equal(seen.network.length, 0, "not forwarded to the network, though other hosts subscribed");
  t.same(stampOf(seen.local[0]!), { origin: "host-b", seq: 41 }, "the origin's stamp, unchanged");
  relay.fromPeer(relayed(POST, "me", 0, "e1", "e2"));
  t.equal(seen.local.length, 1, "a message of this relay's own origin coming back is dropped");
  t.equal(seen.counts.broadcastLooped, 2, "and counted, per envelope");
});

t.test("relay rules - unsubscriptions: the other hosts when the host's last subscriber leaves, upstream when nobody wants the topic", async (t) => {
  const { relay, seen } = core();
  relay.localSubscription(sub(POST));
  relay.networkSubscription(sub(POST));
  relay.localSubscription(sub(POST, false));
  t.same(seen.peers, ["1:demo.Board/Post", "0:demo.Board/Post"]);
  t.same(seen.publishers, ["1:demo.Board/Post"], "another host still wants it");
  relay.fromPublisher(published(POST, "e1"));
  t.same([seen.local.length, seen.network.length], [0, 1]);
  relay.networkSubscription(sub(POST, false));
  t.same(seen.publishers, ["1:demo.Board/Post", "0:demo.Board/Post"], "nobody wants it: unsubscribed upstream");
  t.equal(relay.size, 0, "the topic is forgotten");
  relay.localSubscription(sub(POST, false));
  t.same(seen.peers.length, 2, "an unsubscription of nothing changes nothing");
});

t.test("relay rules - malformed input is dropped whole and counted; the relay goes on", async (t) => {
  const { relay, seen } = core();
  relay.localSubscription(sub(POST));
  relay.fromPublisher([topicOf(POST)]); // no envelope
  relay.fromPublisher(published("demo.Board", "e")); // no method topic
  relay.fromPublisher([...published(POST, "e"), Buffer.from("x")]); // two frames
  relay.fromPublisher([encodeBatch(topicOf(POST), Array.from({ length: BROADCAST_LIMITS.maxEnvelopes + 1 }, () => Buffer.from("e")))]);
  relay.fromPeer(published(POST, "e")[0]!); // no stamp
  relay.fromPeer(Buffer.concat([topicOf(POST), encodeStamp("x", 0)])); // stamp, no envelope
  relay.localSubscription([Buffer.from([1])]); // a raw SUB subscribing to everything
  relay.networkSubscription([Buffer.from("\x01demo")]);
  relay.networkSubscription([Buffer.alloc(0)]);
  t.equal(seen.counts.broadcastMalformed, 9);
  t.same([seen.local.length, seen.network.length], [0, 0], "nothing forwarded");
  t.same(seen.publishers, ["1:demo.Board/Post"], "no bogus subscription went upstream");
  relay.fromPublisher(published(POST, "good"));
  t.equal(seen.local.length, 1, "and the relay still forwards what is well formed");
});

t.test("relay rules - topics are bounded; a full send queue drops and counts", async (t) => {
  const { relay, seen } = core({ maxTopics: 2 });
  relay.localSubscription(sub("a.B/One"));
  relay.localSubscription(sub("a.B/Two"));
  relay.localSubscription(sub("a.B/Three"));
  t.equal(relay.size, 2);
  t.equal(seen.counts.broadcastRefusedTopics, 1);
  t.same(seen.publishers, ["1:a.B/One", "1:a.B/Two"]);
  const full = core({ full: true });
  full.relay.localSubscription(sub(POST));
  full.relay.fromPublisher(published(POST, "e1", "e2"));
  t.equal(full.seen.counts.broadcastDropped, 2, "two envelopes dropped, counted");
});

// ---------------------------------------------------------------- real sockets

function runtimeDir(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-bcast-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function startRelay(t: { teardown(fn: () => unknown): void }, origin: string, limits = {}) {
  const dir = runtimeDir(t);
  const endpoints = relayEndpoints(dir, 7400);
  const relay = await BroadcastRelay.start({ origin, endpoints, networkBind: "tcp://127.0.0.1:0", log: silentLogger, limits });
  t.teardown(() => relay.close());
  return { relay, endpoints };
}

/** A subscriber recording what it gets: the envelopes (as strings) and each message's stamp. */
function recorder(t: { teardown(fn: () => unknown): void }, endpoint: string, method = POST) {
  const got: string[] = [];
  const stamps: { origin: string; seq: number; count: number }[] = [];
  const sub = new TopicSubscriber(endpoint, (frame) => {
    const batch = readBatch(frame, true)!;
    stamps.push({ ...batch.stamp!, count: batch.envelopes.length });
    for (const e of batch.envelopes) got.push(Buffer.from(e).toString());
  });
  sub.subscribe(topicOf(method));
  t.teardown(() => sub.close());
  return { got, stamps, sub };
}

/** Publishes probes until `ready` holds: subscriptions take a moment to reach a publisher (late joiners miss what came before). */
async function warm(publish: (text: string) => void, ready: () => boolean, what: string): Promise<void> {
  let i = 0;
  const end = Date.now() + 10_000;
  while (!ready()) {
    if (Date.now() > end) throw new Error(`not within 10 s: ${what}`);
    publish(`warm-${i++}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test("relay sockets - a publisher's envelopes reach every subscriber of the host, batched per topic, each exactly once", async (t) => {
  const { endpoints } = await startRelay(t, "h1~a");
  const a = recorder(t, endpoints.subscribe);
  const b = recorder(t, endpoints.subscribe);
  const other = recorder(t, endpoints.subscribe, "demo.Board/PostAll");
  const pub = new TopicPublisher(endpoints.publish);
  t.teardown(() => pub.close());
  await warm((text) => pub.publish(topicOf(POST), Buffer.from(text)), () => a.got.length > 0 && b.got.length > 0, "both subscribers reached");
  const before = [a.got.length, b.got.length];
  for (let i = 0; i < 500; i++) pub.publish(topicOf(POST), Buffer.from(`m${i}`));
  await until(() => a.got.length >= before[0]! + 500 && b.got.length >= before[1]! + 500, 10_000, "500 each");
  const expected = Array.from({ length: 500 }, (_, i) => `m${i}`);
  t.same(a.got.slice(before[0]), expected, "in order, none twice");
  t.same(b.got.slice(before[1]), expected);
  t.ok(a.stamps.length < a.got.length, `batched: ${a.got.length} envelopes in ${a.stamps.length} messages`);
  t.equal(other.got.length, 0, "a subscriber of demo.Board/PostAll got nothing of demo.Board/Post");
});

t.test("relay sockets - two hosts' relays: one hop each way, nothing echoed back", async (t) => {
  const h1 = await startRelay(t, "h1~a");
  const h2 = await startRelay(t, "h2~b");
  h1.relay.setPeer("h2", h2.relay.networkEndpoint);
  h2.relay.setPeer("h1", h1.relay.networkEndpoint);
  const on1 = recorder(t, h1.endpoints.subscribe);
  const on2 = recorder(t, h2.endpoints.subscribe);
  const pub1 = new TopicPublisher(h1.endpoints.publish);
  const pub2 = new TopicPublisher(h2.endpoints.publish);
  t.teardown(() => (pub1.close(), pub2.close()));
  await warm((text) => pub1.publish(topicOf(POST), Buffer.from(`1-${text}`)), () => on2.got.length > 0, "host 1 reaches host 2");
  await warm((text) => pub2.publish(topicOf(POST), Buffer.from(`2-${text}`)), () => on1.got.some((g) => g.startsWith("2-")), "host 2 reaches host 1");
  const mark = [on1.got.length, on2.got.length];
  for (let i = 0; i < 100; i++) pub1.publish(topicOf(POST), Buffer.from(`x${i}`));
  h2.relay.publish(topicOf(POST), Buffer.from("from-relay-2"));
  await until(() => on2.got.length >= mark[1]! + 101 && on1.got.length >= mark[0]! + 101, 10_000, "both hosts got all");
  const tail1 = on1.got.slice(mark[0]);
  t.equal(tail1.filter((g) => g.startsWith("x")).length, 100, "host 1's own subscriber: each of its 100 once (none came back from host 2)");
  t.equal(tail1.filter((g) => g === "from-relay-2").length, 1, "host 2's relay's own publish reached host 1 once");
  t.equal(on2.got.slice(mark[1]).filter((g) => g.startsWith("x")).length, 100, "host 2: each once");
  t.same(h1.relay.refused(), {}, "no loops, nothing malformed");
  t.same(h2.relay.refused(), {});
  t.same(h1.relay.stats(), { broadcastTopics: 1, broadcastPeers: 1 });
});

t.test("relay sockets - a subscriber that never reads costs at most its high-water mark and blocks nobody; what it missed shows as a gap", async (t) => {
  const hwm = 50;
  const { endpoints } = await startRelay(t, "h1~a", { highWaterMark: hwm });
  const live = recorder(t, endpoints.subscribe);
  // The stalled one: a raw SUB that stops reading once subscribed (its socket buffers fill, then the relay's pipe to it).
  const stalled = new zmq.Subscriber({ linger: 0, receiveHighWaterMark: hwm });
  stalled.subscribe(topicOf(POST));
  stalled.connect(endpoints.subscribe);
  t.teardown(() => stalled.close());
  const pub = new TopicPublisher(endpoints.publish, { limits: { highWaterMark: 100_000 } });
  t.teardown(() => pub.close());
  let first: Buffer[] | undefined;
  const firstRead = stalled.receive().then((m) => (first = m));
  await warm((text) => pub.publish(topicOf(POST), Buffer.from(text)), () => live.got.length > 0 && first !== undefined, "both subscribed");
  await firstRead;
  const mark = live.got.length;
  const n = 20_000;
  const payload = "p".repeat(1024);
  for (let i = 0; i < n; i++) {
    pub.publish(topicOf(POST), Buffer.from(`${i}:${payload}`));
    // Paced, a few batches in flight: a burst past the live subscriber's own high-water mark would drop for it too.
    if (i % 100 === 99) await until(() => live.got.length >= mark + i - 200, 10_000, "the live subscriber keeps up");
  }
  await until(() => live.got.length >= mark + n, 20_000, "the live subscriber got everything");
  t.equal(live.got.length - mark, n, "the live subscriber missed nothing while the other stalled");
  // Now the stalled one reads: what the pipes held (a few high-water marks), then a gap, then the newest.
  pub.publish(topicOf(POST), Buffer.from("after"));
  const gaps = new GapCounter();
  const firstBatch = readBatch(first![0], true)!;
  const s = firstBatch.stamp!;
  gaps.observe(s.origin, POST, s.seq, firstBatch.envelopes.length);
  let held = 0;
  let missed = 0;
  for (;;) {
    const batch = readBatch((await stalled.receive())[0], true)!;
    missed += gaps.observe(batch.stamp!.origin, POST, batch.stamp!.seq, batch.envelopes.length);
    held += batch.envelopes.length;
    if (batch.envelopes.some((e) => Buffer.from(e).toString() === "after")) break;
  }
  // What it can hold: the relay's pipe to it and its own (a high-water mark of batches each) and the socket's kernel buffers.
  t.ok(missed > n * 0.75, `most of the ${n} were dropped for the stalled subscriber alone (missed ${missed}, got ${held})`);
  t.ok(held < n / 4, "it got only what its high-water marks (and the socket buffers) held");
  // The live subscriber saw every sequence number: what the stalled one got and missed adds up to what was sent after its first message.
  await until(() => live.got.at(-1) === "after", 5000, "the live subscriber got the last one too");
  const last = live.stamps.at(-1)!;
  t.equal(held + missed, last.seq + last.count - (s.seq + firstBatch.envelopes.length), "every envelope is either received or counted as missed");
});

t.test("relay sockets - a raw peer's garbage is dropped and counted; the relay keeps serving", async (t) => {
  const { relay, endpoints } = await startRelay(t, "h1~a");
  const live = recorder(t, endpoints.subscribe);
  const raw = new zmq.Publisher({ linger: 0 });
  raw.connect(endpoints.publish);
  t.teardown(() => raw.close());
  const pub = new TopicPublisher(endpoints.publish);
  t.teardown(() => pub.close());
  await warm((text) => pub.publish(topicOf(POST), Buffer.from(text)), () => live.got.length > 0, "subscribed");
  // The raw PUB sends only topics its XSUB subscribed to: garbage under the real topic, then frames past the bounds.
  await raw.send([topicOf(POST)]);
  await raw.send([topicOf(POST), Buffer.from("a second frame")]);
  // A raw SUB subscribing to everything and to a bare prefix: ignored as subscriptions.
  const rawSub = new zmq.Subscriber({ linger: 0 });
  rawSub.subscribe();
  rawSub.subscribe("demo");
  rawSub.connect(endpoints.subscribe);
  t.teardown(() => rawSub.close());
  await until(() => (relay.refused().broadcastMalformed ?? 0) >= 4, 5000, "four malformed inputs counted");
  const mark = live.got.length;
  pub.publish(topicOf(POST), Buffer.from("still"));
  await until(() => live.got.length > mark, 5000, "still served");
  t.equal(live.got.at(-1), "still");
  t.same(relay.stats().broadcastTopics, 1, "the bogus subscriptions made no topic");
});

// ------------------------------------------------------ a process's side

t.test("process broadcast - a closed world: every node of the method gets it, through the interceptors, and none answers", async (t) => {
  const seen: string[] = [];
  const watch: InboundInterceptor = (next) => async (call) => {
    seen.push(`${call.method}:${call.mode}:${call.peerKind}`);
    return next(call);
  };
  const { Container } = await import("../../src/container/container.ts");
  const container = new Container({ id: "p", logger: () => silentLogger, interceptors: { inbound: [watch] } });
  t.teardown(() => container.close());
  await container.addComponent(board, 3);
  const broadcasts = new ProcessBroadcast({ container, log: silentLogger });
  container.broadcaster = (from, method, request, o) => broadcasts.send(from, method, request, o);
  broadcasts.send("tester", POST, { text: "hello", author: "t" });
  await container.caller.call("demo.Board/Announce", { text: "from a handler" });
  const nodes = container.localNodes();
  await until(() => nodes.every((n) => (n.state as { received?: number }).received === 2), 5000, "every node got both");
  const notes = nodes.map((n) => (n.state as { notes: { text: string; author: string }[] }).notes);
  for (const list of notes) t.same(list.map((x) => x.text), ["hello", "from a handler"]);
  t.equal(new Set(notes.map((list) => list[1]!.author)).size, 1, "the announcing node's id, the same note everywhere");
  t.ok(nodes.some((n) => n.id === notes[0]![1]!.author), "the node that ran Announce got its own broadcast too");
  t.equal(seen.filter((s) => s === `${POST}:${Mode.BROADCAST}:local`).length, 6, "each of the six deliveries passed the inbound interceptors");
  t.same(broadcasts.refused(), {});
});

t.test("process broadcast - wrong mode names the right verb; unknown methods are NOT_FOUND; a full queue is counted, not answered", async (t) => {
  const gate = deferred();
  const slowBoard = withHandlers(board, { [POST]: () => gate.promise }, { limits: { queue: 2 } });
  const container = await startContainer([slowBoard]);
  t.teardown(() => container.close());
  const broadcasts = new ProcessBroadcast({ container, log: silentLogger });
  const wrong = (() => {
    try {
      broadcasts.send("t", "demo.Board/Read", {});
    } catch (err) {
      return err as NodeBinError;
    }
  })()!;
  t.equal(wrong.code, "INVALID_ARGUMENT");
  t.match(wrong.message, /is SYNC, not BROADCAST: call it/);
  const callErr = await rejection(container.caller.call(POST, { text: "x" }));
  t.equal(callErr.code, "INVALID_ARGUMENT");
  t.match(callErr.message, /broadcast it \(ctx\.broadcast, client\.broadcast, `node-bin client broadcast`\)/);
  t.throws(() => broadcasts.send("t", "demo.Board/Pots", {}), { code: "NOT_FOUND" });
  t.throws(() => broadcasts.send("t", POST, { text: 5 }), { code: "INVALID_ARGUMENT" }, "a request that does not fit its type");
  // One running (holding the node), two queued, then the queue is full: refusals are counted, nobody is answered.
  for (let i = 0; i < 5; i++) broadcasts.send("t", POST, { text: `n${i}` });
  t.equal(broadcasts.refused().broadcastRefused, 2);
  gate.resolve();
  await until(() => container.localNodes()[0]!.getStats().handled === 3, 5000, "the three taken are handled");
});

t.test("process broadcast - joined to a relay: a node with a full queue holds its subscriber up (the relay's high-water mark drops, not the node), then gets everything", async (t) => {
  const { relay, endpoints } = await startRelay(t, "h1~a");
  let gate = deferred();
  gate.resolve();
  let handled = 0;
  const slowBoard = withHandlers(board, { [POST]: async () => (await gate.promise, handled++) }, { limits: { queue: 2 } });
  const container = await startContainer([slowBoard]);
  t.teardown(() => container.close());
  const broadcasts = new ProcessBroadcast({ container, log: silentLogger, host: { endpoints, relay: () => relay } });
  t.teardown(() => broadcasts.close());
  // The relay itself publishes (as the host agent does): probes until the process's SUB is subscribed.
  await warm((text) => relay.publish(topicOf(POST), encodeNote(text)), () => handled > 0, "subscribed");
  const node = container.localNodes()[0]!;
  await until(() => node.getStats().queued === 0, 5000, "the probes handled");
  // The node held by a handler that waits, and 50 broadcasts for a queue of 2.
  gate = deferred();
  const before = handled;
  for (let i = 0; i < 50; i++) relay.publish(topicOf(POST), encodeNote(`n${i}`));
  await until(() => node.getStats().queued === 2, 5000, "the queue full");
  t.same(broadcasts.refused(), {}, "nothing refused: the subscriber waits for room");
  gate.resolve();
  await until(() => handled === before + 50, 10_000, "all 50 handled once there was room");
  t.same(broadcasts.refused(), {}, "none refused, none missed");
});

/** An encoded BROADCAST envelope of demo.Board/Post, as a publisher makes it. */
function encodeNote(text: string): Uint8Array {
  const schema = board.schema.methods.get(POST)!;
  return encodeEnvelope(envelope({ plane: Plane.APPLICATION, mode: Mode.BROADCAST, kind: Kind.REQUEST, from: "t", method: POST, value: encodeMessage(schema.requestType, { text }, "test") }));
}

// ------------------------------------------------- the relay's endpoint in gossip

t.test("broadcast gossip - a host's record carries its relay's endpoint; an older host's carries none, and an older reader skips it", async (t) => {
  const { Gossip } = await import("../../src/membership/gossip.ts");
  const { decodeBroadcast, encodeNodes } = await import("../../src/membership/gossip-codec.ts");
  t.equal(decodeBroadcast(encodeNodes([], "tcp://10.0.0.5:41234")), "tcp://10.0.0.5:41234");
  t.equal(decodeBroadcast(encodeNodes([])), "", "a body from before broadcast names none");
  t.equal(decodeBroadcast(encodeNodes([], "ipc:///not/a/network/endpoint")), "", "only a tcp endpoint is taken");
  t.equal(decodeBroadcast(new Uint8Array([0xff, 0xff])), "", "garbage names none (never throws)");
  // A reader that knows only field 1 (nodes), as a node-bin before broadcast: the new field is skipped.
  const { NODEBIN_PROTO_DIR, loadProtoFiles } = await import("../../src/wire/proto.ts");
  const root = loadProtoFiles([join(NODEBIN_PROTO_DIR, "nodebin", "gossip.proto")]);
  const protobuf = (await import("protobufjs")).default;
  const OldBody = new protobuf.Type("OldBody").add(new protobuf.Field("nodes", 1, "nodebin.NodeEntry", "repeated"));
  (root.lookup("nodebin") as InstanceType<typeof protobuf.Namespace>).add(OldBody);
  const node = { id: "n1", component: "board", version: "1", host: "a", network: "", endpoints: ["tcp://10.0.0.5:1"], methods: [{ name: POST, mode: Mode.BROADCAST }], schema: "s", load: { queued: 0, capacity: 1 } };
  const old = OldBody.toObject(OldBody.decode(encodeNodes([node], "tcp://10.0.0.5:41234"))) as { nodes: { id: string }[] };
  t.same(old.nodes.map((n) => n.id), ["n1"], "an older reader still reads the nodes");

  // Two hosts' gossip, one advertising a relay and one not (an older host): each sees what the other says.
  let now = 1_000;
  const a = new Gossip({ self: { host: "a", endpoint: "tcp://a:7400", network: "", incarnation: 1, broadcast: "tcp://a:41234" }, seeds: ["tcp://b:7400"], now: () => now });
  const b = new Gossip({ self: { host: "b", endpoint: "tcp://b:7400", network: "", incarnation: 1 }, seeds: [], now: () => now });
  a.setLocalNodes([node], [{ id: "s", json: "{}" }]);
  for (let round = 0; round < 4; round++) {
    now += 1000;
    for (const syn of a.tick()) {
      for (const ack of b.receive(syn.bytes)) for (const ack2 of a.receive(ack.bytes, "tcp://b:7400")) b.receive(ack2.bytes);
    }
    for (const syn of b.tick()) {
      if (syn.endpoint !== "tcp://a:7400") continue;
      for (const ack of a.receive(syn.bytes)) for (const ack2 of b.receive(ack.bytes, "tcp://a:7400")) a.receive(ack2.bytes);
    }
  }
  t.equal(b.hosts().find((h) => h.host === "a")?.broadcast, "tcp://a:41234", "b knows a's relay (its nodes' record carries it)");
  t.same(b.hosts().find((h) => h.host === "a")?.nodes.map((n) => n.id), ["n1"]);
  const seenB = a.hosts().find((h) => h.host === "b");
  t.ok(seenB, "a knows b");
  t.equal(seenB!.broadcast, undefined, "b, a host without a relay, names none: a subscribes to nothing there");
});
