/** The control-plane protocol every process serves at its own endpoint (Envelope.to empty). */
import { nodebinRoot } from "./envelope.ts";
import { Schema, type MethodSchema } from "./schema.ts";

export const CONTROL_SCHEMA = Schema.fromRoot(nodebinRoot);

/** nodebin.Control/Pull: the process's membership table. */
export const PULL: MethodSchema = CONTROL_SCHEMA.methods.get("nodebin.Control/Pull")!;
