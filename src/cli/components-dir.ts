/** Where components are loaded from when --components is not given. */
import { existsSync, realpathSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { executableFile } from "../runtime/executable.ts";
import { NodeBinError } from "../wire/errors.ts";

/**
 * --components, else $NODEBIN_COMPONENTS, else components/ beside the entry
 * point (the executable, or bin/node-bin from source; symlinks resolved),
 * else ./components. Throws NOT_FOUND listing the places tried.
 */
export function resolveComponentsDir(flag: string | undefined, env: Record<string, string | undefined> = process.env): string {
  if (flag) return resolve(flag);
  if (env.NODEBIN_COMPONENTS) return resolve(env.NODEBIN_COMPONENTS);
  const tried: string[] = [];
  for (const dir of [entryDir(), process.cwd()]) {
    if (!dir) continue;
    const candidate = join(dir, "components");
    if (existsSync(candidate)) return candidate;
    tried.push(candidate);
  }
  throw new NodeBinError("NOT_FOUND", `no components directory (tried ${tried.join(", ")}); pass --components DIR or set NODEBIN_COMPONENTS`, {
    details: { tried: tried.join(",") },
  });
}

/**
 * The directory of the entry point: the executable's, or bin/ when run from
 * source (symlinks resolved); undefined when it cannot be told. Where the
 * files that go with an installed node-bin live (components/, cluster.key).
 */
export function entryDir(): string | undefined {
  // Inside the executable argv[1] is whatever the user typed (a bare "node-bin"
  // found on PATH, a symlink): the executable's own file is execPath.
  const entry = executableFile() ?? process.argv[1];
  return entry && existsSync(entry) ? dirname(realpathSync(entry)) : undefined;
}
