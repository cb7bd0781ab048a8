/**
 * Network names. The default network is the empty name, which every process
 * that predates `--network` goes by; people write and read it as "default",
 * so `--network default` and no flag are one network, and every place that
 * prints a network prints "default" for it.
 */

/** 1 to 64 letters, digits, '.', '_' or '-': safe in a host id, a log line, a file name and an environment variable. */
const NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** The network a name as written means ("" for "default" or nothing); undefined when it is no valid name. */
export function parseNetworkName(value: unknown): string | undefined {
  if (value === undefined || value === "" || value === "default") return "";
  if (typeof value !== "string" || !NAME.test(value)) return undefined;
  return value;
}

/** A network name as people read it. */
export function networkLabel(network: string): string {
  return network || "default";
}
