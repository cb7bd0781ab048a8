/**
 * How ZeroMQ sockets wait for messages and for room to send, under each
 * runtime: native on Node, polling under Deno (see pollingIo). The one place
 * that differs between runtimes, chosen once at load; zmq.ts (listeners and
 * connectors) and zap.ts (the connection gate) use it.
 */
import { setImmediate as nextTurn } from "node:timers/promises";
import { isDeno } from "../platform/platform.ts";

export type Message = (Buffer | Uint8Array)[];

/** The part of a zeromq.js socket the strategies below use. */
export interface RawSocket extends AsyncIterable<Buffer[]> {
  readonly closed: boolean;
  send(message: Message): Promise<void>;
  receive(): Promise<Buffer[]>;
}

/**
 * How sockets wait for messages and for room to send: the one place that
 * differs between runtimes, chosen once at load.
 */
export interface SocketIo {
  /** Options every socket gets on top of its own. */
  readonly options: { receiveTimeout?: number; sendTimeout?: number };
  /** The messages a socket receives, until it is closed. */
  messages(socket: RawSocket): AsyncIterable<Buffer[]>;
  /**
   * Sends one message. `waits`: the socket is meant to wait while its peer's
   * pipe is full (a DEALER); otherwise (the ROUTER, sendTimeout 0) a full pipe
   * fails the send at once with EAGAIN, under every runtime.
   */
  send(socket: RawSocket, message: Message, waits: boolean): Promise<void>;
}

/** Node: zeromq.js's own waiting (libuv polls each socket's fd). Unchanged behaviour and cost. */
const nativeIo: SocketIo = {
  options: {},
  messages: (socket) => socket,
  send: (socket, message) => socket.send(message),
};

/**
 * Deno 2.9: zeromq.js's native waiting does not work. Deno's `uv_poll_start`
 * shim stops after its first callback (denoland/deno#36317) and ZeroMQ's fd is
 * edge-triggered, so the first wake-up that finds no message leaves a
 * `receive()` (or a blocking `send()`) pending forever; an expiring
 * `receiveTimeout` crashes the process (Deno's `uv_timer_init` clears
 * `handle->data`). Non-blocking calls work, so every socket gets
 * `receiveTimeout: 0` and `sendTimeout: 0` and never reaches the native
 * poller: a receive loop retries EAGAIN after a backoff (event-loop turns for
 * at least 3 ms, then sleeps of 1 ms doubling to 10 ms), back to the fastest
 * pace after every message received or sent on the socket; a send that must
 * wait (a DEALER whose peer's pipe is full) retries the same way. Cost: a
 * message that arrives during a sleep waits for its end (up to 10 ms after a
 * quiet spell), and an idle process wakes about 100 times a second.
 *
 * Socket events (`socket.events`: the connector watches "disconnect") come
 * through a separate monitor socket whose fd is signalled only when a monitor
 * message arrives, and every `receive()` of the observer starts a new poll, so
 * the shim's one-shot callback suffices: the events fire under Deno 2.9
 * (checked: connect, disconnect on a peer's exit and on a heartbeat timeout),
 * and a call in flight to a peer that dies fails with UNAVAILABLE as on Node.
 * Were a spurious wake-up ever to stall an observer, its socket would get no
 * more events: a dead peer would then still leave the membership table when
 * its lease runs out (its connection is pruned), and calls in flight to it
 * would end at their deadline (DEADLINE_EXCEEDED) instead of at once.
 */
const pollingIo: SocketIo = {
  options: { receiveTimeout: 0, sendTimeout: 0 },
  async *messages(socket) {
    const backoff = new Backoff();
    receivers.set(socket, backoff);
    try {
      while (!socket.closed) {
        let parts: Buffer[];
        try {
          parts = await socket.receive();
        } catch (err) {
          if (socket.closed) return;
          if ((err as { code?: string }).code !== "EAGAIN") throw err;
          await backoff.wait();
          continue;
        }
        backoff.reset();
        yield parts;
      }
    } finally {
      receivers.delete(socket);
    }
  },
  async send(socket, message, waits) {
    let backoff: Backoff | undefined;
    for (;;) {
      try {
        await socket.send(message);
        // What was sent is mostly a request, or an answer to a caller that
        // will send again: look for the next message at once.
        receivers.get(socket)?.wake();
        return;
      } catch (err) {
        if (!waits || socket.closed || (err as { code?: string }).code !== "EAGAIN") throw err;
      }
      await (backoff ??= new Backoff()).wait();
    }
  },
};

/**
 * How long a poller keeps trying at every event-loop turn after it last found
 * (or sent) something. Longer than one hop of a call that met a sleeping
 * poller (a "1 ms" sleep takes about 2 ms under Deno): with 1 ms, two Deno
 * processes calling each other one call at a time locked into ~3 ms per call,
 * with 2-3 ms they get back to ~0.5 ms.
 */
const SPIN_MS = 3;
/** ... and at least this many turns, however long they take (a busy host may not run this process for a while). */
const SPIN_TURNS = 16;
/** The longest sleep between two attempts of an idle poller. */
const MAX_SLEEP_MS = 10;

/** The receive loop's backoff of each socket, for sends to wake. */
const receivers = new WeakMap<RawSocket, Backoff>();

/**
 * The waits between non-blocking attempts: event-loop turns (at least
 * SPIN_TURNS, for at least SPIN_MS), then sleeps of 1 ms doubling to
 * MAX_SLEEP_MS.
 */
class Backoff {
  private turns = 0;
  private sleeps = 0;
  private since = 0;
  private wakeSleeper: (() => void) | undefined;

  /** Back to the fastest pace (after a message). */
  reset(): void {
    this.turns = 0;
    this.sleeps = 0;
  }

  /** Back to the fastest pace, ending a sleep in progress. */
  wake(): void {
    this.reset();
    const sleeper = this.wakeSleeper;
    this.wakeSleeper = undefined;
    sleeper?.();
  }

  wait(): Promise<unknown> {
    if (this.turns === 0) this.since = performance.now();
    if (this.turns < SPIN_TURNS || (this.sleeps === 0 && performance.now() - this.since < SPIN_MS)) {
      this.turns++;
      return nextTurn();
    }
    const ms = Math.min(MAX_SLEEP_MS, 2 ** this.sleeps++);
    return new Promise<void>((resolve) => {
      this.wakeSleeper = resolve;
      void tick(ms).then(resolve);
    });
  }
}

/**
 * Sleeps shared by every poller of the process: those that sleep at the same
 * time for the same length wait on one timer, so an idle process wakes about
 * 100 times a second however many sockets it has.
 */
const ticks = new Map<number, Promise<void>>();
function tick(ms: number): Promise<void> {
  let pending = ticks.get(ms);
  if (!pending) {
    pending = new Promise<void>((resolve) =>
      setTimeout(() => {
        ticks.delete(ms);
        resolve();
      }, ms),
    );
    ticks.set(ms, pending);
  }
  return pending;
}

export const io: SocketIo = isDeno ? pollingIo : nativeIo;
