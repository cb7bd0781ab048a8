/**
 * The connection gate: the process's ZAP handler (ZeroMQ RFC 27), asked by
 * libzmq about every connection a listener accepts, before the connection's
 * first message is delivered. It refuses a connection that would take a
 * listener past its bound of connections (ZmqOptions.maxConnections), so a
 * peer cannot exhaust the process's file descriptors by opening connections.
 *
 * Why ZAP: a ROUTER has no way to close one peer's connection, and libzmq has
 * no connection limit of its own; ZAP is the one hook it calls per
 * connection, for the NULL mechanism too once a socket has a ZAP domain. Each
 * listener gets a domain of its own ("nodebin-listener-N"), so the gate tells
 * whose bound a connection counts against. With a cluster key, the same
 * handler authenticates tcp peers: a connection is admitted only when the
 * security provider accepts its CurveZMQ client key (WireSecurity.admit).
 *
 * Counting: a listener's live connections are those accepted and not yet
 * closed (its monitor's "accept" and "disconnect" events: a refused or
 * half-open connection holds a descriptor too, until libzmq's handshake
 * interval closes it). The events and the ZAP requests come on different
 * sockets, so the count may lag a burst by a few connections: the bound holds
 * within that lag, never grows with it.
 *
 * One handler per process (libzmq has one ZAP endpoint per context, and
 * zeromq.js one global context): it opens with the first gated listener and
 * closes with the last, so it never keeps a process alive on its own.
 */
import * as zmq from "zeromq";
import type { ZapVerdict } from "./zmq.ts";
import { io } from "./zmq-io.ts";

const ZAP_ENDPOINT = "inproc://zeromq.zap.01";
const utf8 = new TextEncoder();
const EMPTY = new Uint8Array(0);

/** One listener's account at the gate. */
export interface GateEntry {
  /** The ZAP domain to give the listener's socket (zapDomain). */
  readonly domain: string;
  /** Starts counting the socket's connections (call before bind): a listener's ROUTER, or a relay's XPUB or XSUB. */
  watch(socket: zmq.Socket): void;
  /** Leaves the gate (the listener closed). */
  release(): void;
}

interface Account {
  max: number;
  live: number;
  onRefused: (address: string, live: number) => void;
  /** Authentication (a security provider's, tcp only): undefined admits every mechanism. */
  admit: ((mechanism: string, credentials: Uint8Array[], address: string) => ZapVerdict) | undefined;
  /** Hears of each connection refused in its handshake for want of a key (by the gate, or by libzmq for a mechanism mismatch). */
  onUnauthenticated: (address: string, reason: string) => void;
}

/** How a listener enters the gate. */
export interface GateTerms {
  max: number;
  onRefused: Account["onRefused"];
  admit?: Account["admit"];
  onUnauthenticated?: Account["onUnauthenticated"];
}

class Gate {
  private socket: zmq.Router | undefined;
  private opening: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private done: Promise<void> | undefined;
  private readonly accounts = new Map<string, Account>();
  private next = 0;

  async enter(terms: GateTerms): Promise<GateEntry> {
    // Listeners bound at once share one opening; one bound after the last closed waits for the close.
    await (this.opening ??= this.open());
    const domain = `nodebin-listener-${++this.next}`;
    const account: Account = { max: terms.max, live: 0, onRefused: terms.onRefused, admit: terms.admit, onUnauthenticated: terms.onUnauthenticated ?? (() => {}) };
    this.accounts.set(domain, account);
    let released = false;
    return {
      domain,
      watch: (socket) => {
        void (async () => {
          try {
            for await (const event of socket.events) {
              if (event.type === "accept") account.live++;
              else if (event.type === "disconnect") account.live = Math.max(0, account.live - 1);
              // A peer speaking another mechanism (plain tcp to a CurveZMQ listener), or whose
              // handshake does not decrypt (another cluster's key): libzmq ends it before asking ZAP.
              else if (account.admit && event.type === "handshake:error:protocol") account.onUnauthenticated(event.address, `handshake failed (${event.error.code ?? event.error.message})`);
            }
          } catch {
            // the socket closed: nothing more to count
          }
        })();
      },
      release: () => {
        if (released) return;
        released = true;
        this.accounts.delete(domain);
        if (this.accounts.size === 0) this.shut();
      },
    };
  }

  private async open(): Promise<void> {
    await this.closing;
    const socket = new zmq.Router({ linger: 0, ...io.options });
    // libzmq releases an inproc name when its reaper has closed the old socket: a bind right after
    // a close may find it still taken for a moment.
    for (let attempt = 0; ; attempt++) {
      try {
        await socket.bind(ZAP_ENDPOINT);
        break;
      } catch (err) {
        if (attempt >= 50 || (err as { code?: string }).code !== "EADDRINUSE") {
          socket.close();
          this.opening = undefined;
          throw err;
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    this.socket = socket;
    this.done = this.serve(socket);
  }

  private shut(): void {
    const socket = this.socket;
    if (!socket || this.accounts.size > 0) return;
    this.socket = undefined;
    this.opening = undefined;
    socket.close();
    this.closing = this.done;
  }

  private async serve(socket: zmq.Router): Promise<void> {
    try {
      for await (const request of io.messages(socket)) {
        // [routing id, "", version, request id, domain, address, identity, mechanism, credentials...]
        const [rid, empty, version, requestId, domain, address, , mechanism, ...credentials] = request;
        if (!rid || !empty || !version || !requestId || !domain) continue; // not a ZAP request: libzmq sends only those here
        const account = this.accounts.get(domain.toString());
        // A domain the gate does not know is a listener that has just closed: refuse.
        let status = "400";
        let text = "unknown listener";
        if (account) {
          const verdict = account.admit?.(mechanism?.toString() ?? "", credentials, address?.toString() ?? "") ?? { ok: true, user: "" };
          if (!verdict.ok) {
            text = verdict.reason;
            account.onUnauthenticated(address?.toString() ?? "", verdict.reason);
          } else if (account.live > account.max) {
            text = `too many connections (${account.live - 1} of ${account.max})`;
            account.onRefused(address?.toString() ?? "", account.live - 1);
          } else {
            status = "200";
            text = "OK";
          }
        }
        try {
          await io.send(socket, [rid, empty, version, requestId, utf8.encode(status), utf8.encode(text), EMPTY, EMPTY], false);
        } catch {
          // libzmq went away from the request (its connection closed): nothing to answer
        }
      }
    } catch {
      // closed
    }
  }
}

const gate = new Gate();

/**
 * Enters a listener at the process's gate: at most `max` connections at once
 * (a connection past it is refused during its handshake, and `onRefused`
 * hears of it with the peer's address).
 */
export function enterGate(terms: GateTerms): Promise<GateEntry> {
  return gate.enter(terms);
}
