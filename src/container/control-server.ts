/**
 * The control server of one process: serves the control methods
 * (wire/control.ts) at the process's control endpoint (Envelope.to empty, or
 * a node id for control requests about that node), typed, through one path:
 * authority check (who may ask: wire/control.ts AUTHORITY, by the kind of
 * peer the transport saw), decode, handler, encode, answer. ASYNC methods are
 * one-way: nothing is answered, failures are logged at debug level.
 */
import type protobuf from "protobufjs";
import type { Logger } from "../component/context.ts";
import { AUTHORITY, EncodedReply, mayAsk, readRequest, type AnyControlMethod, type ControlContext, type ControlHandler, type ControlMethod, type ControlService, type PeerKind } from "../wire/control.ts";
import { Kind, Plane, type Envelope } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { decodeMessage, encodeMessage } from "../wire/message.ts";
import type { Peer } from "../transport/transport.ts";

interface Served {
  method: AnyControlMethod;
  run(message: protobuf.Message, ctx: ControlContext): unknown;
  /** Who may ask, for a method not in AUTHORITY (a plugin's service): see serveOwn(). */
  who?: readonly PeerKind[];
}

/** Sends an answer to a request, back on the connection it came in on (`from`). */
export type Answer = (request: Envelope, value: Uint8Array | undefined, from: Peer, error: NodeBinError | undefined) => void;

export class ControlServer implements ControlService {
  private readonly served = new Map<string, Served>();

  constructor(
    /** The process's id: the origin of the errors it answers with. */
    private readonly id: string,
    private readonly answer: Answer,
    private readonly log: Logger,
  ) {}

  /** Serves `method` (replacing any handler it had). */
  serve<Req, Res>(method: ControlMethod<Req, Res>, handler: ControlHandler<Req, Res>): void {
    this.served.set(method.schema.fullName, { method, run: (message, ctx) => handler(readRequest(method, message), ctx) });
  }

  /**
   * Serves a method that is not one of node-bin's own (a plugin's service,
   * from its .proto), to the peer kinds in `who` only: AUTHORITY is the table
   * of node-bin's methods; a plugin's methods are host-only (the governor
   * passes HOST_ONLY), whatever they are.
   */
  serveOwn<Req, Res>(method: ControlMethod<Req, Res>, handler: ControlHandler<Req, Res>, who: readonly PeerKind[]): void {
    if (AUTHORITY.has(method.schema.fullName)) throw new NodeBinError("ALREADY_EXISTS", `${method.schema.fullName} is one of node-bin's own control methods`);
    this.served.set(method.schema.fullName, { method, run: (message, ctx) => handler(readRequest(method, message), ctx), who });
  }

  /** Stops serving `method`. */
  unserve(method: AnyControlMethod): void {
    this.served.delete(method.schema.fullName);
  }

  /** Handles one envelope addressed to the control endpoint. Never throws. */
  handle(env: Envelope, from: Peer): void {
    const peer = from.kind;
    if (env.kind !== Kind.REQUEST) return;
    if (env.plane !== Plane.CONTROL) {
      this.answer(env, undefined, from, new NodeBinError("INVALID_ARGUMENT", `application request for ${env.method} has no node id; pull the membership table and address a node`, { origin: this.id }));
      return;
    }
    const served = this.served.get(env.method);
    if (!served) {
      // Authority first for node-bin's own methods: a peer that may not ask one learns nothing of whether this process serves it.
      const denied = AUTHORITY.has(env.method) && !mayAsk(env.method, peer);
      const error = denied
        ? new NodeBinError("PERMISSION_DENIED", `${env.method} is not served to ${peer} peers (${from.via ?? (peer === "network" ? "tcp" : peer)})`, { origin: this.id, details: { method: env.method, peer } })
        : new NodeBinError("UNIMPLEMENTED", `unknown control method ${env.method}`, { origin: this.id });
      this.answer(env, undefined, from, error);
      return;
    }
    const { schema, oneWay } = served.method;
    const fail = (err: unknown) => {
      const e = NodeBinError.from(err);
      if (!e.origin) e.origin = this.id;
      if (oneWay) this.log.debug(`control ${env.method} failed: ${e}`);
      else this.answer(env, undefined, from, e);
    };
    if (served.who ? !(peer === "local" || served.who.includes(peer)) : !mayAsk(env.method, peer)) {
      fail(new NodeBinError("PERMISSION_DENIED", `${env.method} is not served to ${peer} peers (${from.via ?? (peer === "network" ? "tcp" : peer)})`, { details: { method: env.method, peer } }));
      return;
    }
    let result: unknown;
    try {
      result = served.run(decodeMessage(schema.requestType, env.value, `request of ${env.method}`), { env, peer: from });
    } catch (err) {
      fail(err);
      return;
    }
    const reply = (value: unknown) => {
      if (oneWay) return;
      try {
        this.answer(env, value instanceof EncodedReply ? value.bytes : encodeMessage(schema.responseType, value ?? {}, `reply of ${env.method}`), from, undefined);
      } catch (err) {
        fail(err);
      }
    };
    if (result instanceof Promise) result.then(reply, fail);
    else reply(result);
  }
}
