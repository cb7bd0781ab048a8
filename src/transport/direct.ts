/**
 * The direct transport: delivery between endpoints of one process (the
 * in-memory pseudo-network of dev mode, and each container's local
 * endpoints). It still decodes every frame it carries, so that in-process
 * calls go through exactly the checks the network path does.
 */
import { decodeEnvelope, type Envelope } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { LOCAL_LINK, LOCAL_PEER, type Inbox, type Peer, type Transport } from "./transport.ts";

export class DirectTransport implements Transport {
  readonly name = "direct";
  private readonly inboxes = new Map<string, Inbox>();
  /** Frames dropped because they did not decode or their endpoint left. */
  dropped = 0;

  /**
   * Registers a local endpoint. The empty id names the process itself (its
   * control endpoint: envelopes with an empty `to`). Throws ALREADY_EXISTS
   * for an id in use: two endpoints with one id would steal each other's answers.
   */
  attach(id: string, inbox: Inbox): void {
    if (this.inboxes.has(id)) throw new NodeBinError("ALREADY_EXISTS", `endpoint id ${JSON.stringify(id)} is already attached in this process`);
    this.inboxes.set(id, inbox);
  }

  detach(id: string): void {
    this.inboxes.delete(id);
  }

  has(id: string): boolean {
    return this.inboxes.has(id);
  }

  deliver(to: string, frame: Uint8Array): string | false {
    const inbox = this.inboxes.get(to);
    if (!inbox) return false;
    const env = decodeEnvelope(frame);
    if (env instanceof NodeBinError) {
      // Only this process's own encoder made the frame: count it, nobody to answer.
      this.dropped++;
      return LOCAL_LINK;
    }
    inbox(env, LOCAL_PEER);
    return LOCAL_LINK;
  }

  /**
   * Hands an envelope that arrived from another transport (from a peer of
   * kind `peer`) to its local endpoint. Returns false when no local endpoint
   * has that id.
   */
  dispatch(env: Envelope, peer: Peer): boolean {
    const inbox = this.inboxes.get(env.to);
    if (!inbox) return false;
    inbox(env, peer);
    return true;
  }

  async close(): Promise<void> {
    this.inboxes.clear();
  }
}
