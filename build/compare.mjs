#!/usr/bin/env node
// node build/compare.mjs [--pkg DIR] [--runs N]
//
// Measures, on this machine, the ways of running node-bin without a checkout:
// the shipped plain Node SEA (dist/node-bin-linux-x64), the same bundle
// packaged by @yao-pkg/pkg --sea, and `node dist/node-bin.cjs`: file size,
// start-up of `--version` (median of N runs, interleaved with `node -e 0` so
// that machine load hits every row alike) and the RSS of an idle `container`
// process. Prints a markdown table (build/README.md has the last one).
//
// pkg: its enhanced SEA mode (a package.json input; pkg >= 6.15) runs offline
// once ~/.pkg-cache/sea is seeded with the registry's Node 22 (done here, in a
// private HOME under dist/.cache/). The project's pkg 6.14.2 has only the
// single-file --sea, which fetches SHASUMS256.txt from nodejs.org even with a
// seeded cache: point --pkg at a newer one (node_modules/@yao-pkg/pkg of an
// `npm install @yao-pkg/pkg@6.23.0` elsewhere) to include it.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { BUNDLE, CACHE, DIST, NODE_VERSION, ROOT, bundle, executable, nodeBinary } from "./build.mjs";

const { values } = parseArgs({ options: { pkg: { type: "string" }, runs: { type: "string", default: "15" } } });
const RUNS = Number(values.runs);
const log = (line) => process.stderr.write(`compare: ${line}\n`);
const mib = (bytes) => (bytes / 2 ** 20).toFixed(1);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const node22 = nodeBinary("linux-x64");
const sea = join(DIST, "node-bin-linux-x64");
if (!existsSync(BUNDLE)) await bundle();
if (!existsSync(sea)) await executable("linux-x64");

/** The pkg variant: the bundle with zeromq left external, packaged with its addon as pkg assets. */
async function buildPkg(pkgDir) {
  const version = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")).version;
  const work = join(CACHE, "pkg");
  const app = join(work, "app");
  const home = join(work, "home");
  rmSync(app, { recursive: true, force: true });
  mkdirSync(app, { recursive: true });
  await bundle({ outfile: join(app, "node-bin.cjs"), externalZeromq: true });
  // zeromq and its loader's dependency, resolvable from the app as pkg's walker expects.
  for (const dep of ["zeromq", "cmake-ts"]) cpSync(join(ROOT, "node_modules", dep), join(app, "node_modules", dep), { recursive: true, dereference: true });
  const addon = "node_modules/zeromq/build/linux/x64/node/glibc-127-Release/addon.node";
  writeFileSync(
    join(app, "package.json"),
    JSON.stringify({ name: "node-bin", version: "0.0.0", bin: "node-bin.cjs", pkg: { assets: ["node_modules/zeromq/build/manifest.json", addon], targets: [`node${NODE_VERSION}-linux-x64`] } }, null, 2),
  );
  // Seed pkg's SEA cache so it downloads nothing: the extracted binary and an (empty) archive, each with its .ok sentinel.
  const seaCache = join(home, ".pkg-cache", "sea");
  const base = `node-v${NODE_VERSION}-linux-x64`;
  mkdirSync(join(seaCache, base, "bin"), { recursive: true });
  cpSync(node22, join(seaCache, base, "bin", "node"));
  for (const f of [join(base, "bin", "node.ok"), `${base}.tar.gz`, `${base}.tar.gz.ok`]) writeFileSync(join(seaCache, f), "");
  const out = join(work, "node-bin-pkg-linux-x64");
  const started = Date.now();
  execFileSync(node22, [join(pkgDir, "lib-es5", "bin.js"), app, "--sea", "-t", `node${NODE_VERSION}-linux-x64`, "-o", out], {
    env: { ...process.env, HOME: home },
    stdio: ["ignore", "ignore", "inherit"],
  });
  log(`@yao-pkg/pkg ${version} --sea: ${out}, ${mib(statSync(out).size)} MiB, ${Date.now() - started} ms`);
  return { out, version };
}

// Every command runs with its own cache directory, warmed before timing.
const scratch = mkdtempSync(join(tmpdir(), "nodebin-compare-"));
process.on("exit", () => rmSync(scratch, { recursive: true, force: true }));
const env = { ...process.env, NODEBIN_CACHE_DIR: join(scratch, "cache"), NODEBIN_LOG: "warn" };
delete env.NODE_OPTIONS;

