// The board component: a BROADCAST method (Post), a SYNC one that reads what
// this node received (Read), and a handler that broadcasts (Announce).
import type { Context } from "../../../src/component/context.ts";

interface Note {
  text: string;
  author: string;
}

interface State {
  received?: number;
  notes?: Note[];
}

/** Notes each node keeps (the oldest go first). */
const KEEP = 100;

/** Every node of the component gets each Post; none answers it. */
export function Post(note: Note, ctx: Context<State>) {
  ctx.state.received = (ctx.state.received ?? 0) + 1;
  const notes = (ctx.state.notes ??= []);
  notes.push({ text: note.text, author: note.author });
  if (notes.length > KEEP) notes.shift();
}

export function Read(request: { last: number }, ctx: Context<State>) {
  const last = Math.min(request.last || 10, KEEP);
  return { node: ctx.nodeId, received: ctx.state.received ?? 0, notes: (ctx.state.notes ?? []).slice(-last) };
}

/** A handler may broadcast too: the note goes to every board, this node's included. */
export async function Announce(note: Note, ctx: Context<State>) {
  await ctx.broadcast("demo.Board/Post", { text: note.text, author: note.author || ctx.nodeId });
  return {};
}
