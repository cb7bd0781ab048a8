/**
 * The control-plane protocol every process serves at its own endpoint
 * (Envelope.to empty), typed: each method of nodebin.Control and
 * nodebin.Governor (proto/nodebin/control.proto) is a ControlMethod that
 * carries its request and reply types, so servers and callers get plain,
 * typed objects and never cast. The TypeScript interfaces below mirror the
 * .proto messages field by field (protobufjs's lowerCamelCase names);
 * test/unit/control.test.ts round-trips a value of each through the real
 * codec, so a field renamed on one side only fails a test.
 *
 * AUTHORITY says, for each method, from which kind of peer it may be asked:
 * the one table of who may ask what (enforced by container/control-server.ts).
 */
import protobuf from "protobufjs";
import { hasIpc } from "../platform/platform.ts";
import { Kind, Plane, encodeEnvelope, envelope, nodebinRoot, type Envelope } from "./envelope.ts";
import { NodeBinError } from "./errors.ts";
import { encodeMessage } from "./message.ts";
import { Mode, Schema, type MethodSchema } from "./schema.ts";

export const CONTROL_SCHEMA = Schema.fromRoot(nodebinRoot);

// ------------------------------------------------------------------ messages

/** A method and its mode as a node entry lists it (nodebin.MethodEntry). */
export interface MethodEntry {
  name: string;
  mode: Mode;
}

/** What a node advertises about its queue (nodebin.Load). */
export interface NodeLoad {
  /** Messages waiting in the node's queue. */
  queued: number;
  /** Its queue limit. */
  capacity: number;
}

/** A node as the network knows it (nodebin.NodeEntry). */
export interface NodeEntry {
  id: string;
  component: string;
  version: string;
  host: string;
  network: string;
  /** Where to reach it; empty for nodes only reachable in-process. */
  endpoints: string[];
  methods: MethodEntry[];
  /** Id of its schema in the table. */
  schema: string;
  load: NodeLoad;
}

/** A component's types, stored once per content hash (nodebin.Schema). */
export interface SchemaRecord {
  id: string;
  json: string;
}

export type Empty = Record<string, never>;

