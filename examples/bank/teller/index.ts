// The teller component: no state of its own; every request becomes a nested
// call to bank.Ledger, wherever the ledger runs (the same process in dev, a
// container elsewhere, or the network while `node-bin dev --only teller`
// debugs this file against a live system).
import type { Context } from "../../../src/component/context.ts";
import { NodeBinError } from "../../../src/wire/errors.ts";

interface Move {
  account: string;
  cents: number | { toString(): string };
}
interface Posted {
  account: string;
  cents: number | { toString(): string };
  servedBy: string;
}

async function post(request: Move, sign: 1 | -1, ctx: Context) {
  const cents = Number(request.cents);
  if (!(cents > 0)) throw new NodeBinError("INVALID_ARGUMENT", `cents must be a positive amount, got ${cents}`, { details: { field: "cents" } });
  const posted = await ctx.call<Posted>("bank.Ledger/Post", { account: request.account, cents: sign * cents, memo: sign > 0 ? "deposit" : "withdrawal" });
  return { account: posted.account, balanceCents: posted.cents, teller: ctx.nodeId, ledger: posted.servedBy };
}

export function Deposit(request: Move, ctx: Context) {
  return post(request, 1, ctx);
}

export function Withdraw(request: Move, ctx: Context) {
  return post(request, -1, ctx);
}
