// The ledger component: balances per account in ctx.state. A debit that would
// overdraw the account is refused with a coded error (FAILED_PRECONDITION),
// which reaches the caller, across processes, as it was thrown.
import type { Context } from "../../../src/component/context.ts";
import { NodeBinError } from "../../../src/wire/errors.ts";

// One node holds the books: two would each hold part of them.
export const manifest = { version: "1.0.0", limits: { max: 1 } };

interface Books {
  accounts?: Record<string, { cents: number; entries: number }>;
}

export function Post(request: { account: string; cents: number | { toString(): string }; memo: string }, ctx: Context<Books>) {
  if (!request.account) throw new NodeBinError("INVALID_ARGUMENT", "account is required", { details: { field: "account" } });
  const cents = Number(request.cents);
  const accounts = (ctx.state.accounts ??= {});
  const account = (accounts[request.account] ??= { cents: 0, entries: 0 });
  if (account.cents + cents < 0) {
    throw new NodeBinError("FAILED_PRECONDITION", `${request.account} holds ${account.cents} cents: cannot debit ${-cents}`, { details: { account: request.account } });
  }
  account.cents += cents;
  account.entries++;
  return { account: request.account, cents: account.cents, entries: account.entries, servedBy: ctx.nodeId };
}

export function Balance(request: { account: string }, ctx: Context<Books>) {
  const account = ctx.state.accounts?.[request.account] ?? { cents: 0, entries: 0 };
  return { account: request.account, cents: account.cents, entries: account.entries, servedBy: ctx.nodeId };
}

export function exportState(ctx: Context<Books>) {
  return { accounts: { ...(ctx.state.accounts ?? {}) } };
}

export function importState(snapshot: Books | undefined, ctx: Context<Books>) {
  ctx.state.accounts = { ...(snapshot?.accounts ?? {}) };
}
