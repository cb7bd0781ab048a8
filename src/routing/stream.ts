/**
 * The consumer's end of a STREAM call: what `for await` reads. It holds the
 * items received and not yet taken (never more than its window: the
 * producer sends only against credit, and an item past it ends the stream),
 * grants credit back as items are taken, and ends once: at the producer's
 * STREAM_END (after the items before it), with an error (the caller's
 * deadline, a lost connection, an item that does not decode), or when the
 * consumer leaves (return(), which cancels the producer and waits, briefly,
 * for its acknowledgement). The RoutingCaller owns the wire side (StreamLink).
 */
import type { CallStream } from "../component/context.ts";
import { Fifo } from "../component/fifo.ts";
import { NodeBinError } from "../wire/errors.ts";

/** The window of a stream whose caller chose none. */
export const DEFAULT_WINDOW = 16;

/** What a ConsumerStream asks of the caller that carries it. */
export interface StreamLink {
  /** Sends the request (at the first next()). A throw or rejection ends the stream with that error. */
  start(): Promise<void> | void;
  /** Grants the producer `n` more items. */
  grant(n: number): void;
  /**
   * Tells the producer to stop (CANCEL). Returns a promise that resolves
   * after the longest the consumer waits for its acknowledgement (a
   * STREAM_END, handed to endWith()), its timer cleared by release();
   * undefined when there is no producer to tell.
   */
  cancel(): Promise<void> | undefined;
  /** The stream is over: its entries and timers go. Called once. */
  release(): void;
}

export class ConsumerStream<Item = unknown> implements CallStream<Item> {
  /** Items received so far (taken or still buffered). */
  received = 0;
  private readonly buffer = new Fifo<Uint8Array>();
  private waiter: { resolve: (r: IteratorResult<Item>) => void; reject: (e: NodeBinError) => void } | undefined;
  /** The stream's end once known (null: normal); the consumer sees it after the buffered items. */
  private end: NodeBinError | null | undefined;
  /** Whether the consumer has seen the end (next() then says done). */
  private over = false;
  private started = false;
  private released = false;
  /** Items taken since credit was last granted. */
  private untaken = 0;
  /** Resolves the wait of return() for the producer's acknowledgement. */
  private acked: (() => void) | undefined;
  private readonly endListeners: ((error: NodeBinError | null) => void)[] = [];
  /** Grant credit back once this many items were taken (half the window, at least 1): fewer CREDIT frames. */
  private readonly grantEvery: number;

  constructor(
    readonly window: number,
    private readonly link: StreamLink,
    private readonly decode: (bytes: Uint8Array) => Item,
  ) {
    this.grantEvery = Math.max(1, Math.floor(window / 2));
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Whether the stream has ended (the consumer may still have buffered items to take). */
  get ended(): boolean {
    return this.end !== undefined;
  }

  /** Items received and not yet taken. */
  get buffered(): number {
    return this.buffer.length;
  }

  next(): Promise<IteratorResult<Item>> {
    if (this.waiter) return Promise.reject(new NodeBinError("FAILED_PRECONDITION", "next() called while another next() of the same stream is pending"));
    if (!this.started) {
      this.started = true;
      try {
        const starting = this.link.start();
        if (starting) starting.catch((err: unknown) => this.endWith(NodeBinError.from(err)));
      } catch (err) {
        this.endWith(NodeBinError.from(err));
      }
    }
    const bytes = this.buffer.shift();
    if (bytes) return this.take(bytes);
    if (this.end !== undefined) return this.finish();
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  /**
   * Leaves the stream: the items buffered are dropped and, if it is still
   * open, the producer is told to stop (its generator is returned).
   * Resolves once the producer acknowledged, or after the link's bound.
   */
  async return(): Promise<IteratorResult<Item>> {
    this.dropBuffer();
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.resolve({ value: undefined, done: true });
    this.over = true;
    if (this.end === undefined) {
      this.end = new NodeBinError("CANCELLED", "the consumer left the stream");
      this.notifyEnd(null);
      if (this.started) {
        // The acknowledgement may come within cancel() itself (in-process producers answer at once).
        const acked = new Promise<void>((resolve) => (this.acked = resolve));
        const bound = this.link.cancel();
        if (bound) await Promise.race([acked, bound]);
      }
    }
    this.release();
    return { value: undefined, done: true };
  }

  /** Leaves the stream with `error` thrown into it (as return(), for a consumer that failed). */
  async throw(error?: unknown): Promise<IteratorResult<Item>> {
    await this.return();
    throw error;
  }

  /** @internal An item arrived (STREAM_ITEM). */
  push(bytes: Uint8Array): void {
    if (this.end !== undefined) return; // after the end, or after a cancel: nobody takes it
    if (this.buffer.length + this.untaken >= this.window) {
      this.endWith(new NodeBinError("RESOURCE_EXHAUSTED", `the producer sent more than the ${this.window} item(s) granted`, { details: { limit: "window", window: String(this.window) } }), true);
      return;
    }
    this.received++;
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      this.take(bytes).then(waiter.resolve, waiter.reject);
    } else {
      this.buffer.push(bytes);
    }
  }

  /**
   * @internal The stream ended: `error` null at the producer's normal end.
   * `cancel`: tell the producer (an end decided here: the deadline, an
   * overrun, an item that does not decode). A second end changes nothing; the
   * producer's acknowledgement of a cancel is one.
   */
  endWith(error: NodeBinError | null, cancel = false): void {
    if (this.end !== undefined) {
      this.acked?.();
      return;
    }
    this.end = error;
    if (cancel && this.started) void this.link.cancel();
    this.notifyEnd(error);
    this.release();
    const waiter = this.waiter;
    if (waiter && this.buffer.length === 0) {
      this.waiter = undefined;
      this.finish().then(waiter.resolve, waiter.reject);
    }
  }

  /** @internal Calls `listener` with the stream's outcome when it ends (null: normal end, or the consumer left). */
  onEnd(listener: (error: NodeBinError | null) => void): void {
    if (this.end !== undefined) listener(this.end);
    else this.endListeners.push(listener);
  }

  private notifyEnd(error: NodeBinError | null): void {
    for (const listener of this.endListeners.splice(0)) listener(error);
  }

  private take(bytes: Uint8Array): Promise<IteratorResult<Item>> {
    let value: Item;
    try {
      value = this.decode(bytes);
    } catch (err) {
      const e = NodeBinError.from(err);
      this.dropBuffer();
      this.endWith(new NodeBinError("INTERNAL", e.message, { details: e.details }), true);
      return this.finish();
    }
    if (this.end === undefined && ++this.untaken >= this.grantEvery) {
      const n = this.untaken;
      this.untaken = 0;
      this.link.grant(n);
    }
    return Promise.resolve({ value, done: false });
  }

  private finish(): Promise<IteratorResult<Item>> {
    if (this.over || this.end === null) {
      this.over = true;
      return Promise.resolve({ value: undefined, done: true });
    }
    this.over = true;
    return Promise.reject(this.end!);
  }

  private dropBuffer(): void {
    while (this.buffer.shift());
  }

  private release(): void {
    if (this.released) return;
    this.released = true;
    this.acked = undefined;
    this.link.release();
  }
}
