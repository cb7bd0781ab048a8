/**
 * Catching errors for assertions on their code and details. Each throws when
 * nothing was thrown, so a test that expected an error cannot pass without one.
 */
import { NodeBinError } from "../../src/wire/errors.ts";

/** The NodeBinError `promise` rejects with; throws if it resolves or rejects with anything else. */
export async function rejection(promise: Promise<unknown>): Promise<NodeBinError> {
  let value: unknown;
  try {
    value = await promise;
  } catch (err) {
    if (err instanceof NodeBinError) return err;
    throw new Error(`expected a NodeBinError, got ${String(err)}`, { cause: err });
  }
  throw new Error(`expected a rejection, but the promise resolved with ${String(value)}`);
}

/** The NodeBinError `fn` throws; throws if it returns or throws anything else. */
export function thrown(fn: () => unknown): NodeBinError {
  try {
    fn();
  } catch (err) {
    if (err instanceof NodeBinError) return err;
    throw new Error(`expected a NodeBinError, got ${String(err)}`, { cause: err });
  }
  throw new Error("expected a throw, but the function returned");
}
