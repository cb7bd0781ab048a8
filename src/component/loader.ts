/**
 * The component loader: a component is a directory with one or more .proto
 * files and an index module (index.ts, index.js, index.mjs; a package.json is
 * optional). The loader parses the .proto files at run time, takes each
 * method's mode from (nodebin.mode), binds handlers by method name and refuses
 * anything inconsistent with an error that names the file and the problem.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { NodeBinError } from "../wire/errors.ts";
import { closest } from "../wire/message.ts";
import { loadProtoFiles } from "../wire/proto.ts";
import { Schema, type MethodSchema } from "../wire/schema.ts";
import { HOOK_NAMES, type Handler, type Hooks } from "./context.ts";
import { resolveManifest, type ComponentManifest } from "./manifest.ts";

export const INDEX_FILES = ["index.ts", "index.mts", "index.js", "index.mjs", "index.cjs"];

/** A loaded component: everything needed to run nodes of it. Immutable once loaded. */
export interface Component {
  readonly name: string;
  readonly dir: string;
  readonly manifest: ComponentManifest;
  readonly schema: Schema;
  /** Handlers by full method name; exactly the schema's methods. */
  readonly handlers: ReadonlyMap<string, Handler>;
  readonly hooks: Hooks;
}

export interface LoadResult {
  components: Component[];
  /** One error per directory that failed to load; the others still load. */
  errors: NodeBinError[];
}

/**
 * Loads every component under `root`: its subdirectories holding a .proto or
 * an index module (directories starting with "." or "_", and node_modules,
 * are skipped). Never throws for a bad component: its error is in `errors`.
 * Throws NOT_FOUND when `root` itself is not a directory.
 */
export async function loadComponents(root: string): Promise<LoadResult> {
  const dir = resolve(root);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new NodeBinError("NOT_FOUND", `components directory ${dir} does not exist`, { details: { file: dir } });
  }
  const components: Component[] = [];
  const errors: NodeBinError[] = [];
  const byName = new Map<string, string>();
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    if (!entry.isDirectory() || /^[._]/.test(entry.name) || entry.name === "node_modules") continue;
    const sub = join(dir, entry.name);
    const files = readdirSync(sub);
    if (!files.some((f) => f.endsWith(".proto") || INDEX_FILES.includes(f))) continue;
    try {
      const component = await loadComponent(sub, { componentsRoot: dir });
      const other = byName.get(component.name);
      if (other) throw new NodeBinError("ALREADY_EXISTS", `${sub}: component name "${component.name}" is already used by ${other}`, { details: { file: sub } });
      byName.set(component.name, sub);
      components.push(component);
    } catch (err) {
      errors.push(NodeBinError.from(err, "INVALID_ARGUMENT"));
    }
  }
  return { components, errors };
}

export interface LoadComponentOptions {
  /** Also searched for .proto imports (lets one component import another's messages). */
  componentsRoot?: string;
}

/** Loads the component in `dir`. Throws NodeBinError INVALID_ARGUMENT naming the file and problem. */
export async function loadComponent(dir: string, options: LoadComponentOptions = {}): Promise<Component> {
  dir = resolve(dir);
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new NodeBinError("NOT_FOUND", `${dir}: ${code === "ENOTDIR" ? "not a directory" : "no such component directory"}`, { details: { file: dir }, cause: err });
  }
  const protoFiles = files.filter((f) => f.endsWith(".proto")).sort();
  const packageJson = readPackageJson(dir);
  const indexName = INDEX_FILES.find((f) => files.includes(f));
  if (!indexName) throw fail(dir, `no handler module: expected one of ${INDEX_FILES.join(", ")}`);
  const moduleFile = join(dir, indexName);

  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(moduleFile).href)) as Record<string, unknown>;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint =
      e?.code === "ERR_UNKNOWN_FILE_EXTENSION"
        ? " (this runtime cannot import TypeScript by itself: run through bin/node-bin, or use Node >= 22.6, Deno or the node-bin executable)"
        : e?.code === "ERR_UNSUPPORTED_TYPESCRIPT_SYNTAX"
          ? " (Node's type stripping, which the node-bin executable uses, erases types only: no enum, namespace or constructor parameter properties; rewrite them or ship the component as .js)"
          : "";
    throw fail(moduleFile, `cannot load: ${e?.message ?? String(err)}${hint}`, err);
  }

  const manifest = resolveManifest({ dirName: basename(dir), protoFiles, exported: mod.manifest, moduleFile, packageJson });
  if (manifest.proto.length === 0) throw fail(dir, "no .proto file: a component declares its messages and service in one");
  const protoPaths = manifest.proto.map((p) => resolve(dir, p));
  for (const p of protoPaths) if (!existsSync(p)) throw fail(p, "no such file (named by the manifest)");

  const root = loadProtoFiles(protoPaths, { importDirs: [dir, ...(options.componentsRoot ? [options.componentsRoot] : [])] });
  const schema = Schema.fromRoot(root, protoPaths);
  const protoLabel = manifest.proto.join(", ");
  let methods = [...schema.methods.values()];
  if (manifest.services) {
    const known = new Set(methods.map((m) => m.service));
    for (const s of manifest.services) if (!known.has(s)) throw fail(moduleFile, `manifest names service ${s}, which ${protoLabel} does not define`);
    methods = methods.filter((m) => manifest.services!.includes(m.service));
  }
  if (methods.length === 0) throw fail(join(dir, protoLabel), "defines no service with methods");

  const { handlers, hooks } = bindHandlers(mod, methods, relative(dir, moduleFile), protoLabel, moduleFile);
  return { name: manifest.name, dir, manifest, schema, handlers, hooks };
}

