/**
 * The gossip wire form (proto/nodebin/gossip.proto): what travels between
 * discovery agents, how any bytes that arrive become a checked Incoming or
 * nothing, and how outgoing messages are built: digests in columns, records
 * packed into a byte budget with their schemas, node lists as the opaque
 * bodies records relay. Pure functions; the protocol (gossip.ts) decides what
 * to send and what a message means.
 */
import { join } from "node:path";
import { NODEBIN_PROTO_DIR, loadProtoFiles } from "../wire/proto.ts";
import { decodeStrict } from "../wire/message.ts";
import { NodeBinError } from "../wire/errors.ts";
import { sanitizeCapacity, sanitizeRemotes, type HostCapacity, type RemoteNetwork } from "./capacity.ts";
import type { NodeEntry } from "./table.ts";

/** What a host's record carries beside its nodes and relay: its capacity (a governor) and the networks it reaches (a gateway). */
export interface HostExtras {
  capacity?: HostCapacity | undefined;
  remotes?: RemoteNetwork[] | undefined;
}

/** The gossip protocol version this build speaks; messages of others are ignored (counted as `incompatible`). */
export const GOSSIP_PROTOCOL = 1;

const gossipRoot = loadProtoFiles([join(NODEBIN_PROTO_DIR, "nodebin", "gossip.proto")]);
const MessageType = gossipRoot.lookupType("nodebin.GossipMessage");
const BodyType = gossipRoot.lookupType("nodebin.GossipBody");

/** Largest message accepted. */
const MAX_RECEIVE_BYTES = 8 * 1024 * 1024;
const MAX_ID_LENGTH = 256;
/** Longest endpoint or network name accepted. */
export const MAX_ENDPOINT_LENGTH = 1024;
const MAX_ENTRIES = 100_000;
/** Most schema ids a SYN or ACK lists as held (beyond that, none are listed and their JSON comes along). */
export const MAX_HELD_SCHEMAS = 256;

/** One host's digest: the versions of its record, and whether the sender holds it as dead (a tombstone). */
export interface Digest {
  host: string;
  incarnation: number;
  version: number;
  heartbeat: number;
  dead: boolean;
}

/** A host's record as it travels (GossipRecord): its nodes an encoded GossipBody, its schemas by id. */
export interface WireRecord {
  host: string;
  endpoint: string;
  network: string;
  incarnation: number;
  version: number;
  heartbeat: number;
  schemaIds: string[];
  body: Uint8Array;
}

/** A decoded, checked message. */
export interface Incoming {
  host: string;
  endpoint: string;
  incarnation: number;
  kind: "syn" | "ack" | "ack2";
  full: boolean;
  first: string;
  last: string;
  digests: Digest[];
  records: WireRecord[];
  requests: string[];
  schemas: Map<string, string>;
  /** Schema ids the sender holds (GossipSyn.schemas, GossipAck.held_schemas): JSON it need not be sent. */
  held: Set<string> | undefined;
}

/** What a record costs to send, schemas excluded: WireRecord plus its estimated encoded size (recordBytes). */
export type PackableRecord = WireRecord & { recordBytes: number };

// ---- encoding ----

/**
 * The encoded nodebin.GossipBody of `nodes` (and of the host's broadcast
 * relay endpoint, when it has one). Throws INVALID_ARGUMENT when a node
 * cannot be encoded.
 */
