/** The raw zeromq.js client of the benchmarks (bench/zmq.ts, bench/run.ts): a DEALER calling bench/raw-zmq-echo.ts. */
import * as zmq from "zeromq";

/**
 * A DEALER connected to the raw echo: one writer loop pumps queued sends (one
 * send in flight per socket), one `for await` loop receives. A ROUTER echo on
 * one connection answers in order, so replies settle the oldest call.
 */
export class RawClient {
  private readonly socket: zmq.Dealer;
  private readonly outbox: Buffer[] = [];
  private outHead = 0;
  private readonly waiting: ((reply: Buffer) => void)[] = [];
  private waitHead = 0;
  private pumping = false;
  private readonly done: Promise<void>;

  constructor(endpoint: string) {
    this.socket = new zmq.Dealer({ linger: 0, sendHighWaterMark: 10_000, receiveHighWaterMark: 10_000 });
    this.socket.connect(endpoint);
    this.done = this.receive();
  }

  call(payload: Buffer): Promise<Buffer> {
    return new Promise<Buffer>((resolve) => {
      this.waiting.push(resolve);
      this.outbox.push(payload);
      if (!this.pumping) void this.pump();
    });
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    while (this.outHead < this.outbox.length) {
      const msg = this.outbox[this.outHead++]!;
      if (this.outHead === this.outbox.length) {
        this.outbox.length = 0;
        this.outHead = 0;
      }
      await this.socket.send(msg);
    }
    this.pumping = false;
  }

  private async receive(): Promise<void> {
    try {
      for await (const [reply] of this.socket) {
        const resolve = this.waiting[this.waitHead++]!;
        if (this.waitHead === this.waiting.length) {
          this.waiting.length = 0;
          this.waitHead = 0;
        }
        resolve(reply!);
      }
    } catch (err) {
      if (!this.socket.closed) throw err;
    }
  }

  async close(): Promise<void> {
    this.socket.close();
    await this.done;
  }
}