const rows = [
  { name: "plain Node SEA (shipped)", file: sea, cmd: [sea] },
  { name: `\`node${NODE_VERSION.split(".")[0]} dist/node-bin.cjs\` (Node ${NODE_VERSION})`, file: BUNDLE, cmd: [node22, BUNDLE] },
  { name: `\`node dist/node-bin.cjs\` (this machine's Node ${process.versions.node})`, file: BUNDLE, cmd: [process.execPath, BUNDLE] },
];
const pkgDir = values.pkg ?? join(ROOT, "node_modules", "@yao-pkg", "pkg");
const pkgVersion = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")).version;
if (existsSync(join(pkgDir, "lib-es5", "sea-assets.js"))) {
  const pkg = await buildPkg(pkgDir);
  rows.splice(1, 0, { name: `@yao-pkg/pkg ${pkg.version} --sea (enhanced, package.json)`, file: pkg.out, cmd: [pkg.out] });
} else {
  log(`skipping @yao-pkg/pkg ${pkgVersion}: no enhanced SEA mode (its single-file --sea fetches SHASUMS256.txt from nodejs.org); pass --pkg DIR of pkg >= 6.15`);
}
const baselines = [
  { name: `\`node -e 0\` (Node ${NODE_VERSION})`, cmd: [node22, "-e", "0"] },
  { name: `\`node -e 0\` (Node ${process.versions.node})`, cmd: [process.execPath, "-e", "0"] },
];

// ------------------------------------------------------------------ start-up
function timeOnce(cmd, args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd[0], [...cmd.slice(1), ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd.join(" ")} ${args.join(" ")}: exit ${r.status}: ${r.stderr}`);
  return ms;
}
for (const b of baselines) b.args = [];
for (const r of rows) r.args = ["--version"];
const all = [...baselines, ...rows];
for (const c of all) timeOnce(c.cmd, c.args); // warm: page cache, the executables' cache directory
const times = new Map(all.map((c) => [c, []]));
for (let i = 0; i < RUNS; i++) for (const c of all) times.get(c).push(timeOnce(c.cmd, c.args));
for (const c of all) c.ms = median(times.get(c));
log(`start-up medians of ${RUNS}: ${all.map((c) => `${c.name} ${c.ms.toFixed(0)} ms`).join("; ")}`);

// ------------------------------------------------------------------ idle RSS
const components = join(scratch, "components");
cpSync(join(ROOT, "test", "fixtures", "executable", "echo"), join(components, "echo"), { recursive: true });

function statusKb(pid) {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? NaN);
  return { rss: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile") };
}

async function idleRss(cmd, port) {
  const runtime = mkdtempSync(join(scratch, "run-"));
  const child = spawn(cmd[0], [...cmd.slice(1), "container", "--component", "echo", "--components", components, "--listen", "127.0.0.1", "--discovery-port", String(port)], {
    env: { ...env, NODEBIN_RUNTIME_DIR: runtime },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  const deadline = Date.now() + 30_000;
  while (!/container ready/.test(out)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`${cmd.join(" ")} container did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 5000)); // idle: registered, leases renewing, nothing to do
  const s = statusKb(child.pid);
  child.kill("SIGTERM");
  await new Promise((r) => child.on("exit", r));
  return s;
}
for (const [i, r] of rows.entries()) {
  const samples = [];
  for (let k = 0; k < 3; k++) samples.push(await idleRss(r.cmd, 21000 + i * 10 + k));
  const pick = samples.sort((a, b) => a.rss - b.rss)[1];
  r.rss = pick;
  log(`${r.name}: idle container RSS ${mib(pick.rss * 1024)} MiB (anon ${mib(pick.anon * 1024)}, file ${mib(pick.file * 1024)})`);
}

// ------------------------------------------------------------------- report
const base = baselines[0];
const lines = [
  `| how | size | \`--version\` (median of ${RUNS}) | vs \`node -e 0\` (${base.ms.toFixed(0)} ms) | idle container RSS (anon + file-backed) |`,
  "| --- | ---: | ---: | ---: | ---: |",
  ...rows.map(
    (r) =>
      `| ${r.name} | ${mib(statSync(r.file).size)} MiB${r.file === BUNDLE ? " + node" : ""} | ${r.ms.toFixed(0)} ms | ${(r.ms / base.ms).toFixed(2)}x | ${mib(r.rss.rss * 1024)} MiB (${mib(r.rss.anon * 1024)} + ${mib(r.rss.file * 1024)}) |`,
  ),
  ...baselines.map((b) => `| ${b.name} | | ${b.ms.toFixed(0)} ms | ${(b.ms / base.ms).toFixed(2)}x | |`),
];
process.stdout.write(`${lines.join("\n")}\n`);
