// Module hooks that let Node 20 run this project's TypeScript sources (and
// .ts components) directly: esbuild strips the types at load time. Deno and
// a Node with type stripping do not need them; bin/node-bin registers them only
// where they are needed. Kept in plain JS because it is what makes .ts loadable.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { transform } from "esbuild";

const TS = /\.m?ts$/;
const RELATIVE = /^\.{1,2}\//;

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    // TypeScript authors often write `./helper` or `./helper.js` for ./helper.ts.
    if (err?.code !== "ERR_MODULE_NOT_FOUND" || !RELATIVE.test(specifier)) throw err;
    const base = specifier.replace(/\.js$/, "");
    for (const candidate of [`${base}.ts`, `${base}/index.ts`]) {
      try {
        return await nextResolve(candidate, context);
      } catch {
        // try the next form
      }
    }
    throw err;
  }
}

export async function load(url, context, nextLoad) {
  if (!url.startsWith("file:") || !TS.test(url)) return nextLoad(url, context);
  const file = fileURLToPath(url);
  const source = await readFile(file, "utf8");
  const { code } = await transform(source, { loader: "ts", format: "esm", target: "esnext", sourcemap: "inline", sourcefile: file });
  return { format: "module", source: code, shortCircuit: true };
}