export interface PullRequest {
  knownVersion: number;
}
export interface PullReply {
  nodes: NodeEntry[];
  schemas: SchemaRecord[];
  version: number;
  unchanged: boolean;
  /** The hosts the answering agent knows, with their capacity (empty from a process that is no agent). */
  hosts?: HostSummary[];
  /** The answering process's host and network ("" from an older one). */
  host?: string;
  network?: string;
}
export interface RegisterRequest {
  nodes: NodeEntry[];
  schemas: SchemaRecord[];
  leaseMs: number;
  seeds: string[];
  container: string;
  pid: number;
}
export interface RegisterReply {
  version: number;
  host: string;
}
export interface DeregisterRequest {
  container: string;
}
export interface GossipFrame {
  payload: Uint8Array;
}
export interface PingReply {
  pid: number;
  container: string;
  node: string;
  component: string;
  version: string;
  phase: string;
  handled: number;
  failed: number;
  rejected: number;
  queued: number;
  capacity: number;
  queueWaitMs: number;
  idleMs: number;
  uptimeMs: number;
  rssBytes: number;
  endpoints: string[];
  role: string;
  min: number;
  max: number;
  /** Input dropped or refused since start, by reason (see control.proto). */
  refused: Record<string, number>;
  /** Requests handled per method and code, with durations (the metrics plugin's count; empty without it). */
  calls: CallCount[];
  /** Upper bounds (s) of the duration buckets of every CallCount, ascending. */
  callBuckets: number[];
}
/** One method and outcome code's calls at a process (nodebin.CallCount). */
export interface CallCount {
  method: string;
  /** "OK" or the error code. */
  code: string;
  count: number;
  /** Summed duration (s). */
  seconds: number;
  /** Cumulative: calls that took at most callBuckets[i] seconds. */
  buckets: number[];
}
export interface DrainRequest {
  exportState: boolean;
}
export interface DrainReply {
  state: Uint8Array;
  handled: number;
}
export interface ImportStateRequest {
  state: Uint8Array;
}
export interface ResumeRequest {
  reason: string;
}
export interface CapacityRequest {
  component: string;
  method: string;
  fromHost: string;
  /** Hosts of the network it is in now whose governors had no free slot. */
  visited: string[];
  /** Where capacity may be made: "host", "network", or "any" / "" (remote networks too). */
  scope?: string;
  /** The content hash of the component's code, once a governor that knows it has set it. */
  hash?: string;
  /** The networks it came through (a gateway adds the one it leaves). */
  networks?: string[];
}
/** One component at one host (nodebin.ComponentLoad). */
export interface ComponentLoad {
  name: string;
  /** Content hash of its code at that host ("": not shared). */
  hash: string;
  nodes: number;
  queued: number;
  capacity: number;
  max: number;
}
/** What a host can take (nodebin.HostCapacity). */
export interface HostCapacity {
  slots: number;
  used: number;
  components: ComponentLoad[];
  provider: boolean;
}
/** A network beyond a gateway, summed up (nodebin.RemoteNetwork). */
export interface RemoteNetwork {
  network: string;
  hosts: number;
  slots: number;
  free: number;
  components: string[];
}
/** One host with what it can take, as a pull reports it (nodebin.HostSummary). */
export interface HostSummary {
  host: string;
  network: string;
  endpoint: string;
  capacity?: HostCapacity | undefined;
  remotes: RemoteNetwork[];
  role: string;
}
export interface BroadcastRequest {
  method: string;
  value: Uint8Array;
  meta: Record<string, string>;
}
export interface FetchComponentRequest {
  name: string;
  hash: string;
}
export interface FetchComponentReply {
  /** A ComponentArchive sealed with the cluster key (see control.proto). */
  sealed: Uint8Array;
}
export interface GovernorStatusReply {
  json: string;
}
export interface GovernorSetRequest {
  key: string;
  component: string;
  value: number;
}
export interface GovernorRollRequest {
  components: string[];
}
export interface GovernorStopRequest {
  keepChildren: boolean;
}

// ------------------------------------------------------------------- methods

/**
 * One control method with its request and reply types. `Req` and `Res` exist
 * only for the type checker (the fields are never set).
 */
export interface ControlMethod<Req, Res> {
  readonly schema: MethodSchema;
  /** ASYNC: one-way, nothing is answered. */
  readonly oneWay: boolean;
  readonly _request?: Req;
  readonly _reply?: Res;
}

function control<Req, Res>(service: "Control" | "Governor", name: string): ControlMethod<Req, Res> {
  const schema = CONTROL_SCHEMA.methods.get(`nodebin.${service}/${name}`);
  if (!schema) throw new Error(`proto/nodebin/control.proto has no nodebin.${service}/${name}`);
  return { schema, oneWay: schema.mode === Mode.ASYNC };
}

/** nodebin.Control/Pull: the process's membership table. */
export const PULL = control<PullRequest, PullReply>("Control", "Pull");
/** nodebin.Control/Register: a container's lease on its nodes at its host's agent. */
export const REGISTER = control<RegisterRequest, RegisterReply>("Control", "Register");
/** nodebin.Control/Deregister: a container leaving. */
export const DEREGISTER = control<DeregisterRequest, Empty>("Control", "Deregister");
/** nodebin.Control/Gossip: one gossip message between host agents (one-way). */
export const GOSSIP = control<GossipFrame, void>("Control", "Gossip");
/** nodebin.Control/Ping: a child's liveness and load, asked by its governor. */
export const PING = control<Empty, PingReply>("Control", "Ping");
/** nodebin.Control/Drain: stop taking messages, finish the queue, answer with the state. */
export const DRAIN = control<DrainRequest, DrainReply>("Control", "Drain");
/** nodebin.Control/ImportState: a held node takes its predecessor's state and starts serving. */
export const IMPORT_STATE = control<ImportStateRequest, Empty>("Control", "ImportState");
/** nodebin.Control/Release: the successor took a drained node's state; the drained node shuts down. */
export const RELEASE = control<Empty, Empty>("Control", "Release");
/** nodebin.Control/Resume: the successor did not take it; the drained node takes its state back and serves. */
export const RESUME = control<ResumeRequest, Empty>("Control", "Resume");
/** nodebin.Control/YieldAgent: a process acting as host agent gives the role back to the governor. */
export const YIELD_AGENT = control<Empty, Empty>("Control", "YieldAgent");
/** nodebin.Control/RequestCapacity: a caller found every node full (one-way). */
export const REQUEST_CAPACITY = control<CapacityRequest, void>("Control", "RequestCapacity");
/** nodebin.Control/Broadcast: a client's broadcast, published by the process it is connected to. */
export const BROADCAST = control<BroadcastRequest, Empty>("Control", "Broadcast");
/** nodebin.Control/FetchComponent: a component's code, sealed, for a governor that lacks it (governor/code-share.ts). */
export const FETCH_COMPONENT = control<FetchComponentRequest, FetchComponentReply>("Control", "FetchComponent");