function readPackageJson(dir: string): { name?: unknown; version?: unknown } | undefined {
  const file = join(dir, "package.json");
  if (!existsSync(file)) return undefined;
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as unknown;
    if (typeof parsed !== "object" || parsed === null) throw new Error("not an object");
    return parsed as { name?: unknown; version?: unknown };
  } catch (err) {
    throw fail(file, `invalid package.json: ${(err as Error).message}`, err);
  }
}

/**
 * Binds handlers to methods. Handlers come from a `handlers` export (object),
 * else a default export object, else the module's exported functions. A key is
 * "Method", "Service.Method" or a nested { Service: { Method } }. Every method
 * needs exactly one handler; every handler needs a method.
 */
function bindHandlers(mod: Record<string, unknown>, methods: MethodSchema[], moduleLabel: string, protoLabel: string, moduleFile: string) {
  const source = isObject(mod.handlers) ? mod.handlers : isObject(mod.default) && typeof mod.default !== "function" ? mod.default : mod;
  const fromNamedExports = source === mod;
  const hooks: Hooks = {};
  const exported = new Map<string, unknown>();
  for (const [key, value] of Object.entries(source)) {
    if ((HOOK_NAMES as readonly string[]).includes(key)) {
      if (typeof value !== "function") throw fail(moduleFile, `hook ${key} must be a function`);
      (hooks as Record<string, unknown>)[key] = value;
    } else if (fromNamedExports && (key === "manifest" || key === "default" || typeof value !== "function")) {
      continue; // plain constants beside the handlers are not handlers
    } else if (isObject(value) && typeof value !== "function") {
      for (const [inner, fn] of Object.entries(value)) exported.set(`${key}.${inner}`, fn);
    } else {
      exported.set(key, value);
    }
  }
  // Hooks may also be exported beside a `handlers` object.
  if (!fromNamedExports) for (const name of HOOK_NAMES) if (typeof mod[name] === "function" && !hooks[name]) (hooks as Record<string, unknown>)[name] = mod[name];

  const handlers = new Map<string, Handler>();
  const used = new Set<string>();
  const problems: string[] = [];
  const serviceShort = (m: MethodSchema) => m.service.slice(m.service.lastIndexOf(".") + 1);
  for (const method of methods) {
    const keys = [`${serviceShort(method)}.${method.name}`, `${method.service}.${method.name}`, method.name];
    const key = keys.find((k) => exported.has(k));
    if (key === undefined) {
      problems.push(`method ${method.fullName} (${protoLabel}) has no handler in ${moduleLabel}: export function ${method.name}(request, ctx)`);
      continue;
    }
    const fn = exported.get(key);
    if (typeof fn !== "function") {
      problems.push(`handler ${key} in ${moduleLabel} is ${typeof fn}, not a function`);
      continue;
    }
    if (used.has(key) && key === method.name) {
      problems.push(`handler ${key} in ${moduleLabel} is ambiguous: several services define ${method.name}; key it as Service.${method.name}`);
      continue;
    }
    used.add(key);
    handlers.set(method.fullName, fn as Handler);
  }
  const names = methods.flatMap((m) => [m.name, `${serviceShort(m)}.${m.name}`]);
  for (const key of exported.keys()) {
    if (used.has(key)) continue;
    const near = closest(key, names);
    problems.push(`${moduleLabel} exports handler ${key}, but ${protoLabel} defines no such method${near ? ` (did you mean ${near}?)` : ""}`);
  }
  if (problems.length) {
    throw new NodeBinError("INVALID_ARGUMENT", `${moduleFile}: ${problems.join("; ")}`, { details: { file: moduleFile } });
  }
  return { handlers, hooks };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return (typeof v === "object" && v !== null) || typeof v === "function";
}

function fail(file: string, problem: string, cause?: unknown): NodeBinError {
  return new NodeBinError("INVALID_ARGUMENT", `${file}: ${problem}`, { details: { file }, ...(cause === undefined ? {} : { cause }) });
}
