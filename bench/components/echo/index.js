// The benchmark echo component: answers each Payload with the same fields.
export const manifest = { name: "echo", version: "1.0.0" };

export function Echo({ a, b }) {
  return { a, b };
}
