// The welcome component: nested calls. ctx.call goes through the same routing,
// envelopes and deadlines in dev mode as across the network; ctx.meta travels on.
import type { Context } from "../../../src/component/context.ts";

export async function Visit(request: { name: string }, ctx: Context) {
  const hello = await ctx.call<{ message: string }>("demo.Greeter/Hello", { name: request.name });
  const count = await ctx.call<{ count: number | { toString(): string } }>("demo.Counter/Add", { key: "visitors" });
  await ctx.send("demo.Greeter/Sign", { name: request.name });
  return { greeting: hello.message, visitor: count.count, via: ctx.meta.via ?? "" };
}
