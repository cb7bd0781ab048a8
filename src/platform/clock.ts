/**
 * Time, passed in rather than read from globals, so that code which waits
 * (a caller's deadline, a governor's ping and zombie rounds) can be tested
 * with a clock the test moves by hand: "nothing happens for 3 s" is proven
 * by advancing a ManualClock, not by sleeping 3 s.
 */

/** A pending timer; cancel() is idempotent. */
export interface Timer {
  cancel(): void;
  /** Lets the process exit while this timer is pending (no-op on a ManualClock). Returns the timer. */
  unref(): Timer;
}

export interface Clock {
  /** Milliseconds since the epoch (Date.now() on the system clock). */
  now(): number;
  /** Runs `fn` once, `ms` from now. */
  after(ms: number, fn: () => void): Timer;
  /** Runs `fn` every `ms`, first `ms` from now. */
  every(ms: number, fn: () => void): Timer;
  /** Resolves `ms` from now. */
  sleep(ms: number): Promise<void>;
}

/** The real clock: Date.now and the runtime's timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, fn) {
    return new SystemTimer(setTimeout(fn, Math.max(0, ms)), false);
  },
  every(ms, fn) {
    return new SystemTimer(setInterval(fn, Math.max(1, ms)), true);
  },
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms))),
};

/**
 * A runtime timer as a Timer. A class, not closures: every call a caller
 * makes arms one, so it should cost one small object.
 */
class SystemTimer implements Timer {
  constructor(
    private readonly handle: ReturnType<typeof setTimeout>,
    private readonly repeats: boolean,
  ) {}

  cancel(): void {
    if (this.repeats) clearInterval(this.handle);
    else clearTimeout(this.handle);
  }

  unref(): Timer {
    // Deno's timers are numbers: nothing to unref there.
    const handle: { unref?: () => void } | number = this.handle;
    if (typeof handle === "object") handle.unref?.();
    return this;
  }
}

interface Pending {
  at: number;
  seq: number;
  fn: () => void;
  every?: number;
  cancelled: boolean;
}

/**
 * A clock that moves only when told (advance / runAll): for tests. Timers due
 * by the new time run in time order, each seeing now() at its own due time.
 */
export class ManualClock implements Clock {
  private time: number;
  private seq = 0;
  private readonly pending: Pending[] = [];

  constructor(start = 1_000_000) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  after(ms: number, fn: () => void): Timer {
    return this.add({ at: this.time + Math.max(0, ms), seq: this.seq++, fn, cancelled: false });
  }

  every(ms: number, fn: () => void): Timer {
    const every = Math.max(1, ms);
    return this.add({ at: this.time + every, seq: this.seq++, fn, every, cancelled: false });
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.after(ms, resolve));
  }

  /** Timers still waiting. */
  get timers(): number {
    return this.pending.filter((p) => !p.cancelled).length;
  }

  /**
   * Moves time forward by `ms`, running every timer due on the way (and
   * letting the promise callbacks each one schedules run before the next).
   */
  async advance(ms: number): Promise<void> {
    const until = this.time + ms;
    for (;;) {
      this.pending.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.pending.find((p) => !p.cancelled && p.at <= until);
      if (!next) break;
      this.time = Math.max(this.time, next.at);
      if (next.every !== undefined) next.at += next.every;
      else next.cancelled = true;
      next.fn();
      // Let promise chains started by the timer settle before time moves on.
      for (let i = 0; i < 10; i++) await Promise.resolve();
    }
    this.time = until;
    for (let i = this.pending.length - 1; i >= 0; i--) if (this.pending[i]!.cancelled) this.pending.splice(i, 1);
  }

  private add(p: Pending): Timer {
    this.pending.push(p);
    const timer: Timer = {
      cancel: () => {
        p.cancelled = true;
      },
      unref: () => timer,
    };
    return timer;
  }
}
