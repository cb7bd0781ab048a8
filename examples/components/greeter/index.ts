// The greeter component: a SYNC method, an ASYNC one, and ctx.state shared between them.
import type { Context } from "../../../src/component/context.ts";

interface State {
  guests?: string[];
}

const GREETINGS: Record<string, string> = { en: "Hello", fr: "Bonjour", es: "Hola" };

export function Hello(request: { name: string; language: string }, ctx: Context<State>) {
  if (!request.name) throw new Error("name is required");
  const greeting = GREETINGS[request.language || "en"];
  if (!greeting) throw new Error(`no greeting in language ${JSON.stringify(request.language)}`);
  ctx.log.debug(`greeting ${request.name}`);
  return { message: `${greeting}, ${request.name}!` };
}

export function Sign(request: { name: string }, ctx: Context<State>) {
  (ctx.state.guests ??= []).push(request.name);
}

export function Guests(_request: unknown, ctx: Context<State>) {
  return { names: ctx.state.guests ?? [] };
}