export function encodeNodes(nodes: NodeEntry[], broadcast?: string, summary: HostExtras = {}): Uint8Array {
  try {
    const { capacity, remotes } = summary;
    return BodyType.encode(BodyType.fromObject({ nodes, ...(broadcast ? { broadcast } : {}), ...(capacity ? { capacity } : {}), ...(remotes?.length ? { remotes } : {}) })).finish();
  } catch (err) {
    throw new NodeBinError("INVALID_ARGUMENT", `cannot encode local nodes: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** The nodes of an encoded nodebin.GossipBody. Throws (protobufjs's error) when it does not decode. */
export function decodeNodes(body: Uint8Array): NodeEntry[] {
  // toObject() converts each node as NodeEntry's own toObject() would, with the same options; it is typed `{ [k: string]: any }`, so the shape is stated here.
  const nodes: NodeEntry[] = BodyType.toObject(decodeStrict(BodyType, body), { defaults: true, arrays: true }).nodes;
  for (const entry of nodes) entry.load ??= { queued: 0, capacity: 0 };
  return nodes;
}

/**
 * The broadcast relay endpoint an encoded nodebin.GossipBody advertises: ""
 * when it names none (an older host), or one that is no tcp endpoint of a
 * sane length. Never throws.
 */
export function decodeBroadcast(body: Uint8Array): string {
  try {
    const { broadcast } = BodyType.toObject(decodeStrict(BodyType, body), { defaults: true }) as { broadcast: string };
    return typeof broadcast === "string" && broadcast.length <= MAX_ENDPOINT_LENGTH && broadcast.startsWith("tcp://") ? broadcast : "";
  } catch {
    return "";
  }
}

/**
 * What a host record says it can take (GossipBody.capacity, a governor's) and
 * reaches (GossipBody.remotes, a gateway's), bounded (membership/capacity.ts).
 * Never throws: a body that does not decode says nothing.
 */
export function decodeExtras(body: Uint8Array): { capacity?: HostCapacity; remotes: RemoteNetwork[] } {
  try {
    const o = BodyType.toObject(decodeStrict(BodyType, body), { defaults: false, arrays: true, longs: Number }) as { capacity?: unknown; remotes?: unknown };
    const capacity = sanitizeCapacity(o.capacity);
    return { ...(capacity ? { capacity } : {}), remotes: sanitizeRemotes(o.remotes) };
  } catch {
    return { remotes: [] };
  }
}

/** Whether `body` decodes as a nodebin.GossipBody (a record's body is relayed as is, but checked once). */
export function bodyDecodes(body: Uint8Array): boolean {
  try {
    decodeStrict(BodyType, body);
    return true;
  } catch {
    return false;
  }
}

/** Estimated encoded size of a record, schemas excluded. */
export function recordBytes(record: Pick<WireRecord, "host" | "endpoint" | "network" | "body" | "schemaIds">): number {
  return record.host.length + record.endpoint.length + record.network.length + record.body.length + record.schemaIds.reduce((sum, id) => sum + id.length + 2, 0) + 32;
}

/** The columns of nodebin.GossipDigests for `digests`, in their order (dead ones listed by index). */
export function columns(digests: Digest[]) {
  const columns = { hosts: [] as string[], incarnations: [] as number[], versions: [] as number[], heartbeats: [] as number[], dead: [] as number[] };
  for (const d of digests) {
    if (d.dead) columns.dead.push(columns.hosts.length);
    columns.hosts.push(d.host);
    columns.incarnations.push(d.incarnation);
    columns.versions.push(d.version);
    columns.heartbeats.push(d.heartbeat);
  }
  return columns;
}

/**
 * Records (with their schemas, each once) that fit in `room` bytes; one
 * that does not fit goes alone when there is any room, so that a record
 * larger than the room still goes (the bucket then runs a short debt).
 * Schemas in `held` are not sent; `schemaJson` gives the JSON of the others.
 * `trimmed` counts the records left out.
 */
export function pack(states: PackableRecord[], room: number, held: Set<string> | undefined, schemaJson: (id: string) => string | undefined) {
  const records: object[] = [];
  const schemas = new Map<string, string>();
  let trimmed = 0;
  for (const state of states) {
    let cost = state.recordBytes;
    for (const id of state.schemaIds) if (!schemas.has(id) && !held?.has(id)) cost += id.length + (schemaJson(id)?.length ?? 0) + 8;
    if (cost > room && (records.length > 0 || room <= 0)) {
      trimmed++;
      continue;
    }
    room -= cost;
    for (const id of state.schemaIds) {
      const json = schemaJson(id);
      if (json !== undefined && !held?.has(id)) schemas.set(id, json);
    }
    records.push({
      host: state.host,
      endpoint: state.endpoint,
      network: state.network,
      incarnation: state.incarnation,
      version: state.version,
      heartbeat: state.heartbeat,
      schemas: state.schemaIds,
      body: state.body,
    });
  }
  return { records, schemas: [...schemas].map(([id, json]) => ({ id, json })), trimmed };
}

/** A nodebin.GossipMessage from `sender` with `body` (its syn, ack or ack2 field), encoded. */
export function encode(sender: { host: string; endpoint: string; incarnation: number }, body: object): Uint8Array {
  return MessageType.encode({ protocol: GOSSIP_PROTOCOL, host: sender.host, endpoint: sender.endpoint, incarnation: sender.incarnation, ...body }).finish();
}

// ---- decoding: any bytes in, a checked Incoming or nothing out ----

/** Whether `value` can be a host or schema id: a string of 1 to 256 characters. */
export function validId(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_ID_LENGTH;
}

/** A uint64 as a safe integer, from protobufjs's number or Long. */
function u64(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  if (value === null || typeof value !== "object") return undefined;
  const { high, low } = value as { high?: unknown; low?: unknown };
  if (typeof high !== "number" || typeof low !== "number" || high < 0 || high > 0x1fffff) return undefined;
  return high * 4294967296 + (low >>> 0);
}

function u32(value: unknown): number | undefined {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 0xffffffff ? value : undefined;
}

/** Decodes and checks a message; "incompatible" for another protocol version; undefined when malformed or too large. */
export function parse(bytes: Uint8Array): Incoming | "incompatible" | undefined {
  if (bytes.length > MAX_RECEIVE_BYTES) return undefined;
  let m: Record<string, unknown>;
  try {
    m = decodeStrict(MessageType, bytes) as unknown as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (m.protocol !== GOSSIP_PROTOCOL) return m.protocol === 0 || typeof m.protocol !== "number" ? undefined : "incompatible";
  const incarnation = u64(m.incarnation);
  const kind = m.body;
  if (!validId(m.host) || typeof m.endpoint !== "string" || m.endpoint.length > MAX_ENDPOINT_LENGTH || incarnation === undefined) return undefined;
  if (kind !== "syn" && kind !== "ack" && kind !== "ack2") return undefined;
  const body = m[kind] as Record<string, unknown>;
  const message: Incoming = { host: m.host, endpoint: m.endpoint, incarnation, kind, full: false, first: "", last: "", digests: [], records: [], requests: [], schemas: new Map(), held: undefined };
  if (kind === "syn") {
    const { full, rangeFirst, rangeLast } = body as { full: unknown; rangeFirst: unknown; rangeLast: unknown };
    if (typeof full !== "boolean" || typeof rangeFirst !== "string" || typeof rangeLast !== "string") return undefined;
    if (!full && (rangeFirst === "") !== (rangeLast === "")) return undefined;
    message.full = full;
    message.first = full ? "" : rangeFirst;
    message.last = full ? "" : rangeLast;
  }
  if (kind !== "ack2") {
    const held = (kind === "syn" ? body.schemas : body.heldSchemas) as unknown[];
    if (!Array.isArray(held) || held.length > MAX_HELD_SCHEMAS || !held.every(validId)) return undefined;
    if (held.length) message.held = new Set(held as string[]);
  }
  if (kind !== "ack2") {
    const digests = parseDigests(body.digests);
    if (!digests) return undefined;
    message.digests = digests;
  }
  if (kind !== "syn") {
    const records = body.records as unknown[];
    const schemas = body.schemas as { id: unknown; json: unknown }[];
    if (!Array.isArray(records) || records.length > MAX_ENTRIES || !Array.isArray(schemas) || schemas.length > MAX_ENTRIES) return undefined;
    for (const r of records) {
      const record = parseRecord(r as Record<string, unknown>);
      if (!record) return undefined;
      message.records.push(record);
    }
    for (const s of schemas) {
      if (!validId(s?.id) || typeof s.json !== "string") return undefined;
      message.schemas.set(s.id, s.json);
    }
  }
  if (kind === "ack") {
    const requests = body.requests as unknown[];
    if (!Array.isArray(requests) || requests.length > MAX_ENTRIES || !requests.every(validId)) return undefined;
    message.requests = requests as string[];
  }
  return message;
}

function parseDigests(value: unknown): Digest[] | undefined {
  if (value === null || value === undefined) return [];
  const { hosts, incarnations, versions, heartbeats, dead } = value as Record<string, unknown[]>;
  if (![hosts, incarnations, versions, heartbeats, dead].every(Array.isArray)) return undefined;
  const n = hosts!.length;
  if (n > MAX_ENTRIES || incarnations!.length !== n || versions!.length !== n || heartbeats!.length !== n) return undefined;
  const out: Digest[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const host = hosts![i];
    const incarnation = u64(incarnations![i]);
    const version = u32(versions![i]);
    const heartbeat = u32(heartbeats![i]);
    if (!validId(host) || incarnation === undefined || version === undefined || heartbeat === undefined) return undefined;
    out[i] = { host, incarnation, version, heartbeat, dead: false };
  }
  for (const index of dead!) {
    if (typeof index !== "number" || index >= n) return undefined;
    out[index]!.dead = true;
  }
  return out;
}

function parseRecord(r: Record<string, unknown> | null): WireRecord | undefined {
  if (!r) return undefined;
  const incarnation = u64(r.incarnation);
  const version = u32(r.version);
  const heartbeat = u32(r.heartbeat);
  const { host, endpoint, network, schemas, body } = r;
  if (!validId(host) || incarnation === undefined || version === undefined || heartbeat === undefined) return undefined;
  // A record without an endpoint would be a peer nobody can reach.
  if (typeof endpoint !== "string" || !endpoint || endpoint.length > MAX_ENDPOINT_LENGTH || typeof network !== "string" || network.length > MAX_ENDPOINT_LENGTH) return undefined;
  if (!Array.isArray(schemas) || schemas.length > MAX_ENTRIES || !schemas.every(validId) || !(body instanceof Uint8Array)) return undefined;
  // A copy: the decoded bytes share the whole message's buffer, which a kept record would pin.
  return { host, endpoint, network, incarnation, version, heartbeat, schemaIds: schemas as string[], body: new Uint8Array(body) };
}
