/**
 * A handler that records when it starts and ends and waits, between the two,
 * until the test releases it: what queue-order, deadline and drain tests need
 * to hold a node busy without sleeping.
 */
import type { Handler } from "../../src/component/context.ts";
import { deferred, type Deferred } from "./deferred.ts";

export interface GatedHandler {
  readonly handler: Handler;
  /** "start KEY" and "end KEY", in the order they happened. */
  readonly events: string[];
  /** Lets the handler of `key` finish (before or after it started). */
  release(key: string): void;
  /** Resolves once the handler of `key` has started. */
  entered(key: string): Promise<void>;
}

/**
 * `keyOf` names each request (default: its `text`, else its `name`); the
 * reply is the request itself unless `reply` says otherwise.
 */
export function gatedHandler(
  keyOf: (request: any) => string = (r: { text?: string; name?: string }) => r.text ?? r.name ?? "",
  reply: (request: any) => unknown = (r: unknown) => r,
): GatedHandler {
  const events: string[] = [];
  const released = new Map<string, Deferred<void>>();
  const started = new Map<string, Deferred<void>>();
  const get = (map: Map<string, Deferred<void>>, key: string) => {
    let d = map.get(key);
    if (!d) map.set(key, (d = deferred()));
    return d;
  };
  const handler: Handler = async (request: unknown) => {
    const key = keyOf(request);
    events.push(`start ${key}`);
    get(started, key).resolve();
    await get(released, key).promise;
    events.push(`end ${key}`);
    return reply(request);
  };
  return {
    handler,
    events,
    release: (key) => get(released, key).resolve(),
    entered: (key) => get(started, key).promise,
  };
}
