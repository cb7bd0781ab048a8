// `node --import ./bin/register.mjs file.ts`: run TypeScript sources on a Node
// without type stripping (see ts-hooks.mjs). A no-op where types already strip.
import { register } from "node:module";

if (typeof process.features?.typescript !== "string" && !globalThis.Deno) register("./ts-hooks.mjs", import.meta.url);
