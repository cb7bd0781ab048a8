// The stream benchmark component: one payload as a stream of items, or echoed by a SYNC call.
export const manifest = { name: "items", version: "1.0.0" };

export async function* Items({ count, payload }) {
  const item = { a: payload?.a ?? 0, b: payload?.b ?? "" };
  for (let i = 0; count === 0 || i < count; i++) yield item;
}

export function Echo({ a, b }) {
  return { a, b };
}
