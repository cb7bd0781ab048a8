/** Where components are loaded from when --components is not given. */
import { existsSync, realpathSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { NodeBinError } from "../wire/errors.ts";

/**
 * --components, else $NODEBIN_COMPONENTS, else components/ beside the entry
 * point (the executable, or bin/node-bin from source), else ./components.
 * Throws NOT_FOUND listing the places tried.
 */
export function resolveComponentsDir(flag: string | undefined, env: Record<string, string | undefined> = process.env): string {
  if (flag) return resolve(flag);
  if (env.NODEBIN_COMPONENTS) return resolve(env.NODEBIN_COMPONENTS);
  const tried: string[] = [];
  const entry = process.argv[1];
  for (const dir of [entry && existsSync(entry) ? dirname(realpathSync(entry)) : undefined, process.cwd()]) {
    if (!dir) continue;
    const candidate = join(dir, "components");
    if (existsSync(candidate)) return candidate;
    tried.push(candidate);
  }
  throw new NodeBinError("NOT_FOUND", `no components directory (tried ${tried.join(", ")}); pass --components DIR or set NODEBIN_COMPONENTS`, {
    details: { tried: tried.join(",") },
  });
}
