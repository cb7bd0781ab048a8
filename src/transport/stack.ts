/** A stack of transports, tried in order: each may punt a frame it cannot route to the next. */
import { NodeBinError } from "../wire/errors.ts";
import type { Transport } from "./transport.ts";

export class TransportStack implements Transport {
  private readonly transports: Transport[];

  constructor(transports: Transport[]) {
    this.transports = [...transports];
  }

  /** The transports in order, e.g. "direct+zmq-listen". */
  get name(): string {
    return this.transports.map((t) => t.name).join("+");
  }

  /** Adds a transport at the bottom of the stack (tried last). */
  push(transport: Transport): void {
    this.transports.push(transport);
  }

  /** Takes a transport out of the stack (the caller closes it). */
  remove(transport: Transport): void {
    const i = this.transports.indexOf(transport);
    if (i >= 0) this.transports.splice(i, 1);
  }

  deliver(to: string, frame: Uint8Array): string | false {
    for (const t of this.transports) {
      const link = t.deliver(to, frame);
      if (link !== false) return link;
    }
    return false;
  }

  /**
   * deliver(), but a frame no transport can route is an UNAVAILABLE error.
   * With `via`, the frame goes to the process at that network endpoint.
   * Returns the link it left on (Peer.link).
   */
  send(to: string, frame: Uint8Array, via?: string): string {
    if (via !== undefined) {
      const t = this.transports.find((x) => x.deliverVia);
      if (!t) throw new NodeBinError("UNAVAILABLE", `no transport reaches endpoints by address (transports: ${this.name || "none"})`, { details: { endpoint: via } });
      return t.deliverVia!(via, frame);
    }
    const link = this.deliver(to, frame);
    if (link === false) {
      throw new NodeBinError("UNAVAILABLE", `no route to endpoint ${JSON.stringify(to)} (transports: ${this.name || "none"})`, { details: { to } });
    }
    return link;
  }

  async close(): Promise<void> {
    await Promise.all(this.transports.map((t) => t.close()));
  }
}
