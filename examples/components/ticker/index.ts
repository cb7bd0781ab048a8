// The ticker component: a STREAM method written as an async generator. The
// runtime pulls it one tick at a time, only while the consumer has credit,
// and returns it (its `finally` runs) when the consumer leaves.
import { setTimeout as sleep } from "node:timers/promises";
import type { Context } from "../../../src/component/context.ts";

interface State {
  computed?: number;
  ended?: number;
}

export const manifest = { limits: { streamIdleMs: 30_000 } };

export async function* Count(request: { count: number; intervalMs: number; from: number }, ctx: Context<State>) {
  const first = request.from;
  try {
    for (let i = 0; request.count === 0 || i < request.count; i++) {
      if (request.intervalMs > 0 && i > 0) await sleep(request.intervalMs);
      ctx.state.computed = (ctx.state.computed ?? 0) + 1;
      yield { n: first + i, at: Date.now() };
    }
  } finally {
    // Runs at the end, on an error, and when the consumer stops early.
    ctx.state.ended = (ctx.state.ended ?? 0) + 1;
  }
}

export function Stats(_request: unknown, ctx: Context<State>) {
  return { computed: ctx.state.computed ?? 0, ended: ctx.state.ended ?? 0 };
}
