/**
 * Control requests over a raw ZeroMQ DEALER, built and read by hand from
 * the wire codec: how the attack tests speak to a process without any of
 * node-bin's client code in between.
 */
import type * as zmq from "zeromq";
import { readReply, type ControlMethod } from "../../src/wire/control.ts";
import { Kind, Plane, decodeEnvelope, encodeEnvelope, envelope } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { decodeMessage, encodeMessage } from "../../src/wire/message.ts";
import { Mode } from "../../src/wire/schema.ts";

let nextId = 1;

/** One control request on `d`; resolves with the reply, or the coded error the process answered with. Throws on an undecodable answer. */
export async function askRaw<Req, Res>(d: zmq.Dealer, method: ControlMethod<Req, Res>, request: Req, options: { from?: string; deadlineMs?: number } = {}): Promise<Res | NodeBinError> {
  const id = nextId++;
  const m = method.schema;
  await d.send(encodeEnvelope(envelope({ id, plane: Plane.CONTROL, mode: Mode.SYNC, kind: Kind.REQUEST, from: options.from ?? "raw-test", method: m.fullName, value: encodeMessage(m.requestType, request, "request"), deadlineMs: options.deadlineMs ?? 5000 })));
  for (;;) {
    const [frame] = await d.receive();
    const env = decodeEnvelope(frame!);
    if (env instanceof NodeBinError) throw env;
    if (env.id !== id) continue;
    if (env.error) return NodeBinError.fromWire(env.error);
    return readReply(method, decodeMessage(m.responseType, env.value, "reply"));
  }
}
