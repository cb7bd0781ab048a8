/** The control-plane protocol every process serves at its own endpoint (Envelope.to empty). */
import { nodebinRoot } from "./envelope.ts";
import { Schema, type MethodSchema } from "./schema.ts";

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
