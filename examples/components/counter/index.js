// The counter component, in plain JavaScript: state lives in ctx.state and
// survives between messages; exportState/importState show what state transfer moves.

// max 1: its counts live in one node's state, so a governor never runs two
// (two nodes would each count part of the calls). A redeploy still keeps the
// count: the governor hands the old node's state to the new one.
export const manifest = { version: "1.0.0", limits: { queue: 500, max: 1 } };

export function Add({ key, by }, ctx) {
  const counts = (ctx.state.counts ??= {});
  counts[key] = (counts[key] ?? 0) + (by || 1);
  return { key, count: counts[key] };
}

export function Get({ key }, ctx) {
  return { key, count: ctx.state.counts?.[key] ?? 0 };
}

export function exportState(ctx) {
  return { counts: { ...(ctx.state.counts ?? {}) } };
}

export function importState(snapshot, ctx) {
  ctx.state.counts = { ...(snapshot?.counts ?? {}) };
}