/** nodebin.Governor/*: the governor's management API. */
export const GOVERNOR_STATUS = control<Empty, GovernorStatusReply>("Governor", "Status");
export const GOVERNOR_SET = control<GovernorSetRequest, GovernorStatusReply>("Governor", "Set");
export const GOVERNOR_STOP = control<GovernorStopRequest, Empty>("Governor", "Stop");
/** nodebin.Governor/Roll: replace the children of some components (or all), one at a time, state handed over. */
export const GOVERNOR_ROLL = control<GovernorRollRequest, GovernorStatusReply>("Governor", "Roll");
export const GOVERNOR_CAPACITY = control<CapacityRequest, void>("Governor", "RequestCapacity");

/**
 * The peer a control request came from, as the transport that carried it
 * knows it (transport/transport.ts Peer, which satisfies this: wire/ cannot
 * import from transport/): its kind, the way back on its connection, and the
 * outbound link it came back on, if it did.
 */
export interface ControlPeer {
  readonly kind: PeerKind;
  readonly reply?: (frame: Uint8Array) => void;
  readonly link?: string;
}

/** What a control handler knows of the request beyond its body. */
export interface ControlContext {
  readonly env: Envelope;
  /** Who it came from, as the transport that carried it knows (never as the envelope claims). */
  readonly peer: ControlPeer;
}

/**
 * Serves one control method: gets the typed request; returns (or resolves
 * with) the typed reply, or an EncodedReply; throws a NodeBinError to answer
 * with its code.
 */
export type ControlHandler<Req, Res> = (request: Req, ctx: ControlContext) => Res | EncodedReply | Promise<Res | EncodedReply>;

/** Where control methods are served (a process's ControlServer). */
export interface ControlService {
  serve<Req, Res>(method: ControlMethod<Req, Res>, handler: ControlHandler<Req, Res>): void;
}

/** Any control method, whatever its types (for tables keyed by method). */
export type AnyControlMethod = ControlMethod<unknown, unknown>;

// ----------------------------------------------------------------- authority

/**
 * The kinds of peer a frame can come from, as the transport that carried it
 * knows (never as the frame claims):
 * - `local`: this same process (the direct transport);
 * - `host`: a process of this user on this host, through an ipc socket in the
 *   private runtime directory (mode 0700: the host itself);
 * - `network`: anything that reached a tcp port.
 */
export type PeerKind = "local" | "host" | "network";

const ANYONE: readonly PeerKind[] = ["local", "host", "network"];
/**
 * Methods only the host itself may ask. Where libzmq has no ipc transport
 * (Windows), same-host processes talk over loopback tcp: there they are
 * served to the network kind too, and the host is as open as its tcp ports.
 */
export const HOST_ONLY: readonly PeerKind[] = hasIpc ? ["local", "host"] : ANYONE;

/**
 * Who may ask what: one row per control method. A method missing here is
 * served to no peer but the process itself.
 */
