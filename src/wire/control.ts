/** The control-plane protocol every process serves at its own endpoint (Envelope.to empty). */
import { Kind, Plane, encodeEnvelope, envelope, nodebinRoot } from "./envelope.ts";
import { encodeMessage } from "./message.ts";
import { Mode, Schema, type MethodSchema } from "./schema.ts";

export const CONTROL_SCHEMA = Schema.fromRoot(nodebinRoot);

const method = (name: string): MethodSchema => CONTROL_SCHEMA.methods.get(`nodebin.Control/${name}`)!;

/** nodebin.Control/Pull: the process's membership table. */
export const PULL = method("Pull");
/** nodebin.Control/Register: a container's lease on its nodes at its host's agent. */
export const REGISTER = method("Register");
/** nodebin.Control/Deregister: a container leaving. */
export const DEREGISTER = method("Deregister");
/** nodebin.Control/Gossip: one gossip message between host agents (one-way). */
export const GOSSIP = method("Gossip");
/** nodebin.Control/Ping: a child's liveness and load, asked by its governor. */
export const PING = method("Ping");
/** nodebin.Control/Drain: stop taking messages, finish the queue, answer with the state. */
export const DRAIN = method("Drain");
/** nodebin.Control/ImportState: a held node takes its predecessor's state and starts serving. */
export const IMPORT_STATE = method("ImportState");
/** nodebin.Control/YieldAgent: a container acting as host agent gives the role back to the governor. */
export const YIELD_AGENT = method("YieldAgent");
/** nodebin.Control/RequestCapacity: a caller found every node full (one-way). */
export const REQUEST_CAPACITY = method("RequestCapacity");

const governorMethod = (name: string): MethodSchema => CONTROL_SCHEMA.methods.get(`nodebin.Governor/${name}`)!;
/** nodebin.Governor/*: served at the governor's private local socket only. */
export const GOVERNOR_STATUS = governorMethod("Status");
export const GOVERNOR_SET = governorMethod("Set");
export const GOVERNOR_STOP = governorMethod("Stop");
export const GOVERNOR_CAPACITY = governorMethod("RequestCapacity");

/**
 * The frame of a one-way (ASYNC) control request from endpoint `from` to
 * endpoint `to` ("" is the receiving process's control endpoint; a node id
 * reaches the control endpoint of the node's process). Nothing answers it.
 */
export function oneWayControlFrame(method: MethodSchema, request: unknown, from: string, to = ""): Uint8Array {
  return encodeEnvelope(
    envelope({
      plane: Plane.CONTROL,
      mode: Mode.ASYNC,
      kind: Kind.REQUEST,
      from,
      to,
      method: method.fullName,
      value: encodeMessage(method.requestType, request, `request of ${method.fullName}`),
    }),
  );
}