export const AUTHORITY: ReadonlyMap<string, readonly PeerKind[]> = authorityTable([
  // What crosses hosts: clients and other hosts' processes pull tables, agents gossip,
  // callers anywhere ask a full node's process for capacity.
  [PULL, ANYONE],
  [GOSSIP, ANYONE],
  [REQUEST_CAPACITY, ANYONE],
  // A client's broadcast, whichever host it connects to (with a cluster key, members only reach here).
  [BROADCAST, ANYONE],
  // Another host's governor fetching a component's code: asked over tcp; its handler serves it
  // only when the process has a cluster key (then only members reach it), sealed with that key.
  [FETCH_COMPONENT, ANYONE],
  // A host's containers and their governor, over the private runtime directory.
  [REGISTER, HOST_ONLY],
  [DEREGISTER, HOST_ONLY],
  [PING, HOST_ONLY],
  [DRAIN, HOST_ONLY],
  [IMPORT_STATE, HOST_ONLY],
  [RELEASE, HOST_ONLY],
  [RESUME, HOST_ONLY],
  [YIELD_AGENT, HOST_ONLY],
  [GOVERNOR_STATUS, HOST_ONLY],
  [GOVERNOR_SET, HOST_ONLY],
  [GOVERNOR_STOP, HOST_ONLY],
  [GOVERNOR_ROLL, HOST_ONLY],
  [GOVERNOR_CAPACITY, HOST_ONLY],
]);

function authorityTable(rows: [AnyControlMethod, readonly PeerKind[]][]): ReadonlyMap<string, readonly PeerKind[]> {
  return new Map(rows.map(([method, who]) => [method.schema.fullName, who]));
}

/** Whether a peer of this kind may ask for `method` (a control method's full name). */
export function mayAsk(method: string, peer: PeerKind): boolean {
  return peer === "local" || (AUTHORITY.get(method)?.includes(peer) ?? false);
}

// -------------------------------------------------------------------- codec

/** How every control message is turned into its plain form: 64-bit numbers as numbers, absent fields as defaults. */
const PLAIN: protobuf.IConversionOptions = { longs: Number, arrays: true, defaults: true };

/**
 * The plain, typed form of a decoded control request. The one place where a
 * protobufjs message becomes a typed object: protobufjs types toObject() as
 * `{ [k: string]: any }`, and the interfaces above are checked against the
 * .proto by test/unit/control.test.ts.
 */
export function readRequest<Req>(method: ControlMethod<Req, unknown>, message: protobuf.Message): Req {
  return plainOf(method.schema.requestType, message);
}

/**
 * The plain, typed form of a decoded control reply (see readRequest): what a
 * caller's callEndpoint() resolved with. Throws INTERNAL for anything else.
 */
export function readReply<Res>(method: ControlMethod<unknown, Res>, message: unknown): Res {
  if (!(message instanceof protobuf.Message)) throw new NodeBinError("INTERNAL", `reply of ${method.schema.fullName} is not a decoded message`);
  return plainOf(method.schema.responseType, message);
}

/**
 * A reply its handler encoded already (the membership table encodes its pull
 * replies itself, without a per-field check of what it built).
 */
export class EncodedReply {
  constructor(readonly bytes: Uint8Array) {}
}

// protobufjs's own typing of toObject() is `{ [k: string]: any }`: widened to `any` here, once.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function plainOf(type: protobuf.Type, message: protobuf.Message): any {
  return type.toObject(message, PLAIN);
}

/**
 * The frame of a one-way (ASYNC) control request from endpoint `from` to
 * endpoint `to` ("" is the receiving process's control endpoint; a node id
 * reaches the control endpoint of the node's process). Nothing answers it.
 */
export function oneWayControlFrame<Req>(method: ControlMethod<Req, void>, request: Req, from: string, to = "", control: Record<string, string> = {}): Uint8Array {
  const m = method.schema;
  return encodeEnvelope(
    envelope({
      plane: Plane.CONTROL,
      mode: Mode.ASYNC,
      kind: Kind.REQUEST,
      from,
      to,
      method: m.fullName,
      value: encodeMessage(m.requestType, request, `request of ${m.fullName}`),
      control,
    }),
  );
}
